//! Revocation: what a deletion or a detach takes away stays taken away.
//!
//! - Deleting a host (the resource itself, or its resource group) revokes, for that host,
//!   the tokens every user-assigned identity attached to it got there, as detaching does;
//!   its system identity is retired. The identities keep working on other hosts, and a host
//!   created again with the same id and the same identity gets working tokens at once.
//! - Mints racing a revocation (an app deleted while the token endpoint issues its tokens,
//!   an identity detached or deleted, a VM deleted, while its identity endpoint issues
//!   tokens) leave no token that validates once the revocation has returned: every token
//!   obtained, whenever its answer arrived, is refused with 401 when checked afterwards.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::kit::*;
use crate::both_backends;
use crate::support::{Backend, TestServer};

both_backends!(
    deleting_a_host_revokes_what_its_identities_got_there,
    mints_racing_revocations_leave_no_token_that_validates
);

const VAULT: &str = "kvrevoke";

async fn end_session(t: &Target, token: &str, session: &Session) {
    // Already ended (the resource went) is fine too.
    let _ = call(
        &t.http,
        Method::DELETE,
        &t.arm(&format!("/lanyard/sessions/{}", session.id)),
        bearer(token),
    )
    .await;
}

/// An IMDS token request: the status, and the token when one was issued.
async fn imds(
    http: &reqwest::Client,
    session: &Session,
    client_id: Option<&str>,
    resource: &str,
) -> (u16, Option<String>) {
    let mut url = format!(
        "{}?api-version=2018-02-01&resource={resource}",
        session.imds
    );
    if let Some(c) = client_id {
        url.push_str(&format!("&client_id={c}"));
    }
    // A deleted resource ends its sessions, whose listeners then close (refusing new
    // connections, dropping open ones): no token comes back (status 0). A hang is a failure.
    let r = match http
        .get(url)
        .header("Metadata", "true")
        .timeout(Duration::from_secs(30))
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) if e.is_timeout() => panic!("IMDS request: {e}"),
        Err(_) => return (0, None),
    };
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let token = body["access_token"].as_str().map(str::to_string);
    (status, token)
}

async fn imds_ok(
    http: &reqwest::Client,
    session: &Session,
    client_id: Option<&str>,
    resource: &str,
) -> String {
    let (status, token) = imds(http, session, client_id, resource).await;
    assert_eq!(status, 200, "IMDS token for {client_id:?} and {resource}");
    token.unwrap()
}

/// What the control plane answers a token: 200 (valid), 401 (refused).
async fn at_arm(t: &Target, token: &str) -> u16 {
    call(
        &t.http,
        Method::GET,
        &t.arm("/subscriptions?api-version=2022-12-01"),
        bearer(token),
    )
    .await
    .status
}

/// What the vault answers a token for a secret: 401 if the token is refused, 403 if it is
/// valid but grants nothing.
async fn at_vault(t: &Target, token: &str) -> u16 {
    call(
        &t.http,
        Method::GET,
        &t.vault(VAULT, &format!("/secrets/probe?{SECRETS_API}")),
        bearer(token),
    )
    .await
    .status
}

fn with_identities(ids: &[&str], system: bool) -> Value {
    let users: serde_json::Map<String, Value> =
        ids.iter().map(|id| (id.to_string(), json!({}))).collect();
    let kind = match (system, ids.is_empty()) {
        (true, true) => "SystemAssigned",
        (true, false) => "SystemAssigned, UserAssigned",
        (false, false) => "UserAssigned",
        (false, true) => "None",
    };
    let mut identity = json!({"type": kind});
    if !ids.is_empty() {
        identity["userAssignedIdentities"] = Value::Object(users);
    }
    json!({"location": "local", "identity": identity})
}

/// A user-assigned identity: (resource id, client id).
async fn identity(t: &Target, arm: &str, rg: &str, name: &str) -> (String, String) {
    let body = put_ok(
        t,
        arm,
        &format!(
            "{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}?{UAI_API}"
        ),
        &json!({"location": "local"}),
    )
    .await;
    (
        body["id"].as_str().unwrap().to_string(),
        body["properties"]["clientId"].as_str().unwrap().to_string(),
    )
}

async fn delete_ok(t: &Target, token: &str, path: &str) {
    let r = call(&t.http, Method::DELETE, &t.arm(path), bearer(token)).await;
    assert!(
        r.status == 200 || r.status == 204,
        "DELETE {path} -> {}: {}",
        r.status,
        r.text
    );
}

async fn deleting_a_host_revokes_what_its_identities_got_there(backend: Backend) {
    let server = TestServer::start(backend).await.unwrap();
    let t = Target::of(&server);
    let arm = t.admin_token(ARM_SCOPE).await;
    let sub = t.subscription();
    let [ids, hosts, hosts2] =
        ["ids", "hosts", "hosts2"].map(|g| format!("{sub}/resourceGroups/{g}"));
    for rg in [&ids, &hosts, &hosts2] {
        put_ok(
            &t,
            &arm,
            &format!("{rg}?{RG_API}"),
            &json!({"location": "local"}),
        )
        .await;
    }
    let (ua, ua_client) = identity(&t, &arm, &ids, "shared").await;
    put_ok(
        &t,
        &arm,
        &format!("{ids}/providers/Microsoft.KeyVault/vaults/{VAULT}?{KV_API}"),
        &json!({"location": "local", "properties": {"tenantId": t.tenant(),
            "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": true}}),
    )
    .await;
    let vm =
        |rg: &str, name: &str| format!("{rg}/providers/Microsoft.Compute/virtualMachines/{name}");
    let (vm1, vm2, vm3) = (vm(&hosts, "vm1"), vm(&ids, "vm2"), vm(&hosts2, "vm3"));
    put_ok(
        &t,
        &arm,
        &format!("{vm1}?{VM_API}"),
        &with_identities(&[&ua], true),
    )
    .await;
    for host in [&vm2, &vm3] {
        put_ok(
            &t,
            &arm,
            &format!("{host}?{VM_API}"),
            &with_identities(&[&ua], false),
        )
        .await;
    }
    let http = reqwest::Client::new();
    let arm_aud = "https://management.azure.com/";
    let s1 = open_session(&t, &arm, &vm1).await;
    let s2 = open_session(&t, &arm, &vm2).await;
    let s3 = open_session(&t, &arm, &vm3).await;
    let ua_on_vm1 = imds_ok(&http, &s1, Some(&ua_client), arm_aud).await;
    let ua_on_vm1_vault = imds_ok(&http, &s1, Some(&ua_client), "https://vault.azure.net").await;
    let system_of_vm1 = imds_ok(&http, &s1, None, arm_aud).await;
    let ua_on_vm2 = imds_ok(&http, &s2, Some(&ua_client), arm_aud).await;
    let ua_on_vm3 = imds_ok(&http, &s3, Some(&ua_client), arm_aud).await;
    for token in [&ua_on_vm1, &system_of_vm1, &ua_on_vm2, &ua_on_vm3] {
        assert_eq!(at_arm(&t, token).await, 200, "a token works before");
    }
    assert_eq!(
        at_vault(&t, &ua_on_vm1_vault).await,
        403,
        "valid, granted nothing"
    );

    // The VM goes: what its identities got on it stops, at every plane.
    delete_ok(&t, &arm, &format!("{vm1}?{VM_API}")).await;
    assert_eq!(
        at_arm(&t, &ua_on_vm1).await,
        401,
        "the user-assigned identity's token"
    );
    assert_eq!(
        at_vault(&t, &ua_on_vm1_vault).await,
        401,
        "and at the vault"
    );
    assert_eq!(
        at_arm(&t, &system_of_vm1).await,
        401,
        "the system identity's token"
    );
    // The identity lives on elsewhere.
    assert_eq!(at_arm(&t, &ua_on_vm2).await, 200);
    assert_eq!(at_arm(&t, &ua_on_vm3).await, 200);

    // The VM created again with the same id and the same identity, at once: fresh tokens
    // work; the old one stays refused.
    put_ok(
        &t,
        &arm,
        &format!("{vm1}?{VM_API}"),
        &with_identities(&[&ua], true),
    )
    .await;
    end_session(&t, &arm, &s1).await;
    let s1 = open_session(&t, &arm, &vm1).await;
    let fresh = imds_ok(&http, &s1, Some(&ua_client), arm_aud).await;
    assert_ne!(fresh, ua_on_vm1);
    assert_eq!(
        at_arm(&t, &fresh).await,
        200,
        "a fresh token on the new VM works"
    );
    let fresh_system = imds_ok(&http, &s1, None, arm_aud).await;
    assert_eq!(at_arm(&t, &fresh_system).await, 200);
    assert_eq!(at_arm(&t, &ua_on_vm1).await, 401);

    // A group deletion takes its hosts with it, and the same holds.
    delete_ok(&t, &arm, &format!("{hosts2}?{RG_API}")).await;
    assert_eq!(
        at_arm(&t, &ua_on_vm3).await,
        401,
        "the host went with its group"
    );
    assert_eq!(at_arm(&t, &ua_on_vm2).await, 200);
    assert_eq!(at_arm(&t, &fresh).await, 200);

    // And the other group with the re-created VM in it.
    delete_ok(&t, &arm, &format!("{hosts}?{RG_API}")).await;
    assert_eq!(at_arm(&t, &fresh).await, 401);
    assert_eq!(at_arm(&t, &fresh_system).await, 401);
    assert_eq!(at_arm(&t, &ua_on_vm2).await, 200);
    for s in [&s1, &s2, &s3] {
        end_session(&t, &arm, s).await;
    }
}

/// Rounds at most, and the time they may take together (whichever ends first).
const ROUNDS: usize = 200;
const BUDGET: Duration = Duration::from_secs(20);
/// Tasks minting at once in each round.
const MINTERS: usize = 4;

/// What a round revokes while its minters mint.
#[derive(Debug, Clone, Copy)]
enum Race {
    /// An app deleted through Graph; minters at the token endpoint (client secret).
    AppDeleted,
    /// A user-assigned identity detached from the VM; minters at its IMDS endpoint.
    Detached,
    /// A user-assigned identity deleted while attached.
    IdentityDeleted,
    /// A VM deleted, with its system identity and a user-assigned one; minters ask for both.
    VmDeleted,
}

/// How a round revokes.
enum Revoke {
    /// PATCH the VM's identity block without this identity.
    Detach(String),
    GraphDelete(String),
    ArmDelete(String),
}

/// Every audience the control plane accepts (the identity endpoint caches per audience, so
/// each one is a mint of its own).
fn arm_audiences(t: &Target) -> Vec<String> {
    let mut out = Vec::new();
    for base in [
        "https://management.azure.com".to_string(),
        "https://management.core.windows.net".to_string(),
        format!("https://management.{DOMAIN}"),
        format!("https://management.{DOMAIN}:{}", t.port),
    ] {
        out.push(format!("{base}/"));
        out.push(base);
    }
    out
}

/// Mints from `MINTERS` tasks until `stop` is set (each finishes the request it has under
/// way), collecting every token issued.
fn spawn_minters<F, Fut>(
    stop: &Arc<AtomicBool>,
    tokens: &Arc<Mutex<BTreeSet<String>>>,
    mint: F,
) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Option<String>> + Send,
{
    (0..MINTERS)
        .map(|worker| {
            let (stop, tokens, mint) = (Arc::clone(stop), Arc::clone(tokens), mint.clone());
            tokio::spawn(async move {
                let mut n = worker;
                while !stop.load(Ordering::SeqCst) {
                    if let Some(token) = mint(n).await {
                        tokens.lock().unwrap().insert(token);
                    }
                    n += MINTERS;
                }
            })
        })
        .collect()
}

async fn mints_racing_revocations_leave_no_token_that_validates(backend: Backend) {
    let server = TestServer::start(backend).await.unwrap();
    let t = Target::of(&server);
    let mut rng = Rng::new(seed("revocation race"));
    let arm = t.admin_token(ARM_SCOPE).await;
    let graph = t.admin_token(GRAPH_SCOPE).await;
    let rg = format!("{}/resourceGroups/race", t.subscription());
    put_ok(
        &t,
        &arm,
        &format!("{rg}?{RG_API}"),
        &json!({"location": "local"}),
    )
    .await;
    let vm = format!("{rg}/providers/Microsoft.Compute/virtualMachines/racer");
    put_ok(
        &t,
        &arm,
        &format!("{vm}?{VM_API}"),
        &with_identities(&[], true),
    )
    .await;
    let session = Arc::new(open_session(&t, &arm, &vm).await);
    let (shared, shared_client) = identity(&t, &arm, &rg, "shared").await;
    let audiences = Arc::new(arm_audiences(&t));
    let imds_http = reqwest::Client::new();

    // The run is bounded in rounds and in time (a bound on the test's length, not a speed
    // assertion).
    let deadline = Instant::now() + BUDGET;
    let (mut rounds, mut checked) = (0, 0);
    let mut by_race = [0usize; 4];
    while rounds < ROUNDS && Instant::now() < deadline {
        let race = [
            Race::AppDeleted,
            Race::Detached,
            Race::IdentityDeleted,
            Race::VmDeleted,
        ][rounds % 4];
        let stop = Arc::new(AtomicBool::new(false));
        let tokens = Arc::new(Mutex::new(BTreeSet::new()));
        let name = format!("round{rounds}");
        // Set up what the round revokes, a control token that must work before, the
        // minters, and the revocation itself (returns when it has been answered).
        let (control, minters, revoke, round_session) = match race {
            Race::AppDeleted => {
                let app = create_app(&t, &graph, &name).await;
                let control = t.token(&app.client_id, &app.secret, ARM_SCOPE).await;
                let target = t.clone();
                let (client, secret) = (app.client_id.clone(), app.secret.clone());
                let minters = spawn_minters(&stop, &tokens, move |_| {
                    let (target, client, secret) = (target.clone(), client.clone(), secret.clone());
                    async move {
                        let (status, body) = target.try_token(&client, &secret, ARM_SCOPE).await;
                        (status == 200).then(|| body["access_token"].as_str().unwrap().to_string())
                    }
                });
                (
                    control,
                    minters,
                    Revoke::GraphDelete(format!("/v1.0/applications/{}", app.id)),
                    None,
                )
            }
            Race::Detached | Race::IdentityDeleted => {
                let (ua, client) = identity(&t, &arm, &rg, &name).await;
                let patch = json!({"identity": {"type": "SystemAssigned, UserAssigned",
                    "userAssignedIdentities": {&ua: {}}}});
                let r = call(
                    &t.http,
                    Method::PATCH,
                    &t.arm(&format!("{vm}?{VM_API}")),
                    bearer_json(&arm, &patch),
                )
                .await;
                assert_eq!(r.status, 200, "{}", r.text);
                let control = imds_ok(&imds_http, &session, Some(&client), &audiences[0]).await;
                let (http, session, audiences) = (
                    imds_http.clone(),
                    Arc::clone(&session),
                    Arc::clone(&audiences),
                );
                let minters = spawn_minters(&stop, &tokens, move |n| {
                    let (http, session, audiences, client) = (
                        http.clone(),
                        Arc::clone(&session),
                        Arc::clone(&audiences),
                        client.clone(),
                    );
                    async move {
                        imds(
                            &http,
                            &session,
                            Some(&client),
                            &audiences[n % audiences.len()],
                        )
                        .await
                        .1
                    }
                });
                let revoke = if matches!(race, Race::Detached) {
                    Revoke::Detach(ua)
                } else {
                    Revoke::ArmDelete(format!("{ua}?{UAI_API}"))
                };
                (control, minters, revoke, None)
            }
            Race::VmDeleted => {
                let host = format!("{rg}/providers/Microsoft.Compute/virtualMachines/{name}");
                put_ok(
                    &t,
                    &arm,
                    &format!("{host}?{VM_API}"),
                    &with_identities(&[&shared], true),
                )
                .await;
                let s = Arc::new(open_session(&t, &arm, &host).await);
                let control = imds_ok(&imds_http, &s, Some(&shared_client), &audiences[0]).await;
                let (http, sess, audiences, client) = (
                    imds_http.clone(),
                    Arc::clone(&s),
                    Arc::clone(&audiences),
                    shared_client.clone(),
                );
                let minters = spawn_minters(&stop, &tokens, move |n| {
                    let (http, sess, audiences, client) = (
                        http.clone(),
                        Arc::clone(&sess),
                        Arc::clone(&audiences),
                        client.clone(),
                    );
                    async move {
                        // The system identity and the user-assigned one, in turn.
                        let who = (n % 2 == 0).then_some(client.as_str());
                        imds(&http, &sess, who, &audiences[(n / 2) % audiences.len()])
                            .await
                            .1
                    }
                });
                (
                    control,
                    minters,
                    Revoke::ArmDelete(format!("{host}?{VM_API}")),
                    Some(s),
                )
            }
        };
        assert_eq!(
            at_arm(&t, &control).await,
            200,
            "{race:?}: the control token works before"
        );
        tokens.lock().unwrap().insert(control);

        tokio::time::sleep(Duration::from_micros(rng.range(0, 3000))).await;
        match revoke {
            Revoke::Detach(ua) => {
                let patch = json!({"identity": {"type": "SystemAssigned",
                    "userAssignedIdentities": {ua: null}}});
                let r = call(
                    &t.http,
                    Method::PATCH,
                    &t.arm(&format!("{vm}?{VM_API}")),
                    bearer_json(&arm, &patch),
                )
                .await;
                assert_eq!(r.status, 200, "{}", r.text);
            }
            Revoke::GraphDelete(path) => {
                let r = call(&t.http, Method::DELETE, &t.arm(&path), bearer(&graph)).await;
                assert_eq!(r.status, 204, "{}", r.text);
            }
            Revoke::ArmDelete(path) => delete_ok(&t, &arm, &path).await,
        }
        // The revocation has returned: whatever the minters get from now on, or got before,
        // must be refused.
        stop.store(true, Ordering::SeqCst);
        for m in minters {
            m.await.unwrap();
        }
        let tokens = std::mem::take(&mut *tokens.lock().unwrap());
        for token in &tokens {
            let status = at_arm(&t, token).await;
            assert_eq!(
                status, 401,
                "round {rounds} ({race:?}): a token obtained around the revocation still validates after it returned"
            );
        }
        if let Some(s) = round_session {
            end_session(&t, &arm, &s).await;
        }
        checked += tokens.len();
        by_race[rounds % 4] += 1;
        rounds += 1;
    }
    println!(
        "revocation race: {rounds} rounds (app deleted {}, detached {}, identity deleted {}, VM deleted {}), {checked} tokens checked, all refused",
        by_race[0], by_race[1], by_race[2], by_race[3]
    );
    assert!(rounds >= 4, "every kind of round ran at least once");
    assert!(
        checked >= rounds,
        "each round checked at least its control token"
    );
    end_session(&t, &arm, &session).await;
}
