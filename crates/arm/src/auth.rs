//! Who is calling and what they may do, in ARM's words.
//!
//! - Authentication: a bearer token from our token service for a management audience, or 401
//!   with ARM's `WWW-Authenticate` challenge and one of `AuthenticationFailed`,
//!   `InvalidAuthenticationToken`, `ExpiredAuthenticationToken`,
//!   `InvalidAuthenticationTokenAudience`.
//! - Authorization: the engine decides; a denial is 403 `AuthorizationFailed` (or
//!   `LinkedAuthorizationFailed` for an identity attached without `assign/action`) with the
//!   engine's explanation appended, and is written to the activity log.

use axum::http::{header, StatusCode};
use lanyard_platform::authn::AuthFailure;
use lanyard_platform::ApiError;
use lanyard_token::ValidationError;
use time::OffsetDateTime;

use crate::shape::arm_time;

/// The 401 for `failure`. `login` is the authority clients should get a token from.
pub fn unauthenticated(
    failure: &AuthFailure,
    login: &str,
    audiences: &[String],
    now: i64,
) -> ApiError {
    let (code, message, description) = match failure {
        AuthFailure::Missing => (
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".to_string(),
            "The authentication failed because of missing 'Authorization' header.".to_string(),
        ),
        AuthFailure::NotBearer => (
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is provided in an invalid format."
                .to_string(),
            "The 'Authorization' header is not a bearer token.".to_string(),
        ),
        AuthFailure::Invalid(ValidationError::Expired { exp }) => {
            let at = |t: i64| {
                OffsetDateTime::from_unix_timestamp(t)
                    .map(arm_time)
                    .unwrap_or_else(|_| t.to_string())
            };
            let message = format!(
                "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                at(*exp),
                at(now)
            );
            ("ExpiredAuthenticationToken", message.clone(), message)
        }
        AuthFailure::Invalid(ValidationError::WrongAudience(aud)) => {
            let message = format!(
                "The access token has been obtained for wrong audience or resource '{aud}'. It should exactly match with one of the allowed audiences '{}'.",
                audiences.join("','")
            );
            (
                "InvalidAuthenticationTokenAudience",
                message.clone(),
                message,
            )
        }
        AuthFailure::Invalid(ValidationError::WrongTenant(_) | ValidationError::WrongIssuer(_)) => {
            let message = format!(
                "The access token is from the wrong issuer or tenant. It must be issued for the tenant of this subscription; use the authority '{login}' to get the token."
            );
            ("InvalidAuthenticationTokenTenant", message.clone(), message)
        }
        AuthFailure::Invalid(ValidationError::Revoked) => (
            "InvalidAuthenticationToken",
            "The access token has been revoked.".to_string(),
            "The access token has been revoked.".to_string(),
        ),
        AuthFailure::Invalid(_) => (
            "InvalidAuthenticationToken",
            "The access token is invalid.".to_string(),
            "The access token is invalid.".to_string(),
        ),
    };
    // Quotes would end the quoted-string of the challenge early.
    let description = description.replace('"', "'");
    let challenge = format!(
        "Bearer authorization_uri=\"{login}\", error=\"invalid_token\", error_description=\"{description}\""
    );
    ApiError::arm(StatusCode::UNAUTHORIZED, code, message)
        .with_header(header::WWW_AUTHENTICATE, &challenge)
}

/// 403 `AuthorizationFailed`, in ARM's words, with the engine's explanation after them.
pub fn authorization_failed(
    caller: uuid::Uuid,
    action: &str,
    scope: &str,
    explanation: &str,
) -> ApiError {
    ApiError::arm(
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        format!(
            "The client '{caller}' with object id '{caller}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. {explanation}"
        ),
    )
}

/// 403 `LinkedAuthorizationFailed`: allowed to write the resource, not to attach the identity.
pub fn linked_authorization_failed(
    caller: uuid::Uuid,
    action: &str,
    scope: &str,
    linked_action: &str,
    linked: &str,
    explanation: &str,
) -> ApiError {
    ApiError::arm(
        StatusCode::FORBIDDEN,
        "LinkedAuthorizationFailed",
        format!(
            "The client '{caller}' with object id '{caller}' has permission to perform action '{action}' on scope '{scope}'; however, it does not have permission to perform action(s) '{linked_action}' on the linked scope(s) '{linked}' (respectively) or the linked scope(s) are invalid. {explanation}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_name_the_authority() {
        let e = unauthenticated(&AuthFailure::Missing, "https://localhost:8443/", &[], 0);
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert_eq!(e.code, "AuthenticationFailed");
        let response = axum::response::IntoResponse::into_response(e.clone());
        let v = response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap();
        assert!(v.starts_with("Bearer authorization_uri=\"https://localhost:8443/\""));
        assert!(v.contains("error=\"invalid_token\""));
        let e = unauthenticated(
            &AuthFailure::Invalid(ValidationError::Expired { exp: 10 }),
            "x",
            &[],
            20,
        );
        assert_eq!(e.code, "ExpiredAuthenticationToken");
        assert!(e.message.contains("1970-01-01T00:00:10"));
        let e = unauthenticated(
            &AuthFailure::Invalid(ValidationError::WrongAudience(
                "https://vault.azure.net".into(),
            )),
            "x",
            &["https://management.azure.com/".into()],
            0,
        );
        assert_eq!(e.code, "InvalidAuthenticationTokenAudience");
        for wrong in [
            ValidationError::WrongTenant("t".into()),
            ValidationError::WrongIssuer("i".into()),
        ] {
            let e = unauthenticated(&AuthFailure::Invalid(wrong), "x", &[], 0);
            assert_eq!(e.code, "InvalidAuthenticationTokenTenant");
        }
        let e = unauthenticated(
            &AuthFailure::Invalid(ValidationError::BadSignature),
            "x",
            &[],
            0,
        );
        assert_eq!(e.code, "InvalidAuthenticationToken");
    }

    #[test]
    fn denial_text_matches_arm() {
        let id = uuid::Uuid::nil();
        let e = authorization_failed(
            id,
            "Microsoft.Compute/virtualMachines/write",
            "/subscriptions/s",
            "because.",
        );
        assert!(e.message.starts_with(&format!(
            "The client '{id}' with object id '{id}' does not have authorization to perform action 'Microsoft.Compute/virtualMachines/write' over scope '/subscriptions/s' or the scope is invalid."
        )));
        assert!(e.message.ends_with("because."));
    }
}
