//! `check_assignable` errors.

use lanyard_authz::check_assignable;
use lanyard_domain::builtin;
use uuid::Uuid;

use crate::kit::{block, custom_role, rid};

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
