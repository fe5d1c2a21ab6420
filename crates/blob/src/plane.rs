//! The plane: its state, its router, and the one entry point every request goes through
//! (authenticate, classify, find the account, hand over to the operation's handler).
//!
//! The account of a host is looked up in the name registry and kept in memory, stamped with
//! the platform's commit generation (which every resource write bumps, here or on another
//! server sharing the database), so a read costs no database round trip for the account.
//! An entry answers only while that generation is current and for at most
//! [`ACCOUNT_MAX_AGE_SECS`]; an account that does not exist is remembered for no longer
//! either, so one created on another server is found within that time. Both are bounded
//! ([`ACCOUNT_CACHE`], [`MISSING_CACHE`]), misses apart so that naming many absent accounts
//! cannot push out the ones in use.
//!
//! Small committed content (at most [`CONTENT_ITEM_MAX`] bytes per blob, [`CONTENT_CACHE_BYTES`]
//! in all) is kept too, by file name: a file's name is fresh for every write and its content
//! never changes after it is committed, so the blob's document, which is read from the store
//! on every request, says which content is current.

use std::future::Future;
use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use lanyard_domain::ResourceId;
use lanyard_platform::authn::Caller;
use lanyard_platform::{AccountName, AppState, Attempt, Retry, Step};
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
use lanyard_platform::bounded::Bounded;
use lanyard_platform::coalesce::Reads;

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

/// An account lookup and when it was made.
#[derive(Debug, Clone)]
struct Cached {
    generation: u64,
    read_at: i64,
    account: Option<Arc<Account>>,
}

impl Cached {
    fn current(&self, generation: u64, now: i64) -> bool {
        self.generation == generation && (0..ACCOUNT_MAX_AGE_SECS).contains(&(now - self.read_at))
    }
}

/// Accounts kept at most.
pub const ACCOUNT_CACHE: usize = 10_000;
/// Names found to have no account, kept at most.
pub const MISSING_CACHE: usize = 1_000;
/// An account lookup is made again after this long even if no commit was seen.
pub const ACCOUNT_MAX_AGE_SECS: i64 = 2;
/// Largest blob whose content is kept in memory.
pub const CONTENT_ITEM_MAX: u64 = 64 * 1024;
/// Content kept in memory at most, in bytes.
pub const CONTENT_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// What the handlers share.
pub struct Plane {
    pub state: AppState,
    pub files: FileStore,
    validator: Validator,
    challenge: String,
    accounts: RwLock<Bounded<String, Cached>>,
    missing: RwLock<Bounded<String, Cached>>,
    content: RwLock<Bounded<String, Bytes>>,
    /// Where reads of a blob's document join concurrent reads of the same document.
    pub reads: Reads,
}

impl Plane {
    pub fn new(state: AppState) -> Plane {
        let validator = state.tokens.validator(access::audiences(&state));
        Plane {
            files: file_store(&state),
            challenge: access::challenge(&state),
            validator,
            accounts: RwLock::new(Bounded::new(ACCOUNT_CACHE)),
            missing: RwLock::new(Bounded::new(MISSING_CACHE)),
            content: RwLock::new(Bounded::weighted(usize::MAX, CONTENT_CACHE_BYTES)),
            reads: Reads::new(),
            state,
        }
    }

    fn cached_account(&self, name: &str, generation: u64, now: i64) -> Option<Cached> {
        for map in [&self.accounts, &self.missing] {
            let hit = map
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .filter(|c| c.current(generation, now))
                .cloned();
            if hit.is_some() {
                return hit;
            }
        }
        None
    }

    /// The account called `name`: from memory while current, else from the name registry.
    pub async fn account(&self, name: &str) -> Result<Arc<Account>, BlobError> {
        // Read before the store: a commit during the read leaves the entry already stale.
        let generation = self.state.generation();
        let now = self.state.clock.unix();
        let cached = match self.cached_account(name, generation, now) {
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
                    read_at: now,
                    account,
                };
                let (keep, other) = if cached.account.is_some() {
                    (&self.accounts, &self.missing)
                } else {
                    (&self.missing, &self.accounts)
                };
                other
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(name);
                keep.write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.to_string(), cached.clone());
                cached
            }
        };
        cached
            .account
            .ok_or_else(|| BlobError::AccountNotFound(name.to_string()))
    }

    /// Numbers of accounts, misses and content bytes held (for tests and diagnostics).
    pub fn held(&self) -> (usize, usize, usize) {
        let accounts = self
            .accounts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        let missing = self.missing.read().unwrap_or_else(|p| p.into_inner()).len();
        let content = self
            .content
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .weight();
        (accounts, missing, content)
    }

    /// The whole content of the committed file `file` of `size` bytes, from memory when it
    /// is small and was read before. `None` when the blob is too large to keep.
    pub async fn small_content(&self, file: &str, size: u64) -> Option<std::io::Result<Bytes>> {
        if size > CONTENT_ITEM_MAX {
            return None;
        }
        let hit = self
            .content
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(file)
            .cloned();
        if let Some(bytes) = hit {
            return Some(Ok(bytes));
        }
        let read = self.files.read(file, 0, size).await;
        if let Ok(bytes) = &read {
            let weight = bytes.len();
            self.content
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert_weighted(file.to_string(), bytes.clone(), weight);
        }
        Some(read)
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

    /// Runs a write through the platform's write path: `attempt` reads and plans (see
    /// [`crate::plan`]); a lost race runs it again, up to `RETRIES` commits, after which
    /// the write fails as `contended()`.
    pub async fn transact<T, A, Fut>(&self, attempt: A) -> Result<T, BlobError>
    where
        A: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<Step<T>, BlobError>>,
    {
        lanyard_platform::transact(&self.plane.state, RETRY, attempt).await
    }

    pub fn account_name(&self) -> &str {
        &self.account.name
    }
}

/// How often a write is planned again after losing a race.
pub(crate) const RETRIES: u32 = 8;

const RETRY: Retry<BlobError> = Retry {
    attempts: RETRIES,
    backoff: false,
    fail: store_failure,
};

fn store_failure(e: StoreError) -> BlobError {
    match e {
        StoreError::Conflict(_) => contended(),
        e => BlobError::Store(e),
    }
}

/// A write that kept losing races.
pub(crate) fn contended() -> BlobError {
    BlobError::Store(StoreError::Unavailable(
        "too many concurrent writes to the same entity".into(),
    ))
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
