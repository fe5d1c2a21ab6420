//! The `az`-shaped commands and Lanyard's own client commands. Each module parses its
//! arguments and calls [`crate::api`]; none touches the database: everything goes through
//! the server's public REST APIs as the administrator of the data directory (or the
//! principal in the `AZURE_*` variables).
//!
//! - [`group`], [`resource`] (`resource list`), [`identity`], [`compute`] (`vm`, `webapp`),
//!   [`role`], [`keyvault`], [`storage`], [`monitor`] (`monitor activity-log`,
//!   `signin-log`): as `az` names them.
//! - [`token`]: `token get --as`, a resource's token with its claims decoded.
//! - [`access`]: `access explain`, the authorization engine's verdict and reasons.
//! - [`up`]: the server and the articles' scenario in one command.
//!
//! Flags every command takes (`--data-dir`, `--subscription`, `-o/--output`, `--query`)
//! live in [`Global`]; [`execute`] connects, runs a handler and prints its answer.

pub mod access;
pub mod compute;
pub mod group;
pub mod identity;
pub mod keyvault;
pub mod monitor;
pub mod resource;
pub mod role;
pub mod storage;
pub mod token;
pub mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::Args;
use serde_json::Value;

use crate::api::resources::Ids;
use crate::api::{self, is_guid};
use crate::client::{Connection, EXIT_ACCESS_DENIED};
use crate::output::{Format, Output, Query, TableView};

/// Flags every client command takes.
#[derive(Args, Debug, Clone, Default)]
pub struct Global {
    /// Data directory holding the administrator credential (else the `AZURE_*` variables).
    #[arg(long, env = "LANYARD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Subscription id or name (default: the data directory's, or `AZURE_SUBSCRIPTION_ID`).
    #[arg(long, global = true)]
    pub subscription: Option<String>,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value_t
    )]
    pub output: Format,
    /// JMESPath query applied to the answer (see https://jmespath.org).
    #[arg(long, global = true, value_parser = Query::parse)]
    pub query: Option<Query>,
}

impl Global {
    pub fn output(&self) -> Output {
        Output {
            format: self.output,
            query: self.query.clone(),
        }
    }
}

/// What a handler produced: the answer to print, its table view, and the exit code.
pub struct Done {
    pub value: Value,
    pub table: Option<TableView>,
    pub exit: u8,
}

impl From<Value> for Done {
    fn from(value: Value) -> Self {
        Self {
            value,
            table: None,
            exit: 0,
        }
    }
}

impl Done {
    /// An answer that says access is denied (exit code 3).
    pub fn denied(value: Value) -> Self {
        Self {
            exit: EXIT_ACCESS_DENIED,
            ..Self::from(value)
        }
    }

    /// The answer with a view for `--output table`.
    pub fn with_table(self, table: TableView) -> Self {
        Self {
            table: Some(table),
            ..self
        }
    }
}

/// A connection as `global` asks for it.
pub async fn connect(global: &Global) -> anyhow::Result<Connection> {
    let mut conn = Connection::resolve(global.data_dir.as_deref())?;
    if let Some(sub) = &global.subscription {
        conn.subscription_id = if is_guid(sub) {
            sub.clone()
        } else {
            subscription_by_name(&conn, sub).await?
        };
    }
    Ok(conn)
}

async fn subscription_by_name(conn: &Connection, name: &str) -> anyhow::Result<String> {
    let subs = conn
        .arm_list("/subscriptions?api-version=2022-12-01")
        .await?;
    subs.iter()
        .find(|s| {
            s["displayName"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .and_then(|s| s["subscriptionId"].as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no subscription is named `{name}`"))
}

/// A runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Connects as `global` says, runs `handler`, prints its answer and returns its exit code.
pub fn execute(
    global: &Global,
    handler: impl AsyncFnOnce(&Connection) -> anyhow::Result<Done>,
) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let conn = connect(global).await?;
        let done = handler(&conn).await?;
        global.output().print(&done.value, done.table)?;
        Ok(ExitCode::from(done.exit))
    })
}

/// `-g` when given, as `az` requires it for most commands.
pub fn group_of(group: &Option<String>) -> anyhow::Result<&str> {
    group
        .as_deref()
        .ok_or_else(|| anyhow!("the following argument is required: --resource-group/-g"))
}

/// `-l`, or the resource group's location, as `az` defaults it.
pub async fn location_or_group(
    conn: &Connection,
    location: &Option<String>,
    group: &str,
) -> anyhow::Result<String> {
    if let Some(l) = location {
        return Ok(l.clone());
    }
    let g = api::resources::get_group(conn, group).await?;
    Ok(g["location"].as_str().unwrap_or("local").to_string())
}

/// `--tags k=v k2=v2` as an object.
pub fn tags(pairs: &[String]) -> Value {
    let map: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), Value::String(v.to_string())),
            None => (p.to_string(), Value::String(String::new())),
        })
        .collect();
    Value::Object(map)
}

/// The scope `--scope` names, or `-g`'s group, or the subscription.
pub fn scope_of(conn: &Connection, scope: &Option<String>, group: &Option<String>) -> String {
    match (scope, group) {
        (Some(s), _) => s.trim_end_matches('/').to_string(),
        (None, Some(g)) => Ids::of(conn).group(g).as_str().to_string(),
        (None, None) => Ids::of(conn).subscription().as_str().to_string(),
    }
}
