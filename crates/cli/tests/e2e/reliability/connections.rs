//! What an unauthenticated client can hold of the server is bounded. Against the real
//! `lanyard serve`, configured with small limits:
//! - `max-connections`: with the limit's worth of idle connections open, one more is closed
//!   at once (and the operator's log says why), while the open ones go on serving `/healthz`
//!   and tokens; once they close, a new client is served again.
//! - the request-body deadline: a body trickled a byte every 500 ms (for up to 60 s, more
//!   often than the 1 s grace period, far below the minimum rate) is cut off with a 408 in
//!   the plane's error shape, at the unauthenticated token endpoint (Entra's shape), the
//!   control plane (ARM's) and a blob upload (Storage's XML), before the trickle ends.
//! - `idle-timeout-secs`: an HTTP/2 connection that answers the server's pings but sends no
//!   request after its first is closed.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::kit::*;
use crate::support::free_port;

/// A TLS client trusting the server's CA, offering `alpn`.
fn tls_client(ca_pem: &[u8], alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in lanyard_server::tls::pem_certificates(std::str::from_utf8(ca_pem).unwrap()) {
        roots.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_and_the_open_ones_go_on() {
    const LIMIT: usize = 4;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let log = tmp.path().join("serve.log");
    let limit = LIMIT.to_string();
    let mut served = Served::start(
        &dir,
        free_port(),
        None,
        &log,
        &[("LANYARD_MAX_CONNECTIONS", limit.as_str())],
    );
    let t = served.ready(&dir).await;
    let pem = std::fs::read(dir.join("ca.pem")).unwrap();
    let healthz = t.url("localhost", "/healthz");

    // The limit's worth of clients, each holding one idle keep-alive connection. (The
    // readiness probe's connection may still be closing: a refused client tries again.)
    let mut holders = Vec::new();
    for i in 0..LIMIT {
        let client = client_trusting(&pem);
        let mut served_once = false;
        for _ in 0..100 {
            if let Ok(r) = client.get(&healthz).send().await {
                assert_eq!(r.status(), 200);
                served_once = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(served_once, "holder {i} was never served");
        holders.push(client);
    }

    // One more: refused (closed before any answer).
    let extra = client_trusting(&pem).get(&healthz).send().await;
    assert!(
        extra.is_err(),
        "a connection over the limit of {LIMIT} was served: {:?}",
        extra.map(|r| r.status())
    );

    // The open connections go on: health checks, and a token for the administrator.
    for client in &holders {
        let r = client.get(&healthz).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let on_held = Target {
        http: holders[0].clone(),
        ..t.clone()
    };
    let token = on_held.admin_token(ARM_SCOPE).await;
    assert!(!token.is_empty());

    // Once they close, a new client is served.
    drop(on_held);
    drop(holders);
    let fresh = client_trusting(&pem);
    let mut status = None;
    for _ in 0..100 {
        if let Ok(r) = fresh.get(&healthz).send().await {
            status = Some(r.status().as_u16());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status,
        Some(200),
        "no client was served after the holders closed"
    );

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("connection limit reached"),
        "the refusal is not in the server's log:\n{text}"
    );
    println!("connections: limit {LIMIT}: the extra connection was refused, the held ones served, a new client served after they closed");
    let status = served.terminate();
    assert!(status.success(), "exit {status:?}");
}

/// How a trickled request ended.
#[derive(Debug)]
struct Trickled {
    /// Body bytes sent before the server answered or closed; `None` if the trickle ran out.
    cut_after: Option<usize>,
    /// What the server sent back.
    answer: Vec<u8>,
}

impl Trickled {
    fn status(&self) -> Option<u16> {
        let text = String::from_utf8_lossy(&self.answer);
        text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }

    fn body(&self) -> String {
        let text = String::from_utf8_lossy(&self.answer);
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }
}

/// Sends `head` (a request announcing a 4096-byte body), then one body byte every 500 ms, at
/// most 120 times (60 s), until the server answers or closes.
async fn trickle(connector: &tokio_rustls::TlsConnector, port: u16, head: String) -> Trickled {
    const EVERY: Duration = Duration::from_millis(500);
    const BYTES: usize = 120;
    let stream = tls_connect(connector, port).await;
    let (rd, mut wr) = tokio::io::split(stream);
    wr.write_all(head.as_bytes()).await.unwrap();
    wr.flush().await.unwrap();
    let mut reader = tokio::spawn(read_response(rd));
    let mut cut_after = None;
    let mut answer = None;
    for sent in 0..BYTES {
        tokio::select! {
            read = &mut reader => {
                answer = Some(read.unwrap());
                cut_after = Some(sent);
                break;
            }
            () = tokio::time::sleep(EVERY) => {}
        }
        if wr.write_all(b"a").await.is_err() || wr.flush().await.is_err() {
            cut_after = Some(sent);
            break;
        }
    }
    let answer = match answer {
        Some(a) => a,
        None if cut_after.is_some() => tokio::time::timeout(Duration::from_secs(10), &mut reader)
            .await
            .map(|r| r.unwrap())
            .unwrap_or_default(),
        None => {
            reader.abort();
            Vec::new()
        }
    };
    Trickled { cut_after, answer }
}

/// Reads one HTTP/1.1 response (head and a `Content-Length` body), or up to the connection's
/// end.
async fn read_response(mut rd: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return buf,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return buf;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_are_cut_off_with_408_in_each_planes_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let log = tmp.path().join("serve.log");
    let mut served = Served::start(
        &dir,
        free_port(),
        None,
        &log,
        &[("LANYARD_REQUEST_BODY_TIMEOUT_SECS", "1")],
    );
    let t = served.ready(&dir).await;
    let pem = std::fs::read(dir.join("ca.pem")).unwrap();
    let port = t.port;

    // A storage account and container to upload into, and tokens.
    let arm = t.admin_token(ARM_SCOPE).await;
    let storage = t.admin_token(STORAGE_SCOPE).await;
    let rg = format!("{}/resourceGroups/slow", t.subscription());
    put_ok(
        &t,
        &arm,
        &format!("{rg}?{RG_API}"),
        &json!({"location": "local"}),
    )
    .await;
    let account = format!("{rg}/providers/Microsoft.Storage/storageAccounts/stslow");
    put_ok(
        &t,
        &arm,
        &format!("{account}?{ACCOUNT_API}"),
        &json!({"location": "local", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}),
    )
    .await;
    assign(
        &t,
        &arm,
        &account,
        BLOB_CONTRIBUTOR,
        &t.admin.object_id.to_string(),
    )
    .await;
    let r = call(
        &t.http,
        Method::PUT,
        &t.blob("stslow", "/box?restype=container"),
        bearer(&storage),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let h1 = tls_client(&pem, b"http/1.1");
    let token_head = format!(
        "POST /{}/oauth2/v2.0/token HTTP/1.1\r\nHost: localhost:{port}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4096\r\n\r\n",
        t.tenant()
    );
    let arm_head = format!(
        "PUT {}/resourceGroups/slow2?{RG_API} HTTP/1.1\r\nHost: localhost:{port}\r\n\
         Authorization: Bearer {arm}\r\nContent-Type: application/json\r\n\
         Content-Length: 4096\r\n\r\n",
        t.subscription()
    );
    let blob_head = format!(
        "PUT /box/slow.bin HTTP/1.1\r\nHost: stslow.blob.{DOMAIN}:{port}\r\n\
         Authorization: Bearer {storage}\r\nx-ms-blob-type: BlockBlob\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 4096\r\n\r\n"
    );
    let (token, arm_put, blob) = tokio::join!(
        trickle(&h1, port, token_head),
        trickle(&h1, port, arm_head),
        trickle(&h1, port, blob_head),
    );
    for (what, got) in [
        ("token endpoint", &token),
        ("control plane", &arm_put),
        ("blob upload", &blob),
    ] {
        assert!(
            got.cut_after.is_some(),
            "{what}: a body trickled for 60 s was never cut off"
        );
        assert_eq!(
            got.status(),
            Some(408),
            "{what}: {}",
            String::from_utf8_lossy(&got.answer)
        );
    }
    let entra: serde_json::Value = serde_json::from_str(&token.body()).unwrap();
    assert_eq!(entra["error"], "invalid_request", "{entra}");
    assert!(entra["error_description"].is_string(), "{entra}");
    let arm_error: serde_json::Value = serde_json::from_str(&arm_put.body()).unwrap();
    assert_eq!(arm_error["error"]["code"], "RequestTimeout", "{arm_error}");
    assert!(
        blob.body().contains("<Code>RequestTimeout</Code>"),
        "{}",
        blob.body()
    );
    // Nothing of the cut-off requests was kept.
    let r = call(
        &t.http,
        Method::GET,
        &t.arm(&format!(
            "{}/resourceGroups/slow2?{RG_API}",
            t.subscription()
        )),
        bearer(&arm),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = call(
        &t.http,
        Method::GET,
        &t.blob("stslow", "/box/slow.bin"),
        bearer(&storage),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text);

    println!(
        "connections: bodies trickled at the token endpoint, control plane and blob upload cut off with 408 after {:?}, {:?}, {:?} bytes",
        token.cut_after, arm_put.cut_after, blob.cut_after
    );
    let status = served.terminate();
    assert!(status.success(), "exit {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let log = tmp.path().join("serve.log");
    let mut served = Served::start(
        &dir,
        free_port(),
        None,
        &log,
        &[("LANYARD_IDLE_TIMEOUT_SECS", "2")],
    );
    let t = served.ready(&dir).await;
    let pem = std::fs::read(dir.join("ca.pem")).unwrap();
    let port = t.port;

    // An HTTP/2 connection that makes one request and then only answers pings is closed.
    let stream = tls_connect(&tls_client(&pem, b"h2"), port).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let mut connection = tokio::spawn(connection);
    let request = hyper::Request::get(format!("https://localhost:{port}/healthz"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    // Bounded wait for the test's sake: the server's idle timeout is 2 s.
    let closed = tokio::time::timeout(Duration::from_secs(30), &mut connection).await;
    assert!(
        closed.is_ok(),
        "an idle HTTP/2 connection was still open 30 s after its only request"
    );
    assert!(sender.is_closed() || sender.ready().await.is_err());

    println!("connections: an HTTP/2 connection idle after one request was closed by the server");
    let status = served.terminate();
    assert!(status.success(), "exit {status:?}");
}
