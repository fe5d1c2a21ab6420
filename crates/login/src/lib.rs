//! The token service on the login host.

use axum::http::StatusCode;
use axum::Router;
use lanyard_platform::{ApiError, AppState, Dialect};

/// The login host's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .fallback(|| async {
            ApiError::new(
                Dialect::Entra,
                StatusCode::NOT_FOUND,
                "not_found",
                "The requested path does not exist on this host.",
            )
        })
        .with_state(state)
}
