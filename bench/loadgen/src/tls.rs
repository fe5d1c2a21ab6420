//! Client-side TLS that trusts exactly one CA file, with HTTP/1.1 as the only ALPN protocol.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::CertificateDer;
use tokio_rustls::TlsConnector;

/// A connector trusting the PEM certificates in `ca_file`.
pub fn connector(ca_file: &Path) -> anyhow::Result<TlsConnector> {
    let pem = std::fs::read(ca_file).with_context(|| format!("reading `{}`", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing `{}`", ca_file.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "`{}` holds no certificate",
        ca_file.display()
    );
    for cert in certs {
        roots.add(cert).context("adding a CA certificate")?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}
