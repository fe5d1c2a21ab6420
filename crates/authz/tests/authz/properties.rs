//! Property tests: coverage of children, monotonicity of adding and removing, and
//! notActions subtracting within their role only.

use lanyard_authz::reference::{self, wildcard_match};
use lanyard_authz::{AccessRequest, ActionKind};
use lanyard_domain::{Permission, ResourceId};
use proptest::prelude::*;
use uuid::Uuid;

use crate::kit::{assignment, custom_role, scope_vocabulary, Pair, ACTIONS, PATTERNS};

const PRINCIPALS: usize = 4;
const GROUPS: usize = 2;
const ROLES: usize = 4;

fn principal(i: usize) -> Uuid {
    Uuid::from_u128(0x100 + i as u128)
}

fn role_id(i: usize) -> Uuid {
    Uuid::from_u128(0x200 + i as u128)
}

fn patterns(max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop::sample::select(PATTERNS).prop_map(str::to_string),
        0..=max,
    )
}

fn permission() -> impl Strategy<Value = Permission> {
    (patterns(3), patterns(2), patterns(2), patterns(1)).prop_map(|(a, n, d, nd)| Permission {
        actions: a,
        not_actions: n,
        data_actions: d,
        not_data_actions: nd,
    })
}

#[derive(Debug, Clone)]
struct Spec {
    roles: Vec<Vec<Permission>>,
    /// (holder, role, scope): holders past `PRINCIPALS` are groups.
    assignments: Vec<(usize, usize, usize)>,
    /// Members of each group, as holder numbers.
    groups: Vec<Vec<usize>>,
}

fn spec() -> impl Strategy<Value = Spec> {
    let scopes = scope_vocabulary().len();
    (
        prop::collection::vec(prop::collection::vec(permission(), 1..=2), ROLES),
        prop::collection::vec((0..PRINCIPALS + GROUPS, 0..ROLES, 0..scopes), 0..10),
        prop::collection::vec(prop::collection::vec(0..PRINCIPALS + GROUPS, 0..3), GROUPS),
    )
        .prop_map(|(roles, assignments, groups)| Spec {
            roles,
            assignments,
            groups,
        })
}

fn build(spec: &Spec) -> Pair {
    let mut pair = Pair::with_builtins();
    for (i, blocks) in spec.roles.iter().enumerate() {
        pair.upsert_role(&custom_role(
            role_id(i),
            &format!("r{i}"),
            blocks.clone(),
            vec![ResourceId::root()],
        ));
    }
    let scopes = scope_vocabulary();
    for (i, &(holder, role, scope)) in spec.assignments.iter().enumerate() {
        pair.add(&assignment(
            Uuid::from_u128(0x1000 + i as u128),
            principal(holder),
            role_id(role),
            &scopes[scope],
        ));
    }
    for (g, members) in spec.groups.iter().enumerate() {
        let ms: Vec<Uuid> = members.iter().map(|&m| principal(m)).collect();
        pair.set_group(principal(PRINCIPALS + g), &ms);
    }
    pair
}

/// Every (principal, action, kind, scope) over the vocabularies.
fn all_requests(mut f: impl FnMut(AccessRequest<'_>)) {
    let scopes = scope_vocabulary();
    for p in 0..PRINCIPALS + GROUPS {
        for action in ACTIONS {
            for kind in [ActionKind::Control, ActionKind::Data] {
                for scope in &scopes {
                    f(AccessRequest {
                        principal: principal(p),
                        action,
                        kind,
                        scope,
                    });
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_parent_scope_assignment_covers_its_children(spec in spec()) {
        let pair = build(&spec);
        let scopes = scope_vocabulary();
        all_requests(|req| {
            if pair.index.allows(&req) {
                for child in scopes.iter().filter(|s| s.is_within(req.scope)) {
                    let below = AccessRequest { scope: child, ..req };
                    assert!(pair.index.allows(&below), "allowed at {} but not at {child}", req.scope);
                }
            }
        });
    }

    #[test]
    fn adding_an_assignment_never_removes_access(
        spec in spec(),
        extra in (0..PRINCIPALS + GROUPS, 0..ROLES, 0..scope_vocabulary().len()),
    ) {
        let mut pair = build(&spec);
        let mut before = Vec::new();
        all_requests(|req| before.push(pair.index.allows(&req)));
        let scopes = scope_vocabulary();
        pair.add(&assignment(Uuid::from_u128(0xffff), principal(extra.0), role_id(extra.1), &scopes[extra.2]));
        let mut i = 0;
        all_requests(|req| {
            assert!(!before[i] || pair.index.allows(&req), "lost {req:?}");
            i += 1;
        });
    }

    #[test]
    fn removing_an_assignment_never_adds_access(spec in spec(), which in any::<prop::sample::Index>()) {
        prop_assume!(!spec.assignments.is_empty());
        let mut pair = build(&spec);
        let mut before = Vec::new();
        all_requests(|req| before.push(pair.index.allows(&req)));
        let k = which.index(spec.assignments.len());
        prop_assert!(pair.remove(Uuid::from_u128(0x1000 + k as u128)));
        let mut i = 0;
        all_requests(|req| {
            assert!(before[i] || !pair.index.allows(&req), "gained {req:?}");
            i += 1;
        });
    }

    #[test]
    fn adding_a_group_member_never_removes_access(spec in spec(), group in 0..GROUPS, member in 0..PRINCIPALS) {
        let mut pair = build(&spec);
        let mut before = Vec::new();
        all_requests(|req| before.push(pair.index.allows(&req)));
        let mut members: Vec<Uuid> = spec.groups[group].iter().map(|&m| principal(m)).collect();
        members.push(principal(member));
        pair.set_group(principal(PRINCIPALS + group), &members);
        let mut i = 0;
        all_requests(|req| {
            assert!(!before[i] || pair.index.allows(&req), "lost {req:?}");
            i += 1;
        });
    }

    #[test]
    fn not_actions_always_subtract_within_their_role(
        block in permission(),
        scope in 0..scope_vocabulary().len(),
        other in permission(),
    ) {
        let scopes = scope_vocabulary();
        let p = principal(0);
        let mut pair = Pair::with_builtins();
        pair.upsert_role(&custom_role(role_id(0), "one block", vec![block.clone()], vec![ResourceId::root()]));
        pair.add(&assignment(Uuid::from_u128(1), p, role_id(0), &scopes[scope]));
        for action in ACTIONS {
            for (kind, excluded) in [(ActionKind::Control, &block.not_actions), (ActionKind::Data, &block.not_data_actions)] {
                if excluded.iter().any(|n| wildcard_match(n, action)) {
                    let req = AccessRequest { principal: p, action, kind, scope: &scopes[scope] };
                    prop_assert!(!pair.index.allows(&req), "{action} excluded by {excluded:?} but allowed");
                }
            }
        }
        // Another role's grant is not cut back by this role's exclusions.
        pair.upsert_role(&custom_role(role_id(1), "other", vec![other.clone()], vec![ResourceId::root()]));
        pair.add(&assignment(Uuid::from_u128(2), p, role_id(1), &scopes[scope]));
        for action in ACTIONS {
            for kind in [ActionKind::Control, ActionKind::Data] {
                let req = AccessRequest { principal: p, action, kind, scope: &scopes[scope] };
                let other_grants = reference::role_grants(&custom_role(role_id(1), "other", vec![other.clone()], vec![]), action, kind);
                if other_grants {
                    prop_assert!(pair.index.allows(&req), "{action} granted by the other role but denied");
                }
            }
        }
    }
}
