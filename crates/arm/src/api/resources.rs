//! Resources of every served type (reads, lists, deletes), the generic listing of every
//! type at once (`/resources`), writes of resources that hold identities, and the system
//! identity of any resource.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use lanyard_domain::{ChangeMode, ResourceId, ScopeLevel};
use lanyard_platform::{ApiError, Step};
use lanyard_storage::{ResourceQuery, ResourceRecord};
use serde_json::{json, Value};

use super::groups::assignments_going;
use super::{committing, json, MAX_MARKS};
use crate::errors::ArmError;
use crate::kinds::{Family, Kind, UAI_TYPE};
use crate::plan::removal::{references_any, Cascade};
use crate::plan::resources::{named_identities, ResourceView};
use crate::request::Call;
use crate::shape::{self, ResolvedIdentity};
use crate::{listing, plan, Arm};

/// Default and largest page of a list.
const PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// One page of `query` (paged by `$skiptoken`, sized by `$top`), keeping what `visible`
/// admits.
pub(crate) async fn page_of_resources(
    arm: &Arm,
    call: &Call,
    mut query: ResourceQuery,
    visible: impl Fn(&ResourceRecord) -> bool,
) -> Result<Response, ApiError> {
    let size = call.page_size(PAGE, MAX_PAGE);
    query.after = call.param("$skiptoken").map(str::to_string);
    query.limit = Some(size);
    let page = arm
        .state()
        .store
        .resources(&query)
        .await
        .map_err(ArmError::from)?;
    let next = match page.last() {
        Some(last) if page.len() == size as usize => Some(call.next_link(last.id.key())),
        _ => None,
    };
    let values = page
        .iter()
        .filter(|r| visible(r))
        .map(|r| presented(arm, r))
        .collect();
    Ok(json(200, Some(&shape::page(values, next))))
}

/// A stored body as clients see it. The data-plane endpoints it names (a vault's `vaultUri`,
/// an account's `primaryEndpoints.blob`) follow the server's domain and port now, not those of
/// the server that wrote it: one restarted on another port, or a second server sharing the
/// database, must not send clients elsewhere.
pub(crate) fn presented(arm: &Arm, record: &ResourceRecord) -> Value {
    let mut body = record.body.clone();
    let endpoints = arm.state().endpoints();
    let name = record.id.name().to_ascii_lowercase();
    let (pointer, url) = if record.id.is_type(lanyard_blob::account::ACCOUNT_TYPE) {
        (
            "/properties/primaryEndpoints/blob",
            lanyard_blob::account::blob_endpoint(&endpoints.blob(&name)),
        )
    } else if record.id.is_type(lanyard_keyvault::vault::VAULT_TYPE) {
        (
            "/properties/vaultUri",
            format!("{}/", endpoints.vault(&name)),
        )
    } else {
        return body;
    };
    if let Some(slot) = body.pointer_mut(pointer) {
        *slot = Value::String(url);
    }
    body
}

fn not_found(kind: &Kind, id: &ResourceId) -> ApiError {
    ArmError::ResourceNotFound {
        resource: format!("{}/{}", kind.full_type(), id.name()),
        group: id.resource_group_name().unwrap_or_default().to_string(),
    }
    .into()
}

/// `GET` of a collection: top-level resources of a type in a subscription or group, or the
/// children of a resource.
pub async fn list(
    arm: &Arm,
    call: &Call,
    kind: &Kind,
    scope: &ResourceId,
) -> Result<Response, ApiError> {
    let read = kind.action("read");
    let query = if kind.is_child() {
        let parent = arm
            .state()
            .store
            .resource(scope)
            .await
            .map_err(ArmError::from)?;
        if parent.is_none() {
            arm.group(scope).await?;
            let parent_kind = crate::kinds::of(scope).unwrap_or(kind);
            return Err(not_found(parent_kind, scope));
        }
        ResourceQuery {
            parent: Some(scope.clone()),
            resource_type: Some(kind.full_type()),
            ..Default::default()
        }
    } else {
        if scope.level() == ScopeLevel::ResourceGroup {
            arm.group(scope).await?;
        }
        ResourceQuery {
            within: Some(scope.clone()),
            resource_type: Some(kind.full_type()),
            ..Default::default()
        }
    };
    let everything = arm.allowed(call, &read, scope);
    page_of_resources(arm, call, query, |r| {
        everything || arm.allowed(call, &read, &r.id)
    })
    .await
}

/// `GET /subscriptions/{s}[/resourceGroups/{rg}]/resources`: every top-level resource the
/// caller may read, of any type, filtered and paged as [`crate::listing`] says. Pages hold
/// `$top` resources (fewer only on the last); `nextLink` continues after the last record
/// examined.
pub async fn list_generic(
    arm: &Arm,
    call: &Call,
    scope: &ResourceId,
) -> Result<Response, ApiError> {
    /// Records read from the store per round while filling a page.
    const ROUND: u32 = 500;
    if scope.level() == ScopeLevel::ResourceGroup {
        arm.group(scope).await?;
    }
    let filter = listing::ResourceFilter::parse(call.param("$filter").unwrap_or_default())?;
    let size = listing::top(call.param("$top"))? as usize;
    let expand = listing::Expand::parse(call.param("$expand"));
    let mut after = call
        .param("$skiptoken")
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let mut values = Vec::new();
    let mut next = None;
    'fill: loop {
        let round = arm
            .state()
            .store
            .resources(&ResourceQuery {
                within: Some(scope.clone()),
                resource_type: filter.resource_type().map(str::to_string),
                after: after.clone(),
                limit: Some(ROUND),
                ..Default::default()
            })
            .await
            .map_err(ArmError::from)?;
        let exhausted = round.len() < ROUND as usize;
        let count = round.len();
        for (i, record) in round.into_iter().enumerate() {
            after = Some(record.id.key().to_string());
            let listed = listing::shows(&record)
                && filter.matches(&record)
                && listing::visible(&record, |action, id| arm.allowed(call, action, id));
            if !listed {
                continue;
            }
            values.push(listing::generic(&record, expand));
            if values.len() == size {
                if !(exhausted && i + 1 == count) {
                    next = after.as_deref().map(|key| call.next_link(key));
                }
                break 'fill;
            }
        }
        if exhausted {
            break;
        }
    }
    Ok(json(200, Some(&shape::page(values, next))))
}

pub async fn get(
    arm: &Arm,
    call: &Call,
    kind: &Kind,
    id: &ResourceId,
) -> Result<Response, ApiError> {
    arm.authorize(call, &kind.action("read"), id).await?;
    arm.group(id).await?;
    let record = arm
        .state()
        .store
        .resource(id)
        .await
        .map_err(ArmError::from)?
        .ok_or_else(|| not_found(kind, id))?;
    Ok(json(200, Some(&presented(arm, &record))))
}

/// `PUT`/`PATCH` of a resource holding identities. Attaching a user-assigned identity needs
/// `assign/action` on it as well as write here.
pub async fn write(
    arm: &Arm,
    call: &Call,
    kind: &Kind,
    id: &ResourceId,
) -> Result<Response, ApiError> {
    let action = kind.action("write");
    arm.authorize(call, &action, id).await?;
    let request = &call.json()?;
    let mode = if call.method == Method::PATCH {
        ChangeMode::Patch
    } else {
        ChangeMode::Put
    };
    let named = &named_identities(request);
    let action = &action;
    arm.transact(|_| async move {
        let group = arm.group(id).await?;
        let store = &arm.state().store;
        let existing = store.resource(id).await.map_err(ArmError::from)?;
        let mut identities = BTreeMap::new();
        for uai in named {
            if let Some(r) = store.resource(uai).await.map_err(ArmError::from)? {
                if r.id.is_type(UAI_TYPE) {
                    identities.insert(r.id.key().to_string(), r);
                }
            }
        }
        let view = ResourceView {
            group: &group,
            existing: existing.as_ref(),
            identities: &identities,
        };
        let account = storage_account(arm, id).await?;
        let mut plan = arm.with_context(call, |ctx| {
            plan::resources::write(ctx, kind, id, request, view, mode)
        })?;
        if let Some(registration) = account {
            let blob_host = arm.state().endpoints().blob(id.name());
            lanyard_blob::account::complete_write(
                &mut plan.batch,
                plan.body.as_mut(),
                id,
                registration,
                &blob_host,
            );
        }
        arm.authorize_linked(call, action, id, &plan).await?;
        Ok(committing(plan))
    })
    .await
}

/// For a storage account, the registration of its name (which must be free or its own).
async fn storage_account(
    arm: &Arm,
    id: &ResourceId,
) -> Result<Option<lanyard_blob::account::Registration>, ApiError> {
    if !id.is_type(lanyard_blob::account::ACCOUNT_TYPE) {
        return Ok(None);
    }
    let holder = lanyard_blob::account::holder(arm.state().store.as_ref(), id.name())
        .await
        .map_err(ArmError::from)?;
    lanyard_blob::account::registration(id, holder.as_ref())
        .map(Some)
        .map_err(|e| {
            ApiError::arm(
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
                e.code(),
                e.message(),
            )
        })
}

/// `DELETE` of any served resource: 200 when deleted, 204 when there was nothing.
pub async fn delete(
    arm: &Arm,
    call: &Call,
    kind: &Kind,
    id: &ResourceId,
) -> Result<Response, ApiError> {
    arm.authorize(call, &kind.action("delete"), id).await?;
    let (response, removed) = arm
        .transact(|attempt| async move {
            arm.group(id).await?;
            let store = &arm.state().store;
            let Some(record) = store.resource(id).await.map_err(ArmError::from)? else {
                return Ok(Step::Done((StatusCode::NO_CONTENT.into_response(), None)));
            };
            if let Some(mark) = arm.with_context(call, |ctx| plan::removal::mark(ctx, &record)) {
                if attempt.prepared >= MAX_MARKS {
                    return Err(ArmError::Conflict.into());
                }
                return Ok(Step::Then(mark));
            }
            let removed = std::slice::from_ref(&record);
            let assignments = if kind.family == Family::FederatedCredential {
                Vec::new()
            } else {
                assignments_going(arm, &record.id, removed).await?
            };
            let referencing = if kind.family == Family::UserAssignedIdentity {
                let gone = BTreeSet::from([record.id.key().to_string()]);
                let subscription =
                    ResourceId::subscription(record.id.subscription_id().unwrap_or_default());
                arm.resources_within(&subscription)
                    .await?
                    .into_iter()
                    .filter(|r| references_any(r, &gone))
                    .collect()
            } else {
                Vec::new()
            };
            let (kept_expect, kept) = super::vaults::soft_delete(arm, removed).await?;
            let mut plan = arm.with_context(call, |ctx| {
                plan::removal::delete_resource(
                    ctx,
                    &record,
                    Cascade {
                        assignments: &assignments,
                        referencing: &referencing,
                    },
                )
            });
            plan.batch
                .changes
                .extend(lanyard_blob::account::removal(removed));
            // Vaults are soft-deleted: their documents stay, a deleted-vault record is kept.
            plan.batch.expect.extend(kept_expect);
            plan.batch.changes.extend(kept);
            let response = json(plan.status, plan.body.as_ref());
            Ok(Step::Commit(plan.batch, (response, Some(record))))
        })
        .await?;
    if lanyard_blob::account::removes_accounts(removed.as_slice()) {
        lanyard_blob::account::sweep_accounts(arm.state());
    }
    Ok(response)
}

/// `GET {scope}/providers/Microsoft.ManagedIdentity/identities/default`: the system-assigned
/// identity of the resource at `scope`.
pub async fn system_identity(
    arm: &Arm,
    call: &Call,
    scope: &ResourceId,
) -> Result<Response, ApiError> {
    let id = scope.with_provider("Microsoft.ManagedIdentity", "identities", "default");
    arm.authorize(call, "Microsoft.ManagedIdentity/identities/read", &id)
        .await?;
    let missing = || -> ApiError {
        ArmError::ResourceNotFound {
            resource: "Microsoft.ManagedIdentity/identities/default".into(),
            group: scope.resource_group_name().unwrap_or_default().to_string(),
        }
        .into()
    };
    if scope.level() != ScopeLevel::Resource {
        return Err(missing());
    }
    arm.group(scope).await?;
    let store = &arm.state().store;
    let record = store
        .resource(scope)
        .await
        .map_err(ArmError::from)?
        .ok_or_else(missing)?;
    let principal_id = ResolvedIdentity::from_body(&record.body)
        .system
        .ok_or_else(missing)?;
    let principal = store
        .principal(principal_id)
        .await
        .map_err(ArmError::from)?
        .ok_or_else(missing)?;
    let body = json!({
        "id": format!("{}/providers/Microsoft.ManagedIdentity/identities/default", record.id),
        "name": "default",
        "type": "Microsoft.ManagedIdentity/identities",
        "location": record.body.get("location"),
        "tags": {},
        "properties": {
            "tenantId": principal.tenant_id.to_string(),
            "principalId": principal.object_id.to_string(),
            "clientId": principal.client_id().map(|c| c.to_string()),
        }
    });
    Ok(json(200, Some(&body)))
}
