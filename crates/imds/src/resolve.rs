//! Which identity a request means: the identities attached to a resource, read from its
//! stored `identity` block, and the selection rules (pure).

use serde_json::Value;
use uuid::Uuid;

use lanyard_domain::ResourceId;

use crate::protocol::{Refusal, Selector};

/// An identity attached to a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub principal_id: Uuid,
    /// Filled for user-assigned identities from the identity block; for the system identity
    /// from its principal.
    pub client_id: Option<Uuid>,
    /// The user-assigned identity's resource id; `None` for the system identity.
    pub identity: Option<ResourceId>,
}

impl Attached {
    pub fn is_system(&self) -> bool {
        self.identity.is_none()
    }
}

/// The identities in a resource body's `identity` block.
pub fn attached_identities(body: &Value) -> Vec<Attached> {
    let mut out = Vec::new();
    let Some(identity) = body.get("identity") else {
        return out;
    };
    let ty = identity
        .get("type")
        .and_then(Value::as_str)
        .and_then(|t| lanyard_domain::IdentityType::parse(t).ok());
    let Some(ty) = ty else {
        return out;
    };
    if ty.has_system() {
        if let Some(pid) = uuid_at(identity, "principalId") {
            out.push(Attached {
                principal_id: pid,
                client_id: None,
                identity: None,
            });
        }
    }
    if ty.has_user() {
        if let Some(map) = identity
            .get("userAssignedIdentities")
            .and_then(Value::as_object)
        {
            for (id, entry) in map {
                let (Ok(rid), Some(pid)) = (ResourceId::parse(id), uuid_at(entry, "principalId"))
                else {
                    continue;
                };
                out.push(Attached {
                    principal_id: pid,
                    client_id: uuid_at(entry, "clientId"),
                    identity: Some(rid),
                });
            }
        }
    }
    out
}

fn uuid_at(v: &Value, key: &str) -> Option<Uuid> {
    v.get(key)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// Applies the selector: the default identity is the system-assigned one, or the only
/// user-assigned one when there is exactly one.
pub fn select<'a>(attached: &'a [Attached], selector: &Selector) -> Result<&'a Attached, Refusal> {
    let found = match selector {
        Selector::Default => attached.iter().find(|a| a.is_system()).or_else(|| {
            let users: Vec<&Attached> = attached.iter().filter(|a| !a.is_system()).collect();
            match users.as_slice() {
                [only] => Some(*only),
                _ => None,
            }
        }),
        Selector::ClientId(c) => {
            let c = Uuid::parse_str(c).map_err(|_| Refusal::IdentityNotFound)?;
            attached.iter().find(|a| a.client_id == Some(c))
        }
        Selector::ObjectId(o) => {
            let o = Uuid::parse_str(o).map_err(|_| Refusal::IdentityNotFound)?;
            attached.iter().find(|a| a.principal_id == o)
        }
        Selector::ResourceId(r) => {
            let r = ResourceId::parse(r).map_err(|_| Refusal::IdentityNotFound)?;
            attached.iter().find(|a| a.identity.as_ref() == Some(&r))
        }
    };
    found.ok_or(Refusal::IdentityNotFound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const UAI_A: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a";
    const UAI_B: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/b";

    fn ids() -> (Uuid, Uuid, Uuid, Uuid, Uuid) {
        (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        )
    }

    #[test]
    fn default_rule() {
        let (sys, a, ac, b, bc) = ids();
        let both = json!({"identity": {"type": "SystemAssigned, UserAssigned", "principalId": sys,
            "userAssignedIdentities": {UAI_A: {"principalId": a, "clientId": ac}, UAI_B: {"principalId": b, "clientId": bc}}}});
        let list = attached_identities(&both);
        assert_eq!(list.len(), 3);
        assert_eq!(select(&list, &Selector::Default).unwrap().principal_id, sys);
        assert_eq!(
            select(&list, &Selector::ClientId(bc.to_string()))
                .unwrap()
                .principal_id,
            b
        );
        assert_eq!(
            select(&list, &Selector::ObjectId(a.to_string()))
                .unwrap()
                .principal_id,
            a
        );
        assert_eq!(
            select(&list, &Selector::ResourceId(UAI_B.to_uppercase()))
                .unwrap()
                .principal_id,
            b
        );

        let two_users = json!({"identity": {"type": "UserAssigned",
            "userAssignedIdentities": {UAI_A: {"principalId": a, "clientId": ac}, UAI_B: {"principalId": b, "clientId": bc}}}});
        let list = attached_identities(&two_users);
        assert_eq!(
            select(&list, &Selector::Default),
            Err(Refusal::IdentityNotFound)
        );

        let one_user = json!({"identity": {"type": "UserAssigned",
            "userAssignedIdentities": {UAI_A: {"principalId": a, "clientId": ac}}}});
        let list = attached_identities(&one_user);
        assert_eq!(select(&list, &Selector::Default).unwrap().principal_id, a);
    }

    #[test]
    fn nothing_attached_means_not_found() {
        let none = json!({"identity": {"type": "None"}});
        assert!(attached_identities(&none).is_empty());
        assert!(attached_identities(&json!({})).is_empty());
        assert_eq!(
            select(&[], &Selector::Default),
            Err(Refusal::IdentityNotFound)
        );
        assert_eq!(
            select(&[], &Selector::ClientId("not-a-guid".into())),
            Err(Refusal::IdentityNotFound)
        );
    }
}
