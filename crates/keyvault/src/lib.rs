//! Key Vault: the vault resource's rules, and the secrets data plane on
//! `{vault}.vault.{domain}` that unmodified Key Vault SDKs drive.
//!
//! Layout:
//! - [`vault`]: the `Microsoft.KeyVault/vaults` resource for the control plane (PUT, PATCH,
//!   access policy operations, the protections that cannot be turned off) and the settings
//!   the data plane reads from it. Pure.
//! - [`deleted`]: soft-deleted vaults: the record a vault deletion keeps, its expiry, the
//!   name it reserves, recovery (`createMode: recover`) and purge (refused under purge
//!   protection). Pure.
//! - [`names`]: secret names, versions and vault names. Pure.
//! - [`route`]: which secret operation a method and path name. Pure.
//! - [`wire`]: request bodies and the answers' shapes (bundles, items, pages). Pure.
//! - [`stored`]: the documents kept per vault and their key layout. Pure.
//! - [`backup`]: backup blobs, sealed under the KEK and bound to the subscription.
//! - [`errors`]: failures with Key Vault's status, code and inner code; they become HTTP
//!   only as [`lanyard_platform::ApiError`].
//! - [`challenge`]: authentication: the accepted audiences and the 401 challenge.
//! - [`authorize`]: RBAC data actions or access-policy permissions per operation.
//! - [`resolve`]: the vault a host names, and its data key (created on first use); both
//!   kept in memory (bounded, [`lanyard_platform::bounded`]), the record only while no
//!   commit has happened since it was read.
//! - [`secrets`]: the operations over the store, retention included; concurrent reads of
//!   one secret share a round trip ([`lanyard_platform::coalesce`]).
//! - [`http`]: the router and its thin handler.
//!
//! A request: find the vault (404 if none) → authenticate (401 with the challenge) →
//! route (400/404/405) → authorize (403) → read the body → unlock the vault's data key →
//! operate → answer. Secret values
//! exist in clear only in the request, the answer and memory; they are sealed under the
//! vault's data key at rest, never logged, and never echoed in errors.

pub mod authorize;
pub mod backup;
pub mod challenge;
pub mod deleted;
pub mod errors;
pub mod http;
pub mod names;
pub mod resolve;
pub mod route;
pub mod secrets;
pub mod stored;
pub mod vault;
pub mod wire;

pub use http::router;
