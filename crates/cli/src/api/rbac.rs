//! Role definitions, role assignments, and who an `--assignee` names.

use std::collections::HashMap;

use anyhow::{anyhow, bail};
use lanyard_domain::ResourceId;
use reqwest::Method;
use serde_json::{json, Value};

use super::resources::{self, Ids, IDENTITY};
use super::{enc, is_guid};
use crate::client::{Connection, ServiceError};

pub const AUTHZ_API: &str = "2022-04-01";

/// A principal a role can be assigned to.
#[derive(Debug, Clone)]
pub struct Principal {
    pub object_id: String,
    /// `ServicePrincipal`, `User`, `Group`, when known.
    pub principal_type: Option<String>,
}

/// OData string literal: quotes doubled.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn refused(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ServiceError>()
        .is_some_and(|s| s.status == 401 || s.status == 403)
}

/// Resolves `--assignee`: an object id, a client (app) id, a resource id of an identity or
/// of a resource with a system-assigned identity, or a display name (an app registration's,
/// or a managed identity's, which is its resource's name).
///
/// Names and client ids are looked up through Microsoft Graph, which only the tenant's
/// administrator may read; for anyone else a name is looked up among the identities and
/// workloads of the subscription through ARM, and a GUID is taken as an object id.
pub async fn resolve_principal(conn: &Connection, given: &str) -> anyhow::Result<Principal> {
    let given = given.trim();
    if given.starts_with('/') {
        return principal_of_resource(conn, given).await;
    }
    match graph_lookup(conn, given).await {
        Ok(Some(p)) => return Ok(p),
        Ok(None) if is_guid(given) => {}
        Ok(None) => bail!("no service principal or managed identity is named `{given}`"),
        Err(e) if refused(&e) => {}
        Err(e) => return Err(e),
    }
    if is_guid(given) {
        return Ok(Principal {
            object_id: given.to_string(),
            principal_type: None,
        });
    }
    arm_lookup(conn, given).await
}

async fn graph_lookup(conn: &Connection, given: &str) -> anyhow::Result<Option<Principal>> {
    let filter = if is_guid(given) {
        format!("appId eq {}", literal(given))
    } else {
        format!("displayName eq {}", literal(given))
    };
    let found = conn
        .list_all(
            &format!(
                "{}/v1.0/servicePrincipals?$filter={}",
                conn.base,
                enc(&filter)
            ),
            crate::client::GRAPH_SCOPE,
        )
        .await?;
    let mut found = match found.len() {
        0 if is_guid(given) => {
            // Not a client id: perhaps an object id.
            match conn
                .graph(Method::GET, &format!("/v1.0/servicePrincipals/{given}"))
                .await
            {
                Ok(sp) => vec![sp],
                Err(e)
                    if e.downcast_ref::<ServiceError>()
                        .is_some_and(|s| s.status == 404) =>
                {
                    Vec::new()
                }
                Err(e) => return Err(e),
            }
        }
        _ => found,
    };
    match found.len() {
        0 => Ok(None),
        1 => {
            let sp = found.remove(0);
            Ok(Some(Principal {
                object_id: sp["id"]
                    .as_str()
                    .ok_or_else(|| anyhow!("Graph answered a service principal without an id"))?
                    .to_string(),
                principal_type: Some("ServicePrincipal".into()),
            }))
        }
        _ => {
            let names: Vec<String> = found
                .iter()
                .map(|sp| {
                    sp["alternativeNames"]
                        .as_array()
                        .and_then(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .find(|n| n.starts_with('/'))
                        })
                        .map(str::to_string)
                        .unwrap_or_else(|| {
                            format!("object id {}", sp["id"].as_str().unwrap_or("?"))
                        })
                })
                .collect();
            bail!(
                "more than one principal is named `{given}`; give an object id or a resource id: {}",
                names.join(", ")
            )
        }
    }
}

/// Identities and workloads named `name` in the subscription, through ARM.
async fn arm_lookup(conn: &Connection, name: &str) -> anyhow::Result<Principal> {
    let mut found = Vec::new();
    for kind in std::iter::once(IDENTITY).chain(resources::workloads()) {
        for r in resources::list(conn, kind, None).await? {
            if !r["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
            {
                continue;
            }
            let principal = if kind.type_name == IDENTITY.type_name {
                r["properties"]["principalId"].as_str()
            } else {
                r["identity"]["principalId"].as_str()
            };
            if let Some(p) = principal {
                found.push((
                    p.to_string(),
                    r["id"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
    }
    match found.as_slice() {
        [(oid, _)] => Ok(Principal {
            object_id: oid.clone(),
            principal_type: Some("ServicePrincipal".into()),
        }),
        [] => bail!("no managed identity is named `{name}` in the subscription"),
        many => bail!(
            "more than one identity is named `{name}`; give a resource id: {}",
            many.iter()
                .map(|(_, id)| id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The principal of a user-assigned identity, or the system identity of a resource.
async fn principal_of_resource(conn: &Connection, id: &str) -> anyhow::Result<Principal> {
    let parsed = ResourceId::parse(id).map_err(|e| anyhow!("`{id}`: {e}"))?;
    let body = conn
        .arm(
            Method::GET,
            &format!("{}?api-version={}", parsed.as_str(), IDENTITY.api_version),
            None,
        )
        .await?;
    let oid = if parsed.is_type(&IDENTITY.full_type()) {
        body["properties"]["principalId"].as_str()
    } else {
        body["identity"]["principalId"].as_str()
    };
    let oid = oid.ok_or_else(|| anyhow!("`{id}` has no system-assigned identity"))?;
    Ok(Principal {
        object_id: oid.to_string(),
        principal_type: Some("ServicePrincipal".into()),
    })
}

// ---------------------------------------------------------------------------------------
// Role definitions

/// Role definitions visible at `scope`, optionally only the one named `name`.
pub async fn definitions(
    conn: &Connection,
    scope: &str,
    name: Option<&str>,
) -> anyhow::Result<Vec<Value>> {
    let mut path = format!(
        "{scope}/providers/Microsoft.Authorization/roleDefinitions?api-version={AUTHZ_API}"
    );
    if let Some(name) = name {
        path.push_str(&format!(
            "&$filter={}",
            enc(&format!("roleName eq {}", literal(name)))
        ));
    }
    conn.arm_list(&path).await
}

/// A role: its full definition id and name, from a name, a GUID or a definition id.
pub async fn resolve_role(
    conn: &Connection,
    scope: &str,
    role: &str,
) -> anyhow::Result<(String, String)> {
    let id = if role.starts_with('/') {
        Some(role.to_string())
    } else if is_guid(role) {
        Some(format!(
            "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{role}",
            conn.subscription_id
        ))
    } else {
        None
    };
    if let Some(id) = id {
        let body = conn
            .arm(Method::GET, &format!("{id}?api-version={AUTHZ_API}"), None)
            .await?;
        let name = body["properties"]["roleName"]
            .as_str()
            .unwrap_or(role)
            .to_string();
        return Ok((body["id"].as_str().map_or(id, str::to_string), name));
    }
    let mut found = definitions(conn, scope, Some(role)).await?;
    match found.len() {
        1 => {
            let def = found.remove(0);
            let id = def["id"]
                .as_str()
                .ok_or_else(|| anyhow!("a role definition without an id"))?
                .to_string();
            let name = def["properties"]["roleName"]
                .as_str()
                .unwrap_or(role)
                .to_string();
            Ok((id, name))
        }
        0 => Err(ServiceError {
            status: 404,
            code: "RoleDefinitionNotFound".into(),
            message: format!("Role '{role}' doesn't exist."),
        }
        .into()),
        _ => bail!("more than one role is named `{role}`; give its id"),
    }
}

/// `PUT {first assignable scope}/providers/Microsoft.Authorization/roleDefinitions/{new}`.
pub async fn create_definition(conn: &Connection, properties: &Value) -> anyhow::Result<Value> {
    let scope = properties["assignableScopes"][0]
        .as_str()
        .ok_or_else(|| anyhow!("a role definition needs at least one assignable scope"))?;
    let path = format!(
        "{}/providers/Microsoft.Authorization/roleDefinitions/{}?api-version={AUTHZ_API}",
        scope.trim_end_matches('/'),
        uuid::Uuid::new_v4()
    );
    conn.arm(
        Method::PUT,
        &path,
        Some(&json!({ "properties": properties })),
    )
    .await
}

/// Deletes the custom role named `name` (or with that id) visible at `scope`.
pub async fn delete_definition(
    conn: &Connection,
    scope: &str,
    name: &str,
) -> anyhow::Result<Value> {
    let (id, _) = resolve_role(conn, scope, name).await?;
    conn.arm(
        Method::DELETE,
        &format!("{id}?api-version={AUTHZ_API}"),
        None,
    )
    .await
}

// ---------------------------------------------------------------------------------------
// Role assignments

/// Creates an assignment of `role_id` to `principal` at `scope`.
pub async fn assign(
    conn: &Connection,
    scope: &str,
    role_id: &str,
    principal: &Principal,
    description: Option<&str>,
) -> anyhow::Result<Value> {
    let mut properties = json!({ "roleDefinitionId": role_id, "principalId": principal.object_id });
    if let Some(t) = &principal.principal_type {
        properties["principalType"] = json!(t);
    }
    if let Some(d) = description {
        properties["description"] = json!(d);
    }
    let path = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/{}?api-version={AUTHZ_API}",
        scope.trim_end_matches('/'),
        uuid::Uuid::new_v4()
    );
    conn.arm(
        Method::PUT,
        &path,
        Some(&json!({ "properties": properties })),
    )
    .await
}

/// Assigns the role named `role` to `assignee` at `scope`: what `role assignment create`
/// and `lanyard up` do.
pub async fn grant(
    conn: &Connection,
    assignee: &Principal,
    role: &str,
    scope: &str,
) -> anyhow::Result<Value> {
    let (role_id, _) = resolve_role(conn, scope, role).await?;
    assign(conn, scope, &role_id, assignee, None).await
}

/// Assignments at `scope`: with `at_scope`, only at or above it; with `principal`, only
/// that principal's (at, above or below).
pub async fn assignments(
    conn: &Connection,
    scope: &str,
    principal: Option<&str>,
    at_scope: bool,
) -> anyhow::Result<Vec<Value>> {
    let mut clauses = Vec::new();
    if at_scope {
        clauses.push("atScope()".to_string());
    }
    if let Some(p) = principal {
        clauses.push(format!("principalId eq {}", literal(p)));
    }
    let mut path = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments?api-version={AUTHZ_API}",
        scope.trim_end_matches('/')
    );
    if !clauses.is_empty() {
        path.push_str(&format!("&$filter={}", enc(&clauses.join(" and "))));
    }
    conn.arm_list(&path).await
}

pub async fn delete_assignment(conn: &Connection, id: &str) -> anyhow::Result<Value> {
    conn.arm(
        Method::DELETE,
        &format!("{id}?api-version={AUTHZ_API}"),
        None,
    )
    .await
}

/// Adds `roleDefinitionName` and `principalName` to flattened assignments, as
/// `az role assignment list` shows them. Names that cannot be read are left out.
pub async fn with_names(conn: &Connection, items: Vec<Value>) -> Vec<Value> {
    let sub = Ids::of(conn).subscription();
    let roles: HashMap<String, String> = definitions(conn, sub.as_str(), None)
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|d| {
            Some((
                d["name"].as_str()?.to_ascii_lowercase(),
                d["properties"]["roleName"].as_str()?.to_string(),
            ))
        })
        .collect();
    let principals: HashMap<String, String> = conn
        .list_all(
            &format!("{}/v1.0/servicePrincipals", conn.base),
            crate::client::GRAPH_SCOPE,
        )
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            Some((
                p["id"].as_str()?.to_ascii_lowercase(),
                p["displayName"].as_str()?.to_string(),
            ))
        })
        .collect();
    items
        .into_iter()
        .map(|mut a| {
            let role = a["roleDefinitionId"]
                .as_str()
                .and_then(|id| id.rsplit('/').next())
                .map(str::to_ascii_lowercase)
                .and_then(|g| roles.get(&g).cloned());
            let principal = a["principalId"]
                .as_str()
                .map(str::to_ascii_lowercase)
                .and_then(|p| principals.get(&p).cloned());
            if let Some(map) = a.as_object_mut() {
                if let Some(r) = role {
                    map.insert("roleDefinitionName".into(), Value::String(r));
                }
                if let Some(p) = principal {
                    map.insert("principalName".into(), Value::String(p));
                }
            }
            a
        })
        .collect()
}
