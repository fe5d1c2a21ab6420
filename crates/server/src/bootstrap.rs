//! First start: a tenant, a subscription, and an administrator service principal holding
//! Owner at the subscription. The administrator's client secret goes to a 0600 file in the
//! data directory and nowhere else (never a log line); the store keeps only its hash.

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use lanyard_domain::{
    builtin, Clock, Principal, PrincipalKind, PrincipalType, ResourceId, RoleAssignment,
    ServicePrincipalSource, Subscription, SubscriptionState, Tenant,
};
use lanyard_storage::{Batch, Change, CredentialRecord, Store, StoreError};

use crate::datadir::{self, DataDir, DataDirError};
use lanyard_platform::config::Config;
use lanyard_platform::Directory;

const DIRECTORY_KEY: &str = "directory";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("stored directory record is corrupt: {0}")]
    Corrupt(String),
}

/// The ids that name the bootstrap directory, kept in the store's meta table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DirectoryIds {
    tenant_id: Uuid,
    subscription_id: Uuid,
    admin_object_id: Uuid,
    admin_client_id: Uuid,
}

/// The administrator credential file (`admin.json`, mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminCredential {
    pub tenant_id: Uuid,
    pub subscription_id: Uuid,
    pub client_id: Uuid,
    pub object_id: Uuid,
    pub client_secret: String,
}

/// Where a running server can be reached (`endpoints.json`), for `lanyard env` and the CLI.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointsFile {
    pub port: u16,
    pub domain: String,
    pub ca_file: String,
}

/// Loads the directory, creating it on first start.
pub async fn ensure(
    dir: &DataDir,
    store: &dyn Store,
    config: &Config,
    clock: &dyn Clock,
) -> Result<Directory, BootstrapError> {
    if let Some(text) = store.meta(DIRECTORY_KEY).await? {
        let ids: DirectoryIds =
            serde_json::from_str(&text).map_err(|e| BootstrapError::Corrupt(e.to_string()))?;
        let tenant = store
            .tenants()
            .await?
            .into_iter()
            .find(|t| t.id == ids.tenant_id)
            .ok_or_else(|| BootstrapError::Corrupt("tenant missing".into()))?;
        let subscription = store
            .subscriptions()
            .await?
            .into_iter()
            .find(|s| s.id == ids.subscription_id)
            .ok_or_else(|| BootstrapError::Corrupt("subscription missing".into()))?;
        if !dir.admin_credential().exists() {
            tracing::warn!(
                path = %dir.admin_credential().display(),
                "administrator credential file is missing from this data directory"
            );
        }
        return Ok(Directory {
            tenant,
            subscription,
            admin_object_id: ids.admin_object_id,
            admin_client_id: ids.admin_client_id,
        });
    }

    let now = clock.now();
    let ids = DirectoryIds {
        tenant_id: Uuid::new_v4(),
        subscription_id: Uuid::new_v4(),
        admin_object_id: Uuid::new_v4(),
        admin_client_id: Uuid::new_v4(),
    };
    let tenant = Tenant {
        id: ids.tenant_id,
        display_name: "Lanyard".into(),
        default_domain: config.domain.clone(),
    };
    let subscription = Subscription {
        id: ids.subscription_id,
        tenant_id: ids.tenant_id,
        display_name: "Lanyard subscription".into(),
        state: SubscriptionState::Enabled,
    };
    let admin = Principal {
        object_id: ids.admin_object_id,
        tenant_id: ids.tenant_id,
        display_name: "lanyard-admin".into(),
        kind: PrincipalKind::ServicePrincipal {
            client_id: ids.admin_client_id,
            source: ServicePrincipalSource::Application,
        },
    };
    let (secret, hash) = lanyard_token::credentials::generate_client_secret();
    let credential_id = Uuid::new_v4();
    let owner = builtin::built_in_by_name("Owner")
        .ok_or_else(|| BootstrapError::Corrupt("built-in Owner role missing".into()))?;
    let scope = ResourceId::subscription(&ids.subscription_id.to_string());
    let assignment = RoleAssignment {
        id: Uuid::new_v4(),
        scope,
        role_definition_id: owner.id,
        principal_id: ids.admin_object_id,
        principal_type: PrincipalType::ServicePrincipal,
        description: Some("Administrator created at first start".into()),
        condition: None,
        condition_version: None,
        created_on: now,
        updated_on: now,
        created_by: None,
        updated_by: None,
    };

    // The credential file first: a directory whose administrator secret was lost would be
    // unusable, while a file without a directory is simply rewritten on the next start.
    let credential = AdminCredential {
        tenant_id: ids.tenant_id,
        subscription_id: ids.subscription_id,
        client_id: ids.admin_client_id,
        object_id: ids.admin_object_id,
        client_secret: secret.expose().to_string(),
    };
    let text = serde_json::to_vec_pretty(&credential)
        .map_err(|e| BootstrapError::Corrupt(e.to_string()))?;
    datadir::write_atomic(&dir.admin_credential(), &text, 0o600)?;

    let ids_text =
        serde_json::to_string(&ids).map_err(|e| BootstrapError::Corrupt(e.to_string()))?;
    let batch = Batch::new()
        .with(Change::PutTenant(tenant.clone()))
        .with(Change::PutSubscription(subscription.clone()))
        .with(Change::PutPrincipal(admin))
        .with(Change::PutCredential(CredentialRecord {
            id: credential_id,
            principal_id: ids.admin_object_id,
            kind: "secret".into(),
            body: json!({
                "displayName": "bootstrap administrator",
                "hash": hash,
            }),
            created_at: now,
        }))
        .with(Change::PutAssignment(assignment))
        .with(Change::PutMeta {
            key: DIRECTORY_KEY.into(),
            value: ids_text,
        });
    store.commit(batch).await?;
    tracing::info!(
        tenant = %ids.tenant_id,
        subscription = %ids.subscription_id,
        admin_client_id = %ids.admin_client_id,
        credential_file = %dir.admin_credential().display(),
        "bootstrapped a new directory"
    );
    Ok(Directory {
        tenant,
        subscription,
        admin_object_id: ids.admin_object_id,
        admin_client_id: ids.admin_client_id,
    })
}

/// Records where this server listens, for `lanyard env` and the CLI.
pub fn write_endpoints(dir: &DataDir, config: &Config, port: u16) -> Result<(), DataDirError> {
    let file = EndpointsFile {
        port,
        domain: config.domain.clone(),
        ca_file: dir.ca_cert().display().to_string(),
    };
    let text = json!(file).to_string();
    datadir::write_atomic(&dir.endpoints(), text.as_bytes(), 0o644)
}

/// Reads `admin.json`.
pub fn read_admin(dir: &DataDir) -> Result<AdminCredential, DataDirError> {
    let path = dir.admin_credential();
    let text = datadir::read_to_string(&path)?;
    serde_json::from_str(&text).map_err(|e| DataDirError::Read {
        path,
        reason: e.to_string(),
    })
}

/// Reads `endpoints.json`.
pub fn read_endpoints(dir: &DataDir) -> Result<EndpointsFile, DataDirError> {
    let path = dir.endpoints();
    let text = datadir::read_to_string(&path)?;
    serde_json::from_str(&text).map_err(|e| DataDirError::Read {
        path,
        reason: e.to_string(),
    })
}
