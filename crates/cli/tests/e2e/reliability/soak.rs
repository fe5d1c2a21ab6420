//! The soak run behind `scripts/soak` (ignored in the default run): the real `lanyard
//! serve`, on loopback, first driven closed-loop to measure its peak throughput on a mix of
//! identity-endpoint token requests (IMDS and App Service protocols, four VMs) and
//! control-plane reads, then held at a fraction of that peak (80%) for a number of minutes:
//! request i is due at i / rate, and a fixed set of clients sends each when it is due (a late
//! request's latency counts from when it was due). Reports errors (any non-200 or transport
//! error), the rate achieved, latency percentiles, and the drift of the server's resident
//! memory from a tenth of the hold to its end. Targets: zero errors, drift at most 10% (and
//! the rate held, within 5%).
//!
//! Settings: `LANYARD_SOAK_MINUTES` (10), `LANYARD_SOAK_PEAK_SECS` (20),
//! `LANYARD_SOAK_FRACTION` (0.8), `LANYARD_SOAK_REPORT` (a file for the JSON summary).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use super::kit::*;
use crate::support::free_port;

const VMS: usize = 4;
const CONCURRENCY: usize = 16;

/// The machine's load averages (1, 5, 15 min): the cores are shared with whatever else runs.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn setting(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// One kind of request of the mix.
#[derive(Clone)]
enum Shot {
    Imds(String),
    AppService(String, String),
    Arm(String),
}

struct Mix {
    shots: Vec<Shot>,
    arm_token: String,
    tls: reqwest::Client,
    plain: reqwest::Client,
    port: u16,
}

impl Mix {
    /// Sends shot `i % len`; true when it answered 200.
    async fn fire(&self, i: u64) -> bool {
        let shot = &self.shots[(i % self.shots.len() as u64) as usize];
        let sent = match shot {
            Shot::Imds(url) => self.plain.get(url).header("Metadata", "true").send().await,
            Shot::AppService(url, header) => {
                self.plain
                    .get(url)
                    .header("X-IDENTITY-HEADER", header)
                    .send()
                    .await
            }
            Shot::Arm(path) => {
                self.tls
                    .get(format!("https://localhost:{}{path}", self.port))
                    .bearer_auth(&self.arm_token)
                    .send()
                    .await
            }
        };
        match sent {
            Ok(r) => {
                let ok = r.status().as_u16() == 200;
                ok && r.bytes().await.is_ok()
            }
            Err(_) => false,
        }
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    errors: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the soak run; use scripts/soak"]
async fn soak() {
    let minutes = setting("LANYARD_SOAK_MINUTES", 10.0);
    let peak_secs = setting("LANYARD_SOAK_PEAK_SECS", 20.0);
    let fraction = setting("LANYARD_SOAK_FRACTION", 0.8);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let log = tmp.path().join("serve.log");
    let port = free_port();
    let mut served = Served::start(&dir, port, None, &log, &[("LANYARD_LOG", "warn")]);
    let t = served.ready(&dir).await;
    let pid = served.child.id();
    println!(
        "soak: lanyard serve pid {pid} on 127.0.0.1:{port} ({}), {minutes} min at {:.0}% of peak",
        if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        },
        fraction * 100.0
    );

    // Stage: VMs with system identities, each with a session.
    let arm = t.admin_token(ARM_SCOPE).await;
    let rg = format!("{}/resourceGroups/soak", t.subscription());
    put_ok(
        &t,
        &arm,
        &format!("{rg}?{RG_API}"),
        &json!({"location": "local"}),
    )
    .await;
    let mut shots = Vec::new();
    let mut sessions = Vec::new();
    for i in 0..VMS {
        let (vm, s) = vm_with_session(&t, &arm, &rg, &format!("vm{i}")).await;
        sessions.push(s["id"].as_str().unwrap().to_string());
        shots.push(Shot::Imds(format!(
            "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net",
            s["imdsEndpoint"].as_str().unwrap()
        )));
        shots.push(Shot::Arm(format!("{vm}?{VM_API}")));
        shots.push(Shot::AppService(
            format!(
                "{}?api-version=2019-08-01&resource=https://storage.azure.com",
                s["identityEndpoint"].as_str().unwrap()
            ),
            s["identityHeader"].as_str().unwrap().to_string(),
        ));
        shots.push(Shot::Arm(format!("{rg}?{RG_API}")));
    }
    shots.push(Shot::Arm(format!(
        "{rg}/providers/Microsoft.Compute/virtualMachines?{VM_API}"
    )));
    let mix = Arc::new(Mix {
        shots,
        arm_token: arm.clone(),
        tls: {
            let pem = std::fs::read(dir.join("ca.pem")).unwrap();
            reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(4 * CONCURRENCY)
                .build()
                .unwrap()
        },
        plain: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(4 * CONCURRENCY)
            .build()
            .unwrap(),
        port,
    });
    // Sessions live 90 s unless renewed, as `lanyard run` does.
    let renewer = {
        let (t, arm, sessions) = (t.clone(), arm.clone(), sessions.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(20)).await;
                for id in &sessions {
                    let r = call(
                        &t.http,
                        Method::POST,
                        &t.arm(&format!("/lanyard/sessions/{id}/renew")),
                        bearer(&arm),
                    )
                    .await;
                    assert_eq!(r.status, 200, "renewing a session: {}", r.text);
                }
            }
        })
    };
    for i in 0..mix.shots.len() as u64 {
        assert!(mix.fire(i).await, "warm-up request {i} failed");
    }

    // Phase 1: closed loop, the peak.
    let counter = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs_f64(peak_secs);
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (mix, counter, failed) = (Arc::clone(&mix), Arc::clone(&counter), Arc::clone(&failed));
        workers.push(tokio::spawn(async move {
            while Instant::now() < until {
                let i = counter.fetch_add(1, Ordering::SeqCst);
                if !mix.fire(i).await {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let peak = counter.load(Ordering::SeqCst) as f64 / peak_secs;
    let rate = peak * fraction;
    println!(
        "soak: peak {peak:.0} req/s over {peak_secs} s ({CONCURRENCY} concurrent, {} failed); holding {rate:.0} req/s",
        failed.load(Ordering::SeqCst)
    );

    // Phase 2: `rate` for `minutes`, sampling RSS. Request i is due at start + i / rate;
    // a fixed set of clients (as many as measured the peak) takes the next due request, waits for its
    // time and sends it, so a slow server makes requests late (counted in their latency,
    // from when they were due) instead of opening ever more connections.
    let tally = Arc::new(Tally::default());
    let hold = Duration::from_secs_f64(minutes * 60.0);
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    let load_before = loadavg();
    for _ in 0..CONCURRENCY {
        let (mix, tally, next) = (Arc::clone(&mix), Arc::clone(&tally), Arc::clone(&next));
        clients.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                if due >= start + hold {
                    return;
                }
                tokio::time::sleep_until(due.into()).await;
                let ok = mix.fire(i).await;
                let us = due.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                if ok {
                    tally.ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    tally.errors.fetch_add(1, Ordering::SeqCst);
                }
                tally.latencies_us.lock().unwrap().push(us);
            }
        }));
    }
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let end = start + hold;
    while Instant::now() < end {
        if let Some(kib) = rss_kib(pid) {
            samples.push((start.elapsed().as_secs_f64(), kib));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    for c in clients {
        c.await.unwrap();
    }
    if let Some(kib) = rss_kib(pid) {
        samples.push((start.elapsed().as_secs_f64(), kib));
    }
    renewer.abort();
    let elapsed = start.elapsed().as_secs_f64();

    let ok = tally.ok.load(Ordering::SeqCst);
    let errors = tally.errors.load(Ordering::SeqCst);
    let achieved = (ok + errors) as f64 / elapsed;
    let mut lat = tally.latencies_us.lock().unwrap().clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    // Baseline: the first sample after a tenth of the hold (caches and pools warmed).
    let baseline = samples
        .iter()
        .find(|(at, _)| *at >= elapsed / 10.0)
        .or(samples.first())
        .map_or(0, |s| s.1);
    let end = samples.last().map_or(0, |s| s.1);
    let max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let drift = if baseline > 0 {
        (end as f64 - baseline as f64) / baseline as f64 * 100.0
    } else {
        f64::NAN
    };
    let report = json!({
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "holdSeconds": elapsed,
        "peakRequestsPerSecond": peak,
        "targetRequestsPerSecond": rate,
        "achievedRequestsPerSecond": achieved,
        "requests": ok + errors,
        "errors": errors,
        "latencyMs": {"p50": pct(0.50), "p99": pct(0.99), "max": pct(1.0)},
        "rssKiB": {"baseline": baseline, "end": end, "max": max, "driftPercent": drift},
        "rssSamples": samples.len(),
        "lateAtEndSeconds": (elapsed - hold.as_secs_f64()).max(0.0),
        "loadAverage": {"before": load_before, "after": loadavg()},
        "clients": CONCURRENCY,
        // Reported, not asserted: the rate is a speed figure on shared cores.
        "rateHeldWithin5Percent": achieved >= rate * 0.95,
        "mix": "per 17 requests: 4 IMDS tokens, 4 App Service tokens, 8 control-plane GETs of a VM or the group, 1 VM list",
    });
    println!("soak: {}", serde_json::to_string_pretty(&report).unwrap());
    if let Ok(path) = std::env::var("LANYARD_SOAK_REPORT") {
        std::fs::write(path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    }
    let status = served.terminate();
    assert!(
        status.success(),
        "the server did not stop cleanly: {status:?}"
    );
    assert_eq!(errors, 0, "errors during the soak");
    assert!(
        drift <= 10.0,
        "RSS drifted {drift:.1}% (baseline {baseline} KiB, end {end} KiB)"
    );
}
