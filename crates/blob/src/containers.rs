//! Container operations: create, get properties and metadata, set metadata, delete, and
//! the account's container listing.

use axum::http::StatusCode;
use axum::response::Response;
use lanyard_platform::Step;
use lanyard_storage::DocumentQuery;
use uuid::Uuid;

use crate::access::Permission;
use crate::account::blob_endpoint;
use crate::docs::{self, Stored};
use crate::error::BlobError;
use crate::headers::{self, http_date, Conditions};
use crate::listing::{decode_marker, encode_marker, write_metadata, Cursor};
use crate::model::{new_etag, ContainerDoc};
use crate::names::{account_prefix, container_key, CONTAINERS};
use crate::plan;
use crate::plane::{is_conflict, Ctx};
use crate::reply::{container_properties, Reply};
use crate::request::ListParams;
use crate::xml::Writer;

pub async fn create(ctx: &Ctx<'_>, name: &str) -> Result<Response, BlobError> {
    ctx.require(Permission::ContainerWrite, name)?;
    let metadata = headers::metadata(ctx.headers)?;
    if ctx
        .headers
        .get("x-ms-blob-public-access")
        .is_some_and(|v| !v.is_empty())
    {
        return Err(BlobError::PublicAccessNotPermitted);
    }
    let doc = ContainerDoc {
        dir: Uuid::new_v4().simple().to_string(),
        etag: new_etag(),
        last_modified: ctx.now(),
        metadata,
    };
    let key = container_key(ctx.account_name(), name);
    match ctx.commit(plan::create_container(&key, &doc)?).await {
        Err(e) if is_conflict(&e) => return Err(BlobError::ContainerAlreadyExists),
        other => other?,
    }
    Ok(Reply::new(StatusCode::CREATED)
        .etag(&doc.etag)
        .last_modified(doc.last_modified)
        .finish())
}

/// Get Container Properties and Get Container Metadata (GET or HEAD).
pub async fn properties(ctx: &Ctx<'_>, name: &str) -> Result<Response, BlobError> {
    ctx.require(Permission::ContainerRead, name)?;
    let container = docs::existing_container(ctx, name).await?;
    Ok(container_properties(Reply::new(StatusCode::OK), &container.doc).finish())
}

pub async fn set_metadata(ctx: &Ctx<'_>, name: &str) -> Result<Response, BlobError> {
    ctx.require(Permission::ContainerWrite, name)?;
    let metadata = headers::metadata(ctx.headers)?;
    let (metadata, conditions) = (&metadata, &Conditions::from_headers(ctx.headers));
    let doc = ctx
        .transact(|_| async move {
            let current = docs::existing_container(ctx, name).await?;
            conditions.check_write(Some(current.condition_version()))?;
            let doc = ContainerDoc {
                etag: new_etag(),
                last_modified: ctx.now(),
                metadata: metadata.clone(),
                ..current.doc.clone()
            };
            Ok(Step::Commit(plan::rewrite_container(&current, &doc)?, doc))
        })
        .await?;
    Ok(Reply::new(StatusCode::OK)
        .etag(&doc.etag)
        .last_modified(doc.last_modified)
        .finish())
}

/// Deletes the container's documents (its blobs and blocks with it) in one batch, then its
/// directory.
pub async fn delete(ctx: &Ctx<'_>, name: &str) -> Result<Response, BlobError> {
    ctx.require(Permission::ContainerDelete, name)?;
    let conditions = &Conditions::from_headers(ctx.headers);
    let dir = ctx
        .transact(|_| async move {
            let current = docs::existing_container(ctx, name).await?;
            conditions.check_write(Some(current.condition_version()))?;
            let batch = plan::delete_container(&current, ctx.account_name(), name);
            Ok(Step::Commit(batch, current.doc.dir))
        })
        .await?;
    ctx.files().discard_dir(&dir);
    Ok(Reply::new(StatusCode::ACCEPTED).finish())
}

/// Get Account Information: what kind of account this is.
pub fn account_info(_ctx: &Ctx<'_>) -> Result<Response, BlobError> {
    Ok(Reply::new(StatusCode::OK)
        .static_header("x-ms-sku-name", "Standard_LRS")
        .static_header("x-ms-account-kind", "StorageV2")
        .static_header("x-ms-is-hns-enabled", "false")
        .finish())
}

/// List Containers, in name order, paged by `marker`/`maxresults`.
pub async fn list(ctx: &Ctx<'_>, params: &ListParams) -> Result<Response, BlobError> {
    ctx.require_service(Permission::ContainerRead)?;
    let base = account_prefix(ctx.account_name());
    let after = match &params.marker {
        None => None,
        Some(m) => Some(match decode_marker(m)? {
            Cursor::After(name) | Cursor::Past(name) => format!("{base}{name}"),
        }),
    };
    let limit = params.max_results.saturating_add(1);
    let page = ctx
        .store()
        .documents(&DocumentQuery {
            collection: CONTAINERS.into(),
            prefix: Some(format!("{base}{}", params.prefix)),
            after,
            limit: Some(limit),
        })
        .await?;
    let more = page.len() > params.max_results as usize;
    let shown = &page[..page.len().min(params.max_results as usize)];

    let endpoint = blob_endpoint(&ctx.plane.state.endpoints().blob(ctx.account_name()));
    let mut w = Writer::new();
    w.open_with("EnumerationResults", &[("ServiceEndpoint", &endpoint)]);
    if !params.prefix.is_empty() {
        w.element("Prefix", &params.prefix);
    }
    if let Some(m) = &params.marker {
        w.element("Marker", m);
    }
    w.element("MaxResults", &params.max_results.to_string());
    w.open("Containers");
    let mut last = None;
    for record in shown {
        let stored: Stored<ContainerDoc> = Stored {
            key: record.key.clone(),
            version: record.version,
            doc: crate::model::decode(record)?,
        };
        let name = &record.key[base.len()..];
        w.open("Container").element("Name", name).open("Properties");
        w.element("Last-Modified", &http_date(stored.doc.last_modified))
            .element("Etag", &format!("\"{}\"", stored.doc.etag))
            .element("LeaseStatus", "unlocked")
            .element("LeaseState", "available")
            .element("DefaultEncryptionScope", "$account-encryption-key")
            .element("DenyEncryptionScopeOverride", "false")
            .element("HasImmutabilityPolicy", "false")
            .element("HasLegalHold", "false")
            .close("Properties");
        if params.metadata {
            write_metadata(&mut w, &stored.doc.metadata);
        }
        w.close("Container");
        last = Some(name);
    }
    w.close("Containers");
    match (more, last) {
        (true, Some(name)) => w.element(
            "NextMarker",
            &encode_marker(&Cursor::After(name.to_string())),
        ),
        _ => w.empty("NextMarker"),
    };
    w.close("EnumerationResults");
    Ok(Reply::new(StatusCode::OK).xml(w.finish()).finish())
}
