//! Shared helpers for Lanyard's integration tests.
//!
//! Layout:
//! - [`arm`]: REST calls as a principal (client-credentials token, then the control plane).
//! - [`db`]: a fresh database per test: a SQLite file in a temporary directory, or a
//!   PostgreSQL database created for the test and dropped after it. It is the
//!   `lanyard-testdb` crate, re-exported: the storage crate's tests use it directly, without
//!   linking the server.
//! - [`python`]: the venv's Python for the official Azure SDKs, with private name resolution.
//! - [`server`]: a server on a free port, a client that trusts its CA and resolves its hosts;
//!   a peer server on the same database.

pub mod arm;
pub mod python;
pub mod server;

pub use lanyard_testdb as db;
pub use server::{Backend, TestServer};
