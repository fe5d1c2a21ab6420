//! Name resolution for `lanyard run`'s child: apps reach vaults and storage accounts by
//! their real host names (`https://kv1.vault.{domain}:{port}`), which must resolve to the
//! server. When they do not already (systemd-resolved answers `*.localhost` itself; plain
//! glibc does not), the child runs in a private mount namespace (`unshare -m`, or
//! `unshare -rm` for an unprivileged user) whose `/etc/hosts` is the machine's plus one line
//! per service host. The machine's own hosts file is never touched.
//!
//! Modes (`run --resolve`): `auto` (private only when a name does not resolve to the
//! server), `private` (always; an error when `unshare` cannot), `system` (never).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{bail, Context};
use clap::ValueEnum;

use lanyard_domain::hosts::{FIXED_HOSTS, PLANE_HOSTS};

use crate::api::resources;
use crate::client::Connection;

/// `run --resolve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Resolve {
    /// A private hosts file only when a service name does not resolve to the server.
    #[default]
    Auto,
    /// Always a private hosts file.
    Private,
    /// The machine's resolver as it is.
    System,
}

/// A hosts file for a private mount namespace, removed when dropped.
pub struct PrivateHosts {
    _dir: tempfile::TempDir,
    file: PathBuf,
    unshare: &'static [&'static str],
}

impl PrivateHosts {
    /// `program args...` inside the namespace, with the hosts file over `/etc/hosts`.
    pub fn command(&self, program: &str, args: &[String]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("unshare");
        command
            .args(self.unshare)
            .arg("sh")
            .arg("-c")
            .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
            .arg(&self.file)
            .arg(program)
            .args(args);
        command
    }
}

/// The service host names a workload may use: the fixed ones, each hosted data plane's
/// audience host, and one per resource of each hosted data plane in the subscription (a type
/// the server does not serve is skipped).
pub async fn service_names(conn: &Connection) -> Vec<String> {
    let d = &conn.domain;
    let mut names = vec![d.clone()];
    names.extend(FIXED_HOSTS.iter().map(|h| format!("{h}.{d}")));
    names.extend(PLANE_HOSTS.iter().map(|p| p.audience_host(d)));
    if conn.subscription_id.is_empty() {
        return names;
    }
    for plane in PLANE_HOSTS {
        let Some(kind) = resources::kind_of(plane.resource_type) else {
            continue;
        };
        if let Ok(found) = resources::list(conn, kind, None).await {
            names.extend(
                found
                    .iter()
                    .filter_map(|r| r["name"].as_str())
                    .map(|n| plane.host(&n.to_ascii_lowercase(), d)),
            );
        }
    }
    names
}

/// The address service names must reach: the server's.
async fn server_address(conn: &Connection) -> IpAddr {
    let host = reqwest::Url::parse(&conn.base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "localhost".into());
    let found: Vec<IpAddr> = tokio::net::lookup_host((host.as_str(), 0))
        .await
        .map(|a| a.map(|s| s.ip()).collect())
        .unwrap_or_default();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

async fn resolves_to(name: &str, target: IpAddr) -> bool {
    match tokio::net::lookup_host((name, 443)).await {
        Ok(mut addrs) => {
            addrs.any(|a| a.ip() == target || (a.ip().is_loopback() && target.is_loopback()))
        }
        Err(_) => false,
    }
}

/// How `unshare` can give this process a private mount namespace here, if it can.
async fn unshare_mode() -> Option<&'static [&'static str]> {
    const MODES: [&[&str]; 2] = [&["-m"], &["-r", "-m"]];
    for mode in MODES {
        let ok = tokio::process::Command::new("unshare")
            .args(mode)
            .arg("true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if ok {
            return Some(mode);
        }
    }
    None
}

/// A private hosts file when `mode` calls for one.
pub async fn prepare(conn: &Connection, mode: Resolve) -> anyhow::Result<Option<PrivateHosts>> {
    if mode == Resolve::System {
        return Ok(None);
    }
    let names = service_names(conn).await;
    let target = server_address(conn).await;
    if mode == Resolve::Auto {
        let mut unresolved = None;
        for n in &names {
            if !resolves_to(n, target).await {
                unresolved = Some(n.clone());
                break;
            }
        }
        let Some(missing) = unresolved else {
            return Ok(None);
        };
        if unshare_mode().await.is_none() {
            eprintln!(
                "warning: `{missing}` does not resolve to the server and `unshare` cannot make a \
                 private mount namespace here, so the command may not reach vaults and storage \
                 accounts; add the names to /etc/hosts (`lanyard hosts`), or run as root with \
                 util-linux's unshare installed"
            );
            return Ok(None);
        }
    }
    let Some(unshare) = unshare_mode().await else {
        bail!(
            "--resolve private needs `unshare` (util-linux) and the right to make a mount \
             namespace (root, or unprivileged user namespaces); otherwise add the service names \
             to /etc/hosts (`lanyard hosts`) and use --resolve system"
        );
    };
    let dir = tempfile::Builder::new()
        .prefix("lanyard-hosts")
        .tempdir()
        .context("creating a private hosts file")?;
    let file = dir.path().join("hosts");
    let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    if !text.ends_with('\n') && !text.is_empty() {
        text.push('\n');
    }
    text.push_str("# Lanyard service hosts (private to this command)\n");
    for name in &names {
        text.push_str(&format!("{target} {name}\n"));
    }
    std::fs::write(&file, text).context("writing a private hosts file")?;
    Ok(Some(PrivateHosts {
        _dir: dir,
        file,
        unshare,
    }))
}
