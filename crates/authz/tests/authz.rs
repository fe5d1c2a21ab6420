//! The one integration-test binary of `lanyard-authz`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "authz/kit.rs"]
mod kit;

#[path = "authz/assignable.rs"]
mod assignable;
#[path = "authz/differential.rs"]
mod differential;
#[path = "authz/explain.rs"]
mod explain;
#[path = "authz/index_updates.rs"]
mod index_updates;
#[path = "authz/policy.rs"]
mod policy;
#[path = "authz/properties.rs"]
mod properties;
#[path = "authz/scenarios.rs"]
mod scenarios;
