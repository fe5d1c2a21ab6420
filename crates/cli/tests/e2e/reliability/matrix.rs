//! The authorization matrix: service principals made through Graph receive seeded random
//! sets of built-in roles at different scopes (subscription, groups, a VM, a vault, a blob
//! container), round after round; in each round every principal tries the same operations on
//! the control plane, Key Vault and blob storage, and every HTTP answer must equal the naive
//! reference evaluator's decision (`lanyard_authz::reference`) on the assignments the test
//! made: allowed means a 2xx, denied means a 403 in the plane's words. The count of
//! mismatches is printed; it must be zero.

use std::collections::BTreeSet;

use lanyard_authz::reference::{is_allowed, Environment};
use lanyard_authz::{AccessRequest, ActionKind};
use lanyard_domain::{builtin, PrincipalType, ResourceId, RoleAssignment};
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use super::kit::*;
use crate::support::{Backend, TestServer};

const PRINCIPALS: usize = 5;
const ROUNDS: usize = 6;
const ROLES: &[(&str, &str)] = &[
    ("Reader", READER),
    ("Contributor", CONTRIBUTOR),
    ("Virtual Machine Contributor", VM_CONTRIBUTOR),
    ("User Access Administrator", USER_ACCESS_ADMIN),
    ("Managed Identity Operator", MI_OPERATOR),
    ("Key Vault Secrets User", KV_SECRETS_USER),
    ("Key Vault Secrets Officer", KV_SECRETS_OFFICER),
    ("Storage Blob Data Reader", BLOB_READER),
    ("Storage Blob Data Contributor", BLOB_CONTRIBUTOR),
];
const VAULT: &str = "kvmatrix";
const ACCOUNT: &str = "stmatrix";
const CONTAINER: &str = "box1";

/// The stage every round runs on.
struct Stage {
    t: Target,
    admin_arm: String,
    sub: String,
    rg1: String,
    rg2: String,
    vm1: String,
    ua1: String,
    vault: String,
    account: String,
    container_scope: String,
    dummy: App,
}

struct Principal {
    app: App,
    oid: Uuid,
    arm: String,
    vault: String,
    storage: String,
}

/// One operation and what the reference says it needs.
struct Check {
    what: String,
    /// Every (action, kind, scope) the operation needs, all of them.
    needs: Vec<Vec<(String, ActionKind, String)>>,
    reply: Reply,
    plane: PlaneKind,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PlaneKind {
    Arm,
    Vault,
    Blob,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_answers_equal_the_reference_evaluator() {
    let seed = seed("matrix");
    let mut rng = Rng::new(seed);
    let server = TestServer::start(Backend::Sqlite).await.unwrap();
    let stage = stage(&server).await;
    let t = &stage.t;
    let graph = t.admin_token(GRAPH_SCOPE).await;
    let mut principals = Vec::new();
    for i in 0..PRINCIPALS {
        let app = create_app(t, &graph, &format!("matrix-{i}")).await;
        principals.push(Principal {
            oid: Uuid::parse_str(&app.object_id).unwrap(),
            arm: t.token(&app.client_id, &app.secret, ARM_SCOPE).await,
            vault: t.token(&app.client_id, &app.secret, VAULT_SCOPE).await,
            storage: t.token(&app.client_id, &app.secret, STORAGE_SCOPE).await,
            app,
        });
    }
    let scopes = [
        stage.sub.clone(),
        stage.rg1.clone(),
        stage.rg2.clone(),
        stage.vm1.clone(),
        stage.vault.clone(),
        stage.container_scope.clone(),
    ];
    let roles = builtin::built_in_roles();
    let mut checks = 0usize;
    let mut mismatches = Vec::new();
    let mut live: Vec<(String, RoleAssignment)> = Vec::new();
    let mut combos = BTreeSet::new();
    // Every role at every scope, shuffled, dealt out a few at a time, so that the rounds
    // together use them all.
    let mut deck: Vec<(usize, usize)> = (0..ROLES.len())
        .flat_map(|r| (0..scopes.len()).map(move |s| (r, s)))
        .collect();
    for i in (1..deck.len()).rev() {
        let j = rng.below(i + 1);
        deck.swap(i, j);
    }
    let mut next = 0usize;
    for round in 0..ROUNDS {
        // Take away last round's roles, then hand out new ones.
        for (path, _) in live.drain(..) {
            let r = call(
                &t.http,
                Method::DELETE,
                &t.arm(&format!("{path}?{RA_API}")),
                bearer(&stage.admin_arm),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
        for p in &principals {
            let mut given = BTreeSet::new();
            for _ in 0..1 + rng.below(3) {
                let (role, scope) = deck[next % deck.len()];
                next += 1;
                if !given.insert((role, scope)) {
                    continue;
                }
                combos.insert((role, scope));
                let path = assign(
                    t,
                    &stage.admin_arm,
                    &scopes[scope],
                    ROLES[role].1,
                    &p.app.object_id,
                )
                .await;
                let now = time::OffsetDateTime::now_utc();
                live.push((
                    path,
                    RoleAssignment {
                        id: Uuid::new_v4(),
                        scope: ResourceId::parse(&scopes[scope]).unwrap(),
                        role_definition_id: Uuid::parse_str(ROLES[role].1).unwrap(),
                        principal_id: p.oid,
                        principal_type: PrincipalType::ServicePrincipal,
                        description: None,
                        condition: None,
                        condition_version: None,
                        created_on: now,
                        updated_on: now,
                        created_by: None,
                        updated_by: None,
                    },
                ));
            }
        }
        // The server's own view of each principal's assignments agrees with the test's.
        for p in &principals {
            let r = call(
                &t.http,
                Method::GET,
                &t.arm(&format!(
                    "{}/providers/Microsoft.Authorization/roleAssignments?{RA_API}&$filter={}",
                    stage.sub,
                    urlencoding::encode(&format!("principalId eq '{}'", p.oid))
                )),
                bearer(&stage.admin_arm),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text);
            let server: BTreeSet<(String, String)> = r.json["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    (
                        a["properties"]["scope"]
                            .as_str()
                            .unwrap()
                            .to_ascii_lowercase(),
                        a["properties"]["roleDefinitionId"]
                            .as_str()
                            .unwrap()
                            .rsplit('/')
                            .next()
                            .unwrap()
                            .to_string(),
                    )
                })
                .collect();
            let ours: BTreeSet<(String, String)> = live
                .iter()
                .filter(|(_, a)| a.principal_id == p.oid)
                .map(|(_, a)| (a.scope.key().to_string(), a.role_definition_id.to_string()))
                .collect();
            assert_eq!(server, ours, "round {round}: assignments of {}", p.oid);
        }
        let env = Environment {
            roles: roles.clone(),
            assignments: live.iter().map(|(_, a)| a.clone()).collect(),
            groups: Default::default(),
        };

        for (i, p) in principals.iter().enumerate() {
            for check in operations(&stage, p, &format!("r{round}p{i}")).await {
                checks += 1;
                let expected = check.needs.iter().any(|all| {
                    all.iter().all(|(action, kind, scope)| {
                        let scope = ResourceId::parse(scope).unwrap();
                        is_allowed(
                            &env,
                            &AccessRequest {
                                principal: p.oid,
                                action,
                                kind: *kind,
                                scope: &scope,
                            },
                        )
                    })
                });
                if let Some(why) = disagreement(&check, expected) {
                    let held: Vec<String> = live
                        .iter()
                        .filter(|(_, a)| a.principal_id == p.oid)
                        .map(|(_, a)| {
                            let name = ROLES
                                .iter()
                                .find(|r| r.1 == a.role_definition_id.to_string())
                                .map_or("?", |r| r.0);
                            format!("{name} at {}", a.scope)
                        })
                        .collect();
                    mismatches.push(format!(
                        "round {round}, principal {i} holding [{}]: {}: {why}",
                        held.join("; "),
                        check.what
                    ));
                }
            }
        }
    }
    println!(
        "matrix: {PRINCIPALS} principals x {ROUNDS} rounds, {} of {} role x scope combinations used, {checks} answers compared with the reference evaluator, {} mismatches",
        combos.len(),
        ROLES.len() * scopes.len(),
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "seed {seed}: {} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// `None` when the answer matches the expectation, else why not.
fn disagreement(check: &Check, allowed: bool) -> Option<String> {
    let r = &check.reply;
    if allowed {
        if (200..300).contains(&r.status) {
            return None;
        }
        return Some(format!(
            "the reference allows it, the server answered {}: {}",
            r.status,
            r.text.chars().take(300).collect::<String>()
        ));
    }
    if r.status != 403 {
        return Some(format!(
            "the reference denies it, the server answered {}: {}",
            r.status,
            r.text.chars().take(300).collect::<String>()
        ));
    }
    let shaped = match check.plane {
        PlaneKind::Arm => matches!(
            r.code(),
            "AuthorizationFailed" | "LinkedAuthorizationFailed"
        ),
        PlaneKind::Vault => {
            r.code() == "Forbidden" && r.json["error"]["innererror"]["code"] == "ForbiddenByRbac"
        }
        PlaneKind::Blob => r.header("x-ms-error-code") == Some("AuthorizationPermissionMismatch"),
    };
    (!shaped).then(|| format!("a 403 not in the plane's words: {}", r.text))
}

async fn stage(server: &TestServer) -> Stage {
    let t = Target::of(server);
    let admin_arm = t.admin_token(ARM_SCOPE).await;
    let admin = t.admin.object_id.to_string();
    let sub = t.subscription();
    let rg1 = format!("{sub}/resourceGroups/mx1");
    let rg2 = format!("{sub}/resourceGroups/mx2");
    for rg in [&rg1, &rg2] {
        put_ok(
            &t,
            &admin_arm,
            &format!("{rg}?{RG_API}"),
            &json!({"location": "local"}),
        )
        .await;
    }
    let vm1 = format!("{rg1}/providers/Microsoft.Compute/virtualMachines/vm1");
    put_ok(
        &t,
        &admin_arm,
        &format!("{vm1}?{VM_API}"),
        &json!({"location": "local"}),
    )
    .await;
    let ua1 = format!("{rg1}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ua1");
    put_ok(
        &t,
        &admin_arm,
        &format!("{ua1}?{UAI_API}"),
        &json!({"location": "local"}),
    )
    .await;
    let vault = format!("{rg1}/providers/Microsoft.KeyVault/vaults/{VAULT}");
    put_ok(
        &t,
        &admin_arm,
        &format!("{vault}?{KV_API}"),
        &json!({"location": "local", "properties": {"tenantId": t.tenant(),
            "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": true}}),
    )
    .await;
    assign(&t, &admin_arm, &vault, KV_SECRETS_OFFICER, &admin).await;
    let kv = t.admin_token(VAULT_SCOPE).await;
    let r = call(
        &t.http,
        Method::PUT,
        &t.vault(VAULT, &format!("/secrets/s1?{SECRETS_API}")),
        bearer_json(&kv, &json!({"value": "matrix"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let account = format!("{rg2}/providers/Microsoft.Storage/storageAccounts/{ACCOUNT}");
    put_ok(
        &t,
        &admin_arm,
        &format!("{account}?{ACCOUNT_API}"),
        &json!({"location": "local", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}),
    )
    .await;
    assign(&t, &admin_arm, &account, BLOB_CONTRIBUTOR, &admin).await;
    let st = t.admin_token(STORAGE_SCOPE).await;
    let r = call(
        &t.http,
        Method::PUT,
        &t.blob(ACCOUNT, &format!("/{CONTAINER}?restype=container")),
        bearer(&st),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = call(
        &t.http,
        Method::PUT,
        &t.blob(ACCOUNT, &format!("/{CONTAINER}/b1")),
        Req {
            token: Some(&st),
            body: Some((b"hello".to_vec(), "text/plain")),
            headers: vec![("x-ms-blob-type", "BlockBlob".into())],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let graph = t.admin_token(GRAPH_SCOPE).await;
    let dummy = create_app(&t, &graph, "matrix-dummy").await;
    Stage {
        container_scope: format!("{account}/blobServices/default/containers/{CONTAINER}"),
        t,
        admin_arm,
        sub,
        rg1,
        rg2,
        vm1,
        ua1,
        vault,
        account,
        dummy,
    }
}

fn control(action: &str, scope: &str) -> (String, ActionKind, String) {
    (action.to_string(), ActionKind::Control, scope.to_string())
}

fn data(action: &str, scope: &str) -> (String, ActionKind, String) {
    (action.to_string(), ActionKind::Data, scope.to_string())
}

/// Every operation of a round, as `p`; `tag` makes new names unique.
async fn operations(s: &Stage, p: &Principal, tag: &str) -> Vec<Check> {
    let t = &s.t;
    let mut out = Vec::new();
    let arm = |method: Method, path: String, body: Option<serde_json::Value>| {
        let token = p.arm.clone();
        async move {
            let req = Req {
                token: Some(&token),
                json: body.as_ref(),
                ..Default::default()
            };
            call(&t.http, method, &t.arm(&path), req).await
        }
    };
    let mut push =
        |what: String, needs: Vec<Vec<(String, ActionKind, String)>>, reply: Reply, plane| {
            out.push(Check {
                what,
                needs,
                reply,
                plane,
            })
        };

    // Control plane.
    let r = arm(Method::GET, format!("{}?{RG_API}", s.rg1), None).await;
    push(
        "GET group mx1".into(),
        vec![vec![control(
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            &s.rg1,
        )]],
        r,
        PlaneKind::Arm,
    );
    let r = arm(Method::GET, format!("{}?{VM_API}", s.vm1), None).await;
    push(
        "GET vm1".into(),
        vec![vec![control(
            "Microsoft.Compute/virtualMachines/read",
            &s.vm1,
        )]],
        r,
        PlaneKind::Arm,
    );
    let vm_new = format!(
        "{}/providers/Microsoft.Compute/virtualMachines/vm-{tag}",
        s.rg1
    );
    let r = arm(
        Method::PUT,
        format!("{vm_new}?{VM_API}"),
        Some(json!({"location": "local"})),
    )
    .await;
    push(
        format!("PUT {vm_new}"),
        vec![vec![control(
            "Microsoft.Compute/virtualMachines/write",
            &vm_new,
        )]],
        r,
        PlaneKind::Arm,
    );
    let vm_linked = format!(
        "{}/providers/Microsoft.Compute/virtualMachines/vl-{tag}",
        s.rg1
    );
    let body = json!({"location": "local", "identity": {"type": "UserAssigned", "userAssignedIdentities": {&s.ua1: {}}}});
    let r = arm(Method::PUT, format!("{vm_linked}?{VM_API}"), Some(body)).await;
    push(
        format!("PUT {vm_linked} holding ua1"),
        vec![vec![
            control("Microsoft.Compute/virtualMachines/write", &vm_linked),
            control(
                "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
                &s.ua1,
            ),
        ]],
        r,
        PlaneKind::Arm,
    );
    let ghost = format!(
        "{}/providers/Microsoft.Compute/virtualMachines/ghost-{tag}",
        s.rg2
    );
    let r = arm(Method::DELETE, format!("{ghost}?{VM_API}"), None).await;
    push(
        format!("DELETE {ghost}"),
        vec![vec![control(
            "Microsoft.Compute/virtualMachines/delete",
            &ghost,
        )]],
        r,
        PlaneKind::Arm,
    );
    let r = arm(Method::GET, format!("{}?{UAI_API}", s.ua1), None).await;
    push(
        "GET ua1".into(),
        vec![vec![control(
            "Microsoft.ManagedIdentity/userAssignedIdentities/read",
            &s.ua1,
        )]],
        r,
        PlaneKind::Arm,
    );
    let r = arm(Method::GET, format!("{}?{KV_API}", s.vault), None).await;
    push(
        "GET vault".into(),
        vec![vec![control("Microsoft.KeyVault/vaults/read", &s.vault)]],
        r,
        PlaneKind::Arm,
    );
    let r = arm(Method::GET, format!("{}?{ACCOUNT_API}", s.account), None).await;
    push(
        "GET account".into(),
        vec![vec![control(
            "Microsoft.Storage/storageAccounts/read",
            &s.account,
        )]],
        r,
        PlaneKind::Arm,
    );
    let ra = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/{}",
        s.rg2,
        Uuid::new_v4()
    );
    let body = json!({"properties": {
        "roleDefinitionId": format!("{}/providers/Microsoft.Authorization/roleDefinitions/{READER}", s.sub),
        "principalId": s.dummy.object_id, "principalType": "ServicePrincipal"}});
    let r = arm(Method::PUT, format!("{ra}?{RA_API}"), Some(body)).await;
    if r.status == 201 {
        // Made for a principal outside the test: take it back so the next try is new again.
        let d = call(
            &t.http,
            Method::DELETE,
            &t.arm(&format!("{ra}?{RA_API}")),
            bearer(&s.admin_arm),
        )
        .await;
        assert_eq!(d.status, 200, "{}", d.text);
    }
    push(
        "PUT a role assignment at mx2".into(),
        vec![vec![control(
            "Microsoft.Authorization/roleAssignments/write",
            &ra,
        )]],
        r,
        PlaneKind::Arm,
    );

    // Key Vault.
    let secret = format!("{}/secrets/s1", s.vault);
    let r = call(
        &t.http,
        Method::GET,
        &t.vault(VAULT, &format!("/secrets/s1?{SECRETS_API}")),
        bearer(&p.vault),
    )
    .await;
    push(
        "get secret s1".into(),
        vec![vec![data(
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            &secret,
        )]],
        r,
        PlaneKind::Vault,
    );
    let name = format!("m-{tag}");
    let r = call(
        &t.http,
        Method::PUT,
        &t.vault(VAULT, &format!("/secrets/{name}?{SECRETS_API}")),
        bearer_json(&p.vault, &json!({"value": "x"})),
    )
    .await;
    push(
        format!("set secret {name}"),
        vec![vec![data(
            "Microsoft.KeyVault/vaults/secrets/setSecret/action",
            &format!("{}/secrets/{name}", s.vault),
        )]],
        r,
        PlaneKind::Vault,
    );
    let r = call(
        &t.http,
        Method::GET,
        &t.vault(VAULT, &format!("/secrets?{SECRETS_API}")),
        bearer(&p.vault),
    )
    .await;
    push(
        "list secrets".into(),
        vec![vec![data(
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
            &s.vault,
        )]],
        r,
        PlaneKind::Vault,
    );

    // Blob storage.
    let blob = |method: Method, path: String, body: Option<Vec<u8>>| {
        let token = p.storage.clone();
        async move {
            let mut req = Req {
                token: Some(&token),
                headers: vec![("x-ms-version", "2023-11-03".to_string())],
                ..Default::default()
            };
            if let Some(b) = body {
                req.body = Some((b, "application/octet-stream"));
                req.headers.push(("x-ms-blob-type", "BlockBlob".into()));
            }
            call(&t.http, method, &t.blob(ACCOUNT, &path), req).await
        }
    };
    let c = &s.container_scope;
    let r = blob(Method::GET, format!("/{CONTAINER}/b1"), None).await;
    push(
        "read blob box1/b1".into(),
        vec![vec![data(
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
            c,
        )]],
        r,
        PlaneKind::Blob,
    );
    let r = blob(
        Method::PUT,
        format!("/{CONTAINER}/n-{tag}"),
        Some(b"new".to_vec()),
    )
    .await;
    push(
        format!("write new blob box1/n-{tag}"),
        vec![
            vec![data(
                "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
                c,
            )],
            vec![data(
                "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action",
                c,
            )],
        ],
        r,
        PlaneKind::Blob,
    );
    let r = blob(
        Method::PUT,
        format!("/{CONTAINER}/b1"),
        Some(b"overwrite".to_vec()),
    )
    .await;
    push(
        "overwrite blob box1/b1".into(),
        vec![vec![data(
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
            c,
        )]],
        r,
        PlaneKind::Blob,
    );
    let r = blob(Method::GET, format!("/{CONTAINER}?restype=container"), None).await;
    push(
        "container box1 properties".into(),
        vec![vec![control(
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            c,
        )]],
        r,
        PlaneKind::Blob,
    );
    let new_container = format!("c-{tag}");
    let r = blob(
        Method::PUT,
        format!("/{new_container}?restype=container"),
        None,
    )
    .await;
    push(
        format!("create container {new_container}"),
        vec![vec![control(
            "Microsoft.Storage/storageAccounts/blobServices/containers/write",
            &format!(
                "{}/blobServices/default/containers/{new_container}",
                s.account
            ),
        )]],
        r,
        PlaneKind::Blob,
    );
    out
}
