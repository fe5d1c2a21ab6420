//! `lanyard run --as RESOURCE -- COMMAND [ARGS]`: runs a process as a resource, so that
//! `DefaultAzureCredential` and `ManagedIdentityCredential` get that resource's identity.
//!
//! The process sees only the resource's identity: credentials it would otherwise inherit
//! (`AZURE_CLIENT_SECRET`, a certificate, a federated token file, a user name and password)
//! are removed, so no SDK can silently fall back to them. The session is renewed while the
//! process runs and ended when it exits; the exit code is passed through.
//!
//! The session is opened by this process, so the server serves its identity endpoints to this
//! process and its descendants only (the command, and whatever it starts). The server ends a
//! session early when the caller loses write on the resource or the resource is deleted;
//! renewing then answers 4xx, and the command is told once on stderr (it keeps running, and
//! gets no more tokens).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;
use serde_json::{json, Value};

use crate::client::Connection;

/// Variables that would let a process authenticate as someone else.
const INHERITED_CREDENTIALS: &[&str] = &[
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_TOKEN_CREDENTIALS",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
    "IDENTITY_SERVER_THUMBPRINT",
];

/// How often the session is renewed (it lives 90 s without renewal).
const RENEW_EVERY: Duration = Duration::from_secs(30);

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The resource to run as: its resource id, or the name of a VM, scale set, web app or
    /// container app in the subscription.
    #[arg(long = "as", value_name = "RESOURCE")]
    pub resource: String,
    /// Data directory holding the administrator credential (else the `AZURE_*` variables).
    #[arg(long, env = "LANYARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// How the command resolves vault and storage host names: `auto` gives it a private
    /// hosts file (in its own mount namespace, with `unshare`) when they do not resolve to
    /// the server already; `private` always does; `system` never does.
    #[arg(long, value_enum, default_value_t)]
    pub resolve: crate::private_hosts::Resolve,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> anyhow::Result<ExitCode> {
    let conn = Connection::resolve(args.data_dir.as_deref())?;
    let session = conn
        .arm(
            reqwest::Method::POST,
            "/lanyard/sessions",
            Some(&json!({ "resource": args.resource })),
        )
        .await?;
    let field = |name: &str| {
        session[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the session response has no `{name}`"))
    };
    let id = field("id")?;
    let identity_endpoint = field("identityEndpoint")?;
    let identity_header = field("identityHeader")?;
    let imds = field("imdsEndpoint")?;

    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| anyhow!("no command given"))?;
    // Lives until the command exits: the private hosts file goes with it.
    let hosts = crate::private_hosts::prepare(&conn, args.resolve).await;
    let hosts = match hosts {
        Ok(h) => h,
        Err(e) => {
            end_session(&conn, &id).await;
            return Err(e);
        }
    };
    let mut command = match &hosts {
        Some(h) => h.command(program, rest),
        None => {
            let mut c = tokio::process::Command::new(program);
            c.args(rest);
            c
        }
    };
    for name in INHERITED_CREDENTIALS {
        command.env_remove(name);
    }
    let ca = conn.ca_file.display().to_string();
    command
        .env("IDENTITY_ENDPOINT", &identity_endpoint)
        .env("IDENTITY_HEADER", &identity_header)
        .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", &imds)
        .env(
            "MSAL_MANAGED_IDENTITY_ENDPOINT",
            format!("{imds}/metadata/identity/oauth2/token"),
        )
        .env("AZURE_AUTHORITY_HOST", &conn.base)
        .env("AZURE_TENANT_ID", &conn.tenant_id)
        .env("REQUESTS_CA_BUNDLE", &ca)
        .env("SSL_CERT_FILE", &ca)
        .env("NODE_EXTRA_CA_CERTS", &ca);
    if !conn.subscription_id.is_empty() {
        command.env("AZURE_SUBSCRIPTION_ID", &conn.subscription_id);
    }

    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            end_session(&conn, &id).await;
            return Err(anyhow!("cannot run `{program}`: {e}"));
        }
    };
    let renew_path = format!("/lanyard/sessions/{id}/renew");
    let mut ended = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            () = tokio::time::sleep(RENEW_EVERY), if !ended => {
                if let Err(e) = conn.arm(reqwest::Method::POST, &renew_path, None).await {
                    ended = session_is_over(&e);
                    if ended {
                        eprintln!("warning: the session has ended, `{program}` gets no more tokens: {e}");
                    } else {
                        eprintln!("warning: could not renew the session: {e}");
                    }
                }
            }
        }
    };
    if !ended {
        end_session(&conn, &id).await;
    }
    let status = status.context("waiting for the command")?;
    Ok(ExitCode::from(exit_status_code(status)))
}

/// Whether a renewal's failure means the server ended the session (403: the caller lost
/// write on the resource; 404: the resource was deleted, or the session expired), rather
/// than a failure worth retrying (the network, the server, the caller's own token).
fn session_is_over(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<crate::client::ServiceError>()
        .is_some_and(|e| e.status == 403 || e.status == 404)
}

async fn end_session(conn: &Connection, id: &str) {
    let path = format!("/lanyard/sessions/{id}");
    if let Err(e) = conn
        .arm(reqwest::Method::DELETE, &path, None::<&Value>)
        .await
    {
        eprintln!("warning: could not end the session (it expires by itself): {e}");
    }
}

/// The child's exit code, or 128 + signal number when a signal ended it, as shells report.
fn exit_status_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(sig)) => u8::try_from((128 + sig) & 0xff).unwrap_or(1),
        _ => 1,
    }
}
