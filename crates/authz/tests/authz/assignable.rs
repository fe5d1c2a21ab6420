//! `check_assignable` errors, and checks that ignore assignments outside their role's
//! assignable scopes.

use lanyard_authz::{check_assignable, reference, AccessRequest, Decision, MissReason};
use lanyard_domain::{builtin, ResourceId};
use uuid::Uuid;

use crate::kit::{assignment, block, builtin_id, custom_role, rid, Pair};

#[test]
fn built_in_roles_are_assignable_anywhere() {
    for role in builtin::built_in_roles() {
        for scope in [
            "/",
            "/subscriptions/s",
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.KeyVault/vaults/v/secrets/x",
        ] {
            assert!(
                check_assignable(&role, &rid(scope)).is_ok(),
                "{} at {scope}",
                role.role_name
            );
        }
    }
}

#[test]
fn error_names_role_scope_and_where_it_may_go() {
    let role = custom_role(
        Uuid::from_u128(7),
        "Ops",
        vec![block(&["*/read"], &[], &[], &[])],
        vec![
            rid("/subscriptions/a"),
            rid("/subscriptions/b/resourceGroups/rg"),
        ],
    );
    assert!(check_assignable(&role, &rid("/subscriptions/A/resourcegroups/x")).is_ok());
    let err = check_assignable(&role, &rid("/subscriptions/b")).unwrap_err();
    assert_eq!(err.role_id, Uuid::from_u128(7));
    assert_eq!(err.scope, "/subscriptions/b");
    assert_eq!(
        err.to_string(),
        "role `Ops` (`00000000-0000-0000-0000-000000000007`) cannot be assigned at `/subscriptions/b`: \
         it may be assigned only at or below `/subscriptions/a`, `/subscriptions/b/resourceGroups/rg`"
    );
    // A sibling whose name merely starts with an assignable one is outside it.
    assert!(check_assignable(&role, &rid("/subscriptions/ab")).is_err());
}

// ---- checks ignore assignments outside their role's assignable scopes ----

const SUB: &str = "/subscriptions/s1";
const RG: &str = "/subscriptions/s1/resourceGroups/rg1";
const WRITE_GROUP: &str = "Microsoft.Resources/subscriptions/resourceGroups/write";

/// The attack of a narrowed role: a custom role assigned at the subscription is rewritten
/// to be assignable only in one resource group. The subscription-wide assignment stays in
/// storage; the engine must not honour it, neither at the subscription nor below.
#[test]
fn an_assignment_outside_the_roles_assignable_scopes_grants_nothing() {
    let mut pair = Pair::with_builtins();
    let app = Uuid::from_u128(1);
    let role_id = Uuid::from_u128(0xc1);
    let assignment_id = Uuid::from_u128(0xa1);
    pair.upsert_role(&custom_role(
        role_id,
        "Group reader",
        vec![block(&["*/read"], &[], &[], &[])],
        vec![rid(SUB)],
    ));
    pair.add(&assignment(assignment_id, app, role_id, &rid(SUB)));
    let sub = rid(SUB);
    let rg = rid(RG);
    let read_at = |pair: &Pair, scope| {
        let req = AccessRequest::control(
            app,
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            scope,
        );
        (
            pair.index.allows(&req),
            reference::is_allowed(&pair.env, &req),
        )
    };
    assert_eq!(read_at(&pair, &sub), (true, true));

    // Rewritten with `*` and assignable only at the group.
    pair.upsert_role(&custom_role(
        role_id,
        "Group reader",
        vec![block(&["*"], &[], &[], &[])],
        vec![rid(RG)],
    ));
    for scope in [&sub, &rg] {
        let write = AccessRequest::control(app, WRITE_GROUP, scope);
        assert!(!pair.index.allows(&write), "{scope}");
        assert!(!pair.index.check(&write).is_allowed(), "{scope}");
        assert!(!reference::is_allowed(&pair.env, &write), "{scope}");
        assert_eq!(read_at(&pair, scope), (false, false), "{scope}");
    }

    // The explanation says why the assignment counts for nothing.
    let write = AccessRequest::control(app, WRITE_GROUP, &rg);
    let Decision::Deny(d) = pair.index.check(&write) else {
        panic!("allowed");
    };
    assert_eq!(d.misses.len(), 1, "{d:?}");
    assert!(matches!(
        d.misses[0].reason,
        MissReason::NotAssignable { .. }
    ));
    let text = d.explain_as(Some("app1"));
    assert!(
        text.contains(&format!(
            "`app1` holds Group reader at `{SUB}`, which grants `{WRITE_GROUP}`, but that assignment is ignored: the role is not assignable at `{SUB}`"
        )),
        "{text}"
    );
    // Also when the ignored assignment does not cover the request (it would otherwise read
    // as "the right role at the wrong scope").
    let elsewhere = rid("/subscriptions/s2");
    let Decision::Deny(d) = pair
        .index
        .check(&AccessRequest::control(app, WRITE_GROUP, &elsewhere))
    else {
        panic!("allowed");
    };
    assert!(
        matches!(d.misses[0].reason, MissReason::NotAssignable { .. }),
        "{d:?}"
    );

    // An assignment inside the new assignable scope is honoured, at and below it only.
    pair.add(&assignment(Uuid::from_u128(0xa2), app, role_id, &rid(RG)));
    assert!(pair
        .index
        .allows(&AccessRequest::control(app, WRITE_GROUP, &rg)));
    assert!(reference::is_allowed(
        &pair.env,
        &AccessRequest::control(app, WRITE_GROUP, &rg)
    ));
    assert!(!pair
        .index
        .allows(&AccessRequest::control(app, WRITE_GROUP, &sub)));

    // Widened back: the subscription-wide assignment counts again.
    pair.upsert_role(&custom_role(
        role_id,
        "Group reader",
        vec![block(&["*"], &[], &[], &[])],
        vec![rid(RG), rid("/SUBSCRIPTIONS/S1")],
    ));
    assert!(pair
        .index
        .allows(&AccessRequest::control(app, WRITE_GROUP, &sub)));
    assert!(reference::is_allowed(
        &pair.env,
        &AccessRequest::control(app, WRITE_GROUP, &sub)
    ));
}

/// Assignable scopes match whole segments, ignoring case; through a group as directly.
#[test]
fn assignability_matches_segments_case_insensitively_and_through_groups() {
    let mut pair = Pair::with_builtins();
    let (app, group) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let role_id = Uuid::from_u128(0xc1);
    pair.upsert_role(&custom_role(
        role_id,
        "Vault admin",
        vec![block(&["Microsoft.KeyVault/*"], &[], &[], &[])],
        vec![rid("/subscriptions/S1/resourcegroups/RG1")],
    ));
    pair.set_group(group, &[app]);
    // `rg10` merely starts with `rg1`: outside.
    pair.add(&assignment(
        Uuid::from_u128(0xa1),
        group,
        role_id,
        &rid("/subscriptions/s1/resourceGroups/rg10"),
    ));
    let vault10 =
        rid("/subscriptions/s1/resourceGroups/rg10/providers/Microsoft.KeyVault/vaults/kv");
    let req = AccessRequest::control(app, "Microsoft.KeyVault/vaults/write", &vault10);
    assert!(!pair.index.allows(&req));
    assert!(!reference::is_allowed(&pair.env, &req));
    pair.add(&assignment(
        Uuid::from_u128(0xa2),
        group,
        role_id,
        &rid("/SUBSCRIPTIONS/s1/resourceGroups/Rg1/providers/Microsoft.KeyVault/vaults/kv"),
    ));
    let vault1 = rid("/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/kv");
    let req = AccessRequest::control(app, "Microsoft.KeyVault/vaults/write", &vault1);
    assert!(pair.index.allows(&req));
    assert!(reference::is_allowed(&pair.env, &req));
    let Decision::Allow(g) = pair.index.check(&req) else {
        panic!("denied");
    };
    assert_eq!(g.assignment_id, Uuid::from_u128(0xa2));
    assert_eq!(g.assignee_id, group);
}

/// Built-in roles are honoured at any scope, including `/`.
#[test]
fn built_in_assignments_are_honoured_everywhere() {
    let mut pair = Pair::with_builtins();
    let app = Uuid::from_u128(1);
    pair.add(&assignment(
        Uuid::from_u128(0xa1),
        app,
        builtin_id("Owner"),
        &ResourceId::root(),
    ));
    let deep =
        rid("/subscriptions/s/resourceGroups/g/providers/Microsoft.KeyVault/vaults/v/secrets/x");
    let req = AccessRequest::control(app, "Microsoft.KeyVault/vaults/write", &deep);
    assert!(pair.index.allows(&req));
    assert!(reference::is_allowed(&pair.env, &req));
}
