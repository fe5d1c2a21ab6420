//! What every Lanyard plane shares at run time.
//!
//! Layout:
//! - [`access`]: the authorization index, loaded at start and kept in step with the feed.
//! - [`authn`]: the bearer token of a request, validated: who is calling.
//! - [`bounded`] and [`coalesce`]: what the data planes' read paths keep in memory (bounded
//!   maps, values stamped with the commit generation) and how concurrent reads of one
//!   document share a store round trip.
//! - [`config`]: flags, environment and TOML merged and validated; [`config::NetLimits`].
//! - [`state`]: [`AppState`], what handlers share; the public URL of each plane; the
//!   follower that applies the store's commit feed to the in-memory views, so servers
//!   sharing a database see each other's changes ([`state::follow_feed`]).
//! - [`error`]: the one place errors become HTTP, in each plane's dialect.
//! - [`serve`]: the accept loops (TLS and plain HTTP) with graceful shutdown, and the bounds
//!   on what a client can hold: connections, handshake, headers, idle time; each request
//!   carries its connection's [`serve::Peer`].
//! - [`tokens`]: the signing key ring (persisted, rotated), issuance, validation, revocation,
//!   and the mint guard that makes issuance and revocation linearisable on each server.
//! - [`mod@transact`]: the one write path every plane's handlers take: load, plan, commit through
//!   [`AppState::commit`], and on a lost race load and plan again.
//!
//! The planes (token service, control plane, identity endpoints, Key Vault, blob) are crates
//! of their own that build a router over [`AppState`]; `lanyard-server` composes them.

pub mod access;
pub mod authn;
pub mod bounded;
pub mod coalesce;
pub mod config;
pub mod error;
pub mod serve;
pub mod state;
pub mod tokens;
pub mod transact;

pub use error::{ApiError, Dialect};
pub use state::{
    follow_feed, AccountName, AppState, Directory, Endpoints, FollowError, Generation, Shared,
    VaultName,
};
pub use transact::{transact, transact_checked, Attempt, Retry, Step};
