//! Workloads that hold managed identities (VMs, web apps): creating them with identities,
//! assigning and removing identities, and giving the system identity a role.

use anyhow::anyhow;
use lanyard_domain::ResourceId;
use serde_json::{json, Value};

use super::identity_block::{self, Held};
use super::rbac::{self, Principal};
use super::resources::{self, Ids, Kind, IDENTITY};
use crate::client::Connection;

/// The token `--identities` and `--assign-identity` use for the system-assigned identity.
pub const SYSTEM: &str = "[system]";

/// Identities named on a command line: the system one and user-assigned identity ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identities {
    pub system: bool,
    pub user: Vec<String>,
}

impl Identities {
    /// Only the system-assigned identity.
    pub fn system() -> Self {
        Self {
            system: true,
            user: Vec::new(),
        }
    }

    /// From `[system]` and identity names (in `group`) or ids; nothing means the system
    /// identity, as in `az`.
    pub fn parse(ids: &Ids<'_>, group: &str, given: &[String]) -> anyhow::Result<Self> {
        if given.is_empty() {
            return Ok(Self::system());
        }
        let mut out = Self::default();
        for g in given {
            if g.eq_ignore_ascii_case(SYSTEM) {
                out.system = true;
            } else {
                let id = ids.resource_or_name(IDENTITY, Some(group), g)?;
                out.user.push(id.as_str().to_string());
            }
        }
        Ok(out)
    }
}

/// Creates a workload with `properties` and, when given, identities.
#[allow(clippy::too_many_arguments)]
pub async fn create(
    conn: &Connection,
    kind: Kind,
    group: &str,
    name: &str,
    location: &str,
    properties: Value,
    identities: Option<&Identities>,
    tags: &Value,
) -> anyhow::Result<Value> {
    let mut body = json!({ "location": location, "properties": properties, "tags": tags });
    if let Some(i) = identities {
        body["identity"] = identity_block::assign(&Held::default(), i.system, &i.user);
    }
    let id = Ids::of(conn).resource(kind, group, name);
    resources::put(conn, kind, &id, &body).await
}

/// Adds identities to a workload; returns the resource as updated.
pub async fn assign(
    conn: &Connection,
    kind: Kind,
    id: &ResourceId,
    identities: &Identities,
) -> anyhow::Result<Value> {
    let current = resources::get(conn, kind, id).await?;
    let held = Held::of(&current["identity"]);
    let block = identity_block::assign(&held, identities.system, &identities.user);
    resources::patch(conn, kind, id, &json!({ "identity": block })).await
}

/// Removes identities from a workload; returns the resource as updated.
pub async fn remove(
    conn: &Connection,
    kind: Kind,
    id: &ResourceId,
    identities: &Identities,
) -> anyhow::Result<Value> {
    let current = resources::get(conn, kind, id).await?;
    let held = Held::of(&current["identity"]);
    let block = identity_block::remove(&held, identities.system, &identities.user)?;
    resources::patch(conn, kind, id, &json!({ "identity": block })).await
}

/// Gives a workload's system-assigned identity `role` at `scope`.
pub async fn grant_system(
    conn: &Connection,
    resource: &Value,
    role: &str,
    scope: &str,
) -> anyhow::Result<Value> {
    let principal = resource["identity"]["principalId"].as_str().ok_or_else(|| {
        anyhow!("--scope gives a role to the system-assigned identity, which the resource does not have")
    })?;
    let principal = Principal {
        object_id: principal.to_string(),
        principal_type: Some("ServicePrincipal".into()),
    };
    rbac::grant(conn, &principal, role, scope).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_on_the_command_line() {
        let ids = Ids { subscription: "s" };
        assert_eq!(
            Identities::parse(&ids, "rg", &[]).unwrap(),
            Identities::system()
        );
        let given = ["[system]".to_string(), "ua1".to_string(), "/subscriptions/s/resourceGroups/other/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ua2".to_string()];
        let parsed = Identities::parse(&ids, "rg", &given).unwrap();
        assert!(parsed.system);
        assert_eq!(
            parsed.user,
            [
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ua1",
                "/subscriptions/s/resourceGroups/other/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ua2",
            ]
        );
        let user_only = Identities::parse(&ids, "rg", &["ua1".to_string()]).unwrap();
        assert!(!user_only.system);
    }
}
