//! The HTTPS application: one router per plane, chosen by host name, behind the layers every
//! request passes (request id, trace span, panic guard, body limit). Where the plane is chosen
//! the request body is put under the read deadline ([`crate::deadline`]), and a request whose
//! body was cut off is answered 408 in that plane's error shape.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Extensions, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::deadline::BodyDeadline;
use crate::hosts::{self as routing, Plane};
use crate::telemetry::{self, UuidRequestId, REQUEST_ID};
use lanyard_domain::hosts::{self, PlaneHost};
use lanyard_platform::AppState;
use lanyard_platform::{AccountName, VaultName};
use lanyard_platform::{ApiError, Dialect};

/// Largest request body any plane accepts (a blob block or a chunk of a large upload).
pub const MAX_BODY: usize = 256 * 1024 * 1024;

/// A data plane on hosts of its own, as the server registers it: its host description, its
/// router, the error shape it answers in, and how its handlers learn the resource a host
/// names (a request extension).
#[derive(Clone)]
pub struct HostedPlane {
    pub host: &'static PlaneHost,
    pub router: Router,
    pub dialect: Dialect,
    pub tag: fn(&mut Extensions, String),
}

/// The routers of each plane.
#[derive(Clone)]
pub struct Planes {
    pub management: Router,
    pub login: Router,
    /// One per entry of [`lanyard_domain::hosts::PLANE_HOSTS`].
    pub hosted: Vec<HostedPlane>,
}

impl Planes {
    pub fn new(state: &AppState) -> Self {
        Self {
            management: lanyard_imds::admin::router(lanyard_imds::IdentityService::start(
                state.clone(),
            ))
            .merge(lanyard_arm::router(state.clone())),
            login: lanyard_login::router(state.clone()),
            hosted: vec![
                HostedPlane {
                    host: &hosts::VAULT,
                    router: lanyard_keyvault::router(state.clone()),
                    dialect: Dialect::KeyVault,
                    tag: |e, name| {
                        e.insert(VaultName(name));
                    },
                },
                HostedPlane {
                    host: &hosts::BLOB,
                    router: lanyard_blob::router(state.clone()),
                    dialect: Dialect::Blob,
                    tag: |e, name| {
                        e.insert(AccountName(name));
                    },
                },
            ],
        }
    }

    /// The registration of `host`'s plane.
    fn hosted(&self, host: &PlaneHost) -> Option<&HostedPlane> {
        self.hosted.iter().find(|p| p.host.label == host.label)
    }
}

#[derive(Clone)]
struct Dispatch {
    domain: Arc<str>,
    planes: Planes,
    deadline: BodyDeadline,
}

/// The whole HTTPS application.
pub fn router(state: AppState) -> Router {
    let dispatch = Dispatch {
        domain: Arc::from(state.config.domain.as_str()),
        planes: Planes::new(&state),
        deadline: BodyDeadline::new(&state.config.net),
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

async fn dispatch_by_host(State(d): State<Dispatch>, mut request: Request) -> Response {
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
    let plane = routing::classify(&host, &d.domain);
    let (router, dialect) = match plane {
        Plane::Combined => {
            // The control plane and the token service share this host; token-service paths
            // are recognisable by their shape.
            if is_login_path(request.uri().path()) {
                (d.planes.login, login_dialect(request.uri().path()))
            } else {
                (d.planes.management, Dialect::Arm)
            }
        }
        Plane::Management => (d.planes.management, Dialect::Arm),
        Plane::Login | Plane::Graph => (d.planes.login, login_dialect(request.uri().path())),
        Plane::Hosted(host, name) => match d.planes.hosted(host) {
            Some(plane) => {
                (plane.tag)(request.extensions_mut(), name);
                (plane.router.clone(), plane.dialect)
            }
            None => return unknown_host(&host.host(&name, &d.domain)),
        },
        Plane::Unknown(host) => return unknown_host(&host),
    };
    let (request, cut) = d.deadline.apply(request);
    let response = call(router, request).await;
    match cut {
        Some(cut) if cut.happened() => body_too_slow(dialect),
        _ => response,
    }
}

/// 404 in ARM's shape for a host no plane answers for.
fn unknown_host(host: &str) -> Response {
    ApiError::arm(
        StatusCode::NOT_FOUND,
        "HostNotFound",
        format!("No Lanyard service answers for host `{host}`."),
    )
    .into_response()
}

/// The error shape of the token service's host: Entra's for the token and discovery
/// endpoints, ARM's for Graph (`/v1.0/...`) and Lanyard's key administration.
fn login_dialect(path: &str) -> Dialect {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if first.eq_ignore_ascii_case("v1.0") || first.eq_ignore_ascii_case("lanyard") {
        Dialect::Arm
    } else {
        Dialect::Entra
    }
}

/// 408 for a request whose body was cut off; `Connection: close` comes with the status.
fn body_too_slow(dialect: Dialect) -> Response {
    let code = match dialect {
        Dialect::Entra | Dialect::Identity => "invalid_request",
        Dialect::Arm | Dialect::KeyVault | Dialect::Blob => "RequestTimeout",
    };
    ApiError::new(
        dialect,
        StatusCode::REQUEST_TIMEOUT,
        code,
        "The request body did not arrive in time: it was sent more slowly than the server accepts.",
    )
    .into_response()
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

    #[test]
    fn a_body_cut_off_is_answered_in_the_planes_shape() {
        assert_eq!(login_dialect("/tenant/oauth2/v2.0/token"), Dialect::Entra);
        assert_eq!(login_dialect("/v1.0/applications"), Dialect::Arm);
        assert_eq!(login_dialect("/lanyard/keys/rotate"), Dialect::Arm);
        let r = body_too_slow(Dialect::Blob);
        assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(r.headers()["x-ms-error-code"], "RequestTimeout");
        assert_eq!(r.headers()["connection"], "close");
    }
}
