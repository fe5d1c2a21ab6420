//! The token runtime: the signing key ring kept in memory and in the store, token issuance,
//! and validation for every plane with immediate revocation.
//!
//! Keys are persisted sealed under the key-encryption key. [`TokenRuntime::tick`] follows
//! the rotation schedule and persists what changed before the change is visible to signers,
//! so a restart never loses a key that signed a live token.
//!
//! Several servers may share one store. A ring change is planned on the records the store
//! holds and committed only if no other server changed them meanwhile (a version in meta,
//! checked by the same transaction), else planned again: two servers reaching a rotation
//! time together make one rotation, not two current keys. The ring in memory is never
//! edited in place: it is reloaded from the store when a key change arrives through the
//! commit feed (see [`crate::state`]), this server's own changes included, so every server
//! signs with and publishes the same keys. Revocations likewise arrive through the feed.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock, Weak};

use lanyard_domain::ResourceId;
use lanyard_domain::SharedClock;
use lanyard_storage::{
    Batch, Change, DocumentQuery, DocumentRecord, Expect, KeyRecord, Store, StoreError,
};
use lanyard_token::claims::TokenPolicy;
use lanyard_token::jwk::JwkSet;
use lanyard_token::{
    issue, AccessTokenClaims, IssuerConfig, Kek, KeyChange, KeyError, KeyRing, MintError,
    MintedToken, Revocation, RotationPolicy, StoredKey, TokenPrincipal, TokenRequest,
    ValidatedToken, ValidationConfig, ValidationError, Validator,
};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum TokenRuntimeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("stored signing key `{kid}` is corrupt: {reason}")]
    Corrupt { kid: String, reason: String },
}

/// Revocation epochs by principal, and by (principal, host resource) for an identity
/// detached from one resource, mirrored from the store.
#[derive(Debug, Default)]
struct Revocations {
    by_principal: RwLock<HashMap<Uuid, i64>>,
    /// Keyed by principal and the host's lower-cased resource id.
    by_host: RwLock<HashMap<(Uuid, String), i64>>,
}

impl Revocation for Revocations {
    fn valid_after(&self, oid: Uuid) -> Option<i64> {
        self.by_principal
            .read()
            .ok()
            .and_then(|m| m.get(&oid).copied())
    }

    fn valid_after_for_host(&self, oid: Uuid, host: &str) -> Option<i64> {
        let map = self.by_host.read().ok()?;
        if map.is_empty() {
            return None;
        }
        map.get(&(oid, host.to_ascii_lowercase())).copied()
    }
}

/// The document collection holding per-host revocations (followed through the feed).
pub const HOST_REVOCATIONS: &str = lanyard_storage::HOST_REVOCATIONS;

/// The meta entry counting key-ring changes, which guards them against concurrent ones.
const KEY_RING_VERSION: &str = "key-ring-version";
/// Tries of a ring change that keeps meeting another server's change.
const RING_CHANGE_ATTEMPTS: u32 = 3;

/// The change that revokes the tokens `principal` got from `host` before `valid_after`
/// (detaching a user-assigned identity from one resource). Commit it through
/// [`crate::AppState::commit`], which updates the running validators.
pub fn host_revocation(principal: Uuid, host: &ResourceId, valid_after: i64) -> Change {
    Change::PutDocument(DocumentRecord {
        collection: HOST_REVOCATIONS.to_string(),
        key: format!("{principal}/{}", host.key()),
        version: valid_after,
        body: serde_json::json!({ "principal": principal, "host": host.key(), "validAfter": valid_after }),
    })
}

/// Reads a per-host revocation document back.
pub fn parse_host_revocation(doc: &DocumentRecord) -> Option<(Uuid, String, i64)> {
    if doc.collection != HOST_REVOCATIONS {
        return None;
    }
    let principal = Uuid::parse_str(doc.body.get("principal")?.as_str()?).ok()?;
    let host = doc.body.get("host")?.as_str()?.to_string();
    let valid_after = doc.body.get("validAfter")?.as_i64()?;
    Some((principal, host, valid_after))
}

/// How far ahead of the clock [`TokenRuntime::issue`] may stamp a token to clear a revocation
/// made in the same second.
const MAX_STAMP_AHEAD_SECS: i64 = 2;

/// Keys, issuance and validation.
pub struct TokenRuntime {
    kek: Kek,
    ring: RwLock<KeyRing>,
    policy: TokenPolicy,
    tenants: Vec<Uuid>,
    revocations: Revocations,
    store: Arc<dyn Store>,
    clock: SharedClock,
    /// The feed position read before loading: the ring and revocations reflect at least it.
    loaded_at: u64,
    /// Ring changes of this process take turns (the scheduler's tick, a forced rotation).
    changing: tokio::sync::Mutex<()>,
    /// The state whose feed follower applies this runtime's own commits (set by
    /// [`crate::AppState::new`]); without one, the ring is reloaded directly.
    follower: OnceLock<Weak<crate::state::Shared>>,
}

impl TokenRuntime {
    /// Loads the key ring and revocations; creates the first key on an empty store.
    pub async fn load(
        store: Arc<dyn Store>,
        kek: Kek,
        clock: SharedClock,
        rotation: RotationPolicy,
        lifetime_secs: i64,
        tenants: Vec<Uuid>,
    ) -> Result<Self, TokenRuntimeError> {
        let loaded_at = store.feed_head().await?.seq;
        let ring = KeyRing::load(rotation, stored_keys(store.as_ref()).await?, &kek)?;
        let revocations = Revocations {
            by_principal: RwLock::new(store.revocations().await?.into_iter().collect()),
            by_host: RwLock::new(host_revocations(store.as_ref()).await?),
        };
        let runtime = Self {
            kek,
            ring: RwLock::new(ring),
            policy: TokenPolicy {
                issuers: IssuerConfig::default(),
                lifetime_secs,
            },
            tenants,
            revocations,
            store,
            clock,
            loaded_at,
            changing: tokio::sync::Mutex::new(()),
            follower: OnceLock::new(),
        };
        runtime.tick().await?;
        Ok(runtime)
    }

    /// The feed position this runtime was loaded at.
    pub(crate) fn loaded_at(&self) -> u64 {
        self.loaded_at
    }

    /// Lets `shared`'s feed follower apply this runtime's own commits.
    pub(crate) fn attach(&self, shared: Weak<crate::state::Shared>) {
        // One runtime serves one state; a second attach keeps the first.
        let _ = self.follower.set(shared);
    }

    /// Replaces the ring by what the store holds (a key change arrived through the feed).
    pub(crate) async fn reload_keys(&self) -> Result<(), TokenRuntimeError> {
        let policy = *self.read_ring().policy();
        let ring = KeyRing::load(policy, stored_keys(self.store.as_ref()).await?, &self.kek)?;
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = ring;
        Ok(())
    }

    /// Merges every revocation the store holds (after missing part of the feed).
    pub(crate) async fn reload_revocations(&self) -> Result<(), TokenRuntimeError> {
        for (principal, valid_after) in self.store.revocations().await? {
            self.revoked(principal, valid_after);
        }
        for ((principal, host), valid_after) in host_revocations(self.store.as_ref()).await? {
            self.revoked_for_host(principal, host, valid_after);
        }
        Ok(())
    }

    /// Carries out whatever the rotation schedule says is due now, persisting it first.
    pub async fn tick(&self) -> Result<Vec<KeyChange>, TokenRuntimeError> {
        self.change_ring(|ring, clock, kek| ring.tick(clock, kek))
            .await
    }

    /// Makes the next key sign now (publishing one first if there is none).
    pub async fn rotate_now(&self) -> Result<Vec<KeyChange>, TokenRuntimeError> {
        self.change_ring(|ring, clock, kek| ring.rotate_now(clock, kek))
            .await
    }

    /// Applies `f` to the ring the store holds and commits the result, guarded by the ring
    /// version: if another server changed the ring meanwhile, plans again on its result.
    /// The new ring is installed by following the commit (never before it is durable).
    async fn change_ring(
        &self,
        f: impl Fn(&mut KeyRing, &dyn lanyard_domain::Clock, &Kek) -> Result<Vec<KeyChange>, KeyError>,
    ) -> Result<Vec<KeyChange>, TokenRuntimeError> {
        let _turn = self.changing.lock().await;
        let policy = *self.read_ring().policy();
        let mut attempt = 1;
        loop {
            let version = self.store.meta(KEY_RING_VERSION).await?;
            // Work on a private copy so signers never see a key that is not yet persisted.
            let mut next =
                KeyRing::load(policy, stored_keys(self.store.as_ref()).await?, &self.kek)?;
            let changes = f(&mut next, self.clock.as_ref(), &self.kek)?;
            if changes.is_empty() {
                return Ok(changes);
            }
            let next_version = version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            let mut batch = Batch::new()
                .expect(Expect::MetaIs {
                    key: KEY_RING_VERSION.to_string(),
                    value: version,
                })
                .with(Change::PutMeta {
                    key: KEY_RING_VERSION.to_string(),
                    value: next_version.to_string(),
                });
            for stored in next.stored() {
                let body =
                    serde_json::to_value(&stored).map_err(|e| TokenRuntimeError::Corrupt {
                        kid: stored.kid.clone(),
                        reason: e.to_string(),
                    })?;
                batch.push(Change::PutKey(KeyRecord {
                    kid: stored.kid.clone(),
                    body,
                }));
            }
            for change in &changes {
                if let KeyChange::Removed { kid } = change {
                    batch.push(Change::DeleteKey(kid.clone()));
                }
            }
            match self.store.commit_seq(batch).await {
                Ok(seq) => {
                    for change in &changes {
                        tracing::info!(?change, "signing key change");
                    }
                    self.follow_own_commit(seq).await?;
                    return Ok(changes);
                }
                Err(StoreError::Conflict(_)) if attempt < RING_CHANGE_ATTEMPTS => {
                    tracing::debug!(
                        attempt,
                        "another server changed the key ring; planning again"
                    );
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Brings the ring (and every other view) up to this runtime's own commit `seq`.
    async fn follow_own_commit(&self, seq: Option<u64>) -> Result<(), TokenRuntimeError> {
        match self.follower.get().and_then(Weak::upgrade) {
            Some(shared) => {
                if let Err(e) = shared.catch_up(seq).await {
                    // Durable, so not a failure of the change; the background follower
                    // retries. Until then this server signs with the ring it had.
                    tracing::error!(error = %e, "the key ring could not follow its own change");
                }
                Ok(())
            }
            // Before any state exists (loading): nothing else follows the feed yet.
            None => self.reload_keys().await,
        }
    }

    fn read_ring(&self) -> std::sync::RwLockReadGuard<'_, KeyRing> {
        // A poisoned lock only means a panic elsewhere; the ring itself is always whole.
        self.ring.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The published keys.
    pub fn jwks(&self) -> JwkSet {
        self.read_ring().jwks()
    }

    pub fn policy(&self) -> &TokenPolicy {
        &self.policy
    }

    /// The key-encryption key, for planes that keep secrets at rest (Key Vault data keys).
    pub fn kek(&self) -> &Kek {
        &self.kek
    }

    /// Issues a token now.
    ///
    /// Revocations are kept in whole seconds and refuse every token issued in the second they
    /// were made (`iat < valid_after`). A token issued in that same second *after* the
    /// revocation (an identity detached and attached again at once) is stamped with the
    /// revocation's second instead, so it is not refused for its whole life; `nbf` moves by
    /// the same second, well inside every validator's clock skew.
    pub fn issue(
        &self,
        request: &TokenRequest,
    ) -> Result<(MintedToken, AccessTokenClaims), MintError> {
        let now = self.clock.unix();
        let host = match &request.principal {
            TokenPrincipal::SystemAssigned { host } | TokenPrincipal::UserAssigned { host, .. } => {
                Some(host)
            }
            TokenPrincipal::Application { identity, .. } => identity.as_ref(),
        };
        let floor = [
            self.revocations.valid_after(request.object_id),
            host.and_then(|h| {
                self.revocations
                    .valid_after_for_host(request.object_id, h.as_str())
            }),
        ]
        .into_iter()
        .flatten()
        .max()
        .filter(|&after| after > now && after - now <= MAX_STAMP_AHEAD_SECS);
        issue(
            &self.read_ring(),
            &self.policy,
            request,
            floor.unwrap_or(now),
        )
    }

    /// A validator accepting `audiences` (each with and without a trailing slash) from our
    /// tenants and issuers.
    pub fn validator<S: AsRef<str>>(&self, audiences: impl IntoIterator<Item = S>) -> Validator {
        Validator::new(ValidationConfig::new(
            &self.policy.issuers,
            self.tenants.iter().copied(),
            audiences,
        ))
    }

    /// Validates `token` with `validator` against the published keys and revocations.
    pub fn validate(
        &self,
        validator: &Validator,
        token: &str,
    ) -> Result<Arc<ValidatedToken>, ValidationError> {
        let ring = self.read_ring();
        validator.validate(token, &*ring, &self.revocations, self.clock.unix())
    }

    /// The change that revokes every token of `principal` issued up to now; commit it with
    /// the change that causes it through [`crate::AppState::commit`], which applies it.
    pub fn revocation(&self, principal: Uuid) -> (Change, i64) {
        // Tokens carry whole seconds: one minted in this same second is revoked too.
        let valid_after = self.clock.unix() + 1;
        (
            Change::SetRevocation {
                principal,
                valid_after,
            },
            valid_after,
        )
    }

    /// Records in memory a per-host revocation that has been committed (the feed follower
    /// does this; epochs only grow, so applying one twice or late is harmless).
    pub fn revoked_for_host(&self, principal: Uuid, host: String, valid_after: i64) {
        if let Ok(mut m) = self.revocations.by_host.write() {
            let entry = m.entry((principal, host)).or_insert(valid_after);
            *entry = (*entry).max(valid_after);
        }
    }

    /// The revocation epoch this server holds for `principal`.
    pub fn valid_after(&self, principal: Uuid) -> Option<i64> {
        self.revocations.valid_after(principal)
    }

    /// Whether a token of `principal` issued at `iat` (for a workload on `host`, if any) is
    /// refused by a revocation this server holds, as the validator would refuse it.
    pub fn is_revoked(&self, principal: Uuid, host: Option<&ResourceId>, iat: i64) -> bool {
        self.revocations
            .valid_after(principal)
            .is_some_and(|after| iat < after)
            || host.is_some_and(|host| {
                self.revocations
                    .valid_after_for_host(principal, host.key())
                    .is_some_and(|after| iat < after)
            })
    }

    /// Records in memory a revocation that has been committed.
    pub fn revoked(&self, principal: Uuid, valid_after: i64) {
        if let Ok(mut m) = self.revocations.by_principal.write() {
            let entry = m.entry(principal).or_insert(valid_after);
            *entry = (*entry).max(valid_after);
        }
    }
}

/// The key records the store holds, decoded.
async fn stored_keys(store: &dyn Store) -> Result<Vec<StoredKey>, TokenRuntimeError> {
    let mut records = Vec::new();
    for record in store.keys().await? {
        let stored: StoredKey =
            serde_json::from_value(record.body).map_err(|e| TokenRuntimeError::Corrupt {
                kid: record.kid.clone(),
                reason: e.to_string(),
            })?;
        records.push(stored);
    }
    Ok(records)
}

/// Every per-host revocation the store holds.
async fn host_revocations(store: &dyn Store) -> Result<HashMap<(Uuid, String), i64>, StoreError> {
    let mut by_host = HashMap::new();
    for doc in store
        .documents(&DocumentQuery {
            collection: HOST_REVOCATIONS.to_string(),
            ..Default::default()
        })
        .await?
    {
        if let Some((principal, host, after)) = parse_host_revocation(&doc) {
            let entry = by_host.entry((principal, host)).or_insert(after);
            *entry = (*entry).max(after);
        }
    }
    Ok(by_host)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use lanyard_domain::{Clock, ManualClock, Principal, PrincipalKind, ServicePrincipalSource};

    async fn runtime(clock: SharedClock, tenant: Uuid) -> (TokenRuntime, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = lanyard_storage::open(dir.path().join("t.db").to_str().unwrap())
            .await
            .unwrap();
        let tokens = TokenRuntime::load(
            store,
            Kek::from_bytes([3u8; 32]),
            clock,
            RotationPolicy::default(),
            3600,
            vec![tenant],
        )
        .await
        .unwrap();
        (tokens, dir)
    }

    #[tokio::test]
    async fn a_token_issued_in_the_second_of_a_revocation_but_after_it_is_not_refused() {
        let clock = Arc::new(ManualClock::at_unix(1_800_000_000));
        let tenant = Uuid::new_v4();
        let (tokens, _dir) = runtime(clock.clone(), tenant).await;
        let vm = ResourceId::parse(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
        )
        .unwrap();
        let identity = Principal {
            object_id: Uuid::new_v4(),
            tenant_id: tenant,
            display_name: "ua".into(),
            kind: PrincipalKind::ServicePrincipal {
                client_id: Uuid::new_v4(),
                source: ServicePrincipalSource::UserAssigned {
                    identity: ResourceId::parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ua").unwrap(),
                },
            },
        };
        let request =
            TokenRequest::managed_identity(&identity, &vm, "https://vault.azure.net", 0).unwrap();
        let validator = tokens.validator(["https://vault.azure.net"]);
        let before = tokens.issue(&request).unwrap().0.access_token;
        assert!(tokens.validate(&validator, &before).is_ok());

        // Detached from the VM: the earlier token is refused; attached again within the
        // same second, the next token works.
        tokens.revoked_for_host(identity.object_id, vm.key().to_string(), clock.unix() + 1);
        assert_eq!(
            tokens.validate(&validator, &before).unwrap_err(),
            ValidationError::Revoked
        );
        let (after, claims) = tokens.issue(&request).unwrap();
        assert_eq!(claims.iat, clock.unix() + 1);
        assert!(tokens.validate(&validator, &after.access_token).is_ok());
        assert!(tokens.is_revoked(identity.object_id, Some(&vm), clock.unix()));
        assert!(!tokens.is_revoked(identity.object_id, Some(&vm), claims.iat));

        // The same for a revocation of the principal itself.
        clock.advance(std::time::Duration::from_secs(10));
        tokens.revoked(identity.object_id, clock.unix() + 1);
        let (again, _) = tokens.issue(&request).unwrap();
        assert!(tokens.validate(&validator, &again.access_token).is_ok());

        // A revocation far ahead of the clock is not chased: such a token stays refused.
        tokens.revoked(identity.object_id, clock.unix() + 3600);
        let (refused, claims) = tokens.issue(&request).unwrap();
        assert_eq!(claims.iat, clock.unix());
        assert_eq!(
            tokens
                .validate(&validator, &refused.access_token)
                .unwrap_err(),
            ValidationError::Revoked
        );
    }
}
