//! What each write commits, from what it read (pure): the batch, with an expectation on
//! every document the decision rests on, so a concurrent change makes the commit fail and
//! the operation plan again ([`crate::plane::Ctx::transact`]).

use std::collections::HashMap;

use lanyard_storage::{Batch, Change};

use crate::docs::{delete_blocks, expect_as_read, put, Stored};
use crate::error::BlobError;
use crate::files::Part;
use crate::model::{BlobDoc, BlockDoc, CommittedBlock, ContainerDoc};
use crate::names::{block_id_of, container_prefix, BLOBS, BLOCKS, CONTAINERS};
use crate::xml::{BlockListItem, BlockSource};

/// A new container `doc` at `key`, which must not exist.
pub fn create_container(key: &str, doc: &ContainerDoc) -> Result<Batch, BlobError> {
    let mut batch = Batch::new();
    expect_as_read::<ContainerDoc>(&mut batch, CONTAINERS, key, None);
    put(&mut batch, CONTAINERS, key, None, doc)?;
    Ok(batch)
}

/// The container `current` replaced by `doc`.
pub fn rewrite_container(
    current: &Stored<ContainerDoc>,
    doc: &ContainerDoc,
) -> Result<Batch, BlobError> {
    let mut batch = Batch::new();
    expect_as_read(&mut batch, CONTAINERS, &current.key, Some(current));
    put(
        &mut batch,
        CONTAINERS,
        &current.key,
        Some(current.version),
        doc,
    )?;
    Ok(batch)
}

/// The container `current` (named `name` in `account`) removed with its blobs and blocks.
pub fn delete_container(current: &Stored<ContainerDoc>, account: &str, name: &str) -> Batch {
    let mut batch = Batch::new();
    expect_as_read(&mut batch, CONTAINERS, &current.key, Some(current));
    batch.push(Change::DeleteDocument {
        collection: CONTAINERS.into(),
        key: current.key.clone(),
    });
    for collection in [BLOBS, BLOCKS] {
        batch.push(Change::DeleteDocumentsWithPrefix {
            collection: collection.into(),
            prefix: container_prefix(account, name),
        });
    }
    batch
}

/// `doc` as the blob at `key` in `container` (replacing `existing`), its uncommitted
/// `blocks` consumed.
pub fn write_blob(
    container: &Stored<ContainerDoc>,
    key: &str,
    existing: Option<&Stored<BlobDoc>>,
    blocks: &[Stored<BlockDoc>],
    doc: &BlobDoc,
) -> Result<Batch, BlobError> {
    let mut batch = Batch::new();
    expect_as_read(&mut batch, CONTAINERS, &container.key, Some(container));
    expect_as_read(&mut batch, BLOBS, key, existing);
    put(&mut batch, BLOBS, key, existing.map(|e| e.version), doc)?;
    delete_blocks(&mut batch, blocks);
    Ok(batch)
}

/// The uncommitted block `doc` at `key` in `container`, replacing `previous`.
pub fn write_block(
    container: &Stored<ContainerDoc>,
    key: &str,
    previous: Option<&Stored<BlockDoc>>,
    doc: &BlockDoc,
) -> Result<Batch, BlobError> {
    let mut batch = Batch::new();
    expect_as_read(&mut batch, CONTAINERS, &container.key, Some(container));
    expect_as_read(&mut batch, BLOCKS, key, previous);
    put(&mut batch, BLOCKS, key, previous.map(|p| p.version), doc)?;
    Ok(batch)
}

/// The blob `current` replaced by `doc` (its metadata or properties changed).
pub fn rewrite_blob(current: &Stored<BlobDoc>, doc: &BlobDoc) -> Result<Batch, BlobError> {
    let mut batch = Batch::new();
    expect_as_read(&mut batch, BLOBS, &current.key, Some(current));
    put(&mut batch, BLOBS, &current.key, Some(current.version), doc)?;
    Ok(batch)
}

/// The blob `current` removed with its uncommitted `blocks`.
pub fn delete_blob(current: &Stored<BlobDoc>, blocks: &[Stored<BlockDoc>]) -> Batch {
    let mut batch = Batch::new();
    expect_as_read(&mut batch, BLOBS, &current.key, Some(current));
    batch.push(Change::DeleteDocument {
        collection: BLOBS.into(),
        key: current.key.clone(),
    });
    delete_blocks(&mut batch, blocks);
    batch
}

/// Put Block List's content: for each listed block, where its bytes are (an uncommitted
/// block's file, or a range of the blob's current file) and the block as the new blob
/// lists it. 400 `InvalidBlockList` names the first block found nowhere.
pub fn block_list(
    items: &[BlockListItem],
    existing: Option<&Stored<BlobDoc>>,
    blocks: &[Stored<BlockDoc>],
) -> Result<(Vec<Part>, Vec<CommittedBlock>), BlobError> {
    let uncommitted: HashMap<&str, &Stored<BlockDoc>> = blocks
        .iter()
        .filter_map(|b| block_id_of(&b.key).map(|id| (id, b)))
        .collect();
    let committed = existing.map(|e| e.doc.block_ranges()).unwrap_or_default();
    let mut parts = Vec::with_capacity(items.len());
    let mut list = Vec::with_capacity(items.len());
    for item in items {
        let from_uncommitted = || {
            uncommitted.get(item.id.as_str()).map(|b| Part {
                file: b.doc.file.clone(),
                offset: 0,
                len: b.doc.size,
            })
        };
        let from_committed = || {
            let e = existing?;
            committed.get(item.id.as_str()).map(|&(offset, len)| Part {
                file: e.doc.file.clone(),
                offset,
                len,
            })
        };
        let part = match item.source {
            BlockSource::Uncommitted => from_uncommitted(),
            BlockSource::Committed => from_committed(),
            BlockSource::Latest => from_uncommitted().or_else(from_committed),
        }
        .ok_or_else(|| BlobError::InvalidBlockList(item.id.clone()))?;
        list.push(CommittedBlock {
            id: item.id.clone(),
            size: part.len,
        });
        parts.push(part);
    }
    Ok((parts, list))
}

/// The files a committed blob write stops naming: the replaced content and the consumed
/// blocks'.
pub fn leftovers(existing: Option<&Stored<BlobDoc>>, blocks: &[Stored<BlockDoc>]) -> Vec<String> {
    existing
        .map(|e| e.doc.file.clone())
        .into_iter()
        .chain(blocks.iter().map(|b| b.doc.file.clone()))
        .collect()
}
