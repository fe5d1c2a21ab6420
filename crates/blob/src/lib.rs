//! Blob storage: the storage account resource's rules, and the blob data plane on
//! `{account}.blob.{domain}`, which accepts only identity (bearer) tokens.
//!
//! Layout:
//! - [`account`]: storage accounts as resources, for the control plane (pure rules: names,
//!   body, name registry, what a deletion takes with it), and the sweep after a deletion.
//! - [`names`]: container and blob names and the document keys they map to (pure).
//! - [`model`]: the documents this plane stores: containers, blobs, uncommitted blocks (pure).
//! - [`request`]: which operation a request is, from method, path and query (pure).
//! - [`headers`]: conditional headers, ranges, metadata, content headers, dates (pure).
//! - [`xml`]: the XML this plane writes, and the block-list parser (pure).
//! - [`error`]: [`BlobError`], the service's error codes; rendered by the platform's
//!   `ApiError` in the blob dialect.
//! - [`files`]: content on disk: spooling bodies, composing block lists, reading ranges,
//!   removing what no document names.
//! - [`access`]: bearer authentication, the challenge, RBAC per operation.
//! - [`plane`]: the plane's state, its router and the one entry point of every request; the
//!   accounts and small committed content it keeps in memory
//!   ([`lanyard_platform::bounded`]), and its shared document reads
//!   ([`lanyard_platform::coalesce`]).
//! - [`docs`]: reading documents and the expectations that guard writing them.
//! - [`plan`]: what each write commits, from what it read (pure); the operations run it
//!   through the platform's write path ([`lanyard_platform::transact()`]).
//! - [`reply`]: response building and the property headers.
//! - [`containers`], [`listing`], [`blobs`]: the operations.
//!
//! Start-up: [`recover`] removes what a crash left on disk before the first request.

pub mod access;
pub mod account;
pub mod blobs;
pub mod containers;
pub mod docs;
pub mod error;
pub mod files;
pub mod headers;
pub mod listing;
pub mod model;
pub mod names;
pub mod plan;
pub mod plane;
pub mod reply;
pub mod request;
pub mod xml;

use std::collections::HashSet;

use lanyard_platform::AppState;
use lanyard_storage::{DocumentQuery, Store, StoreError};
use serde::Deserialize;

pub use error::BlobError;
pub use files::SweepReport;
pub use plane::router;

use crate::account::{container_dirs, PAGE};
use crate::model::{BlobDoc, BlockDoc};
use crate::names::{BLOBS, BLOCKS};

/// Why start-up recovery failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("cannot read blob metadata: {0}")]
    Store(#[from] StoreError),
    #[error("cannot clean the blob directory: {0}")]
    Io(#[from] std::io::Error),
}

/// Every file a blob or block document names.
async fn referenced_files(store: &dyn Store) -> Result<HashSet<String>, StoreError> {
    let mut files = HashSet::new();
    for collection in [BLOBS, BLOCKS] {
        let mut after = None;
        loop {
            let page = store
                .documents(&DocumentQuery {
                    collection: collection.into(),
                    prefix: None,
                    after: after.clone(),
                    limit: Some(PAGE),
                })
                .await?;
            for doc in &page {
                let file = if collection == BLOBS {
                    BlobDoc::deserialize(&doc.body).map(|d| d.file)
                } else {
                    BlockDoc::deserialize(&doc.body).map(|d| d.file)
                };
                match file {
                    Ok(f) => {
                        files.insert(f);
                    }
                    Err(e) => {
                        return Err(StoreError::Corrupt(format!(
                            "`{collection}` document `{}`: {e}",
                            doc.key
                        )))
                    }
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE as usize => after = Some(last.key.clone()),
                _ => break,
            }
        }
    }
    Ok(files)
}

/// Removes every file and directory under `{data_dir}/blobs` that no document names:
/// temporary files of interrupted writes, files written but never committed, files whose
/// removal a crash prevented, and the directories of deleted containers. Call before the
/// first request is served.
pub async fn recover(state: &AppState) -> Result<SweepReport, RecoverError> {
    let store = state.store.as_ref();
    let dirs = container_dirs(store).await?;
    let files = referenced_files(store).await?;
    let store_files = plane::file_store(state);
    let report = tokio::task::spawn_blocking(move || store_files.sweep(&dirs, Some(&files)))
        .await
        .map_err(std::io::Error::other)??;
    if report != SweepReport::default() {
        tracing::info!(
            directories = report.dirs,
            files = report.files,
            "removed blob files no record names"
        );
    }
    Ok(report)
}
