//! The blob service's errors and their codes. They become HTTP in one place: the conversion
//! into the platform's [`ApiError`] (XML `<Error>` with `x-ms-error-code`).

use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use lanyard_platform::authn::AuthFailure;
use lanyard_platform::{ApiError, Dialect};
use lanyard_storage::StoreError;

/// Why a blob request failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No usable bearer token; carries the challenge to send.
    #[error("request is not authenticated: {failure}")]
    Unauthenticated {
        failure: AuthFailure,
        challenge: String,
    },
    #[error("shared key and shared access signatures are not accepted")]
    KeyBasedAuthentication,
    /// The authorization engine's explanation.
    #[error("permission denied: {0}")]
    PermissionMismatch(String),
    #[error("storage account `{0}` does not exist")]
    AccountNotFound(String),
    #[error("container does not exist")]
    ContainerNotFound,
    #[error("container already exists")]
    ContainerAlreadyExists,
    #[error("blob does not exist")]
    BlobNotFound,
    #[error("blob already exists")]
    BlobAlreadyExists,
    #[error("a conditional header is not met")]
    ConditionNotMet,
    /// Carries the size of the blob for `Content-Range: bytes */{size}`.
    #[error("range is not satisfiable for a blob of {size} bytes")]
    InvalidRange { size: u64 },
    #[error("header `{0}` has an invalid value")]
    InvalidHeaderValue(&'static str),
    #[error("header `{0}` is required")]
    MissingRequiredHeader(&'static str),
    #[error("query parameter `{0}` has an invalid value")]
    InvalidQueryParameterValue(&'static str),
    #[error("query parameter `{0}` is not supported")]
    UnsupportedQueryParameter(String),
    #[error("method `{0}` is not supported here")]
    UnsupportedHttpVerb(String),
    #[error("invalid resource name")]
    InvalidResourceName,
    #[error("metadata `{0}` is invalid")]
    InvalidMetadata(String),
    #[error("block list is not well-formed XML: {0}")]
    InvalidXmlDocument(String),
    #[error("block list names block `{0}`, which does not exist")]
    InvalidBlockList(String),
    #[error("the MD5 of the content does not match `Content-MD5`")]
    Md5Mismatch,
    #[error("request body ended after {received} of {expected} bytes")]
    IncompleteBody { received: u64, expected: u64 },
    #[error("request body is larger than {0} bytes")]
    RequestBodyTooLarge(u64),
    #[error("a range larger than 4 MiB cannot have its MD5 returned")]
    OutOfRangeInput,
    #[error("public access is not permitted on this storage account")]
    PublicAccessNotPermitted,
    #[error("the request body could not be read: {0}")]
    BodyRead(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("file system: {0}")]
    Io(#[from] std::io::Error),
}

impl BlobError {
    /// The status and `x-ms-error-code`.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use BlobError as E;
        match self {
            E::Unauthenticated { .. } => (StatusCode::UNAUTHORIZED, "InvalidAuthenticationInfo"),
            E::KeyBasedAuthentication => {
                (StatusCode::FORBIDDEN, "KeyBasedAuthenticationNotPermitted")
            }
            E::PermissionMismatch(_) => (StatusCode::FORBIDDEN, "AuthorizationPermissionMismatch"),
            E::AccountNotFound(_) => (StatusCode::NOT_FOUND, "ResourceNotFound"),
            E::ContainerNotFound => (StatusCode::NOT_FOUND, "ContainerNotFound"),
            E::ContainerAlreadyExists => (StatusCode::CONFLICT, "ContainerAlreadyExists"),
            E::BlobNotFound => (StatusCode::NOT_FOUND, "BlobNotFound"),
            E::BlobAlreadyExists => (StatusCode::CONFLICT, "BlobAlreadyExists"),
            E::ConditionNotMet => (StatusCode::PRECONDITION_FAILED, "ConditionNotMet"),
            E::InvalidRange { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "InvalidRange"),
            E::InvalidHeaderValue(_) => (StatusCode::BAD_REQUEST, "InvalidHeaderValue"),
            E::MissingRequiredHeader(_) => (StatusCode::BAD_REQUEST, "MissingRequiredHeader"),
            E::InvalidQueryParameterValue(_) => {
                (StatusCode::BAD_REQUEST, "InvalidQueryParameterValue")
            }
            E::UnsupportedQueryParameter(_) => {
                (StatusCode::BAD_REQUEST, "UnsupportedQueryParameter")
            }
            E::UnsupportedHttpVerb(_) => (StatusCode::METHOD_NOT_ALLOWED, "UnsupportedHttpVerb"),
            E::InvalidResourceName => (StatusCode::BAD_REQUEST, "InvalidResourceName"),
            E::InvalidMetadata(_) => (StatusCode::BAD_REQUEST, "InvalidMetadata"),
            E::InvalidXmlDocument(_) => (StatusCode::BAD_REQUEST, "InvalidXmlDocument"),
            E::InvalidBlockList(_) => (StatusCode::BAD_REQUEST, "InvalidBlockList"),
            E::Md5Mismatch => (StatusCode::BAD_REQUEST, "Md5Mismatch"),
            E::IncompleteBody { .. } | E::BodyRead(_) => {
                (StatusCode::BAD_REQUEST, "IncompleteBody")
            }
            E::RequestBodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "RequestBodyTooLarge"),
            E::OutOfRangeInput => (StatusCode::BAD_REQUEST, "OutOfRangeInput"),
            E::PublicAccessNotPermitted => (StatusCode::CONFLICT, "PublicAccessNotPermitted"),
            E::Corrupt(_) | E::Store(_) | E::Io(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
            }
        }
    }

    /// The service's sentence, with our detail after it where it helps.
    fn message(&self) -> String {
        use BlobError as E;
        match self {
            E::Unauthenticated { failure, .. } => format!(
                "Server failed to authenticate the request. Please refer to the information in the www-authenticate header. Detail: {failure}."
            ),
            E::KeyBasedAuthentication => "Key based authentication is not permitted on this storage account. Lanyard accepts only Microsoft Entra (bearer token) authorization.".into(),
            E::PermissionMismatch(explanation) => format!(
                "This request is not authorized to perform this operation using this permission. {explanation}."
            ),
            E::AccountNotFound(name) => format!("The storage account `{name}` does not exist."),
            E::ContainerNotFound => "The specified container does not exist.".into(),
            E::ContainerAlreadyExists => "The specified container already exists.".into(),
            E::BlobNotFound => "The specified blob does not exist.".into(),
            E::BlobAlreadyExists => "The specified blob already exists.".into(),
            E::ConditionNotMet => {
                "The condition specified using HTTP conditional header(s) is not met.".into()
            }
            E::InvalidRange { .. } => {
                "The range specified is invalid for the current size of the resource.".into()
            }
            E::InvalidHeaderValue(name) => format!(
                "The value for one of the HTTP headers is not in the correct format. Header: {name}."
            ),
            E::MissingRequiredHeader(name) => format!(
                "An HTTP header that's mandatory for this request is not specified. Header: {name}."
            ),
            E::InvalidQueryParameterValue(name) => format!(
                "Value for one of the query parameters specified in the request URI is invalid. Parameter: {name}."
            ),
            E::UnsupportedQueryParameter(value) => format!(
                "One of the query parameters specified in the request URI is not supported. Value: {value}."
            ),
            E::UnsupportedHttpVerb(method) => format!(
                "The resource doesn't support the specified HTTP verb. Verb: {method}."
            ),
            E::InvalidResourceName => {
                "The specified resource name contains invalid characters.".into()
            }
            E::InvalidMetadata(name) => format!(
                "The metadata specified is invalid. It has characters that are not permitted. Name: {name}."
            ),
            E::InvalidXmlDocument(detail) => {
                format!("XML specified is not syntactically valid. Detail: {detail}.")
            }
            E::InvalidBlockList(id) => {
                format!("The specified block list is invalid. Block `{id}` was not found.")
            }
            E::Md5Mismatch => "The MD5 value specified in the request did not match with the MD5 value calculated by the server.".into(),
            E::IncompleteBody { received, expected } => format!(
                "The request body is incomplete: {received} of {expected} bytes were received."
            ),
            E::BodyRead(_) => "The request body could not be read in full.".into(),
            E::RequestBodyTooLarge(max) => format!(
                "The request body is too large and exceeds the maximum permissible limit of {max} bytes."
            ),
            E::OutOfRangeInput => "One of the request inputs is out of range: x-ms-range-get-content-md5 needs a range of at most 4 MiB.".into(),
            E::PublicAccessNotPermitted => {
                "Public access is not permitted on this storage account.".into()
            }
            E::Corrupt(_) | E::Store(_) | E::Io(_) => String::new(),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> ApiError {
        // Failures the client cannot fix are logged with a correlation id (by the platform)
        // and carry the blob service's codes for them.
        let server_side = match &e {
            BlobError::Store(store) => {
                Some(lanyard_platform::error::from_store(Dialect::Blob, store))
            }
            BlobError::Corrupt(_) | BlobError::Io(_) => Some(ApiError::internal(Dialect::Blob, &e)),
            _ => None,
        };
        if let Some(mut error) = server_side {
            if error.status == StatusCode::INTERNAL_SERVER_ERROR {
                error.code = "InternalError".into();
            } else if error.status == StatusCode::SERVICE_UNAVAILABLE {
                error.code = "ServerBusy".into();
            }
            return error;
        }
        let (status, code) = e.status_and_code();
        let mut error = ApiError::new(Dialect::Blob, status, code, e.message());
        match &e {
            BlobError::Unauthenticated { challenge, .. } => {
                error = error.with_header(header::WWW_AUTHENTICATE, challenge);
            }
            BlobError::InvalidRange { size } => {
                error = error.with_header(header::CONTENT_RANGE, &format!("bytes */{size}"));
            }
            _ => {}
        }
        error
    }
}

impl IntoResponse for BlobError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// `x-ms-error-code`, for tests and logs.
pub const ERROR_CODE: HeaderName = HeaderName::from_static("x-ms-error-code");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_error_has_a_4xx_status() {
        let errors = [
            BlobError::ConditionNotMet,
            BlobError::InvalidRange { size: 3 },
            BlobError::InvalidXmlDocument("x".into()),
            BlobError::UnsupportedQueryParameter("comp=x".into()),
            BlobError::UnsupportedHttpVerb("PATCH".into()),
        ];
        for e in errors {
            let api = ApiError::from(e);
            assert!(api.status.is_client_error(), "{api}");
        }
    }

    #[test]
    fn invalid_range_says_the_size() {
        let r = BlobError::InvalidRange { size: 42 }.into_response();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes */42");
        assert_eq!(r.headers()[ERROR_CODE], "InvalidRange");
    }
}
