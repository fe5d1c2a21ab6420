//! `lanyard group create|show|list|delete`, as `az group`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::{execute, tags, Done, Global};
use crate::api::present::{each, with_resource_group};
use crate::api::resources;

#[derive(Args, Debug)]
pub struct GroupArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: GroupCommand,
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Create a resource group (or update its tags).
    Create {
        #[arg(
            short = 'n',
            long = "name",
            visible_alias = "resource-group",
            short_alias = 'g'
        )]
        name: String,
        #[arg(short = 'l', long, default_value = "local")]
        location: String,
        /// Space-separated tags: key[=value].
        #[arg(long, num_args = 0..)]
        tags: Vec<String>,
    },
    /// Show a resource group.
    Show {
        #[arg(
            short = 'n',
            long = "name",
            visible_alias = "resource-group",
            short_alias = 'g'
        )]
        name: String,
    },
    /// List the subscription's resource groups.
    List,
    /// Delete a resource group and everything in it.
    Delete {
        #[arg(
            short = 'n',
            long = "name",
            visible_alias = "resource-group",
            short_alias = 'g'
        )]
        name: String,
        /// Accepted for `az` compatibility; no prompt is ever shown.
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

pub fn run(args: GroupArgs) -> anyhow::Result<ExitCode> {
    execute(&args.global, async move |conn| {
        let value = match args.command {
            GroupCommand::Create {
                name,
                location,
                tags: t,
            } => resources::put_group(conn, &name, &location, &tags(&t)).await?,
            GroupCommand::Show { name } => resources::get_group(conn, &name).await?,
            GroupCommand::List => each(resources::list_groups(conn).await?, with_resource_group),
            GroupCommand::Delete { name, .. } => {
                resources::delete_group(conn, &name).await?;
                Value::Null
            }
        };
        Ok(Done::from(value).with_table(table))
    })
}

/// `az group list -o table`: name, location, status.
fn table(value: &Value) -> Vec<Vec<(&'static str, Value)>> {
    let row = |g: &Value| {
        vec![
            ("name", g["name"].clone()),
            ("location", g["location"].clone()),
            ("status", g["properties"]["provisioningState"].clone()),
        ]
    };
    match value {
        Value::Array(items) => items.iter().map(row).collect(),
        one => vec![row(one)],
    }
}
