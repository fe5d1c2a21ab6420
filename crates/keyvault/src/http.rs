//! The router and its one thin handler: resolve the vault, authenticate, route, authorize,
//! read the body, call [`Secrets`], shape the answer.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use lanyard_platform::{authn, AppState, VaultName};
use lanyard_token::Validator;
use serde_json::json;

use crate::authorize::{self, VaultRef};
use crate::challenge;
use crate::errors::KvError;
use crate::resolve::VaultDirectory;
use crate::route::{self, Operation};
use crate::secrets::Secrets;
use crate::wire::{self, encode_token, page, Shape};
use lanyard_platform::coalesce::Reads;

/// Largest request body but for restore: a value of 25 KB, JSON-escaped, with tags.
const MAX_BODY: usize = 256 * 1024;
/// Largest restore body: a backup of many versions.
const MAX_RESTORE_BODY: usize = 32 * 1024 * 1024;

/// The data plane's shared state.
#[derive(Clone)]
pub struct KeyVault(Arc<Inner>);

struct Inner {
    state: AppState,
    validator: Validator,
    /// `https://vault.{domain}[:{port}]`: the challenge's `resource`.
    audience: String,
    vaults: VaultDirectory,
    reads: Reads,
}

impl KeyVault {
    pub fn new(state: AppState) -> Self {
        let audience = state.endpoints().vault_audience();
        let validator = state.tokens.validator(challenge::audiences(&audience));
        Self(Arc::new(Inner {
            state,
            validator,
            audience,
            vaults: VaultDirectory::new(),
            reads: Reads::new(),
        }))
    }
}

/// The vault hosts' routes. The vault name arrives as a [`VaultName`] request extension.
pub fn router(state: AppState) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(KeyVault::new(state))
}

async fn handle(State(kv): State<KeyVault>, request: Request) -> Response {
    match serve(&kv, request).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn serve(kv: &KeyVault, request: Request) -> Result<Response, KvError> {
    let state = &kv.0.state;
    let name = request
        .extensions()
        .get::<VaultName>()
        .map(|v| v.0.clone())
        .ok_or_else(|| KvError::PathNotFound(request.uri().path().to_string()))?;
    let vault = kv.0.vaults.find(state, &name).await?;
    let caller =
        authn::authenticate(&state.tokens, &kv.0.validator, request.headers()).map_err(|f| {
            challenge::unauthorized(
                &f,
                &state.endpoints().localhost(),
                vault.settings.tenant_id,
                &kv.0.audience,
            )
        })?;
    let op = route::parse(request.method(), request.uri().path())?;
    let query = request.uri().query().map(str::to_string);
    authorize::check(
        state,
        &VaultRef {
            id: &vault.record.id,
            name: &vault.name,
            settings: &vault.settings,
        },
        &caller,
        &op,
    )?;
    let limit = if op == Operation::Restore {
        MAX_RESTORE_BODY
    } else {
        MAX_BODY
    };
    let body = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| KvError::BodyTooLarge(limit))?;
    let vault = kv.0.vaults.unlock(state, vault).await?;

    let secrets = Secrets {
        state,
        vault: &vault,
        reads: &kv.0.reads,
    };
    let shape = Shape {
        vault_url: &vault.url,
        settings: &vault.settings,
    };
    let list_query = || wire::parse_query(query.as_deref());
    let answer = match &op {
        Operation::Set(n) => {
            let request = wire::parse_set(&body)?;
            let meta = secrets.set(n, &request).await?;
            shape.bundle(&meta, Some(&request.value))
        }
        Operation::Get(n, v) => {
            let (meta, value) = secrets.get(n, v.as_ref()).await?;
            shape.bundle(&meta, Some(&value))
        }
        Operation::Update(n, v) => {
            let request = wire::parse_update(&body)?;
            shape.bundle(&secrets.update(n, v.as_ref(), &request).await?, None)
        }
        Operation::List => {
            let q = list_query()?;
            let p = secrets.list(q.after.as_deref(), q.max).await?;
            page(
                p.items.iter().map(|m| shape.item(m, false)).collect(),
                p.next
                    .map(|t| shape.next_link("/secrets", &q, &encode_token(&t))),
            )
        }
        Operation::Versions(n) => {
            let q = list_query()?;
            let p = secrets.versions(n, q.after.as_deref(), q.max).await?;
            let path = format!("/secrets/{n}/versions");
            page(
                p.items.iter().map(|m| shape.item(m, true)).collect(),
                p.next
                    .map(|t| shape.next_link(&path, &q, &encode_token(&t))),
            )
        }
        Operation::Delete(n) => shape.deleted_bundle(&secrets.delete(n).await?),
        Operation::Backup(n) => json!({ "value": secrets.backup(n).await? }),
        Operation::Restore => {
            let blob = wire::parse_restore(&body)?;
            shape.bundle(&secrets.restore(&blob).await?, None)
        }
        Operation::ListDeleted => {
            let q = list_query()?;
            let p = secrets.list_deleted(q.after.as_deref(), q.max).await?;
            page(
                p.items.iter().map(|d| shape.deleted_item(d)).collect(),
                p.next
                    .map(|t| shape.next_link("/deletedsecrets", &q, &encode_token(&t))),
            )
        }
        Operation::GetDeleted(n) => shape.deleted_bundle(&secrets.get_deleted(n).await?),
        Operation::Recover(n) => shape.bundle(&secrets.recover(n).await?, None),
        Operation::Purge(n) => {
            secrets.purge(n).await?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    };
    Ok((StatusCode::OK, Json(answer)).into_response())
}
