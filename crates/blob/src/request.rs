//! Which operation a request is: method, path (`/`, `/{container}`, `/{container}/{blob}`)
//! and the `restype`/`comp` query parameters. Pure.

use axum::http::Method;
use percent_encoding::percent_decode_str;

use crate::error::BlobError;
use crate::names::{valid_blob_name, valid_block_id, valid_container_name};

/// The largest page a listing returns.
pub const MAX_RESULTS: u32 = 5000;

/// The query string, decoded. `+` stays `+` (block ids are base64).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let pairs = query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (decode(k), decode(v)),
                None => (decode(p), String::new()),
            })
            .collect();
        Query { pairs }
    }

    /// The first value of `name` (matched case-insensitively).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the request carries a shared access signature.
    pub fn has_signature(&self) -> bool {
        self.get("sig").is_some()
    }

    fn lowered(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_ascii_lowercase)
    }
}

/// Paging and filtering of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub marker: Option<String>,
    pub max_results: u32,
    /// `include=metadata`.
    pub metadata: bool,
}

impl ListParams {
    fn parse(q: &Query) -> Result<ListParams, BlobError> {
        let max_results = match q.get("maxresults") {
            None => MAX_RESULTS,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(0) | Err(_) => return Err(BlobError::InvalidQueryParameterValue("maxresults")),
                Ok(n) => n.min(MAX_RESULTS),
            },
        };
        let metadata = q.get("include").is_some_and(|v| {
            v.split(',')
                .any(|i| i.trim().eq_ignore_ascii_case("metadata"))
        });
        Ok(ListParams {
            prefix: q.get("prefix").unwrap_or_default().to_string(),
            delimiter: q
                .get("delimiter")
                .filter(|d| !d.is_empty())
                .map(str::to_string),
            marker: q
                .get("marker")
                .filter(|m| !m.is_empty())
                .map(str::to_string),
            max_results,
            metadata,
        })
    }
}

/// Which block lists Get Block List returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockListType {
    Committed,
    Uncommitted,
    All,
}

/// A container and a blob in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobPath {
    pub container: String,
    pub blob: String,
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    ListContainers(ListParams),
    GetAccountInfo,
    CreateContainer(String),
    /// GET or HEAD of `restype=container` (with or without `comp=metadata`).
    GetContainerProperties(String),
    SetContainerMetadata(String),
    DeleteContainer(String),
    ListBlobs(String, ListParams),
    PutBlob(BlobPath),
    PutBlock(BlobPath, String),
    PutBlockList(BlobPath),
    GetBlockList(BlobPath, BlockListType),
    /// GET of the content; `head` for HEAD (Get Blob Properties).
    GetBlob {
        path: BlobPath,
        head: bool,
    },
    /// GET or HEAD of `comp=metadata`.
    GetBlobMetadata(BlobPath),
    SetBlobMetadata(BlobPath),
    SetBlobProperties(BlobPath),
    DeleteBlob(BlobPath),
}

impl Operation {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::ListContainers(_) => "ListContainers",
            Operation::GetAccountInfo => "GetAccountInfo",
            Operation::CreateContainer(_) => "CreateContainer",
            Operation::GetContainerProperties(_) => "GetContainerProperties",
            Operation::SetContainerMetadata(_) => "SetContainerMetadata",
            Operation::DeleteContainer(_) => "DeleteContainer",
            Operation::ListBlobs(..) => "ListBlobs",
            Operation::PutBlob(_) => "PutBlob",
            Operation::PutBlock(..) => "PutBlock",
            Operation::PutBlockList(_) => "PutBlockList",
            Operation::GetBlockList(..) => "GetBlockList",
            Operation::GetBlob { head: false, .. } => "GetBlob",
            Operation::GetBlob { head: true, .. } => "GetBlobProperties",
            Operation::GetBlobMetadata(_) => "GetBlobMetadata",
            Operation::SetBlobMetadata(_) => "SetBlobMetadata",
            Operation::SetBlobProperties(_) => "SetBlobProperties",
            Operation::DeleteBlob(_) => "DeleteBlob",
        }
    }
}

fn decode_segment(raw: &str) -> Result<String, BlobError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| BlobError::InvalidResourceName)
}

fn verb(method: &Method) -> BlobError {
    BlobError::UnsupportedHttpVerb(method.to_string())
}

fn unsupported(name: &str, value: &str) -> BlobError {
    BlobError::UnsupportedQueryParameter(format!("{name}={value}"))
}

/// Values of `comp` the service defines but this plane does not implement; anything else
/// is an invalid value.
const KNOWN_COMPS: &[&str] = &[
    "acl",
    "lease",
    "snapshot",
    "copy",
    "appendblock",
    "page",
    "pagelist",
    "tags",
    "tier",
    "undelete",
    "stats",
    "userdelegationkey",
    "batch",
    "blobs",
    "query",
    "expiry",
    "immutabilitypolicies",
    "legalhold",
    "rename",
    "incrementalcopy",
    "seal",
    "properties",
];

fn unknown_comp(comp: &str) -> BlobError {
    if KNOWN_COMPS.contains(&comp) {
        unsupported("comp", comp)
    } else {
        BlobError::InvalidQueryParameterValue("comp")
    }
}

/// Classifies a request. `path` is the raw (percent-encoded) path.
pub fn parse(method: &Method, path: &str, query: &Query) -> Result<Operation, BlobError> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let (container_raw, blob_raw) = match trimmed.split_once('/') {
        Some((c, b)) => (c, b),
        None => (trimmed, ""),
    };
    let restype = query.lowered("restype");
    let comp = query.lowered("comp");
    let (restype, comp) = (restype.as_deref(), comp.as_deref());

    if container_raw.is_empty() {
        return account_operation(method, query, restype, comp);
    }
    let container = decode_segment(container_raw)?;
    if !valid_container_name(&container) {
        return Err(BlobError::InvalidResourceName);
    }
    if blob_raw.is_empty() {
        return container_operation(method, query, container, restype, comp);
    }
    let blob = decode_segment(blob_raw)?;
    if !valid_blob_name(&blob) {
        return Err(BlobError::InvalidResourceName);
    }
    blob_operation(method, query, BlobPath { container, blob }, comp)
}

fn account_operation(
    method: &Method,
    query: &Query,
    restype: Option<&str>,
    comp: Option<&str>,
) -> Result<Operation, BlobError> {
    match (restype, comp) {
        (None | Some("service"), Some("list")) if method == Method::GET => {
            Ok(Operation::ListContainers(ListParams::parse(query)?))
        }
        (None | Some("service"), Some("list")) => Err(verb(method)),
        (Some("account"), Some("properties")) if matches!(*method, Method::GET | Method::HEAD) => {
            Ok(Operation::GetAccountInfo)
        }
        (Some("service" | "account"), Some(c)) => Err(unknown_comp(c)),
        (Some(r), _) if !matches!(r, "service" | "account") => {
            Err(BlobError::InvalidQueryParameterValue("restype"))
        }
        (_, Some(c)) => Err(unknown_comp(c)),
        _ => Err(BlobError::InvalidQueryParameterValue("comp")),
    }
}

fn container_operation(
    method: &Method,
    query: &Query,
    container: String,
    restype: Option<&str>,
    comp: Option<&str>,
) -> Result<Operation, BlobError> {
    match restype {
        Some("container") => {}
        Some(_) => return Err(BlobError::InvalidQueryParameterValue("restype")),
        // `/{name}` without `restype` would be a blob in the `$root` container.
        None => return Err(BlobError::InvalidQueryParameterValue("restype")),
    }
    match (comp, method) {
        (None, &Method::PUT) => Ok(Operation::CreateContainer(container)),
        (None, &Method::GET | &Method::HEAD) => Ok(Operation::GetContainerProperties(container)),
        (None, &Method::DELETE) => Ok(Operation::DeleteContainer(container)),
        (Some("metadata"), &Method::GET | &Method::HEAD) => {
            Ok(Operation::GetContainerProperties(container))
        }
        (Some("metadata"), &Method::PUT) => Ok(Operation::SetContainerMetadata(container)),
        (Some("list"), &Method::GET) => {
            Ok(Operation::ListBlobs(container, ListParams::parse(query)?))
        }
        (None | Some("metadata") | Some("list"), _) => Err(verb(method)),
        (Some(c), _) => Err(unknown_comp(c)),
    }
}

fn blob_operation(
    method: &Method,
    query: &Query,
    path: BlobPath,
    comp: Option<&str>,
) -> Result<Operation, BlobError> {
    if query.get("snapshot").is_some() {
        return Err(unsupported(
            "snapshot",
            query.get("snapshot").unwrap_or_default(),
        ));
    }
    if query.get("versionid").is_some() {
        return Err(unsupported(
            "versionid",
            query.get("versionid").unwrap_or_default(),
        ));
    }
    match (comp, method) {
        (None, &Method::PUT) => Ok(Operation::PutBlob(path)),
        (None, &Method::GET) => Ok(Operation::GetBlob { path, head: false }),
        (None, &Method::HEAD) => Ok(Operation::GetBlob { path, head: true }),
        (None, &Method::DELETE) => Ok(Operation::DeleteBlob(path)),
        (Some("block"), &Method::PUT) => {
            let id = query
                .get("blockid")
                .filter(|id| valid_block_id(id))
                .ok_or(BlobError::InvalidQueryParameterValue("blockid"))?;
            Ok(Operation::PutBlock(path, id.to_string()))
        }
        (Some("blocklist"), &Method::PUT) => Ok(Operation::PutBlockList(path)),
        (Some("blocklist"), &Method::GET) => {
            let list = match query.lowered("blocklisttype").as_deref() {
                None | Some("committed") => BlockListType::Committed,
                Some("uncommitted") => BlockListType::Uncommitted,
                Some("all") => BlockListType::All,
                Some(_) => return Err(BlobError::InvalidQueryParameterValue("blocklisttype")),
            };
            Ok(Operation::GetBlockList(path, list))
        }
        (Some("metadata"), &Method::GET | &Method::HEAD) => Ok(Operation::GetBlobMetadata(path)),
        (Some("metadata"), &Method::PUT) => Ok(Operation::SetBlobMetadata(path)),
        (Some("properties"), &Method::PUT) => Ok(Operation::SetBlobProperties(path)),
        (None | Some("block") | Some("blocklist") | Some("metadata"), _) => Err(verb(method)),
        (Some(c), _) => Err(unknown_comp(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: Method, path: &str, query: &str) -> Result<Operation, BlobError> {
        parse(&method, path, &Query::parse(Some(query)))
    }

    fn blob(c: &str, b: &str) -> BlobPath {
        BlobPath {
            container: c.into(),
            blob: b.into(),
        }
    }

    #[test]
    fn classifies_operations() {
        assert!(matches!(
            op(Method::GET, "/", "comp=list&maxresults=2").unwrap(),
            Operation::ListContainers(ListParams { max_results: 2, .. })
        ));
        assert_eq!(
            op(Method::PUT, "/data", "restype=container").unwrap(),
            Operation::CreateContainer("data".into())
        );
        assert_eq!(
            op(Method::HEAD, "/data/", "restype=Container").unwrap(),
            Operation::GetContainerProperties("data".into())
        );
        assert_eq!(
            op(Method::PUT, "/data/dir/a%20b.txt", "").unwrap(),
            Operation::PutBlob(blob("data", "dir/a b.txt"))
        );
        assert_eq!(
            op(
                Method::PUT,
                "/data/a%2Fb",
                "comp=block&blockid=QUJD%2BQ%3D%3D"
            )
            .unwrap(),
            Operation::PutBlock(blob("data", "a/b"), "QUJD+Q==".into())
        );
        assert_eq!(
            op(Method::HEAD, "/data/x", "").unwrap(),
            Operation::GetBlob {
                path: blob("data", "x"),
                head: true
            }
        );
        match op(
            Method::GET,
            "/data",
            "restype=container&comp=list&prefix=a%2F&delimiter=%2F&include=snapshots,metadata",
        )
        .unwrap()
        {
            Operation::ListBlobs(c, p) => {
                assert_eq!(c, "data");
                assert_eq!(p.prefix, "a/");
                assert_eq!(p.delimiter.as_deref(), Some("/"));
                assert!(p.metadata);
                assert_eq!(p.max_results, MAX_RESULTS);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        let code = |r: Result<Operation, BlobError>| match r {
            Err(e) => lanyard_platform::ApiError::from(e).code.to_string(),
            Ok(o) => panic!("{o:?}"),
        };
        assert_eq!(
            code(op(Method::GET, "/data/x", "comp=bogus")),
            "InvalidQueryParameterValue"
        );
        assert_eq!(
            code(op(Method::PUT, "/data/x", "comp=appendblock")),
            "UnsupportedQueryParameter"
        );
        assert_eq!(
            code(op(Method::PATCH, "/data/x", "")),
            "UnsupportedHttpVerb"
        );
        assert_eq!(
            code(op(Method::PUT, "/Data", "restype=container")),
            "InvalidResourceName"
        );
        assert_eq!(
            code(op(Method::PUT, "/data/x", "comp=block&blockid=!!")),
            "InvalidQueryParameterValue"
        );
        assert_eq!(
            code(op(Method::GET, "/", "comp=list&maxresults=0")),
            "InvalidQueryParameterValue"
        );
        assert_eq!(
            code(op(Method::GET, "/data", "")),
            "InvalidQueryParameterValue"
        );
        assert_eq!(
            code(op(Method::GET, "/data/%FF", "")),
            "InvalidResourceName"
        );
        assert_eq!(code(op(Method::GET, "/", "")), "InvalidQueryParameterValue");
        assert_eq!(
            code(op(Method::GET, "/data/x", "snapshot=2024-01-01")),
            "UnsupportedQueryParameter"
        );
    }
}
