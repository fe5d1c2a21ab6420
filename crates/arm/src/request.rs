//! One control-plane call as handlers see it, and the JSON body extractor that answers in
//! ARM's error envelope (axum's own rejections are plain text).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::Method;
use lanyard_platform::authn::Caller;
use lanyard_platform::ApiError;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::errors::ArmError;

/// ARM refuses request bodies above 4 MiB.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// A JSON body, or `InvalidRequestContent`.
#[derive(Debug, Clone)]
pub struct ArmJson<T>(pub T);

impl<T: DeserializeOwned> ArmJson<T> {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ArmError> {
        serde_json::from_slice(bytes)
            .map(Self)
            .map_err(|e| ArmError::InvalidRequestContent(e.to_string()))
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ArmJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY)
            .await
            .map_err(|_| ArmError::BodyTooLarge(MAX_BODY))?;
        Ok(Self::from_bytes(&bytes)?)
    }
}

/// An authenticated call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    /// The path as the client sent it (for `nextLink`).
    pub path: String,
    /// `host[:port]` the client used.
    pub host: String,
    /// Decoded query pairs in order.
    pub query: Vec<(String, String)>,
    pub api_version: String,
    pub correlation_id: String,
    pub caller: Caller,
    /// The raw body of writes; empty otherwise.
    pub body: Bytes,
    /// How far the call got with authorization, for the activity log.
    pub progress: Progress,
}

/// How far a call got with authorization: nothing yet, authorized, or refused (and that
/// refusal already logged). A write that was authorized and then failed is logged once, by
/// the dispatcher; one refused was logged where it was refused.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<AtomicU8>);

impl Progress {
    const AUTHORIZED: u8 = 1;
    const DENIAL_LOGGED: u8 = 2;

    /// An authorization check passed (a later refusal still wins).
    pub fn authorized(&self) {
        let _ = self
            .0
            .compare_exchange(0, Self::AUTHORIZED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// A refusal was written to the activity log.
    pub fn denial_logged(&self) {
        self.0.store(Self::DENIAL_LOGGED, Ordering::Release);
    }

    /// Whether a failure of this call is the dispatcher's to log: authorized, never refused.
    pub fn failure_unlogged(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::AUTHORIZED
    }
}

impl Call {
    /// A query parameter, by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<Value, ArmError> {
        ArmJson::<Value>::from_bytes(&self.body).map(|j| j.0)
    }

    /// `$top` as a page size, within `1..=max`.
    pub fn page_size(&self, default: u32, max: u32) -> u32 {
        self.param("$top")
            .and_then(|t| t.parse::<u32>().ok())
            .map_or(default, |t| t.clamp(1, max))
    }

    /// The URL of the next page: this request's URL with `$skiptoken` set. Every other query
    /// parameter (api-version, $filter, $top) is kept as sent.
    pub fn next_link(&self, skip_token: &str) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.query {
            if !k.eq_ignore_ascii_case("$skiptoken") {
                query.append_pair(k, v);
            }
        }
        query.append_pair("$skiptoken", skip_token);
        format!("https://{}{}?{}", self.host, self.path, query.finish())
    }
}

/// Decodes a query string into pairs.
pub fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_that_are_not_json_are_arm_errors() {
        let e = ArmJson::<Value>::from_bytes(b"{not json").unwrap_err();
        assert_eq!(e.code(), "InvalidRequestContent");
        let e = ArmJson::<Value>::from_bytes(b"").unwrap_err();
        assert_eq!(e.code(), "InvalidRequestContent");
        assert!(ArmJson::<Value>::from_bytes(b"{}").is_ok());
    }

    #[test]
    fn progress_of_a_call() {
        let p = Progress::default();
        assert!(!p.failure_unlogged());
        p.authorized();
        assert!(p.failure_unlogged());
        p.denial_logged();
        p.authorized();
        assert!(!p.failure_unlogged());
    }

    #[test]
    fn queries_decode() {
        let q = parse_query(Some(
            "api-version=2022-04-01&%24filter=atScope()+and+x%20eq%20%27a%27",
        ));
        assert_eq!(q[0], ("api-version".into(), "2022-04-01".into()));
        assert_eq!(q[1], ("$filter".into(), "atScope() and x eq 'a'".into()));
    }
}
