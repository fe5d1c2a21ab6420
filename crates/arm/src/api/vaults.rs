//! Key Vault vaults. Their rules live in `lanyard_keyvault::vault` (pure); this module loads
//! what they need, applies them to the request, and hands the result to the generic resource
//! plan, so a vault is stored, logged and answered like any resource.
//!
//! - PUT/PATCH: `properties` checked and completed (`vaultUri`, soft delete, purge
//!   protection); the name must not be taken by a vault elsewhere (names are global, as they
//!   are host names). Vaults hold no identities here: an `identity` block is ignored.
//!   Switching an existing vault's permission model (`enableRbacAuthorization`, either way)
//!   also needs `Microsoft.Authorization/roleAssignments/write` at the vault (403
//!   `AuthorizationFailed` naming it otherwise): a vault writer could otherwise turn an RBAC
//!   vault into an access-policy one with a policy for itself and read its secrets.
//! - `PUT {vault}/accessPolicies/{add|replace|remove}`: the vault's access policies changed,
//!   as a PATCH of the vault; the answer is the operation's own shape.
//! - Soft delete (rules in `lanyard_keyvault::deleted`): deleting a vault, alone or with its
//!   group, keeps a deleted-vault record in the same batch ([`soft_delete`]); a soft-deleted
//!   name is refused to new vaults; `createMode: recover` restores the vault;
//!   `GET .../deletedVaults`, `GET .../locations/{loc}/deletedVaults/{name}` and `POST
//!   .../purge` read and purge the records. A record past its purge date is purged by the
//!   first request that meets it.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use lanyard_domain::{ChangeMode, ResourceId};
use lanyard_keyvault::deleted::{
    self, CreateDecision, CreateMode, DeletedVaultDoc, DeletedVaultError, DELETED_VAULTS,
};
use lanyard_keyvault::vault::{self, AccessPolicyOperation, VaultContext, VaultRuleError};
use lanyard_platform::{ApiError, Step};
use lanyard_storage::{
    Batch, Change, DocumentQuery, DocumentRecord, Expect, ResourceQuery, ResourceRecord, StoreError,
};
use serde_json::{json, Value};

use super::committing;
use crate::errors::ArmError;
use crate::kinds::{self, Kind};
use crate::plan::resources::ResourceView;
use crate::request::Call;
use crate::{plan, shape, Arm};

fn refused(e: VaultRuleError) -> ApiError {
    ApiError::arm(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
        e.code(),
        e.to_string(),
    )
}

fn refused_deleted(e: DeletedVaultError) -> ApiError {
    ApiError::arm(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
        e.code(),
        e.to_string(),
    )
}

/// Purges an expired record in its own commit; a concurrent change (someone else purged,
/// recovered or replaced it) is fine.
async fn purge_expired(arm: &Arm, stored: &DocumentRecord) -> Result<(), ApiError> {
    let (expect, changes) = deleted::purge(stored);
    let batch = Batch { expect, changes };
    match arm.state().commit(batch).await {
        Ok(()) => {
            tracing::info!(vault = %stored.key, "expired deleted vault purged");
            Ok(())
        }
        Err(StoreError::Conflict(_)) => Ok(()),
        Err(e) => Err(ArmError::from(e).into()),
    }
}

/// The unexpired deleted-vault record of `name`, if any (an expired one is purged).
async fn live_deleted(
    arm: &Arm,
    name: &str,
) -> Result<Option<(DocumentRecord, DeletedVaultDoc)>, ApiError> {
    let stored = arm
        .state()
        .store
        .document(DELETED_VAULTS, &deleted::key(name))
        .await
        .map_err(ArmError::from)?;
    let Some(stored) = stored else {
        return Ok(None);
    };
    let Some(doc) = DeletedVaultDoc::from_document(&stored) else {
        return Ok(None);
    };
    if doc.expired(arm.state().clock.unix()) {
        purge_expired(arm, &stored).await?;
        return Ok(None);
    }
    Ok(Some((stored, doc)))
}

/// Expectations and changes that soft-delete the vaults among `removed`, for the batch that
/// deletes them: their documents stay, a deleted-vault record is kept.
pub(crate) async fn soft_delete(
    arm: &Arm,
    removed: &[ResourceRecord],
) -> Result<(Vec<Expect>, Vec<Change>), ApiError> {
    let mut previous = Vec::new();
    for r in removed.iter().filter(|r| r.id.is_type(vault::VAULT_TYPE)) {
        let stored = arm
            .state()
            .store
            .document(DELETED_VAULTS, &deleted::key(r.id.name()))
            .await
            .map_err(ArmError::from)?;
        previous.extend(stored);
    }
    Ok(deleted::soft_delete(
        removed,
        &previous,
        arm.state().clock.now(),
    ))
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
    let request = &call.json()?;
    let mode = if call.method == Method::PATCH {
        ChangeMode::Patch
    } else {
        ChangeMode::Put
    };
    let create_mode = match mode {
        ChangeMode::Put => CreateMode::of(request).map_err(refused_deleted)?,
        ChangeMode::Patch => CreateMode::Default,
    };
    let uri = format!(
        "{}/",
        arm.state()
            .endpoints()
            .vault(&id.name().to_ascii_lowercase())
    );
    let ctx = &VaultContext {
        tenant_id: arm.state().directory.tenant.id,
        vault_uri: &uri,
    };
    arm.transact(|_| async move {
        let group = arm.group(id).await?;
        let existing = arm
            .state()
            .store
            .resource(id)
            .await
            .map_err(ArmError::from)?;
        let named = (kind.name.check)(id.name());
        if named && (existing.is_none() || create_mode == CreateMode::Recover) {
            let found = live_deleted(arm, id.name()).await?;
            let decision = deleted::check_create(
                id,
                create_mode,
                existing.is_some(),
                found.as_ref().map(|(_, d)| d),
            )
            .map_err(refused_deleted)?;
            if let (CreateDecision::Recover, Some((stored, doc))) = (decision, found) {
                if name_taken(arm, id).await? {
                    return Err(refused(VaultRuleError::NameInUse(id.name().to_string())));
                }
                return recover(arm, call, &group, &stored, &doc);
            }
        }
        if existing.is_none() && named && name_taken(arm, id).await? {
            return Err(refused(VaultRuleError::NameInUse(id.name().to_string())));
        }
        let request = match (mode, &existing) {
            (ChangeMode::Patch, Some(e)) => with_properties(
                request,
                vault::validate_patch(request, &e.body, ctx).map_err(refused)?,
            )?,
            // The generic plan answers a PATCH of nothing with 404.
            (ChangeMode::Patch, None) => request.clone(),
            (ChangeMode::Put, e) => with_properties(
                request,
                vault::validate_put(request, e.as_ref().map(|e| &e.body), ctx)
                    .map_err(refused)?,
            )?,
        };
        if let Some(e) = &existing {
            if vault::switches_permission_model(&e.body, &request["properties"]) {
                arm.authorize_because(
                    call,
                    vault::PERMISSION_MODEL_ACTION,
                    id,
                    &format!(
                        "Switching a vault's permission model (properties.enableRbacAuthorization) needs '{}' at the vault as well as '{}'.",
                        vault::PERMISSION_MODEL_ACTION,
                        kind.action("write")
                    ),
                )
                .await?;
            }
        }
        let view = ResourceView {
            group: &group,
            existing: existing.as_ref(),
            identities: &BTreeMap::new(),
        };
        let plan = arm.with_context(call, |ctx| {
            plan::resources::write(ctx, kind, id, &request, view, mode)
        })?;
        Ok(committing(plan))
    })
    .await
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
    let request = &call.json()?;
    let vault_id = &vault_id;
    arm.transact(|_| async move {
        let group = arm.group(vault_id).await?;
        let existing: ResourceRecord = arm
            .state()
            .store
            .resource(vault_id)
            .await
            .map_err(ArmError::from)?
            .ok_or_else(|| ArmError::ResourceNotFound {
                resource: format!("{}/{}", kind.full_type(), vault_id.name()),
                group: group.id.name().to_string(),
            })?;
        let (properties, named) =
            vault::apply_access_policy_operation(&existing.body, operation.as_str(), request)
                .map_err(refused)?;
        let patch = json!({ "properties": properties });
        let view = ResourceView {
            group: &group,
            existing: Some(&existing),
            identities: &BTreeMap::new(),
        };
        let mut plan = arm.with_context(call, |ctx| {
            plan::resources::write(ctx, kind, vault_id, &patch, view, ChangeMode::Patch)
        })?;
        plan.status = 200;
        plan.body = Some(vault::access_policy_response(
            existing.id.as_str(),
            existing.body["location"].as_str(),
            operation,
            &named,
        ));
        Ok(committing(plan))
    })
    .await
}

/// Restores the deleted vault `doc` (stored as `stored`) in `group`: the resource as it was,
/// in one batch with the record's removal and the activity-log entry of a vault write.
fn recover(
    arm: &Arm,
    call: &Call,
    group: &ResourceRecord,
    stored: &DocumentRecord,
    doc: &DeletedVaultDoc,
) -> Result<Step<Response>, ApiError> {
    if plan::is_deleting(group) {
        return Err(ArmError::ResourceGroupBeingDeleted(group.id.name().to_string()).into());
    }
    let now = arm.state().clock.now();
    let (record, expect, changes) = deleted::recover(stored, doc, now).ok_or_else(|| {
        ApiError::internal(
            lanyard_platform::Dialect::Arm,
            &format!("the deleted-vault record `{}` is unreadable", stored.key),
        )
    })?;
    let mut batch = Batch { expect, changes };
    batch.expect.push(Expect::ResourceUnchanged(
        group.id.clone(),
        group.updated_at,
    ));
    let body = super::resources::presented(arm, &record);
    let id = record.id.clone();
    batch.push(Change::PutResource(record));
    batch.push(arm.with_context(call, |ctx| {
        ctx.activity(&format!("{}/write", vault::VAULT_TYPE), &id, 200, None)
    }));
    Ok(Step::Commit(batch, super::json(200, Some(&body))))
}

/// `GET /subscriptions/{s}/providers/Microsoft.KeyVault/deletedVaults`: the subscription's
/// deleted vaults (expired ones are purged on the way).
pub async fn list_deleted(
    arm: &Arm,
    call: &Call,
    subscription: &str,
) -> Result<Response, ApiError> {
    const PAGE: u32 = 1000;
    arm.authorize(
        call,
        deleted::READ_ACTION,
        &ResourceId::subscription(subscription),
    )
    .await?;
    let now = arm.state().clock.unix();
    let mut values = Vec::new();
    let mut after = None;
    loop {
        let page = arm
            .state()
            .store
            .documents(&DocumentQuery {
                collection: DELETED_VAULTS.into(),
                prefix: None,
                after: after.clone(),
                limit: Some(PAGE),
            })
            .await
            .map_err(ArmError::from)?;
        let full = page.len() == PAGE as usize;
        after = page.last().map(|d| d.key.clone());
        for stored in page {
            let Some(doc) = DeletedVaultDoc::from_document(&stored) else {
                continue;
            };
            if doc.expired(now) {
                purge_expired(arm, &stored).await?;
                continue;
            }
            if doc.subscription().eq_ignore_ascii_case(subscription) {
                values.push(deleted::shape(&doc));
            }
        }
        if !full {
            break;
        }
    }
    Ok(super::json(200, Some(&shape::page(values, None))))
}

/// The deleted vault `name` in `location` of `subscription`, or 404 `DeletedVaultNotFound`.
async fn find_deleted(
    arm: &Arm,
    subscription: &str,
    location: &str,
    name: &str,
) -> Result<(DocumentRecord, DeletedVaultDoc), ApiError> {
    live_deleted(arm, name)
        .await?
        .filter(|(_, d)| d.is(subscription, location, name))
        .ok_or_else(|| {
            refused_deleted(DeletedVaultError::NotFound {
                name: name.to_string(),
                location: location.to_string(),
            })
        })
}

/// `GET .../locations/{location}/deletedVaults/{name}`.
pub async fn get_deleted(
    arm: &Arm,
    call: &Call,
    subscription: &str,
    location: &str,
    name: &str,
) -> Result<Response, ApiError> {
    let scope = deleted::deleted_vault_id(subscription, location, name);
    arm.authorize(call, deleted::READ_ACTION, &scope).await?;
    let (_, doc) = find_deleted(arm, subscription, location, name).await?;
    Ok(super::json(200, Some(&deleted::shape(&doc))))
}

/// `POST .../locations/{location}/deletedVaults/{name}/purge`: 202, and the vault is gone
/// for good (record, documents, data key), unless purge protection is on.
pub async fn purge_deleted(
    arm: &Arm,
    call: &Call,
    subscription: &str,
    location: &str,
    name: &str,
) -> Result<Response, ApiError> {
    let scope = deleted::deleted_vault_id(subscription, location, name);
    arm.authorize(call, deleted::PURGE_ACTION, &scope).await?;
    arm.transact(|_| async move {
        let (stored, doc) = find_deleted(arm, subscription, location, name).await?;
        deleted::check_purge(&doc).map_err(refused_deleted)?;
        let (expect, changes) = deleted::purge(&stored);
        let mut batch = Batch { expect, changes };
        batch.push(arm.with_context(call, |ctx| {
            ctx.activity(deleted::PURGE_ACTION, &doc.id(), 200, None)
        }));
        Ok(Step::Commit(batch, super::json(202, None)))
    })
    .await
}
