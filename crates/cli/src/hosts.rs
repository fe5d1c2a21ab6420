//! `lanyard hosts [--data-dir DIR] [--apply]`: name resolution for the data-plane hosts.
//!
//! The resources of every plane in [`lanyard_domain::hosts::PLANE_HOSTS`] (vaults,
//! `{vault}.vault.{domain}`; storage accounts, `{account}.blob.{domain}`) each have a host
//! name of their own, which SDKs insist on. Where nothing resolves them (systemd-resolved
//! answers `*.localhost` by itself; plain glibc does not), they need hosts entries. This
//! command finds those resources, and their endpoints as the control plane shows them,
//! through the control plane's public REST API, as the administrator of the data directory
//! (or the `AZURE_*` identity), and prints a marked block of `/etc/hosts` lines, or with
//! `--apply` writes that block into the hosts file, replacing the block an earlier run wrote
//! (idempotent: an unchanged file is not rewritten).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::Args;
use reqwest::Method;
use serde_json::Value;

use lanyard_domain::hosts::PLANE_HOSTS;

use crate::api::resources;
use crate::client::{Connection, ServiceError};

const BEGIN: &str = "# BEGIN lanyard: written by `lanyard hosts --apply`, replaced on every run";
const END: &str = "# END lanyard";

#[derive(Args, Debug)]
pub struct HostsArgs {
    /// Data directory holding the administrator credential (else the `AZURE_*` variables).
    #[arg(long, env = "LANYARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Write the block into the hosts file instead of printing it.
    #[arg(long)]
    pub apply: bool,
    /// The address the names resolve to (default: the server's address, as reached).
    #[arg(long, value_name = "IP")]
    pub address: Option<IpAddr>,
    /// The hosts file `--apply` edits.
    #[arg(long, value_name = "FILE", default_value = "/etc/hosts")]
    pub hosts_file: PathBuf,
}

pub fn run(args: HostsArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: HostsArgs) -> anyhow::Result<()> {
    let conn = Connection::resolve(args.data_dir.as_deref())?;
    let names = discover(&conn).await?;
    let address = match args.address {
        Some(a) => a,
        None => server_address(&conn.base).await?,
    };
    let block = render_block(address, &names);
    if !args.apply {
        print!("{block}");
        return Ok(());
    }
    let path = &args.hosts_file;
    let current = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(anyhow!("cannot read `{}`: {e}", path.display())),
    };
    let next = splice(&current, &block);
    if next == current {
        eprintln!("{} is up to date ({} names)", path.display(), names.len());
        return Ok(());
    }
    write_in_place(path, &next)?;
    eprintln!("wrote {} names to {}", names.len(), path.display());
    Ok(())
}

/// Rewrites the file in place (not by rename): `/etc/hosts` is often a bind mount.
fn write_in_place(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (run it as root, or print the lines without --apply and add them yourself)"
        } else {
            ""
        };
        anyhow!("cannot write `{}`: {e}{hint}", path.display())
    })
}

/// Every data-plane host name in every subscription the identity sees, sorted.
async fn discover(conn: &Connection) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for sub in list(conn, "/subscriptions?api-version=2022-12-01".to_string()).await? {
        let Some(sub) = sub["subscriptionId"].as_str() else {
            continue;
        };
        for plane in PLANE_HOSTS {
            let Some(kind) = resources::kind_of(plane.resource_type) else {
                continue;
            };
            let path = format!(
                "/subscriptions/{sub}/providers/{}?api-version={}",
                kind.full_type(),
                kind.api_version
            );
            match list(conn, path).await {
                Ok(found) => {
                    for resource in found {
                        let endpoint = resource.pointer(plane.endpoint_pointer);
                        names.extend(endpoint.and_then(Value::as_str).and_then(host_of));
                    }
                }
                // A server without this plane says the type is unknown; nothing to add.
                Err(e) if is_unknown_type(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

fn is_unknown_type(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ServiceError>()
        .is_some_and(|s| matches!(s.status, 400 | 404) && s.code != "AuthorizationFailed")
}

/// Every item of an ARM list, following `nextLink`.
async fn list(conn: &Connection, first: String) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut next = Some(first);
    while let Some(path) = next.take() {
        let page = conn.arm(Method::GET, &path, None).await?;
        if let Some(items) = page["value"].as_array() {
            out.extend(items.iter().cloned());
        }
        next = page["nextLink"].as_str().and_then(path_of);
    }
    Ok(out)
}

/// The path and query of an absolute URL (`nextLink`s name the server they came from).
fn path_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map(|i| rest[i..].to_string())
}

/// The host of an `https://host[:port]/...` URL, if it is a plain DNS name.
fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let plain = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    plain.then(|| host.to_ascii_lowercase())
}

/// Where the connection reaches the server: `localhost` is loopback, an address is itself,
/// another name is looked up.
async fn server_address(base: &str) -> anyhow::Result<IpAddr> {
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, p.parse().unwrap_or(443)),
        _ => (authority, 443u16),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve the server's host `{host}`"))?
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| anyhow!("the server's host `{host}` resolves to nothing; pass --address"))
}

/// The marked block: one `address name` line per name.
fn render_block(address: IpAddr, names: &[String]) -> String {
    let mut out = format!("{BEGIN}\n");
    for name in names {
        out.push_str(&format!("{address} {name}\n"));
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// `hosts` with its lanyard block replaced by `block` (or `block` appended).
fn splice(hosts: &str, block: &str) -> String {
    let lines: Vec<&str> = hosts.lines().collect();
    let begin = lines.iter().position(|l| l.starts_with("# BEGIN lanyard"));
    let end = begin.and_then(|b| {
        lines[b..]
            .iter()
            .position(|l| l.trim_end() == END)
            .map(|e| b + e)
    });
    match (begin, end) {
        (Some(b), Some(e)) => {
            let mut out = String::new();
            for l in &lines[..b] {
                out.push_str(l);
                out.push('\n');
            }
            out.push_str(block);
            for l in &lines[e + 1..] {
                out.push_str(l);
                out.push('\n');
            }
            out
        }
        _ => {
            let mut out = hosts.to_string();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(block);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hosts_of_urls() {
        assert_eq!(
            host_of("https://KV1.vault.lanyard.localhost:8443/").as_deref(),
            Some("kv1.vault.lanyard.localhost")
        );
        assert_eq!(host_of("https://a.blob.x/").as_deref(), Some("a.blob.x"));
        assert_eq!(host_of("https://evil\nhost/"), None);
        assert_eq!(host_of("no-scheme"), None);
        assert_eq!(
            path_of("https://localhost:8443/subscriptions/s/x?a=b&$skiptoken=c").as_deref(),
            Some("/subscriptions/s/x?a=b&$skiptoken=c")
        );
    }

    #[test]
    fn the_block_is_replaced_not_repeated() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let base = "127.0.0.1 localhost\n::1 localhost";
        let one = splice(base, &render_block(ip, &["kv1.vault.x".into()]));
        assert!(one.starts_with("127.0.0.1 localhost\n::1 localhost\n# BEGIN lanyard"));
        assert!(one.contains("127.0.0.1 kv1.vault.x\n"));
        assert_eq!(
            splice(&one, &render_block(ip, &["kv1.vault.x".into()])),
            one
        );
        let mut two = one.clone();
        two.push_str("10.0.0.1 after\n");
        let next = splice(
            &two,
            &render_block(ip, &["kv1.vault.x".into(), "kv2.vault.x".into()]),
        );
        assert_eq!(next.matches("# BEGIN lanyard").count(), 1);
        assert!(next.contains("127.0.0.1 kv2.vault.x\n# END lanyard\n10.0.0.1 after\n"));
        assert!(next.starts_with(base));
    }
}
