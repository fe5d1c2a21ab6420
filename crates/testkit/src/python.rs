//! Running the official Azure SDKs: the venv's Python (`LANYARD_TEST_PYTHON`, set by
//! `scripts/test`), optionally in a private mount namespace whose `/etc/hosts` resolves the
//! service hosts to loopback, so no test depends on the machine's own hosts file.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The venv's Python. Tests that drive the SDKs fail, not skip, without it.
pub fn python() -> anyhow::Result<PathBuf> {
    match std::env::var_os("LANYARD_TEST_PYTHON") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => bail!(
            "LANYARD_TEST_PYTHON is not set: run the suite with ./scripts/test, which creates the \
             venv with the official Azure SDK packages"
        ),
    }
}

/// The repository's `tests/python` directory.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python")
}

/// `python script args...`; when `hosts` is not empty, inside `unshare -m` with a hosts file
/// that maps each name to 127.0.0.1 bind-mounted over `/etc/hosts`.
pub fn command(script: &Path, args: &[&str], hosts: &[String]) -> anyhow::Result<Command> {
    let python = python()?;
    if hosts.is_empty() {
        let mut cmd = Command::new(python);
        cmd.arg(script).args(args);
        return Ok(cmd);
    }
    let mut argv = vec![script.as_os_str().to_os_string()];
    argv.extend(args.iter().map(std::ffi::OsString::from));
    isolated(&python, &argv, hosts)
}

/// `program args...` inside `unshare -m` with the same private hosts file as [`command`]:
/// for a wrapper that starts the SDK script itself, such as `lanyard run --as R -- python ...`.
pub fn isolated(
    program: &Path,
    args: &[std::ffi::OsString],
    hosts: &[String],
) -> anyhow::Result<Command> {
    let file = hosts_file(hosts)?;
    let mut cmd = Command::new("unshare");
    cmd.arg("-m")
        .arg("sh")
        .arg("-c")
        .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
        .arg(&file)
        .arg(program)
        .args(args);
    Ok(cmd)
}

/// A copy of the machine's hosts file with each of `hosts` mapped to 127.0.0.1.
fn hosts_file(hosts: &[String]) -> anyhow::Result<std::path::PathBuf> {
    let dir = tempfile::Builder::new()
        .prefix("lanyard-hosts")
        .tempdir()
        .context("creating a hosts file")?
        .keep();
    let file = dir.join("hosts");
    let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    for name in hosts {
        text.push_str(&format!("\n127.0.0.1 {name}\n"));
    }
    std::fs::write(&file, text)?;
    Ok(file)
}
