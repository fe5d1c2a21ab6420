//! Signing keys across restarts and rotations: every token issued before a restart or a
//! rotation (`POST /lanyard/keys/rotate` on the login host) validates afterwards, at the
//! control plane and at a vault; and rotating under load, with tokens from before and after
//! each rotation in use concurrently, fails no request at all.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use super::kit::*;
use crate::both_backends;
use crate::support::{Backend, TestServer};

both_backends!(
    tokens_survive_restarts_and_rotations,
    rotation_under_load_fails_nothing
);

/// What the tests need on a fresh server: a group with a VM (system identity, Reader on the
/// group), an app with Reader on the group and Secrets User on a vault with one secret.
struct Stage {
    rg: String,
    vm: String,
    app: App,
}

async fn stage(t: &Target) -> Stage {
    let arm = t.admin_token(ARM_SCOPE).await;
    let graph = t.admin_token(GRAPH_SCOPE).await;
    let rg = format!("{}/resourceGroups/keys", t.subscription());
    put_ok(
        t,
        &arm,
        &format!("{rg}?{RG_API}"),
        &json!({"location": "local"}),
    )
    .await;
    let vm = format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm1");
    let body = put_ok(
        t,
        &arm,
        &format!("{vm}?{VM_API}"),
        &json!({"location": "local", "identity": {"type": "SystemAssigned"}}),
    )
    .await;
    let vm_principal = body["identity"]["principalId"]
        .as_str()
        .unwrap()
        .to_string();
    assign(t, &arm, &rg, READER, &vm_principal).await;
    let app = create_app(t, &graph, "keys-app").await;
    assign(t, &arm, &rg, READER, &app.object_id).await;
    let vault = put_ok(
        t,
        &arm,
        &format!("{rg}/providers/Microsoft.KeyVault/vaults/kvkeys?{KV_API}"),
        &json!({"location": "local", "properties": {"tenantId": t.tenant(),
            "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": true}}),
    )
    .await;
    let vault_id = vault["id"].as_str().unwrap();
    assign(
        t,
        &arm,
        vault_id,
        KV_SECRETS_OFFICER,
        &t.admin.object_id.to_string(),
    )
    .await;
    assign(t, &arm, vault_id, KV_SECRETS_USER, &app.object_id).await;
    let kv = t.admin_token(VAULT_SCOPE).await;
    let r = call(
        &t.http,
        Method::PUT,
        &t.vault("kvkeys", &format!("/secrets/probe?{SECRETS_API}")),
        bearer_json(&kv, &json!({"value": "v"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    Stage { rg, vm, app }
}

/// A managed-identity token for the control plane from a new session on the VM.
async fn mi_token(t: &Target, vm: &str) -> String {
    let arm = t.admin_token(ARM_SCOPE).await;
    let session = call(
        &t.http,
        Method::POST,
        &t.arm("/lanyard/sessions"),
        bearer_json(&arm, &json!({"resource": vm})),
    )
    .await;
    assert_eq!(session.status, 201, "{}", session.text);
    let url = format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/",
        session.json["imdsEndpoint"].as_str().unwrap()
    );
    let r = reqwest::Client::new()
        .get(url)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

/// Where each kind of token is checked: the group (control plane) or the vault's secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plane {
    Arm,
    Vault,
}

async fn works(t: &Target, stage: &Stage, plane: Plane, token: &str) -> Result<(), String> {
    let url = match plane {
        Plane::Arm => t.arm(&format!("{}?{RG_API}", stage.rg)),
        Plane::Vault => t.vault("kvkeys", &format!("/secrets/probe?{SECRETS_API}")),
    };
    match try_call(&t.http, Method::GET, &url, bearer(token)).await {
        Ok(r) if r.status == 200 => Ok(()),
        Ok(r) => Err(format!("{plane:?} {}: {}", r.status, r.text)),
        Err(e) => Err(format!("{plane:?}: {e}")),
    }
}

fn kid(token: &str) -> String {
    jwt_parts(token).0["kid"].as_str().unwrap().to_string()
}

async fn rotate(t: &Target) -> String {
    let arm = t.admin_token(ARM_SCOPE).await;
    let r = call(
        &t.http,
        Method::POST,
        &t.url(&format!("login.{DOMAIN}"), "/lanyard/keys/rotate"),
        bearer(&arm),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["kid"].as_str().unwrap().to_string()
}

async fn published(t: &Target) -> BTreeSet<String> {
    let r = call(
        &t.http,
        Method::GET,
        &t.url(&format!("login.{DOMAIN}"), "/common/discovery/keys"),
        Req::default(),
    )
    .await;
    assert_eq!(r.status, 200);
    r.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

async fn tokens_survive_restarts_and_rotations(backend: Backend) {
    let server = TestServer::start(backend).await.unwrap();
    let mut t = Target::of(&server);
    let stage = stage(&t).await;
    let mut held: Vec<(String, Plane, String)> = Vec::new();
    let take = |t: Target, stage_app: App, vm: String| async move {
        vec![
            (
                "admin".to_string(),
                Plane::Arm,
                t.admin_token(ARM_SCOPE).await,
            ),
            (
                "app".to_string(),
                Plane::Arm,
                t.token(&stage_app.client_id, &stage_app.secret, ARM_SCOPE)
                    .await,
            ),
            (
                "app-vault".to_string(),
                Plane::Vault,
                t.token(&stage_app.client_id, &stage_app.secret, VAULT_SCOPE)
                    .await,
            ),
            ("vm".to_string(), Plane::Arm, mi_token(&t, &vm).await),
        ]
    };
    held.extend(take(t.clone(), stage.app.clone(), stage.vm.clone()).await);
    let mut kids = vec![kid(&held[0].2)];

    let check_all = |t: Target, held: Vec<(String, Plane, String)>, when: String| {
        let stage = &stage;
        async move {
            for (label, plane, token) in &held {
                if let Err(e) = works(&t, stage, *plane, token).await {
                    panic!(
                        "{when}: the {label} token (key {}) is refused: {e}",
                        kid(token)
                    );
                }
            }
        }
    };
    check_all(t.clone(), held.clone(), "before anything".into()).await;

    let server = server.restart().await.unwrap();
    t = Target::of(&server);
    check_all(t.clone(), held.clone(), "after a restart".into()).await;

    for round in 1..=3 {
        let new = rotate(&t).await;
        assert!(!kids.contains(&new), "rotation {round} reused a key");
        kids.push(new.clone());
        check_all(t.clone(), held.clone(), format!("after rotation {round}")).await;
        let fresh = take(t.clone(), stage.app.clone(), stage.vm.clone()).await;
        assert_eq!(
            kid(&fresh[0].2),
            new,
            "new tokens are signed by the new key"
        );
        held.extend(fresh);
        let jwks = published(&t).await;
        for k in &kids {
            assert!(
                jwks.contains(k),
                "key {k} left the JWKS while its tokens live"
            );
        }
    }

    let server = server.restart().await.unwrap();
    t = Target::of(&server);
    check_all(
        t.clone(),
        held.clone(),
        "after rotations and a restart".into(),
    )
    .await;
    let after = t.admin_token(ARM_SCOPE).await;
    assert_eq!(
        &kid(&after),
        kids.last().unwrap(),
        "the rotated key still signs after a restart"
    );

    // Only the administrator rotates.
    let app_token = t
        .token(&stage.app.client_id, &stage.app.secret, ARM_SCOPE)
        .await;
    let r = call(
        &t.http,
        Method::POST,
        &t.url(&format!("login.{DOMAIN}"), "/lanyard/keys/rotate"),
        bearer(&app_token),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    println!(
        "keys::{backend:?}: {} tokens under {} keys validated after 2 restarts and 3 rotations",
        held.len(),
        kids.len()
    );
}

async fn rotation_under_load_fails_nothing(backend: Backend) {
    let seed = seed(&format!("keys::rotation_under_load::{backend:?}"));
    let server = TestServer::start(backend).await.unwrap();
    let t = Target::of(&server);
    let stage = Arc::new(stage(&t).await);
    let pool: Arc<RwLock<Vec<(Plane, String)>>> = Arc::new(RwLock::new(vec![
        (Plane::Arm, t.admin_token(ARM_SCOPE).await),
        (
            Plane::Arm,
            t.token(&stage.app.client_id, &stage.app.secret, ARM_SCOPE)
                .await,
        ),
        (
            Plane::Vault,
            t.token(&stage.app.client_id, &stage.app.secret, VAULT_SCOPE)
                .await,
        ),
        (Plane::Arm, mi_token(&t, &stage.vm).await),
    ]));
    let done = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut rng = Rng::new(seed);
    let mut tasks = Vec::new();

    // Requests with any token of the pool, old or new.
    for w in 0..4u64 {
        let (t, stage, pool, done, ok, failures) = (
            t.clone(),
            Arc::clone(&stage),
            Arc::clone(&pool),
            Arc::clone(&done),
            Arc::clone(&ok),
            Arc::clone(&failures),
        );
        let mut rng = rng.fork(w);
        tasks.push(tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let (plane, token) = {
                    let p = pool.read().unwrap();
                    p[rng.below(p.len())].clone()
                };
                match works(&t, &stage, plane, &token).await {
                    Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("pooled token, key {}: {e}", kid(&token)));
                        0
                    }
                };
            }
        }));
    }
    // Tokens minted during rotations, used at once.
    {
        let (t, stage, done, ok, failures) = (
            t.clone(),
            Arc::clone(&stage),
            Arc::clone(&done),
            Arc::clone(&ok),
            Arc::clone(&failures),
        );
        tasks.push(tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let (status, body) = t
                    .try_token(&stage.app.client_id, &stage.app.secret, ARM_SCOPE)
                    .await;
                let Some(token) = body["access_token"].as_str() else {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("token endpoint {status}: {body}"));
                    continue;
                };
                match works(&t, &stage, Plane::Arm, token).await {
                    Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("fresh token, key {}: {e}", kid(token)));
                        0
                    }
                };
            }
        }));
    }

    let started = Instant::now();
    let mut kids = BTreeSet::new();
    let rotations = 6;
    for _ in 0..rotations {
        tokio::time::sleep(Duration::from_millis(rng.range(150, 450))).await;
        kids.insert(rotate(&t).await);
        let fresh = vec![
            (Plane::Arm, t.admin_token(ARM_SCOPE).await),
            (
                Plane::Arm,
                t.token(&stage.app.client_id, &stage.app.secret, ARM_SCOPE)
                    .await,
            ),
            (
                Plane::Vault,
                t.token(&stage.app.client_id, &stage.app.secret, VAULT_SCOPE)
                    .await,
            ),
        ];
        pool.write().unwrap().extend(fresh);
        let jwks = published(&t).await;
        for k in &kids {
            assert!(jwks.contains(k), "key {k} left the JWKS under load");
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    let pool_size = pool.read().unwrap().len();
    println!(
        "keys::rotation_under_load::{backend:?}: {rotations} rotations in {:.1} s, {} requests with {pool_size} pooled and fresh tokens, {} validation failures",
        started.elapsed().as_secs_f64(),
        ok.load(Ordering::SeqCst) + failures.len() as u64,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "seed {seed}: {} failures, first: {:?}",
        failures.len(),
        failures.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        ok.load(Ordering::SeqCst) > 100,
        "too little load to mean anything"
    );
}
