//! The vault a host names: its resource (found by name through a small directory), its
//! settings, and its data key, created on the vault's first data-plane request.
//!
//! Vault names are global, as in Azure: `{name}.vault.{domain}` is the vault of that name in
//! any subscription. The name → id directory is rebuilt from the store when a name is
//! missing and either a commit happened since the last build or the build is a few seconds
//! old (another server sharing the database may have created it), so a miss is never
//! remembered for longer than that.
//!
//! What a request would otherwise read from the store each time is kept in memory, bounded:
//! - the vault's resource record and the settings parsed from it (permission model, access
//!   policies, tenant), stamped with [`AppState::generation`]: an entry answers only while
//!   no commit that puts or deletes a resource or principal has happened since it was read
//!   (the generation also advances for such commits by other servers sharing the database),
//!   and for at most [`RECORD_MAX_AGE_SECS`] seconds. So permission-model and policy
//!   changes apply to the next request, and a deleted vault is not found by it;
//! - the vault's layout and unwrapped data key, per (vault id, the resource's `created_at`):
//!   the data-plane record is made once for a resource and never changes while that
//!   resource exists, and a vault deleted and created again has a new `created_at`, so its
//!   new data key is read (or made) afresh.
//!
//! Secrets themselves are never cached here: every operation reads them from the store.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use lanyard_domain::ResourceId;
use lanyard_platform::{transact_checked, AppState, Retry, Step};
use lanyard_storage::{
    Batch, Change, DocumentRecord, Expect, ResourceQuery, ResourceRecord, StoreError,
};
use lanyard_token::DataKey;

use crate::errors::KvError;
use crate::stored::{data_key_aad, Layout, VaultDoc, SECRETS, VAULTS};
use crate::vault::{VaultSettings, VAULT_TYPE};
use lanyard_platform::bounded::{Bounded, Stamped};

/// A cache build younger than this is trusted for misses (unless a local commit happened).
const REBUILD_AFTER_SECS: i64 = 2;
/// A cached vault record is read again after this long even if no commit was seen.
pub const RECORD_MAX_AGE_SECS: i64 = 2;
/// Vault records kept at most.
pub const RECORD_CAPACITY: usize = 4096;
/// Unwrapped data keys kept at most.
pub const KEY_CAPACITY: usize = 1024;
const LIST_PAGE: u32 = 1000;
/// How creating a vault's data key retries: up to 4 commits (the last lost race is
/// reworded with the vault's id).
const RETRY: Retry<KvError> = Retry {
    attempts: 4,
    backoff: false,
    fail: KvError::Store,
};

/// What the data plane needs of a vault's resource.
pub struct VaultInfo {
    pub record: ResourceRecord,
    /// The name as the resource id spells it.
    pub name: String,
    /// `https://{name}.vault.{domain}[:{port}]`: the base of every id this vault returns.
    pub url: String,
    pub subscription: String,
    pub settings: VaultSettings,
}

impl VaultInfo {
    pub fn id(&self) -> &ResourceId {
        &self.record.id
    }
}

/// A vault instance's key layout and unwrapped data key.
pub struct VaultKey {
    pub layout: Layout,
    pub data_key: DataKey,
}

/// A vault ready to serve a request: its resource and its data key.
pub struct ResolvedVault {
    info: Arc<VaultInfo>,
    pub key: Arc<VaultKey>,
}

impl ResolvedVault {
    pub fn new(info: Arc<VaultInfo>, key: Arc<VaultKey>) -> Self {
        Self { info, key }
    }
}

impl Deref for ResolvedVault {
    type Target = VaultInfo;

    fn deref(&self) -> &VaultInfo {
        &self.info
    }
}

#[derive(Default)]
struct Names {
    by_name: HashMap<String, ResourceId>,
    built: bool,
    generation: u64,
    built_at: i64,
}

/// A cached vault record and when (by the clock) it was read.
#[derive(Clone)]
struct Record {
    info: Arc<VaultInfo>,
    read_at: i64,
}

/// `(vault id key, resource created_at in Unix nanoseconds)`: what a data key belongs to.
type KeyOf = (String, i128);

/// Finds vaults by name, and keeps what it found (see the module documentation).
pub struct VaultDirectory {
    names: RwLock<Names>,
    records: RwLock<Bounded<String, Stamped<Record>>>,
    keys: RwLock<Bounded<KeyOf, Arc<VaultKey>>>,
}

impl Default for VaultDirectory {
    fn default() -> Self {
        Self::with_capacity(RECORD_CAPACITY, KEY_CAPACITY)
    }
}

impl VaultDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory keeping at most `records` vault records and `keys` data keys.
    pub fn with_capacity(records: usize, keys: usize) -> Self {
        Self {
            names: RwLock::default(),
            records: RwLock::new(Bounded::new(records)),
            keys: RwLock::new(Bounded::new(keys)),
        }
    }

    /// The cached record of `name` (lower-cased), if it is still current.
    fn cached_record(&self, state: &AppState, name: &str) -> Option<Arc<VaultInfo>> {
        let generation = state.generation();
        let now = state.clock.unix();
        let records = self.records.read().unwrap_or_else(|p| p.into_inner());
        records
            .get(name)?
            .current(generation)
            .filter(|r| (0..RECORD_MAX_AGE_SECS).contains(&(now - r.read_at)))
            .map(|r| Arc::clone(&r.info))
    }

    fn keep_record(&self, name: String, generation: u64, read_at: i64, info: Arc<VaultInfo>) {
        self.records
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                name,
                Stamped {
                    generation,
                    value: Record { info, read_at },
                },
            );
    }

    fn forget_record(&self, name: &str) {
        self.records
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// Number of vault records and data keys held (for tests and diagnostics).
    pub fn held(&self) -> (usize, usize) {
        let records = self.records.read().unwrap_or_else(|p| p.into_inner()).len();
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).len();
        (records, keys)
    }

    fn cached(&self, name: &str) -> Option<ResourceId> {
        self.names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_name
            .get(name)
            .cloned()
    }

    fn rebuild_due(&self, state: &AppState) -> bool {
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
        !names.built
            || names.generation != state.generation()
            || state.clock.unix() - names.built_at >= REBUILD_AFTER_SECS
    }

    async fn rebuild(&self, state: &AppState) -> Result<(), StoreError> {
        let generation = state.generation();
        let mut found: HashMap<String, ResourceRecord> = HashMap::new();
        let mut after = None;
        loop {
            let page = state
                .store
                .resources(&ResourceQuery {
                    resource_type: Some(VAULT_TYPE.to_string()),
                    after: after.clone(),
                    limit: Some(LIST_PAGE),
                    ..Default::default()
                })
                .await?;
            let full = page.len() == LIST_PAGE as usize;
            after = page.last().map(|r| r.id.key().to_string());
            for record in page {
                let name = record.id.name().to_ascii_lowercase();
                // Should two vaults share a name, the older one keeps it.
                let keep_existing = found
                    .get(&name)
                    .is_some_and(|other| other.created_at <= record.created_at);
                if !keep_existing {
                    found.insert(name, record);
                }
            }
            if !full {
                break;
            }
        }
        let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
        names.by_name = found.into_iter().map(|(k, r)| (k, r.id)).collect();
        names.built = true;
        names.generation = generation;
        names.built_at = state.clock.unix();
        Ok(())
    }

    async fn record(
        &self,
        state: &AppState,
        name: &str,
    ) -> Result<Option<ResourceRecord>, KvError> {
        let fetch =
            |id: ResourceId| async move {
                Ok::<_, KvError>(
                    state.store.resource(&id).await?.filter(|r| {
                        r.id.is_type(VAULT_TYPE) && r.id.name().eq_ignore_ascii_case(name)
                    }),
                )
            };
        if let Some(id) = self.cached(name) {
            if let Some(record) = fetch(id).await? {
                return Ok(Some(record));
            }
        }
        if !self.rebuild_due(state) {
            return Ok(None);
        }
        self.rebuild(state).await?;
        match self.cached(name) {
            Some(id) => fetch(id).await,
            None => Ok(None),
        }
    }

    /// The vault called `name` (case-insensitive). Its data key is not touched until
    /// [`FoundVault::unlock`], which the caller does once the request is authorized.
    pub async fn find(&self, state: &AppState, name: &str) -> Result<FoundVault, KvError> {
        let name = name.to_ascii_lowercase();
        if let Some(info) = self.cached_record(state, &name) {
            return Ok(FoundVault { info });
        }
        // Read before the store: a commit during the read leaves the entry already stale.
        let generation = state.generation();
        let read_at = state.clock.unix();
        let Some(record) = self.record(state, &name).await? else {
            self.forget_record(&name);
            return Err(KvError::VaultNotFound(name));
        };
        let info = Arc::new(VaultInfo {
            name: record.id.name().to_string(),
            url: state.endpoints().vault(&name),
            subscription: record.id.subscription_id().unwrap_or_default().to_string(),
            settings: VaultSettings::from_body(&record.body, state.directory.tenant.id),
            record,
        });
        self.keep_record(name, generation, read_at, Arc::clone(&info));
        Ok(FoundVault { info })
    }

    /// The layout and data key of the vault `info` describes: from memory when this
    /// resource's key was loaded before, else loaded (or on the vault's first use, created).
    pub async fn unlock(
        &self,
        state: &AppState,
        found: FoundVault,
    ) -> Result<ResolvedVault, KvError> {
        let record = &found.info.record;
        let of: KeyOf = (
            record.id.key().to_string(),
            record.created_at.unix_timestamp_nanos(),
        );
        let hit = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&of)
            .cloned();
        let key = match hit {
            Some(key) => key,
            None => {
                let (layout, data_key) = data_key(state, record).await?;
                let key = Arc::new(VaultKey { layout, data_key });
                self.keys
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(of, Arc::clone(&key));
                key
            }
        };
        Ok(ResolvedVault::new(found.info, key))
    }
}

/// A vault whose resource was found, before its data key is loaded.
pub struct FoundVault {
    info: Arc<VaultInfo>,
}

impl Deref for FoundVault {
    type Target = VaultInfo;

    fn deref(&self) -> &VaultInfo {
        &self.info
    }
}

fn corrupt(id: &ResourceId, what: &str) -> KvError {
    KvError::Internal(format!("the data-plane record of vault `{id}` {what}"))
}

/// The vault's instance and data key; made (or remade, dropping what a previous vault of the
/// same id left) when the stored record is missing or belongs to an earlier resource.
async fn data_key(state: &AppState, record: &ResourceRecord) -> Result<(Layout, DataKey), KvError> {
    let kek = state.tokens.kek();
    let id = &record.id;
    let created = record.created_at.unix_timestamp_nanos();
    let vault_remains = || async move {
        match state.store.resource(id).await? {
            Some(_) => Ok(()),
            None => Err(KvError::VaultNotFound(id.name().to_string())),
        }
    };
    let (layout, key, made) = transact_checked(state, RETRY, vault_remains, |_| async move {
        let stored = state.store.document(VAULTS, id.key()).await?;
        let previous = match stored {
            Some(DocumentRecord { version, body, .. }) => {
                let doc: VaultDoc =
                    serde_json::from_value(body).map_err(|_| corrupt(id, "is unreadable"))?;
                if doc.resource_created == created {
                    let wrapped = STANDARD
                        .decode(doc.wrapped_key.as_bytes())
                        .map_err(|_| corrupt(id, "has a malformed wrapped key"))?;
                    let key = DataKey::unwrap(kek, &wrapped, &data_key_aad(id, &doc.instance))
                        .map_err(|_| corrupt(id, "has a data key the key-encryption key cannot unwrap (was LANYARD_KEK changed?)"))?;
                    return Ok(Step::Done((Layout::new(id, &doc.instance), key, false)));
                }
                Some((version, doc))
            }
            None => None,
        };
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let key = DataKey::generate();
        let wrapped = key
            .wrap(kek, &data_key_aad(id, &instance))
            .map_err(|e| KvError::Internal(format!("wrapping a data key: {e}")))?;
        let doc = VaultDoc {
            resource_created: created,
            instance: instance.clone(),
            wrapped_key: STANDARD.encode(wrapped),
        };
        let body = serde_json::to_value(&doc).map_err(|e| KvError::Internal(e.to_string()))?;
        let mut batch = Batch::new().expect(Expect::ResourceExists(id.clone()));
        let next_version = match &previous {
            Some((version, old)) => {
                batch = batch.expect(Expect::DocumentVersion {
                    collection: VAULTS.into(),
                    key: id.key().to_string(),
                    version: *version,
                });
                batch.push(Change::DeleteDocumentsWithPrefix {
                    collection: SECRETS.into(),
                    prefix: Layout::new(id, &old.instance).all(),
                });
                version + 1
            }
            None => {
                batch = batch.expect(Expect::DocumentAbsent {
                    collection: VAULTS.into(),
                    key: id.key().to_string(),
                });
                1
            }
        };
        batch.push(Change::PutDocument(DocumentRecord {
            collection: VAULTS.into(),
            key: id.key().to_string(),
            version: next_version,
            body,
        }));
        // Another request may make it first, or the vault may go: then read again.
        Ok(Step::Commit(batch, (Layout::new(id, &instance), key, true)))
    })
    .await
    .map_err(|e| match e {
        KvError::Store(StoreError::Conflict(_)) => KvError::Store(StoreError::Conflict(format!(
            "the data key of vault `{id}` kept changing; retry"
        ))),
        e => e,
    })?;
    if made {
        tracing::info!(vault = %id, "vault data key created");
    }
    Ok((layout, key))
}
