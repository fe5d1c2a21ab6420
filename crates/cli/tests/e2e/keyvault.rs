//! Key Vault end to end: vaults through the control plane, and the official Python
//! `azure-keyvault-secrets` client (default options) with `azure-identity`, run under
//! `lanyard run --as vm1` so the VM's system identity is the caller, in RBAC mode and in
//! access-policy mode. Name resolution for the vault hosts comes from a private hosts file
//! (testkit's `unshare -m` wrapper), never from the machine's. Soft-deleted vaults through
//! the official `azure-mgmt-keyvault` client, REST, a manual clock and the CLI.

use std::ffi::OsString;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::support::*;
use lanyard_testkit::arm::Client;
use lanyard_testkit::python;

both_backends!(
    rbac_vault_with_the_python_sdk,
    access_policy_vault_with_the_python_sdk,
    vault_resources_in_the_control_plane,
    soft_deleted_vaults_with_the_management_sdk,
    deleted_vault_authorization_and_activity,
    deleted_vaults_expire_on_the_injected_clock,
    deleted_vault_cli_commands
);

const KV_API: &str = "api-version=2023-07-01";
const VM_API: &str = "api-version=2024-03-01";
const RA_API: &str = "api-version=2022-04-01";
const SECRETS_USER: &str = "4633458b-17de-408a-b874-0445c86b69e6";
const SECRETS_OFFICER: &str = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7";
const DOMAIN: &str = "lanyard.localhost";

/// A resource group with a VM holding a system identity.
struct Scenario {
    server: TestServer,
    admin: Client,
    rg: String,
    vm_principal: String,
}

impl Scenario {
    async fn new(backend: Backend) -> Self {
        Self::on(TestServer::start(backend).await.unwrap()).await
    }

    async fn on(server: TestServer) -> Self {
        let admin = Client::admin(&server).unwrap();
        let rg = format!(
            "/subscriptions/{}/resourceGroups/rg1",
            server.admin.subscription_id
        );
        admin
            .put_ok(
                &format!("{rg}?api-version=2021-04-01"),
                &json!({"location": "local"}),
            )
            .await
            .unwrap();
        let vm = admin
            .put_ok(
                &format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm1?{VM_API}"),
                &json!({"location": "local", "identity": {"type": "SystemAssigned"}}),
            )
            .await
            .unwrap();
        let vm_principal = vm["identity"]["principalId"].as_str().unwrap().to_string();
        Scenario {
            server,
            admin,
            rg,
            vm_principal,
        }
    }

    fn vault_id(&self, name: &str) -> String {
        format!("{}/providers/Microsoft.KeyVault/vaults/{name}", self.rg)
    }

    async fn vault(&self, name: &str, properties: Value) -> Value {
        let body = json!({"location": "local", "properties": properties});
        self.admin
            .put_ok(&format!("{}?{KV_API}", self.vault_id(name)), &body)
            .await
            .unwrap()
    }

    async fn assign(&self, scope: &str, role: &str, principal: &str) {
        let role_id = format!(
            "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{role}",
            self.server.admin.subscription_id
        );
        let path = format!(
            "{scope}/providers/Microsoft.Authorization/roleAssignments/{}?{RA_API}",
            uuid::Uuid::new_v4()
        );
        let body = json!({"properties": {"roleDefinitionId": role_id, "principalId": principal, "principalType": "ServicePrincipal"}});
        self.admin.put_ok(&path, &body).await.unwrap();
    }

    fn vault_url(&self, vault: &Value) -> String {
        vault["properties"]["vaultUri"]
            .as_str()
            .unwrap()
            .trim_end_matches('/')
            .to_string()
    }

    /// A data-plane call as the administrator (REST, with its own token).
    async fn admin_data(
        &self,
        vault: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let token = self
            .admin
            .token("https://vault.azure.net/.default")
            .await
            .unwrap();
        let url = self.server.url(
            &format!("{vault}.vault.{DOMAIN}"),
            &format!("{path}?api-version=7.5"),
        );
        let mut request = self
            .server
            .client()
            .unwrap()
            .request(method, url)
            .bearer_auth(token);
        if let Some(b) = body {
            request = request.json(&b);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `tests/python/keyvault/secret_client.py URL ARGS` under `lanyard run --as vm1`, both inside
    /// a mount namespace whose hosts file resolves the vault host.
    async fn sdk(&self, vault_url: &str, args: &[&str]) -> Value {
        let host = vault_url
            .trim_start_matches("https://")
            .split(':')
            .next()
            .unwrap()
            .to_string();
        let script = python::scripts_dir().join("keyvault/secret_client.py");
        let py = python::python().unwrap();
        let mut argv: Vec<OsString> = ["run", "--as", "vm1", "--data-dir"]
            .into_iter()
            .map(OsString::from)
            .collect();
        argv.push(self.server.data_dir.clone().into_os_string());
        argv.push("--".into());
        argv.push(py.into_os_string());
        argv.push(script.into_os_string());
        argv.push(vault_url.into());
        argv.extend(args.iter().map(OsString::from));
        let lanyard_bin = std::path::Path::new(env!("CARGO_BIN_EXE_lanyard"));
        let mut cmd = python::isolated(lanyard_bin, &argv, &[host]).unwrap();
        for (k, _) in std::env::vars() {
            if k.starts_with("LANYARD_") || k.starts_with("AZURE_") {
                cmd.env_remove(k);
            }
        }
        let out = tokio::time::timeout(
            Duration::from_secs(180),
            tokio::process::Command::from(cmd).output(),
        )
        .await
        .expect("the SDK script did not finish within 3 minutes")
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or("");
        serde_json::from_str(line).unwrap_or_else(|_| {
            panic!(
                "no JSON from secret_client.py {args:?}: stdout={stdout} stderr={}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

fn ok(result: Value) -> Value {
    assert_eq!(result["ok"], true, "{result}");
    result
}

async fn rbac_vault_with_the_python_sdk(backend: Backend) {
    let s = Scenario::new(backend).await;
    let vault = s.vault("kv1", json!({"tenantId": s.server.admin.tenant_id, "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": true})).await;
    let url = s.vault_url(&vault);
    assert_eq!(url, s.server.url(&format!("kv1.vault.{DOMAIN}"), ""));
    let kv1 = s.vault_id("kv1");
    s.assign(&kv1, SECRETS_OFFICER, &s.server.admin.object_id.to_string())
        .await;
    let (status, body) = s
        .admin_data(
            "kv1",
            Method::PUT,
            "/secrets/app-secret",
            Some(json!({"value": "s3cret-for-the-vm"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Secrets User on the vault: the SDK reads; writing is refused by RBAC.
    s.assign(&kv1, SECRETS_USER, &s.vm_principal).await;
    let read = ok(s
        .sdk(
            &url,
            &[
                "read",
                "--name",
                "app-secret",
                "--value",
                "s3cret-for-the-vm",
                "--denied-inner",
                "ForbiddenByRbac",
            ],
        )
        .await);
    let message = read["denied"]["message"].as_str().unwrap();
    assert!(
        message.contains("Microsoft.KeyVault/vaults/secrets/setSecret/action"),
        "{message}"
    );

    // A token for Azure Storage is refused with 401.
    let refused = ok(s
        .sdk(&url, &["wrong-audience", "--name", "app-secret"])
        .await);
    assert_eq!(refused["refused"]["code"], "Unauthorized");

    // Secrets Officer at the resource group: the whole life cycle.
    s.assign(&s.rg, SECRETS_OFFICER, &s.vm_principal).await;
    ok(s.sdk(&url, &["lifecycle"]).await);
}

async fn access_policy_vault_with_the_python_sdk(backend: Backend) {
    let s = Scenario::new(backend).await;
    let tenant = s.server.admin.tenant_id.to_string();
    let policy = |oid: &str, secrets: &[&str]| json!({"tenantId": tenant, "objectId": oid, "permissions": {"secrets": secrets, "keys": [], "certificates": []}});
    let admin_oid = s.server.admin.object_id.to_string();
    let vault = s
        .vault("kv2", json!({"tenantId": tenant, "sku": {"name": "standard"}, "accessPolicies": [policy(&admin_oid, &["all"]), policy(&s.vm_principal, &["get"])]}))
        .await;
    assert_eq!(vault["properties"]["enableRbacAuthorization"], false);
    let url = s.vault_url(&vault);
    let (status, body) = s
        .admin_data(
            "kv2",
            Method::PUT,
            "/secrets/app-secret",
            Some(json!({"value": "policy-secret"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // `get` only: reads, and is refused a write with AccessDenied.
    let read = ok(s
        .sdk(
            &url,
            &[
                "read",
                "--name",
                "app-secret",
                "--value",
                "policy-secret",
                "--denied-inner",
                "AccessDenied",
            ],
        )
        .await);
    assert!(read["denied"]["message"]
        .as_str()
        .unwrap()
        .contains("does not have secrets set permission"));

    // Every permission, through the access policy `add` operation.
    let add = json!({"properties": {"accessPolicies": [policy(&s.vm_principal, &["all"])]}});
    let reply = s
        .admin
        .arm(
            Method::PUT,
            &format!("{}/accessPolicies/add?{KV_API}", s.vault_id("kv2")),
            Some(&add),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["name"], "add");
    ok(s.sdk(&url, &["lifecycle"]).await);

    // `remove` takes it away again.
    let remove =
        json!({"properties": {"accessPolicies": [policy(&s.vm_principal, &["all", "get"])]}});
    let reply = s
        .admin
        .arm(
            Method::PUT,
            &format!("{}/accessPolicies/remove?{KV_API}", s.vault_id("kv2")),
            Some(&remove),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let vault = s
        .admin
        .arm(
            Method::GET,
            &format!("{}?{KV_API}", s.vault_id("kv2")),
            None,
        )
        .await
        .unwrap()
        .body;
    let policies = vault["properties"]["accessPolicies"].as_array().unwrap();
    assert_eq!(policies.len(), 1, "{vault}");
    assert_eq!(policies[0]["objectId"], admin_oid.as_str());
}

async fn vault_resources_in_the_control_plane(backend: Backend) {
    let s = Scenario::new(backend).await;
    let id = s.vault_id("kv3");
    let put = |body: Value| {
        let path = format!("{id}?{KV_API}");
        let admin = &s.admin;
        async move { admin.arm(Method::PUT, &path, Some(&body)).await.unwrap() }
    };
    let created = put(json!({"location": "local", "properties": {"sku": {"name": "standard"}, "softDeleteRetentionInDays": 7, "enableRbacAuthorization": true}})).await;
    assert!(matches!(created.status, 200 | 201), "{}", created.body);
    let props = &created.body["properties"];
    assert_eq!(
        props["vaultUri"],
        format!("{}/", s.server.url(&format!("kv3.vault.{DOMAIN}"), ""))
    );
    assert_eq!(props["enableSoftDelete"], true);
    assert_eq!(props["softDeleteRetentionInDays"], 7);
    assert_eq!(created.body["type"], "Microsoft.KeyVault/vaults");

    // Retention out of range, retention changed, soft delete off: 400 with a clear message.
    for (body, needle) in [
        (
            json!({"location": "local", "properties": {"softDeleteRetentionInDays": 91}}),
            "softDeleteRetentionInDays",
        ),
        (
            json!({"location": "local", "properties": {"softDeleteRetentionInDays": 30}}),
            "cannot be changed",
        ),
        (
            json!({"location": "local", "properties": {"enableSoftDelete": false}}),
            "enableSoftDelete",
        ),
    ] {
        let r = put(body).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{}",
            r.body
        );
    }

    // Purge protection goes on, and cannot come off by PUT or PATCH.
    let on = put(json!({"location": "local", "properties": {"enablePurgeProtection": true}})).await;
    assert_eq!(on.status, 200, "{}", on.body);
    assert_eq!(on.body["properties"]["enablePurgeProtection"], true);
    assert_eq!(
        on.body["properties"]["enableRbacAuthorization"], true,
        "left out, kept"
    );
    let off =
        put(json!({"location": "local", "properties": {"enablePurgeProtection": false}})).await;
    assert_eq!(
        (off.status, off.body["error"]["code"].as_str()),
        (400, Some("BadRequest")),
        "{}",
        off.body
    );
    assert!(off.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("enablePurgeProtection"));
    let patch = s
        .admin
        .arm(
            Method::PATCH,
            &format!("{id}?{KV_API}"),
            Some(&json!({"properties": {"enablePurgeProtection": false}})),
        )
        .await
        .unwrap();
    assert_eq!(patch.status, 400, "{}", patch.body);
    let patch = s
        .admin
        .arm(
            Method::PATCH,
            &format!("{id}?{KV_API}"),
            Some(&json!({"tags": {"team": "a"}})),
        )
        .await
        .unwrap();
    assert_eq!(patch.status, 200, "{}", patch.body);
    assert_eq!(patch.body["tags"]["team"], "a");
    assert_eq!(patch.body["properties"]["enablePurgeProtection"], true);

    // Names: the rule, and global uniqueness.
    let r = s
        .admin
        .arm(
            Method::PUT,
            &format!("{}?{KV_API}", s.vault_id("1bad")),
            Some(&json!({"location": "local", "properties": {}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    s.admin
        .put_ok(
            &format!(
                "/subscriptions/{}/resourceGroups/rg2?api-version=2021-04-01",
                s.server.admin.subscription_id
            ),
            &json!({"location": "local"}),
        )
        .await
        .unwrap();
    let elsewhere = format!(
        "/subscriptions/{}/resourceGroups/rg2/providers/Microsoft.KeyVault/vaults/KV3?{KV_API}",
        s.server.admin.subscription_id
    );
    let r = s
        .admin
        .arm(
            Method::PUT,
            &elsewhere,
            Some(&json!({"location": "local", "properties": {}})),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("VaultAlreadyExists")),
        "{}",
        r.body
    );

    // Get, list per group and per subscription, the hosts command, delete.
    let r = s
        .admin
        .arm(Method::GET, &format!("{id}?{KV_API}"), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    for scope in [
        s.rg.clone(),
        format!("/subscriptions/{}", s.server.admin.subscription_id),
    ] {
        let r = s
            .admin
            .arm(
                Method::GET,
                &format!("{scope}/providers/Microsoft.KeyVault/vaults?{KV_API}"),
                None,
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["value"].as_array().unwrap().len(), 1, "{}", r.body);
    }
    hosts_command_lists_the_vaults(&s).await;
    let r = s
        .admin
        .arm(Method::DELETE, &format!("{id}?{KV_API}"), None)
        .await
        .unwrap();
    assert!(matches!(r.status, 200 | 204), "{}", r.body);
    let r = s
        .admin
        .arm(Method::GET, &format!("{id}?{KV_API}"), None)
        .await
        .unwrap();
    assert_eq!(r.status, 404);
}

async fn hosts_command_lists_the_vaults(s: &Scenario) {
    let dir = s.server.data_dir.clone();
    let printed = lanyard()
        .arg("hosts")
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let text = String::from_utf8(printed.stdout).unwrap();
    assert!(
        text.contains(&format!("127.0.0.1 kv3.vault.{DOMAIN}\n")),
        "{text}"
    );
    assert!(
        text.starts_with("# BEGIN lanyard") && text.trim_end().ends_with("# END lanyard"),
        "{text}"
    );

    // --apply on a file of the test's own: a marked block, replaced rather than repeated.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("hosts");
    std::fs::write(&file, "127.0.0.1 localhost\n").unwrap();
    for _ in 0..2 {
        let out = lanyard()
            .arg("hosts")
            .arg("--data-dir")
            .arg(&dir)
            .arg("--apply")
            .arg("--hosts-file")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(
        written.starts_with("127.0.0.1 localhost\n# BEGIN lanyard"),
        "{written}"
    );
    assert_eq!(written.matches("# BEGIN lanyard").count(), 1, "{written}");
    assert!(
        written.contains(&format!("127.0.0.1 kv3.vault.{DOMAIN}\n")),
        "{written}"
    );
}

/// The secret's value never reaches the server's logs (at debug level) nor the database
/// file: the `lanyard serve` binary, so its output can be captured.
#[tokio::test]
async fn secret_values_stay_out_of_logs_and_the_database() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let mut child = lanyard()
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .arg("--port")
        .arg(port.to_string())
        .env("LANYARD_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Debug logging is verbose: drain the pipes while the server runs.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    wait_ready(&data, port).await;
    let admin: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("admin.json")).unwrap()).unwrap();
    let field = |k: &str| admin[k].as_str().unwrap().to_string();
    let (tenant, sub, client_id, secret, oid) = (
        field("tenantId"),
        field("subscriptionId"),
        field("clientId"),
        field("clientSecret"),
        field("objectId"),
    );
    let pem = std::fs::read(data.join("ca.pem")).unwrap();
    let host = "kv9.vault.lanyard.localhost";
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .resolve(host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .unwrap();
    let base = format!("https://localhost:{port}");
    let token = |scope: &'static str| {
        let (http, base, tenant, client_id, secret) = (
            http.clone(),
            base.clone(),
            tenant.clone(),
            client_id.clone(),
            secret.clone(),
        );
        async move {
            let r: Value = http
                .post(format!("{base}/{tenant}/oauth2/v2.0/token"))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", &client_id),
                    ("client_secret", &secret),
                    ("scope", scope),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r["access_token"].as_str().unwrap().to_string()
        }
    };
    let arm = token("https://management.azure.com/.default").await;
    let rg = format!("/subscriptions/{sub}/resourceGroups/rg1");
    let put = |path: String, body: Value| {
        let (http, base, arm) = (http.clone(), base.clone(), arm.clone());
        async move {
            let r = http
                .put(format!("{base}{path}"))
                .bearer_auth(arm)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(
                r.status().is_success(),
                "{path}: {}",
                r.text().await.unwrap()
            );
        }
    };
    put(
        format!("{rg}?api-version=2021-04-01"),
        json!({"location": "local"}),
    )
    .await;
    let vault = format!("{rg}/providers/Microsoft.KeyVault/vaults/kv9");
    put(
        format!("{vault}?{KV_API}"),
        json!({"location": "local", "properties": {"enableRbacAuthorization": true}}),
    )
    .await;
    put(
        format!("{vault}/providers/Microsoft.Authorization/roleAssignments/{}?{RA_API}", uuid::Uuid::new_v4()),
        json!({"properties": {"roleDefinitionId": format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{SECRETS_OFFICER}"), "principalId": oid}}),
    )
    .await;

    let marker = format!("never-logged-{}", uuid::Uuid::new_v4().simple());
    let kv = token("https://vault.azure.net/.default").await;
    let url = |path: &str| format!("https://{host}:{port}{path}?api-version=7.5");
    let r = http
        .put(url("/secrets/marked"))
        .bearer_auth(&kv)
        .json(&json!({"value": marker}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = http
        .get(url("/secrets/marked/"))
        .bearer_auth(&kv)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["value"], marker.as_str());
    // A value that is refused (too large, malformed) is not logged either.
    let big = format!("{marker}{}", "x".repeat(30 * 1024));
    let r = http
        .put(url("/secrets/big"))
        .bearer_auth(&kv)
        .json(&json!({"value": big}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .put(url("/secrets/bad"))
        .bearer_auth(&kv)
        .body(format!("{{\"value\": \"{marker}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(!r.text().await.unwrap().contains(&marker));
    let r: Value = http
        .post(url("/secrets/marked/backup"))
        .bearer_auth(&kv)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!r["value"].as_str().unwrap().contains(&marker));

    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(wait_exit(&mut child, 20).success());
    let logs = format!("{}{}", stdout.join().unwrap(), stderr.join().unwrap());
    assert!(logs.contains("lanyard is ready"), "{logs}");
    assert!(!logs.contains(&marker), "the secret value reached the logs");
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("lanyard.db")
        {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                "the secret value is in {} in clear",
                path.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Soft-deleted vaults

const DELETED_ACTION_PURGE: &str = "Microsoft.KeyVault/locations/deletedVaults/purge/action";
const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";

impl Scenario {
    fn sub(&self) -> String {
        self.server.admin.subscription_id.to_string()
    }

    fn deleted_path(&self, name: &str, suffix: &str) -> String {
        format!(
            "/subscriptions/{}/providers/Microsoft.KeyVault/locations/local/deletedVaults/{name}{suffix}?{KV_API}",
            self.sub()
        )
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let r = self.admin.arm(method, path, body.as_ref()).await.unwrap();
        (r.status, r.body)
    }

    async fn deleted_names(&self) -> Vec<String> {
        let (status, body) = self
            .call(
                Method::GET,
                &format!(
                    "/subscriptions/{}/providers/Microsoft.KeyVault/deletedVaults?{KV_API}",
                    self.sub()
                ),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// `tests/python/keyvault/deleted_vaults.py` as the administrator, with the vault host
    /// resolved in a private hosts file.
    async fn management_sdk(&self, vault: &str, value: &str) -> Value {
        let port = self.server.addr.port();
        let ca = self.server.data_dir.join("ca.pem").display().to_string();
        let script = python::scripts_dir().join("keyvault/deleted_vaults.py");
        let common = python::scripts_dir().join("arm");
        let env = [
            ("AZURE_AUTHORITY_HOST", format!("https://localhost:{port}")),
            ("AZURE_TENANT_ID", self.server.admin.tenant_id.to_string()),
            ("AZURE_CLIENT_ID", self.server.admin.client_id.to_string()),
            (
                "AZURE_CLIENT_SECRET",
                self.server.admin.client_secret.clone(),
            ),
            ("AZURE_SUBSCRIPTION_ID", self.sub()),
            ("LANYARD_ARM_URL", format!("https://localhost:{port}")),
            ("REQUESTS_CA_BUNDLE", ca.clone()),
            ("SSL_CERT_FILE", ca),
            ("PYTHONPATH", common.display().to_string()),
        ];
        let hosts = [format!("{vault}.vault.{DOMAIN}")];
        let args = ["rg1", vault, "local", value];
        let mut cmd = python::command(&script, &args, &hosts).unwrap();
        for (k, _) in std::env::vars() {
            if k.starts_with("AZURE_") || k.starts_with("MSAL_") || k == "IDENTITY_ENDPOINT" {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = tokio::time::timeout(
            Duration::from_secs(180),
            tokio::process::Command::from(cmd).output(),
        )
        .await
        .expect("deleted_vaults.py did not finish within 3 minutes")
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "deleted_vaults.py failed: stdout={stdout} stderr={}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("deleted_vaults.py printed no JSON ({e}): {stdout}"))
    }

    /// A service principal made through Graph, and a client acting as it.
    async fn app(&self, name: &str) -> (String, Client) {
        let graph = self
            .admin
            .token("https://graph.microsoft.com/.default")
            .await
            .unwrap();
        let http = self.server.client().unwrap();
        let base = self.server.url("localhost", "");
        let post = |path: String, body: Value| {
            let (http, base, graph) = (http.clone(), base.clone(), graph.clone());
            async move {
                let r = http
                    .post(format!("{base}{path}"))
                    .bearer_auth(graph)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap();
                assert!(matches!(status, 200 | 201), "{path}: {status} {body}");
                body
            }
        };
        let app = post("/v1.0/applications".into(), json!({"displayName": name})).await;
        let app_id = app["appId"].as_str().unwrap().to_string();
        let id = app["id"].as_str().unwrap().to_string();
        let sp = post("/v1.0/servicePrincipals".into(), json!({"appId": app_id})).await;
        let pw = post(
            format!("/v1.0/applications/{id}/addPassword"),
            json!({"passwordCredential": {"displayName": "test"}}),
        )
        .await;
        let client =
            Client::for_app(&self.server, &app_id, pw["secretText"].as_str().unwrap()).unwrap();
        (sp["id"].as_str().unwrap().to_string(), client)
    }
}

/// A vault holding `db` (two versions, the last `value`) and the deleted secret `old`.
async fn vault_with_secrets(s: &Scenario, name: &str, value: &str, properties: Value) {
    s.vault(name, properties).await;
    for (secret, v) in [("db", "first"), ("db", value), ("old", "gone")] {
        let (status, body) = s
            .admin_data(
                name,
                Method::PUT,
                &format!("/secrets/{secret}"),
                Some(json!({ "value": v })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = s
        .admin_data(name, Method::DELETE, "/secrets/old", None)
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn soft_deleted_vaults_with_the_management_sdk(backend: Backend) {
    let s = Scenario::new(backend).await;
    let admin = s.server.admin.object_id.to_string();
    s.assign(&s.rg, SECRETS_OFFICER, &admin).await;
    let tenant = s.server.admin.tenant_id.to_string();
    vault_with_secrets(
        &s,
        "kvsoft1",
        "kept-through-deletion",
        json!({"tenantId": tenant, "sku": {"name": "standard"}, "enableRbacAuthorization": true}),
    )
    .await;
    let r = s.management_sdk("kvsoft1", "kept-through-deletion").await;
    assert_eq!(r["retention_days"], 90, "{r}");
    assert_eq!(r["purge_protection"], false, "{r}");
    assert_eq!(r["deleted_location"], "local", "{r}");
    assert_eq!(
        (
            &r["missing_location"]["status"],
            &r["missing_location"]["code"]
        ),
        (&json!(404), &json!("DeletedVaultNotFound")),
        "{r}"
    );
    assert_eq!(
        (&r["refused_create"]["status"], &r["refused_create"]["code"]),
        (&json!(409), &json!("ConflictError")),
        "{r}"
    );
    assert!(
        r["refused_create"]["message"]
            .as_str()
            .unwrap()
            .contains("recover or purge"),
        "{r}"
    );
    assert_eq!(r["value_after_recovery"], true, "{r}");
    assert_eq!(r["versions"], 2, "{r}");
    assert_eq!(r["deleted_secrets"], json!(["old"]), "{r}");
    assert_eq!(
        (&r["purged_lookup"]["status"], &r["purged_lookup"]["code"]),
        (&json!(404), &json!("DeletedVaultNotFound")),
        "{r}"
    );
    assert_eq!(r["secret_after_purge"], 404, "{r}");
    assert_eq!(
        (&r["not_deleted"]["status"], &r["not_deleted"]["code"]),
        (&json!(400), &json!("SoftDeletedVaultDoesNotExist")),
        "{r}"
    );
    assert_eq!(r["protected_flag"], true, "{r}");
    assert_eq!(
        (
            &r["protected_purge"]["status"],
            &r["protected_purge"]["code"]
        ),
        (&json!(409), &json!("MethodNotAllowed")),
        "{r}"
    );
    assert_eq!(r["protected_still_listed"], true, "{r}");
    assert_eq!(s.deleted_names().await, ["kvsoft1pp"]);
}

async fn deleted_vault_authorization_and_activity(backend: Backend) {
    let s = Scenario::new(backend).await;
    let id = s.vault_id("kvsoft2");
    s.vault("kvsoft2", json!({"enableRbacAuthorization": true}))
        .await;
    // Deleting a resource group soft-deletes its vaults too.
    s.admin
        .put_ok(
            &format!(
                "/subscriptions/{}/resourceGroups/rg9?api-version=2021-04-01",
                s.sub()
            ),
            &json!({"location": "local"}),
        )
        .await
        .unwrap();
    let in_group = format!(
        "/subscriptions/{}/resourceGroups/rg9/providers/Microsoft.KeyVault/vaults/kvsoft3?{KV_API}",
        s.sub()
    );
    s.admin
        .put_ok(&in_group, &json!({"location": "local", "properties": {}}))
        .await
        .unwrap();
    let (status, _) = s
        .call(
            Method::DELETE,
            &format!(
                "/subscriptions/{}/resourceGroups/rg9?api-version=2021-04-01",
                s.sub()
            ),
            None,
        )
        .await;
    assert!(matches!(status, 200 | 202), "{status}");
    let (status, body) = s
        .call(Method::DELETE, &format!("{id}?{KV_API}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let mut names = s.deleted_names().await;
    names.sort();
    assert_eq!(names, ["kvsoft2", "kvsoft3"]);

    // The name is taken for a vault in another group too.
    let elsewhere = format!(
        "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/KVSOFT3?{KV_API}",
        s.sub()
    );
    let (status, body) = s
        .call(
            Method::PUT,
            &elsewhere,
            Some(json!({"location": "local", "properties": {}})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("ConflictError")),
        "{body}"
    );

    // A Reader sees deleted vaults and may not purge them.
    let (reader_oid, reader) = s.app("kv-reader").await;
    s.assign(&format!("/subscriptions/{}", s.sub()), READER, &reader_oid)
        .await;
    let got = reader
        .arm(Method::GET, &s.deleted_path("kvsoft2", ""), None)
        .await
        .unwrap();
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body["properties"]["vaultId"], id.as_str());
    let denied = reader
        .arm(Method::POST, &s.deleted_path("kvsoft2", "/purge"), None)
        .await
        .unwrap();
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(denied.body["error"]["code"], "AuthorizationFailed");
    assert!(denied.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains(DELETED_ACTION_PURGE));
    // A principal with no role sees nothing.
    let (_, nobody) = s.app("kv-nobody").await;
    let listed = nobody
        .arm(
            Method::GET,
            &format!(
                "/subscriptions/{}/providers/Microsoft.KeyVault/deletedVaults?{KV_API}",
                s.sub()
            ),
            None,
        )
        .await
        .unwrap();
    assert_eq!(listed.status, 403, "{}", listed.body);

    // Purge by the administrator; the name is free again.
    let (status, body) = s
        .call(Method::POST, &s.deleted_path("kvsoft2", "/purge"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = s
        .call(Method::POST, &s.deleted_path("kvsoft2", "/purge"), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("DeletedVaultNotFound")),
        "{body}"
    );
    s.vault("kvsoft2", json!({})).await;

    // Recovery by REST restores the vault as it was.
    let (status, body) = s
        .call(
            Method::PUT,
            &format!(
                "/subscriptions/{}/resourceGroups/rg9?api-version=2021-04-01",
                s.sub()
            ),
            Some(json!({"location": "local"})),
        )
        .await;
    assert!(matches!(status, 200 | 201), "{body}");
    let (status, body) = s
        .call(
            Method::PUT,
            &in_group,
            Some(json!({"location": "local", "properties": {"createMode": "recover", "sku": {"name": "premium"}}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["properties"]["sku"]["name"], "standard",
        "the original properties: {body}"
    );

    // The activity log: delete, purge (and its refusal), recover.
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let filter = format!(
        "eventTimestamp ge '{}' and eventTimestamp le '{}'",
        fmt(now - time::Duration::hours(1)),
        fmt(now + time::Duration::hours(1))
    );
    let (status, log) = s
        .call(
            Method::GET,
            &format!(
                "/subscriptions/{}/providers/Microsoft.Insights/eventtypes/management/values?api-version=2015-04-01&$filter={}",
                s.sub(),
                urlencoding::encode(&filter)
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    let entries: Vec<(String, String, String)> = log["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["operationName"]["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e["status"]["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e["resourceId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
            )
        })
        .collect();
    let has = |op: &str, status: &str, on: &str| {
        entries
            .iter()
            .any(|(o, st, r)| o.eq_ignore_ascii_case(op) && st == status && r.ends_with(on))
    };
    assert!(
        has(
            "Microsoft.KeyVault/vaults/delete",
            "Succeeded",
            "/vaults/kvsoft2"
        ),
        "{entries:?}"
    );
    assert!(
        has(DELETED_ACTION_PURGE, "Succeeded", "/deletedvaults/kvsoft2"),
        "{entries:?}"
    );
    assert!(
        has(DELETED_ACTION_PURGE, "Failed", "/deletedvaults/kvsoft2"),
        "{entries:?}"
    );
    assert!(
        has(
            "Microsoft.KeyVault/vaults/write",
            "Succeeded",
            "/vaults/kvsoft3"
        ),
        "{entries:?}"
    );
}

async fn deleted_vaults_expire_on_the_injected_clock(backend: Backend) {
    let clock = std::sync::Arc::new(lanyard_domain::ManualClock::at_unix(
        time::OffsetDateTime::now_utc().unix_timestamp(),
    ));
    let server = TestServer::start_with_clock(backend, clock.clone())
        .await
        .unwrap();
    let s = Scenario::on(server).await;
    let admin = s.server.admin.object_id.to_string();
    s.assign(&s.rg, SECRETS_OFFICER, &admin).await;
    vault_with_secrets(
        &s,
        "kvsoft4",
        "short-lived",
        json!({"softDeleteRetentionInDays": 7, "enableRbacAuthorization": true}),
    )
    .await;
    let (status, _) = s
        .call(
            Method::DELETE,
            &format!("{}?{KV_API}", s.vault_id("kvsoft4")),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, shown) = s
        .call(Method::GET, &s.deleted_path("kvsoft4", ""), None)
        .await;
    assert_eq!(status, 200, "{shown}");
    let date = |k: &str| {
        time::OffsetDateTime::parse(
            shown["properties"][k].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert_eq!(
        date("scheduledPurgeDate") - date("deletionDate"),
        time::Duration::days(7)
    );

    // A second before the purge date: still there. At it: gone, and the name is free.
    clock.advance(Duration::from_secs(7 * 86400 - 1));
    assert_eq!(s.deleted_names().await, ["kvsoft4"]);
    clock.advance(Duration::from_secs(1));
    assert!(s.deleted_names().await.is_empty());
    let (status, body) = s
        .call(Method::GET, &s.deleted_path("kvsoft4", ""), None)
        .await;
    assert_eq!(status, 404, "{body}");
    let body = json!({"location": "local", "properties": {"createMode": "recover"}});
    let (status, body) = s
        .call(
            Method::PUT,
            &format!("{}?{KV_API}", s.vault_id("kvsoft4")),
            Some(body),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("SoftDeletedVaultDoesNotExist")),
        "{body}"
    );
    s.vault("kvsoft4", json!({"enableRbacAuthorization": true}))
        .await;
    let (status, body) = s
        .admin_data("kvsoft4", Method::GET, "/secrets/db/", None)
        .await;
    assert_eq!(
        status, 404,
        "the expired vault's secrets went with it: {body}"
    );
    let (status, body) = s
        .admin_data("kvsoft4", Method::GET, "/deletedsecrets", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], json!([]));
}

async fn deleted_vault_cli_commands(backend: Backend) {
    let s = Scenario::new(backend).await;
    let endpoints = s.server.data_dir.join("endpoints.json");
    for _ in 0..200 {
        if std::fs::read_to_string(&endpoints)
            .is_ok_and(|t| t.contains(&s.server.addr.port().to_string()))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let data_dir = s.server.data_dir.clone();
    let run = |args: &'static [&'static str]| {
        let data_dir = data_dir.clone();
        async move {
            let mut cmd = lanyard();
            cmd.args(args).env("LANYARD_DATA_DIR", &data_dir);
            let out = tokio::process::Command::from(cmd)
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            (out.status.code().unwrap_or(-1), stdout, stderr)
        }
    };
    let ok = |args: &'static [&'static str]| {
        let run = &run;
        async move {
            let (code, stdout, stderr) = run(args).await;
            assert_eq!(code, 0, "lanyard {args:?}: {stdout} {stderr}");
            serde_json::from_str::<Value>(&stdout).unwrap_or(Value::Null)
        }
    };
    ok(&["keyvault", "create", "-g", "rg1", "-n", "kvcli1"]).await;
    let admin = s.server.admin.object_id.to_string();
    s.assign(&s.vault_id("kvcli1"), SECRETS_OFFICER, &admin)
        .await;
    ok(&[
        "keyvault",
        "secret",
        "set",
        "--vault-name",
        "kvcli1",
        "-n",
        "s1",
        "--value",
        "cli-value",
    ])
    .await;
    ok(&["keyvault", "delete", "-n", "kvcli1"]).await;
    let listed = ok(&["keyvault", "list-deleted"]).await;
    assert_eq!(listed[0]["name"], "kvcli1", "{listed}");
    let shown = ok(&["keyvault", "show-deleted", "-n", "kvcli1"]).await;
    assert_eq!(
        shown["properties"]["vaultId"],
        s.vault_id("kvcli1").as_str(),
        "{shown}"
    );
    let (code, _, stderr) = run(&["keyvault", "create", "-g", "rg1", "-n", "kvcli1"]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("ConflictError"), "{stderr}");
    let recovered = ok(&["keyvault", "recover", "-n", "kvcli1"]).await;
    assert_eq!(recovered["resourceGroup"], "rg1", "{recovered}");
    // The role assignment went with the vault's scope; the secret did not.
    s.assign(&s.vault_id("kvcli1"), SECRETS_OFFICER, &admin)
        .await;
    let secret = ok(&[
        "keyvault",
        "secret",
        "show",
        "--vault-name",
        "kvcli1",
        "-n",
        "s1",
    ])
    .await;
    assert_eq!(secret["value"], "cli-value", "{secret}");
    ok(&["keyvault", "delete", "-n", "kvcli1"]).await;
    ok(&["keyvault", "purge", "-n", "kvcli1", "--location", "local"]).await;
    assert_eq!(ok(&["keyvault", "list-deleted"]).await, json!([]));
    let (code, _, stderr) = run(&["keyvault", "show-deleted", "-n", "kvcli1"]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("DeletedVaultNotFound"), "{stderr}");
    ok(&["keyvault", "create", "-g", "rg1", "-n", "kvcli1"]).await;
}
