//! What the unauthenticated token endpoint must not be made to do.
//!
//! - Fetch from the server's own network: a federated credential whose issuer is a loopback
//!   address, or a name resolving to one, is answered with AADSTS50166 and a trace id, and a
//!   listener on that port sees no connection. The answer holds no network error text (the
//!   caller chose the URL; the cause is in the server's log under the trace id). With the
//!   network allowed by the operator, the fetch goes out, and its failure is still not told.
//!   Link-local, private and metadata addresses are refused on their spelling before any
//!   client exists (unit tests in `lanyard-login`; no test sends a packet to them).
//! - Accept client assertions valid for years: a certificate assertion whose `exp` is five
//!   years ahead, or whose `nbf` is five years back, is refused with AADSTS700024; the usual
//!   ten-minute one passes. (Federated assertions: `login.rs`, against a real OIDC issuer.)

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use super::kit::*;
use crate::both_backends;
use crate::support::{Backend, TestServer};

both_backends!(
    federated_issuers_on_loopback_are_never_contacted,
    client_assertions_valid_for_years_are_refused,
);

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const EXCHANGE: &str = "api://AzureADTokenExchange";
const SUBJECT: &str = "system:serviceaccount:prod:worker";

/// Words a network, TLS or resolver failure would show.
const NETWORK_WORDS: &[&str] = &[
    "connect",
    "refused",
    "error sending",
    "dns",
    "tls",
    "handshake",
    "certificate",
    "os error",
    "timed out",
    "loopback",
    "resolve",
    "127.0.0.1",
    "::1",
    "localhost",
];

/// A loopback port that records whether anyone connected. A connection made before
/// `contacted` is asked sits in the listen backlog, so asking needs no waiting.
struct Listener(std::net::TcpListener);

impl Listener {
    fn bind() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Self(listener)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    /// Whether a connection is waiting; it is closed at once.
    fn contacted(&self) -> bool {
        match self.0.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An assertion naming `issuer`, with a signature nobody can check: the server must fetch
/// the issuer's keys before it can tell, which is the request under test.
fn unsigned_assertion(issuer: &str) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "k1"});
    let now = now();
    let claims = json!({"iss": issuer, "sub": SUBJECT, "aud": EXCHANGE,
                        "iat": now, "nbf": now, "exp": now + 600, "jti": Uuid::new_v4()});
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(&[7; 256])
    )
}

async fn assertion_token(t: &Target, client_id: &str, assertion: &str) -> Reply {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
        ("scope", VAULT_SCOPE),
    ];
    let r = t
        .http
        .post(t.arm(&format!("/{}/oauth2/v2.0/token", t.tenant())))
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        json,
    }
}

/// Entra's shape with `code`; the description and the trace id agree.
fn assert_aadsts(r: &Reply, status: u16, error: &str, code: u64) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.json["error"], error, "{}", r.text);
    assert_eq!(r.json["error_codes"], json!([code]), "{}", r.text);
    let description = r.json["error_description"].as_str().unwrap_or("");
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
}

/// The issuer-fetch refusal: 50166, a generic message with the trace id the server logged
/// the cause under, and no word of the cause.
fn assert_issuer_unreachable(r: &Reply) {
    assert_aadsts(r, 400, "invalid_request", 50166);
    let trace_id = r.json["trace_id"].as_str().unwrap();
    assert_eq!(
        r.json["error_description"].as_str().unwrap(),
        format!("AADSTS50166: Request to External OIDC endpoint failed.\r\nTrace ID: {trace_id}")
    );
    let text = r.text.to_ascii_lowercase();
    for word in NETWORK_WORDS {
        assert!(!text.contains(word), "`{word}` in {}", r.text);
    }
}

/// A user-assigned identity with one federated credential per issuer; its client id.
async fn identity_trusting(t: &Target, arm: &str, rg_name: &str, issuers: &[String]) -> String {
    let rg = format!("{}/resourceGroups/{rg_name}", t.subscription());
    put_ok(
        t,
        arm,
        &format!("{rg}?{RG_API}"),
        &json!({"location": "local"}),
    )
    .await;
    let uai = format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/worker");
    let body = put_ok(
        t,
        arm,
        &format!("{uai}?{UAI_API}"),
        &json!({"location": "local"}),
    )
    .await;
    for (i, issuer) in issuers.iter().enumerate() {
        put_ok(
            t,
            arm,
            &format!("{uai}/federatedIdentityCredentials/fic{i}?{UAI_API}"),
            &json!({"properties": {"issuer": issuer, "subject": SUBJECT, "audiences": [EXCHANGE]}}),
        )
        .await;
    }
    body["properties"]["clientId"].as_str().unwrap().to_string()
}

async fn federated_issuers_on_loopback_are_never_contacted(backend: Backend) {
    let listener = Listener::bind();
    let port = listener.port();
    let issuers: Vec<String> = [
        format!("https://127.0.0.1:{port}"),
        format!("https://127.0.0.1:{port}/tenant/v2.0"),
        format!("https://localhost:{port}"),
        format!("https://[::1]:{port}"),
        format!("https://[::ffff:127.0.0.1]:{port}"),
        format!("https://127.1:{port}"),
    ]
    .into();

    // A server with the default configuration.
    let server = TestServer::start(backend).await.unwrap();
    let t = Target::of(&server);
    let arm = t.admin_token(ARM_SCOPE).await;
    let client_id = identity_trusting(&t, &arm, "federation", &issuers).await;
    let since = time::OffsetDateTime::now_utc() - time::Duration::seconds(5);
    let mut traces = Vec::new();
    for issuer in &issuers {
        let r = assertion_token(&t, &client_id, &unsigned_assertion(issuer)).await;
        assert!(!listener.contacted(), "{issuer} was fetched from");
        assert_issuer_unreachable(&r);
        traces.push(r.json["trace_id"].as_str().unwrap().to_string());
    }
    // The sign-in log says why, as the client heard it, and where the server's log has more.
    let log = call(
        &t.http,
        Method::GET,
        &t.arm(&format!(
            "/lanyard/signins?from={}&$top=100",
            urlencoding::encode(
                &since
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap()
            )
        )),
        bearer(&arm),
    )
    .await;
    assert_eq!(log.status, 200, "{}", log.text);
    let refusals: Vec<&Value> = log.json["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "token_endpoint" && e["result"] == "failure")
        .collect();
    for trace in &traces {
        assert!(
            refusals.iter().any(|e| e["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("AADSTS50166") && r.contains(trace.as_str()))),
            "no sign-in record for {trace}: {}",
            log.text
        );
    }

    // The operator allows loopback: the fetch now goes out (the listener speaks no TLS, so it
    // fails), and what failed is still the server's business only.
    let open = TestServer::start_configured(
        backend,
        std::sync::Arc::new(lanyard_domain::SystemClock),
        lanyard_server::config::ConfigLayer {
            federation_allowed_networks: Some(vec!["127.0.0.0/8".into()]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let t = Target::of(&open);
    let arm = t.admin_token(ARM_SCOPE).await;
    let client_id = identity_trusting(&t, &arm, "federation", &issuers[..1]).await;
    let accept = tokio::task::spawn_blocking(move || {
        // Bounded: the server's own fetch gives up after ten seconds.
        for _ in 0..400 {
            if listener.contacted() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    let r = assertion_token(&t, &client_id, &unsigned_assertion(&issuers[0])).await;
    assert!(
        accept.await.unwrap(),
        "an allowed issuer was not fetched from"
    );
    assert_issuer_unreachable(&r);
}

async fn client_assertions_valid_for_years_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await.unwrap();
    let t = Target::of(&server);
    let graph = t.admin_token(GRAPH_SCOPE).await;
    let app = create_app(&t, &graph, "cert-app").await;
    let now = now();
    let key = lanyard_token::SigningKey::generate(now).unwrap();
    let der = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(key.certificate_der())
    };
    let r = call(
        &t.http,
        Method::PATCH,
        &t.arm(&format!("/v1.0/applications/{}", app.id)),
        bearer_json(
            &graph,
            &json!({"keyCredentials": [{"type": "AsymmetricX509Cert", "usage": "Verify", "key": der}]}),
        ),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let audience = t.arm(&format!("/{}/oauth2/v2.0/token", t.tenant()));
    let assertion = |nbf: i64, exp: i64| {
        lanyard_token::mint::sign_jwt(
            &key,
            &json!({"iss": app.client_id, "sub": app.client_id, "aud": audience,
                    "nbf": nbf, "iat": nbf, "exp": exp, "jti": Uuid::new_v4()}),
        )
        .unwrap()
    };
    let years = 5 * 365 * 24 * 3600;

    // The usual ten minutes: a token, and another for the same assertion (Entra allows
    // reuse within its lifetime, and clients rely on it).
    let usual = assertion(now, now + 600);
    for _ in 0..2 {
        let ok = assertion_token(&t, &app.client_id, &usual).await;
        assert_eq!(ok.status, 200, "{}", ok.text);
        assert!(ok.json["access_token"].is_string());
    }
    // Valid for five years from now, or since five years ago, or two hours (over the
    // default hour): refused, no token.
    for (nbf, exp, what) in [
        (now, now + years, "five years ahead"),
        (now - years, now + 600, "since five years ago"),
        (now, now + 2 * 3600, "two hours"),
    ] {
        let r = assertion_token(&t, &app.client_id, &assertion(nbf, exp)).await;
        assert_aadsts(&r, 400, "invalid_client", 700024);
        assert!(r.json.get("access_token").is_none(), "{what}: {}", r.text);
        assert!(
            r.json["error_description"]
                .as_str()
                .unwrap()
                .contains("at most 3600"),
            "{what}: {}",
            r.text
        );
    }
}
