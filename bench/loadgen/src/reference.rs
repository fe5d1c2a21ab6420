//! The references our figures are divided by.
//!
//! - [`serve_static`]: one fixed body for every GET, served by axum through
//!   `lanyard_platform::serve` (the very accept loops Lanyard uses), either on plain HTTP
//!   (the identity endpoints' stack) or with the TLS configuration Lanyard builds for itself
//!   (`lanyard_server::tls::ensure`). It is the ceiling of any handler on that stack.
//! - [`rs256`]: the cost of the RSA signature alone (ring, RSA-2048, PKCS#1 v1.5 SHA-256),
//!   the floor under any token minting.
//! - [`cert`]: a CA and a server certificate for the Node.js peers, so they serve HTTPS as
//!   Lanyard does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use clap::Args;
use serde_json::json;

#[derive(Args, Debug)]
pub struct StaticArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The body to answer with.
    #[arg(long)]
    body_file: PathBuf,
    #[arg(long, default_value = "application/json; charset=utf-8")]
    content_type: String,
    /// Serve HTTPS with Lanyard's TLS setup, keeping its CA (`ca.pem`) in this directory.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    #[arg(long, default_value = "lanyard.localhost")]
    domain: String,
    /// Stop by itself after this long.
    #[arg(long, default_value_t = 1800)]
    max_secs: u64,
}

pub fn serve_static(args: StaticArgs) -> anyhow::Result<()> {
    crate::ensure_loopback(&args.listen)?;
    let body = Bytes::from(
        std::fs::read(&args.body_file)
            .with_context(|| format!("reading `{}`", args.body_file.display()))?,
    );
    let content_type = axum::http::HeaderValue::try_from(args.content_type.as_str())?;
    let handler = move || {
        let body = body.clone();
        let content_type = content_type.clone();
        async move { ([(CONTENT_TYPE, content_type)], body) }
    };
    let app = Router::new()
        .route("/", get(handler.clone()))
        .route("/{*path}", get(handler));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        println!("{}", json!({ "addr": listener.local_addr()?.to_string() }));
        let shutdown = async move {
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(args.max_secs)) => {}
                _ = tokio::signal::ctrl_c() => {}
                () = term => {}
            }
        };
        match &args.tls_dir {
            None => lanyard_platform::serve::serve_plain(listener, app, shutdown).await,
            Some(dir) => {
                let dir = lanyard_server::datadir::DataDir::open(dir)?;
                let tls = lanyard_server::tls::ensure(&dir, &args.domain)?;
                lanyard_platform::serve::serve_tls(
                    listener,
                    tls.server_config,
                    app,
                    lanyard_platform::serve::NetLimits::default(),
                    shutdown,
                )
                .await;
            }
        }
        anyhow::Ok(())
    })
}

#[derive(Args, Debug)]
pub struct Rs256Args {
    /// Signing threads; default: every core.
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    #[arg(long, default_value_t = 0.5)]
    warmup_secs: f64,
    /// Length of the signing input (a v1 token's header and claims are about 1 KB).
    #[arg(long, default_value_t = 1000)]
    input_bytes: usize,
}

pub fn rs256(args: Rs256Args) -> anyhow::Result<()> {
    use rsa::pkcs8::EncodePrivateKey;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
        .map_err(|e| anyhow::anyhow!("RSA key generation: {e}"))?;
    let der = private
        .to_pkcs8_der()
        .map_err(|e| anyhow::anyhow!("PKCS#8: {e}"))?;
    let pair = ring::signature::RsaKeyPair::from_pkcs8(der.as_bytes())
        .map_err(|e| anyhow::anyhow!("ring key: {e}"))?;
    let input: Vec<u8> = (0..args.input_bytes)
        .map(|i| b"abcdefghij"[i % 10])
        .collect();
    let start = Instant::now();
    let warm_end = start + Duration::from_secs_f64(args.warmup_secs.max(0.0));
    let end = warm_end + Duration::from_secs_f64(args.duration_secs.max(0.0));
    let counted = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let rng = ring::rand::SystemRandom::new();
                let mut sig = vec![0u8; pair.public().modulus_len()];
                let mut mine = 0u64;
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    if pair
                        .sign(&ring::signature::RSA_PKCS1_SHA256, &rng, &input, &mut sig)
                        .is_err()
                    {
                        failed.store(true, Ordering::Relaxed);
                        break;
                    }
                    if now >= warm_end && Instant::now() <= end {
                        mine += 1;
                    }
                }
                counted.fetch_add(mine, Ordering::Relaxed);
            });
        }
    });
    anyhow::ensure!(!failed.load(Ordering::Relaxed), "RS256 signing failed");
    let seconds = end.duration_since(warm_end).as_secs_f64();
    let ops = counted.load(Ordering::Relaxed);
    println!(
        "{}",
        json!({
            "threads": threads,
            "seconds": seconds,
            "ops": ops,
            "ops_per_sec": if seconds > 0.0 { ops as f64 / seconds } else { 0.0 },
        })
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct CertArgs {
    /// Directory for `ca.pem`, `cert.pem` and `key.pem`.
    #[arg(long)]
    out: PathBuf,
}

/// A CA and a leaf for `localhost` and `127.0.0.1`, both ECDSA P-256 as Lanyard's own.
pub fn cert(args: CertArgs) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    std::fs::create_dir_all(&args.out)?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "lanyard bench reference CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca = ca_params.self_signed(&ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "lanyard bench reference server");
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key)?;
    std::fs::write(args.out.join("ca.pem"), ca.pem())?;
    std::fs::write(args.out.join("cert.pem"), leaf.pem())?;
    std::fs::write(args.out.join("key.pem"), leaf_key.serialize_pem())?;
    println!("{}", json!({ "dir": args.out.display().to_string() }));
    Ok(())
}
