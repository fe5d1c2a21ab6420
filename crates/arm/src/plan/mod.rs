//! Planning: a request and the current state in, a [`Plan`] out: the [`Batch`] to commit
//! (with the expectations that make it safe to commit without locks), the response, and the
//! linked scopes the caller must also be allowed to act on. Pure: no store, no HTTP, no
//! clock or randomness except through [`Context`], so every transactional rule is unit-tested
//! here.
//!
//! Concurrency: every plan states what it read with [`Expect`]s, and when one fails the
//! handler loads and plans again. Deleting a group or a user-assigned identity takes two
//! commits: the first marks it `Deleting` (`properties.provisioningState`), the second
//! removes it with everything that depends on it, expecting the mark unchanged. Writes in a
//! group expect the group as read and refuse a group being deleted, and attaching an identity
//! expects the identity as read and refuses one being deleted; so the removal never misses a
//! principal created, or a reference made, while it was being planned, and concurrent writes
//! in one group do not conflict with each other.
//!
//! - [`groups`]: resource groups (create, update, delete with everything in them).
//! - [`resources`]: resources that hold identities (the `identity` block).
//! - [`identities`]: user-assigned identities and their federated credentials.
//! - [`removal`]: what deleting resources takes with it (principals, assignments, references).
//! - [`roles`]: custom role definitions.
//! - [`assignments`]: role assignments.

pub mod assignments;
pub mod groups;
pub mod identities;
pub mod removal;
pub mod resources;
pub mod roles;

use lanyard_domain::{Principal, PrincipalKind, ResourceId, ServicePrincipalSource};
use lanyard_storage::{ActivityRecord, Batch, Change, Expect, ResourceRecord};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::errors::ArmError;
use crate::shape::normalize_location;

/// What a plan may know about the request beyond its body.
pub struct Context<'a> {
    pub now: OffsetDateTime,
    pub tenant_id: Uuid,
    /// Object id of the caller.
    pub caller: Uuid,
    pub correlation_id: &'a str,
    /// Fresh ids (object ids, client ids, activity ids).
    pub new_id: &'a (dyn Fn() -> Uuid + Sync),
    /// The change that revokes every token of a principal issued until now (the principal
    /// stays; a deleted one is retired instead, see [`Context::retire_principal`]).
    pub revoke: &'a (dyn Fn(Uuid) -> Change + Sync),
}

/// What to commit and what to answer.
#[derive(Debug, Clone)]
pub struct Plan {
    pub batch: Batch,
    pub status: u16,
    pub body: Option<Value>,
    /// User-assigned identities newly attached: the caller needs
    /// `Microsoft.ManagedIdentity/userAssignedIdentities/assign/action` on each.
    pub linked: Vec<ResourceId>,
}

impl Plan {
    fn new(batch: Batch, status: u16, body: Option<Value>) -> Self {
        Self {
            batch,
            status,
            body,
            linked: Vec::new(),
        }
    }
}

impl Context<'_> {
    /// An activity-log entry in the same batch as the change it records.
    pub fn activity(
        &self,
        operation: &str,
        scope: &ResourceId,
        http_status: u16,
        body: Option<Value>,
    ) -> Change {
        Change::AppendActivity(ActivityRecord {
            id: (self.new_id)(),
            time: self.now,
            caller: Some(self.caller),
            operation: operation.to_string(),
            scope: scope.clone(),
            status: if http_status < 400 {
                "Succeeded"
            } else {
                "Failed"
            }
            .to_string(),
            http_status,
            correlation_id: self.correlation_id.to_string(),
            body,
        })
    }

    /// Ends a principal: gone from the directory, its role assignments and credentials gone,
    /// and every token it holds or is being issued refused for good.
    pub fn retire_principal(&self, batch: &mut Batch, principal: Uuid) {
        batch.push(Change::DeleteAssignmentsOfPrincipal(principal));
        batch.push(Change::DeleteCredentialsOf(principal));
        batch.push(Change::DeletePrincipal(principal));
        batch.push(lanyard_platform::tokens::retirement(principal));
    }

    /// Revokes the tokens user-assigned identity `principal` got on `host` until now: it is
    /// detached from the host, or the host is deleted. The identity keeps working elsewhere,
    /// and on `host` again if it is attached again.
    pub fn revoke_on_host(&self, batch: &mut Batch, principal: Uuid, host: &ResourceId) {
        batch.push(lanyard_platform::tokens::host_revocation(
            principal,
            host,
            self.now.unix_timestamp() + 1,
        ));
    }

    /// A new managed-identity service principal.
    pub fn new_principal(&self, display_name: &str, source: ServicePrincipalSource) -> Principal {
        Principal {
            object_id: (self.new_id)(),
            tenant_id: self.tenant_id,
            display_name: display_name.to_string(),
            kind: PrincipalKind::ServicePrincipal {
                client_id: (self.new_id)(),
                source,
            },
        }
    }

    /// Marks `record` as being deleted (`properties.provisioningState: Deleting`), expecting
    /// it as read.
    pub fn mark_deleting(&self, batch: &mut Batch, record: &ResourceRecord) {
        let mut marked = record.clone();
        if !marked.body["properties"].is_object() {
            marked.body["properties"] = Value::Object(Map::new());
        }
        marked.body["properties"]["provisioningState"] = Value::String(DELETING.to_string());
        marked.updated_at = self.later_than(record.updated_at);
        batch.expect.push(Expect::ResourceUnchanged(
            record.id.clone(),
            record.updated_at,
        ));
        batch.push(Change::PutResource(marked));
    }

    /// `now`, or just after `t` when the clock has not moved past it.
    pub fn later_than(&self, t: OffsetDateTime) -> OffsetDateTime {
        if self.now > t {
            self.now
        } else {
            t + time::Duration::nanoseconds(1)
        }
    }

    /// The record as rewritten now.
    pub fn record(
        &self,
        id: ResourceId,
        resource_type: String,
        body: Value,
        existing: Option<&ResourceRecord>,
    ) -> ResourceRecord {
        ResourceRecord {
            id,
            resource_type,
            body,
            created_at: existing.map_or(self.now, |e| e.created_at),
            updated_at: existing.map_or(self.now, |e| self.later_than(e.updated_at)),
        }
    }
}

/// The provisioning state of a resource being deleted.
pub const DELETING: &str = "Deleting";

/// Whether `record` is marked as being deleted.
pub fn is_deleting(record: &ResourceRecord) -> bool {
    record.body["properties"]["provisioningState"].as_str() == Some(DELETING)
}

/// Refuses writes in a group being deleted, and expects the group as read: a group deletion
/// marks the group first, so a write that read it before the mark fails and plans again.
fn expect_group(batch: &mut Batch, group: &ResourceRecord) -> Result<(), ArmError> {
    if is_deleting(group) {
        return Err(ArmError::ResourceGroupBeingDeleted(
            group.id.name().to_string(),
        ));
    }
    batch.expect.push(Expect::ResourceUnchanged(
        group.id.clone(),
        group.updated_at,
    ));
    Ok(())
}

/// Expects `existing` as read, or the id to be free.
fn expect_as_read(batch: &mut Batch, id: &ResourceId, existing: Option<&ResourceRecord>) {
    batch.expect.push(match existing {
        Some(e) => Expect::ResourceUnchanged(e.id.clone(), e.updated_at),
        None => Expect::ResourceAbsent(id.clone()),
    });
}

// ---- reading request bodies ----

/// The request body as a JSON object.
pub fn object(body: &Value) -> Result<&Map<String, Value>, ArmError> {
    body.as_object().ok_or_else(|| {
        ArmError::InvalidRequestContent("the request body must be a JSON object".into())
    })
}

/// `location`, normalised; `None` when absent or null.
pub fn location(body: &Value) -> Result<Option<String>, ArmError> {
    match body.get("location") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(normalize_location(s))),
        Some(_) => Err(ArmError::InvalidField {
            field: "location",
            reason: "it must be a non-empty string".into(),
        }),
    }
}

/// The maximum number of tags ARM allows on a resource.
pub const MAX_TAGS: usize = 50;

/// `tags` as an object of strings; `None` when absent, `{}` when null.
pub fn tags(body: &Value) -> Result<Option<Value>, ArmError> {
    match body.get("tags") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(Value::Object(Map::new()))),
        Some(Value::Object(map)) => {
            if map.len() > MAX_TAGS {
                return Err(ArmError::InvalidField {
                    field: "tags",
                    reason: format!("at most {MAX_TAGS} tags are allowed"),
                });
            }
            if let Some((k, _)) = map.iter().find(|(_, v)| !v.is_string()) {
                return Err(ArmError::InvalidField {
                    field: "tags",
                    reason: format!("the value of tag '{k}' must be a string"),
                });
            }
            Ok(Some(Value::Object(map.clone())))
        }
        Some(_) => Err(ArmError::InvalidField {
            field: "tags",
            reason: "it must be an object of strings".into(),
        }),
    }
}

/// `properties` as an object; `{}` when absent or null.
pub fn properties(body: &Value) -> Result<Map<String, Value>, ArmError> {
    match body.get("properties") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(_) => Err(ArmError::InvalidField {
            field: "properties",
            reason: "it must be an object".into(),
        }),
    }
}

/// Compares a requested location with the one a resource has.
fn same_location(existing: &Value, requested: &str) -> bool {
    existing
        .get("location")
        .and_then(Value::as_str)
        .is_none_or(|l| normalize_location(l) == requested)
}

#[cfg(test)]
pub(crate) mod testing {
    //! A deterministic [`Context`] for plan tests.

    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    pub struct Fixture {
        counter: AtomicU64,
        pub tenant: Uuid,
        pub caller: Uuid,
        pub now: OffsetDateTime,
    }

    impl Fixture {
        pub fn new() -> Self {
            Self {
                counter: AtomicU64::new(1),
                tenant: Uuid::from_u128(0xAAAA),
                caller: Uuid::from_u128(0xC0FFEE),
                now: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            }
        }

        pub fn next(&self) -> Uuid {
            Uuid::from_u128(u128::from(self.counter.fetch_add(1, Ordering::SeqCst)) << 64)
        }
    }

    pub fn revoke(principal: Uuid) -> Change {
        Change::SetRevocation {
            principal,
            valid_after: 1_700_000_001,
        }
    }

    /// The change that retires a deleted principal's tokens.
    pub fn retired(principal: Uuid) -> Change {
        lanyard_platform::tokens::retirement(principal)
    }

    /// The change that revokes `principal`'s tokens on `host` as of the fixture's clock.
    pub fn revoked_on(principal: Uuid, host: &ResourceId) -> Change {
        lanyard_platform::tokens::host_revocation(principal, host, 1_700_000_001)
    }

    /// Runs `f` with a context over `fx`.
    pub fn with_ctx<T>(fx: &Fixture, f: impl FnOnce(&Context<'_>) -> T) -> T {
        let next = || fx.next();
        let ctx = Context {
            now: fx.now,
            tenant_id: fx.tenant,
            caller: fx.caller,
            correlation_id: "corr-1",
            new_id: &next,
            revoke: &revoke,
        };
        f(&ctx)
    }

    pub fn record(id: &str, body: Value) -> ResourceRecord {
        let id = ResourceId::parse(id).unwrap();
        let t = OffsetDateTime::from_unix_timestamp(1_600_000_000).unwrap();
        ResourceRecord {
            resource_type: id.resource_type(),
            id,
            body,
            created_at: t,
            updated_at: t,
        }
    }

    pub fn activities(batch: &Batch) -> Vec<(String, String, u16)> {
        batch
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::AppendActivity(a) => {
                    Some((a.operation.clone(), a.scope.to_string(), a.http_status))
                }
                _ => None,
            })
            .collect()
    }
}
