//! Authentication as Key Vault clients expect it: a request without a usable token gets
//! 401 with `WWW-Authenticate: Bearer authorization="{authority}/{tenant}", resource="{audience}"`,
//! from which the SDKs learn the tenant and the scope (`{resource}/.default`) to ask for.
//!
//! The Python SDK checks that the vault's host:port ends with `.` + the resource's host:port,
//! so the resource is `https://vault.{domain}[:{port}]` and every vault lives under it. The
//! parser splits parameters on `,` and `=`, so neither may appear in the values.

use lanyard_platform::authn::AuthFailure;
use lanyard_token::ValidationError;
use uuid::Uuid;

use crate::errors::KvError;

/// Azure's public Key Vault audience, accepted beside our own.
pub const AZURE_AUDIENCE: &str = lanyard_domain::hosts::VAULT.azure_audience;

/// The audiences a vault accepts: ours (`https://vault.{domain}[:{port}]`) and Azure's
/// (each with and without a trailing slash, which the validator adds).
pub fn audiences(own: &str) -> Vec<String> {
    vec![own.to_string(), AZURE_AUDIENCE.to_string()]
}

/// The `WWW-Authenticate` value.
pub fn challenge(authority: &str, tenant: Uuid, resource: &str) -> String {
    format!(
        "Bearer authorization=\"{}/{tenant}\", resource=\"{resource}\"",
        authority.trim_end_matches('/')
    )
}

/// The 401 for `failure`.
pub fn unauthorized(
    failure: &AuthFailure,
    authority: &str,
    tenant: Uuid,
    resource: &str,
) -> KvError {
    let message = match failure {
        AuthFailure::Missing => "AKV10000: Request is missing a Bearer or PoP token.".to_string(),
        AuthFailure::NotBearer => {
            "AKV10000: The 'Authorization' header is not a Bearer or PoP token.".to_string()
        }
        AuthFailure::Invalid(ValidationError::WrongAudience(aud)) => {
            format!("AKV10022: Invalid audience. Expected {resource}, found: {aud}.")
        }
        AuthFailure::Invalid(ValidationError::Expired { .. }) => {
            "Token validation failed: the token is expired.".to_string()
        }
        AuthFailure::Invalid(ValidationError::Revoked) => {
            "Token validation failed: the token was revoked; get a new one.".to_string()
        }
        AuthFailure::Invalid(ValidationError::WrongTenant(_) | ValidationError::WrongIssuer(_)) => {
            format!("Token validation failed: the token is not from tenant {tenant}.")
        }
        AuthFailure::Invalid(e) => format!("Token validation failed: {e}."),
    };
    KvError::Unauthorized {
        message,
        challenge: challenge(authority, tenant, resource),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_has_no_separators_in_values() {
        let tenant = Uuid::from_u128(1);
        let c = challenge(
            "https://localhost:8443/",
            tenant,
            "https://vault.lanyard.localhost:8443",
        );
        assert_eq!(
            c,
            format!("Bearer authorization=\"https://localhost:8443/{tenant}\", resource=\"https://vault.lanyard.localhost:8443\"")
        );
        let params = c.split_once(' ').unwrap().1;
        for item in params.split(',') {
            assert_eq!(item.split('=').count(), 2, "{item}");
        }
    }

    #[test]
    fn wrong_audience_names_both() {
        let e = unauthorized(
            &AuthFailure::Invalid(ValidationError::WrongAudience(
                "https://storage.azure.com".into(),
            )),
            "https://localhost:1",
            Uuid::nil(),
            "https://vault.x:1",
        );
        let text = e.to_string();
        assert!(text.contains("https://storage.azure.com") && text.contains("https://vault.x:1"));
    }
}
