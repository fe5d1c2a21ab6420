//! The control plane (ARM).

use axum::http::StatusCode;
use axum::Router;
use lanyard_platform::{ApiError, AppState};

/// The management host's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .fallback(|| async {
            ApiError::arm(
                StatusCode::NOT_FOUND,
                "NotFound",
                "The requested path does not exist on this host.",
            )
        })
        .with_state(state)
}
