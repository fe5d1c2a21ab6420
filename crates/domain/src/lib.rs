//! Lanyard's domain model: pure types and rules, no I/O.
//!
//! Layout:
//! - [`id`]: ARM resource ids and scopes (parse, format, parents, types).
//! - [`tenant`]: tenants and subscriptions.
//! - [`hosts`]: the host names Lanyard answers to, one description per host-bearing plane.
//! - [`principal`]: users, groups, service principals; managed identities are service
//!   principals backed by a resource.
//! - [`identity`]: the `identity` block of a resource and its PUT/PATCH rules.
//! - [`workload`]: the resource types that can hold managed identities, listed once.
//! - [`role`]: role definitions and role assignments.
//! - [`builtin`]: the built-in roles with Azure's GUIDs and permissions.
//! - [`clock`]: injected time.

pub mod builtin;
pub mod clock;
pub mod hosts;
pub mod id;
pub mod identity;
pub mod principal;
pub mod role;
pub mod tenant;
pub mod workload;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use id::{ResourceId, ResourceIdError, ScopeLevel};
pub use identity::{ChangeMode, IdentityChange, IdentityError, IdentityState, IdentityType};
pub use principal::{Principal, PrincipalKind, PrincipalType, ServicePrincipalSource};
pub use role::{Permission, RoleAssignment, RoleDefinition, RoleType};
pub use tenant::{Subscription, SubscriptionState, Tenant};
