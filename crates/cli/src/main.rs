//! The `lanyard` command: a thin layer of argument parsing over the library crates and the
//! server's public REST APIs.
//!
//! Layout:
//! - `main.rs` (here): the command tree, exit codes, error printing.
//! - [`serve`]: `lanyard serve`, which runs the server.
//! - [`env`]: `lanyard env`, which prints `export` lines for clients.
//! - [`run`]: `lanyard run --as`, a process with a resource's managed identity; with
//!   [`private_hosts`], its private name resolution.
//! - [`keys`]: `lanyard keys rotate`, which makes a new signing key current.
//! - [`hosts`]: `lanyard hosts [--apply]`, hosts-file lines for the data-plane host names.
//! - [`commands`]: the `az`-shaped commands (`group`, `resource`, `identity`, `vm`, `webapp`,
//!   `role`, `keyvault`, `storage`, `monitor`, `signin-log`) and `token`, `access`, `up`.
//! - [`api`]: typed calls to the REST APIs, shared by the commands and `up`.
//! - [`client`]: the connection (server, credential, tokens, errors of every plane).
//! - [`output`]: `--output` and `--query` as `az` has them.
//! - [`jwt`]: reading a token's claims for display.
//!
//! Exit codes: 0 success, 1 error (one line on stderr: the service's code and message),
//! 2 usage (clap's own), 3 access denied (the service answered 403, or `access explain`
//! found the action denied).

mod api;
mod client;
mod commands;
mod env;
mod hosts;
mod jwt;
mod keys;
mod output;
mod private_hosts;
mod run;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{
    access, compute, group, identity, keyvault, monitor, resource, role, storage, token, up,
};

#[derive(Parser)]
#[command(
    name = "lanyard",
    version,
    about = "Managed identity for your own infrastructure",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server and, on first run, build the example scenario; serve until Ctrl-C.
    Up(up::UpArgs),
    /// Run the server (HTTPS control plane, token service and data planes).
    Serve(serve::ServeArgs),
    /// Print `export` lines that point Azure SDKs and tools at a Lanyard data directory.
    Env(env::EnvArgs),
    /// Run a command as a resource, with that resource's managed identity.
    Run(run::RunArgs),
    /// Manage the token-signing keys of a running server.
    Keys(keys::KeysArgs),
    /// Print (or `--apply`) hosts-file lines for the vault and storage host names.
    Hosts(hosts::HostsArgs),
    /// Get a resource's token from its identity endpoint and show its claims.
    Token(token::TokenArgs),
    /// Ask the authorization engine whether a principal may do something, and why.
    Access(access::AccessArgs),
    /// Resource groups (as `az group`).
    Group(group::GroupArgs),
    /// Resources of every type (as `az resource list`).
    Resource(resource::ResourceArgs),
    /// User-assigned managed identities (as `az identity`).
    Identity(identity::IdentityArgs),
    /// Virtual machines and their identities (as `az vm`).
    Vm(compute::VmArgs),
    /// Web apps and their identities (as `az webapp`).
    Webapp(compute::WebappArgs),
    /// Role definitions and assignments (as `az role`).
    Role(role::RoleArgs),
    /// Key vaults and secrets (as `az keyvault`).
    Keyvault(keyvault::KeyvaultArgs),
    /// Storage accounts, containers and blobs (as `az storage`, `--auth-mode login`).
    Storage(storage::StorageArgs),
    /// The activity log (as `az monitor activity-log`).
    Monitor(monitor::MonitorArgs),
    /// Tokens issued and refused.
    SigninLog(monitor::SigninArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Serve(args) => serve::run(args).map(|()| ExitCode::SUCCESS),
        Command::Env(args) => env::run(args).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => run::run(args),
        Command::Keys(args) => keys::run(args).map(|()| ExitCode::SUCCESS),
        Command::Hosts(args) => hosts::run(args).map(|()| ExitCode::SUCCESS),
        Command::Token(args) => token::run(args),
        Command::Access(args) => access::run(args),
        Command::Group(args) => group::run(args),
        Command::Resource(args) => resource::run(args),
        Command::Identity(args) => identity::run(args),
        Command::Vm(args) => compute::run_vm(args),
        Command::Webapp(args) => compute::run_webapp(args),
        Command::Role(args) => role::run(args),
        Command::Keyvault(args) => keyvault::run(args),
        Command::Storage(args) => storage::run(args),
        Command::Monitor(args) => monitor::run_monitor(args),
        Command::SigninLog(args) => monitor::run_signins(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(client::exit_code(&e))
        }
    }
}

/// The chain of causes joined, on one line, as operators read it (services' messages may
/// carry line breaks, Key Vault's do).
fn one_line(error: &anyhow::Error) -> String {
    let chain: Vec<String> = error.chain().map(|c| c.to_string()).collect();
    chain
        .join(": ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
