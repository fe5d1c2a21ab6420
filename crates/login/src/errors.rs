//! The login host's failures and their two dialects: Entra's token-endpoint shape
//! (`{"error","error_description","error_codes",...}`) and Microsoft Graph's
//! (`{"error":{"code","message"}}`, which the ARM dialect renders).
//!
//! Nothing here becomes HTTP by itself: [`TokenError::into_api`] and the [`graph`] helpers
//! build an [`ApiError`], the one type that crosses into HTTP.

use std::borrow::Cow;

use axum::http::StatusCode;
use lanyard_platform::error::from_store;
use lanyard_platform::{ApiError, Dialect};
use lanyard_storage::StoreError;
use lanyard_token::TokenServiceError;

/// Why the token endpoint refused a request: the token library's refusals plus the
/// request-shape failures only the HTTP layer can see.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Service(#[from] TokenServiceError),
    /// AADSTS900144, 400 `invalid_request`.
    #[error("the request body must contain the parameter `{0}`")]
    MissingParameter(&'static str),
    /// AADSTS900144: a body that is not a form carries no `grant_type`.
    #[error("the request body is not `application/x-www-form-urlencoded`")]
    NotAForm,
    /// AADSTS9002313, 400 `invalid_request`.
    #[error("the request is malformed: {0}")]
    Malformed(Cow<'static, str>),
    /// AADSTS9002313, 413 `invalid_request`.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// AADSTS900561, 405 `invalid_request`.
    #[error("the token endpoint only accepts POST, not `{0}`")]
    Method(String),
    /// AADSTS1002012, 400 `invalid_scope`: client credentials need one `R/.default` scope.
    #[error("scope `{0}` is not a `/.default` scope")]
    ScopeNotDefault(String),
    /// AADSTS7000229, 400 `invalid_client`: an application without a service principal.
    #[error("application `{0}` has no service principal in the tenant")]
    NoServicePrincipal(String),
    /// AADSTS50166, 400 `invalid_request`: the external issuer's documents could not be read
    /// (or may not be fetched from where it is). Why is in the server's log under
    /// `trace_id`, never told to the client, as Entra tells it nothing either.
    #[error("request to external oidc endpoint failed (trace id {trace_id})")]
    IssuerUnreachable { trace_id: uuid::Uuid },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signing failed: ours to fix, never the client's.
    #[error("token could not be issued: {0}")]
    Internal(String),
}

impl TokenError {
    /// The number after `AADSTS`, when the refusal has one.
    pub fn aadsts_code(&self) -> Option<u32> {
        Some(match self {
            Self::Service(e) => e.aadsts_code(),
            Self::MissingParameter(_) | Self::NotAForm => 900144,
            Self::Malformed(_) | Self::TooLarge(_) => 9002313,
            Self::Method(_) => 900561,
            Self::ScopeNotDefault(_) => 1002012,
            Self::NoServicePrincipal(_) => 7000229,
            Self::IssuerUnreachable { .. } => 50166,
            Self::Store(_) | Self::Internal(_) => return None,
        })
    }

    /// The message as Entra words it, `AADSTS{code}: ...`.
    pub fn message(&self) -> String {
        let text = match self {
            Self::Service(e) => return e.message(),
            Self::MissingParameter(name) => format!(
                "The request body must contain the following parameter: '{name}'."
            ),
            Self::NotAForm => "The request body must contain the following parameter: 'grant_type'. The body must be sent as application/x-www-form-urlencoded.".to_string(),
            Self::Malformed(reason) => {
                format!("Invalid request. Request is malformed or invalid. [Reason - {reason}]")
            }
            Self::TooLarge(limit) => format!(
                "Invalid request. Request is malformed or invalid. [Reason - the body is larger than {limit} bytes]"
            ),
            Self::Method(method) => {
                format!("The endpoint only accepts POST, OPTIONS requests. Received a {method} request.")
            }
            Self::ScopeNotDefault(scope) => format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
            Self::NoServicePrincipal(client_id) => format!(
                "The client application {client_id} is missing service principal in the tenant."
            ),
            Self::IssuerUnreachable { trace_id } => {
                format!("Request to External OIDC endpoint failed.\r\nTrace ID: {trace_id}")
            }
            Self::Store(e) => return e.to_string(),
            Self::Internal(e) => return e.clone(),
        };
        match self.aadsts_code() {
            Some(code) => format!("AADSTS{code}: {text}"),
            None => text,
        }
    }

    /// What the sign-in log records: the message, which never holds a secret or assertion.
    pub fn reason(&self) -> String {
        self.message()
    }

    pub fn into_api(self) -> ApiError {
        let (status, error) = match &self {
            Self::Service(e) => (
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
                e.error(),
            ),
            Self::MissingParameter(_) | Self::NotAForm | Self::Malformed(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request"),
            Self::Method(_) => (StatusCode::METHOD_NOT_ALLOWED, "invalid_request"),
            Self::ScopeNotDefault(_) => (StatusCode::BAD_REQUEST, "invalid_scope"),
            Self::NoServicePrincipal(_) => (StatusCode::BAD_REQUEST, "invalid_client"),
            Self::IssuerUnreachable { .. } => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::Store(e) => return from_store(Dialect::Entra, e),
            Self::Internal(e) => return ApiError::internal(Dialect::Entra, e),
        };
        let codes = self.aadsts_code().into_iter().collect();
        let api =
            ApiError::new(Dialect::Entra, status, error, self.message()).with_error_codes(codes);
        match self {
            Self::IssuerUnreachable { trace_id } => api.with_trace_id(trace_id),
            _ => api,
        }
    }
}

/// Microsoft Graph's errors (`{"error":{"code","message"}}`).
pub mod graph {
    use super::*;

    fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(Dialect::Arm, status, code, message)
    }

    pub fn not_found(id: &str) -> ApiError {
        error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        error(StatusCode::BAD_REQUEST, "Request_BadRequest", message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        error(
            StatusCode::CONFLICT,
            "Request_MultipleObjectsWithSameKeyValue",
            message,
        )
    }

    pub fn unauthenticated(reason: &str) -> ApiError {
        error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            format!("Access token validation failure: {reason}."),
        )
        .with_header(axum::http::header::WWW_AUTHENTICATE, "Bearer")
    }

    pub fn denied() -> ApiError {
        error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )
    }

    pub fn method(method: &str) -> ApiError {
        error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            format!("Method '{method}' is not allowed on this resource."),
        )
    }

    pub fn too_large(limit: usize) -> ApiError {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request_BadRequest",
            format!("The request body is larger than {limit} bytes."),
        )
    }

    pub fn store(e: &StoreError) -> ApiError {
        from_store(Dialect::Arm, e)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn request_shape_failures_have_codes_and_statuses() {
        let table: Vec<(TokenError, u32, &str, u16)> = vec![
            (
                TokenError::MissingParameter("grant_type"),
                900144,
                "invalid_request",
                400,
            ),
            (TokenError::NotAForm, 900144, "invalid_request", 400),
            (
                TokenError::Malformed("x".into()),
                9002313,
                "invalid_request",
                400,
            ),
            (TokenError::TooLarge(1), 9002313, "invalid_request", 413),
            (
                TokenError::Method("GET".into()),
                900561,
                "invalid_request",
                405,
            ),
            (
                TokenError::ScopeNotDefault("s".into()),
                1002012,
                "invalid_scope",
                400,
            ),
            (
                TokenError::NoServicePrincipal("c".into()),
                7000229,
                "invalid_client",
                400,
            ),
            (
                TokenError::IssuerUnreachable {
                    trace_id: uuid::Uuid::nil(),
                },
                50166,
                "invalid_request",
                400,
            ),
            (
                TokenError::Service(TokenServiceError::UnknownTenant { tenant: "t".into() }),
                90002,
                "invalid_request",
                400,
            ),
        ];
        for (err, code, error, status) in table {
            assert!(
                err.message().starts_with(&format!("AADSTS{code}: ")),
                "{err:?}"
            );
            let api = err.into_api();
            assert_eq!(api.status.as_u16(), status);
            assert_eq!(api.code, error);
            assert_eq!(api.error_codes(), &[code]);
            assert_eq!(api.dialect, Dialect::Entra);
        }
    }
}
