//! The authorization runtime: the engine's index, loaded from the store at start and kept in
//! step with the commit feed (every server's commits, in commit order; see [`crate::state`]).

use std::sync::RwLock;

use lanyard_authz::{AccessIndex, AccessRequest, Decision};
use lanyard_domain::{builtin, PrincipalKind};
use lanyard_storage::{AssignmentQuery, FeedChange, Store, StoreError};

/// The live authorization index.
pub struct AccessRuntime {
    index: RwLock<AccessIndex>,
    /// The feed position read before loading: the index reflects at least it.
    loaded_at: u64,
}

/// Assignments are loaded in pages of this many.
const LOAD_PAGE: u32 = 10_000;

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

async fn build_index(store: &dyn Store) -> Result<AccessIndex, StoreError> {
    let mut index = AccessIndex::with_roles(&builtin::built_in_roles());
    for role in store.role_definitions().await? {
        index.upsert_role(&role);
    }
    for principal in store.principals().await? {
        if let PrincipalKind::Group { members } = &principal.kind {
            index.set_group_members(principal.object_id, members);
        }
    }
    let mut after = None;
    loop {
        let page = store
            .assignments(&AssignmentQuery {
                after,
                limit: Some(LOAD_PAGE),
                ..Default::default()
            })
            .await?;
        for a in &page {
            index.add_assignment(a);
        }
        match page.last() {
            Some(last) if page.len() == LOAD_PAGE as usize => after = Some(last.id),
            _ => break,
        }
    }
    Ok(index)
}
