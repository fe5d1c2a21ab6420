//! `lanyard vm ...` and `lanyard webapp ...`, as `az vm` and `az webapp`: workloads that
//! hold managed identities. Lanyard runs no machine and no site; the resource exists so
//! that its identity does, and `lanyard run --as NAME` runs a process with it.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{execute, group_of, location_or_group, tags, Done, Global};
use crate::api::present::{self, each, with_resource_group};
use crate::api::resources::{self, Ids, Kind, VM, WEBAPP};
use crate::api::workloads::{self, Identities};
use crate::client::Connection;

#[derive(Args, Debug)]
pub struct VmArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: VmCommand,
}

#[derive(Args, Debug)]
pub struct WebappArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: WebappCommand,
}

/// `-g` and `-n`.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Resource group.
    #[arg(short = 'g', long = "resource-group")]
    pub group: String,
    /// Name of the resource.
    #[arg(short = 'n', long)]
    pub name: String,
}

/// Identities given at creation, and a role for the system identity.
#[derive(Args, Debug, Clone, Default)]
pub struct AssignFlags {
    /// Identities to assign: `[system]` and/or user-assigned identity names or ids; with
    /// no value, the system-assigned identity.
    #[arg(long = "assign-identity", num_args = 0.., value_name = "ID")]
    pub assign_identity: Option<Vec<String>>,
    /// Role for the system-assigned identity at `--scope`.
    #[arg(long, default_value = "Contributor")]
    pub role: String,
    /// Scope at which the system-assigned identity gets `--role`.
    #[arg(long)]
    pub scope: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Create a virtual machine resource (and its identities).
    Create {
        #[command(flatten)]
        target: Target,
        /// Default: the resource group's location.
        #[arg(short = 'l', long)]
        location: Option<String>,
        /// Recorded in the VM's `storageProfile`; no machine is started.
        #[arg(long)]
        image: Option<String>,
        /// Recorded in the VM's `hardwareProfile`.
        #[arg(long)]
        size: Option<String>,
        #[command(flatten)]
        identity: AssignFlags,
        #[arg(long, num_args = 0..)]
        tags: Vec<String>,
    },
    /// Show a virtual machine.
    Show(Target),
    /// List virtual machines.
    List {
        #[arg(short = 'g', long = "resource-group")]
        group: Option<String>,
    },
    /// Delete a virtual machine (its system-assigned identity goes with it).
    Delete {
        #[command(flatten)]
        target: Target,
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// The VM's managed identities.
    #[command(subcommand)]
    Identity(IdentityCommand),
}

#[derive(Subcommand, Debug)]
pub enum WebappCommand {
    /// Create a web app resource (and its identities).
    Create {
        #[command(flatten)]
        target: Target,
        /// Default: the resource group's location.
        #[arg(short = 'l', long)]
        location: Option<String>,
        /// App Service plan; recorded as `serverFarmId`.
        #[arg(short = 'p', long)]
        plan: Option<String>,
        /// Recorded in `siteConfig.linuxFxVersion`.
        #[arg(long)]
        runtime: Option<String>,
        #[command(flatten)]
        identity: AssignFlags,
        #[arg(long, num_args = 0..)]
        tags: Vec<String>,
    },
    /// Show a web app.
    Show(Target),
    /// List web apps.
    List {
        #[arg(short = 'g', long = "resource-group")]
        group: Option<String>,
    },
    /// Delete a web app (its system-assigned identity goes with it).
    Delete(Target),
    /// The web app's managed identities.
    #[command(subcommand)]
    Identity(IdentityCommand),
}

#[derive(Subcommand, Debug)]
pub enum IdentityCommand {
    /// Assign managed identities; optionally give the system identity a role.
    Assign {
        #[command(flatten)]
        target: Target,
        /// `[system]` and/or user-assigned identity names or ids (default: `[system]`).
        #[arg(long, num_args = 1..)]
        identities: Vec<String>,
        /// Role for the system-assigned identity at `--scope`.
        #[arg(long, default_value = "Contributor")]
        role: String,
        /// Scope at which the system-assigned identity gets `--role`.
        #[arg(long)]
        scope: Option<String>,
    },
    /// Remove managed identities (default: the system-assigned one).
    Remove {
        #[command(flatten)]
        target: Target,
        #[arg(long, num_args = 1..)]
        identities: Vec<String>,
    },
    /// Show the managed identities.
    Show(Target),
}

/// Creates a workload with `properties` and the identities `flags` name, and gives the
/// system identity `--role` at `--scope` when asked.
async fn create(
    conn: &Connection,
    kind: Kind,
    target: &Target,
    location: &Option<String>,
    properties: Value,
    flags: &AssignFlags,
    tag_pairs: &[String],
) -> anyhow::Result<Value> {
    let location = location_or_group(conn, location, &target.group).await?;
    let identities = match &flags.assign_identity {
        Some(given) => Some(Identities::parse(&Ids::of(conn), &target.group, given)?),
        None => None,
    };
    let created = workloads::create(
        conn,
        kind,
        &target.group,
        &target.name,
        &location,
        properties,
        identities.as_ref(),
        &tags(tag_pairs),
    )
    .await?;
    if let Some(scope) = &flags.scope {
        workloads::grant_system(conn, &created, &flags.role, scope).await?;
    }
    Ok(with_resource_group(created))
}

/// `identity assign|remove|show` for any workload kind; the answer in the kind's shape.
async fn identity(
    conn: &Connection,
    kind: Kind,
    command: IdentityCommand,
) -> anyhow::Result<Value> {
    let ids = Ids::of(conn);
    let shape = if kind.type_name == VM.type_name {
        present::vm_identity
    } else {
        present::webapp_identity
    };
    let id = |t: &Target| ids.resource(kind, &t.group, &t.name);
    let updated = match command {
        IdentityCommand::Assign {
            target,
            identities,
            role,
            scope,
        } => {
            let given = Identities::parse(&ids, &target.group, &identities)?;
            let updated = workloads::assign(conn, kind, &id(&target), &given).await?;
            if let Some(scope) = scope {
                workloads::grant_system(conn, &updated, &role, &scope).await?;
            }
            updated
        }
        IdentityCommand::Remove { target, identities } => {
            let given = Identities::parse(&ids, &target.group, &identities)?;
            workloads::remove(conn, kind, &id(&target), &given).await?
        }
        IdentityCommand::Show(target) => resources::get(conn, kind, &id(&target)).await?,
    };
    Ok(shape(&updated["identity"]))
}

pub fn run_vm(args: VmArgs) -> anyhow::Result<ExitCode> {
    execute(&args.global, async move |conn| {
        let ids = Ids::of(conn);
        let value = match args.command {
            VmCommand::Create {
                target,
                location,
                image,
                size,
                identity,
                tags: t,
            } => {
                let mut properties = json!({});
                if let Some(size) = size {
                    properties["hardwareProfile"] = json!({ "vmSize": size });
                }
                if let Some(image) = image {
                    properties["storageProfile"] = json!({ "imageReference": { "id": image } });
                }
                create(conn, VM, &target, &location, properties, &identity, &t).await?
            }
            VmCommand::Show(t) => with_resource_group(
                resources::get(conn, VM, &ids.resource(VM, &t.group, &t.name)).await?,
            ),
            VmCommand::List { group } => each(
                resources::list(conn, VM, group.as_deref()).await?,
                with_resource_group,
            ),
            VmCommand::Delete { target: t, .. } => {
                resources::delete(conn, VM, &ids.resource(VM, &t.group, &t.name)).await?;
                Value::Null
            }
            VmCommand::Identity(command) => identity(conn, VM, command).await?,
        };
        Ok(Done::from(value))
    })
}

pub fn run_webapp(args: WebappArgs) -> anyhow::Result<ExitCode> {
    execute(&args.global, async move |conn| {
        let ids = Ids::of(conn);
        let value = match args.command {
            WebappCommand::Create {
                target,
                location,
                plan,
                runtime,
                identity,
                tags: t,
            } => {
                let mut properties = json!({});
                if let Some(plan) = plan {
                    let plan = if plan.starts_with('/') {
                        plan
                    } else {
                        ids.group(group_of(&Some(target.group.clone()))?)
                            .with_provider("Microsoft.Web", "serverfarms", &plan)
                            .as_str()
                            .to_string()
                    };
                    properties["serverFarmId"] = json!(plan);
                }
                if let Some(runtime) = runtime {
                    properties["siteConfig"] = json!({ "linuxFxVersion": runtime });
                }
                create(conn, WEBAPP, &target, &location, properties, &identity, &t).await?
            }
            WebappCommand::Show(t) => with_resource_group(
                resources::get(conn, WEBAPP, &ids.resource(WEBAPP, &t.group, &t.name)).await?,
            ),
            WebappCommand::List { group } => each(
                resources::list(conn, WEBAPP, group.as_deref()).await?,
                with_resource_group,
            ),
            WebappCommand::Delete(t) => {
                resources::delete(conn, WEBAPP, &ids.resource(WEBAPP, &t.group, &t.name)).await?;
                Value::Null
            }
            WebappCommand::Identity(command) => identity(conn, WEBAPP, command).await?,
        };
        Ok(Done::from(value))
    })
}
