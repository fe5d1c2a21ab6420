//! The identity service: workload sessions, each with its own loopback listener bound to
//! one resource, the token cache, throttling and the sign-in log writer.
//!
//! A session holds only while what opened it holds. [`IdentityService::check`] runs on every
//! token request, on renewal and every few seconds in the background, and ends the session
//! when its opener no longer has write on the resource (the in-memory authorization index),
//! when the resource is gone or is another incarnation of the same id (deleted and created
//! again: see [`Incarnation`]), or when the process it is bound to has exited. Sessions are
//! capped per opener, per resource and in all ([`SessionLimits`]), and each listener serves
//! only the processes its [`Binding`] admits, decided once per connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanyard_authz::AccessRequest;
use lanyard_domain::ResourceId;
use lanyard_platform::config::SessionLimits;
use lanyard_platform::serve::Peer;
use lanyard_platform::AppState;
use lanyard_storage::{Batch, Change, ResourceRecord, SignInRecord, StoreError};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::attest::{Binding, Verdict};
use crate::protocol::Refusal;
use crate::resolve::Attached;

/// How long a session lives without renewal.
pub const SESSION_TTL_SECS: i64 = 90;
/// Cached tokens are re-minted this long before they expire.
const REFRESH_MARGIN_SECS: i64 = 300;
/// How long, and how many, sessions that ended early are remembered (to say why on renewal).
const ENDED_KEPT_SECS: i64 = SESSION_TTL_SECS;
const ENDED_KEPT_MAX: usize = 4096;
/// Sign-in records waiting to be written; beyond this they are dropped (and counted).
const SIGNIN_QUEUE: usize = 10_000;

/// A pre-serialized response body.
pub type Body = Arc<[u8]>;

/// The identities attached to a session's resource; `None` when the resource is gone or is
/// another incarnation.
type Resolved = Option<Arc<Vec<Attached>>>;

/// What tells one incarnation of a resource from another created later under the same id:
/// the record's creation time (nanoseconds, kept by every update) and, for a VM, its `vmId`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incarnation {
    created_at_ns: i128,
    vm_id: Option<String>,
}

impl Incarnation {
    pub fn of(record: &ResourceRecord) -> Self {
        Self {
            created_at_ns: record.created_at.unix_timestamp_nanos(),
            vm_id: record.body["properties"]["vmId"]
                .as_str()
                .map(str::to_string),
        }
    }
}

/// A workload session: a listener address and an identity header, bound to one resource.
pub struct Session {
    pub id: Uuid,
    pub resource: ResourceId,
    /// Object id of whoever opened it.
    pub owner: Uuid,
    pub addr: SocketAddr,
    /// Which local processes its listener serves.
    pub binding: Binding,
    /// The action opening it needed (`{type}/write`), checked again on every use.
    action: String,
    incarnation: Incarnation,
    secret_digest: [u8; 32],
    expires_at: AtomicI64,
    ended: AtomicBool,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    /// Identities attached to the resource as of a commit generation; `None` when the
    /// resource is gone or is another incarnation.
    resolved: Mutex<Option<(u64, Resolved)>>,
}

impl Session {
    /// Whether `header` is this session's identity header (constant-time on the digests).
    pub fn header_matches(&self, header: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(header.as_bytes()).into();
        digest
            .iter()
            .zip(self.secret_digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    pub fn is_active(&self, now: i64) -> bool {
        !self.ended.load(Ordering::SeqCst) && now < self.expires_at.load(Ordering::SeqCst)
    }

    pub fn expires_at(&self) -> i64 {
        self.expires_at.load(Ordering::SeqCst)
    }

    /// The action on the resource its opener must keep holding.
    pub fn action(&self) -> &str {
        &self.action
    }

    fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        if let Some(tx) = self
            .shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = tx.send(());
        }
    }
}

/// A token handed out before. It stays good across commits: the caller has just resolved the
/// identity again for the current generation, so what remains to check is that the token
/// has not been revoked (for its principal, or for this host) since it was issued.
struct CachedToken {
    body: Body,
    issued_at: i64,
    expires_on: i64,
}

/// Azure's limits per resource: 20 requests a second, 5 at once. Time comes from the
/// injected clock (seconds as `f64`).
struct Throttle {
    bucket: Mutex<(f64, f64)>,
    concurrent: Arc<Semaphore>,
}

const THROTTLE_RATE: f64 = 20.0;
const THROTTLE_CONCURRENT: usize = 5;

impl Throttle {
    fn new(now: f64) -> Self {
        Self {
            bucket: Mutex::new((THROTTLE_RATE, now)),
            concurrent: Arc::new(Semaphore::new(THROTTLE_CONCURRENT)),
        }
    }

    fn take(&self, now: f64) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let refill = (now - b.1).max(0.0) * THROTTLE_RATE;
        b.0 = (b.0 + refill).min(THROTTLE_RATE);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Everything the identity endpoints share.
pub struct IdentityService {
    pub app: AppState,
    sessions: Mutex<HashMap<Uuid, Arc<Session>>>,
    /// Sessions that ended early, by id.
    lapsed: Mutex<HashMap<Uuid, Ended>>,
    cache: Mutex<HashMap<(Uuid, String, String), CachedToken>>,
    throttles: Mutex<HashMap<String, Arc<Throttle>>>,
    signins: mpsc::Sender<SignInRecord>,
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot open a loopback listener: {0}")]
    Listen(String),
    /// A cap is reached: `setting` names it, `what` says whose sessions were counted.
    #[error(
        "{what} already has {limit} workload sessions open, the most allowed (`{setting}`). \
         End one (`lanyard run` ends its own when its command exits), or wait for one to expire."
    )]
    Limit {
        what: String,
        limit: usize,
        setting: &'static str,
    },
}

/// Why a session ended before its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Lapse {
    #[error("its opener no longer has write access to the resource")]
    AccessLost,
    #[error("the resource was deleted, or deleted and created again, since it was opened")]
    ResourceGone,
    #[error("the process that opened it has exited")]
    ProcessGone,
}

/// A session that ended early, as remembered for a while after.
#[derive(Debug, Clone)]
pub struct Ended {
    pub owner: Uuid,
    pub resource: ResourceId,
    pub action: String,
    pub lapse: Lapse,
    at: i64,
}

/// Why [`IdentityService::check`] did not pass a session.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The session has ended (and is now removed).
    #[error("the session has ended: {0}")]
    Lapsed(Lapse),
    /// The store could not be read; the session stands.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IdentityService {
    /// Starts the service's background work (sign-in writer, session reaper).
    pub fn start(app: AppState) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(SIGNIN_QUEUE);
        let service = Arc::new(Self {
            app: app.clone(),
            sessions: Mutex::new(HashMap::new()),
            lapsed: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
            throttles: Mutex::new(HashMap::new()),
            signins: tx,
        });
        tokio::spawn(write_signins(app, rx));
        tokio::spawn(reap_sessions(Arc::downgrade(&service)));
        service
    }

    /// Whether one more session for `resource`, opened by `owner`, stays within the caps.
    /// Opening checks again when it inserts the session; this is the early answer.
    pub fn has_room(&self, resource: &ResourceId, owner: Uuid) -> Result<(), SessionError> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        self.room(&sessions, resource, owner)
    }

    fn room(
        &self,
        sessions: &HashMap<Uuid, Arc<Session>>,
        resource: &ResourceId,
        owner: Uuid,
    ) -> Result<(), SessionError> {
        let limits: SessionLimits = self.app.config.session_limits;
        let now = self.app.clock.unix();
        let (mut total, mut of_owner, mut on_resource) = (0, 0, 0);
        for s in sessions.values().filter(|s| s.is_active(now)) {
            total += 1;
            of_owner += usize::from(s.owner == owner);
            on_resource += usize::from(s.resource.key() == resource.key());
        }
        let full = |what: String, limit: usize, setting| SessionError::Limit {
            what,
            limit,
            setting,
        };
        if on_resource >= limits.per_resource {
            return Err(full(
                format!("The resource `{resource}`"),
                limits.per_resource,
                "max-sessions-per-resource",
            ));
        }
        if of_owner >= limits.per_principal {
            return Err(full(
                format!("The principal `{owner}`"),
                limits.per_principal,
                "max-sessions-per-principal",
            ));
        }
        if total >= limits.total {
            return Err(full("This server".into(), limits.total, "max-sessions"));
        }
        Ok(())
    }

    /// Opens a session for the resource `record` holds, for `owner`, whose listener serves
    /// what `binding` admits: a new listener on 127.0.0.1 and a fresh identity header.
    /// Returns the session and the header value (shown once).
    pub async fn open_session(
        self: &Arc<Self>,
        record: &ResourceRecord,
        owner: Uuid,
        binding: Binding,
    ) -> Result<(Arc<Session>, String), SessionError> {
        let resource = record.id.clone();
        self.has_room(&resource, owner)?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| SessionError::Listen(e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| SessionError::Listen(e.to_string()))?;
        let secret = random_secret();
        let (tx, rx) = oneshot::channel();
        let session = Arc::new(Session {
            id: Uuid::new_v4(),
            action: format!("{}/write", resource.resource_type()),
            incarnation: Incarnation::of(record),
            resource,
            owner,
            addr,
            binding,
            secret_digest: Sha256::digest(secret.as_bytes()).into(),
            expires_at: AtomicI64::new(self.app.clock.unix() + SESSION_TTL_SECS),
            ended: AtomicBool::new(false),
            shutdown: Mutex::new(Some(tx)),
            resolved: Mutex::new(None),
        });
        {
            // Counted and inserted under one lock: concurrent opens cannot both take the
            // last slot.
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            self.room(&sessions, &session.resource, owner)?;
            sessions.insert(session.id, Arc::clone(&session));
        }
        let router = crate::endpoint::router(Arc::clone(self), Arc::clone(&session));
        // The configured timeouts; the connection cap of a plain listener.
        let limits = lanyard_platform::serve::NetLimits {
            max_connections: lanyard_platform::serve::PLAIN_MAX_CONNECTIONS,
            ..self.app.config.net
        };
        tokio::spawn(lanyard_platform::serve::serve_plain_with(
            listener,
            router,
            limits,
            async {
                let _ = rx.await;
            },
        ));
        tracing::info!(session = %session.id, resource = %session.resource, %addr, binding = ?session.binding, "workload session opened");
        Ok((session, secret))
    }

    pub fn session(&self, id: Uuid) -> Option<Arc<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Extends a session's life by the TTL from now.
    pub fn renew(&self, session: &Session) {
        session
            .expires_at
            .store(self.app.clock.unix() + SESSION_TTL_SECS, Ordering::SeqCst);
    }

    /// Ends a session: its listener closes and its header stops working at once.
    pub fn end_session(&self, id: Uuid) -> bool {
        let removed = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        match removed {
            Some(s) => {
                s.end();
                tracing::info!(session = %id, "workload session ended");
                true
            }
            None => false,
        }
    }

    /// Checks that what opened `session` still holds: its opener's write on the resource
    /// (the in-memory index), the resource's incarnation (re-read only after a commit that
    /// could have changed it) and, for a session bound to a process, that process. Ends the
    /// session when one of them no longer holds. Returns the identities attached to the
    /// resource.
    pub async fn check(&self, session: &Session) -> Result<Arc<Vec<Attached>>, CheckError> {
        let lapse = if !self.opener_may_write(session) {
            Lapse::AccessLost
        } else if matches!(session.binding, Binding::Process { root } if !crate::attest::alive(root))
        {
            Lapse::ProcessGone
        } else {
            match self.attached(session).await? {
                Some(list) => return Ok(list),
                None => Lapse::ResourceGone,
            }
        };
        let now = self.app.clock.unix();
        {
            let mut lapsed = self.lapsed.lock().unwrap_or_else(|p| p.into_inner());
            if lapsed.len() >= ENDED_KEPT_MAX {
                lapsed.retain(|_, e| now - e.at < ENDED_KEPT_SECS);
                if lapsed.len() >= ENDED_KEPT_MAX {
                    lapsed.clear();
                }
            }
            lapsed.insert(
                session.id,
                Ended {
                    owner: session.owner,
                    resource: session.resource.clone(),
                    action: session.action.clone(),
                    lapse,
                    at: now,
                },
            );
        }
        if self.end_session(session.id) {
            tracing::info!(session = %session.id, resource = %session.resource, reason = %lapse, "workload session ended early");
        }
        session.end();
        Err(CheckError::Lapsed(lapse))
    }

    /// A session that ended early, while it is remembered.
    pub fn lapsed(&self, id: Uuid) -> Option<Ended> {
        self.lapsed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Forgets a session that ended early (its opener has ended it too).
    pub fn forget_lapsed(&self, id: Uuid) {
        self.lapsed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Whether the opener still holds the action opening needed (in-memory, no I/O).
    fn opener_may_write(&self, session: &Session) -> bool {
        self.app
            .access
            .check(&AccessRequest::control(
                session.owner,
                &session.action,
                &session.resource,
            ))
            .is_allowed()
    }

    /// The identities attached to the session's resource, re-read only after a commit that
    /// could have changed them; `None` when the resource is gone or is not the incarnation
    /// the session was opened on.
    async fn attached(&self, session: &Session) -> Result<Resolved, StoreError> {
        let generation = self.app.generation();
        if let Some((g, list)) = &*session.resolved.lock().unwrap_or_else(|p| p.into_inner()) {
            if *g == generation {
                return Ok(list.clone());
            }
        }
        let record = self
            .app
            .store
            .resource(&session.resource)
            .await?
            .filter(|r| Incarnation::of(r) == session.incarnation);
        let list = match record {
            None => None,
            Some(r) => {
                let mut list = crate::resolve::attached_identities(&r.body);
                for a in list.iter_mut().filter(|a| a.client_id.is_none()) {
                    if let Ok(Some(p)) = self.app.store.principal(a.principal_id).await {
                        a.client_id = p.client_id();
                    }
                }
                Some(Arc::new(list))
            }
        };
        *session.resolved.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((generation, list.clone()));
        Ok(list)
    }

    /// Whether the connection `peer` came on may use `session`: decided on the connection's
    /// first request and kept for its life.
    pub async fn admits(&self, session: &Session, peer: Option<&Peer>) -> bool {
        let binding = session.binding;
        if binding == Binding::Unbound {
            return true;
        }
        let Some(peer) = peer else {
            return false;
        };
        let (remote, local, id) = (peer.remote, peer.local, session.id);
        peer.admitted(|| async move {
            let verdict = tokio::task::spawn_blocking(move || {
                crate::attest::verdict(binding, remote, local)
            })
            .await
            .unwrap_or(Verdict::Unknown);
            if verdict != Verdict::Admitted {
                tracing::warn!(session = %id, peer = %remote, reason = %verdict, "identity endpoint refused a connection from outside its session");
            }
            verdict == Verdict::Admitted
        })
        .await
    }

    pub(crate) fn cached(
        &self,
        principal: Uuid,
        host: &ResourceId,
        resource: &str,
    ) -> Option<Body> {
        let now = self.app.clock.unix();
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let hit = cache.get(&(principal, host.key().to_string(), resource.to_string()))?;
        let revoked = self
            .app
            .tokens
            .is_revoked(principal, Some(host), hit.issued_at);
        (!revoked && now < hit.expires_on - REFRESH_MARGIN_SECS).then(|| Arc::clone(&hit.body))
    }

    pub(crate) fn remember(
        &self,
        principal: Uuid,
        host: &ResourceId,
        resource: &str,
        body: Body,
        issued_at: i64,
        expires_on: i64,
    ) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(
            (principal, host.key().to_string(), resource.to_string()),
            CachedToken {
                body,
                issued_at,
                expires_on,
            },
        );
    }

    /// Whether a request for `resource` may proceed now; `None` means throttling is off.
    /// The permit must be held while the request runs.
    pub(crate) fn admit(
        &self,
        resource: &ResourceId,
    ) -> Result<Option<OwnedSemaphorePermit>, Refusal> {
        if !self.app.config.identity_throttling {
            return Ok(None);
        }
        let now = self.app.clock.now().unix_timestamp_nanos() as f64 / 1e9;
        let throttle = Arc::clone(
            self.throttles
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(resource.key().to_string())
                .or_insert_with(|| Arc::new(Throttle::new(now))),
        );
        if !throttle.take(now) {
            return Err(Refusal::Throttled);
        }
        match Arc::clone(&throttle.concurrent).try_acquire_owned() {
            Ok(p) => Ok(Some(p)),
            Err(_) => Err(Refusal::Throttled),
        }
    }

    /// Queues a sign-in record; never blocks the request.
    pub(crate) fn record(&self, record: SignInRecord) {
        if self.signins.try_send(record).is_err() {
            tracing::warn!("sign-in log queue is full; a record was dropped");
        }
    }
}

fn random_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn write_signins(app: AppState, mut rx: mpsc::Receiver<SignInRecord>) {
    while let Some(first) = rx.recv().await {
        let mut batch = Batch::new().with(Change::AppendSignIn(first));
        while batch.changes.len() < 500 {
            match rx.try_recv() {
                Ok(r) => batch.push(Change::AppendSignIn(r)),
                Err(_) => break,
            }
        }
        if let Err(e) = app.store.commit(batch).await {
            tracing::warn!(error = %e, "sign-in records could not be written");
        }
    }
}

/// Every few seconds: ends sessions that expired, and those [`IdentityService::check`] finds
/// lapsed (so a listener closes soon after its opener loses access even if no one calls).
async fn reap_sessions(service: std::sync::Weak<IdentityService>) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        let Some(service) = service.upgrade() else {
            return;
        };
        let now = service.app.clock.unix();
        let open: Vec<Arc<Session>> = service
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        service
            .lapsed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, e| now - e.at < ENDED_KEPT_SECS);
        for session in open {
            if !session.is_active(now) {
                service.end_session(session.id);
            } else if let Err(CheckError::Store(e)) = service.check(&session).await {
                tracing::debug!(error = %e, "session check deferred: the store is unavailable");
            }
        }
    }
}
