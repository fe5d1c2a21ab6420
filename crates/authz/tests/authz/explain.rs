//! The text of explained decisions.

use lanyard_authz::{AccessRequest, Decision, Denial, MissReason};
use uuid::Uuid;

use crate::kit::{assignment, builtin_id, rid, Pair};

const VAULT: &str = "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/kv1";
const GET: &str = "Microsoft.KeyVault/vaults/secrets/getSecret/action";
const SET: &str = "Microsoft.KeyVault/vaults/secrets/setSecret/action";

#[test]
fn grant_carries_assignment_role_scope_and_pattern() {
    let mut pair = Pair::with_builtins();
    let (app, a) = (Uuid::from_u128(1), Uuid::from_u128(100));
    pair.add(&assignment(
        a,
        app,
        builtin_id("Key Vault Secrets User"),
        &rid("/subscriptions/s/resourceGroups/rg1"),
    ));
    let vault = rid(VAULT);
    let Decision::Allow(g) = pair.index.check(&AccessRequest::data(app, GET, &vault)) else {
        panic!("denied");
    };
    assert_eq!(g.assignment_id, a);
    assert_eq!(g.role_id, builtin_id("Key Vault Secrets User"));
    assert_eq!(&*g.role_name, "Key Vault Secrets User");
    assert_eq!(&*g.assignment_scope, "/subscriptions/s/resourceGroups/rg1");
    assert_eq!(&*g.granted_by, GET);
    assert_eq!(g.via_group(), None);
    assert_eq!(
        g.explain_as(Some("app1")),
        format!(
            "`app1` may perform data action `{GET}` on `{VAULT}`: it holds Key Vault Secrets User at \
             `/subscriptions/s/resourceGroups/rg1` (assignment `{a}`), whose dataActions entry `{GET}` grants it"
        )
    );
    // Without a name, the object id stands in.
    assert!(Decision::Allow(g)
        .to_string()
        .starts_with(&format!("`{app}` may perform")));
}

#[test]
fn denial_lists_wrong_scope_and_insufficient_role() {
    let mut pair = Pair::with_builtins();
    let app = Uuid::from_u128(1);
    pair.add(&assignment(
        Uuid::from_u128(100),
        app,
        builtin_id("Key Vault Secrets User"),
        &rid("/subscriptions/s/resourceGroups/rg2"),
    ));
    pair.add(&assignment(
        Uuid::from_u128(101),
        app,
        builtin_id("Reader"),
        &rid(VAULT),
    ));
    let vault = rid(VAULT);
    let Decision::Deny(d) = pair.index.check(&AccessRequest::data(app, GET, &vault)) else {
        panic!("allowed");
    };
    assert_eq!(d.assignments_considered, 2);
    assert_eq!(d.misses.len(), 2);
    assert!(matches!(d.misses[0].reason, MissReason::OutOfScope { .. }));
    assert_eq!(d.misses[1].reason, MissReason::NotGranted);
    assert_eq!(
        d.reason_as(Some("app1")),
        format!(
            "`app1` holds Key Vault Secrets User at `/subscriptions/s/resourceGroups/rg2`, which grants `{GET}` there; \
             the request is for `kv1` in resource group `rg1`; \
             `app1` holds Reader at `{VAULT}`, which does not grant `{GET}`"
        )
    );
    assert!(d.explain_as(Some("app1")).starts_with(&format!(
        "`app1` may not perform data action `{GET}` on `{VAULT}`: "
    )));

    let Decision::Deny(d) = pair.index.check(&AccessRequest::data(app, SET, &vault)) else {
        panic!("allowed");
    };
    // Secrets User does not grant setSecret anywhere, so only the covering Reader is near.
    assert_eq!(d.misses.len(), 1);
    assert!(d.explain().contains(&format!(
        "holds Reader at `{VAULT}`, which does not grant `{SET}`"
    )));
}

#[test]
fn denial_is_bounded_and_ranks_nearest_first() {
    let mut pair = Pair::with_builtins();
    let app = Uuid::from_u128(1);
    let role = builtin_id("Key Vault Secrets User");
    for i in 0..30u128 {
        let scope = rid(&format!(
            "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/other{i}"
        ));
        pair.add(&assignment(Uuid::from_u128(1000 + i), app, role, &scope));
    }
    pair.add(&assignment(
        Uuid::from_u128(5),
        app,
        role,
        &rid("/subscriptions/t"),
    ));
    let vault = rid(VAULT);
    let Decision::Deny(d) = pair.index.check(&AccessRequest::data(app, GET, &vault)) else {
        panic!("allowed");
    };
    assert_eq!(d.misses.len(), Denial::MAX_MISSES);
    assert_eq!(d.more_misses, 31 - Denial::MAX_MISSES);
    assert_eq!(d.assignments_considered, 31);
    // Same resource group before another subscription.
    assert!(d.misses[0].assignment_scope.contains("/vaults/other"));
    assert!(d.explain().contains(&format!(
        "and {} more assignment(s)",
        31 - Denial::MAX_MISSES
    )));
}

#[test]
fn principal_names_are_the_callers_choice() {
    let pair = Pair::with_builtins();
    let vault = rid(VAULT);
    let app = Uuid::from_u128(9);
    let d = pair.index.check(&AccessRequest::control(
        app,
        "Microsoft.KeyVault/vaults/read",
        &vault,
    ));
    assert_eq!(
        d.explain_as(Some("my-app")),
        format!("`my-app` may not perform action `Microsoft.KeyVault/vaults/read` on `{VAULT}`: `my-app` holds no role assignments, directly or through groups")
    );
    assert!(d.explain().contains(&app.to_string()));
}

#[test]
fn check_explaining_reports_as_many_misses_as_asked() {
    let mut pair = Pair::with_builtins();
    let app = Uuid::from_u128(1);
    let role = builtin_id("Key Vault Secrets User");
    for i in 0..12u128 {
        let scope = rid(&format!(
            "/subscriptions/s/resourceGroups/rg{i}/providers/Microsoft.KeyVault/vaults/kv"
        ));
        pair.add(&assignment(Uuid::from_u128(1000 + i), app, role, &scope));
    }
    let vault = rid(VAULT);
    let req = AccessRequest::data(app, GET, &vault);
    let Decision::Deny(all) = pair.index.check_explaining(&req, usize::MAX) else {
        panic!("allowed");
    };
    assert_eq!((all.misses.len(), all.more_misses), (12, 0));
    let Decision::Deny(few) = pair.index.check(&req) else {
        panic!("allowed");
    };
    assert_eq!(few.misses.len(), Denial::MAX_MISSES);
    assert_eq!(few.more_misses, 12 - Denial::MAX_MISSES);
    // The nearest (same resource group `rg1`) comes first.
    assert!(few.misses[0]
        .assignment_scope
        .contains("/resourceGroups/rg1/"));
}
