//! Key Vault access policies.

use lanyard_authz::{
    check_access_policy, check_secret_permission, AccessPolicy, PolicyCaller, PolicyCollection,
    PolicyDecision, PolicyMissReason, SecretPermission,
};
use uuid::Uuid;

const TENANT: Uuid = Uuid::from_u128(0x7e);
const APP: Uuid = Uuid::from_u128(0xa1);
const GROUP: Uuid = Uuid::from_u128(0x60);
const CLI: Uuid = Uuid::from_u128(0xc1);

fn policies() -> Vec<AccessPolicy> {
    serde_json::from_value(serde_json::json!([
        {"tenantId": TENANT, "objectId": APP, "permissions": {"secrets": ["Get", "LIST"], "keys": ["sign"]}},
        {"tenantId": TENANT, "objectId": GROUP, "applicationId": "", "permissions": {"secrets": ["set"]}},
        {"tenantId": TENANT, "objectId": Uuid::from_u128(0xad), "permissions": {"secrets": ["all"], "certificates": ["all"]}},
        {"tenantId": TENANT, "objectId": Uuid::from_u128(0xb0), "applicationId": CLI, "permissions": {"secrets": ["get"]}},
        {"tenantId": Uuid::from_u128(0xff), "objectId": Uuid::from_u128(0xb1), "permissions": {"secrets": ["get"]}}
    ]))
    .unwrap()
}

fn caller(oid: Uuid, groups: &[Uuid], app: Option<Uuid>) -> PolicyCaller<'_> {
    PolicyCaller {
        tenant_id: TENANT,
        object_id: oid,
        groups,
        application_id: app,
    }
}

#[test]
fn serde_is_arm_camel_case() {
    let ps = policies();
    assert_eq!(ps[0].permissions.secrets, vec!["Get", "LIST"]);
    assert_eq!(ps[1].application_id, None);
    assert_eq!(ps[3].application_id, Some(CLI));
    let v = serde_json::to_value(&ps[3]).unwrap();
    assert_eq!(v["objectId"], serde_json::json!(Uuid::from_u128(0xb0)));
    assert_eq!(v["applicationId"], serde_json::json!(CLI));
    assert!(v["permissions"]["certificates"].is_array());
    assert!(serde_json::to_value(&ps[0])
        .unwrap()
        .get("applicationId")
        .is_none());
}

#[test]
fn permissions_match_case_insensitively() {
    let ps = policies();
    let c = caller(APP, &[], Some(APP));
    for (perm, allowed) in [
        (SecretPermission::Get, true),
        (SecretPermission::List, true),
        (SecretPermission::Set, false),
        (SecretPermission::Purge, false),
    ] {
        assert_eq!(
            check_secret_permission(&ps, &c, perm, "kv1").is_allowed(),
            allowed,
            "{perm}"
        );
    }
    assert!(check_access_policy(&ps, &c, PolicyCollection::Keys, "SIGN", "kv1").is_allowed());
    assert!(
        !check_access_policy(&ps, &c, PolicyCollection::Certificates, "get", "kv1").is_allowed()
    );
    assert_eq!(
        "ReCoVeR".parse::<SecretPermission>(),
        Ok(SecretPermission::Recover)
    );
    assert!("all".parse::<SecretPermission>().is_err());
}

#[test]
fn all_grants_every_secret_permission() {
    let ps = policies();
    let admin = Uuid::from_u128(0xad);
    for perm in SecretPermission::ALL {
        let d = check_secret_permission(&ps, &caller(admin, &[], None), perm, "kv1");
        let PolicyDecision::Allow(g) = d else {
            panic!("{perm} denied")
        };
        assert_eq!(g.granted_by, "all");
        assert_eq!(g.policy_index, 2);
    }
}

#[test]
fn groups_apply_to_members() {
    let ps = policies();
    let user = Uuid::from_u128(0x55);
    let d = check_secret_permission(
        &ps,
        &caller(user, &[GROUP], None),
        SecretPermission::Set,
        "kv1",
    );
    let PolicyDecision::Allow(g) = d else {
        panic!("denied")
    };
    assert!(g.via_group);
    assert_eq!(g.object_id, GROUP);
    assert!(
        !check_secret_permission(&ps, &caller(user, &[], None), SecretPermission::Set, "kv1")
            .is_allowed()
    );
}

#[test]
fn compound_identities_need_their_application_and_tenant_must_match() {
    let ps = policies();
    let user = Uuid::from_u128(0xb0);
    assert!(check_secret_permission(
        &ps,
        &caller(user, &[], Some(CLI)),
        SecretPermission::Get,
        "kv"
    )
    .is_allowed());
    let PolicyDecision::Deny(d) = check_secret_permission(
        &ps,
        &caller(user, &[], Some(APP)),
        SecretPermission::Get,
        "kv",
    ) else {
        panic!("allowed");
    };
    assert_eq!(
        d.near[0].reason,
        PolicyMissReason::OtherApplication {
            application_id: CLI
        }
    );
    let foreign = Uuid::from_u128(0xb1);
    let PolicyDecision::Deny(d) = check_secret_permission(
        &ps,
        &caller(foreign, &[], None),
        SecretPermission::Get,
        "kv",
    ) else {
        panic!("allowed");
    };
    assert!(d
        .explain()
        .contains(&format!("is for tenant `{}`", Uuid::from_u128(0xff))));
}

#[test]
fn denial_reads_like_azure() {
    let ps = policies();
    let PolicyDecision::Deny(d) = check_secret_permission(
        &ps,
        &caller(APP, &[GROUP], Some(APP)),
        SecretPermission::Delete,
        "kv1",
    ) else {
        panic!("allowed");
    };
    assert_eq!(
        d.azure_message(),
        format!("The user, group or application 'appid={APP};oid={APP}' does not have secrets delete permission on key vault 'kv1'")
    );
    let text = d.explain();
    assert!(text.contains("access policy #0 for `"), "{text}");
    assert!(
        text.contains("grants secrets get, list but not delete"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "access policy #1 for group `{GROUP}` grants secrets set but not delete"
        )),
        "{text}"
    );

    let stranger = Uuid::from_u128(0x999);
    let d = check_secret_permission(
        &ps,
        &caller(stranger, &[], None),
        SecretPermission::Get,
        "kv1",
    );
    assert_eq!(
        d.explain(),
        format!("The user, group or application 'appid=;oid={stranger}' does not have secrets get permission on key vault 'kv1'. No access policy of `kv1` names `{stranger}` or any of its groups")
    );
}
