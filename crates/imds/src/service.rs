//! The identity service: workload sessions, each with its own loopback listener bound to
//! one resource, the token cache, throttling and the sign-in log writer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanyard_domain::ResourceId;
use lanyard_platform::AppState;
use lanyard_storage::{Batch, Change, SignInRecord};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::protocol::Refusal;
use crate::resolve::Attached;

/// How long a session lives without renewal.
pub const SESSION_TTL_SECS: i64 = 90;
/// Cached tokens are re-minted this long before they expire.
const REFRESH_MARGIN_SECS: i64 = 300;
/// Sign-in records waiting to be written; beyond this they are dropped (and counted).
const SIGNIN_QUEUE: usize = 10_000;

/// A pre-serialized response body.
pub type Body = Arc<[u8]>;

/// A workload session: a listener address and an identity header, bound to one resource.
pub struct Session {
    pub id: Uuid,
    pub resource: ResourceId,
    /// Object id of whoever opened it.
    pub owner: Uuid,
    pub addr: SocketAddr,
    secret_digest: [u8; 32],
    expires_at: AtomicI64,
    ended: AtomicBool,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    /// Identities attached to the resource, as of a commit generation.
    resolved: Mutex<Option<(u64, Arc<Vec<Attached>>)>>,
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
    cache: Mutex<HashMap<(Uuid, String, String), CachedToken>>,
    throttles: Mutex<HashMap<String, Arc<Throttle>>>,
    signins: mpsc::Sender<SignInRecord>,
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot open a loopback listener: {0}")]
    Listen(String),
}

impl IdentityService {
    /// Starts the service's background work (sign-in writer, session reaper).
    pub fn start(app: AppState) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(SIGNIN_QUEUE);
        let service = Arc::new(Self {
            app: app.clone(),
            sessions: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
            throttles: Mutex::new(HashMap::new()),
            signins: tx,
        });
        tokio::spawn(write_signins(app, rx));
        tokio::spawn(reap_sessions(Arc::downgrade(&service)));
        service
    }

    /// Opens a session for `resource`: a new listener on 127.0.0.1 and a fresh identity
    /// header. Returns the session and the header value (shown once).
    pub async fn open_session(
        self: &Arc<Self>,
        resource: ResourceId,
        owner: Uuid,
    ) -> Result<(Arc<Session>, String), SessionError> {
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
            resource,
            owner,
            addr,
            secret_digest: Sha256::digest(secret.as_bytes()).into(),
            expires_at: AtomicI64::new(self.app.clock.unix() + SESSION_TTL_SECS),
            ended: AtomicBool::new(false),
            shutdown: Mutex::new(Some(tx)),
            resolved: Mutex::new(None),
        });
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session.id, Arc::clone(&session));
        let router = crate::endpoint::router(Arc::clone(self), Arc::clone(&session));
        tokio::spawn(lanyard_platform::serve::serve_plain(
            listener,
            router,
            async {
                let _ = rx.await;
            },
        ));
        tracing::info!(session = %session.id, resource = %session.resource, %addr, "workload session opened");
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

    /// The identities attached to the session's resource, re-read only after a commit that
    /// could have changed them.
    pub async fn attached(&self, session: &Session) -> Result<Arc<Vec<Attached>>, Refusal> {
        let generation = self.app.generation();
        if let Some((g, list)) = &*session.resolved.lock().unwrap_or_else(|p| p.into_inner()) {
            if *g == generation {
                return Ok(Arc::clone(list));
            }
        }
        let record = self
            .app
            .store
            .resource(&session.resource)
            .await
            .map_err(|_| {
                Refusal::BadRequest("the identity service cannot read its database; retry".into())
            })?;
        let mut list = record
            .map(|r| crate::resolve::attached_identities(&r.body))
            .unwrap_or_default();
        for a in list.iter_mut().filter(|a| a.client_id.is_none()) {
            if let Ok(Some(p)) = self.app.store.principal(a.principal_id).await {
                a.client_id = p.client_id();
            }
        }
        let list = Arc::new(list);
        *session.resolved.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((generation, Arc::clone(&list)));
        Ok(list)
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

async fn reap_sessions(service: std::sync::Weak<IdentityService>) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        let Some(service) = service.upgrade() else {
            return;
        };
        let now = service.app.clock.unix();
        let expired: Vec<Uuid> = service
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| !s.is_active(now))
            .map(|s| s.id)
            .collect();
        for id in expired {
            service.end_session(id);
        }
    }
}
