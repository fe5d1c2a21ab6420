//! ARM resources through the control plane's REST API.

use anyhow::{anyhow, bail};
use lanyard_domain::workload::{self, WorkloadType, WORKLOAD_TYPES};
use lanyard_domain::ResourceId;
use reqwest::Method;
use serde_json::{json, Value};

use super::enc;
use crate::client::Connection;

pub const GROUPS_API: &str = "2021-04-01";
pub const ACTIVITY_API: &str = "2015-04-01";

/// A resource type the CLI manages, with the api-version it sends.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub namespace: &'static str,
    pub type_name: &'static str,
    pub api_version: &'static str,
    /// How messages name it.
    pub noun: &'static str,
}

impl Kind {
    pub fn full_type(&self) -> String {
        format!("{}/{}", self.namespace, self.type_name)
    }

    /// A type that can hold managed identities.
    pub const fn workload(w: &WorkloadType) -> Self {
        Kind {
            namespace: w.namespace,
            type_name: w.type_name,
            api_version: w.api_version,
            noun: w.noun,
        }
    }
}

/// Every type that can hold managed identities (see [`lanyard_domain::workload`]).
pub fn workloads() -> impl Iterator<Item = Kind> {
    WORKLOAD_TYPES.iter().map(Kind::workload)
}

pub const IDENTITY: Kind = Kind {
    namespace: "Microsoft.ManagedIdentity",
    type_name: "userAssignedIdentities",
    api_version: "2023-01-31",
    noun: "identity",
};
pub const VM: Kind = Kind::workload(&workload::VIRTUAL_MACHINES);
pub const WEBAPP: Kind = Kind::workload(&workload::SITES);
pub const VAULT: Kind = Kind {
    namespace: "Microsoft.KeyVault",
    type_name: "vaults",
    api_version: "2023-07-01",
    noun: "key vault",
};
pub const ACCOUNT: Kind = Kind::workload(&workload::STORAGE_ACCOUNTS);

/// The CLI's kind for an ARM type (`{namespace}/{type}`, case-insensitive).
pub fn kind_of(full_type: &str) -> Option<Kind> {
    [IDENTITY, VAULT]
        .into_iter()
        .chain(workloads())
        .find(|k| k.full_type().eq_ignore_ascii_case(full_type))
}

/// The ids the CLI builds, in the subscription of one connection.
pub struct Ids<'a> {
    pub subscription: &'a str,
}

impl Ids<'_> {
    pub fn of(conn: &Connection) -> Ids<'_> {
        Ids {
            subscription: &conn.subscription_id,
        }
    }

    pub fn subscription(&self) -> ResourceId {
        ResourceId::subscription(self.subscription)
    }

    pub fn group(&self, group: &str) -> ResourceId {
        ResourceId::resource_group(self.subscription, group)
    }

    pub fn resource(&self, kind: Kind, group: &str, name: &str) -> ResourceId {
        self.group(group)
            .with_provider(kind.namespace, kind.type_name, name)
    }

    /// `given` as a resource id: itself when it is one, else a resource of `kind` named
    /// `given` in `group`.
    pub fn resource_or_name(
        &self,
        kind: Kind,
        group: Option<&str>,
        given: &str,
    ) -> anyhow::Result<ResourceId> {
        if given.starts_with('/') {
            return ResourceId::parse(given).map_err(|e| anyhow!("`{given}`: {e}"));
        }
        let group = group.ok_or_else(|| {
            anyhow!("`{given}` is not a resource id: give its resource group with --resource-group")
        })?;
        Ok(self.resource(kind, group, given))
    }
}

fn with_api(id: &ResourceId, api: &str) -> String {
    format!("{}?api-version={api}", id.as_str())
}

/// A subscription must be known to build ids.
pub fn require_subscription(conn: &Connection) -> anyhow::Result<()> {
    if conn.subscription_id.is_empty() {
        bail!("no subscription: pass --subscription or set AZURE_SUBSCRIPTION_ID");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Resource groups

pub async fn put_group(
    conn: &Connection,
    name: &str,
    location: &str,
    tags: &Value,
) -> anyhow::Result<Value> {
    let id = Ids::of(conn).group(name);
    conn.arm(
        Method::PUT,
        &with_api(&id, GROUPS_API),
        Some(&json!({ "location": location, "tags": tags })),
    )
    .await
}

pub async fn get_group(conn: &Connection, name: &str) -> anyhow::Result<Value> {
    let id = Ids::of(conn).group(name);
    conn.arm(Method::GET, &with_api(&id, GROUPS_API), None)
        .await
}

pub async fn list_groups(conn: &Connection) -> anyhow::Result<Vec<Value>> {
    let sub = Ids::of(conn).subscription();
    conn.arm_list(&format!(
        "{}/resourcegroups?api-version={GROUPS_API}",
        sub.as_str()
    ))
    .await
}

pub async fn delete_group(conn: &Connection, name: &str) -> anyhow::Result<()> {
    let id = Ids::of(conn).group(name);
    conn.arm(Method::DELETE, &with_api(&id, GROUPS_API), None)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Every resource, of any type

/// What `resource list` asks for; each field narrows the list.
#[derive(Debug, Clone, Default)]
pub struct ResourceFilter {
    pub name: Option<String>,
    pub location: Option<String>,
    /// `Namespace/type`.
    pub resource_type: Option<String>,
    /// A tag name, and its value when one is given.
    pub tag: Option<(String, Option<String>)>,
}

impl ResourceFilter {
    /// The `$filter` ARM's generic listing takes (`None` when nothing narrows the list).
    pub fn odata(&self) -> Option<String> {
        let quoted = |v: &str| format!("'{}'", v.replace('\'', "''"));
        let mut clauses = Vec::new();
        if let Some(n) = &self.name {
            clauses.push(format!("name eq {}", quoted(n)));
        }
        if let Some(l) = &self.location {
            clauses.push(format!("location eq {}", quoted(l)));
        }
        if let Some(t) = &self.resource_type {
            clauses.push(format!("resourceType eq {}", quoted(t)));
        }
        if let Some((name, value)) = &self.tag {
            clauses.push(format!("tagName eq {}", quoted(name)));
            if let Some(v) = value {
                clauses.push(format!("tagValue eq {}", quoted(v)));
            }
        }
        (!clauses.is_empty()).then(|| clauses.join(" and "))
    }
}

/// Every resource in `group`, or in the whole subscription, that the caller may read and
/// `filter` admits (`GET .../resources`, all pages), with their times and provisioning state.
pub async fn list_all_types(
    conn: &Connection,
    group: Option<&str>,
    filter: &ResourceFilter,
) -> anyhow::Result<Vec<Value>> {
    let ids = Ids::of(conn);
    let scope = match group {
        Some(g) => ids.group(g),
        None => ids.subscription(),
    };
    let mut path = format!(
        "{}/resources?api-version={GROUPS_API}&$expand={}",
        scope.as_str(),
        enc("createdTime,changedTime,provisioningState")
    );
    if let Some(f) = filter.odata() {
        path.push_str(&format!("&$filter={}", enc(&f)));
    }
    conn.arm_list(&path).await
}

// ---------------------------------------------------------------------------------------
// Any resource of a kind

pub async fn put(
    conn: &Connection,
    kind: Kind,
    id: &ResourceId,
    body: &Value,
) -> anyhow::Result<Value> {
    conn.arm(Method::PUT, &with_api(id, kind.api_version), Some(body))
        .await
}

pub async fn patch(
    conn: &Connection,
    kind: Kind,
    id: &ResourceId,
    body: &Value,
) -> anyhow::Result<Value> {
    conn.arm(Method::PATCH, &with_api(id, kind.api_version), Some(body))
        .await
}

pub async fn get(conn: &Connection, kind: Kind, id: &ResourceId) -> anyhow::Result<Value> {
    conn.arm(Method::GET, &with_api(id, kind.api_version), None)
        .await
}

pub async fn delete(conn: &Connection, kind: Kind, id: &ResourceId) -> anyhow::Result<()> {
    conn.arm(Method::DELETE, &with_api(id, kind.api_version), None)
        .await?;
    Ok(())
}

/// Resources of `kind` in `group`, or in the whole subscription.
pub async fn list(
    conn: &Connection,
    kind: Kind,
    group: Option<&str>,
) -> anyhow::Result<Vec<Value>> {
    let ids = Ids::of(conn);
    let scope = match group {
        Some(g) => ids.group(g),
        None => ids.subscription(),
    };
    conn.arm_list(&format!(
        "{}/providers/{}/{}?api-version={}",
        scope.as_str(),
        kind.namespace,
        kind.type_name,
        kind.api_version
    ))
    .await
}

/// The one resource of `kind` named `name` in the subscription (for commands whose `-g`
/// is optional, as `az keyvault show -n` is).
pub async fn find_by_name(conn: &Connection, kind: Kind, name: &str) -> anyhow::Result<ResourceId> {
    let found: Vec<ResourceId> = list(conn, kind, None)
        .await?
        .iter()
        .filter(|r| {
            r["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .filter_map(|r| r["id"].as_str().and_then(|id| ResourceId::parse(id).ok()))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(crate::client::ServiceError {
            status: 404,
            code: "ResourceNotFound".into(),
            message: format!("The {} '{name}' was not found.", kind.noun),
        }
        .into()),
        many => bail!(
            "more than one {} is named `{name}`; give --resource-group: {}",
            kind.noun,
            many.iter()
                .map(ResourceId::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `id` from `-g` and `-n`, or by looking the name up when `-g` is absent.
pub async fn locate(
    conn: &Connection,
    kind: Kind,
    group: Option<&str>,
    name: &str,
) -> anyhow::Result<ResourceId> {
    match group {
        Some(g) => Ok(Ids::of(conn).resource(kind, g, name)),
        None if name.starts_with('/') => {
            ResourceId::parse(name).map_err(|e| anyhow!("`{name}`: {e}"))
        }
        None => find_by_name(conn, kind, name).await,
    }
}

// ---------------------------------------------------------------------------------------
// User-assigned identities and federated credentials

pub const FIC_TYPE: &str = "federatedIdentityCredentials";

pub fn credential_id(identity: &ResourceId, name: &str) -> ResourceId {
    identity.with_child(FIC_TYPE, name)
}

pub async fn put_credential(
    conn: &Connection,
    identity: &ResourceId,
    name: &str,
    issuer: &str,
    subject: &str,
    audiences: &[String],
) -> anyhow::Result<Value> {
    let body = json!({
        "properties": { "issuer": issuer, "subject": subject, "audiences": audiences }
    });
    put(conn, IDENTITY, &credential_id(identity, name), &body).await
}

pub async fn list_credentials(
    conn: &Connection,
    identity: &ResourceId,
) -> anyhow::Result<Vec<Value>> {
    conn.arm_list(&format!(
        "{}/{FIC_TYPE}?api-version={}",
        identity.as_str(),
        IDENTITY.api_version
    ))
    .await
}

// ---------------------------------------------------------------------------------------
// Creation, shared by the commands and `lanyard up`

pub async fn create_identity(
    conn: &Connection,
    group: &str,
    name: &str,
    location: &str,
    tags: &Value,
) -> anyhow::Result<Value> {
    let id = Ids::of(conn).resource(IDENTITY, group, name);
    put(
        conn,
        IDENTITY,
        &id,
        &json!({ "location": location, "tags": tags }),
    )
    .await
}

/// How a new vault authorizes its data plane, and its protections.
#[derive(Debug, Clone)]
pub struct VaultSettings {
    /// RBAC (`true`) or access policies.
    pub rbac: bool,
    pub sku: String,
    pub retention_days: Option<u32>,
    pub purge_protection: Option<bool>,
    /// Access policy entries (ignored by the data plane when `rbac`).
    pub access_policies: Vec<Value>,
}

impl Default for VaultSettings {
    fn default() -> Self {
        Self {
            rbac: true,
            sku: "standard".into(),
            retention_days: None,
            purge_protection: None,
            access_policies: Vec::new(),
        }
    }
}

pub async fn create_vault(
    conn: &Connection,
    group: &str,
    name: &str,
    location: &str,
    settings: &VaultSettings,
    tags: &Value,
) -> anyhow::Result<Value> {
    let mut properties = json!({
        "tenantId": conn.tenant_id,
        "sku": { "family": "A", "name": settings.sku },
        "enableRbacAuthorization": settings.rbac,
        "accessPolicies": settings.access_policies,
    });
    if let Some(days) = settings.retention_days {
        properties["softDeleteRetentionInDays"] = json!(days);
    }
    if let Some(p) = settings.purge_protection {
        properties["enablePurgeProtection"] = json!(p);
    }
    let body = json!({ "location": location, "properties": properties, "tags": tags });
    put(
        conn,
        VAULT,
        &Ids::of(conn).resource(VAULT, group, name),
        &body,
    )
    .await
}

pub async fn create_account(
    conn: &Connection,
    group: &str,
    name: &str,
    location: &str,
    sku: &str,
    kind: &str,
    tags: &Value,
) -> anyhow::Result<Value> {
    let body = json!({
        "location": location, "sku": { "name": sku }, "kind": kind,
        "properties": {}, "tags": tags,
    });
    put(
        conn,
        ACCOUNT,
        &Ids::of(conn).resource(ACCOUNT, group, name),
        &body,
    )
    .await
}

// ---------------------------------------------------------------------------------------
// Key vaults

/// `PUT {vault}/accessPolicies/add` with one entry.
pub async fn add_access_policy(
    conn: &Connection,
    vault: &ResourceId,
    tenant_id: &str,
    object_id: &str,
    permissions: &Value,
) -> anyhow::Result<Value> {
    let path = format!(
        "{}/accessPolicies/add?api-version={}",
        vault.as_str(),
        VAULT.api_version
    );
    let body = json!({
        "properties": { "accessPolicies": [
            { "tenantId": tenant_id, "objectId": object_id, "permissions": permissions }
        ]}
    });
    conn.arm(Method::PUT, &path, Some(&body)).await
}

// ---------------------------------------------------------------------------------------
// Activity log

/// `GET .../Microsoft.Insights/eventtypes/management/values?$filter=...`, every page.
pub async fn activity(
    conn: &Connection,
    filter: &str,
    max: Option<usize>,
) -> anyhow::Result<Vec<Value>> {
    let sub = Ids::of(conn).subscription();
    let path = format!(
        "{}/providers/Microsoft.Insights/eventtypes/management/values?api-version={ACTIVITY_API}&$filter={}",
        sub.as_str(),
        enc(filter)
    );
    let mut events = conn.arm_list(&path).await?;
    if let Some(max) = max {
        events.truncate(max);
    }
    Ok(events)
}
