//! External issuers' signing keys, for federated (workload identity) assertions.
//!
//! An issuer's keys are found the OIDC way: `{iss}/.well-known/openid-configuration`, whose
//! `issuer` must equal `iss` and whose `jwks_uri` names the JWKS. Both are fetched over
//! HTTPS only and cached per issuer for [`KEYS_TTL`], so an issuer's key rotation reaches us
//! without a restart; a token signed with a `kid` we do not know triggers one early refetch
//! (at most every [`REFETCH_AFTER`]). Only issuers named by one of the client's federated
//! credentials are ever fetched, so an assertion cannot make us call an arbitrary URL; and
//! whoever writes a credential cannot make us call a loopback, private or link-local address
//! either, unless the operator allowed its network: every request goes through
//! [`crate::outbound`] (checked addresses, no proxy, checked redirects).
//!
//! Why a fetch failed is for the server's log only ([`FetchError`]'s text names addresses
//! and network errors); the token endpoint tells the client no more than Entra does.
//!
//! Trust: the system's CA bundle (`SSL_CERT_FILE`, else the usual distribution paths) plus
//! the PEM file named by `LANYARD_EXTRA_CA_FILE`, for issuers behind a private CA (a test
//! issuer, an on-premises Kubernetes API server).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lanyard_token::jwk::{JwkSet, KeySet};
use serde::Deserialize;

use crate::outbound::{self, AddressPolicy, Refused};

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
    /// Refused before any connection: the host is, or resolves only to, restricted addresses.
    #[error("`{url}` is not fetched: {refused}")]
    Refused { url: String, refused: Refused },
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
    policy: AddressPolicy,
    client: OnceLock<Result<reqwest::Client, String>>,
    cache: Mutex<HashMap<String, Cached>>,
}

impl Default for IssuerKeys {
    /// Refuses every restricted address.
    fn default() -> Self {
        Self::new(AddressPolicy::default())
    }
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: Option<String>,
    jwks_uri: Option<String>,
}

impl IssuerKeys {
    pub fn new(policy: AddressPolicy) -> Self {
        Self {
            policy,
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
            .get_or_init(|| build_client(&self.policy))
            .as_ref()
            .map_err(|e| FetchError::Trust(e.clone()))
    }

    async fn fetch(&self, issuer: &str) -> Result<KeySet, FetchError> {
        if !is_https(issuer) {
            return Err(FetchError::NotHttps(issuer.to_string()));
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let body = self.get(&url).await?;
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
        let body = self.get(&jwks_uri).await?;
        let text = String::from_utf8_lossy(&body);
        let set = JwkSet::parse(&text).map_err(|e| FetchError::Document {
            url: jwks_uri.clone(),
            reason: e.to_string(),
        })?;
        Ok(KeySet::from_jwks(&set))
    }

    /// One document, refused before any request when its host is an IP literal the policy
    /// refuses (names are checked by the client's resolver as it connects).
    async fn get(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let http = |reason: String| FetchError::Http {
            url: url.to_string(),
            reason,
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| http(e.to_string()))?;
        outbound::check_url(&self.policy, &parsed).map_err(|refused| FetchError::Refused {
            url: url.to_string(),
            refused,
        })?;
        let failed = |e: reqwest::Error| match Refused::find(&e) {
            Some(refused) => FetchError::Refused {
                url: url.to_string(),
                refused: refused.clone(),
            },
            None => http(error_chain(&e)),
        };
        let mut response = self
            .client()?
            .get(parsed)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(failed)?;
        if !response.status().is_success() {
            return Err(http(format!("status {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(http(format!("larger than {MAX_DOCUMENT_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        && url.len() > 8
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

fn build_client(policy: &AddressPolicy) -> Result<reqwest::Client, String> {
    let mut builder = outbound::client_builder(policy)
        .timeout(FETCH_TIMEOUT)
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
        let keys = IssuerKeys::default();
        assert!(matches!(
            keys.keys("http://127.0.0.1:1", false).await,
            Err(FetchError::NotHttps(_))
        ));
    }

    /// A loopback port that records whether anyone connected: a connection completed before
    /// `contacted` is asked is in the listen backlog, so the check needs no waiting.
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

        fn contacted(&self) -> bool {
            match self.0.accept() {
                Ok(_) => true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    fn refused(result: Result<Arc<KeySet>, FetchError>) -> Refused {
        match result {
            Err(FetchError::Refused { refused, .. }) => refused,
            other => panic!("expected a refusal, got {:?}", other.map(|_| "keys")),
        }
    }

    #[tokio::test]
    async fn loopback_issuers_are_refused_without_connecting() {
        let listener = Listener::bind();
        let port = listener.port();
        let keys = IssuerKeys::default();
        let by_address = refused(keys.keys(&format!("https://127.0.0.1:{port}"), false).await);
        assert!(by_address.reasons.contains("loopback"), "{by_address}");
        let v6 = refused(keys.keys(&format!("https://[::1]:{port}"), false).await);
        assert!(v6.reasons.contains("loopback"), "{v6}");
        let mapped = refused(
            keys.keys(&format!("https://[::ffff:127.0.0.1]:{port}"), false)
                .await,
        );
        assert!(mapped.reasons.contains("loopback"), "{mapped}");
        // A name is judged by what it resolves to.
        let by_name = refused(keys.keys(&format!("https://localhost:{port}"), false).await);
        assert_eq!(by_name.host, "localhost");
        assert!(
            by_name.reasons.contains("127.0.0.1 is loopback"),
            "{by_name}"
        );
        assert!(!listener.contacted());
    }

    /// Addresses that must never see a packet from a test: refused on their spelling, before
    /// any client exists.
    #[tokio::test]
    async fn metadata_and_private_issuers_are_refused_before_any_request() {
        let keys = IssuerKeys::default();
        for (issuer, why) in [
            ("https://169.254.169.254", "link-local"),
            ("https://169.254.169.254:443/metadata", "link-local"),
            ("https://[::ffff:169.254.169.254]", "link-local"),
            ("https://[fe80::1]", "link-local"),
            ("https://10.0.0.1", "private"),
            ("https://192.168.1.10:6443", "private"),
            ("https://[fd00::1]", "unique local"),
            ("https://100.64.0.1", "shared address space"),
            ("https://0.0.0.0:8443", "unspecified"),
        ] {
            let r = refused(keys.keys(issuer, false).await);
            assert!(r.reasons.contains(why), "{issuer}: {r}");
        }
        // The refusals were decided on the URL alone: no client was ever built.
        assert!(keys.client.get().is_none());
    }

    /// An HTTPS server on 127.0.0.1 that answers every request with a redirect to
    /// `location`; its CA, for the client to trust.
    async fn redirecting_issuer(location: String) -> (u16, reqwest::Certificate) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
        let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        let ca = reqwest::Certificate::from_der(ca.der()).unwrap();
        (port, ca)
    }

    /// A redirect is followed only where a first request could go: an allowed issuer that
    /// redirects to another loopback address gets a refusal, and that address no connection.
    #[tokio::test]
    async fn redirects_to_refused_addresses_are_not_followed() {
        let elsewhere = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        elsewhere.set_nonblocking(true).unwrap();
        let elsewhere = Listener(elsewhere);
        for target in [
            format!("https://127.0.0.2:{}/keys", elsewhere.port()),
            format!("https://[::ffff:127.0.0.2]:{}/keys", elsewhere.port()),
        ] {
            let (port, ca) = redirecting_issuer(target.clone()).await;
            let policy = AddressPolicy::new(vec!["127.0.0.1/32".parse().unwrap()]);
            let client = outbound::client_builder(&policy)
                .timeout(FETCH_TIMEOUT)
                .add_root_certificate(ca)
                .build()
                .unwrap();
            let keys = IssuerKeys {
                policy,
                client: OnceLock::from(Ok(client)),
                cache: Mutex::new(HashMap::new()),
            };
            let r = refused(keys.keys(&format!("https://127.0.0.1:{port}"), false).await);
            assert!(r.reasons.contains("127.0.0.2 is loopback"), "{target}: {r}");
        }
        assert!(!elsewhere.contacted());
    }

    /// With the network allowed, the fetch goes out (and here fails at the TLS handshake, the
    /// listener speaking no TLS): the opt-in is what lets a local issuer be reached.
    #[tokio::test]
    async fn an_allowed_network_is_fetched_from() {
        let listener = Listener::bind();
        let port = listener.port();
        let keys = IssuerKeys::new(AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]));
        // Accept one connection and close it, so the client's handshake fails at once
        // (bounded: the fetch itself gives up after FETCH_TIMEOUT).
        let accept = tokio::task::spawn_blocking(move || {
            for _ in 0..400 {
                if listener.contacted() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        let result = keys.keys(&format!("https://127.0.0.1:{port}"), false).await;
        assert!(
            matches!(result, Err(FetchError::Http { .. })),
            "{:?}",
            result.map(|_| ())
        );
        assert!(accept.await.unwrap());
    }
}
