//! `lanyard identity ...`, as `az identity`: user-assigned identities and their federated
//! identity credentials.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::{execute, group_of, location_or_group, tags, Done, Global};
use crate::api::present::{each, flattened};
use crate::api::resources::{self, Ids, IDENTITY};

#[derive(Args, Debug)]
pub struct IdentityArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: IdentityCommand,
}

/// `-g` and `-n`, or `--ids`.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Resource group.
    #[arg(short = 'g', long = "resource-group")]
    pub group: Option<String>,
    /// Name of the identity.
    #[arg(short = 'n', long, required_unless_present = "ids")]
    pub name: Option<String>,
    /// The identity's resource id (instead of -g and -n).
    #[arg(long, conflicts_with_all = ["group", "name"])]
    pub ids: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum IdentityCommand {
    /// Create a user-assigned identity.
    Create {
        #[arg(short = 'g', long = "resource-group")]
        group: String,
        #[arg(short = 'n', long)]
        name: String,
        /// Default: the resource group's location.
        #[arg(short = 'l', long)]
        location: Option<String>,
        #[arg(long, num_args = 0..)]
        tags: Vec<String>,
    },
    /// Show a user-assigned identity.
    Show(Target),
    /// List user-assigned identities in a resource group or the subscription.
    List {
        #[arg(short = 'g', long = "resource-group")]
        group: Option<String>,
    },
    /// Delete a user-assigned identity (its role assignments go with it).
    Delete(Target),
    /// Federated identity credentials of a user-assigned identity.
    #[command(subcommand)]
    FederatedCredential(CredentialCommand),
}

#[derive(Subcommand, Debug)]
pub enum CredentialCommand {
    /// Trust tokens from an external issuer for this identity.
    Create {
        #[arg(short = 'g', long = "resource-group")]
        group: String,
        #[arg(long = "identity-name")]
        identity: String,
        #[arg(short = 'n', long)]
        name: String,
        /// The external issuer (`iss` of its tokens).
        #[arg(long)]
        issuer: String,
        /// The external workload (`sub` of its tokens).
        #[arg(long)]
        subject: String,
        #[arg(long, num_args = 1.., default_value = "api://AzureADTokenExchange")]
        audiences: Vec<String>,
    },
    /// Show one federated credential.
    Show {
        #[arg(short = 'g', long = "resource-group")]
        group: String,
        #[arg(long = "identity-name")]
        identity: String,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// List an identity's federated credentials.
    List {
        #[arg(short = 'g', long = "resource-group")]
        group: String,
        #[arg(long = "identity-name")]
        identity: String,
    },
    /// Delete a federated credential.
    Delete {
        #[arg(short = 'g', long = "resource-group")]
        group: String,
        #[arg(long = "identity-name")]
        identity: String,
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

impl Target {
    fn id(&self, ids: &Ids<'_>) -> anyhow::Result<lanyard_domain::ResourceId> {
        match (&self.ids, &self.name) {
            (Some(id), _) => ids.resource_or_name(IDENTITY, None, id),
            (None, Some(name)) => {
                ids.resource_or_name(IDENTITY, Some(group_of(&self.group)?), name)
            }
            (None, None) => anyhow::bail!("give --ids, or -g and -n"),
        }
    }
}

pub fn run(args: IdentityArgs) -> anyhow::Result<ExitCode> {
    execute(&args.global, async move |conn| {
        let ids = Ids::of(conn);
        let value = match args.command {
            IdentityCommand::Create {
                group,
                name,
                location,
                tags: t,
            } => {
                let location = location_or_group(conn, &location, &group).await?;
                flattened(
                    resources::create_identity(conn, &group, &name, &location, &tags(&t)).await?,
                )
            }
            IdentityCommand::Show(target) => {
                flattened(resources::get(conn, IDENTITY, &target.id(&ids)?).await?)
            }
            IdentityCommand::List { group } => each(
                resources::list(conn, IDENTITY, group.as_deref()).await?,
                flattened,
            ),
            IdentityCommand::Delete(target) => {
                resources::delete(conn, IDENTITY, &target.id(&ids)?).await?;
                Value::Null
            }
            IdentityCommand::FederatedCredential(command) => {
                credential(conn, &ids, command).await?
            }
        };
        Ok(Done::from(value))
    })
}

async fn credential(
    conn: &crate::client::Connection,
    ids: &Ids<'_>,
    command: CredentialCommand,
) -> anyhow::Result<Value> {
    Ok(match command {
        CredentialCommand::Create {
            group,
            identity,
            name,
            issuer,
            subject,
            audiences,
        } => {
            let parent = ids.resource(IDENTITY, &group, &identity);
            flattened(
                resources::put_credential(conn, &parent, &name, &issuer, &subject, &audiences)
                    .await?,
            )
        }
        CredentialCommand::Show {
            group,
            identity,
            name,
        } => {
            let parent = ids.resource(IDENTITY, &group, &identity);
            let id = resources::credential_id(&parent, &name);
            flattened(resources::get(conn, IDENTITY, &id).await?)
        }
        CredentialCommand::List { group, identity } => {
            let parent = ids.resource(IDENTITY, &group, &identity);
            each(resources::list_credentials(conn, &parent).await?, flattened)
        }
        CredentialCommand::Delete {
            group,
            identity,
            name,
            ..
        } => {
            let parent = ids.resource(IDENTITY, &group, &identity);
            resources::delete(conn, IDENTITY, &resources::credential_id(&parent, &name)).await?;
            Value::Null
        }
    })
}
