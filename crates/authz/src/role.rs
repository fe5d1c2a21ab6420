//! Role definitions compiled into matchers, with the scopes they may be assigned at.

use std::sync::Arc;

use lanyard_domain::{RoleDefinition, RoleType};
use uuid::Uuid;

use crate::decision::ActionKind;
use crate::hash::eq_ignore_case;
use crate::pattern::ActionPattern;

/// Lower-cased namespace and the indices of its patterns, ascending.
type NamespaceGroup = (Box<str>, Box<[u32]>);

/// A pattern list indexed by provider namespace: a pattern whose first segment has no `*`
/// (`Microsoft.Compute/...`) can only match actions of that namespace, so a request
/// tries only those and the patterns that may match anywhere (`*`, `*/read`).
#[derive(Debug, Clone, Default)]
struct PatternSet {
    patterns: Box<[ActionPattern]>,
    by_namespace: Box<[NamespaceGroup]>,
    /// Indices of the other patterns, ascending.
    anywhere: Box<[u32]>,
}

/// The first segment of an action (all of it when it has no `/`).
#[inline]
pub(crate) fn namespace_of(action: &str) -> &str {
    action.split('/').next().unwrap_or(action)
}

/// The namespace every action matching `pattern` must have, if there is one.
fn pattern_namespace(pattern: &str) -> Option<String> {
    let lower = pattern.to_ascii_lowercase();
    match lower.find('/') {
        Some(i) if !lower[..i].contains('*') => Some(lower[..i].to_string()),
        None if !lower.contains('*') => Some(lower),
        _ => None,
    }
}

impl PatternSet {
    fn new(patterns: &[String]) -> Self {
        let mut by_namespace: Vec<(Box<str>, Vec<u32>)> = Vec::new();
        let mut anywhere = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            let i = i as u32;
            match pattern_namespace(p) {
                Some(ns) => match by_namespace.iter_mut().find(|(n, _)| **n == *ns) {
                    Some((_, idx)) => idx.push(i),
                    None => by_namespace.push((ns.into(), vec![i])),
                },
                None => anywhere.push(i),
            }
        }
        Self {
            patterns: patterns.iter().map(|p| ActionPattern::new(p)).collect(),
            by_namespace: by_namespace
                .into_iter()
                .map(|(n, idx)| (n, idx.into_boxed_slice()))
                .collect(),
            anywhere: anywhere.into_boxed_slice(),
        }
    }

    /// The first pattern, in definition order, that matches `action`.
    #[inline]
    #[cfg(test)]
    fn find(&self, action: &str) -> Option<&ActionPattern> {
        self.find_in(action, namespace_of(action))
    }

    /// [`Self::find`] given `ns`, the action's [`namespace_of`] (computed once per request).
    #[inline]
    fn find_in(&self, action: &str, ns: &str) -> Option<&ActionPattern> {
        let ns = ns.as_bytes();
        let mut best = self
            .by_namespace
            .iter()
            .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(ns))
            .and_then(|(_, idx)| {
                idx.iter()
                    .copied()
                    .find(|&i| self.patterns[i as usize].matches(action))
            });
        for &i in self.anywhere.iter() {
            if best.is_some_and(|b| i > b) {
                break;
            }
            if self.patterns[i as usize].matches(action) {
                best = Some(i);
                break;
            }
        }
        best.map(|i| &self.patterns[i as usize])
    }

    fn heap_bytes(&self) -> usize {
        self.patterns
            .iter()
            .map(|p| std::mem::size_of::<ActionPattern>() + 16 + 2 * p.as_str().len() + 48)
            .sum::<usize>()
            + self
                .by_namespace
                .iter()
                .map(|(n, idx)| 32 + n.len() + 4 * idx.len())
                .sum::<usize>()
            + 4 * self.anywhere.len()
    }
}

/// One permission block, compiled.
#[derive(Debug, Clone)]
struct Block {
    actions: PatternSet,
    not_actions: PatternSet,
    data_actions: PatternSet,
    not_data_actions: PatternSet,
}

impl Block {
    #[inline]
    fn lists(&self, kind: ActionKind) -> (&PatternSet, &PatternSet) {
        match kind {
            ActionKind::Control => (&self.actions, &self.not_actions),
            ActionKind::Data => (&self.data_actions, &self.not_data_actions),
        }
    }
}

/// A role definition compiled for evaluation: its permission blocks as matchers, and where
/// it may be assigned.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRole {
    pub(crate) name: Arc<str>,
    blocks: Box<[Block]>,
    /// The keys (lower case) of the role's `assignableScopes`; `None` when it is assignable
    /// everywhere (a built-in role, or `/` among them).
    assignable: Option<Box<[Box<str>]>>,
}

/// Whether the scope text `inner` is `outer` or below it, ASCII case ignored. Allocates
/// nothing.
#[inline]
pub(crate) fn scope_text_within(inner: &[u8], outer: &[u8]) -> bool {
    outer == b"/"
        || (inner.len() >= outer.len()
            && eq_ignore_case(&inner[..outer.len()], outer)
            && (inner.len() == outer.len() || inner[outer.len()] == b'/'))
}

/// Why a role does or does not grant an action (for explanations).
#[derive(Debug)]
pub(crate) enum RoleVerdict<'r> {
    Granted,
    /// Some block's allow list matched, but its own exclusions removed the action.
    Excluded {
        granted_by: &'r ActionPattern,
        excluded_by: &'r ActionPattern,
    },
    /// No allow list of the requested kind matched; `other_kind` is a pattern of the other
    /// kind that matches the action string (e.g. `*` in `actions` for a data action).
    NotGranted {
        other_kind: Option<&'r ActionPattern>,
    },
}

impl CompiledRole {
    pub(crate) fn compile(role: &RoleDefinition) -> Self {
        let everywhere = role.role_type == RoleType::BuiltInRole
            || role.assignable_scopes.iter().any(|s| s.is_root());
        Self {
            name: Arc::from(role.role_name.as_str()),
            assignable: (!everywhere).then(|| {
                role.assignable_scopes
                    .iter()
                    .map(|s| Box::from(s.key()))
                    .collect()
            }),
            blocks: role
                .permissions
                .iter()
                .map(|p| Block {
                    actions: PatternSet::new(&p.actions),
                    not_actions: PatternSet::new(&p.not_actions),
                    data_actions: PatternSet::new(&p.data_actions),
                    not_data_actions: PatternSet::new(&p.not_data_actions),
                })
                .collect(),
        }
    }

    /// Whether an assignment of this role at `scope` (a scope's text, any casing) is honoured:
    /// `scope` lies at or below one of the role's assignable scopes. An assignment outside
    /// them (left behind by a change of the role, or written around the control plane's
    /// check) grants nothing. No allocation; built-in roles answer at once.
    #[inline]
    pub(crate) fn assignable_at(&self, scope: &str) -> bool {
        match &self.assignable {
            None => true,
            Some(scopes) => scopes
                .iter()
                .any(|s| scope_text_within(scope.as_bytes(), s.as_bytes())),
        }
    }

    /// Whether the role may be assigned at any scope (so [`Self::assignable_at`] needs no
    /// scope).
    #[inline]
    pub(crate) fn assignable_everywhere(&self) -> bool {
        self.assignable.is_none()
    }

    /// The pattern that grants `action`, if any: the union over blocks of
    /// (allowed − excluded), each block subtracting only its own exclusions.
    #[inline]
    pub(crate) fn grants(&self, action: &str, kind: ActionKind) -> Option<&ActionPattern> {
        self.grants_in(action, namespace_of(action), kind)
    }

    /// [`Self::grants`] given the action's [`namespace_of`].
    #[inline]
    pub(crate) fn grants_in(
        &self,
        action: &str,
        ns: &str,
        kind: ActionKind,
    ) -> Option<&ActionPattern> {
        self.blocks.iter().find_map(|b| {
            let (allow, deny) = b.lists(kind);
            let granted = allow.find_in(action, ns)?;
            if deny.find_in(action, ns).is_some() {
                None
            } else {
                Some(granted)
            }
        })
    }

    #[cfg(test)]
    pub(crate) fn verdict(&self, action: &str, kind: ActionKind) -> RoleVerdict<'_> {
        self.verdict_in(action, namespace_of(action), kind)
    }

    /// Why the role does or does not grant `action` (`ns` is its [`namespace_of`]).
    pub(crate) fn verdict_in(&self, action: &str, ns: &str, kind: ActionKind) -> RoleVerdict<'_> {
        if self.grants_in(action, ns, kind).is_some() {
            return RoleVerdict::Granted;
        }
        for b in self.blocks.iter() {
            let (allow, deny) = b.lists(kind);
            if let Some(granted_by) = allow.find_in(action, ns) {
                if let Some(excluded_by) = deny.find_in(action, ns) {
                    return RoleVerdict::Excluded {
                        granted_by,
                        excluded_by,
                    };
                }
            }
        }
        let other = match kind {
            ActionKind::Control => ActionKind::Data,
            ActionKind::Data => ActionKind::Control,
        };
        RoleVerdict::NotGranted {
            other_kind: self.grants_in(action, ns, other),
        }
    }

    /// Approximate heap bytes held by this role's matchers.
    pub(crate) fn heap_bytes(&self) -> usize {
        16 + self.name.len()
            + self.assignable.as_ref().map_or(0, |scopes| {
                scopes.iter().map(|s| 16 + s.len()).sum::<usize>()
            })
            + self
                .blocks
                .iter()
                .map(|b| {
                    std::mem::size_of::<Block>()
                        + b.actions.heap_bytes()
                        + b.not_actions.heap_bytes()
                        + b.data_actions.heap_bytes()
                        + b.not_data_actions.heap_bytes()
                })
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ps: &[&str]) -> PatternSet {
        PatternSet::new(&ps.iter().map(|p| (*p).to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn namespace_index_keeps_first_match_in_definition_order() {
        let s = set(&[
            "Microsoft.Compute/disks/read",
            "*/read",
            "microsoft.compute/*",
            "read",
        ]);
        let found = |a: &str| s.find(a).map(|p| p.as_str().to_string());
        assert_eq!(
            found("Microsoft.Compute/disks/read").as_deref(),
            Some("Microsoft.Compute/disks/read")
        );
        assert_eq!(
            found("MICROSOFT.COMPUTE/vms/read").as_deref(),
            Some("*/read")
        );
        assert_eq!(
            found("Microsoft.Compute/vms/write").as_deref(),
            Some("microsoft.compute/*")
        );
        assert_eq!(
            found("Microsoft.KeyVault/vaults/read").as_deref(),
            Some("*/read")
        );
        assert_eq!(found("read").as_deref(), Some("read"));
        assert_eq!(found("Microsoft.KeyVault/vaults/write"), None);
        assert_eq!(pattern_namespace("Microsoft.*/read"), None);
        assert_eq!(pattern_namespace("a/*/b").as_deref(), Some("a"));
        assert_eq!(pattern_namespace("/*/x").as_deref(), Some(""));
        assert_eq!(pattern_namespace("*"), None);
    }
}

/// A role slot in the index: the definition may be missing (deleted, or not loaded yet)
/// while assignments still name it.
#[derive(Debug)]
pub(crate) struct RoleSlot {
    pub(crate) id: Uuid,
    pub(crate) role: Option<CompiledRole>,
    /// Live assignments naming this role.
    pub(crate) users: u32,
}
