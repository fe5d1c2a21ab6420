//! What the reliability modules share: seeded randomness, raw HTTP calls with tokens, tokens
//! forged with the server's own signing key, and `lanyard serve` as a child process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanyard_server::bootstrap::{read_admin, AdminCredential};
use lanyard_server::datadir::DataDir;
use lanyard_token::{AccessTokenClaims, IssuerConfig, Kek, KeyRing, RotationPolicy, StoredKey};
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use crate::support::TestServer;

pub const DOMAIN: &str = "lanyard.localhost";
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
pub const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

// Built-in roles.
pub const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
pub const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
pub const USER_ACCESS_ADMIN: &str = "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9";
pub const VM_CONTRIBUTOR: &str = "9980e02c-c2be-4d73-94e8-173b1dc7cf3c";
pub const KV_SECRETS_OFFICER: &str = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7";
pub const KV_SECRETS_USER: &str = "4633458b-17de-408a-b874-0445c86b69e6";
pub const BLOB_CONTRIBUTOR: &str = "ba92f5b4-2d11-453d-a403-e96b0029c9fe";
pub const BLOB_READER: &str = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1";
pub const MI_OPERATOR: &str = "f1a07417-d97a-45cb-824c-7a7467783830";

pub const RG_API: &str = "api-version=2021-04-01";
pub const VM_API: &str = "api-version=2024-03-01";
pub const UAI_API: &str = "api-version=2023-01-31";
pub const RA_API: &str = "api-version=2022-04-01";
pub const KV_API: &str = "api-version=2023-07-01";
pub const ACCOUNT_API: &str = "api-version=2023-05-01";
pub const SECRETS_API: &str = "api-version=7.5";

// ------------------------------------------------------------------------------------------
// Seeded randomness

/// The seed of a test: `LANYARD_RELIABILITY_SEED`, or the clock. Printed either way, so a
/// failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("LANYARD_RELIABILITY_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("{test}: seed {seed} (replay with LANYARD_RELIABILITY_SEED={seed})");
    seed
}

/// splitmix64.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// An independent stream for `index` (a worker, a cycle).
    pub fn fork(&mut self, index: u64) -> Self {
        Self(self.next() ^ index.wrapping_mul(0xA24B_AED4_963E_E407))
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Letters and digits.
    pub fn word(&mut self, n: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..n)
            .map(|_| ALPHABET[self.below(ALPHABET.len())] as char)
            .collect()
    }

    pub fn uuid(&mut self) -> Uuid {
        let bytes = u128::from(self.next()) << 64 | u128::from(self.next());
        uuid::Builder::from_random_bytes(bytes.to_le_bytes()).into_uuid()
    }
}

// ------------------------------------------------------------------------------------------
// A server, wherever it runs

/// How to reach a server (in process or a child process) and as whom to administer it.
#[derive(Clone)]
pub struct Target {
    pub port: u16,
    pub http: reqwest::Client,
    pub admin: AdminCredential,
}

impl Target {
    pub fn of(server: &TestServer) -> Self {
        Self {
            port: server.addr.port(),
            http: client_trusting(server.ca_pem.as_bytes()),
            admin: server.admin.clone(),
        }
    }

    /// A server whose data directory is `dir` (admin.json and ca.pem must exist).
    pub fn from_dir(dir: &Path, port: u16) -> Self {
        let data = DataDir::existing(dir).unwrap();
        let pem = std::fs::read(data.ca_cert()).unwrap();
        Self {
            port,
            http: client_trusting(&pem),
            admin: read_admin(&data).unwrap(),
        }
    }

    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port)
    }

    pub fn arm(&self, path: &str) -> String {
        self.url("localhost", path)
    }

    pub fn vault(&self, vault: &str, path: &str) -> String {
        self.url(&format!("{vault}.vault.{DOMAIN}"), path)
    }

    pub fn blob(&self, account: &str, path: &str) -> String {
        self.url(&format!("{account}.blob.{DOMAIN}"), path)
    }

    pub fn tenant(&self) -> String {
        self.admin.tenant_id.to_string()
    }

    pub fn subscription(&self) -> String {
        format!("/subscriptions/{}", self.admin.subscription_id)
    }

    /// A client-credentials token for `scope`.
    pub async fn token(&self, client_id: &str, secret: &str, scope: &str) -> String {
        let (status, body) = self.try_token(client_id, secret, scope).await;
        assert_eq!(status, 200, "token for {scope}: {body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    pub async fn try_token(&self, client_id: &str, secret: &str, scope: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.arm(&format!("/{}/oauth2/v2.0/token", self.admin.tenant_id)))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("scope", scope),
            ])
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin_token(&self, scope: &str) -> String {
        let id = self.admin.client_id.to_string();
        let secret = self.admin.client_secret.clone();
        self.token(&id, &secret, scope).await
    }
}

/// A client trusting `ca_pem` that sends every host name to 127.0.0.1.
pub fn client_trusting(ca_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
        .dns_resolver(Arc::new(Loopback))
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(16)
        // The server closes a connection that sends no request for 30 s; a pooled one idle
        // that long could be reused just as it closes, so it is not kept past 15 s.
        .pool_idle_timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

struct Loopback;

impl reqwest::dns::Resolve for Loopback {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async {
            let addrs: reqwest::dns::Addrs =
                Box::new(std::iter::once(SocketAddr::from(([127, 0, 0, 1], 0))));
            Ok(addrs)
        })
    }
}

// ------------------------------------------------------------------------------------------
// Raw calls

/// An answer: status, headers, body as text and (when it is) JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// ARM's (and Key Vault's and Graph's) `error.code`.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

/// What a request carries besides method and URL.
#[derive(Default, Clone)]
pub struct Req<'a> {
    pub token: Option<&'a str>,
    pub json: Option<&'a Value>,
    pub body: Option<(Vec<u8>, &'a str)>,
    pub headers: Vec<(&'a str, String)>,
}

pub async fn call(http: &reqwest::Client, method: Method, url: &str, req: Req<'_>) -> Reply {
    try_call(http, method.clone(), url, req)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"))
}

pub async fn try_call(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    req: Req<'_>,
) -> Result<Reply, reqwest::Error> {
    let mut r = http.request(method, url);
    if let Some(t) = req.token {
        r = r.bearer_auth(t);
    }
    if let Some(j) = req.json {
        r = r.json(j);
    }
    if let Some((bytes, content_type)) = req.body {
        r = r.header("content-type", content_type).body(bytes);
    }
    for (k, v) in req.headers {
        r = r.header(k, v);
    }
    let response = r.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await?;
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Reply {
        status,
        headers,
        text,
        json,
    })
}

pub fn bearer(token: &str) -> Req<'_> {
    Req {
        token: Some(token),
        ..Default::default()
    }
}

pub fn bearer_json<'a>(token: &'a str, json: &'a Value) -> Req<'a> {
    Req {
        token: Some(token),
        json: Some(json),
        ..Default::default()
    }
}

/// `PUT` as `token` that must succeed; returns the body.
pub async fn put_ok(t: &Target, token: &str, path: &str, body: &Value) -> Value {
    let r = call(&t.http, Method::PUT, &t.arm(path), bearer_json(token, body)).await;
    assert!(
        (200..300).contains(&r.status),
        "PUT {path} -> {}: {}",
        r.status,
        r.text
    );
    r.json
}

/// A VM `{rg}/.../virtualMachines/{name}` with a system-assigned identity, and a workload
/// session opened on it as `token`; returns the VM's id and the session's JSON.
pub async fn vm_with_session(t: &Target, token: &str, rg: &str, name: &str) -> (String, Value) {
    let vm = format!("{rg}/providers/Microsoft.Compute/virtualMachines/{name}");
    put_ok(
        t,
        token,
        &format!("{vm}?{VM_API}"),
        &serde_json::json!({"location": "local", "identity": {"type": "SystemAssigned"}}),
    )
    .await;
    let session = call(
        &t.http,
        Method::POST,
        &t.arm("/lanyard/sessions"),
        bearer_json(token, &serde_json::json!({"resource": vm})),
    )
    .await;
    assert_eq!(session.status, 201, "{}", session.text);
    (vm, session.json)
}

/// A workload session as `POST /lanyard/sessions` answers it.
pub struct Session {
    pub id: String,
    /// The IMDS token URL.
    pub imds: String,
    /// The App Service identity endpoint.
    pub app: String,
    pub header: String,
}

/// Opens a workload session on `resource` as `token`; it must succeed.
pub async fn open_session(t: &Target, token: &str, resource: &str) -> Session {
    let r = call(
        &t.http,
        Method::POST,
        &t.arm("/lanyard/sessions"),
        bearer_json(token, &serde_json::json!({"resource": resource})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    Session {
        id: r.json["id"].as_str().unwrap().to_string(),
        imds: format!(
            "{}/metadata/identity/oauth2/token",
            r.json["imdsEndpoint"].as_str().unwrap()
        ),
        app: r.json["identityEndpoint"].as_str().unwrap().to_string(),
        header: r.json["identityHeader"].as_str().unwrap().to_string(),
    }
}

/// Assigns built-in `role` to `principal` at `scope`; returns the assignment's id.
pub async fn assign(t: &Target, token: &str, scope: &str, role: &str, principal: &str) -> String {
    let name = Uuid::new_v4();
    let path = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}");
    let body = serde_json::json!({"properties": {
        "roleDefinitionId": format!(
            "{}/providers/Microsoft.Authorization/roleDefinitions/{role}",
            t.subscription()
        ),
        "principalId": principal,
        "principalType": "ServicePrincipal",
    }});
    put_ok(t, token, &format!("{path}?{RA_API}"), &body).await;
    path
}

/// An app registration with a service principal and a client secret, made through Graph.
#[derive(Debug, Clone)]
pub struct App {
    pub id: String,
    pub object_id: String,
    pub client_id: String,
    pub secret: String,
}

pub async fn create_app(t: &Target, graph_token: &str, name: &str) -> App {
    let graph = |path: &str| t.arm(path);
    let app = call(
        &t.http,
        Method::POST,
        &graph("/v1.0/applications"),
        bearer_json(graph_token, &serde_json::json!({"displayName": name})),
    )
    .await;
    assert_eq!(app.status, 201, "{}", app.text);
    let app_id = app.json["appId"].as_str().unwrap().to_string();
    let id = app.json["id"].as_str().unwrap().to_string();
    let sp = call(
        &t.http,
        Method::POST,
        &graph("/v1.0/servicePrincipals"),
        bearer_json(graph_token, &serde_json::json!({"appId": app_id})),
    )
    .await;
    assert_eq!(sp.status, 201, "{}", sp.text);
    let password = call(
        &t.http,
        Method::POST,
        &graph(&format!("/v1.0/applications/{id}/addPassword")),
        bearer_json(
            graph_token,
            &serde_json::json!({"passwordCredential": {"displayName": "reliability"}}),
        ),
    )
    .await;
    assert!(
        password.status == 200 || password.status == 201,
        "{}",
        password.text
    );
    App {
        id,
        object_id: sp.json["id"].as_str().unwrap().to_string(),
        client_id: app_id,
        secret: password.json["secretText"].as_str().unwrap().to_string(),
    }
}

// ------------------------------------------------------------------------------------------
// Tokens signed with the server's own key

/// The server's signing keys, read from its store and unsealed with its key-encryption key:
/// tokens signed with them differ from real ones only in the claims we choose.
pub struct Forger {
    ring: KeyRing,
    pub tenant: Uuid,
}

impl Forger {
    /// Reads the keys of the server whose data directory is `dir` and whose store is
    /// `database_url` (or the directory's SQLite file).
    pub async fn load(dir: &Path, database_url: Option<&str>, tenant: Uuid) -> Self {
        let kek = Kek::load_or_create(&dir.join("kek")).unwrap();
        let location = database_url
            .map(str::to_string)
            .unwrap_or_else(|| dir.join("lanyard.db").display().to_string());
        let store = lanyard_storage::open(&location).await.unwrap();
        let records: Vec<StoredKey> = store
            .keys()
            .await
            .unwrap()
            .into_iter()
            .map(|r| serde_json::from_value(r.body).unwrap())
            .collect();
        let ring = KeyRing::load(RotationPolicy::default(), records, &kek).unwrap();
        assert!(ring.current().is_some(), "the server has a current key");
        Self { ring, tenant }
    }

    /// Valid v1 claims for `oid` and `aud`, issued now for an hour.
    pub fn claims(&self, oid: &str, client_id: &str, aud: &str) -> AccessTokenClaims {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let iss = IssuerConfig::default().v1(self.tenant);
        AccessTokenClaims {
            aud: aud.to_string(),
            iss: iss.clone(),
            iat: now,
            nbf: now,
            exp: now + 3600,
            aio: None,
            appid: Some(client_id.to_string()),
            appidacr: Some("1".into()),
            azp: None,
            azpacr: None,
            idp: Some(iss),
            idtyp: Some("app".into()),
            oid: oid.to_string(),
            rh: None,
            sub: oid.to_string(),
            tid: self.tenant.to_string(),
            uti: None,
            ver: "1.0".into(),
            xms_az_rid: None,
            xms_mirid: None,
            xms_tcdt: None,
        }
    }

    pub fn sign(&self, claims: &AccessTokenClaims) -> String {
        lanyard_token::mint(&self.ring, claims)
            .unwrap()
            .access_token
    }

    /// The `kid` of the current key.
    pub fn kid(&self) -> String {
        self.ring.current().unwrap().kid().to_string()
    }
}

/// base64url without padding.
pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64url_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

/// The decoded header and claims of a compact JWT.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let header = serde_json::from_slice(&b64url_decode(it.next().unwrap())).unwrap();
    let claims = serde_json::from_slice(&b64url_decode(it.next().unwrap())).unwrap();
    (header, claims)
}

// ------------------------------------------------------------------------------------------
// `lanyard serve` as a child process

/// A `lanyard serve` child whose stderr goes to a file (a pipe nobody reads would stall it).
pub struct Served {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Served {
    /// Starts `lanyard serve --data-dir DIR --port PORT [--database-url URL]`, appending its
    /// stderr to `log`, with `env` added to its environment.
    pub fn start(
        dir: &Path,
        port: u16,
        database_url: Option<&str>,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut cmd = crate::support::lanyard();
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .arg("--port")
            .arg(port.to_string());
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        Self {
            child,
            port,
            log: log.to_path_buf(),
        }
    }

    /// Waits for `/healthz` (at most 60 s); panics with the log if the child died.
    pub async fn ready(&mut self, dir: &Path) -> Target {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "lanyard serve exited with {status} before it was ready:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let (Ok(pem), true) = (
                std::fs::read(dir.join("ca.pem")),
                dir.join("admin.json").exists(),
            ) {
                let client = client_trusting(&pem);
                let url = format!("https://localhost:{}/healthz", self.port);
                if let Ok(r) = client.get(&url).send().await {
                    if r.status().is_success() {
                        return Target::from_dir(dir, self.port);
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "server on port {} did not become ready:\n{}",
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        crate::support::wait_exit(&mut self.child, 30)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// Resident set size in KiB (Linux `/proc`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The PostgreSQL half of a test, or SQLite's.
pub async fn database(
    backend: crate::support::Backend,
) -> Option<lanyard_testkit::db::TestDatabase> {
    match backend {
        crate::support::Backend::Sqlite => None,
        crate::support::Backend::Postgres => {
            Some(lanyard_testkit::db::fresh_postgres_url().await.unwrap())
        }
    }
}
