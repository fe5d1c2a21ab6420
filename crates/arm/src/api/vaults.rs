//! Key Vault vaults. Their rules live in `lanyard_keyvault::vault` (pure); this module loads
//! what they need, applies them to the request, and hands the result to the generic resource
//! plan, so a vault is stored, logged and answered like any resource.
//!
//! - PUT/PATCH: `properties` checked and completed (`vaultUri`, soft delete, purge
//!   protection); the name must not be taken by a vault elsewhere (names are global, as they
//!   are host names). Vaults hold no identities here: an `identity` block is ignored.
//! - `PUT {vault}/accessPolicies/{add|replace|remove}`: the vault's access policies changed,
//!   as a PATCH of the vault; the answer is the operation's own shape.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use lanyard_domain::{ChangeMode, ResourceId};
use lanyard_keyvault::vault::{self, AccessPolicyOperation, VaultContext, VaultRuleError};
use lanyard_platform::ApiError;
use lanyard_storage::{ResourceQuery, ResourceRecord};
use serde_json::{json, Value};

use crate::errors::ArmError;
use crate::kinds::{self, Kind};
use crate::plan::resources::ResourceView;
use crate::request::Call;
use crate::{plan, Arm};

fn refused(e: VaultRuleError) -> ApiError {
    ApiError::arm(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
        e.code(),
        e.to_string(),
    )
}

/// Another vault already named `id.name()` (in any group or subscription).
async fn name_taken(arm: &Arm, id: &ResourceId) -> Result<bool, ApiError> {
    const PAGE: u32 = 1000;
    let mut after = None;
    loop {
        let page = arm
            .state()
            .store
            .resources(&ResourceQuery {
                resource_type: Some(vault::VAULT_TYPE.to_string()),
                after: after.clone(),
                limit: Some(PAGE),
                ..Default::default()
            })
            .await
            .map_err(ArmError::from)?;
        if page
            .iter()
            .any(|r| r.id != *id && r.id.name().eq_ignore_ascii_case(id.name()))
        {
            return Ok(true);
        }
        if page.len() < PAGE as usize {
            return Ok(false);
        }
        after = page.last().map(|r| r.id.key().to_string());
    }
}

/// The request with `properties` replaced by what the vault rules made of them.
fn with_properties(request: &Value, properties: Value) -> Result<Value, ApiError> {
    let mut out = request
        .as_object()
        .cloned()
        .ok_or_else(|| ArmError::InvalidRequestContent("the body must be a JSON object".into()))?;
    out.remove("identity");
    out.insert("properties".into(), properties);
    Ok(Value::Object(out))
}

/// `PUT`/`PATCH` of a vault.
pub async fn write(
    arm: &Arm,
    call: &Call,
    kind: &Kind,
    id: &ResourceId,
) -> Result<Response, ApiError> {
    arm.authorize(call, &kind.action("write"), id).await?;
    let request = call.json()?;
    let mode = if call.method == Method::PATCH {
        ChangeMode::Patch
    } else {
        ChangeMode::Put
    };
    let uri = format!(
        "{}/",
        arm.state()
            .endpoints()
            .vault(&id.name().to_ascii_lowercase())
    );
    let ctx = VaultContext {
        tenant_id: arm.state().directory.tenant.id,
        vault_uri: &uri,
    };
    let mut attempt = 0;
    loop {
        let group = arm.group(id).await?;
        let existing = arm
            .state()
            .store
            .resource(id)
            .await
            .map_err(ArmError::from)?;
        if existing.is_none() && (kind.name.check)(id.name()) && name_taken(arm, id).await? {
            return Err(refused(VaultRuleError::NameInUse(id.name().to_string())));
        }
        let request = match (mode, &existing) {
            (ChangeMode::Patch, Some(e)) => with_properties(
                &request,
                vault::validate_patch(&request, &e.body, &ctx).map_err(refused)?,
            )?,
            // The generic plan answers a PATCH of nothing with 404.
            (ChangeMode::Patch, None) => request.clone(),
            (ChangeMode::Put, e) => with_properties(
                &request,
                vault::validate_put(&request, e.as_ref().map(|e| &e.body), &ctx)
                    .map_err(refused)?,
            )?,
        };
        let view = ResourceView {
            group: &group,
            existing: existing.as_ref(),
            identities: &BTreeMap::new(),
        };
        let plan = arm.with_context(call, |ctx| {
            plan::resources::write(ctx, kind, id, &request, view, mode)
        })?;
        if let Some(r) = arm.commit(plan, &mut attempt).await? {
            return Ok(r);
        }
    }
}

/// `PUT {vault}/accessPolicies/{operation}`.
pub async fn access_policy(arm: &Arm, call: &Call, id: &ResourceId) -> Result<Response, ApiError> {
    let vault_id = id
        .parent()
        .ok_or_else(|| ArmError::PathNotFound(call.path.clone()))?;
    let kind = kinds::of(&vault_id).ok_or_else(|| ArmError::PathNotFound(call.path.clone()))?;
    arm.authorize(
        call,
        "Microsoft.KeyVault/vaults/accessPolicies/write",
        &vault_id,
    )
    .await?;
    let operation = AccessPolicyOperation::parse(id.name()).map_err(refused)?;
    let request = call.json()?;
    let mut attempt = 0;
    loop {
        let group = arm.group(&vault_id).await?;
        let existing: ResourceRecord = arm
            .state()
            .store
            .resource(&vault_id)
            .await
            .map_err(ArmError::from)?
            .ok_or_else(|| ArmError::ResourceNotFound {
                resource: format!("{}/{}", kind.full_type(), vault_id.name()),
                group: group.id.name().to_string(),
            })?;
        let (properties, named) =
            vault::apply_access_policy_operation(&existing.body, operation.as_str(), &request)
                .map_err(refused)?;
        let patch = json!({ "properties": properties });
        let view = ResourceView {
            group: &group,
            existing: Some(&existing),
            identities: &BTreeMap::new(),
        };
        let mut plan = arm.with_context(call, |ctx| {
            plan::resources::write(ctx, kind, &vault_id, &patch, view, ChangeMode::Patch)
        })?;
        plan.status = 200;
        plan.body = Some(vault::access_policy_response(
            existing.id.as_str(),
            existing.body["location"].as_str(),
            operation,
            &named,
        ));
        if let Some(r) = arm.commit(plan, &mut attempt).await? {
            return Ok(r);
        }
    }
}
