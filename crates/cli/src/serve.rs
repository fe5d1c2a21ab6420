//! `lanyard serve`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use lanyard_server::config::{default_data_dir, Config, ConfigLayer};
use lanyard_server::datadir::{DataDir, DataDirError};
use lanyard_server::{shutdown_signal, telemetry, Server};

/// Settings shared by every command that runs or finds a server. Each flag can also be set
/// through its `LANYARD_*` variable; flags win over variables, variables over the file.
#[derive(Args, Debug, Clone, Default)]
pub struct ServerArgs {
    /// Data directory (certificates, keys, the SQLite database, the admin credential).
    #[arg(long, env = "LANYARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTPS port.
    #[arg(long, env = "LANYARD_PORT")]
    pub port: Option<u16>,
    /// Address to listen on.
    #[arg(long, env = "LANYARD_BIND")]
    pub bind: Option<IpAddr>,
    /// DNS suffix of the service hosts (`login.{domain}`, `{vault}.vault.{domain}`, ...).
    #[arg(long, env = "LANYARD_DOMAIN")]
    pub domain: Option<String>,
    /// `postgres://...` for PostgreSQL; default is SQLite in the data directory.
    #[arg(long, env = "LANYARD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// TOML configuration file; default `{data-dir}/lanyard.toml` if present.
    #[arg(long, env = "LANYARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "LANYARD_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Apply Azure's identity-endpoint limits (20 requests/s and 5 at once per resource).
    #[arg(long, env = "LANYARD_IDENTITY_THROTTLING")]
    pub identity_throttling: Option<bool>,
    /// How often to read the commit feed for changes made by other servers sharing the
    /// database, in milliseconds (10 to 60000; default 250).
    #[arg(long, env = "LANYARD_FEED_POLL_MS")]
    pub feed_poll_ms: Option<u64>,
    /// The longest a certificate-signed client assertion may be valid, in seconds (60 to
    /// 604800; default 3600).
    #[arg(long, env = "LANYARD_CLIENT_ASSERTION_MAX_LIFETIME_SECS")]
    pub client_assertion_max_lifetime_secs: Option<u64>,
    /// The longest a federated (workload identity) assertion may be valid, in seconds (60 to
    /// 604800; default 86400).
    #[arg(long, env = "LANYARD_FEDERATED_ASSERTION_MAX_LIFETIME_SECS")]
    pub federated_assertion_max_lifetime_secs: Option<u64>,
    /// Loopback, private or link-local networks federated issuers may be fetched from,
    /// comma-separated (`10.1.0.0/16,127.0.0.1`); default none: such addresses are refused.
    #[arg(
        long,
        env = "LANYARD_FEDERATION_ALLOWED_NETWORKS",
        value_delimiter = ','
    )]
    pub federation_allowed_networks: Option<Vec<String>>,
    /// Which local processes a workload session serves: `process` (the process that opened
    /// it and its descendants; the default), `user` (any process of the opener's user) or
    /// `off` (any local process).
    #[arg(long, env = "LANYARD_SESSION_ATTESTATION")]
    pub session_attestation: Option<String>,
    /// Workload sessions open at once, in all (default 256).
    #[arg(long, env = "LANYARD_MAX_SESSIONS")]
    pub max_sessions: Option<u32>,
    /// Workload sessions one principal may have open at once (default 32).
    #[arg(long, env = "LANYARD_MAX_SESSIONS_PER_PRINCIPAL")]
    pub max_sessions_per_principal: Option<u32>,
    /// Workload sessions open at once for one resource (default 16).
    #[arg(long, env = "LANYARD_MAX_SESSIONS_PER_RESOURCE")]
    pub max_sessions_per_resource: Option<u32>,
    /// Connections served at once; a new one beyond it is closed at once (default 1024).
    #[arg(long, env = "LANYARD_MAX_CONNECTIONS")]
    pub max_connections: Option<u64>,
    /// The longest a TLS handshake may take, in seconds (default 10).
    #[arg(long, env = "LANYARD_TLS_HANDSHAKE_TIMEOUT_SECS")]
    pub tls_handshake_timeout_secs: Option<u64>,
    /// HTTP/1: the longest a request's headers may take to arrive, in seconds (default 30).
    #[arg(long, env = "LANYARD_HEADER_READ_TIMEOUT_SECS")]
    pub header_read_timeout_secs: Option<u64>,
    /// A connection on which no request starts or ends for this long is closed, in seconds
    /// (default 30).
    #[arg(long, env = "LANYARD_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// HTTP/2: seconds between pings that check the peer is alive (default 20).
    #[arg(long, env = "LANYARD_HTTP2_KEEPALIVE_INTERVAL_SECS")]
    pub http2_keepalive_interval_secs: Option<u64>,
    /// HTTP/2: seconds a ping's answer may take before the connection is closed (default 20).
    #[arg(long, env = "LANYARD_HTTP2_KEEPALIVE_TIMEOUT_SECS")]
    pub http2_keepalive_timeout_secs: Option<u64>,
    /// Seconds a request body may take before it must keep up the minimum rate (default 30).
    #[arg(long, env = "LANYARD_REQUEST_BODY_TIMEOUT_SECS")]
    pub request_body_timeout_secs: Option<u64>,
    /// The slowest average rate a request body may arrive at after its grace period, in
    /// bytes per second (default 1024); slower bodies are answered 408.
    #[arg(long, env = "LANYARD_REQUEST_BODY_MIN_BYTES_PER_SEC")]
    pub request_body_min_bytes_per_sec: Option<u64>,
}

impl ServerArgs {
    /// Flags and environment over the file over defaults.
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let cli = ConfigLayer {
            data_dir: self.data_dir.clone(),
            port: self.port,
            bind: self.bind,
            domain: self.domain.clone(),
            database_url: self.database_url.clone(),
            log_format: self.log_format.clone(),
            identity_throttling: self.identity_throttling,
            feed_poll_ms: self.feed_poll_ms,
            client_assertion_max_lifetime_secs: self.client_assertion_max_lifetime_secs,
            federated_assertion_max_lifetime_secs: self.federated_assertion_max_lifetime_secs,
            federation_allowed_networks: self.federation_allowed_networks.clone(),
            session_attestation: self.session_attestation.clone(),
            max_sessions: self.max_sessions,
            max_sessions_per_principal: self.max_sessions_per_principal,
            max_sessions_per_resource: self.max_sessions_per_resource,
            max_connections: self.max_connections,
            tls_handshake_timeout_secs: self.tls_handshake_timeout_secs,
            header_read_timeout_secs: self.header_read_timeout_secs,
            idle_timeout_secs: self.idle_timeout_secs,
            http2_keepalive_interval_secs: self.http2_keepalive_interval_secs,
            http2_keepalive_timeout_secs: self.http2_keepalive_timeout_secs,
            request_body_timeout_secs: self.request_body_timeout_secs,
            request_body_min_bytes_per_sec: self.request_body_min_bytes_per_sec,
            ..Default::default()
        };
        let data_dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        if data_dir.exists() && !data_dir.is_dir() {
            return Err(DataDirError::NotADirectory(data_dir).into());
        }
        let file_path = match &self.config {
            Some(p) => p.clone(),
            None => data_dir.join("lanyard.toml"),
        };
        if self.config.is_some() && !file_path.exists() {
            anyhow::bail!(
                "configuration file `{}` does not exist",
                file_path.display()
            );
        }
        let file = ConfigLayer::from_file(&file_path)?;
        Ok(Config::from_layer(cli.over(file))?)
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerArgs,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.server.resolve()?;
    telemetry::init(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = Server::bind(&config).await?;
        let server = Server::prepare(config, Arc::new(lanyard_domain::SystemClock)).await?;
        let _ = DataDir::existing(server.data_dir().root())?;
        server.run(listener, shutdown_signal()).await?;
        Ok(())
    })
}
