//! What every handler shares: configuration, the store, the clock, the directory.

use std::ops::Deref;
use std::sync::Arc;

use lanyard_domain::{SharedClock, Subscription, Tenant};
use lanyard_storage::Store;

use crate::access::AccessRuntime;
use crate::config::Config;
use crate::tokens::TokenRuntime;
use lanyard_storage::{Batch, Change, StoreError};

/// The tenant, subscription and administrator created at first start.
#[derive(Debug, Clone)]
pub struct Directory {
    pub tenant: Tenant,
    pub subscription: Subscription,
    pub admin_object_id: uuid::Uuid,
    pub admin_client_id: uuid::Uuid,
}

/// Shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Config,
    /// The port clients reach the HTTPS listener on (known once it is bound).
    pub port: u16,
    pub store: Arc<dyn Store>,
    pub clock: SharedClock,
    pub directory: Directory,
    pub tokens: Arc<TokenRuntime>,
    pub access: Arc<AccessRuntime>,
    /// Bumped by every commit that could change which identity a resource holds or whether
    /// a principal exists; caches of derived answers compare it instead of re-reading.
    pub generation: std::sync::atomic::AtomicU64,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// Commits `batch` and brings the in-memory views (authorization index, revocations) in
    /// step with it. Every write goes through here.
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let changes = batch.changes.clone();
        self.store.commit(batch).await?;
        if changes.iter().any(|c| {
            matches!(
                c,
                Change::PutResource(_)
                    | Change::DeleteResource(_)
                    | Change::DeleteResourcesWithin(_)
                    | Change::PutPrincipal(_)
                    | Change::DeletePrincipal(_)
                    | Change::SetRevocation { .. }
            )
        }) {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        for change in &changes {
            match change {
                Change::SetRevocation {
                    principal,
                    valid_after,
                } => self.tokens.revoked(*principal, *valid_after),
                Change::PutDocument(doc) => {
                    if let Some((principal, host, after)) =
                        crate::tokens::parse_host_revocation(doc)
                    {
                        self.tokens.revoked_for_host(principal, host, after);
                    }
                }
                _ => {}
            }
        }
        if let Err(e) = self.access.apply(self.store.as_ref(), &changes).await {
            // The write is durable; only the in-memory view lags. Say so loudly.
            tracing::error!(error = %e, "authorization index could not follow a commit");
        }
        Ok(())
    }

    /// The current commit generation (see [`Shared::generation`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Audiences the control plane accepts: ours and Azure's public ones.
    pub fn management_audiences(&self) -> Vec<String> {
        vec![
            format!("https://management.{}/", self.config.domain),
            self.endpoints().management(),
            "https://management.azure.com/".to_string(),
            "https://management.core.windows.net/".to_string(),
        ]
    }

    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            domain: self.config.domain.clone(),
            port: self.port,
        }
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The public URLs of each plane.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub domain: String,
    pub port: u16,
}

impl Endpoints {
    fn host(&self, name: &str) -> String {
        if self.port == 443 {
            format!("https://{name}")
        } else {
            format!("https://{name}:{}", self.port)
        }
    }

    /// The host every client can reach without name resolution: control plane and login.
    pub fn localhost(&self) -> String {
        self.host("localhost")
    }

    pub fn management(&self) -> String {
        self.host(&format!("management.{}", self.domain))
    }

    pub fn login(&self) -> String {
        self.host(&format!("login.{}", self.domain))
    }

    pub fn vault(&self, name: &str) -> String {
        self.host(&format!("{name}.vault.{}", self.domain))
    }

    /// The audience of every vault here (`https://vault.{domain}[:{port}]`): the Key Vault
    /// challenge's `resource`, whose host:port each vault's host:port ends with.
    pub fn vault_audience(&self) -> String {
        self.host(&format!("vault.{}", self.domain))
    }

    pub fn blob(&self, account: &str) -> String {
        self.host(&format!("{account}.blob.{}", self.domain))
    }
}

/// The vault a request on `{vault}.vault.{domain}` is for (a request extension).
#[derive(Debug, Clone)]
pub struct VaultName(pub String);

/// The storage account a request on `{account}.blob.{domain}` is for (a request extension).
#[derive(Debug, Clone)]
pub struct AccountName(pub String);
