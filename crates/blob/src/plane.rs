//! The plane: its state, its router, and the one entry point every request goes through
//! (authenticate, classify, find the account, hand over to the operation's handler).
//!
//! The account of a host is looked up in the name registry and cached, stamped with the
//! platform's commit generation (which every resource write bumps), so a read costs no
//! database round trip for the account.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use lanyard_domain::ResourceId;
use lanyard_platform::authn::Caller;
use lanyard_platform::{AccountName, AppState};
use lanyard_storage::{Batch, Store, StoreError};
use lanyard_token::Validator;
use time::OffsetDateTime;

use crate::access::{self, Permission};
use crate::error::BlobError;
use crate::files::FileStore;
use crate::model::{decode, AccountEntry};
use crate::names::ACCOUNTS;
use crate::request::{self, Operation, Query};
use crate::{blobs, containers, headers};

/// The blob root of `state`'s data directory.
pub fn file_store(state: &AppState) -> FileStore {
    FileStore::new(state.config.data_dir.join("blobs"))
}

/// A storage account the request is for.
#[derive(Debug)]
pub struct Account {
    pub name: String,
    pub id: ResourceId,
}

#[derive(Debug, Clone)]
struct Cached {
    generation: u64,
    account: Option<Arc<Account>>,
}

/// Accounts cached at most; beyond it the cache starts over.
const ACCOUNT_CACHE: usize = 10_000;

/// What the handlers share.
pub struct Plane {
    pub state: AppState,
    pub files: FileStore,
    validator: Validator,
    challenge: String,
    accounts: RwLock<HashMap<String, Cached>>,
}

impl Plane {
    pub fn new(state: AppState) -> Plane {
        let validator = state.tokens.validator(access::audiences(&state));
        Plane {
            files: file_store(&state),
            challenge: access::challenge(&state),
            validator,
            accounts: RwLock::new(HashMap::new()),
            state,
        }
    }

    async fn account(&self, name: &str) -> Result<Arc<Account>, BlobError> {
        let generation = self.state.generation();
        let hit = self
            .accounts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .filter(|c| c.generation == generation)
            .cloned();
        let cached = match hit {
            Some(c) => c,
            None => {
                let account = match self.state.store.document(ACCOUNTS, name).await? {
                    None => None,
                    Some(doc) => {
                        let entry: AccountEntry = decode(&doc)?;
                        let id = ResourceId::parse(&entry.id).map_err(|e| {
                            BlobError::Corrupt(format!(
                                "account `{name}` has id `{}`: {e}",
                                entry.id
                            ))
                        })?;
                        Some(Arc::new(Account {
                            name: name.to_string(),
                            id,
                        }))
                    }
                };
                let cached = Cached {
                    generation,
                    account,
                };
                let mut map = self.accounts.write().unwrap_or_else(|p| p.into_inner());
                if map.len() >= ACCOUNT_CACHE {
                    map.clear();
                }
                map.insert(name.to_string(), cached.clone());
                cached
            }
        };
        cached
            .account
            .ok_or_else(|| BlobError::AccountNotFound(name.to_string()))
    }
}

/// What a handler gets: the plane, the account, the caller and the request headers.
pub struct Ctx<'a> {
    pub plane: &'a Plane,
    pub account: Arc<Account>,
    pub caller: Caller,
    pub headers: &'a HeaderMap,
}

impl Ctx<'_> {
    pub fn now(&self) -> OffsetDateTime {
        self.plane.state.clock.now()
    }

    pub fn store(&self) -> &dyn Store {
        self.plane.state.store.as_ref()
    }

    pub fn files(&self) -> &FileStore {
        &self.plane.files
    }

    pub fn container_scope(&self, container: &str) -> ResourceId {
        access::container_scope(&self.account.id, container)
    }

    /// Fails with `AuthorizationPermissionMismatch` unless the caller holds `permission`
    /// on `container`.
    pub fn require(&self, permission: Permission, container: &str) -> Result<(), BlobError> {
        access::require(
            &self.plane.state,
            &self.caller,
            permission,
            &self.container_scope(container),
        )
    }

    /// Whether the caller holds `permission` on `container`.
    pub fn holds(&self, permission: Permission, container: &str) -> bool {
        self.require(permission, container).is_ok()
    }

    pub fn require_service(&self, permission: Permission) -> Result<(), BlobError> {
        access::require(
            &self.plane.state,
            &self.caller,
            permission,
            &access::service_scope(&self.account.id),
        )
    }

    pub async fn commit(&self, batch: Batch) -> Result<(), BlobError> {
        self.plane
            .state
            .commit(batch)
            .await
            .map_err(BlobError::Store)
    }

    pub fn account_name(&self) -> &str {
        &self.account.name
    }
}

/// Whether `e` is a failed expectation (someone else wrote first).
pub fn is_conflict(e: &BlobError) -> bool {
    matches!(e, BlobError::Store(StoreError::Conflict(_)))
}

/// The blob hosts' routes. The account name arrives as a request extension.
pub fn router(state: AppState) -> Router {
    let plane = Arc::new(Plane::new(state));
    Router::new()
        .fallback(handle)
        .with_state(plane)
        .layer(middleware::from_fn(stamp))
}

const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-client-request-id");

/// Every response (errors too) says the version it speaks and echoes the client's id.
async fn stamp(request: Request, next: Next) -> Response {
    let version = headers::version(request.headers());
    let client_id = request.headers().get(CLIENT_REQUEST_ID).cloned();
    let mut response = next.run(request).await;
    let out = response.headers_mut();
    out.insert(headers::X_MS_VERSION, version);
    if let Some(id) = client_id {
        out.insert(CLIENT_REQUEST_ID, id);
    }
    response
}

async fn handle(State(plane): State<Arc<Plane>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    match serve(&plane, &parts, body).await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(error = %e, method = %parts.method, path = parts.uri.path(), "blob request failed");
            e.into_response()
        }
    }
}

async fn serve(plane: &Plane, parts: &Parts, body: Body) -> Result<Response, BlobError> {
    let query = Query::parse(parts.uri.query());
    let caller = access::authenticate(
        &plane.state,
        &plane.validator,
        &plane.challenge,
        &parts.headers,
        &query,
    )?;
    let operation = request::parse(&parts.method, parts.uri.path(), &query)?;
    let name = parts
        .extensions
        .get::<AccountName>()
        .map(|a| a.0.as_str())
        .unwrap_or_default();
    let account = plane.account(name).await?;
    let ctx = Ctx {
        plane,
        account,
        caller,
        headers: &parts.headers,
    };
    tracing::debug!(operation = operation.name(), account = name, "blob request");
    match operation {
        Operation::ListContainers(params) => containers::list(&ctx, &params).await,
        Operation::GetAccountInfo => containers::account_info(&ctx),
        Operation::CreateContainer(c) => containers::create(&ctx, &c).await,
        Operation::GetContainerProperties(c) => containers::properties(&ctx, &c).await,
        Operation::SetContainerMetadata(c) => containers::set_metadata(&ctx, &c).await,
        Operation::DeleteContainer(c) => containers::delete(&ctx, &c).await,
        Operation::ListBlobs(c, params) => crate::listing::list_blobs(&ctx, &c, &params).await,
        Operation::PutBlob(path) => blobs::put_blob(&ctx, &path, body).await,
        Operation::PutBlock(path, id) => blobs::put_block(&ctx, &path, &id, body).await,
        Operation::PutBlockList(path) => blobs::put_block_list(&ctx, &path, body).await,
        Operation::GetBlockList(path, list) => blobs::get_block_list(&ctx, &path, list).await,
        Operation::GetBlob { path, head } => blobs::get_blob(&ctx, &path, head).await,
        Operation::GetBlobMetadata(path) => blobs::get_metadata(&ctx, &path).await,
        Operation::SetBlobMetadata(path) => blobs::set_metadata(&ctx, &path).await,
        Operation::SetBlobProperties(path) => blobs::set_properties(&ctx, &path).await,
        Operation::DeleteBlob(path) => blobs::delete_blob(&ctx, &path).await,
    }
}
