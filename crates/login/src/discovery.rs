//! OpenID Connect discovery documents (v1 and v2) and tenant names. Pure.
//!
//! Endpoints in the documents are built on the scheme, host and port the client used (its
//! `Host` header): MSAL posts to the `token_endpoint` it discovers, so a client that reached
//! us as `https://localhost:8443` must be sent back there, not to `login.{domain}`.
//! Issuers are the token policy's (Azure's by default, PROTOCOLS §2), because they must
//! equal the `iss` of the tokens we sign.

use lanyard_domain::Tenant;
use serde_json::{json, Value};
use uuid::Uuid;

/// Tenant names that stand for "any tenant" on Entra; they serve the JWKS.
const MULTI_TENANT: &[&str] = &["common", "organizations", "consumers"];

/// The tenant a path segment names: its GUID or its default domain (case-insensitive).
pub fn resolve_tenant(tenant: &Tenant, segment: &str) -> Option<Uuid> {
    let by_id = Uuid::parse_str(segment).is_ok_and(|id| id == tenant.id);
    (by_id || segment.eq_ignore_ascii_case(&tenant.default_domain)).then_some(tenant.id)
}

/// Whether the JWKS may be served for `segment`: our tenant or a multi-tenant alias.
pub fn serves_keys_for(tenant: &Tenant, segment: &str) -> bool {
    resolve_tenant(tenant, segment).is_some()
        || MULTI_TENANT.iter().any(|m| m.eq_ignore_ascii_case(segment))
}

/// `https://{authority}` when the authority the client sent is a plain host[:port], else
/// `fallback`. Checked so a hostile `Host` header cannot inject text into documents.
pub fn base_url(authority: Option<&str>, fallback: &str) -> String {
    match authority {
        Some(a)
            if !a.is_empty()
                && a.len() <= 255
                && a.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                }) =>
        {
            format!("https://{}", a.to_ascii_lowercase())
        }
        _ => fallback.trim_end_matches('/').to_string(),
    }
}

/// Where the rest of Lanyard lives, for the documents' informational members.
#[derive(Debug, Clone)]
pub struct Hosts {
    /// `graph.{domain}[:port]`.
    pub graph: String,
    pub region_scope: &'static str,
}

/// `/{tenant}/v2.0/.well-known/openid-configuration`.
pub fn openid_configuration_v2(base: &str, tenant: Uuid, issuer: &str, hosts: &Hosts) -> Value {
    let t = format!("{base}/{tenant}");
    json!({
        "token_endpoint": format!("{t}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{t}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer,
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("https://{}/oidc/userinfo", hosts.graph),
        "authorization_endpoint": format!("{t}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{t}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{t}/oauth2/v2.0/logout"),
        "claims_supported": [
            "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
            "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username",
            "name", "tid", "ver", "at_hash", "c_hash", "email"
        ],
        "kerberos_endpoint": format!("{t}/kerberos"),
        "tenant_region_scope": hosts.region_scope,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": hosts.graph,
        "rbac_url": "https://pas.windows.net",
    })
}

/// `/{tenant}/.well-known/openid-configuration`.
pub fn openid_configuration_v1(base: &str, tenant: Uuid, issuer: &str, hosts: &Hosts) -> Value {
    let t = format!("{base}/{tenant}");
    json!({
        "token_endpoint": format!("{t}/oauth2/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/common/discovery/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
        "scopes_supported": ["openid"],
        "issuer": issuer,
        "microsoft_multi_refresh_token": true,
        "authorization_endpoint": format!("{t}/oauth2/authorize"),
        "device_authorization_endpoint": format!("{t}/oauth2/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{t}/oauth2/logout"),
        "claims_supported": [
            "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
            "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "amr", "nonce", "email",
            "given_name", "family_name", "nickname"
        ],
        "check_session_iframe": format!("{t}/oauth2/checksession"),
        "userinfo_endpoint": format!("{t}/openid/userinfo"),
        "kerberos_endpoint": format!("{t}/kerberos"),
        "tenant_region_scope": hosts.region_scope,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": hosts.graph,
        "rbac_url": "https://pas.windows.net",
    })
}

/// Every URL a client assertion may name as its `aud`: both token endpoints, with the tenant
/// as GUID or domain, on each host we answer to.
pub fn token_endpoint_audiences(bases: &[String], tenant: &Tenant) -> Vec<String> {
    let mut out = Vec::new();
    for base in bases {
        for t in [tenant.id.to_string(), tenant.default_domain.clone()] {
            out.push(format!("{base}/{t}/oauth2/v2.0/token"));
            out.push(format!("{base}/{t}/oauth2/token"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn tenant() -> Tenant {
        Tenant {
            id: Uuid::parse_str("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap(),
            display_name: "t".into(),
            default_domain: "lanyard.localhost".into(),
        }
    }

    #[test]
    fn tenants_by_id_or_domain() {
        let t = tenant();
        assert_eq!(
            resolve_tenant(&t, "72F988BF-86F1-41AF-91AB-2D7CD011DB47"),
            Some(t.id)
        );
        assert_eq!(resolve_tenant(&t, "Lanyard.Localhost"), Some(t.id));
        assert_eq!(resolve_tenant(&t, "common"), None);
        assert_eq!(resolve_tenant(&t, &Uuid::new_v4().to_string()), None);
        assert!(serves_keys_for(&t, "common"));
        assert!(!serves_keys_for(&t, "contoso.com"));
    }

    #[test]
    fn base_url_follows_the_host_header_but_not_injections() {
        assert_eq!(
            base_url(Some("LocalHost:8443"), "https://x"),
            "https://localhost:8443"
        );
        assert_eq!(
            base_url(Some("[::1]:8443"), "https://x"),
            "https://[::1]:8443"
        );
        assert_eq!(base_url(Some("evil/\"x"), "https://x/"), "https://x");
        assert_eq!(base_url(None, "https://x"), "https://x");
    }

    #[test]
    fn documents_name_the_host_the_client_used() {
        let t = tenant();
        let hosts = Hosts {
            graph: "graph.lanyard.localhost:8443".into(),
            region_scope: "NA",
        };
        let issuer = format!("https://login.microsoftonline.com/{}/v2.0", t.id);
        let v2 = openid_configuration_v2("https://localhost:8443", t.id, &issuer, &hosts);
        assert_eq!(
            v2["token_endpoint"],
            format!("https://localhost:8443/{}/oauth2/v2.0/token", t.id)
        );
        assert_eq!(
            v2["jwks_uri"],
            format!("https://localhost:8443/{}/discovery/v2.0/keys", t.id)
        );
        assert_eq!(v2["issuer"], issuer);
        assert_eq!(
            v2["id_token_signing_alg_values_supported"],
            json!(["RS256"])
        );
        let v1 = openid_configuration_v1("https://h", t.id, "https://sts.windows.net/x/", &hosts);
        assert_eq!(v1["jwks_uri"], "https://h/common/discovery/keys");
        assert_eq!(
            v1["token_endpoint"],
            format!("https://h/{}/oauth2/token", t.id)
        );
    }

    #[test]
    fn assertion_audiences_cover_both_endpoints_and_tenant_forms() {
        let t = tenant();
        let auds = token_endpoint_audiences(&["https://localhost:1".into()], &t);
        assert_eq!(auds.len(), 4);
        assert!(auds.contains(&"https://localhost:1/lanyard.localhost/oauth2/token".to_string()));
    }
}
