//! `POST /lanyard/keys/rotate`: the administrator makes the next signing key current now
//! (`lanyard keys rotate`). Authenticated with a token for the management audience.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use lanyard_platform::authn::authenticate;
use lanyard_platform::{ApiError, AppState, Dialect};
use lanyard_token::{KeyChange, Validator};
use serde_json::json;

/// The key-rotation endpoint and its token validator.
pub struct Admin {
    state: AppState,
    validator: Validator,
}

impl Admin {
    pub fn new(state: AppState) -> Self {
        let endpoints = state.endpoints();
        let domain = &state.config.domain;
        let validator = state.tokens.validator([
            "https://management.azure.com/".to_string(),
            "https://management.core.windows.net/".to_string(),
            format!("https://management.{domain}"),
            endpoints.management(),
            endpoints.localhost(),
        ]);
        Self { state, validator }
    }

    pub async fn rotate(&self, headers: &HeaderMap) -> Result<Response, ApiError> {
        let caller = authenticate(&self.state.tokens, &self.validator, headers).map_err(|f| {
            ApiError::arm(
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
                format!("Authentication failed: {f}."),
            )
            .with_header(axum::http::header::WWW_AUTHENTICATE, "Bearer")
        })?;
        if caller.object_id != self.state.directory.admin_object_id {
            return Err(ApiError::arm(
                StatusCode::FORBIDDEN,
                "AuthorizationFailed",
                format!(
                    "The client '{0}' with object id '{0}' does not have authorization to perform action 'Lanyard/keys/rotate/action' over scope '/'.",
                    caller.object_id
                ),
            ));
        }
        let changes = self
            .state
            .tokens
            .rotate_now()
            .await
            .map_err(|e| ApiError::internal(Dialect::Arm, &e))?;
        let activated = changes.iter().find_map(|c| match c {
            KeyChange::Activated {
                kid,
                retired,
                retired_until,
            } => Some((kid.clone(), retired.clone(), *retired_until)),
            _ => None,
        });
        let Some((kid, retired, retired_until)) = activated else {
            return Err(ApiError::internal(
                Dialect::Arm,
                &"key rotation activated no key",
            ));
        };
        tracing::info!(%kid, retired = ?retired, "signing key rotated by the administrator");
        Ok(axum::Json(json!({
            "kid": kid,
            "retired": retired,
            "retiredPublishedUntil": retired_until,
        }))
        .into_response())
    }
}
