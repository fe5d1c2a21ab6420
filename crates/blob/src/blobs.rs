//! Blob operations: Put Blob, Put Block, Put Block List, Get Block List, Get Blob (with
//! ranges), Get Blob Properties, metadata, properties and Delete Blob.
//!
//! Every write spools its content to a fresh file first, then commits the document that
//! names it with expectations on what it read (the container, the blob, the blocks it
//! consumes); a lost race plans the commit again over the same file. Files the commit
//! stopped naming are removed after it.
//!
//! Writes need `blobs/write`; creating a blob or adding blocks is also allowed with
//! `blobs/add/action` alone.

use axum::body::Body;
use axum::http::{header, HeaderName, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use lanyard_platform::Step;
use md5::{Digest, Md5};
use tokio_util::io::ReaderStream;

use crate::access::Permission;
use crate::docs::{self, Stored};
use crate::error::BlobError;
use crate::files::{PendingFile, Spool, READ_CHUNK};
use crate::headers::{self, Conditions, ContentSource, ReadCondition, X_MS_BLOB_TYPE};
use crate::model::{new_etag, BlobDoc, BlockDoc, ContainerDoc};
use crate::names::{blob_key, block_key};
use crate::plan;
use crate::plane::Ctx;
use crate::plane::{contended, RETRIES};
use crate::reply::{blob_properties, Reply};
use crate::request::{BlobPath, BlockListType};
use crate::xml::{parse_block_list, Writer};

/// The largest blob Put Blob accepts (Azure's limit; the server's body limit is lower).
const MAX_PUT_BLOB: u64 = 5000 * 1024 * 1024;
/// The largest block.
const MAX_BLOCK: u64 = 4000 * 1024 * 1024;
/// The largest Put Block List body (50,000 entries of the longest id fit easily).
const MAX_BLOCK_LIST_BODY: usize = 16 * 1024 * 1024;
/// The most blocks a blob may have.
const MAX_BLOCKS: usize = 50_000;
/// Reads up to this size are served from one read; larger ones are streamed.
const SMALL_READ: u64 = 256 * 1024;
/// The largest range whose MD5 may be asked for.
const MAX_RANGE_MD5: u64 = 4 * 1024 * 1024;

fn md5_header(raw: &[u8]) -> String {
    STANDARD.encode(raw)
}

/// The write permission: `blobs/write`, or `blobs/add/action` when nothing is overwritten.
/// Returns whether the caller may overwrite.
fn may_write(ctx: &Ctx<'_>, container: &str) -> Result<bool, BlobError> {
    match ctx.require(Permission::BlobWrite, container) {
        Ok(()) => Ok(true),
        Err(denied) => {
            if ctx.holds(Permission::BlobAdd, container) {
                Ok(false)
            } else {
                Err(denied)
            }
        }
    }
}

/// Refuses an overwrite to a caller that may only add.
fn check_overwrite(
    ctx: &Ctx<'_>,
    container: &str,
    overwrite_allowed: bool,
    exists: bool,
) -> Result<(), BlobError> {
    if exists && !overwrite_allowed {
        return ctx.require(Permission::BlobWrite, container);
    }
    Ok(())
}

/// A write whose file could not be created because its container was deleted meanwhile
/// (its directory went with it) is a 404, not an I/O failure.
async fn unless_container_gone<T>(
    ctx: &Ctx<'_>,
    container: &str,
    written: Result<T, BlobError>,
) -> Result<T, BlobError> {
    match written {
        Err(BlobError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            match docs::container(ctx, container).await? {
                None => Err(BlobError::ContainerNotFound),
                Some(_) => Err(BlobError::Io(e)),
            }
        }
        other => other,
    }
}

fn blob_type(ctx: &Ctx<'_>) -> Result<(), BlobError> {
    match ctx.headers.get(X_MS_BLOB_TYPE).map(|v| v.to_str()) {
        None => Err(BlobError::MissingRequiredHeader("x-ms-blob-type")),
        Some(Ok(t)) if t.eq_ignore_ascii_case("BlockBlob") => Ok(()),
        Some(_) => Err(BlobError::InvalidHeaderValue("x-ms-blob-type")),
    }
}

/// A blob write whose content is on disk, with what it read before spooling.
struct BlobWrite<'a> {
    path: &'a BlobPath,
    file: PendingFile,
    conditions: &'a Conditions,
    overwrite_allowed: bool,
    container: Stored<ContainerDoc>,
    existing: Option<Stored<BlobDoc>>,
}

/// Commits the document `build` makes as the blob, removing the blob's uncommitted blocks;
/// plans again (reading the container and blob anew) when it loses a race.
async fn commit_blob(
    ctx: &Ctx<'_>,
    write: BlobWrite<'_>,
    build: impl Fn(&PendingFile, Option<&Stored<BlobDoc>>) -> BlobDoc,
) -> Result<BlobDoc, BlobError> {
    let BlobWrite {
        path,
        file,
        conditions,
        overwrite_allowed,
        container,
        existing,
    } = write;
    let key = &blob_key(ctx.account_name(), &path.container, &path.blob);
    let (pending, build, first) = (&file, &build, &(container, existing));
    let (doc, leftovers) = ctx
        .transact(|attempt| async move {
            let read;
            let (container, existing) = if attempt.is_first() {
                (&first.0, first.1.as_ref())
            } else {
                read = (
                    docs::existing_container(ctx, &path.container).await?,
                    docs::blob(ctx, path).await?,
                );
                let existing = read.1.as_ref();
                check_overwrite(ctx, &path.container, overwrite_allowed, existing.is_some())?;
                conditions.check_write(existing.map(|e| e.condition_version()))?;
                (&read.0, existing)
            };
            let blocks = docs::blocks(ctx, path).await?;
            let doc = build(pending, existing);
            let batch = plan::write_blob(container, key, existing, &blocks, &doc)?;
            Ok(Step::Commit(
                batch,
                (doc, plan::leftovers(existing, &blocks)),
            ))
        })
        .await?;
    file.keep();
    ctx.files().discard(leftovers);
    Ok(doc)
}

pub async fn put_blob(ctx: &Ctx<'_>, path: &BlobPath, body: Body) -> Result<Response, BlobError> {
    blob_type(ctx)?;
    let overwrite_allowed = may_write(ctx, &path.container)?;
    let conditions = Conditions::from_headers(ctx.headers);
    let mut content = headers::content_headers(ctx.headers, ContentSource::PutBlob)?;
    let metadata = headers::metadata(ctx.headers)?;
    let declared_md5 = headers::request_md5(ctx.headers)?;
    let expected = headers::content_length(ctx.headers)?;
    // Everything that can fail without the body fails before it is read.
    let container = docs::existing_container(ctx, &path.container).await?;
    let existing = docs::blob(ctx, path).await?;
    check_overwrite(ctx, &path.container, overwrite_allowed, existing.is_some())?;
    conditions.check_write(existing.as_ref().map(|e| e.condition_version()))?;

    let spooled = ctx
        .files()
        .spool(
            &container.doc.dir,
            body,
            Spool {
                expected,
                max: MAX_PUT_BLOB,
                md5: true,
                kind: "blob",
            },
        )
        .await;
    let file = unless_container_gone(ctx, &path.container, spooled).await?;
    if declared_md5.is_some_and(|d| Some(d) != file.md5) {
        return Err(BlobError::Md5Mismatch);
    }
    let computed_md5 = file.md5.map(|m| md5_header(&m));
    if content.content_md5.is_none() {
        content.content_md5 = computed_md5.clone();
    }
    let now = ctx.now();
    let etag = new_etag();
    let write = BlobWrite {
        path,
        file,
        conditions: &conditions,
        overwrite_allowed,
        container,
        existing,
    };
    let doc = commit_blob(ctx, write, |file, existing| BlobDoc {
        file: file.name.clone(),
        size: file.size,
        etag: etag.clone(),
        created: existing.map_or(now, |e| e.doc.created),
        last_modified: now,
        content: content.clone(),
        metadata: metadata.clone(),
        blocks: Vec::new(),
    })
    .await?;
    let mut reply = Reply::new(StatusCode::CREATED)
        .etag(&doc.etag)
        .last_modified(doc.last_modified)
        .encrypted();
    if let Some(m) = computed_md5 {
        reply = reply.header(HeaderName::from_static("content-md5"), &m);
    }
    Ok(reply.finish())
}

pub async fn put_block(
    ctx: &Ctx<'_>,
    path: &BlobPath,
    id: &str,
    body: Body,
) -> Result<Response, BlobError> {
    may_write(ctx, &path.container)?;
    let declared_md5 = headers::request_md5(ctx.headers)?;
    let expected = headers::content_length(ctx.headers)?;
    let container = docs::existing_container(ctx, &path.container).await?;
    let spooled = ctx
        .files()
        .spool(
            &container.doc.dir,
            body,
            Spool {
                expected,
                max: MAX_BLOCK,
                md5: declared_md5.is_some(),
                kind: "block",
            },
        )
        .await;
    let file = unless_container_gone(ctx, &path.container, spooled).await?;
    if declared_md5.is_some_and(|d| Some(d) != file.md5) {
        return Err(BlobError::Md5Mismatch);
    }
    let key = block_key(ctx.account_name(), &path.container, &path.blob, id);
    let doc = BlockDoc {
        file: file.name.clone(),
        size: file.size,
        created: ctx.now(),
    };
    let (key, doc, first) = (&key, &doc, &container);
    let replaced = ctx
        .transact(|attempt| async move {
            let reloaded;
            let container = if attempt.is_first() {
                first
            } else {
                reloaded = docs::existing_container(ctx, &path.container).await?;
                &reloaded
            };
            let previous = docs::block(ctx, path, id).await?;
            let batch = plan::write_block(container, key, previous.as_ref(), doc)?;
            Ok(Step::Commit(batch, previous.map(|p| p.doc.file)))
        })
        .await?;
    file.keep();
    ctx.files().discard(replaced.into_iter().collect());
    let mut reply = Reply::new(StatusCode::CREATED).encrypted();
    if let Some(m) = declared_md5 {
        reply = reply.header(HeaderName::from_static("content-md5"), &md5_header(&m));
    }
    Ok(reply.finish())
}

pub async fn put_block_list(
    ctx: &Ctx<'_>,
    path: &BlobPath,
    body: Body,
) -> Result<Response, BlobError> {
    let overwrite_allowed = may_write(ctx, &path.container)?;
    let conditions = Conditions::from_headers(ctx.headers);
    let content = headers::content_headers(ctx.headers, ContentSource::BlobHeadersOnly)?;
    let metadata = headers::metadata(ctx.headers)?;
    let raw = axum::body::to_bytes(body, MAX_BLOCK_LIST_BODY)
        .await
        .map_err(|e| BlobError::BodyRead(e.to_string()))?;
    let items = parse_block_list(&raw).map_err(|e| BlobError::InvalidXmlDocument(e.to_string()))?;
    if items.len() > MAX_BLOCKS {
        return Err(BlobError::InvalidBlockList(format!(
            "(more than {MAX_BLOCKS} blocks)"
        )));
    }
    let first = &(
        docs::existing_container(ctx, &path.container).await?,
        docs::blob(ctx, path).await?,
    );
    let key = &blob_key(ctx.account_name(), &path.container, &path.blob);
    let now = ctx.now();
    let etag = &new_etag();
    let (conditions, content, metadata, items) = (&conditions, &content, &metadata, &items);
    let (file, doc, leftovers) = ctx
        .transact(|attempt| async move {
            let read;
            let (container, existing) = if attempt.is_first() {
                (&first.0, first.1.as_ref())
            } else {
                read = (
                    docs::existing_container(ctx, &path.container).await?,
                    docs::blob(ctx, path).await?,
                );
                (&read.0, read.1.as_ref())
            };
            check_overwrite(ctx, &path.container, overwrite_allowed, existing.is_some())?;
            conditions.check_write(existing.map(|e| e.condition_version()))?;
            let blocks = docs::blocks(ctx, path).await?;
            let (parts, list) = plan::block_list(items, existing, &blocks)?;
            let composed = ctx.files().compose(&container.doc.dir, parts).await;
            let file = unless_container_gone(ctx, &path.container, composed).await?;
            let doc = BlobDoc {
                file: file.name.clone(),
                size: file.size,
                etag: etag.clone(),
                created: existing.map_or(now, |e| e.doc.created),
                last_modified: now,
                content: content.clone(),
                metadata: metadata.clone(),
                blocks: list,
            };
            let batch = plan::write_blob(container, key, existing, &blocks, &doc)?;
            let leftovers = plan::leftovers(existing, &blocks);
            Ok(Step::Commit(batch, (file, doc, leftovers)))
        })
        .await?;
    file.keep();
    ctx.files().discard(leftovers);
    Ok(Reply::new(StatusCode::CREATED)
        .etag(&doc.etag)
        .last_modified(doc.last_modified)
        .encrypted()
        .finish())
}

pub async fn get_block_list(
    ctx: &Ctx<'_>,
    path: &BlobPath,
    list: BlockListType,
) -> Result<Response, BlobError> {
    ctx.require(Permission::BlobRead, &path.container)?;
    let existing = docs::blob(ctx, path).await?;
    let uncommitted = match list {
        BlockListType::Committed => Vec::new(),
        _ => docs::blocks(ctx, path).await?,
    };
    if existing.is_none() && uncommitted.is_empty() {
        return Err(docs::not_found(ctx, path).await);
    }
    let mut w = Writer::new();
    w.open("BlockList");
    if list != BlockListType::Uncommitted {
        w.open("CommittedBlocks");
        for b in existing.iter().flat_map(|e| e.doc.blocks.iter()) {
            write_block(&mut w, &b.id, b.size);
        }
        w.close("CommittedBlocks");
    }
    if list != BlockListType::Committed {
        w.open("UncommittedBlocks");
        for b in &uncommitted {
            write_block(
                &mut w,
                crate::names::block_id_of(&b.key).unwrap_or_default(),
                b.doc.size,
            );
        }
        w.close("UncommittedBlocks");
    }
    w.close("BlockList");
    let mut reply = Reply::new(StatusCode::OK);
    if let Some(e) = &existing {
        reply = reply
            .etag(&e.doc.etag)
            .last_modified(e.doc.last_modified)
            .header(
                HeaderName::from_static("x-ms-blob-content-length"),
                &e.doc.size.to_string(),
            );
    }
    Ok(reply.xml(w.finish()).finish())
}

fn write_block(w: &mut Writer, id: &str, size: u64) {
    w.open("Block")
        .element("Name", id)
        .element("Size", &size.to_string())
        .close("Block");
}

/// Get Blob (`head` false) and Get Blob Properties (`head` true).
///
/// The lean path: the account comes from the cache, the caller's permission from the
/// in-memory index, the blob from one document read, the content from the file.
pub async fn get_blob(ctx: &Ctx<'_>, path: &BlobPath, head: bool) -> Result<Response, BlobError> {
    ctx.require(Permission::BlobRead, &path.container)?;
    let range = if head {
        None
    } else {
        headers::requested_range(ctx.headers)?
    };
    let conditions = Conditions::from_headers(ctx.headers);
    let range_md5 = !head && headers::flag(ctx.headers, "x-ms-range-get-content-md5");
    // A replacement may remove the file between reading the document and opening the
    // file: then read the document again. The same file missing twice is a real loss.
    let mut missing: Option<String> = None;
    for _ in 0..RETRIES {
        let stored = docs::existing_blob_to_read(ctx, path).await?;
        let condition = conditions.check_read(stored.condition_version())?;
        let doc = stored.doc;
        if condition == ReadCondition::NotModified {
            return Ok(Reply::new(StatusCode::NOT_MODIFIED)
                .etag(&doc.etag)
                .last_modified(doc.last_modified)
                .finish());
        }
        if head {
            let mut reply = blob_properties(Reply::new(StatusCode::OK), &doc)
                .header(header::CONTENT_LENGTH, &doc.size.to_string())
                .static_header("x-ms-access-tier", "Hot")
                .static_header("x-ms-access-tier-inferred", "true");
            if let Some(m) = &doc.content.content_md5 {
                reply = reply.header(HeaderName::from_static("content-md5"), m);
            }
            return Ok(reply.finish());
        }
        let (offset, len) = match range {
            Some(r) => r.resolve(doc.size)?,
            None => (0, doc.size),
        };
        if range.is_some() && range_md5 && len > MAX_RANGE_MD5 {
            return Err(BlobError::OutOfRangeInput);
        }
        let small = ctx.plane.small_content(&doc.file, doc.size).await;
        let read = if let Some(whole) = small {
            whole
                .and_then(|bytes| slice(bytes, offset, len))
                .map(Content::Whole)
        } else if len <= SMALL_READ || range_md5 {
            ctx.files()
                .read(&doc.file, offset, len)
                .await
                .map(Content::Whole)
        } else {
            ctx.files()
                .open(&doc.file, offset)
                .await
                .map(|f| Content::Stream(f, len))
        };
        let content = match read {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if missing.as_deref() == Some(doc.file.as_str()) {
                    return Err(e.into());
                }
                missing = Some(doc.file.clone());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut reply = blob_properties(
            Reply::new(if range.is_some() {
                StatusCode::PARTIAL_CONTENT
            } else {
                StatusCode::OK
            }),
            &doc,
        )
        .header(header::CONTENT_LENGTH, &len.to_string());
        let md5 = doc.content.content_md5.as_deref();
        if range.is_some() {
            reply = reply.header(
                header::CONTENT_RANGE,
                &format!(
                    "bytes {offset}-{}/{}",
                    (offset + len).saturating_sub(1),
                    doc.size
                ),
            );
            if let Some(m) = md5 {
                reply = reply.header(HeaderName::from_static("x-ms-blob-content-md5"), m);
            }
        } else if let Some(m) = md5 {
            reply = reply.header(HeaderName::from_static("content-md5"), m);
        }
        let body = match content {
            Content::Whole(bytes) => {
                if range.is_some() && range_md5 {
                    reply = reply.header(
                        HeaderName::from_static("content-md5"),
                        &md5_header(&Md5::digest(&bytes)),
                    );
                }
                Body::from(bytes)
            }
            Content::Stream(file, len) => {
                use tokio::io::AsyncReadExt;
                Body::from_stream(ReaderStream::with_capacity(file.take(len), READ_CHUNK))
            }
        };
        return Ok(reply.body(body).finish());
    }
    Err(contended())
}

/// `len` bytes at `offset` of a blob's whole content; a file shorter than its document
/// says is a loss, as when reading it from disk.
fn slice(whole: bytes::Bytes, offset: u64, len: u64) -> std::io::Result<bytes::Bytes> {
    let start = usize::try_from(offset).map_err(std::io::Error::other)?;
    let end = usize::try_from(offset + len).map_err(std::io::Error::other)?;
    if end > whole.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the blob's file is shorter than its document says",
        ));
    }
    Ok(whole.slice(start..end))
}

enum Content {
    Whole(bytes::Bytes),
    Stream(tokio::fs::File, u64),
}

/// Get Blob Metadata (GET or HEAD of `comp=metadata`).
pub async fn get_metadata(ctx: &Ctx<'_>, path: &BlobPath) -> Result<Response, BlobError> {
    ctx.require(Permission::BlobRead, &path.container)?;
    let stored = docs::existing_blob_to_read(ctx, path).await?;
    let conditions = Conditions::from_headers(ctx.headers);
    if conditions.check_read(stored.condition_version())? == ReadCondition::NotModified {
        return Ok(Reply::new(StatusCode::NOT_MODIFIED)
            .etag(&stored.doc.etag)
            .last_modified(stored.doc.last_modified)
            .finish());
    }
    Ok(Reply::new(StatusCode::OK)
        .etag(&stored.doc.etag)
        .last_modified(stored.doc.last_modified)
        .metadata(&stored.doc.metadata)
        .finish())
}

/// Rewrites a blob's document (metadata or properties) with a new entity tag.
async fn update(
    ctx: &Ctx<'_>,
    path: &BlobPath,
    change: impl Fn(&mut BlobDoc),
) -> Result<Response, BlobError> {
    ctx.require(Permission::BlobWrite, &path.container)?;
    let (conditions, change) = (&Conditions::from_headers(ctx.headers), &change);
    let doc = ctx
        .transact(|_| async move {
            let current = docs::existing_blob(ctx, path).await?;
            conditions.check_write(Some(current.condition_version()))?;
            let mut doc = current.doc.clone();
            change(&mut doc);
            doc.etag = new_etag();
            doc.last_modified = ctx.now();
            Ok(Step::Commit(plan::rewrite_blob(&current, &doc)?, doc))
        })
        .await?;
    Ok(Reply::new(StatusCode::OK)
        .etag(&doc.etag)
        .last_modified(doc.last_modified)
        .encrypted()
        .finish())
}

pub async fn set_metadata(ctx: &Ctx<'_>, path: &BlobPath) -> Result<Response, BlobError> {
    let metadata = headers::metadata(ctx.headers)?;
    update(ctx, path, |doc| doc.metadata = metadata.clone()).await
}

/// Set Blob Properties: the content headers given replace all of them, as in Azure.
pub async fn set_properties(ctx: &Ctx<'_>, path: &BlobPath) -> Result<Response, BlobError> {
    let content = headers::content_headers(ctx.headers, ContentSource::BlobHeadersOnly)?;
    update(ctx, path, |doc| doc.content = content.clone()).await
}

pub async fn delete_blob(ctx: &Ctx<'_>, path: &BlobPath) -> Result<Response, BlobError> {
    ctx.require(Permission::BlobDelete, &path.container)?;
    let conditions = &Conditions::from_headers(ctx.headers);
    let leftovers = ctx
        .transact(|_| async move {
            let current = docs::existing_blob(ctx, path).await?;
            conditions.check_write(Some(current.condition_version()))?;
            let blocks = docs::blocks(ctx, path).await?;
            let batch = plan::delete_blob(&current, &blocks);
            Ok(Step::Commit(
                batch,
                plan::leftovers(Some(&current), &blocks),
            ))
        })
        .await?;
    ctx.files().discard(leftovers);
    Ok(Reply::new(StatusCode::ACCEPTED)
        .static_header("x-ms-delete-type-permanent", "true")
        .finish())
}
