//! The secret operations over the store, for one resolved vault.
//!
//! Every write is one batch that states what it read ([`Expect`]s on the documents and on
//! the vault's resource), so concurrent writers never lose an update: a batch whose
//! expectations fail is planned again from a fresh read (the platform's write path,
//! [`lanyard_platform::transact()`]).
//!
//! Retention: a deleted secret whose `scheduledPurgeDate` has passed (by the injected clock)
//! is purged when it is next read (get, list, set, recover, restore), and never returned.
//! Values are sealed under the vault's data key with associated data naming the vault
//! instance, the secret and the version, so a sealed value copied elsewhere does not open.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::future::Future;

use lanyard_platform::{transact_checked, AppState, Attempt, Retry, Step};
use lanyard_storage::{Batch, Change, DocumentQuery, DocumentRecord, Expect, StoreError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backup::{self, BackedUpVersion, Contents};
use crate::errors::KvError;
use crate::names::{SecretName, SecretVersion};
use crate::resolve::ResolvedVault;
use crate::stored::{DeletedDoc, LiveDoc, SecretMeta, VersionDoc, SECRETS};
use crate::wire::{SecretValue, SetSecret, UpdateSecret};
use lanyard_platform::coalesce::Reads;

/// How a secret write retries: up to 8 commits, then the last lost race is an error.
const RETRY: Retry<KvError> = Retry {
    attempts: 8,
    backoff: false,
    fail: store_failure,
};
const READ_PAGE: u32 = 500;

/// A read document: its version and body.
type Read<T> = Option<(i64, T)>;

/// A page of results and the key to continue after, when there may be more.
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// The secrets of one vault.
pub struct Secrets<'a> {
    pub state: &'a AppState,
    pub vault: &'a ResolvedVault,
    /// Where reads of a secret's value join concurrent reads of the same document.
    pub reads: &'a Reads,
}

fn expect_as_read<T>(key: &str, read: &Read<T>) -> Expect {
    match read {
        Some((version, _)) => Expect::DocumentVersion {
            collection: SECRETS.into(),
            key: key.to_string(),
            version: *version,
        },
        None => Expect::DocumentAbsent {
            collection: SECRETS.into(),
            key: key.to_string(),
        },
    }
}

fn put<T: Serialize>(key: &str, version: i64, body: &T) -> Result<Change, KvError> {
    Ok(Change::PutDocument(DocumentRecord {
        collection: SECRETS.into(),
        key: key.to_string(),
        version,
        body: serde_json::to_value(body).map_err(|e| KvError::Internal(e.to_string()))?,
    }))
}

fn delete(key: &str) -> Change {
    Change::DeleteDocument {
        collection: SECRETS.into(),
        key: key.to_string(),
    }
}

fn next_version<T>(read: &Read<T>) -> i64 {
    read.as_ref().map_or(1, |(v, _)| v + 1)
}

fn decode<T: DeserializeOwned>(doc: DocumentRecord) -> Result<(i64, T), KvError> {
    let version = doc.version;
    serde_json::from_value(doc.body)
        .map(|body| (version, body))
        .map_err(|_| {
            KvError::Internal(format!(
                "stored secret document `{}` is unreadable",
                doc.key
            ))
        })
}

fn store_failure(e: StoreError) -> KvError {
    match e {
        StoreError::Conflict(_) => KvError::Store(StoreError::Conflict(
            "the secret kept changing while this request was applied; retry".into(),
        )),
        e => e.into(),
    }
}

impl Secrets<'_> {
    fn now(&self) -> i64 {
        self.state.clock.unix()
    }

    fn batch(&self) -> Batch {
        Batch::new().expect(Expect::ResourceExists(self.vault.id().clone()))
    }

    /// Runs a write through the platform's write path: `attempt` reads and plans, its batch
    /// is committed, and after a lost race a vault that went away ends the write with 404;
    /// otherwise the attempt runs again.
    async fn transact<T, A, Fut>(&self, attempt: A) -> Result<T, KvError>
    where
        A: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<Step<T>, KvError>>,
    {
        transact_checked(self.state, RETRY, || self.vault_remains(), attempt).await
    }

    /// 404 `VaultNotFound` when the vault is gone.
    async fn vault_remains(&self) -> Result<(), KvError> {
        if self.state.store.resource(self.vault.id()).await?.is_none() {
            return Err(KvError::VaultNotFound(self.vault.name.clone()));
        }
        Ok(())
    }

    /// Commits a write that is not retried; `false` when an expectation failed (after
    /// [`Self::vault_remains`]).
    async fn commit(&self, batch: Batch) -> Result<bool, KvError> {
        match self.state.commit(batch).await {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(_)) => {
                self.vault_remains().await?;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Read<T>, KvError> {
        self.state
            .store
            .document(SECRETS, key)
            .await?
            .map(decode)
            .transpose()
    }

    /// [`Secrets::read`] through [`Reads`]: the same freshness, shared with concurrent
    /// requests for the same document.
    async fn read_shared<T: DeserializeOwned>(&self, key: &str) -> Result<Read<T>, KvError> {
        self.reads
            .document(&self.state.store, SECRETS, key)
            .await?
            .map(decode)
            .transpose()
    }

    async fn range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DocumentRecord>, KvError> {
        Ok(self
            .state
            .store
            .documents(&DocumentQuery {
                collection: SECRETS.into(),
                prefix: Some(prefix.to_string()),
                after: after.map(|a| format!("{prefix}{a}")),
                limit: Some(limit),
            })
            .await?)
    }

    /// Every document under `prefix`.
    async fn all(&self, prefix: &str) -> Result<Vec<DocumentRecord>, KvError> {
        let mut out: Vec<DocumentRecord> = Vec::new();
        loop {
            let after = out.last().map(|d| d.key[prefix.len()..].to_string());
            let page = self.range(prefix, after.as_deref(), READ_PAGE).await?;
            let full = page.len() == READ_PAGE as usize;
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    fn seal(
        &self,
        name: &SecretName,
        version: &SecretVersion,
        value: &SecretValue,
    ) -> Result<String, KvError> {
        let sealed = self
            .vault
            .key
            .data_key
            .seal(
                value.expose().as_bytes(),
                &self.vault.key.layout.value_aad(name, version),
            )
            .map_err(|e| KvError::Internal(format!("sealing a secret value: {e}")))?;
        Ok(STANDARD.encode(sealed))
    }

    fn open(&self, name: &SecretName, doc: &VersionDoc) -> Result<SecretValue, KvError> {
        let corrupt = || {
            KvError::Internal(format!(
                "version `{}` of secret `{}` in vault `{}` does not open under the vault's data key",
                doc.meta.version, doc.meta.name, self.vault.name
            ))
        };
        let version = SecretVersion::parse(&doc.meta.version).ok_or_else(corrupt)?;
        let sealed = STANDARD
            .decode(doc.sealed.as_bytes())
            .map_err(|_| corrupt())?;
        let plain = self
            .vault
            .key
            .data_key
            .open(&sealed, &self.vault.key.layout.value_aad(name, &version))
            .map_err(|_| corrupt())?;
        String::from_utf8(plain)
            .map(SecretValue::new)
            .map_err(|_| corrupt())
    }

    /// The deleted secret `name`, purging it instead when its retention has run out.
    async fn deleted(&self, name: &SecretName) -> Result<Read<DeletedDoc>, KvError> {
        let key = self.vault.key.layout.deleted(name);
        let read = self.read::<DeletedDoc>(&key).await?;
        match read {
            Some((version, doc)) if doc.expired(self.now()) => {
                self.purge_expired(name, version).await?;
                Ok(None)
            }
            other => Ok(other),
        }
    }

    /// Purges a deleted secret read at `version` whose retention has run out. A concurrent
    /// change wins: whatever it did is what the next read sees.
    async fn purge_expired(&self, name: &SecretName, version: i64) -> Result<(), KvError> {
        let layout = &self.vault.key.layout;
        let key = layout.deleted(name);
        let batch = self
            .batch()
            .expect(Expect::DocumentVersion {
                collection: SECRETS.into(),
                key: key.clone(),
                version,
            })
            .with(delete(&key))
            .with(Change::DeleteDocumentsWithPrefix {
                collection: SECRETS.into(),
                prefix: layout.versions_prefix(name),
            });
        if self.commit(batch).await? {
            tracing::info!(vault = %self.vault.name, secret = %name, "deleted secret purged after its retention period");
        }
        Ok(())
    }

    /// `PUT /secrets/{name}`: a new version, which becomes the latest.
    pub async fn set(&self, name: &SecretName, request: &SetSecret) -> Result<SecretMeta, KvError> {
        let layout = &self.vault.key.layout;
        let live_key = &layout.live(name);
        self.transact(|_| async move {
            let live = self.read::<SecretMeta>(live_key).await?;
            if self.deleted(name).await?.is_some() {
                return Err(KvError::DeletedButRecoverable(name.clone()));
            }
            let now = self.now();
            let version = SecretVersion::generate();
            let meta = SecretMeta {
                name: live
                    .as_ref()
                    .map_or_else(|| name.to_string(), |(_, m)| m.name.clone()),
                version: version.to_string(),
                content_type: request.content_type.clone(),
                tags: request.tags.clone(),
                attributes: request.attributes.create(now),
            };
            let doc = VersionDoc {
                meta: meta.clone(),
                sealed: self.seal(name, &version, &request.value)?,
            };
            let batch = self
                .batch()
                .expect(expect_as_read(live_key, &live))
                .expect(expect_as_read::<()>(&layout.deleted(name), &None))
                .with(put(&layout.version(name, &version), 1, &doc)?)
                .with(put(live_key, next_version(&live), &LiveDoc::of(&doc))?);
            Ok(Step::Commit(batch, meta))
        })
        .await
    }

    /// `GET /secrets/{name}[/{version}]`: the version's metadata and value. The latest
    /// version is read from the live document alone when it carries the value (one read);
    /// else from its version document.
    pub async fn get(
        &self,
        name: &SecretName,
        version: Option<&SecretVersion>,
    ) -> Result<(SecretMeta, SecretValue), KvError> {
        let layout = &self.vault.key.layout;
        let (_, live) = self
            .read_shared::<LiveDoc>(&layout.live(name))
            .await?
            .ok_or_else(|| KvError::not_found(name, version))?;
        let latest = SecretVersion::parse(&live.meta.version).ok_or_else(|| {
            KvError::Internal(format!("secret `{name}` has a malformed latest version"))
        })?;
        let wanted = version.cloned().unwrap_or_else(|| latest.clone());
        let copy = if wanted == latest {
            live.into_version()
        } else {
            None
        };
        let doc = match copy {
            Some(doc) => doc,
            None => {
                self.read_shared::<VersionDoc>(&layout.version(name, &wanted))
                    .await?
                    .ok_or_else(|| KvError::not_found(name, version))?
                    .1
            }
        };
        let attributes = &doc.meta.attributes;
        if !attributes.enabled {
            return Err(KvError::SecretDisabled { operation: "get" });
        }
        // The value is withheld outside its validity window (`nbf` .. `exp`); its metadata
        // stays readable through the list operations.
        let now = self.now();
        if attributes.nbf.is_some_and(|nbf| now < nbf) {
            return Err(KvError::SecretNotYetValid);
        }
        if attributes.exp.is_some_and(|exp| now >= exp) {
            return Err(KvError::SecretExpired);
        }
        let value = self.open(name, &doc)?;
        Ok((doc.meta, value))
    }

    /// `PATCH /secrets/{name}[/{version}]`: content type, tags and attributes of a version.
    pub async fn update(
        &self,
        name: &SecretName,
        version: Option<&SecretVersion>,
        request: &UpdateSecret,
    ) -> Result<SecretMeta, KvError> {
        let layout = &self.vault.key.layout;
        let live_key = &layout.live(name);
        self.transact(|_| async move {
            let live = self.read::<SecretMeta>(live_key).await?;
            let Some((_, latest)) = &live else {
                return Err(KvError::not_found(name, version));
            };
            let wanted = match version {
                Some(v) => v.clone(),
                None => SecretVersion::parse(&latest.version).ok_or_else(|| {
                    KvError::Internal(format!("secret `{name}` has a malformed latest version"))
                })?,
            };
            let version_key = layout.version(name, &wanted);
            let read = self.read::<VersionDoc>(&version_key).await?;
            let Some((_, mut doc)) = read.clone() else {
                return Err(KvError::not_found(name, version));
            };
            if let Some(ct) = &request.content_type {
                doc.meta.content_type = Some(ct.clone());
            }
            if let Some(tags) = &request.tags {
                doc.meta.tags = Some(tags.clone());
            }
            request
                .attributes
                .apply(&mut doc.meta.attributes, self.now());
            let mut batch = self
                .batch()
                .expect(expect_as_read(live_key, &live))
                .expect(expect_as_read(&version_key, &read))
                .with(put(&version_key, next_version(&read), &doc)?);
            if latest.version == doc.meta.version {
                batch.push(put(live_key, next_version(&live), &LiveDoc::of(&doc))?);
            }
            Ok(Step::Commit(batch, doc.meta))
        })
        .await
    }

    /// `GET /secrets`: live secrets by name, after the lower-cased name `after`.
    pub async fn list(&self, after: Option<&str>, max: u32) -> Result<Page<SecretMeta>, KvError> {
        let prefix = self.vault.key.layout.live_prefix();
        self.page(&prefix, after, max).await
    }

    /// `GET /secrets/{name}/versions`.
    pub async fn versions(
        &self,
        name: &SecretName,
        after: Option<&str>,
        max: u32,
    ) -> Result<Page<SecretMeta>, KvError> {
        let layout = &self.vault.key.layout;
        if self.read::<SecretMeta>(&layout.live(name)).await?.is_none() {
            return Err(KvError::not_found(name, None));
        }
        let page = self
            .page::<VersionDoc>(&layout.versions_prefix(name), after, max)
            .await?;
        Ok(Page {
            items: page.items.into_iter().map(|d| d.meta).collect(),
            next: page.next,
        })
    }

    async fn page<T: DeserializeOwned>(
        &self,
        prefix: &str,
        after: Option<&str>,
        max: u32,
    ) -> Result<Page<T>, KvError> {
        let mut docs = self.range(prefix, after, max + 1).await?;
        let more = docs.len() > max as usize;
        docs.truncate(max as usize);
        let next = more
            .then(|| docs.last().map(|d| d.key[prefix.len()..].to_string()))
            .flatten();
        let items = docs
            .into_iter()
            .map(|d| decode::<T>(d).map(|(_, t)| t))
            .collect::<Result<_, _>>()?;
        Ok(Page { items, next })
    }

    /// `DELETE /secrets/{name}`: the secret becomes a deleted, recoverable one.
    pub async fn delete(&self, name: &SecretName) -> Result<DeletedDoc, KvError> {
        let layout = &self.vault.key.layout;
        let live_key = &layout.live(name);
        let deleted_key = &layout.deleted(name);
        self.transact(|_| async move {
            let live = self.read::<SecretMeta>(live_key).await?;
            let Some((_, meta)) = &live else {
                return Err(KvError::not_found(name, None));
            };
            let now = self.now();
            let deleted = DeletedDoc {
                meta: meta.clone(),
                deleted_date: now,
                scheduled_purge_date: now + self.vault.settings.retention_secs(),
            };
            let batch = self
                .batch()
                .expect(expect_as_read(live_key, &live))
                .expect(expect_as_read::<()>(deleted_key, &None))
                .with(delete(live_key))
                .with(put(deleted_key, 1, &deleted)?);
            Ok(Step::Commit(batch, deleted))
        })
        .await
    }

    /// `GET /deletedsecrets/{name}`.
    pub async fn get_deleted(&self, name: &SecretName) -> Result<DeletedDoc, KvError> {
        self.deleted(name)
            .await?
            .map(|(_, d)| d)
            .ok_or_else(|| KvError::DeletedSecretNotFound(name.clone()))
    }

    /// `GET /deletedsecrets`: deleted secrets still within retention; expired ones met on the
    /// way are purged.
    pub async fn list_deleted(
        &self,
        after: Option<&str>,
        max: u32,
    ) -> Result<Page<DeletedDoc>, KvError> {
        let prefix = self.vault.key.layout.deleted_prefix();
        let page = self.page::<DeletedDoc>(&prefix, after, max).await?;
        let now = self.now();
        let mut items = Vec::with_capacity(page.items.len());
        for d in page.items {
            if !d.expired(now) {
                items.push(d);
                continue;
            }
            if let Some(name) = SecretName::parse(&d.meta.name) {
                if let Some((version, doc)) = self
                    .read::<DeletedDoc>(&self.vault.key.layout.deleted(&name))
                    .await?
                {
                    if doc.expired(now) {
                        self.purge_expired(&name, version).await?;
                    }
                }
            }
        }
        Ok(Page {
            items,
            next: page.next,
        })
    }

    /// `POST /deletedsecrets/{name}/recover`: the secret is live again with all its versions.
    pub async fn recover(&self, name: &SecretName) -> Result<SecretMeta, KvError> {
        let layout = &self.vault.key.layout;
        let live_key = &layout.live(name);
        let deleted_key = &layout.deleted(name);
        self.transact(|_| async move {
            let deleted = self.deleted(name).await?;
            let Some((_, doc)) = &deleted else {
                return Err(KvError::DeletedSecretNotFound(name.clone()));
            };
            let batch = self
                .batch()
                .expect(expect_as_read(deleted_key, &deleted))
                .expect(expect_as_read::<()>(live_key, &None))
                .with(delete(deleted_key))
                .with(put(live_key, 1, &doc.meta)?);
            Ok(Step::Commit(batch, doc.meta.clone()))
        })
        .await
    }

    /// `DELETE /deletedsecrets/{name}`: gone for good, unless the vault protects it.
    pub async fn purge(&self, name: &SecretName) -> Result<(), KvError> {
        let layout = &self.vault.key.layout;
        let deleted_key = &layout.deleted(name);
        self.transact(|_| async move {
            let deleted = self.deleted(name).await?;
            if deleted.is_none() {
                return Err(KvError::DeletedSecretNotFound(name.clone()));
            }
            if self.vault.settings.purge_protection {
                return Err(KvError::PurgeProtected);
            }
            let batch = self
                .batch()
                .expect(expect_as_read(deleted_key, &deleted))
                .with(delete(deleted_key))
                .with(Change::DeleteDocumentsWithPrefix {
                    collection: SECRETS.into(),
                    prefix: layout.versions_prefix(name),
                });
            Ok(Step::Commit(batch, ()))
        })
        .await
    }

    /// `POST /secrets/{name}/backup`: every version, sealed for this subscription.
    pub async fn backup(&self, name: &SecretName) -> Result<String, KvError> {
        let layout = &self.vault.key.layout;
        let (_, latest) = self
            .read::<SecretMeta>(&layout.live(name))
            .await?
            .ok_or_else(|| KvError::not_found(name, None))?;
        let mut versions = Vec::new();
        for doc in self.all(&layout.versions_prefix(name)).await? {
            let (_, v) = decode::<VersionDoc>(doc)?;
            let value = self.open(name, &v)?;
            versions.push(BackedUpVersion::new(v.meta, &value));
        }
        backup::seal(
            self.state.tokens.kek(),
            &self.vault.subscription,
            &Contents { latest, versions },
        )
    }

    /// `POST /secrets/restore`: recreates a backed-up secret that does not exist here.
    pub async fn restore(&self, blob: &str) -> Result<SecretMeta, KvError> {
        let contents = backup::open(self.state.tokens.kek(), &self.vault.subscription, blob)?;
        let name = SecretName::parse(&contents.latest.name).ok_or(KvError::BadBackup)?;
        let layout = &self.vault.key.layout;
        let live_key = &layout.live(&name);
        let deleted_key = &layout.deleted(&name);
        let mut docs = Vec::with_capacity(contents.versions.len());
        for v in &contents.versions {
            let version = SecretVersion::parse(&v.meta.version).ok_or(KvError::BadBackup)?;
            let mut meta = v.meta.clone();
            meta.name = contents.latest.name.clone();
            let sealed = self.seal(&name, &version, &v.value())?;
            docs.push((layout.version(&name, &version), VersionDoc { meta, sealed }));
        }
        let (name, docs, latest) = (&name, &docs, &contents.latest);
        self.transact(|_| async move {
            let live = self.read::<SecretMeta>(live_key).await?;
            if live.is_some() {
                return Err(KvError::AlreadyExists(name.clone()));
            }
            if self.deleted(name).await?.is_some() {
                return Err(KvError::DeletedButRecoverable(name.clone()));
            }
            let mut batch = self
                .batch()
                .expect(expect_as_read::<()>(live_key, &None))
                .expect(expect_as_read::<()>(deleted_key, &None))
                // Nothing should be left under a name that is neither live nor deleted.
                .with(Change::DeleteDocumentsWithPrefix {
                    collection: SECRETS.into(),
                    prefix: layout.versions_prefix(name),
                });
            for (key, doc) in docs {
                batch.push(put(key, 1, doc)?);
            }
            batch.push(put(live_key, 1, latest)?);
            Ok(Step::Commit(batch, latest.clone()))
        })
        .await
    }
}
