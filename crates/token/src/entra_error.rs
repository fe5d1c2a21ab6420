//! The token endpoint's failures as Entra reports them: AADSTS code, OAuth `error`, HTTP
//! status and description. The server renders the JSON body
//! (`{"error","error_description","error_codes","timestamp","trace_id","correlation_id"}`);
//! [`TokenErrorBody`] is that body, ready to serialize.

use serde::Serialize;

use crate::claims::ScopeError;
use crate::credentials::AssertionError;

/// A refusal of the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenServiceError {
    /// AADSTS90002, 400 `invalid_request`.
    #[error("tenant `{tenant}` not found")]
    UnknownTenant { tenant: String },
    /// AADSTS700016, 400 `unauthorized_client`.
    #[error("application `{client_id}` not found in directory `{tenant}`")]
    UnknownClient { client_id: String, tenant: String },
    /// AADSTS7000218, 400 `invalid_client`.
    #[error("request has neither `client_assertion` nor `client_secret`")]
    MissingClientCredential,
    /// AADSTS7000215, 401 `invalid_client`.
    #[error("invalid client secret for application `{client_id}`")]
    InvalidClientSecret { client_id: String },
    /// AADSTS700027, 401 `invalid_client`: no registered certificate, or a bad signature.
    #[error("client assertion signature is invalid: {reason}")]
    InvalidAssertionSignature { reason: String },
    /// AADSTS700021, 401 `invalid_client`: `iss`/`sub` is not the `client_id`.
    #[error("client assertion is not for application `{client_id}`")]
    AssertionClientMismatch { client_id: String },
    /// AADSTS700024, 400 `invalid_client`.
    #[error("client assertion is not within its valid time range")]
    ExpiredAssertion {
        now: i64,
        not_before: Option<i64>,
        expires: Option<i64>,
    },
    /// AADSTS700024, 400 `invalid_client`: valid for longer than the server accepts.
    #[error("client assertion is valid for {lifetime} seconds, longer than the {max} accepted")]
    AssertionLifetimeTooLong {
        now: i64,
        not_before: Option<i64>,
        expires: i64,
        lifetime: i64,
        max: i64,
    },
    /// AADSTS50027, 400 `invalid_request`.
    #[error("client assertion is malformed: {reason}")]
    MalformedAssertion { reason: String },
    /// AADSTS70021, 400 `invalid_request`.
    #[error("no federated credential matches issuer `{issuer}`, subject `{subject}`, audience `{audience}`")]
    NoMatchingFederatedCredential {
        issuer: String,
        subject: String,
        audience: String,
    },
    /// AADSTS70003, 400 `unsupported_grant_type`.
    #[error("grant type `{grant_type}` is not supported")]
    UnsupportedGrantType { grant_type: String },
    /// AADSTS70011, 400 `invalid_scope`.
    #[error("scope `{scope}` is not valid")]
    InvalidScope { scope: String },
    /// AADSTS500011, 400 `invalid_resource`.
    #[error("resource `{resource}` not found in tenant `{tenant}`")]
    InvalidResource { resource: String, tenant: String },
}

impl TokenServiceError {
    /// The number after `AADSTS`.
    pub fn aadsts_code(&self) -> u32 {
        match self {
            Self::UnknownTenant { .. } => 90002,
            Self::UnknownClient { .. } => 700016,
            Self::MissingClientCredential => 7000218,
            Self::InvalidClientSecret { .. } => 7000215,
            Self::InvalidAssertionSignature { .. } => 700027,
            Self::AssertionClientMismatch { .. } => 700021,
            Self::ExpiredAssertion { .. } | Self::AssertionLifetimeTooLong { .. } => 700024,
            Self::MalformedAssertion { .. } => 50027,
            Self::NoMatchingFederatedCredential { .. } => 70021,
            Self::UnsupportedGrantType { .. } => 70003,
            Self::InvalidScope { .. } => 70011,
            Self::InvalidResource { .. } => 500011,
        }
    }

    /// The OAuth 2.0 `error` value.
    pub fn error(&self) -> &'static str {
        match self {
            Self::UnknownTenant { .. }
            | Self::MalformedAssertion { .. }
            | Self::NoMatchingFederatedCredential { .. } => "invalid_request",
            Self::UnknownClient { .. } => "unauthorized_client",
            Self::MissingClientCredential
            | Self::InvalidClientSecret { .. }
            | Self::InvalidAssertionSignature { .. }
            | Self::AssertionClientMismatch { .. }
            | Self::ExpiredAssertion { .. }
            | Self::AssertionLifetimeTooLong { .. } => "invalid_client",
            Self::UnsupportedGrantType { .. } => "unsupported_grant_type",
            Self::InvalidScope { .. } => "invalid_scope",
            Self::InvalidResource { .. } => "invalid_resource",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidClientSecret { .. }
            | Self::InvalidAssertionSignature { .. }
            | Self::AssertionClientMismatch { .. } => 401,
            _ => 400,
        }
    }

    /// `AADSTS{code}: {message}`, worded as Entra words it.
    pub fn message(&self) -> String {
        let text = match self {
            Self::UnknownTenant { tenant } => format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
            Self::UnknownClient { client_id, tenant } => format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
            Self::MissingClientCredential => "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".to_string(),
            Self::InvalidClientSecret { client_id } => format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
            Self::InvalidAssertionSignature { reason } => {
                format!("Client assertion contains an invalid signature. [Reason - {reason}]")
            }
            Self::AssertionClientMismatch { client_id } => format!(
                "Client assertion application identifier doesn't match 'client_id' parameter '{client_id}'."
            ),
            Self::ExpiredAssertion {
                now,
                not_before,
                expires,
            } => {
                let show = |t: &Option<i64>| t.map_or_else(|| "unknown".to_string(), |t| t.to_string());
                format!(
                    "Client assertion is not within its valid time range. Current time: {now}, assertion valid from {}, expiry time of assertion {}.",
                    show(not_before),
                    show(expires)
                )
            }
            Self::AssertionLifetimeTooLong {
                now,
                not_before,
                expires,
                lifetime,
                max,
            } => {
                let from = not_before.map_or_else(|| "unknown".to_string(), |t| t.to_string());
                format!(
                    "Client assertion is not within its valid time range. Current time: {now}, assertion valid from {from}, expiry time of assertion {expires}. [Reason - the assertion is valid for {lifetime} seconds; at most {max} are accepted]"
                )
            }
            Self::MalformedAssertion { reason } => {
                format!("JWT token is invalid or malformed. [Reason - {reason}]")
            }
            Self::NoMatchingFederatedCredential {
                issuer,
                subject,
                audience,
            } => format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: '{audience}'."
            ),
            Self::UnsupportedGrantType { grant_type } => {
                format!("The app requested an unsupported grant type '{grant_type}'.")
            }
            Self::InvalidScope { scope } => format!(
                "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
            Self::InvalidResource { resource, tenant } => format!(
                "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        };
        format!("AADSTS{}: {text}", self.aadsts_code())
    }

    /// `error_description`: the message followed by Entra's trace lines.
    /// `timestamp` is formatted by the caller as `YYYY-MM-DD hh:mm:ssZ`.
    pub fn description(&self, trace_id: &str, correlation_id: &str, timestamp: &str) -> String {
        format!(
            "{}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
            self.message()
        )
    }

    /// The whole JSON body.
    pub fn body(&self, trace_id: &str, correlation_id: &str, timestamp: &str) -> TokenErrorBody {
        TokenErrorBody {
            error: self.error(),
            error_description: self.description(trace_id, correlation_id, timestamp),
            error_codes: vec![self.aadsts_code()],
            timestamp: timestamp.to_string(),
            trace_id: trace_id.to_string(),
            correlation_id: correlation_id.to_string(),
        }
    }
}

impl From<&AssertionError> for TokenServiceError {
    fn from(err: &AssertionError) -> Self {
        match err {
            AssertionError::Malformed(_)
            | AssertionError::UnsupportedAlgorithm(_)
            | AssertionError::MissingClaim(_)
            | AssertionError::WrongAudience(_)
            | AssertionError::BadJwks => Self::MalformedAssertion {
                reason: err.to_string(),
            },
            AssertionError::UnknownKey(thumbprint) => Self::InvalidAssertionSignature {
                reason: format!(
                    "The key was not found., Thumbprint of key used by client: '{thumbprint}'"
                ),
            },
            AssertionError::BadSignature => Self::InvalidAssertionSignature {
                reason: "The provided signature value did not match the expected signature value."
                    .to_string(),
            },
            AssertionError::CertificateExpired { x5t, .. } => Self::InvalidAssertionSignature {
                reason: format!("The key was expired., Thumbprint of key used by client: '{x5t}'"),
            },
            AssertionError::Expired { exp, now } => Self::ExpiredAssertion {
                now: *now,
                not_before: None,
                expires: Some(*exp),
            },
            AssertionError::NotYetValid { nbf, now } => Self::ExpiredAssertion {
                now: *now,
                not_before: Some(*nbf),
                expires: None,
            },
            AssertionError::LifetimeTooLong {
                lifetime,
                max,
                not_before,
                exp,
                now,
            } => Self::AssertionLifetimeTooLong {
                now: *now,
                not_before: *not_before,
                expires: *exp,
                lifetime: *lifetime,
                max: *max,
            },
            AssertionError::WrongClient { expected } => Self::AssertionClientMismatch {
                client_id: expected.clone(),
            },
            AssertionError::NoMatchingCredential {
                issuer,
                subject,
                audience,
            } => Self::NoMatchingFederatedCredential {
                issuer: issuer.clone(),
                subject: subject.clone(),
                audience: audience.clone(),
            },
        }
    }
}

impl From<AssertionError> for TokenServiceError {
    fn from(err: AssertionError) -> Self {
        Self::from(&err)
    }
}

impl From<(&ScopeError, &str)> for TokenServiceError {
    /// A bad `scope` parameter, with the scope as sent.
    fn from((_, scope): (&ScopeError, &str)) -> Self {
        Self::InvalidScope {
            scope: scope.to_string(),
        }
    }
}

/// Entra's error body for the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenErrorBody {
    pub error: &'static str,
    pub error_description: String,
    pub error_codes: Vec<u32>,
    pub timestamp: String,
    pub trace_id: String,
    pub correlation_id: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn codes_errors_and_statuses_as_briefed() {
        let s = String::new;
        let table: Vec<(TokenServiceError, u32, &str, u16)> = vec![
            (
                TokenServiceError::UnknownTenant { tenant: s() },
                90002,
                "invalid_request",
                400,
            ),
            (
                TokenServiceError::UnknownClient {
                    client_id: s(),
                    tenant: s(),
                },
                700016,
                "unauthorized_client",
                400,
            ),
            (
                TokenServiceError::InvalidClientSecret { client_id: s() },
                7000215,
                "invalid_client",
                401,
            ),
            (
                TokenServiceError::ExpiredAssertion {
                    now: 0,
                    not_before: None,
                    expires: Some(0),
                },
                700024,
                "invalid_client",
                400,
            ),
            (
                TokenServiceError::MalformedAssertion { reason: s() },
                50027,
                "invalid_request",
                400,
            ),
            (
                TokenServiceError::NoMatchingFederatedCredential {
                    issuer: s(),
                    subject: s(),
                    audience: s(),
                },
                70021,
                "invalid_request",
                400,
            ),
            (
                TokenServiceError::UnsupportedGrantType { grant_type: s() },
                70003,
                "unsupported_grant_type",
                400,
            ),
            (
                TokenServiceError::InvalidScope { scope: s() },
                70011,
                "invalid_scope",
                400,
            ),
            (
                TokenServiceError::InvalidResource {
                    resource: s(),
                    tenant: s(),
                },
                500011,
                "invalid_resource",
                400,
            ),
        ];
        for (err, code, error, status) in table {
            assert_eq!(err.aadsts_code(), code, "{err:?}");
            assert_eq!(err.error(), error, "{err:?}");
            assert_eq!(err.status(), status, "{err:?}");
            assert!(err.message().starts_with(&format!("AADSTS{code}: ")));
        }
    }

    #[test]
    fn body_has_entra_shape() {
        let err = TokenServiceError::InvalidScope {
            scope: "https://x/User.Read".into(),
        };
        let body = serde_json::to_value(err.body("t-1", "c-1", "2024-01-09 02:02:12Z")).unwrap();
        assert_eq!(body["error"], "invalid_scope");
        assert_eq!(body["error_codes"], serde_json::json!([70011]));
        assert_eq!(body["trace_id"], "t-1");
        assert_eq!(body["correlation_id"], "c-1");
        assert_eq!(body["timestamp"], "2024-01-09 02:02:12Z");
        let d = body["error_description"].as_str().unwrap();
        assert!(d.starts_with("AADSTS70011: "));
        assert!(d.ends_with(
            "\r\nTrace ID: t-1\r\nCorrelation ID: c-1\r\nTimestamp: 2024-01-09 02:02:12Z"
        ));
    }

    #[test]
    fn assertion_errors_map_to_their_codes() {
        let code = |e: AssertionError| TokenServiceError::from(e).aadsts_code();
        assert_eq!(code(AssertionError::Malformed("x")), 50027);
        assert_eq!(code(AssertionError::Expired { exp: 1, now: 2 }), 700024);
        assert_eq!(code(AssertionError::NotYetValid { nbf: 3, now: 2 }), 700024);
        let too_long = TokenServiceError::from(AssertionError::LifetimeTooLong {
            lifetime: 157_680_000,
            max: 3600,
            not_before: Some(1),
            exp: 157_680_001,
            now: 2,
        });
        assert_eq!(
            (too_long.aadsts_code(), too_long.error(), too_long.status()),
            (700024, "invalid_client", 400)
        );
        assert!(too_long.message().contains("at most 3600"), "{too_long}");
        assert_eq!(code(AssertionError::BadSignature), 700027);
        assert_eq!(code(AssertionError::UnknownKey("t".into())), 700027);
        assert_eq!(
            code(AssertionError::WrongClient {
                expected: "c".into()
            }),
            700021
        );
        assert_eq!(
            code(AssertionError::NoMatchingCredential {
                issuer: "i".into(),
                subject: "s".into(),
                audience: "a".into()
            }),
            70021
        );
        let scope = crate::claims::ScopeError::Empty;
        assert_eq!(TokenServiceError::from((&scope, "")).aadsts_code(), 70011);
    }
}
