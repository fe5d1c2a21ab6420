//! `lanyard role definition ...` and `lanyard role assignment ...`, as `az role`.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::{execute, scope_of, Done, Global};
use crate::api::present::{each, flattened, role_definition};
use crate::api::rbac::{self, Principal};
use crate::api::resources::Ids;
use crate::client::Connection;

#[derive(Args, Debug)]
pub struct RoleArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: RoleCommand,
}

#[derive(Subcommand, Debug)]
pub enum RoleCommand {
    /// Role definitions: built-in and custom roles.
    #[command(subcommand)]
    Definition(DefinitionCommand),
    /// Role assignments: a role for a principal at a scope.
    #[command(subcommand)]
    Assignment(AssignmentCommand),
}

#[derive(Subcommand, Debug)]
pub enum DefinitionCommand {
    /// List role definitions.
    List {
        /// Only the role with this name (or id).
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(long)]
        custom_role_only: bool,
        /// Default: the subscription.
        #[arg(long)]
        scope: Option<String>,
    },
    /// Create a custom role from JSON (inline, or `@file`): `Name`/`roleName`,
    /// `Description`, `Actions`, `NotActions`, `DataActions`, `NotDataActions`,
    /// `AssignableScopes` (keys in any case).
    Create {
        #[arg(long = "role-definition")]
        definition: String,
    },
    /// Delete a custom role.
    Delete {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long)]
        scope: Option<String>,
    },
}

/// Who an assignment is for.
#[derive(Args, Debug, Clone)]
pub struct Assignee {
    /// Object id, client id, display name, or resource id of an identity or workload.
    #[arg(long)]
    pub assignee: Option<String>,
    /// Object id, taken as given (no directory lookup).
    #[arg(long = "assignee-object-id", conflicts_with = "assignee")]
    pub object_id: Option<String>,
    /// `ServicePrincipal`, `User`, `Group` or `ForeignGroup` (with --assignee-object-id).
    #[arg(long = "assignee-principal-type")]
    pub principal_type: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum AssignmentCommand {
    /// Assign a role to a principal at a scope.
    Create {
        #[command(flatten)]
        assignee: Assignee,
        /// Role name, GUID or definition id.
        #[arg(long)]
        role: String,
        #[arg(long)]
        scope: Option<String>,
        #[arg(short = 'g', long = "resource-group")]
        group: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List role assignments (by default those at the subscription; see --all).
    List {
        #[arg(long)]
        assignee: Option<String>,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        scope: Option<String>,
        #[arg(short = 'g', long = "resource-group")]
        group: Option<String>,
        /// Assignments at, above and below the scope.
        #[arg(long)]
        all: bool,
        /// Also assignments above the scope.
        #[arg(long)]
        include_inherited: bool,
    },
    /// Delete role assignments: by id, or every one matching the filters.
    Delete {
        #[arg(long, num_args = 1..)]
        ids: Vec<String>,
        #[arg(long)]
        assignee: Option<String>,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        scope: Option<String>,
        #[arg(short = 'g', long = "resource-group")]
        group: Option<String>,
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

pub fn run(args: RoleArgs) -> anyhow::Result<ExitCode> {
    execute(&args.global, async move |conn| {
        Ok(match args.command {
            RoleCommand::Definition(c) => {
                Done::from(definition(conn, c).await?).with_table(definition_table)
            }
            RoleCommand::Assignment(c) => {
                Done::from(assignment(conn, c).await?).with_table(assignment_table)
            }
        })
    })
}

/// `az role assignment list -o table`: principal, role, scope.
fn assignment_table(value: &Value) -> Vec<Vec<(&'static str, Value)>> {
    rows(value, |a| {
        vec![
            (
                "principal",
                a.get("principalName").unwrap_or(&a["principalId"]).clone(),
            ),
            (
                "role",
                a.get("roleDefinitionName")
                    .unwrap_or(&a["roleDefinitionId"])
                    .clone(),
            ),
            ("scope", a["scope"].clone()),
        ]
    })
}

/// `az role definition list -o table`: name, type, description.
fn definition_table(value: &Value) -> Vec<Vec<(&'static str, Value)>> {
    rows(value, |d| {
        vec![
            ("name", d["roleName"].clone()),
            ("roleType", d["roleType"].clone()),
            ("description", d["description"].clone()),
        ]
    })
}

fn rows(
    value: &Value,
    row: fn(&Value) -> Vec<(&'static str, Value)>,
) -> Vec<Vec<(&'static str, Value)>> {
    match value {
        Value::Array(items) => items.iter().map(row).collect(),
        one => vec![row(one)],
    }
}

async fn definition(conn: &Connection, command: DefinitionCommand) -> anyhow::Result<Value> {
    let sub = Ids::of(conn).subscription().as_str().to_string();
    match command {
        DefinitionCommand::List {
            name,
            custom_role_only,
            scope,
        } => {
            let scope = scope.unwrap_or(sub);
            let found = match name {
                Some(n) if crate::api::is_guid(&n) || n.starts_with('/') => {
                    let (id, _) = rbac::resolve_role(conn, &scope, &n).await?;
                    vec![
                        conn.arm(
                            reqwest::Method::GET,
                            &format!("{id}?api-version={}", rbac::AUTHZ_API),
                            None,
                        )
                        .await?,
                    ]
                }
                n => rbac::definitions(conn, &scope, n.as_deref()).await?,
            };
            let found = found
                .into_iter()
                .filter(|d| !custom_role_only || d["properties"]["type"] == "CustomRole")
                .collect();
            Ok(each(found, role_definition))
        }
        DefinitionCommand::Create { definition } => {
            let text = match definition.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading the role definition `{path}`"))?,
                None => definition,
            };
            let given: Value =
                serde_json::from_str(&text).context("the role definition is not JSON")?;
            let properties = definition_properties(&given, &sub)?;
            Ok(role_definition(
                rbac::create_definition(conn, &properties).await?,
            ))
        }
        DefinitionCommand::Delete { name, scope } => {
            let scope = scope.unwrap_or(sub);
            Ok(each(
                vec![rbac::delete_definition(conn, &scope, &name).await?]
                    .into_iter()
                    .filter(|v| !v.is_null())
                    .collect(),
                role_definition,
            ))
        }
    }
}

/// `az`'s role definition JSON → ARM `properties`. Keys match in any case.
fn definition_properties(given: &Value, subscription: &str) -> anyhow::Result<Value> {
    let map = given
        .as_object()
        .ok_or_else(|| anyhow!("the role definition must be a JSON object"))?;
    let lower: Map<String, Value> = map
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let list = |key: &str| lower.get(key).cloned().unwrap_or_else(|| json!([]));
    let name = lower
        .get("name")
        .or_else(|| lower.get("rolename"))
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the role definition needs a `Name`"))?;
    let scopes = match lower.get("assignablescopes") {
        Some(Value::Array(a)) if !a.is_empty() => Value::Array(a.clone()),
        _ => json!([subscription]),
    };
    let permissions = match lower.get("permissions") {
        Some(p @ Value::Array(_)) => p.clone(),
        _ => json!([{
            "actions": list("actions"),
            "notActions": list("notactions"),
            "dataActions": list("dataactions"),
            "notDataActions": list("notdataactions"),
        }]),
    };
    Ok(json!({
        "roleName": name,
        "description": lower.get("description").cloned().unwrap_or(Value::Null),
        "type": "CustomRole",
        "permissions": permissions,
        "assignableScopes": scopes,
    }))
}

async fn principal(conn: &Connection, who: &Assignee) -> anyhow::Result<Principal> {
    match (&who.assignee, &who.object_id) {
        (_, Some(oid)) => Ok(Principal {
            object_id: oid.clone(),
            principal_type: who.principal_type.clone(),
        }),
        (Some(a), None) => {
            let mut p = rbac::resolve_principal(conn, a).await?;
            if who.principal_type.is_some() {
                p.principal_type = who.principal_type.clone();
            }
            Ok(p)
        }
        (None, None) => bail!("give --assignee or --assignee-object-id"),
    }
}

/// The assignments `list` and `delete` select, flattened and named.
async fn select(
    conn: &Connection,
    assignee: &Option<String>,
    role: &Option<String>,
    scope: &str,
    all: bool,
    inherited: bool,
) -> anyhow::Result<Vec<Value>> {
    let principal = match assignee {
        Some(a) => Some(rbac::resolve_principal(conn, a).await?.object_id),
        None => None,
    };
    let role_id = match role {
        Some(r) => Some(rbac::resolve_role(conn, scope, r).await?.0),
        None => None,
    };
    let found = rbac::assignments(
        conn,
        scope,
        principal.as_deref(),
        !all && principal.is_none(),
    )
    .await?;
    let exact = !all && !inherited;
    let found = found
        .into_iter()
        .map(flattened)
        .filter(|a| {
            !exact
                || a["scope"]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(scope))
        })
        .filter(|a| {
            role_id.as_ref().is_none_or(|r| {
                a["roleDefinitionId"].as_str().is_some_and(|d| {
                    d.rsplit('/')
                        .next()
                        .unwrap_or(d)
                        .eq_ignore_ascii_case(r.rsplit('/').next().unwrap_or(r))
                })
            })
        })
        .collect();
    Ok(rbac::with_names(conn, found).await)
}

async fn assignment(conn: &Connection, command: AssignmentCommand) -> anyhow::Result<Value> {
    match command {
        AssignmentCommand::Create {
            assignee,
            role,
            scope,
            group,
            description,
        } => {
            if scope.is_none() && group.is_none() {
                bail!("--scope is required (or -g for a resource group)");
            }
            let scope = scope_of(conn, &scope, &group);
            let principal = principal(conn, &assignee).await?;
            let (role_id, _) = rbac::resolve_role(conn, &scope, &role).await?;
            let created =
                rbac::assign(conn, &scope, &role_id, &principal, description.as_deref()).await?;
            let named = rbac::with_names(conn, vec![flattened(created)]).await;
            Ok(named.into_iter().next().unwrap_or(Value::Null))
        }
        AssignmentCommand::List {
            assignee,
            role,
            scope,
            group,
            all,
            include_inherited,
        } => {
            let scope = scope_of(conn, &scope, &group);
            Ok(Value::Array(
                select(conn, &assignee, &role, &scope, all, include_inherited).await?,
            ))
        }
        AssignmentCommand::Delete {
            ids,
            assignee,
            role,
            scope,
            group,
            ..
        } => {
            let targets: Vec<String> = if !ids.is_empty() {
                ids
            } else {
                if assignee.is_none() && role.is_none() && scope.is_none() && group.is_none() {
                    bail!("give --ids, or at least one of --assignee, --role, --scope, -g");
                }
                let scope = scope_of(conn, &scope, &group);
                select(conn, &assignee, &role, &scope, false, false)
                    .await?
                    .iter()
                    .filter_map(|a| a["id"].as_str().map(str::to_string))
                    .collect()
            };
            if targets.is_empty() {
                bail!("no role assignment matches");
            }
            for id in &targets {
                rbac::delete_assignment(conn, id).await?;
            }
            Ok(Value::Null)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn az_role_definitions_become_arm_properties() {
        let given = json!({
            "Name": "Secret Reader", "Description": "reads",
            "DataActions": ["Microsoft.KeyVault/vaults/secrets/getSecret/action"],
            "AssignableScopes": ["/subscriptions/s"]
        });
        let p = definition_properties(&given, "/subscriptions/x").unwrap();
        assert_eq!(p["roleName"], "Secret Reader");
        assert_eq!(
            p["permissions"][0]["dataActions"][0],
            "Microsoft.KeyVault/vaults/secrets/getSecret/action"
        );
        assert_eq!(p["permissions"][0]["actions"], json!([]));
        assert_eq!(p["assignableScopes"], json!(["/subscriptions/s"]));
        let p = definition_properties(&json!({"roleName": "r"}), "/subscriptions/x").unwrap();
        assert_eq!(p["assignableScopes"], json!(["/subscriptions/x"]));
        assert!(definition_properties(&json!({}), "/s").is_err());
    }
}
