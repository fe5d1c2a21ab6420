//! The token service: OIDC discovery and keys, the token endpoints with every credential kind
//! (the official azure-identity gets tokens with client secrets, certificates, workload
//! identity federation and client assertions, and an independent validator, PyJWT, accepts
//! them), Entra-shaped refusals, the Graph app-registration API, and key rotation.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::both_backends;
use crate::support::*;
use lanyard_testkit::python;

both_backends!(
    discovery_documents_and_keys,
    official_sdk_credentials,
    token_endpoint_refusals,
    graph_app_registrations,
    key_rotation_survives_restart,
    concurrent_tokens_are_each_logged,
);

const VAULT: &str = "https://vault.azure.net";
const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
const GRAPH: &str = "https://graph.microsoft.com";
const EXCHANGE: &str = "api://AzureADTokenExchange";

// ---------------------------------------------------------------------------------------
// Helpers

/// The claims of a JWT, unverified (the Python validator does the verifying).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn header(token: &str) -> Value {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
}

fn script(name: &str) -> PathBuf {
    python::scripts_dir().join("login").join(name)
}

/// Runs a Python script of `tests/python/login` and parses the JSON it prints. Fails (never
/// skips) without `LANYARD_TEST_PYTHON`.
async fn run_python(
    name: &str,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Option<Value>,
) -> Value {
    let path = script(name);
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = python::command(&path, &argv, &[])
            .unwrap_or_else(|e| panic!("cannot run the Python SDK tests: {e:#}"));
        for (k, _) in std::env::vars() {
            if k.starts_with("AZURE_") || k.starts_with("MSAL_") || k == "IDENTITY_ENDPOINT" {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let input = stdin.map(|v| v.to_string()).unwrap_or_default();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name} {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{name} printed no JSON ({e}): {stdout}"))
    })
    .await
    .unwrap()
}

/// The environment the SDK needs to reach a server at `port` trusting `ca`.
fn sdk_env(port: u16, ca: &Path, tenant: Uuid) -> Vec<(String, String)> {
    let ca = ca.display().to_string();
    vec![
        (
            "AZURE_AUTHORITY_HOST".into(),
            format!("https://localhost:{port}"),
        ),
        ("AZURE_TENANT_ID".into(), tenant.to_string()),
        ("REQUESTS_CA_BUNDLE".into(), ca.clone()),
        ("SSL_CERT_FILE".into(), ca),
    ]
}

/// `POST` a form to a token endpoint; returns the status and JSON body.
async fn post_form(
    client: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let r = client.post(url).form(form).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A token by client secret (v2 endpoint), or the refusal.
async fn secret_token(
    client: &reqwest::Client,
    base: &str,
    tenant: &str,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> (StatusCode, Value) {
    post_form(
        client,
        &format!("{base}/{tenant}/oauth2/v2.0/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", scope),
        ],
    )
    .await
}

/// Asserts an Entra refusal: status, `error_codes`, and the body's shape.
#[track_caller]
fn assert_entra(reply: &(StatusCode, Value), status: u16, code: u32) {
    let (s, body) = reply;
    assert_eq!(s.as_u16(), status, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    assert!(body["error"].is_string(), "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{body}"
    );
    for k in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[k].is_string(), "{k} missing: {body}");
    }
}

/// A REST call with a bearer token; returns the status and JSON body.
async fn call(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = client.request(method, url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn open_store(
    data_dir: &Path,
    database_url: Option<&str>,
) -> std::sync::Arc<dyn lanyard_storage::Store> {
    let location = database_url
        .map(str::to_string)
        .unwrap_or_else(|| data_dir.join("lanyard.db").display().to_string());
    lanyard_storage::open(&location).await.unwrap()
}

/// An app registration made through Graph, with its service principal and a secret.
struct App {
    id: String,
    app_id: String,
    secret: String,
}

async fn create_app(client: &reqwest::Client, graph: &str, admin_token: &str, name: &str) -> App {
    let (s, app) = call(
        client,
        Method::POST,
        &format!("{graph}/v1.0/applications"),
        Some(admin_token),
        Some(json!({"displayName": name})),
    )
    .await;
    assert_eq!(s, 201, "{app}");
    let app_id = app["appId"].as_str().unwrap().to_string();
    let (s, sp) = call(
        client,
        Method::POST,
        &format!("{graph}/v1.0/servicePrincipals"),
        Some(admin_token),
        Some(json!({"appId": app_id})),
    )
    .await;
    assert_eq!(s, 201, "{sp}");
    assert_eq!(sp["id"], app["id"]);
    let id = app["id"].as_str().unwrap().to_string();
    let (s, pw) = call(
        client,
        Method::POST,
        &format!("{graph}/v1.0/applications/{id}/addPassword"),
        Some(admin_token),
        Some(json!({"passwordCredential": {"displayName": "test"}})),
    )
    .await;
    assert_eq!(s, 200, "{pw}");
    App {
        id,
        app_id,
        secret: pw["secretText"].as_str().unwrap().to_string(),
    }
}

/// The claims PROTOCOLS §2 requires of every token, checked as the validator returned them.
#[track_caller]
fn assert_protocol_claims(
    verified: &Value,
    audience: &str,
    tenant: Uuid,
    oid: &str,
    client_id: &str,
) {
    assert_eq!(verified["valid"], true, "{verified}");
    let h = &verified["header"];
    assert_eq!(h["alg"], "RS256");
    assert_eq!(h["typ"], "JWT");
    assert_eq!(h["kid"], h["x5t"], "{h}");
    let c = &verified["claims"];
    assert_eq!(c["aud"], audience, "{c}");
    assert_eq!(c["tid"], tenant.to_string());
    assert_eq!(c["oid"], oid);
    assert_eq!(c["sub"], oid);
    assert_eq!(c["idtyp"], "app");
    for k in ["iat", "nbf", "exp", "xms_tcdt"] {
        assert!(c[k].is_i64(), "{k} is not an integer: {c}");
    }
    assert!(c["exp"].as_i64().unwrap() > c["iat"].as_i64().unwrap());
    for k in ["aio", "rh", "uti", "idp"] {
        assert!(c[k].is_string(), "{k} missing: {c}");
    }
    match c["ver"].as_str().unwrap() {
        "1.0" => {
            assert_eq!(c["iss"], format!("https://sts.windows.net/{tenant}/"));
            assert_eq!(c["appid"], client_id);
            assert!(c.get("azp").is_none());
        }
        "2.0" => {
            assert_eq!(
                c["iss"],
                format!("https://login.microsoftonline.com/{tenant}/v2.0")
            );
            assert_eq!(c["azp"], client_id);
            assert!(c.get("appid").is_none());
        }
        other => panic!("unexpected ver {other}"),
    }
    assert_eq!(c["idp"], c["iss"]);
}

// ---------------------------------------------------------------------------------------
// A test OIDC issuer, and a server that trusts it

/// `tests/python/login/oidc_issuer.py`: its own CA, keys and a `/mint` endpoint.
struct Issuer {
    child: Child,
    url: String,
    ca_file: PathBuf,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Issuer {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = script("oidc_issuer.py");
        let dir_arg = dir.path().display().to_string();
        let (child, line) = tokio::task::spawn_blocking(move || {
            let mut cmd = python::command(&path, &[&dir_arg], &[])
                .unwrap_or_else(|e| panic!("cannot run the test OIDC issuer: {e:#}"));
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            (child, line)
        })
        .await
        .unwrap();
        let info: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("issuer said {line:?}: {e}"));
        let ca_file = PathBuf::from(info["ca_file"].as_str().unwrap());
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&ca_file).unwrap()).unwrap(),
            )
            .build()
            .unwrap();
        Issuer {
            child,
            url: info["issuer"].as_str().unwrap().to_string(),
            ca_file,
            client,
            _dir: dir,
        }
    }

    async fn mint(&self, claims: Value) -> String {
        let r = self
            .client
            .post(format!("{}/mint", self.url))
            .json(&claims)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        r.text().await.unwrap()
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `lanyard serve` as a child process with `LANYARD_EXTRA_CA_FILE` trusting the test
/// issuer (an environment variable is process-wide, so not set in this test process), and
/// loopback allowed as an issuer's address (refused by default).
struct ServeProcess {
    child: Child,
    port: u16,
    data_dir: PathBuf,
    client: reqwest::Client,
    admin: Value,
    _tmp: tempfile::TempDir,
    _db: Option<lanyard_testkit::db::TestDatabase>,
}

impl ServeProcess {
    async fn start(backend: Backend, extra_ca: &Path) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(lanyard_testkit::db::fresh_postgres_url().await.unwrap()),
        };
        let port = free_port();
        let mut cmd = lanyard();
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--port")
            .arg(port.to_string())
            .env("LANYARD_EXTRA_CA_FILE", extra_ca)
            .env("LANYARD_FEDERATION_ALLOWED_NETWORKS", "127.0.0.0/8,::1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("serve.log")).unwrap());
        if let Some(db) = &db {
            cmd.arg("--database-url").arg(db.url());
        }
        let child = cmd.spawn().unwrap();
        let client = wait_ready(&data_dir, port).await;
        let admin: Value =
            serde_json::from_str(&std::fs::read_to_string(data_dir.join("admin.json")).unwrap())
                .unwrap();
        ServeProcess {
            child,
            port,
            data_dir,
            client,
            admin,
            _tmp: tmp,
            _db: db,
        }
    }

    fn base(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn admin(&self, k: &str) -> String {
        self.admin[k].as_str().unwrap().to_string()
    }

    fn tenant(&self) -> Uuid {
        Uuid::parse_str(&self.admin("tenantId")).unwrap()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Tests

async fn discovery_documents_and_keys(backend: Backend) {
    let server = TestServer::start(backend).await.unwrap();
    let client = server.client().unwrap();
    let tid = server.admin.tenant_id;
    let port = server.addr.port();
    for host in ["localhost", "login.lanyard.localhost"] {
        let (s, v2) = call(
            &client,
            Method::GET,
            &server.url(
                host,
                &format!("/{tid}/v2.0/.well-known/openid-configuration"),
            ),
            None,
            None,
        )
        .await;
        assert_eq!(s, 200, "{v2}");
        assert_eq!(
            v2["token_endpoint"],
            format!("https://{host}:{port}/{tid}/oauth2/v2.0/token")
        );
        assert_eq!(
            v2["jwks_uri"],
            format!("https://{host}:{port}/{tid}/discovery/v2.0/keys")
        );
        assert_eq!(
            v2["authorization_endpoint"],
            format!("https://{host}:{port}/{tid}/oauth2/v2.0/authorize")
        );
        assert_eq!(
            v2["issuer"],
            format!("https://login.microsoftonline.com/{tid}/v2.0")
        );
        assert_eq!(
            v2["id_token_signing_alg_values_supported"],
            json!(["RS256"])
        );
        for k in [
            "response_types_supported",
            "subject_types_supported",
            "scopes_supported",
        ] {
            assert!(v2[k].is_array(), "{k}");
        }
        for k in [
            "tenant_region_scope",
            "cloud_instance_name",
            "msgraph_host",
            "device_authorization_endpoint",
        ] {
            assert!(v2[k].is_string(), "{k}");
        }
        let (s, v1) = call(
            &client,
            Method::GET,
            &server.url(host, &format!("/{tid}/.well-known/openid-configuration")),
            None,
            None,
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(v1["issuer"], format!("https://sts.windows.net/{tid}/"));
        assert_eq!(
            v1["token_endpoint"],
            format!("https://{host}:{port}/{tid}/oauth2/token")
        );
        assert_eq!(
            v1["jwks_uri"],
            format!("https://{host}:{port}/common/discovery/keys")
        );
    }
    // The default domain names the tenant too, and paths match case-insensitively.
    let (s, doc) = call(
        &client,
        Method::GET,
        &server.url(
            "localhost",
            "/Lanyard.Localhost/V2.0/.Well-Known/OpenID-Configuration",
        ),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        doc["issuer"],
        format!("https://login.microsoftonline.com/{tid}/v2.0")
    );
    // Unknown tenants are Entra's AADSTS90002.
    let reply = call(
        &client,
        Method::GET,
        &server.url(
            "localhost",
            &format!("/{}/v2.0/.well-known/openid-configuration", Uuid::new_v4()),
        ),
        None,
        None,
    )
    .await;
    assert_entra(&reply, 400, 90002);
    let reply = call(
        &client,
        Method::GET,
        &server.url("localhost", "/contoso.com/discovery/v2.0/keys"),
        None,
        None,
    )
    .await;
    assert_entra(&reply, 400, 90002);

    let mut kids = Vec::new();
    for path in [
        format!("/{tid}/discovery/v2.0/keys"),
        format!("/{tid}/discovery/keys"),
        "/common/discovery/keys".to_string(),
        "/common/discovery/v2.0/keys".to_string(),
    ] {
        let (s, jwks) = call(
            &client,
            Method::GET,
            &server.url("login.lanyard.localhost", &path),
            None,
            None,
        )
        .await;
        assert_eq!(s, 200, "{path}");
        let keys = jwks["keys"].as_array().unwrap();
        assert!(!keys.is_empty());
        for k in keys {
            assert_eq!(k["kty"], "RSA");
            assert_eq!(k["use"], "sig");
            assert_eq!(k["kid"], k["x5t"]);
            assert!(
                k["n"].is_string() && k["e"].is_string() && k["x5c"][0].is_string(),
                "{k}"
            );
        }
        kids.push(jwks["keys"][0]["kid"].clone());
    }
    kids.dedup();
    assert_eq!(kids.len(), 1);
    // A write to a document is refused, not served.
    let (s, _) = call(
        &client,
        Method::POST,
        &server.url("localhost", &format!("/{tid}/discovery/keys")),
        None,
        None,
    )
    .await;
    assert_eq!(s, 405);
}

async fn official_sdk_credentials(backend: Backend) {
    let issuer = Issuer::start().await;
    let server = ServeProcess::start(backend, &issuer.ca_file).await;
    let client = &server.client;
    let base = server.base();
    let tid = server.tenant();
    let ca = server.data_dir.join("ca.pem");
    let (s, t) = secret_token(
        client,
        &base,
        &tid.to_string(),
        &server.admin("clientId"),
        &server.admin("clientSecret"),
        &format!("{GRAPH}/.default"),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let admin_graph = t["access_token"].as_str().unwrap().to_string();
    let app = create_app(client, &base, &admin_graph, "sdk-app").await;

    // ClientSecretCredential.
    let mut env = sdk_env(server.port, &ca, tid);
    env.extend([
        ("LANYARD_CREDENTIAL".into(), "secret".into()),
        ("AZURE_CLIENT_ID".into(), app.app_id.clone()),
        ("AZURE_CLIENT_SECRET".into(), app.secret.clone()),
        ("LANYARD_SCOPE".into(), format!("{VAULT}/.default")),
    ]);
    let got = run_python("tokens.py", vec!["get".into()], env.clone(), None).await;
    assert_protocol_claims(&got, VAULT, tid, &app.id, &app.app_id);
    assert_eq!(got["claims"]["ver"], "1.0");
    assert_eq!(got["claims"]["appidacr"], "1");
    assert!(got["claims"].get("xms_mirid").is_none());

    // An application that asks for v2 tokens gets them from the v2 endpoint.
    let (s, body) = call(
        client,
        Method::PATCH,
        &format!("{base}/v1.0/applications/{}", app.id),
        Some(&admin_graph),
        Some(json!({"api": {"requestedAccessTokenVersion": 2}})),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    let v2_resource = format!("api://{}", app.app_id);
    let mut v2_env = env.clone();
    v2_env.push(("LANYARD_SCOPE".into(), format!("{v2_resource}/.default")));
    let got = run_python("tokens.py", vec!["get".into()], v2_env, None).await;
    assert_protocol_claims(&got, &v2_resource, tid, &app.id, &app.app_id);
    assert_eq!(got["claims"]["ver"], "2.0");
    assert_eq!(got["claims"]["azpacr"], "1");

    // CertificateCredential, with the certificate registered as a key credential.
    let tmp = tempfile::tempdir().unwrap();
    let cert = run_python(
        "tokens.py",
        vec!["make-cert".into(), tmp.path().display().to_string()],
        vec![],
        None,
    )
    .await;
    let (s, body) = call(client, Method::PATCH, &format!("{base}/v1.0/applications/{}", app.id), Some(&admin_graph), Some(json!({"keyCredentials": [{"type": "AsymmetricX509Cert", "usage": "Verify", "key": cert["der_b64"], "displayName": "ci"}]}))).await;
    assert_eq!(s, 204, "{body}");
    let (_, shown) = call(
        client,
        Method::GET,
        &format!("{base}/v1.0/applications/{}", app.id),
        Some(&admin_graph),
        None,
    )
    .await;
    assert_eq!(
        shown["keyCredentials"][0]["customKeyIdentifier"],
        cert["thumbprint"]
    );
    let mut cert_env = sdk_env(server.port, &ca, tid);
    cert_env.extend([
        ("LANYARD_CREDENTIAL".into(), "certificate".into()),
        ("AZURE_CLIENT_ID".into(), app.app_id.clone()),
        (
            "LANYARD_CERT_PATH".into(),
            cert["pem_path"].as_str().unwrap().to_string(),
        ),
        (
            "LANYARD_SCOPE".into(),
            "https://storage.azure.com/.default".into(),
        ),
    ]);
    let got = run_python("tokens.py", vec!["get".into()], cert_env, None).await;
    assert_protocol_claims(&got, "https://storage.azure.com", tid, &app.id, &app.app_id);
    assert_eq!(got["claims"]["appidacr"], "2");

    // WorkloadIdentityCredential with a federated credential of the application.
    let subject = "system:serviceaccount:default:app";
    let (s, fic) = call(client, Method::POST, &format!("{base}/v1.0/applications/{}/federatedIdentityCredentials", app.id), Some(&admin_graph), Some(json!({"name": "k8s-app", "issuer": issuer.url, "subject": subject, "audiences": [EXCHANGE]}))).await;
    assert_eq!(s, 201, "{fic}");
    let token_file = tmp.path().join("federated-token");
    std::fs::write(&token_file, issuer.mint(json!({"sub": subject})).await).unwrap();
    let mut wi_env = sdk_env(server.port, &ca, tid);
    wi_env.extend([
        ("LANYARD_CREDENTIAL".into(), "workload".into()),
        ("AZURE_CLIENT_ID".into(), app.app_id.clone()),
        (
            "AZURE_FEDERATED_TOKEN_FILE".into(),
            token_file.display().to_string(),
        ),
        ("LANYARD_SCOPE".into(), format!("{VAULT}/.default")),
    ]);
    let got = run_python("tokens.py", vec!["get".into()], wi_env, None).await;
    assert_protocol_claims(&got, VAULT, tid, &app.id, &app.app_id);
    assert_eq!(got["claims"]["appidacr"], "2");

    // ClientAssertionCredential for a user-assigned identity whose federated identity
    // credential is an ARM child resource (made through the control plane).
    let arm = |path: String| format!("{base}{path}");
    let (s, t) = secret_token(
        client,
        &base,
        &tid.to_string(),
        &server.admin("clientId"),
        &server.admin("clientSecret"),
        "https://management.azure.com//.default",
    )
    .await;
    assert_eq!(s, 200);
    let mgmt = t["access_token"].as_str().unwrap().to_string();
    let rg = format!(
        "/subscriptions/{}/resourceGroups/fed",
        server.admin("subscriptionId")
    );
    let (s, body) = call(
        client,
        Method::PUT,
        &arm(format!("{rg}?api-version=2021-04-01")),
        Some(&mgmt),
        Some(json!({"location": "local"})),
    )
    .await;
    assert!(s.is_success(), "{body}");
    let uai_path =
        format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/wi-worker");
    let (s, uai) = call(
        client,
        Method::PUT,
        &arm(format!("{uai_path}?api-version=2023-01-31")),
        Some(&mgmt),
        Some(json!({"location": "local"})),
    )
    .await;
    assert!(s.is_success(), "{uai}");
    let uai_subject = "system:serviceaccount:prod:worker";
    let (s, body) = call(client, Method::PUT, &arm(format!("{uai_path}/federatedIdentityCredentials/k8s-worker?api-version=2023-01-31")), Some(&mgmt), Some(json!({"properties": {"issuer": issuer.url, "subject": uai_subject, "audiences": [EXCHANGE]}}))).await;
    assert!(s.is_success(), "{body}");
    let uai_client = uai["properties"]["clientId"].as_str().unwrap().to_string();
    let uai_oid = uai["properties"]["principalId"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(&token_file, issuer.mint(json!({"sub": uai_subject})).await).unwrap();
    let mut assertion_env = sdk_env(server.port, &ca, tid);
    assertion_env.extend([
        ("LANYARD_CREDENTIAL".into(), "assertion".into()),
        ("AZURE_CLIENT_ID".into(), uai_client.clone()),
        (
            "AZURE_FEDERATED_TOKEN_FILE".into(),
            token_file.display().to_string(),
        ),
        ("LANYARD_SCOPE".into(), format!("{VAULT}/.default")),
    ]);
    let got = run_python("tokens.py", vec!["get".into()], assertion_env, None).await;
    assert_protocol_claims(&got, VAULT, tid, &uai_oid, &uai_client);
    assert_eq!(
        got["claims"]["xms_mirid"]
            .as_str()
            .unwrap()
            .to_ascii_lowercase(),
        uai["id"].as_str().unwrap().to_ascii_lowercase()
    );

    // Federated refusals, each in Entra's shape.
    let url = format!("{base}/{tid}/oauth2/v2.0/token");
    let federated = |assertion: String, client_id: String| {
        let client = client.clone();
        let url = url.clone();
        async move {
            post_form(
                &client,
                &url,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &client_id),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &assertion),
                    ("scope", "https://vault.azure.net/.default"),
                ],
            )
            .await
        }
    };
    let reply = federated(
        issuer
            .mint(json!({"sub": "system:serviceaccount:prod:intruder"}))
            .await,
        uai_client.clone(),
    )
    .await;
    assert_entra(&reply, 400, 70021);
    let reply = federated(
        issuer
            .mint(json!({"sub": uai_subject, "aud": "api://other"}))
            .await,
        uai_client.clone(),
    )
    .await;
    assert_entra(&reply, 400, 70021);
    let reply = federated(
        issuer
            .mint(json!({"sub": uai_subject, "iss": "https://issuer.invalid"}))
            .await,
        uai_client.clone(),
    )
    .await;
    assert_entra(&reply, 400, 70021);
    let reply = federated(
        issuer
            .mint(json!({"sub": uai_subject, "exp_in": -3600}))
            .await,
        uai_client.clone(),
    )
    .await;
    assert_entra(&reply, 400, 700024);
    // Valid for five years: refused; for a day, as a Kubernetes token may be: accepted.
    let reply = federated(
        issuer
            .mint(json!({"sub": uai_subject, "exp_in": 5 * 365 * 24 * 3600}))
            .await,
        uai_client.clone(),
    )
    .await;
    assert_entra(&reply, 400, 700024);
    let reply = federated(
        issuer
            .mint(json!({"sub": uai_subject, "exp_in": 24 * 3600}))
            .await,
        uai_client.clone(),
    )
    .await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    let reply = federated(
        issuer
            .mint(json!({"sub": uai_subject, "kid": "unknown-kid"}))
            .await,
        uai_client.clone(),
    )
    .await;
    assert_entra(&reply, 401, 700027);
    let reply = federated("not.a.jwt".into(), uai_client.clone()).await;
    assert_entra(&reply, 400, 50027);
    // A managed identity has no secret to send.
    let reply = secret_token(
        client,
        &base,
        &tid.to_string(),
        &uai_client,
        "guess",
        "https://vault.azure.net/.default",
    )
    .await;
    assert_entra(&reply, 401, 7000215);

    // The sign-in log has what was issued and what was refused, for the identity.
    let store = open_store(&server.data_dir, server._db.as_ref().map(|d| d.url())).await;
    let sign_ins = store
        .sign_ins(&lanyard_storage::LogQuery {
            principal: Some(Uuid::parse_str(&uai_oid).unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(sign_ins.iter().all(|s| s.source == "token_endpoint"));
    assert!(sign_ins
        .iter()
        .any(|s| s.result == "success" && s.resource == VAULT));
    let refused: Vec<_> = sign_ins.iter().filter(|s| s.result == "failure").collect();
    assert_eq!(refused.len(), 8, "{sign_ins:?}");
    assert!(refused
        .iter()
        .all(|s| s.reason.as_deref().is_some_and(|r| r.starts_with("AADSTS"))));
    assert!(sign_ins
        .iter()
        .all(|s| s.client_id.map(|c| c.to_string()) == Some(uai_client.clone())));
}

async fn token_endpoint_refusals(backend: Backend) {
    let server = TestServer::start(backend).await.unwrap();
    let client = server.client().unwrap();
    let tid = server.admin.tenant_id.to_string();
    let base = server.url("localhost", "");
    let v2 = format!("{base}/{tid}/oauth2/v2.0/token");
    let admin_id = server.admin.client_id.to_string();
    let secret = server.admin.client_secret.clone();
    let scope = "https://vault.azure.net/.default";

    // What works, for contrast: secret in the body, in HTTP Basic, the domain as tenant, v1.
    let (s, ok) = secret_token(&client, &base, &tid, &admin_id, &secret, scope).await;
    assert_eq!(s, 200, "{ok}");
    assert_eq!(ok["token_type"], "Bearer");
    assert!(ok["expires_in"].is_i64() && ok["ext_expires_in"].is_i64());
    let r = client
        .post(&v2)
        .basic_auth(&admin_id, Some(&secret))
        .form(&[("grant_type", "client_credentials"), ("scope", scope)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, _) = secret_token(
        &client,
        &base,
        "Lanyard.Localhost",
        &admin_id,
        &secret,
        scope,
    )
    .await;
    assert_eq!(s, 200);
    let (s, v1) = post_form(
        &client,
        &format!("{base}/{tid}/oauth2/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &admin_id),
            ("client_secret", &secret),
            ("resource", "https://management.azure.com/"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{v1}");
    assert_eq!(v1["resource"], "https://management.azure.com/");
    for k in ["expires_in", "expires_on", "not_before", "ext_expires_in"] {
        assert!(v1[k].as_str().unwrap().parse::<i64>().is_ok(), "{k}: {v1}");
    }
    assert_eq!(
        claims(v1["access_token"].as_str().unwrap())["aud"],
        "https://management.azure.com/"
    );

    // Refusals.
    let form = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    };
    let send = |url: String, pairs: Vec<(String, String)>| {
        let client = client.clone();
        async move {
            let r = client.post(url).form(&pairs).send().await.unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let cc = [("grant_type", "client_credentials")];
    assert_entra(
        &secret_token(
            &client,
            &base,
            &Uuid::new_v4().to_string(),
            &admin_id,
            &secret,
            scope,
        )
        .await,
        400,
        90002,
    );
    assert_entra(
        &secret_token(
            &client,
            &base,
            &tid,
            &Uuid::new_v4().to_string(),
            &secret,
            scope,
        )
        .await,
        400,
        700016,
    );
    assert_entra(
        &secret_token(&client, &base, &tid, "not-a-guid", &secret, scope).await,
        400,
        700016,
    );
    assert_entra(
        &secret_token(&client, &base, &tid, &admin_id, "wrong-secret", scope).await,
        401,
        7000215,
    );
    assert_entra(
        &send(
            v2.clone(),
            form(&[
                ("grant_type", "password"),
                ("client_id", &admin_id),
                ("client_secret", &secret),
                ("scope", scope),
            ]),
        )
        .await,
        400,
        70003,
    );
    assert_entra(
        &send(
            v2.clone(),
            form(&[
                ("client_id", &admin_id),
                ("client_secret", &secret),
                ("scope", scope),
            ]),
        )
        .await,
        400,
        900144,
    );
    assert_entra(
        &send(
            v2.clone(),
            form(&[cc[0], ("client_id", &admin_id), ("client_secret", &secret)]),
        )
        .await,
        400,
        70011,
    );
    assert_entra(
        &secret_token(
            &client,
            &base,
            &tid,
            &admin_id,
            &secret,
            "https://graph.microsoft.com/User.Read",
        )
        .await,
        400,
        1002012,
    );
    assert_entra(
        &send(
            format!("{base}/{tid}/oauth2/token"),
            form(&[cc[0], ("client_id", &admin_id), ("client_secret", &secret)]),
        )
        .await,
        400,
        900144,
    );
    assert_entra(
        &send(
            v2.clone(),
            form(&[cc[0], ("client_id", &admin_id), ("scope", scope)]),
        )
        .await,
        400,
        7000218,
    );
    assert_entra(
        &send(
            v2.clone(),
            form(&[
                cc[0],
                ("client_id", &admin_id),
                ("scope", scope),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", "garbage"),
            ]),
        )
        .await,
        400,
        50027,
    );
    // Malformed bodies: JSON, a repeated parameter, bytes that are not UTF-8, too large.
    let raw = |content_type: &'static str, body: Vec<u8>| {
        let client = client.clone();
        let url = v2.clone();
        async move {
            let r = client
                .post(url)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    assert_entra(
        &raw(
            "application/json",
            br#"{"grant_type":"client_credentials"}"#.to_vec(),
        )
        .await,
        400,
        900144,
    );
    assert_entra(
        &raw(
            "application/x-www-form-urlencoded",
            b"grant_type=client_credentials&client_id=a&client_id=b".to_vec(),
        )
        .await,
        400,
        9002313,
    );
    assert_entra(
        &raw(
            "application/x-www-form-urlencoded",
            b"grant_type=client_credentials&scope=\xff\xfe".to_vec(),
        )
        .await,
        400,
        9002313,
    );
    assert_entra(
        &raw("application/x-www-form-urlencoded", vec![b'a'; 200 * 1024]).await,
        413,
        9002313,
    );
    assert_entra(
        &call(&client, Method::GET, &v2, None, None).await,
        405,
        900561,
    );

    // Certificate assertions: a registered certificate's key signs them.
    let (_, t) = secret_token(
        &client,
        &base,
        &tid,
        &admin_id,
        &secret,
        &format!("{GRAPH}/.default"),
    )
    .await;
    let admin_graph = t["access_token"].as_str().unwrap().to_string();
    let app = create_app(&client, &base, &admin_graph, "cert-app").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let key = lanyard_token::SigningKey::generate(now).unwrap();
    let other = lanyard_token::SigningKey::generate(now).unwrap();
    let der = base64::engine::general_purpose::STANDARD.encode(key.certificate_der());
    let (s, body) = call(&client, Method::PATCH, &format!("{base}/v1.0/applications/{}", app.id), Some(&admin_graph), Some(json!({"keyCredentials": [{"type": "AsymmetricX509Cert", "usage": "Verify", "key": der}]}))).await;
    assert_eq!(s, 204, "{body}");
    let assertion = |key: &lanyard_token::SigningKey, aud: &str, exp: i64| {
        lanyard_token::mint::sign_jwt(key, &json!({"iss": app.app_id, "sub": app.app_id, "aud": aud, "exp": exp, "nbf": now - 60, "jti": Uuid::new_v4().to_string()})).unwrap()
    };
    let with_assertion = |a: String| {
        form(&[
            cc[0],
            ("client_id", &app.app_id),
            ("scope", scope),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &a),
        ])
    };
    let (s, ok) = send(v2.clone(), with_assertion(assertion(&key, &v2, now + 600))).await;
    assert_eq!(s, 200, "{ok}");
    let c = claims(ok["access_token"].as_str().unwrap());
    assert_eq!(
        (c["appid"].as_str(), c["appidacr"].as_str()),
        (Some(app.app_id.as_str()), Some("2"))
    );
    assert_entra(
        &send(v2.clone(), with_assertion(assertion(&key, &v2, now - 3600))).await,
        400,
        700024,
    );
    assert_entra(
        &send(
            v2.clone(),
            with_assertion(assertion(
                &key,
                "https://elsewhere.example/token",
                now + 600,
            )),
        )
        .await,
        400,
        50027,
    );
    assert_entra(
        &send(
            v2.clone(),
            with_assertion(assertion(&other, &v2, now + 600)),
        )
        .await,
        401,
        700027,
    );
    // The assertion must be this client's.
    let foreign = lanyard_token::mint::sign_jwt(&key, &json!({"iss": app.app_id, "sub": Uuid::new_v4().to_string(), "aud": v2, "exp": now + 600, "jti": "j"})).unwrap();
    assert_entra(
        &send(v2.clone(), with_assertion(foreign)).await,
        401,
        700021,
    );

    // Every answer was recorded; refusals carry their AADSTS reason.
    let store = open_store(&server.data_dir, server.database_url.as_deref()).await;
    let sign_ins = store
        .sign_ins(&lanyard_storage::LogQuery::default())
        .await
        .unwrap();
    let failures = sign_ins.iter().filter(|s| s.result == "failure").count();
    // Every refusal above but the GET (not a token request) is in the log.
    assert_eq!(failures, 19, "{sign_ins:?}");
    assert!(sign_ins.iter().all(|s| s.source == "token_endpoint"));
    assert!(sign_ins.iter().any(|s| s
        .reason
        .as_deref()
        .is_some_and(|r| r.starts_with("AADSTS90002"))));
    let admin_oid = server.admin.object_id;
    assert!(sign_ins.iter().any(|s| s.principal_id == Some(admin_oid)
        && s.result == "success"
        && s.resource == VAULT));
    // No secret or assertion reached the log.
    let text = format!("{sign_ins:?}");
    assert!(!text.contains(&secret) && !text.contains(&app.secret));
}

/// Many token requests at once (their sign-in records share commits): every token handed out
/// has its own record, and a refusal among them is recorded as one.
async fn concurrent_tokens_are_each_logged(backend: Backend) {
    const REQUESTS: usize = 48;
    let server = TestServer::start(backend).await.unwrap();
    let client = server.client().unwrap();
    let tid = server.admin.tenant_id.to_string();
    let base = server.url("localhost", "");
    let admin_id = server.admin.client_id.to_string();
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..REQUESTS {
        let (client, base, tid, admin_id) =
            (client.clone(), base.clone(), tid.clone(), admin_id.clone());
        // One request in eight carries a wrong secret.
        let secret = if i % 8 == 7 {
            "not-the-secret".to_string()
        } else {
            server.admin.client_secret.clone()
        };
        requests.spawn(async move {
            secret_token(&client, &base, &tid, &admin_id, &secret, VAULT_SCOPE)
                .await
                .0
        });
    }
    let mut issued = 0;
    let mut refused = 0;
    while let Some(status) = requests.join_next().await {
        match status.unwrap().as_u16() {
            200 => issued += 1,
            401 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((issued, refused), (REQUESTS - REQUESTS / 8, REQUESTS / 8));

    let store = open_store(&server.data_dir, server.database_url.as_deref()).await;
    let sign_ins = store
        .sign_ins(&lanyard_storage::LogQuery::default())
        .await
        .unwrap();
    let admin = server.admin.object_id;
    let count = |result: &str| {
        sign_ins
            .iter()
            .filter(|s| s.principal_id == Some(admin) && s.resource == VAULT && s.result == result)
            .count()
    };
    assert_eq!(count("success"), issued, "{sign_ins:?}");
    assert_eq!(count("failure"), refused, "{sign_ins:?}");
    let ids: std::collections::HashSet<_> = sign_ins.iter().map(|s| s.id).collect();
    assert_eq!(ids.len(), sign_ins.len(), "every record is its own");
}

async fn graph_app_registrations(backend: Backend) {
    let server = TestServer::start(backend).await.unwrap();
    let client = server.client().unwrap();
    let tid = server.admin.tenant_id.to_string();
    let base = server.url("localhost", "");
    let graph = server.url("graph.lanyard.localhost", "");
    let admin_id = server.admin.client_id.to_string();
    let (_, t) = secret_token(
        &client,
        &base,
        &tid,
        &admin_id,
        &server.admin.client_secret,
        &format!("{GRAPH}/.default"),
    )
    .await;
    let admin = t["access_token"].as_str().unwrap().to_string();
    let apps_url = format!("{graph}/v1.0/applications");

    // Authentication first: no token, a token for another audience.
    let (s, body) = call(&client, Method::GET, &apps_url, None, None).await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    let (_, t) = secret_token(
        &client,
        &base,
        &tid,
        &admin_id,
        &server.admin.client_secret,
        "https://vault.azure.net/.default",
    )
    .await;
    let (s, _) = call(
        &client,
        Method::GET,
        &apps_url,
        Some(t["access_token"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(s, 401);

    // An application without a service principal gets no token.
    let (s, app) = call(
        &client,
        Method::POST,
        &apps_url,
        Some(&admin),
        Some(json!({"displayName": "graph-app"})),
    )
    .await;
    assert_eq!(s, 201, "{app}");
    let id = app["id"].as_str().unwrap().to_string();
    let app_id = app["appId"].as_str().unwrap().to_string();
    assert_eq!(app["displayName"], "graph-app");
    assert_eq!(app["passwordCredentials"], json!([]));
    let (s, pw) = call(
        &client,
        Method::POST,
        &format!("{apps_url}/{id}/addPassword"),
        Some(&admin),
        Some(json!({"passwordCredential": {"displayName": "first"}})),
    )
    .await;
    assert_eq!(s, 200, "{pw}");
    let secret = pw["secretText"].as_str().unwrap().to_string();
    assert_eq!(pw["hint"], secret[..3]);
    let key_id = pw["keyId"].as_str().unwrap().to_string();
    assert_entra(
        &secret_token(
            &client,
            &base,
            &tid,
            &app_id,
            &secret,
            &format!("{GRAPH}/.default"),
        )
        .await,
        400,
        7000229,
    );
    let (s, sp) = call(
        &client,
        Method::POST,
        &format!("{graph}/v1.0/servicePrincipals"),
        Some(&admin),
        Some(json!({"appId": app_id})),
    )
    .await;
    assert_eq!(s, 201, "{sp}");
    assert_eq!(sp["servicePrincipalType"], "Application");
    let (s, _) = call(
        &client,
        Method::POST,
        &format!("{graph}/v1.0/servicePrincipals"),
        Some(&admin),
        Some(json!({"appId": app_id})),
    )
    .await;
    assert_eq!(s, 409);

    // The secret works at the token endpoint; the secret is stored only as a hash.
    let (s, t) = secret_token(
        &client,
        &base,
        &tid,
        &app_id,
        &secret,
        &format!("{GRAPH}/.default"),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let app_graph_token = t["access_token"].as_str().unwrap().to_string();
    let (_, shown) = call(
        &client,
        Method::GET,
        &format!("{apps_url}/{id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(shown["passwordCredentials"][0]["keyId"], key_id);
    assert_eq!(shown["passwordCredentials"][0]["secretText"], Value::Null);
    assert!(!shown.to_string().contains(&secret));
    let store = open_store(&server.data_dir, server.database_url.as_deref()).await;
    let records = store
        .credentials_of(Uuid::parse_str(&id).unwrap())
        .await
        .unwrap();
    assert!(!format!("{records:?}").contains(&secret));

    // Reads: by object id, by app id, lists with a filter.
    let (s, by_app_id) = call(
        &client,
        Method::GET,
        &format!("{apps_url}/{app_id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(by_app_id["id"], id.as_str());
    let (_, list) = call(&client, Method::GET, &apps_url, Some(&admin), None).await;
    assert!(list["value"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["appId"] == app_id.as_str()));
    let (_, list) = call(
        &client,
        Method::GET,
        &format!("{graph}/v1.0/servicePrincipals?$filter=appId%20eq%20'{app_id}'"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(list["value"].as_array().unwrap().len(), 1, "{list}");
    let (s, _) = call(
        &client,
        Method::PATCH,
        &format!("{apps_url}/{id}"),
        Some(&admin),
        Some(json!({"displayName": "renamed"})),
    )
    .await;
    assert_eq!(s, 204);
    let (_, shown) = call(
        &client,
        Method::GET,
        &format!("{graph}/V1.0/ServicePrincipals/{id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(shown["displayName"], "renamed");
    let (s, body) = call(
        &client,
        Method::GET,
        &format!("{apps_url}/{}", Uuid::new_v4()),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(body["error"]["code"], "Request_ResourceNotFound");
    let (s, body) = call(
        &client,
        Method::POST,
        &apps_url,
        Some(&admin),
        Some(json!({"displayName": 5})),
    )
    .await;
    assert_eq!(s, 400, "{body}");

    // Federated identity credentials of the application.
    let fics = format!("{apps_url}/{id}/federatedIdentityCredentials");
    let fic = json!({"name": "gh-main", "issuer": "https://token.actions.githubusercontent.com", "subject": "repo:o/r:ref:refs/heads/main", "audiences": [EXCHANGE]});
    let (s, created) = call(
        &client,
        Method::POST,
        &fics,
        Some(&admin),
        Some(fic.clone()),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let (s, _) = call(&client, Method::POST, &fics, Some(&admin), Some(fic)).await;
    assert_eq!(s, 409);
    let (s, _) = call(
        &client,
        Method::POST,
        &fics,
        Some(&admin),
        Some(
            json!({"name": "-bad", "issuer": "https://x", "subject": "s", "audiences": [EXCHANGE]}),
        ),
    )
    .await;
    assert_eq!(s, 400);
    let (_, list) = call(&client, Method::GET, &fics, Some(&admin), None).await;
    assert_eq!(list["value"][0]["subject"], "repo:o/r:ref:refs/heads/main");
    let (s, _) = call(
        &client,
        Method::DELETE,
        &format!("{fics}/{}", created["id"].as_str().unwrap()),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (_, list) = call(&client, Method::GET, &fics, Some(&admin), None).await;
    assert_eq!(list["value"], json!([]));

    // Anyone but the administrator is refused, with a valid token.
    let (s, body) = call(
        &client,
        Method::GET,
        &apps_url,
        Some(&app_graph_token),
        None,
    )
    .await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"]["code"], "Authorization_RequestDenied");
    let (s, _) = call(
        &client,
        Method::POST,
        &apps_url,
        Some(&app_graph_token),
        Some(json!({"displayName": "x"})),
    )
    .await;
    assert_eq!(s, 403);
    let (_, t) = secret_token(
        &client,
        &base,
        &tid,
        &app_id,
        &secret,
        "https://management.azure.com//.default",
    )
    .await;
    let app_mgmt = t["access_token"].as_str().unwrap().to_string();
    let (s, body) = call(
        &client,
        Method::POST,
        &server.url("login.lanyard.localhost", "/lanyard/keys/rotate"),
        Some(&app_mgmt),
        None,
    )
    .await;
    assert_eq!(s, 403, "{body}");
    let (s, _) = call(
        &client,
        Method::POST,
        &server.url("login.lanyard.localhost", "/lanyard/keys/rotate"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 401);

    // Removing the password stops it working.
    let (s, pw2) = call(
        &client,
        Method::POST,
        &format!("{apps_url}/{id}/addPassword"),
        Some(&admin),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(
        &client,
        Method::POST,
        &format!("{apps_url}/{id}/removePassword"),
        Some(&admin),
        Some(json!({"keyId": key_id})),
    )
    .await;
    assert_eq!(s, 204);
    assert_entra(
        &secret_token(&client, &base, &tid, &app_id, &secret, VAULT_SCOPE).await,
        401,
        7000215,
    );
    let second = pw2["secretText"].as_str().unwrap();
    let (s, _) = secret_token(&client, &base, &tid, &app_id, second, VAULT_SCOPE).await;
    assert_eq!(s, 200);

    // Deleting the service principal revokes its tokens at once: the token that was refused
    // with 403 (valid, not allowed) is now refused with 401 (revoked), though its signature
    // and lifetime are still good.
    let (s, _) = call(
        &client,
        Method::DELETE,
        &format!("{graph}/v1.0/servicePrincipals/{id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, body) = call(
        &client,
        Method::GET,
        &apps_url,
        Some(&app_graph_token),
        None,
    )
    .await;
    assert_eq!(s, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );
    let (s, body) = call(
        &client,
        Method::POST,
        &server.url("login.lanyard.localhost", "/lanyard/keys/rotate"),
        Some(&app_mgmt),
        None,
    )
    .await;
    assert_eq!(s, 401, "{body}");
    assert_entra(
        &secret_token(&client, &base, &tid, &app_id, second, VAULT_SCOPE).await,
        400,
        700016,
    );
    let (s, _) = call(
        &client,
        Method::GET,
        &format!("{apps_url}/{id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, 404);
    assert!(store
        .credentials_of(Uuid::parse_str(&id).unwrap())
        .await
        .unwrap()
        .is_empty());
    // The administrator cannot delete itself.
    let (s, _) = call(
        &client,
        Method::DELETE,
        &format!("{graph}/v1.0/servicePrincipals/{}", server.admin.object_id),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, 400);
}

async fn key_rotation_survives_restart(backend: Backend) {
    let server = TestServer::start(backend).await.unwrap();
    let client = server.client().unwrap();
    let tid = server.admin.tenant_id.to_string();
    let base = server.url("localhost", "");
    let admin_id = server.admin.client_id.to_string();
    let secret = server.admin.client_secret.clone();
    let graph_token = |client: reqwest::Client, base: String| {
        let (tid, admin_id, secret) = (tid.clone(), admin_id.clone(), secret.clone());
        async move {
            let (s, t) = secret_token(
                &client,
                &base,
                &tid,
                &admin_id,
                &secret,
                &format!("{GRAPH}/.default"),
            )
            .await;
            assert_eq!(s, 200, "{t}");
            t["access_token"].as_str().unwrap().to_string()
        }
    };
    let before = graph_token(client.clone(), base.clone()).await;
    let old_kid = header(&before)["kid"].as_str().unwrap().to_string();

    let data_dir = server.data_dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        lanyard()
            .args(["keys", "rotate", "--data-dir"])
            .arg(&data_dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "keys rotate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_kid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_ne!(new_kid, old_kid);

    let after = graph_token(client.clone(), base.clone()).await;
    assert_eq!(header(&after)["kid"], new_kid.as_str());
    let (_, jwks) = call(
        &client,
        Method::GET,
        &format!("{base}/{tid}/discovery/v2.0/keys"),
        None,
        None,
    )
    .await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()),
        "{kids:?}"
    );

    // The token signed before rotation still validates where tokens are checked (Graph uses
    // the platform's validator) and with an independent validator against the JWKS.
    let apps_url = server.url("graph.lanyard.localhost", "/v1.0/applications");
    for token in [&before, &after] {
        let (s, body) = call(&client, Method::GET, &apps_url, Some(token), None).await;
        assert_eq!(s, 200, "{body}");
    }
    let ca = server.data_dir.join("ca.pem");
    let env = sdk_env(server.addr.port(), &ca, server.admin.tenant_id);
    let verified = run_python(
        "tokens.py",
        vec!["verify".into()],
        env,
        Some(json!({"tokens": [before, after], "audience": GRAPH})),
    )
    .await;
    for r in verified["results"].as_array().unwrap() {
        assert_eq!(r["valid"], true, "{r}");
    }

    // After a restart both keys are still published and both tokens still validate.
    let server = server.restart().await.unwrap();
    let client = server.client().unwrap();
    let base = server.url("localhost", "");
    let apps_url = server.url("graph.lanyard.localhost", "/v1.0/applications");
    for token in [&before, &after] {
        let (s, body) = call(&client, Method::GET, &apps_url, Some(token), None).await;
        assert_eq!(s, 200, "{body}");
    }
    let env = sdk_env(server.addr.port(), &ca, server.admin.tenant_id);
    let verified = run_python(
        "tokens.py",
        vec!["verify".into()],
        env,
        Some(json!({"tokens": [before, after], "audience": GRAPH})),
    )
    .await;
    let kids: Vec<&str> = verified["kids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()),
        "{kids:?}"
    );
    for r in verified["results"].as_array().unwrap() {
        assert_eq!(r["valid"], true, "{r}");
    }
    let restarted = graph_token(client.clone(), base).await;
    assert_eq!(header(&restarted)["kid"], new_kid.as_str());
}

#[test]
fn keys_rotate_without_a_server_fails_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = lanyard()
        .args(["keys", "rotate", "--data-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
}
