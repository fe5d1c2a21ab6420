//! Closed-loop HTTP/1.1 load: `connections` keep-alive connections, each sending its next
//! request as soon as the previous answer is fully read. A warm-up is run and discarded; the
//! run then lasts `duration_secs` or until `max_requests` requests were taken, whichever
//! comes first. Every request has a timeout, so a stuck server cannot hold the run.
//!
//! Requests are either one template (`{n}` becomes the request's number, `{pick}` the next
//! value of `--pick` in turn) or the lines of a JSON-lines file, one request each, used once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use clap::Args;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// `http://` or `https://` URL; its host is sent as `Host` and SNI.
    #[arg(long)]
    url: String,
    /// Where to connect (loopback only); default 127.0.0.1 and the URL's port.
    #[arg(long)]
    connect: Option<SocketAddr>,
    /// CA file to trust for `https://`.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// `Name: value`, repeatable.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request body (with the template's substitutions).
    #[arg(long)]
    body: Option<String>,
    /// JSON lines `{"method"?, "path", "body"?}`: request i is line i; the run ends when
    /// the lines do.
    #[arg(long)]
    requests_file: Option<PathBuf>,
    /// Values `{pick}` cycles through, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pick: Vec<String>,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Stop after this many requests (warm-up included).
    #[arg(long, default_value_t = 50_000_000)]
    max_requests: u64,
    /// Statuses that count as success, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "200")]
    expect_status: Vec<u16>,
    /// Runtime worker threads; default: every core.
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Deserialize)]
struct Line {
    method: Option<String>,
    path: String,
    body: Option<serde_json::Value>,
}

/// What every request shares.
struct Plan {
    addr: SocketAddr,
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
    authority: HeaderValue,
    method: Method,
    path: String,
    body: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    lines: Option<Vec<Line>>,
    pick: Vec<String>,
    expect: Vec<u16>,
    next: AtomicU64,
    max_requests: u64,
    warm_end: Instant,
    end: Instant,
}

/// What one connection saw during the measured window.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    ok: u64,
    bad: u64,
    statuses: BTreeMap<u16, u64>,
    io_errors: u64,
    sample_error: Option<String>,
    body_bytes: usize,
}

pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(drive(args))
}

fn plan(args: &LoadArgs) -> anyhow::Result<Plan> {
    let uri: Uri = args
        .url
        .parse()
        .with_context(|| format!("bad URL `{}`", args.url))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => anyhow::bail!("`{}` must start with http:// or https://", args.url),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow!("`{}` has no host", args.url))?
        .clone();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addr = args
        .connect
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], port)));
    crate::ensure_loopback(&addr)?;
    let tls = if https {
        let ca = args
            .cacert
            .as_ref()
            .ok_or_else(|| anyhow!("https:// needs --cacert"))?;
        let name = rustls::pki_types::ServerName::try_from(authority.host().to_string())
            .context("TLS server name")?;
        Some((crate::tls::connector(ca)?, name))
    } else {
        None
    };
    let headers = args
        .headers
        .iter()
        .map(|h| {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| anyhow!("header `{h}` is not `Name: value`"))?;
            Ok((
                HeaderName::try_from(k.trim())?,
                HeaderValue::try_from(v.trim())?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let lines = match &args.requests_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading `{}`", path.display()))?;
            Some(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(serde_json::from_str)
                    .collect::<Result<Vec<Line>, _>>()
                    .with_context(|| format!("parsing `{}`", path.display()))?,
            )
        }
    };
    let start = Instant::now();
    let warm_end = start + Duration::from_secs_f64(args.warmup_secs.max(0.0));
    Ok(Plan {
        addr,
        tls,
        authority: HeaderValue::try_from(authority.as_str())?,
        method: Method::from_bytes(args.method.as_bytes())?,
        path: uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        body: args.body.clone(),
        headers,
        lines,
        pick: args.pick.clone(),
        expect: args.expect_status.clone(),
        next: AtomicU64::new(0),
        max_requests: args.max_requests,
        warm_end,
        end: warm_end + Duration::from_secs_f64(args.duration_secs.max(0.0)),
    })
}

impl Plan {
    fn fill(&self, template: &str, n: u64) -> String {
        let mut s = template.replace("{n}", &n.to_string());
        if !self.pick.is_empty() {
            // usize from u64 cannot fail on the 64-bit hosts this runs on; wrap if it did.
            let i = usize::try_from(n % self.pick.len() as u64).unwrap_or(0);
            s = s.replace("{pick}", &self.pick[i]);
        }
        s
    }

    /// Request `n`, or `None` when there is no such request (lines exhausted).
    fn request(&self, n: u64) -> anyhow::Result<Option<Request<Full<Bytes>>>> {
        let (method, path, body) = match &self.lines {
            Some(lines) => {
                let Some(line) = usize::try_from(n).ok().and_then(|i| lines.get(i)) else {
                    return Ok(None);
                };
                let method = match &line.method {
                    Some(m) => Method::from_bytes(m.as_bytes())?,
                    None => self.method.clone(),
                };
                let body = match &line.body {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(v) => Some(v.to_string()),
                };
                (method, line.path.clone(), body)
            }
            None => (
                self.method.clone(),
                self.fill(&self.path, n),
                self.body.as_deref().map(|b| self.fill(b, n)),
            ),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.authority.clone());
        for (k, v) in &self.headers {
            builder = builder.header(k, v);
        }
        let body = body.map_or_else(Bytes::new, Bytes::from);
        Ok(Some(builder.body(Full::new(body))?))
    }
}

async fn connect(plan: &Plan) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(plan.addr)
        .await
        .with_context(|| format!("connecting to {}", plan.addr))?;
    tcp.set_nodelay(true)?;
    match &plan.tls {
        None => {
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            Ok(sender)
        }
        Some((connector, name)) => {
            let stream = connector.connect(name.clone(), tcp).await?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            Ok(sender)
        }
    }
}

/// One connection's loop; reconnects after an error.
async fn connection(plan: Arc<Plan>) -> Tally {
    let mut tally = Tally::default();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        if Instant::now() >= plan.end {
            break;
        }
        let n = plan.next.fetch_add(1, Ordering::Relaxed);
        if n >= plan.max_requests {
            break;
        }
        let request = match plan.request(n) {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                tally.sample_error.get_or_insert_with(|| format!("{e:#}"));
                tally.io_errors += 1;
                break;
            }
        };
        let began = Instant::now();
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let s = match sender.as_mut() {
                Some(s) => s,
                None => sender.insert(connect(&plan).await?),
            };
            s.ready().await?;
            let response = s.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        })
        .await
        .unwrap_or_else(|_| Err(anyhow!("no answer within {REQUEST_TIMEOUT:?}")));
        let done = Instant::now();
        let measured = began >= plan.warm_end && done <= plan.end;
        match outcome {
            Ok((status, body)) => {
                if !measured {
                    continue;
                }
                *tally.statuses.entry(status).or_default() += 1;
                if plan.expect.contains(&status) {
                    tally.ok += 1;
                    tally.body_bytes = body.len();
                    let us = done.duration_since(began).as_micros();
                    tally
                        .latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                } else {
                    tally.bad += 1;
                    tally.sample_error.get_or_insert_with(|| {
                        let text = String::from_utf8_lossy(&body);
                        format!(
                            "status {status}: {}",
                            text.chars().take(300).collect::<String>()
                        )
                    });
                }
            }
            Err(e) => {
                sender = None;
                if measured {
                    tally.io_errors += 1;
                }
                tally.sample_error.get_or_insert_with(|| format!("{e:#}"));
                // A refused connection would otherwise spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tally
}

async fn drive(args: LoadArgs) -> anyhow::Result<()> {
    let plan = Arc::new(plan(&args)?);
    let tasks: Vec<_> = (0..args.connections.max(1))
        .map(|_| tokio::spawn(connection(Arc::clone(&plan))))
        .collect();
    let mut total = Tally::default();
    for t in tasks {
        let t = t.await.context("a connection task failed")?;
        total.latencies_us.extend(t.latencies_us);
        total.ok += t.ok;
        total.bad += t.bad;
        total.io_errors += t.io_errors;
        for (k, v) in t.statuses {
            *total.statuses.entry(k).or_default() += v;
        }
        if total.sample_error.is_none() {
            total.sample_error = t.sample_error;
        }
        total.body_bytes = total.body_bytes.max(t.body_bytes);
    }
    let finished = Instant::now().min(plan.end);
    let seconds = finished
        .saturating_duration_since(plan.warm_end)
        .as_secs_f64();
    let mut lat = total.latencies_us;
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        // Nearest rank.
        let rank = ((p / 100.0) * lat.len() as f64).ceil() as usize;
        f64::from(lat[rank.clamp(1, lat.len()) - 1]) / 1000.0
    };
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().map(|&x| f64::from(x)).sum::<f64>() / lat.len() as f64 / 1000.0
    };
    let out = json!({
        "connections": args.connections,
        "seconds": seconds,
        "ok": total.ok,
        "bad": total.bad,
        "io_errors": total.io_errors,
        "statuses": total.statuses,
        "rps": if seconds > 0.0 { total.ok as f64 / seconds } else { 0.0 },
        "p50_ms": pct(50.0),
        "p90_ms": pct(90.0),
        "p99_ms": pct(99.0),
        "max_ms": lat.last().map_or(0.0, |&x| f64::from(x) / 1000.0),
        "mean_ms": mean,
        "body_bytes": total.body_bytes,
        "sample_error": total.sample_error,
    });
    println!("{out}");
    Ok(())
}
