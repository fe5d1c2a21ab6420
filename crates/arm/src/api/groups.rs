//! Resource groups.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use lanyard_domain::{ResourceId, RoleAssignment};
use lanyard_platform::{ApiError, Step};
use lanyard_storage::{AssignmentQuery, ResourceQuery};

use super::resources::page_of_resources;
use super::{committing, MAX_MARKS};
use crate::errors::ArmError;
use crate::kinds::{RESOURCE_GROUP_TYPE, UAI_TYPE};
use crate::plan::groups::GroupContents;
use crate::plan::removal::{principals_of, references_any, Cascade};
use crate::request::Call;
use crate::{plan, Arm};

const READ: &str = "Microsoft.Resources/subscriptions/resourceGroups/read";
const WRITE: &str = "Microsoft.Resources/subscriptions/resourceGroups/write";
const DELETE: &str = "Microsoft.Resources/subscriptions/resourceGroups/delete";

/// `GET /subscriptions/{s}/resourcegroups`: the groups the caller may read.
pub async fn list(arm: &Arm, call: &Call, subscription: &str) -> Result<Response, ApiError> {
    let scope = ResourceId::subscription(subscription);
    let everything = arm.allowed(call, READ, &scope);
    page_of_resources(
        arm,
        call,
        ResourceQuery {
            parent: Some(scope),
            resource_type: Some(RESOURCE_GROUP_TYPE.to_string()),
            ..Default::default()
        },
        |r| everything || arm.allowed(call, READ, &r.id),
    )
    .await
}

/// `GET` and `HEAD` (`check_existence`: 204 or 404).
pub async fn get(arm: &Arm, call: &Call, id: &ResourceId) -> Result<Response, ApiError> {
    arm.authorize(call, READ, id).await?;
    let group = arm.group(id).await?;
    if call.method == Method::HEAD {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(super::json(200, Some(&group.body)))
}

pub async fn put(arm: &Arm, call: &Call, id: &ResourceId) -> Result<Response, ApiError> {
    arm.authorize(call, WRITE, id).await?;
    let request = &call.json()?;
    arm.transact(|_| async move {
        let existing = arm
            .state()
            .store
            .resource(id)
            .await
            .map_err(ArmError::from)?;
        let plan = arm.with_context(call, |ctx| {
            plan::groups::put(ctx, id, request, existing.as_ref())
        })?;
        Ok(committing(plan))
    })
    .await
}

pub async fn patch(arm: &Arm, call: &Call, id: &ResourceId) -> Result<Response, ApiError> {
    arm.authorize(call, WRITE, id).await?;
    let request = &call.json()?;
    arm.transact(|_| async move {
        let existing = arm.group(id).await?;
        let plan = arm.with_context(call, |ctx| plan::groups::patch(ctx, &existing, request))?;
        Ok(committing(plan))
    })
    .await
}

/// `DELETE`: the group is marked `Deleting`, then everything in it goes in one transaction;
/// 200 when done.
pub async fn delete(arm: &Arm, call: &Call, id: &ResourceId) -> Result<Response, ApiError> {
    arm.authorize(call, DELETE, id).await?;
    let (response, resources) = arm
        .transact(|attempt| async move {
            let group = arm.group(id).await?;
            let resources = arm.resources_within(&group.id).await?;
            if let Some(mark) =
                arm.with_context(call, |ctx| plan::groups::mark(ctx, &group, &resources))
            {
                if attempt.prepared >= MAX_MARKS {
                    return Err(ArmError::Conflict.into());
                }
                return Ok(Step::Then(mark));
            }
            let assignments = assignments_going(arm, &group.id, &resources).await?;
            let gone: BTreeSet<String> = resources
                .iter()
                .filter(|r| r.id.is_type(UAI_TYPE))
                .map(|r| r.id.key().to_string())
                .collect();
            let referencing = if gone.is_empty() {
                Vec::new()
            } else {
                let subscription =
                    ResourceId::subscription(group.id.subscription_id().unwrap_or_default());
                arm.resources_within(&subscription)
                    .await?
                    .into_iter()
                    .filter(|r| !r.id.is_within(&group.id) && references_any(r, &gone))
                    .collect()
            };
            let (kept_expect, kept) = super::vaults::soft_delete(arm, &resources).await?;
            let mut plan = arm.with_context(call, |ctx| {
                plan::groups::delete(
                    ctx,
                    GroupContents {
                        group: &group,
                        resources: &resources,
                        cascade: Cascade {
                            assignments: &assignments,
                            referencing: &referencing,
                        },
                    },
                )
            });
            plan.batch
                .changes
                .extend(lanyard_blob::account::removal(&resources));
            // Vaults are soft-deleted: their documents stay, a deleted-vault record is kept.
            plan.batch.expect.extend(kept_expect);
            plan.batch.changes.extend(kept);
            let response = super::json(plan.status, plan.body.as_ref());
            Ok(Step::Commit(plan.batch, (response, resources)))
        })
        .await?;
    if lanyard_blob::account::removes_accounts(&resources) {
        lanyard_blob::account::sweep_accounts(arm.state());
    }
    Ok(response)
}

/// The role assignments removing `scope` and the principals of `removed` takes with it, for
/// the activity log.
pub(crate) async fn assignments_going(
    arm: &Arm,
    scope: &ResourceId,
    removed: &[lanyard_storage::ResourceRecord],
) -> Result<Vec<RoleAssignment>, ApiError> {
    let store = &arm.state().store;
    let mut out = store
        .assignments(&AssignmentQuery {
            at_or_below: Some(scope.clone()),
            ..Default::default()
        })
        .await
        .map_err(ArmError::from)?;
    for principal in principals_of(removed) {
        out.extend(
            store
                .assignments(&AssignmentQuery {
                    principal: Some(principal),
                    ..Default::default()
                })
                .await
                .map_err(ArmError::from)?,
        );
    }
    Ok(out)
}
