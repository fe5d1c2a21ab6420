//! Azure RBAC and Key Vault access-policy evaluation for Lanyard: pure functions over
//! inputs that storage loads; the engine never queries anything. Default deny.
//!
//! Modules:
//! - [`pattern`]: action patterns (`*`, `*/read`, `Microsoft.Compute/*`), compiled once,
//!   matched ASCII-case-insensitively; `*` matches any run of characters, `/` included, and
//!   `/*/` also matches a single `/` (so `userAssignedIdentities/*/assign/action` grants
//!   `userAssignedIdentities/assign/action`, as on Azure).
//! - [`index`]: [`AccessIndex`], the role assignments, role definitions and group
//!   memberships, indexed by principal and by scope and updated incrementally. A check
//!   costs O(scope depth + assignments of the principal and its groups).
//! - [`decision`]: [`AccessRequest`] and the explained [`Decision`] (the [`Grant`] that
//!   allowed it, or the [`Denial`] with its nearest [`Miss`]es).
//! - [`assignable`]: [`check_assignable`], refusing assignments outside a role's
//!   `assignableScopes` with a [`NotAssignable`] that says where the role may go. Checks
//!   apply the same rule: such an assignment, if stored anyway, is ignored.
//! - [`policy`]: Key Vault access policies ([`AccessPolicy`]), a second and separate
//!   evaluator ([`check_secret_permission`], [`check_access_policy`]).
//! - [`reference`](mod@reference): a naive evaluator written for clarity, the oracle for tests.
//!
//! [`AccessIndex`] in short (all updates are incremental; nothing is rebuilt):
//! - roles: `upsert_role(&RoleDefinition)`, `remove_role(Uuid) -> bool`, `has_role`;
//!   assignments may name a role that is not (yet, or any more) defined: they grant nothing.
//! - assignments: `add_assignment(&RoleAssignment)` (replaces one with the same id),
//!   `remove_assignment(Uuid) -> bool`, `remove_assignments_of_principal(Uuid) -> usize`,
//!   `len`, and lookups `assignments_for(principal)`, `assignments_at(scope)`,
//!   `assignments_covering(scope)` (ARM's `atScope()`), each an iterator of
//!   [`AssignmentRef`].
//! - groups: `set_group_members(group, &[members])` replaces a group's direct members
//!   (members may be groups; membership is transitive), `group_members`, `groups_of`.
//! - checks: `check(&AccessRequest) -> Decision` (at most [`Denial::MAX_MISSES`] misses),
//!   `check_explaining(&AccessRequest, max_misses)` for a CLI, and `allows(&AccessRequest)
//!   -> bool` when no explanation is wanted (it allocates nothing).
//! - `memory_usage() -> MemoryUsage`: heap bytes computed from capacities.
//!
//! Explanations name the principal by object id, or by a name the caller passes to
//! [`Decision::explain_as`]: the engine does not know display names.
//!
//! Semantics: a principal may perform an action at a scope when some role assignment to
//! it, or to a group it belongs to (transitively), sits at that scope or above it (`/`,
//! subscription, resource group, resource, child resource), whose role may be assigned at
//! the assignment's scope (at or below one of its `assignableScopes`; built-in roles
//! anywhere: an assignment left outside them by a change of the role grants nothing), and
//! that role has a permission block whose allow list of the request's kind matches the
//! action and whose exclusion list of that kind does not. Exclusions (`notActions`,
//! `notDataActions`) subtract only within their own block of their own role. Control
//! actions (`actions`) and data actions (`dataActions`) are separate spaces: `*` in
//! `actions` never grants a data action. Assignment conditions (ABAC) are not evaluated.
//!
//! ```
//! use lanyard_authz::{AccessIndex, AccessRequest};
//! use lanyard_domain::{builtin, PrincipalType, ResourceId, RoleAssignment};
//!
//! let mut index = AccessIndex::with_roles(&builtin::built_in_roles());
//! let rg = ResourceId::parse("/subscriptions/s1/resourceGroups/rg1").unwrap();
//! let app = uuid::Uuid::new_v4();
//! let secrets_user = builtin::built_in_by_name("Key Vault Secrets User").unwrap();
//! # let now = time::OffsetDateTime::UNIX_EPOCH;
//! index.add_assignment(&RoleAssignment {
//!     id: uuid::Uuid::new_v4(),
//!     scope: rg.clone(),
//!     role_definition_id: secrets_user.id,
//!     principal_id: app,
//!     principal_type: PrincipalType::ServicePrincipal,
//!     description: None,
//!     condition: None,
//!     condition_version: None,
//!     created_on: now,
//!     updated_on: now,
//!     created_by: None,
//!     updated_by: None,
//! });
//! let vault = rg.with_provider("Microsoft.KeyVault", "vaults", "kv1");
//! let get = "Microsoft.KeyVault/vaults/secrets/getSecret/action";
//! assert!(index.check(&AccessRequest::data(app, get, &vault)).is_allowed());
//! let set = "Microsoft.KeyVault/vaults/secrets/setSecret/action";
//! let denied = index.check(&AccessRequest::data(app, set, &vault));
//! assert!(!denied.is_allowed());
//! assert!(denied.explain_as(Some("app1")).contains("holds Key Vault Secrets User"));
//! ```

pub mod assignable;
pub mod decision;
mod hash;
pub mod index;
pub mod pattern;
pub mod policy;
pub mod reference;
mod role;

pub use assignable::{check_assignable, NotAssignable};
pub use decision::{AccessRequest, ActionKind, Decision, Denial, Grant, Miss, MissReason};
pub use index::{AccessIndex, AssignmentRef, MemoryUsage};
pub use pattern::ActionPattern;
pub use policy::{
    check_access_policy, check_secret_permission, AccessPolicy, PolicyCaller, PolicyCollection,
    PolicyDecision, PolicyDenial, PolicyGrant, PolicyMiss, PolicyMissReason, PolicyPermissions,
    SecretPermission, UnknownSecretPermission,
};

#[cfg(test)]
mod tests {
    #[test]
    fn public_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::AccessIndex>();
        check::<crate::Decision>();
        check::<crate::NotAssignable>();
        check::<crate::PolicyDecision>();
        check::<crate::reference::Environment>();
        check::<crate::ActionPattern>();
    }
}
