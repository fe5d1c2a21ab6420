//! Role definitions compiled into matchers.

use std::sync::Arc;

use lanyard_domain::RoleDefinition;
use uuid::Uuid;

use crate::decision::ActionKind;
use crate::pattern::ActionPattern;

/// One permission block, compiled.
#[derive(Debug, Clone)]
struct Block {
    actions: Box<[ActionPattern]>,
    not_actions: Box<[ActionPattern]>,
    data_actions: Box<[ActionPattern]>,
    not_data_actions: Box<[ActionPattern]>,
}

impl Block {
    #[inline]
    fn lists(&self, kind: ActionKind) -> (&[ActionPattern], &[ActionPattern]) {
        match kind {
            ActionKind::Control => (&self.actions, &self.not_actions),
            ActionKind::Data => (&self.data_actions, &self.not_data_actions),
        }
    }
}

/// A role definition compiled for evaluation: its permission blocks as matchers.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRole {
    pub(crate) name: Arc<str>,
    blocks: Box<[Block]>,
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

fn compile_list(patterns: &[String]) -> Box<[ActionPattern]> {
    patterns.iter().map(|p| ActionPattern::new(p)).collect()
}

impl CompiledRole {
    pub(crate) fn compile(role: &RoleDefinition) -> Self {
        Self {
            name: Arc::from(role.role_name.as_str()),
            blocks: role
                .permissions
                .iter()
                .map(|p| Block {
                    actions: compile_list(&p.actions),
                    not_actions: compile_list(&p.not_actions),
                    data_actions: compile_list(&p.data_actions),
                    not_data_actions: compile_list(&p.not_data_actions),
                })
                .collect(),
        }
    }

    /// The pattern that grants `action`, if any: the union over blocks of
    /// (allowed − excluded), each block subtracting only its own exclusions.
    #[inline]
    pub(crate) fn grants(&self, action: &str, kind: ActionKind) -> Option<&ActionPattern> {
        self.blocks.iter().find_map(|b| {
            let (allow, deny) = b.lists(kind);
            let granted = allow.iter().find(|p| p.matches(action))?;
            if deny.iter().any(|p| p.matches(action)) {
                None
            } else {
                Some(granted)
            }
        })
    }

    pub(crate) fn verdict(&self, action: &str, kind: ActionKind) -> RoleVerdict<'_> {
        if self.grants(action, kind).is_some() {
            return RoleVerdict::Granted;
        }
        for b in self.blocks.iter() {
            let (allow, deny) = b.lists(kind);
            if let Some(granted_by) = allow.iter().find(|p| p.matches(action)) {
                if let Some(excluded_by) = deny.iter().find(|p| p.matches(action)) {
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
            other_kind: self.grants(action, other),
        }
    }

    /// Approximate heap bytes held by this role's matchers.
    pub(crate) fn heap_bytes(&self) -> usize {
        let pattern_bytes = |ps: &[ActionPattern]| -> usize {
            ps.iter()
                .map(|p| std::mem::size_of::<ActionPattern>() + 16 + 2 * p.as_str().len() + 32)
                .sum::<usize>()
        };
        16 + self.name.len()
            + self
                .blocks
                .iter()
                .map(|b| {
                    std::mem::size_of::<Block>()
                        + pattern_bytes(&b.actions)
                        + pattern_bytes(&b.not_actions)
                        + pattern_bytes(&b.data_actions)
                        + pattern_bytes(&b.not_data_actions)
                })
                .sum::<usize>()
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
