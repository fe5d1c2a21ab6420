//! The one place where errors become HTTP.
//!
//! Every plane speaks its own error dialect, and clients parse each strictly:
//! - ARM: `{"error":{"code","message","target"?,"details"?}}`
//! - Entra (login host): `{"error","error_description","error_codes","timestamp","trace_id","correlation_id"}`
//! - Key Vault: `{"error":{"code","message","innererror"?:{"code"}}}`
//! - Blob: XML `<Error><Code/><Message/></Error>` with `x-ms-error-code`
//! - Identity endpoints: `{"error","error_description"}`
//!
//! Handlers build an [`ApiError`] in the dialect of their plane; this module renders it.
//! Internal failures are logged with a correlation id and never returned in detail.

use std::borrow::Cow;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use uuid::Uuid;

/// Which error dialect to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Arm,
    Entra,
    KeyVault,
    Blob,
    Identity,
}

/// An error on its way to the client. Small (the rarely used parts are boxed), so handlers
/// can return `Result<_, ApiError>` freely.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub dialect: Dialect,
    pub code: Cow<'static, str>,
    pub message: String,
    extra: Option<Box<Extra>>,
}

#[derive(Debug, Clone, Default)]
struct Extra {
    target: Option<String>,
    /// Key Vault `innererror.code`.
    inner_code: Option<String>,
    /// Entra `error_codes` (the numeric part of `AADSTS…`).
    error_codes: Vec<u32>,
    /// Entra `trace_id`, when the server logged the cause under it.
    trace_id: Option<Uuid>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(
        dialect: Dialect,
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            dialect,
            code: code.into(),
            message: message.into(),
            extra: None,
        }
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Entra `error_codes`.
    pub fn error_codes(&self) -> &[u32] {
        self.extra
            .as_ref()
            .map_or(&[], |e| e.error_codes.as_slice())
    }

    pub fn arm(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(Dialect::Arm, status, code, message)
    }

    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.extra().target = Some(target.into());
        self
    }

    pub fn with_inner(mut self, inner: impl Into<String>) -> Self {
        self.extra().inner_code = Some(inner.into());
        self
    }

    pub fn with_error_codes(mut self, codes: Vec<u32>) -> Self {
        self.extra().error_codes = codes;
        self
    }

    /// Entra `trace_id`: the id the cause was logged under, so an operator finds it.
    pub fn with_trace_id(mut self, trace_id: Uuid) -> Self {
        self.extra().trace_id = Some(trace_id);
        self
    }

    /// Adds a response header; values that are not valid header text are dropped.
    pub fn with_header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.extra().headers.push((name, v));
        }
        self
    }

    /// A failure the client cannot fix. The cause is logged under a correlation id that the
    /// client sees; the cause itself is not returned.
    pub fn internal(dialect: Dialect, cause: &dyn std::fmt::Display) -> Self {
        let correlation = Uuid::new_v4();
        tracing::error!(%correlation, error = %cause, "internal error");
        Self::new(
            dialect,
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            format!("The server encountered an internal error. Correlation id: {correlation}."),
        )
    }

    /// The database is unreachable: retryable.
    pub fn unavailable(dialect: Dialect, cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "storage unavailable");
        Self::new(
            dialect,
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The service is temporarily unable to reach its database. Retry later.",
        )
        .with_header(axum::http::header::RETRY_AFTER, "5")
    }

    fn body(&self) -> (&'static str, Vec<u8>) {
        let extra = self.extra.as_deref();
        let target = extra.and_then(|e| e.target.as_ref());
        let inner_code = extra.and_then(|e| e.inner_code.as_ref());
        match self.dialect {
            Dialect::Arm => {
                let mut error = json!({ "code": self.code, "message": self.message });
                if let Some(t) = target {
                    error["target"] = json!(t);
                }
                (
                    "application/json; charset=utf-8",
                    json!({ "error": error }).to_string().into_bytes(),
                )
            }
            Dialect::KeyVault => {
                let mut error = json!({ "code": self.code, "message": self.message });
                if let Some(inner) = inner_code {
                    error["innererror"] = json!({ "code": inner });
                }
                (
                    "application/json; charset=utf-8",
                    json!({ "error": error }).to_string().into_bytes(),
                )
            }
            Dialect::Entra => {
                let now = time::OffsetDateTime::now_utc();
                let timestamp = now
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                let body = json!({
                    "error": self.code,
                    "error_description": self.message,
                    "error_codes": self.error_codes(),
                    "timestamp": timestamp,
                    "trace_id": extra.and_then(|e| e.trace_id).unwrap_or_else(Uuid::new_v4),
                    "correlation_id": Uuid::new_v4(),
                });
                (
                    "application/json; charset=utf-8",
                    body.to_string().into_bytes(),
                )
            }
            Dialect::Identity => {
                let body = json!({ "error": self.code, "error_description": self.message });
                (
                    "application/json; charset=utf-8",
                    body.to_string().into_bytes(),
                )
            }
            Dialect::Blob => {
                let xml = format!(
                    "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{}</Code><Message>{}</Message></Error>",
                    xml_escape(&self.code),
                    xml_escape(&self.message)
                );
                ("application/xml", xml.into_bytes())
            }
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (content_type, body) = self.body();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        if let Ok(code) = HeaderValue::from_str(&self.code) {
            let name = match self.dialect {
                Dialect::Blob | Dialect::KeyVault => "x-ms-error-code",
                _ => "x-ms-failure-cause",
            };
            headers.insert(HeaderName::from_static(name), code);
        }
        if let Some(extra) = self.extra {
            for (name, value) in extra.headers {
                headers.insert(name, value);
            }
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE
            || self.status == StatusCode::REQUEST_TIMEOUT
        {
            // The rest of the body was never read, so the connection cannot carry another
            // request; say so, or HTTP/1.1 clients reuse it and their next request fails.
            // (HTTP/2 strips the header; streams are independent there.)
            headers.insert(
                axum::http::header::CONNECTION,
                HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// Escapes text for XML element content.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Storage failures, in any dialect: conflicts are the caller's to map; the rest are 503/500.
pub fn from_store(dialect: Dialect, err: &lanyard_storage::StoreError) -> ApiError {
    match err {
        lanyard_storage::StoreError::Unavailable(_) => ApiError::unavailable(dialect, err),
        lanyard_storage::StoreError::Conflict(msg) => {
            ApiError::new(dialect, StatusCode::CONFLICT, "Conflict", msg.clone())
        }
        _ => ApiError::internal(dialect, err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn render(e: ApiError) -> (StatusCode, axum::http::HeaderMap, String) {
        let r = e.into_response();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn arm_envelope() {
        let (status, _, body) = render(
            ApiError::arm(
                StatusCode::NOT_FOUND,
                "ResourceGroupNotFound",
                "Resource group 'rg' could not be found.",
            )
            .with_target("rg"),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "ResourceGroupNotFound");
        assert_eq!(v["error"]["target"], "rg");
    }

    #[tokio::test]
    async fn blob_errors_are_xml_with_error_code_header() {
        let (_, headers, body) = render(ApiError::new(
            Dialect::Blob,
            StatusCode::FORBIDDEN,
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission <x>.",
        ))
        .await;
        assert_eq!(
            headers["x-ms-error-code"],
            "AuthorizationPermissionMismatch"
        );
        assert!(body.contains("<Code>AuthorizationPermissionMismatch</Code>"));
        assert!(body.contains("&lt;x&gt;"));
    }

    #[tokio::test]
    async fn too_large_closes_the_connection() {
        let (status, headers, _) = render(ApiError::arm(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "too large",
        ))
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(headers[axum::http::header::CONNECTION], "close");
        let (_, headers, _) =
            render(ApiError::arm(StatusCode::BAD_REQUEST, "BadRequest", "bad")).await;
        assert!(!headers.contains_key(axum::http::header::CONNECTION));
    }

    #[tokio::test]
    async fn internal_errors_hide_the_cause() {
        let (status, _, body) = render(ApiError::internal(Dialect::Arm, &"password=hunter2")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!body.contains("hunter2"));
    }

    #[tokio::test]
    async fn entra_shape() {
        let (_, _, body) = render(
            ApiError::new(
                Dialect::Entra,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "AADSTS90002: Tenant 'x' not found.",
            )
            .with_error_codes(vec![90002]),
        )
        .await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "invalid_request");
        assert_eq!(v["error_codes"][0], 90002);
        for k in [
            "timestamp",
            "trace_id",
            "correlation_id",
            "error_description",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }

    #[tokio::test]
    async fn entra_trace_id_is_the_one_given() {
        let id = Uuid::new_v4();
        let (_, _, body) = render(
            ApiError::new(
                Dialect::Entra,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "AADSTS50166: Request to External OIDC endpoint failed.",
            )
            .with_trace_id(id),
        )
        .await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["trace_id"], id.to_string());
    }
}
