//! `lanyard storage ...`, as `az storage`: accounts through the control plane; containers
//! and blobs through the account's blob host with OAuth (`--auth-mode login`; this server
//! holds no account keys).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::{execute, location_or_group, tags, Done, Global};
use crate::api::blobs::Account;
use crate::api::present::{each, with_resource_group};
use crate::api::resources::{self, ACCOUNT};
use crate::client::Connection;

#[derive(Args, Debug)]
pub struct StorageArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: StorageCommand,
}

#[derive(Subcommand, Debug)]
pub enum StorageCommand {
    /// Storage accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Blob containers.
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Blobs.
    #[command(subcommand)]
    Blob(BlobCommand),
}

#[derive(Subcommand, Debug)]
pub enum AccountCommand {
    /// Create a storage account.
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        group: String,
        /// Default: the resource group's location.
        #[arg(short = 'l', long)]
        location: Option<String>,
        #[arg(long, default_value = "Standard_LRS")]
        sku: String,
        #[arg(long, default_value = "StorageV2")]
        kind: String,
        #[arg(long, num_args = 0..)]
        tags: Vec<String>,
    },
    /// Show a storage account.
    Show {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        group: Option<String>,
    },
    /// List storage accounts.
    List {
        #[arg(short = 'g', long = "resource-group")]
        group: Option<String>,
    },
    /// Delete a storage account with its containers and blobs.
    Delete {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        group: Option<String>,
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

/// How data-plane calls authenticate.
#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// A token for the signed-in principal (the only mode here).
    #[default]
    Login,
    /// Account keys, which this server does not have.
    Key,
}

/// `--account-name` and `--auth-mode`.
#[derive(Args, Debug, Clone)]
pub struct AccountRef {
    #[arg(long = "account-name")]
    pub account: String,
    #[arg(long = "auth-mode", value_enum, default_value_t)]
    pub auth_mode: AuthMode,
}

impl AccountRef {
    fn open<'a>(&self, conn: &'a Connection) -> anyhow::Result<Account<'a>> {
        if self.auth_mode == AuthMode::Key {
            bail!("this server holds no account keys: use --auth-mode login");
        }
        Ok(Account::new(conn, &self.account))
    }
}

#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// Create a container.
    Create {
        #[command(flatten)]
        account: AccountRef,
        #[arg(short = 'n', long)]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum BlobCommand {
    /// Upload a file (or `--data`) as a block blob.
    Upload {
        #[command(flatten)]
        account: AccountRef,
        #[arg(short = 'c', long = "container-name")]
        container: String,
        /// Blob name (default: the file's name).
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(
            short = 'f',
            long,
            required_unless_present = "data",
            conflicts_with = "data"
        )]
        file: Option<PathBuf>,
        /// The content, inline.
        #[arg(long)]
        data: Option<String>,
        #[arg(long)]
        content_type: Option<String>,
        /// Replace a blob that exists.
        #[arg(long)]
        overwrite: bool,
    },
    /// Download a blob to a file (or stdout without `-f`).
    Download {
        #[command(flatten)]
        account: AccountRef,
        #[arg(short = 'c', long = "container-name")]
        container: String,
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
    },
    /// List blobs in a container.
    List {
        #[command(flatten)]
        account: AccountRef,
        #[arg(short = 'c', long = "container-name")]
        container: String,
        #[arg(long)]
        prefix: Option<String>,
    },
}

pub fn run(args: StorageArgs) -> anyhow::Result<ExitCode> {
    execute(&args.global, async move |conn| {
        let value = match args.command {
            StorageCommand::Account(c) => account(conn, c).await?,
            StorageCommand::Container(ContainerCommand::Create { account, name }) => {
                account.open(conn)?.create_container(&name).await?
            }
            StorageCommand::Blob(c) => blob(conn, c).await?,
        };
        Ok(Done::from(value))
    })
}

async fn account(conn: &Connection, command: AccountCommand) -> anyhow::Result<Value> {
    Ok(match command {
        AccountCommand::Create {
            name,
            group,
            location,
            sku,
            kind,
            tags: t,
        } => {
            let location = location_or_group(conn, &location, &group).await?;
            let created =
                resources::create_account(conn, &group, &name, &location, &sku, &kind, &tags(&t))
                    .await?;
            with_resource_group(created)
        }
        AccountCommand::Show { name, group } => {
            let id = resources::locate(conn, ACCOUNT, group.as_deref(), &name).await?;
            with_resource_group(resources::get(conn, ACCOUNT, &id).await?)
        }
        AccountCommand::List { group } => each(
            resources::list(conn, ACCOUNT, group.as_deref()).await?,
            with_resource_group,
        ),
        AccountCommand::Delete { name, group, .. } => {
            let id = resources::locate(conn, ACCOUNT, group.as_deref(), &name).await?;
            resources::delete(conn, ACCOUNT, &id).await?;
            Value::Null
        }
    })
}

async fn blob(conn: &Connection, command: BlobCommand) -> anyhow::Result<Value> {
    Ok(match command {
        BlobCommand::Upload {
            account,
            container,
            name,
            file,
            data,
            content_type,
            overwrite,
        } => {
            let (bytes, default_name) = match (data, &file) {
                (Some(d), _) => (d.into_bytes(), None),
                (None, Some(path)) => (
                    std::fs::read(path).with_context(|| format!("reading `{}`", path.display()))?,
                    path.file_name().map(|n| n.to_string_lossy().into_owned()),
                ),
                (None, None) => bail!("give --file or --data"),
            };
            let name = name
                .or(default_name)
                .ok_or_else(|| anyhow::anyhow!("give the blob's name with -n"))?;
            account
                .open(conn)?
                .upload(&container, &name, bytes, content_type.as_deref(), overwrite)
                .await?
        }
        BlobCommand::Download {
            account,
            container,
            name,
            file,
        } => {
            let bytes = account.open(conn)?.download(&container, &name).await?;
            match file {
                Some(path) => {
                    std::fs::write(&path, &bytes)
                        .with_context(|| format!("writing `{}`", path.display()))?;
                    json!({ "name": name, "container": container, "file": path, "size": bytes.len() })
                }
                None => {
                    std::io::stdout().write_all(&bytes)?;
                    Value::Null
                }
            }
        }
        BlobCommand::List {
            account,
            container,
            prefix,
        } => {
            let blobs = account
                .open(conn)?
                .list(&container, prefix.as_deref())
                .await?;
            Value::Array(blobs)
        }
    })
}
