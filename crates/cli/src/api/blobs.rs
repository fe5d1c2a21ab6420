//! The blob data plane, `https://{account}.blob.{domain}:{port}`, with OAuth
//! (`az storage ... --auth-mode login`): a token for `https://storage.azure.com`.

use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};
use time::macros::format_description;
use time::OffsetDateTime;

use super::enc;
use crate::client::{xml_element, Connection, Payload, Reply, STORAGE_SCOPE};

/// The service version sent as `x-ms-version`.
pub const BLOB_VERSION: &str = "2024-08-04";

/// One storage account's blob endpoint.
pub struct Account<'a> {
    conn: &'a Connection,
    base: String,
}

/// A blob path: each segment percent-encoded, the `/` between them kept.
fn blob_path(container: &str, name: &str) -> String {
    let name: Vec<String> = name.split('/').map(enc).collect();
    format!("/{}/{}", enc(container), name.join("/"))
}

fn now_rfc1123() -> String {
    let format = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}

impl<'a> Account<'a> {
    pub fn new(conn: &'a Connection, name: &str) -> Self {
        Self {
            conn,
            base: conn.blob_url(name),
        }
    }

    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        extra: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Reply> {
        let mut headers = vec![
            ("x-ms-version", BLOB_VERSION.to_string()),
            ("x-ms-date", now_rfc1123()),
        ];
        headers.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        let payload = body.map_or(Payload::None, Payload::Bytes);
        let url = format!("{}{path_and_query}", self.base);
        self.conn
            .send(method, &url, STORAGE_SCOPE, &headers, payload)
            .await
    }

    pub async fn create_container(&self, container: &str) -> anyhow::Result<Value> {
        let reply = self
            .call(
                Method::PUT,
                &format!("/{}?restype=container", enc(container)),
                &[("content-length", "0".into())],
                Some(Vec::new()),
            )
            .await?;
        Ok(json!({
            "created": true,
            "name": container,
            "etag": reply.header("etag"),
            "lastModified": reply.header("last-modified"),
        }))
    }

    /// Uploads a block blob. Without `overwrite`, an existing blob is left alone and the
    /// service's `BlobAlreadyExists` is the answer, as in `az storage blob upload`.
    pub async fn upload(
        &self,
        container: &str,
        name: &str,
        data: Vec<u8>,
        content_type: Option<&str>,
        overwrite: bool,
    ) -> anyhow::Result<Value> {
        let mut headers = vec![
            ("x-ms-blob-type", "BlockBlob".to_string()),
            ("content-length", data.len().to_string()),
        ];
        if let Some(ct) = content_type {
            headers.push(("x-ms-blob-content-type", ct.to_string()));
        }
        if !overwrite {
            headers.push(("if-none-match", "*".to_string()));
        }
        let reply = self
            .call(
                Method::PUT,
                &blob_path(container, name),
                &headers,
                Some(data),
            )
            .await?;
        Ok(json!({
            "etag": reply.header("etag"),
            "lastModified": reply.header("last-modified"),
            "content_md5": reply.header("content-md5"),
            "request_server_encrypted": reply.header("x-ms-request-server-encrypted") == Some("true"),
        }))
    }

    pub async fn download(&self, container: &str, name: &str) -> anyhow::Result<Vec<u8>> {
        Ok(self
            .call(Method::GET, &blob_path(container, name), &[], None)
            .await?
            .body)
    }

    /// Every blob in `container` (names starting with `prefix`), following `NextMarker`.
    pub async fn list(&self, container: &str, prefix: Option<&str>) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut query = format!("/{}?restype=container&comp=list", enc(container));
            if let Some(p) = prefix {
                query.push_str(&format!("&prefix={}", enc(p)));
            }
            if let Some(m) = &marker {
                query.push_str(&format!("&marker={}", enc(m)));
            }
            let reply = self.call(Method::GET, &query, &[], None).await?;
            let xml = reply.text();
            out.extend(parse_blob_list(&xml).context("reading the blob listing")?);
            marker = xml_element(&xml, "NextMarker").filter(|m| !m.is_empty());
            if marker.is_none() {
                return Ok(out);
            }
        }
    }
}

/// The `<Blob>` entries of a List Blobs answer, in `az`'s shape.
fn parse_blob_list(xml: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<Blob>") {
        let after = &rest[start + "<Blob>".len()..];
        let end = after
            .find("</Blob>")
            .ok_or_else(|| anyhow::anyhow!("an unterminated <Blob> element"))?;
        let entry = &after[..end];
        let field = |tag: &str| xml_element(entry, tag);
        let length = field("Content-Length").and_then(|l| l.parse::<u64>().ok());
        out.push(json!({
            "name": field("Name"),
            "properties": {
                "contentLength": length,
                "contentSettings": { "contentType": field("Content-Type") },
                "etag": field("Etag"),
                "lastModified": field("Last-Modified"),
                "blobType": field("BlobType"),
            },
        }));
        rest = &after[end + "</Blob>".len()..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_listings_parse() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ContainerName="c"><Blobs><Blob><Name>a/b &amp; c.txt</Name><Properties><Content-Length>12</Content-Length><Content-Type>text/plain</Content-Type><BlobType>BlockBlob</BlobType></Properties></Blob><Blob><Name>z</Name><Properties><Content-Length>0</Content-Length></Properties></Blob></Blobs><NextMarker /></EnumerationResults>"#;
        let blobs = parse_blob_list(xml).unwrap();
        assert_eq!(blobs.len(), 2);
        assert_eq!(blobs[0]["name"], "a/b & c.txt");
        assert_eq!(blobs[0]["properties"]["contentLength"], 12);
        assert_eq!(
            blobs[0]["properties"]["contentSettings"]["contentType"],
            "text/plain"
        );
        assert!(xml_element(xml, "NextMarker").is_none());
    }

    #[test]
    fn paths_keep_slashes_and_encode_the_rest() {
        assert_eq!(blob_path("c", "dir/a b.txt"), "/c/dir/a%20b.txt");
    }

    #[test]
    fn dates_are_rfc1123() {
        let d = now_rfc1123();
        assert!(d.ends_with(" GMT"), "{d}");
        assert_eq!(d.len(), 29, "{d}");
    }
}
