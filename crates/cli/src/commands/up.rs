//! `lanyard up`: the server on the embedded default (the same path as `lanyard serve`, in
//! this process) and, on first run, the scenario of the managed-identity articles, built
//! through the public REST APIs with the same calls as the CLI commands:
//!
//! - resource group `demo`;
//! - VM `vm1` with a system-assigned identity;
//! - user-assigned identity `shared-identity`, assigned to web apps `web1` and `web2`;
//! - Key Vault `demo-vault` (RBAC) holding secret `db-password`; `vm1`'s identity holds
//!   Key Vault Secrets User on the vault;
//! - storage account `demostore` with container `reports` and blob `hello.txt`;
//!   `shared-identity` holds Storage Blob Data Reader on the account.
//!
//! The administrator gives itself Key Vault Secrets Officer and Storage Blob Data
//! Contributor on the two resources to write the secret and the blob, as one must in Azure
//! (Owner grants no data actions). Then it prints what to try next and serves until Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;
use lanyard_server::{shutdown_signal, telemetry, Server};
use serde_json::{json, Value};

use crate::api::blobs::Account;
use crate::api::rbac::{self, Principal};
use crate::api::resources::{self, Ids, VaultSettings, ACCOUNT, VAULT};
use crate::api::secrets::Vault;
use crate::api::workloads::{self, Identities};
use crate::client::{Connection, MANAGEMENT_SCOPE};
use crate::serve::ServerArgs;

pub const GROUP: &str = "demo";
pub const LOCATION: &str = "local";
pub const VM_NAME: &str = "vm1";
pub const SHARED_IDENTITY: &str = "shared-identity";
pub const WEB_APPS: [&str; 2] = ["web1", "web2"];
pub const VAULT_NAME: &str = "demo-vault";
pub const SECRET_NAME: &str = "db-password";
pub const ACCOUNT_NAME: &str = "demostore";
pub const CONTAINER: &str = "reports";
pub const BLOB_NAME: &str = "hello.txt";

/// The line that ends the next steps; tests wait for it.
pub const READY_LINE: &str = "Serving until Ctrl-C.";

const BLOB_ACTION: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read";

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Only serve; do not build the example scenario.
    #[arg(long)]
    pub no_scenario: bool,
}

pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let config = args.server.resolve()?;
    telemetry::init(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = Server::bind(&config).await?;
        let port = listener.local_addr()?.port();
        let server = Server::prepare(config, Arc::new(lanyard_domain::SystemClock)).await?;
        let root = server.data_dir().root().to_path_buf();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(listener, async move {
            tokio::select! {
                () = shutdown_signal() => {}
                _ = stopped => {}
            }
        }));
        let outcome = prepare(&root, port, !args.no_scenario).await;
        if let Err(e) = outcome {
            let _ = stop.send(());
            let _ = serving.await;
            return Err(e);
        }
        serving.await.context("the server task failed")??;
        drop(stop);
        Ok(ExitCode::SUCCESS)
    })
}

/// Waits for the server, builds the scenario on first run, prints the next steps.
async fn prepare(root: &Path, port: u16, scenario: bool) -> anyhow::Result<()> {
    let conn = connect(root, port).await?;
    let groups = resources::list_groups(&conn).await?;
    let built = if !scenario {
        false
    } else if groups.is_empty() {
        println!("First run: building the example scenario through the REST API.");
        build(&conn)
            .await
            .context("building the example scenario")?;
        true
    } else {
        let has_demo = groups.iter().any(|g| {
            g["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(GROUP))
        });
        if !has_demo {
            println!("The data directory already holds resources; the example scenario is built only on first run.");
        }
        has_demo
    };
    println!();
    println!(
        "Lanyard is serving on {} (data directory {}).",
        conn.base,
        root.display()
    );
    if built {
        print_next_steps(&conn, root);
    }
    println!("{READY_LINE}");
    Ok(())
}

/// A connection once the server answers (its `endpoints.json` is written as it starts).
async fn connect(root: &Path, port: u16) -> anyhow::Result<Connection> {
    let mut last = anyhow!("the server did not start");
    for _ in 0..300 {
        match Connection::from_data_dir(root) {
            Ok(conn) if conn.port() == port => match conn.token(MANAGEMENT_SCOPE).await {
                Ok(_) => return Ok(conn),
                Err(e) => last = e,
            },
            Ok(_) => {}
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.context("waiting for the server"))
}

fn step(what: &str, detail: &str) {
    println!("  {what:<18} {detail}");
}

fn principal(object_id: &Value, name: &str) -> anyhow::Result<Principal> {
    Ok(Principal {
        object_id: object_id
            .as_str()
            .ok_or_else(|| anyhow!("`{name}` has no principal id"))?
            .to_string(),
        principal_type: Some("ServicePrincipal".into()),
    })
}

/// The scenario, step by step, through the REST API.
async fn build(conn: &Connection) -> anyhow::Result<()> {
    let ids = Ids::of(conn);
    let no_tags = json!({});
    resources::put_group(conn, GROUP, LOCATION, &no_tags)
        .await
        .context("creating the resource group")?;
    step("resource group", GROUP);

    let vm = workloads::create(
        conn,
        resources::VM,
        GROUP,
        VM_NAME,
        LOCATION,
        json!({}),
        Some(&Identities::system()),
        &no_tags,
    )
    .await
    .context("creating the VM")?;
    let vm_principal = principal(&vm["identity"]["principalId"], VM_NAME)?;
    step(
        "virtual machine",
        &format!(
            "{VM_NAME}, system-assigned identity {}",
            vm_principal.object_id
        ),
    );

    let shared = resources::create_identity(conn, GROUP, SHARED_IDENTITY, LOCATION, &no_tags)
        .await
        .context("creating the shared identity")?;
    let shared_principal = principal(&shared["properties"]["principalId"], SHARED_IDENTITY)?;
    step(
        "identity",
        &format!(
            "{SHARED_IDENTITY}, client id {}",
            shared["properties"]["clientId"].as_str().unwrap_or("?")
        ),
    );
    let shared_id = shared["id"].as_str().unwrap_or_default().to_string();
    for app in WEB_APPS {
        let shared = Identities {
            system: false,
            user: vec![shared_id.clone()],
        };
        workloads::create(
            conn,
            resources::WEBAPP,
            GROUP,
            app,
            LOCATION,
            json!({}),
            Some(&shared),
            &no_tags,
        )
        .await
        .with_context(|| format!("creating web app `{app}`"))?;
    }
    step(
        "web apps",
        &format!("{}, sharing {SHARED_IDENTITY}", WEB_APPS.join(", ")),
    );

    let me = Principal {
        object_id: conn.caller_object_id().await?,
        principal_type: Some("ServicePrincipal".into()),
    };
    resources::create_vault(
        conn,
        GROUP,
        VAULT_NAME,
        LOCATION,
        &VaultSettings::default(),
        &no_tags,
    )
    .await
    .context("creating the key vault")?;
    let vault_scope = ids.resource(VAULT, GROUP, VAULT_NAME).as_str().to_string();
    rbac::grant(conn, &me, "Key Vault Secrets Officer", &vault_scope).await?;
    let vault = Vault::new(conn, VAULT_NAME);
    let value = format!("demo-{}", uuid::Uuid::new_v4().simple());
    vault
        .set(SECRET_NAME, &value, Some("text/plain"), &no_tags)
        .await
        .context("setting the secret")?;
    step(
        "key vault",
        &format!("{VAULT_NAME} (RBAC), secret {SECRET_NAME}"),
    );
    rbac::grant(conn, &vm_principal, "Key Vault Secrets User", &vault_scope).await?;
    step(
        "role",
        &format!("Key Vault Secrets User for {VM_NAME} on {VAULT_NAME}"),
    );

    resources::create_account(
        conn,
        GROUP,
        ACCOUNT_NAME,
        LOCATION,
        "Standard_LRS",
        "StorageV2",
        &no_tags,
    )
    .await
    .context("creating the storage account")?;
    let account_scope = ids
        .resource(ACCOUNT, GROUP, ACCOUNT_NAME)
        .as_str()
        .to_string();
    rbac::grant(conn, &me, "Storage Blob Data Contributor", &account_scope).await?;
    let account = Account::new(conn, ACCOUNT_NAME);
    account
        .create_container(CONTAINER)
        .await
        .context("creating the container")?;
    account
        .upload(
            CONTAINER,
            BLOB_NAME,
            b"Hello from a blob that only the shared identity may read.\n".to_vec(),
            Some("text/plain"),
            true,
        )
        .await
        .context("uploading the sample blob")?;
    step(
        "storage account",
        &format!("{ACCOUNT_NAME}, blob {CONTAINER}/{BLOB_NAME}"),
    );
    rbac::grant(
        conn,
        &shared_principal,
        "Storage Blob Data Reader",
        &account_scope,
    )
    .await?;
    step(
        "role",
        &format!("Storage Blob Data Reader for {SHARED_IDENTITY} on {ACCOUNT_NAME}"),
    );
    Ok(())
}

/// How to run this program again from the current directory: `lanyard` when that is what
/// the PATH finds, else its path.
fn self_name() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "lanyard".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|p| {
            std::fs::canonicalize(p.join("lanyard")).ok() == std::fs::canonicalize(&exe).ok()
        })
    });
    if on_path {
        return "lanyard".into();
    }
    let shown: PathBuf = std::env::current_dir()
        .ok()
        .and_then(|cwd| exe.strip_prefix(&cwd).ok().map(|p| Path::new(".").join(p)))
        .unwrap_or(exe);
    shown.display().to_string()
}

fn print_next_steps(conn: &Connection, root: &Path) {
    let me = self_name();
    let container_scope = format!(
        "{}/blobServices/default/containers/{CONTAINER}",
        Ids::of(conn)
            .resource(ACCOUNT, GROUP, ACCOUNT_NAME)
            .as_str()
    );
    let default_root = lanyard_server::config::default_data_dir();
    println!();
    println!(
        "Try next, in another shell (the examples need the packages in examples/requirements.txt):"
    );
    println!();
    if std::fs::canonicalize(root).ok() != std::fs::canonicalize(&default_root).ok() {
        println!("  export LANYARD_DATA_DIR={}", root.display());
    }
    println!("  export KEY_VAULT_URL={}", conn.vault_url(VAULT_NAME));
    println!(
        "  export STORAGE_ACCOUNT_URL={}",
        conn.blob_url(ACCOUNT_NAME)
    );
    println!();
    println!("  {me} run --as {VM_NAME} -- python examples/read_secret.py    # allowed: Key Vault Secrets User");
    println!("  {me} run --as {} -- python examples/read_blob.py     # allowed: Storage Blob Data Reader", WEB_APPS[0]);
    println!("  {me} run --as {VM_NAME} -- python examples/read_blob.py      # denied: 403 AuthorizationPermissionMismatch");
    println!("  {me} access explain --assignee {VM_NAME} --action {BLOB_ACTION} --scope {container_scope}");
    println!(
        "  {me} token get --as {} --resource https://storage.azure.com",
        WEB_APPS[1]
    );
    println!("  {me} role assignment list --all -o table");
    println!();
}
