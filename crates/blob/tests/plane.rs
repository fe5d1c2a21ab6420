//! The blob plane through its router: authentication, RBAC, containers, blobs, blocks,
//! ranges, conditions, listings, and what happens to files on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use axum::body::{Body, Bytes};
use axum::http::Method;
use support::{block_id, q, Call, Plane, ACCOUNT};

const CONTRIBUTOR: &str = "Storage Blob Data Contributor";
const READER: &str = "Storage Blob Data Reader";

async fn with_container(plane: &Plane, token: &str, name: &str) {
    let target = format!("/{name}?restype=container");
    let r = plane.call(Call::new(Method::PUT, &target, token)).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

async fn put_blob(
    plane: &Plane,
    token: &str,
    path: &str,
    content: &'static [u8],
) -> support::Response {
    plane
        .call(
            Call::new(Method::PUT, path, token)
                .header("x-ms-blob-type", "BlockBlob")
                .body(content),
        )
        .await
}

#[tokio::test]
async fn unauthenticated_requests_get_the_bearer_challenge() {
    let plane = Plane::new().await;
    let r = plane
        .call(Call::new(Method::GET, "/?comp=list", "").anonymous())
        .await;
    r.error(401, "InvalidAuthenticationInfo");
    let challenge = r.header("www-authenticate").unwrap();
    assert_eq!(
        challenge,
        format!(
            "Bearer authorization_uri=https://localhost:8443/{}/oauth2/authorize resource_id=https://storage.azure.com",
            plane.tenant
        )
    );
    assert_eq!(r.header("x-ms-version"), Some("2025-11-05"));
    // A garbage token and a token for another audience.
    let r = plane
        .call(Call::new(Method::GET, "/?comp=list", "not-a-jwt"))
        .await;
    r.error(401, "InvalidAuthenticationInfo");
    let principal = plane.principal().await;
    let vault = plane.token_for(&principal, "https://vault.azure.net");
    let r = plane
        .call(Call::new(Method::GET, "/?comp=list", &vault))
        .await;
    assert!(r
        .error(401, "InvalidAuthenticationInfo")
        .contains("audience"));
}

#[tokio::test]
async fn key_based_requests_are_refused() {
    let plane = Plane::new().await;
    let r = plane
        .call(
            Call::new(Method::GET, "/?comp=list", "")
                .anonymous()
                .header("authorization", "SharedKey acct1:c2lnbmF0dXJl"),
        )
        .await;
    r.error(403, "KeyBasedAuthenticationNotPermitted");
    let r = plane
        .call(Call::new(Method::GET, "/c1/b?sv=2024-01-01&sig=abc", "").anonymous())
        .await;
    r.error(403, "KeyBasedAuthenticationNotPermitted");
}

#[tokio::test]
async fn audiences_ours_and_azures() {
    let plane = Plane::new().await;
    let principal = plane.principal().await;
    let role = lanyard_domain::builtin::built_in_by_name(READER).unwrap();
    plane.assign(&principal, &role, &plane.account).await;
    for aud in [
        "https://storage.azure.com",
        "https://storage.azure.com/",
        "https://storage.lanyard.localhost",
        "https://storage.lanyard.localhost:8443/",
    ] {
        let token = plane.token_for(&principal, aud);
        let r = plane
            .call(Call::new(Method::GET, "/?comp=list", &token))
            .await;
        assert_eq!(r.status, 200, "{aud}: {}", r.text());
    }
}

#[tokio::test]
async fn unknown_accounts_are_404() {
    let plane = Plane::new().await;
    let token = plane.token_with(CONTRIBUTOR).await;
    let r = plane
        .call_account("nosuch", Call::new(Method::GET, "/?comp=list", &token))
        .await;
    r.error(404, "ResourceNotFound");
}

#[tokio::test]
async fn containers_lifecycle_and_listing() {
    let plane = Plane::new().await;
    let token = plane.token_with(CONTRIBUTOR).await;
    for name in ["alpha", "beta", "beta2", "gamma"] {
        with_container(&plane, &token, name).await;
    }
    let r = plane
        .call(Call::new(Method::PUT, "/alpha?restype=container", &token))
        .await;
    r.error(409, "ContainerAlreadyExists");
    let r = plane
        .call(Call::new(
            Method::PUT,
            "/Bad_Name?restype=container",
            &token,
        ))
        .await;
    r.error(400, "InvalidResourceName");

    // Metadata.
    let r = plane
        .call(
            Call::new(
                Method::PUT,
                "/alpha?restype=container&comp=metadata",
                &token,
            )
            .header("x-ms-meta-owner", "team-a"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = plane
        .call(Call::new(Method::HEAD, "/alpha?restype=container", &token))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ms-meta-owner"), Some("team-a"));
    assert!(r.header("etag").unwrap().starts_with("\"0x"));
    assert!(r.header("last-modified").unwrap().ends_with("GMT"));

    // Prefix and paging.
    let r = plane
        .call(Call::new(Method::GET, "/?comp=list&prefix=beta", &token))
        .await;
    let text = r.text();
    assert!(text.contains("<Name>beta</Name>") && text.contains("<Name>beta2</Name>"));
    assert!(!text.contains("<Name>alpha</Name>"));
    assert!(text.contains("<NextMarker />"), "{text}");
    let mut seen = Vec::new();
    let mut marker = String::new();
    loop {
        let target = format!(
            "/?comp=list&maxresults=3&include=metadata&marker={}",
            q(&marker)
        );
        let r = plane.call(Call::new(Method::GET, &target, &token)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ServiceEndpoint=\"https://acct1.blob.lanyard.localhost:8443/\">"), "{text}");
        seen.extend(between_all(&text, "<Name>", "</Name>"));
        match between_all(&text, "<NextMarker>", "</NextMarker>").pop() {
            Some(m) => marker = m,
            None => break,
        }
    }
    assert_eq!(seen, ["alpha", "beta", "beta2", "gamma"]);

    // Delete.
    let r = plane
        .call(Call::new(Method::DELETE, "/beta?restype=container", &token))
        .await;
    assert_eq!(r.status, 202);
    let r = plane
        .call(Call::new(Method::GET, "/beta?restype=container", &token))
        .await;
    r.error(404, "ContainerNotFound");
    let r = plane
        .call(Call::new(Method::DELETE, "/beta?restype=container", &token))
        .await;
    r.error(404, "ContainerNotFound");
}

fn between_all(text: &str, open: &str, close: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(close) else { break };
        out.push(after[..end].to_string());
        rest = &after[end + close.len()..];
    }
    out
}

#[tokio::test]
async fn put_get_ranges_and_properties() {
    let plane = Plane::new().await;
    let token = plane.token_with(CONTRIBUTOR).await;
    with_container(&plane, &token, "data").await;
    let r = plane
        .call(
            Call::new(Method::PUT, "/data/dir/hello%20world.txt", &token)
                .header("x-ms-blob-type", "BlockBlob")
                .header("x-ms-blob-content-type", "text/plain")
                .header("x-ms-meta-color", "blue")
                .header("content-md5", "XrY7u+Ae7tCTyyK7j1rNww==")
                .body("hello world"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("content-md5"), Some("XrY7u+Ae7tCTyyK7j1rNww=="));
    assert_eq!(r.header("x-ms-request-server-encrypted"), Some("true"));
    let etag = r.header("etag").unwrap().to_string();

    let r = plane
        .call(Call::new(
            Method::GET,
            "/data/dir/hello%20world.txt",
            &token,
        ))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"hello world");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("content-length"), Some("11"));
    assert_eq!(r.header("content-md5"), Some("XrY7u+Ae7tCTyyK7j1rNww=="));
    assert_eq!(r.header("x-ms-meta-color"), Some("blue"));
    assert_eq!(r.header("x-ms-blob-type"), Some("BlockBlob"));
    assert_eq!(r.header("etag"), Some(etag.as_str()));

    // Ranges: x-ms-range wins over Range.
    let r = plane
        .call(
            Call::new(Method::GET, "/data/dir/hello%20world.txt", &token)
                .header("x-ms-range", "bytes=6-")
                .header("range", "bytes=0-0"),
        )
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(&r.body[..], b"world");
    assert_eq!(r.header("content-range"), Some("bytes 6-10/11"));
    assert_eq!(
        r.header("x-ms-blob-content-md5"),
        Some("XrY7u+Ae7tCTyyK7j1rNww==")
    );
    let r = plane
        .call(
            Call::new(Method::GET, "/data/dir/hello%20world.txt", &token)
                .header("range", "bytes=0-4")
                .header("x-ms-range-get-content-md5", "true"),
        )
        .await;
    assert_eq!(&r.body[..], b"hello");
    assert_eq!(r.header("content-md5"), Some("XUFAKrxLKna5cZ2REBfFkg=="));

    // Get Blob Properties.
    let r = plane
        .call(Call::new(
            Method::HEAD,
            "/data/dir/hello%20world.txt",
            &token,
        ))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("11"));
    assert_eq!(r.header("x-ms-access-tier"), Some("Hot"));

    // Bad ranges.
    for range in ["bytes=11-", "bytes=20-30", "bytes=5-4"] {
        let r = plane
            .call(
                Call::new(Method::GET, "/data/dir/hello%20world.txt", &token)
                    .header("x-ms-range", range),
            )
            .await;
        r.error(416, "InvalidRange");
        assert_eq!(r.header("content-range"), Some("bytes */11"), "{range}");
    }
    let r = plane
        .call(
            Call::new(Method::GET, "/data/dir/hello%20world.txt", &token)
                .header("x-ms-range", "bytes=a-b"),
        )
        .await;
    r.error(400, "InvalidHeaderValue");
    // A malformed standard Range is ignored, as HTTP allows.
    let r = plane
        .call(
            Call::new(Method::GET, "/data/dir/hello%20world.txt", &token)
                .header("range", "lines=1-2"),
        )
        .await;
    assert_eq!(r.status, 200);

    // An empty blob: any range is unsatisfiable; a plain GET works.
    let r = put_blob(&plane, &token, "/data/empty", b"").await;
    assert_eq!(r.status, 201);
    let r = plane
        .call(Call::new(Method::GET, "/data/empty", &token).header("x-ms-range", "bytes=0-10"))
        .await;
    r.error(416, "InvalidRange");
    let r = plane
        .call(Call::new(Method::GET, "/data/empty", &token))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    // Metadata and properties.
    let r = plane
        .call(
            Call::new(Method::PUT, "/data/empty?comp=metadata", &token)
                .header("x-ms-meta-a", "1")
                .header("x-ms-meta-b", "2"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = plane
        .call(Call::new(Method::GET, "/data/empty?comp=metadata", &token))
        .await;
    assert_eq!(
        (r.header("x-ms-meta-a"), r.header("x-ms-meta-b")),
        (Some("1"), Some("2"))
    );
    let r = plane
        .call(
            Call::new(Method::PUT, "/data/empty?comp=properties", &token)
                .header("x-ms-blob-content-type", "application/json")
                .header("x-ms-blob-cache-control", "no-cache"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = plane
        .call(Call::new(Method::HEAD, "/data/empty", &token))
        .await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("x-ms-meta-a"), Some("1"));

    // Errors for what is not there.
    let r = plane
        .call(Call::new(Method::GET, "/data/missing", &token))
        .await;
    r.error(404, "BlobNotFound");
    let r = plane
        .call(Call::new(Method::GET, "/nocontainer/x", &token))
        .await;
    r.error(404, "ContainerNotFound");
    let r = put_blob(&plane, &token, "/nocontainer/x", b"x").await;
    r.error(404, "ContainerNotFound");
    let r = plane
        .call(Call::new(Method::PUT, "/data/x", &token).body("x"))
        .await;
    r.error(400, "MissingRequiredHeader");
    let r = plane
        .call(
            Call::new(Method::PUT, "/data/x", &token)
                .header("x-ms-blob-type", "BlockBlob")
                .header("content-md5", "XrY7u+Ae7tCTyyK7j1rNww==")
                .body("not hello world"),
        )
        .await;
    r.error(400, "Md5Mismatch");

    // Delete.
    let r = plane
        .call(Call::new(Method::DELETE, "/data/empty", &token))
        .await;
    assert_eq!(r.status, 202);
    let r = plane
        .call(Call::new(Method::HEAD, "/data/empty", &token))
        .await;
    assert_eq!(r.status, 404);
    // One blob left, one file.
    plane.settle(1).await;
}

#[tokio::test]
async fn conditional_requests() {
    let plane = Plane::new().await;
    let token = plane.token_with(CONTRIBUTOR).await;
    with_container(&plane, &token, "data").await;
    let r = put_blob(&plane, &token, "/data/b", b"v1").await;
    let etag = r.header("etag").unwrap().to_string();
    let modified = r.header("last-modified").unwrap().to_string();

    let r = plane
        .call(Call::new(Method::GET, "/data/b", &token).header("if-none-match", &etag))
        .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = plane
        .call(Call::new(Method::GET, "/data/b", &token).header("if-modified-since", &modified))
        .await;
    assert_eq!(r.status, 304);
    let r = plane
        .call(Call::new(Method::GET, "/data/b", &token).header("if-match", "\"0x0\""))
        .await;
    r.error(412, "ConditionNotMet");
    let r = plane
        .call(Call::new(Method::GET, "/data/b", &token).header("if-match", &etag))
        .await;
    assert_eq!(r.status, 200);

    // Writes.
    let r = plane
        .call(
            Call::new(Method::PUT, "/data/b", &token)
                .header("x-ms-blob-type", "BlockBlob")
                .header("if-none-match", "*")
                .body("v2"),
        )
        .await;
    r.error(409, "BlobAlreadyExists");
    let r = plane
        .call(
            Call::new(Method::PUT, "/data/b", &token)
                .header("x-ms-blob-type", "BlockBlob")
                .header("if-match", "\"0x0\"")
                .body("v2"),
        )
        .await;
    r.error(412, "ConditionNotMet");
    let r = plane
        .call(
            Call::new(Method::PUT, "/data/b", &token)
                .header("x-ms-blob-type", "BlockBlob")
                .header("if-match", &etag)
                .body("v2"),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_ne!(r.header("etag"), Some(etag.as_str()));
    let r = plane
        .call(Call::new(Method::DELETE, "/data/b", &token).header("if-match", &etag))
        .await;
    r.error(412, "ConditionNotMet");
    let r = plane.call(Call::new(Method::GET, "/data/b", &token)).await;
    assert_eq!(&r.body[..], b"v2");
    // The replaced content is gone from disk.
    plane.settle(1).await;
}

#[tokio::test]
async fn blocks_and_block_lists() {
    let plane = Plane::new().await;
    let token = plane.token_with(CONTRIBUTOR).await;
    with_container(&plane, &token, "data").await;
    let (plane, token) = (&plane, token.as_str());
    let put_block = |n: u32, content: &'static str| async move {
        let target = format!("/data/big?comp=block&blockid={}", q(&block_id(n)));
        let r = plane
            .call(Call::new(Method::PUT, &target, token).body(content))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    };
    put_block(1, "aaa").await;
    put_block(2, "bbb").await;
    put_block(3, "ccc").await;
    put_block(2, "BBB").await; // replaces block 2
                               // Nothing is visible before the list is committed.
    let r = plane.call(Call::new(Method::GET, "/data/big", token)).await;
    r.error(404, "BlobNotFound");
    let r = plane
        .call(Call::new(
            Method::GET,
            "/data/big?comp=blocklist&blocklisttype=all",
            token,
        ))
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("<UncommittedBlocks><Block>"),
        "{}",
        r.text()
    );

    let list = |items: &[(&str, u32)]| {
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for (kind, n) in items {
            xml.push_str(&format!("<{kind}>{}</{kind}>", block_id(*n)));
        }
        xml.push_str("</BlockList>");
        xml
    };
    let r = plane
        .call(
            Call::new(Method::PUT, "/data/big?comp=blocklist", token)
                .header("x-ms-blob-content-type", "text/csv")
                .body(list(&[("Latest", 1), ("Uncommitted", 2), ("Latest", 3)])),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = plane.call(Call::new(Method::GET, "/data/big", token)).await;
    assert_eq!(&r.body[..], b"aaaBBBccc");
    assert_eq!(r.header("content-type"), Some("text/csv"));

    // Uncommitted blocks were consumed; committed ones can be reused.
    put_block(4, "ddd").await;
    let r = plane
        .call(
            Call::new(Method::PUT, "/data/big?comp=blocklist", token).body(list(&[
                ("Committed", 3),
                ("Latest", 4),
                ("Committed", 1),
            ])),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = plane.call(Call::new(Method::GET, "/data/big", token)).await;
    assert_eq!(&r.body[..], b"cccdddaaa");
    let r = plane
        .call(Call::new(Method::GET, "/data/big?comp=blocklist", token))
        .await;
    let text = r.text();
    assert_eq!(
        between_all(&text, "<Size>", "</Size>"),
        ["3", "3", "3"],
        "{text}"
    );
    assert_eq!(r.header("x-ms-blob-content-length"), Some("9"));

    // A block that does not exist, one that is only committed, and malformed lists.
    let r = plane
        .call(
            Call::new(Method::PUT, "/data/big?comp=blocklist", token).body(list(&[("Latest", 9)])),
        )
        .await;
    r.error(400, "InvalidBlockList");
    let r = plane
        .call(
            Call::new(Method::PUT, "/data/big?comp=blocklist", token)
                .body(list(&[("Uncommitted", 3)])),
        )
        .await;
    r.error(400, "InvalidBlockList");
    for bad in [
        "",
        "<BlockList><Latest>x</Latest>",
        "<BlockList><Foo>x</Foo></BlockList>",
        "{\"json\": true}",
        "<BlockList><Latest>&bogus;</Latest></BlockList>",
    ] {
        let r = plane
            .call(Call::new(Method::PUT, "/data/big?comp=blocklist", token).body(bad))
            .await;
        r.error(400, "InvalidXmlDocument");
    }
    let r = plane
        .call(Call::new(
            Method::PUT,
            "/data/big?comp=block&blockid=not%20base64",
            token,
        ))
        .await;
    r.error(400, "InvalidQueryParameterValue");
    let r = plane.call(Call::new(Method::GET, "/data/big", token)).await;
    assert_eq!(&r.body[..], b"cccdddaaa");
    // One committed blob file; every block file was consumed.
    plane.settle(1).await;
}

#[tokio::test]
async fn unknown_operations_are_xml_4xx_never_500() {
    let plane = Plane::new().await;
    let token = plane.token_with(CONTRIBUTOR).await;
    with_container(&plane, &token, "data").await;
    let cases: &[(Method, &str, u16, &str)] = &[
        (
            Method::GET,
            "/data/b?comp=bogus",
            400,
            "InvalidQueryParameterValue",
        ),
        (
            Method::PUT,
            "/data/b?comp=appendblock",
            400,
            "UnsupportedQueryParameter",
        ),
        (
            Method::GET,
            "/data?restype=container&comp=acl",
            400,
            "UnsupportedQueryParameter",
        ),
        (
            Method::GET,
            "/data?restype=bogus",
            400,
            "InvalidQueryParameterValue",
        ),
        (Method::GET, "/data", 400, "InvalidQueryParameterValue"),
        (Method::GET, "/", 400, "InvalidQueryParameterValue"),
        (
            Method::GET,
            "/?restype=service&comp=properties",
            400,
            "UnsupportedQueryParameter",
        ),
        (Method::PATCH, "/data/b", 405, "UnsupportedHttpVerb"),
        (
            Method::POST,
            "/data?restype=container",
            405,
            "UnsupportedHttpVerb",
        ),
        (Method::GET, "/data/%ff", 400, "InvalidResourceName"),
        (
            Method::GET,
            "/data?restype=container&comp=list&maxresults=-1",
            400,
            "InvalidQueryParameterValue",
        ),
        (
            Method::GET,
            "/data?restype=container&comp=list&marker=zzz",
            400,
            "InvalidQueryParameterValue",
        ),
    ];
    for (method, target, status, code) in cases {
        let r = plane.call(Call::new(method.clone(), target, &token)).await;
        assert_eq!(
            r.header("content-type"),
            Some("application/xml"),
            "{target}"
        );
        r.error(*status, code);
    }
}

#[tokio::test]
async fn list_blobs_with_prefix_delimiter_and_paging() {
    let plane = Plane::new().await;
    let token = plane.token_with(CONTRIBUTOR).await;
    with_container(&plane, &token, "data").await;
    let names = [
        "a.txt",
        "dir/1.txt",
        "dir/2.txt",
        "dir/sub/3.txt",
        "dir0.txt",
        "dirz/4.txt",
        "z.txt",
    ];
    for name in names {
        let r = plane
            .call(
                Call::new(Method::PUT, &format!("/data/{name}"), &token)
                    .header("x-ms-blob-type", "BlockBlob")
                    .header("x-ms-meta-name", name.replace('/', "_"))
                    .body(name.to_string()),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let list = |query: String| {
        let target = format!("/data?restype=container&comp=list{query}");
        let token = token.clone();
        let plane = &plane;
        async move {
            let r = plane.call(Call::new(Method::GET, &target, &token)).await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.text()
        }
    };
    // Flat.
    let text = list(String::new()).await;
    assert_eq!(between_all(&text, "<Name>", "</Name>"), names);
    assert!(text.contains("<Content-Length>9</Content-Length>"));
    // Prefix.
    let text = list(format!("&prefix={}", q("dir/"))).await;
    assert_eq!(
        between_all(&text, "<Name>", "</Name>"),
        ["dir/1.txt", "dir/2.txt", "dir/sub/3.txt"]
    );
    // Delimiter: folded prefixes in order with the blobs.
    let text = list(format!("&delimiter={}", q("/"))).await;
    assert_eq!(
        between_all(&text, "<Name>", "</Name>"),
        ["a.txt", "dir/", "dir0.txt", "dirz/", "z.txt"]
    );
    assert_eq!(
        between_all(&text, "<BlobPrefix><Name>", "</Name></BlobPrefix>"),
        ["dir/", "dirz/"]
    );
    let text = list(format!(
        "&delimiter={}&prefix={}&include=metadata",
        q("/"),
        q("dir/")
    ))
    .await;
    assert_eq!(
        between_all(&text, "<Name>", "</Name>"),
        ["dir/1.txt", "dir/2.txt", "dir/sub/"]
    );
    assert!(
        text.contains("<Metadata><name>dir_1.txt</name></Metadata>"),
        "{text}"
    );
    assert!(text.contains("<Delimiter>/</Delimiter>"));
    // Paging with a delimiter, one entry per page.
    for max in [1, 2, 3] {
        let mut seen = Vec::new();
        let mut marker = String::new();
        for _ in 0..20 {
            let text = list(format!(
                "&delimiter={}&maxresults={max}&marker={}",
                q("/"),
                q(&marker)
            ))
            .await;
            let page = between_all(&text, "<Name>", "</Name>");
            assert!(page.len() <= max);
            seen.extend(page);
            match between_all(&text, "<NextMarker>", "</NextMarker>").pop() {
                Some(m) => marker = m,
                None => break,
            }
        }
        assert_eq!(
            seen,
            ["a.txt", "dir/", "dir0.txt", "dirz/", "z.txt"],
            "max {max}"
        );
    }
}

#[tokio::test]
async fn readers_read_and_cannot_write() {
    let plane = Plane::new().await;
    let writer = plane.token_with(CONTRIBUTOR).await;
    let reader = plane.token_with(READER).await;
    with_container(&plane, &writer, "data").await;
    put_blob(&plane, &writer, "/data/b", b"content").await;

    let r = plane.call(Call::new(Method::GET, "/data/b", &reader)).await;
    assert_eq!(&r.body[..], b"content");
    let r = plane
        .call(Call::new(
            Method::GET,
            "/data?restype=container&comp=list",
            &reader,
        ))
        .await;
    assert_eq!(r.status, 200);
    let r = plane
        .call(Call::new(Method::GET, "/data?restype=container", &reader))
        .await;
    assert_eq!(r.status, 200);

    let message = put_blob(&plane, &reader, "/data/b", b"x")
        .await
        .error(403, "AuthorizationPermissionMismatch");
    assert!(message.contains(
        "This request is not authorized to perform this operation using this permission."
    ));
    assert!(
        message.contains("Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write"),
        "{message}"
    );
    assert!(message.contains("Storage Blob Data Reader"), "{message}");
    let r = plane
        .call(Call::new(Method::DELETE, "/data/b", &reader))
        .await;
    r.error(403, "AuthorizationPermissionMismatch");
    let target = format!("/data/b?comp=block&blockid={}", q(&block_id(1)));
    let r = plane
        .call(Call::new(Method::PUT, &target, &reader).body("x"))
        .await;
    r.error(403, "AuthorizationPermissionMismatch");
    let r = plane
        .call(Call::new(Method::PUT, "/new?restype=container", &reader))
        .await;
    r.error(403, "AuthorizationPermissionMismatch");
    let r = plane
        .call(Call::new(
            Method::DELETE,
            "/data?restype=container",
            &reader,
        ))
        .await;
    r.error(403, "AuthorizationPermissionMismatch");

    // No role at all: even reads are refused.
    let principal = plane.principal().await;
    let nobody = plane.token_for(&principal, "https://storage.azure.com");
    let r = plane.call(Call::new(Method::GET, "/data/b", &nobody)).await;
    assert!(r
        .error(403, "AuthorizationPermissionMismatch")
        .contains("holds no role assignments"));
}

#[tokio::test]
async fn add_only_callers_create_but_never_overwrite() {
    let plane = Plane::new().await;
    let writer = plane.token_with(CONTRIBUTOR).await;
    with_container(&plane, &writer, "data").await;
    let adder = plane
        .token_with_data_actions(&[
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
        ])
        .await;
    let r = put_blob(&plane, &adder, "/data/new", b"first").await;
    assert_eq!(r.status, 201, "{}", r.text());
    put_blob(&plane, &adder, "/data/new", b"second")
        .await
        .error(403, "AuthorizationPermissionMismatch");
    let r = plane
        .call(Call::new(Method::GET, "/data/new", &adder))
        .await;
    assert_eq!(&r.body[..], b"first");
}

#[tokio::test]
async fn abandoned_uploads_leave_nothing_behind() {
    let plane = Plane::new().await;
    let token = plane.token_with(CONTRIBUTOR).await;
    with_container(&plane, &token, "data").await;
    put_blob(&plane, &token, "/data/b", b"previous").await;
    let broken = || {
        Body::from_stream(futures::stream::iter(vec![
            Ok(Bytes::from(vec![7u8; 100_000])),
            Err(std::io::Error::other("client went away")),
        ]))
    };
    // A Put Blob whose body breaks, one shorter than announced, and a Put Block that breaks.
    let r = plane
        .call(
            Call::new(Method::PUT, "/data/b", &token)
                .header("x-ms-blob-type", "BlockBlob")
                .body(broken()),
        )
        .await;
    assert!(r.status.is_client_error(), "{}", r.status);
    let r = plane
        .call(
            Call::new(Method::PUT, "/data/b", &token)
                .header("x-ms-blob-type", "BlockBlob")
                .header("content-length", "1000")
                .body("short"),
        )
        .await;
    assert!(r.status.is_client_error(), "{}", r.status);
    let target = format!("/data/b?comp=block&blockid={}", q(&block_id(1)));
    let r = plane
        .call(Call::new(Method::PUT, &target, &token).body(broken()))
        .await;
    assert!(r.status.is_client_error());
    // The previous version is intact and is the only file.
    let r = plane.call(Call::new(Method::GET, "/data/b", &token)).await;
    assert_eq!(&r.body[..], b"previous");
    let files = plane.settle(1).await;
    assert!(files[0].ends_with(".blob"), "{files:?}");
    let r = plane
        .call(Call::new(
            Method::GET,
            "/data/b?comp=blocklist&blocklisttype=uncommitted",
            &token,
        ))
        .await;
    assert!(!r.text().contains("<Block>"));
}

#[tokio::test]
async fn recovery_removes_what_no_record_names() {
    let plane = Plane::new().await;
    let token = plane.token_with(CONTRIBUTOR).await;
    with_container(&plane, &token, "data").await;
    with_container(&plane, &token, "gone").await;
    put_blob(&plane, &token, "/data/keep", b"keep").await;
    put_blob(&plane, &token, "/gone/x", b"x").await;
    let target = format!("/data/staged?comp=block&blockid={}", q(&block_id(1)));
    plane
        .call(Call::new(Method::PUT, &target, &token).body("staged"))
        .await;
    let before = plane.settle(3).await;
    // What a crash leaves: a half-written temporary file, a file renamed but never
    // committed, a directory no container names, a loose file.
    let dir = before[0].split('/').next().unwrap().to_string();
    let root = plane.blob_root();
    std::fs::write(root.join(&dir).join(".tmp-0123"), b"half").unwrap();
    std::fs::write(
        root.join(&dir)
            .join("00000000000000000000000000000000.blob"),
        b"x",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("ffffffffffffffffffffffffffffffff")).unwrap();
    std::fs::write(root.join("ffffffffffffffffffffffffffffffff/a.blob"), b"x").unwrap();
    std::fs::write(root.join("loose"), b"x").unwrap();
    let report = lanyard_blob::recover(&plane.state).await.unwrap();
    assert_eq!(report.dirs, 1);
    assert_eq!(report.files, 3);
    assert_eq!(plane.files(), before);
    // Everything still reads.
    let r = plane
        .call(Call::new(Method::GET, "/data/keep", &token))
        .await;
    assert_eq!(&r.body[..], b"keep");
}

#[tokio::test]
async fn deleting_a_container_or_the_account_removes_the_files() {
    let plane = Plane::new().await;
    let token = plane.token_with(CONTRIBUTOR).await;
    with_container(&plane, &token, "one").await;
    with_container(&plane, &token, "two").await;
    put_blob(&plane, &token, "/one/a", b"a").await;
    put_blob(&plane, &token, "/two/b", b"b").await;
    plane.settle(2).await;
    let r = plane
        .call(Call::new(Method::DELETE, "/one?restype=container", &token))
        .await;
    assert_eq!(r.status, 202);
    plane.settle(1).await;
    // A container created again with the same name starts empty.
    with_container(&plane, &token, "one").await;
    let r = plane.call(Call::new(Method::GET, "/one/a", &token)).await;
    r.error(404, "BlobNotFound");

    // The account goes (as the control plane deletes it).
    let record = lanyard_storage::ResourceRecord {
        id: plane.account.clone(),
        resource_type: lanyard_blob::account::ACCOUNT_TYPE.into(),
        body: serde_json::json!({}),
        created_at: time::OffsetDateTime::now_utc(),
        updated_at: time::OffsetDateTime::now_utc(),
    };
    let mut batch = lanyard_storage::Batch::new();
    batch.changes = lanyard_blob::account::removal(std::slice::from_ref(&record));
    batch.push(lanyard_storage::Change::DeleteResource(
        plane.account.clone(),
    ));
    plane.state.commit(batch).await.unwrap();
    lanyard_blob::account::sweep_accounts(&plane.state);
    plane.settle(0).await;
    let r = plane.call(Call::new(Method::GET, "/two/b", &token)).await;
    r.error(404, "ResourceNotFound");
    // The name is free again: a new account starts empty.
    let registration = lanyard_blob::account::registration(&plane.account, None).unwrap();
    let mut batch = lanyard_storage::Batch::new();
    batch.expect = registration.expect;
    batch.changes = registration.changes;
    plane.state.commit(batch).await.unwrap();
    let r = plane
        .call(Call::new(Method::GET, "/?comp=list", &token))
        .await;
    assert!(!r.text().contains("<Container>"), "{}", r.text());
    assert_eq!(ACCOUNT, plane.account.name());
}

#[tokio::test]
async fn large_blobs_stream_through() {
    let plane = Plane::new().await;
    let token = plane.token_with(CONTRIBUTOR).await;
    with_container(&plane, &token, "data").await;
    // 3 MiB in 64 KiB chunks, streamed in and out.
    let chunk: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        (0..48).map(|_| Ok(Bytes::from(chunk.clone()))).collect();
    let r = plane
        .call(
            Call::new(Method::PUT, "/data/large", &token)
                .header("x-ms-blob-type", "BlockBlob")
                .header("content-length", (48 * 65_536).to_string())
                .body(Body::from_stream(futures::stream::iter(chunks))),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = plane
        .call(Call::new(Method::GET, "/data/large", &token))
        .await;
    assert_eq!(r.body.len(), 48 * 65_536);
    assert_eq!(&r.body[65_536..65_536 * 2], &chunk[..]);
    let r = plane
        .call(Call::new(Method::GET, "/data/large", &token).header(
            "x-ms-range",
            format!("bytes={}-{}", 65_536 + 10, 65_536 * 40),
        ))
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body.len(), 65_536 * 39 - 9);
    assert_eq!(r.body[0], chunk[10]);
}

#[tokio::test]
async fn lost_content_is_an_internal_error_not_a_retry_loop() {
    let plane = Plane::new().await;
    let token = plane.token_with(CONTRIBUTOR).await;
    with_container(&plane, &token, "data").await;
    put_blob(&plane, &token, "/data/b", b"content").await;
    let files = plane.settle(1).await;
    std::fs::remove_file(plane.blob_root().join(&files[0])).unwrap();
    let r = plane.call(Call::new(Method::GET, "/data/b", &token)).await;
    r.error(500, "InternalError");
    assert!(!r.text().contains(&files[0]), "no paths in answers");
}

/// The account of a host is kept while the commit generation it was read at is current; a
/// miss is remembered only briefly; misses cannot push out accounts in use.
#[tokio::test]
async fn accounts_are_kept_per_commit_generation_and_misses_briefly() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use lanyard_blob::plane::{Plane as BlobPlane, MISSING_CACHE};
    use lanyard_blob::BlobError;
    use lanyard_domain::ManualClock;
    use lanyard_storage::{Batch, Change};

    let clock = ManualClock::at_unix(1_750_000_000);
    let plane = Plane::with_clock(Arc::new(clock.clone())).await;
    let state = &plane.state;
    let blobs = BlobPlane::new(state.clone());
    let a = blobs.account(ACCOUNT).await.unwrap();
    let b = blobs.account(ACCOUNT).await.unwrap();
    assert!(Arc::ptr_eq(&a, &b), "the second lookup reads nothing");
    assert_eq!(a.id, plane.account);

    // Another server drops the account's registration; this server's generation has not
    // moved, so its entry still answers, until the generation advances.
    let forget = Batch::new().with(Change::DeleteDocument {
        collection: lanyard_blob::names::ACCOUNTS.into(),
        key: ACCOUNT.into(),
    });
    state.store.commit(forget).await.unwrap();
    assert!(blobs.account(ACCOUNT).await.is_ok());
    state.generation.fetch_add(1, Ordering::SeqCst);
    assert!(matches!(
        blobs.account(ACCOUNT).await,
        Err(BlobError::AccountNotFound(_))
    ));

    // Registered again on another server: the miss is remembered for under two seconds.
    let registration = lanyard_blob::account::registration(&plane.account, None).unwrap();
    let mut batch = Batch::new();
    batch.changes = registration.changes;
    state.store.commit(batch).await.unwrap();
    assert!(blobs.account(ACCOUNT).await.is_err());
    clock.advance(std::time::Duration::from_secs(2));
    let c = blobs.account(ACCOUNT).await.unwrap();
    assert!(!Arc::ptr_eq(&a, &c));

    // Many absent names: bounded, and the account in use stays.
    for i in 0..(MISSING_CACHE + 500) {
        assert!(blobs.account(&format!("absent{i}")).await.is_err());
    }
    let (accounts, missing, _) = blobs.held();
    assert_eq!(accounts, 1);
    assert!(missing <= MISSING_CACHE, "{missing} misses held");
    assert!(Arc::ptr_eq(&c, &blobs.account(ACCOUNT).await.unwrap()));
}

/// Small committed content is kept by file name: a replaced blob names a new file, so its
/// new content is served; large blobs are never kept.
#[tokio::test]
async fn small_content_is_kept_per_file_and_replacements_are_seen() {
    use lanyard_blob::plane::{Plane as BlobPlane, CONTENT_ITEM_MAX};

    let plane = Plane::new().await;
    let token = plane.token_with(CONTRIBUTOR).await;
    with_container(&plane, &token, "data").await;
    put_blob(&plane, &token, "/data/b", b"first content").await;
    for _ in 0..2 {
        let r = plane.call(Call::new(Method::GET, "/data/b", &token)).await;
        assert_eq!(r.body, Bytes::from_static(b"first content"));
    }
    let r = plane
        .call(Call::new(Method::GET, "/data/b", &token).header("range", "bytes=6-12"))
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, Bytes::from_static(b"content"));
    put_blob(&plane, &token, "/data/b", b"second").await;
    let r = plane.call(Call::new(Method::GET, "/data/b", &token)).await;
    assert_eq!(r.body, Bytes::from_static(b"second"));
    let files = plane.settle(1).await;

    // The cache itself: a file read once is served from memory after that.
    let blobs = BlobPlane::new(plane.state.clone());
    let got = blobs.small_content(&files[0], 6).await.unwrap().unwrap();
    assert_eq!(got, Bytes::from_static(b"second"));
    assert_eq!(blobs.held().2, 6);
    std::fs::remove_file(plane.blob_root().join(&files[0])).unwrap();
    let again = blobs.small_content(&files[0], 6).await.unwrap().unwrap();
    assert_eq!(again, got);
    // A file not read before and missing is an error, not kept.
    assert!(blobs
        .small_content("nosuch/file.blob", 3)
        .await
        .unwrap()
        .is_err());
    assert_eq!(blobs.held().2, 6);
    // Too large to keep: left to the streaming path.
    assert!(blobs
        .small_content(&files[0], CONTENT_ITEM_MAX + 1)
        .await
        .is_none());
}
