//! Workload sessions hold only while what opened them holds, serve only the process tree
//! that opened them, and cannot be opened without bound:
//! - an opener that loses write on the resource: the identity endpoints refuse at once, and
//!   renewing answers 403 in ARM's shape;
//! - a resource deleted and created again with the same id and another identity: the old
//!   session mints nothing, and renewing answers 404;
//! - a process that is not `lanyard run` or one of its descendants (the test process itself,
//!   and a `bash` with a raw `/dev/tcp` socket): 403 in the identity endpoints' shape, while
//!   the command run gets its token (and with `session-attestation` `user` or `off`, the
//!   operator's choice, they are served); once `lanyard run` is killed, its orphaned command
//!   gets nothing;
//! - past the per-resource, per-principal and overall caps: 409 in ARM's shape, `/healthz`
//!   still answers, and ending a session frees a slot.

use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::kit::*;
use crate::both_backends;
use crate::support::{lanyard, Backend, TestServer};

both_backends!(
    a_session_ends_when_its_opener_loses_write,
    a_session_is_bound_to_one_incarnation_of_its_resource
);

const IMDS_Q: &str = "api-version=2018-02-01&resource=https://vault.azure.net";
const APP_Q: &str = "api-version=2019-08-01&resource=https://vault.azure.net";

async fn open(t: &Target, token: &str, resource: &str) -> Reply {
    call(
        &t.http,
        Method::POST,
        &t.arm("/lanyard/sessions"),
        bearer_json(token, &json!({"resource": resource})),
    )
    .await
}

async fn renew(t: &Target, token: &str, session: &Value) -> Reply {
    let id = session["id"].as_str().unwrap();
    call(
        &t.http,
        Method::POST,
        &t.arm(&format!("/lanyard/sessions/{id}/renew")),
        bearer(token),
    )
    .await
}

async fn end(t: &Target, token: &str, session: &Value) {
    let id = session["id"].as_str().unwrap();
    let r = call(
        &t.http,
        Method::DELETE,
        &t.arm(&format!("/lanyard/sessions/{id}")),
        bearer(token),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
}

/// An identity endpoint's answer: (status, body), or `None` when nothing listens.
async fn ask(url: &str, header: (&str, &str)) -> Option<(u16, Value)> {
    let r = reqwest::Client::new()
        .get(url)
        .header(header.0, header.1)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.unwrap_or(Value::Null)))
}

fn imds_url(session: &Value, query: &str) -> String {
    format!(
        "{}/metadata/identity/oauth2/token?{query}",
        session["imdsEndpoint"].as_str().unwrap()
    )
}

fn app_url(session: &Value, query: &str) -> String {
    format!("{}?{query}", session["identityEndpoint"].as_str().unwrap())
}

/// Asks both protocols, for a cached and a new audience, and returns what was wrong: any
/// token, any 5xx, any answer not in the identity endpoints' error shape.
async fn must_mint_nothing(what: &str, session: &Value) -> Vec<String> {
    let header = session["identityHeader"].as_str().unwrap();
    let mut problems = Vec::new();
    for (how, url, h) in [
        ("IMDS", imds_url(session, IMDS_Q), ("Metadata", "true")),
        (
            "IMDS, new audience",
            imds_url(
                session,
                "api-version=2018-02-01&resource=https://storage.azure.com",
            ),
            ("Metadata", "true"),
        ),
        (
            "App Service",
            app_url(session, APP_Q),
            ("X-IDENTITY-HEADER", header),
        ),
    ] {
        match ask(&url, h).await {
            None => {}
            Some((status, body)) => {
                if (200..300).contains(&status) || body.get("access_token").is_some() {
                    problems.push(format!("{what}, {how}: a token was issued ({status})"));
                } else if status >= 500 || body["error"].as_str().is_none() {
                    problems.push(format!("{what}, {how}: {status} {body}"));
                }
            }
        }
    }
    problems
}

fn claims_of(body: &Value) -> Value {
    jwt_parts(body["access_token"].as_str().unwrap()).1
}

async fn a_session_ends_when_its_opener_loses_write(backend: Backend) {
    let server = TestServer::start(backend).await.unwrap();
    let t = Target::of(&server);
    let arm = t.admin_token(ARM_SCOPE).await;
    let graph = t.admin_token(GRAPH_SCOPE).await;
    let rg = format!("{}/resourceGroups/lapse", t.subscription());
    put_ok(
        &t,
        &arm,
        &format!("{rg}?{RG_API}"),
        &json!({"location": "local"}),
    )
    .await;
    let vm = format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm1");
    put_ok(
        &t,
        &arm,
        &format!("{vm}?{VM_API}"),
        &json!({"location": "local", "identity": {"type": "SystemAssigned"}}),
    )
    .await;
    let operator = create_app(&t, &graph, "operator").await;
    let role = assign(&t, &arm, &rg, VM_CONTRIBUTOR, &operator.object_id).await;
    let op = t
        .token(&operator.client_id, &operator.secret, ARM_SCOPE)
        .await;

    let opened = open(&t, &op, &vm).await;
    assert_eq!(opened.status, 201, "{}", opened.text);
    let session = opened.json;
    let header = session["identityHeader"].as_str().unwrap().to_string();
    // Both protocols work, and the token is cached.
    let (status, body) = ask(&imds_url(&session, IMDS_Q), ("Metadata", "true"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = ask(&app_url(&session, APP_Q), ("X-IDENTITY-HEADER", &header))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(renew(&t, &op, &session).await.status, 200);

    // The operator loses its role: the endpoints refuse at once, cached audience included.
    let r = call(
        &t.http,
        Method::DELETE,
        &t.arm(&format!("{role}?{RA_API}")),
        bearer(&arm),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let problems = must_mint_nothing("opener lost write", &session).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let r = renew(&t, &op, &session).await;
    assert_eq!(r.status, 403, "renewing after losing write: {}", r.text);
    assert_eq!(r.code(), "AuthorizationFailed", "{}", r.text);

    // Getting the role back does not revive the ended session; a new one works.
    assign(&t, &arm, &rg, VM_CONTRIBUTOR, &operator.object_id).await;
    let r = renew(&t, &op, &session).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let problems = must_mint_nothing("ended session, role given back", &session).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let again = open(&t, &op, &vm).await;
    assert_eq!(again.status, 201, "{}", again.text);
    let (status, body) = ask(&imds_url(&again.json, IMDS_Q), ("Metadata", "true"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    println!("sessions: a session ends when its opener loses write ({backend:?})");
}

async fn a_session_is_bound_to_one_incarnation_of_its_resource(backend: Backend) {
    let server = TestServer::start(backend).await.unwrap();
    let t = Target::of(&server);
    let arm = t.admin_token(ARM_SCOPE).await;
    let rg = format!("{}/resourceGroups/incarnation", t.subscription());
    put_ok(
        &t,
        &arm,
        &format!("{rg}?{RG_API}"),
        &json!({"location": "local"}),
    )
    .await;
    let ua_id = format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ua-next");
    let ua = put_ok(
        &t,
        &arm,
        &format!("{ua_id}?{UAI_API}"),
        &json!({"location": "local"}),
    )
    .await;
    let vm = format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm1");
    let first = put_ok(
        &t,
        &arm,
        &format!("{vm}?{VM_API}"),
        &json!({"location": "local", "identity": {"type": "SystemAssigned"}}),
    )
    .await;
    let first_principal = first["identity"]["principalId"].as_str().unwrap();
    let opened = open(&t, &arm, &vm).await;
    assert_eq!(opened.status, 201, "{}", opened.text);
    let session = opened.json;
    let (status, body) = ask(&imds_url(&session, IMDS_Q), ("Metadata", "true"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims_of(&body)["oid"], first_principal);

    // The VM is deleted and created again under the same id, with other identities.
    let r = call(
        &t.http,
        Method::DELETE,
        &t.arm(&format!("{vm}?{VM_API}")),
        bearer(&arm),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let second = put_ok(
        &t,
        &arm,
        &format!("{vm}?{VM_API}"),
        &json!({"location": "local", "identity": {"type": "SystemAssigned, UserAssigned",
            "userAssignedIdentities": {ua["id"].as_str().unwrap(): {}}}}),
    )
    .await;
    let second_principal = second["identity"]["principalId"].as_str().unwrap();
    assert_ne!(first_principal, second_principal);

    let mut problems = must_mint_nothing("the VM's previous incarnation", &session).await;
    let ua_client = ua["properties"]["clientId"].as_str().unwrap();
    if let Some((status, body)) = ask(
        &imds_url(&session, &format!("{IMDS_Q}&client_id={ua_client}")),
        ("Metadata", "true"),
    )
    .await
    {
        if status == 200 || body.get("access_token").is_some() {
            problems.push(format!(
                "the new VM's user-assigned identity through the old session: a token ({status})"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let r = renew(&t, &arm, &session).await;
    assert_eq!(
        r.status, 404,
        "renewing a session of a deleted VM: {}",
        r.text
    );
    assert!(r.json["error"]["code"].is_string(), "{}", r.text);

    // A session opened on the new VM gets the new identity.
    let fresh = open(&t, &arm, &vm).await;
    assert_eq!(fresh.status, 201, "{}", fresh.text);
    let (status, body) = ask(&imds_url(&fresh.json, IMDS_Q), ("Metadata", "true"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims_of(&body)["oid"], second_principal);
    println!("sessions: a session is bound to one incarnation of its resource ({backend:?})");
}

/// An HTTP/1.1 GET written by `bash` over `/dev/tcp`: the status line of the answer.
async fn raw_get_from_bash(port: u16, path: &str, header: &str) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} || exit 1\n\
         printf 'GET {path} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n{header}\\r\\nConnection: close\\r\\n\\r\\n' >&3\n\
         head -n 1 <&3"
    );
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .output(),
    )
    .await
    .expect("bash did not finish")
    .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What processes outside `lanyard run`'s tree, and the command it runs, got from its
/// session on a server with `extra` settings.
struct Probe {
    /// The test process (the parent of `lanyard run`) on the IMDS and App Service
    /// protocols: status, and the `error` field of the body.
    imds: (u16, Value),
    app: (u16, Value),
    /// The status line `bash` read over a raw socket (a sibling of `lanyard run`).
    bash: String,
    /// What the command run said: `child-got-a-token` or `child-refused`.
    child: String,
}

/// `lanyard run --as vm1` on a server with `extra` settings, its command waiting for a line
/// on stdin before it asks for a token.
struct Running {
    _server: TestServer,
    child: tokio::process::Child,
    /// Taken at once: waiting for the child closes a stdin it still holds.
    stdin: Option<tokio::process::ChildStdin>,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    imds: String,
    app: String,
    header: String,
    port: u16,
}

impl Running {
    /// Lets the command ask for its token; returns what it said.
    async fn go(&mut self) -> String {
        let mut stdin = self.stdin.take().unwrap();
        stdin.write_all(b"go\n").await.unwrap();
        drop(stdin);
        tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
            .await
            .expect("the command did not answer within 60 s")
            .unwrap()
            .unwrap_or_default()
    }
}

async fn start_run(extra: lanyard_server::config::ConfigLayer) -> Running {
    let server = TestServer::start_configured(
        Backend::Sqlite,
        std::sync::Arc::new(lanyard_domain::SystemClock),
        extra,
    )
    .await
    .unwrap();
    let t = Target::of(&server);
    let arm = t.admin_token(ARM_SCOPE).await;
    let rg = format!("{}/resourceGroups/attest", t.subscription());
    put_ok(
        &t,
        &arm,
        &format!("{rg}?{RG_API}"),
        &json!({"location": "local"}),
    )
    .await;
    let vm = format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm1");
    put_ok(
        &t,
        &arm,
        &format!("{vm}?{VM_API}"),
        &json!({"location": "local", "identity": {"type": "SystemAssigned"}}),
    )
    .await;

    // `lanyard run` opens the session; its command prints where the endpoints are, waits for
    // a line on stdin, then asks for a token itself (a grandchild: `sh` runs `curl`).
    let script = r#"
        echo "$AZURE_POD_IDENTITY_AUTHORITY_HOST $IDENTITY_ENDPOINT $IDENTITY_HEADER"
        read go
        if curl -sf -H "Metadata: true" \
            "$AZURE_POD_IDENTITY_AUTHORITY_HOST/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net" >/dev/null
        then echo child-got-a-token
        else echo child-refused
        fi
    "#;
    let mut cmd = lanyard();
    cmd.args([
        "run",
        "--as",
        vm.as_str(),
        "--resolve",
        "system",
        "--data-dir",
    ])
    .arg(&server.data_dir)
    .args(["--", "sh", "-c", script])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), stdout.next_line())
        .await
        .expect("the command printed nothing within 60 s")
        .unwrap()
        .unwrap_or_default();
    let mut parts = first.split_whitespace();
    let (Some(imds), Some(app), Some(header)) = (parts.next(), parts.next(), parts.next()) else {
        let out = child.wait_with_output().await.unwrap();
        panic!(
            "no endpoints from the command: {first:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let port: u16 = imds.rsplit(':').next().unwrap().parse().unwrap();
    Running {
        imds: imds.to_string(),
        app: app.to_string(),
        header: header.to_string(),
        port,
        _server: server,
        stdin: child.stdin.take(),
        child,
        stdout,
    }
}

async fn probe_from_outside(extra: lanyard_server::config::ConfigLayer) -> Probe {
    let mut run = start_run(extra).await;
    let (imds, app, header) = (run.imds.clone(), run.app.clone(), run.header.clone());

    // The test process is `lanyard run`'s parent, not its descendant.
    let outside = |r: Option<(u16, Value)>| {
        let (status, body) = r.unwrap_or((0, Value::Null));
        let issued = body.get("access_token").is_some();
        (status, json!({"error": body["error"], "issued": issued}))
    };
    let imds_answer = outside(
        ask(
            &format!("{imds}/metadata/identity/oauth2/token?{IMDS_Q}"),
            ("Metadata", "true"),
        )
        .await,
    );
    let app_answer = outside(ask(&format!("{app}?{APP_Q}"), ("X-IDENTITY-HEADER", &header)).await);
    // Nor is a `bash` the test starts, over a raw socket.
    let bash = raw_get_from_bash(
        run.port,
        &format!("/metadata/identity/oauth2/token?{IMDS_Q}"),
        "Metadata: true",
    )
    .await;

    let said = run.go().await;
    let status = tokio::time::timeout(Duration::from_secs(60), run.child.wait())
        .await
        .expect("lanyard run did not exit")
        .unwrap();
    assert!(status.success(), "lanyard run: {status:?}");
    Probe {
        imds: imds_answer,
        app: app_answer,
        bash,
        child: said,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_sessions_process_tree_gets_tokens() {
    let p = probe_from_outside(Default::default()).await;
    let refused = json!({"error": "forbidden", "issued": false});
    assert_eq!(
        p.imds,
        (403, refused.clone()),
        "IMDS from a foreign process"
    );
    assert_eq!(p.app, (403, refused), "App Service from a foreign process");
    assert!(
        p.bash.starts_with("HTTP/1.1 403"),
        "bash over /dev/tcp: {:?}",
        p.bash
    );
    assert_eq!(p.child, "child-got-a-token", "the command run");
    println!("sessions: a foreign process is refused (2 protocols and a raw socket); the command run gets its token");
}

/// `session-attestation = user` admits any process of the opener's user (the test runs as
/// one user), and `off` any local process: the operator's explicit choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestation_by_user_or_off_admits_other_processes() {
    for mode in ["user", "off"] {
        let p = probe_from_outside(lanyard_server::config::ConfigLayer {
            session_attestation: Some(mode.into()),
            ..Default::default()
        })
        .await;
        let served = json!({"error": null, "issued": true});
        assert_eq!(p.imds, (200, served.clone()), "{mode}: IMDS");
        assert_eq!(p.app, (200, served), "{mode}: App Service");
        assert!(p.bash.starts_with("HTTP/1.1 200"), "{mode}: {:?}", p.bash);
        assert_eq!(p.child, "child-got-a-token", "{mode}: the command run");
    }
}

/// When `lanyard run` dies without ending its session (SIGKILL), its command, now an orphan,
/// is no longer part of the session: it gets no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_with_the_process_that_opened_it() {
    let mut run = start_run(Default::default()).await;
    run.child.start_kill().unwrap();
    run.child.wait().await.unwrap();
    assert_eq!(run.go().await, "child-refused");
    println!("sessions: the command of a killed `lanyard run` gets no token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_past_the_per_resource_cap_are_refused() {
    let server = TestServer::start(Backend::Sqlite).await.unwrap();
    let t = Target::of(&server);
    let arm = t.admin_token(ARM_SCOPE).await;
    let rg = format!("{}/resourceGroups/caps", t.subscription());
    put_ok(
        &t,
        &arm,
        &format!("{rg}?{RG_API}"),
        &json!({"location": "local"}),
    )
    .await;
    let (vm1, first) = vm_with_session(&t, &arm, &rg, "vm1").await;
    let (vm2, _) = vm_with_session(&t, &arm, &rg, "vm2").await;
    let mut open_on_vm1 = vec![first];
    // The default cap is 16 sessions per resource.
    for _ in 1..16 {
        let r = open(&t, &arm, &vm1).await;
        assert_eq!(r.status, 201, "{}", r.text);
        open_on_vm1.push(r.json);
    }
    let refused = open(&t, &arm, &vm1).await;
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert_eq!(refused.code(), "SessionLimitReached", "{}", refused.text);
    let message = refused.json["error"]["message"].as_str().unwrap();
    assert!(message.contains("max-sessions-per-resource"), "{message}");
    assert!(refused.json.get("identityHeader").is_none());

    // Everyone else is served: the health check, and sessions on another resource.
    let health = call(&t.http, Method::GET, &t.arm("/healthz"), Req::default()).await;
    assert_eq!(health.status, 200);
    let other = open(&t, &arm, &vm2).await;
    assert_eq!(other.status, 201, "{}", other.text);

    // Ending a session frees its slot.
    end(&t, &arm, &open_on_vm1.pop().unwrap()).await;
    let again = open(&t, &arm, &vm1).await;
    assert_eq!(again.status, 201, "{}", again.text);
    let (status, body) = ask(&imds_url(&again.json, IMDS_Q), ("Metadata", "true"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(open(&t, &arm, &vm1).await.status, 409);
    println!("sessions: 16 sessions per resource, the 17th refused; ending one frees a slot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_principal_and_overall_caps_hold() {
    let server = TestServer::start_configured(
        Backend::Sqlite,
        std::sync::Arc::new(lanyard_domain::SystemClock),
        lanyard_server::config::ConfigLayer {
            max_sessions_per_principal: Some(3),
            max_sessions: Some(5),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let t = Target::of(&server);
    let arm = t.admin_token(ARM_SCOPE).await;
    let graph = t.admin_token(GRAPH_SCOPE).await;
    let rg = format!("{}/resourceGroups/caps", t.subscription());
    put_ok(
        &t,
        &arm,
        &format!("{rg}?{RG_API}"),
        &json!({"location": "local"}),
    )
    .await;
    let mut vms = Vec::new();
    let mut admin_sessions = Vec::new();
    for i in 0..4 {
        let vm = format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm{i}");
        put_ok(
            &t,
            &arm,
            &format!("{vm}?{VM_API}"),
            &json!({"location": "local", "identity": {"type": "SystemAssigned"}}),
        )
        .await;
        vms.push(vm);
    }
    // Three for the administrator, on three VMs; a fourth is one too many for it.
    for vm in &vms[..3] {
        let r = open(&t, &arm, vm).await;
        assert_eq!(r.status, 201, "{}", r.text);
        admin_sessions.push(r.json);
    }
    let r = open(&t, &arm, &vms[3]).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.code(), "SessionLimitReached");
    assert!(
        r.text.contains("`max-sessions-per-principal`"),
        "{}",
        r.text
    );

    // Another principal may open two more; then the server is full for everyone.
    let operator = create_app(&t, &graph, "operator").await;
    assign(&t, &arm, &rg, VM_CONTRIBUTOR, &operator.object_id).await;
    let op = t
        .token(&operator.client_id, &operator.secret, ARM_SCOPE)
        .await;
    for vm in &vms[..2] {
        let r = open(&t, &op, vm).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let r = open(&t, &op, &vms[3]).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("`max-sessions`"), "{}", r.text);
    let health = call(&t.http, Method::GET, &t.arm("/healthz"), Req::default()).await;
    assert_eq!(health.status, 200);

    // The administrator ending one frees a slot for the operator.
    end(&t, &arm, &admin_sessions.pop().unwrap()).await;
    let r = open(&t, &op, &vms[3]).await;
    assert_eq!(r.status, 201, "{}", r.text);
    println!("sessions: 3 per principal and 5 in all held; ending one freed a slot");
}
