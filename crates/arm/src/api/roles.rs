//! Role definitions: built-in roles and custom roles, at any scope.
//!
//! Reading definitions needs only a valid token, as on Azure, where every principal of the
//! tenant can look roles up (tools resolve role names before assigning, often at `/`).
//!
//! Changing one is authorized against the role itself, not only against the URL: a custom
//! role is named by its GUID and reached through any scope, and it takes effect wherever
//! it is assigned, which is within its assignable scopes. So a PUT needs
//! `roleDefinitions/write` at the URL's scope, at every assignable scope of the role as
//! stored, and at every new one; a DELETE needs `roleDefinitions/delete` at the URL's scope
//! and at every assignable scope of the role. Through a narrower scope (a resource group
//! its Owner controls) nobody can rewrite or remove a role that applies wider.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lanyard_domain::{builtin, ResourceId, RoleDefinition, RoleType};
use lanyard_platform::{ApiError, Step};
use lanyard_storage::AssignmentQuery;

use super::{committing, json};
use crate::errors::ArmError;
use crate::filter::{self, Clause};
use crate::plan::roles::{definition_id, parse_name};
use crate::request::Call;
use crate::{plan, shape, Arm};

const WRITE: &str = "Microsoft.Authorization/roleDefinitions/write";
const DELETE: &str = "Microsoft.Authorization/roleDefinitions/delete";

/// Built-in roles and every custom role.
async fn all_roles(arm: &Arm) -> Result<Vec<RoleDefinition>, ApiError> {
    let mut roles = builtin::built_in_roles();
    roles.extend(
        arm.state()
            .store
            .role_definitions()
            .await
            .map_err(ArmError::from)?,
    );
    Ok(roles)
}

/// Whether a role shows at `scope`: built-ins everywhere; custom roles where they may be
/// assigned, or when one of their assignable scopes lies below `scope`.
fn shows_at(role: &RoleDefinition, scope: &ResourceId) -> bool {
    role.role_type == RoleType::BuiltInRole
        || role
            .assignable_scopes
            .iter()
            .any(|s| scope.is_within(s) || s.is_within(scope))
}

/// `GET {scope}/providers/Microsoft.Authorization/roleDefinitions[?$filter=roleName eq '…' |
/// type eq 'BuiltInRole']`.
pub async fn list(arm: &Arm, call: &Call, scope: &ResourceId) -> Result<Response, ApiError> {
    let raw_filter = call.param("$filter").unwrap_or_default();
    let clauses =
        filter::parse(raw_filter).map_err(|_| ArmError::UnsupportedFilter(raw_filter.into()))?;
    let mut name = None;
    let mut role_type = None;
    for clause in &clauses {
        match clause {
            Clause::Compare { field, op, value } if op == "eq" && field == "rolename" => {
                name = Some(value.clone());
            }
            Clause::Compare { field, op, value } if op == "eq" && field == "type" => {
                role_type = Some(value.clone());
            }
            _ => return Err(ArmError::UnsupportedFilter(raw_filter.into()).into()),
        }
    }
    let values = all_roles(arm)
        .await?
        .into_iter()
        .filter(|r| shows_at(r, scope))
        .filter(|r| {
            name.as_ref()
                .is_none_or(|n| r.role_name.eq_ignore_ascii_case(n))
        })
        .filter(|r| {
            role_type
                .as_ref()
                .is_none_or(|t| r.role_type.as_str().eq_ignore_ascii_case(t))
        })
        .map(|r| shape::role_definition(&r, scope.subscription_id()))
        .collect();
    Ok(json(200, Some(&shape::page(values, None))))
}

pub async fn get(
    arm: &Arm,
    _call: &Call,
    scope: &ResourceId,
    name: &str,
) -> Result<Response, ApiError> {
    let id = parse_name(name)?;
    let role = all_roles(arm)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ArmError::RoleDefinitionNotFound(name.to_string()))?;
    Ok(json(
        200,
        Some(&shape::role_definition(&role, scope.subscription_id())),
    ))
}

/// The scopes of every assignment of role `id`.
async fn assigned_scopes(arm: &Arm, id: uuid::Uuid) -> Result<Vec<ResourceId>, ApiError> {
    Ok(arm
        .state()
        .store
        .assignments(&AssignmentQuery {
            role_definition: Some(id),
            ..Default::default()
        })
        .await
        .map_err(ArmError::from)?
        .into_iter()
        .map(|a| a.scope)
        .collect())
}

/// `PUT`: the caller needs write at the URL's scope, at every assignable scope of the role
/// it replaces, and at every new one; the role's assignments must stay within the new
/// assignable scopes (409 otherwise).
pub async fn put(
    arm: &Arm,
    call: &Call,
    scope: &ResourceId,
    name: &str,
) -> Result<Response, ApiError> {
    let id = parse_name(name)?;
    let target = definition_id(scope, id);
    arm.authorize(call, WRITE, &target).await?;
    let request = &call.json()?;
    arm.transact(|_| async move {
        let custom = arm
            .state()
            .store
            .role_definitions()
            .await
            .map_err(ArmError::from)?;
        let stored = custom.iter().find(|r| r.id == id);
        // The role as it stands first: its holders are the ones a change affects.
        for assignable in stored.iter().flat_map(|r| &r.assignable_scopes) {
            arm.authorize(call, WRITE, assignable).await?;
        }
        let assigned = match stored {
            Some(_) => assigned_scopes(arm, id).await?,
            None => Vec::new(),
        };
        let (plan, role) = arm.with_context(call, |ctx| {
            plan::roles::put(ctx, scope, name, request, &custom, &assigned)
        })?;
        for assignable in &role.assignable_scopes {
            arm.authorize(call, WRITE, assignable).await?;
        }
        Ok(committing(plan))
    })
    .await
}

/// `DELETE` of a custom role: 200 with the role, or 204 when there is none. The caller
/// needs delete at the URL's scope and at every assignable scope of the role.
pub async fn delete(
    arm: &Arm,
    call: &Call,
    scope: &ResourceId,
    name: &str,
) -> Result<Response, ApiError> {
    let id = parse_name(name)?;
    arm.authorize(call, DELETE, &definition_id(scope, id))
        .await?;
    arm.transact(|_| async move {
        let Some(role) = all_roles(arm).await?.into_iter().find(|r| r.id == id) else {
            return Ok(Step::Done(StatusCode::NO_CONTENT.into_response()));
        };
        if role.role_type == RoleType::CustomRole {
            for assignable in &role.assignable_scopes {
                arm.authorize(call, DELETE, assignable).await?;
            }
        }
        let used = arm
            .state()
            .store
            .assignments(&AssignmentQuery {
                role_definition: Some(id),
                limit: Some(1),
                ..Default::default()
            })
            .await
            .map_err(ArmError::from)?
            .len();
        let plan = arm.with_context(call, |ctx| plan::roles::delete(ctx, scope, &role, used))?;
        Ok(committing(plan))
    })
    .await
}
