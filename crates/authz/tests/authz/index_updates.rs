//! Incremental updates and lookups of the index.

use lanyard_authz::{AccessIndex, AccessRequest};
use uuid::Uuid;

use crate::kit::{assignment, builtin_id, rid, Pair};

const RG: &str = "/subscriptions/s/resourceGroups/rg";
const VM: &str =
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm";

#[test]
fn lookups_by_principal_and_scope() {
    let mut pair = Pair::with_builtins();
    let (p, q) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let reader = builtin_id("Reader");
    pair.add(&assignment(Uuid::from_u128(10), p, reader, &rid(RG)));
    pair.add(&assignment(Uuid::from_u128(11), p, reader, &rid(VM)));
    pair.add(&assignment(
        Uuid::from_u128(12),
        q,
        reader,
        &rid("/subscriptions/s"),
    ));
    pair.add(&assignment(
        Uuid::from_u128(13),
        q,
        reader,
        &rid("/subscriptions/t"),
    ));
    let idx = &pair.index;
    assert_eq!(idx.len(), 4);
    let mut mine: Vec<_> = idx
        .assignments_for(p)
        .map(|a| (a.id.as_u128(), a.scope.to_string()))
        .collect();
    mine.sort();
    assert_eq!(mine, vec![(10, RG.to_string()), (11, VM.to_string())]);
    assert_eq!(idx.assignments_for(Uuid::from_u128(99)).count(), 0);
    let at: Vec<_> = idx
        .assignments_at(&rid(&RG.to_uppercase()))
        .map(|a| a.id.as_u128())
        .collect();
    assert_eq!(at, vec![10]);
    let mut covering: Vec<_> = idx
        .assignments_covering(&rid(VM))
        .map(|a| a.id.as_u128())
        .collect();
    covering.sort();
    assert_eq!(covering, vec![10, 11, 12]);
    let a = idx.assignments_at(&rid(VM)).next().unwrap();
    assert_eq!((a.principal_id, a.role_definition_id), (p, reader));
}

#[test]
fn replacing_and_removing_keep_the_index_consistent() {
    let mut pair = Pair::with_builtins();
    let p = Uuid::from_u128(1);
    let vm = rid(VM);
    let write = AccessRequest::control(p, "Microsoft.Compute/virtualMachines/write", &vm);
    // Same id twice: the second replaces the first.
    pair.add(&assignment(
        Uuid::from_u128(10),
        p,
        builtin_id("Reader"),
        &rid(RG),
    ));
    pair.add(&assignment(
        Uuid::from_u128(10),
        p,
        builtin_id("Contributor"),
        &rid(RG),
    ));
    assert_eq!(pair.index.len(), 1);
    assert!(pair.index.allows(&write));
    assert!(!pair.remove(Uuid::from_u128(11)));
    assert!(pair.remove(Uuid::from_u128(10)));
    assert!(pair.index.is_empty());
    assert!(!pair.index.allows(&write));
    // Slots, scopes and principals freed above are reused without mixing anything up.
    for i in 0..50u128 {
        let scope = if i % 2 == 0 {
            rid(RG)
        } else {
            rid(&format!(
                "{RG}/providers/Microsoft.Compute/virtualMachines/vm{i}"
            ))
        };
        pair.add(&assignment(
            Uuid::from_u128(100 + i),
            Uuid::from_u128(i % 7),
            builtin_id("Reader"),
            &scope,
        ));
    }
    for i in (0..50u128).step_by(3) {
        assert!(pair.remove(Uuid::from_u128(100 + i)));
    }
    for i in 0..50u128 {
        let q = Uuid::from_u128(i % 7);
        let target = rid(&format!(
            "{RG}/providers/Microsoft.Compute/virtualMachines/vm{i}"
        ));
        let req = AccessRequest::control(q, "Microsoft.Compute/virtualMachines/read", &target);
        assert_eq!(
            pair.index.allows(&req),
            lanyard_authz::reference::is_allowed(&pair.env, &req),
            "principal {i}"
        );
    }
    assert_eq!(pair.index.len(), pair.env.assignments.len());
}

#[test]
fn removing_a_principals_assignments() {
    let mut idx = AccessIndex::with_roles(&lanyard_domain::builtin::built_in_roles());
    let (p, q) = (Uuid::from_u128(1), Uuid::from_u128(2));
    for i in 0..5u128 {
        idx.add_assignment(&assignment(
            Uuid::from_u128(10 + i),
            p,
            builtin_id("Owner"),
            &rid(RG),
        ));
    }
    idx.add_assignment(&assignment(
        Uuid::from_u128(20),
        q,
        builtin_id("Owner"),
        &rid(RG),
    ));
    assert_eq!(idx.remove_assignments_of_principal(p), 5);
    assert_eq!(idx.remove_assignments_of_principal(p), 0);
    assert_eq!(idx.len(), 1);
    let vm = rid(VM);
    assert!(!idx.allows(&AccessRequest::control(
        p,
        "Microsoft.Compute/virtualMachines/read",
        &vm
    )));
    assert!(idx.allows(&AccessRequest::control(
        q,
        "Microsoft.Compute/virtualMachines/read",
        &vm
    )));
}

#[test]
fn groups_are_settable_and_queryable() {
    let mut idx = AccessIndex::new();
    let (g, h, p) = (
        Uuid::from_u128(100),
        Uuid::from_u128(101),
        Uuid::from_u128(1),
    );
    idx.set_group_members(g, &[p, p, h]);
    idx.set_group_members(h, &[g]);
    let mut members = idx.group_members(g);
    members.sort();
    assert_eq!(members, vec![p, h]);
    let mut groups = idx.groups_of(p);
    groups.sort();
    assert_eq!(groups, vec![g, h]);
    idx.set_group_members(g, &[]);
    assert!(idx.groups_of(p).is_empty());
    assert!(idx.groups_of(h).is_empty());
    assert_eq!(idx.group_members(h), vec![g]);
}

#[test]
fn roles_may_arrive_after_assignments() {
    let mut idx = AccessIndex::new();
    let p = Uuid::from_u128(1);
    let reader = lanyard_domain::builtin::built_in_by_name("Reader").unwrap();
    idx.add_assignment(&assignment(Uuid::from_u128(10), p, reader.id, &rid(RG)));
    let vm = rid(VM);
    let req = AccessRequest::control(p, "Microsoft.Compute/virtualMachines/read", &vm);
    assert!(!idx.allows(&req));
    assert!(!idx.has_role(reader.id));
    idx.upsert_role(&reader);
    assert!(idx.allows(&req));
    assert!(idx.remove_role(reader.id));
    assert!(!idx.remove_role(reader.id));
    assert!(!idx.allows(&req));
}

#[test]
fn memory_usage_is_accounted() {
    let mut idx = AccessIndex::with_roles(&lanyard_domain::builtin::built_in_roles());
    let empty = idx.memory_usage();
    assert!(empty.roles > 0);
    assert_eq!(empty.assignments, 0);
    for i in 0..1000u128 {
        let scope = rid(&format!(
            "{RG}/providers/Microsoft.Compute/virtualMachines/vm{}",
            i % 100
        ));
        idx.add_assignment(&assignment(
            Uuid::from_u128(1_000 + i),
            Uuid::from_u128(i % 300),
            builtin_id("Reader"),
            &scope,
        ));
    }
    let full = idx.memory_usage();
    assert_eq!(
        full.total,
        full.assignments + full.principals + full.scopes + full.roles
    );
    let per = (full.total - empty.total) / 1000;
    assert!((40..400).contains(&per), "{per} bytes per assignment");
}

#[test]
fn very_deep_scopes_are_compared_by_text() {
    let mut pair = Pair::with_builtins();
    let p = Uuid::from_u128(1);
    let mut deep = rid(VM);
    for i in 0..20 {
        deep = deep.with_child("nested", &format!("n{i}"));
    }
    let deeper = deep.with_child("leaf", "x");
    let sibling = rid(&deep.as_str().replace("/n19", "/n19x"));
    pair.add(&assignment(
        Uuid::from_u128(10),
        p,
        builtin_id("Reader"),
        &deep,
    ));
    pair.add(&assignment(
        Uuid::from_u128(11),
        p,
        builtin_id("Contributor"),
        &rid(RG),
    ));
    for (scope, action, expected) in [
        (&deeper, "Microsoft.Compute/virtualMachines/read", true),
        (&deep, "Microsoft.Compute/virtualMachines/read", true),
        (&sibling, "Microsoft.Compute/virtualMachines/read", true),
        (
            &sibling,
            "Microsoft.Authorization/roleAssignments/write",
            false,
        ),
        (&deeper, "Microsoft.Compute/virtualMachines/write", true),
    ] {
        let req = AccessRequest::control(p, action, scope);
        assert_eq!(pair.index.allows(&req), expected, "{action} at {scope}");
        assert_eq!(
            lanyard_authz::reference::is_allowed(&pair.env, &req),
            expected
        );
    }
    assert!(pair.remove(Uuid::from_u128(11)));
    let req = AccessRequest::control(p, "Microsoft.Compute/virtualMachines/read", &sibling);
    assert!(!pair.index.allows(&req));
    let req = AccessRequest::control(p, "Microsoft.Compute/virtualMachines/read", &deeper);
    assert!(pair.index.allows(&req));
}
