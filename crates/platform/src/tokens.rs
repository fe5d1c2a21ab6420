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
//!
//! # Revocation and issuance
//!
//! A revocation is an epoch in whole seconds: tokens of a principal (or of a principal used
//! from one host) issued before it are refused. Deleting a principal revokes with
//! [`RETIRED`], which no token outlives. Issuance and revocation are linearisable on each
//! server: a mint takes a [`MintGuard`] before it reads what the token will say (the
//! principal, the identities attached to a host) and [`TokenRuntime::issue_guarded`] hands
//! the token out only if no revocation that covers it was committed, applied or withdrawn
//! here since then; otherwise it drops the token, waits until the revocation is in force and
//! reads again. [`crate::AppState::commit`] registers the revocations of a batch as pending
//! before the batch is committed ([`TokenRuntime::begin_revocations`]) and moves their epochs
//! past every token this server issued until then, so once the commit returns no token of
//! the revoked principal validates here, whichever request minted it and whenever.
//! Another server follows within its feed poll interval; the epoch leaves that much margin
//! (see [`TokenRuntime::set_follow_lag`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use lanyard_domain::ResourceId;
use lanyard_domain::SharedClock;
use lanyard_storage::{
    Batch, Change, DocumentQuery, DocumentRecord, Expect, FeedChange, KeyRecord, Store, StoreError,
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
/// detached from one resource, mirrored from the store; and what the mint guard consults.
#[derive(Debug, Default)]
struct Revocations {
    by_principal: RwLock<HashMap<Uuid, i64>>,
    /// Keyed by principal and the host's lower-cased resource id.
    by_host: RwLock<HashMap<(Uuid, String), i64>>,
    notices: Mutex<Notices>,
    /// Woken whenever a pending revocation ends (committed and applied, or withdrawn).
    settled: tokio::sync::Notify,
}

/// What a revocation covers: every token of a principal, or those it got on one host (keyed
/// by the host's lower-cased id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Subject {
    Principal(Uuid),
    Host(Uuid, String),
}

impl Subject {
    /// The subject and epoch of a revocation change, if `change` is one.
    fn of_change(change: &Change) -> Option<(Self, i64)> {
        match change {
            Change::SetRevocation {
                principal,
                valid_after,
            } => Some((Self::Principal(*principal), *valid_after)),
            Change::PutDocument(doc) => parse_host_revocation(doc)
                .map(|(principal, host, after)| (Self::host(principal, &host), after)),
            _ => None,
        }
    }

    pub(crate) fn host(principal: Uuid, host: &str) -> Self {
        Self::Host(principal, host.to_ascii_lowercase())
    }

    fn principal(&self) -> Uuid {
        match self {
            Self::Principal(p) | Self::Host(p, _) => *p,
        }
    }

    /// Every subject whose revocation refuses the token `request` asks for.
    fn of_request(request: &TokenRequest) -> Vec<Self> {
        let mut out = vec![Self::Principal(request.object_id)];
        if let Some(host) = request_host(request) {
            out.push(Self::host(request.object_id, host.key()));
        }
        out
    }
}

/// The host a token is revoked under besides its principal.
fn request_host(request: &TokenRequest) -> Option<&ResourceId> {
    match &request.principal {
        TokenPrincipal::SystemAssigned { host } | TokenPrincipal::UserAssigned { host, .. } => {
            Some(host)
        }
        TokenPrincipal::Application { identity, .. } => identity.as_ref(),
    }
}

/// The mint guard's bookkeeping. `seq` moves with every revocation this server registers as
/// pending, applies or withdraws; `touched` holds its value at each subject's last such event.
#[derive(Debug, Default)]
struct Notices {
    seq: u64,
    /// Guards taken before this have missed every subject (the revocations were reloaded whole).
    all: u64,
    /// Reloads of every revocation under way.
    all_pending: usize,
    touched: HashMap<Subject, u64>,
    /// Revocations this server is committing now, by subject (a count: two batches may
    /// revoke one subject at once).
    pending: HashMap<Subject, usize>,
    /// The latest `iat` stamped ahead of the clock for each principal (see
    /// [`TokenRuntime::issue`]): a revocation registered later must be later still.
    stamped: HashMap<Uuid, i64>,
}

impl Notices {
    fn touch(&mut self, subject: &Subject) {
        self.seq += 1;
        self.touched.insert(subject.clone(), self.seq);
    }

    /// Whether a token covered by `subjects` whose facts were read after `seen` may be stale.
    fn raced(&self, seen: u64, subjects: &[Subject]) -> bool {
        self.all > seen
            || self.all_pending > 0
            || subjects.iter().any(|s| {
                self.pending.contains_key(s) || self.touched.get(s).is_some_and(|&t| t > seen)
            })
    }

    fn is_pending(&self, subjects: &[Subject]) -> bool {
        self.all_pending > 0 || subjects.iter().any(|s| self.pending.contains_key(s))
    }
}

impl Revocations {
    fn notices(&self) -> std::sync::MutexGuard<'_, Notices> {
        // A poisoned lock only means a panic elsewhere; each update leaves it whole.
        self.notices.lock().unwrap_or_else(|p| p.into_inner())
    }
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

/// The epoch of a deleted principal: no token of it validates again.
pub const RETIRED: i64 = i64::MAX;

/// The change that revokes every token of `principal` for good (it is being deleted; object
/// ids are never reused). Commit it with the deletion through [`crate::AppState::commit`].
pub fn retirement(principal: Uuid) -> Change {
    Change::SetRevocation {
        principal,
        valid_after: RETIRED,
    }
}

/// The change that revokes the tokens `principal` got from `host` before `valid_after`
/// (detaching a user-assigned identity from one resource, or deleting the resource). Commit
/// it through [`crate::AppState::commit`], which moves `valid_after` to at least the second
/// after the commit and updates the running validators.
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

/// Seconds beyond the follow lag that [`TokenRuntime::issue`] may stamp a token ahead of the
/// clock to clear a revocation made in the same second (room for a few revocations of one
/// principal within a second, each one second past the previous stamp).
const STAMP_SLACK_SECS: i64 = 2;

/// The follow lag before [`TokenRuntime::set_follow_lag`] (the default poll interval's).
const DEFAULT_FOLLOW_LAG_SECS: i64 = 1;

/// How many times [`TokenRuntime::issue_guarded`] mints before giving up on a principal
/// whose revocations keep arriving.
const MINT_ATTEMPTS: usize = 3;

/// How long a mint waits for a pending revocation to be in force before giving up.
const SETTLE_WAIT: Duration = Duration::from_secs(10);

/// Taken by a mint before it reads what its token will say: see [`TokenRuntime::issue_guarded`].
#[derive(Debug, Clone, Copy)]
#[must_use = "a guard only helps if the token is issued through it"]
pub struct MintGuard {
    seen: u64,
}

/// Why [`TokenRuntime::issue_guarded`] issued nothing.
#[derive(Debug, thiserror::Error)]
pub enum GuardedMintError {
    #[error(transparent)]
    Mint(#[from] MintError),
    /// A revocation was committed while the token was being issued, and what the token
    /// would say no longer holds (the principal was deleted, the identity detached):
    /// answer as if it had been asked for after the revocation.
    #[error("the identity was revoked while its token was being issued")]
    Gone,
    /// Revocations of this principal kept arriving, or one could not be put in force in
    /// time: nothing was issued; the client may retry.
    #[error("revocations of this identity are being committed; retry")]
    Busy,
}

/// Revocations on their way into this server's views: those of a batch being committed
/// here (see [`TokenRuntime::begin_revocations`]), or of a feed entry or a reload being
/// applied. While it lives, every mint of a subject it names (of every subject, for a reload)
/// is dropped by its guard; dropping it ends it, once the revocations are applied to every
/// view (or the batch failed), and mints that overlapped it read again.
pub(crate) struct PendingRevocations {
    tokens: Arc<TokenRuntime>,
    subjects: Vec<Subject>,
    all: bool,
}

impl Drop for PendingRevocations {
    fn drop(&mut self) {
        {
            let mut notices = self.tokens.revocations.notices();
            for subject in &self.subjects {
                if let Some(count) = notices.pending.get_mut(subject) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        notices.pending.remove(subject);
                    }
                }
                notices.touch(subject);
            }
            if self.all {
                notices.all_pending = notices.all_pending.saturating_sub(1);
                notices.seq += 1;
                notices.all = notices.seq;
            }
        }
        self.tokens.revocations.settled.notify_waiters();
    }
}

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
    /// Whole seconds another server may take to apply a revocation committed here.
    follow_lag: AtomicI64,
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
            ..Default::default()
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
            follow_lag: AtomicI64::new(DEFAULT_FOLLOW_LAG_SECS),
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

    /// Merges every revocation the store holds (after missing part of the feed). Mints under
    /// way read again (the caller holds every revocation meanwhile, see [`Self::hold_all`]).
    pub(crate) async fn reload_revocations(&self) -> Result<(), TokenRuntimeError> {
        for (principal, valid_after) in self.store.revocations().await? {
            self.revoked(principal, valid_after);
        }
        for ((principal, host), valid_after) in host_revocations(self.store.as_ref()).await? {
            self.revoked_for_host(principal, host, valid_after);
        }
        Ok(())
    }

    /// Sets how long another server may take to apply a revocation committed here (its feed
    /// poll interval): epochs leave half a second more than that, rounded up to whole
    /// seconds, so a token another server issues before it has followed a revocation is
    /// refused too once it has (with clocks in step).
    pub fn set_follow_lag(&self, poll: Duration) {
        let secs = (poll.as_millis() + 500).div_ceil(1000);
        self.follow_lag.store(
            i64::try_from(secs).unwrap_or(i64::MAX / 4),
            Ordering::Relaxed,
        );
    }

    fn follow_lag(&self) -> i64 {
        self.follow_lag.load(Ordering::Relaxed)
    }

    /// How far ahead of the clock a token may be stamped (see [`Self::issue`]).
    fn stamp_ahead(&self) -> i64 {
        1 + self.follow_lag() + STAMP_SLACK_SECS
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

    /// Issues a token now, with no regard to what was read to build `request`: the mint
    /// paths go through [`Self::mint_guard`] and [`Self::issue_guarded`] instead.
    ///
    /// Revocations are kept in whole seconds and refuse every token issued before them
    /// (`iat < valid_after`). A token issued after a revocation but before its second (an
    /// identity detached and attached again at once) is stamped with the revocation's second
    /// instead, so it is not refused for its whole life; `nbf` moves by as much, a few seconds
    /// at most, well inside every validator's clock skew. The stamp is recorded so that a
    /// revocation registered later is later still.
    pub fn issue(
        &self,
        request: &TokenRequest,
    ) -> Result<(MintedToken, AccessTokenClaims), MintError> {
        let now = self.clock.unix();
        let ahead = self.stamp_ahead();
        let floor = [
            self.revocations.valid_after(request.object_id),
            request_host(request).and_then(|h| {
                self.revocations
                    .valid_after_for_host(request.object_id, h.as_str())
            }),
        ]
        .into_iter()
        .flatten()
        .max()
        .filter(|&after| after > now && after - now <= ahead);
        let issued = issue(
            &self.read_ring(),
            &self.policy,
            request,
            floor.unwrap_or(now),
        )?;
        if let Some(stamp) = floor {
            let mut notices = self.revocations.notices();
            notices.stamped.retain(|_, &mut s| s > now);
            let entry = notices.stamped.entry(request.object_id).or_insert(stamp);
            *entry = (*entry).max(stamp);
        }
        Ok(issued)
    }

    /// Starts a mint: take it before reading anything the token will say (the principal,
    /// the identities attached to the host), then issue through [`Self::issue_guarded`].
    pub fn mint_guard(&self) -> MintGuard {
        MintGuard {
            seen: self.revocations.notices().seq,
        }
    }

    /// Issues `request`, built from what was read after `guard` was taken, and hands the
    /// token out only if no revocation covering it (its principal, or its principal on its
    /// host) was registered, applied or withdrawn on this server since then. Otherwise the
    /// token is dropped unseen, the mint waits until the revocation is in force, takes a new
    /// guard and asks `still_holds` whether what the token says is still true (read it again
    /// from the store: is the principal there, the identity still attached?): if not, the
    /// answer is [`GuardedMintError::Gone`], as if the request had come after the revocation;
    /// if so, it issues again.
    ///
    /// So a mint either completes before a revocation is registered, and its token is older
    /// than the revocation's epoch (refused once it is in force), or it read what the
    /// revocation left: there is no token that read the old state and validates after it.
    pub async fn issue_guarded<F, Fut>(
        &self,
        guard: MintGuard,
        request: &TokenRequest,
        mut still_holds: F,
    ) -> Result<(MintedToken, AccessTokenClaims), GuardedMintError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let subjects = Subject::of_request(request);
        let mut guard = guard;
        for _ in 0..MINT_ATTEMPTS {
            let issued = self.issue(request)?;
            if !self.revocations.notices().raced(guard.seen, &subjects) {
                return Ok(issued);
            }
            tracing::debug!(principal = %request.object_id, "a revocation overlapped a mint; reading again");
            if !self.settled(&subjects).await {
                return Err(GuardedMintError::Busy);
            }
            guard = self.mint_guard();
            if !still_holds().await {
                return Err(GuardedMintError::Gone);
            }
        }
        Err(GuardedMintError::Busy)
    }

    /// Waits until no revocation of `subjects` is pending here; `false` if one still is
    /// after [`SETTLE_WAIT`].
    async fn settled(&self, subjects: &[Subject]) -> bool {
        let wait = async {
            loop {
                let notified = self.revocations.settled.notified();
                tokio::pin!(notified);
                // Registered before looking, so an end that comes in between still wakes us.
                notified.as_mut().enable();
                if !self.revocations.notices().is_pending(subjects) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(SETTLE_WAIT, wait).await.is_ok()
    }

    /// Registers the revocations `batch` carries as being committed by this server, then
    /// moves each epoch to at least one second past now plus the follow lag, and past any
    /// token of its principal stamped ahead of the clock: every token this server issued
    /// before the registration is older than the epoch, and every mint that overlaps it is
    /// dropped by its guard. `None` when the batch revokes nothing.
    ///
    /// Keep the result until the batch is committed and applied to this server's views (or
    /// has failed), then drop it.
    pub(crate) fn begin_revocations(
        self: &Arc<Self>,
        batch: &mut Batch,
    ) -> Option<PendingRevocations> {
        let subjects = revocation_subjects(batch.changes.iter());
        if subjects.is_empty() {
            return None;
        }
        let pending = self.hold(subjects);
        let floors: HashMap<Uuid, i64> = {
            let notices = self.revocations.notices();
            // The clock is read after the registration: a mint not dropped checked before it.
            let floor = self.clock.unix() + 1 + self.follow_lag();
            pending
                .subjects
                .iter()
                .map(|s| {
                    let p = s.principal();
                    let stamped = notices.stamped.get(&p).map_or(i64::MIN, |&t| t + 1);
                    (p, floor.max(stamped))
                })
                .collect()
        };
        for change in &mut batch.changes {
            raise_epoch(change, &floors);
        }
        Some(pending)
    }

    /// Marks revocations of `subjects` as on their way into this server's views (a feed
    /// entry carrying them is being applied) until the result is dropped.
    pub(crate) fn hold(self: &Arc<Self>, subjects: Vec<Subject>) -> PendingRevocations {
        {
            let mut notices = self.revocations.notices();
            for subject in &subjects {
                *notices.pending.entry(subject.clone()).or_insert(0) += 1;
                notices.touch(subject);
            }
        }
        PendingRevocations {
            tokens: Arc::clone(self),
            subjects,
            all: false,
        }
    }

    /// Marks every revocation as on its way (they are being reloaded whole) until the
    /// result is dropped.
    pub(crate) fn hold_all(self: &Arc<Self>) -> PendingRevocations {
        {
            let mut notices = self.revocations.notices();
            notices.all_pending += 1;
            notices.seq += 1;
            notices.all = notices.seq;
        }
        PendingRevocations {
            tokens: Arc::clone(self),
            subjects: Vec::new(),
            all: true,
        }
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
    /// the change that causes it through [`crate::AppState::commit`], which applies it (and
    /// moves the epoch to the second after the commit, see [`Self::begin_revocations`]).
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

/// Whether `change` revokes tokens.
pub(crate) fn is_revocation(change: &Change) -> bool {
    Subject::of_change(change).is_some()
}

/// The subjects of the revocations among `changes`.
pub(crate) fn revocation_subjects<'a>(changes: impl Iterator<Item = &'a Change>) -> Vec<Subject> {
    changes
        .filter_map(|c| Subject::of_change(c).map(|(s, _)| s))
        .collect()
}

/// The subjects of the revocations a feed entry carries.
pub(crate) fn feed_revocation_subjects(changes: &[FeedChange]) -> Vec<Subject> {
    changes
        .iter()
        .filter_map(|c| match c {
            FeedChange::SetRevocation { principal, .. } => Some(Subject::Principal(*principal)),
            FeedChange::PutDocument(doc) => {
                parse_host_revocation(doc).map(|(p, host, _)| Subject::host(p, &host))
            }
            _ => None,
        })
        .collect()
}

/// Moves the epoch of a revocation change to at least the floor of its principal.
fn raise_epoch(change: &mut Change, floors: &HashMap<Uuid, i64>) {
    let Some((subject, epoch)) = Subject::of_change(change) else {
        return;
    };
    let Some(&floor) = floors.get(&subject.principal()) else {
        return;
    };
    if epoch >= floor {
        return;
    }
    match (&mut *change, &subject) {
        (Change::SetRevocation { valid_after, .. }, _) => *valid_after = floor,
        (Change::PutDocument(doc), Subject::Host(principal, _)) => {
            if let Some(host) = doc.body.get("host").and_then(|h| h.as_str()) {
                doc.body = serde_json::json!({ "principal": principal, "host": host, "validAfter": floor });
                doc.version = floor;
            }
        }
        _ => {}
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
