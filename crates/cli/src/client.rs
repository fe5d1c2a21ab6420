//! How CLI commands reach a running server: its public REST APIs only, authenticated with
//! the administrator credential of a data directory, or with `AZURE_*` variables.
//!
//! One [`Connection`] serves every plane: the control plane and the token service on
//! `https://localhost:{port}`, Microsoft Graph on the same host, and the data planes on
//! `https://{vault}.vault.{domain}:{port}` and `https://{account}.blob.{domain}:{port}`.
//! Names under `{domain}` are resolved to the server's own address inside this process, so
//! no hosts file is needed. Tokens are cached per scope for the life of the process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use lanyard_domain::hosts::{self, PlaneHost};
use lanyard_server::bootstrap::{read_admin, read_endpoints};
use lanyard_server::datadir::DataDir;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

/// Exit code for a refusal by RBAC (documented in the README).
pub const EXIT_ACCESS_DENIED: u8 = 3;

/// The management audience's scope.
pub const MANAGEMENT_SCOPE: &str = "https://management.azure.com/.default";
/// Microsoft Graph's scope.
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// Azure Storage's scope (the blob plane accepts it).
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// The domain a server uses when nothing says otherwise.
const DEFAULT_DOMAIN: &str = "lanyard.localhost";

/// An error the service returned, printed as `code: message` on one line.
#[derive(Debug)]
pub struct ServiceError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ServiceError {}

impl ServiceError {
    /// From a failed answer of any plane: ARM, Key Vault and Graph JSON envelopes, the token
    /// service's OAuth errors, and Blob's XML (or its `x-ms-error-code` header).
    pub fn from_reply(status: u16, headers: &HeaderMap, body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body);
        let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let header_code = headers
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (code, message) = if let Some(error) = json.get("error").filter(|e| e.is_object()) {
            (
                error["code"].as_str().map(str::to_string),
                error["message"].as_str().map(str::to_string),
            )
        } else if let Some(code) = json.get("error").and_then(Value::as_str) {
            (
                Some(code.to_string()),
                json["error_description"].as_str().map(str::to_string),
            )
        } else {
            (
                xml_element(&text, "Code").or(header_code.clone()),
                xml_element(&text, "Message"),
            )
        };
        let fallback = match status {
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            _ => "Error",
        };
        let message = message.unwrap_or_else(|| {
            let t = text.trim();
            if t.is_empty() {
                format!("the service answered {status} with no details")
            } else {
                t.to_string()
            }
        });
        Self {
            status,
            code: code.or(header_code).unwrap_or_else(|| fallback.to_string()),
            message,
        }
    }
}

/// The text of the first `<tag>` element of an XML document, unescaped.
pub fn xml_element(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(xml_unescape(&xml[start..end]))
}

/// Undoes XML's five predefined entities.
pub fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// A successful answer: status, headers and raw body.
#[derive(Debug)]
pub struct Reply {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON, or `Null` when it is empty or not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a request carries.
pub enum Payload<'a> {
    None,
    Json(&'a Value),
    Bytes(Vec<u8>),
}

/// Where a server is and who we are to it.
pub struct Connection {
    /// `https://localhost:{port}`: control plane and token service.
    pub base: String,
    pub tenant_id: String,
    pub client_id: String,
    client_secret: String,
    /// The CA file clients must trust.
    pub ca_file: PathBuf,
    pub subscription_id: String,
    /// DNS suffix of the service hosts (see [`lanyard_domain::hosts`]).
    pub domain: String,
    http: reqwest::Client,
    tokens: tokio::sync::Mutex<HashMap<String, (String, Instant)>>,
}

impl Connection {
    /// From a data directory's `admin.json` and `endpoints.json`.
    pub fn from_data_dir(root: &Path) -> anyhow::Result<Self> {
        let dir = DataDir::existing(root)?;
        let admin = read_admin(&dir)?;
        let endpoints = read_endpoints(&dir)?;
        Self::new(
            format!("https://localhost:{}", endpoints.port),
            admin.tenant_id.to_string(),
            admin.client_id.to_string(),
            admin.client_secret,
            dir.ca_cert(),
            admin.subscription_id.to_string(),
            endpoints.domain,
        )
    }

    /// From `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`, `LANYARD_ARM_URL`,
    /// `REQUESTS_CA_BUNDLE`, `AZURE_SUBSCRIPTION_ID` and `LANYARD_DOMAIN`.
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| {
            std::env::var(name)
                .map_err(|_| anyhow!("`{name}` is not set and no data directory was found"))
        };
        Self::new(
            var("LANYARD_ARM_URL")?,
            var("AZURE_TENANT_ID")?,
            var("AZURE_CLIENT_ID")?,
            var("AZURE_CLIENT_SECRET")?,
            PathBuf::from(var("REQUESTS_CA_BUNDLE")?),
            std::env::var("AZURE_SUBSCRIPTION_ID").unwrap_or_default(),
            std::env::var("LANYARD_DOMAIN")
                .ok()
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| DEFAULT_DOMAIN.to_string()),
        )
    }

    /// The data directory if it holds an administrator credential, else the environment.
    pub fn resolve(data_dir: Option<&Path>) -> anyhow::Result<Self> {
        let root = data_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(lanyard_server::config::default_data_dir);
        if root.join("admin.json").exists() {
            return Self::from_data_dir(&root);
        }
        if data_dir.is_some() {
            bail!(
                "`{}` holds no administrator credential (admin.json)",
                root.display()
            );
        }
        Self::from_env()
    }

    fn new(
        base: String,
        tenant_id: String,
        client_id: String,
        client_secret: String,
        ca_file: PathBuf,
        subscription_id: String,
        domain: String,
    ) -> anyhow::Result<Self> {
        let pem = std::fs::read(&ca_file)
            .with_context(|| format!("reading the CA file `{}`", ca_file.display()))?;
        let base = base.trim_end_matches('/').to_string();
        let base_host = reqwest::Url::parse(&base)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "localhost".to_string());
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .dns_resolver(Arc::new(ServiceResolver {
                domain: domain.to_ascii_lowercase(),
                base_host,
            }))
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Self {
            base,
            tenant_id,
            client_id,
            client_secret,
            ca_file,
            subscription_id,
            domain,
            http,
            tokens: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The port the server listens on (from the base URL).
    pub fn port(&self) -> u16 {
        reqwest::Url::parse(&self.base)
            .ok()
            .and_then(|u| u.port_or_known_default())
            .unwrap_or(443)
    }

    /// `https://{host}[:{port}]` for a host of this server.
    pub fn host_url(&self, host: &str) -> String {
        match self.port() {
            443 => format!("https://{host}"),
            port => format!("https://{host}:{port}"),
        }
    }

    /// The URL of resource `name` of a hosted data plane (`https://{name}.{label}.{domain}`).
    pub fn hosted_url(&self, plane: &PlaneHost, name: &str) -> String {
        self.host_url(&plane.host(&name.to_ascii_lowercase(), &self.domain))
    }

    /// This server's own audience for a hosted data plane.
    pub fn audience(&self, plane: &PlaneHost) -> String {
        self.host_url(&plane.audience_host(&self.domain))
    }

    /// The data-plane URL of vault `name`.
    pub fn vault_url(&self, name: &str) -> String {
        self.hosted_url(&hosts::VAULT, name)
    }

    /// The audience of every vault here (the Key Vault challenge's `resource`).
    pub fn vault_audience(&self) -> String {
        self.audience(&hosts::VAULT)
    }

    /// The blob endpoint of storage account `name`.
    pub fn blob_url(&self, name: &str) -> String {
        self.hosted_url(&hosts::BLOB, name)
    }

    /// A token for `scope` through the client-credentials grant, cached until shortly
    /// before it expires.
    pub async fn token(&self, scope: &str) -> anyhow::Result<String> {
        let mut cache = self.tokens.lock().await;
        if let Some((token, until)) = cache.get(scope) {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let url = format!("{}/{}/oauth2/v2.0/token", self.base, self.tenant_id);
        let response = self
            .http
            .post(&url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
                ("scope", scope),
            ])
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(ServiceError {
                status: status.as_u16(),
                code: body["error"].as_str().unwrap_or("error").to_string(),
                message: body["error_description"]
                    .as_str()
                    .unwrap_or("token request failed")
                    .to_string(),
            }
            .into());
        }
        let token = body["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the token response has no access_token"))?;
        let lifetime = body["expires_in"].as_u64().unwrap_or(300);
        // Refresh a minute early so a token never expires between cache and server.
        let until = Instant::now() + Duration::from_secs(lifetime.saturating_sub(60));
        cache.insert(scope.to_string(), (token.clone(), until));
        Ok(token)
    }

    /// One authenticated request to any URL of the server; a failed answer becomes a
    /// [`ServiceError`].
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        scope: &str,
        headers: &[(&str, String)],
        payload: Payload<'_>,
    ) -> anyhow::Result<Reply> {
        let token = self.token(scope).await?;
        let mut request = self.http.request(method, url).bearer_auth(token);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request = match payload {
            Payload::None => request,
            Payload::Json(body) => request.json(body),
            Payload::Bytes(bytes) => request.body(bytes),
        };
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {url}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .with_context(|| format!("reading the answer from {url}"))?
            .to_vec();
        if !(200..300).contains(&status) {
            return Err(ServiceError::from_reply(status, &headers, &body).into());
        }
        Ok(Reply { headers, body })
    }

    /// A management-plane call; returns the JSON body (or `Null` for an empty one).
    pub async fn arm(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let payload = body.map_or(Payload::None, Payload::Json);
        let url = format!("{}{path}", self.base);
        Ok(self
            .send(method, &url, MANAGEMENT_SCOPE, &[], payload)
            .await?
            .json())
    }

    /// Every item of a paged ARM or Graph collection (`value` plus `nextLink` or
    /// `@odata.nextLink`).
    pub async fn list_all(&self, url: &str, scope: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut next = Some(url.to_string());
        while let Some(url) = next.take() {
            let page = self
                .send(Method::GET, &url, scope, &[], Payload::None)
                .await?
                .json();
            if let Some(items) = page["value"].as_array() {
                out.extend(items.iter().cloned());
            }
            next = page["nextLink"]
                .as_str()
                .or_else(|| page["@odata.nextLink"].as_str())
                .filter(|n| !n.is_empty())
                .map(str::to_string);
        }
        Ok(out)
    }

    /// Every item of an ARM collection at `path` (relative to the base).
    pub async fn arm_list(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        self.list_all(&format!("{}{path}", self.base), MANAGEMENT_SCOPE)
            .await
    }

    /// A Microsoft Graph call (`/v1.0/...` on the base host).
    pub async fn graph(&self, method: Method, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        Ok(self
            .send(method, &url, GRAPH_SCOPE, &[], Payload::None)
            .await?
            .json())
    }

    /// The object id of the principal this connection authenticates as (from its own
    /// management token's `oid`, decoded for reading only).
    pub async fn caller_object_id(&self) -> anyhow::Result<String> {
        let token = self.token(MANAGEMENT_SCOPE).await?;
        let claims = crate::jwt::claims(&token)?;
        claims["oid"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the management token carries no `oid`"))
    }
}

/// Sends every name under the server's domain to the server's own address; everything else
/// goes to the system resolver.
struct ServiceResolver {
    domain: String,
    base_host: String,
}

impl reqwest::dns::Resolve for ServiceResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let asked = name.as_str().to_ascii_lowercase();
        let host = if is_service_host(&asked, &self.domain) {
            self.base_host.clone()
        } else {
            asked
        };
        Box::pin(async move {
            let mut addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            // The server listens on IPv4 loopback by default; try IPv4 first.
            addrs.sort_by_key(|a| !a.is_ipv4());
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Whether `host` is `domain` or a name under it.
pub fn is_service_host(host: &str, domain: &str) -> bool {
    host == domain || host.ends_with(&format!(".{domain}"))
}

/// The exit code for an error: 3 when the service refused access, else 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    match error.downcast_ref::<ServiceError>() {
        Some(e) if e.status == 403 => EXIT_ACCESS_DENIED,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_of_every_plane_read_as_code_and_message() {
        let h = HeaderMap::new();
        let arm = ServiceError::from_reply(
            403,
            &h,
            br#"{"error":{"code":"AuthorizationFailed","message":"no"}}"#,
        );
        assert_eq!(arm.to_string(), "AuthorizationFailed: no");
        let oauth = ServiceError::from_reply(
            401,
            &h,
            br#"{"error":"invalid_client","error_description":"bad secret"}"#,
        );
        assert_eq!(oauth.to_string(), "invalid_client: bad secret");
        let blob = ServiceError::from_reply(
            403,
            &h,
            b"<?xml version=\"1.0\"?><Error><Code>AuthorizationPermissionMismatch</Code><Message>This request is not authorized &amp; so on</Message></Error>",
        );
        assert_eq!(
            blob.to_string(),
            "AuthorizationPermissionMismatch: This request is not authorized & so on"
        );
        let mut with_header = HeaderMap::new();
        with_header.insert("x-ms-error-code", "BlobNotFound".parse().unwrap());
        let head = ServiceError::from_reply(404, &with_header, b"");
        assert_eq!(head.code, "BlobNotFound");
        let bare = ServiceError::from_reply(500, &h, b"");
        assert_eq!(bare.code, "Error");
    }

    #[test]
    fn service_hosts_are_the_domain_and_names_under_it() {
        assert!(is_service_host(
            "kv1.vault.lanyard.localhost",
            "lanyard.localhost"
        ));
        assert!(is_service_host("lanyard.localhost", "lanyard.localhost"));
        assert!(!is_service_host(
            "evil-lanyard.localhost",
            "lanyard.localhost"
        ));
        assert!(!is_service_host("example.com", "lanyard.localhost"));
    }

    #[test]
    fn exit_codes() {
        let denied: anyhow::Error = ServiceError {
            status: 403,
            code: "Forbidden".into(),
            message: "no".into(),
        }
        .into();
        assert_eq!(exit_code(&denied), EXIT_ACCESS_DENIED);
        assert_eq!(exit_code(&anyhow!("other")), 1);
    }
}
