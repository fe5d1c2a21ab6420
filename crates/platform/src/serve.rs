//! The accept loops (HTTPS, and plain HTTP for the identity endpoints): a bound listener in,
//! a shutdown future to stop it.
//!
//! What a client can hold of a listener is bounded by [`NetLimits`], whoever it is (these
//! bounds act before any authentication):
//! - at most `max_connections` connections at once; one accepted beyond that is closed at
//!   once (the client sees a refused connection, not a queue), while the open ones go on;
//! - a TLS handshake within `tls_handshake_timeout`;
//! - HTTP/1 request headers within `header_read_timeout` (hyper counts it from when the
//!   connection starts waiting for a request, so it bounds an idle keep-alive too);
//! - HTTP/2 pings every `http2_keepalive_interval`, answered within
//!   `http2_keepalive_timeout`, or the connection is closed;
//! - a connection on which no request starts or ends for `idle_timeout` is shut down
//!   gracefully (HTTP/1 and HTTP/2 alike): requests in flight finish, nothing new starts.
//!
//! Request bodies are bounded where the plane, and so the error shape, is known: the HTTPS
//! application in `lanyard-server`.
//!
//! On shutdown the listener closes at once, every connection is shut down gracefully and open
//! requests get up to ten seconds to finish.
//!
//! Every request carries a [`Peer`] extension: the connection's two addresses and a verdict
//! about its peer that a plane may compute once and keep for the connection's life (the
//! identity endpoints' process attestation).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

pub use crate::config::NetLimits;

const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one warning line per this long while connections are being refused.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
/// Connections one plain listener (a session's identity endpoint) serves at once.
pub const PLAIN_MAX_CONNECTIONS: usize = 128;

/// The two ends of the connection a request came on, as a request extension.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub remote: SocketAddr,
    /// This server's address on the connection.
    pub local: SocketAddr,
    admitted: Arc<tokio::sync::OnceCell<bool>>,
}

impl Peer {
    pub fn new(remote: SocketAddr, local: SocketAddr) -> Self {
        Self {
            remote,
            local,
            admitted: Arc::default(),
        }
    }

    /// Whether the peer is admitted: `decide` runs on the connection's first request that
    /// asks, and its answer holds for the connection's life.
    pub async fn admitted<F: Future<Output = bool>>(&self, decide: impl FnOnce() -> F) -> bool {
        *self.admitted.get_or_init(decide).await
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` completes.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: NetLimits,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let timeout = limits.tls_handshake_timeout;
    let handshake = move |stream: TcpStream| {
        let acceptor = acceptor.clone();
        async move {
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => Some(tls),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "tls handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!("tls handshake timed out");
                    None
                }
            }
        }
    };
    accept_loop(listener, app, limits, shutdown, handshake).await;
}

/// Serves `app` over plain HTTP (identity endpoints on loopback), with the default limits and
/// at most [`PLAIN_MAX_CONNECTIONS`] connections.
pub async fn serve_plain(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()>) {
    let limits = NetLimits {
        max_connections: PLAIN_MAX_CONNECTIONS,
        ..NetLimits::default()
    };
    serve_plain_with(listener, app, limits, shutdown).await;
}

/// Serves `app` over plain HTTP with the given limits.
pub async fn serve_plain_with(
    listener: TcpListener,
    app: Router,
    limits: NetLimits,
    shutdown: impl Future<Output = ()>,
) {
    accept_loop(listener, app, limits, shutdown, |stream| async move {
        Some(stream)
    })
    .await;
}

/// Accepts connections, turns each into an `IO` with `wrap` (TLS or nothing), and serves
/// `app` on it, until `shutdown`; then drains.
async fn accept_loop<W, Fut, IO>(
    listener: TcpListener,
    app: Router,
    limits: NetLimits,
    shutdown: impl Future<Output = ()>,
    wrap: W,
) where
    W: Fn(TcpStream) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Option<IO>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // One permit per open connection: taken at accept, before any handshake, given back
    // when the connection's task ends. At shutdown, taking them all back is the drain.
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let gate = Arc::new(Semaphore::new(max));
    // Dropping the sender tells every connection to shut down gracefully.
    let (stop_tx, stop_rx) = watch::channel(());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.http2_keepalive_interval))
        .keep_alive_timeout(limits.http2_keepalive_timeout);
    let mut refusals = Refusals::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&gate).try_acquire_owned() else {
            // Over the limit: closed at once, so the client fails fast instead of queueing.
            drop(stream);
            refusals.note(max);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let peer = Peer::new(remote, stream.local_addr().unwrap_or(remote));
        let builder = builder.clone();
        let mut stop = stop_rx.clone();
        let wrap = wrap.clone();
        let app = app.clone();
        let idle = limits.idle_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let io = tokio::select! {
                io = wrap(stream) => io,
                _ = stop.changed() => None,
            };
            let Some(io) = io else {
                return;
            };
            serve_connection(&builder, io, app, peer, idle, stop).await;
        });
    }
    drop(listener);
    drop(stop_tx);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    tokio::select! {
        _ = gate.acquire_many(all) => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("open connections did not finish in time");
        }
    }
}

/// Serves one connection until it ends, shutting it down gracefully when the server stops or
/// when it has been idle for `idle`.
async fn serve_connection<IO>(
    builder: &auto::Builder<TokioExecutor>,
    io: IO,
    app: Router,
    peer: Peer,
    idle: Duration,
    mut stop: watch::Receiver<()>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let service = Tracked {
        inner: TowerToHyperService::new(app),
        activity: Arc::clone(&activity),
        peer,
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let check = tokio::time::sleep(idle);
    tokio::pin!(check);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = &mut check, if !closing => match activity.idle_deadline(idle) {
                Some(deadline) if deadline > Instant::now() => check.as_mut().reset(deadline),
                Some(_) => {
                    tracing::debug!("closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                // A request is in flight: look again a whole idle period later.
                None => check.as_mut().reset(Instant::now() + idle),
            },
        }
    }
}

/// When a connection's requests started and ended: two atomics per request, no lock.
struct Activity {
    opened: Instant,
    /// Requests whose response has not been produced yet.
    active: AtomicUsize,
    /// When the last request ended, in milliseconds since `opened`.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            active: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    /// When the connection will have been idle for `idle`, or `None` while a request is in
    /// flight.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Acquire));
        Some(self.opened + last + idle)
    }
}

/// The application, counting requests in and out for [`Activity`] and giving each request
/// its connection's [`Peer`].
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    peer: Peer,
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for Tracked<S>
where
    S: hyper::service::Service<hyper::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, mut request: hyper::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.peer.clone());
        self.activity.active.fetch_add(1, Ordering::AcqRel);
        TrackedFuture {
            inner: self.inner.call(request),
            _done: Done(Arc::clone(&self.activity)),
        }
    }
}

/// Marks its request ended when dropped (answered, failed or abandoned).
struct Done(Arc<Activity>);

impl Drop for Done {
    fn drop(&mut self) {
        let elapsed = self.0.opened.elapsed().as_millis();
        self.0.last_ms.store(
            u64::try_from(elapsed).unwrap_or(u64::MAX),
            Ordering::Release,
        );
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        _done: Done,
    }
}

impl<F: Future> Future for TrackedFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

/// Connections refused over the limit, reported at most every [`REFUSAL_LOG_EVERY`].
#[derive(Default)]
struct Refusals {
    since_report: u64,
    reported: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, max: usize) {
        self.since_report += 1;
        let now = Instant::now();
        if self
            .reported
            .is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_EVERY)
        {
            tracing::warn!(
                max_connections = max,
                refused = self.since_report,
                "connection limit reached: new connections are closed at once (see max-connections)"
            );
            self.since_report = 0;
            self.reported = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_deadline_counts_from_the_last_request() {
        let a = Activity::new();
        let idle = Duration::from_secs(5);
        assert_eq!(a.idle_deadline(idle), Some(a.opened + idle));
        a.active.fetch_add(1, Ordering::AcqRel);
        assert_eq!(a.idle_deadline(idle), None);
        a.last_ms.store(1500, Ordering::Release);
        a.active.fetch_sub(1, Ordering::AcqRel);
        assert_eq!(
            a.idle_deadline(idle),
            Some(a.opened + Duration::from_millis(1500) + idle)
        );
    }
}
