//! Several servers on one database: what one server commits, every other server honours,
//! through the commit feed each follows. Two servers share a PostgreSQL database (and the
//! key-encryption key and the tenant, as `TestServer::start_peer` arranges); every check is
//! made through the public HTTP APIs, polling a bounded few seconds for the other server to
//! catch up (it reads the feed every 250 ms by default).
//!
//! On SQLite one server is the whole deployment: its own changes must hold the moment the
//! call that made them returns, with no polling at all.

use std::future::Future;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;
use lanyard_testkit::arm::Client;

const ARM_SCOPE: &str = "https://management.azure.com/.default";
const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
const GROUPS_API: &str = "api-version=2021-04-01";
const ASSIGNMENTS_API: &str = "api-version=2022-04-01";
const VM_API: &str = "api-version=2024-03-01";
/// How long another server may take to follow a change (its poll interval is 250 ms).
const PROPAGATION: Duration = Duration::from_secs(5);

/// Polls `probe` until it returns `Ok`, for at most [`PROPAGATION`]; panics with the last
/// observation otherwise.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + PROPAGATION;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not seen within {PROPAGATION:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A call on `server`'s combined host with a bearer token.
async fn call(server: &TestServer, method: Method, path: &str, token: &str) -> (u16, Value) {
    call_host(server, "localhost", method, path, token).await
}

async fn call_host(
    server: &TestServer,
    host: &str,
    method: Method,
    path: &str,
    token: &str,
) -> (u16, Value) {
    let r = server
        .client()
        .unwrap()
        .request(method, server.url(host, path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The `kid` in a token's header.
fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_string()
}

/// The kids `server` publishes.
async fn published_kids(server: &TestServer) -> Vec<String> {
    let path = format!("/{}/discovery/v2.0/keys", server.admin.tenant_id);
    let r = server
        .client()
        .unwrap()
        .get(server.url("localhost", &path))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let jwks: Value = r.json().await.unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// Two servers on one fresh PostgreSQL database, and a resource group made on the first.
struct Pair {
    a: TestServer,
    b: TestServer,
    admin_a: Client,
    group: String,
}

impl Pair {
    async fn new() -> Pair {
        let a = TestServer::start(Backend::Postgres).await.unwrap();
        let b = a.start_peer().await.unwrap();
        assert_eq!(a.admin.tenant_id, b.admin.tenant_id);
        let admin_a = Client::admin(&a).unwrap();
        let group = format!(
            "/subscriptions/{}/resourceGroups/scale",
            a.admin.subscription_id
        );
        admin_a
            .put_ok(
                &format!("{group}?{GROUPS_API}"),
                &json!({"location": "local"}),
            )
            .await
            .unwrap();
        Pair {
            a,
            b,
            admin_a,
            group,
        }
    }
}

fn assignment_path(scope: &str, id: &str) -> String {
    format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{id}?{ASSIGNMENTS_API}")
}

async fn assign_reader(admin: &Client, scope: &str, principal: &str) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let sub = scope.split('/').nth(2).unwrap();
    admin
        .put_ok(
            &assignment_path(scope, &id),
            &json!({"properties": {
                "roleDefinitionId": format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{READER}"),
                "principalId": principal,
                "principalType": "ServicePrincipal",
            }}),
        )
        .await
        .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_made_on_one_server_is_honoured_and_withdrawn_on_the_other() {
    let p = Pair::new().await;
    let app = p.admin_a.create_app("scale-reader").await.unwrap();
    // The app signs in on B, with the credential A registered.
    let token = Client::for_app(&p.b, &app.client_id, &app.secret)
        .unwrap()
        .token(ARM_SCOPE)
        .await
        .unwrap();
    let read_group = format!("{}?{GROUPS_API}", p.group);
    let (status, body) = call(&p.b, Method::GET, &read_group, &token).await;
    assert_eq!(status, 403, "no role yet: {body}");

    let assignment = assign_reader(&p.admin_a, &p.group, &app.object_id).await;
    // A, which committed it, honours it at once.
    let (status, body) = call(&p.a, Method::GET, &read_group, &token).await;
    assert_eq!(status, 200, "{body}");
    eventually("B honouring the assignment made on A", || async {
        match call(&p.b, Method::GET, &read_group, &token).await {
            (200, body) if body["name"] == "scale" => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;

    let reply = p
        .admin_a
        .arm(
            Method::DELETE,
            &assignment_path(&p.group, &assignment),
            None,
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    eventually("B refusing once the assignment is deleted on A", || async {
        match call(&p.b, Method::GET, &read_group, &token).await {
            (403, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_on_one_server_signs_tokens_the_other_accepts_and_publishes() {
    let p = Pair::new().await;
    let admin_b = Client::admin(&p.b).unwrap();
    let before = kid_of(&admin_b.token(ARM_SCOPE).await.unwrap());
    let management = p.admin_a.token(ARM_SCOPE).await.unwrap();
    let (status, body) = call_host(
        &p.a,
        "login.lanyard.localhost",
        Method::POST,
        "/lanyard/keys/rotate",
        &management,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let kid = body["kid"].as_str().unwrap().to_string();
    assert_ne!(kid, before);

    // A signs with the new key at once.
    let token = p.admin_a.token(ARM_SCOPE).await.unwrap();
    assert_eq!(kid_of(&token), kid);
    // B publishes it, accepts what A signs with it, and signs with it too.
    eventually("B publishing the key rotated on A", || async {
        let kids = published_kids(&p.b).await;
        if kids.contains(&kid) {
            Ok(())
        } else {
            Err(format!("{kids:?}"))
        }
    })
    .await;
    let read_group = format!("{}?{GROUPS_API}", p.group);
    let (status, body) = call(&p.b, Method::GET, &read_group, &token).await;
    assert_eq!(status, 200, "B refused A's token: {body}");
    let from_b = admin_b.token(ARM_SCOPE).await.unwrap();
    assert_eq!(kid_of(&from_b), kid, "B signs with the key A activated");
    let (status, body) = call(&p.a, Method::GET, &read_group, &from_b).await;
    assert_eq!(status, 200, "{body}");
    // The key that signed before stays published on both until its tokens expire.
    assert!(published_kids(&p.a).await.contains(&before));
    assert!(published_kids(&p.b).await.contains(&before));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_deleted_on_one_server_has_its_tokens_refused_on_the_other() {
    let p = Pair::new().await;
    let app = p.admin_a.create_app("scale-doomed").await.unwrap();
    assign_reader(&p.admin_a, &p.group, &app.object_id).await;
    let token = Client::for_app(&p.a, &app.client_id, &app.secret)
        .unwrap()
        .token(ARM_SCOPE)
        .await
        .unwrap();
    let read_group = format!("{}?{GROUPS_API}", p.group);
    eventually("B honouring the app's token", || async {
        match call(&p.b, Method::GET, &read_group, &token).await {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;

    let reply = p
        .admin_a
        .graph(
            Method::DELETE,
            &format!("/v1.0/servicePrincipals/{}", app.object_id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 204, "{}", reply.body);
    // Revoked (401), not merely without a role (403): B applied the revocation.
    eventually("B refusing the deleted app's token", || async {
        match call(&p.b, Method::GET, &read_group, &token).await {
            (401, body) if body.to_string().contains("revoked") => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_identity_detached_on_one_server_stops_the_others_identity_endpoint() {
    let p = Pair::new().await;
    let identity = p
        .admin_a
        .put_ok(
            &format!(
                "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ua1?api-version=2023-01-31",
                p.group
            ),
            &json!({"location": "local"}),
        )
        .await
        .unwrap();
    let ua1_id = identity["id"].as_str().unwrap().to_string();
    let ua1_client = identity["properties"]["clientId"]
        .as_str()
        .unwrap()
        .to_string();
    let vm = format!(
        "{}/providers/Microsoft.Compute/virtualMachines/vm1",
        p.group
    );
    p.admin_a
        .put_ok(
            &format!("{vm}?{VM_API}"),
            &json!({
                "location": "local",
                "identity": {
                    "type": "SystemAssigned, UserAssigned",
                    "userAssignedIdentities": { &ua1_id: {} }
                }
            }),
        )
        .await
        .unwrap();

    // A workload session for vm1 on B: B's identity endpoint serves vm1's identities.
    let admin_b = Client::admin(&p.b).unwrap();
    let session = eventually("B knowing vm1", || async {
        let reply = admin_b
            .arm(
                Method::POST,
                "/lanyard/sessions",
                Some(&json!({"resource": "vm1"})),
            )
            .await
            .unwrap();
        match reply.status {
            201 => Ok(reply.body),
            status => Err(format!("{status} {}", reply.body)),
        }
    })
    .await;
    let imds = format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/&client_id={ua1_client}",
        session["imdsEndpoint"].as_str().unwrap()
    );
    let ask = || async {
        let r = reqwest::Client::new()
            .get(&imds)
            .header("Metadata", "true")
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    let token = eventually("B's identity endpoint serving ua1", || async {
        match ask().await {
            (200, body) => Ok(body["access_token"].as_str().unwrap().to_string()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    // A valid token without a role: B says 403.
    let read_group = format!("{}?{GROUPS_API}", p.group);
    let (status, body) = call(&p.b, Method::GET, &read_group, &token).await;
    assert_eq!(status, 403, "{body}");

    // A detaches ua1 from vm1.
    p.admin_a
        .put_ok(
            &format!("{vm}?{VM_API}"),
            &json!({"location": "local", "identity": {"type": "SystemAssigned"}}),
        )
        .await
        .unwrap();
    eventually("B's identity endpoint dropping ua1", || async {
        match ask().await {
            (400, body) if body["error_description"] == "Identity not found" => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    // And the token vm1 got for ua1 before is revoked on B for that host.
    eventually("B refusing ua1's token from vm1", || async {
        match call(&p.b, Method::GET, &read_group, &token).await {
            (401, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
}

/// One server on SQLite: its own writes hold as soon as the call that made them returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_sees_its_own_changes_at_once() {
    let server = TestServer::start(Backend::Sqlite).await.unwrap();
    let admin = Client::admin(&server).unwrap();
    let group = format!(
        "/subscriptions/{}/resourceGroups/solo",
        server.admin.subscription_id
    );
    admin
        .put_ok(
            &format!("{group}?{GROUPS_API}"),
            &json!({"location": "local"}),
        )
        .await
        .unwrap();
    let app = admin.create_app("solo-reader").await.unwrap();
    let token = Client::for_app(&server, &app.client_id, &app.secret)
        .unwrap()
        .token(ARM_SCOPE)
        .await
        .unwrap();
    let read_group = format!("{group}?{GROUPS_API}");
    assert_eq!(call(&server, Method::GET, &read_group, &token).await.0, 403);
    let assignment = assign_reader(&admin, &group, &app.object_id).await;
    assert_eq!(call(&server, Method::GET, &read_group, &token).await.0, 200);
    let reply = admin
        .arm(Method::DELETE, &assignment_path(&group, &assignment), None)
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(call(&server, Method::GET, &read_group, &token).await.0, 403);

    let management = admin.token(ARM_SCOPE).await.unwrap();
    let (status, body) = call_host(
        &server,
        "login.lanyard.localhost",
        Method::POST,
        "/lanyard/keys/rotate",
        &management,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let kid = body["kid"].as_str().unwrap().to_string();
    assert!(published_kids(&server).await.contains(&kid));
    let fresh = admin.token(ARM_SCOPE).await.unwrap();
    assert_eq!(kid_of(&fresh), kid);
    assert_eq!(call(&server, Method::GET, &read_group, &fresh).await.0, 200);
    // And a rotation that happens twice in a row (two servers at once would) leaves one
    // signing key: the second builds on the first.
    let (status, second) = call_host(
        &server,
        "login.lanyard.localhost",
        Method::POST,
        "/lanyard/keys/rotate",
        &management,
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["retired"], kid.as_str());
}
