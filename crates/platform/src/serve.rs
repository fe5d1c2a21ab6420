//! The HTTPS accept loop: a bound listener in, a shutdown future to stop it.
//!
//! Each connection gets a bounded TLS handshake and header-read time, so a silent client
//! cannot hold a task forever. On shutdown the listener closes at once and open requests get
//! up to ten seconds to finish.
//!
//! Every request carries a [`Peer`] extension: the connection's two addresses and a verdict
//! about its peer that a plane may compute once and keep for the connection's life (the
//! identity endpoints' process attestation).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let handshake = move |stream: TcpStream| {
        let acceptor = acceptor.clone();
        async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => Some(tls),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "tls handshake failed");
                    None
                }
                Err(_) => None,
            }
        }
    };
    accept_loop(listener, app, shutdown, handshake).await;
}

/// Serves `app` over plain HTTP (identity endpoints on loopback).
pub async fn serve_plain(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()>) {
    accept_loop(
        listener,
        app,
        shutdown,
        |stream| async move { Some(stream) },
    )
    .await;
}

/// Accepts connections, turns each into an `IO` with `wrap` (TLS or nothing), and serves
/// `app` on it, until `shutdown`; then drains.
async fn accept_loop<W, Fut, IO>(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
    wrap: W,
) where
    W: Fn(TcpStream) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Option<IO>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
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
        let _ = stream.set_nodelay(true);
        let peer = Peer::new(remote, stream.local_addr().unwrap_or(remote));
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(peer.clone());
                request
            },
        ));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let wrap = wrap.clone();
        tokio::spawn(async move {
            let Some(io) = wrap(stream).await else {
                return;
            };
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("open connections did not finish in time");
        }
    }
}
