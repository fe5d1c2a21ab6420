//! Blob storage: the blob data plane on `{account}.blob.{domain}`.

use axum::http::StatusCode;
use axum::Router;
use lanyard_platform::{ApiError, AppState, Dialect};

/// The blob hosts' routes. The account name arrives as a request extension.
pub fn router(state: AppState) -> Router {
    Router::new()
        .fallback(|| async {
            ApiError::new(
                Dialect::Blob,
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "The specified resource does not exist.",
            )
        })
        .with_state(state)
}
