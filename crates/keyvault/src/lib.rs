//! Key Vault: the secrets data plane on `{vault}.vault.{domain}`.

use axum::http::StatusCode;
use axum::Router;
use lanyard_platform::{ApiError, AppState, Dialect};

/// The vault hosts' routes. The vault name arrives as a request extension.
pub fn router(state: AppState) -> Router {
    Router::new()
        .fallback(|| async {
            ApiError::new(
                Dialect::KeyVault,
                StatusCode::NOT_FOUND,
                "NotFound",
                "The requested path does not exist on this host.",
            )
        })
        .with_state(state)
}
