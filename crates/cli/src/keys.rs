//! `lanyard keys rotate`: asks the running server to make a new signing key current now.
//!
//! Finds the server through `{data-dir}/endpoints.json`, trusts `{data-dir}/ca.pem`, gets a
//! token for the management audience with the administrator's credential
//! (`{data-dir}/admin.json`, client-credentials grant), then calls
//! `POST https://login.{domain}:{port}/lanyard/keys/rotate` and prints the new current `kid`.
//! The old key stays published until the tokens it signed have expired.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use lanyard_server::bootstrap::{read_admin, read_endpoints};
use lanyard_server::config::default_data_dir;
use lanyard_server::datadir::DataDir;
use serde_json::Value;

use crate::client::ServiceError;

#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Make a new token-signing key current now and print its kid.
    Rotate(RotateArgs),
}

#[derive(Args, Debug)]
pub struct RotateArgs {
    /// Data directory of the running server.
    #[arg(long, env = "LANYARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The management audience the rotation endpoint accepts (`R/.default` with `R` ending in `/`).
const MANAGEMENT_SCOPE: &str = "https://management.azure.com//.default";

pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Rotate(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let kid = runtime.block_on(rotate(args.data_dir.unwrap_or_else(default_data_dir)))?;
            println!("{kid}");
            Ok(())
        }
    }
}

async fn rotate(root: PathBuf) -> anyhow::Result<String> {
    let dir = DataDir::existing(&root)?;
    let admin = read_admin(&dir)?;
    let endpoints = read_endpoints(&dir)?;
    let ca_path = PathBuf::from(&endpoints.ca_file);
    let ca_path = if ca_path.is_file() {
        ca_path
    } else {
        dir.ca_cert()
    };
    let pem = std::fs::read(&ca_path)
        .with_context(|| format!("cannot read the CA certificate `{}`", ca_path.display()))?;
    let host = format!("login.{}", endpoints.domain);
    let base = format!("https://{host}:{}", endpoints.port);
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
        // The login host is the server itself; no name resolution is needed for it.
        .resolve(&host, SocketAddr::from(([127, 0, 0, 1], endpoints.port)))
        .timeout(Duration::from_secs(60))
        .build()?;

    let token_url = format!("{base}/{}/oauth2/v2.0/token", admin.tenant_id);
    let client_id = admin.client_id.to_string();
    let response = client
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("client_secret", admin.client_secret.as_str()),
            ("scope", MANAGEMENT_SCOPE),
        ])
        .send()
        .await
        .with_context(|| {
            format!("cannot reach the server at {base} (is `lanyard serve` running?)")
        })?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let reason = body["error_description"]
            .as_str()
            .unwrap_or("no description")
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        return Err(ServiceError {
            status: status.as_u16(),
            code: body["error"].as_str().unwrap_or("error").to_string(),
            message: format!("the administrator credential was refused: {reason}"),
        }
        .into());
    }
    let token = body["access_token"]
        .as_str()
        .ok_or_else(|| anyhow!("the token endpoint answered without an access token"))?;

    let response = client
        .post(format!("{base}/lanyard/keys/rotate"))
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {base}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        // A 403 becomes exit code 3 (`client::exit_code`).
        return Err(ServiceError {
            status: status.as_u16(),
            code: body["error"]["code"]
                .as_str()
                .unwrap_or("error")
                .to_string(),
            message: body["error"]["message"]
                .as_str()
                .unwrap_or("key rotation failed")
                .to_string(),
        }
        .into());
    }
    body["kid"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("the server answered without a kid"))
}
