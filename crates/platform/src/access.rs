//! The authorization runtime: the engine's index, loaded from the store at start and kept in
//! step with the commit feed (every server's commits, in commit order; see [`crate::state`]).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use lanyard_authz::{AccessIndex, AccessRequest, Decision};
use lanyard_domain::{builtin, PrincipalKind, PrincipalType, ResourceId, RoleAssignment};
use lanyard_storage::{AssignmentKey, FeedChange, Store, StoreError};
use time::OffsetDateTime;
use uuid::Uuid;

/// The live authorization index.
pub struct AccessRuntime {
    index: RwLock<AccessIndex>,
    /// The feed position read before loading: the index reflects at least it.
    loaded_at: u64,
}

impl AccessRuntime {
    /// Builds the index from built-in roles and everything the store holds.
    pub async fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let loaded_at = store.feed_head().await?.seq;
        Ok(Self {
            index: RwLock::new(build_index(store).await?),
            loaded_at,
        })
    }

    /// The feed position this index was loaded at.
    pub(crate) fn loaded_at(&self) -> u64 {
        self.loaded_at
    }

    /// Rebuilds the index from the store (after missing part of the feed).
    pub async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        let fresh = build_index(store).await?;
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Decides `request`, with the explanation.
    pub fn check(&self, request: &AccessRequest<'_>) -> Decision {
        self.read().check(request)
    }

    /// Runs `f` with read access to the index (listing assignments, explaining).
    pub fn with_index<T>(&self, f: impl FnOnce(&AccessIndex) -> T) -> T {
        f(&self.read())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, AccessIndex> {
        // A poisoned lock only means a panic elsewhere; the index is updated by whole steps.
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the index in step with `changes`, one feed entry's, applied in feed order.
    pub async fn apply(&self, store: &dyn Store, changes: &[FeedChange]) -> Result<(), StoreError> {
        let needs_reload = changes
            .iter()
            .any(|c| matches!(c, FeedChange::DeleteAssignmentsWithin(_)));
        if needs_reload {
            // Rare (a resource group or subscription going away): rebuild from the store,
            // which is at this entry or later; later entries replay idempotently.
            return self.reload(store).await;
        }
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for change in changes {
            match change {
                FeedChange::PutAssignment(a) => {
                    index.remove_assignment(a.id);
                    index.add_assignment(a);
                }
                FeedChange::DeleteAssignment(id) => {
                    index.remove_assignment(*id);
                }
                FeedChange::DeleteAssignmentsOfPrincipal(p) => {
                    index.remove_assignments_of_principal(*p);
                }
                FeedChange::PutRoleDefinition(role) => index.upsert_role(role),
                FeedChange::DeleteRoleDefinition(id) => {
                    index.remove_role(*id);
                }
                FeedChange::PutPrincipal {
                    object_id,
                    members: Some(members),
                } => {
                    index.set_group_members(*object_id, members);
                }
                FeedChange::DeletePrincipal(id) => {
                    index.remove_assignments_of_principal(*id);
                    index.set_group_members(*id, &[]);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Builds the index from the store: built-in and custom roles, group memberships (groups
/// only, not every principal), and every assignment's key fields streamed in one scan
/// (no JSON bodies decoded). Logs how long each part took.
async fn build_index(store: &dyn Store) -> Result<AccessIndex, StoreError> {
    let started = Instant::now();
    let mut index = AccessIndex::with_roles(&builtin::built_in_roles());
    for role in store.role_definitions().await? {
        index.upsert_role(&role);
    }
    let roles_done = started.elapsed();
    let mut groups = 0usize;
    for principal in store.groups().await? {
        if let PrincipalKind::Group { members } = &principal.kind {
            index.set_group_members(principal.object_id, members);
            groups += 1;
        }
    }
    let groups_done = started.elapsed();
    // The index reads only the id, scope, role and principal of an assignment; the rest of
    // this carrier is never looked at and is not the stored assignment.
    let mut carrier = RoleAssignment {
        id: Uuid::nil(),
        scope: ResourceId::root(),
        role_definition_id: Uuid::nil(),
        principal_id: Uuid::nil(),
        principal_type: PrincipalType::ServicePrincipal,
        description: None,
        condition: None,
        condition_version: None,
        created_on: OffsetDateTime::UNIX_EPOCH,
        updated_on: OffsetDateTime::UNIX_EPOCH,
        created_by: None,
        updated_by: None,
    };
    // Scopes are few next to assignments: each is copied once into `scopes` and moved
    // into the carrier for the call, then back.
    let mut scopes: HashMap<String, ResourceId> = HashMap::new();
    let scanned = store
        .scan_assignment_keys(&mut |key: &AssignmentKey| {
            carrier.id = key.id;
            carrier.role_definition_id = key.role_definition_id;
            carrier.principal_id = key.principal_id;
            if !scopes.contains_key(key.scope.as_str()) {
                if scopes.len() >= SCOPE_CACHE {
                    scopes.clear();
                }
                scopes.insert(key.scope.as_str().to_string(), key.scope.clone());
            }
            if let Some(scope) = scopes.get_mut(key.scope.as_str()) {
                std::mem::swap(&mut carrier.scope, scope);
                index.add_assignment(&carrier);
                std::mem::swap(&mut carrier.scope, scope);
            }
        })
        .await?;
    let total = started.elapsed();
    tracing::info!(
        assignments = scanned,
        groups,
        roles_ms = millis(roles_done),
        groups_ms = millis(groups_done - roles_done),
        assignments_ms = millis(total - groups_done),
        total_ms = millis(total),
        "authorization index loaded"
    );
    Ok(index)
}

/// Distinct scopes kept while loading (a load over as many scopes as assignments must not
/// hold a second copy of them all).
const SCOPE_CACHE: usize = 4096;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
