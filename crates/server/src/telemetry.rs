//! Structured logs with a request id on every line.
//!
//! Only the method, path and status of a request are logged: never headers (bearer tokens,
//! identity headers) and never bodies (secret values).

use axum::http::{HeaderName, Request};
use tower_http::request_id::{MakeRequestId, RequestId};
use tracing_subscriber::EnvFilter;

use lanyard_platform::config::LogFormat;

/// The header carrying the request id, as Azure services name it.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-request-id");

/// Installs the global subscriber. `LANYARD_LOG` (an `EnvFilter` directive) sets the level.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("LANYARD_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,rustls=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Request ids are random UUIDs.
#[derive(Clone, Copy, Default)]
pub struct UuidRequestId;

impl MakeRequestId for UuidRequestId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let id = uuid::Uuid::new_v4().to_string();
        axum::http::HeaderValue::from_str(&id)
            .ok()
            .map(RequestId::new)
    }
}

/// The span every request's log lines carry: request id, method and path (no query string,
/// which may carry client-chosen text; no headers).
pub fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    )
}
