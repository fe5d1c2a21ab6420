//! `lanyard keyvault ...`, as `az keyvault`: vaults through the control plane, secrets
//! through the vault's own data-plane host.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{ArgAction, Args, Subcommand};
use serde_json::{json, Value};

use super::{execute, location_or_group, tags, Done, Global};
use crate::api::enc;
use crate::api::present::{each, secret, with_resource_group};
use crate::api::rbac;
use crate::api::resources::{self, VaultSettings, VAULT};
use crate::api::secrets::Vault;
use crate::client::{Connection, ServiceError};
use lanyard_domain::ResourceId;
use reqwest::Method;

/// Every secret permission an access policy can grant.
pub const ALL_SECRET_PERMISSIONS: &[&str] = &[
    "get", "list", "set", "delete", "backup", "restore", "recover", "purge",
];

#[derive(Args, Debug)]
pub struct KeyvaultArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: KeyvaultCommand,
}

/// `-n` and an optional `-g` (the vault is looked up by name without it).
#[derive(Args, Debug, Clone)]
pub struct VaultTarget {
    #[arg(short = 'n', long)]
    pub name: String,
    #[arg(short = 'g', long = "resource-group")]
    pub group: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum KeyvaultCommand {
    /// Create a key vault.
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        group: String,
        /// Default: the resource group's location.
        #[arg(short = 'l', long)]
        location: Option<String>,
        /// Authorize data-plane calls with RBAC (default) instead of access policies.
        #[arg(long, num_args = 0..=1, default_value = "true", default_missing_value = "true", action = ArgAction::Set)]
        enable_rbac_authorization: bool,
        /// Soft-delete retention in days (7 to 90).
        #[arg(long)]
        retention_days: Option<u32>,
        /// Turn on purge protection (cannot be turned off).
        #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
        enable_purge_protection: Option<bool>,
        /// `standard` or `premium`.
        #[arg(long, default_value = "standard")]
        sku: String,
        /// With access policies: do not give the caller every secret permission.
        #[arg(long)]
        no_self_perms: bool,
        #[arg(long, num_args = 0..)]
        tags: Vec<String>,
    },
    /// Show a key vault.
    Show(VaultTarget),
    /// List key vaults.
    List {
        #[arg(short = 'g', long = "resource-group")]
        group: Option<String>,
    },
    /// Delete a key vault (it stays recoverable for its retention, its name reserved).
    Delete(VaultTarget),
    /// List the subscription's deleted key vaults.
    ListDeleted,
    /// Show a deleted key vault.
    ShowDeleted(DeletedTarget),
    /// Delete a deleted key vault for good (refused under purge protection).
    Purge(DeletedTarget),
    /// Recover a deleted key vault with its secrets.
    Recover {
        #[arg(short = 'n', long)]
        name: String,
        /// Default: the deleted vault's own resource group.
        #[arg(short = 'g', long = "resource-group")]
        group: Option<String>,
        /// Default: the deleted vault's location.
        #[arg(short = 'l', long)]
        location: Option<String>,
    },
    /// Grant a principal secret permissions through an access policy.
    SetPolicy {
        #[command(flatten)]
        vault: VaultTarget,
        #[arg(long, conflicts_with_all = ["spn", "upn"])]
        object_id: Option<String>,
        /// A service principal's name or client id.
        #[arg(long, conflicts_with = "upn")]
        spn: Option<String>,
        #[arg(long)]
        upn: Option<String>,
        /// Space-separated: get list set delete backup restore recover purge (or all).
        #[arg(long, num_args = 1..)]
        secret_permissions: Vec<String>,
    },
    /// Secrets in a vault.
    #[command(subcommand)]
    Secret(SecretCommand),
}

/// A deleted vault: `-n` and an optional `-l` (looked up among the deleted vaults without it).
#[derive(Args, Debug, Clone)]
pub struct DeletedTarget {
    #[arg(short = 'n', long)]
    pub name: String,
    #[arg(short = 'l', long)]
    pub location: Option<String>,
}

/// `--vault-name` and `-n`.
#[derive(Args, Debug, Clone)]
pub struct SecretTarget {
    #[arg(long = "vault-name")]
    pub vault: String,
    #[arg(short = 'n', long)]
    pub name: String,
}

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Create a secret, or a new version of it.
    Set {
        #[command(flatten)]
        target: SecretTarget,
        #[arg(long, required_unless_present = "file", conflicts_with = "file")]
        value: Option<String>,
        /// Read the value from a file.
        #[arg(short = 'f', long)]
        file: Option<std::path::PathBuf>,
        #[arg(long)]
        content_type: Option<String>,
        #[arg(long, num_args = 0..)]
        tags: Vec<String>,
    },
    /// Show a secret with its value.
    #[command(disable_version_flag = true)]
    Show {
        #[arg(long = "vault-name", required_unless_present = "id")]
        vault: Option<String>,
        #[arg(short = 'n', long, required_unless_present = "id")]
        name: Option<String>,
        #[arg(short = 'v', long)]
        version: Option<String>,
        /// The secret's URL: `https://{vault}.vault.{domain}/secrets/{name}[/{version}]`.
        #[arg(long, conflicts_with_all = ["vault", "name"])]
        id: Option<String>,
    },
    /// List secrets (no values).
    List {
        #[arg(long = "vault-name")]
        vault: String,
    },
    /// List deleted secrets that can still be recovered.
    ListDeleted {
        #[arg(long = "vault-name")]
        vault: String,
    },
    /// Delete a secret (recoverable until purged or its retention ends).
    Delete(SecretTarget),
    /// Recover a deleted secret.
    Recover(SecretTarget),
    /// Delete a deleted secret for good.
    Purge(SecretTarget),
}

pub fn run(args: KeyvaultArgs) -> anyhow::Result<ExitCode> {
    execute(&args.global, async move |conn| {
        let value = match args.command {
            KeyvaultCommand::Secret(command) => secrets(conn, command).await?,
            other => vaults(conn, other).await?,
        };
        Ok(Done::from(value))
    })
}

async fn vaults(conn: &Connection, command: KeyvaultCommand) -> anyhow::Result<Value> {
    Ok(match command {
        KeyvaultCommand::Create {
            name,
            group,
            location,
            enable_rbac_authorization,
            retention_days,
            enable_purge_protection,
            sku,
            no_self_perms,
            tags: t,
        } => {
            let location = location_or_group(conn, &location, &group).await?;
            let mut settings = VaultSettings {
                rbac: enable_rbac_authorization,
                sku,
                retention_days,
                purge_protection: enable_purge_protection,
                access_policies: Vec::new(),
            };
            if !enable_rbac_authorization && !no_self_perms {
                // As `az keyvault create`: the creator can use the vault it made.
                settings.access_policies.push(json!({
                    "tenantId": conn.tenant_id,
                    "objectId": conn.caller_object_id().await?,
                    "permissions": { "secrets": ALL_SECRET_PERMISSIONS },
                }));
            }
            with_resource_group(
                resources::create_vault(conn, &group, &name, &location, &settings, &tags(&t))
                    .await?,
            )
        }
        KeyvaultCommand::Show(v) => {
            let id = resources::locate(conn, VAULT, v.group.as_deref(), &v.name).await?;
            with_resource_group(resources::get(conn, VAULT, &id).await?)
        }
        KeyvaultCommand::List { group } => each(
            resources::list(conn, VAULT, group.as_deref()).await?,
            with_resource_group,
        ),
        KeyvaultCommand::Delete(v) => {
            let id = resources::locate(conn, VAULT, v.group.as_deref(), &v.name).await?;
            resources::delete(conn, VAULT, &id).await?;
            Value::Null
        }
        KeyvaultCommand::ListDeleted => Value::Array(list_deleted(conn).await?),
        KeyvaultCommand::ShowDeleted(t) => {
            let location = deleted_location(conn, &t.name, t.location.as_deref()).await?;
            conn.arm(
                Method::GET,
                &deleted_path(conn, &location, &t.name, ""),
                None,
            )
            .await?
        }
        KeyvaultCommand::Purge(t) => {
            let location = deleted_location(conn, &t.name, t.location.as_deref()).await?;
            conn.arm(
                Method::POST,
                &deleted_path(conn, &location, &t.name, "/purge"),
                None,
            )
            .await?;
            Value::Null
        }
        KeyvaultCommand::Recover {
            name,
            group,
            location,
        } => {
            let location = deleted_location(conn, &name, location.as_deref()).await?;
            let deleted = conn
                .arm(Method::GET, &deleted_path(conn, &location, &name, ""), None)
                .await?;
            let id = match group {
                Some(g) => resources::Ids::of(conn).resource(VAULT, &g, &name),
                None => deleted["properties"]["vaultId"]
                    .as_str()
                    .and_then(|v| ResourceId::parse(v).ok())
                    .ok_or_else(|| anyhow!("the deleted vault `{name}` names no vault id"))?,
            };
            // As `az keyvault recover`: a PUT of the vault with `createMode: recover`; the
            // service restores the vault as it was.
            let body = json!({
                "location": location,
                "properties": {
                    "tenantId": conn.tenant_id,
                    "sku": { "family": "A", "name": "standard" },
                    "createMode": "recover",
                },
            });
            with_resource_group(resources::put(conn, VAULT, &id, &body).await?)
        }
        KeyvaultCommand::SetPolicy {
            vault,
            object_id,
            spn,
            upn,
            secret_permissions,
        } => {
            let object_id = match (object_id, spn.or(upn)) {
                (Some(oid), _) => oid,
                (None, Some(who)) => rbac::resolve_principal(conn, &who).await?.object_id,
                (None, None) => bail!("give --object-id, --spn or --upn"),
            };
            let permissions: Vec<String> = if secret_permissions
                .iter()
                .any(|p| p.eq_ignore_ascii_case("all"))
            {
                ALL_SECRET_PERMISSIONS
                    .iter()
                    .map(|p| (*p).to_string())
                    .collect()
            } else {
                secret_permissions
            };
            let id = resources::locate(conn, VAULT, vault.group.as_deref(), &vault.name).await?;
            resources::add_access_policy(
                conn,
                &id,
                &conn.tenant_id,
                &object_id,
                &json!({ "secrets": permissions }),
            )
            .await?;
            with_resource_group(resources::get(conn, VAULT, &id).await?)
        }
        KeyvaultCommand::Secret(_) => Value::Null,
    })
}

/// `.../locations/{location}/deletedVaults/{name}{suffix}?api-version=...`.
fn deleted_path(conn: &Connection, location: &str, name: &str, suffix: &str) -> String {
    format!(
        "/subscriptions/{}/providers/{}/locations/{}/deletedVaults/{}{suffix}?api-version={}",
        enc(&conn.subscription_id),
        VAULT.namespace,
        enc(location),
        enc(name),
        VAULT.api_version
    )
}

/// The subscription's deleted vaults.
async fn list_deleted(conn: &Connection) -> anyhow::Result<Vec<Value>> {
    resources::require_subscription(conn)?;
    conn.arm_list(&format!(
        "/subscriptions/{}/providers/{}/deletedVaults?api-version={}",
        enc(&conn.subscription_id),
        VAULT.namespace,
        VAULT.api_version
    ))
    .await
}

/// `location`, or the location of the deleted vault called `name`.
async fn deleted_location(
    conn: &Connection,
    name: &str,
    location: Option<&str>,
) -> anyhow::Result<String> {
    resources::require_subscription(conn)?;
    if let Some(l) = location {
        return Ok(l.to_string());
    }
    list_deleted(conn)
        .await?
        .iter()
        .find(|v| {
            v["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .and_then(|v| v["properties"]["location"].as_str().map(str::to_string))
        .ok_or_else(|| {
            ServiceError {
                status: 404,
                code: "DeletedVaultNotFound".into(),
                message: format!("No deleted key vault named '{name}' in this subscription."),
            }
            .into()
        })
}

/// `(vault, name, version)` from a secret's URL.
fn parse_secret_id(id: &str) -> anyhow::Result<(String, String, Option<String>)> {
    let url = reqwest::Url::parse(id).with_context(|| format!("`{id}` is not a URL"))?;
    let vault = url
        .host_str()
        .and_then(|h| h.split('.').next())
        .ok_or_else(|| anyhow!("`{id}` names no vault"))?
        .to_string();
    let mut segments = url
        .path_segments()
        .ok_or_else(|| anyhow!("`{id}` has no path"))?;
    match (segments.next(), segments.next(), segments.next()) {
        (Some("secrets"), Some(name), version) if !name.is_empty() => Ok((
            vault,
            name.to_string(),
            version.filter(|v| !v.is_empty()).map(str::to_string),
        )),
        _ => bail!("`{id}` is not a secret's URL (`https://{{vault}}.../secrets/{{name}}`)"),
    }
}

async fn secrets(conn: &Connection, command: SecretCommand) -> anyhow::Result<Value> {
    Ok(match command {
        SecretCommand::Set {
            target,
            value,
            file,
            content_type,
            tags: t,
        } => {
            let value = match (value, file) {
                (Some(v), _) => v,
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading `{}`", path.display()))?,
                (None, None) => bail!("give --value or --file"),
            };
            let vault = Vault::new(conn, &target.vault);
            secret(
                vault
                    .set(&target.name, &value, content_type.as_deref(), &tags(&t))
                    .await?,
            )
        }
        SecretCommand::Show {
            vault,
            name,
            version,
            id,
        } => {
            let (vault, name, version) = match (id, vault, name) {
                (Some(id), _, _) => parse_secret_id(&id)?,
                (None, Some(v), Some(n)) => (v, n, version),
                _ => bail!("give --id, or --vault-name and -n"),
            };
            secret(
                Vault::new(conn, &vault)
                    .get(&name, version.as_deref())
                    .await?,
            )
        }
        SecretCommand::List { vault } => each(Vault::new(conn, &vault).list().await?, secret),
        SecretCommand::ListDeleted { vault } => {
            each(Vault::new(conn, &vault).list_deleted().await?, secret)
        }
        SecretCommand::Delete(t) => secret(Vault::new(conn, &t.vault).delete(&t.name).await?),
        SecretCommand::Recover(t) => secret(Vault::new(conn, &t.vault).recover(&t.name).await?),
        SecretCommand::Purge(t) => {
            Vault::new(conn, &t.vault).purge(&t.name).await?;
            Value::Null
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_urls_name_vault_secret_and_version() {
        let (v, n, ver) =
            parse_secret_id("https://kv1.vault.lanyard.localhost:8443/secrets/db/abc").unwrap();
        assert_eq!(
            (v.as_str(), n.as_str(), ver.as_deref()),
            ("kv1", "db", Some("abc"))
        );
        let (_, _, ver) = parse_secret_id("https://kv1.vault.x/secrets/db").unwrap();
        assert!(ver.is_none());
        assert!(parse_secret_id("https://kv1.vault.x/keys/k").is_err());
    }
}
