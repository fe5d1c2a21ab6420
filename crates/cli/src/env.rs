//! `lanyard env`: `export` lines a shell can `eval`, pointing Azure SDKs, MSAL and tools at
//! the server that owns a data directory.

use clap::Args;
use lanyard_server::bootstrap::{read_admin, read_endpoints};
use lanyard_server::config::default_data_dir;
use lanyard_server::datadir::DataDir;

use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EnvArgs {
    /// Data directory of the server.
    #[arg(long, env = "LANYARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

pub fn run(args: EnvArgs) -> anyhow::Result<()> {
    let root = args.data_dir.unwrap_or_else(default_data_dir);
    let dir = DataDir::existing(&root)?;
    let admin = read_admin(&dir)?;
    let endpoints = read_endpoints(&dir)?;
    let base = if endpoints.port == 443 {
        "https://localhost".to_string()
    } else {
        format!("https://localhost:{}", endpoints.port)
    };
    let ca = dir.ca_cert().display().to_string();
    let lines = [
        ("AZURE_TENANT_ID", admin.tenant_id.to_string()),
        ("AZURE_SUBSCRIPTION_ID", admin.subscription_id.to_string()),
        ("AZURE_CLIENT_ID", admin.client_id.to_string()),
        ("AZURE_CLIENT_SECRET", admin.client_secret.clone()),
        ("AZURE_AUTHORITY_HOST", base.clone()),
        ("LANYARD_ARM_URL", base),
        ("LANYARD_DOMAIN", endpoints.domain.clone()),
        ("LANYARD_DATA_DIR", root.display().to_string()),
        ("REQUESTS_CA_BUNDLE", ca.clone()),
        ("SSL_CERT_FILE", ca.clone()),
        ("NODE_EXTRA_CA_CERTS", ca),
    ];
    let mut out = String::new();
    for (name, value) in lines {
        out.push_str(&format!("export {name}={}\n", shell_quote(&value)));
    }
    print!("{out}");
    Ok(())
}

/// Single-quotes a value for POSIX shells.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(super::shell_quote("a'b"), "'a'\\''b'");
    }
}
