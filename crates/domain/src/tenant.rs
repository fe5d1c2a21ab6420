//! Tenants and subscriptions.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A directory: the boundary of identities and of token issuance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: Uuid,
    pub display_name: String,
    /// Default domain, e.g. `lanyard.localhost`.
    pub default_domain: String,
}

/// A subscription: the top of the resource hierarchy below the root, owned by one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub display_name: String,
    pub state: SubscriptionState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionState {
    Enabled,
    Disabled,
}

impl SubscriptionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "Enabled",
            Self::Disabled => "Disabled",
        }
    }
}
