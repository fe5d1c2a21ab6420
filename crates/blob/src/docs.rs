//! Reading this plane's documents, and the expectations and changes that write them.

use lanyard_storage::{Batch, Change, DocumentQuery, DocumentRecord, Expect};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::account::PAGE;
use crate::error::BlobError;
use crate::headers::Version;
use crate::model::{decode, encode, BlobDoc, BlockDoc, ContainerDoc};
use crate::names::{blob_key, block_key, blocks_prefix, container_key, BLOBS, BLOCKS, CONTAINERS};
use crate::plane::Ctx;
use crate::request::BlobPath;

/// A document as read: its body and the version a write must expect.
#[derive(Debug, Clone)]
pub struct Stored<T> {
    pub key: String,
    pub version: i64,
    pub doc: T,
}

impl<T: DeserializeOwned> Stored<T> {
    fn from_record(record: &DocumentRecord) -> Result<Stored<T>, BlobError> {
        Ok(Stored {
            key: record.key.clone(),
            version: record.version,
            doc: decode(record)?,
        })
    }
}

impl Stored<BlobDoc> {
    pub fn condition_version(&self) -> Version<'_> {
        Version {
            etag: &self.doc.etag,
            last_modified: self.doc.last_modified,
        }
    }
}

impl Stored<ContainerDoc> {
    pub fn condition_version(&self) -> Version<'_> {
        Version {
            etag: &self.doc.etag,
            last_modified: self.doc.last_modified,
        }
    }
}

async fn load<T: DeserializeOwned>(
    ctx: &Ctx<'_>,
    collection: &str,
    key: &str,
) -> Result<Option<Stored<T>>, BlobError> {
    ctx.store()
        .document(collection, key)
        .await?
        .as_ref()
        .map(Stored::from_record)
        .transpose()
}

pub async fn container(
    ctx: &Ctx<'_>,
    name: &str,
) -> Result<Option<Stored<ContainerDoc>>, BlobError> {
    load(ctx, CONTAINERS, &container_key(ctx.account_name(), name)).await
}

/// The container, or 404 `ContainerNotFound`.
pub async fn existing_container(
    ctx: &Ctx<'_>,
    name: &str,
) -> Result<Stored<ContainerDoc>, BlobError> {
    container(ctx, name)
        .await?
        .ok_or(BlobError::ContainerNotFound)
}

pub async fn blob(ctx: &Ctx<'_>, path: &BlobPath) -> Result<Option<Stored<BlobDoc>>, BlobError> {
    load(
        ctx,
        BLOBS,
        &blob_key(ctx.account_name(), &path.container, &path.blob),
    )
    .await
}

/// The blob, or 404: `ContainerNotFound` when the container is missing too, else
/// `BlobNotFound`.
pub async fn existing_blob(ctx: &Ctx<'_>, path: &BlobPath) -> Result<Stored<BlobDoc>, BlobError> {
    match blob(ctx, path).await? {
        Some(b) => Ok(b),
        None => Err(not_found(ctx, path).await),
    }
}

/// [`existing_blob`] for reads that change nothing (get, properties, metadata): the document
/// comes from a read that began after this call, shared with concurrent requests for the
/// same blob (see [`crate::coalesce`]).
pub async fn existing_blob_to_read(
    ctx: &Ctx<'_>,
    path: &BlobPath,
) -> Result<Stored<BlobDoc>, BlobError> {
    let key = blob_key(ctx.account_name(), &path.container, &path.blob);
    let read = ctx
        .plane
        .reads
        .document(&ctx.plane.state.store, BLOBS, &key)
        .await?;
    match read.as_ref().map(Stored::from_record).transpose()? {
        Some(b) => Ok(b),
        None => Err(not_found(ctx, path).await),
    }
}

/// The right 404 for a blob that is not there.
pub async fn not_found(ctx: &Ctx<'_>, path: &BlobPath) -> BlobError {
    match container(ctx, &path.container).await {
        Ok(Some(_)) => BlobError::BlobNotFound,
        Ok(None) => BlobError::ContainerNotFound,
        Err(e) => e,
    }
}

pub async fn block(
    ctx: &Ctx<'_>,
    path: &BlobPath,
    id: &str,
) -> Result<Option<Stored<BlockDoc>>, BlobError> {
    load(
        ctx,
        BLOCKS,
        &block_key(ctx.account_name(), &path.container, &path.blob, id),
    )
    .await
}

/// Every uncommitted block of a blob, in key order.
pub async fn blocks(ctx: &Ctx<'_>, path: &BlobPath) -> Result<Vec<Stored<BlockDoc>>, BlobError> {
    let prefix = blocks_prefix(ctx.account_name(), &path.container, &path.blob);
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = ctx
            .store()
            .documents(&DocumentQuery {
                collection: BLOCKS.into(),
                prefix: Some(prefix.clone()),
                after: after.clone(),
                limit: Some(PAGE),
            })
            .await?;
        for record in &page {
            out.push(Stored::from_record(record)?);
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => after = Some(last.key.clone()),
            _ => return Ok(out),
        }
    }
}

/// Expects `stored` unchanged since it was read, or (for `None`) `key` to be free.
pub fn expect_as_read<T>(
    batch: &mut Batch,
    collection: &str,
    key: &str,
    stored: Option<&Stored<T>>,
) {
    batch.expect.push(match stored {
        Some(s) => Expect::DocumentVersion {
            collection: collection.into(),
            key: s.key.clone(),
            version: s.version,
        },
        None => Expect::DocumentAbsent {
            collection: collection.into(),
            key: key.into(),
        },
    });
}

/// Writes `doc` at `key`, one version after `previous`.
pub fn put<T: Serialize>(
    batch: &mut Batch,
    collection: &str,
    key: &str,
    previous: Option<i64>,
    doc: &T,
) -> Result<(), BlobError> {
    batch.push(Change::PutDocument(DocumentRecord {
        collection: collection.into(),
        key: key.into(),
        version: previous.map_or(1, |v| v + 1),
        body: encode(doc)?,
    }));
    Ok(())
}

/// Deletes the uncommitted `blocks` as read (a block replaced meanwhile fails the batch).
pub fn delete_blocks(batch: &mut Batch, blocks: &[Stored<BlockDoc>]) {
    for b in blocks {
        batch.expect.push(Expect::DocumentVersion {
            collection: BLOCKS.into(),
            key: b.key.clone(),
            version: b.version,
        });
        batch.push(Change::DeleteDocument {
            collection: BLOCKS.into(),
            key: b.key.clone(),
        });
    }
}
