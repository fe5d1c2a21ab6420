//! TLS: a local certificate authority kept in the data directory, and a server certificate
//! issued from it at every start for every name Lanyard answers to.
//!
//! Clients trust the CA file (`REQUESTS_CA_BUNDLE`, `SSL_CERT_FILE`, `NODE_EXTRA_CA_CERTS`);
//! the leaf is re-issued in memory each start, so a changed domain needs no manual step.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::datadir::{self, DataDir};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate authority in `{path}` is unusable: {reason}")]
    BadCa { path: String, reason: String },
    #[error("cannot issue the server certificate: {0}")]
    Issue(String),
    #[error(transparent)]
    DataDir(#[from] datadir::DataDirError),
}

/// What the HTTPS listener needs.
pub struct TlsMaterial {
    pub server_config: Arc<rustls::ServerConfig>,
    /// PEM of the CA certificate clients must trust.
    pub ca_pem: String,
}

/// The DNS names and addresses on the server certificate (see
/// [`lanyard_domain::hosts::certificate_names`]).
pub fn server_names(domain: &str) -> Vec<String> {
    lanyard_domain::hosts::certificate_names(domain)
}

/// Loads the CA from the data directory (creating it on first start) and issues a server
/// certificate for `domain`.
pub fn ensure(dir: &DataDir, domain: &str) -> Result<TlsMaterial, TlsError> {
    let (ca_params, ca_key, ca_pem) = load_or_create_ca(dir)?;
    let issuer = ca_params
        .self_signed(&ca_key)
        .map_err(|e| TlsError::Issue(e.to_string()))?;

    let leaf_key = KeyPair::generate().map_err(|e| TlsError::Issue(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("Lanyard server ({domain})"));
    params.distinguished_name = dn;
    params.subject_alt_names = server_names(domain)
        .into_iter()
        .map(|name| match name.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => name
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e: rcgen::Error| TlsError::Issue(e.to_string())),
        })
        .collect::<Result<_, _>>()?;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(397);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let leaf = params
        .signed_by(&leaf_key, &issuer, &ca_key)
        .map_err(|e| TlsError::Issue(e.to_string()))?;

    let chain = vec![leaf.der().clone(), issuer.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Issue(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| TlsError::Issue(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        server_config: Arc::new(config),
        ca_pem,
    })
}

fn load_or_create_ca(dir: &DataDir) -> Result<(CertificateParams, KeyPair, String), TlsError> {
    let (cert_path, key_path) = (dir.ca_cert(), dir.ca_key());
    let bad = |reason: String| TlsError::BadCa {
        path: cert_path.display().to_string(),
        reason,
    };
    if cert_path.exists() && key_path.exists() {
        let cert_pem = datadir::read_to_string(&cert_path)?;
        let key_pem = datadir::read_to_string(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| bad(e.to_string()))?;
        let params =
            CertificateParams::from_ca_cert_pem(&cert_pem).map_err(|e| bad(e.to_string()))?;
        return Ok((params, key, cert_pem));
    }
    let key = KeyPair::generate().map_err(|e| TlsError::Issue(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let tag: u32 = rand::random();
    dn.push(DnType::CommonName, format!("Lanyard local CA {tag:08x}"));
    dn.push(DnType::OrganizationName, "Lanyard");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(3650);
    let cert = params
        .clone()
        .self_signed(&key)
        .map_err(|e| TlsError::Issue(e.to_string()))?;
    let cert_pem = cert.pem();
    // The key first: a CA certificate without its key would be unusable.
    datadir::write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    datadir::write_atomic(&cert_path, cert_pem.as_bytes(), 0o644)?;
    Ok((params, key, cert_pem))
}

/// The DER certificates in a PEM bundle (for clients and tests that trust the CA).
pub fn pem_certificates(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .filter_map(Result::ok)
        .collect()
}
