//! The data plane's failures, each with Key Vault's status, code and inner code. They become
//! HTTP in one place only: [`ApiError`] in the Key Vault dialect, through the `From` impl
//! below.
//!
//! Messages are what clients show to people, written the way Key Vault writes them (whole
//! sentences), since tools and people match on them. No message ever carries a secret value.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use lanyard_platform::error::from_store;
use lanyard_platform::{ApiError, Dialect};
use lanyard_storage::StoreError;

use crate::names::{SecretName, SecretVersion};

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// A malformed request: bad name, bad body, bad query.
    #[error("{0}")]
    BadParameter(String),
    /// No usable bearer token; answered with the challenge SDKs follow.
    #[error("{message}")]
    Unauthorized { message: String, challenge: String },
    /// RBAC refused the data action.
    #[error("{0}")]
    ForbiddenByRbac(String),
    /// The vault's access policies refused the permission.
    #[error("{0}")]
    AccessDenied(String),
    #[error("Operation {operation} is not allowed on a disabled secret.")]
    SecretDisabled { operation: &'static str },
    #[error(
        "Operation get is not allowed on a secret that is not yet valid (nbf is in the future)."
    )]
    SecretNotYetValid,
    #[error("Operation get is not allowed on an expired secret.")]
    SecretExpired,
    #[error("Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.")]
    PurgeProtected,
    #[error("A secret with (name/id) {name}{} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182", version.as_ref().map(|v| format!("/{v}")).unwrap_or_default())]
    SecretNotFound {
        name: SecretName,
        version: Option<SecretVersion>,
    },
    #[error("Deleted Secret not found: {0}")]
    DeletedSecretNotFound(SecretName),
    #[error("Vault `{0}` does not exist. Create it through the control plane (Microsoft.KeyVault/vaults) first.")]
    VaultNotFound(String),
    #[error("The requested path `{0}` does not exist. Lanyard's Key Vault serves the secrets API: /secrets and /deletedsecrets.")]
    PathNotFound(String),
    #[error("The method `{method}` is not supported at `{path}`.")]
    MethodNotAllowed { method: String, path: String },
    #[error("Secret {0} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged.")]
    DeletedButRecoverable(SecretName),
    #[error("Secret {0} already exists in this vault. Restore only recreates a secret that does not exist; delete and purge it first.")]
    AlreadyExists(SecretName),
    #[error("The secret value is {size} bytes; Key Vault accepts at most {limit} bytes.")]
    ValueTooLarge { size: usize, limit: usize },
    #[error("The request body is larger than {0} bytes.")]
    BodyTooLarge(usize),
    #[error("The backup blob is malformed or corrupt, or was taken in a vault of another subscription; a backup restores only into a vault of the subscription it was taken in.")]
    BadBackup,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something the client cannot fix; the cause is logged, never returned.
    #[error("{0}")]
    Internal(String),
}

impl KvError {
    /// A secret that does not exist (at that version).
    pub fn not_found(name: &SecretName, version: Option<&SecretVersion>) -> Self {
        Self::SecretNotFound {
            name: name.clone(),
            version: version.cloned(),
        }
    }

    pub fn bad(message: impl Into<String>) -> Self {
        Self::BadParameter(message.into())
    }

    fn status_code_inner(&self) -> (StatusCode, &'static str, Option<&'static str>) {
        match self {
            Self::BadParameter(_) | Self::ValueTooLarge { .. } | Self::BadBackup => {
                (StatusCode::BAD_REQUEST, "BadParameter", None)
            }
            Self::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "Unauthorized", None),
            Self::ForbiddenByRbac(_) => {
                (StatusCode::FORBIDDEN, "Forbidden", Some("ForbiddenByRbac"))
            }
            Self::AccessDenied(_) => (StatusCode::FORBIDDEN, "Forbidden", Some("AccessDenied")),
            Self::SecretDisabled { .. } => {
                (StatusCode::FORBIDDEN, "Forbidden", Some("SecretDisabled"))
            }
            Self::SecretNotYetValid => (
                StatusCode::FORBIDDEN,
                "Forbidden",
                Some("SecretNotYetValid"),
            ),
            Self::SecretExpired => (StatusCode::FORBIDDEN, "Forbidden", Some("SecretExpired")),
            Self::PurgeProtected => (
                StatusCode::FORBIDDEN,
                "Forbidden",
                Some("PurgeProtectionEnabled"),
            ),
            Self::SecretNotFound { .. } | Self::DeletedSecretNotFound(_) => {
                (StatusCode::NOT_FOUND, "SecretNotFound", None)
            }
            Self::VaultNotFound(_) => (StatusCode::NOT_FOUND, "VaultNotFound", None),
            Self::PathNotFound(_) => (StatusCode::NOT_FOUND, "NotFound", None),
            Self::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", None)
            }
            Self::DeletedButRecoverable(_) => (
                StatusCode::CONFLICT,
                "Conflict",
                Some("ObjectIsDeletedButRecoverable"),
            ),
            Self::AlreadyExists(_) => (StatusCode::CONFLICT, "Conflict", None),
            Self::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", None),
            Self::Store(_) | Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                None,
            ),
        }
    }
}

impl From<KvError> for ApiError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Store(ref s) => return from_store(Dialect::KeyVault, s),
            KvError::Internal(ref cause) => return ApiError::internal(Dialect::KeyVault, cause),
            _ => {}
        }
        let (status, code, inner) = e.status_code_inner();
        let mut api = ApiError::new(Dialect::KeyVault, status, code, e.to_string());
        if let Some(inner) = inner {
            api = api.with_inner(inner);
        }
        if let KvError::Unauthorized { challenge, .. } = &e {
            api = api.with_header(header::WWW_AUTHENTICATE, challenge);
        }
        api
    }
}

impl IntoResponse for KvError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_inner_codes() {
        let name = SecretName::parse("db").unwrap();
        let cases = [
            (KvError::bad("x"), 400, "BadParameter"),
            (KvError::ForbiddenByRbac("x".into()), 403, "Forbidden"),
            (KvError::not_found(&name, None), 404, "SecretNotFound"),
            (
                KvError::DeletedButRecoverable(name.clone()),
                409,
                "Conflict",
            ),
            (KvError::BodyTooLarge(1), 413, "RequestEntityTooLarge"),
        ];
        for (e, status, code) in cases {
            let api = ApiError::from(e);
            assert_eq!(api.status.as_u16(), status);
            assert_eq!(api.code, code);
        }
        let msg =
            KvError::not_found(&name, SecretVersion::parse(&"a".repeat(32)).as_ref()).to_string();
        assert!(msg.starts_with(&format!("A secret with (name/id) db/{}", "a".repeat(32))));
    }

    #[test]
    fn internal_errors_hide_the_cause() {
        let api = ApiError::from(KvError::Internal("data key of `kv1` failed".into()));
        assert_eq!(api.status.as_u16(), 500);
        assert!(!api.message.contains("kv1"));
    }
}
