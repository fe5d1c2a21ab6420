//! Routing by host name.
//!
//! `management.{domain}` is the control plane, `login.{domain}` the token service (and
//! `graph.{domain}` its app-registration API),
//! `{vault}.vault.{domain}` a Key Vault, `{account}.blob.{domain}` a storage account.
//! `localhost`, loopback addresses and `{domain}` itself serve the control plane and the token
//! service together (their paths do not collide), so a client needs name resolution only for
//! vault and blob hosts.

/// Which part of Lanyard a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plane {
    /// Control plane and token service on one host.
    Combined,
    Management,
    Login,
    /// `graph.{domain}`: the Microsoft Graph subset for app registrations (token service).
    Graph,
    Vault(String),
    Blob(String),
    Unknown(String),
}

/// Classifies a `Host` header value (port and trailing dot ignored, case-insensitive).
pub fn classify(host: &str, domain: &str) -> Plane {
    let host = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host == domain || is_loopback_literal(&host) {
        return Plane::Combined;
    }
    let Some(prefix) = host.strip_suffix(domain).and_then(|p| p.strip_suffix('.')) else {
        return Plane::Unknown(host);
    };
    match prefix {
        "management" => Plane::Management,
        "login" => Plane::Login,
        "graph" => Plane::Graph,
        _ => {
            if let Some(name) = prefix.strip_suffix(".vault") {
                if is_label(name) {
                    return Plane::Vault(name.to_string());
                }
            }
            if let Some(name) = prefix.strip_suffix(".blob") {
                if is_label(name) {
                    return Plane::Blob(name.to_string());
                }
            }
            Plane::Unknown(host)
        }
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [::1]:8443
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

fn is_loopback_literal(host: &str) -> bool {
    host.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "lanyard.localhost";

    #[test]
    fn hosts_map_to_planes() {
        assert_eq!(classify("localhost:8443", D), Plane::Combined);
        assert_eq!(classify("127.0.0.1:8443", D), Plane::Combined);
        assert_eq!(classify("[::1]:8443", D), Plane::Combined);
        assert_eq!(
            classify("Management.Lanyard.Localhost", D),
            Plane::Management
        );
        assert_eq!(classify("login.lanyard.localhost:8443", D), Plane::Login);
        assert_eq!(
            classify("kv1.vault.lanyard.localhost:8443", D),
            Plane::Vault("kv1".into())
        );
        assert_eq!(
            classify("acct.blob.lanyard.localhost.", D),
            Plane::Blob("acct".into())
        );
        assert!(matches!(
            classify("a.b.vault.lanyard.localhost", D),
            Plane::Unknown(_)
        ));
        assert!(matches!(classify("evil.example", D), Plane::Unknown(_)));
        assert!(matches!(
            classify("xlanyard.localhost", D),
            Plane::Unknown(_)
        ));
    }
}
