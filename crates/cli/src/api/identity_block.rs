//! The `identity` block a PATCH sends to assign or remove identities, computed from the
//! resource's current block. Pure.
//!
//! ARM merges `userAssignedIdentities` on PATCH (`{}` adds or keeps, `null` removes) but
//! takes `type` as given, so `type` is always the whole new state.

use std::collections::BTreeMap;

use anyhow::bail;
use serde_json::{json, Map, Value};

/// What a resource holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    pub system: bool,
    /// Lower-cased identity id → the id as the server wrote it.
    pub user: BTreeMap<String, String>,
}

impl Held {
    /// From a resource's `identity` block (absent or `null` means nothing).
    pub fn of(identity: &Value) -> Self {
        let kind = identity["type"].as_str().unwrap_or("None");
        let system = kind
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("SystemAssigned"));
        let user = identity["userAssignedIdentities"]
            .as_object()
            .map(|m| {
                m.keys()
                    .map(|k| (k.to_ascii_lowercase(), k.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Self { system, user }
    }

    fn kind(system: bool, user: bool) -> &'static str {
        match (system, user) {
            (true, true) => "SystemAssigned, UserAssigned",
            (true, false) => "SystemAssigned",
            (false, true) => "UserAssigned",
            (false, false) => "None",
        }
    }
}

/// The block that adds the system identity (when `system`) and `user` identity ids.
pub fn assign(held: &Held, system: bool, user: &[String]) -> Value {
    let mut all = held.user.clone();
    for id in user {
        all.entry(id.to_ascii_lowercase())
            .or_insert_with(|| id.clone());
    }
    let kind = Held::kind(held.system || system, !all.is_empty());
    let mut block = json!({ "type": kind });
    if !all.is_empty() {
        let map: Map<String, Value> = all.values().map(|id| (id.clone(), json!({}))).collect();
        block["userAssignedIdentities"] = Value::Object(map);
    }
    block
}

/// The block that removes the system identity (when `system`) and `user` identity ids.
/// Removing something the resource does not hold is an error, as in `az`.
pub fn remove(held: &Held, system: bool, user: &[String]) -> anyhow::Result<Value> {
    if system && !held.system {
        bail!("the resource has no system-assigned identity to remove");
    }
    let mut removed = Vec::new();
    for id in user {
        match held.user.get(&id.to_ascii_lowercase()) {
            Some(written) => removed.push(written.clone()),
            None => bail!("the identity `{id}` is not assigned to the resource"),
        }
    }
    let left = held.user.len() - removed.len();
    let kind = Held::kind(held.system && !system, left > 0);
    let mut block = json!({ "type": kind });
    if left > 0 && !removed.is_empty() {
        let map: Map<String, Value> = removed.into_iter().map(|id| (id, Value::Null)).collect();
        block["userAssignedIdentities"] = Value::Object(map);
    }
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u1";
    const U2: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u2";

    #[test]
    fn reads_every_spelling_of_type() {
        let h = Held::of(
            &json!({"type": "SystemAssigned,UserAssigned", "userAssignedIdentities": {U1: {}}}),
        );
        assert!(h.system);
        assert_eq!(h.user.len(), 1);
        assert_eq!(Held::of(&Value::Null), Held::default());
    }

    #[test]
    fn assigning_adds_to_what_is_held() {
        let held = Held::of(&json!({"type": "UserAssigned", "userAssignedIdentities": {U1: {}}}));
        let block = assign(&held, true, &[U2.to_ascii_uppercase()]);
        assert_eq!(block["type"], "SystemAssigned, UserAssigned");
        let map = block["userAssignedIdentities"].as_object().unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(
            assign(&Held::default(), true, &[])["type"],
            "SystemAssigned"
        );
        // Assigning what is held changes nothing and duplicates nothing.
        let again = assign(&held, false, &[U1.to_string()]);
        assert_eq!(
            again["userAssignedIdentities"].as_object().unwrap().len(),
            1
        );
    }

    #[test]
    fn removing_leaves_the_rest() {
        let held = Held::of(
            &json!({"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {U1: {}, U2: {}}}),
        );
        let block = remove(&held, false, &[U1.to_string()]).unwrap();
        assert_eq!(block["type"], "SystemAssigned, UserAssigned");
        assert!(block["userAssignedIdentities"][U1].is_null());
        let block = remove(&held, true, &[U1.to_string(), U2.to_string()]).unwrap();
        assert_eq!(block, json!({"type": "None"}));
        let block = remove(&held, false, &[U1.to_string(), U2.to_string()]).unwrap();
        assert_eq!(block, json!({"type": "SystemAssigned"}));
        assert!(remove(&Held::default(), true, &[]).is_err());
        assert!(remove(&held, false, &["/x".to_string()]).is_err());
    }
}
