//! Principals: who can hold a role assignment and, for service principals, get a token.
//!
//! A managed identity is a service principal whose credentials nobody can see; the platform
//! mints its tokens on behalf of the resource that holds it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::id::ResourceId;

/// A principal in a tenant, named by its object id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Object id (`oid` in tokens, `principalId` in ARM).
    pub object_id: Uuid,
    pub tenant_id: Uuid,
    pub display_name: String,
    pub kind: PrincipalKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PrincipalKind {
    User,
    Group {
        /// Object ids of direct members.
        members: Vec<Uuid>,
    },
    ServicePrincipal {
        /// Application (client) id (`appid`/`azp` in tokens).
        client_id: Uuid,
        source: ServicePrincipalSource,
    },
}

/// Where a service principal comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source")]
pub enum ServicePrincipalSource {
    /// An app registration whose owner holds credentials.
    Application,
    /// The system-assigned identity of `host`; lives and dies with it.
    SystemAssigned { host: ResourceId },
    /// A user-assigned identity resource.
    UserAssigned { identity: ResourceId },
}

/// The principal type ARM reports in role assignments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrincipalType {
    User,
    Group,
    ServicePrincipal,
    ForeignGroup,
    Device,
}

impl PrincipalType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Group => "Group",
            Self::ServicePrincipal => "ServicePrincipal",
            Self::ForeignGroup => "ForeignGroup",
            Self::Device => "Device",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::User,
            Self::Group,
            Self::ServicePrincipal,
            Self::ForeignGroup,
            Self::Device,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

impl Principal {
    pub fn principal_type(&self) -> PrincipalType {
        match self.kind {
            PrincipalKind::User => PrincipalType::User,
            PrincipalKind::Group { .. } => PrincipalType::Group,
            PrincipalKind::ServicePrincipal { .. } => PrincipalType::ServicePrincipal,
        }
    }

    /// The client id of a service principal.
    pub fn client_id(&self) -> Option<Uuid> {
        match &self.kind {
            PrincipalKind::ServicePrincipal { client_id, .. } => Some(*client_id),
            _ => None,
        }
    }

    /// Whether this is a managed identity (system- or user-assigned).
    pub fn is_managed_identity(&self) -> bool {
        matches!(
            &self.kind,
            PrincipalKind::ServicePrincipal {
                source: ServicePrincipalSource::SystemAssigned { .. }
                    | ServicePrincipalSource::UserAssigned { .. },
                ..
            }
        )
    }
}
