//! Every read of the [`Store`](crate::Store) trait, once for both backends.

use lanyard_domain::{Principal, ResourceId, RoleAssignment, RoleDefinition, Subscription, Tenant};
use std::collections::HashMap;

use uuid::Uuid;

use super::{from_json, from_nanos, parse_resource_id, parse_uuid, Conn, Error, SqlRow, Statement};
use crate::{
    ActivityRecord, AssignmentKey, AssignmentQuery, CredentialRecord, DocumentQuery,
    DocumentRecord, FeedEntry, FeedHead, KeyRecord, LogQuery, ResourceQuery, ResourceRecord,
    SignInRecord, StoreError,
};

const RESOURCE_COLUMNS: &str =
    "SELECT id, resource_type, body, created_at_ns, updated_at_ns FROM resources";

/// Runs `statement` and decodes each row's first column as JSON.
async fn json_rows<T, C>(c: &mut C, what: &str, statement: &Statement) -> Result<Vec<T>, Error>
where
    T: serde::de::DeserializeOwned,
    C: Conn + ?Sized,
{
    let rows = c.fetch(statement).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(from_json(what, &row.text(0)?)?);
    }
    Ok(out)
}

pub(crate) async fn meta<C: Conn + ?Sized>(c: &mut C, key: &str) -> Result<Option<String>, Error> {
    let statement = Statement::new("SELECT value FROM meta WHERE key = $1").bind(key);
    let rows = c.fetch(&statement).await?;
    match rows.first() {
        Some(row) => Ok(Some(row.text(0)?)),
        None => Ok(None),
    }
}

pub(crate) async fn tenants<C: Conn + ?Sized>(c: &mut C) -> Result<Vec<Tenant>, Error> {
    json_rows(
        c,
        "tenant",
        &Statement::new("SELECT body FROM tenants ORDER BY id"),
    )
    .await
}

pub(crate) async fn subscriptions<C: Conn + ?Sized>(c: &mut C) -> Result<Vec<Subscription>, Error> {
    let statement = Statement::new("SELECT body FROM subscriptions ORDER BY id");
    json_rows(c, "subscription", &statement).await
}

fn resource_from_row(row: &impl SqlRow) -> Result<ResourceRecord, Error> {
    let id = parse_resource_id("resource", &row.text(0)?)?;
    let what = format!("resource `{id}`");
    Ok(ResourceRecord {
        resource_type: row.text(1)?,
        body: from_json(&what, &row.text(2)?)?,
        created_at: from_nanos(&what, row.int(3)?)?,
        updated_at: from_nanos(&what, row.int(4)?)?,
        id,
    })
}

pub(crate) async fn resource<C: Conn + ?Sized>(
    c: &mut C,
    id: &ResourceId,
) -> Result<Option<ResourceRecord>, Error> {
    let mut statement = Statement::new(RESOURCE_COLUMNS);
    statement.push(" WHERE key = ").push_bind(id.key());
    let rows = c.fetch(&statement).await?;
    rows.first().map(resource_from_row).transpose()
}

pub(crate) async fn resources<C: Conn + ?Sized>(
    c: &mut C,
    query: &ResourceQuery,
) -> Result<Vec<ResourceRecord>, Error> {
    let mut statement = Statement::new(RESOURCE_COLUMNS);
    if let Some(scope) = &query.within {
        statement.and_within("key", scope, false);
    }
    if let Some(parent) = &query.parent {
        statement
            .and()
            .push("parent_key = ")
            .push_bind(parent.key());
    }
    if let Some(resource_type) = &query.resource_type {
        let type_key = resource_type.to_ascii_lowercase();
        statement.and().push("type_key = ").push_bind(type_key);
    }
    if let Some(after) = &query.after {
        let after = after.to_ascii_lowercase();
        statement.and().push("key > ").push_bind(after);
    }
    statement.push(" ORDER BY key").limit(query.limit);
    let rows = c.fetch(&statement).await?;
    rows.iter().map(resource_from_row).collect()
}

pub(crate) async fn principal<C: Conn + ?Sized>(
    c: &mut C,
    object_id: Uuid,
) -> Result<Option<Principal>, Error> {
    let statement =
        Statement::new("SELECT body FROM principals WHERE object_id = $1").bind(object_id);
    Ok(json_rows(c, "principal", &statement).await?.pop())
}

pub(crate) async fn principal_by_client_id<C: Conn + ?Sized>(
    c: &mut C,
    client_id: Uuid,
) -> Result<Option<Principal>, Error> {
    let statement =
        Statement::new("SELECT body FROM principals WHERE client_id = $1").bind(client_id);
    Ok(json_rows(c, "principal", &statement).await?.pop())
}

pub(crate) async fn principals<C: Conn + ?Sized>(c: &mut C) -> Result<Vec<Principal>, Error> {
    let statement = Statement::new("SELECT body FROM principals ORDER BY object_id");
    json_rows(c, "principal", &statement).await
}

pub(crate) async fn groups<C: Conn + ?Sized>(c: &mut C) -> Result<Vec<Principal>, Error> {
    let statement =
        Statement::new("SELECT body FROM principals WHERE kind = $1 ORDER BY object_id")
            .bind("Group");
    json_rows(c, "principal", &statement).await
}

pub(crate) async fn credentials_of<C: Conn + ?Sized>(
    c: &mut C,
    principal: Uuid,
) -> Result<Vec<CredentialRecord>, Error> {
    let statement = Statement::new(
        "SELECT id, kind, body, created_at_ns FROM credentials \
         WHERE principal_id = $1 ORDER BY created_at_ns, id",
    )
    .bind(principal);
    let rows = c.fetch(&statement).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let id = parse_uuid("credential", &row.text(0)?)?;
        let what = format!("credential `{id}`");
        out.push(CredentialRecord {
            id,
            principal_id: principal,
            kind: row.text(1)?,
            body: from_json(&what, &row.text(2)?)?,
            created_at: from_nanos(&what, row.int(3)?)?,
        });
    }
    Ok(out)
}

pub(crate) async fn role_definitions<C: Conn + ?Sized>(
    c: &mut C,
) -> Result<Vec<RoleDefinition>, Error> {
    let statement = Statement::new("SELECT body FROM role_definitions ORDER BY id");
    json_rows(c, "role definition", &statement).await
}

pub(crate) async fn assignment<C: Conn + ?Sized>(
    c: &mut C,
    id: Uuid,
) -> Result<Option<RoleAssignment>, Error> {
    let statement = Statement::new("SELECT body FROM role_assignments WHERE id = $1").bind(id);
    Ok(json_rows(c, "role assignment", &statement).await?.pop())
}

pub(crate) async fn assignments<C: Conn + ?Sized>(
    c: &mut C,
    query: &AssignmentQuery,
) -> Result<Vec<RoleAssignment>, Error> {
    let mut statement = Statement::new("SELECT body FROM role_assignments");
    if let Some(principal) = query.principal {
        statement.and().push("principal_id = ").push_bind(principal);
    }
    if let Some(scope) = &query.at_or_above {
        statement.and().push("scope_key IN (");
        for (i, ancestor) in scope.ancestors().enumerate() {
            if i > 0 {
                statement.push(", ");
            }
            statement.push_bind(ancestor.key());
        }
        statement.push(")");
    }
    if let Some(scope) = &query.at_or_below {
        statement.and_within("scope_key", scope, true);
    }
    if let Some(role) = query.role_definition {
        statement
            .and()
            .push("role_definition_id = ")
            .push_bind(role);
    }
    if let Some(after) = query.after {
        statement.and().push("id > ").push_bind(after);
    }
    statement.push(" ORDER BY id").limit(query.limit);
    json_rows(c, "role assignment", &statement).await
}

/// Distinct scopes parsed once per scan are kept up to this many (most assignments share a
/// few scopes; a scan over as many scopes as assignments must not hold them all).
const SCOPE_CACHE: usize = 4096;

pub(crate) async fn scan_assignment_keys<C: Conn + ?Sized>(
    c: &mut C,
    each: &mut (dyn for<'k> FnMut(&'k AssignmentKey) + Send),
) -> Result<u64, Error> {
    // No ORDER BY: the table is read in storage order (a sequential scan), not through the
    // id index, which would visit the rows in random order.
    let statement =
        Statement::new("SELECT id, scope, role_definition_id, principal_id FROM role_assignments");
    // Each scope is parsed once and lent to `each` from here: no copy per row.
    let mut scopes: HashMap<String, ResourceId> = HashMap::new();
    let mut key = AssignmentKey {
        id: Uuid::nil(),
        scope: ResourceId::root(),
        role_definition_id: Uuid::nil(),
        principal_id: Uuid::nil(),
    };
    c.fetch_each(&statement, &mut |row| {
        key.id = parse_uuid("role assignment", row.str(0)?)?;
        key.role_definition_id = parse_uuid("role assignment", row.str(2)?)?;
        key.principal_id = parse_uuid("role assignment", row.str(3)?)?;
        let text = row.str(1)?;
        if !scopes.contains_key(text) {
            let parsed = parse_resource_id(&format!("role assignment `{}`", key.id), text)?;
            if scopes.len() >= SCOPE_CACHE {
                scopes.clear();
            }
            scopes.insert(text.to_string(), parsed);
        }
        if let Some(scope) = scopes.get_mut(text) {
            std::mem::swap(&mut key.scope, scope);
            each(&key);
            std::mem::swap(&mut key.scope, scope);
        }
        Ok(())
    })
    .await
}

pub(crate) async fn revocations<C: Conn + ?Sized>(c: &mut C) -> Result<Vec<(Uuid, i64)>, Error> {
    let statement =
        Statement::new("SELECT principal_id, valid_after FROM revocations ORDER BY principal_id");
    let rows = c.fetch(&statement).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push((parse_uuid("revocation", &row.text(0)?)?, row.int(1)?));
    }
    Ok(out)
}

/// Adds the time window of `query` on `time_ns`; both ends inclusive.
fn and_window(statement: &mut Statement, query: &LogQuery) -> Result<(), Error> {
    if let Some(from) = query.from {
        statement
            .and()
            .push("time_ns >= ")
            .push_bind(super::to_nanos(from)?);
    }
    if let Some(to) = query.to {
        statement
            .and()
            .push("time_ns <= ")
            .push_bind(super::to_nanos(to)?);
    }
    Ok(())
}

pub(crate) async fn activity<C: Conn + ?Sized>(
    c: &mut C,
    query: &LogQuery,
) -> Result<Vec<ActivityRecord>, Error> {
    let mut statement = Statement::new("SELECT body FROM activity");
    and_window(&mut statement, query)?;
    if let Some(scope) = &query.within {
        statement.and_within("scope_key", scope, true);
    }
    if let Some(principal) = query.principal {
        statement.and().push("caller_id = ").push_bind(principal);
    }
    statement
        .push(" ORDER BY time_ns DESC, id DESC")
        .limit(query.limit);
    json_rows(c, "activity record", &statement).await
}

pub(crate) async fn sign_ins<C: Conn + ?Sized>(
    c: &mut C,
    query: &LogQuery,
) -> Result<Vec<SignInRecord>, Error> {
    let mut statement = Statement::new("SELECT body FROM sign_ins");
    and_window(&mut statement, query)?;
    if let Some(principal) = query.principal {
        statement.and().push("principal_id = ").push_bind(principal);
    }
    statement
        .push(" ORDER BY time_ns DESC, id DESC")
        .limit(query.limit);
    json_rows(c, "sign-in record", &statement).await
}

pub(crate) async fn keys<C: Conn + ?Sized>(c: &mut C) -> Result<Vec<KeyRecord>, Error> {
    let rows = c
        .fetch(&Statement::new(
            "SELECT kid, body FROM signing_keys ORDER BY kid",
        ))
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let kid = row.text(0)?;
        let body = from_json(&format!("key `{kid}`"), &row.text(1)?)?;
        out.push(KeyRecord { kid, body });
    }
    Ok(out)
}

fn document_from_row(row: &impl SqlRow) -> Result<DocumentRecord, Error> {
    let collection = row.text(0)?;
    let key = row.text(1)?;
    let body = from_json(&format!("document `{collection}`"), &row.text(3)?)?;
    Ok(DocumentRecord {
        version: row.int(2)?,
        collection,
        key,
        body,
    })
}

pub(crate) async fn document<C: Conn + ?Sized>(
    c: &mut C,
    collection: &str,
    key: &str,
) -> Result<Option<DocumentRecord>, Error> {
    let statement = Statement::new(
        "SELECT collection, key, version, body FROM documents WHERE collection = $1 AND key = $2",
    )
    .bind(collection)
    .bind(key);
    let rows = c.fetch(&statement).await?;
    rows.first().map(document_from_row).transpose()
}

pub(crate) async fn documents<C: Conn + ?Sized>(
    c: &mut C,
    query: &DocumentQuery,
) -> Result<Vec<DocumentRecord>, Error> {
    let mut statement = Statement::new("SELECT collection, key, version, body FROM documents");
    statement
        .and()
        .push("collection = ")
        .push_bind(query.collection.as_str());
    if let Some(prefix) = query.prefix.as_deref().filter(|p| !p.is_empty()) {
        statement.and_prefix("key", prefix);
    }
    if let Some(after) = &query.after {
        statement.and().push("key > ").push_bind(after.as_str());
    }
    statement.push(" ORDER BY key").limit(query.limit);
    let rows = c.fetch(&statement).await?;
    rows.iter().map(document_from_row).collect()
}

fn feed_position(what: &str, value: i64) -> Result<u64, Error> {
    u64::try_from(value)
        .map_err(|_| Error::Store(StoreError::Corrupt(format!("{what} is negative"))))
}

pub(crate) async fn feed_head<C: Conn + ?Sized>(c: &mut C) -> Result<FeedHead, Error> {
    let statement = Statement::new("SELECT seq, pruned_through FROM feed_head WHERE id = 1");
    let rows = c.fetch(&statement).await?;
    let row = rows.first().ok_or_else(|| {
        Error::Store(StoreError::Corrupt(
            "the feed head row is missing".to_string(),
        ))
    })?;
    Ok(FeedHead {
        seq: feed_position("the feed head", row.int(0)?)?,
        pruned_through: feed_position("the feed horizon", row.int(1)?)?,
    })
}

/// Entries numbered above `after`, oldest first, at most `limit`.
pub(crate) async fn feed<C: Conn + ?Sized>(
    c: &mut C,
    after: u64,
    limit: u32,
) -> Result<Vec<FeedEntry>, Error> {
    let after = i64::try_from(after).map_err(|_| {
        Error::Store(StoreError::Database(
            "feed position out of range".to_string(),
        ))
    })?;
    let mut statement =
        Statement::new("SELECT seq, body FROM feed WHERE seq > $1 ORDER BY seq").bind(after);
    statement.limit(Some(limit));
    let rows = c.fetch(&statement).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let seq = feed_position("a feed entry number", row.int(0)?)?;
        let changes = from_json(&format!("feed entry {seq}"), &row.text(1)?)?;
        out.push(FeedEntry { seq, changes });
    }
    Ok(out)
}
