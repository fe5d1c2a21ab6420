//! A naive evaluator written for clarity, not speed: it walks every assignment and
//! matches patterns with a textbook table. It returns only allow/deny. It is the oracle
//! for the differential tests here and for the reliability suite, which compares HTTP
//! answers against it.

use std::collections::{BTreeMap, BTreeSet};

use lanyard_domain::{Permission, ResourceId, RoleAssignment, RoleDefinition, RoleType};
use uuid::Uuid;

use crate::decision::{AccessRequest, ActionKind};

/// Everything a decision depends on.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// Role definitions; when two share an id, the first counts.
    pub roles: Vec<RoleDefinition>,
    pub assignments: Vec<RoleAssignment>,
    /// Group object id → direct members (members may be groups).
    pub groups: BTreeMap<Uuid, Vec<Uuid>>,
}

/// Whether `request` is allowed in `env`: some assignment to the principal or one of its
/// groups, at the request's scope or above, has a role that may be assigned at the
/// assignment's scope and whose permission block of the request's kind allows the action
/// and does not exclude it.
pub fn is_allowed(env: &Environment, request: &AccessRequest<'_>) -> bool {
    let identities = identities_of(env, request.principal);
    env.assignments.iter().any(|assignment| {
        identities.contains(&assignment.principal_id)
            && request.scope.is_within(&assignment.scope)
            && env
                .roles
                .iter()
                .find(|role| role.id == assignment.role_definition_id)
                .is_some_and(|role| {
                    assignable_at(role, &assignment.scope)
                        && role_grants(role, request.action, request.kind)
                })
    })
}

/// Whether `role` may be assigned at `scope`: a built-in role anywhere, a custom role at or
/// below one of its `assignableScopes`.
pub fn assignable_at(role: &RoleDefinition, scope: &ResourceId) -> bool {
    role.role_type == RoleType::BuiltInRole
        || role.assignable_scopes.iter().any(|s| scope.is_within(s))
}

/// The principal and every group it belongs to, directly or through other groups.
pub fn identities_of(env: &Environment, principal: Uuid) -> BTreeSet<Uuid> {
    let mut identities = BTreeSet::from([principal]);
    loop {
        let before = identities.len();
        for (group, members) in &env.groups {
            if members.iter().any(|m| identities.contains(m)) {
                identities.insert(*group);
            }
        }
        if identities.len() == before {
            return identities;
        }
    }
}

/// Whether `role` grants `action` of `kind`.
pub fn role_grants(role: &RoleDefinition, action: &str, kind: ActionKind) -> bool {
    role.permissions
        .iter()
        .any(|block| block_grants(block, action, kind))
}

fn block_grants(block: &Permission, action: &str, kind: ActionKind) -> bool {
    let (allowed, excluded) = match kind {
        ActionKind::Control => (&block.actions, &block.not_actions),
        ActionKind::Data => (&block.data_actions, &block.not_data_actions),
    };
    allowed.iter().any(|p| wildcard_match(p, action))
        && !excluded.iter().any(|p| wildcard_match(p, action))
}

/// Whether `text` matches `pattern`: `*` stands for any run of characters, and a `/*/`
/// may also stand for a single `/` (an empty path segment). ASCII case is ignored.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    if star_match(pattern, text) {
        return true;
    }
    // Try each `/*/` read as `/`; recursion covers patterns with several.
    pattern.match_indices("/*/").any(|(i, _)| {
        let collapsed = format!("{}/{}", &pattern[..i], &pattern[i + 3..]);
        wildcard_match(&collapsed, text)
    })
}

/// Plain glob matching where `*` stands for any run of characters.
fn star_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    // matches[i][j]: the first i pattern characters match the first j text characters.
    let mut matches = vec![vec![false; t.len() + 1]; p.len() + 1];
    matches[0][0] = true;
    for i in 1..=p.len() {
        if p[i - 1] == '*' {
            matches[i][0] = matches[i - 1][0];
        }
        for j in 1..=t.len() {
            matches[i][j] = if p[i - 1] == '*' {
                matches[i - 1][j] || matches[i][j - 1]
            } else {
                matches[i - 1][j - 1] && p[i - 1] == t[j - 1]
            };
        }
    }
    matches[p.len()][t.len()]
}

#[cfg(test)]
mod tests {
    use super::wildcard_match;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("*/read", "A/b/READ"));
        assert!(!wildcard_match("*/read", "read"));
        assert!(wildcard_match("a*b*c", "aXbYbZc"));
        assert!(!wildcard_match("ab*ba", "aba"));
        assert!(wildcard_match("a/*/b", "a/b"));
        assert!(wildcard_match("a/*/*/b", "A/B"));
        assert!(!wildcard_match("a/*/b", "ab"));
    }
}
