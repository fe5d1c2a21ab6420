//! Blob storage end to end: storage accounts through the control plane, the official
//! `azure-storage-blob` and `azure-identity` under `lanyard run --as` an app whose identity
//! holds a Storage Blob Data role, and uploads killed half way.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::support::*;
use lanyard_testkit::arm::Client;
use lanyard_testkit::python;

both_backends!(
    sdk_round_trip_as_contributor,
    readers_read_and_cannot_write,
    killed_uploads_leave_no_partial_blob,
    accounts_through_the_control_plane,
);

const CONTRIBUTOR: &str = "ba92f5b4-2d11-453d-a403-e96b0029c9fe";
const READER: &str = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1";
const ACCOUNT_API: &str = "api-version=2023-05-01";
const MIB: usize = 1024 * 1024;

/// A server with a resource group `rg1`, and what the tests build in it.
struct Scenario {
    server: TestServer,
    admin: Client,
    rg: String,
}

impl Scenario {
    async fn new(backend: Backend) -> Self {
        let server = TestServer::start(backend).await.unwrap();
        let admin = Client::admin(&server).unwrap();
        let rg = format!(
            "/subscriptions/{}/resourceGroups/rg1",
            server.admin.subscription_id
        );
        admin
            .put_ok(
                &format!("{rg}?api-version=2021-04-01"),
                &json!({"location": "local"}),
            )
            .await
            .unwrap();
        Scenario { server, admin, rg }
    }

    fn account_id(&self, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.Storage/storageAccounts/{name}",
            self.rg
        )
    }

    /// Creates a storage account through the control plane, as a user would.
    async fn account(&self, name: &str) -> Value {
        self.admin
            .put_ok(
                &format!("{}?{ACCOUNT_API}", self.account_id(name)),
                &json!({"location": "local", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}),
            )
            .await
            .unwrap()
    }

    /// A web app with a system-assigned identity; returns its principal id.
    async fn app(&self, name: &str) -> String {
        let app = self
            .admin
            .put_ok(
                &format!(
                    "{}/providers/Microsoft.Web/sites/{name}?api-version=2023-01-01",
                    self.rg
                ),
                &json!({"location": "local", "identity": {"type": "SystemAssigned"}}),
            )
            .await
            .unwrap();
        app["identity"]["principalId"].as_str().unwrap().to_string()
    }

    async fn assign(&self, scope: &str, role: &str, principal: &str) {
        let path = format!(
            "{scope}/providers/Microsoft.Authorization/roleAssignments/{}?api-version=2022-04-01",
            uuid::Uuid::new_v4()
        );
        let body = json!({"properties": {
            "roleDefinitionId": format!(
                "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{role}",
                self.server.admin.subscription_id
            ),
            "principalId": principal,
            "principalType": "ServicePrincipal",
        }});
        self.admin.put_ok(&path, &body).await.unwrap();
    }

    fn account_url(&self, account: &str) -> String {
        self.server
            .url(&format!("{account}.blob.lanyard.localhost"), "")
    }

    /// `lanyard run --as APP -- python tests/python/blob/sdk.py ACCOUNT_URL ARGS...`, in a
    /// mount namespace whose hosts file resolves the account's host.
    fn sdk(&self, app: &str, account: &str, args: &[&str]) -> std::process::Command {
        let script = python::scripts_dir().join("blob/sdk.py");
        let mut argv: Vec<std::ffi::OsString> = vec![
            "run".into(),
            "--as".into(),
            app.into(),
            "--data-dir".into(),
            self.server.data_dir.clone().into(),
            "--".into(),
            python::python().unwrap().into(),
            script.into(),
            self.account_url(account).into(),
        ];
        argv.extend(args.iter().map(std::ffi::OsString::from));
        let hosts = [format!("{account}.blob.lanyard.localhost")];
        let mut cmd =
            python::isolated(Path::new(env!("CARGO_BIN_EXE_lanyard")), &argv, &hosts).unwrap();
        for (k, _) in std::env::vars() {
            if k.starts_with("LANYARD_") || k.starts_with("AZURE_") {
                cmd.env_remove(k);
            }
        }
        cmd
    }

    /// Runs the SDK script to the end and returns its JSON verdict.
    async fn run_sdk(&self, app: &str, account: &str, args: &[&str]) -> Value {
        let cmd = self.sdk(app, account, args);
        let out = tokio::process::Command::from(cmd).output().await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or("");
        serde_json::from_str(line).unwrap_or_else(|_| {
            panic!(
                "no JSON from sdk.py {args:?}: stdout={stdout} stderr={}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Starts the SDK script, waits for it to say it is hanging, and SIGKILLs the Python
    /// process (not its `lanyard run` parent).
    async fn kill_when_ready(&self, app: &str, account: &str, args: &[&str]) {
        let mut cmd = self.sdk(app, account, args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let ready = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let line = line.unwrap();
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    return Some(v);
                }
            }
            None
        })
        .await
        .unwrap();
        let Some(ready) = ready else {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "sdk.py {args:?} ended without getting ready: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        };
        assert_eq!(ready["ready"], true, "{ready}");
        let pid = ready["pid"].as_u64().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::task::spawn_blocking(move || wait_exit(&mut child, 30))
            .await
            .unwrap();
        assert!(!exit.success());
    }
}

fn ok(result: &Value) -> &Value {
    assert_eq!(result["ok"], true, "{result}");
    result
}

/// Every file under the blob root, relative to it.
fn blob_files(data_dir: &Path) -> Vec<String> {
    let root = data_dir.join("blobs");
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(
                    e.path()
                        .strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

async fn sdk_round_trip_as_contributor(backend: Backend) {
    let s = Scenario::new(backend).await;
    s.account("acct1").await;
    let principal = s.app("app1").await;
    s.assign(&s.account_id("acct1"), CONTRIBUTOR, &principal)
        .await;
    let size = (100 * MIB).to_string();
    let block = (4 * MIB).to_string();
    let result = s
        .run_sdk(
            "app1",
            "acct1",
            &[
                "round-trip",
                "--container",
                "e2e",
                "--size",
                &size,
                "--block-size",
                &block,
            ],
        )
        .await;
    ok(&result);
    assert!(
        result["committed_blocks"].as_u64().unwrap() >= 25,
        "{result}"
    );
    // Everything was deleted: the content is gone from disk too.
    for _ in 0..100 {
        if blob_files(&s.server.data_dir).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(blob_files(&s.server.data_dir), Vec::<String>::new());
}

async fn readers_read_and_cannot_write(backend: Backend) {
    let s = Scenario::new(backend).await;
    s.account("acct1").await;
    let writer = s.app("writer").await;
    let reader = s.app("reader").await;
    s.assign(&s.account_id("acct1"), CONTRIBUTOR, &writer).await;
    s.assign(&s.account_id("acct1"), READER, &reader).await;
    ok(&s.run_sdk("writer", "acct1", &["seed"]).await);
    let result = s.run_sdk("reader", "acct1", &["reader"]).await;
    ok(&result);
    let message = result["denied"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write"),
        "{message}"
    );
    assert!(message.contains("Storage Blob Data Reader"), "{message}");
}

async fn killed_uploads_leave_no_partial_blob(backend: Backend) {
    let s = Scenario::new(backend).await;
    s.account("acct1").await;
    let app = s.app("app1").await;
    s.assign(&s.account_id("acct1"), CONTRIBUTOR, &app).await;
    ok(&s.run_sdk("app1", "acct1", &["seed"]).await);
    let size = (16 * MIB).to_string();
    let block = MIB.to_string();

    // Killed between blocks of a new blob: the blob does not exist.
    s.kill_when_ready(
        "app1",
        "acct1",
        &[
            "upload-then-hang",
            "--blob",
            "new.bin",
            "--size",
            &size,
            "--block-size",
            &block,
        ],
    )
    .await;
    let check = s
        .run_sdk("app1", "acct1", &["check", "--blob", "new.bin"])
        .await;
    assert_eq!(ok(&check)["exists"], false, "{check}");
    assert_eq!(check["uncommitted"], 3, "{check}");

    // Killed between blocks of a replacement: the previous version is intact.
    s.kill_when_ready(
        "app1",
        "acct1",
        &[
            "upload-then-hang",
            "--blob",
            "seed.bin",
            "--size",
            &size,
            "--block-size",
            &block,
        ],
    )
    .await;
    // Killed in the middle of a block's body.
    s.kill_when_ready(
        "app1",
        "acct1",
        &[
            "hang-mid-block",
            "--blob",
            "seed.bin",
            "--size",
            &(8 * MIB).to_string(),
        ],
    )
    .await;
    let check = s
        .run_sdk("app1", "acct1", &["check", "--blob", "seed.bin"])
        .await;
    assert_eq!(ok(&check)["seed"], true, "{check}");
    assert_eq!(check["uncommitted"], 3, "{check}");
    // No temporary file outlives its request.
    let mut files = Vec::new();
    for _ in 0..100 {
        files = blob_files(&s.server.data_dir);
        if !files.iter().any(|f| f.contains(".tmp-")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!files.iter().any(|f| f.contains(".tmp-")), "{files:?}");

    // A crash leaves stray files; the next start removes them and keeps the rest.
    let dir = files[0].split('/').next().unwrap().to_string();
    let root = s.server.data_dir.join("blobs");
    std::fs::write(root.join(&dir).join(".tmp-crashed"), b"half").unwrap();
    std::fs::write(
        root.join(&dir)
            .join("0123456789abcdef0123456789abcdef.blob"),
        b"orphan",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("fedcba9876543210fedcba9876543210")).unwrap();
    std::fs::write(
        root.join("fedcba9876543210fedcba9876543210/x.blob"),
        b"orphan",
    )
    .unwrap();
    let Scenario {
        server,
        admin: _,
        rg,
    } = s;
    let server = server.restart().await.unwrap();
    let r = server
        .client()
        .unwrap()
        .get(server.url("localhost", "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(blob_files(&server.data_dir), files);
    let s = Scenario {
        admin: Client::admin(&server).unwrap(),
        server,
        rg,
    };
    let check = s
        .run_sdk("app1", "acct1", &["check", "--blob", "seed.bin"])
        .await;
    assert_eq!(ok(&check)["seed"], true, "{check}");
}

async fn accounts_through_the_control_plane(backend: Backend) {
    let s = Scenario::new(backend).await;
    let created = s.account("acct1").await;
    let port = s.server.addr.port();
    assert_eq!(
        created["properties"]["primaryEndpoints"]["blob"],
        format!("https://acct1.blob.lanyard.localhost:{port}/"),
        "{created}"
    );
    assert_eq!(created["type"], "Microsoft.Storage/storageAccounts");
    assert_eq!(created["properties"]["provisioningState"], "Succeeded");
    let got = s
        .admin
        .arm(
            Method::GET,
            &format!("{}?{ACCOUNT_API}", s.account_id("acct1")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(
        got.body["properties"]["primaryEndpoints"]["blob"],
        created["properties"]["primaryEndpoints"]["blob"]
    );

    // Names: 3 to 24 lower-case letters and digits, unique across resource groups.
    for bad in ["ab", "Upper1", "with-dash", "a234567890123456789012345"] {
        let r = s
            .admin
            .arm(
                Method::PUT,
                &format!("{}?{ACCOUNT_API}", s.account_id(bad)),
                Some(&json!({"location": "local"})),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "AccountNameInvalid", "{bad}");
    }
    let rg2 = format!(
        "/subscriptions/{}/resourceGroups/rg2",
        s.server.admin.subscription_id
    );
    s.admin
        .put_ok(
            &format!("{rg2}?api-version=2021-04-01"),
            &json!({"location": "local"}),
        )
        .await
        .unwrap();
    let r = s
        .admin
        .arm(
            Method::PUT,
            &format!("{rg2}/providers/Microsoft.Storage/storageAccounts/acct1?{ACCOUNT_API}"),
            Some(&json!({"location": "local"})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "StorageAccountAlreadyTaken");
    // Updating the same account is fine.
    let r = s
        .admin
        .arm(
            Method::PUT,
            &format!("{}?{ACCOUNT_API}", s.account_id("acct1")),
            Some(&json!({"location": "local", "tags": {"env": "test"}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    s.account("acct2").await;
    let list = s
        .admin
        .arm(
            Method::GET,
            &format!(
                "{}/providers/Microsoft.Storage/storageAccounts?{ACCOUNT_API}",
                s.rg
            ),
            None,
        )
        .await
        .unwrap();
    let names: Vec<&str> = list.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acct1", "acct2"]);

    // Data in acct1, then the account goes: its containers, blobs and files go with it.
    let app = s.app("app1").await;
    s.assign(&s.rg, CONTRIBUTOR, &app).await;
    ok(&s.run_sdk("app1", "acct1", &["seed"]).await);
    ok(&s.run_sdk("app1", "acct2", &["seed"]).await);
    let both = blob_files(&s.server.data_dir);
    assert_eq!(both.len(), 6, "{both:?}");
    let r = s
        .admin
        .arm(
            Method::DELETE,
            &format!("{}?{ACCOUNT_API}", s.account_id("acct1")),
            None,
        )
        .await
        .unwrap();
    assert!(r.status == 200 || r.status == 204, "{}", r.body);
    let mut left = Vec::new();
    for _ in 0..100 {
        left = blob_files(&s.server.data_dir);
        if left.len() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(left.len(), 3, "{left:?}");
    // The name is free again, and the new account starts empty.
    s.account("acct1").await;
    let check = s
        .run_sdk(
            "app1",
            "acct1",
            &["check", "--container", "data", "--blob", "seed.bin"],
        )
        .await;
    assert_eq!(ok(&check)["exists"], false, "{check}");
    // Deleting the resource group takes acct2 and its files.
    let r = s
        .admin
        .arm(
            Method::DELETE,
            &format!("{}?api-version=2021-04-01", s.rg),
            None,
        )
        .await
        .unwrap();
    assert!(r.status < 300, "{}", r.body);
    for _ in 0..100 {
        if blob_files(&s.server.data_dir).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(blob_files(&s.server.data_dir), Vec::<String>::new());
}
