//! `lanyard token get --as RESOURCE --resource R`: what a process running as RESOURCE would
//! get. Opens a session for the resource (as `run --as` does), asks its identity endpoint
//! for a token over the App Service protocol, ends the session, and prints the token's
//! claims. The claims are decoded for reading only; nothing here checks or skips a
//! signature, and the token itself is not printed.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use super::{execute, Done, Global};
use crate::client::{Connection, ServiceError};
use crate::jwt;

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Get a resource's token and print its claims.
    Get {
        /// The resource whose identity asks: a VM, scale set, web app or container app, by
        /// name or resource id.
        #[arg(long = "as", value_name = "RESOURCE")]
        resource: String,
        /// The audience, e.g. `https://vault.azure.net` or `https://storage.azure.com`.
        #[arg(
            long = "resource",
            value_name = "AUDIENCE",
            default_value = "https://management.azure.com/"
        )]
        audience: String,
        /// A user-assigned identity by client id (default: the system identity, or the
        /// only user-assigned one).
        #[arg(long, conflicts_with = "mi_res_id")]
        client_id: Option<String>,
        /// A user-assigned identity by resource id.
        #[arg(long)]
        mi_res_id: Option<String>,
    },
}

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    execute(&args.global, async move |conn| {
        let TokenCommand::Get {
            resource,
            audience,
            client_id,
            mi_res_id,
        } = args.command;
        let selector = match (client_id, mi_res_id) {
            (Some(c), _) => Some(("client_id", c)),
            (None, Some(m)) => Some(("mi_res_id", m)),
            (None, None) => None,
        };
        let token = token_as(conn, &resource, &audience, selector).await?;
        Ok(Done::from(jwt::claims(&token)?))
    })
}

/// A token for `audience` from `resource`'s identity endpoint, through a short session.
pub async fn token_as(
    conn: &Connection,
    resource: &str,
    audience: &str,
    selector: Option<(&str, String)>,
) -> anyhow::Result<String> {
    let session = conn
        .arm(
            Method::POST,
            "/lanyard/sessions",
            Some(&json!({ "resource": resource })),
        )
        .await?;
    let field = |name: &str| {
        session[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the session response has no `{name}`"))
    };
    let id = field("id")?;
    let result = ask(
        &field("identityEndpoint")?,
        &field("identityHeader")?,
        audience,
        selector,
    )
    .await;
    if let Err(e) = conn
        .arm(
            Method::DELETE,
            &format!("/lanyard/sessions/{id}"),
            None::<&Value>,
        )
        .await
    {
        eprintln!("warning: could not end the session (it expires by itself): {e}");
    }
    result
}

async fn ask(
    endpoint: &str,
    secret: &str,
    audience: &str,
    selector: Option<(&str, String)>,
) -> anyhow::Result<String> {
    // The identity endpoint is plain HTTP on loopback, as on App Service.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut query = vec![
        ("api-version", "2019-08-01".to_string()),
        ("resource", audience.to_string()),
    ];
    if let Some((k, v)) = selector {
        query.push((k, v));
    }
    let response = http
        .get(endpoint)
        .query(&query)
        .header("X-IDENTITY-HEADER", secret)
        .send()
        .await
        .with_context(|| format!("cannot reach the identity endpoint {endpoint}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await?.to_vec();
    if !(200..300).contains(&status) {
        return Err(ServiceError::from_reply(status, &headers, &body).into());
    }
    let json: Value =
        serde_json::from_slice(&body).context("the identity endpoint's answer is not JSON")?;
    json["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("the identity endpoint answered without an access_token"))
}
