//! The wire rules of the identity endpoints, as pure functions: which request is acceptable,
//! what it asks for, and how errors and tokens are written.
//!
//! Three dialects share one token request:
//! - IMDS (`/metadata/identity/oauth2/token`): header `Metadata: true`, selectors
//!   `client_id`, `object_id`, `principal_id`, `msi_res_id`, `mi_res_id`.
//! - App Service (`IDENTITY_ENDPOINT`): header `X-IDENTITY-HEADER`, api-version 2019-08-01.
//! - Legacy App Service (`MSI_ENDPOINT`): header `secret`, api-version 2017-09-01,
//!   selector `clientid`.

use std::collections::HashMap;

use serde_json::{json, Value};

/// Which identity of the resource a request selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The default identity: the system-assigned one, or the only user-assigned one.
    Default,
    ClientId(String),
    /// `object_id` or `principal_id`.
    ObjectId(String),
    /// `msi_res_id` or `mi_res_id`: the user-assigned identity's resource id.
    ResourceId(String),
}

/// A parsed token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAsk {
    /// The resource (audience) as the client wrote it.
    pub resource: String,
    pub selector: Selector,
    pub api_version: String,
}

/// Why a request is refused. Each maps to the status and body clients expect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("Required metadata header not specified")]
    MissingMetadata,
    #[error("request forwarded by a proxy is not accepted")]
    Forwarded,
    #[error("the identity header is missing or wrong")]
    BadIdentityHeader,
    #[error("query parameter `{0}` is repeated")]
    DuplicateParameter(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("Identity not found")]
    IdentityNotFound,
    #[error("too many requests")]
    Throttled,
    #[error("the calling process is not part of the workload session")]
    ForeignProcess,
    #[error("the workload session has ended: {0}")]
    SessionEnded(String),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Self::BadIdentityHeader | Self::SessionEnded(_) => 401,
            Self::Forwarded | Self::ForeignProcess => 403,
            Self::Throttled => 429,
            _ => 400,
        }
    }

    /// `(error, error_description)` as IMDS writes them.
    pub fn body(&self) -> (&'static str, String) {
        match self {
            Self::MissingMetadata => ("bad_request_102", self.to_string()),
            Self::IdentityNotFound => ("invalid_request", self.to_string()),
            Self::Throttled => (
                "too_many_requests",
                "Too many requests. Retry later.".into(),
            ),
            Self::Forwarded => (
                "forbidden",
                "Requests through a proxy (X-Forwarded-For) are refused.".into(),
            ),
            Self::BadIdentityHeader => (
                "unauthorized",
                "The identity header is missing or does not match this workload.".into(),
            ),
            Self::ForeignProcess => (
                "forbidden",
                "This identity endpoint serves only the process that opened its workload \
                 session (`lanyard run`) and that process's descendants."
                    .into(),
            ),
            Self::SessionEnded(why) => (
                "unauthorized",
                format!("This workload session has ended: {why}."),
            ),
            Self::DuplicateParameter(_) | Self::BadRequest(_) => {
                ("invalid_request", self.to_string())
            }
        }
    }
}

/// Query parameters, refusing any that repeat (an SSRF probe trick: first-wins vs last-wins).
pub fn parse_query(query: &str) -> Result<HashMap<String, String>, Refusal> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let key = k.to_ascii_lowercase();
        if out.insert(key.clone(), v.into_owned()).is_some() {
            return Err(Refusal::DuplicateParameter(key));
        }
    }
    Ok(out)
}

/// The earliest IMDS api-version clients send.
const MIN_IMDS_VERSION: &str = "2018-02-01";

/// Reads an IMDS token request's query.
pub fn imds_request(query: &HashMap<String, String>) -> Result<TokenAsk, Refusal> {
    let api_version = query.get("api-version").ok_or_else(|| {
        Refusal::BadRequest("Required query variable 'api-version' is missing".into())
    })?;
    if !is_date_version(api_version) || api_version.as_str() < MIN_IMDS_VERSION {
        return Err(Refusal::BadRequest(format!(
            "api-version `{api_version}` is not supported; use {MIN_IMDS_VERSION} or later"
        )));
    }
    let resource = required_resource(query)?;
    let selector = one_selector(
        query,
        &[
            ("client_id", Kind::Client),
            ("object_id", Kind::Object),
            ("principal_id", Kind::Object),
            ("msi_res_id", Kind::Resource),
            ("mi_res_id", Kind::Resource),
        ],
    )?;
    Ok(TokenAsk {
        resource,
        selector,
        api_version: api_version.clone(),
    })
}

/// Reads an App Service token request (2019-08-01, or the legacy 2017-09-01).
pub fn app_service_request(query: &HashMap<String, String>) -> Result<TokenAsk, Refusal> {
    let api_version = query
        .get("api-version")
        .ok_or_else(|| Refusal::BadRequest("api-version is required".into()))?;
    let selectors: &[(&str, Kind)] = match api_version.as_str() {
        "2017-09-01" => &[("clientid", Kind::Client)],
        v if is_date_version(v) && v >= "2019-08-01" => &[
            ("client_id", Kind::Client),
            ("principal_id", Kind::Object),
            ("object_id", Kind::Object),
            ("mi_res_id", Kind::Resource),
            ("msi_res_id", Kind::Resource),
        ],
        other => {
            return Err(Refusal::BadRequest(format!(
                "api-version `{other}` is not supported; use 2019-08-01 (or 2017-09-01)"
            )))
        }
    };
    let resource = required_resource(query)?;
    let selector = one_selector(query, selectors)?;
    Ok(TokenAsk {
        resource,
        selector,
        api_version: api_version.clone(),
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Client,
    Object,
    Resource,
}

fn one_selector(
    query: &HashMap<String, String>,
    names: &[(&str, Kind)],
) -> Result<Selector, Refusal> {
    let mut found: Option<Selector> = None;
    for (name, kind) in names {
        let Some(value) = query.get(*name) else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        if found.is_some() {
            return Err(Refusal::BadRequest(
                "Only one of client_id, object_id, principal_id or the identity's resource id may be given".into(),
            ));
        }
        found = Some(match kind {
            Kind::Client => Selector::ClientId(value.clone()),
            Kind::Object => Selector::ObjectId(value.clone()),
            Kind::Resource => Selector::ResourceId(value.clone()),
        });
    }
    Ok(found.unwrap_or(Selector::Default))
}

fn required_resource(query: &HashMap<String, String>) -> Result<String, Refusal> {
    match query.get("resource") {
        Some(r) if !r.trim().is_empty() => {
            if r.len() > 2048 || r.chars().any(char::is_control) {
                return Err(Refusal::BadRequest("resource is not a valid URI".into()));
            }
            Ok(r.clone())
        }
        _ => Err(Refusal::BadRequest(
            "Required query variable 'resource' is missing".into(),
        )),
    }
}

fn is_date_version(v: &str) -> bool {
    let b = v.as_bytes();
    v.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// The success body: every field a string, as IMDS and App Service write it.
pub fn token_body(
    access_token: &str,
    expires_in: i64,
    expires_on: i64,
    not_before: i64,
    resource: &str,
    client_id: &str,
) -> Value {
    json!({
        "access_token": access_token,
        "refresh_token": "",
        "expires_in": expires_in.to_string(),
        "expires_on": expires_on.to_string(),
        "ext_expires_in": expires_in.to_string(),
        "not_before": not_before.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": client_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> HashMap<String, String> {
        parse_query(s).unwrap()
    }

    #[test]
    fn imds_selectors() {
        let ask = imds_request(&q(
            "api-version=2018-02-01&resource=https://vault.azure.net",
        ))
        .unwrap();
        assert_eq!(ask.selector, Selector::Default);
        let ask = imds_request(&q("api-version=2019-08-01&resource=r&client_id=abc")).unwrap();
        assert_eq!(ask.selector, Selector::ClientId("abc".into()));
        let ask = imds_request(&q("api-version=2018-02-01&resource=r&principal_id=p")).unwrap();
        assert_eq!(ask.selector, Selector::ObjectId("p".into()));
        let ask = imds_request(&q(
            "api-version=2018-02-01&resource=r&mi_res_id=%2Fsubscriptions%2Fs",
        ))
        .unwrap();
        assert_eq!(
            ask.selector,
            Selector::ResourceId("/subscriptions/s".into())
        );
        assert!(imds_request(&q(
            "api-version=2018-02-01&resource=r&client_id=a&object_id=b"
        ))
        .is_err());
        assert!(imds_request(&q("api-version=2017-01-01&resource=r")).is_err());
        assert!(imds_request(&q("api-version=2018-02-01")).is_err());
        assert!(imds_request(&q("resource=r")).is_err());
    }

    #[test]
    fn duplicate_parameters_are_refused() {
        assert_eq!(
            parse_query("resource=a&resource=b"),
            Err(Refusal::DuplicateParameter("resource".into()))
        );
        assert!(parse_query("Resource=a&resource=b").is_err());
    }

    #[test]
    fn app_service_versions() {
        let ask =
            app_service_request(&q("api-version=2019-08-01&resource=r&principal_id=x")).unwrap();
        assert_eq!(ask.selector, Selector::ObjectId("x".into()));
        let legacy =
            app_service_request(&q("api-version=2017-09-01&resource=r&clientid=c")).unwrap();
        assert_eq!(legacy.selector, Selector::ClientId("c".into()));
        assert!(app_service_request(&q("api-version=2018-02-01&resource=r")).is_err());
    }

    #[test]
    fn bodies_use_strings() {
        let body = token_body("t", 86399, 2, 1, "r", "c");
        assert!(body["expires_on"].is_string());
        assert!(body["expires_in"].is_string());
        assert_eq!(Refusal::MissingMetadata.body().0, "bad_request_102");
        assert_eq!(
            Refusal::MissingMetadata.body().1,
            "Required metadata header not specified"
        );
        assert_eq!(Refusal::IdentityNotFound.body().1, "Identity not found");
    }
}
