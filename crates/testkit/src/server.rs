//! A Lanyard server on a free loopback port, with a client that trusts its CA and resolves
//! every `*.{domain}` host to it (no hosts file needed); [`TestServer::start_peer`] starts a
//! second one on the same PostgreSQL database, as a scale-out deployment runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use lanyard_domain::SharedClock;
use lanyard_server::bootstrap::{read_admin, AdminCredential};
use lanyard_server::config::{Config, ConfigLayer};
use lanyard_server::datadir::DataDir;
use lanyard_server::Server;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::db::TestDatabase;

/// Which storage backend a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const TEST_DOMAIN: &str = "lanyard.localhost";

/// A running server and what a test needs to talk to it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub ca_pem: String,
    pub admin: AdminCredential,
    pub database_url: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
    _db: Option<TestDatabase>,
}

impl TestServer {
    /// A fresh server: new data directory, new database.
    pub async fn start(backend: Backend) -> anyhow::Result<Self> {
        Self::start_with_clock(backend, Arc::new(lanyard_domain::SystemClock)).await
    }

    pub async fn start_with_clock(backend: Backend, clock: SharedClock) -> anyhow::Result<Self> {
        Self::start_configured(backend, clock, ConfigLayer::default()).await
    }

    /// A fresh server with extra settings (`extra` fills what the test server leaves open).
    pub async fn start_configured(
        backend: Backend,
        clock: SharedClock,
        extra: ConfigLayer,
    ) -> anyhow::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let data_dir = tmp.path().join("data");
        let (db, url) = match backend {
            Backend::Sqlite => (None, None),
            Backend::Postgres => {
                let db = crate::db::fresh_postgres_url().await?;
                let url = db.url().to_string();
                (Some(db), Some(url))
            }
        };
        let mut server = Self::launch_configured(&data_dir, url.clone(), clock, extra).await?;
        server._tmp = Some(tmp);
        server._db = db;
        Ok(server)
    }

    /// A server on an existing data directory (and database), e.g. after a restart.
    pub async fn launch(
        data_dir: &Path,
        database_url: Option<String>,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        Self::launch_configured(data_dir, database_url, clock, ConfigLayer::default()).await
    }

    async fn launch_configured(
        data_dir: &Path,
        database_url: Option<String>,
        clock: SharedClock,
        extra: ConfigLayer,
    ) -> anyhow::Result<Self> {
        let config = Config::from_layer(
            ConfigLayer {
                data_dir: Some(data_dir.to_path_buf()),
                port: Some(0),
                domain: Some(TEST_DOMAIN.into()),
                database_url: database_url.clone(),
                ..Default::default()
            }
            .over(extra),
        )?;
        let listener = Server::bind(&config).await?;
        let addr = listener.local_addr()?;
        let server = Server::prepare(config, clock).await?;
        let dir = DataDir::existing(data_dir)?;
        // A previous run's file names its old port.
        let _ = std::fs::remove_file(dir.endpoints());
        let ca_pem = std::fs::read_to_string(dir.ca_cert()).context("reading the CA")?;
        let admin = read_admin(&dir)?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = server
                .run(listener, async {
                    let _ = rx.await;
                })
                .await;
        });
        // `run` records where it listens before serving; tests (and CLI commands run by
        // tests) read that file, so wait for it (bounded).
        let endpoints = dir.endpoints();
        for _ in 0..200 {
            if endpoints.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        Ok(Self {
            addr,
            data_dir: data_dir.to_path_buf(),
            ca_pem,
            admin,
            database_url,
            shutdown: Some(tx),
            task: Some(task),
            _tmp: None,
            _db: None,
        })
    }

    /// A second server on this server's database, as a scale-out deployment runs one: its
    /// own data directory, holding copies of what servers sharing a database must share
    /// (the key-encryption key, the certificate authority, the administrator credential);
    /// the directory (tenant, subscription, administrator) it finds in the store. Needs a
    /// database URL (PostgreSQL).
    pub async fn start_peer(&self) -> anyhow::Result<Self> {
        self.start_peer_configured(ConfigLayer::default()).await
    }

    /// [`Self::start_peer`] with extra settings.
    pub async fn start_peer_configured(&self, extra: ConfigLayer) -> anyhow::Result<Self> {
        let Some(url) = self.database_url.clone() else {
            anyhow::bail!(
                "a peer server needs a shared database url (start the first on PostgreSQL)"
            );
        };
        let tmp = tempfile::tempdir()?;
        let data_dir = tmp.path().join("data");
        let source = DataDir::existing(&self.data_dir)?;
        let target = DataDir::open(&data_dir)?;
        let shared = [
            (source.kek(), target.kek()),
            (source.ca_cert(), target.ca_cert()),
            (source.ca_key(), target.ca_key()),
            (source.admin_credential(), target.admin_credential()),
        ];
        for (from, to) in shared {
            // The KEK file is absent when `LANYARD_KEK` provides it (to both servers).
            if from.exists() {
                std::fs::copy(&from, &to)
                    .with_context(|| format!("copying {} to the peer", from.display()))?;
            }
        }
        let mut peer = Self::launch_configured(
            &data_dir,
            Some(url),
            Arc::new(lanyard_domain::SystemClock),
            extra,
        )
        .await?;
        peer._tmp = Some(tmp);
        Ok(peer)
    }

    /// Stops the server and waits for it, keeping the data directory and database so a
    /// new server can be launched on them.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Stops this server and starts another on the same data directory and database.
    pub async fn restart(mut self) -> anyhow::Result<Self> {
        self.stop().await;
        let mut next = Self::launch(
            &self.data_dir,
            self.database_url.clone(),
            Arc::new(lanyard_domain::SystemClock),
        )
        .await?;
        next._tmp = self._tmp.take();
        next._db = self._db.take();
        Ok(next)
    }

    /// `https://{host}:{port}{path}`.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.addr.port())
    }

    /// A client that trusts this server's CA and sends every `*.{domain}` name to it.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes())?;
        Ok(reqwest::Client::builder()
            .add_root_certificate(ca)
            .dns_resolver(Arc::new(LoopbackResolver))
            .build()?)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Resolves every name to 127.0.0.1.
struct LoopbackResolver;

impl reqwest::dns::Resolve for LoopbackResolver {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async {
            let addrs: reqwest::dns::Addrs =
                Box::new(std::iter::once(SocketAddr::from(([127, 0, 0, 1], 0))));
            Ok(addrs)
        })
    }
}
