//! The access index: role assignments, role definitions and group memberships, kept
//! ready for checks and updated incrementally.
//!
//! Layout (all ids are dense `u32` slots, freed slots are reused):
//! - assignment slots: `(id, principal, role, scope)` plus each slot's position in its
//!   principal's and its scope's lists, so removal is O(1) (swap-remove);
//! - principals: object id → slot → direct groups and direct assignments, held inline in
//!   two parallel lists: a hot one scanned by every check (scope hash, scope depth, role:
//!   16 bytes) and a cold one read only for candidates and explanations (assignment id,
//!   scope, slot, and a fingerprint of the scope's subscription and group for ranking misses);
//! - groups: group slot → member slots (the reverse of "direct groups");
//! - scopes: interned by a case-insensitive hash computed segment by segment, so one pass
//!   over a request's key yields the hash of every ancestor; each scope keeps its text and
//!   the assignments made exactly there;
//! - roles: GUID → compiled matchers (each pattern list indexed by provider namespace).
//!
//! A check looks up the principal, hashes the prefixes of the request's scope once, then
//! walks only that principal's (and its groups') assignments: one whose scope hash equals
//! the request's prefix hash at its depth, and whose role grants the action, is confirmed
//! by comparing the scope text, and honoured only if its role is assignable at that scope
//! (at or below one of the role's `assignableScopes`; built-in roles everywhere, answered
//! without reading anything). Cost: O(depth + assignments of the principal and its
//! groups), independent of the total, with a handful of memory reads; no allocation.

use std::mem::size_of;
use std::sync::Arc;

use lanyard_domain::{ResourceId, RoleAssignment, RoleDefinition};
use uuid::Uuid;

use crate::decision::{AccessRequest, Decision, Denial, Grant, Miss, MissReason};
use crate::hash::{
    eq_ignore_case, finish_scope_hash, for_each_scope_prefix, scope_hash, scope_state, FastMap,
    HashedMap,
};
use crate::pattern::ActionPattern;
use crate::role::{namespace_of, CompiledRole, RoleSlot, RoleVerdict};

const NONE: u32 = u32::MAX;

/// `len` as a slot number.
// INVARIANT: fewer than `u32::MAX` entries of any kind; memory runs out long before.
#[inline]
fn slot_no(len: usize) -> u32 {
    debug_assert!(len < NONE as usize);
    len as u32
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    id: Uuid,
    /// `NONE` marks a free slot.
    principal: u32,
    role: u32,
    scope: u32,
    at_principal: u32,
    at_scope: u32,
}

/// The part of an assignment its holder's list scans on every check (16 bytes).
#[derive(Debug, Clone, Copy)]
struct HeldKey {
    /// Raw fold state of the scope key (see [`crate::hash::for_each_scope_prefix`]).
    scope_state: u64,
    /// Segment count of the scope, capped at `DEEP`.
    depth: u32,
    role: u32,
}

/// The rest, read only for an assignment that may cover the request or explains a denial.
#[derive(Debug, Clone, Copy)]
struct HeldInfo {
    /// Fingerprints of the scope's subscription-level and group-level prefixes (see
    /// [`lineage`]), to rank near misses without reading the scope.
    lineage: u64,
    /// The assignment's id, so that explaining needs no other read.
    id: Uuid,
    scope: u32,
    slot: u32,
}

/// A holder's assignments as two parallel vectors (hot keys, cold info).
#[derive(Debug, Default)]
struct HeldList {
    keys: Vec<HeldKey>,
    info: Vec<HeldInfo>,
}

impl HeldList {
    fn push(&mut self, key: HeldKey, info: HeldInfo) -> usize {
        // Most principals hold one or two assignments: skip the default capacity of 4.
        if self.keys.capacity() == 0 {
            self.keys.reserve_exact(1);
            self.info.reserve_exact(1);
        }
        self.keys.push(key);
        self.info.push(info);
        self.keys.len() - 1
    }

    /// Removes entry `at`; returns the slot of the entry moved into its place, if any.
    fn swap_remove(&mut self, at: usize) -> Option<u32> {
        if at >= self.keys.len() {
            return None;
        }
        self.keys.swap_remove(at);
        self.info.swap_remove(at);
        self.info.get(at).map(|i| i.slot)
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (&HeldKey, &HeldInfo)> {
        self.keys.iter().zip(&self.info)
    }

    fn heap_bytes(&self) -> usize {
        vec_bytes(&self.keys) + vec_bytes(&self.info)
    }
}

/// Depths of the prefixes whose fingerprints [`HeldInfo::lineage`] keeps: `/subscriptions/{s}`
/// and `/subscriptions/{s}/resourceGroups/{g}`.
const LINEAGE_DEPTHS: [usize; 2] = [2, 4];

/// Two 32-bit fingerprints of prefix states, at [`LINEAGE_DEPTHS`] (or the whole scope
/// when it is shallower).
fn lineage(state_at: impl Fn(usize) -> u64) -> u64 {
    let fold = |x: u64| (x ^ (x >> 32)) & 0xffff_ffff;
    (fold(state_at(LINEAGE_DEPTHS[0])) << 32) | fold(state_at(LINEAGE_DEPTHS[1]))
}

#[derive(Debug, Default)]
struct PrincipalEntry {
    id: Uuid,
    assignments: HeldList,
    /// Groups this principal is a direct member of.
    member_of: Vec<u32>,
}

#[derive(Debug)]
struct ScopeEntry {
    /// The scope as first written (display casing).
    text: Arc<str>,
    /// Table key: the finished hash of `state`.
    hash: u64,
    /// Raw fold state of the key, as [`HeldKey`] keeps it.
    state: u64,
    /// As [`HeldInfo::lineage`].
    lineage: u64,
    /// Segment count, capped at `DEEP`.
    depth: u32,
    /// Next scope with the same hash, or `NONE`.
    next: u32,
    assignments: Vec<u32>,
}

/// Depths at or past this share the last bucket (and are then checked by text alone).
const DEEP: usize = 24;

#[derive(Debug)]
struct ScopeTable {
    heads: HashedMap<u32>,
    entries: Vec<Option<ScopeEntry>>,
    free: Vec<u32>,
    /// Interned scopes per depth (segment count); a check probes only depths in use.
    depth_counts: [u32; DEEP + 1],
    /// Bit `d` set when `depth_counts[d] > 0`.
    depth_mask: u64,
}

impl Default for ScopeTable {
    fn default() -> Self {
        Self {
            heads: HashedMap::default(),
            entries: Vec::new(),
            free: Vec::new(),
            depth_counts: [0; DEEP + 1],
            depth_mask: 0,
        }
    }
}

impl ScopeTable {
    fn entry(&self, id: u32) -> Option<&ScopeEntry> {
        self.entries.get(id as usize).and_then(Option::as_ref)
    }

    fn entry_mut(&mut self, id: u32) -> Option<&mut ScopeEntry> {
        self.entries.get_mut(id as usize).and_then(Option::as_mut)
    }

    #[inline]
    fn find(&self, hash: u64, text: &str) -> Option<u32> {
        let mut at = *self.heads.get(&hash)?;
        while at != NONE {
            let e = self.entry(at)?;
            if eq_ignore_case(e.text.as_bytes(), text.as_bytes()) {
                return Some(at);
            }
            at = e.next;
        }
        None
    }

    fn lookup(&self, scope: &ResourceId) -> Option<u32> {
        self.find(scope_hash(scope.key()), scope.key())
    }

    fn intern(&mut self, scope: &ResourceId) -> u32 {
        let state = scope_state(scope.key());
        let hash = finish_scope_hash(state);
        if let Some(id) = self.find(hash, scope.key()) {
            return id;
        }
        let mut states = Vec::new();
        for_each_scope_prefix(scope.key(), |_, _, st| {
            states.push(st);
            true
        });
        let depth = (states.len() - 1).min(DEEP);
        let entry = ScopeEntry {
            text: Arc::from(scope.as_str()),
            hash,
            state,
            lineage: lineage(|d| states[d.min(states.len() - 1)]),
            depth: depth as u32,
            next: self.heads.get(&hash).copied().unwrap_or(NONE),
            assignments: Vec::new(),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = Some(entry);
                id
            }
            None => {
                self.entries.push(Some(entry));
                slot_no(self.entries.len() - 1)
            }
        };
        self.heads.insert(hash, id);
        self.depth_counts[depth] += 1;
        self.depth_mask |= 1 << depth;
        id
    }

    fn release_if_unused(&mut self, id: u32) {
        if self.entry(id).is_none_or(|e| !e.assignments.is_empty()) {
            return;
        }
        let Some(e) = self.entries[id as usize].take() else {
            return;
        };
        if self.heads.get(&e.hash) == Some(&id) {
            if e.next == NONE {
                self.heads.remove(&e.hash);
            } else {
                self.heads.insert(e.hash, e.next);
            }
        } else {
            let mut at = self.heads.get(&e.hash).copied().unwrap_or(NONE);
            while at != NONE {
                let Some(prev) = self.entry_mut(at) else {
                    break;
                };
                if prev.next == id {
                    prev.next = e.next;
                    break;
                }
                at = prev.next;
            }
        }
        self.free.push(id);
        let depth = e.depth as usize;
        self.depth_counts[depth] = self.depth_counts[depth].saturating_sub(1);
        if self.depth_counts[depth] == 0 {
            self.depth_mask &= !(1 << depth);
        }
    }

    /// The deepest depth that holds a scope.
    fn max_depth(&self) -> usize {
        63 - self.depth_mask.leading_zeros().min(63) as usize
    }

    /// The interned scopes at or above `key` (a [`ResourceId::key`]). Probes only depths
    /// that hold scopes, and stops past the deepest one.
    #[inline]
    fn covering(&self, key: &str, out: &mut SmallIds) {
        let mask = self.depth_mask;
        if mask == 0 {
            return;
        }
        for_each_scope_prefix(key, |depth, end, state| {
            let d = depth.min(DEEP);
            if mask & (1 << d) != 0 {
                let prefix = if end == 0 { "/" } else { &key[..end] };
                if let Some(id) = self.find(finish_scope_hash(state), prefix) {
                    out.push(id);
                }
            }
            d == DEEP || mask >> (d + 1) != 0
        });
    }
}

/// A short list of slot numbers that lives on the stack unless it grows past 16.
pub(crate) struct SmallIds {
    inline: [u32; 16],
    len: usize,
    spill: Vec<u32>,
}

impl SmallIds {
    pub(crate) fn new() -> Self {
        Self {
            inline: [0; 16],
            len: 0,
            spill: Vec::new(),
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, id: u32) {
        if self.len < self.inline.len() {
            self.inline[self.len] = id;
        } else {
            self.spill.push(id);
        }
        self.len += 1;
    }

    #[inline]
    pub(crate) fn contains(&self, id: u32) -> bool {
        self.inline[..self.len.min(self.inline.len())].contains(&id) || self.spill.contains(&id)
    }

    #[inline]
    fn push_unique(&mut self, id: u32) {
        if !self.contains(id) {
            self.push(id);
        }
    }

    #[inline]
    fn get(&self, i: usize) -> Option<u32> {
        if i >= self.len {
            None
        } else if i < self.inline.len() {
            Some(self.inline[i])
        } else {
            self.spill.get(i - self.inline.len()).copied()
        }
    }

    fn to_vec(&self) -> Vec<u32> {
        (0..self.len).filter_map(|i| self.get(i)).collect()
    }
}

/// The hashes of a request key's ancestor-or-self prefixes, by depth, computed once.
struct Prefixes<'k> {
    key: &'k [u8],
    hashes: [u64; DEEP],
    len: usize,
}

impl<'k> Prefixes<'k> {
    #[inline]
    fn of(key: &'k str, max_depth: usize) -> Self {
        let mut p = Self {
            key: key.as_bytes(),
            hashes: [0; DEEP],
            len: 0,
        };
        let limit = max_depth.min(DEEP - 1);
        for_each_scope_prefix(key, |depth, _, state| {
            p.hashes[depth] = state;
            p.len = depth + 1;
            depth < limit
        });
        p
    }

    /// Whether `held`'s scope may cover the request (hash test; confirm with [`Self::within`]).
    #[inline]
    fn may_cover(&self, held: &HeldKey) -> bool {
        let d = held.depth as usize;
        d >= DEEP || (d < self.len && self.hashes[d] == held.scope_state)
    }

    /// 2 when `held` sits in the request's resource group (or below it), 1 in its
    /// subscription, else 0. Fingerprints may collide: this only orders explanations.
    #[cfg(test)]
    #[inline]
    fn closeness(&self, key: &HeldKey, info: &HeldInfo) -> u8 {
        self.closeness_given(self.lineage(), key, info)
    }

    /// The request's own [`lineage`] (0 for an empty key, which is close to nothing).
    #[inline]
    fn lineage(&self) -> u64 {
        if self.len == 0 {
            return 0;
        }
        lineage(|d| self.hashes[d.min(self.len - 1).min(DEEP - 1)])
    }

    /// [`Self::closeness`] given `mine`, the request's [`Self::lineage`].
    #[inline]
    fn closeness_given(&self, mine: u64, key: &HeldKey, info: &HeldInfo) -> u8 {
        if self.len == 0 {
            return 0;
        }
        let deep_enough = |d: usize| key.depth as usize >= d && self.len > d;
        if deep_enough(LINEAGE_DEPTHS[1]) && mine == info.lineage {
            2
        } else if deep_enough(LINEAGE_DEPTHS[0]) && mine >> 32 == info.lineage >> 32 {
            1
        } else {
            0
        }
    }

    /// Whether the request key is `scope` or below it (the text test).
    #[inline]
    fn within(&self, scope: &str) -> bool {
        let s = scope.as_bytes();
        s == b"/"
            || (self.key.len() >= s.len()
                && eq_ignore_case(&self.key[..s.len()], s)
                && (self.key.len() == s.len() || self.key[s.len()] == b'/'))
    }
}

/// One role assignment as the index holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssignmentRef<'a> {
    pub id: Uuid,
    pub principal_id: Uuid,
    pub role_definition_id: Uuid,
    pub scope: &'a str,
}

/// Heap bytes held by an [`AccessIndex`], by part. Computed from the capacities of its
/// vectors and hash tables (hashbrown layout: buckets × (entry + 1 control byte)) and the
/// lengths of its strings; allocator overhead is not included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Assignment slots and the assignment-id table.
    pub assignments: usize,
    /// Principal slots and table, each principal's held-assignment lists (48 bytes per
    /// assignment), group memberships.
    pub principals: usize,
    /// Scope slots, texts, hash table and per-scope assignment lists.
    pub scopes: usize,
    /// Compiled role definitions.
    pub roles: usize,
    pub total: usize,
}

/// Role assignments, role definitions and group memberships, indexed for checks.
/// See the [module docs](self) for the layout and costs.
#[derive(Debug, Default)]
pub struct AccessIndex {
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    assignment_ids: FastMap<Uuid, u32>,
    principals: Vec<Option<PrincipalEntry>>,
    principal_ids: FastMap<Uuid, u32>,
    free_principals: Vec<u32>,
    /// Group slot → direct member slots.
    group_members: FastMap<u32, Vec<u32>>,
    scopes: ScopeTable,
    roles: Vec<Option<RoleSlot>>,
    role_ids: FastMap<Uuid, u32>,
    free_roles: Vec<u32>,
}

impl AccessIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// An index holding `roles`.
    pub fn with_roles<'r>(roles: impl IntoIterator<Item = &'r RoleDefinition>) -> Self {
        let mut index = Self::new();
        for r in roles {
            index.upsert_role(r);
        }
        index
    }

    /// Number of role assignments.
    pub fn len(&self) -> usize {
        self.assignment_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.assignment_ids.is_empty()
    }

    // ---- roles ----

    fn intern_role(&mut self, id: Uuid) -> u32 {
        if let Some(&r) = self.role_ids.get(&id) {
            return r;
        }
        let slot = RoleSlot {
            id,
            role: None,
            users: 0,
        };
        let r = match self.free_roles.pop() {
            Some(r) => {
                self.roles[r as usize] = Some(slot);
                r
            }
            None => {
                self.roles.push(Some(slot));
                slot_no(self.roles.len() - 1)
            }
        };
        self.role_ids.insert(id, r);
        r
    }

    fn role_slot(&self, r: u32) -> Option<&RoleSlot> {
        self.roles.get(r as usize).and_then(Option::as_ref)
    }

    fn release_role_if_unused(&mut self, r: u32) {
        let Some(slot) = self.roles.get_mut(r as usize) else {
            return;
        };
        if slot
            .as_ref()
            .is_some_and(|s| s.users == 0 && s.role.is_none())
        {
            if let Some(s) = slot.take() {
                self.role_ids.remove(&s.id);
                self.free_roles.push(r);
            }
        }
    }

    /// Adds or replaces a role definition, compiling its permissions once.
    pub fn upsert_role(&mut self, role: &RoleDefinition) {
        let r = self.intern_role(role.id);
        if let Some(Some(slot)) = self.roles.get_mut(r as usize) {
            slot.role = Some(CompiledRole::compile(role));
        }
    }

    /// Removes a role definition. Assignments naming it stay (as in ARM) but grant nothing
    /// until a definition with that GUID is upserted again. Returns whether it was defined.
    pub fn remove_role(&mut self, role_id: Uuid) -> bool {
        let Some(&r) = self.role_ids.get(&role_id) else {
            return false;
        };
        let had = self
            .roles
            .get_mut(r as usize)
            .and_then(Option::as_mut)
            .and_then(|s| s.role.take())
            .is_some();
        self.release_role_if_unused(r);
        had
    }

    /// Whether a definition with this GUID is loaded.
    pub fn has_role(&self, role_id: Uuid) -> bool {
        self.role_ids
            .get(&role_id)
            .and_then(|&r| self.role_slot(r))
            .is_some_and(|s| s.role.is_some())
    }

    // ---- principals and groups ----

    fn intern_principal(&mut self, id: Uuid) -> u32 {
        if let Some(&p) = self.principal_ids.get(&id) {
            return p;
        }
        let entry = PrincipalEntry {
            id,
            ..PrincipalEntry::default()
        };
        let p = match self.free_principals.pop() {
            Some(p) => {
                self.principals[p as usize] = Some(entry);
                p
            }
            None => {
                self.principals.push(Some(entry));
                slot_no(self.principals.len() - 1)
            }
        };
        self.principal_ids.insert(id, p);
        p
    }

    #[inline]
    fn principal(&self, p: u32) -> Option<&PrincipalEntry> {
        self.principals.get(p as usize).and_then(Option::as_ref)
    }

    fn principal_mut(&mut self, p: u32) -> Option<&mut PrincipalEntry> {
        self.principals.get_mut(p as usize).and_then(Option::as_mut)
    }

    fn release_principal_if_unused(&mut self, p: u32) {
        let unused = self
            .principal(p)
            .is_some_and(|e| e.assignments.is_empty() && e.member_of.is_empty())
            && !self.group_members.contains_key(&p);
        if unused {
            if let Some(e) = self.principals[p as usize].take() {
                self.principal_ids.remove(&e.id);
                self.free_principals.push(p);
            }
        }
    }

    /// Replaces the direct members of `group`. Members may be groups themselves:
    /// membership is transitive (cycles are harmless). An empty slice clears the group.
    pub fn set_group_members(&mut self, group: Uuid, members: &[Uuid]) {
        let g = self.intern_principal(group);
        let old = self.group_members.remove(&g).unwrap_or_default();
        for &m in &old {
            if let Some(e) = self.principal_mut(m) {
                e.member_of.retain(|&x| x != g);
            }
        }
        let mut ids = members.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut new = Vec::with_capacity(ids.len());
        for id in ids {
            let m = self.intern_principal(id);
            new.push(m);
            if let Some(e) = self.principal_mut(m) {
                e.member_of.push(g);
            }
        }
        if !new.is_empty() {
            self.group_members.insert(g, new);
        }
        // Released only now so that no slot is reused while still in hand.
        for m in old {
            self.release_principal_if_unused(m);
        }
        self.release_principal_if_unused(g);
    }

    /// Direct members of `group`.
    pub fn group_members(&self, group: Uuid) -> Vec<Uuid> {
        self.principal_ids
            .get(&group)
            .and_then(|g| self.group_members.get(g))
            .map(|ms| {
                ms.iter()
                    .filter_map(|&m| self.principal(m).map(|e| e.id))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Groups `principal` belongs to, directly or through other groups.
    pub fn groups_of(&self, principal: Uuid) -> Vec<Uuid> {
        let Some(&p) = self.principal_ids.get(&principal) else {
            return Vec::new();
        };
        self.group_closure(p)
            .into_iter()
            .skip(1)
            .filter_map(|g| self.principal(g).map(|e| e.id))
            .collect()
    }

    /// `p` followed by every group it belongs to, transitively, breadth first.
    fn group_closure(&self, p: u32) -> Vec<u32> {
        let mut all = vec![p];
        let mut i = 0;
        while let Some(&x) = all.get(i) {
            i += 1;
            if let Some(e) = self.principal(x) {
                for &g in &e.member_of {
                    if !all.contains(&g) {
                        all.push(g);
                    }
                }
            }
        }
        all
    }

    // ---- assignments ----

    /// Adds a role assignment, replacing one with the same id. The role definition may be
    /// loaded before or after. Assignability is not checked here (see
    /// [`crate::check_assignable`]); the index mirrors what storage holds, and a check
    /// ignores an assignment whose role is not assignable at its scope.
    pub fn add_assignment(&mut self, assignment: &RoleAssignment) {
        self.remove_assignment(assignment.id);
        let p = self.intern_principal(assignment.principal_id);
        let r = self.intern_role(assignment.role_definition_id);
        let sc = self.scopes.intern(&assignment.scope);
        let s = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    id: Uuid::nil(),
                    principal: NONE,
                    role: NONE,
                    scope: NONE,
                    at_principal: NONE,
                    at_scope: NONE,
                });
                slot_no(self.slots.len() - 1)
            }
        };
        let (scope_state, lineage, depth) = self
            .scopes
            .entry(sc)
            .map_or((0, 0, DEEP as u32), |e| (e.state, e.lineage, e.depth));
        let key = HeldKey {
            scope_state,
            depth,
            role: r,
        };
        let info = HeldInfo {
            lineage,
            id: assignment.id,
            scope: sc,
            slot: s,
        };
        let at_principal = match self.principal_mut(p) {
            Some(e) => slot_no(e.assignments.push(key, info)),
            None => NONE,
        };
        let at_scope = match self.scopes.entry_mut(sc) {
            Some(e) => {
                if e.assignments.capacity() == 0 {
                    e.assignments.reserve_exact(1);
                }
                e.assignments.push(s);
                slot_no(e.assignments.len() - 1)
            }
            None => NONE,
        };
        if let Some(Some(role)) = self.roles.get_mut(r as usize) {
            role.users += 1;
        }
        self.slots[s as usize] = Slot {
            id: assignment.id,
            principal: p,
            role: r,
            scope: sc,
            at_principal,
            at_scope,
        };
        self.assignment_ids.insert(assignment.id, s);
    }

    /// Removes a role assignment by id. Returns whether it was present.
    pub fn remove_assignment(&mut self, assignment_id: Uuid) -> bool {
        let Some(s) = self.assignment_ids.remove(&assignment_id) else {
            return false;
        };
        let slot = self.slots[s as usize];
        if let Some(e) = self
            .principals
            .get_mut(slot.principal as usize)
            .and_then(Option::as_mut)
        {
            if let Some(moved) = e.assignments.swap_remove(slot.at_principal as usize) {
                self.slots[moved as usize].at_principal = slot.at_principal;
            }
        }
        if let Some(e) = self.scopes.entry_mut(slot.scope) {
            let at = slot.at_scope as usize;
            e.assignments.swap_remove(at);
            if let Some(&moved) = e.assignments.get(at) {
                self.slots[moved as usize].at_scope = slot.at_scope;
            }
        }
        if let Some(Some(role)) = self.roles.get_mut(slot.role as usize) {
            role.users = role.users.saturating_sub(1);
        }
        self.slots[s as usize].principal = NONE;
        self.free_slots.push(s);
        self.release_role_if_unused(slot.role);
        self.release_principal_if_unused(slot.principal);
        self.scopes.release_if_unused(slot.scope);
        true
    }

    /// Removes every assignment held directly by `principal` (e.g. when a managed identity
    /// is deleted). Group memberships are left alone. Returns how many were removed.
    pub fn remove_assignments_of_principal(&mut self, principal: Uuid) -> usize {
        let ids: Vec<Uuid> = self.assignments_for(principal).map(|a| a.id).collect();
        ids.into_iter()
            .filter(|&id| self.remove_assignment(id))
            .count()
    }

    fn assignment_ref(&self, s: u32) -> Option<AssignmentRef<'_>> {
        let slot = self.slots.get(s as usize)?;
        Some(AssignmentRef {
            id: slot.id,
            principal_id: self.principal(slot.principal)?.id,
            role_definition_id: self.role_slot(slot.role)?.id,
            scope: &self.scopes.entry(slot.scope)?.text,
        })
    }

    /// Assignments held directly by `principal` (not through groups), in no set order.
    pub fn assignments_for(&self, principal: Uuid) -> impl Iterator<Item = AssignmentRef<'_>> {
        self.principal_ids
            .get(&principal)
            .and_then(|&p| self.principal(p))
            .map_or(&[][..], |e| &e.assignments.info[..])
            .iter()
            .filter_map(|h| self.assignment_ref(h.slot))
    }

    /// Assignments made exactly at `scope`.
    pub fn assignments_at(&self, scope: &ResourceId) -> impl Iterator<Item = AssignmentRef<'_>> {
        self.scopes
            .lookup(scope)
            .and_then(|sc| self.scopes.entry(sc))
            .map_or(&[][..], |e| &e.assignments[..])
            .iter()
            .filter_map(|&s| self.assignment_ref(s))
    }

    /// Assignments at `scope` or above it (ARM's `$filter=atScope()`).
    pub fn assignments_covering(
        &self,
        scope: &ResourceId,
    ) -> impl Iterator<Item = AssignmentRef<'_>> {
        let mut covering = SmallIds::new();
        self.scopes.covering(scope.key(), &mut covering);
        covering
            .to_vec()
            .into_iter()
            .filter_map(|sc| self.scopes.entry(sc))
            .flat_map(|e| e.assignments.iter())
            .filter_map(|&s| self.assignment_ref(s))
    }

    // ---- checks ----

    /// Whether the request is allowed, without building an explanation. Allocates nothing
    /// unless the principal is in more than 15 groups.
    pub fn allows(&self, request: &AccessRequest<'_>) -> bool {
        let Some((p, entry)) = self.holder_entry(request.principal) else {
            return false;
        };
        let prefixes = Prefixes::of(request.scope.key(), self.scopes.max_depth());
        let mut seen = SmallIds::new();
        self.find_grant(p, entry, &prefixes, request, &mut seen)
            .is_some()
    }

    /// The decision with its reasons: the assignment that allowed the request, or the
    /// nearest misses.
    pub fn check(&self, request: &AccessRequest<'_>) -> Decision {
        self.check_explaining(request, Denial::MAX_MISSES)
    }

    /// [`Self::check`], reporting up to `max_misses` nearest misses when denied (for a CLI
    /// that shows more than an HTTP error message should).
    pub fn check_explaining(&self, request: &AccessRequest<'_>, max_misses: usize) -> Decision {
        let Some((p, entry)) = self.holder_entry(request.principal) else {
            return Decision::Deny(self.denial(request, None, max_misses));
        };
        let prefixes = Prefixes::of(request.scope.key(), self.scopes.max_depth());
        let mut holders = SmallIds::new();
        if let Some((holder, role, info, pattern)) =
            self.find_grant(p, entry, &prefixes, request, &mut holders)
        {
            if let Some(g) = self.grant(request, holder, role, info, pattern) {
                return Decision::Allow(g);
            }
            // Unreachable (the role was just read); finish the walk for a full denial.
            holders = self.group_closure_ids(p);
        }
        Decision::Deny(self.denial(request, Some((&prefixes, &holders)), max_misses))
    }

    /// The principal's entry, when it holds assignments or belongs to groups.
    #[inline]
    fn holder_entry(&self, principal: Uuid) -> Option<(u32, &PrincipalEntry)> {
        let &p = self.principal_ids.get(&principal)?;
        let entry = self.principal(p)?;
        (!entry.assignments.is_empty() || !entry.member_of.is_empty()).then_some((p, entry))
    }

    /// The assignment of `p` or of one of its groups that allows the request. Collects in
    /// `seen` the principal and the groups walked, in the order of [`Self::group_closure`]:
    /// all of them when nothing allows the request.
    #[inline]
    fn find_grant<'s>(
        &'s self,
        p: u32,
        entry: &'s PrincipalEntry,
        prefixes: &Prefixes<'_>,
        req: &AccessRequest<'_>,
        seen: &mut SmallIds,
    ) -> Option<(&'s PrincipalEntry, u32, &'s HeldInfo, &'s ActionPattern)> {
        seen.push(p);
        if let Some((role, info, pattern)) = self.grant_among(&entry.assignments, prefixes, req) {
            return Some((entry, role, info, pattern));
        }
        if entry.member_of.is_empty() {
            return None;
        }
        for &g in &entry.member_of {
            seen.push_unique(g);
        }
        let mut i = 1;
        while let Some(g) = seen.get(i) {
            i += 1;
            let Some(group) = self.principal(g) else {
                continue;
            };
            if let Some((role, info, pattern)) = self.grant_among(&group.assignments, prefixes, req)
            {
                return Some((group, role, info, pattern));
            }
            for &up in &group.member_of {
                seen.push_unique(up);
            }
        }
        None
    }

    /// [`Self::group_closure`] into a [`SmallIds`].
    fn group_closure_ids(&self, p: u32) -> SmallIds {
        let mut all = SmallIds::new();
        all.push(p);
        let mut i = 0;
        while let Some(x) = all.get(i) {
            i += 1;
            if let Some(e) = self.principal(x) {
                for &g in &e.member_of {
                    all.push_unique(g);
                }
            }
        }
        all
    }

    /// The first assignment in `held` that allows the request: its role slot, its info and
    /// the pattern that matched. An assignment whose role is not assignable at its scope
    /// allows nothing.
    #[inline]
    fn grant_among<'s>(
        &'s self,
        held: &'s HeldList,
        prefixes: &Prefixes<'_>,
        req: &AccessRequest<'_>,
    ) -> Option<(u32, &'s HeldInfo, &'s ActionPattern)> {
        held.keys.iter().enumerate().find_map(|(i, k)| {
            if !prefixes.may_cover(k) {
                return None;
            }
            let role = self.role_slot(k.role)?.role.as_ref()?;
            let pattern = role.grants(req.action, req.kind)?;
            let info = held.info.get(i)?;
            // INVARIANT: a grant needs the text test; the hash alone never decides.
            let scope = self.scopes.entry(info.scope)?;
            // INVARIANT: an assignment outside its role's assignable scopes grants nothing.
            (prefixes.within(&scope.text) && role.assignable_at(&scope.text))
                .then_some((k.role, info, pattern))
        })
    }

    fn grant(
        &self,
        req: &AccessRequest<'_>,
        holder: &PrincipalEntry,
        role: u32,
        held: &HeldInfo,
        pattern: &ActionPattern,
    ) -> Option<Grant> {
        let role = self.role_slot(role)?;
        Some(Grant {
            principal_id: req.principal,
            action: req.action.to_string(),
            kind: req.kind,
            scope: req.scope.as_str().to_string(),
            assignment_id: held.id,
            assignee_id: holder.id,
            role_id: role.id,
            role_name: Arc::clone(&role.role.as_ref()?.name),
            assignment_scope: Arc::clone(&self.scopes.entry(held.scope)?.text),
            granted_by: Arc::clone(pattern.text()),
        })
    }

    /// The nearest misses among the assignments of the holders (the principal, then its
    /// groups) when `walk` is given, or none. Reads scope entries only for assignments
    /// that may cover the request and for the misses it reports; shares (`Arc`) strings
    /// only for those misses; allocates only the denial itself when `max_misses` is at
    /// most [`NEAREST_INLINE`] and the principal is in fewer than 16 groups.
    fn denial(
        &self,
        req: &AccessRequest<'_>,
        walk: Option<(&Prefixes<'_>, &SmallIds)>,
        max_misses: usize,
    ) -> Denial {
        let mut nearest = Nearest::new(max_misses);
        let mut considered = 0;
        if let Some((prefixes, holders)) = walk {
            let ns = namespace_of(req.action);
            // The request's lineage fingerprints, once (see `Prefixes::closeness`).
            let mine = prefixes.lineage();
            // Whether each role grants the action, computed once per role: a group may
            // hold many assignments of the same few roles.
            let mut grants_memo = RoleMemo::new();
            let mut i = 0;
            while let Some(holder) = holders.get(i) {
                i += 1;
                let Some(holder) = self.principal(holder) else {
                    continue;
                };
                considered += holder.assignments.keys.len();
                for (h, info) in holder.assignments.iter() {
                    let role = self.role_slot(h.role).and_then(|r| r.role.as_ref());
                    let covering_scope = if prefixes.may_cover(h) {
                        self.scopes
                            .entry(info.scope)
                            .filter(|e| prefixes.within(&e.text))
                    } else {
                        None
                    };
                    let miss = if let Some(scope) = covering_scope {
                        covering_pending(role, req, ns, &scope.text)
                    } else {
                        let grants = grants_memo.get_or(h.role, || {
                            role.and_then(|r| r.grants_in(req.action, ns, req.kind))
                        });
                        grants.map(|p| (0, Pending::OutOfScope(p)))
                    };
                    if let Some((rank, mut reason)) = miss {
                        if !nearest.may_keep(rank) {
                            // Counted, but farther than every kept miss whatever its
                            // closeness: leave its info unread.
                            nearest.total += 1;
                            continue;
                        }
                        if let (Pending::OutOfScope(p), Some(r)) = (reason, role) {
                            // Same rank either way; the scope is read only for a role with
                            // assignable scopes, and only for a miss that may be reported.
                            if !r.assignable_everywhere()
                                && !self
                                    .scopes
                                    .entry(info.scope)
                                    .is_some_and(|e| r.assignable_at(&e.text))
                            {
                                reason = Pending::NotAssignable(p);
                            }
                        }
                        nearest.offer(Candidate {
                            key: candidate_key(
                                rank,
                                prefixes.closeness_given(mine, h, info),
                                h.depth,
                                info.slot,
                            ),
                            role: h.role,
                            held: *info,
                            holder: holder.id,
                            reason,
                        });
                    }
                }
            }
        }
        let more_misses = nearest.total.saturating_sub(max_misses);
        let chosen = nearest.sorted();
        // The reported scopes lie far apart in memory. Read their texts' counters first,
        // so that those loads overlap: each `Arc::clone` below is an atomic increment,
        // which would otherwise wait for its own cache miss before the next one starts.
        let warm = chosen
            .iter()
            .filter_map(|c| self.scopes.entry(c.held.scope))
            .map(|e| Arc::strong_count(&e.text))
            .fold(0usize, usize::wrapping_add);
        std::hint::black_box(warm);
        let mut misses = Vec::with_capacity(chosen.len());
        misses.extend(chosen.iter().filter_map(|c| {
            let role = self.role_slot(c.role)?;
            Some(Miss {
                assignment_id: c.held.id,
                assignee_id: c.holder,
                role_id: role.id,
                role_name: role.role.as_ref().map(|r| Arc::clone(&r.name)),
                assignment_scope: Arc::clone(&self.scopes.entry(c.held.scope)?.text),
                reason: c.reason.share(),
            })
        }));
        Denial {
            principal_id: req.principal,
            action: req.action.to_string(),
            kind: req.kind,
            scope: req.scope.as_str().to_string(),
            misses,
            more_misses,
            assignments_considered: considered,
        }
    }

    /// [`Self::denial`] as first written (every candidate built, then sorted): the oracle
    /// the bounded selection is tested against. The nearest misses among the assignments
    /// of `holders` (the principal, then its groups).
    #[cfg(test)]
    fn denial_by_sorting(
        &self,
        req: &AccessRequest<'_>,
        prefixes: Option<&Prefixes<'_>>,
        holders: &[u32],
        max_misses: usize,
    ) -> Denial {
        struct Candidate<'h> {
            rank: u8,
            closeness: u8,
            key: &'h HeldKey,
            held: &'h HeldInfo,
            holder: Uuid,
            reason: MissReason,
        }
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut considered = 0;
        // Whether each role grants the action, computed once per role: a group may hold
        // many assignments of the same few roles.
        let mut grants_memo: Vec<Option<Option<&ActionPattern>>> = Vec::new();
        if let Some(prefixes) = prefixes {
            grants_memo.resize(self.roles.len(), None);
            for &holder in holders {
                let Some(holder) = self.principal(holder) else {
                    continue;
                };
                for (h, info) in holder.assignments.iter() {
                    considered += 1;
                    let role = self.role_slot(h.role).and_then(|r| r.role.as_ref());
                    let scope_text = self.scopes.entry(info.scope).map(|e| &*e.text);
                    let covers =
                        prefixes.may_cover(h) && scope_text.is_some_and(|t| prefixes.within(t));
                    let assignable =
                        scope_text.is_some_and(|t| role.is_none_or(|r| r.assignable_at(t)));
                    let miss = if covers {
                        covering_miss(role, req, assignable)
                    } else {
                        let grants = match grants_memo.get(h.role as usize).copied().flatten() {
                            Some(known) => known,
                            None => {
                                let found = role.and_then(|r| r.grants(req.action, req.kind));
                                if let Some(memo) = grants_memo.get_mut(h.role as usize) {
                                    *memo = Some(found);
                                }
                                found
                            }
                        };
                        grants.map(|p| {
                            let granted_by = Arc::clone(p.text());
                            let reason = if assignable {
                                MissReason::OutOfScope { granted_by }
                            } else {
                                MissReason::NotAssignable { granted_by }
                            };
                            (0, reason)
                        })
                    };
                    if let Some((rank, reason)) = miss {
                        candidates.push(Candidate {
                            rank,
                            closeness: prefixes.closeness(h, info),
                            key: h,
                            held: info,
                            holder: holder.id,
                            reason,
                        });
                    }
                }
            }
        }
        // Lower rank first; then the same resource group, the same subscription; then
        // deeper scopes; then insertion order.
        candidates.sort_by(|a, b| {
            a.rank
                .cmp(&b.rank)
                .then(b.closeness.cmp(&a.closeness))
                .then(b.key.depth.cmp(&a.key.depth))
                .then(a.held.slot.cmp(&b.held.slot))
        });
        let more_misses = candidates.len().saturating_sub(max_misses);
        let misses = candidates
            .into_iter()
            .take(max_misses)
            .filter_map(|c| {
                let role = self.role_slot(c.key.role)?;
                Some(Miss {
                    assignment_id: c.held.id,
                    assignee_id: c.holder,
                    role_id: role.id,
                    role_name: role.role.as_ref().map(|r| Arc::clone(&r.name)),
                    assignment_scope: Arc::clone(&self.scopes.entry(c.held.scope)?.text),
                    reason: c.reason,
                })
            })
            .collect();
        Denial {
            principal_id: req.principal,
            action: req.action.to_string(),
            kind: req.kind,
            scope: req.scope.as_str().to_string(),
            misses,
            more_misses,
            assignments_considered: considered,
        }
    }

    // ---- memory ----

    /// Heap bytes held by the index, computed from capacities (see [`MemoryUsage`]).
    pub fn memory_usage(&self) -> MemoryUsage {
        let assignments = vec_bytes(&self.slots)
            + vec_bytes(&self.free_slots)
            + table_bytes::<Uuid, u32>(self.assignment_ids.capacity());
        let principals = vec_bytes(&self.principals)
            + vec_bytes(&self.free_principals)
            + table_bytes::<Uuid, u32>(self.principal_ids.capacity())
            + table_bytes::<u32, Vec<u32>>(self.group_members.capacity())
            + self
                .principals
                .iter()
                .flatten()
                .map(|e| e.assignments.heap_bytes() + vec_bytes(&e.member_of))
                .sum::<usize>()
            + self.group_members.values().map(vec_bytes).sum::<usize>();
        let scopes = vec_bytes(&self.scopes.entries)
            + vec_bytes(&self.scopes.free)
            + table_bytes::<u64, u32>(self.scopes.heads.capacity())
            + self
                .scopes
                .entries
                .iter()
                .flatten()
                // Arc<str>: two counters plus the text.
                .map(|e| 16 + e.text.len() + vec_bytes(&e.assignments))
                .sum::<usize>();
        let roles = vec_bytes(&self.roles)
            + vec_bytes(&self.free_roles)
            + table_bytes::<Uuid, u32>(self.role_ids.capacity())
            + self
                .roles
                .iter()
                .flatten()
                .filter_map(|r| r.role.as_ref())
                .map(CompiledRole::heap_bytes)
                .sum::<usize>();
        MemoryUsage {
            assignments,
            principals,
            scopes,
            roles,
            total: assignments + principals + scopes + roles,
        }
    }
}

fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * size_of::<T>()
}

/// Bytes of a hashbrown table that reports `capacity`: buckets hold an entry and a control
/// byte each, plus one group of trailing control bytes.
fn table_bytes<K, V>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    buckets * (size_of::<(K, V)>() + 1) + 16
}

/// How many nearest misses [`Nearest`] keeps on the stack; past that it sorts a vector.
const NEAREST_INLINE: usize = 8;

/// A miss found while explaining a denial, before anything is shared or copied out.
#[derive(Debug, Clone, Copy)]
struct Candidate<'r> {
    /// See [`candidate_key`]: the smaller, the nearer.
    key: u64,
    role: u32,
    held: HeldInfo,
    holder: Uuid,
    reason: Pending<'r>,
}

impl Candidate<'_> {
    const FAR: Candidate<'static> = Candidate {
        key: u64::MAX,
        role: NONE,
        held: HeldInfo {
            lineage: 0,
            id: Uuid::nil(),
            scope: NONE,
            slot: NONE,
        },
        holder: Uuid::nil(),
        reason: Pending::NotGranted,
    };
}

/// Orders misses: lower rank first; then the same resource group, the same subscription;
/// then deeper scopes; then older assignment slots. Unique per assignment (the slot is), so
/// the order is total and keeping the smallest keys equals sorting all and taking a prefix.
#[inline]
fn candidate_key(rank: u8, closeness: u8, depth: u32, slot: u32) -> u64 {
    debug_assert!(depth as usize <= DEEP);
    let depth = depth.min(u8::MAX as u32) as u64;
    (u64::from(rank) << 48)
        | (u64::from(u8::MAX - closeness) << 40)
        | ((u64::from(u8::MAX) - depth) << 32)
        | u64::from(slot)
}

/// A [`MissReason`] holding borrowed patterns: shared only if the miss is reported.
#[derive(Debug, Clone, Copy)]
enum Pending<'r> {
    OutOfScope(&'r ActionPattern),
    NotAssignable(&'r ActionPattern),
    Excluded(&'r ActionPattern, &'r ActionPattern),
    OtherKind(&'r ActionPattern),
    NotGranted,
    RoleNotFound,
}

impl Pending<'_> {
    fn share(&self) -> MissReason {
        match *self {
            Self::OutOfScope(p) => MissReason::OutOfScope {
                granted_by: Arc::clone(p.text()),
            },
            Self::NotAssignable(p) => MissReason::NotAssignable {
                granted_by: Arc::clone(p.text()),
            },
            Self::Excluded(g, x) => MissReason::Excluded {
                granted_by: Arc::clone(g.text()),
                excluded_by: Arc::clone(x.text()),
            },
            Self::OtherKind(p) => MissReason::OtherKind {
                pattern: Arc::clone(p.text()),
            },
            Self::NotGranted => MissReason::NotGranted,
            Self::RoleNotFound => MissReason::RoleNotFound,
        }
    }
}

/// The `limit` nearest candidates offered (smallest keys), and how many were offered.
/// Up to [`NEAREST_INLINE`] kept in a sorted array on the stack; a larger limit (a CLI's)
/// collects every candidate and sorts once.
struct Nearest<'r> {
    limit: usize,
    total: usize,
    len: usize,
    inline: [Candidate<'r>; NEAREST_INLINE],
    spill: Vec<Candidate<'r>>,
}

impl<'r> Nearest<'r> {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            total: 0,
            len: 0,
            inline: [Candidate::FAR; NEAREST_INLINE],
            spill: Vec::new(),
        }
    }

    /// Whether a candidate of `rank` may be kept (else only its count matters).
    #[inline]
    fn may_keep(&self, rank: u8) -> bool {
        self.limit > NEAREST_INLINE
            || self.len < self.limit
            || self.len.checked_sub(1).is_some_and(|last| {
                // The rank is the key's top byte (see `candidate_key`).
                self.inline[last].key >> 48 >= u64::from(rank)
            })
    }

    #[inline]
    fn offer(&mut self, c: Candidate<'r>) {
        self.total += 1;
        if self.limit > NEAREST_INLINE {
            self.spill.push(c);
            return;
        }
        if self.len == self.limit {
            // Full (or a limit of 0): keep it only if nearer than the farthest kept.
            match self.len.checked_sub(1).map(|last| self.inline[last].key) {
                Some(farthest) if c.key < farthest => self.len -= 1,
                _ => return,
            }
        }
        let mut at = self.len;
        while at > 0 && self.inline[at - 1].key > c.key {
            self.inline[at] = self.inline[at - 1];
            at -= 1;
        }
        self.inline[at] = c;
        self.len += 1;
    }

    /// The kept candidates, nearest first.
    fn sorted(&mut self) -> &[Candidate<'r>] {
        if self.limit > NEAREST_INLINE {
            self.spill.sort_unstable_by_key(|c| c.key);
            self.spill.truncate(self.limit);
            &self.spill
        } else {
            &self.inline[..self.len]
        }
    }
}

/// How many roles [`RoleMemo`] remembers; past that it computes.
const ROLE_MEMO: usize = 32;

/// Whether each role grants the request's action, for the roles seen so far (on the stack).
struct RoleMemo<'r> {
    len: usize,
    roles: [u32; ROLE_MEMO],
    found: [Option<&'r ActionPattern>; ROLE_MEMO],
}

impl<'r> RoleMemo<'r> {
    fn new() -> Self {
        Self {
            len: 0,
            roles: [NONE; ROLE_MEMO],
            found: [None; ROLE_MEMO],
        }
    }

    #[inline]
    fn get_or(
        &mut self,
        role: u32,
        compute: impl FnOnce() -> Option<&'r ActionPattern>,
    ) -> Option<&'r ActionPattern> {
        if let Some(i) = self.roles[..self.len].iter().position(|&r| r == role) {
            return self.found[i];
        }
        let found = compute();
        if self.len < ROLE_MEMO {
            self.roles[self.len] = role;
            self.found[self.len] = found;
            self.len += 1;
        }
        found
    }
}

/// Why an assignment covering the request did not allow it (rank, reason); `ns` is the
/// action's namespace, `scope` the assignment's scope. A role that grants the action there
/// is one not assignable at `scope`: ranked with the nearest, as the fix is at hand.
fn covering_pending<'r>(
    role: Option<&'r CompiledRole>,
    req: &AccessRequest<'_>,
    ns: &str,
    scope: &str,
) -> Option<(u8, Pending<'r>)> {
    match role.map(|r| r.verdict_in(req.action, ns, req.kind)) {
        None => Some((4, Pending::RoleNotFound)),
        Some(RoleVerdict::Excluded {
            granted_by,
            excluded_by,
        }) => Some((1, Pending::Excluded(granted_by, excluded_by))),
        Some(RoleVerdict::NotGranted {
            other_kind: Some(p),
        }) => Some((2, Pending::OtherKind(p))),
        Some(RoleVerdict::NotGranted { other_kind: None }) => Some((3, Pending::NotGranted)),
        Some(RoleVerdict::Granted) => {
            let role = role?;
            if role.assignable_at(scope) {
                // Unreachable after a failed search; say nothing rather than lie.
                return None;
            }
            role.grants_in(req.action, ns, req.kind)
                .map(|p| (0, Pending::NotAssignable(p)))
        }
    }
}

/// Why an assignment covering the request did not allow it (rank, reason); `assignable`:
/// whether its role may be assigned at its scope.
#[cfg(test)]
fn covering_miss(
    role: Option<&CompiledRole>,
    req: &AccessRequest<'_>,
    assignable: bool,
) -> Option<(u8, MissReason)> {
    match role.map(|r| r.verdict(req.action, req.kind)) {
        None => Some((4, MissReason::RoleNotFound)),
        Some(RoleVerdict::Excluded {
            granted_by,
            excluded_by,
        }) => Some((
            1,
            MissReason::Excluded {
                granted_by: Arc::clone(granted_by.text()),
                excluded_by: Arc::clone(excluded_by.text()),
            },
        )),
        Some(RoleVerdict::NotGranted {
            other_kind: Some(p),
        }) => Some((
            2,
            MissReason::OtherKind {
                pattern: Arc::clone(p.text()),
            },
        )),
        Some(RoleVerdict::NotGranted { other_kind: None }) => Some((3, MissReason::NotGranted)),
        Some(RoleVerdict::Granted) if !assignable => {
            role.and_then(|r| r.grants(req.action, req.kind)).map(|p| {
                (
                    0,
                    MissReason::NotAssignable {
                        granted_by: Arc::clone(p.text()),
                    },
                )
            })
        }
        // Unreachable after a failed search; say nothing rather than lie.
        Some(RoleVerdict::Granted) => None,
    }
}

#[cfg(test)]
mod denial_tests {
    //! The bounded selection of nearest misses ([`AccessIndex::denial`]) against the
    //! original build-everything-then-sort construction ([`AccessIndex::denial_by_sorting`]).
    #![allow(clippy::unwrap_used)]

    use lanyard_domain::{builtin, Permission, PrincipalType, RoleType};

    use crate::decision::ActionKind;

    use super::*;

    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n.max(1) as u64) as usize
        }
        fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
            &xs[self.below(xs.len())]
        }
    }

    impl AccessIndex {
        /// [`AccessIndex::check_explaining`] as first written.
        fn check_by_sorting(&self, request: &AccessRequest<'_>, max_misses: usize) -> Decision {
            let Some((p, entry)) = self.holder_entry(request.principal) else {
                return Decision::Deny(self.denial_by_sorting(request, None, &[], max_misses));
            };
            let prefixes = Prefixes::of(request.scope.key(), self.scopes.max_depth());
            let mut seen = SmallIds::new();
            if let Some((holder, role, info, pattern)) =
                self.find_grant(p, entry, &prefixes, request, &mut seen)
            {
                if let Some(g) = self.grant(request, holder, role, info, pattern) {
                    return Decision::Allow(g);
                }
            }
            let holders = self.group_closure(p);
            Decision::Deny(self.denial_by_sorting(request, Some(&prefixes), &holders, max_misses))
        }
    }

    fn perm(a: &[&str], na: &[&str], d: &[&str], nd: &[&str]) -> Permission {
        let v = |xs: &[&str]| xs.iter().map(|s| (*s).to_string()).collect();
        Permission {
            actions: v(a),
            not_actions: v(na),
            data_actions: v(d),
            not_data_actions: v(nd),
        }
    }

    /// A custom role; roles 1 and 3 are assignable only in part of the scopes used, so that
    /// ignored assignments are among the misses.
    fn custom(n: u128, name: &str, permissions: Vec<Permission>) -> RoleDefinition {
        let assignable_scopes = match n {
            1 => vec![ResourceId::parse("/subscriptions/s1").unwrap()],
            3 => vec![
                ResourceId::parse("/subscriptions/S2/resourceGroups/rg1").unwrap(),
                ResourceId::parse("/subscriptions/s3").unwrap(),
            ],
            _ => vec![ResourceId::root()],
        };
        RoleDefinition {
            id: Uuid::from_u128(0xc0_0000 + n),
            role_name: name.to_string(),
            description: String::new(),
            role_type: RoleType::CustomRole,
            permissions,
            assignable_scopes,
        }
    }

    fn assignment(id: u128, principal: Uuid, role: Uuid, scope: &ResourceId) -> RoleAssignment {
        let now = time::OffsetDateTime::UNIX_EPOCH;
        RoleAssignment {
            id: Uuid::from_u128(id),
            scope: scope.clone(),
            role_definition_id: role,
            principal_id: principal,
            principal_type: PrincipalType::ServicePrincipal,
            description: None,
            condition: None,
            condition_version: None,
            created_on: now,
            updated_on: now,
            created_by: None,
            updated_by: None,
        }
    }

    const ACTIONS: &[&str] = &[
        "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        "Microsoft.KeyVault/vaults/secrets/setSecret/action",
        "Microsoft.KeyVault/vaults/secrets/purge/action",
        "Microsoft.KeyVault/vaults/read",
        "microsoft.keyvault/vaults/delete",
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
        "Microsoft.Storage/storageAccounts/read",
        "Microsoft.Compute/virtualMachines/delete",
        "Microsoft.Compute/virtualMachines/start/action",
        "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
        "Microsoft.Authorization/roleAssignments/write",
        "Microsoft.Resources/subscriptions/resourceGroups/read",
        "Other.Namespace/things/read",
    ];

    fn scopes() -> Vec<ResourceId> {
        let mut out = vec![ResourceId::root()];
        for s in ["s1", "S2", "s3"] {
            let sub = ResourceId::parse(&format!("/subscriptions/{s}")).unwrap();
            out.push(sub.clone());
            for g in ["rg1", "RG2", "rg3"] {
                let rg =
                    ResourceId::parse(&format!("/subscriptions/{s}/resourceGroups/{g}")).unwrap();
                out.push(rg.clone());
                for (ns, ty, n) in [
                    ("Microsoft.KeyVault", "vaults", "kv1"),
                    ("Microsoft.KeyVault", "vaults", "KV2"),
                    ("Microsoft.Storage", "storageAccounts", "st1"),
                    ("Microsoft.Compute", "virtualMachines", "vm1"),
                ] {
                    let r = rg.with_provider(ns, ty, n);
                    out.push(ResourceId::parse(&format!("{}/secrets/x", r.as_str())).unwrap());
                    out.push(r);
                }
            }
        }
        out
    }

    #[test]
    fn bounded_selection_equals_sorting_every_candidate() {
        let mut roles: Vec<RoleDefinition> = builtin::built_in_roles();
        roles.push(custom(
            1,
            "Almost owner",
            vec![perm(
                &["*"],
                &[
                    "Microsoft.Authorization/*",
                    "Microsoft.KeyVault/vaults/delete",
                ],
                &[],
                &[],
            )],
        ));
        roles.push(custom(
            2,
            "Secret rotator",
            vec![
                perm(
                    &[],
                    &[],
                    &["Microsoft.KeyVault/vaults/secrets/*"],
                    &["Microsoft.KeyVault/vaults/secrets/purge/action"],
                ),
                perm(&["*/read"], &["Microsoft.KeyVault/*/read"], &[], &[]),
            ],
        ));
        roles.push(custom(
            3,
            "Identity assigner",
            vec![perm(
                &["Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action"],
                &[],
                &["*"],
                &[],
            )],
        ));
        let scopes = scopes();
        let principals: Vec<Uuid> = (1..=10).map(|i| Uuid::from_u128(0x100 + i)).collect();
        let groups: Vec<Uuid> = (1..=4).map(|i| Uuid::from_u128(0x200 + i)).collect();
        let holders: Vec<Uuid> = principals.iter().chain(&groups).copied().collect();
        let mut compared = 0;
        let mut with_more = 0;
        let mut ignored = 0;
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            // Some roles are missing (never loaded, or removed below).
            let mut role_ids: Vec<Uuid> = (0..24).map(|_| rng.pick(&roles).id).collect();
            role_ids.push(Uuid::from_u128(0xdead));
            let mut index = AccessIndex::with_roles(&roles);
            let mut ids = Vec::new();
            for a in 0..(20 + rng.below(200)) as u128 {
                // A few holders take most assignments, so that many candidates compete.
                let holder = if rng.below(3) == 0 {
                    holders[rng.below(3)]
                } else {
                    *rng.pick(&holders)
                };
                let id = 1000 * u128::from(seed) + a;
                index.add_assignment(&assignment(
                    id,
                    holder,
                    *rng.pick(&role_ids),
                    rng.pick(&scopes),
                ));
                ids.push(Uuid::from_u128(id));
            }
            for _ in 0..rng.below(10) {
                index.remove_assignment(*rng.pick(&ids));
            }
            if rng.below(2) == 0 {
                index.remove_role(*rng.pick(&role_ids));
            }
            for (i, &g) in groups.iter().enumerate() {
                let mut members: Vec<Uuid> =
                    (0..rng.below(5)).map(|_| *rng.pick(&principals)).collect();
                // Nested groups, cycles included.
                members.push(groups[(i + 1) % groups.len()]);
                index.set_group_members(g, &members);
            }
            for _ in 0..150 {
                let principal = if rng.below(20) == 0 {
                    Uuid::from_u128(0x999)
                } else {
                    *rng.pick(&holders)
                };
                let req = AccessRequest {
                    principal,
                    action: ACTIONS[rng.below(ACTIONS.len())],
                    kind: if rng.below(2) == 0 {
                        ActionKind::Control
                    } else {
                        ActionKind::Data
                    },
                    scope: rng.pick(&scopes),
                };
                for k in [
                    0,
                    1,
                    3,
                    Denial::MAX_MISSES,
                    NEAREST_INLINE,
                    NEAREST_INLINE + 1,
                    1000,
                ] {
                    match (
                        index.check_explaining(&req, k),
                        index.check_by_sorting(&req, k),
                    ) {
                        (Decision::Allow(a), Decision::Allow(b)) => assert_eq!(a, b),
                        (Decision::Deny(a), Decision::Deny(b)) => {
                            assert_eq!(a, b, "{req:?}, {k} misses");
                            assert_eq!(a.explain_as(Some("p")), b.explain_as(Some("p")));
                            compared += 1;
                            with_more += usize::from(a.more_misses > 0);
                            ignored += usize::from(
                                a.misses
                                    .iter()
                                    .any(|m| matches!(m.reason, MissReason::NotAssignable { .. })),
                            );
                        }
                        (a, b) => panic!("{req:?}: {a:?} vs {b:?}"),
                    }
                }
            }
        }
        // Both regimes (all candidates kept, some left out) must be well represented.
        assert!(
            compared > 10_000 && with_more > 2_000 && ignored > 500,
            "{compared} / {with_more} / {ignored}"
        );
    }
}
