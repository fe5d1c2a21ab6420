//! Helpers shared by the end-to-end modules.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use lanyard_testkit::{Backend, TestServer};

/// Writes `mod $name { sqlite(), postgres() }` calling `$name(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::support::Backend::Postgres).await
                }
            }
        )*
    };
}

/// The `lanyard` binary built for these tests.
pub fn lanyard() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lanyard"));
    // Tests never inherit a developer's settings.
    for (k, _) in std::env::vars() {
        if k.starts_with("LANYARD_") || k.starts_with("AZURE_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A free loopback port (bound and released; good enough for a test that binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `lanyard serve` as a child process on a free port.
pub fn spawn_serve(data_dir: &Path, port: u16, extra: &[&str]) -> Child {
    lanyard()
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--port")
        .arg(port.to_string())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls `/healthz` with the data directory's CA until it answers (at most 60 s).
pub async fn wait_ready(data_dir: &Path, port: u16) -> reqwest::Client {
    let ca_path = data_dir.join("ca.pem");
    for _ in 0..600 {
        if let Ok(pem) = std::fs::read(&ca_path) {
            let client = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
                .build()
                .unwrap();
            let url = format!("https://localhost:{port}/healthz");
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return client;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server on port {port} did not become ready");
}

/// Waits for a child to exit (at most `secs`), killing it if it does not.
pub fn wait_exit(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    for _ in 0..secs * 10 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("process did not exit within {secs} s");
}

pub fn stderr_of(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}
