//! Where a role may be assigned.

use lanyard_domain::{ResourceId, RoleDefinition};
use uuid::Uuid;

/// A role assigned outside its `assignableScopes`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "role `{role_name}` (`{role_id}`) cannot be assigned at `{scope}`: {}",
    describe_scopes(.assignable_scopes)
)]
pub struct NotAssignable {
    pub role_id: Uuid,
    pub role_name: String,
    pub scope: String,
    pub assignable_scopes: Vec<String>,
}

fn describe_scopes(scopes: &[String]) -> String {
    if scopes.is_empty() {
        return "it has no assignable scopes".to_string();
    }
    let list = scopes
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("it may be assigned only at or below {list}")
}

/// Refuses an assignment of `role` at `scope` unless `scope` is at or below one of the
/// role's assignable scopes (built-in roles: `/`, so anywhere).
pub fn check_assignable(role: &RoleDefinition, scope: &ResourceId) -> Result<(), NotAssignable> {
    if role.assignable_scopes.iter().any(|s| scope.is_within(s)) {
        Ok(())
    } else {
        Err(NotAssignable {
            role_id: role.id,
            role_name: role.role_name.clone(),
            scope: scope.to_string(),
            assignable_scopes: role
                .assignable_scopes
                .iter()
                .map(ToString::to_string)
                .collect(),
        })
    }
}
