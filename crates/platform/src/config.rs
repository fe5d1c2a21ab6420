//! Configuration: flags, `LANYARD_*` environment variables and an optional TOML file, merged
//! in that order of precedence and validated once at start.
//!
//! `feed-poll-ms` (`--feed-poll-ms`, `LANYARD_FEED_POLL_MS`; default 250) is how often a
//! server reads the commit feed for the changes other servers sharing its database made.
//!
//! The token service's limits: `client-assertion-max-lifetime-secs` and
//! `federated-assertion-max-lifetime-secs` bound how long a client assertion may be valid
//! (defaults one hour and 24 hours); `federation-allowed-networks` lists the loopback,
//! private or link-local networks a federated issuer's documents may be fetched from (none by
//! default: such addresses are refused).
//! Workload sessions: `session-attestation` (`process`, the default; `user`; `off`) says which
//! local processes a session's identity endpoints serve, and `max-sessions`,
//! `max-sessions-per-principal` and `max-sessions-per-resource` cap how many are open.
//! What an unauthenticated client can hold is bounded by the [`NetLimits`] settings:
//! `max-connections`, `tls-handshake-timeout-secs`, `header-read-timeout-secs`,
//! `idle-timeout-secs`, `http2-keepalive-interval-secs`, `http2-keepalive-timeout-secs`,
//! `request-body-timeout-secs` and `request-body-min-bytes-per-sec` (defaults in the `DEFAULT_*`
//! constants below; README's "Running the server" explains each).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// Settings as one source gives them; every field optional so sources can be layered.
/// The CLI fills one from flags and environment (clap does both), another from the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigLayer {
    pub data_dir: Option<PathBuf>,
    pub port: Option<u16>,
    pub bind: Option<IpAddr>,
    pub domain: Option<String>,
    pub database_url: Option<String>,
    /// Lifetime of issued tokens, in seconds.
    pub token_lifetime_secs: Option<u64>,
    /// How long a signing key signs before the next one takes over, in seconds.
    pub key_rotation_secs: Option<u64>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// Azure's identity-endpoint limits (20 requests/s, 5 at once per resource).
    pub identity_throttling: Option<bool>,
    /// How often the commit feed is read for other servers' changes, in milliseconds.
    pub feed_poll_ms: Option<u64>,
    /// The longest a certificate-signed client assertion may be valid, in seconds.
    pub client_assertion_max_lifetime_secs: Option<u64>,
    /// The longest a federated (workload identity) assertion may be valid, in seconds.
    pub federated_assertion_max_lifetime_secs: Option<u64>,
    /// Networks (`10.1.0.0/16`, `127.0.0.1`) in otherwise refused ranges that federated
    /// issuers may be fetched from.
    pub federation_allowed_networks: Option<Vec<String>>,
    /// Which local processes a workload session serves: `process`, `user` or `off`.
    pub session_attestation: Option<String>,
    /// Workload sessions open at once, in all.
    pub max_sessions: Option<u32>,
    /// Workload sessions one principal may have open at once.
    pub max_sessions_per_principal: Option<u32>,
    /// Workload sessions open at once for one resource.
    pub max_sessions_per_resource: Option<u32>,
    /// Connections served at once; beyond it new connections are closed at once.
    pub max_connections: Option<u64>,
    pub tls_handshake_timeout_secs: Option<u64>,
    /// HTTP/1: the longest a request's headers may take to arrive.
    pub header_read_timeout_secs: Option<u64>,
    /// A connection on which no request starts for this long is closed (HTTP/1 and HTTP/2).
    pub idle_timeout_secs: Option<u64>,
    pub http2_keepalive_interval_secs: Option<u64>,
    pub http2_keepalive_timeout_secs: Option<u64>,
    /// How long a request body may take before it must keep up the minimum rate.
    pub request_body_timeout_secs: Option<u64>,
    pub request_body_min_bytes_per_sec: Option<u64>,
}

impl ConfigLayer {
    /// `self` wins wherever it has a value.
    pub fn over(self, lower: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            data_dir: self.data_dir.or(lower.data_dir),
            port: self.port.or(lower.port),
            bind: self.bind.or(lower.bind),
            domain: self.domain.or(lower.domain),
            database_url: self.database_url.or(lower.database_url),
            token_lifetime_secs: self.token_lifetime_secs.or(lower.token_lifetime_secs),
            key_rotation_secs: self.key_rotation_secs.or(lower.key_rotation_secs),
            log_format: self.log_format.or(lower.log_format),
            identity_throttling: self.identity_throttling.or(lower.identity_throttling),
            feed_poll_ms: self.feed_poll_ms.or(lower.feed_poll_ms),
            client_assertion_max_lifetime_secs: self
                .client_assertion_max_lifetime_secs
                .or(lower.client_assertion_max_lifetime_secs),
            federated_assertion_max_lifetime_secs: self
                .federated_assertion_max_lifetime_secs
                .or(lower.federated_assertion_max_lifetime_secs),
            federation_allowed_networks: self
                .federation_allowed_networks
                .or(lower.federation_allowed_networks),
            session_attestation: self.session_attestation.or(lower.session_attestation),
            max_sessions: self.max_sessions.or(lower.max_sessions),
            max_sessions_per_principal: self
                .max_sessions_per_principal
                .or(lower.max_sessions_per_principal),
            max_sessions_per_resource: self
                .max_sessions_per_resource
                .or(lower.max_sessions_per_resource),
            max_connections: self.max_connections.or(lower.max_connections),
            tls_handshake_timeout_secs: self
                .tls_handshake_timeout_secs
                .or(lower.tls_handshake_timeout_secs),
            header_read_timeout_secs: self
                .header_read_timeout_secs
                .or(lower.header_read_timeout_secs),
            idle_timeout_secs: self.idle_timeout_secs.or(lower.idle_timeout_secs),
            http2_keepalive_interval_secs: self
                .http2_keepalive_interval_secs
                .or(lower.http2_keepalive_interval_secs),
            http2_keepalive_timeout_secs: self
                .http2_keepalive_timeout_secs
                .or(lower.http2_keepalive_timeout_secs),
            request_body_timeout_secs: self
                .request_body_timeout_secs
                .or(lower.request_body_timeout_secs),
            request_body_min_bytes_per_sec: self
                .request_body_min_bytes_per_sec
                .or(lower.request_body_min_bytes_per_sec),
        }
    }

    /// Reads a TOML file. A missing file is an empty layer; an unreadable or malformed one is
    /// an error naming the file.
    pub fn from_file(path: &Path) -> Result<ConfigLayer, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(ConfigError::Unreadable {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        };
        toml::from_str(&text).map_err(|e| ConfigError::Corrupt {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Which local processes a workload session's identity endpoints serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAttestation {
    /// The process that opened the session and its descendants (Linux, through `/proc`); a
    /// session whose opener cannot be identified is refused.
    Process,
    /// Any process of the user that opened the session (for a server running under an
    /// account of its own, which cannot see other users' file descriptors).
    User,
    /// Any local process (the behaviour of Azure's IMDS; where `/proc` is missing).
    Off,
}

/// How many workload sessions may be open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub total: usize,
    pub per_principal: usize,
    pub per_resource: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            total: DEFAULT_MAX_SESSIONS,
            per_principal: DEFAULT_MAX_SESSIONS_PER_PRINCIPAL,
            per_resource: DEFAULT_MAX_SESSIONS_PER_RESOURCE,
        }
    }
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub port: u16,
    pub bind: IpAddr,
    /// Lower-cased DNS suffix, e.g. `lanyard.localhost`.
    pub domain: String,
    /// `None` means the embedded SQLite file in the data directory.
    pub database_url: Option<String>,
    pub token_lifetime: Duration,
    pub key_rotation: Duration,
    pub log_format: LogFormat,
    pub identity_throttling: bool,
    /// How often the commit feed is read for changes other servers sharing the database
    /// made: the longest they take to be seen here (this server's own are seen at once).
    pub feed_poll: Duration,
    /// The longest a certificate-signed client assertion may be valid (`exp` - `nbf`, and
    /// how far `exp` lies ahead).
    pub client_assertion_max_lifetime: Duration,
    /// The same bound for federated assertions.
    pub federated_assertion_max_lifetime: Duration,
    /// Loopback, private, link-local and other internal networks that federated issuers may
    /// nevertheless be fetched from. Empty: every such address is refused.
    pub federation_allowed_networks: Vec<IpNet>,
    pub session_attestation: SessionAttestation,
    pub session_limits: SessionLimits,
    /// What one client may hold: connections, and how long each stage of a request may take.
    pub net: NetLimits,
}

/// Bounds on what clients, authenticated or not, can hold of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetLimits {
    /// Connections served at once (per listener); a new one beyond it is closed at once.
    pub max_connections: usize,
    /// The longest a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// HTTP/1: the longest a request's headers may take to arrive, counted from when the
    /// connection starts waiting for the request (so it also bounds an idle keep-alive).
    pub header_read_timeout: Duration,
    /// A connection on which no request starts or ends for this long is closed gracefully
    /// (HTTP/1 keep-alive and HTTP/2 alike); requests in flight finish first.
    pub idle_timeout: Duration,
    /// HTTP/2: how often a ping checks that the peer is alive...
    pub http2_keepalive_interval: Duration,
    /// ...and how long its answer may take before the connection is closed.
    pub http2_keepalive_timeout: Duration,
    /// A request body is cut off (408) once it is slower than `request_body_min_rate` bytes
    /// per second after this grace period, counted from when the handler starts reading it:
    /// a body that sends nothing is cut off after the grace period, a trickle soon after.
    pub request_body_timeout: Duration,
    pub request_body_min_rate: u64,
}

pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
pub const DEFAULT_HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
pub const DEFAULT_REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_REQUEST_BODY_MIN_RATE: u64 = 1024;

impl Default for NetLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            http2_keepalive_interval: DEFAULT_HTTP2_KEEPALIVE_INTERVAL,
            http2_keepalive_timeout: DEFAULT_HTTP2_KEEPALIVE_TIMEOUT,
            request_body_timeout: DEFAULT_REQUEST_BODY_TIMEOUT,
            request_body_min_rate: DEFAULT_REQUEST_BODY_MIN_RATE,
        }
    }
}

impl NetLimits {
    /// The limits a layer sets, each checked against its range; defaults elsewhere.
    fn from_layer(layer: &ConfigLayer) -> Result<NetLimits, ConfigError> {
        let d = NetLimits::default();
        let secs = |value: Option<u64>, default: Duration, name: &'static str, max: u64| match value
        {
            None => Ok(default),
            Some(v) if (1..=max).contains(&v) => Ok(Duration::from_secs(v)),
            Some(_) => Err(ConfigError::Invalid {
                name,
                reason: format!("must be between 1 and {max} seconds"),
            }),
        };
        let max_connections = match layer.max_connections {
            None => d.max_connections,
            Some(v) if (1..=1_000_000).contains(&v) => v as usize,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    name: "max-connections",
                    reason: "must be between 1 and 1000000".into(),
                })
            }
        };
        let request_body_min_rate = match layer.request_body_min_bytes_per_sec {
            None => d.request_body_min_rate,
            Some(v) if (1..=1 << 30).contains(&v) => v,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    name: "request-body-min-bytes-per-sec",
                    reason: "must be between 1 and 1073741824".into(),
                })
            }
        };
        Ok(NetLimits {
            max_connections,
            tls_handshake_timeout: secs(
                layer.tls_handshake_timeout_secs,
                d.tls_handshake_timeout,
                "tls-handshake-timeout-secs",
                300,
            )?,
            header_read_timeout: secs(
                layer.header_read_timeout_secs,
                d.header_read_timeout,
                "header-read-timeout-secs",
                3600,
            )?,
            idle_timeout: secs(
                layer.idle_timeout_secs,
                d.idle_timeout,
                "idle-timeout-secs",
                86_400,
            )?,
            http2_keepalive_interval: secs(
                layer.http2_keepalive_interval_secs,
                d.http2_keepalive_interval,
                "http2-keepalive-interval-secs",
                3600,
            )?,
            http2_keepalive_timeout: secs(
                layer.http2_keepalive_timeout_secs,
                d.http2_keepalive_timeout,
                "http2-keepalive-timeout-secs",
                3600,
            )?,
            request_body_timeout: secs(
                layer.request_body_timeout_secs,
                d.request_body_timeout,
                "request-body-timeout-secs",
                3600,
            )?,
            request_body_min_rate,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file `{}`: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("configuration file `{}` is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("invalid setting `{name}`: {reason}")]
    Invalid { name: &'static str, reason: String },
}

pub const DEFAULT_PORT: u16 = 8443;
pub const DEFAULT_DOMAIN: &str = "lanyard.localhost";
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_KEY_ROTATION: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_FEED_POLL: Duration = Duration::from_millis(250);
pub const DEFAULT_CLIENT_ASSERTION_MAX_LIFETIME: Duration = Duration::from_secs(
    lanyard_token::credentials::DEFAULT_CLIENT_ASSERTION_MAX_LIFETIME_SECS.unsigned_abs(),
);
pub const DEFAULT_FEDERATED_ASSERTION_MAX_LIFETIME: Duration = Duration::from_secs(
    lanyard_token::credentials::DEFAULT_FEDERATED_ASSERTION_MAX_LIFETIME_SECS.unsigned_abs(),
);
/// Each session holds a listening socket, and its clients' connections: the overall cap
/// stays well below the usual 1024 open files of a process.
pub const DEFAULT_MAX_SESSIONS: usize = 256;
pub const DEFAULT_MAX_SESSIONS_PER_PRINCIPAL: usize = 32;
pub const DEFAULT_MAX_SESSIONS_PER_RESOURCE: usize = 16;
/// The most any session cap may be set to.
pub const MAX_SESSIONS_CEILING: u32 = 65_536;

/// The data directory used when none is given: `$HOME/.lanyard`, else `./.lanyard`.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(".lanyard"),
        _ => PathBuf::from(".lanyard"),
    }
}

impl Config {
    /// Validates a merged layer, filling defaults.
    pub fn from_layer(layer: ConfigLayer) -> Result<Config, ConfigError> {
        let net = NetLimits::from_layer(&layer)?;
        let domain = layer
            .domain
            .unwrap_or_else(|| DEFAULT_DOMAIN.to_string())
            .trim_end_matches('.')
            .to_ascii_lowercase();
        validate_domain(&domain)?;
        let port = layer.port.unwrap_or(DEFAULT_PORT);
        let token_lifetime = layer
            .token_lifetime_secs
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        if !(300..=7 * 24 * 3600).contains(&token_lifetime.as_secs()) {
            return Err(ConfigError::Invalid {
                name: "token-lifetime-secs",
                reason: "must be between 300 (5 minutes) and 604800 (7 days)".into(),
            });
        }
        let key_rotation = layer
            .key_rotation_secs
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_KEY_ROTATION);
        if key_rotation < Duration::from_secs(3600) {
            return Err(ConfigError::Invalid {
                name: "key-rotation-secs",
                reason: "must be at least 3600 (one hour)".into(),
            });
        }
        let log_format = match layer.log_format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::Invalid {
                    name: "log-format",
                    reason: format!("`{other}` is not `text` or `json`"),
                })
            }
        };
        let feed_poll = layer
            .feed_poll_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_FEED_POLL);
        if !(10..=60_000).contains(&feed_poll.as_millis()) {
            return Err(ConfigError::Invalid {
                name: "feed-poll-ms",
                reason: "must be between 10 and 60000 (one minute)".into(),
            });
        }
        let assertion_lifetime = |value: Option<u64>, default: Duration, name: &'static str| {
            let lifetime = value.map(Duration::from_secs).unwrap_or(default);
            if !(60..=7 * 24 * 3600).contains(&lifetime.as_secs()) {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "must be between 60 (one minute) and 604800 (7 days)".into(),
                });
            }
            Ok(lifetime)
        };
        let client_assertion_max_lifetime = assertion_lifetime(
            layer.client_assertion_max_lifetime_secs,
            DEFAULT_CLIENT_ASSERTION_MAX_LIFETIME,
            "client-assertion-max-lifetime-secs",
        )?;
        let federated_assertion_max_lifetime = assertion_lifetime(
            layer.federated_assertion_max_lifetime_secs,
            DEFAULT_FEDERATED_ASSERTION_MAX_LIFETIME,
            "federated-assertion-max-lifetime-secs",
        )?;
        let federation_allowed_networks = layer
            .federation_allowed_networks
            .iter()
            .flatten()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .map(parse_network)
            .collect::<Result<Vec<_>, _>>()?;
        let session_attestation = match layer.session_attestation.as_deref().unwrap_or("process") {
            "process" => SessionAttestation::Process,
            "user" => SessionAttestation::User,
            "off" => SessionAttestation::Off,
            other => {
                return Err(ConfigError::Invalid {
                    name: "session-attestation",
                    reason: format!("`{other}` is not `process`, `user` or `off`"),
                })
            }
        };
        let cap = |value: Option<u32>, default: usize, name: &'static str| match value {
            None => Ok(default),
            Some(n) if (1..=MAX_SESSIONS_CEILING).contains(&n) => Ok(n as usize),
            Some(_) => Err(ConfigError::Invalid {
                name,
                reason: format!("must be between 1 and {MAX_SESSIONS_CEILING}"),
            }),
        };
        let session_limits = SessionLimits {
            total: cap(layer.max_sessions, DEFAULT_MAX_SESSIONS, "max-sessions")?,
            per_principal: cap(
                layer.max_sessions_per_principal,
                DEFAULT_MAX_SESSIONS_PER_PRINCIPAL,
                "max-sessions-per-principal",
            )?,
            per_resource: cap(
                layer.max_sessions_per_resource,
                DEFAULT_MAX_SESSIONS_PER_RESOURCE,
                "max-sessions-per-resource",
            )?,
        };
        if let Some(url) = &layer.database_url {
            if !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite://"))
            {
                return Err(ConfigError::Invalid {
                    name: "database-url",
                    reason: "must start with `postgres://`, `postgresql://` or `sqlite://`".into(),
                });
            }
        }
        Ok(Config {
            data_dir: layer.data_dir.unwrap_or_else(default_data_dir),
            port,
            bind: layer
                .bind
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            domain,
            database_url: layer.database_url,
            token_lifetime,
            key_rotation,
            log_format,
            identity_throttling: layer.identity_throttling.unwrap_or(false),
            feed_poll,
            client_assertion_max_lifetime,
            federated_assertion_max_lifetime,
            federation_allowed_networks,
            session_attestation,
            session_limits,
            net,
        })
    }

    /// Where the store lives: the configured URL, or the SQLite file in the data directory.
    pub fn store_location(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => self.data_dir.join("lanyard.db").display().to_string(),
        }
    }
}

/// `10.0.0.0/8`, `fd00::/8`, or one address (`127.0.0.1`, `::1`).
fn parse_network(text: &str) -> Result<IpNet, ConfigError> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| ConfigError::Invalid {
            name: "federation-allowed-networks",
            reason: format!("`{text}` is not an address or a network such as `10.0.0.0/8`"),
        })
}

fn validate_domain(domain: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::Invalid {
        name: "domain",
        reason: format!("`{domain}` {reason}"),
    };
    if domain.is_empty() || domain.len() > 200 {
        return Err(bad("must be 1 to 200 characters"));
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("has an empty or over-long label"));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(bad("is not a valid DNS name"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_environment_over_file() {
        let flags = ConfigLayer {
            port: Some(1),
            ..Default::default()
        };
        let file = ConfigLayer {
            port: Some(3),
            domain: Some("example.test".into()),
            ..Default::default()
        };
        let merged = flags.over(file);
        assert_eq!(merged.port, Some(1));
        assert_eq!(merged.domain.as_deref(), Some("example.test"));
    }

    #[test]
    fn validation_names_the_setting() {
        let err = Config::from_layer(ConfigLayer {
            domain: Some("bad domain".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("`domain`"), "{err}");
        let err = Config::from_layer(ConfigLayer {
            database_url: Some("mysql://x".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("database-url"), "{err}");
        let ok = Config::from_layer(ConfigLayer {
            domain: Some("Lanyard.Example.".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.domain, "lanyard.example");
        assert_eq!(ok.port, DEFAULT_PORT);
        assert_eq!(ok.feed_poll, DEFAULT_FEED_POLL);
        let err = Config::from_layer(ConfigLayer {
            feed_poll_ms: Some(0),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("feed-poll-ms"), "{err}");
    }

    #[test]
    fn token_service_limits_have_safe_defaults_and_are_validated() {
        let config = Config::from_layer(ConfigLayer::default()).unwrap();
        assert_eq!(
            config.client_assertion_max_lifetime,
            Duration::from_secs(3600)
        );
        assert_eq!(
            config.federated_assertion_max_lifetime,
            Duration::from_secs(86400)
        );
        assert!(config.federation_allowed_networks.is_empty());
        for (layer, name) in [
            (
                ConfigLayer {
                    client_assertion_max_lifetime_secs: Some(10 * 365 * 86400),
                    ..Default::default()
                },
                "client-assertion-max-lifetime-secs",
            ),
            (
                ConfigLayer {
                    federated_assertion_max_lifetime_secs: Some(0),
                    ..Default::default()
                },
                "federated-assertion-max-lifetime-secs",
            ),
            (
                ConfigLayer {
                    federation_allowed_networks: Some(vec!["10.0.0.0/33".into()]),
                    ..Default::default()
                },
                "federation-allowed-networks",
            ),
            (
                ConfigLayer {
                    federation_allowed_networks: Some(vec!["intranet".into()]),
                    ..Default::default()
                },
                "federation-allowed-networks",
            ),
        ] {
            let err = Config::from_layer(layer).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        let config = Config::from_layer(ConfigLayer {
            federation_allowed_networks: Some(vec![
                "10.1.2.3/16".into(),
                " ::1 ".into(),
                String::new(),
            ]),
            ..Default::default()
        })
        .unwrap();
        let shown: Vec<String> = config
            .federation_allowed_networks
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["10.1.0.0/16", "::1/128"]);
    }

    #[test]
    fn token_service_limits_read_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanyard.toml");
        std::fs::write(
            &path,
            "client-assertion-max-lifetime-secs = 600\nfederation-allowed-networks = [\"127.0.0.0/8\"]\n",
        )
        .unwrap();
        let config = Config::from_layer(ConfigLayer::from_file(&path).unwrap()).unwrap();
        assert_eq!(
            config.client_assertion_max_lifetime,
            Duration::from_secs(600)
        );
        assert_eq!(config.federation_allowed_networks.len(), 1);
    }

    #[test]
    fn session_settings_have_safe_defaults_and_are_checked() {
        let ok = Config::from_layer(ConfigLayer::default()).unwrap();
        assert_eq!(ok.session_attestation, SessionAttestation::Process);
        assert_eq!(ok.session_limits, SessionLimits::default());
        let set = Config::from_layer(ConfigLayer {
            session_attestation: Some("user".into()),
            max_sessions_per_resource: Some(2),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(set.session_attestation, SessionAttestation::User);
        assert_eq!(set.session_limits.per_resource, 2);
        assert_eq!(set.session_limits.total, DEFAULT_MAX_SESSIONS);
        let err = Config::from_layer(ConfigLayer {
            session_attestation: Some("none".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("session-attestation"), "{err}");
        for layer in [
            ConfigLayer {
                max_sessions: Some(0),
                ..Default::default()
            },
            ConfigLayer {
                max_sessions_per_principal: Some(MAX_SESSIONS_CEILING + 1),
                ..Default::default()
            },
        ] {
            let err = Config::from_layer(layer).unwrap_err();
            assert!(err.to_string().contains("max-sessions"), "{err}");
        }
        let file: ConfigLayer =
            toml::from_str("session-attestation = \"off\"\nmax-sessions = 8\n").unwrap();
        let merged = Config::from_layer(file).unwrap();
        assert_eq!(merged.session_attestation, SessionAttestation::Off);
        assert_eq!(merged.session_limits.total, 8);
    }

    #[test]
    fn network_limits_have_defaults_and_ranges() {
        let ok = Config::from_layer(ConfigLayer::default()).unwrap();
        assert_eq!(ok.net, NetLimits::default());
        let set = Config::from_layer(ConfigLayer {
            max_connections: Some(8),
            idle_timeout_secs: Some(2),
            request_body_timeout_secs: Some(1),
            request_body_min_bytes_per_sec: Some(10),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(set.net.max_connections, 8);
        assert_eq!(set.net.idle_timeout, Duration::from_secs(2));
        assert_eq!(set.net.request_body_timeout, Duration::from_secs(1));
        assert_eq!(set.net.request_body_min_rate, 10);
        assert_eq!(set.net.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
        for (layer, name) in [
            (
                ConfigLayer {
                    max_connections: Some(0),
                    ..Default::default()
                },
                "max-connections",
            ),
            (
                ConfigLayer {
                    tls_handshake_timeout_secs: Some(0),
                    ..Default::default()
                },
                "tls-handshake-timeout-secs",
            ),
            (
                ConfigLayer {
                    idle_timeout_secs: Some(100_000),
                    ..Default::default()
                },
                "idle-timeout-secs",
            ),
            (
                ConfigLayer {
                    request_body_min_bytes_per_sec: Some(0),
                    ..Default::default()
                },
                "request-body-min-bytes-per-sec",
            ),
        ] {
            let err = Config::from_layer(layer).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        let file: ConfigLayer =
            toml::from_str("max-connections = 5\nhttp2-keepalive-timeout-secs = 3\n").unwrap();
        assert_eq!(file.max_connections, Some(5));
        assert_eq!(file.http2_keepalive_timeout_secs, Some(3));
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanyard.toml");
        std::fs::write(&path, "port = \"eighty\"\n").unwrap();
        let err = ConfigLayer::from_file(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Corrupt { .. }), "{err}");
        std::fs::write(&path, "colour = 1\n").unwrap();
        assert!(ConfigLayer::from_file(&path).is_err());
        assert!(ConfigLayer::from_file(&dir.path().join("absent.toml")).is_ok());
    }
}
