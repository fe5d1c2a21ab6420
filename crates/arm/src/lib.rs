//! The control plane: an Azure Resource Manager subset that unmodified management SDKs and
//! the `az` CLI drive: subscriptions, resource groups, resources that hold managed identities,
//! user-assigned identities with federated credentials, role definitions and assignments, and
//! the activity log.
//!
//! Layout:
//! - [`route`]: which endpoint a path names (case-insensitive, extension resources at any
//!   scope). Pure.
//! - [`kinds`]: the resource types served here and their naming rules. Pure.
//! - [`filter`]: the `$filter` subset clients send. Pure.
//! - [`listing`]: the generic resource listing (`/resources`): what it shows, to whom, its
//!   `$filter`, `$expand`, `$top`, and the `GenericResourceExpanded` shape. Pure.
//! - [`shape`]: response shapes and the stored `identity` block. Pure.
//! - [`plan`]: request + current state → the batch to commit and the answer; every
//!   transactional rule lives here and is unit-tested without HTTP. Pure.
//! - [`errors`]: failures with ARM's status and code; they become HTTP only as [`ApiError`].
//! - [`request`]: one authenticated call, and the JSON body extractor.
//! - [`auth`]: 401 challenges and 403 texts.
//! - [`api`]: thin handlers, one module per resource family: load, plan, authorize, and
//!   commit through the platform's write path ([`lanyard_platform::transact()`]).
//! - [`explain`]: `POST /lanyard/access/explain`, the engine's verdict and reasons for
//!   `lanyard access explain`.
//!
//! Every call: route → (`/metadata/endpoints` is anonymous) authenticate → api-version →
//! subscription exists → authorize the implied action → load → plan → check linked scopes →
//! commit (retrying on a concurrent change) → answer. Every write and every denial is in the
//! activity log; writes log in the same transaction as the change, and a write that was
//! authorized but failed (4xx) is logged as `Failed` with its error in
//! `properties.statusMessage` (see `api::dispatch`).

pub mod api;
pub mod auth;
pub mod errors;
pub mod explain;
pub mod filter;
pub mod kinds;
pub mod listing;
pub mod plan;
pub mod request;
pub mod route;
pub mod shape;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::Router;
use lanyard_platform::{ApiError, AppState};
use lanyard_token::Validator;
use uuid::Uuid;

use crate::errors::ArmError;
use crate::request::{parse_query, Call};
use crate::route::Route;

/// The header ARM echoes (or invents) to tie a request to its activity-log entries.
pub const CORRELATION: &str = "x-ms-correlation-request-id";

/// The control plane's shared state: the platform's, and the management-audience validator.
#[derive(Clone)]
pub struct Arm(Arc<Inner>);

struct Inner {
    state: AppState,
    validator: Validator,
    audiences: Vec<String>,
}

impl Arm {
    pub fn new(state: AppState) -> Self {
        let audiences = state.management_audiences();
        let validator = state.tokens.validator(&audiences);
        Self(Arc::new(Inner {
            state,
            validator,
            audiences,
        }))
    }

    pub fn state(&self) -> &AppState {
        &self.0.state
    }
}

/// The management host's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(explain::PATH, axum::routing::post(explain::handle))
        .fallback(handle)
        .with_state(Arm::new(state))
}

async fn handle(State(arm): State<Arm>, request: Request) -> Response {
    let correlation = request
        .headers()
        .get(CORRELATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_string);
    let mut response = match serve(&arm, request, &correlation).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&correlation) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(CORRELATION), v);
    }
    response
}

async fn serve(arm: &Arm, request: Request, correlation: &str) -> Result<Response, ApiError> {
    let path = request.uri().path().to_string();
    let route = route::parse(&path);
    if matches!(route, Ok(Route::Metadata)) {
        return Ok(api::directory::metadata(arm));
    }
    let state = arm.state();
    let caller =
        lanyard_platform::authn::authenticate(&state.tokens, &arm.0.validator, request.headers())
            .map_err(|failure| {
            let login = format!("{}/", state.endpoints().localhost());
            auth::unauthenticated(&failure, &login, &arm.0.audiences, state.clock.unix())
        })?;
    let query = parse_query(request.uri().query());
    let api_version = query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("api-version"))
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
        .ok_or(ArmError::MissingApiVersion)?;
    let route = route.map_err(|e| route_error(e, &api_version))?;
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
        .unwrap_or_else(|| format!("localhost:{}", state.port));
    let method = request.method().clone();
    let body = if matches!(method, Method::PUT | Method::PATCH | Method::POST) {
        axum::body::to_bytes(request.into_body(), request::MAX_BODY)
            .await
            .map_err(|_| ArmError::BodyTooLarge(request::MAX_BODY))?
    } else {
        axum::body::Bytes::new()
    };
    let call = Call {
        method,
        path,
        host,
        query,
        api_version,
        correlation_id: correlation.to_string(),
        caller,
        body,
        progress: request::Progress::default(),
    };
    api::dispatch(arm, &call, route).await
}

fn route_error(e: route::RouteError, api_version: &str) -> ArmError {
    match e {
        route::RouteError::UnknownType { namespace, types } => ArmError::InvalidResourceType {
            namespace,
            resource_type: types.join("/"),
            api_version: api_version.to_string(),
        },
        route::RouteError::NotFound(p) => ArmError::PathNotFound(p),
        route::RouteError::BadEncoding(s) => ArmError::PathNotFound(s),
        route::RouteError::BadScope(e) => ArmError::PathNotFound(e.to_string()),
    }
}
