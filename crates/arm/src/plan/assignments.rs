//! Role assignments: create (PUT with a GUID name) and delete.
//!
//! Checks, in Azure's order: the name is a GUID; the role exists and may be assigned at the
//! scope; the principal exists in the directory (and has the `principalType` given, if any);
//! no other assignment gives the same role to the same principal at the same scope.

use lanyard_authz::check_assignable;
use lanyard_domain::role::role_definition_guid;
use lanyard_domain::{Principal, PrincipalType, ResourceId, RoleAssignment, RoleDefinition};
use lanyard_storage::{Batch, Change, Expect, ResourceRecord};
use serde_json::Value;
use uuid::Uuid;

use super::{object, properties, Context, Plan};
use crate::errors::ArmError;
use crate::shape;

const WRITE: &str = "Microsoft.Authorization/roleAssignments/write";
const DELETE: &str = "Microsoft.Authorization/roleAssignments/delete";

/// The fields of a role assignment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: Uuid,
    pub role: Uuid,
    pub principal: Uuid,
    pub principal_type: Option<PrincipalType>,
    pub description: Option<String>,
    pub condition: Option<String>,
    pub condition_version: Option<String>,
}

/// Reads the assignment name and body.
pub fn read_request(name: &str, body: &Value) -> Result<Request, ArmError> {
    let id =
        Uuid::parse_str(name).map_err(|_| ArmError::InvalidRoleAssignmentId(name.to_string()))?;
    object(body)?;
    let props = properties(body)?;
    let text = |field: &str| props.get(field).and_then(Value::as_str).map(str::to_string);
    let role_ref = text("roleDefinitionId").ok_or(ArmError::InvalidField {
        field: "roleDefinitionId",
        reason: "it is required".into(),
    })?;
    let role = role_definition_guid(&role_ref)
        .ok_or_else(|| ArmError::InvalidRoleDefinitionId(role_ref.clone()))?;
    let principal_text = text("principalId").ok_or(ArmError::InvalidField {
        field: "principalId",
        reason: "it is required".into(),
    })?;
    let principal = Uuid::parse_str(&principal_text).map_err(|_| ArmError::InvalidField {
        field: "principalId",
        reason: format!("'{principal_text}' is not a GUID"),
    })?;
    let principal_type = match text("principalType") {
        None => None,
        Some(t) => Some(PrincipalType::parse(&t).ok_or(ArmError::InvalidField {
            field: "principalType",
            reason: format!(
                "'{t}' is not one of User, Group, ServicePrincipal, ForeignGroup, Device"
            ),
        })?),
    };
    let condition = text("condition").filter(|c| !c.trim().is_empty());
    if condition.is_some() {
        // The engine does not evaluate conditions (ABAC); accepting one would grant the
        // role unconditionally, more than the assignment says. Refuse rather than fail open.
        return Err(ArmError::InvalidField {
            field: "condition",
            reason: "role assignment conditions are not supported: the assignment would \
                     apply without its condition"
                .into(),
        });
    }
    let condition_version = text("conditionVersion").filter(|_| condition.is_some());
    Ok(Request {
        id,
        role,
        principal,
        principal_type,
        description: text("description"),
        condition,
        condition_version,
    })
}

/// What creating an assignment needs to know.
#[derive(Debug, Clone, Copy, Default)]
pub struct AssignmentView<'a> {
    /// The assignment with the requested id, anywhere.
    pub existing: Option<&'a RoleAssignment>,
    /// Another assignment of the same role to the same principal at the same scope.
    pub duplicate: Option<&'a RoleAssignment>,
    pub principal: Option<&'a Principal>,
    pub role: Option<&'a RoleDefinition>,
    /// The group or resource the scope lies in, which must stay while the assignment is made.
    pub anchor: Option<&'a ResourceRecord>,
}

/// `PUT {scope}/providers/Microsoft.Authorization/roleAssignments/{id}` → 201.
pub fn create(
    ctx: &Context<'_>,
    scope: &ResourceId,
    request: &Request,
    raw: &Value,
    view: AssignmentView<'_>,
) -> Result<Plan, ArmError> {
    let role = view
        .role
        .ok_or_else(|| ArmError::RoleDefinitionDoesNotExist(request.role.to_string()))?;
    check_assignable(role, scope).map_err(|reason| ArmError::NotAssignable {
        assignment: request.id.to_string(),
        reason,
    })?;
    let principal = view.principal.ok_or_else(|| ArmError::PrincipalNotFound {
        principal: request.principal.to_string(),
        tenant: ctx.tenant_id.to_string(),
    })?;
    let actual = principal.principal_type();
    if let Some(given) = request.principal_type {
        if given != actual {
            return Err(ArmError::UnmatchedPrincipalType {
                principal: request.principal.to_string(),
                actual: actual.as_str().to_string(),
                given: given.as_str().to_string(),
            });
        }
    }
    let assignment = match view.existing {
        Some(e) => {
            if e.scope != *scope
                || e.role_definition_id != request.role
                || e.principal_id != request.principal
            {
                return Err(ArmError::RoleAssignmentUpdateNotPermitted);
            }
            RoleAssignment {
                description: request.description.clone(),
                condition: request.condition.clone(),
                condition_version: request.condition_version.clone(),
                updated_on: ctx.now,
                updated_by: Some(ctx.caller),
                ..e.clone()
            }
        }
        None => {
            if view.duplicate.is_some_and(|d| d.id != request.id) {
                return Err(ArmError::RoleAssignmentExists);
            }
            RoleAssignment {
                id: request.id,
                scope: scope.clone(),
                role_definition_id: request.role,
                principal_id: request.principal,
                principal_type: actual,
                description: request.description.clone(),
                condition: request.condition.clone(),
                condition_version: request.condition_version.clone(),
                created_on: ctx.now,
                updated_on: ctx.now,
                created_by: Some(ctx.caller),
                updated_by: Some(ctx.caller),
            }
        }
    };
    let mut batch = Batch::new();
    // The principal and the scope must still be there when this lands: their deletions remove
    // assignments by predicate, which cannot see one committed after them.
    batch
        .expect
        .push(Expect::PrincipalExists(request.principal));
    if let Some(anchor) = view.anchor {
        batch.expect.push(Expect::ResourceExists(anchor.id.clone()));
    }
    batch.push(Change::PutAssignment(assignment.clone()));
    batch.push(ctx.activity(
        WRITE,
        &assignment.resource_id(),
        201,
        Some(crate::shape::logged_request(raw.clone())),
    ));
    Ok(Plan::new(
        batch,
        201,
        Some(shape::role_assignment(&assignment)),
    ))
}

/// `DELETE` of an existing assignment → 200 with the assignment.
pub fn delete(ctx: &Context<'_>, assignment: &RoleAssignment) -> Plan {
    let mut batch = Batch::new();
    batch.push(Change::DeleteAssignment(assignment.id));
    batch.push(ctx.activity(DELETE, &assignment.resource_id(), 200, None));
    Plan::new(batch, 200, Some(shape::role_assignment(assignment)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testing::*;
    use lanyard_domain::{builtin, PrincipalKind, RoleType, ServicePrincipalSource};
    use serde_json::json;

    fn principal(fx: &Fixture) -> Principal {
        Principal {
            object_id: fx.next(),
            tenant_id: fx.tenant,
            display_name: "app".into(),
            kind: PrincipalKind::ServicePrincipal {
                client_id: fx.next(),
                source: ServicePrincipalSource::Application,
            },
        }
    }

    fn body(role: Uuid, principal: Uuid) -> Value {
        json!({"properties": {
            "roleDefinitionId": format!("/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/{role}"),
            "principalId": principal.to_string(),
        }})
    }

    #[test]
    fn reading_requests() {
        let id = Uuid::from_u128(1).to_string();
        assert!(matches!(
            read_request("not-a-guid", &json!({})),
            Err(ArmError::InvalidRoleAssignmentId(_))
        ));
        assert!(matches!(
            read_request(&id, &json!({"properties": {"principalId": id}})),
            Err(ArmError::InvalidField {
                field: "roleDefinitionId",
                ..
            })
        ));
        let r = read_request(
            &id,
            &json!({"properties": {"roleDefinitionId": "acdd72a7-3385-48ef-bd42-f606fba81ae7", "principalId": id, "principalType": "serviceprincipal"}}),
        )
        .unwrap();
        assert_eq!(r.principal_type, Some(PrincipalType::ServicePrincipal));
        assert_eq!(r.condition, None);
        // A condition would be ignored by the engine, so it is refused, not accepted.
        assert!(matches!(
            read_request(
                &id,
                &json!({"properties": {"roleDefinitionId": "acdd72a7-3385-48ef-bd42-f606fba81ae7", "principalId": id, "condition": "@Resource[x] == 'y'"}}),
            ),
            Err(ArmError::InvalidField {
                field: "condition",
                ..
            })
        ));
    }

    #[test]
    fn checks_in_order() {
        let fx = Fixture::new();
        let scope = ResourceId::parse("/subscriptions/s/resourceGroups/rg").unwrap();
        let reader = builtin::built_in_by_name("Reader").unwrap();
        let p = principal(&fx);
        let raw = body(reader.id, p.object_id);
        let req = read_request(&fx.next().to_string(), &raw).unwrap();

        let no_role = with_ctx(&fx, |ctx| {
            create(ctx, &scope, &req, &raw, AssignmentView::default())
        });
        assert!(matches!(
            no_role,
            Err(ArmError::RoleDefinitionDoesNotExist(_))
        ));

        let no_principal = with_ctx(&fx, |ctx| {
            create(
                ctx,
                &scope,
                &req,
                &raw,
                AssignmentView {
                    role: Some(&reader),
                    ..Default::default()
                },
            )
        });
        let e = no_principal.unwrap_err();
        assert!(e.to_string().contains(" does not exist in the directory "));

        let ok = with_ctx(&fx, |ctx| {
            create(
                ctx,
                &scope,
                &req,
                &raw,
                AssignmentView {
                    role: Some(&reader),
                    principal: Some(&p),
                    ..Default::default()
                },
            )
        })
        .unwrap();
        assert_eq!(ok.status, 201);
        let body = ok.body.unwrap();
        assert_eq!(body["properties"]["scope"], scope.to_string());
        assert_eq!(body["properties"]["principalType"], "ServicePrincipal");
        assert_eq!(body["properties"]["createdBy"], fx.caller.to_string());
        assert!(ok
            .batch
            .expect
            .contains(&Expect::PrincipalExists(p.object_id)));
        // The activity entry keeps the request body.
        assert!(ok
            .batch
            .changes
            .iter()
            .any(|c| matches!(c, Change::AppendActivity(a) if a.body.as_ref() == Some(&raw))));

        let assignment = ok
            .batch
            .changes
            .iter()
            .find_map(|c| match c {
                Change::PutAssignment(a) => Some(a.clone()),
                _ => None,
            })
            .unwrap();
        let other = read_request(&fx.next().to_string(), &raw).unwrap();
        let dup = with_ctx(&fx, |ctx| {
            create(
                ctx,
                &scope,
                &other,
                &raw,
                AssignmentView {
                    role: Some(&reader),
                    principal: Some(&p),
                    duplicate: Some(&assignment),
                    ..Default::default()
                },
            )
        });
        assert!(matches!(dup, Err(ArmError::RoleAssignmentExists)));
        // The same PUT again is accepted.
        let again = with_ctx(&fx, |ctx| {
            create(
                ctx,
                &scope,
                &req,
                &raw,
                AssignmentView {
                    role: Some(&reader),
                    principal: Some(&p),
                    existing: Some(&assignment),
                    duplicate: Some(&assignment),
                    ..Default::default()
                },
            )
        });
        assert!(again.is_ok());
        let elsewhere = ResourceId::parse("/subscriptions/s").unwrap();
        let moved = with_ctx(&fx, |ctx| {
            create(
                ctx,
                &elsewhere,
                &req,
                &raw,
                AssignmentView {
                    role: Some(&reader),
                    principal: Some(&p),
                    existing: Some(&assignment),
                    ..Default::default()
                },
            )
        });
        assert!(matches!(
            moved,
            Err(ArmError::RoleAssignmentUpdateNotPermitted)
        ));

        let typed = read_request(
            &fx.next().to_string(),
            &json!({"properties": {"roleDefinitionId": reader.id.to_string(), "principalId": p.object_id.to_string(), "principalType": "User"}}),
        )
        .unwrap();
        let mismatch = with_ctx(&fx, |ctx| {
            create(
                ctx,
                &scope,
                &typed,
                &raw,
                AssignmentView {
                    role: Some(&reader),
                    principal: Some(&p),
                    ..Default::default()
                },
            )
        });
        assert!(matches!(
            mismatch,
            Err(ArmError::UnmatchedPrincipalType { .. })
        ));
    }

    #[test]
    fn custom_roles_stay_in_their_scopes() {
        let fx = Fixture::new();
        let p = principal(&fx);
        let role = RoleDefinition {
            id: fx.next(),
            role_name: "Narrow".into(),
            description: String::new(),
            role_type: RoleType::CustomRole,
            permissions: vec![],
            assignable_scopes: vec![ResourceId::parse("/subscriptions/s/resourceGroups/a").unwrap()],
        };
        let raw = body(role.id, p.object_id);
        let req = read_request(&fx.next().to_string(), &raw).unwrap();
        let scope = ResourceId::parse("/subscriptions/s/resourceGroups/b").unwrap();
        let r = with_ctx(&fx, |ctx| {
            create(
                ctx,
                &scope,
                &req,
                &raw,
                AssignmentView {
                    role: Some(&role),
                    principal: Some(&p),
                    ..Default::default()
                },
            )
        });
        match r {
            Err(e @ ArmError::NotAssignable { .. }) => {
                assert_eq!(e.code(), "InvalidCreateRoleAssignmentRequest");
                assert!(e.to_string().contains("/subscriptions/s/resourceGroups/a"));
            }
            other => panic!("{other:?}"),
        }
    }
}
