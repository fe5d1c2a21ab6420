//! Access-token claims as Entra writes them, and the scope ↔ resource rules.
//!
//! v1 tokens (the managed-identity default) carry `appid`/`appidacr` and `ver` `1.0` with
//! issuer `https://sts.windows.net/{tid}/`; v2 tokens carry `azp`/`azpacr` and `ver` `2.0`
//! with issuer `https://login.microsoftonline.com/{tid}/v2.0`. The issuer hosts are
//! configurable ([`IssuerConfig`]) for deployments that want issuers on their own login host;
//! the defaults are Azure's, so SDKs that check issuers accept our tokens.

use lanyard_domain::{Principal, PrincipalKind, ResourceId, ServicePrincipalSource};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::UnixTime;

/// Default token lifetime: 24 hours, as Entra issues managed-identity tokens.
pub const DEFAULT_LIFETIME_SECS: i64 = crate::keys::DEFAULT_TOKEN_LIFETIME_SECS;

/// Where issuers live. `v1_base` + `/{tid}/` and `v2_base` + `/{tid}/v2.0`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerConfig {
    pub v1_base: String,
    pub v2_base: String,
}

impl Default for IssuerConfig {
    fn default() -> Self {
        Self {
            v1_base: "https://sts.windows.net".to_string(),
            v2_base: "https://login.microsoftonline.com".to_string(),
        }
    }
}

impl IssuerConfig {
    /// Issuers on one host of our own, e.g. `https://login.lanyard.localhost:8443`.
    pub fn on_host(base: &str) -> Self {
        let base = base.trim_end_matches('/').to_string();
        Self {
            v1_base: base.clone(),
            v2_base: base,
        }
    }

    /// `https://sts.windows.net/{tid}/`
    pub fn v1(&self, tenant: Uuid) -> String {
        format!("{}/{tenant}/", self.v1_base.trim_end_matches('/'))
    }

    /// `https://login.microsoftonline.com/{tid}/v2.0`
    pub fn v2(&self, tenant: Uuid) -> String {
        format!("{}/{tenant}/v2.0", self.v2_base.trim_end_matches('/'))
    }

    pub fn issuer(&self, version: TokenVersion, tenant: Uuid) -> String {
        match version {
            TokenVersion::V1 => self.v1(tenant),
            TokenVersion::V2 => self.v2(tenant),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenVersion {
    #[default]
    V1,
    V2,
}

impl TokenVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "1.0",
            Self::V2 => "2.0",
        }
    }
}

/// How an application authenticated; becomes `appidacr`/`azpacr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientAuthMethod {
    /// `"1"`.
    ClientSecret,
    /// `"2"`: certificate-signed client assertion.
    Certificate,
    /// `"2"`: federated (workload identity) assertion.
    FederatedAssertion,
}

impl ClientAuthMethod {
    pub fn acr(self) -> &'static str {
        match self {
            Self::ClientSecret => "1",
            Self::Certificate | Self::FederatedAssertion => "2",
        }
    }
}

/// Who the token is for, beyond the ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenPrincipal {
    /// The system-assigned identity of `host`.
    SystemAssigned { host: ResourceId },
    /// A user-assigned identity used by `host`.
    UserAssigned {
        identity: ResourceId,
        host: ResourceId,
    },
    /// A service principal that authenticated itself (secret, certificate, federation). A
    /// user-assigned identity reached through workload identity federation is this too, with
    /// `identity` set so the token carries `xms_mirid`.
    Application {
        auth: ClientAuthMethod,
        identity: Option<ResourceId>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClaimsError {
    #[error("principal `{0}` is not a service principal")]
    NotAServicePrincipal(Uuid),
    #[error("principal `{0}` is not a managed identity")]
    NotAManagedIdentity(Uuid),
    #[error("system-assigned identity `{principal}` belongs to `{owner}`, not to `{host}`")]
    HostMismatch {
        principal: Uuid,
        owner: String,
        host: String,
    },
}

/// Everything a token says about its subject, before times and ids are stamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub tenant_id: Uuid,
    /// `oid` and `sub`.
    pub object_id: Uuid,
    /// `appid` / `azp`.
    pub client_id: Uuid,
    /// `aud`: the resource exactly as the client asked for it.
    pub audience: String,
    pub version: TokenVersion,
    pub principal: TokenPrincipal,
    /// `xms_tcdt`: when the tenant was created (Unix seconds).
    pub tenant_created_at: UnixTime,
}

impl TokenRequest {
    /// A managed-identity token for `principal` used from `host` (v1).
    ///
    /// For a system-assigned identity `host` must be the resource that owns it.
    pub fn managed_identity(
        principal: &Principal,
        host: &ResourceId,
        audience: &str,
        tenant_created_at: UnixTime,
    ) -> Result<Self, ClaimsError> {
        let PrincipalKind::ServicePrincipal { client_id, source } = &principal.kind else {
            return Err(ClaimsError::NotAServicePrincipal(principal.object_id));
        };
        let kind = match source {
            ServicePrincipalSource::SystemAssigned { host: owner } => {
                if owner != host {
                    return Err(ClaimsError::HostMismatch {
                        principal: principal.object_id,
                        owner: owner.as_str().to_string(),
                        host: host.as_str().to_string(),
                    });
                }
                TokenPrincipal::SystemAssigned { host: host.clone() }
            }
            ServicePrincipalSource::UserAssigned { identity } => TokenPrincipal::UserAssigned {
                identity: identity.clone(),
                host: host.clone(),
            },
            ServicePrincipalSource::Application => {
                return Err(ClaimsError::NotAManagedIdentity(principal.object_id))
            }
        };
        Ok(Self {
            tenant_id: principal.tenant_id,
            object_id: principal.object_id,
            client_id: *client_id,
            audience: audience.to_string(),
            version: TokenVersion::V1,
            principal: kind,
            tenant_created_at,
        })
    }

    /// A token for a service principal that authenticated with `auth` at the token
    /// endpoint (v1 by default, as Azure resources accept v1).
    pub fn application(
        principal: &Principal,
        auth: ClientAuthMethod,
        audience: &str,
        tenant_created_at: UnixTime,
    ) -> Result<Self, ClaimsError> {
        let PrincipalKind::ServicePrincipal { client_id, source } = &principal.kind else {
            return Err(ClaimsError::NotAServicePrincipal(principal.object_id));
        };
        let identity = match source {
            ServicePrincipalSource::UserAssigned { identity } => Some(identity.clone()),
            _ => None,
        };
        Ok(Self {
            tenant_id: principal.tenant_id,
            object_id: principal.object_id,
            client_id: *client_id,
            audience: audience.to_string(),
            version: TokenVersion::V1,
            principal: TokenPrincipal::Application { auth, identity },
            tenant_created_at,
        })
    }

    pub fn with_version(mut self, version: TokenVersion) -> Self {
        self.version = version;
        self
    }
}

/// The claims of an access token we issue. Member order follows Entra's tokens; absent
/// optional members are omitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aio: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appidacr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azpacr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idtyp: Option<String>,
    pub oid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rh: Option<String>,
    pub sub: String,
    pub tid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uti: Option<String>,
    pub ver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xms_az_rid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xms_mirid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xms_tcdt: Option<i64>,
}

impl AccessTokenClaims {
    /// The calling application's client id, whichever version carried it.
    pub fn client_id(&self) -> Option<&str> {
        self.appid.as_deref().or(self.azp.as_deref())
    }

    /// The resource the token was minted on behalf of (`xms_az_rid` for a user-assigned
    /// identity, else `xms_mirid`).
    pub fn host_resource(&self) -> Option<&str> {
        self.xms_az_rid.as_deref().or(self.xms_mirid.as_deref())
    }
}

/// Issuers and lifetime: everything about minting that is deployment configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPolicy {
    pub issuers: IssuerConfig,
    /// Must not exceed the key ring's [`RotationPolicy::token_lifetime_secs`](crate::keys::RotationPolicy).
    pub lifetime_secs: i64,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            issuers: IssuerConfig::default(),
            lifetime_secs: DEFAULT_LIFETIME_SECS,
        }
    }
}

impl TokenPolicy {
    /// The claims for `request`, issued at `now`.
    pub fn claims(&self, request: &TokenRequest, now: UnixTime) -> AccessTokenClaims {
        let iss = self.issuers.issuer(request.version, request.tenant_id);
        let oid = request.object_id.to_string();
        let client = request.client_id.to_string();
        let acr = match &request.principal {
            TokenPrincipal::Application { auth, .. } => auth.acr(),
            // Managed identities authenticate with a platform certificate on Azure.
            TokenPrincipal::SystemAssigned { .. } | TokenPrincipal::UserAssigned { .. } => "2",
        };
        let (mirid, az_rid) = match &request.principal {
            TokenPrincipal::SystemAssigned { host } => (Some(host.as_str().to_string()), None),
            TokenPrincipal::UserAssigned { identity, host } => (
                Some(identity.as_str().to_string()),
                Some(host.as_str().to_string()),
            ),
            TokenPrincipal::Application { identity, .. } => {
                (identity.as_ref().map(|i| i.as_str().to_string()), None)
            }
        };
        let (appid, appidacr, azp, azpacr) = match request.version {
            TokenVersion::V1 => (Some(client), Some(acr.to_string()), None, None),
            TokenVersion::V2 => (None, None, Some(client), Some(acr.to_string())),
        };
        AccessTokenClaims {
            aud: request.audience.clone(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(self.lifetime_secs.max(1)),
            aio: Some(opaque_id(request.tenant_id, 48)),
            appid,
            appidacr,
            azp,
            azpacr,
            idp: Some(iss.clone()),
            iss,
            idtyp: Some("app".to_string()),
            rh: Some(refresh_handle(request.tenant_id, request.client_id)),
            sub: oid.clone(),
            oid,
            tid: request.tenant_id.to_string(),
            uti: Some(crate::b64::url(Uuid::new_v4().as_bytes())),
            ver: request.version.as_str().to_string(),
            xms_az_rid: az_rid,
            xms_mirid: mirid,
            xms_tcdt: Some(request.tenant_created_at),
        }
    }
}

/// An opaque value shaped like Entra's `aio` (base64 of random bytes).
fn opaque_id(tenant: Uuid, random_len: usize) -> String {
    let mut bytes = vec![0u8; random_len];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes[..16].copy_from_slice(tenant.as_bytes());
    crate::b64::std(&bytes)
}

/// Shaped like Entra's `rh` (`0.` + base64url of tenant and app ids + `.`); opaque to clients.
fn refresh_handle(tenant: Uuid, client: Uuid) -> String {
    let mut bytes = Vec::with_capacity(33);
    bytes.push(0x01);
    bytes.extend_from_slice(tenant.as_bytes());
    bytes.extend_from_slice(client.as_bytes());
    format!("0.A{}.", crate::b64::url(&bytes))
}

/// Why a `scope` parameter names no resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope is empty")]
    Empty,
    #[error("scope `{0}` is not a `/.default` scope")]
    NotDefault(String),
    #[error("scope names more than one resource: `{0}` and `{1}`")]
    MultipleResources(String, String),
}

/// OIDC scopes clients may add to any request; they name no resource.
const RESERVED_SCOPES: &[&str] = &["openid", "profile", "offline_access", "email"];

/// The resource a client-credentials `scope` asks for: `R/.default` → `R`.
///
/// The scope may be a space-separated list; OIDC scopes (`openid`, `profile`,
/// `offline_access`, `email`) are ignored and exactly one `/.default` scope must remain.
/// The suffix is matched case-insensitively; everything before it is kept as sent, so
/// `https://management.azure.com//.default` (as the az CLI sends) gives
/// `https://management.azure.com/`.
pub fn scope_to_resource(scope: &str) -> Result<String, ScopeError> {
    const SUFFIX: &str = "/.default";
    let mut found: Option<&str> = None;
    for item in scope.split_whitespace() {
        if RESERVED_SCOPES.iter().any(|r| r.eq_ignore_ascii_case(item)) {
            continue;
        }
        let split = item.len().checked_sub(SUFFIX.len());
        let resource = match split {
            Some(at)
                if at > 0
                    && item.is_char_boundary(at)
                    && item[at..].eq_ignore_ascii_case(SUFFIX) =>
            {
                &item[..at]
            }
            _ => return Err(ScopeError::NotDefault(item.to_string())),
        };
        if let Some(first) = found {
            if first != resource {
                return Err(ScopeError::MultipleResources(
                    first.to_string(),
                    resource.to_string(),
                ));
            }
        }
        found = Some(resource);
    }
    found.map(str::to_string).ok_or(ScopeError::Empty)
}

/// The scope that asks for `resource`: `R` → `R/.default`.
pub fn resource_to_scope(resource: &str) -> String {
    format!("{resource}/.default")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use lanyard_domain::PrincipalKind;

    const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    fn vm() -> ResourceId {
        ResourceId::parse(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
        )
        .unwrap()
    }

    fn uai() -> ResourceId {
        ResourceId::parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1").unwrap()
    }

    fn sp(source: ServicePrincipalSource) -> Principal {
        Principal {
            object_id: Uuid::new_v4(),
            tenant_id: Uuid::parse_str(TID).unwrap(),
            display_name: "p".into(),
            kind: PrincipalKind::ServicePrincipal {
                client_id: Uuid::new_v4(),
                source,
            },
        }
    }

    #[test]
    fn scopes_and_resources() {
        let ok = |s: &str| scope_to_resource(s).unwrap();
        assert_eq!(
            ok("https://vault.azure.net/.default"),
            "https://vault.azure.net"
        );
        assert_eq!(ok("api://x/.default"), "api://x");
        assert_eq!(
            ok("https://management.azure.com//.default"),
            "https://management.azure.com/"
        );
        assert_eq!(
            ok("https://storage.azure.com/.DEFAULT offline_access openid profile"),
            "https://storage.azure.com"
        );
        assert_eq!(ok("api://x/.default api://x/.default"), "api://x");
        assert_eq!(scope_to_resource(""), Err(ScopeError::Empty));
        assert_eq!(scope_to_resource("openid profile"), Err(ScopeError::Empty));
        assert!(matches!(
            scope_to_resource("https://graph.microsoft.com/User.Read"),
            Err(ScopeError::NotDefault(_))
        ));
        assert!(matches!(
            scope_to_resource("/.default"),
            Err(ScopeError::NotDefault(_))
        ));
        assert!(matches!(
            scope_to_resource("api://a/.default api://b/.default"),
            Err(ScopeError::MultipleResources(_, _))
        ));
        for r in [
            "https://vault.azure.net",
            "https://management.azure.com/",
            "api://x",
        ] {
            assert_eq!(scope_to_resource(&resource_to_scope(r)).unwrap(), r);
        }
        assert_eq!(
            resource_to_scope("https://management.azure.com/"),
            "https://management.azure.com//.default"
        );
    }

    #[test]
    fn v1_system_assigned_claims() {
        let p = sp(ServicePrincipalSource::SystemAssigned { host: vm() });
        let req =
            TokenRequest::managed_identity(&p, &vm(), "https://vault.azure.net", 1_500_000_000)
                .unwrap();
        let c = TokenPolicy::default().claims(&req, 1_700_000_000);
        assert_eq!(c.iss, format!("https://sts.windows.net/{TID}/"));
        assert_eq!(c.idp.as_deref(), Some(c.iss.as_str()));
        assert_eq!(c.aud, "https://vault.azure.net");
        assert_eq!(
            (c.iat, c.nbf, c.exp),
            (1_700_000_000, 1_700_000_000, 1_700_086_400)
        );
        assert_eq!(c.appid, p.client_id().map(|u| u.to_string()));
        assert_eq!(c.appidacr.as_deref(), Some("2"));
        assert_eq!((c.azp.as_ref(), c.azpacr.as_ref()), (None, None));
        assert_eq!(c.idtyp.as_deref(), Some("app"));
        assert_eq!(c.oid, p.object_id.to_string());
        assert_eq!(c.sub, c.oid);
        assert_eq!(c.tid, TID);
        assert_eq!(c.ver, "1.0");
        assert_eq!(c.xms_mirid.as_deref(), Some(vm().as_str()));
        assert_eq!(c.xms_az_rid, None);
        assert_eq!(c.xms_tcdt, Some(1_500_000_000));
        assert_eq!(c.uti.as_ref().map(String::len), Some(22));
        assert!(c
            .rh
            .as_ref()
            .is_some_and(|rh| rh.starts_with("0.") && rh.ends_with('.')));

        // Exactly the members PROTOCOLS.md §2 lists.
        let json = serde_json::to_value(&c).unwrap();
        let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort_unstable();
        let mut expected = vec![
            "aio",
            "appid",
            "appidacr",
            "aud",
            "exp",
            "iat",
            "idp",
            "idtyp",
            "iss",
            "nbf",
            "oid",
            "rh",
            "sub",
            "tid",
            "uti",
            "ver",
            "xms_mirid",
            "xms_tcdt",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert!(json["iat"].is_i64() && json["xms_tcdt"].is_i64());
    }

    #[test]
    fn v1_user_assigned_claims_name_identity_and_host() {
        let p = sp(ServicePrincipalSource::UserAssigned { identity: uai() });
        let req =
            TokenRequest::managed_identity(&p, &vm(), "https://storage.azure.com/", 0).unwrap();
        let c = TokenPolicy::default().claims(&req, 10);
        assert_eq!(c.xms_mirid.as_deref(), Some(uai().as_str()));
        assert_eq!(c.xms_az_rid.as_deref(), Some(vm().as_str()));
        assert_eq!(c.host_resource(), Some(vm().as_str()));
        assert_eq!(c.aud, "https://storage.azure.com/");
    }

    #[test]
    fn system_assigned_host_must_match() {
        let p = sp(ServicePrincipalSource::SystemAssigned { host: vm() });
        assert!(matches!(
            TokenRequest::managed_identity(&p, &uai(), "a", 0),
            Err(ClaimsError::HostMismatch { .. })
        ));
        let app = sp(ServicePrincipalSource::Application);
        assert!(matches!(
            TokenRequest::managed_identity(&app, &vm(), "a", 0),
            Err(ClaimsError::NotAManagedIdentity(_))
        ));
    }

    #[test]
    fn v2_and_app_claims() {
        let p = sp(ServicePrincipalSource::Application);
        let policy = TokenPolicy {
            issuers: IssuerConfig::on_host("https://login.lanyard.localhost:8443/"),
            lifetime_secs: 3600,
        };
        let secret = TokenRequest::application(&p, ClientAuthMethod::ClientSecret, "api://x", 0)
            .unwrap()
            .with_version(TokenVersion::V2);
        let c = policy.claims(&secret, 100);
        assert_eq!(
            c.iss,
            format!("https://login.lanyard.localhost:8443/{TID}/v2.0")
        );
        assert_eq!(c.ver, "2.0");
        assert_eq!(c.azp, p.client_id().map(|u| u.to_string()));
        assert_eq!(c.azpacr.as_deref(), Some("1"));
        assert_eq!((c.appid.as_ref(), c.appidacr.as_ref()), (None, None));
        assert_eq!(c.exp, 3700);
        assert_eq!(c.xms_mirid, None);
        assert_eq!(c.client_id(), c.azp.as_deref());

        let cert =
            TokenRequest::application(&p, ClientAuthMethod::Certificate, "api://x", 0).unwrap();
        let c = policy.claims(&cert, 100);
        assert_eq!(c.appidacr.as_deref(), Some("2"));
        assert_eq!(
            c.iss,
            format!("https://login.lanyard.localhost:8443/{TID}/")
        );

        let fed = sp(ServicePrincipalSource::UserAssigned { identity: uai() });
        let req =
            TokenRequest::application(&fed, ClientAuthMethod::FederatedAssertion, "api://x", 0)
                .unwrap();
        let c = policy.claims(&req, 0);
        assert_eq!(c.appidacr.as_deref(), Some("2"));
        assert_eq!(c.xms_mirid.as_deref(), Some(uai().as_str()));
    }
}
