//! Building successful responses, and the headers every blob response carries.

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use crate::headers::{http_date, put_metadata};
use crate::model::{BlobDoc, ContainerDoc, Metadata, DEFAULT_CONTENT_TYPE};

/// A response under construction.
pub struct Reply(Response);

impl Reply {
    pub fn new(status: StatusCode) -> Reply {
        Reply(status.into_response())
    }

    /// Sets a header; a value that is not header text is left out.
    pub fn header(mut self, name: HeaderName, value: &str) -> Reply {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.0.headers_mut().insert(name, v);
        }
        self
    }

    pub fn static_header(mut self, name: &'static str, value: &'static str) -> Reply {
        self.0.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
        self
    }

    /// `ETag: "{etag}"`.
    pub fn etag(self, etag: &str) -> Reply {
        self.header(header::ETAG, &format!("\"{etag}\""))
    }

    pub fn last_modified(self, t: OffsetDateTime) -> Reply {
        self.header(header::LAST_MODIFIED, &http_date(t))
    }

    pub fn metadata(mut self, metadata: &Metadata) -> Reply {
        put_metadata(self.0.headers_mut(), metadata);
        self
    }

    pub fn body(mut self, body: Body) -> Reply {
        *self.0.body_mut() = body;
        self
    }

    /// An XML body.
    pub fn xml(self, text: String) -> Reply {
        self.header(header::CONTENT_TYPE, "application/xml")
            .body(Body::from(text))
    }

    /// `x-ms-request-server-encrypted: true` of writes.
    pub fn encrypted(self) -> Reply {
        self.static_header("x-ms-request-server-encrypted", "true")
    }

    pub fn finish(self) -> Response {
        self.0
    }
}

/// The properties of a container as headers.
pub fn container_properties(reply: Reply, doc: &ContainerDoc) -> Reply {
    reply
        .etag(&doc.etag)
        .last_modified(doc.last_modified)
        .metadata(&doc.metadata)
        .static_header("x-ms-lease-status", "unlocked")
        .static_header("x-ms-lease-state", "available")
        .static_header("x-ms-has-immutability-policy", "false")
        .static_header("x-ms-has-legal-hold", "false")
        .static_header("x-ms-default-encryption-scope", "$account-encryption-key")
        .static_header("x-ms-deny-encryption-scope-override", "false")
}

/// The properties of a blob as headers (Get Blob and Get Blob Properties); the caller sets
/// `Content-Length`, `Content-Range` and the MD5 headers, which depend on the range.
pub fn blob_properties(reply: Reply, doc: &BlobDoc) -> Reply {
    let c = &doc.content;
    let mut reply = reply
        .etag(&doc.etag)
        .last_modified(doc.last_modified)
        .header(
            header::CONTENT_TYPE,
            c.content_type.as_deref().unwrap_or(DEFAULT_CONTENT_TYPE),
        )
        .header(
            HeaderName::from_static("x-ms-creation-time"),
            &http_date(doc.created),
        )
        .metadata(&doc.metadata)
        .static_header("accept-ranges", "bytes")
        .static_header("x-ms-blob-type", "BlockBlob")
        .static_header("x-ms-lease-status", "unlocked")
        .static_header("x-ms-lease-state", "available")
        .static_header("x-ms-server-encrypted", "true");
    let optional = [
        (header::CONTENT_ENCODING, &c.content_encoding),
        (header::CONTENT_LANGUAGE, &c.content_language),
        (header::CONTENT_DISPOSITION, &c.content_disposition),
        (header::CACHE_CONTROL, &c.cache_control),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            reply = reply.header(name, v);
        }
    }
    reply
}
