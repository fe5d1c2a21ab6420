//! The token service on the login host (`login.{domain}`, `graph.{domain}`, and the
//! token-service paths of `localhost`): OIDC discovery, the JWKS, the v1 and v2 token
//! endpoints for the client-credentials grant, the Microsoft Graph subset for app
//! registrations, and the administrator's key rotation.
//!
//! Layout:
//! - [`router`] (here): one fallback handler that matches the path with [`paths`], reads the
//!   body within a bound, and hands the request to the endpoint. Handlers parse, call the
//!   token library or the store, and map the result; errors become HTTP only as
//!   [`ApiError`](lanyard_platform::ApiError).
//! - [`paths`]: which endpoint a path names, case-insensitively as Entra and Graph do.
//! - [`discovery`]: the v1 and v2 OpenID configuration documents and tenant names.
//! - [`form`]: the token request: form body, HTTP Basic client authentication, resource.
//! - [`token`]: the token endpoints: client secret, certificate assertion, federated
//!   assertion; v1/v2 responses.
//! - [`audit`]: the sign-in log of the token endpoints, written with group commits.
//! - [`federation`]: external issuers' keys, fetched over HTTPS (trusting
//!   `LANYARD_EXTRA_CA_FILE` too) and cached with a TTL.
//! - [`outbound`]: the addresses those fetches may reach (no loopback, private or
//!   link-local ones unless the operator allows their network), checked as they connect.
//! - [`apps`]: how applications, service principals and their credentials are stored, and
//!   their Graph JSON.
//! - [`graph`]: the `/v1.0/applications` and `/v1.0/servicePrincipals` endpoints
//!   (administrator only).
//! - [`admin`]: `POST /lanyard/keys/rotate`.
//! - [`errors`]: the token endpoint's refusals (AADSTS codes) and Graph's error codes.
//!
//! Tokens, secrets and assertions are never logged; the sign-in log records who asked, for
//! what, and why a request was refused.

pub mod admin;
pub mod apps;
pub mod audit;
pub mod discovery;
pub mod errors;
pub mod federation;
pub mod form;
pub mod graph;
pub mod outbound;
pub mod paths;
pub mod token;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use lanyard_platform::{ApiError, AppState, Dialect};
use lanyard_token::TokenServiceError;

use crate::discovery::Hosts;
use crate::errors::TokenError;
use crate::form::EndpointVersion;
use crate::paths::Route;

/// What the login host's handlers share.
struct Login {
    state: AppState,
    tokens: token::TokenService,
    graph: graph::Graph,
    admin: admin::Admin,
}

/// The login host's routes.
pub fn router(state: AppState) -> Router {
    let login = Arc::new(Login {
        tokens: token::TokenService::new(state.clone()),
        graph: graph::Graph::new(state.clone()),
        admin: admin::Admin::new(state.clone()),
        state,
    });
    Router::new().fallback(dispatch).with_state(login)
}

async fn dispatch(State(login): State<Arc<Login>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let method = &parts.method;
    let authority = parts.uri.authority().map(|a| a.as_str()).or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    let base = discovery::base_url(authority, &login.state.endpoints().localhost());
    match paths::route(path) {
        Route::Discovery { tenant, version } => {
            if !is_read(method) {
                return entra_method(method);
            }
            discovery_document(&login, tenant, version, &base)
        }
        Route::Jwks { tenant } => {
            if !is_read(method) {
                return entra_method(method);
            }
            jwks(&login, tenant)
        }
        Route::Token { tenant, version } => {
            if method != Method::POST {
                return TokenError::Method(method.to_string())
                    .into_api()
                    .into_response();
            }
            let bytes = read_body(body, form::MAX_FORM_BYTES).await;
            let body = bytes
                .as_ref()
                .map(|b| b.as_ref())
                .map_err(|_| TokenError::TooLarge(form::MAX_FORM_BYTES));
            login
                .tokens
                .request(tenant, version, &base, &parts.headers, body)
                .await
        }
        Route::Graph(route) => {
            let bytes = read_body(body, graph::MAX_JSON_BYTES).await;
            let body = bytes
                .as_ref()
                .map(|b| b.as_ref())
                .map_err(|_| errors::graph::too_large(graph::MAX_JSON_BYTES));
            let request = graph::GraphRequest {
                method,
                headers: &parts.headers,
                query: parts.uri.query(),
                body,
            };
            login.graph.handle(route, request).await
        }
        Route::RotateKeys => {
            if method != Method::POST {
                return ApiError::arm(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    format!("The method '{method}' is not allowed; use POST."),
                )
                .into_response();
            }
            match login.admin.rotate(&parts.headers).await {
                Ok(r) => r,
                Err(e) => e.into_response(),
            }
        }
        Route::NotFound if is_graph_path(path) => ApiError::new(
            Dialect::Arm,
            StatusCode::NOT_FOUND,
            "Request_UnsupportedQuery",
            "Resource not found for the segment.",
        )
        .into_response(),
        Route::NotFound => ApiError::new(
            Dialect::Entra,
            StatusCode::NOT_FOUND,
            "not_found",
            "The requested path does not exist on this host.",
        )
        .into_response(),
    }
}

fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

fn is_graph_path(path: &str) -> bool {
    path.trim_start_matches('/')
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("v1.0"))
}

fn entra_method(method: &Method) -> Response {
    ApiError::new(
        Dialect::Entra,
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        format!("The endpoint only accepts GET requests. Received a {method} request."),
    )
    .into_response()
}

/// The body, or an error when it is larger than `limit` or cannot be read.
async fn read_body(body: axum::body::Body, limit: usize) -> Result<axum::body::Bytes, ()> {
    axum::body::to_bytes(body, limit).await.map_err(|_| ())
}

fn unknown_tenant(tenant: &str) -> Response {
    TokenError::Service(TokenServiceError::UnknownTenant {
        tenant: form::bounded(tenant),
    })
    .into_api()
    .into_response()
}

/// Discovery documents and keys change rarely; clients may cache them for a day as Entra's.
fn cacheable(body: serde_json::Value) -> Response {
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=86400, private"),
    );
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

fn discovery_document(
    login: &Login,
    tenant: &str,
    version: EndpointVersion,
    base: &str,
) -> Response {
    let directory = &login.state.directory;
    let Some(tenant_id) = discovery::resolve_tenant(&directory.tenant, tenant) else {
        return unknown_tenant(tenant);
    };
    let endpoints = login.state.endpoints();
    let hosts = Hosts {
        graph: match endpoints.port {
            443 => format!("graph.{}", endpoints.domain),
            port => format!("graph.{}:{port}", endpoints.domain),
        },
        region_scope: "NA",
    };
    let issuers = &login.state.tokens.policy().issuers;
    let body = match version {
        EndpointVersion::V2 => {
            discovery::openid_configuration_v2(base, tenant_id, &issuers.v2(tenant_id), &hosts)
        }
        EndpointVersion::V1 => {
            discovery::openid_configuration_v1(base, tenant_id, &issuers.v1(tenant_id), &hosts)
        }
    };
    cacheable(body)
}

fn jwks(login: &Login, tenant: &str) -> Response {
    if !discovery::serves_keys_for(&login.state.directory.tenant, tenant) {
        return unknown_tenant(tenant);
    }
    let keys = login.state.tokens.jwks();
    match serde_json::to_value(&keys) {
        // Not cached for a day: a key published ahead of rotation must reach clients soon.
        Ok(body) => {
            let mut response = axum::Json(body).into_response();
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=300, private"),
            );
            response
        }
        Err(e) => ApiError::internal(Dialect::Entra, &e).into_response(),
    }
}
