//! Reading and writing the HTTP headers of the blob service. Pure.
//!
//! - Conditions (`If-Match`, `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since`),
//!   evaluated for reads and for writes.
//! - Ranges (`x-ms-range` wins over `Range`).
//! - User metadata (`x-ms-meta-*`) and the content headers a blob keeps.
//! - HTTP dates.

use std::time::SystemTime;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use time::OffsetDateTime;

use crate::error::BlobError;
use crate::model::{ContentHeaders, Metadata};

pub const X_MS_VERSION: HeaderName = HeaderName::from_static("x-ms-version");
pub const X_MS_RANGE: HeaderName = HeaderName::from_static("x-ms-range");
pub const X_MS_BLOB_TYPE: HeaderName = HeaderName::from_static("x-ms-blob-type");
const META_PREFIX: &str = "x-ms-meta-";

/// The version this service answers with when the client names none.
pub const DEFAULT_VERSION: &str = "2025-11-05";

/// `t` as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(t: OffsetDateTime) -> String {
    httpdate::fmt_http_date(SystemTime::from(t))
}

fn parse_http_date(value: &str) -> Option<OffsetDateTime> {
    httpdate::parse_http_date(value.trim())
        .ok()
        .map(OffsetDateTime::from)
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A header's text, failing on a value that is not visible ASCII.
fn strict_text<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a str>, BlobError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| BlobError::InvalidHeaderValue(name)),
    }
}

// ---- conditions ----

/// `*` or a list of entity tags (quotes and `W/` removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtagSet {
    Any,
    List(Vec<String>),
}

impl EtagSet {
    fn parse(value: &str) -> EtagSet {
        if value.trim() == "*" {
            return EtagSet::Any;
        }
        EtagSet::List(
            value
                .split(',')
                .map(|t| {
                    let t = t.trim();
                    let t = t.strip_prefix("W/").unwrap_or(t);
                    t.trim_matches('"').to_string()
                })
                .filter(|t| !t.is_empty())
                .collect(),
        )
    }

    /// Whether an entity with `etag` (unquoted) matches.
    pub fn matches(&self, etag: &str) -> bool {
        match self {
            EtagSet::Any => true,
            EtagSet::List(tags) => tags.iter().any(|t| t == etag),
        }
    }
}

/// The conditional headers of a request. Unparseable dates are ignored, as HTTP says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    pub if_match: Option<EtagSet>,
    pub if_none_match: Option<EtagSet>,
    pub if_modified_since: Option<OffsetDateTime>,
    pub if_unmodified_since: Option<OffsetDateTime>,
}

/// What the conditions say about a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadCondition {
    Proceed,
    /// 304.
    NotModified,
}

/// The state of an entity conditions are evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Version<'a> {
    pub etag: &'a str,
    pub last_modified: OffsetDateTime,
}

/// HTTP dates have whole seconds: compare at that precision.
fn seconds(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

impl Conditions {
    pub fn from_headers(headers: &HeaderMap) -> Conditions {
        Conditions {
            if_match: text(headers, "if-match").map(EtagSet::parse),
            if_none_match: text(headers, "if-none-match").map(EtagSet::parse),
            if_modified_since: text(headers, "if-modified-since").and_then(parse_http_date),
            if_unmodified_since: text(headers, "if-unmodified-since").and_then(parse_http_date),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Conditions::default()
    }

    /// For GET and HEAD of an existing entity: 412 when `If-Match` or `If-Unmodified-Since`
    /// fails, 304 when `If-None-Match` matches or (without it) `If-Modified-Since` fails.
    pub fn check_read(&self, current: Version<'_>) -> Result<ReadCondition, BlobError> {
        if let Some(m) = &self.if_match {
            if !m.matches(current.etag) {
                return Err(BlobError::ConditionNotMet);
            }
        }
        if let Some(t) = self.if_unmodified_since {
            if seconds(current.last_modified) > seconds(t) {
                return Err(BlobError::ConditionNotMet);
            }
        }
        if let Some(m) = &self.if_none_match {
            if m.matches(current.etag) {
                return Ok(ReadCondition::NotModified);
            }
        } else if let Some(t) = self.if_modified_since {
            if seconds(current.last_modified) <= seconds(t) {
                return Ok(ReadCondition::NotModified);
            }
        }
        Ok(ReadCondition::Proceed)
    }

    /// For a write of an entity that exists (`Some`) or not: 412 when a condition fails,
    /// except `If-None-Match: *` on an existing blob, which is 409 `BlobAlreadyExists`.
    pub fn check_write(&self, current: Option<Version<'_>>) -> Result<(), BlobError> {
        if let Some(m) = &self.if_match {
            match current {
                Some(c) if m.matches(c.etag) => {}
                _ => return Err(BlobError::ConditionNotMet),
            }
        }
        if let (Some(m), Some(c)) = (&self.if_none_match, current) {
            if *m == EtagSet::Any {
                return Err(BlobError::BlobAlreadyExists);
            }
            if m.matches(c.etag) {
                return Err(BlobError::ConditionNotMet);
            }
        }
        if let (Some(t), Some(c)) = (self.if_modified_since, current) {
            if seconds(c.last_modified) <= seconds(t) {
                return Err(BlobError::ConditionNotMet);
            }
        }
        if let (Some(t), Some(c)) = (self.if_unmodified_since, current) {
            if seconds(c.last_modified) > seconds(t) {
                return Err(BlobError::ConditionNotMet);
            }
        }
        Ok(())
    }
}

// ---- ranges ----

/// A requested byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=start-` or `bytes=start-end` (inclusive).
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    fn parse(value: &str) -> Option<ByteRange> {
        let spec = value.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (start, end) = spec.split_once('-')?;
        let (start, end) = (start.trim(), end.trim());
        let number = |s: &str| -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        if start.is_empty() {
            return number(end).map(ByteRange::Suffix);
        }
        let start = number(start)?;
        let end = if end.is_empty() {
            None
        } else {
            Some(number(end)?)
        };
        Some(ByteRange::From { start, end })
    }

    /// `(offset, length)` within a blob of `size` bytes; 416 when nothing of it exists.
    pub fn resolve(self, size: u64) -> Result<(u64, u64), BlobError> {
        let unsatisfiable = BlobError::InvalidRange { size };
        match self {
            ByteRange::From { start, end } => {
                if start >= size || end.is_some_and(|e| e < start) {
                    return Err(unsatisfiable);
                }
                let last = end.map_or(size - 1, |e| e.min(size - 1));
                Ok((start, last - start + 1))
            }
            ByteRange::Suffix(n) => {
                if n == 0 || size == 0 {
                    return Err(unsatisfiable);
                }
                let n = n.min(size);
                Ok((size - n, n))
            }
        }
    }
}

/// The range asked for: `x-ms-range` (400 when malformed) wins over `Range` (ignored when
/// malformed, as HTTP allows).
pub fn requested_range(headers: &HeaderMap) -> Result<Option<ByteRange>, BlobError> {
    if let Some(v) = headers.get(X_MS_RANGE) {
        let parsed = v.to_str().ok().and_then(ByteRange::parse);
        return parsed
            .map(Some)
            .ok_or(BlobError::InvalidHeaderValue("x-ms-range"));
    }
    Ok(text(headers, "range").and_then(ByteRange::parse))
}

// ---- metadata and content headers ----

/// A metadata name must be a C# identifier: a letter or `_`, then letters, digits or `_`.
fn valid_metadata_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The `x-ms-meta-*` headers. Names arrive lower-cased (HTTP/2 and our header map both fold
/// case), so they are kept lower-cased.
pub fn metadata(headers: &HeaderMap) -> Result<Metadata, BlobError> {
    let mut out = Metadata::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(META_PREFIX) else {
            continue;
        };
        if !valid_metadata_name(key) {
            return Err(BlobError::InvalidMetadata(key.to_string()));
        }
        let value = value
            .to_str()
            .map_err(|_| BlobError::InvalidMetadata(key.to_string()))?;
        out.insert(key.to_string(), value.trim().to_string());
    }
    Ok(out)
}

/// Appends `x-ms-meta-*` headers.
pub fn put_metadata(out: &mut HeaderMap, metadata: &Metadata) {
    for (k, v) in metadata {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(format!("{META_PREFIX}{k}").as_bytes()),
            HeaderValue::from_str(v),
        ) {
            out.append(name, value);
        }
    }
}

/// Which headers carry a blob's content headers in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentSource {
    /// Put Blob: `x-ms-blob-content-*`, else the standard header; `Content-MD5` is the MD5
    /// of the body and becomes the blob's unless `x-ms-blob-content-md5` is given.
    PutBlob,
    /// Put Block List and Set Blob Properties: only `x-ms-blob-*` (the standard headers
    /// describe the request body).
    BlobHeadersOnly,
}

/// The content headers a write sets.
pub fn content_headers(
    headers: &HeaderMap,
    source: ContentSource,
) -> Result<ContentHeaders, BlobError> {
    let pick = |blob: &'static str, standard: &'static str| -> Result<Option<String>, BlobError> {
        if let Some(v) = strict_text(headers, blob)? {
            return Ok(Some(v.to_string()));
        }
        if source == ContentSource::PutBlob {
            return Ok(strict_text(headers, standard)?.map(str::to_string));
        }
        Ok(None)
    };
    let md5 = pick("x-ms-blob-content-md5", "content-md5")?;
    if let Some(m) = &md5 {
        if decode_md5(m).is_none() {
            return Err(BlobError::InvalidHeaderValue("x-ms-blob-content-md5"));
        }
    }
    Ok(ContentHeaders {
        content_type: pick("x-ms-blob-content-type", "content-type")?,
        content_encoding: pick("x-ms-blob-content-encoding", "content-encoding")?,
        content_language: pick("x-ms-blob-content-language", "content-language")?,
        content_disposition: pick("x-ms-blob-content-disposition", "content-disposition")?,
        cache_control: pick("x-ms-blob-cache-control", "cache-control")?,
        content_md5: md5,
    })
}

/// `Content-MD5` of the request body, decoded (400 when it is not base64 of 16 bytes).
pub fn request_md5(headers: &HeaderMap) -> Result<Option<[u8; 16]>, BlobError> {
    match strict_text(headers, "content-md5")? {
        None => Ok(None),
        Some(v) => decode_md5(v)
            .map(Some)
            .ok_or(BlobError::InvalidHeaderValue("Content-MD5")),
    }
}

fn decode_md5(value: &str) -> Option<[u8; 16]> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()
        .and_then(|raw| <[u8; 16]>::try_from(raw.as_slice()).ok())
}

/// `Content-Length` of the request, when given.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, BlobError> {
    match strict_text(headers, "content-length")? {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| BlobError::InvalidHeaderValue("Content-Length")),
    }
}

/// The `x-ms-version` to answer with: the client's own, or ours.
pub fn version(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(X_MS_VERSION)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(DEFAULT_VERSION))
}

/// Whether the flag header `name` says `true`.
pub fn flag(headers: &HeaderMap, name: &str) -> bool {
    text(headers, name).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const T: OffsetDateTime = datetime!(2024-01-02 03:04:05 UTC);

    fn current(etag: &str) -> Version<'_> {
        Version {
            etag,
            last_modified: T,
        }
    }

    #[test]
    fn dates_round_trip() {
        let s = http_date(T);
        assert_eq!(s, "Tue, 02 Jan 2024 03:04:05 GMT");
        assert_eq!(parse_http_date(&s), Some(T));
    }

    #[test]
    fn read_conditions() {
        let c = Conditions::from_headers(&headers(&[("if-match", "\"0x1\"")]));
        assert!(c.check_read(current("0x1")).is_ok());
        assert!(matches!(
            c.check_read(current("0x2")),
            Err(BlobError::ConditionNotMet)
        ));
        let c = Conditions::from_headers(&headers(&[("if-none-match", "\"0x1\", \"0x3\"")]));
        assert_eq!(
            c.check_read(current("0x3")).unwrap(),
            ReadCondition::NotModified
        );
        assert_eq!(
            c.check_read(current("0x2")).unwrap(),
            ReadCondition::Proceed
        );
        let c = Conditions::from_headers(&headers(&[("if-modified-since", &http_date(T))]));
        assert_eq!(
            c.check_read(current("0x1")).unwrap(),
            ReadCondition::NotModified
        );
        let earlier = http_date(T - time::Duration::seconds(1));
        let c = Conditions::from_headers(&headers(&[("if-modified-since", &earlier)]));
        assert_eq!(
            c.check_read(current("0x1")).unwrap(),
            ReadCondition::Proceed
        );
        let c = Conditions::from_headers(&headers(&[("if-unmodified-since", &earlier)]));
        assert!(c.check_read(current("0x1")).is_err());
        let c = Conditions::from_headers(&headers(&[("if-modified-since", "garbage")]));
        assert!(c.is_empty());
    }

    #[test]
    fn write_conditions() {
        let c = Conditions::from_headers(&headers(&[("if-none-match", "*")]));
        assert!(c.check_write(None).is_ok());
        assert!(matches!(
            c.check_write(Some(current("0x1"))),
            Err(BlobError::BlobAlreadyExists)
        ));
        let c = Conditions::from_headers(&headers(&[("if-match", "*")]));
        assert!(c.check_write(Some(current("0x1"))).is_ok());
        assert!(matches!(
            c.check_write(None),
            Err(BlobError::ConditionNotMet)
        ));
        let c = Conditions::from_headers(&headers(&[("if-match", "W/\"0x1\"")]));
        assert!(c.check_write(Some(current("0x1"))).is_ok());
        assert!(c.check_write(Some(current("0x2"))).is_err());
    }

    #[test]
    fn ranges() {
        let r = |v: &str| ByteRange::parse(v);
        assert_eq!(r("bytes=0-9").unwrap().resolve(100).unwrap(), (0, 10));
        assert_eq!(r("bytes=90-").unwrap().resolve(100).unwrap(), (90, 10));
        assert_eq!(r("bytes=90-500").unwrap().resolve(100).unwrap(), (90, 10));
        assert_eq!(r("bytes=-10").unwrap().resolve(100).unwrap(), (90, 10));
        assert_eq!(r("bytes=-500").unwrap().resolve(100).unwrap(), (0, 100));
        assert!(r("bytes=100-").unwrap().resolve(100).is_err());
        assert!(r("bytes=5-4").unwrap().resolve(100).is_err());
        assert!(r("bytes=0-").unwrap().resolve(0).is_err());
        assert!(r("bytes=-0").unwrap().resolve(10).is_err());
        for bad in [
            "bytes=a-b",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=-",
            "bytes=+1-2",
        ] {
            assert!(r(bad).is_none(), "{bad}");
        }
        let h = headers(&[("x-ms-range", "bytes=1-2"), ("range", "bytes=5-6")]);
        assert_eq!(
            requested_range(&h).unwrap(),
            Some(ByteRange::From {
                start: 1,
                end: Some(2)
            })
        );
        assert!(requested_range(&headers(&[("x-ms-range", "nonsense")])).is_err());
        assert_eq!(
            requested_range(&headers(&[("range", "nonsense")])).unwrap(),
            None
        );
    }

    #[test]
    fn metadata_headers() {
        let h = headers(&[
            ("x-ms-meta-color", "blue"),
            ("x-ms-meta-_n1", " x "),
            ("x-ms-version", "2025-01-05"),
        ]);
        let m = metadata(&h).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["color"], "blue");
        assert_eq!(m["_n1"], "x");
        assert!(metadata(&headers(&[("x-ms-meta-1bad", "v")])).is_err());
        assert!(metadata(&headers(&[("x-ms-meta-a-b", "v")])).is_err());
        let mut out = HeaderMap::new();
        put_metadata(&mut out, &m);
        assert_eq!(out["x-ms-meta-color"], "blue");
    }

    #[test]
    fn content_headers_by_source() {
        let h = headers(&[
            ("content-type", "text/plain"),
            ("x-ms-blob-cache-control", "no-cache"),
            ("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg=="),
        ]);
        let put = content_headers(&h, ContentSource::PutBlob).unwrap();
        assert_eq!(put.content_type.as_deref(), Some("text/plain"));
        assert_eq!(put.cache_control.as_deref(), Some("no-cache"));
        assert_eq!(put.content_md5.as_deref(), Some("1B2M2Y8AsgTpgAmY7PhCfg=="));
        let list = content_headers(&h, ContentSource::BlobHeadersOnly).unwrap();
        assert_eq!(list.content_type, None);
        assert_eq!(list.cache_control.as_deref(), Some("no-cache"));
        assert!(request_md5(&headers(&[("content-md5", "short")])).is_err());
    }
}
