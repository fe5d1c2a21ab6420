//! Routing by host name.
//!
//! `management.{domain}` is the control plane, `login.{domain}` the token service (and
//! `graph.{domain}` its app-registration API),
//! `{name}.{label}.{domain}` a resource of a data plane on hosts of its own (a Key Vault,
//! a storage account: see [`lanyard_domain::hosts`]).
//! `localhost`, loopback addresses and `{domain}` itself serve the control plane and the token
//! service together (their paths do not collide), so a client needs name resolution only for
//! vault and blob hosts.

use lanyard_domain::hosts::{PlaneHost, PLANE_HOSTS};

/// Which part of Lanyard a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plane {
    /// Control plane and token service on one host.
    Combined,
    Management,
    Login,
    /// `graph.{domain}`: the Microsoft Graph subset for app registrations (token service).
    Graph,
    /// `{name}.{label}.{domain}`: resource `name` of a data plane on hosts of its own.
    Hosted(&'static PlaneHost, String),
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
        _ => PLANE_HOSTS
            .iter()
            .find_map(|plane| {
                plane
                    .name_in(prefix)
                    .map(|name| Plane::Hosted(plane, name.to_string()))
            })
            .unwrap_or(Plane::Unknown(host)),
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
            Plane::Hosted(&lanyard_domain::hosts::VAULT, "kv1".into())
        );
        assert_eq!(
            classify("acct.blob.lanyard.localhost.", D),
            Plane::Hosted(&lanyard_domain::hosts::BLOB, "acct".into())
        );
        assert!(matches!(
            classify("a.b.vault.lanyard.localhost", D),
            Plane::Unknown(_)
        ));
        assert!(matches!(classify("evil.example", D), Plane::Unknown(_)));
        assert!(matches!(
            classify("vault.lanyard.localhost", D),
            Plane::Unknown(_)
        ));
        assert!(matches!(
            classify("xlanyard.localhost", D),
            Plane::Unknown(_)
        ));
    }

    #[test]
    fn every_fixed_host_and_hosted_plane_is_routed() {
        for fixed in lanyard_domain::hosts::FIXED_HOSTS {
            let plane = classify(&format!("{fixed}.{D}"), D);
            assert!(!matches!(plane, Plane::Unknown(_)), "{fixed}");
        }
        for hosted in PLANE_HOSTS {
            assert_eq!(
                classify(&hosted.host("r1", D), D),
                Plane::Hosted(hosted, "r1".into())
            );
        }
    }
}
