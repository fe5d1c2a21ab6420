//! Identity endpoints: unmodified `azure-identity` and `msal` get a resource's tokens under
//! `lanyard run --as`, over the App Service and IMDS protocols, and nothing else gets any.

use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::support::*;
use lanyard_testkit::arm::Client;
use lanyard_testkit::python;

both_backends!(
    sdks_get_the_resources_tokens,
    endpoints_refuse_what_could_be_ssrf
);

const API: &str = "api-version=2024-03-01";

/// A resource group with two user-assigned identities and a VM holding its system identity
/// and both of them.
struct Scenario {
    server: TestServer,
    admin: Client,
    vm: String,
    ua1: Value,
    ua2: Value,
}

impl Scenario {
    async fn new(backend: Backend) -> Self {
        Self::on(TestServer::start(backend).await.unwrap()).await
    }

    async fn on(server: TestServer) -> Self {
        let admin = Client::admin(&server).unwrap();
        let sub = server.admin.subscription_id;
        let rg = format!("/subscriptions/{sub}/resourceGroups/rg1");
        admin
            .put_ok(
                &format!("{rg}?api-version=2021-04-01"),
                &json!({"location": "local"}),
            )
            .await
            .unwrap();
        let mut uais = Vec::new();
        for name in ["ua1", "ua2"] {
            let path = format!(
                "{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}?api-version=2023-01-31"
            );
            uais.push(
                admin
                    .put_ok(&path, &json!({"location": "local"}))
                    .await
                    .unwrap(),
            );
        }
        let vm = format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm1");
        let ua_ids: Vec<String> = uais
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_string())
            .collect();
        let body = json!({
            "location": "local",
            "identity": {
                "type": "SystemAssigned, UserAssigned",
                "userAssignedIdentities": { &ua_ids[0]: {}, &ua_ids[1]: {} }
            }
        });
        let created = admin.put_ok(&format!("{vm}?{API}"), &body).await.unwrap();
        assert!(created["identity"]["principalId"].is_string(), "{created}");
        let ua2 = uais.pop().unwrap();
        let ua1 = uais.pop().unwrap();
        Scenario {
            server,
            admin,
            vm,
            ua1,
            ua2,
        }
    }

    fn system_principal(&self, vm: &Value) -> String {
        vm["identity"]["principalId"].as_str().unwrap().to_string()
    }

    async fn vm_body(&self) -> Value {
        self.admin
            .arm(Method::GET, &format!("{}?{API}", self.vm), None)
            .await
            .unwrap()
            .body
    }

    /// Runs `tests/python/imds/mi_token.py ARGS` under `lanyard run --as vm1`, with the parent's
    /// own credentials in the environment to prove they do not leak into the child.
    async fn token(&self, args: &[&str]) -> Value {
        let script = python::scripts_dir().join("imds/mi_token.py");
        let py = python::python().unwrap();
        let mut cmd = lanyard();
        cmd.args(["run", "--as", "vm1", "--data-dir"])
            .arg(&self.server.data_dir)
            .arg("--")
            .arg(py)
            .arg(script)
            .args(args)
            .env("AZURE_CLIENT_ID", self.server.admin.client_id.to_string())
            .env("AZURE_CLIENT_SECRET", &self.server.admin.client_secret)
            .env("AZURE_TENANT_ID", self.server.admin.tenant_id.to_string())
            .env("AZURE_USERNAME", "someone@example.test");
        let out = tokio::process::Command::from(cmd).output().await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or("");
        serde_json::from_str(line).unwrap_or_else(|_| {
            panic!(
                "no JSON from mi_token.py {args:?}: stdout={stdout} stderr={}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

fn ok_claims(result: &Value) -> &Value {
    assert_eq!(result["ok"], true, "{result}");
    &result["claims"]
}

async fn sdks_get_the_resources_tokens(backend: Backend) {
    let s = Scenario::new(backend).await;
    let vm_body = s.vm_body().await;
    let system = s.system_principal(&vm_body);
    let vm_id = vm_body["id"].as_str().unwrap().to_string();
    let ua1_id = s.ua1["id"].as_str().unwrap();
    let ua1_client = s.ua1["properties"]["clientId"].as_str().unwrap();
    let ua2_principal = s.ua2["properties"]["principalId"].as_str().unwrap();

    // App Service protocol (IDENTITY_ENDPOINT + IDENTITY_HEADER), system identity by default.
    let claims = ok_claims(&s.token(&["azure-identity", "mi"]).await).clone();
    assert_eq!(claims["oid"], system.as_str());
    assert!(claims["xms_mirid"]
        .as_str()
        .unwrap()
        .eq_ignore_ascii_case(&vm_id));
    assert!(claims.get("xms_az_rid").is_none());
    assert_eq!(claims["aud"], "https://vault.azure.net");

    // DefaultAzureCredential: the parent's secret was removed, so it is the VM's identity.
    let claims = ok_claims(&s.token(&["azure-identity", "dac"]).await).clone();
    assert_eq!(claims["oid"], system.as_str());

    // User-assigned, selected by client id, object id and resource id.
    let claims = ok_claims(
        &s.token(&["azure-identity", "mi", "--client-id", ua1_client])
            .await,
    )
    .clone();
    assert!(claims["xms_mirid"]
        .as_str()
        .unwrap()
        .eq_ignore_ascii_case(ua1_id));
    assert!(claims["xms_az_rid"]
        .as_str()
        .unwrap()
        .eq_ignore_ascii_case(&vm_id));
    let claims = ok_claims(
        &s.token(&["azure-identity", "mi", "--object-id", ua2_principal])
            .await,
    )
    .clone();
    assert_eq!(claims["oid"], ua2_principal);
    let claims = ok_claims(
        &s.token(&["azure-identity", "mi", "--resource-id", ua1_id])
            .await,
    )
    .clone();
    assert_eq!(claims["appid"], ua1_client);

    // IMDS protocol: the same SDK with only the IMDS override, and MSAL both ways.
    let claims = ok_claims(
        &s.token(&["azure-identity", "mi", "--protocol", "imds"])
            .await,
    )
    .clone();
    assert_eq!(claims["oid"], system.as_str());
    let claims = ok_claims(&s.token(&["msal", "mi"]).await).clone();
    assert_eq!(claims["oid"], system.as_str());
    let claims = ok_claims(
        &s.token(&[
            "msal",
            "mi",
            "--protocol",
            "imds",
            "--client-id",
            ua1_client,
        ])
        .await,
    )
    .clone();
    assert_eq!(claims["appid"], ua1_client);
}

/// Opens a session as the administrator and returns the session document.
async fn open_session(s: &Scenario) -> Value {
    let reply = s
        .admin
        .arm(
            Method::POST,
            "/lanyard/sessions",
            Some(&json!({"resource": "vm1"})),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.body
}

async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut r = reqwest::Client::new().get(url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn endpoints_refuse_what_could_be_ssrf(backend: Backend) {
    let s = Scenario::new(backend).await;
    let session = open_session(&s).await;
    let imds = format!(
        "{}/metadata/identity/oauth2/token",
        session["imdsEndpoint"].as_str().unwrap()
    );
    let app = session["identityEndpoint"].as_str().unwrap().to_string();
    let header = session["identityHeader"].as_str().unwrap().to_string();
    let q = "api-version=2018-02-01&resource=https://vault.azure.net";

    // The happy paths first, so every refusal below is about the one thing it changes.
    let (status, body) = get(&format!("{imds}?{q}"), &[("Metadata", "true")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["expires_on"].is_string() && body["expires_in"].is_string());
    let app_q = "api-version=2019-08-01&resource=https://vault.azure.net";
    let (status, _) = get(&format!("{app}?{app_q}"), &[("X-IDENTITY-HEADER", &header)]).await;
    assert_eq!(status, 200);

    // No Metadata header.
    let (status, body) = get(&format!("{imds}?{q}"), &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_request_102"))
    );
    assert_eq!(
        body["error_description"],
        "Required metadata header not specified"
    );
    // Through a proxy.
    let (status, _) = get(
        &format!("{imds}?{q}"),
        &[("Metadata", "true"), ("X-Forwarded-For", "10.0.0.1")],
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = get(
        &format!("{app}?{app_q}"),
        &[
            ("X-IDENTITY-HEADER", &header),
            ("X-Forwarded-For", "1.2.3.4"),
        ],
    )
    .await;
    assert_eq!(status, 403);
    // Wrong or missing identity header.
    let (status, _) = get(&format!("{app}?{app_q}"), &[("X-IDENTITY-HEADER", "guess")]).await;
    assert_eq!(status, 401);
    let (status, _) = get(&format!("{app}?{app_q}"), &[]).await;
    assert_eq!(status, 401);
    // Duplicate query parameters.
    let (status, _) = get(
        &format!("{imds}?{q}&resource=https://management.azure.com/"),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(status, 400);
    // An identity that is not attached to this VM.
    let stranger = uuid::Uuid::new_v4();
    let (status, body) = get(
        &format!("{imds}?{q}&client_id={stranger}"),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (400, Some("Identity not found"))
    );

    // The legacy MSI_ENDPOINT protocol: header `secret`, param `clientid`.
    let ua1_client = s.ua1["properties"]["clientId"].as_str().unwrap();
    let legacy = format!(
        "{app}?api-version=2017-09-01&resource=https://vault.azure.net&clientid={ua1_client}"
    );
    let (status, body) = get(&legacy, &[("secret", &header)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["client_id"], ua1_client);

    // Detaching an identity stops it at once, even though a token for it was cached.
    let ua2_client = s.ua2["properties"]["clientId"].as_str().unwrap();
    let by_ua2 = format!("{imds}?{q}&client_id={ua2_client}");
    assert_eq!(get(&by_ua2, &[("Metadata", "true")]).await.0, 200);
    // A token ua2 got from this VM for the control plane works there...
    let (_, arm_token) = get(
        &format!(
            "{imds}?api-version=2018-02-01&resource=https://management.azure.com/&client_id={ua2_client}"
        ),
        &[("Metadata", "true")],
    )
    .await;
    let arm_token = arm_token["access_token"].as_str().unwrap().to_string();
    let subscriptions = s
        .server
        .url("localhost", "/subscriptions?api-version=2022-12-01");
    let http = s.server.client().unwrap();
    let before = http
        .get(&subscriptions)
        .bearer_auth(&arm_token)
        .send()
        .await
        .unwrap();
    assert_eq!(before.status(), 200);
    let ua2_id = s.ua2["id"].as_str().unwrap();
    let patch = json!({"identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": { ua2_id: null }}});
    let reply = s
        .admin
        .arm(Method::PATCH, &format!("{}?{API}", s.vm), Some(&patch))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (status, body) = get(&by_ua2, &[("Metadata", "true")]).await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (400, Some("Identity not found"))
    );
    // ...and is refused the moment ua2 is detached, not when it expires.
    let after = http
        .get(&subscriptions)
        .bearer_auth(&arm_token)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);

    // A commit elsewhere (a new resource group) does not cost a cached token: the same token
    // comes back. Attaching ua2 again mints a new one (the old one stays revoked for this VM).
    let (_, cached) = get(&format!("{imds}?{q}"), &[("Metadata", "true")]).await;
    let reply = s
        .admin
        .arm(
            Method::PUT,
            &format!(
                "/subscriptions/{}/resourceGroups/unrelated?{API}",
                s.server.admin.subscription_id
            ),
            Some(&json!({"location": "local"})),
        )
        .await
        .unwrap();
    assert!(reply.status == 200 || reply.status == 201, "{}", reply.body);
    let (_, again) = get(&format!("{imds}?{q}"), &[("Metadata", "true")]).await;
    assert_eq!(again["access_token"], cached["access_token"]);
    let patch = json!({"identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": { ua2_id: {} }}});
    let reply = s
        .admin
        .arm(Method::PATCH, &format!("{}?{API}", s.vm), Some(&patch))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (status, reattached) = get(
        &format!(
            "{imds}?api-version=2018-02-01&resource=https://management.azure.com/&client_id={ua2_client}"
        ),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(status, 200, "{reattached}");
    let fresh = reattached["access_token"].as_str().unwrap();
    assert_ne!(fresh, arm_token, "a revoked token was handed out again");
    let works = http
        .get(&subscriptions)
        .bearer_auth(fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(works.status(), 200);

    // An ended session's header and listener stop working.
    let id = session["id"].as_str().unwrap();
    let reply = s
        .admin
        .arm(Method::DELETE, &format!("/lanyard/sessions/{id}"), None)
        .await
        .unwrap();
    assert_eq!(reply.status, 204);
    let after = reqwest::Client::new()
        .get(format!("{app}?{app_q}"))
        .header("X-IDENTITY-HEADER", &header)
        .send()
        .await;
    match after {
        Err(_) => {}
        Ok(r) => assert_ne!(
            r.status().as_u16(),
            200,
            "an ended session still issues tokens"
        ),
    }
}

const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
const VM_CONTRIBUTOR: &str = "9980e02c-c2be-4d73-94e8-173b1dc7cf3c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_as_passes_the_exit_code_and_ends_the_session() {
    let s = Scenario::new(Backend::Sqlite).await;
    // The child sees the endpoint and header, gets a token, sees none of the parent's
    // credentials, prints what it had, and exits 7.
    let script = r#"
        test -z "$AZURE_CLIENT_SECRET" || exit 90
        test -z "$AZURE_CLIENT_ID" || exit 91
        curl -sf -H "X-IDENTITY-HEADER: $IDENTITY_HEADER" \
          "$IDENTITY_ENDPOINT?api-version=2019-08-01&resource=https://vault.azure.net" >/dev/null || exit 92
        echo "$IDENTITY_ENDPOINT $IDENTITY_HEADER"
        exit 7
    "#;
    let mut cmd = lanyard();
    cmd.args(["run", "--as", "vm1", "--data-dir"])
        .arg(&s.server.data_dir)
        .args(["--", "sh", "-c", script])
        .env("AZURE_CLIENT_ID", s.server.admin.client_id.to_string())
        .env("AZURE_CLIENT_SECRET", &s.server.admin.client_secret);
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (endpoint, header) = stdout.trim().split_once(' ').unwrap();
    let after = reqwest::Client::new()
        .get(format!(
            "{endpoint}?api-version=2019-08-01&resource=https://vault.azure.net"
        ))
        .header("X-IDENTITY-HEADER", header)
        .send()
        .await;
    assert!(
        after.map(|r| r.status() != 200).unwrap_or(true),
        "a finished run's secret still issues tokens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_as_a_resource_needs_write_on_it() {
    let s = Scenario::new(Backend::Sqlite).await;
    let app = s.admin.create_app("operator").await.unwrap();
    let rg = format!(
        "/subscriptions/{}/resourceGroups/rg1",
        s.server.admin.subscription_id
    );
    s.admin.assign(&rg, READER, &app.object_id).await.unwrap();
    let operator = Client::for_app(&s.server, &app.client_id, &app.secret).unwrap();
    let open = || async {
        operator
            .arm(
                Method::POST,
                "/lanyard/sessions",
                Some(&json!({"resource": s.vm})),
            )
            .await
            .unwrap()
    };
    let denied = open().await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(denied.body["error"]["code"], "AuthorizationFailed");
    let message = denied.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Microsoft.Compute/virtualMachines/write"),
        "{message}"
    );

    // Through the CLI, the refusal is exit code 3 with the service's code on one line.
    let mut cmd = lanyard();
    cmd.args(["run", "--as", s.vm.as_str(), "--", "true"])
        .env("LANYARD_ARM_URL", s.server.url("localhost", ""))
        .env("AZURE_TENANT_ID", s.server.admin.tenant_id.to_string())
        .env("AZURE_CLIENT_ID", &app.client_id)
        .env("AZURE_CLIENT_SECRET", &app.secret)
        .env("REQUESTS_CA_BUNDLE", s.server.data_dir.join("ca.pem"))
        .env("HOME", s.server.data_dir.join("no-home"));
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim().starts_with("error: AuthorizationFailed:"),
        "{stderr}"
    );

    s.admin
        .assign(&rg, VM_CONTRIBUTOR, &app.object_id)
        .await
        .unwrap();
    assert_eq!(open().await.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_answers_429_with_retry_after() {
    let extra = lanyard_server::config::ConfigLayer {
        identity_throttling: Some(true),
        ..Default::default()
    };
    // A clock that stands still: the bucket never refills, so exactly its 20 tokens exist.
    let clock =
        lanyard_domain::ManualClock::at_unix(time::OffsetDateTime::now_utc().unix_timestamp());
    let server = TestServer::start_configured(Backend::Sqlite, std::sync::Arc::new(clock), extra)
        .await
        .unwrap();
    let s = Scenario::on(server).await;
    let session = open_session(&s).await;
    let url = format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net",
        session["imdsEndpoint"].as_str().unwrap()
    );
    let http = reqwest::Client::new();
    let mut handles = Vec::new();
    for _ in 0..60 {
        let (http, url) = (http.clone(), url.clone());
        handles.push(tokio::spawn(async move {
            let r = http
                .get(url)
                .header("Metadata", "true")
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.headers().get("retry-after").is_some(),
            )
        }));
    }
    let mut ok = 0;
    let mut throttled = 0;
    for h in handles {
        match h.await.unwrap() {
            (200, _) => ok += 1,
            (429, true) => throttled += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!((1..=20).contains(&ok), "ok={ok} throttled={throttled}");
    assert_eq!(ok + throttled, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_log_records_tokens_and_refusals() {
    let s = Scenario::new(Backend::Sqlite).await;
    let session = open_session(&s).await;
    let imds = format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net",
        session["imdsEndpoint"].as_str().unwrap()
    );
    assert_eq!(get(&imds, &[("Metadata", "true")]).await.0, 200);
    assert_eq!(get(&imds, &[]).await.0, 400);
    let mut log = Value::Null;
    // Records are written in the background; give the writer a moment (bounded).
    for _ in 0..50 {
        log = s
            .admin
            .arm(Method::GET, "/lanyard/signins", None)
            .await
            .unwrap()
            .body;
        let entries = log["value"].as_array().cloned().unwrap_or_default();
        let imds_entries: Vec<&Value> = entries.iter().filter(|e| e["source"] == "imds").collect();
        if imds_entries.len() >= 2 {
            assert!(imds_entries.iter().any(|e| e["result"] == "success"
                && e["resource"] == "https://vault.azure.net"
                && e["session"].as_str().unwrap().contains("vm1")));
            assert!(imds_entries.iter().any(|e| e["result"] == "failure"
                && e["reason"] == "Required metadata header not specified"));
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("sign-in log never showed both records: {log}");
}
