//! The `lanyard` CLI end to end: the built binary against a server on a free port (in
//! process, its data directory giving the CLI its credential), every `az`-shaped command at
//! least once, output formats and exit codes; then `lanyard up` as a child process, queried
//! with the CLI, with the Python examples run unchanged under `run --as` succeeding and
//! failing exactly where RBAC says.
//!
//! The CLI is a client of public REST APIs only, so these tests run on SQLite; the
//! backends are compared by the other modules.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::*;
use lanyard_testkit::arm::Client;
use lanyard_testkit::python;

const BLOB_READ: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read";
const SECRETS_USER_ID: &str = "4633458b-17de-408a-b874-0445c86b69e6";

/// What one run of the binary did.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// stdout as JSON (`Null` when empty).
    fn json(&self) -> Value {
        if self.stdout.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts a failure with `code` and the service's `error` code on one stderr line.
    #[track_caller]
    fn fails(&self, code: i32, error: &str) {
        assert_eq!(self.code, code, "{self:?}");
        let lines: Vec<&str> = self.stderr.trim().lines().collect();
        assert_eq!(lines.len(), 1, "errors are one line: {self:?}");
        assert!(lines[0].starts_with("error: "), "{self:?}");
        assert!(lines[0].contains(error), "expected `{error}`: {self:?}");
    }
}

/// The CLI pointed at one data directory, with extra environment.
struct Cli {
    data_dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Cli {
    fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            env: Vec::new(),
        }
    }

    async fn run(&self, args: &[&str]) -> Out {
        let mut cmd = lanyard();
        cmd.args(args).env("LANYARD_DATA_DIR", &self.data_dir);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = tokio::process::Command::from(cmd)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed; its JSON answer.
    async fn ok(&self, args: &[&str]) -> Value {
        let out = self.run(args).await;
        assert_eq!(out.code, 0, "lanyard {args:?}: {out:?}");
        out.json()
    }

    /// Runs a command that must succeed; its stdout.
    async fn text(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert_eq!(out.code, 0, "lanyard {args:?}: {out:?}");
        out.stdout
    }
}

async fn server() -> (TestServer, Cli) {
    let server = TestServer::start(Backend::Sqlite).await.unwrap();
    // The server writes `endpoints.json`, which the CLI reads, as it starts serving.
    let endpoints = server.data_dir.join("endpoints.json");
    for _ in 0..200 {
        if std::fs::read_to_string(&endpoints)
            .is_ok_and(|t| t.contains(&server.addr.port().to_string()))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let cli = Cli::new(&server.data_dir);
    (server, cli)
}

fn rg_id(server: &TestServer, rg: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{rg}",
        server.admin.subscription_id
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_identities_and_federated_credentials() {
    let (server, cli) = server().await;
    let rg = cli
        .ok(&[
            "group", "create", "-n", "rg1", "-l", "local", "--tags", "team=a",
        ])
        .await;
    assert_eq!(rg["name"], "rg1");
    assert_eq!(rg["tags"]["team"], "a");
    cli.ok(&["group", "create", "--resource-group", "rg2"])
        .await;
    let names = cli
        .text(&["group", "list", "--query", "[].name", "-o", "tsv"])
        .await;
    assert_eq!(names.lines().collect::<Vec<_>>(), ["rg1", "rg2"], "{names}");
    let table = cli.text(&["group", "list", "-o", "table"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].contains("Location") && lines[0].contains("Name"),
        "{table}"
    );
    assert!(lines[1].starts_with("--"), "{table}");
    assert_eq!(lines.len(), 4, "{table}");
    let location = cli
        .text(&[
            "group", "show", "-n", "rg1", "--query", "location", "-o", "tsv",
        ])
        .await;
    assert_eq!(location, "local\n");

    let ua = cli
        .ok(&["identity", "create", "-g", "rg1", "-n", "ua1"])
        .await;
    assert!(ua["principalId"].is_string(), "az's flattened shape: {ua}");
    assert_eq!(ua["resourceGroup"], "rg1");
    assert_eq!(ua["location"], "local", "the group's location by default");
    let client_id = cli
        .text(&[
            "identity", "show", "-g", "rg1", "-n", "ua1", "--query", "clientId", "-o", "tsv",
        ])
        .await;
    assert_eq!(client_id.trim(), ua["clientId"].as_str().unwrap());
    let by_id = cli
        .ok(&["identity", "show", "--ids", ua["id"].as_str().unwrap()])
        .await;
    assert_eq!(by_id["principalId"], ua["principalId"]);
    assert_eq!(
        cli.ok(&["identity", "list", "--query", "length(@)"]).await,
        json!(1)
    );

    let fic = cli
        .ok(&[
            "identity",
            "federated-credential",
            "create",
            "-g",
            "rg1",
            "--identity-name",
            "ua1",
            "-n",
            "github",
            "--issuer",
            "https://token.actions.githubusercontent.com",
            "--subject",
            "repo:org/app:ref:refs/heads/main",
        ])
        .await;
    assert_eq!(fic["subject"], "repo:org/app:ref:refs/heads/main", "{fic}");
    assert_eq!(fic["audiences"], json!(["api://AzureADTokenExchange"]));
    let listed = cli
        .ok(&[
            "identity",
            "federated-credential",
            "list",
            "-g",
            "rg1",
            "--identity-name",
            "ua1",
        ])
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let shown = cli
        .ok(&[
            "identity",
            "federated-credential",
            "show",
            "-g",
            "rg1",
            "--identity-name",
            "ua1",
            "-n",
            "github",
        ])
        .await;
    assert_eq!(
        shown["issuer"],
        "https://token.actions.githubusercontent.com"
    );
    cli.ok(&[
        "identity",
        "federated-credential",
        "delete",
        "-g",
        "rg1",
        "--identity-name",
        "ua1",
        "-n",
        "github",
        "--yes",
    ])
    .await;
    let listed = cli
        .ok(&[
            "identity",
            "federated-credential",
            "list",
            "-g",
            "rg1",
            "--identity-name",
            "ua1",
        ])
        .await;
    assert_eq!(listed, json!([]));

    cli.ok(&["identity", "delete", "-g", "rg1", "-n", "ua1"])
        .await;
    cli.run(&["identity", "show", "-g", "rg1", "-n", "ua1"])
        .await
        .fails(1, "ResourceNotFound");
    cli.ok(&["group", "delete", "-n", "rg2", "--yes"]).await;
    cli.run(&["group", "show", "-n", "rg2"])
        .await
        .fails(1, "ResourceGroupNotFound");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_their_identities_and_roles() {
    let (server, cli) = server().await;
    let rg = rg_id(&server, "rg1");
    cli.ok(&["group", "create", "-n", "rg1"]).await;
    let ua = cli
        .ok(&["identity", "create", "-g", "rg1", "-n", "ua1"])
        .await;
    let ua_id = ua["id"].as_str().unwrap();

    let vm = cli
        .ok(&[
            "vm",
            "create",
            "-g",
            "rg1",
            "-n",
            "vm1",
            "--image",
            "Ubuntu2204",
            "--assign-identity",
        ])
        .await;
    assert_eq!(vm["identity"]["type"], "SystemAssigned", "{vm}");
    let vm_principal = vm["identity"]["principalId"].as_str().unwrap().to_string();
    let assigned = cli
        .ok(&[
            "vm",
            "identity",
            "assign",
            "-g",
            "rg1",
            "-n",
            "vm1",
            "--identities",
            "ua1",
        ])
        .await;
    assert_eq!(
        assigned["systemAssignedIdentity"],
        vm_principal.as_str(),
        "{assigned}"
    );
    let users = assigned["userAssignedIdentities"].as_object().unwrap();
    assert!(
        users.keys().any(|k| k.eq_ignore_ascii_case(ua_id)),
        "{assigned}"
    );
    let shown = cli
        .ok(&["vm", "identity", "show", "-g", "rg1", "-n", "vm1"])
        .await;
    assert_eq!(shown, assigned);
    let removed = cli
        .ok(&[
            "vm",
            "identity",
            "remove",
            "-g",
            "rg1",
            "-n",
            "vm1",
            "--identities",
            ua_id,
        ])
        .await;
    assert!(removed["userAssignedIdentities"].is_null(), "{removed}");
    assert_eq!(removed["systemAssignedIdentity"], vm_principal.as_str());
    let removed = cli
        .ok(&["vm", "identity", "remove", "-g", "rg1", "-n", "vm1"])
        .await;
    assert_eq!(removed["systemAssignedIdentity"], "", "{removed}");
    // The system identity again, with a role, as `az vm identity assign --role --scope`.
    let again = cli
        .ok(&[
            "vm",
            "identity",
            "assign",
            "-g",
            "rg1",
            "-n",
            "vm1",
            "--identities",
            "[system]",
            "--role",
            "Reader",
            "--scope",
            &rg,
        ])
        .await;
    let vm_principal = again["systemAssignedIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    let roles = cli
        .text(&[
            "role",
            "assignment",
            "list",
            "--assignee",
            &vm_principal,
            "--all",
            "--query",
            "[].roleDefinitionName",
            "-o",
            "tsv",
        ])
        .await;
    assert_eq!(roles.trim(), "Reader");
    let table = cli.text(&["vm", "list", "-o", "table"]).await;
    assert!(table.contains("vm1") && table.contains("rg1"), "{table}");
    assert_eq!(
        cli.ok(&["vm", "show", "-g", "rg1", "-n", "vm1", "--query", "name"])
            .await,
        json!("vm1")
    );

    let web = cli
        .ok(&[
            "webapp",
            "create",
            "-g",
            "rg1",
            "-n",
            "web1",
            "-p",
            "plan1",
            "--assign-identity",
            "ua1",
        ])
        .await;
    assert_eq!(web["identity"]["type"], "UserAssigned", "{web}");
    let both = cli
        .ok(&["webapp", "identity", "assign", "-g", "rg1", "-n", "web1"])
        .await;
    assert_eq!(both["type"], "SystemAssigned, UserAssigned", "{both}");
    assert!(both["principalId"].is_string());
    assert_eq!(
        cli.ok(&["webapp", "identity", "show", "-g", "rg1", "-n", "web1"])
            .await,
        both
    );
    let system_only = cli
        .ok(&[
            "webapp",
            "identity",
            "remove",
            "-g",
            "rg1",
            "-n",
            "web1",
            "--identities",
            "ua1",
        ])
        .await;
    assert_eq!(system_only["type"], "SystemAssigned", "{system_only}");
    cli.run(&[
        "webapp",
        "identity",
        "remove",
        "-g",
        "rg1",
        "-n",
        "web1",
        "--identities",
        "ua1",
    ])
    .await
    .fails(1, "not assigned");

    // Role definitions.
    let id = cli
        .text(&[
            "role",
            "definition",
            "list",
            "--name",
            "Key Vault Secrets User",
            "--query",
            "[0].name",
            "-o",
            "tsv",
        ])
        .await;
    assert_eq!(id.trim(), SECRETS_USER_ID);
    let sub = format!("/subscriptions/{}", server.admin.subscription_id);
    let definition = json!({
        "Name": "Blob Peeker", "Description": "reads blobs",
        "Actions": [], "DataActions": [BLOB_READ], "AssignableScopes": [sub],
    })
    .to_string();
    let custom = cli
        .ok(&[
            "role",
            "definition",
            "create",
            "--role-definition",
            &definition,
        ])
        .await;
    assert_eq!(custom["roleName"], "Blob Peeker", "{custom}");
    assert_eq!(custom["roleType"], "CustomRole", "{custom}");
    let customs = cli
        .ok(&[
            "role",
            "definition",
            "list",
            "--custom-role-only",
            "--query",
            "[].roleName",
        ])
        .await;
    assert_eq!(customs, json!(["Blob Peeker"]));

    // Role assignments: by name, by client id, duplicates, listing, deleting.
    let a = cli
        .ok(&[
            "role",
            "assignment",
            "create",
            "--assignee",
            "ua1",
            "--role",
            "Blob Peeker",
            "--scope",
            &rg,
        ])
        .await;
    assert_eq!(a["principalId"], ua["principalId"], "{a}");
    assert_eq!(a["roleDefinitionName"], "Blob Peeker", "{a}");
    assert_eq!(a["principalName"], "ua1", "{a}");
    assert_eq!(a["scope"], rg.as_str());
    let by_client = cli
        .ok(&[
            "role",
            "assignment",
            "create",
            "--assignee",
            ua["clientId"].as_str().unwrap(),
            "--role",
            "Reader",
            "-g",
            "rg1",
        ])
        .await;
    assert_eq!(
        by_client["principalId"], ua["principalId"],
        "a client id names its principal"
    );
    cli.run(&[
        "role",
        "assignment",
        "create",
        "--assignee",
        "ua1",
        "--role",
        "Reader",
        "-g",
        "rg1",
    ])
    .await
    .fails(1, "RoleAssignmentExists");
    let count = cli
        .ok(&[
            "role",
            "assignment",
            "list",
            "--assignee",
            "ua1",
            "--all",
            "--query",
            "length(@)",
        ])
        .await;
    assert_eq!(count, json!(2));
    let at_rg = cli
        .ok(&[
            "role",
            "assignment",
            "list",
            "-g",
            "rg1",
            "--query",
            "[].roleDefinitionName",
        ])
        .await;
    let mut at_rg: Vec<String> = serde_json::from_value(at_rg).unwrap();
    at_rg.sort();
    assert_eq!(
        at_rg,
        ["Blob Peeker", "Reader", "Reader"],
        "vm1's Reader and ua1's two"
    );
    cli.ok(&[
        "role",
        "assignment",
        "delete",
        "--assignee",
        "ua1",
        "--role",
        "Reader",
        "-g",
        "rg1",
    ])
    .await;
    let left = cli
        .ok(&[
            "role",
            "assignment",
            "list",
            "--assignee",
            "ua1",
            "--all",
            "--query",
            "[].id",
        ])
        .await;
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
    cli.ok(&[
        "role",
        "assignment",
        "delete",
        "--ids",
        left[0].as_str().unwrap(),
    ])
    .await;
    cli.ok(&["role", "definition", "delete", "-n", "Blob Peeker"])
        .await;
    assert_eq!(
        cli.ok(&["role", "definition", "list", "--custom-role-only"])
            .await,
        json!([])
    );

    cli.ok(&["webapp", "delete", "-g", "rg1", "-n", "web1"])
        .await;
    cli.ok(&["vm", "delete", "-g", "rg1", "-n", "vm1", "--yes"])
        .await;
    let gone = cli
        .ok(&[
            "role",
            "assignment",
            "list",
            "--assignee",
            &vm_principal,
            "--all",
        ])
        .await;
    assert_eq!(
        gone,
        json!([]),
        "the VM's identity and its assignments went with it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_vaults_and_secrets() {
    let (server, cli) = server().await;
    cli.ok(&["group", "create", "-n", "rg1"]).await;
    let kv = cli
        .ok(&["keyvault", "create", "-g", "rg1", "-n", "kv1"])
        .await;
    assert_eq!(kv["properties"]["enableRbacAuthorization"], true, "{kv}");
    assert_eq!(
        cli.ok(&["keyvault", "show", "-n", "kv1", "--query", "name"])
            .await,
        json!("kv1")
    );
    let kv_id = kv["id"].as_str().unwrap();

    // Owner grants no data actions: the data plane refuses, exit code 3, one line.
    cli.run(&[
        "keyvault",
        "secret",
        "set",
        "--vault-name",
        "kv1",
        "-n",
        "s1",
        "--value",
        "v1",
    ])
    .await
    .fails(3, "Forbidden");
    let admin = server.admin.client_id.to_string();
    cli.ok(&[
        "role",
        "assignment",
        "create",
        "--assignee",
        &admin,
        "--role",
        "Key Vault Secrets Officer",
        "--scope",
        kv_id,
    ])
    .await;
    let set = cli
        .ok(&[
            "keyvault",
            "secret",
            "set",
            "--vault-name",
            "kv1",
            "-n",
            "s1",
            "--value",
            "v1",
        ])
        .await;
    assert_eq!(set["value"], "v1");
    assert_eq!(set["name"], "s1");
    let shown = cli
        .ok(&[
            "keyvault",
            "secret",
            "show",
            "--vault-name",
            "kv1",
            "-n",
            "s1",
        ])
        .await;
    assert_eq!(shown["value"], "v1");
    let by_id = cli
        .ok(&[
            "keyvault",
            "secret",
            "show",
            "--id",
            set["id"].as_str().unwrap(),
        ])
        .await;
    assert_eq!(by_id["value"], "v1");
    let names = cli
        .ok(&[
            "keyvault",
            "secret",
            "list",
            "--vault-name",
            "kv1",
            "--query",
            "[].name",
        ])
        .await;
    assert_eq!(names, json!(["s1"]));
    let deleted = cli
        .ok(&[
            "keyvault",
            "secret",
            "delete",
            "--vault-name",
            "kv1",
            "-n",
            "s1",
        ])
        .await;
    assert!(deleted["recoveryId"].is_string(), "{deleted}");
    let names = cli
        .ok(&[
            "keyvault",
            "secret",
            "list-deleted",
            "--vault-name",
            "kv1",
            "--query",
            "[].name",
        ])
        .await;
    assert_eq!(names, json!(["s1"]));
    cli.ok(&[
        "keyvault",
        "secret",
        "recover",
        "--vault-name",
        "kv1",
        "-n",
        "s1",
    ])
    .await;
    let mut value = Value::Null;
    for _ in 0..50 {
        let out = cli
            .run(&[
                "keyvault",
                "secret",
                "show",
                "--vault-name",
                "kv1",
                "-n",
                "s1",
                "--query",
                "value",
            ])
            .await;
        if out.code == 0 {
            value = out.json();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(value, json!("v1"), "recovered");
    cli.ok(&[
        "keyvault",
        "secret",
        "delete",
        "--vault-name",
        "kv1",
        "-n",
        "s1",
    ])
    .await;
    cli.ok(&[
        "keyvault",
        "secret",
        "purge",
        "--vault-name",
        "kv1",
        "-n",
        "s1",
    ])
    .await;
    assert_eq!(
        cli.ok(&["keyvault", "secret", "list-deleted", "--vault-name", "kv1"])
            .await,
        json!([])
    );
    cli.run(&[
        "keyvault",
        "secret",
        "show",
        "--vault-name",
        "kv1",
        "-n",
        "s1",
    ])
    .await
    .fails(1, "SecretNotFound");

    // Access-policy mode: the creator gets secret permissions; set-policy adds a principal.
    cli.ok(&["identity", "create", "-g", "rg1", "-n", "ua1"])
        .await;
    let kv2 = cli
        .ok(&[
            "keyvault",
            "create",
            "-g",
            "rg1",
            "-n",
            "kv2",
            "--enable-rbac-authorization",
            "false",
        ])
        .await;
    assert_eq!(
        kv2["properties"]["accessPolicies"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{kv2}"
    );
    let kv2 = cli
        .ok(&[
            "keyvault",
            "set-policy",
            "-n",
            "kv2",
            "--spn",
            "ua1",
            "--secret-permissions",
            "get",
            "list",
        ])
        .await;
    assert_eq!(
        kv2["properties"]["accessPolicies"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{kv2}"
    );
    cli.ok(&[
        "keyvault",
        "secret",
        "set",
        "--vault-name",
        "kv2",
        "-n",
        "s2",
        "--value",
        "v2",
    ])
    .await;
    let names = cli
        .text(&["keyvault", "list", "-o", "tsv", "--query", "[].name"])
        .await;
    assert_eq!(names.lines().collect::<Vec<_>>(), ["kv1", "kv2"]);
    cli.ok(&["keyvault", "delete", "-n", "kv2"]).await;
    assert_eq!(
        cli.ok(&["keyvault", "list", "--query", "length(@)"]).await,
        json!(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_accounts_and_blobs() {
    let (server, cli) = server().await;
    cli.ok(&["group", "create", "-n", "rg1"]).await;
    let account = cli
        .ok(&["storage", "account", "create", "-g", "rg1", "-n", "store1"])
        .await;
    assert!(
        account["properties"]["primaryEndpoints"]["blob"]
            .as_str()
            .unwrap()
            .starts_with("https://store1.blob."),
        "{account}"
    );
    let account_id = account["id"].as_str().unwrap();
    assert_eq!(
        cli.ok(&["storage", "account", "show", "-n", "store1", "--query", "name"])
            .await,
        json!("store1")
    );
    assert_eq!(
        cli.ok(&["storage", "account", "list", "--query", "length(@)"])
            .await,
        json!(1)
    );

    let login = ["--auth-mode", "login"];
    let account_args = ["--account-name", "store1"];
    let args = |rest: &[&'static str]| -> Vec<&'static str> {
        let mut v: Vec<&str> = vec!["storage"];
        v.extend_from_slice(rest);
        v.extend_from_slice(&account_args);
        v.extend_from_slice(&login);
        v
    };
    // Owner may create a container (a control action) but not write a blob (a data action).
    cli.ok(&args(&["container", "create", "-n", "reports"]))
        .await;
    cli.run(&args(&[
        "blob", "upload", "-c", "reports", "-n", "a.txt", "--data", "hello",
    ]))
    .await
    .fails(3, "AuthorizationPermissionMismatch");
    let admin = server.admin.client_id.to_string();
    cli.ok(&[
        "role",
        "assignment",
        "create",
        "--assignee",
        &admin,
        "--role",
        "Storage Blob Data Contributor",
        "--scope",
        account_id,
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.txt");
    std::fs::write(&file, "quarterly numbers\n").unwrap();
    let file_arg = file.to_str().unwrap().to_string();
    let mut upload = args(&["blob", "upload", "-c", "reports"]);
    upload.extend(["-f", file_arg.as_str()]);
    let uploaded = cli.ok(&upload).await;
    assert!(uploaded["etag"].is_string(), "{uploaded}");
    cli.run(&upload).await.fails(1, "BlobAlreadyExists");
    upload.push("--overwrite");
    cli.ok(&upload).await;
    cli.ok(&args(&[
        "blob",
        "upload",
        "-c",
        "reports",
        "-n",
        "dir/b.txt",
        "--data",
        "bee",
    ]))
    .await;
    let names = cli
        .ok(&[
            args(&["blob", "list", "-c", "reports"]),
            vec!["--query", "[].name"],
        ]
        .concat())
        .await;
    assert_eq!(names, json!(["dir/b.txt", "report.txt"]));
    let out = dir.path().join("out.txt");
    let out_arg = out.to_str().unwrap().to_string();
    let mut download = args(&["blob", "download", "-c", "reports", "-n", "report.txt"]);
    download.extend(["-f", out_arg.as_str()]);
    cli.ok(&download).await;
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "quarterly numbers\n"
    );
    let stdout = cli
        .text(&args(&[
            "blob",
            "download",
            "-c",
            "reports",
            "-n",
            "dir/b.txt",
        ]))
        .await;
    assert_eq!(stdout, "bee");
    let key = cli
        .run(&[
            "storage",
            "blob",
            "list",
            "-c",
            "reports",
            "--account-name",
            "store1",
            "--auth-mode",
            "key",
        ])
        .await;
    key.fails(1, "--auth-mode login");
}

/// An app registration with a secret and no roles, through Graph.
async fn app_without_roles(server: &TestServer) -> (String, String) {
    let admin = Client::admin(server).unwrap();
    let token = admin
        .token("https://graph.microsoft.com/.default")
        .await
        .unwrap();
    let http = server.client().unwrap();
    let graph = server.url("localhost", "/v1.0");
    let app: Value = http
        .post(format!("{graph}/applications"))
        .bearer_auth(&token)
        .json(&json!({"displayName": "ci-pipeline"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let app_id = app["appId"].as_str().unwrap().to_string();
    let id = app["id"].as_str().unwrap();
    http.post(format!("{graph}/servicePrincipals"))
        .bearer_auth(&token)
        .json(&json!({"appId": app_id}))
        .send()
        .await
        .unwrap();
    let pw: Value = http
        .post(format!("{graph}/applications/{id}/addPassword"))
        .bearer_auth(&token)
        .json(&json!({"passwordCredential": {"displayName": "ci"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (app_id, pw["secretText"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_access_explain_logs_and_exit_codes() {
    let (server, cli) = server().await;
    let rg = rg_id(&server, "rg1");
    cli.ok(&["group", "create", "-n", "rg1"]).await;
    let ua = cli
        .ok(&["identity", "create", "-g", "rg1", "-n", "ua1"])
        .await;
    let vm = cli
        .ok(&[
            "vm",
            "create",
            "-g",
            "rg1",
            "-n",
            "vm1",
            "--assign-identity",
            "[system]",
            "ua1",
        ])
        .await;
    let vm_principal = vm["identity"]["principalId"].as_str().unwrap().to_string();

    // token get: the VM's default identity, then the user-assigned one by client id.
    let claims = cli
        .ok(&[
            "token",
            "get",
            "--as",
            "vm1",
            "--resource",
            "https://vault.azure.net",
        ])
        .await;
    assert_eq!(claims["aud"], "https://vault.azure.net", "{claims}");
    assert_eq!(claims["oid"], vm_principal.as_str());
    assert!(
        claims["xms_mirid"]
            .as_str()
            .unwrap()
            .ends_with("/virtualMachines/vm1"),
        "{claims}"
    );
    let client_id = ua["clientId"].as_str().unwrap();
    let claims = cli
        .ok(&[
            "token",
            "get",
            "--as",
            "vm1",
            "--resource",
            "https://storage.azure.com",
            "--client-id",
            client_id,
        ])
        .await;
    assert_eq!(claims["oid"], ua["principalId"], "{claims}");
    assert_eq!(claims["appid"], client_id);
    cli.run(&["token", "get", "--as", "nothing-here"])
        .await
        .fails(1, "ResourceNotFound");

    // access explain: denied, naming the missing role and the scope; then allowed.
    let container = format!("{rg}/providers/Microsoft.Storage/storageAccounts/store1/blobServices/default/containers/c1");
    let denied = cli
        .run(&[
            "access",
            "explain",
            "--assignee",
            "vm1",
            "--action",
            BLOB_READ,
            "--scope",
            &container,
        ])
        .await;
    assert_eq!(denied.code, 3, "{denied:?}");
    let answer = denied.json();
    assert_eq!(answer["allowed"], false, "{answer}");
    let why = answer["explanation"].as_str().unwrap();
    assert!(why.contains("Storage Blob Data Reader"), "{why}");
    assert!(why.contains(&container), "{why}");
    assert_eq!(
        answer["rolesThatGrant"][0]["roleName"],
        "Storage Blob Data Reader"
    );
    cli.ok(&[
        "role",
        "assignment",
        "create",
        "--assignee",
        "vm1",
        "--role",
        "Storage Blob Data Reader",
        "--scope",
        &rg,
    ])
    .await;
    let allowed = cli
        .ok(&[
            "access",
            "explain",
            "--assignee",
            "vm1",
            "--action",
            BLOB_READ,
            "--scope",
            &container,
        ])
        .await;
    assert_eq!(allowed["allowed"], true, "{allowed}");
    assert_eq!(allowed["grant"]["roleName"], "Storage Blob Data Reader");
    assert_eq!(allowed["grant"]["scope"], rg.as_str());
    let text = cli
        .text(&[
            "access",
            "explain",
            "--assignee",
            &vm_principal,
            "--action",
            BLOB_READ,
            "--scope",
            &container,
            "--query",
            "explanation",
            "-o",
            "tsv",
        ])
        .await;
    assert!(text.contains("holds Storage Blob Data Reader"), "{text}");

    // The logs.
    let events = cli
        .ok(&[
            "monitor",
            "activity-log",
            "list",
            "-g",
            "rg1",
            "--query",
            "[].operationName.value",
        ])
        .await;
    let events: Vec<String> = serde_json::from_value(events).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e == "Microsoft.Compute/virtualMachines/write"),
        "{events:?}"
    );
    let failed = cli
        .ok(&[
            "monitor",
            "activity-log",
            "list",
            "--status",
            "Failed",
            "--max-events",
            "5",
        ])
        .await;
    assert!(failed.is_array(), "{failed}");
    let signins = cli
        .ok(&["signin-log", "list", "--principal", "vm1", "--top", "10"])
        .await;
    assert!(
        !signins.as_array().unwrap().is_empty(),
        "token get signed vm1 in: {signins}"
    );
    assert_eq!(
        cli.ok(&["signin-log", "list", "--top", "1", "--query", "length(@)"])
            .await,
        json!(1)
    );

    // Usage errors are 2 (clap's, and a bad --query).
    assert_eq!(cli.run(&["group", "create"]).await.code, 2);
    assert_eq!(cli.run(&["group", "list", "--query", "[?"]).await.code, 2);
    assert_eq!(cli.run(&["group", "list", "-o", "yaml"]).await.code, 2);

    // A principal with no roles, through the AZURE_* variables: 403 is exit code 3.
    let (app_id, secret) = app_without_roles(&server).await;
    let home = tempfile::tempdir().unwrap();
    let outsider = Cli {
        data_dir: PathBuf::new(),
        env: vec![
            ("HOME".into(), home.path().display().to_string()),
            ("AZURE_TENANT_ID".into(), server.admin.tenant_id.to_string()),
            ("AZURE_CLIENT_ID".into(), app_id),
            ("AZURE_CLIENT_SECRET".into(), secret),
            (
                "AZURE_SUBSCRIPTION_ID".into(),
                server.admin.subscription_id.to_string(),
            ),
            ("LANYARD_ARM_URL".into(), server.url("localhost", "")),
            (
                "REQUESTS_CA_BUNDLE".into(),
                server.data_dir.join("ca.pem").display().to_string(),
            ),
            (
                "LANYARD_DOMAIN".into(),
                lanyard_testkit::server::TEST_DOMAIN.into(),
            ),
        ],
    };
    let out = run_without_data_dir(&outsider, &["group", "create", "-n", "rg9"]).await;
    out.fails(3, "AuthorizationFailed");
    let out = run_without_data_dir(
        &outsider,
        &[
            "access",
            "explain",
            "--assignee",
            &vm_principal,
            "--action",
            BLOB_READ,
            "--scope",
            &rg,
        ],
    )
    .await;
    out.fails(3, "AuthorizationFailed");
    // Names need Graph, which only the administrator reads; ARM shows this app nothing.
    let out = run_without_data_dir(
        &outsider,
        &[
            "access",
            "explain",
            "--assignee",
            "vm1",
            "--action",
            BLOB_READ,
            "--scope",
            &rg,
        ],
    )
    .await;
    out.fails(1, "no managed identity is named `vm1`");
}

/// Like [`Cli::run`], with no `LANYARD_DATA_DIR`: the `AZURE_*` variables decide.
async fn run_without_data_dir(cli: &Cli, args: &[&str]) -> Out {
    let mut cmd = lanyard();
    cmd.args(args);
    for (k, v) in &cli.env {
        cmd.env(k, v);
    }
    let out = tokio::process::Command::from(cmd)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `lanyard up` as a child process: its stdout up to the ready line.
struct Up {
    child: tokio::process::Child,
    printed: String,
}

async fn start_up(data_dir: &Path, port: u16) -> Up {
    let mut cmd = lanyard();
    cmd.args(["up", "--data-dir"])
        .arg(data_dir)
        .args(["--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if line.contains("Serving until Ctrl-C.") {
                return true;
            }
        }
        false
    };
    let ready = tokio::time::timeout(Duration::from_secs(180), read).await;
    assert!(
        matches!(ready, Ok(true)),
        "`lanyard up` did not get ready: {printed}"
    );
    Up { child, printed }
}

impl Up {
    /// The value of `export NAME=...` in the next steps.
    fn export(&self, name: &str) -> String {
        let prefix = format!("export {name}=");
        self.printed
            .lines()
            .find_map(|l| l.trim().strip_prefix(&prefix).map(str::to_string))
            .unwrap_or_else(|| panic!("no `{prefix}` in: {}", self.printed))
    }

    async fn stop(mut self) -> i32 {
        let pid = self.child.id().unwrap().to_string();
        let sent = tokio::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("`lanyard up` stops on Ctrl-C")
            .unwrap();
        status.code().unwrap_or(-1)
    }
}

/// An example under `lanyard run --as`, unchanged; its exit code and output.
async fn example(cli: &Cli, resource: &str, script: &str, env: &[(&str, String)]) -> Out {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(script);
    let py = python::python().unwrap();
    let mut args: Vec<String> = vec!["run".into(), "--as".into(), resource.into(), "--".into()];
    args.push(py.display().to_string());
    args.push(path.display().to_string());
    let mut with_env = Cli {
        data_dir: cli.data_dir.clone(),
        env: cli.env.clone(),
    };
    with_env
        .env
        .extend(env.iter().map(|(k, v)| ((*k).to_string(), v.clone())));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    with_env.run(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_builds_the_articles_scenario_and_rbac_decides_what_the_examples_get() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let port = free_port();
    let up = start_up(&data_dir, port).await;
    for part in [
        "resource group",
        "vm1",
        "shared-identity",
        "web1, web2",
        "demo-vault",
        "demostore",
        "Try next",
    ] {
        assert!(
            up.printed.contains(part),
            "`{part}` missing from: {}",
            up.printed
        );
    }
    let cli = Cli::new(&data_dir);

    // What up built, as the CLI sees it.
    let groups = cli.ok(&["group", "list", "--query", "[].name"]).await;
    assert_eq!(groups, json!(["demo"]));
    let vm = cli
        .ok(&["vm", "identity", "show", "-g", "demo", "-n", "vm1"])
        .await;
    let vm_principal = vm["systemAssignedIdentity"].as_str().unwrap().to_string();
    assert!(!vm_principal.is_empty());
    let shared = cli
        .ok(&["identity", "show", "-g", "demo", "-n", "shared-identity"])
        .await;
    for app in ["web1", "web2"] {
        let id = cli
            .ok(&["webapp", "identity", "show", "-g", "demo", "-n", app])
            .await;
        assert_eq!(id["type"], "UserAssigned", "{id}");
        assert!(id["userAssignedIdentities"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.ends_with("/shared-identity")));
    }
    let vault = cli.ok(&["keyvault", "show", "-n", "demo-vault"]).await;
    assert_eq!(vault["properties"]["enableRbacAuthorization"], true);
    let vm_roles = cli
        .ok(&[
            "role",
            "assignment",
            "list",
            "--assignee",
            &vm_principal,
            "--all",
            "--query",
            "[].[roleDefinitionName, scope]",
        ])
        .await;
    assert_eq!(vm_roles, json!([["Key Vault Secrets User", vault["id"]]]));
    let account = cli
        .ok(&["storage", "account", "show", "-n", "demostore"])
        .await;
    let shared_principal = shared["principalId"].as_str().unwrap();
    let shared_roles = cli
        .ok(&[
            "role",
            "assignment",
            "list",
            "--assignee",
            shared_principal,
            "--all",
            "--query",
            "[].[roleDefinitionName, scope]",
        ])
        .await;
    assert_eq!(
        shared_roles,
        json!([["Storage Blob Data Reader", account["id"]]])
    );
    let blobs = cli
        .ok(&[
            "storage",
            "blob",
            "list",
            "--account-name",
            "demostore",
            "-c",
            "reports",
            "--auth-mode",
            "login",
            "--query",
            "[].name",
        ])
        .await;
    assert_eq!(blobs, json!(["hello.txt"]));

    // The examples, unchanged, under run --as: RBAC decides.
    let urls = [
        ("KEY_VAULT_URL", up.export("KEY_VAULT_URL")),
        ("STORAGE_ACCOUNT_URL", up.export("STORAGE_ACCOUNT_URL")),
    ];
    let vm_secret = example(&cli, "vm1", "read_secret.py", &urls).await;
    assert_eq!(
        vm_secret.code, 0,
        "vm1 holds Key Vault Secrets User: {vm_secret:?}"
    );
    assert!(
        vm_secret.stdout.contains("read secret 'db-password'"),
        "{vm_secret:?}"
    );
    let web_blob = example(&cli, "web1", "read_blob.py", &urls).await;
    assert_eq!(
        web_blob.code, 0,
        "web1's shared identity holds Storage Blob Data Reader: {web_blob:?}"
    );
    assert!(
        web_blob.stdout.contains("Hello from a blob"),
        "{web_blob:?}"
    );
    let vm_blob = example(&cli, "vm1", "read_blob.py", &urls).await;
    assert_ne!(vm_blob.code, 0, "vm1 holds no storage role: {vm_blob:?}");
    assert!(
        vm_blob
            .stderr
            .contains("403 AuthorizationPermissionMismatch"),
        "{vm_blob:?}"
    );
    let web_secret = example(&cli, "web2", "read_secret.py", &urls).await;
    assert_ne!(
        web_secret.code, 0,
        "web2 holds no vault role: {web_secret:?}"
    );
    assert!(
        web_secret.stderr.contains("403 Forbidden"),
        "{web_secret:?}"
    );

    // Why vm1 may not read the blob, as the next steps suggest asking.
    let container = format!(
        "{}/blobServices/default/containers/reports",
        account["id"].as_str().unwrap()
    );
    let why = cli
        .run(&[
            "access",
            "explain",
            "--assignee",
            "vm1",
            "--action",
            BLOB_READ,
            "--scope",
            &container,
        ])
        .await;
    assert_eq!(why.code, 3, "{why:?}");
    let why = why.json();
    let text = why["explanation"].as_str().unwrap();
    assert!(text.starts_with("`vm1` may not perform"), "{text}");
    assert!(
        text.contains("Storage Blob Data Reader") && text.contains(&container),
        "{text}"
    );

    assert_eq!(up.stop().await, 0);

    // A second run finds the scenario and builds nothing new.
    let port = free_port();
    let again = start_up(&data_dir, port).await;
    assert!(!again.printed.contains("First run"), "{}", again.printed);
    assert!(again.printed.contains("Try next"), "{}", again.printed);
    let cli = Cli::new(&data_dir);
    assert_eq!(
        cli.ok(&["vm", "list", "--query", "length(@)"]).await,
        json!(1)
    );
    assert_eq!(again.stop().await, 0);
}
