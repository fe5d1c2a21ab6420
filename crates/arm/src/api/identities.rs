//! User-assigned identities, their federated credentials, and `revokeTokens`.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use lanyard_domain::{ChangeMode, ResourceId};
use lanyard_platform::ApiError;
use lanyard_storage::{Batch, ResourceQuery};

use super::committing;
use crate::errors::ArmError;
use crate::kinds::{self, Kind, FIC_TYPE, UAI_TYPE};
use crate::plan::Plan;
use crate::request::Call;
use crate::shape::uai_ids;
use crate::{plan, Arm};

/// `PUT`/`PATCH` of a user-assigned identity.
pub async fn write(
    arm: &Arm,
    call: &Call,
    kind: &Kind,
    id: &ResourceId,
) -> Result<Response, ApiError> {
    arm.authorize(call, &kind.action("write"), id).await?;
    let request = &call.json()?;
    let mode = if call.method == Method::PATCH {
        ChangeMode::Patch
    } else {
        ChangeMode::Put
    };
    arm.transact(|_| async move {
        let group = arm.group(id).await?;
        let existing = arm
            .state()
            .store
            .resource(id)
            .await
            .map_err(ArmError::from)?;
        let plan = arm.with_context(call, |ctx| {
            plan::identities::write(ctx, kind, id, request, &group, existing.as_ref(), mode)
        })?;
        Ok(committing(plan))
    })
    .await
}

/// `PUT` of a federated identity credential.
pub async fn put_credential(
    arm: &Arm,
    call: &Call,
    kind: &Kind,
    id: &ResourceId,
) -> Result<Response, ApiError> {
    arm.authorize(call, &kind.action("write"), id).await?;
    let request = &call.json()?;
    let parent_id = &id.parent().unwrap_or_else(|| id.clone());
    arm.transact(|_| async move {
        arm.group(id).await?;
        let store = &arm.state().store;
        let parent = store
            .resource(parent_id)
            .await
            .map_err(ArmError::from)?
            .ok_or_else(|| ArmError::ResourceNotFound {
                resource: format!("{UAI_TYPE}/{}", parent_id.name()),
                group: id.resource_group_name().unwrap_or_default().to_string(),
            })?;
        let existing = store.resource(id).await.map_err(ArmError::from)?;
        let siblings = store
            .resources(&ResourceQuery {
                parent: Some(parent.id.clone()),
                resource_type: Some(FIC_TYPE.to_string()),
                ..Default::default()
            })
            .await
            .map_err(ArmError::from)?
            .len();
        let plan = arm.with_context(call, |ctx| {
            plan::identities::put_credential(
                ctx,
                kind,
                id,
                request,
                &parent,
                existing.as_ref(),
                siblings,
            )
        })?;
        Ok(committing(plan))
    })
    .await
}

/// What revoking an identity's tokens is called.
pub(crate) const REVOKE_ACTION: &str =
    "Microsoft.ManagedIdentity/userAssignedIdentities/revokeTokens/action";

/// Whether a POST to `{resource}/{action}` is `.../userAssignedIdentities/{name}/revokeTokens`.
pub(crate) fn is_revoke(namespace: &str, types: &[String]) -> bool {
    namespace.eq_ignore_ascii_case("Microsoft.ManagedIdentity")
        && matches!(types, [t, a] if t.eq_ignore_ascii_case("userAssignedIdentities") && a.eq_ignore_ascii_case("revokeTokens"))
}

/// `POST` on a resource: `.../userAssignedIdentities/{name}/revokeTokens` revokes every token
/// the identity holds (204).
pub async fn action(
    arm: &Arm,
    call: &Call,
    scope: &ResourceId,
    namespace: &str,
    types: &[String],
) -> Result<Response, ApiError> {
    if !is_revoke(namespace, types) {
        return Err(if kinds::lookup(namespace, types).is_some() {
            ArmError::MethodNotAllowed {
                method: call.method.to_string(),
                path: call.path.clone(),
            }
        } else {
            ArmError::InvalidResourceType {
                namespace: namespace.to_string(),
                resource_type: types.join("/"),
                api_version: call.api_version.clone(),
            }
        }
        .into());
    }
    const ACTION: &str = REVOKE_ACTION;
    arm.authorize(call, ACTION, scope).await?;
    arm.group(scope).await?;
    let record = arm
        .state()
        .store
        .resource(scope)
        .await
        .map_err(ArmError::from)?
        .ok_or_else(|| ArmError::ResourceNotFound {
            resource: format!("{UAI_TYPE}/{}", scope.name()),
            group: scope.resource_group_name().unwrap_or_default().to_string(),
        })?;
    let Some((principal, _)) = uai_ids(&record.body) else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let batch = arm.with_context(call, |ctx| {
        let mut batch = Batch::new();
        batch.push((ctx.revoke)(principal));
        batch.push(ctx.activity(ACTION, &record.id, 204, None));
        batch
    });
    let plan = Plan {
        batch,
        status: 204,
        body: None,
        linked: Vec::new(),
    };
    let plan = &plan;
    arm.transact(|_| async move { Ok(committing(plan.clone())) })
        .await
}
