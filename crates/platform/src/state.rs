//! What every handler shares: configuration, the store, the clock, the directory, and the
//! in-memory views (authorization index, revocations, signing keys, commit generation).
//!
//! # Following the commit feed
//!
//! The views change only by applying the store's commit feed in sequence order (see
//! `lanyard_storage`), so every server sharing a database sees one order of changes, its
//! own among them:
//! - [`AppState::commit`] commits, then catches up to at least the sequence number the
//!   store gave the batch, applying on the way whatever other servers committed before it:
//!   a caller reads its own write as soon as the call returns.
//! - [`follow_feed`] (the server spawns it) reads the feed head every
//!   [`Config::feed_poll`](crate::config::Config) and applies what is new, so another
//!   server's change is seen here within that interval.
//! - Applying is serialized by one mutex around "apply entries up to X" and resumes from
//!   the position it reached. An entry updates the authorization index
//!   ([`AccessRuntime::apply`]), merges revocations, reloads the key ring from the store when
//!   keys changed, and bumps the generation when resources, principals or revocations
//!   changed. While an entry that revokes is being applied, token mints of the principals
//!   it names are held off (see [`crate::tokens`]: issuance and revocation are linearisable
//!   on each server).
//! - A follower that finds entries pruned before it read them (it was stopped or cut off
//!   longer than the feed is kept) reloads every view from the store and goes on from the
//!   head it read before reloading. Entries after a snapshot's position are replayed over
//!   it, which is harmless: each one sets what it names (upserts, deletes, revocation
//!   epochs that only grow).

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lanyard_domain::hosts::{self, PlaneHost};
use lanyard_domain::{SharedClock, Subscription, Tenant};
use lanyard_storage::{FeedChange, FeedEntry, Store};

use crate::access::AccessRuntime;
use crate::config::Config;
use crate::tokens::{TokenRuntime, TokenRuntimeError};
use lanyard_storage::{Batch, Change, StoreError};

/// The tenant, subscription and administrator created at first start.
#[derive(Debug, Clone)]
pub struct Directory {
    pub tenant: Tenant,
    pub subscription: Subscription,
    pub admin_object_id: uuid::Uuid,
    pub admin_client_id: uuid::Uuid,
}

/// Shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Config,
    /// The port clients reach the HTTPS listener on (known once it is bound).
    pub port: u16,
    pub store: Arc<dyn Store>,
    pub clock: SharedClock,
    pub directory: Directory,
    pub tokens: Arc<TokenRuntime>,
    pub access: Arc<AccessRuntime>,
    /// Bumped by every feed entry that could change which identity a resource holds or
    /// whether a principal exists; caches of derived answers compare it instead of
    /// re-reading. Also where the views stand in the feed.
    pub generation: Generation,
}

/// The commit generation, and the feed position the views have reached.
#[derive(Debug, Default)]
pub struct Generation {
    counter: AtomicU64,
    /// The last feed entry applied; `None` until the follower first runs, when it starts
    /// from the lower of the positions the runtimes were loaded at.
    applied: tokio::sync::Mutex<Option<u64>>,
}

/// The counter itself (`load`, and `fetch_add` for tests that simulate a change).
impl Deref for Generation {
    type Target = AtomicU64;

    fn deref(&self) -> &AtomicU64 {
        &self.counter
    }
}

/// Feed entries read per query while catching up.
const FEED_PAGE: u32 = 500;

/// Why the views could not follow the feed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] TokenRuntimeError),
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        let shared = Arc::new(shared);
        shared.tokens.attach(Arc::downgrade(&shared));
        shared.tokens.set_follow_lag(shared.config.feed_poll);
        Self(shared)
    }

    /// Commits `batch`, then brings the in-memory views up to it (and to whatever other
    /// servers committed before it). Every write goes through here.
    ///
    /// A batch that revokes tokens is registered with the token runtime before it is
    /// committed (its epochs move to the second after the commit, and mints of the revoked
    /// principals that overlap it read again; see [`TokenRuntime::begin_revocations`]), and
    /// runs to its end even if the caller goes away: when this returns, the revocation is in
    /// force on this server.
    pub async fn commit(&self, mut batch: Batch) -> Result<(), StoreError> {
        let Some(pending) = self.tokens.begin_revocations(&mut batch) else {
            return self.commit_and_follow(batch).await;
        };
        let state = self.clone();
        let run = tokio::spawn(async move {
            let result = state.commit_and_follow(batch).await;
            drop(pending);
            result
        });
        run.await.unwrap_or_else(|e| {
            Err(StoreError::Database(format!(
                "the commit of a revocation stopped: {e}"
            )))
        })
    }

    async fn commit_and_follow(&self, batch: Batch) -> Result<(), StoreError> {
        let revocations: Vec<Change> = batch
            .changes
            .iter()
            .filter(|c| crate::tokens::is_revocation(c))
            .cloned()
            .collect();
        let Some(seq) = self.store.commit_seq(batch).await? else {
            return Ok(());
        };
        if let Err(e) = self.catch_up(Some(seq)).await {
            // The write is durable; only the views lag, until the background follower
            // gets through. Say so loudly, and never let this server accept a token the
            // batch revoked: revocation epochs only grow, so applying them early is safe.
            // The caches of what resources hold are read again from the store.
            tracing::error!(error = %e, seq, "the in-memory views could not follow a commit");
            for change in &revocations {
                self.apply_revocation(change);
            }
            if !revocations.is_empty() {
                self.generation.counter.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// The current commit generation (see [`Shared::generation`]).
    pub fn generation(&self) -> u64 {
        self.generation.counter.load(Ordering::SeqCst)
    }

    /// Audiences the control plane accepts: ours and Azure's public ones.
    pub fn management_audiences(&self) -> Vec<String> {
        vec![
            format!("https://management.{}/", self.config.domain),
            self.endpoints().management(),
            "https://management.azure.com/".to_string(),
            "https://management.core.windows.net/".to_string(),
        ]
    }

    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            domain: self.config.domain.clone(),
            port: self.port,
        }
    }
}

impl Shared {
    /// Applies feed entries until the views reflect at least `target` (or, with `None`,
    /// everything visible now). Returns the position reached.
    pub async fn catch_up(&self, target: Option<u64>) -> Result<u64, FollowError> {
        let mut applied = self.generation.applied.lock().await;
        let mut cursor = match *applied {
            Some(position) => position,
            None => self.access.loaded_at().min(self.tokens.loaded_at()),
        };
        if target.is_some_and(|t| cursor >= t) {
            return Ok(cursor);
        }
        loop {
            let page = self.store.feed(cursor, FEED_PAGE).await?;
            let contiguous = page.first().is_some_and(|e| e.seq == cursor + 1);
            if !contiguous {
                let head = self.store.feed_head().await?;
                if page.is_empty() && cursor >= head.pruned_through {
                    break; // nothing new
                }
                // Entries after our position are gone: start again from a full reload.
                tracing::warn!(
                    position = cursor,
                    pruned_through = head.pruned_through,
                    "the commit feed moved past this server's views; reloading them"
                );
                cursor = self.reload_views().await?;
                *applied = Some(cursor);
                continue;
            }
            for entry in &page {
                if entry.seq != cursor + 1 {
                    break; // the next read starts from here and decides
                }
                self.apply_entry(entry).await?;
                cursor = entry.seq;
                *applied = Some(cursor);
            }
            let reached = target.is_none_or(|t| cursor >= t);
            if page.len() < FEED_PAGE as usize && reached {
                break;
            }
        }
        *applied = Some(cursor);
        Ok(cursor)
    }

    /// Applies one entry to every view; the generation moves last, once the rest is there.
    /// Mints of the principals it revokes are held off until then (see
    /// [`TokenRuntime::hold`]): none may go on from a cache the entry makes stale.
    async fn apply_entry(&self, entry: &FeedEntry) -> Result<(), FollowError> {
        let revoked = crate::tokens::feed_revocation_subjects(&entry.changes);
        let _held = (!revoked.is_empty()).then(|| self.tokens.hold(revoked));
        let mut bump = false;
        let mut keys = false;
        for change in &entry.changes {
            match change {
                FeedChange::PutResource(_)
                | FeedChange::DeleteResource(_)
                | FeedChange::DeleteResourcesWithin(_)
                | FeedChange::PutPrincipal { .. }
                | FeedChange::DeletePrincipal(_) => bump = true,
                FeedChange::SetRevocation {
                    principal,
                    valid_after,
                } => {
                    self.tokens.revoked(*principal, *valid_after);
                    bump = true;
                }
                FeedChange::PutDocument(doc) => {
                    if let Some((principal, host, after)) =
                        crate::tokens::parse_host_revocation(doc)
                    {
                        self.tokens.revoked_for_host(principal, host, after);
                        bump = true;
                    }
                }
                FeedChange::PutKey(_) | FeedChange::DeleteKey(_) => keys = true,
                _ => {}
            }
        }
        self.access
            .apply(self.store.as_ref(), &entry.changes)
            .await?;
        if keys {
            self.tokens.reload_keys().await?;
        }
        if bump {
            self.generation.counter.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Reloads every view from the store; returns the feed position read first. Every mint
    /// under way reads again.
    async fn reload_views(&self) -> Result<u64, FollowError> {
        let _held = self.tokens.hold_all();
        let head = self.store.feed_head().await?;
        self.access.reload(self.store.as_ref()).await?;
        self.tokens.reload_keys().await?;
        self.tokens.reload_revocations().await?;
        self.generation.counter.fetch_add(1, Ordering::SeqCst);
        Ok(head.seq)
    }

    /// A revocation of a committed batch, applied directly (see [`AppState::commit`]).
    fn apply_revocation(&self, change: &Change) {
        match change {
            Change::SetRevocation {
                principal,
                valid_after,
            } => self.tokens.revoked(*principal, *valid_after),
            Change::PutDocument(doc) => {
                if let Some((principal, host, after)) = crate::tokens::parse_host_revocation(doc) {
                    self.tokens.revoked_for_host(principal, host, after);
                }
            }
            _ => {}
        }
    }
}

/// Follows the commit feed until the task is dropped: every `every`, reads the feed head
/// and applies what is new. A failure is logged (once until it clears) and retried.
pub async fn follow_feed(state: AppState, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        let result = match state.store.feed_head().await {
            Ok(head) => state.catch_up(Some(head.seq)).await.map(|_| ()),
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(()) if failing => {
                tracing::info!("following the commit feed again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(error = %e, "cannot follow the commit feed; retrying");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The public URLs of each plane.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub domain: String,
    pub port: u16,
}

impl Endpoints {
    fn host(&self, name: &str) -> String {
        if self.port == 443 {
            format!("https://{name}")
        } else {
            format!("https://{name}:{}", self.port)
        }
    }

    /// The host every client can reach without name resolution: control plane and login.
    pub fn localhost(&self) -> String {
        self.host("localhost")
    }

    pub fn management(&self) -> String {
        self.host(&format!("management.{}", self.domain))
    }

    pub fn login(&self) -> String {
        self.host(&format!("login.{}", self.domain))
    }

    /// `https://{name}.{label}.{domain}[:{port}]`: resource `name` of a hosted data plane.
    pub fn hosted(&self, plane: &PlaneHost, name: &str) -> String {
        self.host(&plane.host(name, &self.domain))
    }

    /// `https://{audience host}[:{port}]`: this server's own audience for a hosted data plane.
    pub fn audience(&self, plane: &PlaneHost) -> String {
        self.host(&plane.audience_host(&self.domain))
    }

    pub fn vault(&self, name: &str) -> String {
        self.hosted(&hosts::VAULT, name)
    }

    /// The audience of every vault here (`https://vault.{domain}[:{port}]`): the Key Vault
    /// challenge's `resource`, whose host:port each vault's host:port ends with.
    pub fn vault_audience(&self) -> String {
        self.audience(&hosts::VAULT)
    }

    pub fn blob(&self, account: &str) -> String {
        self.hosted(&hosts::BLOB, account)
    }
}

/// The vault a request on `{vault}.vault.{domain}` is for (a request extension).
#[derive(Debug, Clone)]
pub struct VaultName(pub String);

/// The storage account a request on `{account}.blob.{domain}` is for (a request extension).
#[derive(Debug, Clone)]
pub struct AccountName(pub String);

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::config::ConfigLayer;
    use lanyard_authz::AccessRequest;
    use lanyard_domain::{PrincipalType, ResourceId, RoleAssignment, SubscriptionState};
    use lanyard_token::{Kek, RotationPolicy};
    use uuid::Uuid;

    const READER: Uuid = Uuid::from_u128(0xacdd72a7_3385_48ef_bd42_f606fba81ae7);

    /// A state over its own connection to the SQLite file at `path` (as a second server
    /// would have), with the key-encryption key `kek`.
    pub(crate) async fn state_on(path: &std::path::Path, kek: [u8; 32]) -> AppState {
        state_with(path, kek, Arc::new(lanyard_domain::SystemClock)).await
    }

    /// The same, on `clock`.
    async fn state_with(path: &std::path::Path, kek: [u8; 32], clock: SharedClock) -> AppState {
        let store = lanyard_storage::open(path.to_str().unwrap()).await.unwrap();
        let tenant = Tenant {
            id: Uuid::from_u128(1),
            display_name: "t".into(),
            default_domain: "lanyard.localhost".into(),
        };
        let tokens = TokenRuntime::load(
            Arc::clone(&store),
            Kek::from_bytes(kek),
            Arc::clone(&clock),
            RotationPolicy::default(),
            3600,
            vec![tenant.id],
        )
        .await
        .unwrap();
        let access = AccessRuntime::load(store.as_ref()).await.unwrap();
        let config = Config::from_layer(ConfigLayer {
            data_dir: Some(path.parent().unwrap().to_path_buf()),
            ..Default::default()
        })
        .unwrap();
        AppState::new(Shared {
            config,
            port: 8443,
            store,
            clock,
            directory: Directory {
                subscription: Subscription {
                    id: Uuid::from_u128(2),
                    tenant_id: tenant.id,
                    display_name: "s".into(),
                    state: SubscriptionState::Enabled,
                },
                tenant,
                admin_object_id: Uuid::new_v4(),
                admin_client_id: Uuid::new_v4(),
            },
            tokens: Arc::new(tokens),
            access: Arc::new(access),
            generation: Default::default(),
        })
    }

    fn grant(principal: Uuid, scope: &ResourceId) -> RoleAssignment {
        let now = time::OffsetDateTime::now_utc();
        RoleAssignment {
            id: Uuid::new_v4(),
            scope: scope.clone(),
            role_definition_id: READER,
            principal_id: principal,
            principal_type: PrincipalType::ServicePrincipal,
            description: None,
            condition: None,
            condition_version: None,
            created_on: now,
            updated_on: now,
            created_by: None,
            updated_by: None,
        }
    }

    fn may_read(state: &AppState, principal: Uuid, scope: &ResourceId) -> bool {
        let action = "Microsoft.Resources/subscriptions/resourceGroups/read";
        state
            .access
            .check(&AccessRequest::control(principal, action, scope))
            .is_allowed()
    }

    #[tokio::test]
    async fn views_follow_other_writers_and_reload_past_the_pruned_horizon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanyard.db");
        let kek = [7u8; 32];
        let a = state_on(&path, kek).await;
        let b = state_on(&path, kek).await;
        let scope = ResourceId::resource_group(&Uuid::from_u128(2).to_string(), "rg");
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());

        // A's own write holds at once; B sees it when it follows the feed.
        a.commit(Batch::new().with(Change::PutAssignment(grant(alice, &scope))))
            .await
            .unwrap();
        assert!(may_read(&a, alice, &scope));
        assert!(!may_read(&b, alice, &scope));
        let generation = b.generation();
        b.catch_up(None).await.unwrap();
        assert!(may_read(&b, alice, &scope));

        // A resource change moves B's generation; a revocation reaches B's validator.
        let rg = lanyard_storage::ResourceRecord {
            id: scope.clone(),
            resource_type: "Microsoft.Resources/resourceGroups".into(),
            body: serde_json::json!({}),
            created_at: time::OffsetDateTime::now_utc(),
            updated_at: time::OffsetDateTime::now_utc(),
        };
        a.commit(
            Batch::new()
                .with(Change::PutResource(rg))
                .with(Change::SetRevocation {
                    principal: alice,
                    valid_after: 77,
                }),
        )
        .await
        .unwrap();
        b.catch_up(None).await.unwrap();
        assert!(b.generation() > generation);
        // A revocation covers at least everything up to its commit: the epoch moved up.
        let epoch = a.tokens.valid_after(alice).unwrap();
        assert!(epoch > 77);
        assert_eq!(b.tokens.valid_after(alice), Some(epoch));

        // A key rotated on A is B's ring after following.
        a.tokens.rotate_now().await.unwrap();
        b.catch_up(None).await.unwrap();
        assert_eq!(a.tokens.jwks(), b.tokens.jwks());

        // B misses entries that were pruned meanwhile: it reloads and still ends in step.
        a.commit(Batch::new().with(Change::PutAssignment(grant(bob, &scope))))
            .await
            .unwrap();
        a.store.prune_feed(0).await.unwrap();
        assert!(!may_read(&b, bob, &scope));
        let reached = b.catch_up(None).await.unwrap();
        assert_eq!(reached, a.store.feed_head().await.unwrap().seq);
        assert!(may_read(&b, bob, &scope));

        // Deleting everything within a scope reloads the index, on both.
        a.commit(Batch::new().with(Change::DeleteAssignmentsWithin(scope.clone())))
            .await
            .unwrap();
        assert!(!may_read(&a, bob, &scope));
        b.catch_up(None).await.unwrap();
        assert!(!may_read(&b, alice, &scope) && !may_read(&b, bob, &scope));
    }

    // ---- issuance and revocation are linearisable ----

    use crate::tokens::{host_revocation, retirement, GuardedMintError};
    use lanyard_domain::{Clock, ManualClock, Principal, PrincipalKind, ServicePrincipalSource};
    use lanyard_token::{TokenRequest, ValidationError};

    const AUDIENCE: &str = "https://vault.azure.net";

    fn vm() -> ResourceId {
        ResourceId::parse(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
        )
        .unwrap()
    }

    /// A user-assigned identity and the request for its token on [`vm`].
    fn identity_on_vm(tenant: Uuid) -> (Principal, TokenRequest) {
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
        let request = TokenRequest::managed_identity(&identity, &vm(), AUDIENCE, 0).unwrap();
        (identity, request)
    }

    fn validates(state: &AppState, token: &str) -> Result<(), ValidationError> {
        let validator = state.tokens.validator([AUDIENCE]);
        state.tokens.validate(&validator, token).map(|_| ())
    }

    async fn manual_state(clock: &Arc<ManualClock>) -> (AppState, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let state = state_with(&dir.path().join("lanyard.db"), [9u8; 32], clock.clone()).await;
        (state, dir)
    }

    /// A mint reads that the identity is attached, the identity is detached (committed and
    /// applied), then the mint signs: in the same second, the old mint path stamped its
    /// token past the revocation and it validated. Through the guard, it reads again and
    /// issues nothing; attached again, the next mint's token works.
    #[tokio::test]
    async fn a_mint_that_read_before_a_detach_issues_no_token_that_validates() {
        let clock = Arc::new(ManualClock::at_unix(1_800_000_000));
        let (state, _dir) = manual_state(&clock).await;
        let (identity, request) = identity_on_vm(state.directory.tenant.id);

        let guard = state.tokens.mint_guard();
        // ... the mint reads the host's identities here: still attached ...
        let detach = host_revocation(identity.object_id, &vm(), clock.unix() + 1);
        state.commit(Batch::new().with(detach)).await.unwrap();

        // What the mint path did before: sign what it read. The token is stamped with the
        // revocation's second and passes it.
        let (unguarded, _) = state.tokens.issue(&request).unwrap();
        assert_eq!(validates(&state, &unguarded.access_token), Ok(()));

        // Through the guard: the revocation is noticed, the mint reads again and finds the
        // identity gone.
        let mut reads = 0;
        let refused = state
            .tokens
            .issue_guarded(guard, &request, || {
                reads += 1;
                async { false }
            })
            .await;
        assert!(
            matches!(refused, Err(GuardedMintError::Gone)),
            "{refused:?}"
        );
        assert_eq!(reads, 1);

        // A mint that starts after the detach and finds the identity attached again (it was,
        // at once) gets a token that works, in the same second.
        let guard = state.tokens.mint_guard();
        let (fresh, claims) = state
            .tokens
            .issue_guarded(guard, &request, || async { panic!("no revocation since") })
            .await
            .unwrap();
        assert!(claims.iat > clock.unix());
        assert_eq!(validates(&state, &fresh.access_token), Ok(()));
    }

    /// The same for a deletion of the principal: nothing it was issued validates again, and
    /// a mint that overlapped the deletion answers as if it came after it.
    #[tokio::test]
    async fn a_mint_that_read_before_a_deletion_issues_nothing() {
        let clock = Arc::new(ManualClock::at_unix(1_800_000_000));
        let (state, _dir) = manual_state(&clock).await;
        let (identity, request) = identity_on_vm(state.directory.tenant.id);
        let (before, _) = state.tokens.issue(&request).unwrap();
        let guard = state.tokens.mint_guard();
        state
            .commit(Batch::new().with(retirement(identity.object_id)))
            .await
            .unwrap();
        let refused = state
            .tokens
            .issue_guarded(guard, &request, || async { false })
            .await;
        assert!(
            matches!(refused, Err(GuardedMintError::Gone)),
            "{refused:?}"
        );
        // Whatever was issued, before or since, and however it is stamped, is refused.
        let (since, _) = state.tokens.issue(&request).unwrap();
        for token in [before, since] {
            assert_eq!(
                validates(&state, &token.access_token),
                Err(ValidationError::Revoked)
            );
        }
        clock.advance(std::time::Duration::from_secs(3600));
        let (later, _) = state.tokens.issue(&request).unwrap();
        assert_eq!(
            validates(&state, &later.access_token),
            Err(ValidationError::Revoked)
        );
    }

    /// A revocation planned in one second and committed in the next: a token issued in
    /// between was issued before the commit, and must be refused once the commit returns.
    /// The epoch planned (`now + 1` at planning) would let it pass; the commit moves it.
    #[tokio::test]
    async fn a_token_issued_before_a_slow_commit_is_refused_after_it() {
        let clock = Arc::new(ManualClock::at_unix(1_800_000_000));
        let (state, _dir) = manual_state(&clock).await;
        let (identity, request) = identity_on_vm(state.directory.tenant.id);
        let planned = host_revocation(identity.object_id, &vm(), clock.unix() + 1);
        clock.advance(std::time::Duration::from_millis(1500));
        let (between, claims) = state.tokens.issue(&request).unwrap();
        assert_eq!(claims.iat, 1_800_000_001, "the planned epoch's own second");
        state.commit(Batch::new().with(planned)).await.unwrap();
        assert_eq!(
            validates(&state, &between.access_token),
            Err(ValidationError::Revoked)
        );
        assert!(state
            .tokens
            .is_revoked(identity.object_id, Some(&vm()), claims.iat));
    }

    /// While a revocation is between its registration and its application (the database
    /// commit, catching up), a mint of its principal that overlaps it waits, reads again,
    /// and issues nothing if what it read is gone; a token issued just before the
    /// registration is older than the epoch.
    #[tokio::test]
    async fn a_mint_overlapping_a_pending_revocation_waits_for_it() {
        let clock = Arc::new(ManualClock::at_unix(1_800_000_000));
        let (state, _dir) = manual_state(&clock).await;
        let (identity, request) = identity_on_vm(state.directory.tenant.id);
        let (before, _) = state.tokens.issue(&request).unwrap();
        let guard = state.tokens.mint_guard();

        let mut batch = Batch::new().with(host_revocation(identity.object_id, &vm(), 0));
        let pending = state.tokens.begin_revocations(&mut batch).unwrap();
        let epoch = match &batch.changes[0] {
            Change::PutDocument(doc) => crate::tokens::parse_host_revocation(doc).unwrap().2,
            other => panic!("{other:?}"),
        };
        assert!(epoch > clock.unix(), "moved past now: {epoch}");
        let minting = {
            let state = state.clone();
            let request = request.clone();
            tokio::spawn(async move {
                state
                    .tokens
                    .issue_guarded(guard, &request, || async { false })
                    .await
            })
        };
        // The mint cannot finish while the revocation is pending.
        tokio::task::yield_now().await;
        assert!(!minting.is_finished());
        state.commit_and_follow(batch).await.unwrap();
        drop(pending);
        let outcome = minting.await.unwrap();
        assert!(
            matches!(outcome, Err(GuardedMintError::Gone)),
            "{outcome:?}"
        );
        assert_eq!(
            validates(&state, &before.access_token),
            Err(ValidationError::Revoked)
        );
    }

    /// Detached, attached again and stamped ahead, then detached again within the same
    /// second: the stamped token is refused too (the new epoch is past every stamp).
    #[tokio::test]
    async fn a_second_revocation_in_one_second_is_past_the_stamps_of_the_first() {
        let clock = Arc::new(ManualClock::at_unix(1_800_000_000));
        let (state, _dir) = manual_state(&clock).await;
        let (identity, request) = identity_on_vm(state.directory.tenant.id);
        let detach = || host_revocation(identity.object_id, &vm(), clock.unix() + 1);
        state.commit(Batch::new().with(detach())).await.unwrap();
        let (stamped, claims) = state
            .tokens
            .issue_guarded(state.tokens.mint_guard(), &request, || async { true })
            .await
            .unwrap();
        assert!(claims.iat > clock.unix());
        assert_eq!(validates(&state, &stamped.access_token), Ok(()));
        state.commit(Batch::new().with(detach())).await.unwrap();
        assert_eq!(
            validates(&state, &stamped.access_token),
            Err(ValidationError::Revoked)
        );
        // Attached again once more: still a working token, stamped further ahead.
        let (again, _) = state
            .tokens
            .issue_guarded(state.tokens.mint_guard(), &request, || async { true })
            .await
            .unwrap();
        assert_eq!(validates(&state, &again.access_token), Ok(()));
    }

    /// Another server: a mint there that read before a detach committed here, and signs
    /// after it has followed the feed, issues nothing; a token it issued before following is
    /// refused once it has (the epoch leaves room for its poll interval).
    #[tokio::test]
    async fn another_server_follows_a_revocation_without_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanyard.db");
        let kek = [5u8; 32];
        let a = state_on(&path, kek).await;
        let b = state_on(&path, kek).await;
        let (identity, request) = identity_on_vm(a.directory.tenant.id);
        let guard = b.tokens.mint_guard();
        let detach = host_revocation(identity.object_id, &vm(), a.clock.unix() + 1);
        a.commit(Batch::new().with(detach)).await.unwrap();
        // B has not followed yet: its token is issued as of now.
        let (unfollowed, _) = b.tokens.issue(&request).unwrap();
        b.catch_up(None).await.unwrap();
        let refused = b
            .tokens
            .issue_guarded(guard, &request, || async { false })
            .await;
        assert!(
            matches!(refused, Err(GuardedMintError::Gone)),
            "{refused:?}"
        );
        for state in [&a, &b] {
            assert_eq!(
                validates(state, &unfollowed.access_token),
                Err(ValidationError::Revoked)
            );
        }
    }
}
