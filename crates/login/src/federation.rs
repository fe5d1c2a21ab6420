//! External issuers' signing keys, for federated (workload identity) assertions.
//!
//! An issuer's keys are found the OIDC way: `{iss}/.well-known/openid-configuration`, whose
//! `issuer` must equal `iss` and whose `jwks_uri` names the JWKS. Both are fetched over
//! HTTPS only and cached per issuer for [`KEYS_TTL`], so an issuer's key rotation reaches us
//! without a restart; a token signed with a `kid` we do not know triggers one early refetch
//! (at most every [`REFETCH_AFTER`]). Only issuers named by one of the client's federated
//! credentials are ever fetched, so an assertion cannot make us call an arbitrary URL.
//!
//! Trust: the system's CA bundle (`SSL_CERT_FILE`, else the usual distribution paths) plus
//! the PEM file named by `LANYARD_EXTRA_CA_FILE`, for issuers behind a private CA (a test
//! issuer, an on-premises Kubernetes API server).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lanyard_token::jwk::{JwkSet, KeySet};
use serde::Deserialize;

/// How long an issuer's keys are used before they are fetched again.
pub const KEYS_TTL: Duration = Duration::from_secs(10 * 60);
/// An unknown `kid` refetches the keys only if they are at least this old.
pub const REFETCH_AFTER: Duration = Duration::from_secs(30);
/// The environment variable naming extra trusted CA certificates (PEM).
pub const EXTRA_CA_VAR: &str = "LANYARD_EXTRA_CA_FILE";

const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("issuer `{0}` is not an https url")]
    NotHttps(String),
    #[error("{0}")]
    Trust(String),
    #[error("cannot fetch `{url}`: {reason}")]
    Http { url: String, reason: String },
    #[error("`{url}` is not a valid document: {reason}")]
    Document { url: String, reason: String },
    #[error("discovery document names issuer `{found}`, not `{expected}`")]
    IssuerMismatch { expected: String, found: String },
}

struct Cached {
    keys: Arc<KeySet>,
    fetched: Instant,
}

/// The per-issuer key cache and the HTTP client that fills it.
pub struct IssuerKeys {
    client: OnceLock<Result<reqwest::Client, String>>,
    cache: Mutex<HashMap<String, Cached>>,
}

impl Default for IssuerKeys {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: Option<String>,
    jwks_uri: Option<String>,
}

impl IssuerKeys {
    pub fn new() -> Self {
        Self {
            client: OnceLock::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The keys of `issuer`: cached if fresh, else fetched. `unknown_kid` asks for a refetch
    /// when the cached keys lack the key a token names (rate-limited).
    pub async fn keys(&self, issuer: &str, unknown_kid: bool) -> Result<Arc<KeySet>, FetchError> {
        if let Some(keys) = self.cached(issuer, unknown_kid) {
            return Ok(keys);
        }
        let keys = Arc::new(self.fetch(issuer).await?);
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, c| c.fetched.elapsed() < KEYS_TTL);
            cache.insert(
                issuer.to_string(),
                Cached {
                    keys: Arc::clone(&keys),
                    fetched: Instant::now(),
                },
            );
        }
        Ok(keys)
    }

    fn cached(&self, issuer: &str, unknown_kid: bool) -> Option<Arc<KeySet>> {
        let cache = self.cache.lock().ok()?;
        let entry = cache.get(issuer)?;
        let age = entry.fetched.elapsed();
        let fresh = age < KEYS_TTL && !(unknown_kid && age >= REFETCH_AFTER);
        fresh.then(|| Arc::clone(&entry.keys))
    }

    fn client(&self) -> Result<&reqwest::Client, FetchError> {
        self.client
            .get_or_init(build_client)
            .as_ref()
            .map_err(|e| FetchError::Trust(e.clone()))
    }

    async fn fetch(&self, issuer: &str) -> Result<KeySet, FetchError> {
        if !is_https(issuer) {
            return Err(FetchError::NotHttps(issuer.to_string()));
        }
        let client = self.client()?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let body = get(client, &url).await?;
        let doc: DiscoveryDocument =
            serde_json::from_slice(&body).map_err(|e| FetchError::Document {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let found = doc.issuer.unwrap_or_default();
        if found.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(FetchError::IssuerMismatch {
                expected: issuer.to_string(),
                found,
            });
        }
        let jwks_uri = doc.jwks_uri.ok_or_else(|| FetchError::Document {
            url: url.clone(),
            reason: "no `jwks_uri`".into(),
        })?;
        if !is_https(&jwks_uri) {
            return Err(FetchError::NotHttps(jwks_uri));
        }
        let body = get(client, &jwks_uri).await?;
        let text = String::from_utf8_lossy(&body);
        let set = JwkSet::parse(&text).map_err(|e| FetchError::Document {
            url: jwks_uri.clone(),
            reason: e.to_string(),
        })?;
        Ok(KeySet::from_jwks(&set))
    }
}

fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        && url.len() > 8
}

async fn get(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, FetchError> {
    let http = |reason: String| FetchError::Http {
        url: url.to_string(),
        reason,
    };
    let mut response = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| http(error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(http(format!("status {}", response.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| http(error_chain(&e)))? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(http(format!("larger than {MAX_DOCUMENT_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// reqwest's errors hide their cause (the TLS failure) behind "error sending request".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn build_client() -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .https_only(true)
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("lanyard/", env!("CARGO_PKG_VERSION")));
    let system = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from))
        .find(|p| p.is_file());
    if let Some(path) = system {
        match std::fs::read(&path).map(|pem| reqwest::Certificate::from_pem_bundle(&pem)) {
            Ok(Ok(certs)) => {
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
            _ => tracing::warn!(path = %path.display(), "system CA bundle could not be read"),
        }
    }
    if let Some(path) = std::env::var_os(EXTRA_CA_VAR).filter(|v| !v.is_empty()) {
        let path = std::path::PathBuf::from(path);
        let pem = std::fs::read(&path)
            .map_err(|e| format!("{EXTRA_CA_VAR} `{}` cannot be read: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            format!(
                "{EXTRA_CA_VAR} `{}` is not PEM certificates: {e}",
                path.display()
            )
        })?;
        if certs.is_empty() {
            return Err(format!(
                "{EXTRA_CA_VAR} `{}` holds no certificate",
                path.display()
            ));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| error_chain(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_issuers_are_fetched() {
        assert!(is_https("https://issuer.example"));
        assert!(is_https("HTTPS://issuer.example/x"));
        assert!(!is_https("http://issuer.example"));
        assert!(!is_https("https://"));
        assert!(!is_https("file:///etc/passwd"));
    }

    #[tokio::test]
    async fn plain_http_issuers_are_refused_without_a_request() {
        let keys = IssuerKeys::new();
        assert!(matches!(
            keys.keys("http://127.0.0.1:1", false).await,
            Err(FetchError::NotHttps(_))
        ));
    }
}
