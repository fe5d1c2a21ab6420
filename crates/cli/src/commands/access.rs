//! `lanyard access explain --assignee X --action A --scope S`: may X do A at S, and why.
//! The server's authorization engine decides (`POST /lanyard/access/explain`); the answer
//! names the assignment that allows it, or the nearest misses and the roles that would.
//! Exit code 0 when allowed, 3 when denied.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;

use super::{execute, Done, Global};
use crate::api::rbac;

/// Prefixes of data actions, so `--data-action` can usually be left out.
const DATA_ACTION_PREFIXES: &[&str] = &[
    "Microsoft.KeyVault/vaults/secrets/",
    "Microsoft.KeyVault/vaults/keys/",
    "Microsoft.KeyVault/vaults/certificates/",
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/",
];

#[derive(Args, Debug)]
pub struct AccessArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: AccessCommand,
}

#[derive(Subcommand, Debug)]
pub enum AccessCommand {
    /// Whether a principal may perform an action at a scope, and why.
    Explain {
        /// Object id, client id, display name, or resource id (of an identity, or of a
        /// resource whose system identity is meant).
        #[arg(long)]
        assignee: String,
        /// e.g. `Microsoft.KeyVault/vaults/secrets/getSecret/action`.
        #[arg(long)]
        action: String,
        /// Resource id of the scope asked about.
        #[arg(long)]
        scope: String,
        /// Treat the action as a data action (automatic for Key Vault secrets, keys and
        /// certificates, and blobs).
        #[arg(long)]
        data_action: bool,
    },
}

/// Whether `action` is a data action, when not said.
pub fn is_data_action(action: &str) -> bool {
    DATA_ACTION_PREFIXES
        .iter()
        .any(|p| action.len() > p.len() && action[..p.len()].eq_ignore_ascii_case(p))
}

pub fn run(args: AccessArgs) -> anyhow::Result<ExitCode> {
    execute(&args.global, async move |conn| {
        let AccessCommand::Explain {
            assignee,
            action,
            scope,
            data_action,
        } = args.command;
        let principal = rbac::resolve_principal(conn, &assignee).await?;
        let body = json!({
            "principalId": principal.object_id,
            "action": action,
            "scope": scope,
            "dataAction": data_action || is_data_action(&action),
        });
        let answer = conn
            .arm(Method::POST, "/lanyard/access/explain", Some(&body))
            .await?;
        Ok(if answer["allowed"] == true {
            Done::from(answer)
        } else {
            Done::denied(answer)
        })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn data_actions_are_recognised() {
        assert!(super::is_data_action(
            "Microsoft.KeyVault/vaults/secrets/getSecret/action"
        ));
        assert!(super::is_data_action(
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
        ));
        assert!(!super::is_data_action("Microsoft.KeyVault/vaults/read"));
        assert!(!super::is_data_action(
            "Microsoft.Storage/storageAccounts/blobServices/containers/read"
        ));
    }
}
