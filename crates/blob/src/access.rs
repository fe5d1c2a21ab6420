//! Who may do what: bearer tokens only, and RBAC per operation.
//!
//! Audiences accepted: Azure's `https://storage.azure.com` (what the SDKs ask for by default)
//! and ours, `https://storage.{domain}` (with and without the port), each with or without a
//! trailing slash. Shared Key and SAS requests are refused with
//! `KeyBasedAuthenticationNotPermitted`: this plane holds no account keys.
//!
//! Container reads, writes and deletes are control actions
//! (`…/blobServices/containers/{read,write,delete}`); blob operations are data actions
//! (`…/containers/blobs/{read,write,delete,add/action}`); both are checked at the
//! container's scope, `{account id}/blobServices/default/containers/{name}`. Listing
//! containers is `containers/read` at `{account id}/blobServices/default`.

use axum::http::{header, HeaderMap};
use lanyard_authz::{AccessRequest, ActionKind};
use lanyard_domain::hosts;
use lanyard_domain::ResourceId;
use lanyard_platform::authn::{self, Caller};
use lanyard_platform::AppState;
use lanyard_token::Validator;

use crate::error::BlobError;
use crate::request::Query;

/// Azure's storage audience, the one the challenge names.
pub const AZURE_STORAGE_AUDIENCE: &str = hosts::BLOB.azure_audience;

/// The audiences tokens for this plane may carry.
pub fn audiences(state: &AppState) -> Vec<String> {
    let own = hosts::BLOB.audience_host(&state.config.domain);
    let mut out = vec![AZURE_STORAGE_AUDIENCE.to_string(), format!("https://{own}")];
    if state.port != 443 {
        out.push(format!("https://{own}:{}", state.port));
    }
    out
}

/// The `WWW-Authenticate` value of a 401: where to get a token and for what resource.
pub fn challenge(state: &AppState) -> String {
    format!(
        "Bearer authorization_uri={}/{}/oauth2/authorize resource_id={AZURE_STORAGE_AUDIENCE}",
        state.endpoints().localhost(),
        state.directory.tenant.id
    )
}

/// Validates the caller's bearer token; refuses key-based requests first.
pub fn authenticate(
    state: &AppState,
    validator: &Validator,
    challenge: &str,
    headers: &HeaderMap,
    query: &Query,
) -> Result<Caller, BlobError> {
    if query.has_signature() {
        return Err(BlobError::KeyBasedAuthentication);
    }
    let scheme = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_whitespace().next());
    if scheme.is_some_and(|s| {
        s.eq_ignore_ascii_case("SharedKey") || s.eq_ignore_ascii_case("SharedKeyLite")
    }) {
        return Err(BlobError::KeyBasedAuthentication);
    }
    authn::authenticate(&state.tokens, validator, headers).map_err(|failure| {
        BlobError::Unauthenticated {
            failure,
            challenge: challenge.to_string(),
        }
    })
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    ContainerRead,
    ContainerWrite,
    ContainerDelete,
    BlobRead,
    BlobWrite,
    BlobDelete,
    /// Creating a blob or adding blocks, without overwriting.
    BlobAdd,
}

impl Permission {
    pub fn action(self) -> &'static str {
        match self {
            Permission::ContainerRead => {
                "Microsoft.Storage/storageAccounts/blobServices/containers/read"
            }
            Permission::ContainerWrite => {
                "Microsoft.Storage/storageAccounts/blobServices/containers/write"
            }
            Permission::ContainerDelete => {
                "Microsoft.Storage/storageAccounts/blobServices/containers/delete"
            }
            Permission::BlobRead => {
                "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
            }
            Permission::BlobWrite => {
                "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write"
            }
            Permission::BlobDelete => {
                "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete"
            }
            Permission::BlobAdd => {
                "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action"
            }
        }
    }

    pub fn kind(self) -> ActionKind {
        match self {
            Permission::ContainerRead
            | Permission::ContainerWrite
            | Permission::ContainerDelete => ActionKind::Control,
            _ => ActionKind::Data,
        }
    }
}

/// `{account}/blobServices/default`.
pub fn service_scope(account: &ResourceId) -> ResourceId {
    account.with_child("blobServices", "default")
}

/// `{account}/blobServices/default/containers/{container}`.
pub fn container_scope(account: &ResourceId, container: &str) -> ResourceId {
    service_scope(account).with_child("containers", container)
}

/// Decides `permission` for `caller` at `scope`; a denial carries the engine's explanation.
pub fn require(
    state: &AppState,
    caller: &Caller,
    permission: Permission,
    scope: &ResourceId,
) -> Result<(), BlobError> {
    let request = AccessRequest {
        principal: caller.object_id,
        action: permission.action(),
        kind: permission.kind(),
        scope,
    };
    let decision = state.access.check(&request);
    if decision.is_allowed() {
        Ok(())
    } else {
        Err(BlobError::PermissionMismatch(decision.explain()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_actions() {
        let account = ResourceId::parse(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a",
        )
        .unwrap();
        assert_eq!(
            container_scope(&account, "c").as_str(),
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a/blobServices/default/containers/c"
        );
        assert_eq!(Permission::ContainerRead.kind(), ActionKind::Control);
        assert_eq!(Permission::BlobAdd.kind(), ActionKind::Data);
        assert!(Permission::BlobAdd.action().ends_with("/blobs/add/action"));
    }
}
