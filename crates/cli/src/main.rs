//! The `lanyard` command: a thin layer of argument parsing over the library crates.
//!
//! Layout:
//! - `main.rs` (here): the command tree, exit codes, error printing.
//! - [`serve`]: `lanyard serve`, which runs the server.
//! - [`env`]: `lanyard env`, which prints `export` lines for clients.
//! - [`keys`]: `lanyard keys rotate`, which makes a new signing key current.
//!
//! Exit codes: 0 success, 1 error, 2 usage (clap's own), 3 access denied.

mod client;
mod env;
mod keys;
mod run;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Run the server (HTTPS control plane, token service and data planes).
    Serve(serve::ServeArgs),
    /// Print `export` lines that point Azure SDKs and tools at a Lanyard data directory.
    Env(env::EnvArgs),
    /// Run a command as a resource, with that resource's managed identity.
    Run(run::RunArgs),
    /// Manage the token-signing keys of a running server.
    Keys(keys::KeysArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).map(|()| ExitCode::SUCCESS),
        Command::Env(args) => env::run(args).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => run::run(args),
        Command::Keys(args) => keys::run(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line: the chain of causes joined, as operators read it.
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::from(client::exit_code(&e))
        }
    }
}
