//! Custom role definitions: create or replace, delete. Built-in roles cannot be changed.
//!
//! A custom role is named by its GUID alone: the scope in the URL addresses it but is not
//! part of it, so the same role may be reached through any scope. Who may change it is
//! therefore decided by the role itself (see `api::roles`): the URL's scope, every
//! assignable scope of the role as stored, and every new one. A replacement may not leave
//! an existing assignment of the role outside its assignable scopes ([`put`]).

use lanyard_domain::{builtin, Permission, ResourceId, RoleDefinition, RoleType};
use lanyard_storage::{Batch, Change};
use serde_json::Value;
use uuid::Uuid;

use super::{object, properties, Context, Plan};
use crate::errors::ArmError;
use crate::shape;

const WRITE: &str = "Microsoft.Authorization/roleDefinitions/write";
const DELETE: &str = "Microsoft.Authorization/roleDefinitions/delete";

/// `{scope}/providers/Microsoft.Authorization/roleDefinitions/{id}`.
pub fn definition_id(scope: &ResourceId, id: Uuid) -> ResourceId {
    scope.with_provider(
        "Microsoft.Authorization",
        "roleDefinitions",
        &id.to_string(),
    )
}

/// Reads the GUID of a role definition name.
pub fn parse_name(name: &str) -> Result<Uuid, ArmError> {
    Uuid::parse_str(name).map_err(|_| ArmError::InvalidRoleDefinitionId(name.to_string()))
}

/// PUT: a custom role named `name` (a GUID). `custom` holds every custom role, to keep names
/// unique; `assigned` the scopes of the role's existing assignments, each of which must stay
/// within the new assignable scopes. Returns the plan and the role, whose assignable scopes
/// the caller must be allowed to write role definitions at (as well as those of the role
/// it replaces).
pub fn put(
    ctx: &Context<'_>,
    scope: &ResourceId,
    name: &str,
    request: &Value,
    custom: &[RoleDefinition],
    assigned: &[ResourceId],
) -> Result<(Plan, RoleDefinition), ArmError> {
    let id = parse_name(name)?;
    if let Some(b) = builtin::built_in_by_id(id) {
        return Err(ArmError::BuiltInRoleReadOnly(b.role_name));
    }
    object(request)?;
    let props = properties(request)?;
    let role_name = match props.get("roleName") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => {
            return Err(ArmError::InvalidField {
                field: "roleName",
                reason: "it is required and must be a non-empty string".into(),
            })
        }
    };
    let taken = builtin::built_in_by_name(&role_name).is_some()
        || custom
            .iter()
            .any(|r| r.id != id && r.role_name.eq_ignore_ascii_case(&role_name));
    if taken {
        return Err(ArmError::RoleDefinitionWithSameNameExists(role_name));
    }
    let description = props
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let permissions: Vec<Permission> = match props.get("permissions") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| ArmError::InvalidField {
            field: "permissions",
            reason: e.to_string(),
        })?,
    };
    let assignable_scopes = match props.get("assignableScopes") {
        None | Some(Value::Null) => vec![scope.clone()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| {
                v.as_str()
                    .and_then(|s| ResourceId::parse(s).ok())
                    .ok_or_else(|| ArmError::InvalidField {
                        field: "assignableScopes",
                        reason: format!("{v} is not a scope"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(ArmError::InvalidField {
                field: "assignableScopes",
                reason: "it must be a non-empty array of scopes".into(),
            })
        }
    };
    if assignable_scopes.iter().any(ResourceId::is_root) {
        return Err(ArmError::InvalidField {
            field: "assignableScopes",
            reason: "a custom role cannot be assignable at the root scope '/'".into(),
        });
    }
    let role = RoleDefinition {
        id,
        role_name,
        description,
        role_type: RoleType::CustomRole,
        permissions,
        assignable_scopes,
    };
    if let Some(outside) = assigned.iter().find(|s| !role.is_assignable_at(s)) {
        return Err(ArmError::RoleDefinitionAssignedOutside {
            role: role.role_name.clone(),
            scope: outside.to_string(),
        });
    }
    let mut batch = Batch::new();
    batch.push(Change::PutRoleDefinition(role.clone()));
    batch.push(ctx.activity(WRITE, &definition_id(scope, id), 201, None));
    let body = shape::role_definition(&role, scope.subscription_id());
    // The SDKs accept only 201 from this PUT, also when it replaces a role.
    Ok((Plan::new(batch, 201, Some(body)), role))
}

/// DELETE of a custom role that no assignment uses.
pub fn delete(
    ctx: &Context<'_>,
    scope: &ResourceId,
    role: &RoleDefinition,
    assignments: usize,
) -> Result<Plan, ArmError> {
    if role.role_type == RoleType::BuiltInRole {
        return Err(ArmError::BuiltInRoleReadOnly(role.role_name.clone()));
    }
    if assignments > 0 {
        return Err(ArmError::RoleDefinitionHasAssignments(
            role.role_name.clone(),
        ));
    }
    let mut batch = Batch::new();
    batch.push(Change::DeleteRoleDefinition(role.id));
    batch.push(ctx.activity(DELETE, &definition_id(scope, role.id), 200, None));
    let body = shape::role_definition(role, scope.subscription_id());
    Ok(Plan::new(batch, 200, Some(body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testing::*;
    use serde_json::json;

    #[test]
    fn custom_roles() {
        let fx = Fixture::new();
        let sub = ResourceId::parse("/subscriptions/s").unwrap();
        let id = Uuid::from_u128(7).to_string();
        let (plan, role) = with_ctx(&fx, |ctx| {
            put(ctx, &sub, &id, &json!({"properties": {"roleName": "Secret Peeker", "permissions": [{"dataActions": ["Microsoft.KeyVault/vaults/secrets/getSecret/action"]}]}}), &[], &[])
        })
        .unwrap();
        assert_eq!(plan.status, 201);
        assert_eq!(role.assignable_scopes, vec![sub.clone()]);
        let body = plan.body.unwrap();
        assert_eq!(body["properties"]["type"], "CustomRole");
        assert_eq!(
            body["id"],
            format!("/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/{id}")
        );
        let other = Uuid::from_u128(8).to_string();
        let clash = with_ctx(&fx, |ctx| {
            put(
                ctx,
                &sub,
                &other,
                &json!({"properties": {"roleName": "secret peeker"}}),
                std::slice::from_ref(&role),
                &[],
            )
        });
        assert!(matches!(
            clash,
            Err(ArmError::RoleDefinitionWithSameNameExists(_))
        ));
        let builtin_name = with_ctx(&fx, |ctx| {
            put(
                ctx,
                &sub,
                &other,
                &json!({"properties": {"roleName": "Reader"}}),
                &[],
                &[],
            )
        });
        assert!(builtin_name.is_err());
        let owner = with_ctx(&fx, |ctx| {
            put(
                ctx,
                &sub,
                "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
                &json!({"properties": {"roleName": "x"}}),
                &[],
                &[],
            )
        });
        assert!(matches!(owner, Err(ArmError::BuiltInRoleReadOnly(_))));
        assert!(matches!(
            with_ctx(&fx, |ctx| delete(ctx, &sub, &role, 1)),
            Err(ArmError::RoleDefinitionHasAssignments(_))
        ));
        let gone = with_ctx(&fx, |ctx| delete(ctx, &sub, &role, 0)).unwrap();
        assert!(gone
            .batch
            .changes
            .contains(&Change::DeleteRoleDefinition(role.id)));
    }

    #[test]
    fn a_replacement_keeps_every_assignment_within_its_assignable_scopes() {
        let fx = Fixture::new();
        let sub = ResourceId::parse("/subscriptions/s").unwrap();
        let rg = ResourceId::parse("/subscriptions/s/resourceGroups/rg1").unwrap();
        let vault = rg.with_provider("Microsoft.KeyVault", "vaults", "kv1");
        let id = Uuid::from_u128(7).to_string();
        let narrowed = json!({"properties": {"roleName": "Ops", "permissions": [{"actions": ["*"]}], "assignableScopes": [rg.as_str()]}});
        // Assigned at the subscription: narrowing to the group would leave it outside.
        let refused = with_ctx(&fx, |ctx| {
            put(ctx, &rg, &id, &narrowed, &[], std::slice::from_ref(&sub))
        });
        match refused {
            Err(e @ ArmError::RoleDefinitionAssignedOutside { .. }) => {
                assert_eq!(e.code(), "RoleDefinitionHasAssignments");
                assert_eq!(e.status(), axum::http::StatusCode::CONFLICT);
                let text = e.to_string();
                assert!(text.contains("'/subscriptions/s'"), "{text}");
                assert!(text.contains("'Ops'"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        // Assignments inside the group (at it or below, any casing) are fine.
        let upper = ResourceId::parse("/SUBSCRIPTIONS/s/resourcegroups/RG1").unwrap();
        let ok = with_ctx(&fx, |ctx| {
            put(ctx, &rg, &id, &narrowed, &[], &[upper, vault])
        });
        assert!(ok.is_ok(), "{ok:?}");
    }
}
