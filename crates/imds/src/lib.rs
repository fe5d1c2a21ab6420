//! Identity endpoints: how a workload gets a token with no secret.
//!
//! A workload session binds one resource to a loopback listener of its own and to an
//! identity header. On that listener the IMDS protocol (`/metadata/identity/oauth2/token`,
//! `Metadata: true`) and the App Service protocol (`/msi/token`, `X-IDENTITY-HEADER`, and the
//! legacy `secret` header) hand out tokens for the identities attached to the resource, and
//! only those. `lanyard run --as` opens a session through the management host's session API.
//!
//! The protocols carry no secret a local process could not read, so a session's listener
//! serves only the process that opened the session and its descendants ([`attest`]), and a
//! session ends as soon as its opener loses write on the resource or the resource is deleted
//! ([`service`]).
//!
//! Layout:
//! - [`attest`]: which local process is at the other end of a loopback connection (`/proc`).
//! - [`protocol`]: the wire rules as pure functions (selectors, versions, SSRF checks, bodies).
//! - [`resolve`]: which attached identity a request selects (pure).
//! - [`service`]: sessions and their listeners, the token cache, throttling, sign-in log.
//! - [`endpoint`]: the token endpoints of a session listener.
//! - [`admin`]: the session API on the management host.

pub mod admin;
pub mod attest;
pub mod endpoint;
pub mod protocol;
pub mod resolve;
pub mod service;

pub use service::IdentityService;
