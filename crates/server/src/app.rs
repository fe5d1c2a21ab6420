//! The HTTPS application: one router per plane, chosen by host name, behind the layers every
//! request passes (request id, trace span, panic guard, body limit).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::hosts::{self, Plane};
use crate::telemetry::{self, UuidRequestId, REQUEST_ID};
use lanyard_platform::AppState;
use lanyard_platform::{AccountName, VaultName};
use lanyard_platform::{ApiError, Dialect};

/// Largest request body any plane accepts (a blob block or a chunk of a large upload).
pub const MAX_BODY: usize = 256 * 1024 * 1024;

/// The routers of each plane.
#[derive(Clone)]
pub struct Planes {
    pub management: Router,
    pub login: Router,
    pub vault: Router,
    pub blob: Router,
}

impl Planes {
    pub fn new(state: &AppState) -> Self {
        Self {
            management: lanyard_imds::admin::router(lanyard_imds::IdentityService::start(
                state.clone(),
            ))
            .merge(lanyard_arm::router(state.clone())),
            login: lanyard_login::router(state.clone()),
            vault: lanyard_keyvault::router(state.clone()),
            blob: lanyard_blob::router(state.clone()),
        }
    }
}

#[derive(Clone)]
struct Dispatch {
    domain: Arc<str>,
    planes: Planes,
}

/// The whole HTTPS application.
pub fn router(state: AppState) -> Router {
    let dispatch = Dispatch {
        domain: Arc::from(state.config.domain.as_str()),
        planes: Planes::new(&state),
    };
    Router::new()
        .route("/healthz", get(healthz))
        .fallback(dispatch_by_host)
        .with_state(dispatch)
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal(Dialect::Arm, &"a request handler panicked").into_response()
        }))
        .layer(TraceLayer::new_for_http().make_span_with(telemetry::request_span))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, UuidRequestId))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn dispatch_by_host(State(d): State<Dispatch>, request: Request) -> Response {
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            request
                .headers()
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let plane = hosts::classify(&host, &d.domain);
    let router = match plane {
        Plane::Combined => {
            // The control plane and the token service share this host; token-service paths
            // are recognisable by their shape.
            if is_login_path(request.uri().path()) {
                d.planes.login
            } else {
                d.planes.management
            }
        }
        Plane::Management => d.planes.management,
        Plane::Login | Plane::Graph => d.planes.login,
        Plane::Vault(name) => {
            let mut request = request;
            request.extensions_mut().insert(VaultName(name));
            return call(d.planes.vault, request).await;
        }
        Plane::Blob(name) => {
            let mut request = request;
            request.extensions_mut().insert(AccountName(name));
            return call(d.planes.blob, request).await;
        }
        Plane::Unknown(host) => {
            return ApiError::arm(
                StatusCode::NOT_FOUND,
                "HostNotFound",
                format!("No Lanyard service answers for host `{host}`."),
            )
            .into_response()
        }
    };
    call(router, request).await
}

async fn call(router: Router, request: Request) -> Response {
    match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Token-service paths: `/{tenant}/oauth2/...`, `/{tenant}/v2.0/.well-known/...`,
/// `/{tenant}/.well-known/...`, `/{tenant}/discovery/...`, and Graph's `/v1.0/...`.
pub fn is_login_path(path: &str) -> bool {
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    let first = parts.next().unwrap_or("");
    let second = parts.next().unwrap_or("").to_ascii_lowercase();
    // Microsoft Graph's application and service principal endpoints live with the token service.
    if first.eq_ignore_ascii_case("v1.0") {
        return true;
    }
    // Lanyard's own key administration lives with the token service.
    if first.eq_ignore_ascii_case("lanyard") && second == "keys" {
        return true;
    }
    if first.eq_ignore_ascii_case("subscriptions")
        || first.eq_ignore_ascii_case("providers")
        || first.eq_ignore_ascii_case("tenants")
        || first.eq_ignore_ascii_case("metadata")
    {
        return false;
    }
    matches!(
        second.as_str(),
        "oauth2" | "v2.0" | ".well-known" | "discovery"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_paths_are_told_from_arm_paths() {
        assert!(is_login_path(
            "/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
        ));
        assert!(is_login_path(
            "/organizations/v2.0/.well-known/openid-configuration"
        ));
        assert!(is_login_path("/common/discovery/keys"));
        assert!(!is_login_path("/subscriptions/s/resourceGroups/rg"));
        assert!(!is_login_path("/metadata/endpoints"));
        assert!(is_login_path("/lanyard/keys/rotate"));
        assert!(!is_login_path("/lanyard/sessions"));
        assert!(!is_login_path(
            "/providers/Microsoft.Authorization/roleDefinitions"
        ));
    }
}
