//! JSON shapes: what ARM returns, and what this plane keeps in a resource's body. Pure.
//!
//! A resource's stored body is exactly what GET returns. The `identity` block is stored in
//! its response shape (`type`, `principalId`, `tenantId`, `userAssignedIdentities` keyed by
//! the identity's resource id → `{principalId, clientId}`); the identity endpoints read it
//! from there to decide which identities a resource holds.

use std::collections::BTreeMap;

use lanyard_domain::{
    IdentityState, IdentityType, ResourceId, RoleAssignment, RoleDefinition, Subscription, Tenant,
};
use lanyard_storage::ActivityRecord;
use serde_json::{json, Map, Value};
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

/// ARM's timestamp form: UTC with seven fractional digits (what .NET writes, and what every
/// SDK parses).
pub fn arm_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 100
    )
}

/// ARM normalises locations: `West Europe` → `westeurope`.
pub fn normalize_location(location: &str) -> String {
    location
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// A page of a collection: `{"value": [...], "nextLink"?}`.
pub fn page(values: Vec<Value>, next_link: Option<String>) -> Value {
    let mut out = json!({ "value": values });
    if let Some(link) = next_link {
        out["nextLink"] = json!(link);
    }
    out
}

pub fn subscription(s: &Subscription) -> Value {
    json!({
        "id": format!("/subscriptions/{}", s.id),
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionId": s.id.to_string(),
        "tenantId": s.tenant_id.to_string(),
        "displayName": s.display_name,
        "state": s.state.as_str(),
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "Lanyard",
            "spendingLimit": "Off"
        }
    })
}

pub fn tenant(t: &Tenant) -> Value {
    json!({
        "id": format!("/tenants/{}", t.id),
        "tenantId": t.id.to_string(),
        "tenantCategory": "Home",
        "displayName": t.display_name,
        "defaultDomain": t.default_domain,
        "domains": [t.default_domain],
    })
}

// ---- identity blocks ----

/// A user-assigned identity as a resource's identity block lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedIdentity {
    pub id: ResourceId,
    pub principal_id: Uuid,
    pub client_id: Uuid,
}

/// The identities a resource holds, with the ids the block shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedIdentity {
    /// The object id of the system-assigned identity's principal.
    pub system: Option<Uuid>,
    /// Keyed by lower-cased identity resource id.
    pub users: BTreeMap<String, AttachedIdentity>,
}

impl ResolvedIdentity {
    pub fn identity_type(&self) -> IdentityType {
        self.state().identity_type()
    }

    pub fn state(&self) -> IdentityState {
        IdentityState {
            system_assigned: self.system.is_some(),
            user_assigned: self
                .users
                .iter()
                .map(|(k, a)| (k.clone(), a.id.clone()))
                .collect(),
        }
    }

    /// The block in ARM's response shape.
    pub fn to_json(&self, tenant: Uuid) -> Value {
        let mut out = Map::new();
        out.insert("type".into(), json!(self.identity_type().as_str()));
        if let Some(p) = self.system {
            out.insert("principalId".into(), json!(p.to_string()));
            out.insert("tenantId".into(), json!(tenant.to_string()));
        }
        if !self.users.is_empty() {
            let users: Map<String, Value> = self
                .users
                .values()
                .map(|a| {
                    (
                        a.id.to_string(),
                        json!({
                            "principalId": a.principal_id.to_string(),
                            "clientId": a.client_id.to_string(),
                        }),
                    )
                })
                .collect();
            out.insert("userAssignedIdentities".into(), Value::Object(users));
        }
        Value::Object(out)
    }

    /// Reads the stored block of a resource body.
    pub fn from_body(body: &Value) -> Self {
        let Some(identity) = body.get("identity") else {
            return Self::default();
        };
        let ty = identity
            .get("type")
            .and_then(Value::as_str)
            .and_then(|t| IdentityType::parse(t).ok())
            .unwrap_or(IdentityType::None);
        let system = if ty.has_system() {
            uuid_at(identity, "principalId")
        } else {
            None
        };
        let mut users = BTreeMap::new();
        if ty.has_user() {
            if let Some(map) = identity
                .get("userAssignedIdentities")
                .and_then(Value::as_object)
            {
                for (k, v) in map {
                    let (Ok(id), Some(principal_id), Some(client_id)) = (
                        ResourceId::parse(k),
                        uuid_at(v, "principalId"),
                        uuid_at(v, "clientId"),
                    ) else {
                        continue;
                    };
                    users.insert(
                        id.key().to_string(),
                        AttachedIdentity {
                            id,
                            principal_id,
                            client_id,
                        },
                    );
                }
            }
        }
        Self { system, users }
    }
}

/// The UUID at `value[key]`, if it is one.
pub fn uuid_at(value: &Value, key: &str) -> Option<Uuid> {
    value
        .get(key)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// The principal and client ids of a user-assigned identity's stored body.
pub fn uai_ids(body: &Value) -> Option<(Uuid, Uuid)> {
    let props = body.get("properties")?;
    Some((uuid_at(props, "principalId")?, uuid_at(props, "clientId")?))
}

/// RFC 7386 JSON merge patch: objects merge, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

// ---- role definitions and assignments ----

pub fn role_definition(role: &RoleDefinition, subscription: Option<&str>) -> Value {
    json!({
        "id": role.arm_id(subscription),
        "name": role.id.to_string(),
        "type": "Microsoft.Authorization/roleDefinitions",
        "properties": {
            "roleName": role.role_name,
            "type": role.role_type.as_str(),
            "description": role.description,
            "assignableScopes": role.assignable_scopes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "permissions": role.permissions,
        }
    })
}

pub fn role_assignment(a: &RoleAssignment) -> Value {
    let role = role_definition_id(a.role_definition_id, a.scope.subscription_id());
    json!({
        "id": a.resource_id().to_string(),
        "name": a.id.to_string(),
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": role,
            "principalId": a.principal_id.to_string(),
            "principalType": a.principal_type.as_str(),
            "scope": a.scope.to_string(),
            "description": a.description,
            "condition": a.condition,
            "conditionVersion": a.condition_version,
            "createdOn": arm_time(a.created_on),
            "updatedOn": arm_time(a.updated_on),
            "createdBy": a.created_by.map(|u| u.to_string()),
            "updatedBy": a.updated_by.map(|u| u.to_string()),
            "delegatedManagedIdentityResourceId": null,
        }
    })
}

/// A role definition's id as ARM writes it, seen from `subscription` (or from the root).
pub fn role_definition_id(id: Uuid, subscription: Option<&str>) -> String {
    match subscription {
        Some(s) => {
            format!("/subscriptions/{s}/providers/Microsoft.Authorization/roleDefinitions/{id}")
        }
        None => format!("/providers/Microsoft.Authorization/roleDefinitions/{id}"),
    }
}

// ---- activity log ----

fn localized(value: &str) -> Value {
    json!({ "value": value, "localizedValue": value })
}

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "NoContent",
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        _ => "Other",
    }
}

/// Keys of a stored activity body that are this plane's, not a request's: the error of a
/// failed write, and a request body that had to be wrapped to keep them unambiguous.
const STATUS_MESSAGE: &str = "lanyard:statusMessage";
const REQUEST_BODY: &str = "lanyard:requestBody";
/// The longest error message an activity record keeps.
const MAX_STATUS_MESSAGE: usize = 4096;

/// A request body as an activity record keeps it: itself, unless it could be mistaken for
/// the plane's own keys, in which case it is wrapped.
pub fn logged_request(body: Value) -> Value {
    let reserved = body
        .as_object()
        .is_some_and(|o| o.contains_key(STATUS_MESSAGE) || o.contains_key(REQUEST_BODY));
    if reserved {
        json!({ REQUEST_BODY: body })
    } else {
        body
    }
}

/// The stored body of a failed write's activity record: its error, no request body.
pub fn failure_body(code: &str, message: &str) -> Value {
    let mut message = message.to_string();
    if message.len() > MAX_STATUS_MESSAGE {
        let mut end = MAX_STATUS_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    json!({ STATUS_MESSAGE: { "error": { "code": code, "message": message } } })
}

/// What a stored activity body holds: (request body, status message).
fn activity_body(body: &Value) -> (Option<&Value>, Option<&Value>) {
    match body.as_object() {
        Some(o) if o.contains_key(STATUS_MESSAGE) || o.contains_key(REQUEST_BODY) => {
            (o.get(REQUEST_BODY), o.get(STATUS_MESSAGE))
        }
        _ => (Some(body), None),
    }
}

/// An activity record in Azure Monitor's `EventData` shape. A failed write carries its error
/// in `properties.statusMessage` as Azure writes it: the JSON text of `{"error": {code,
/// message}}`.
pub fn activity_event(r: &ActivityRecord, tenant: Uuid) -> Value {
    let failed = r.status != "Succeeded";
    let resource_type = r.scope.resource_type();
    let provider = resource_type
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let ticks = (r.time.unix_timestamp_nanos() / 100) + 621_355_968_000_000_000;
    let sub_status = status_text(r.http_status);
    let mut properties = json!({
        "statusCode": sub_status,
        "eventCategory": "Administrative",
        "entity": r.scope.to_string(),
        "message": r.operation,
        "hierarchy": "",
    });
    if let Some(body) = &r.body {
        let (request, status) = activity_body(body);
        if let Some(request) = request {
            properties["requestbody"] = json!(request.to_string());
        }
        if let Some(status) = status {
            properties["statusMessage"] = json!(status.to_string());
        }
    }
    json!({
        "authorization": { "action": r.operation, "scope": r.scope.to_string() },
        "caller": r.caller.map(|c| c.to_string()),
        "channels": "Operation",
        "claims": {},
        "correlationId": r.correlation_id,
        "description": "",
        "eventDataId": r.id.to_string(),
        "eventName": { "value": "EndRequest", "localizedValue": "End request" },
        "category": localized("Administrative"),
        "eventTimestamp": arm_time(r.time),
        "id": format!("{}/events/{}/ticks/{ticks}", r.scope, r.id),
        "level": if failed { "Error" } else { "Informational" },
        "operationId": r.id.to_string(),
        "operationName": localized(&r.operation),
        "resourceGroupName": r.scope.resource_group_name(),
        "resourceProviderName": localized(&provider),
        "resourceType": localized(&resource_type),
        "resourceId": r.scope.to_string(),
        "status": localized(&r.status),
        "subStatus": {
            "value": sub_status,
            "localizedValue": format!("{sub_status} (HTTP Status Code: {})", r.http_status),
        },
        "submissionTimestamp": arm_time(r.time),
        "subscriptionId": r.scope.subscription_id(),
        "tenantId": tenant.to_string(),
        "properties": properties,
        "relatedEvents": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_seven_fraction_digits() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(arm_time(t), "2023-11-14T22:13:20.1234567Z");
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut target, &json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(target, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }

    #[test]
    fn identity_blocks_round_trip() {
        let uai = ResourceId::parse("/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u").unwrap();
        let tenant = Uuid::new_v4();
        let mut resolved = ResolvedIdentity {
            system: Some(Uuid::new_v4()),
            users: BTreeMap::new(),
        };
        resolved.users.insert(
            uai.key().to_string(),
            AttachedIdentity {
                id: uai.clone(),
                principal_id: Uuid::new_v4(),
                client_id: Uuid::new_v4(),
            },
        );
        let block = resolved.to_json(tenant);
        assert_eq!(block["type"], "SystemAssigned, UserAssigned");
        assert_eq!(block["tenantId"], tenant.to_string());
        assert!(block["userAssignedIdentities"][uai.as_str()].is_object());
        let back = ResolvedIdentity::from_body(&json!({ "identity": block }));
        assert_eq!(back, resolved);
        assert_eq!(
            ResolvedIdentity::from_body(&json!({"identity": {"type": "None"}})),
            ResolvedIdentity::default()
        );
        assert_eq!(
            ResolvedIdentity::default().to_json(tenant),
            json!({"type": "None"})
        );
    }

    #[test]
    fn failed_writes_carry_their_error() {
        let record = |body| ActivityRecord {
            id: Uuid::new_v4(),
            time: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            caller: None,
            operation: "Microsoft.Compute/virtualMachines/write".into(),
            scope: ResourceId::parse("/subscriptions/s/resourceGroups/rg").unwrap(),
            status: "Failed".into(),
            http_status: 409,
            correlation_id: "c".into(),
            body: Some(body),
        };
        let e = activity_event(
            &record(failure_body("InvalidResourceLocation", "in 'westus'")),
            Uuid::nil(),
        );
        let status: Value =
            serde_json::from_str(e["properties"]["statusMessage"].as_str().unwrap()).unwrap();
        assert_eq!(
            status,
            json!({"error": {"code": "InvalidResourceLocation", "message": "in 'westus'"}})
        );
        assert!(e["properties"].get("requestbody").is_none());
        assert_eq!(e["subStatus"]["value"], "Conflict");
        assert_eq!(e["level"], "Error");
        // Request bodies of role assignments stay as they were, and one that looks like the
        // plane's own keys cannot pass for an error.
        let plain = json!({"properties": {"principalId": "p"}});
        let e = activity_event(&record(logged_request(plain.clone())), Uuid::nil());
        assert_eq!(e["properties"]["requestbody"], plain.to_string());
        let forged = json!({ STATUS_MESSAGE: "x" });
        let e = activity_event(&record(logged_request(forged.clone())), Uuid::nil());
        assert_eq!(e["properties"]["requestbody"], forged.to_string());
        assert!(e["properties"].get("statusMessage").is_none());
        let long = failure_body("C", &"é".repeat(MAX_STATUS_MESSAGE));
        let m = long[STATUS_MESSAGE]["error"]["message"].as_str().unwrap();
        assert!(m.len() <= MAX_STATUS_MESSAGE + '…'.len_utf8());
    }

    #[test]
    fn locations_are_normalised() {
        assert_eq!(normalize_location("West Europe"), "westeurope");
    }
}
