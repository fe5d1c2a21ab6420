//! Lanyard's HTTPS server: sockets, TLS, host routing and start-up. The planes and what they
//! share live in `lanyard-platform` and the plane crates; this crate composes them.
//!
//! Layout:
//! - [`datadir`]: what lives in the data directory; atomic 0600 writes.
//! - [`tls`]: the local certificate authority and the server certificate.
//! - [`bootstrap`]: the tenant, subscription and administrator made at first start.
//! - [`hosts`]: which plane a host name belongs to.
//! - [`app`]: the router of routers, and the layers every request passes.
//! - [`deadline`]: the read deadline every request body is under.
//! - [`telemetry`]: structured logs with a request id on every line.
//!
//! [`Server::prepare`] does everything that can fail before a socket is involved;
//! [`Server::run`] takes a bound listener and a shutdown future, so tests bind
//! `127.0.0.1:0` and run servers side by side.
//!
//! Several servers may share one PostgreSQL database (and the key-encryption key): the first
//! bootstraps the directory, the others find it in the store. [`Server::run`] spawns the
//! commit-feed follower ([`lanyard_platform::follow_feed`], every `feed-poll-ms`), through
//! which each server's in-memory views (authorization index, revocations, signing keys)
//! follow every other server's commits.

pub mod app;
pub mod bootstrap;
pub mod datadir;
pub mod deadline;
pub mod hosts;
pub mod telemetry;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use lanyard_domain::SharedClock;
use lanyard_storage::Store;
use tokio::net::TcpListener;

use crate::datadir::DataDir;
use crate::tls::TlsMaterial;
use lanyard_platform::access::AccessRuntime;
pub use lanyard_platform::config;
use lanyard_platform::config::Config;
use lanyard_platform::tokens::TokenRuntime;
use lanyard_platform::{AppState, Directory, Shared};
use lanyard_token::{Kek, RotationPolicy};

/// Why the server could not start. Each renders as one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    DataDir(#[from] datadir::DataDirError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot open database `{location}`: {reason}")]
    Database { location: String, reason: String },
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
    #[error("key-encryption key: {0}")]
    Kek(String),
    #[error("signing keys: {0}")]
    Keys(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}

/// A server with its data directory, store, certificates and directory ready.
pub struct Server {
    config: Config,
    data_dir: DataDir,
    store: Arc<dyn Store>,
    tls: TlsMaterial,
    directory: Directory,
    clock: SharedClock,
    tokens: Arc<TokenRuntime>,
    access: Arc<AccessRuntime>,
}

impl Server {
    /// Opens the data directory, the store and the CA; bootstraps on first start.
    pub async fn prepare(config: Config, clock: SharedClock) -> Result<Server, StartError> {
        let started = std::time::Instant::now();
        let data_dir = DataDir::open(&config.data_dir)?;
        let location = config.store_location();
        let store = lanyard_storage::open(&location)
            .await
            .map_err(|e| StartError::Database {
                location: redact_url(&location),
                reason: e.to_string(),
            })?;
        let opened = started.elapsed();
        let tls = tls::ensure(&data_dir, &config.domain)?;
        let directory = bootstrap::ensure(&data_dir, store.as_ref(), &config, clock.as_ref())
            .await
            .map_err(|e| StartError::Bootstrap(e.to_string()))?;
        let bootstrapped = started.elapsed();
        let kek = match std::env::var("LANYARD_KEK") {
            Ok(value) if !value.is_empty() => Kek::from_env_value(&value),
            _ => Kek::load_or_create(&data_dir.kek()),
        }
        .map_err(|e| StartError::Kek(e.to_string()))?;
        let rotation = RotationPolicy {
            period_secs: secs(config.key_rotation),
            token_lifetime_secs: secs(config.token_lifetime),
            ..RotationPolicy::default()
        };
        // The key ring and revocations, and the authorization index, are independent
        // reads: load them side by side.
        let timed = |t: std::time::Instant| t.elapsed().as_millis() as u64;
        let (tokens, access) = tokio::join!(
            async {
                let t = std::time::Instant::now();
                let tokens = TokenRuntime::load(
                    Arc::clone(&store),
                    kek,
                    Arc::clone(&clock),
                    rotation,
                    secs(config.token_lifetime),
                    vec![directory.tenant.id],
                )
                .await;
                (tokens, timed(t))
            },
            async {
                let t = std::time::Instant::now();
                (AccessRuntime::load(store.as_ref()).await, timed(t))
            }
        );
        let ((tokens, tokens_ms), (access, access_ms)) = (tokens, access);
        let tokens = tokens.map_err(|e| StartError::Keys(e.to_string()))?;
        let access = access.map_err(|e| StartError::Database {
            location: redact_url(&location),
            reason: e.to_string(),
        })?;
        tracing::info!(
            store_ms = opened.as_millis() as u64,
            bootstrap_ms = (bootstrapped - opened).as_millis() as u64,
            tokens_ms,
            access_ms,
            total_ms = timed(started),
            "start-up state loaded"
        );
        Ok(Server {
            access: Arc::new(access),
            config,
            data_dir,
            store,
            tls,
            directory,
            clock,
            tokens: Arc::new(tokens),
        })
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    /// Binds the configured address, with a one-line error when it is taken.
    pub async fn bind(config: &Config) -> Result<TcpListener, StartError> {
        let addr = std::net::SocketAddr::new(config.bind, config.port);
        TcpListener::bind(addr)
            .await
            .map_err(|e| StartError::Listen {
                addr: addr.to_string(),
                reason: if e.kind() == std::io::ErrorKind::AddrInUse {
                    "address already in use (is another server running? choose another --port)"
                        .to_string()
                } else {
                    e.to_string()
                },
            })
    }

    /// Serves until `shutdown` completes.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartError> {
        let port = listener
            .local_addr()
            .map_err(|e| StartError::Listen {
                addr: "listener".into(),
                reason: e.to_string(),
            })?
            .port();
        bootstrap::write_endpoints(&self.data_dir, &self.config, port)?;
        let state = AppState::new(Shared {
            config: self.config,
            port,
            store: self.store,
            clock: self.clock,
            directory: self.directory,
            tokens: Arc::clone(&self.tokens),
            access: Arc::clone(&self.access),
            generation: Default::default(),
        });
        // Before the first request: blob files a crash left that no record names.
        if let Err(e) = lanyard_blob::recover(&state).await {
            tracing::warn!(error = %e, "blob recovery failed; stray blob files stay until the next start");
        }
        let ticker = tokio::spawn(rotate_keys(Arc::clone(&self.tokens)));
        let follower = tokio::spawn(lanyard_platform::follow_feed(
            state.clone(),
            state.config.feed_poll,
        ));
        tracing::info!(
            port,
            domain = %state.config.domain,
            backend = state.store.backend(),
            "lanyard is ready"
        );
        let limits = state.config.net;
        lanyard_platform::serve::serve_tls(
            listener,
            self.tls.server_config,
            app::router(state),
            limits,
            shutdown,
        )
        .await;
        ticker.abort();
        follower.abort();
        tracing::info!("lanyard stopped");
        Ok(())
    }
}

/// How often the key ring is checked against its rotation schedule.
const KEY_TICK: std::time::Duration = std::time::Duration::from_secs(30);

async fn rotate_keys(tokens: Arc<TokenRuntime>) {
    let mut every = tokio::time::interval(KEY_TICK);
    loop {
        every.tick().await;
        if let Err(e) = tokens.tick().await {
            tracing::warn!(error = %e, "key rotation check failed; retrying");
        }
    }
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A database URL with any password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            super::redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(
            super::redact_url("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
    }
}
