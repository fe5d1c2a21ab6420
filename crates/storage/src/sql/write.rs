//! A [`Batch`] applied inside a transaction the backend has opened, once for both backends.
//!
//! Upserts use `INSERT ... ON CONFLICT (key) DO UPDATE SET col = excluded.col`, which SQLite,
//! PostgreSQL and the PostgreSQL-compatible distributed databases all read the same way.
//!
//! The commit feed is appended last, in the same transaction: `UPDATE feed_head SET seq =
//! seq + 1 ... RETURNING seq` takes the row lock that every appending transaction needs and
//! holds it until commit, so numbers are given in commit order, without gaps (see
//! `migrations/*/0003_feed.sql`).

use lanyard_domain::{Principal, PrincipalKind, ResourceId, RoleAssignment};

use super::{to_json, to_nanos, Conn, Error, SqlRow, Statement};
use crate::{Batch, Change, Expect, FeedChange, ResourceRecord, StoreError};

/// How many feed entries are kept at least; older ones are pruned as new ones arrive. A
/// follower further behind than this reloads its views.
pub(crate) const FEED_RETENTION: u64 = 10_000;
/// Pruning runs with every this many appends (so the feed holds at most
/// `FEED_RETENTION + PRUNE_EVERY - 1` entries).
const PRUNE_EVERY: u64 = 100;

/// Checks every expectation, then applies every change in order, then appends the feed
/// entry if the batch holds changes servers follow. Returns the entry's sequence number.
/// The caller rolls back on any error.
pub(crate) async fn apply<C: Conn + ?Sized>(
    c: &mut C,
    batch: &Batch,
) -> Result<Option<u64>, Error> {
    for expect in &batch.expect {
        check(c, expect).await?;
    }
    for change in &batch.changes {
        apply_change(c, change).await?;
    }
    let followed = FeedChange::of_batch(batch);
    if followed.is_empty() {
        return Ok(None);
    }
    let seq = append_feed(c, &followed).await?;
    if seq % PRUNE_EVERY == 0 && seq > FEED_RETENTION {
        prune_feed_through(c, seq - FEED_RETENTION).await?;
    }
    Ok(Some(seq))
}

/// Takes the next sequence number (locking the head row until commit) and writes the entry.
async fn append_feed<C: Conn + ?Sized>(c: &mut C, changes: &[FeedChange]) -> Result<u64, Error> {
    let next = Statement::new("UPDATE feed_head SET seq = seq + 1 WHERE id = 1 RETURNING seq");
    let rows = c.fetch(&next).await?;
    let seq = match rows.first() {
        Some(row) => row.int(0)?,
        None => {
            return Err(Error::Store(StoreError::Corrupt(
                "the feed head row is missing".to_string(),
            )))
        }
    };
    let insert = Statement::new("INSERT INTO feed (seq, body) VALUES ($1, $2)")
        .bind(seq)
        .bind(to_json("feed entry", &changes)?);
    c.execute(&insert).await?;
    u64::try_from(seq)
        .map_err(|_| Error::Store(StoreError::Corrupt("the feed head is negative".to_string())))
}

/// Deletes the entries numbered at or below `through` and records that they are gone.
pub(crate) async fn prune_feed_through<C: Conn + ?Sized>(
    c: &mut C,
    through: u64,
) -> Result<(), Error> {
    let through = i64::try_from(through).map_err(|_| {
        Error::Store(StoreError::Database(
            "feed position out of range".to_string(),
        ))
    })?;
    let mark = Statement::new(
        "UPDATE feed_head SET pruned_through = $1 WHERE id = 1 AND pruned_through < $2",
    )
    .bind(through)
    .bind(through);
    if c.execute(&mark).await? == 0 {
        return Ok(());
    }
    let delete = Statement::new("DELETE FROM feed WHERE seq <= $1").bind(through);
    c.execute(&delete).await?;
    Ok(())
}

/// Prunes all but the newest `keep` entries.
pub(crate) async fn prune_feed<C: Conn + ?Sized>(c: &mut C, keep: u64) -> Result<(), Error> {
    let head = super::read::feed_head(c).await?;
    match head.seq.checked_sub(keep) {
        Some(through) if through > 0 => prune_feed_through(c, through).await,
        _ => Ok(()),
    }
}

fn conflict(message: String) -> Error {
    Error::Store(StoreError::Conflict(message))
}

/// The stored `updated_at` of a resource, if it exists.
async fn resource_version<C: Conn + ?Sized>(
    c: &mut C,
    id: &ResourceId,
) -> Result<Option<i64>, Error> {
    let statement =
        Statement::new("SELECT updated_at_ns FROM resources WHERE key = $1").bind(id.key());
    let rows = c.fetch(&statement).await?;
    match rows.first() {
        Some(row) => Ok(Some(row.int(0)?)),
        None => Ok(None),
    }
}

async fn check<C: Conn + ?Sized>(c: &mut C, expect: &Expect) -> Result<(), Error> {
    match expect {
        Expect::MetaIs { key, value } => {
            if super::read::meta(c, key).await? == *value {
                Ok(())
            } else {
                Err(conflict(format!("meta `{key}` was changed concurrently")))
            }
        }
        Expect::ResourceAbsent(id) => match resource_version(c, id).await? {
            None => Ok(()),
            Some(_) => Err(conflict(format!("resource `{id}` already exists"))),
        },
        Expect::ResourceExists(id) => match resource_version(c, id).await? {
            Some(_) => Ok(()),
            None => Err(conflict(format!("resource `{id}` does not exist"))),
        },
        Expect::ResourceUnchanged(id, updated_at) => match resource_version(c, id).await? {
            Some(stored) if stored == to_nanos(*updated_at)? => Ok(()),
            Some(_) => Err(conflict(format!(
                "resource `{id}` was changed concurrently"
            ))),
            None => Err(conflict(format!("resource `{id}` does not exist"))),
        },
        Expect::DocumentAbsent { collection, key } => {
            match super::read::document(c, collection, key).await? {
                None => Ok(()),
                Some(_) => Err(conflict(format!(
                    "`{collection}` document `{key}` already exists"
                ))),
            }
        }
        Expect::DocumentVersion {
            collection,
            key,
            version,
        } => match super::read::document(c, collection, key).await? {
            Some(doc) if doc.version == *version => Ok(()),
            Some(_) => Err(conflict(format!(
                "`{collection}` document `{key}` was changed concurrently"
            ))),
            None => Err(conflict(format!(
                "`{collection}` document `{key}` does not exist"
            ))),
        },
        Expect::PrincipalExists(object_id) => {
            let statement =
                Statement::new("SELECT 1 FROM principals WHERE object_id = $1").bind(*object_id);
            if c.fetch(&statement).await?.is_empty() {
                Err(conflict(format!("principal `{object_id}` does not exist")))
            } else {
                Ok(())
            }
        }
    }
}

async fn apply_change<C: Conn + ?Sized>(c: &mut C, change: &Change) -> Result<(), Error> {
    let statement = match change {
        Change::PutMeta { key, value } => Statement::new(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key.as_str())
        .bind(value.as_str()),
        Change::PutTenant(tenant) => Statement::new(
            "INSERT INTO tenants (id, body) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        )
        .bind(tenant.id)
        .bind(to_json("tenant", tenant)?),
        Change::PutSubscription(subscription) => Statement::new(
            "INSERT INTO subscriptions (id, tenant_id, body) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, body = excluded.body",
        )
        .bind(subscription.id)
        .bind(subscription.tenant_id)
        .bind(to_json("subscription", subscription)?),
        Change::PutResource(record) => put_resource(record)?,
        Change::DeleteResource(id) => {
            Statement::new("DELETE FROM resources WHERE key = $1").bind(id.key())
        }
        Change::DeleteResourcesWithin(scope) => {
            let mut statement = Statement::new("DELETE FROM resources");
            statement.and_within("key", scope, false);
            statement
        }
        Change::PutPrincipal(principal) => put_principal(c, principal).await?,
        Change::DeletePrincipal(object_id) => {
            Statement::new("DELETE FROM principals WHERE object_id = $1").bind(*object_id)
        }
        Change::PutCredential(credential) => Statement::new(
            "INSERT INTO credentials (id, principal_id, kind, body, created_at_ns) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET principal_id = excluded.principal_id, \
             kind = excluded.kind, body = excluded.body, created_at_ns = excluded.created_at_ns",
        )
        .bind(credential.id)
        .bind(credential.principal_id)
        .bind(credential.kind.as_str())
        .bind(to_json("credential", &credential.body)?)
        .bind(to_nanos(credential.created_at)?),
        Change::DeleteCredential(id) => {
            Statement::new("DELETE FROM credentials WHERE id = $1").bind(*id)
        }
        Change::DeleteCredentialsOf(principal) => {
            Statement::new("DELETE FROM credentials WHERE principal_id = $1").bind(*principal)
        }
        Change::PutRoleDefinition(definition) => Statement::new(
            "INSERT INTO role_definitions (id, body) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        )
        .bind(definition.id)
        .bind(to_json("role definition", definition)?),
        Change::DeleteRoleDefinition(id) => {
            Statement::new("DELETE FROM role_definitions WHERE id = $1").bind(*id)
        }
        Change::PutAssignment(assignment) => put_assignment(c, assignment).await?,
        Change::DeleteAssignment(id) => {
            Statement::new("DELETE FROM role_assignments WHERE id = $1").bind(*id)
        }
        Change::DeleteAssignmentsOfPrincipal(principal) => {
            Statement::new("DELETE FROM role_assignments WHERE principal_id = $1").bind(*principal)
        }
        Change::DeleteAssignmentsWithin(scope) => {
            let mut statement = Statement::new("DELETE FROM role_assignments");
            statement.and_within("scope_key", scope, true);
            statement
        }
        Change::SetRevocation {
            principal,
            valid_after,
        } => Statement::new(
            "INSERT INTO revocations (principal_id, valid_after) VALUES ($1, $2) \
             ON CONFLICT (principal_id) DO UPDATE SET valid_after = excluded.valid_after",
        )
        .bind(*principal)
        .bind(*valid_after),
        Change::AppendActivity(record) => Statement::new(
            "INSERT INTO activity (id, time_ns, scope_key, caller_id, body) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(record.id)
        .bind(to_nanos(record.time)?)
        .bind(record.scope.key())
        .bind(record.caller)
        .bind(to_json("activity record", record)?),
        Change::AppendSignIn(record) => Statement::new(
            "INSERT INTO sign_ins (id, time_ns, principal_id, body) VALUES ($1, $2, $3, $4)",
        )
        .bind(record.id)
        .bind(to_nanos(record.time)?)
        .bind(record.principal_id)
        .bind(to_json("sign-in record", record)?),
        Change::PutKey(key) => Statement::new(
            "INSERT INTO signing_keys (kid, body) VALUES ($1, $2) \
             ON CONFLICT (kid) DO UPDATE SET body = excluded.body",
        )
        .bind(key.kid.as_str())
        .bind(to_json("key", &key.body)?),
        Change::DeleteKey(kid) => {
            Statement::new("DELETE FROM signing_keys WHERE kid = $1").bind(kid.as_str())
        }
        Change::PutDocument(doc) => Statement::new(
            "INSERT INTO documents (collection, key, version, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (collection, key) DO UPDATE SET version = excluded.version, \
             body = excluded.body",
        )
        .bind(doc.collection.as_str())
        .bind(doc.key.as_str())
        .bind(doc.version)
        .bind(to_json("document", &doc.body)?),
        Change::DeleteDocument { collection, key } => {
            Statement::new("DELETE FROM documents WHERE collection = $1 AND key = $2")
                .bind(collection.as_str())
                .bind(key.as_str())
        }
        Change::DeleteDocumentsWithPrefix { collection, prefix } => {
            let mut statement = Statement::new("DELETE FROM documents");
            statement
                .and()
                .push("collection = ")
                .push_bind(collection.as_str());
            if !prefix.is_empty() {
                statement.and_prefix("key", prefix);
            }
            statement
        }
    };
    c.execute(&statement).await?;
    Ok(())
}

fn put_resource(record: &ResourceRecord) -> Result<Statement, Error> {
    let id = &record.id;
    let subscription_key = id
        .subscription_id()
        .map(|s| ResourceId::subscription(s).key().to_string());
    let group_key = match (id.subscription_id(), id.resource_group_name()) {
        (Some(s), Some(g)) => Some(ResourceId::resource_group(s, g).key().to_string()),
        _ => None,
    };
    let parent_key = id.parent().map(|p| p.key().to_string());
    Ok(Statement::new(
        "INSERT INTO resources (key, id, type_key, resource_type, subscription_key, group_key, \
         parent_key, body, created_at_ns, updated_at_ns) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (key) DO UPDATE SET id = excluded.id, type_key = excluded.type_key, \
         resource_type = excluded.resource_type, subscription_key = excluded.subscription_key, \
         group_key = excluded.group_key, parent_key = excluded.parent_key, body = excluded.body, \
         created_at_ns = excluded.created_at_ns, updated_at_ns = excluded.updated_at_ns",
    )
    .bind(id.key())
    .bind(id.as_str())
    .bind(record.resource_type.to_ascii_lowercase())
    .bind(record.resource_type.as_str())
    .bind(subscription_key)
    .bind(group_key)
    .bind(parent_key)
    .bind(to_json(&format!("resource `{id}`"), &record.body)?)
    .bind(to_nanos(record.created_at)?)
    .bind(to_nanos(record.updated_at)?))
}

/// The `kind` column: the `type` tag `PrincipalKind` serializes with.
pub(crate) fn kind_name(kind: &PrincipalKind) -> &'static str {
    match kind {
        PrincipalKind::User => "User",
        PrincipalKind::Group { .. } => "Group",
        PrincipalKind::ServicePrincipal { .. } => "ServicePrincipal",
    }
}

async fn put_principal<C: Conn + ?Sized>(
    c: &mut C,
    principal: &Principal,
) -> Result<Statement, Error> {
    let client_id = principal.client_id();
    if let Some(client_id) = client_id {
        let statement =
            Statement::new("SELECT 1 FROM principals WHERE client_id = $1 AND object_id <> $2")
                .bind(client_id)
                .bind(principal.object_id);
        if !c.fetch(&statement).await?.is_empty() {
            return Err(conflict(format!(
                "client id `{client_id}` belongs to another principal"
            )));
        }
    }
    Ok(Statement::new(
        "INSERT INTO principals (object_id, client_id, kind, body) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (object_id) DO UPDATE SET client_id = excluded.client_id, \
         kind = excluded.kind, body = excluded.body",
    )
    .bind(principal.object_id)
    .bind(client_id)
    .bind(kind_name(&principal.kind))
    .bind(to_json("principal", principal)?))
}

async fn put_assignment<C: Conn + ?Sized>(
    c: &mut C,
    assignment: &RoleAssignment,
) -> Result<Statement, Error> {
    // The unique index backs this up; checking first gives the caller a precise message.
    let duplicate = Statement::new(
        "SELECT 1 FROM role_assignments \
         WHERE scope_key = $1 AND role_definition_id = $2 AND principal_id = $3 AND id <> $4",
    )
    .bind(assignment.scope.key())
    .bind(assignment.role_definition_id)
    .bind(assignment.principal_id)
    .bind(assignment.id);
    if !c.fetch(&duplicate).await?.is_empty() {
        return Err(conflict("role assignment already exists".to_string()));
    }
    Ok(Statement::new(
        "INSERT INTO role_assignments (id, scope_key, scope, role_definition_id, principal_id, body) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (id) DO UPDATE SET scope_key = excluded.scope_key, scope = excluded.scope, \
         role_definition_id = excluded.role_definition_id, principal_id = excluded.principal_id, \
         body = excluded.body",
    )
    .bind(assignment.id)
    .bind(assignment.scope.key())
    .bind(assignment.scope.as_str())
    .bind(assignment.role_definition_id)
    .bind(assignment.principal_id)
    .bind(to_json("role assignment", assignment)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_never_print_their_values() {
        let statement = Statement::new("SELECT $1").bind("client-secret-value");
        assert!(!format!("{statement:?}").contains("client-secret-value"));
    }

    #[test]
    fn within_uses_a_key_range_not_like() {
        let scope = ResourceId::resource_group("s", "a_b");
        let mut statement = Statement::new("SELECT 1 FROM resources");
        statement.and_within("key", &scope, true);
        assert!(!statement.sql().contains("LIKE"));
        assert_eq!(statement.args().len(), 3);
        let mut root = Statement::new("SELECT 1 FROM resources");
        root.and_within("key", &ResourceId::root(), true);
        assert_eq!(root.sql(), "SELECT 1 FROM resources");
    }
}
