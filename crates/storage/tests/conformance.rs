//! The storage conformance suite: every test is written once, as `async fn name(&Target)`,
//! and `conformance!` runs it on SQLite (a fresh file) and on PostgreSQL (a fresh database
//! on the server named by `LANYARD_TEST_POSTGRES_URL`). An unreachable PostgreSQL fails the
//! PostgreSQL tests; nothing is skipped.
//!
//! The tests that only make sense on one backend (opening a bad file, an unreachable server)
//! sit at the end, outside the macro.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanyard_domain::{
    Permission, Principal, PrincipalKind, PrincipalType, ResourceId, RoleAssignment,
    RoleDefinition, RoleType, ServicePrincipalSource, Subscription, SubscriptionState, Tenant,
};
use lanyard_storage::{
    ActivityRecord, AssignmentKey, AssignmentQuery, Batch, Change, CredentialRecord, DocumentQuery,
    DocumentRecord, Expect, FeedChange, FeedHead, KeyRecord, LogQuery, ResourceQuery,
    ResourceRecord, SignInRecord, Store, StoreError,
};
use lanyard_testdb::{fresh_postgres_url, fresh_sqlite_path};
use serde_json::json;
use time::macros::offset;
use time::OffsetDateTime;
use uuid::Uuid;

/// Where a test's store lives; each call to [`Target::open`] opens it anew.
pub struct Target {
    url: String,
}

impl Target {
    async fn open(&self) -> Arc<dyn Store> {
        lanyard_storage::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot open the store under test: {e}"))
    }

    /// Runs SQL behind the store's back, to plant what the store would never write.
    async fn raw_execute(&self, sql: &str) {
        use sqlx::Connection;
        if self.url.starts_with("postgres") {
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        } else {
            let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        }
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::fresh_sqlite_path().unwrap();
                    super::$name(&super::Target { url: db.url() }).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::fresh_postgres_url()
                        .await
                        .unwrap_or_else(|e| panic!("postgres tests need a server: {e:#}"));
                    super::$name(&super::Target { url: db.url().to_string() }).await;
                    db.cleanup().await.unwrap();
                }
            )*
        }
    };
}

conformance!(
    meta_tenants_and_subscriptions_round_trip,
    resources_round_trip_exactly_and_replace_by_id,
    resource_lookup_ignores_case_and_keeps_stored_casing,
    resource_queries_filter_by_within_parent_and_type,
    resource_paging_visits_every_item_exactly_once,
    prefix_matches_do_not_leak_into_similar_names,
    delete_resources_within_deletes_only_below,
    principals_round_trip_and_are_found_by_client_id,
    a_client_id_belongs_to_one_principal,
    credentials_round_trip_and_delete,
    role_definitions_round_trip_and_delete,
    assignments_round_trip_and_delete,
    delete_assignments_within_deletes_at_and_below,
    assignment_queries_by_scope_principal_and_role,
    assignment_paging_visits_every_item_exactly_once,
    assignment_key_scan_returns_exactly_the_full_listing,
    groups_are_exactly_the_group_principals_with_their_members,
    principal_kinds_are_backfilled_on_an_older_schema,
    duplicate_assignment_conflicts_and_writes_nothing,
    concurrent_duplicate_assignments_let_exactly_one_through,
    failed_expectations_roll_back_the_batch,
    revocations_survive_principal_deletion,
    activity_log_filters_by_window_scope_and_caller_newest_first,
    sign_in_log_filters_by_window_and_principal_newest_first,
    keys_put_replace_and_delete,
    writes_survive_reopening,
    concurrent_commits_all_land,
    corrupt_rows_are_reported_without_their_contents,
    conflicts_never_echo_written_values,
    documents_round_trip_replace_and_delete,
    document_prefixes_are_ranges_not_patterns,
    document_expectations_guard_versions,
    feed_records_followed_changes_in_commit_order,
    feed_skips_batches_nobody_follows,
    failed_batches_append_nothing_to_the_feed,
    feed_numbers_are_contiguous_and_visible_in_order_under_concurrency,
    feed_pruning_keeps_the_newest_entries,
    commits_prune_the_feed_beyond_its_retention,
    meta_expectations_guard_a_version,
);

// ---------------------------------------------------------------------------------------
// Fixtures

const SUB: &str = "6f1c2a7e-5b0d-4c3e-9a1f-00000000000a";
const OWNER: Uuid = Uuid::from_u128(0x8e3af657_a8ff_443c_a75c_2fe8c4bcb635);
const READER: Uuid = Uuid::from_u128(0xacdd72a7_3385_48ef_bd42_f606fba81ae7);

fn rid(text: &str) -> ResourceId {
    ResourceId::parse(text).unwrap()
}

fn rg(name: &str) -> ResourceId {
    ResourceId::resource_group(SUB, name)
}

fn vm(group: &str, name: &str) -> ResourceId {
    rg(group).with_provider("Microsoft.Compute", "virtualMachines", name)
}

/// A time with nanoseconds, so round trips are checked to the last digit.
fn at(offset_nanos: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(1_714_000_000_123_456_789 + i128::from(offset_nanos))
        .unwrap()
}

fn record(id: &ResourceId) -> ResourceRecord {
    ResourceRecord {
        id: id.clone(),
        resource_type: id.resource_type(),
        body: json!({ "name": id.name(), "properties": { "tags": { "env": "test" } } }),
        created_at: at(0),
        updated_at: at(1),
    }
}

async fn put_resources(store: &dyn Store, ids: &[ResourceId]) {
    let mut batch = Batch::new();
    for id in ids {
        batch.push(Change::PutResource(record(id)));
    }
    store.commit(batch).await.unwrap();
}

fn keys_of(records: &[ResourceRecord]) -> Vec<String> {
    records.iter().map(|r| r.id.key().to_string()).collect()
}

/// The keys of `ids`, in the order the store lists them.
fn sorted_keys(ids: &[ResourceId]) -> Vec<String> {
    let mut keys: Vec<String> = ids.iter().map(|id| id.key().to_string()).collect();
    keys.sort();
    keys
}

fn user(name: &str) -> Principal {
    Principal {
        object_id: Uuid::new_v4(),
        tenant_id: Uuid::from_u128(1),
        display_name: name.to_string(),
        kind: PrincipalKind::User,
    }
}

fn managed_identity(host: &ResourceId) -> Principal {
    Principal {
        object_id: Uuid::new_v4(),
        tenant_id: Uuid::from_u128(1),
        display_name: host.name().to_string(),
        kind: PrincipalKind::ServicePrincipal {
            client_id: Uuid::new_v4(),
            source: ServicePrincipalSource::SystemAssigned { host: host.clone() },
        },
    }
}

fn assignment(scope: &ResourceId, role: Uuid, principal: Uuid) -> RoleAssignment {
    RoleAssignment {
        id: Uuid::new_v4(),
        scope: scope.clone(),
        role_definition_id: role,
        principal_id: principal,
        principal_type: PrincipalType::User,
        description: Some("granted by the conformance suite".to_string()),
        condition: None,
        condition_version: None,
        created_on: at(10),
        updated_on: at(20),
        created_by: Some(Uuid::from_u128(7)),
        updated_by: None,
    }
}

async fn put_assignments(store: &dyn Store, assignments: &[RoleAssignment]) {
    let mut batch = Batch::new();
    for a in assignments {
        batch.push(Change::PutAssignment(a.clone()));
    }
    store.commit(batch).await.unwrap();
}

fn ids_of(assignments: &[RoleAssignment]) -> Vec<Uuid> {
    assignments.iter().map(|a| a.id).collect()
}

fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort();
    ids
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, needle: &str) {
    match result {
        Err(StoreError::Conflict(message)) => assert!(
            message.contains(needle),
            "conflict message `{message}` should mention `{needle}`"
        ),
        other => panic!("expected a conflict mentioning `{needle}`, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Every change round-trips through its read

async fn meta_tenants_and_subscriptions_round_trip(t: &Target) {
    let store = t.open().await;
    assert_eq!(store.meta("schema-owner").await.unwrap(), None);
    let tenant = Tenant {
        id: Uuid::new_v4(),
        display_name: "Contoso".to_string(),
        default_domain: "contoso.lanyard.localhost".to_string(),
    };
    let subscription = Subscription {
        id: Uuid::parse_str(SUB).unwrap(),
        tenant_id: tenant.id,
        display_name: "Dev".to_string(),
        state: SubscriptionState::Enabled,
    };
    store
        .commit(
            Batch::new()
                .with(Change::PutMeta {
                    key: "schema-owner".to_string(),
                    value: "one".to_string(),
                })
                .with(Change::PutTenant(tenant.clone()))
                .with(Change::PutSubscription(subscription.clone())),
        )
        .await
        .unwrap();
    assert_eq!(
        store.meta("schema-owner").await.unwrap().as_deref(),
        Some("one")
    );
    assert_eq!(store.tenants().await.unwrap(), vec![tenant.clone()]);
    assert_eq!(
        store.subscriptions().await.unwrap(),
        vec![subscription.clone()]
    );

    let renamed = Tenant {
        display_name: "Contoso Ltd".to_string(),
        ..tenant
    };
    let disabled = Subscription {
        state: SubscriptionState::Disabled,
        ..subscription
    };
    store
        .commit(
            Batch::new()
                .with(Change::PutMeta {
                    key: "schema-owner".to_string(),
                    value: "two".to_string(),
                })
                .with(Change::PutTenant(renamed.clone()))
                .with(Change::PutSubscription(disabled.clone())),
        )
        .await
        .unwrap();
    assert_eq!(
        store.meta("schema-owner").await.unwrap().as_deref(),
        Some("two")
    );
    assert_eq!(store.tenants().await.unwrap(), vec![renamed]);
    assert_eq!(store.subscriptions().await.unwrap(), vec![disabled]);
}

async fn resources_round_trip_exactly_and_replace_by_id(t: &Target) {
    let store = t.open().await;
    let id = vm("rg", "vm1");
    let mut original = record(&id);
    // A non-UTC offset and nanoseconds: the instant must come back exactly.
    original.created_at = at(5).to_offset(offset!(+05:30));
    store
        .commit(Batch::new().with(Change::PutResource(original.clone())))
        .await
        .unwrap();
    let stored = store.resource(&id).await.unwrap().unwrap();
    assert_eq!(stored, original);
    assert_eq!(
        stored.created_at.unix_timestamp_nanos(),
        at(5).unix_timestamp_nanos()
    );

    let replaced = ResourceRecord {
        body: json!({ "name": "vm1", "properties": { "size": "large" } }),
        updated_at: at(99),
        ..original.clone()
    };
    store
        .commit(Batch::new().with(Change::PutResource(replaced.clone())))
        .await
        .unwrap();
    assert_eq!(store.resource(&id).await.unwrap(), Some(replaced));
    assert_eq!(
        store
            .resources(&ResourceQuery::default())
            .await
            .unwrap()
            .len(),
        1
    );

    store
        .commit(Batch::new().with(Change::DeleteResource(id.clone())))
        .await
        .unwrap();
    assert_eq!(store.resource(&id).await.unwrap(), None);
}

async fn resource_lookup_ignores_case_and_keeps_stored_casing(t: &Target) {
    let store = t.open().await;
    let stored_as = rid(&format!("/subscriptions/{SUB}/resourceGroups/rg"));
    let mut group = record(&stored_as);
    group.resource_type = "Microsoft.Resources/resourceGroups".to_string();
    store
        .commit(Batch::new().with(Change::PutResource(group)))
        .await
        .unwrap();

    let asked = rid(&format!(
        "/subscriptions/{}/resourceGroups/RG",
        SUB.to_uppercase()
    ));
    let found = store.resource(&asked).await.unwrap().unwrap();
    assert_eq!(
        found.id.as_str(),
        stored_as.as_str(),
        "stored casing is kept"
    );
    assert_eq!(found.resource_type, "Microsoft.Resources/resourceGroups");

    // Deleting by a differently-cased id deletes the same row.
    store
        .commit(Batch::new().with(Change::DeleteResource(asked)))
        .await
        .unwrap();
    assert_eq!(store.resource(&stored_as).await.unwrap(), None);
}

async fn resource_queries_filter_by_within_parent_and_type(t: &Target) {
    let store = t.open().await;
    let vault = rg("rg1").with_provider("Microsoft.KeyVault", "vaults", "kv");
    let secret = vault.with_child("secrets", "db");
    let all = vec![
        rg("rg1"),
        rg("rg2"),
        vm("rg1", "vm1"),
        vm("rg1", "VM2"),
        vm("rg2", "vm3"),
        vault.clone(),
        secret.clone(),
    ];
    put_resources(store.as_ref(), &all).await;

    let within_rg1 = store
        .resources(&ResourceQuery {
            within: Some(rg("RG1")),
            ..Default::default()
        })
        .await
        .unwrap();
    let expected = sorted_keys(&[
        vm("rg1", "vm1"),
        vm("rg1", "vm2"),
        vault.clone(),
        secret.clone(),
    ]);
    assert_eq!(
        keys_of(&within_rg1),
        expected,
        "strictly below, ordered by key"
    );

    let children = store
        .resources(&ResourceQuery {
            parent: Some(rg("rg1")),
            ..Default::default()
        })
        .await
        .unwrap();
    let expected = sorted_keys(&[vm("rg1", "vm1"), vm("rg1", "vm2"), vault.clone()]);
    assert_eq!(keys_of(&children), expected, "direct children only");

    let vault_children = store
        .resources(&ResourceQuery {
            parent: Some(vault.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        keys_of(&vault_children),
        sorted_keys(std::slice::from_ref(&secret))
    );

    let vms = store
        .resources(&ResourceQuery {
            resource_type: Some("microsoft.compute/VIRTUALMACHINES".to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(vms.len(), 3, "type compares case-insensitively");
    assert!(vms
        .iter()
        .all(|r| r.resource_type == "Microsoft.Compute/virtualMachines"));

    let vms_in_rg2 = store
        .resources(&ResourceQuery {
            within: Some(rg("rg2")),
            resource_type: Some("Microsoft.Compute/virtualMachines".to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys_of(&vms_in_rg2), sorted_keys(&[vm("rg2", "vm3")]));

    // Punctuation orders bytewise on every backend, whatever the database's collation.
    let mixed: Vec<ResourceId> = ["a-b", "a_b", "a.b", "a0", "ab", "a~", "A+B"]
        .iter()
        .map(|name| vm("mixed", name))
        .collect();
    put_resources(store.as_ref(), &mixed).await;
    let listed = store
        .resources(&ResourceQuery {
            within: Some(rg("mixed")),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys_of(&listed), sorted_keys(&mixed));
    let after_a_dash = store
        .resources(&ResourceQuery {
            within: Some(rg("mixed")),
            after: Some(vm("mixed", "a-b").key().to_string()),
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys_of(&after_a_dash), sorted_keys(&mixed)[2..4].to_vec());
    for record in &listed {
        store
            .commit(Batch::new().with(Change::DeleteResource(record.id.clone())))
            .await
            .unwrap();
    }

    let everything = store
        .resources(&ResourceQuery {
            within: Some(ResourceId::root()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(everything.len(), all.len(), "everything is within the root");
    let subscription = store
        .resources(&ResourceQuery {
            within: Some(ResourceId::subscription(SUB)),
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(subscription.len(), 2, "limit applies");
}

async fn resource_paging_visits_every_item_exactly_once(t: &Target) {
    let store = t.open().await;
    let ids: Vec<ResourceId> = (0..23)
        .map(|i| {
            // Mixed casing: paging works on keys, whatever the caller passes back.
            let name = if i % 2 == 0 {
                format!("VM-{i:02}")
            } else {
                format!("vm-{i:02}")
            };
            vm("paging", &name)
        })
        .collect();
    put_resources(store.as_ref(), &ids).await;
    put_resources(store.as_ref(), &[vm("other", "outside")]).await;

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store
            .resources(&ResourceQuery {
                within: Some(rg("paging")),
                after: after.clone(),
                limit: Some(5),
                ..Default::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        pages += 1;
        assert!(page.len() <= 5);
        after = Some(page.last().unwrap().id.as_str().to_string());
        seen.extend(keys_of(&page));
    }
    let expected = sorted_keys(&ids);
    assert_eq!(pages, 5);
    assert_eq!(seen, expected, "every item once, in key order");
}

async fn prefix_matches_do_not_leak_into_similar_names(t: &Target) {
    let store = t.open().await;
    let ids = vec![
        vm("a_b", "one"),
        vm("axb", "two"),
        vm("a%", "three"),
        vm("a%b", "four"),
        vm("rg1", "five"),
        vm("rg10", "six"),
        vm("rg1-x", "seven"),
        vm("a", "eight"),
        vm("a~", "nine"),
        vm("a+", "ten"),
    ];
    put_resources(store.as_ref(), &ids).await;

    let only = |group: &str| ResourceQuery {
        within: Some(rg(group)),
        ..Default::default()
    };
    assert_eq!(
        keys_of(&store.resources(&only("a_b")).await.unwrap()),
        sorted_keys(&[vm("a_b", "one")])
    );
    assert_eq!(
        keys_of(&store.resources(&only("a%")).await.unwrap()),
        sorted_keys(&[vm("a%", "three")])
    );
    assert_eq!(
        keys_of(&store.resources(&only("rg1")).await.unwrap()),
        sorted_keys(&[vm("rg1", "five")])
    );
    // Symbols that some collations sort between `/` and `0`.
    assert_eq!(
        keys_of(&store.resources(&only("a")).await.unwrap()),
        sorted_keys(&[vm("a", "eight")])
    );

    // The same guarantee for role assignments below a scope.
    let p = Uuid::new_v4();
    let rg1 = assignment(&rg("rg1"), READER, p);
    let rg10 = assignment(&rg("rg10"), READER, p);
    let a_b = assignment(&vm("a_b", "one"), READER, p);
    let axb = assignment(&vm("axb", "two"), READER, p);
    put_assignments(store.as_ref(), &[rg1.clone(), rg10, a_b.clone(), axb]).await;
    let below = |scope: ResourceId| AssignmentQuery {
        at_or_below: Some(scope),
        ..Default::default()
    };
    assert_eq!(
        ids_of(&store.assignments(&below(rg("rg1"))).await.unwrap()),
        vec![rg1.id]
    );
    assert_eq!(
        ids_of(&store.assignments(&below(rg("a_b"))).await.unwrap()),
        vec![a_b.id]
    );
}

async fn delete_resources_within_deletes_only_below(t: &Target) {
    let store = t.open().await;
    let vault = rg("rg1").with_provider("Microsoft.KeyVault", "vaults", "kv");
    put_resources(
        store.as_ref(),
        &[
            rg("rg1"),
            rg("rg10"),
            vm("rg1", "vm1"),
            vault.clone(),
            vault.with_child("secrets", "s1"),
            vm("rg10", "vm1"),
        ],
    )
    .await;

    store
        .commit(Batch::new().with(Change::DeleteResourcesWithin(vault.clone())))
        .await
        .unwrap();
    assert!(
        store.resource(&vault).await.unwrap().is_some(),
        "the scope itself stays"
    );
    assert!(store
        .resource(&vault.with_child("secrets", "s1"))
        .await
        .unwrap()
        .is_none());

    store
        .commit(Batch::new().with(Change::DeleteResourcesWithin(rg("RG1"))))
        .await
        .unwrap();
    let left = store.resources(&ResourceQuery::default()).await.unwrap();
    assert_eq!(
        keys_of(&left),
        sorted_keys(&[rg("rg1"), rg("rg10"), vm("rg10", "vm1")])
    );
}

async fn principals_round_trip_and_are_found_by_client_id(t: &Target) {
    let store = t.open().await;
    let alice = user("alice");
    let group = Principal {
        object_id: Uuid::new_v4(),
        tenant_id: Uuid::from_u128(1),
        display_name: "admins".to_string(),
        kind: PrincipalKind::Group {
            members: vec![alice.object_id],
        },
    };
    let identity = managed_identity(&vm("rg", "vm1"));
    store
        .commit(
            Batch::new()
                .with(Change::PutPrincipal(alice.clone()))
                .with(Change::PutPrincipal(group.clone()))
                .with(Change::PutPrincipal(identity.clone())),
        )
        .await
        .unwrap();

    assert_eq!(
        store.principal(alice.object_id).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.principal(group.object_id).await.unwrap(),
        Some(group.clone())
    );
    let client_id = identity.client_id().unwrap();
    assert_eq!(
        store.principal_by_client_id(client_id).await.unwrap(),
        Some(identity.clone())
    );
    assert_eq!(
        store.principal_by_client_id(Uuid::new_v4()).await.unwrap(),
        None
    );
    let mut expected = vec![alice.clone(), group.clone(), identity.clone()];
    expected.sort_by_key(|p| p.object_id);
    assert_eq!(store.principals().await.unwrap(), expected);

    let renamed = Principal {
        display_name: "Alice".to_string(),
        ..alice.clone()
    };
    store
        .commit(
            Batch::new()
                .expect(Expect::PrincipalExists(alice.object_id))
                .with(Change::PutPrincipal(renamed.clone()))
                .with(Change::DeletePrincipal(identity.object_id)),
        )
        .await
        .unwrap();
    assert_eq!(
        store.principal(alice.object_id).await.unwrap(),
        Some(renamed)
    );
    assert_eq!(store.principal(identity.object_id).await.unwrap(), None);
    assert_eq!(store.principal_by_client_id(client_id).await.unwrap(), None);
    assert_eq!(store.principals().await.unwrap().len(), 2);
}

async fn a_client_id_belongs_to_one_principal(t: &Target) {
    let store = t.open().await;
    let first = managed_identity(&vm("rg", "vm1"));
    store
        .commit(Batch::new().with(Change::PutPrincipal(first.clone())))
        .await
        .unwrap();
    let mut second = managed_identity(&vm("rg", "vm2"));
    second.kind = first.kind.clone();
    let result = store
        .commit(Batch::new().with(Change::PutPrincipal(second.clone())))
        .await;
    assert_conflict(result, "client id");
    assert_eq!(store.principal(second.object_id).await.unwrap(), None);
    // Replacing the holder itself is fine.
    store
        .commit(Batch::new().with(Change::PutPrincipal(first.clone())))
        .await
        .unwrap();
}

async fn credentials_round_trip_and_delete(t: &Target) {
    let store = t.open().await;
    let owner = Uuid::new_v4();
    let other = Uuid::new_v4();
    let credential = |principal: Uuid, kind: &str, created: i64| CredentialRecord {
        id: Uuid::new_v4(),
        principal_id: principal,
        kind: kind.to_string(),
        body: json!({ "hint": "abc", "hash": "sha256:00ff" }),
        created_at: at(created),
    };
    let newer = credential(owner, "secret", 200);
    let older = credential(owner, "certificate", 100);
    let federated = credential(owner, "federated", 300);
    let foreign = credential(other, "secret", 50);
    let mut batch = Batch::new();
    for c in [&newer, &older, &federated, &foreign] {
        batch.push(Change::PutCredential(c.clone()));
    }
    store.commit(batch).await.unwrap();

    assert_eq!(
        store.credentials_of(owner).await.unwrap(),
        vec![older.clone(), newer.clone(), federated.clone()],
        "oldest first"
    );
    assert_eq!(
        store.credentials_of(other).await.unwrap(),
        vec![foreign.clone()]
    );

    store
        .commit(Batch::new().with(Change::DeleteCredential(newer.id)))
        .await
        .unwrap();
    assert_eq!(
        store.credentials_of(owner).await.unwrap(),
        vec![older, federated]
    );
    store
        .commit(Batch::new().with(Change::DeleteCredentialsOf(owner)))
        .await
        .unwrap();
    assert!(store.credentials_of(owner).await.unwrap().is_empty());
    assert_eq!(store.credentials_of(other).await.unwrap(), vec![foreign]);
}

async fn role_definitions_round_trip_and_delete(t: &Target) {
    let store = t.open().await;
    let definition = RoleDefinition {
        id: Uuid::new_v4(),
        role_name: "VM Restarter".to_string(),
        description: "Restarts virtual machines".to_string(),
        role_type: RoleType::CustomRole,
        permissions: vec![Permission {
            actions: vec!["Microsoft.Compute/virtualMachines/restart/action".to_string()],
            not_actions: vec![],
            data_actions: vec![],
            not_data_actions: vec![],
        }],
        assignable_scopes: vec![ResourceId::subscription(SUB)],
    };
    store
        .commit(Batch::new().with(Change::PutRoleDefinition(definition.clone())))
        .await
        .unwrap();
    assert_eq!(
        store.role_definitions().await.unwrap(),
        vec![definition.clone()]
    );

    let widened = RoleDefinition {
        assignable_scopes: vec![ResourceId::root()],
        ..definition.clone()
    };
    store
        .commit(Batch::new().with(Change::PutRoleDefinition(widened.clone())))
        .await
        .unwrap();
    assert_eq!(store.role_definitions().await.unwrap(), vec![widened]);

    store
        .commit(Batch::new().with(Change::DeleteRoleDefinition(definition.id)))
        .await
        .unwrap();
    assert!(store.role_definitions().await.unwrap().is_empty());
}

async fn assignments_round_trip_and_delete(t: &Target) {
    let store = t.open().await;
    let alice = Uuid::new_v4();
    let bob = Uuid::new_v4();
    let a1 = assignment(&rg("rg"), OWNER, alice);
    let a2 = assignment(&vm("rg", "vm1"), READER, alice);
    let b1 = assignment(&ResourceId::subscription(SUB), READER, bob);
    put_assignments(store.as_ref(), &[a1.clone(), a2.clone(), b1.clone()]).await;
    assert_eq!(store.assignment(a1.id).await.unwrap(), Some(a1.clone()));
    assert_eq!(store.assignment(Uuid::new_v4()).await.unwrap(), None);

    // Replacing by id may change everything, including the unique triple.
    let moved = RoleAssignment {
        scope: rg("other"),
        description: None,
        ..a1.clone()
    };
    put_assignments(store.as_ref(), std::slice::from_ref(&moved)).await;
    assert_eq!(store.assignment(a1.id).await.unwrap(), Some(moved));
    assert!(store
        .assignments(&AssignmentQuery {
            at_or_below: Some(rg("rg")),
            role_definition: Some(OWNER),
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty());

    store
        .commit(Batch::new().with(Change::DeleteAssignment(a2.id)))
        .await
        .unwrap();
    assert_eq!(store.assignment(a2.id).await.unwrap(), None);
    store
        .commit(Batch::new().with(Change::DeleteAssignmentsOfPrincipal(alice)))
        .await
        .unwrap();
    let left = store
        .assignments(&AssignmentQuery::default())
        .await
        .unwrap();
    assert_eq!(left, vec![b1]);
}

async fn delete_assignments_within_deletes_at_and_below(t: &Target) {
    let store = t.open().await;
    let p = Uuid::new_v4();
    let at_sub = assignment(&ResourceId::subscription(SUB), READER, p);
    let at_rg = assignment(&rg("rg"), READER, p);
    let below_rg = assignment(&vm("rg", "vm1"), READER, p);
    let at_rg10 = assignment(&rg("rg10"), READER, p);
    put_assignments(
        store.as_ref(),
        &[
            at_sub.clone(),
            at_rg.clone(),
            below_rg.clone(),
            at_rg10.clone(),
        ],
    )
    .await;

    store
        .commit(Batch::new().with(Change::DeleteAssignmentsWithin(rg("RG"))))
        .await
        .unwrap();
    let left = store
        .assignments(&AssignmentQuery::default())
        .await
        .unwrap();
    assert_eq!(ids_of(&left), sorted(vec![at_sub.id, at_rg10.id]));

    store
        .commit(Batch::new().with(Change::DeleteAssignmentsWithin(ResourceId::root())))
        .await
        .unwrap();
    assert!(store
        .assignments(&AssignmentQuery::default())
        .await
        .unwrap()
        .is_empty());
}

async fn assignment_queries_by_scope_principal_and_role(t: &Target) {
    let store = t.open().await;
    let alice = Uuid::new_v4();
    let bob = Uuid::new_v4();
    let vm1 = vm("rg", "vm1");
    let root = assignment(&ResourceId::root(), READER, bob);
    let sub = assignment(&ResourceId::subscription(SUB), OWNER, alice);
    let group = assignment(&rg("rg"), READER, alice);
    let on_vm = assignment(&vm1, OWNER, bob);
    let sibling = assignment(&vm("rg", "vm10"), READER, alice);
    let elsewhere = assignment(&rg("rg-other"), OWNER, bob);
    let all = [
        root.clone(),
        sub.clone(),
        group.clone(),
        on_vm.clone(),
        sibling.clone(),
        elsewhere.clone(),
    ];
    put_assignments(store.as_ref(), &all).await;

    let query = |q: AssignmentQuery| {
        let store = store.clone();
        async move { ids_of(&store.assignments(&q).await.unwrap()) }
    };

    assert_eq!(
        query(AssignmentQuery::default()).await,
        sorted(ids_of(&all)),
        "ordered by id"
    );
    assert_eq!(
        query(AssignmentQuery {
            at_or_above: Some(rid(&vm1.as_str().to_uppercase())),
            ..Default::default()
        })
        .await,
        sorted(vec![root.id, sub.id, group.id, on_vm.id])
    );
    assert_eq!(
        query(AssignmentQuery {
            at_or_below: Some(rg("rg")),
            ..Default::default()
        })
        .await,
        sorted(vec![group.id, on_vm.id, sibling.id])
    );
    assert_eq!(
        query(AssignmentQuery {
            at_or_below: Some(ResourceId::root()),
            ..Default::default()
        })
        .await
        .len(),
        all.len()
    );
    assert_eq!(
        query(AssignmentQuery {
            principal: Some(alice),
            ..Default::default()
        })
        .await,
        sorted(vec![sub.id, group.id, sibling.id])
    );
    assert_eq!(
        query(AssignmentQuery {
            role_definition: Some(OWNER),
            ..Default::default()
        })
        .await,
        sorted(vec![sub.id, on_vm.id, elsewhere.id])
    );
    assert_eq!(
        query(AssignmentQuery {
            principal: Some(bob),
            at_or_above: Some(vm1.clone()),
            role_definition: Some(OWNER),
            ..Default::default()
        })
        .await,
        vec![on_vm.id]
    );
}

async fn assignment_paging_visits_every_item_exactly_once(t: &Target) {
    let store = t.open().await;
    let p = Uuid::new_v4();
    let all: Vec<RoleAssignment> = (0..13)
        .map(|i| assignment(&vm("rg", &format!("vm{i}")), READER, p))
        .collect();
    put_assignments(store.as_ref(), &all).await;
    put_assignments(
        store.as_ref(),
        &[assignment(&rg("rg"), READER, Uuid::new_v4())],
    )
    .await;

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .assignments(&AssignmentQuery {
                principal: Some(p),
                after,
                limit: Some(4),
                ..Default::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        after = page.last().map(|a| a.id);
        seen.extend(ids_of(&page));
    }
    assert_eq!(seen, sorted(ids_of(&all)));
}

async fn assignment_key_scan_returns_exactly_the_full_listing(t: &Target) {
    let store = t.open().await;
    let (p, q) = (Uuid::new_v4(), Uuid::new_v4());
    // Many assignments sharing few scopes, scopes written in mixed case, the root scope,
    // and more distinct scopes than one would guess.
    let mut all: Vec<RoleAssignment> = (0..40)
        .map(|i| {
            let holder = if i < 7 { p } else { Uuid::new_v4() };
            assignment(&vm("Rg-Mixed", &format!("VM{}", i % 7)), READER, holder)
        })
        .collect();
    all.extend((0..25).map(|i| assignment(&rg(&format!("rg{i}")), OWNER, q)));
    all.push(assignment(&ResourceId::root(), OWNER, p));
    all.push(assignment(
        &rid(&format!("/subscriptions/{SUB}")),
        READER,
        q,
    ));
    put_assignments(store.as_ref(), &all).await;

    // A replaced assignment (same id, another scope and role) and a deleted one.
    let mut moved = all[3].clone();
    moved.scope = rg("elsewhere");
    moved.role_definition_id = OWNER;
    let gone = all[4].id;
    store
        .commit(
            Batch::new()
                .with(Change::PutAssignment(moved.clone()))
                .with(Change::DeleteAssignment(gone)),
        )
        .await
        .unwrap();

    let mut scanned = Vec::new();
    let count = store
        .scan_assignment_keys(&mut |k| scanned.push(k.clone()))
        .await
        .unwrap();
    scanned.sort_by_key(|k| k.id);
    let full: Vec<AssignmentKey> = store
        .assignments(&AssignmentQuery::default())
        .await
        .unwrap()
        .iter()
        .map(AssignmentKey::from)
        .collect();
    assert_eq!(count, full.len() as u64);
    assert_eq!(full.len(), all.len() - 1);
    assert_eq!(scanned, full);
    // Scopes come back as written, not as their lower-cased keys.
    let key = scanned.iter().find(|k| k.id == all[0].id).unwrap();
    assert_eq!(key.scope.as_str(), all[0].scope.as_str());
    assert!(key.scope.as_str().contains("Rg-Mixed"));
    let key = scanned.iter().find(|k| k.id == moved.id).unwrap();
    assert_eq!((&key.scope, key.role_definition_id), (&moved.scope, OWNER));
    assert!(scanned.iter().all(|k| k.id != gone));
}

async fn groups_are_exactly_the_group_principals_with_their_members(t: &Target) {
    let store = t.open().await;
    let alice = user("alice");
    let identity = managed_identity(&vm("rg", "vm1"));
    let inner = group("inner", vec![alice.object_id, identity.object_id]);
    let outer = group("outer", vec![inner.object_id]);
    let empty = group("empty", Vec::new());
    let mut batch = Batch::new();
    for p in [&alice, &identity, &inner, &outer, &empty] {
        batch.push(Change::PutPrincipal(p.clone()));
    }
    store.commit(batch).await.unwrap();

    let mut expected = vec![inner.clone(), outer.clone(), empty.clone()];
    expected.sort_by_key(|p| p.object_id);
    assert_eq!(store.groups().await.unwrap(), expected);
    let from_all: Vec<Principal> = store
        .principals()
        .await
        .unwrap()
        .into_iter()
        .filter(|p| matches!(p.kind, PrincipalKind::Group { .. }))
        .collect();
    assert_eq!(store.groups().await.unwrap(), from_all);

    // A principal that changes kind moves in or out of the groups; deleted groups go.
    let alice_group = Principal {
        kind: PrincipalKind::Group {
            members: vec![identity.object_id],
        },
        ..alice.clone()
    };
    let inner_user = Principal {
        kind: PrincipalKind::User,
        ..inner.clone()
    };
    store
        .commit(
            Batch::new()
                .with(Change::PutPrincipal(alice_group.clone()))
                .with(Change::PutPrincipal(inner_user))
                .with(Change::DeletePrincipal(empty.object_id)),
        )
        .await
        .unwrap();
    let mut expected = vec![alice_group, outer];
    expected.sort_by_key(|p| p.object_id);
    assert_eq!(store.groups().await.unwrap(), expected);
}

async fn principal_kinds_are_backfilled_on_an_older_schema(t: &Target) {
    let store = t.open().await;
    let members = vec![Uuid::new_v4(), Uuid::new_v4()];
    let admins = group("admins", members);
    let alice = user("alice");
    let identity = managed_identity(&vm("rg", "vm1"));
    let mut batch = Batch::new();
    for p in [&admins, &alice, &identity] {
        batch.push(Change::PutPrincipal(p.clone()));
    }
    store.commit(batch).await.unwrap();
    drop(store);

    // Back to the schema before principals had a kind column: the rows hold only bodies.
    t.raw_execute("DROP INDEX principals_by_kind").await;
    t.raw_execute("ALTER TABLE principals DROP COLUMN kind")
        .await;
    t.raw_execute("DELETE FROM schema_migrations WHERE version = 4")
        .await;

    let reopened = t.open().await;
    assert_eq!(reopened.groups().await.unwrap(), vec![admins.clone()]);
    assert_eq!(reopened.principals().await.unwrap().len(), 3);
    // Writes after the migration keep the column in step.
    let team = group("team", vec![alice.object_id]);
    reopened
        .commit(Batch::new().with(Change::PutPrincipal(team.clone())))
        .await
        .unwrap();
    let mut expected = vec![admins, team];
    expected.sort_by_key(|p| p.object_id);
    assert_eq!(reopened.groups().await.unwrap(), expected);
}

// ---------------------------------------------------------------------------------------
// Atomicity and expectations

async fn duplicate_assignment_conflicts_and_writes_nothing(t: &Target) {
    let store = t.open().await;
    let p = Uuid::new_v4();
    let first = assignment(&rg("rg"), READER, p);
    put_assignments(store.as_ref(), std::slice::from_ref(&first)).await;

    // Same triple under another id, with the scope cased differently.
    let duplicate = assignment(&rid(&rg("rg").as_str().to_uppercase()), READER, p);
    let vm1 = vm("rg", "vm1");
    let result = store
        .commit(
            Batch::new()
                .with(Change::PutResource(record(&vm1)))
                .with(Change::PutAssignment(duplicate.clone()))
                .with(Change::SetRevocation {
                    principal: p,
                    valid_after: 42,
                }),
        )
        .await;
    assert_conflict(result, "role assignment already exists");
    assert_eq!(
        store.resource(&vm1).await.unwrap(),
        None,
        "nothing from the batch"
    );
    assert_eq!(store.assignment(duplicate.id).await.unwrap(), None);
    assert!(store.revocations().await.unwrap().is_empty());
    assert_eq!(
        store
            .assignments(&AssignmentQuery::default())
            .await
            .unwrap(),
        vec![first.clone()]
    );

    // Two new duplicates inside one batch fail the same way.
    let q = Uuid::new_v4();
    let result = store
        .commit(
            Batch::new()
                .with(Change::PutAssignment(assignment(&rg("rg2"), OWNER, q)))
                .with(Change::PutAssignment(assignment(&rg("rg2"), OWNER, q))),
        )
        .await;
    assert_conflict(result, "role assignment already exists");
    assert_eq!(
        store
            .assignments(&AssignmentQuery::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn concurrent_duplicate_assignments_let_exactly_one_through(t: &Target) {
    let store = t.open().await;
    let p = Uuid::new_v4();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .commit(Batch::new().with(Change::PutAssignment(assignment(
                        &rg("rg"),
                        OWNER,
                        p,
                    ))))
                    .await
            })
        })
        .collect();
    let mut succeeded = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => succeeded += 1,
            Err(StoreError::Conflict(m)) => {
                assert!(m.contains("role assignment already exists"), "{m}")
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(succeeded, 1);
    assert_eq!(
        store
            .assignments(&AssignmentQuery::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn failed_expectations_roll_back_the_batch(t: &Target) {
    let store = t.open().await;
    let existing = vm("rg", "exists");
    let missing = vm("rg", "missing");
    let marker = vm("rg", "marker");
    let original = record(&existing);
    store
        .commit(Batch::new().with(Change::PutResource(original.clone())))
        .await
        .unwrap();

    let guarded = |expect: Expect| {
        Batch::new()
            .expect(expect)
            .with(Change::PutResource(record(&marker)))
            .with(Change::DeleteResource(existing.clone()))
    };
    let cases = [
        (
            Expect::ResourceAbsent(rid(&existing.as_str().to_uppercase())),
            "already exists",
        ),
        (Expect::ResourceExists(missing.clone()), "does not exist"),
        (
            Expect::ResourceUnchanged(existing.clone(), at(2)),
            "changed",
        ),
        (
            Expect::ResourceUnchanged(missing.clone(), at(1)),
            "does not exist",
        ),
        (Expect::PrincipalExists(Uuid::new_v4()), "principal"),
    ];
    for (expect, needle) in cases {
        let result = store.commit(guarded(expect)).await;
        assert_conflict(result, needle);
        assert_eq!(store.resource(&marker).await.unwrap(), None);
        assert_eq!(
            store.resource(&existing).await.unwrap(),
            Some(original.clone())
        );
    }
    assert_conflict(
        store
            .commit(guarded(Expect::ResourceAbsent(existing.clone())))
            .await,
        existing.as_str(),
    );

    // Expectations that hold let the batch through; `updated_at` compares exactly, whatever
    // offset the caller's timestamp carries.
    let same_instant = original.updated_at.to_offset(offset!(-07:00));
    store
        .commit(
            Batch::new()
                .expect(Expect::ResourceExists(existing.clone()))
                .expect(Expect::ResourceAbsent(missing.clone()))
                .expect(Expect::ResourceUnchanged(existing.clone(), same_instant))
                .with(Change::PutResource(record(&marker))),
        )
        .await
        .unwrap();
    assert!(store.resource(&marker).await.unwrap().is_some());
    // One nanosecond off is a change.
    assert_conflict(
        store
            .commit(guarded(Expect::ResourceUnchanged(
                existing.clone(),
                original.updated_at + Duration::from_nanos(1),
            )))
            .await,
        "changed",
    );
}

async fn revocations_survive_principal_deletion(t: &Target) {
    let store = t.open().await;
    let alice = user("alice");
    let bob = user("bob");
    store
        .commit(
            Batch::new()
                .with(Change::PutPrincipal(alice.clone()))
                .with(Change::PutPrincipal(bob.clone()))
                .with(Change::SetRevocation {
                    principal: alice.object_id,
                    valid_after: 1_700_000_000,
                })
                .with(Change::SetRevocation {
                    principal: bob.object_id,
                    valid_after: 1_700_000_500,
                }),
        )
        .await
        .unwrap();
    store
        .commit(
            Batch::new()
                .with(Change::SetRevocation {
                    principal: alice.object_id,
                    valid_after: 1_800_000_000,
                })
                .with(Change::DeletePrincipal(alice.object_id)),
        )
        .await
        .unwrap();
    assert_eq!(store.principal(alice.object_id).await.unwrap(), None);
    let mut expected = vec![
        (alice.object_id, 1_800_000_000),
        (bob.object_id, 1_700_000_500),
    ];
    expected.sort();
    assert_eq!(store.revocations().await.unwrap(), expected);
}

// ---------------------------------------------------------------------------------------
// Logs and keys

fn activity(i: i64, scope: &ResourceId, caller: Option<Uuid>) -> ActivityRecord {
    ActivityRecord {
        id: Uuid::new_v4(),
        time: at(i * 1_000),
        caller,
        operation: "Microsoft.Compute/virtualMachines/write".to_string(),
        scope: scope.clone(),
        status: if i % 3 == 0 { "Failed" } else { "Succeeded" }.to_string(),
        http_status: if i % 3 == 0 { 403 } else { 200 },
        correlation_id: format!("corr-{i}"),
        body: (i % 2 == 0).then(|| json!({ "properties": { "n": i } })),
    }
}

async fn activity_log_filters_by_window_scope_and_caller_newest_first(t: &Target) {
    let store = t.open().await;
    let alice = Uuid::new_v4();
    let records: Vec<ActivityRecord> = (0..10)
        .map(|i| {
            let scope = match i % 3 {
                0 => vm("rg1", &format!("vm{i}")),
                1 => rg("rg10"),
                _ => ResourceId::subscription(SUB),
            };
            activity(i, &scope, (i % 2 == 0).then_some(alice))
        })
        .collect();
    let mut batch = Batch::new();
    for r in &records {
        batch.push(Change::AppendActivity(r.clone()));
    }
    store.commit(batch).await.unwrap();

    let newest_first = |picked: Vec<&ActivityRecord>| {
        let mut picked: Vec<ActivityRecord> = picked.into_iter().cloned().collect();
        picked.sort_by_key(|r| std::cmp::Reverse(r.time));
        picked
    };

    let all = store.activity(&LogQuery::default()).await.unwrap();
    assert_eq!(all, newest_first(records.iter().collect()));

    let window = store
        .activity(&LogQuery {
            from: Some(at(3_000)),
            to: Some(at(6_000)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        window,
        newest_first(records[3..=6].iter().collect()),
        "both ends inclusive"
    );

    let in_rg1 = store
        .activity(&LogQuery {
            within: Some(rg("RG1")),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(in_rg1, newest_first(records.iter().step_by(3).collect()));

    let at_sub = store
        .activity(&LogQuery {
            within: Some(ResourceId::subscription(SUB)),
            limit: Some(4),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(at_sub, newest_first(records.iter().collect())[..4].to_vec());

    let by_alice = store
        .activity(&LogQuery {
            principal: Some(alice),
            from: Some(at(1)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        by_alice,
        newest_first(
            records
                .iter()
                .filter(|r| r.caller == Some(alice) && r.time > at(0))
                .collect()
        )
    );

    // Entries at the same instant keep a stable order: id, descending.
    let (x, y) = (
        ActivityRecord {
            time: at(50_000),
            ..activity(50, &rg("rg1"), None)
        },
        ActivityRecord {
            time: at(50_000),
            ..activity(50, &rg("rg1"), None)
        },
    );
    store
        .commit(
            Batch::new()
                .with(Change::AppendActivity(x.clone()))
                .with(Change::AppendActivity(y.clone())),
        )
        .await
        .unwrap();
    let tied = store
        .activity(&LogQuery {
            from: Some(at(50_000)),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut expected = vec![x, y];
    expected.sort_by_key(|r| std::cmp::Reverse(r.id));
    assert_eq!(tied, expected);
}

async fn sign_in_log_filters_by_window_and_principal_newest_first(t: &Target) {
    let store = t.open().await;
    let identity = Uuid::new_v4();
    let records: Vec<SignInRecord> = (0..8)
        .map(|i| SignInRecord {
            id: Uuid::new_v4(),
            time: at(i * 10),
            principal_id: (i % 2 == 0).then_some(identity),
            client_id: Some(Uuid::new_v4()),
            resource: "https://vault.azure.net".to_string(),
            source: if i % 2 == 0 { "imds" } else { "token_endpoint" }.to_string(),
            session: (i % 2 == 0).then(|| format!("session-{i}")),
            result: if i == 7 { "failure" } else { "success" }.to_string(),
            reason: (i == 7).then(|| "invalid_client".to_string()),
        })
        .collect();
    let mut batch = Batch::new();
    for r in &records {
        batch.push(Change::AppendSignIn(r.clone()));
    }
    store.commit(batch).await.unwrap();

    let reversed = |slice: &[SignInRecord]| slice.iter().rev().cloned().collect::<Vec<_>>();
    assert_eq!(
        store.sign_ins(&LogQuery::default()).await.unwrap(),
        reversed(&records)
    );
    assert_eq!(
        store
            .sign_ins(&LogQuery {
                from: Some(at(20)),
                to: Some(at(50)),
                ..Default::default()
            })
            .await
            .unwrap(),
        reversed(&records[2..=5])
    );
    let mine: Vec<SignInRecord> = records
        .iter()
        .filter(|r| r.principal_id == Some(identity))
        .cloned()
        .collect();
    assert_eq!(
        store
            .sign_ins(&LogQuery {
                principal: Some(identity),
                limit: Some(3),
                ..Default::default()
            })
            .await
            .unwrap(),
        reversed(&mine)[..3].to_vec()
    );
    assert!(store
        .sign_ins(&LogQuery {
            to: Some(at(-1)),
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty());
}

async fn keys_put_replace_and_delete(t: &Target) {
    let store = t.open().await;
    let key = |kid: &str, state: &str| KeyRecord {
        kid: kid.to_string(),
        body: json!({ "state": state, "sealed": "AAECAwQF", "not_before": 1_700_000_000 }),
    };
    store
        .commit(
            Batch::new()
                .with(Change::PutKey(key("k2", "next")))
                .with(Change::PutKey(key("k1", "active"))),
        )
        .await
        .unwrap();
    assert_eq!(
        store.keys().await.unwrap(),
        vec![key("k1", "active"), key("k2", "next")]
    );
    store
        .commit(
            Batch::new()
                .with(Change::PutKey(key("k2", "active")))
                .with(Change::DeleteKey("k1".to_string())),
        )
        .await
        .unwrap();
    assert_eq!(store.keys().await.unwrap(), vec![key("k2", "active")]);
}

// ---------------------------------------------------------------------------------------
// Durability, concurrency, failure reporting

async fn writes_survive_reopening(t: &Target) {
    let store = t.open().await;
    let id = vm("rg", "durable");
    let principal = user("carol");
    store
        .commit(
            Batch::new()
                .with(Change::PutResource(record(&id)))
                .with(Change::PutPrincipal(principal.clone()))
                .with(Change::PutMeta {
                    key: "epoch".to_string(),
                    value: "7".to_string(),
                }),
        )
        .await
        .unwrap();
    drop(store);

    let reopened = t.open().await;
    assert_eq!(reopened.resource(&id).await.unwrap(), Some(record(&id)));
    assert_eq!(
        reopened.principal(principal.object_id).await.unwrap(),
        Some(principal)
    );
    assert_eq!(reopened.meta("epoch").await.unwrap().as_deref(), Some("7"));
}

async fn concurrent_commits_all_land(t: &Target) {
    let store = t.open().await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = vm("busy", &format!("vm{i}"));
                store
                    .commit(
                        Batch::new()
                            .expect(Expect::ResourceAbsent(id.clone()))
                            .with(Change::PutResource(record(&id)))
                            .with(Change::AppendActivity(activity(i, &id, None))),
                    )
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let stored = store
        .resources(&ResourceQuery {
            within: Some(rg("busy")),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.len(), 50);
    let distinct: HashSet<String> = keys_of(&stored).into_iter().collect();
    assert_eq!(distinct.len(), 50);
    assert_eq!(
        store.activity(&LogQuery::default()).await.unwrap().len(),
        50
    );
}

async fn corrupt_rows_are_reported_without_their_contents(t: &Target) {
    let store = t.open().await;
    t.raw_execute("INSERT INTO signing_keys (kid, body) VALUES ('k1', '{\"sealed\": \"hunter2\"')")
        .await;
    match store.keys().await {
        Err(StoreError::Corrupt(message)) => {
            assert!(message.contains("k1"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        other => panic!("expected a corrupt record, got {other:?}"),
    }
}

async fn conflicts_never_echo_written_values(t: &Target) {
    let store = t.open().await;
    let record = SignInRecord {
        id: Uuid::new_v4(),
        time: at(0),
        principal_id: None,
        client_id: None,
        resource: "https://secret-audience.example".to_string(),
        source: "token_endpoint".to_string(),
        session: Some("session-hunter2".to_string()),
        result: "failure".to_string(),
        reason: None,
    };
    store
        .commit(Batch::new().with(Change::AppendSignIn(record.clone())))
        .await
        .unwrap();
    match store
        .commit(Batch::new().with(Change::AppendSignIn(record.clone())))
        .await
    {
        Err(StoreError::Conflict(message)) => {
            assert!(!message.contains("hunter2"), "{message}");
            assert!(!message.contains(&record.id.to_string()), "{message}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        store.sign_ins(&LogQuery::default()).await.unwrap(),
        vec![record]
    );
}

// ---------------------------------------------------------------------------------------
// One backend only

#[tokio::test]
async fn open_picks_the_backend_from_the_url() {
    let db = fresh_sqlite_path().unwrap();
    let plain = lanyard_storage::open(db.path().to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(plain.backend(), "sqlite");
    drop(plain);
    let url = lanyard_storage::open(&db.url()).await.unwrap();
    assert_eq!(url.backend(), "sqlite");

    let pg = fresh_postgres_url()
        .await
        .unwrap_or_else(|e| panic!("postgres tests need a server: {e:#}"));
    let store = lanyard_storage::open(pg.url()).await.unwrap();
    assert_eq!(store.backend(), "postgres");
    let alternative = pg.url().replacen("postgres://", "postgresql://", 1);
    assert_eq!(
        lanyard_storage::open(&alternative).await.unwrap().backend(),
        "postgres"
    );
    pg.cleanup().await.unwrap();
}

#[tokio::test]
async fn sqlite_under_a_regular_file_fails_clearly() {
    let db = fresh_sqlite_path().unwrap();
    let file = db.dir().join("not-a-dir");
    std::fs::write(&file, b"plain file").unwrap();
    let err = lanyard_storage::SqliteStore::open(&file.join("lanyard.db"))
        .await
        .unwrap_err();
    match err {
        StoreError::Unavailable(message) => {
            assert!(message.contains("not a directory"), "{message}");
            assert!(message.contains("not-a-dir"), "{message}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn sqlite_in_a_missing_directory_fails_clearly() {
    let db = fresh_sqlite_path().unwrap();
    let err = lanyard_storage::SqliteStore::open(&db.dir().join("nope").join("lanyard.db"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("nope")),
        "{err}"
    );
}

#[tokio::test]
async fn sqlite_refuses_a_file_that_is_not_a_database() {
    let db = fresh_sqlite_path().unwrap();
    std::fs::write(db.path(), vec![b'x'; 4096]).unwrap();
    let err = lanyard_storage::SqliteStore::open(db.path())
        .await
        .unwrap_err();
    match err {
        StoreError::Unavailable(message) => {
            assert!(message.contains("not a sqlite database"), "{message}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    // The file is left as it was.
    assert_eq!(std::fs::read(db.path()).unwrap(), vec![b'x'; 4096]);
}

#[tokio::test]
async fn postgres_unreachable_is_unavailable() {
    let result = no_hang(lanyard_storage::open(
        "postgres://lanyard:s3cret@127.0.0.1:1/lanyard",
    ))
    .await;
    match result {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("127.0.0.1:1"), "{message}");
            assert!(
                !message.contains("s3cret"),
                "the password must not leak: {message}"
            );
            assert!(!message.contains('\n'), "one line: {message}");
            assert!(
                !message.contains("unavailable"),
                "said once, by the kind: {message}"
            );
        }
        Err(other) => panic!("expected unavailable, got {other:?}"),
        Ok(_) => panic!("connected to port 1?"),
    }
}

/// Awaits `open`, failing the test if it never returns: the store's own connect timeout must
/// end it (the bound here only keeps a regression from hanging the suite; it is no target).
async fn no_hang<T>(open: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), open)
        .await
        .expect("opening the store never returned")
}

#[tokio::test]
async fn postgres_that_never_answers_is_unavailable() {
    // Accepts the connection, then says nothing: the client must not wait forever.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let result = no_hang(lanyard_storage::open(&format!(
        "postgres://lanyard@127.0.0.1:{port}/db"
    )))
    .await;
    silent.abort();
    match result {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("timed out"), "{message}");
        }
        Err(other) => panic!("expected unavailable, got {other:?}"),
        Ok(_) => panic!("a silent server cannot be a database"),
    }
}

#[tokio::test]
async fn postgres_with_a_missing_database_is_unavailable() {
    let pg = fresh_postgres_url()
        .await
        .unwrap_or_else(|e| panic!("postgres tests need a server: {e:#}"));
    let url = pg.url().to_string();
    pg.cleanup().await.unwrap();
    let err = lanyard_storage::open(&url)
        .await
        .err()
        .expect("database was dropped");
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("does not exist")),
        "{err}"
    );
}

fn doc(collection: &str, key: &str, version: i64) -> DocumentRecord {
    DocumentRecord {
        collection: collection.to_string(),
        key: key.to_string(),
        version,
        body: json!({ "key": key, "version": version }),
    }
}

async fn documents_round_trip_replace_and_delete(target: &Target) {
    let store = target.open().await;
    store
        .commit(
            Batch::new()
                .with(Change::PutDocument(doc("secrets", "kv1/db/v1", 1)))
                .with(Change::PutDocument(doc("blobs", "kv1/db/v1", 7))),
        )
        .await
        .unwrap();
    assert_eq!(
        store.document("secrets", "kv1/db/v1").await.unwrap(),
        Some(doc("secrets", "kv1/db/v1", 1))
    );
    // Collections are separate namespaces.
    assert_eq!(
        store
            .document("blobs", "kv1/db/v1")
            .await
            .unwrap()
            .unwrap()
            .version,
        7
    );
    store
        .commit(Batch::new().with(Change::PutDocument(doc("secrets", "kv1/db/v1", 2))))
        .await
        .unwrap();
    assert_eq!(
        store
            .document("secrets", "kv1/db/v1")
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
    store
        .commit(Batch::new().with(Change::DeleteDocument {
            collection: "secrets".into(),
            key: "kv1/db/v1".into(),
        }))
        .await
        .unwrap();
    assert_eq!(store.document("secrets", "kv1/db/v1").await.unwrap(), None);
    assert!(store
        .document("blobs", "kv1/db/v1")
        .await
        .unwrap()
        .is_some());
}

async fn document_prefixes_are_ranges_not_patterns(target: &Target) {
    let store = target.open().await;
    let keys = [
        "a/b_c/1", "a/b_c/2", "a/bxc/1", "a/b%c/1", "a/b_c0", "a/b_", "b/1",
    ];
    let mut batch = Batch::new();
    for k in keys {
        batch.push(Change::PutDocument(doc("c", k, 1)));
    }
    store.commit(batch).await.unwrap();
    let listed = |docs: Vec<DocumentRecord>| docs.into_iter().map(|d| d.key).collect::<Vec<_>>();
    let under = store
        .documents(&DocumentQuery {
            collection: "c".into(),
            prefix: Some("a/b_c/".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed(under), vec!["a/b_c/1", "a/b_c/2"]);
    // Paging visits each key under the prefix once, in order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .documents(&DocumentQuery {
                collection: "c".into(),
                prefix: Some("a/".into()),
                after: after.clone(),
                limit: Some(2),
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|d| d.key.clone());
        seen.extend(listed(page));
    }
    let mut expected: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| k.starts_with("a/"))
        .collect();
    expected.sort_unstable();
    assert_eq!(seen, expected);
    store
        .commit(Batch::new().with(Change::DeleteDocumentsWithPrefix {
            collection: "c".into(),
            prefix: "a/b_c/".into(),
        }))
        .await
        .unwrap();
    let rest = store
        .documents(&DocumentQuery {
            collection: "c".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed(rest),
        vec!["a/b%c/1", "a/b_", "a/b_c0", "a/bxc/1", "b/1"]
    );
}

async fn document_expectations_guard_versions(target: &Target) {
    let store = target.open().await;
    store
        .commit(
            Batch::new()
                .expect(Expect::DocumentAbsent {
                    collection: "c".into(),
                    key: "k".into(),
                })
                .with(Change::PutDocument(doc("c", "k", 1))),
        )
        .await
        .unwrap();
    let again = store
        .commit(
            Batch::new()
                .expect(Expect::DocumentAbsent {
                    collection: "c".into(),
                    key: "k".into(),
                })
                .with(Change::PutDocument(doc("c", "other", 1))),
        )
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))));
    assert_eq!(store.document("c", "other").await.unwrap(), None);
    let stale = store
        .commit(
            Batch::new()
                .expect(Expect::DocumentVersion {
                    collection: "c".into(),
                    key: "k".into(),
                    version: 0,
                })
                .with(Change::PutDocument(doc("c", "k", 2))),
        )
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))));
    store
        .commit(
            Batch::new()
                .expect(Expect::DocumentVersion {
                    collection: "c".into(),
                    key: "k".into(),
                    version: 1,
                })
                .with(Change::PutDocument(doc("c", "k", 2))),
        )
        .await
        .unwrap();
    assert_eq!(store.document("c", "k").await.unwrap().unwrap().version, 2);
}

// ---------------------------------------------------------------------------------------
// The commit feed

fn key_record(kid: &str) -> KeyRecord {
    KeyRecord {
        kid: kid.to_string(),
        body: json!({ "state": "next", "sealed": "AAECAwQF" }),
    }
}

fn group(name: &str, members: Vec<Uuid>) -> Principal {
    Principal {
        object_id: Uuid::new_v4(),
        tenant_id: Uuid::from_u128(1),
        display_name: name.to_string(),
        kind: PrincipalKind::Group { members },
    }
}

async fn feed_records_followed_changes_in_commit_order(t: &Target) {
    let store = t.open().await;
    assert_eq!(store.feed_head().await.unwrap(), FeedHead::default());
    assert!(store.feed(0, 100).await.unwrap().is_empty());

    let machine = vm("rg", "vm1");
    let alice = user("alice");
    let team = group("team", vec![alice.object_id]);
    let grant = assignment(&rg("rg"), READER, alice.object_id);
    let revocation = lanyard_storage::DocumentRecord {
        collection: lanyard_storage::HOST_REVOCATIONS.to_string(),
        key: format!("{}/{}", alice.object_id, machine.key()),
        version: 5,
        body: json!({ "principal": alice.object_id, "host": machine.key(), "validAfter": 5 }),
    };
    let batches = vec![
        Batch::new()
            .with(Change::PutResource(record(&machine)))
            .with(Change::AppendActivity(activity(0, &machine, None))),
        Batch::new()
            .with(Change::PutPrincipal(alice.clone()))
            .with(Change::PutPrincipal(team.clone()))
            .with(Change::PutAssignment(grant.clone())),
        Batch::new()
            .with(Change::PutKey(key_record("k1")))
            .with(Change::DeleteKey("k0".to_string())),
        Batch::new()
            .with(Change::SetRevocation {
                principal: alice.object_id,
                valid_after: 42,
            })
            .with(Change::PutDocument(revocation.clone()))
            .with(Change::PutDocument(doc("secrets", "kv1/db/v1", 1))),
        Batch::new()
            .with(Change::DeleteAssignment(grant.id))
            .with(Change::DeleteAssignmentsWithin(rg("rg")))
            .with(Change::DeleteResourcesWithin(rg("rg")))
            .with(Change::DeletePrincipal(team.object_id)),
    ];
    let mut given = Vec::new();
    for batch in batches {
        given.push(store.commit_seq(batch).await.unwrap());
    }
    assert_eq!(given, vec![Some(1), Some(2), Some(3), Some(4), Some(5)]);

    let entries = store.feed(0, 100).await.unwrap();
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    // Resources are named, not copied; logs and unfollowed documents are left out.
    assert_eq!(
        entries[0].changes,
        vec![FeedChange::PutResource(machine.clone())]
    );
    assert_eq!(
        entries[1].changes,
        vec![
            FeedChange::PutPrincipal {
                object_id: alice.object_id,
                members: None
            },
            FeedChange::PutPrincipal {
                object_id: team.object_id,
                members: Some(vec![alice.object_id])
            },
            FeedChange::PutAssignment(grant.clone()),
        ]
    );
    assert_eq!(
        entries[2].changes,
        vec![
            FeedChange::PutKey("k1".to_string()),
            FeedChange::DeleteKey("k0".to_string())
        ]
    );
    assert_eq!(
        entries[3].changes,
        vec![
            FeedChange::SetRevocation {
                principal: alice.object_id,
                valid_after: 42
            },
            FeedChange::PutDocument(revocation),
        ]
    );
    assert_eq!(
        entries[4].changes,
        vec![
            FeedChange::DeleteAssignment(grant.id),
            FeedChange::DeleteAssignmentsWithin(rg("rg")),
            FeedChange::DeleteResourcesWithin(rg("rg")),
            FeedChange::DeletePrincipal(team.object_id),
        ]
    );

    // Paging: after a number, bounded.
    let page = store.feed(2, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert!(store.feed(5, 10).await.unwrap().is_empty());
    assert_eq!(
        store.feed_head().await.unwrap(),
        FeedHead {
            seq: 5,
            pruned_through: 0
        }
    );
    // Another connection (a second server) reads the same feed.
    let other = t.open().await;
    assert_eq!(other.feed(0, 100).await.unwrap(), entries);
}

async fn feed_skips_batches_nobody_follows(t: &Target) {
    let store = t.open().await;
    let id = vm("rg", "quiet");
    let owner = user("owner");
    let unfollowed = [
        Batch::new().with(Change::PutMeta {
            key: "k".to_string(),
            value: "v".to_string(),
        }),
        Batch::new().with(Change::AppendActivity(activity(1, &id, None))),
        Batch::new().with(Change::PutCredential(CredentialRecord {
            id: Uuid::new_v4(),
            principal_id: owner.object_id,
            kind: "secret".to_string(),
            body: json!({ "hash": "h" }),
            created_at: at(0),
        })),
        Batch::new()
            .with(Change::PutDocument(doc("secrets", "kv1/a/v1", 1)))
            .with(Change::DeleteDocument {
                collection: "blobs".to_string(),
                key: "x".to_string(),
            })
            .with(Change::DeleteDocumentsWithPrefix {
                collection: "secrets".to_string(),
                prefix: "kv1/".to_string(),
            }),
    ];
    for batch in unfollowed {
        assert_eq!(store.commit_seq(batch).await.unwrap(), None);
    }
    assert_eq!(store.feed_head().await.unwrap().seq, 0);
    assert!(store.feed(0, 10).await.unwrap().is_empty());
    // One followed change makes the whole batch an entry, with only that change.
    let seq = store
        .commit_seq(
            Batch::new()
                .with(Change::AppendActivity(activity(2, &id, None)))
                .with(Change::DeleteDocument {
                    collection: lanyard_storage::HOST_REVOCATIONS.to_string(),
                    key: "p/h".to_string(),
                }),
        )
        .await
        .unwrap();
    assert_eq!(seq, Some(1));
    assert_eq!(
        store.feed(0, 10).await.unwrap()[0].changes,
        vec![FeedChange::DeleteDocument {
            collection: lanyard_storage::HOST_REVOCATIONS.to_string(),
            key: "p/h".to_string()
        }]
    );
}

async fn failed_batches_append_nothing_to_the_feed(t: &Target) {
    let store = t.open().await;
    let alice = user("alice");
    let grant = assignment(&rg("rg"), READER, alice.object_id);
    assert_eq!(
        store
            .commit_seq(Batch::new().with(Change::PutAssignment(grant.clone())))
            .await
            .unwrap(),
        Some(1)
    );
    // A failed expectation, and a conflict raised by a change: nothing reaches the feed.
    let guarded = Batch::new()
        .expect(Expect::ResourceExists(vm("rg", "missing")))
        .with(Change::PutPrincipal(alice.clone()));
    assert_conflict(store.commit_seq(guarded).await, "does not exist");
    let duplicate = RoleAssignment {
        id: Uuid::new_v4(),
        ..grant.clone()
    };
    assert_conflict(
        store
            .commit_seq(
                Batch::new()
                    .with(Change::PutPrincipal(alice.clone()))
                    .with(Change::PutAssignment(duplicate)),
            )
            .await,
        "already exists",
    );
    assert_eq!(store.feed_head().await.unwrap().seq, 1);
    assert_eq!(store.feed(0, 10).await.unwrap().len(), 1);
    assert_eq!(store.principal(alice.object_id).await.unwrap(), None);
    // Numbers are not used up by failures: the next entry follows without a gap.
    assert_eq!(
        store
            .commit_seq(Batch::new().with(Change::PutPrincipal(alice.clone())))
            .await
            .unwrap(),
        Some(2)
    );
    let seqs: Vec<u64> = store
        .feed(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2]);
}

async fn feed_numbers_are_contiguous_and_visible_in_order_under_concurrency(t: &Target) {
    // Three stores (three pools, as three servers would have) write at once while a reader
    // follows: it must never see an entry before an earlier-numbered one.
    let stores = [t.open().await, t.open().await, t.open().await];
    let reader = t.open().await;
    const WRITES: usize = 30;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let follower = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut cursor = 0u64;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                for entry in reader.feed(cursor, 7).await.unwrap() {
                    assert_eq!(entry.seq, cursor + 1, "a gap in the feed after {cursor}");
                    cursor = entry.seq;
                }
                if finished && reader.feed(cursor, 1).await.unwrap().is_empty() {
                    return cursor;
                }
                assert!(Instant::now() < deadline, "the follower did not finish");
                tokio::task::yield_now().await;
            }
        })
    };
    let writers: Vec<_> = (0..WRITES)
        .map(|i| {
            let store = Arc::clone(&stores[i % stores.len()]);
            tokio::spawn(async move {
                let id = vm("busy", &format!("vm{i}"));
                let seq = store
                    .commit_seq(Batch::new().with(Change::PutResource(record(&id))))
                    .await
                    .unwrap()
                    .expect("a followed change appends an entry");
                (seq, id)
            })
        })
        .collect();
    let mut given = Vec::new();
    for w in writers {
        given.push(w.await.unwrap());
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(follower.await.unwrap(), WRITES as u64);

    given.sort_by_key(|(seq, _)| *seq);
    let seqs: Vec<u64> = given.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=WRITES as u64).collect::<Vec<_>>());
    // Each number holds the batch that was given it.
    let entries = stores[0].feed(0, 100).await.unwrap();
    assert_eq!(entries.len(), WRITES);
    for (entry, (seq, id)) in entries.iter().zip(&given) {
        assert_eq!(entry.seq, *seq);
        assert_eq!(entry.changes, vec![FeedChange::PutResource(id.clone())]);
    }
}

async fn feed_pruning_keeps_the_newest_entries(t: &Target) {
    let store = t.open().await;
    for i in 0..10 {
        put_resources(store.as_ref(), &[vm("rg", &format!("vm{i}"))]).await;
    }
    store.prune_feed(3).await.unwrap();
    assert_eq!(
        store.feed_head().await.unwrap(),
        FeedHead {
            seq: 10,
            pruned_through: 7
        }
    );
    let seqs: Vec<u64> = store
        .feed(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![8, 9, 10]);
    // Keeping more than there is prunes nothing; numbering goes on.
    store.prune_feed(100).await.unwrap();
    assert_eq!(store.feed_head().await.unwrap().pruned_through, 7);
    assert_eq!(
        store
            .commit_seq(Batch::new().with(Change::DeleteResource(vm("rg", "vm0"))))
            .await
            .unwrap(),
        Some(11)
    );
    store.prune_feed(0).await.unwrap();
    assert!(store.feed(0, 100).await.unwrap().is_empty());
    assert_eq!(
        store.feed_head().await.unwrap(),
        FeedHead {
            seq: 11,
            pruned_through: 11
        }
    );
}

async fn commits_prune_the_feed_beyond_its_retention(t: &Target) {
    let store = t.open().await;
    // Plant a long history: the head just before a pruning point, and a few old entries.
    t.raw_execute("UPDATE feed_head SET seq = 10099 WHERE id = 1")
        .await;
    t.raw_execute("INSERT INTO feed (seq, body) VALUES (50, '[]'), (100, '[]'), (101, '[]')")
        .await;
    let seq = store
        .commit_seq(Batch::new().with(Change::PutResource(record(&vm("rg", "late")))))
        .await
        .unwrap();
    assert_eq!(seq, Some(10100));
    // The newest 10,000 stay: 101 ..= 10100.
    assert_eq!(
        store.feed_head().await.unwrap(),
        FeedHead {
            seq: 10100,
            pruned_through: 100
        }
    );
    let seqs: Vec<u64> = store
        .feed(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![101, 10100]);
}

async fn meta_expectations_guard_a_version(t: &Target) {
    let store = t.open().await;
    let bump = |from: Option<&str>, to: &str| {
        Batch::new()
            .expect(Expect::MetaIs {
                key: "ring".to_string(),
                value: from.map(str::to_string),
            })
            .with(Change::PutMeta {
                key: "ring".to_string(),
                value: to.to_string(),
            })
    };
    store.commit_seq(bump(None, "1")).await.unwrap();
    assert_conflict(store.commit_seq(bump(None, "1")).await, "ring");
    assert_conflict(store.commit_seq(bump(Some("0"), "1")).await, "ring");
    store.commit_seq(bump(Some("1"), "2")).await.unwrap();
    assert_eq!(store.meta("ring").await.unwrap().as_deref(), Some("2"));
}
