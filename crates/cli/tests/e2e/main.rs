//! End-to-end tests: one binary, one module per area. Tests that matter on both storage
//! backends are written once and instantiated for each with `both_backends!`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod arm;
mod blob;
mod cli;
mod foundation;
mod identity;
mod keyvault;
mod login;
mod reliability;
mod scale_out;
