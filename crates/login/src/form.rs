//! Parsing a token request: the form body, HTTP Basic client authentication, and the
//! resource a request asks for. Pure: bytes and header values in, a [`TokenForm`] out.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use lanyard_token::claims::ScopeError;
use lanyard_token::{scope_to_resource, TokenServiceError};

use crate::errors::TokenError;

/// Largest token request body read. Real requests are a few KB (an assertion is ~1-2 KB).
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// `client_assertion_type` of certificate and federated assertions.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Which token endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointVersion {
    /// `/{tenant}/oauth2/token`: `resource=R`.
    V1,
    /// `/{tenant}/oauth2/v2.0/token`: `scope=R/.default`.
    V2,
}

/// The parameters of a token request that Lanyard reads. Empty values count as absent.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct TokenForm {
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    /// Never log it.
    pub client_secret: Option<String>,
    pub client_assertion_type: Option<String>,
    /// Never log it.
    pub client_assertion: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
}

impl std::fmt::Debug for TokenForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("TokenForm")
            .field("grant_type", &self.grant_type)
            .field("client_id", &self.client_id)
            .field("client_secret", &redacted(&self.client_secret))
            .field("client_assertion_type", &self.client_assertion_type)
            .field("client_assertion", &redacted(&self.client_assertion))
            .field("scope", &self.scope)
            .field("resource", &self.resource)
            .finish()
    }
}

/// Whether a `Content-Type` value is a form (parameters such as `charset` allowed).
pub fn is_form(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Parses a form body. A known parameter sent twice is refused rather than guessed at.
pub fn parse_form(content_type: Option<&str>, body: &[u8]) -> Result<TokenForm, TokenError> {
    if !is_form(content_type) {
        return Err(TokenError::NotAForm);
    }
    if std::str::from_utf8(body).is_err() {
        return Err(TokenError::Malformed("the body is not UTF-8".into()));
    }
    let mut form = TokenForm::default();
    for (key, value) in form_urlencoded::parse(body) {
        let slot = match key.as_ref() {
            "grant_type" => &mut form.grant_type,
            "client_id" => &mut form.client_id,
            "client_secret" => &mut form.client_secret,
            "client_assertion_type" => &mut form.client_assertion_type,
            "client_assertion" => &mut form.client_assertion,
            "scope" => &mut form.scope,
            "resource" => &mut form.resource,
            _ => continue,
        };
        if slot.is_some() {
            return Err(TokenError::Malformed(
                format!("parameter '{key}' is repeated").into(),
            ));
        }
        let value = value.trim();
        if !value.is_empty() {
            *slot = Some(value.to_string());
        }
    }
    Ok(form)
}

/// Merges `Authorization: Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1)
/// into the form. Other schemes are ignored.
pub fn apply_basic_auth(
    form: &mut TokenForm,
    authorization: Option<&str>,
) -> Result<(), TokenError> {
    let Some(value) = authorization else {
        return Ok(());
    };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return Ok(());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(());
    }
    let bad = || TokenError::Malformed("the Basic authorization header is malformed".into());
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let id = percent_decode(id).ok_or_else(bad)?;
    let secret = percent_decode(secret).ok_or_else(bad)?;
    if id.is_empty() {
        return Err(bad());
    }
    match &form.client_id {
        Some(existing) if !existing.eq_ignore_ascii_case(&id) => {
            return Err(TokenError::Malformed(
                "client_id in the body and in the Basic authorization header differ".into(),
            ))
        }
        _ => form.client_id = Some(id),
    }
    if form.client_secret.is_some() {
        return Err(TokenError::Malformed(
            "client_secret is sent both in the body and in the Basic authorization header".into(),
        ));
    }
    if !secret.is_empty() {
        form.client_secret = Some(secret);
    }
    Ok(())
}

/// `application/x-www-form-urlencoded` decoding of one value (`+` is a space).
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Longest resource accepted (Entra's identifier URIs are at most 120 characters; be
/// generous, but bounded since it ends up in every token and log line).
const MAX_RESOURCE_LEN: usize = 512;

/// The resource a request asks for: `scope=R/.default` on v2, `resource=R` on v1.
pub fn requested_resource(
    form: &TokenForm,
    version: EndpointVersion,
) -> Result<String, TokenError> {
    let resource = match version {
        EndpointVersion::V2 => {
            let scope = form.scope.as_deref().unwrap_or("");
            scope_to_resource(scope).map_err(|e| match &e {
                ScopeError::Empty => TokenError::Service(TokenServiceError::from((&e, scope))),
                ScopeError::NotDefault(_) | ScopeError::MultipleResources(_, _) => {
                    TokenError::ScopeNotDefault(bounded(scope))
                }
            })?
        }
        EndpointVersion::V1 => form
            .resource
            .clone()
            .ok_or(TokenError::MissingParameter("resource"))?,
    };
    if resource.len() > MAX_RESOURCE_LEN || resource.chars().any(char::is_control) {
        return Err(TokenError::Service(TokenServiceError::InvalidResource {
            resource: bounded(&resource),
            tenant: String::new(),
        }));
    }
    Ok(resource)
}

/// User input echoed in messages is bounded.
pub fn bounded(s: &str) -> String {
    const MAX: usize = 256;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    #[test]
    fn parses_a_client_credentials_form() {
        let f = parse_form(
            Some("Application/X-WWW-Form-Urlencoded; charset=utf-8"),
            b"grant_type=client_credentials&client_id=abc&client_secret=s%2Bx%3D&scope=https%3A%2F%2Fvault.azure.net%2F.default&client_info=1&resource=",
        )
        .unwrap();
        assert_eq!(f.grant_type.as_deref(), Some("client_credentials"));
        assert_eq!(f.client_id.as_deref(), Some("abc"));
        assert_eq!(f.client_secret.as_deref(), Some("s+x="));
        assert_eq!(f.scope.as_deref(), Some("https://vault.azure.net/.default"));
        assert_eq!(f.resource, None);
        assert!(!format!("{f:?}").contains("s+x="));
    }

    #[test]
    fn refuses_other_content_types_repeats_and_bad_utf8() {
        assert!(matches!(
            parse_form(Some("application/json"), b"{}"),
            Err(TokenError::NotAForm)
        ));
        assert!(matches!(
            parse_form(None, b"a=b"),
            Err(TokenError::NotAForm)
        ));
        assert!(matches!(
            parse_form(FORM, b"client_id=a&client_id=b"),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            parse_form(FORM, b"a=\xff"),
            Err(TokenError::Malformed(_))
        ));
        // Garbage that is still a form just lacks parameters.
        assert_eq!(parse_form(FORM, b"%%%&&=").unwrap(), TokenForm::default());
    }

    #[test]
    fn basic_auth_fills_client_id_and_secret() {
        let mut f = TokenForm::default();
        let header = format!("Basic {}", STANDARD.encode("my%3Aapp:p%40ss+word"));
        apply_basic_auth(&mut f, Some(&header)).unwrap();
        assert_eq!(f.client_id.as_deref(), Some("my:app"));
        assert_eq!(f.client_secret.as_deref(), Some("p@ss word"));

        let mut f = TokenForm {
            client_id: Some("other".into()),
            ..Default::default()
        };
        assert!(apply_basic_auth(&mut f, Some(&header)).is_err());
        let mut f = TokenForm::default();
        assert!(apply_basic_auth(&mut f, Some("Basic !!!")).is_err());
        assert!(apply_basic_auth(&mut f, Some("Bearer x")).is_ok());
        assert_eq!(f, TokenForm::default());
    }

    #[test]
    fn resources_from_scope_or_resource() {
        let v2 = |scope: &str| {
            requested_resource(
                &TokenForm {
                    scope: Some(scope.into()),
                    ..Default::default()
                },
                EndpointVersion::V2,
            )
        };
        assert_eq!(
            v2("https://vault.azure.net/.default").unwrap(),
            "https://vault.azure.net"
        );
        assert_eq!(
            v2("https://management.azure.com//.default").unwrap(),
            "https://management.azure.com/"
        );
        let code = |r: Result<String, TokenError>| r.unwrap_err().aadsts_code();
        assert_eq!(code(v2("openid")), Some(70011));
        assert_eq!(
            code(v2("https://graph.microsoft.com/User.Read")),
            Some(1002012)
        );
        assert_eq!(code(v2("api://a/.default api://b/.default")), Some(1002012));
        assert_eq!(
            code(requested_resource(
                &TokenForm::default(),
                EndpointVersion::V2
            )),
            Some(70011)
        );
        assert_eq!(
            code(requested_resource(
                &TokenForm::default(),
                EndpointVersion::V1
            )),
            Some(900144)
        );
        let v1 = TokenForm {
            resource: Some("https://storage.azure.com/".into()),
            ..Default::default()
        };
        assert_eq!(
            requested_resource(&v1, EndpointVersion::V1).unwrap(),
            "https://storage.azure.com/"
        );
        assert_eq!(
            code(v2(&format!("{}/.default", "x".repeat(600)))),
            Some(500011)
        );
    }
}
