//! The foundation: a server that starts on an empty directory, answers over HTTPS trusted
//! through its own CA, routes by host, bootstraps once, and fails with one-line errors.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::both_backends;
use crate::support::*;

both_backends!(
    serves_healthz_over_trusted_https,
    unknown_hosts_get_arm_404,
    restart_keeps_the_directory
);

async fn serves_healthz_over_trusted_https(backend: Backend) {
    let server = TestServer::start(backend).await.unwrap();
    let client = server.client().unwrap();
    for host in [
        "localhost",
        "127.0.0.1",
        "management.lanyard.localhost",
        "login.lanyard.localhost",
    ] {
        let r = client
            .get(server.url(host, "/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
        assert!(r.headers().contains_key("x-ms-request-id"));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "ok");
    }
    // A client that does not trust the CA is refused by TLS.
    let untrusting = reqwest::Client::new();
    assert!(untrusting
        .get(server.url("localhost", "/healthz"))
        .send()
        .await
        .is_err());
}

async fn unknown_hosts_get_arm_404(backend: Backend) {
    let server = TestServer::start(backend).await.unwrap();
    let client = server.client().unwrap();
    let r = client
        .get(server.url("elsewhere.lanyard.localhost", "/subscriptions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "HostNotFound");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("elsewhere"));
}

async fn restart_keeps_the_directory(backend: Backend) {
    let server = TestServer::start(backend).await.unwrap();
    let before = server.admin.clone();
    let server = server.restart().await.unwrap();
    assert_eq!(server.admin.tenant_id, before.tenant_id);
    assert_eq!(server.admin.subscription_id, before.subscription_id);
    assert_eq!(server.admin.client_secret, before.client_secret);
    let r = server
        .client()
        .unwrap()
        .get(server.url("localhost", "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn serve_env_and_graceful_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let mut child = spawn_serve(&data, port, &[]);
    wait_ready(&data, port).await;

    let mode = std::fs::metadata(data.join("admin.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let mode = std::fs::metadata(data.join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let out = lanyard()
        .arg("env")
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let admin: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("admin.json")).unwrap()).unwrap();
    for name in [
        "AZURE_TENANT_ID",
        "AZURE_SUBSCRIPTION_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_AUTHORITY_HOST",
        "LANYARD_ARM_URL",
        "REQUESTS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
    ] {
        assert!(
            text.contains(&format!("export {name}='")),
            "{name} missing in:\n{text}"
        );
    }
    assert!(text.contains(&format!("AZURE_AUTHORITY_HOST='https://localhost:{port}'")));
    assert!(text.contains(admin["clientSecret"].as_str().unwrap()));

    // The exports work in a real shell: curl with the exported CA reaches the server.
    let script = format!(
        "eval \"$({} env --data-dir {})\" && test -n \"$AZURE_CLIENT_SECRET\" && \
         curl -sf --cacert \"$REQUESTS_CA_BUNDLE\" \"$LANYARD_ARM_URL/healthz\"",
        env!("CARGO_BIN_EXE_lanyard"),
        data.display()
    );
    let curl = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        curl.status.success(),
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    assert!(String::from_utf8_lossy(&curl.stdout).contains("ok"));

    // SIGTERM stops it cleanly.
    let pid = child.id() as i32;
    assert_eq!(unsafe_free_kill(pid, "TERM"), 0);
    let status = wait_exit(&mut child, 20);
    assert!(status.success(), "exit status {status:?}");
    let logs = stderr_of(child);
    assert!(logs.contains("lanyard is ready"));
    assert!(
        !logs.contains(admin["clientSecret"].as_str().unwrap()),
        "the administrator secret reached the log"
    );
}

/// Sends a signal with the `kill` command (the workspace forbids `unsafe`).
fn unsafe_free_kill(pid: i32, signal: &str) -> i32 {
    std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

#[tokio::test]
async fn serve_with_postgres_url() {
    let db = lanyard_testkit::db::fresh_postgres_url().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let mut child = spawn_serve(&data, port, &["--database-url", db.url()]);
    wait_ready(&data, port).await;
    let out = lanyard()
        .arg("env")
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("AZURE_CLIENT_SECRET"));
    assert_eq!(unsafe_free_kill(child.id() as i32, "INT"), 0);
    assert!(wait_exit(&mut child, 20).success());
}

/// Runs `lanyard serve` expecting a quick one-line failure.
fn expect_start_failure(args: &[&str], data: &std::path::Path, needle: &str) {
    let mut child = spawn_serve(data, free_port(), args);
    let status = wait_exit(&mut child, 30);
    assert_eq!(status.code(), Some(1), "expected exit code 1");
    let err = stderr_of(child);
    let last = err.lines().last().unwrap_or("").to_string();
    assert!(last.starts_with("error: "), "stderr: {err}");
    assert!(last.contains(needle), "`{needle}` not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_data_directory_that_is_a_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    expect_start_failure(&[], &file, "is not a directory");
}

#[test]
fn an_unreachable_database_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    expect_start_failure(
        &["--database-url", "postgres://postgres:pw@127.0.0.1:1/none"],
        &tmp.path().join("data"),
        "cannot open database `postgres://postgres:***@127.0.0.1:1/none`",
    );
}

#[test]
fn a_corrupt_configuration_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("lanyard.toml"), "port = \"many\"\n").unwrap();
    expect_start_failure(&[], &data, "is corrupt");
    std::fs::write(data.join("lanyard.toml"), "domain = \"not a domain\"\n").unwrap();
    expect_start_failure(&[], &data, "invalid setting `domain`");
    // A flag is checked as the file is: the feed interval has bounds.
    std::fs::remove_file(data.join("lanyard.toml")).unwrap();
    expect_start_failure(
        &["--feed-poll-ms", "5"],
        &data,
        "invalid setting `feed-poll-ms`",
    );
    // The token service's limits, likewise.
    expect_start_failure(
        &["--client-assertion-max-lifetime-secs", "157680000"],
        &data,
        "invalid setting `client-assertion-max-lifetime-secs`",
    );
    expect_start_failure(
        &["--federation-allowed-networks", "10.0.0.0/8,intranet"],
        &data,
        "invalid setting `federation-allowed-networks`",
    );
}

#[test]
fn a_port_in_use_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut child = lanyard()
        .args(["serve", "--port", &port.to_string(), "--data-dir"])
        .arg(tmp.path().join("data"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(wait_exit(&mut child, 30).code(), Some(1));
    let err = stderr_of(child);
    assert!(err.contains("address already in use"), "{err}");
}
