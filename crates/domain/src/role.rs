//! Role definitions and role assignments.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::id::ResourceId;
use crate::principal::PrincipalType;

/// One permission block of a role: what it grants, minus what it excludes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub not_actions: Vec<String>,
    #[serde(default)]
    pub data_actions: Vec<String>,
    #[serde(default)]
    pub not_data_actions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoleType {
    BuiltInRole,
    CustomRole,
}

impl RoleType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BuiltInRole => "BuiltInRole",
            Self::CustomRole => "CustomRole",
        }
    }
}

/// A named set of permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleDefinition {
    /// The GUID that names the definition.
    pub id: Uuid,
    pub role_name: String,
    pub description: String,
    pub role_type: RoleType,
    pub permissions: Vec<Permission>,
    /// Where the role may be assigned. Built-in roles: `/`.
    pub assignable_scopes: Vec<ResourceId>,
}

impl RoleDefinition {
    /// Whether the role may be assigned at `scope`: at or below one of its assignable scopes.
    pub fn is_assignable_at(&self, scope: &ResourceId) -> bool {
        self.assignable_scopes.iter().any(|s| scope.is_within(s))
    }

    /// The ARM id of this definition as seen from `subscription`
    /// (`/subscriptions/{s}/providers/Microsoft.Authorization/roleDefinitions/{guid}`).
    pub fn arm_id(&self, subscription: Option<&str>) -> String {
        match subscription {
            Some(s) => format!(
                "/subscriptions/{s}/providers/Microsoft.Authorization/roleDefinitions/{}",
                self.id
            ),
            None => format!(
                "/providers/Microsoft.Authorization/roleDefinitions/{}",
                self.id
            ),
        }
    }
}

/// A grant of one role to one principal at one scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleAssignment {
    /// The GUID that names the assignment.
    pub id: Uuid,
    pub scope: ResourceId,
    pub role_definition_id: Uuid,
    pub principal_id: Uuid,
    pub principal_type: PrincipalType,
    pub description: Option<String>,
    pub condition: Option<String>,
    pub condition_version: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_on: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_on: OffsetDateTime,
    pub created_by: Option<Uuid>,
    pub updated_by: Option<Uuid>,
}

impl RoleAssignment {
    /// `{scope}/providers/Microsoft.Authorization/roleAssignments/{guid}`.
    pub fn resource_id(&self) -> ResourceId {
        self.scope.with_provider(
            "Microsoft.Authorization",
            "roleAssignments",
            &self.id.to_string(),
        )
    }
}

/// Extracts the GUID from a role definition reference: either a bare GUID or any
/// `.../providers/Microsoft.Authorization/roleDefinitions/{guid}` id.
pub fn role_definition_guid(reference: &str) -> Option<Uuid> {
    let last = reference.trim_end_matches('/').rsplit('/').next()?;
    if reference.contains('/') {
        let lower = reference.to_ascii_lowercase();
        if !lower.contains("/providers/microsoft.authorization/roledefinitions/") {
            return None;
        }
    }
    Uuid::parse_str(last).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_definition_references() {
        let g = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
        assert!(role_definition_guid(g).is_some());
        assert!(role_definition_guid(&format!(
            "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/{g}"
        ))
        .is_some());
        assert!(role_definition_guid(&format!("/subscriptions/s/foo/{g}")).is_none());
        assert!(role_definition_guid("Owner").is_none());
    }
}
