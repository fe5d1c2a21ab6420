//! Files at rest are private to the server's user. The real `lanyard serve` (under umask 022,
//! as most shells have it) is started in a data directory made beforehand with mode 0755:
//! every file it writes (the database, its WAL and shm, keys, the administrator's credential,
//! blob content) must be 0600 and every directory it makes 0700, but for the public `ca.pem`
//! and `endpoints.json` (0644); its log must name the data directory, its mode and
//! `chmod 700`. Then the files are loosened as an older version left them (0644 files, 0755
//! blob directories) and the server restarted: it must tighten them all, and warn again.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use reqwest::Method;
use serde_json::json;

use super::kit::*;
use crate::support::free_port;

const PUBLIC: &[&str] = &["ca.pem", "endpoints.json"];

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every file and directory below `dir` (not `dir` itself), directories first.
fn tree(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
                dirs.push(path);
            } else if meta.is_file() {
                files.push(path);
            }
        }
    }
    dirs.sort();
    files.sort();
    (dirs, files)
}

/// `lanyard serve` under umask 022, so that a file created without an explicit mode would be
/// 0644 whatever the umask of the test run.
fn start_under_umask_022(dir: &Path, port: u16, log: &Path) -> Served {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = std::process::Command::new("sh");
    for (k, _) in std::env::vars() {
        if k.starts_with("LANYARD_") || k.starts_with("AZURE_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("-c")
        .arg("umask 022 && exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_lanyard"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .arg("--port")
        .arg(port.to_string());
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    Served {
        child,
        port,
        log: log.to_path_buf(),
    }
}

/// What is wrong with the modes below `dir` (empty when all is as it should be).
fn wrong_modes(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let (dirs, files) = tree(dir);
    for d in &dirs {
        if mode(d) != 0o700 {
            problems.push(format!("directory {} is {:o}", d.display(), mode(d)));
        }
    }
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let want = if f.parent() == Some(dir) && PUBLIC.contains(&name.as_str()) {
            0o644
        } else {
            0o600
        };
        if mode(f) != want {
            problems.push(format!("{} is {:o}, not {want:o}", f.display(), mode(f)));
        }
    }
    problems
}

/// Writes a blob so that blob content and directories exist.
async fn write_blob(t: &Target, name: &str, first: bool) {
    let arm = t.admin_token(ARM_SCOPE).await;
    let storage = t.admin_token(STORAGE_SCOPE).await;
    let rg = format!("{}/resourceGroups/atrest", t.subscription());
    let account = format!("{rg}/providers/Microsoft.Storage/storageAccounts/statrest");
    if first {
        put_ok(
            t,
            &arm,
            &format!("{rg}?{RG_API}"),
            &json!({"location": "local"}),
        )
        .await;
        put_ok(
            t,
            &arm,
            &format!("{account}?{ACCOUNT_API}"),
            &json!({"location": "local", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}),
        )
        .await;
        assign(
            t,
            &arm,
            &account,
            BLOB_CONTRIBUTOR,
            &t.admin.object_id.to_string(),
        )
        .await;
        let r = call(
            &t.http,
            Method::PUT,
            &t.blob("statrest", "/box?restype=container"),
            bearer(&storage),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let r = call(
        &t.http,
        Method::PUT,
        &t.blob("statrest", &format!("/box/{name}")),
        Req {
            token: Some(&storage),
            body: Some((b"content at rest".to_vec(), "text/plain")),
            headers: vec![("x-ms-blob-type", "BlockBlob".into())],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_at_rest_are_private_to_the_server_user() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    set_mode(&dir, 0o755);
    let log = tmp.path().join("serve.log");
    let warning = "the data directory can be read by other local users";

    // 1. A first start in a directory others may read.
    let mut served = start_under_umask_022(&dir, free_port(), &log);
    let t = served.ready(&dir).await;
    write_blob(&t, "one.txt", true).await;
    // While running: the WAL and shm exist.
    for companion in ["lanyard.db-wal", "lanyard.db-shm"] {
        assert!(dir.join(companion).exists(), "{companion} missing");
    }
    let running = wrong_modes(&dir);
    let (_, files) = tree(&dir);
    let checked = files.len();
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "blob")),
        "no blob file was written: {files:?}"
    );
    let status = served.terminate();
    assert!(status.success(), "exit {status:?}");
    assert!(running.is_empty(), "first start:\n{}", running.join("\n"));
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(warning))
        .unwrap_or_else(|| panic!("no warning about the data directory:\n{text}"));
    assert!(
        line.contains(&dir.display().to_string()) && line.contains("755"),
        "{line}"
    );
    assert!(line.contains("chmod 700"), "{line}");

    // 2. As an older version left it: every file 0644, every directory 0755.
    let (dirs, files) = tree(&dir);
    for d in &dirs {
        set_mode(d, 0o755);
    }
    for f in &files {
        set_mode(f, 0o644);
    }
    std::fs::write(&log, b"").unwrap();
    let mut served = start_under_umask_022(&dir, free_port(), &log);
    let t = served.ready(&dir).await;
    write_blob(&t, "two.txt", false).await;
    let restarted = wrong_modes(&dir);
    let status = served.terminate();
    assert!(status.success(), "exit {status:?}");
    assert!(
        restarted.is_empty(),
        "after a restart over an older version's files:\n{}",
        restarted.join("\n")
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(warning), "no warning on restart:\n{text}");
    // The directory itself is the operator's to change.
    assert_eq!(mode(&dir), 0o755);
    println!(
        "at_rest: {checked} files checked on the first start, {} directories and {} files after loosening and restarting: all private but ca.pem and endpoints.json; warned both times",
        dirs.len(),
        files.len()
    );
}
