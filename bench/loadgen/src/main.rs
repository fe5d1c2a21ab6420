//! `lanyard-loadgen`: the Rust half of the benchmark suite (`bench/run` drives it). Benchmark
//! tooling only; nothing here ships in the product.
//!
//! Layout:
//! - [`load`]: a closed-loop HTTP/1.1 load generator (fixed keep-alive connections, bounded
//!   in time and count, loopback only) reporting throughput and latency percentiles.
//! - [`reference`]: what our figures are compared with: a static-response server on the same
//!   stack as Lanyard (axum behind `lanyard_platform::serve`, plain or with Lanyard's own TLS
//!   setup), a raw RS256 signing loop (ring), and a certificate for the Node.js peers.
//! - [`bulk`]: writes identities and role assignments straight through `lanyard_storage`.
//! - [`ready`]: starts a server, times it to its first `/healthz` answer, reads its RSS.
//! - [`tls`]: client-side TLS trusting one CA file.
//!
//! Every command prints one JSON object on stdout (the static server prints its address
//! first and then serves). Exit codes: 0 success, 1 error.

mod bulk;
mod load;
mod ready;
mod reference;
mod tls;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "lanyard-loadgen", about = "Benchmark tooling for bench/run")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive an HTTP endpoint with a fixed number of connections for a bounded time.
    Load(load::LoadArgs),
    /// Serve one static body on the same HTTP stack as Lanyard.
    Static(reference::StaticArgs),
    /// Sign with RS256 (ring, RSA-2048) in a loop on N threads.
    Rs256(reference::Rs256Args),
    /// Write a CA, a server certificate and its key (PEM) for the Node.js reference servers.
    Cert(reference::CertArgs),
    /// Write identities and role assignments straight into a Lanyard store.
    BulkLoad(bulk::BulkArgs),
    /// Start a server, time it to its first `/healthz` answer and read its RSS.
    Ready(ready::ReadyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Load(args) => load::run(args),
        Command::Static(args) => reference::serve_static(args),
        Command::Rs256(args) => reference::rs256(args),
        Command::Cert(args) => reference::cert(args),
        Command::BulkLoad(args) => bulk::run(args),
        Command::Ready(args) => ready::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

/// Refuses any address that is not on this machine's loopback: the suite never sends load
/// anywhere else.
pub fn ensure_loopback(addr: &std::net::SocketAddr) -> anyhow::Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        anyhow::bail!(
            "`{addr}` is not a loopback address; the benchmark only loads 127.0.0.0/8 or ::1"
        )
    }
}
