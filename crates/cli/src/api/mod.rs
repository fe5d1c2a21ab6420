//! Typed calls to the server's public REST APIs, shared by the `az`-shaped commands and by
//! `lanyard up` (which builds its scenario through exactly these functions).
//!
//! - [`resources`]: ARM resources: groups, user-assigned identities and their federated
//!   credentials, VMs and web apps with their `identity` block, vaults, storage accounts.
//! - [`identity_block`]: the `identity` changes `assign` and `remove` send. Pure.
//! - [`rbac`]: role definitions and assignments, and who `--assignee` names.
//! - [`secrets`]: the Key Vault secrets data plane on `{vault}.vault.{domain}`.
//! - [`blobs`]: the blob data plane on `{account}.blob.{domain}`.
//! - [`workloads`]: VMs and web apps with their identities.
//! - [`present`]: reshaping answers the way `az` prints them. Pure.

pub mod blobs;
pub mod identity_block;
pub mod present;
pub mod rbac;
pub mod resources;
pub mod secrets;
pub mod workloads;

/// Percent-encodes one query value or path segment.
pub fn enc(text: &str) -> String {
    urlencoding::encode(text).into_owned()
}

/// Whether `text` is a GUID.
pub fn is_guid(text: &str) -> bool {
    uuid::Uuid::parse_str(text).is_ok()
}
