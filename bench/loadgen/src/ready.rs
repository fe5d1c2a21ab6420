//! Start-up time and memory: spawns a server command, polls `https://127.0.0.1:{port}/healthz`
//! until it answers 200, reads the process's RSS then and after an idle pause, and stops it
//! with SIGTERM (unless told to leave it running).
//!
//! The CA file may not exist yet (a first start creates it); polling waits for it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::json;

#[derive(Args, Debug)]
pub struct ReadyArgs {
    /// The server's HTTPS port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// The CA certificate to trust (created by the server on a first start).
    #[arg(long)]
    ca: PathBuf,
    /// Give up after this long.
    #[arg(long, default_value_t = 120.0)]
    timeout_secs: f64,
    /// Pause between "ready" and the idle RSS reading.
    #[arg(long, default_value_t = 2.0)]
    idle_secs: f64,
    /// Append the server's stdout and stderr here.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Leave the server running (its pid is in the output).
    #[arg(long)]
    leave_running: bool,
    /// The server command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn run(args: ReadyArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| anyhow!("no command given"))?;
    let mut command = Command::new(program);
    command.args(rest).stdin(Stdio::null());
    match &args.log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening `{}`", path.display()))?;
            command.stdout(file.try_clone()?).stderr(file);
        }
        None => {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("starting `{program}`"))?;
    let ready = runtime.block_on(wait_ready(&args, &mut child, started));
    // Closes the polling connection, so a graceful stop has nothing to wait for.
    drop(runtime);
    let ready_ms = match ready {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => {
            stop(&mut child);
            return Err(e);
        }
    };
    let pid = child.id();
    let rss_ready = status_kb(pid, "VmRSS");
    std::thread::sleep(Duration::from_secs_f64(args.idle_secs.max(0.0)));
    let rss_idle = status_kb(pid, "VmRSS");
    let hwm = status_kb(pid, "VmHWM");
    if !args.leave_running {
        stop(&mut child);
    }
    println!(
        "{}",
        json!({
            "pid": pid,
            "ready_ms": ready_ms,
            "rss_ready_kb": rss_ready,
            "rss_idle_kb": rss_idle,
            "hwm_kb": hwm,
        })
    );
    Ok(())
}

async fn wait_ready(
    args: &ReadyArgs,
    child: &mut Child,
    started: Instant,
) -> anyhow::Result<Duration> {
    let deadline = started + Duration::from_secs_f64(args.timeout_secs);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], args.port));
    let mut connector = None;
    loop {
        if Instant::now() > deadline {
            anyhow::bail!("no 200 from /healthz within {}s", args.timeout_secs);
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the server exited before it was ready ({status})");
        }
        if connector.is_none() && args.ca.exists() {
            connector = crate::tls::connector(&args.ca).ok();
        }
        let Some(tls) = &connector else {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        };
        let attempt = tokio::time::timeout(Duration::from_secs(5), async {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::try_from("localhost")?;
            let stream = tls.connect(name, tcp).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let request = http::Request::get("/healthz")
                .header(http::header::HOST, format!("localhost:{}", args.port))
                .body(Empty::<Bytes>::new())?;
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let _ = response.into_body().collect().await?;
            anyhow::Ok(status)
        })
        .await;
        if let Ok(Ok(200)) = attempt {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// SIGTERM, then SIGKILL if it has not exited within 15 seconds.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A `kB` field of `/proc/{pid}/status`.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}
