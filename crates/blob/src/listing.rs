//! List Blobs: a walk over the container's key range, folding names that contain the
//! delimiter after the prefix into `BlobPrefix` entries and jumping past each folded range
//! with one query, paged by an opaque marker.
//!
//! A marker says where the next page starts: after a blob name (`b…`), or past every name
//! under a blob prefix (`p…`); the name is base64url so any name survives the query string.

use axum::http::StatusCode;
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use lanyard_storage::DocumentQuery;

use crate::access::Permission;
use crate::account::{blob_endpoint, PAGE};
use crate::docs;
use crate::error::BlobError;
use crate::headers::http_date;
use crate::model::{decode, BlobDoc, Metadata, DEFAULT_CONTENT_TYPE};
use crate::names::{container_prefix, past_prefix, BLOBS};
use crate::plane::Ctx;
use crate::reply::Reply;
use crate::request::ListParams;
use crate::xml::Writer;

/// Where a listing resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// After this name.
    After(String),
    /// After every name starting with this prefix.
    Past(String),
}

pub fn encode_marker(cursor: &Cursor) -> String {
    match cursor {
        Cursor::After(name) => format!("b{}", URL_SAFE_NO_PAD.encode(name)),
        Cursor::Past(prefix) => format!("p{}", URL_SAFE_NO_PAD.encode(prefix)),
    }
}

pub fn decode_marker(marker: &str) -> Result<Cursor, BlobError> {
    let bad = || BlobError::InvalidQueryParameterValue("marker");
    let (kind, rest) = marker.split_at_checked(1).ok_or_else(bad)?;
    let raw = URL_SAFE_NO_PAD.decode(rest).map_err(|_| bad())?;
    let name = String::from_utf8(raw).map_err(|_| bad())?;
    match kind {
        "b" => Ok(Cursor::After(name)),
        "p" => Ok(Cursor::Past(name)),
        _ => Err(bad()),
    }
}

/// An entry of a page.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Blob(String, Box<BlobDoc>),
    Prefix(String),
}

/// The blob prefix `name` folds into: the prefix and everything up to and including the
/// first delimiter after it.
pub fn folded<'a>(name: &'a str, prefix: &str, delimiter: Option<&str>) -> Option<&'a str> {
    let delimiter = delimiter?;
    let rest = name.get(prefix.len()..)?;
    let at = rest.find(delimiter)?;
    name.get(..prefix.len() + at + delimiter.len())
}

/// `<Metadata>` with one element per name.
pub fn write_metadata(w: &mut Writer, metadata: &Metadata) {
    w.open("Metadata");
    for (k, v) in metadata {
        w.element(k, v);
    }
    w.close("Metadata");
}

pub async fn list_blobs(
    ctx: &Ctx<'_>,
    container: &str,
    params: &ListParams,
) -> Result<Response, BlobError> {
    ctx.require(Permission::BlobRead, container)?;
    docs::existing_container(ctx, container).await?;
    let base = container_prefix(ctx.account_name(), container);
    let delimiter = params.delimiter.as_deref();
    let max = params.max_results as usize;
    let mut cursor = match &params.marker {
        None => None,
        Some(m) => Some(match decode_marker(m)? {
            Cursor::After(name) => format!("{base}{name}"),
            Cursor::Past(prefix) => past_prefix(&format!("{base}{prefix}")),
        }),
    };
    let fetch = params.max_results.saturating_add(1).min(PAGE);
    let mut entries: Vec<Entry> = Vec::new();
    let mut more = false;
    // The key prefix being folded into the last BlobPrefix entry.
    let mut folding: Option<String> = None;
    'pages: loop {
        let page = ctx
            .store()
            .documents(&DocumentQuery {
                collection: BLOBS.into(),
                prefix: Some(format!("{base}{}", params.prefix)),
                after: cursor.clone(),
                limit: Some(fetch),
            })
            .await?;
        let full = page.len() == fetch as usize;
        for record in &page {
            cursor = Some(record.key.clone());
            if let Some(f) = &folding {
                if record.key.starts_with(f.as_str()) {
                    continue;
                }
                folding = None;
            }
            let name = record.key.get(base.len()..).unwrap_or_default();
            if entries.len() == max {
                more = true;
                break 'pages;
            }
            match folded(name, &params.prefix, delimiter) {
                Some(p) => {
                    folding = Some(format!("{base}{p}"));
                    entries.push(Entry::Prefix(p.to_string()));
                }
                None => entries.push(Entry::Blob(name.to_string(), Box::new(decode(record)?))),
            }
        }
        if !full {
            break;
        }
        // Jump past the rest of a folded range in one step.
        if let Some(f) = folding.take() {
            cursor = Some(past_prefix(&f));
        }
    }

    let endpoint = blob_endpoint(&ctx.plane.state.endpoints().blob(ctx.account_name()));
    let mut w = Writer::new();
    w.open_with(
        "EnumerationResults",
        &[("ServiceEndpoint", &endpoint), ("ContainerName", container)],
    );
    if !params.prefix.is_empty() {
        w.element("Prefix", &params.prefix);
    }
    if let Some(m) = &params.marker {
        w.element("Marker", m);
    }
    w.element("MaxResults", &params.max_results.to_string());
    if let Some(d) = delimiter {
        w.element("Delimiter", d);
    }
    w.open("Blobs");
    for entry in &entries {
        match entry {
            Entry::Prefix(p) => {
                w.open("BlobPrefix").element("Name", p).close("BlobPrefix");
            }
            Entry::Blob(name, doc) => write_blob(&mut w, name, doc, params.metadata),
        }
    }
    w.close("Blobs");
    let next = match (more, entries.last()) {
        (true, Some(Entry::Blob(name, _))) => Some(Cursor::After(name.clone())),
        (true, Some(Entry::Prefix(p))) => Some(Cursor::Past(p.clone())),
        _ => None,
    };
    match next {
        Some(c) => w.element("NextMarker", &encode_marker(&c)),
        None => w.empty("NextMarker"),
    };
    w.close("EnumerationResults");
    Ok(Reply::new(StatusCode::OK).xml(w.finish()).finish())
}

fn write_blob(w: &mut Writer, name: &str, doc: &BlobDoc, metadata: bool) {
    let c = &doc.content;
    w.open("Blob").element("Name", name).open("Properties");
    w.element("Creation-Time", &http_date(doc.created))
        .element("Last-Modified", &http_date(doc.last_modified))
        .element("Etag", &doc.etag)
        .element("Content-Length", &doc.size.to_string())
        .element(
            "Content-Type",
            c.content_type.as_deref().unwrap_or(DEFAULT_CONTENT_TYPE),
        );
    let optional = [
        ("Content-Encoding", &c.content_encoding),
        ("Content-Language", &c.content_language),
        ("Content-MD5", &c.content_md5),
        ("Cache-Control", &c.cache_control),
        ("Content-Disposition", &c.content_disposition),
    ];
    for (tag, value) in optional {
        if let Some(v) = value {
            w.element(tag, v);
        }
    }
    w.element("BlobType", "BlockBlob")
        .element("AccessTier", "Hot")
        .element("AccessTierInferred", "true")
        .element("LeaseStatus", "unlocked")
        .element("LeaseState", "available")
        .element("ServerEncrypted", "true")
        .close("Properties");
    if metadata {
        write_metadata(w, &doc.metadata);
    }
    w.close("Blob");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip() {
        for c in [
            Cursor::After("a/b c?&=".into()),
            Cursor::Past("dir/".into()),
            Cursor::After("ü".into()),
        ] {
            assert_eq!(decode_marker(&encode_marker(&c)).unwrap(), c);
        }
        for bad in ["", "x", "zYWJj", "b!!!", "b_w"] {
            assert!(decode_marker(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn folding() {
        assert_eq!(folded("a/b/c", "", Some("/")), Some("a/"));
        assert_eq!(folded("a/b/c", "a/", Some("/")), Some("a/b/"));
        assert_eq!(folded("a/b", "a/", Some("/")), None);
        assert_eq!(folded("a/b", "a/", None), None);
        assert_eq!(folded("x--y--z", "x", Some("--")), Some("x--"));
        assert_eq!(folded("ab", "a", Some("b")), Some("ab"));
    }
}
