//! Key Vault access policies: the older, per-vault permission model, evaluated separately
//! from RBAC (a vault uses one model or the other).
//!
//! An entry applies to a caller when its tenant matches and its `objectId` is the caller
//! or one of the caller's groups; an entry with an `applicationId` (a compound identity)
//! applies only when the caller's token was issued to that application.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// One entry of a vault's `properties.accessPolicies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicy {
    pub tenant_id: Uuid,
    pub object_id: Uuid,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    pub application_id: Option<Uuid>,
    #[serde(default)]
    pub permissions: PolicyPermissions,
}

/// `permissions` of an access policy entry. Names are matched case-insensitively; `all`
/// grants every permission of its list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPermissions {
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub certificates: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage: Vec<String>,
}

/// ARM clients send `"applicationId": ""` as often as `null`.
fn empty_as_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Uuid>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => Uuid::parse_str(s.trim())
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// Which permission list of an entry a request is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PolicyCollection {
    Keys,
    Secrets,
    Certificates,
    Storage,
}

impl PolicyCollection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keys => "keys",
            Self::Secrets => "secrets",
            Self::Certificates => "certificates",
            Self::Storage => "storage",
        }
    }

    fn list(self, p: &PolicyPermissions) -> &[String] {
        match self {
            Self::Keys => &p.keys,
            Self::Secrets => &p.secrets,
            Self::Certificates => &p.certificates,
            Self::Storage => &p.storage,
        }
    }
}

/// The secret permissions an access policy can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretPermission {
    Get,
    List,
    Set,
    Delete,
    Recover,
    Purge,
    Backup,
    Restore,
}

impl SecretPermission {
    pub const ALL: [Self; 8] = [
        Self::Get,
        Self::List,
        Self::Set,
        Self::Delete,
        Self::Recover,
        Self::Purge,
        Self::Backup,
        Self::Restore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Set => "set",
            Self::Delete => "delete",
            Self::Recover => "recover",
            Self::Purge => "purge",
            Self::Backup => "backup",
            Self::Restore => "restore",
        }
    }
}

impl fmt::Display for SecretPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a secret permission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a secret permission (expected one of get, list, set, delete, recover, purge, backup, restore, all)")]
pub struct UnknownSecretPermission(pub String);

impl FromStr for SecretPermission {
    type Err = UnknownSecretPermission;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownSecretPermission(s.to_string()))
    }
}

/// Who is asking, as the token says.
#[derive(Debug, Clone, Copy)]
pub struct PolicyCaller<'a> {
    pub tenant_id: Uuid,
    /// `oid`.
    pub object_id: Uuid,
    /// Groups the caller belongs to (transitively).
    pub groups: &'a [Uuid],
    /// `appid`/`azp`: the application the token was issued to.
    pub application_id: Option<Uuid>,
}

/// The outcome of an access-policy check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyDecision {
    Allow(PolicyGrant),
    Deny(PolicyDenial),
}

impl PolicyDecision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow(_))
    }

    pub fn explain(&self) -> String {
        match self {
            Self::Allow(g) => g.to_string(),
            Self::Deny(d) => d.explain(),
        }
    }
}

impl fmt::Display for PolicyDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explain())
    }
}

/// The entry that allowed a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyGrant {
    /// Position of the entry in the vault's `accessPolicies`.
    pub policy_index: usize,
    /// The entry's `objectId`: the caller, or a group of the caller.
    pub object_id: Uuid,
    pub via_group: bool,
    pub collection: PolicyCollection,
    pub permission: String,
    /// The list item that matched (the permission itself or `all`).
    pub granted_by: String,
}

impl fmt::Display for PolicyGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let via = if self.via_group {
            format!(" for group `{}`", self.object_id)
        } else {
            format!(" for `{}`", self.object_id)
        };
        write!(
            f,
            "access policy #{}{via} grants {} `{}` through `{}`",
            self.policy_index,
            self.collection.as_str(),
            self.permission,
            self.granted_by
        )
    }
}

/// Why no entry allowed a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDenial {
    pub object_id: Uuid,
    pub application_id: Option<Uuid>,
    pub vault_name: String,
    pub collection: PolicyCollection,
    pub permission: String,
    /// Entries that name the caller or its groups but do not grant the permission.
    pub near: Vec<PolicyMiss>,
}

/// An entry naming the caller (or a group of it) that did not allow the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyMiss {
    pub policy_index: usize,
    pub object_id: Uuid,
    pub reason: PolicyMissReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyMissReason {
    /// The entry applies but its list lacks the permission; `granted` is what it has.
    Lacks { granted: Vec<String> },
    /// The entry is for another tenant.
    OtherTenant { tenant_id: Uuid },
    /// The entry is a compound identity for another application.
    OtherApplication { application_id: Uuid },
}

impl PolicyDenial {
    /// Azure's wording: "The user, group or application 'appid=…;oid=…' does not have
    /// secrets get permission on key vault '…'".
    pub fn azure_message(&self) -> String {
        let appid = self
            .application_id
            .map(|a| a.to_string())
            .unwrap_or_default();
        format!(
            "The user, group or application 'appid={appid};oid={}' does not have {} {} permission on key vault '{}'",
            self.object_id,
            self.collection.as_str(),
            self.permission.to_ascii_lowercase(),
            self.vault_name
        )
    }

    /// The Azure message followed by what the vault's access policies do say about the caller.
    pub fn explain(&self) -> String {
        let mut out = self.azure_message();
        if self.near.is_empty() {
            out.push_str(&format!(
                ". No access policy of `{}` names `{}` or any of its groups",
                self.vault_name, self.object_id
            ));
            return out;
        }
        let parts: Vec<String> = self
            .near
            .iter()
            .map(|m| {
                let who = if m.object_id == self.object_id {
                    format!("`{}`", m.object_id)
                } else {
                    format!("group `{}`", m.object_id)
                };
                match &m.reason {
                    PolicyMissReason::Lacks { granted } if granted.is_empty() => format!(
                        "access policy #{} for {who} grants no {} permissions",
                        m.policy_index,
                        self.collection.as_str()
                    ),
                    PolicyMissReason::Lacks { granted } => format!(
                        "access policy #{} for {who} grants {} {} but not {}",
                        m.policy_index,
                        self.collection.as_str(),
                        granted.join(", "),
                        self.permission.to_ascii_lowercase()
                    ),
                    PolicyMissReason::OtherTenant { tenant_id } => format!(
                        "access policy #{} for {who} is for tenant `{tenant_id}`",
                        m.policy_index
                    ),
                    PolicyMissReason::OtherApplication { application_id } => format!(
                        "access policy #{} for {who} applies only through application `{application_id}`",
                        m.policy_index
                    ),
                }
            })
            .collect();
        out.push_str(". ");
        out.push_str(&parts.join("; "));
        out
    }
}

impl fmt::Display for PolicyDenial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.azure_message())
    }
}

/// Whether `caller` holds `permission` in the `collection` list of any applicable entry.
pub fn check_access_policy(
    policies: &[AccessPolicy],
    caller: &PolicyCaller<'_>,
    collection: PolicyCollection,
    permission: &str,
    vault_name: &str,
) -> PolicyDecision {
    let mut near = Vec::new();
    for (i, policy) in policies.iter().enumerate() {
        let is_self = policy.object_id == caller.object_id;
        if !is_self && !caller.groups.contains(&policy.object_id) {
            continue;
        }
        let miss = |reason| PolicyMiss {
            policy_index: i,
            object_id: policy.object_id,
            reason,
        };
        if policy.tenant_id != caller.tenant_id {
            near.push(miss(PolicyMissReason::OtherTenant {
                tenant_id: policy.tenant_id,
            }));
            continue;
        }
        if let Some(app) = policy.application_id {
            if caller.application_id != Some(app) {
                near.push(miss(PolicyMissReason::OtherApplication {
                    application_id: app,
                }));
                continue;
            }
        }
        let list = collection.list(&policy.permissions);
        let hit = list
            .iter()
            .find(|p| p.eq_ignore_ascii_case(permission))
            .or_else(|| list.iter().find(|p| p.eq_ignore_ascii_case("all")));
        match hit {
            Some(granted_by) => {
                return PolicyDecision::Allow(PolicyGrant {
                    policy_index: i,
                    object_id: policy.object_id,
                    via_group: !is_self,
                    collection,
                    permission: permission.to_string(),
                    granted_by: granted_by.clone(),
                })
            }
            None => near.push(miss(PolicyMissReason::Lacks {
                granted: list.iter().map(|p| p.to_ascii_lowercase()).collect(),
            })),
        }
    }
    PolicyDecision::Deny(PolicyDenial {
        object_id: caller.object_id,
        application_id: caller.application_id,
        vault_name: vault_name.to_string(),
        collection,
        permission: permission.to_string(),
        near,
    })
}

/// [`check_access_policy`] for a secret permission.
pub fn check_secret_permission(
    policies: &[AccessPolicy],
    caller: &PolicyCaller<'_>,
    permission: SecretPermission,
    vault_name: &str,
) -> PolicyDecision {
    check_access_policy(
        policies,
        caller,
        PolicyCollection::Secrets,
        permission.as_str(),
        vault_name,
    )
}
