//! Reshaping service answers the way `az` prints them, so `--query` expressions written for
//! `az` work here. Pure.
//!
//! - Every ARM resource gets `resourceGroup`, taken from its id.
//! - Identities, federated credentials, role definitions and role assignments have their
//!   `properties` lifted to the top (`az identity create --query principalId`).
//! - `vm identity assign|show` and `webapp identity ...` answer with the identity block in
//!   `az`'s shapes.
//! - Secrets get their `name`, from their id.

use lanyard_domain::ResourceId;
use serde_json::{json, Map, Value};

/// `resourceGroup` from `id`, when it has one.
pub fn with_resource_group(mut value: Value) -> Value {
    let group = value["id"]
        .as_str()
        .and_then(|id| ResourceId::parse(id).ok())
        .and_then(|id| id.resource_group_name().map(str::to_string));
    if let (Some(group), Some(map)) = (group, value.as_object_mut()) {
        map.entry("resourceGroup").or_insert(Value::String(group));
    }
    value
}

/// `properties` merged into the top level (fields already there win).
pub fn flattened(value: Value) -> Value {
    let Value::Object(mut map) = value else {
        return value;
    };
    if let Some(Value::Object(props)) = map.remove("properties") {
        for (k, v) in props {
            map.entry(k).or_insert(v);
        }
    }
    with_resource_group(Value::Object(map))
}

/// A role definition as `az role definition list` shows it: flattened, with the role's
/// `properties.type` (`BuiltInRole`, `CustomRole`) as `roleType`.
pub fn role_definition(mut value: Value) -> Value {
    if let Some(props) = value.get_mut("properties").and_then(Value::as_object_mut) {
        if let Some(t) = props.remove("type") {
            props.insert("roleType".into(), t);
        }
    }
    flattened(value)
}

/// A list, each item through `f`.
pub fn each(items: Vec<Value>, f: fn(Value) -> Value) -> Value {
    Value::Array(items.into_iter().map(f).collect())
}

/// `az vm identity assign|show`: `{systemAssignedIdentity, userAssignedIdentities}`.
pub fn vm_identity(identity: &Value) -> Value {
    let system = identity["principalId"].as_str().unwrap_or_default();
    json!({
        "systemAssignedIdentity": system,
        "userAssignedIdentities": user_identities(identity),
    })
}

/// `az webapp identity assign|show`: the identity block itself.
pub fn webapp_identity(identity: &Value) -> Value {
    if identity.is_null() {
        return Value::Null;
    }
    json!({
        "principalId": identity["principalId"],
        "tenantId": identity["tenantId"],
        "type": identity["type"],
        "userAssignedIdentities": user_identities(identity),
    })
}

fn user_identities(identity: &Value) -> Value {
    match identity["userAssignedIdentities"].as_object() {
        Some(map) if !map.is_empty() => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        json!({"clientId": v["clientId"], "principalId": v["principalId"]}),
                    )
                })
                .collect::<Map<String, Value>>(),
        ),
        _ => Value::Null,
    }
}

/// A secret bundle or item with `name` (from `https://{vault}/secrets/{name}[/{version}]`).
pub fn secret(mut value: Value) -> Value {
    let name = value["id"]
        .as_str()
        .or_else(|| value["recoveryId"].as_str())
        .and_then(|id| {
            let path = id.split_once("://").map_or(id, |(_, rest)| rest);
            let mut parts = path.split('/').skip(1);
            match (parts.next(), parts.next()) {
                (Some("secrets" | "deletedsecrets"), Some(name)) => Some(name.to_string()),
                _ => None,
            }
        });
    if let (Some(name), Some(map)) = (name, value.as_object_mut()) {
        map.entry("name").or_insert(Value::String(name));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattening_lifts_properties_and_adds_the_group() {
        let v = json!({
            "id": "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u1",
            "name": "u1",
            "properties": {"principalId": "p", "clientId": "c", "name": "ignored"}
        });
        let f = flattened(v);
        assert_eq!(f["principalId"], "p");
        assert_eq!(f["name"], "u1");
        assert_eq!(f["resourceGroup"], "rg1");
        assert!(f.get("properties").is_none());
    }

    #[test]
    fn role_definitions_say_their_role_type() {
        let v = json!({"id": "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/g",
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {"roleName": "r", "type": "CustomRole"}});
        let f = role_definition(v);
        assert_eq!(f["roleType"], "CustomRole");
        assert_eq!(f["type"], "Microsoft.Authorization/roleDefinitions");
        assert!(f.get("resourceGroup").is_none());
    }

    #[test]
    fn identity_shapes() {
        let block = json!({
            "type": "SystemAssigned, UserAssigned", "principalId": "sp", "tenantId": "t",
            "userAssignedIdentities": {"/u1": {"principalId": "up", "clientId": "uc"}}
        });
        let vm = vm_identity(&block);
        assert_eq!(vm["systemAssignedIdentity"], "sp");
        assert_eq!(vm["userAssignedIdentities"]["/u1"]["clientId"], "uc");
        assert_eq!(
            webapp_identity(&block)["type"],
            "SystemAssigned, UserAssigned"
        );
        assert!(vm_identity(&Value::Null)["userAssignedIdentities"].is_null());
    }

    #[test]
    fn secrets_get_their_name() {
        let s = secret(
            json!({"id": "https://kv1.vault.lanyard.localhost:8443/secrets/db-password/abc"}),
        );
        assert_eq!(s["name"], "db-password");
        let d = secret(json!({"recoveryId": "https://kv1.vault.x/deletedsecrets/old"}));
        assert_eq!(d["name"], "old");
    }
}
