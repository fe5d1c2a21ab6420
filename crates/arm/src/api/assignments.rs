//! Role assignments at any scope.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lanyard_domain::{builtin, ResourceId, RoleAssignment, ScopeLevel};
use lanyard_platform::{ApiError, Step};
use lanyard_storage::AssignmentQuery;
use uuid::Uuid;

use super::{committing, json};
use crate::errors::ArmError;
use crate::filter::{self, Clause};
use crate::plan::assignments::{read_request, AssignmentView};
use crate::plan::removal::top_level;
use crate::request::Call;
use crate::{plan, shape, Arm};

const READ: &str = "Microsoft.Authorization/roleAssignments/read";
const WRITE: &str = "Microsoft.Authorization/roleAssignments/write";
const DELETE: &str = "Microsoft.Authorization/roleAssignments/delete";

const PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

fn assignment_id(scope: &ResourceId, name: &str) -> ResourceId {
    scope.with_provider("Microsoft.Authorization", "roleAssignments", name)
}

fn parse_id(name: &str) -> Result<Uuid, ArmError> {
    Uuid::parse_str(name).map_err(|_| ArmError::InvalidRoleAssignmentId(name.to_string()))
}

/// What a list asks for.
struct Listing {
    /// `atScope()`: only at or above the scope.
    at_scope: bool,
    /// `principalId eq` / `assignedTo()`: only these principals.
    principals: Option<Vec<Uuid>>,
}

fn listing(arm: &Arm, raw: &str) -> Result<Listing, ArmError> {
    let bad = || ArmError::UnsupportedFilter(raw.to_string());
    let mut out = Listing {
        at_scope: false,
        principals: None,
    };
    let principal = |s: &str| Uuid::parse_str(s).map_err(|_| bad());
    for clause in filter::parse(raw).map_err(|_| bad())? {
        if let Some(arg) = clause.single_text("assignedto") {
            let p = principal(arg)?;
            let mut all = vec![p];
            all.extend(arm.state().access.with_index(|i| i.groups_of(p)));
            out.principals = Some(all);
            continue;
        }
        match clause {
            Clause::Call { name, args } if name == "atscope" && args.is_empty() => {
                out.at_scope = true
            }
            Clause::Compare { field, op, value } if field == "principalid" && op == "eq" => {
                out.principals = Some(vec![principal(&value)?]);
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// `GET {scope}/providers/Microsoft.Authorization/roleAssignments`: without a filter, the
/// assignments at, above and below the scope; `atScope()` at and above; `principalId eq` and
/// `assignedTo()` narrow to a principal (and its groups). Paged by id with `$skiptoken`.
pub async fn list(arm: &Arm, call: &Call, scope: &ResourceId) -> Result<Response, ApiError> {
    arm.authorize(call, READ, scope).await?;
    let listing = listing(arm, call.param("$filter").unwrap_or_default())?;
    let after = match call.param("$skiptoken") {
        Some(t) => Some(Uuid::parse_str(t).map_err(|_| ArmError::InvalidSkipToken(t.into()))?),
        None => None,
    };
    let size = call.page_size(PAGE, MAX_PAGE);
    let principals: Vec<Option<Uuid>> = match &listing.principals {
        Some(ps) => ps.iter().copied().map(Some).collect(),
        None => vec![None],
    };
    let mut queries = Vec::new();
    for principal in principals {
        let base = AssignmentQuery {
            principal,
            after,
            limit: Some(size + 1),
            ..Default::default()
        };
        queries.push(AssignmentQuery {
            at_or_above: Some(scope.clone()),
            ..base.clone()
        });
        if !listing.at_scope {
            queries.push(AssignmentQuery {
                at_or_below: Some(scope.clone()),
                ..base
            });
        }
    }
    let mut found: Vec<RoleAssignment> = Vec::new();
    for q in &queries {
        found.extend(
            arm.state()
                .store
                .assignments(q)
                .await
                .map_err(ArmError::from)?,
        );
    }
    found.sort_by_key(|a| a.id);
    found.dedup_by_key(|a| a.id);
    // INVARIANT: each query returns its first `size + 1` ids after the token, so the first
    // `size` of the union are exactly the next page, and more than `size` means more pages.
    let next = if found.len() > size as usize {
        found.truncate(size as usize);
        found.last().map(|a| call.next_link(&a.id.to_string()))
    } else {
        None
    };
    let values = found.iter().map(shape::role_assignment).collect();
    Ok(json(200, Some(&shape::page(values, next))))
}

/// `GET` by scope and name (also ARM's "get by id").
pub async fn get(
    arm: &Arm,
    call: &Call,
    scope: &ResourceId,
    name: &str,
) -> Result<Response, ApiError> {
    arm.authorize(call, READ, &assignment_id(scope, name))
        .await?;
    let id = parse_id(name)?;
    let assignment = arm
        .state()
        .store
        .assignment(id)
        .await
        .map_err(ArmError::from)?
        .filter(|a| a.scope == *scope)
        .ok_or_else(|| ArmError::RoleAssignmentNotFound(name.to_string()))?;
    Ok(json(200, Some(&shape::role_assignment(&assignment))))
}

/// `PUT`: creates the assignment (201).
pub async fn put(
    arm: &Arm,
    call: &Call,
    scope: &ResourceId,
    name: &str,
) -> Result<Response, ApiError> {
    arm.authorize(call, WRITE, &assignment_id(scope, name))
        .await?;
    let raw = &call.json()?;
    let request = &read_request(name, raw)?;
    arm.transact(|_| async move {
        let store = &arm.state().store;
        let existing = store.assignment(request.id).await.map_err(ArmError::from)?;
        let role = match builtin::built_in_by_id(request.role) {
            Some(r) => Some(r),
            None => store
                .role_definitions()
                .await
                .map_err(ArmError::from)?
                .into_iter()
                .find(|r| r.id == request.role),
        };
        let principal = store
            .principal(request.principal)
            .await
            .map_err(ArmError::from)?;
        let duplicate = store
            .assignments(&AssignmentQuery {
                principal: Some(request.principal),
                role_definition: Some(request.role),
                at_or_above: Some(scope.clone()),
                ..Default::default()
            })
            .await
            .map_err(ArmError::from)?
            .into_iter()
            .find(|a| a.scope == *scope);
        // The group or resource the scope lies in must exist, and stay while this commits.
        let anchor = match scope.level() {
            ScopeLevel::Root | ScopeLevel::Subscription => None,
            ScopeLevel::ResourceGroup => Some(arm.group(scope).await?),
            ScopeLevel::Resource => {
                arm.group(scope).await?;
                let top = top_level(scope).unwrap_or_else(|| scope.clone());
                let record = store.resource(&top).await.map_err(ArmError::from)?;
                Some(record.ok_or_else(|| ArmError::ResourceNotFound {
                    resource: format!("{}/{}", top.resource_type(), top.name()),
                    group: top.resource_group_name().unwrap_or_default().to_string(),
                })?)
            }
        };
        let view = AssignmentView {
            existing: existing.as_ref(),
            duplicate: duplicate.as_ref(),
            principal: principal.as_ref(),
            role: role.as_ref(),
            anchor: anchor.as_ref(),
        };
        let plan = arm.with_context(call, |ctx| {
            plan::assignments::create(ctx, scope, request, raw, view)
        })?;
        Ok(committing(plan))
    })
    .await
}

/// `DELETE`: 200 with the assignment, or 204 when there is none at this scope.
pub async fn delete(
    arm: &Arm,
    call: &Call,
    scope: &ResourceId,
    name: &str,
) -> Result<Response, ApiError> {
    arm.authorize(call, DELETE, &assignment_id(scope, name))
        .await?;
    let id = parse_id(name)?;
    arm.transact(|_| async move {
        let Some(assignment) = arm
            .state()
            .store
            .assignment(id)
            .await
            .map_err(ArmError::from)?
            .filter(|a| a.scope == *scope)
        else {
            return Ok(Step::Done(StatusCode::NO_CONTENT.into_response()));
        };
        let plan = arm.with_context(call, |ctx| plan::assignments::delete(ctx, &assignment));
        Ok(committing(plan))
    })
    .await
}
