//! Who is calling: the bearer token of a request, validated for the plane's audiences.
//!
//! Each plane renders an [`AuthFailure`] in its own dialect (ARM's `AuthenticationFailed`,
//! Key Vault's challenge, blob storage's `InvalidAuthenticationInfo`).

use std::sync::Arc;

use axum::http::HeaderMap;
use lanyard_token::{ValidatedToken, ValidationError, Validator};
use uuid::Uuid;

use crate::tokens::TokenRuntime;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub object_id: Uuid,
    pub tenant_id: Uuid,
    /// `appid` (v1) or `azp` (v2): the application the token was issued to.
    pub client_id: Option<Uuid>,
    pub token: Arc<ValidatedToken>,
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`.
    NotBearer,
    /// A bearer token that failed validation.
    Invalid(ValidationError),
}

impl std::fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => f.write_str("the 'Authorization' header is missing"),
            Self::NotBearer => f.write_str("the 'Authorization' header is not a bearer token"),
            Self::Invalid(e) => write!(f, "{e}"),
        }
    }
}

/// The token of an `Authorization: Bearer …` header (scheme case-insensitive).
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthFailure> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or(AuthFailure::Missing)?
        .to_str()
        .map_err(|_| AuthFailure::NotBearer)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthFailure::NotBearer)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthFailure::NotBearer);
    }
    Ok(token)
}

/// Validates the request's bearer token with `validator`.
pub fn authenticate(
    tokens: &TokenRuntime,
    validator: &Validator,
    headers: &HeaderMap,
) -> Result<Caller, AuthFailure> {
    let token = bearer_token(headers)?;
    let validated = tokens
        .validate(validator, token)
        .map_err(AuthFailure::Invalid)?;
    let claims = &validated.claims;
    let client_id = claims
        .appid
        .as_deref()
        .or(claims.azp.as_deref())
        .and_then(|s| Uuid::parse_str(s).ok());
    Ok(Caller {
        object_id: validated.object_id,
        tenant_id: validated.tenant_id,
        client_id,
        token: validated,
    })
}

/// A 401 in ARM's dialect, with the `WWW-Authenticate` challenge ARM clients read.
pub fn arm_unauthorized(failure: &AuthFailure, login: &str) -> crate::ApiError {
    use lanyard_token::ValidationError as V;
    let (code, message) = match failure {
        AuthFailure::Missing => (
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".to_string(),
        ),
        AuthFailure::NotBearer => (
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is not a bearer token.".to_string(),
        ),
        AuthFailure::Invalid(V::Expired { .. }) => (
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is earlier than current UTC time.".to_string(),
        ),
        AuthFailure::Invalid(V::WrongAudience(aud)) => (
            "InvalidAuthenticationTokenAudience",
            format!("The access token has been obtained for wrong audience or resource '{aud}'."),
        ),
        AuthFailure::Invalid(V::WrongTenant(_) | V::WrongIssuer(_)) => (
            "InvalidAuthenticationTokenTenant",
            "The access token is from the wrong issuer or tenant.".to_string(),
        ),
        AuthFailure::Invalid(e) => (
            "InvalidAuthenticationToken",
            format!("The access token is invalid: {e}."),
        ),
    };
    let challenge = format!(
        "Bearer authorization_uri=\"{login}\", error=\"invalid_token\", error_description=\"{}\"",
        message.replace('"', "'")
    );
    crate::ApiError::arm(axum::http::StatusCode::UNAUTHORIZED, code, message)
        .with_header(axum::http::header::WWW_AUTHENTICATE, &challenge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(&headers("bearer  abc ")), Ok("abc"));
        assert_eq!(
            bearer_token(&headers("Basic abc")),
            Err(AuthFailure::NotBearer)
        );
        assert_eq!(
            bearer_token(&headers("Bearer ")),
            Err(AuthFailure::NotBearer)
        );
        assert_eq!(bearer_token(&HeaderMap::new()), Err(AuthFailure::Missing));
    }
}
