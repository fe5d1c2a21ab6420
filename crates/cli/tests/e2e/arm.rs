//! The control plane: ARM errors for bad input, odd path casing, api-version echo, paging,
//! transactional deletes, denials with the engine's explanation, the activity log (failed
//! writes included), the generic resource listing (REST, SDK and `lanyard resource list`),
//! and the official management SDKs (azure-mgmt-resource, -msi, -compute, -authorization)
//! driven from Python, unmodified apart from `base_url`.

use std::path::PathBuf;
use std::process::Stdio;

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::both_backends;
use crate::support::*;
use lanyard_testkit::arm::Client;
use lanyard_testkit::python;

both_backends!(
    bad_input_gets_arm_errors,
    unauthenticated_calls_get_arm_challenges,
    odd_casing_api_version_and_correlation,
    role_assignments_page_with_next_link,
    deleting_a_group_takes_everything_in_one_transaction,
    group_deletion_racing_writes_leaves_no_orphans,
    deleting_a_vm_removes_its_identity_and_the_log_shows_every_step,
    reader_gets_authorization_failed,
    attaching_an_identity_needs_managed_identity_operator,
    official_management_sdks,
    sdk_callers_see_denials,
    generic_resource_listing,
    generic_listing_through_the_sdk,
    resource_list_command,
    failed_writes_are_in_the_activity_log,
    data_plane_endpoints_follow_the_server,
);

const V: &str = "api-version=2023-01-31";
const MGMT: &str = "https://management.azure.com/.default";
const GRAPH: &str = "https://graph.microsoft.com/.default";

const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
const VM_CONTRIBUTOR: &str = "9980e02c-c2be-4d73-94e8-173b1dc7cf3c";
const MI_OPERATOR: &str = "f1a07417-d97a-45cb-824c-7a7467783830";

/// A server, an HTTP client that trusts it, and the administrator's management token.
struct Arm {
    server: TestServer,
    http: reqwest::Client,
    base: String,
    sub: String,
    token: String,
}

/// A service principal with a secret.
struct App {
    object_id: String,
    client_id: String,
    secret: String,
    token: String,
}

/// Status, headers and JSON body (`Null` when empty).
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    #[track_caller]
    fn expect(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status, status, "{}", self.body);
        if !code.is_empty() {
            assert_eq!(self.body["error"]["code"], code, "{}", self.body);
            assert!(self.body["error"]["message"].is_string(), "{}", self.body);
        }
        self
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }
}

impl Arm {
    async fn start(backend: Backend) -> Self {
        let server = TestServer::start(backend).await.unwrap();
        let token = Client::admin(&server).unwrap().token(MGMT).await.unwrap();
        Self {
            http: server.client().unwrap(),
            base: server.url("localhost", ""),
            sub: server.admin.subscription_id.to_string(),
            server,
            token,
        }
    }

    fn rg(&self, name: &str) -> String {
        format!("/subscriptions/{}/resourceGroups/{name}", self.sub)
    }

    async fn send(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        Reply {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        self.send(Some(&self.token), method, path, body, &[]).await
    }

    async fn put(&self, path: &str, body: Value) -> Value {
        let r = self.call(Method::PUT, path, Some(&body)).await;
        assert!(
            matches!(r.status, 200 | 201),
            "PUT {path}: {} {}",
            r.status,
            r.body
        );
        r.body
    }

    async fn group(&self, name: &str) -> String {
        let id = self.rg(name);
        self.put(&format!("{id}?{V}"), json!({"location": "westus"}))
            .await;
        id
    }

    async fn identity(&self, group: &str, name: &str) -> Value {
        self.put(
            &format!(
                "{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}?{V}"
            ),
            json!({"location": "westus"}),
        )
        .await
    }

    async fn assign(&self, scope: &str, role: &str, principal: &str) -> Value {
        self.put(
            &format!(
                "{scope}/providers/Microsoft.Authorization/roleAssignments/{}?api-version=2022-04-01",
                Uuid::new_v4()
            ),
            json!({"properties": {
                "roleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{role}", self.sub),
                "principalId": principal,
            }}),
        )
        .await
    }

    async fn assignments_of(&self, principal: &str) -> Vec<Value> {
        let r = self
            .call(
                Method::GET,
                &format!(
                    "/subscriptions/{}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01&$filter=principalId%20eq%20'{principal}'",
                    self.sub
                ),
                None,
            )
            .await;
        r.expect(200, "");
        r.body["value"].as_array().unwrap().clone()
    }

    /// Activity-log entries (all pages) matching `filter` (URL-encoded by this helper).
    async fn activity(&self, filter: &str) -> Vec<Value> {
        let mut url = format!(
            "{}/subscriptions/{}/providers/Microsoft.Insights/eventtypes/management/values?api-version=2015-04-01&$filter={}",
            self.base,
            self.sub,
            urlencode(filter)
        );
        let mut out = Vec::new();
        loop {
            let r = self
                .http
                .get(&url)
                .bearer_auth(&self.token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let body: Value = r.json().await.unwrap();
            out.extend(body["value"].as_array().unwrap().iter().cloned());
            match body["nextLink"].as_str() {
                Some(next) => url = next.to_string(),
                None => return out,
            }
        }
    }

    /// A service principal made through the Graph API, with a management token.
    async fn app(&self, name: &str) -> (String, String) {
        let app = self.app_with_secret(name).await;
        (app.object_id, app.token)
    }

    /// A service principal made through the Graph API: its object id, client id, secret,
    /// and a management token.
    async fn app_with_secret(&self, name: &str) -> App {
        let admin = Client::admin(&self.server).unwrap();
        let graph = admin.token(GRAPH).await.unwrap();
        let post = |path: String, body: Value| {
            let graph = graph.clone();
            async move {
                let r = self
                    .http
                    .post(format!("{}{path}", self.base))
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
        let object_id = sp["id"].as_str().unwrap().to_string();
        let pw = post(
            format!("/v1.0/applications/{id}/addPassword"),
            json!({"passwordCredential": {"displayName": "test"}}),
        )
        .await;
        let secret = pw["secretText"].as_str().unwrap().to_string();
        let token = Client::for_app(&self.server, &app_id, &secret)
            .unwrap()
            .token(MGMT)
            .await
            .unwrap();
        App {
            object_id,
            client_id: app_id,
            secret,
            token,
        }
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------

async fn bad_input_gets_arm_errors(backend: Backend) {
    let arm = Arm::start(backend).await;
    let rg = arm.group("rg1").await;
    let uai = format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1");
    let vm = format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm1");

    arm.call(Method::GET, &rg, None)
        .await
        .expect(400, "MissingApiVersionParameter");
    let r = arm
        .send(
            Some(&arm.token),
            Method::PUT,
            &format!("{uai}?{V}"),
            None,
            &[("content-type", "application/json")],
        )
        .await;
    r.expect(400, "InvalidRequestContent");
    let r = arm
        .http
        .put(format!("{}{uai}?{V}", arm.base))
        .bearer_auth(&arm.token)
        .header("content-type", "application/json")
        .body("{\"location\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidRequestContent", "{body}");
    arm.call(
        Method::PUT,
        &format!("{rg}/providers/Microsoft.Foo/bars/x?{V}"),
        Some(&json!({"location": "westus"})),
    )
    .await
    .expect(400, "InvalidResourceType");
    arm.call(
        Method::PUT,
        &format!("{}?{V}", arm.rg("bad.")),
        Some(&json!({"location": "westus"})),
    )
    .await
    .expect(400, "InvalidResourceGroupName");
    arm.call(
        Method::PUT,
        &format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x?{V}"),
        Some(&json!({"location": "westus"})),
    )
    .await
    .expect(400, "InvalidResourceName");
    arm.call(
        Method::PUT,
        &format!("{}?{V}", arm.rg("rg2")),
        Some(&json!({"tags": {}})),
    )
    .await
    .expect(400, "LocationRequired");
    arm.call(
        Method::GET,
        &format!(
            "{}/providers/Microsoft.Compute/virtualMachines/vm1?{V}",
            arm.rg("nowhere")
        ),
        None,
    )
    .await
    .expect(404, "ResourceGroupNotFound");
    arm.call(Method::GET, &format!("{vm}?{V}"), None)
        .await
        .expect(404, "ResourceNotFound");
    arm.call(
        Method::GET,
        &format!("/subscriptions/{}/resourceGroups/rg1?{V}", Uuid::new_v4()),
        None,
    )
    .await
    .expect(404, "SubscriptionNotFound");

    // Identity blocks: an identity that does not exist, a type that is not one.
    arm.call(
        Method::PUT,
        &format!("{vm}?{V}"),
        Some(&json!({"location": "westus", "identity": {"type": "UserAssigned", "userAssignedIdentities": {uai.clone(): {}}}})),
    )
    .await
    .expect(400, "FailedIdentityOperation");
    arm.call(
        Method::PUT,
        &format!("{vm}?{V}"),
        Some(&json!({"location": "westus", "identity": {"type": "Both"}})),
    )
    .await
    .expect(400, "InvalidIdentityType");

    // Role assignments.
    let identity = arm.identity(&rg, "id1").await;
    let principal = identity["properties"]["principalId"]
        .as_str()
        .unwrap()
        .to_string();
    let ra = |name: String| {
        format!(
            "{rg}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version=2022-04-01"
        )
    };
    let reader_body = |p: &str| json!({"properties": {"roleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{READER}", arm.sub), "principalId": p}});
    let r = arm
        .call(
            Method::PUT,
            &ra(Uuid::new_v4().to_string()),
            Some(&reader_body(&Uuid::new_v4().to_string())),
        )
        .await;
    r.expect(400, "PrincipalNotFound");
    assert!(
        r.message().contains(" does not exist in the directory "),
        "{}",
        r.message()
    );
    arm.call(
        Method::PUT,
        &ra(Uuid::new_v4().to_string()),
        Some(&reader_body(&principal)),
    )
    .await
    .expect(201, "");
    let r = arm
        .call(
            Method::PUT,
            &ra(Uuid::new_v4().to_string()),
            Some(&reader_body(&principal)),
        )
        .await;
    r.expect(409, "RoleAssignmentExists");
    assert!(
        r.message().contains("role assignment already exists"),
        "{}",
        r.message()
    );
    arm.call(
        Method::PUT,
        &ra("not-a-guid".into()),
        Some(&reader_body(&principal)),
    )
    .await
    .expect(400, "InvalidRoleAssignmentId");
    let unknown_role = json!({"properties": {"roleDefinitionId": Uuid::new_v4().to_string(), "principalId": principal}});
    arm.call(
        Method::PUT,
        &ra(Uuid::new_v4().to_string()),
        Some(&unknown_role),
    )
    .await
    .expect(400, "RoleDefinitionDoesNotExist");

    // A custom role assignable only in rg1 cannot be assigned in rg2.
    let rg2 = arm.group("rg2").await;
    let role_id = Uuid::new_v4();
    let role = arm
        .put(
            &format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{role_id}?api-version=2022-04-01", arm.sub),
            json!({"properties": {"roleName": "Narrow reader", "assignableScopes": [rg], "permissions": [{"actions": ["*/read"]}]}}),
        )
        .await;
    assert_eq!(role["properties"]["type"], "CustomRole");
    let narrow = json!({"properties": {"roleDefinitionId": role["id"], "principalId": principal}});
    let r = arm
        .call(
            Method::PUT,
            &format!(
                "{rg2}/providers/Microsoft.Authorization/roleAssignments/{}?api-version=2022-04-01",
                Uuid::new_v4()
            ),
            Some(&narrow),
        )
        .await;
    r.expect(400, "InvalidCreateRoleAssignmentRequest");
    assert!(r.message().contains(&rg), "{}", r.message());
    arm.call(Method::PUT, &ra(Uuid::new_v4().to_string()), Some(&narrow))
        .await
        .expect(201, "");
    // Filters it cannot read.
    arm.call(
        Method::GET,
        &format!("{rg}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01&$filter=bogus"),
        None,
    )
    .await
    .expect(400, "InvalidFilterInQueryString");
}

async fn unauthenticated_calls_get_arm_challenges(backend: Backend) {
    let arm = Arm::start(backend).await;
    let path = format!("/subscriptions/{}/resourcegroups?{V}", arm.sub);
    let r = arm.send(None, Method::GET, &path, None, &[]).await;
    r.expect(401, "AuthenticationFailed");
    let challenge = r.headers["www-authenticate"].to_str().unwrap();
    let port = arm.server.addr.port();
    assert!(
        challenge.starts_with(&format!("Bearer authorization_uri=\"https://localhost:{port}/\", error=\"invalid_token\", error_description=\"")),
        "{challenge}"
    );
    arm.send(Some("not-a-token"), Method::GET, &path, None, &[])
        .await
        .expect(401, "InvalidAuthenticationToken");
    let vault = Client::admin(&arm.server)
        .unwrap()
        .token("https://vault.azure.net/.default")
        .await
        .unwrap();
    arm.send(Some(&vault), Method::GET, &path, None, &[])
        .await
        .expect(401, "InvalidAuthenticationTokenAudience");
    // Every management audience is accepted, with or without the trailing slash.
    for scope in [
        "https://management.core.windows.net//.default",
        "https://management.azure.com/.default",
        "https://management.lanyard.localhost/.default",
    ] {
        let t = Client::admin(&arm.server)
            .unwrap()
            .token(scope)
            .await
            .unwrap();
        arm.send(Some(&t), Method::GET, &path, None, &[])
            .await
            .expect(200, "");
    }
    // Cloud metadata is anonymous.
    let r = arm
        .send(
            None,
            Method::GET,
            "/metadata/endpoints?api-version=2022-09-01",
            None,
            &[],
        )
        .await;
    r.expect(200, "");
    assert_eq!(
        r.body["authentication"]["loginEndpoint"],
        format!("https://localhost:{port}")
    );
    assert_eq!(
        r.body["resourceManager"],
        format!("https://localhost:{port}/")
    );
    assert!(
        r.body["authentication"]["audiences"]
            .as_array()
            .unwrap()
            .len()
            >= 2
    );
    assert_eq!(
        r.body["suffixes"]["keyVaultDns"],
        format!("vault.lanyard.localhost:{port}")
    );
}

async fn odd_casing_api_version_and_correlation(backend: Backend) {
    let arm = Arm::start(backend).await;
    let sub = arm.sub.clone();
    let created = arm
        .put(
            &format!("/SUBSCRIPTIONS/{sub}/resourcegroups/Case-RG?api-version=2019-10-01"),
            json!({"location": "East US"}),
        )
        .await;
    assert_eq!(
        created["id"],
        format!("/subscriptions/{sub}/resourceGroups/Case-RG")
    );
    assert_eq!(created["location"], "eastus");
    let got = arm
        .call(
            Method::GET,
            &format!("/subscriptions/{sub}/RESOURCEGROUPS/case-rg?api-version=2099-01-01-preview"),
            None,
        )
        .await;
    got.expect(200, "");
    assert_eq!(got.body["name"], "Case-RG");
    let uai = arm
        .put(
            &format!("/subscriptions/{sub}/resourcegroups/case-rg/providers/microsoft.managedidentity/USERASSIGNEDIDENTITIES/Id-One?{V}"),
            json!({"location": "eastus"}),
        )
        .await;
    assert_eq!(
        uai["id"],
        format!("/subscriptions/{sub}/resourceGroups/Case-RG/providers/Microsoft.ManagedIdentity/userAssignedIdentities/Id-One")
    );
    assert_eq!(
        uai["type"],
        "Microsoft.ManagedIdentity/userAssignedIdentities"
    );

    // The api-version (any) is kept in nextLink.
    for name in ["id-two", "id-three"] {
        arm.identity(&arm.rg("case-rg"), name).await;
    }
    let r = arm
        .call(
            Method::GET,
            &format!("/subscriptions/{sub}/providers/Microsoft.ManagedIdentity/userAssignedIdentities?api-version=1999-12-31&$top=2"),
            None,
        )
        .await;
    r.expect(200, "");
    assert_eq!(r.body["value"].as_array().unwrap().len(), 2);
    let next = r.body["nextLink"].as_str().unwrap();
    assert!(next.contains("api-version=1999-12-31"), "{next}");
    assert!(
        next.contains("%24skiptoken=") || next.contains("$skiptoken="),
        "{next}"
    );
    let rest = arm
        .http
        .get(next)
        .bearer_auth(&arm.token)
        .send()
        .await
        .unwrap();
    let rest: Value = rest.json().await.unwrap();
    assert_eq!(rest["value"].as_array().unwrap().len(), 1, "{rest}");
    assert!(rest.get("nextLink").is_none(), "{rest}");

    // The correlation id is echoed, or made up when the client sends none.
    let r = arm
        .send(
            Some(&arm.token),
            Method::GET,
            &format!("{}?{V}", arm.rg("case-rg")),
            None,
            &[("x-ms-correlation-request-id", "corr-42")],
        )
        .await;
    assert_eq!(r.headers["x-ms-correlation-request-id"], "corr-42");
    let r = arm
        .call(Method::GET, &format!("{}?{V}", arm.rg("case-rg")), None)
        .await;
    assert!(Uuid::parse_str(r.headers["x-ms-correlation-request-id"].to_str().unwrap()).is_ok());
    // Errors carry it too.
    let r = arm
        .send(
            Some(&arm.token),
            Method::GET,
            &arm.rg("case-rg"),
            None,
            &[("x-ms-correlation-request-id", "corr-43")],
        )
        .await;
    r.expect(400, "MissingApiVersionParameter");
    assert_eq!(r.headers["x-ms-correlation-request-id"], "corr-43");
}

async fn role_assignments_page_with_next_link(backend: Backend) {
    let arm = Arm::start(backend).await;
    let rg = arm.group("paging").await;
    let roles = [
        "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        "b24988ac-6180-42a0-ab88-20f7382dd24c",
        "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        "00482a5a-887f-4fb3-b363-3b7fe8e74483",
        "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
        "4633458b-17de-408a-b874-0445c86b69e6",
        "21090545-7ca7-4776-b22c-e363652d74d2",
        "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
        "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    ];
    let mut created = std::collections::BTreeSet::new();
    for i in 0..3 {
        let id = arm.identity(&rg, &format!("pager-{i}")).await;
        let principal = id["properties"]["principalId"]
            .as_str()
            .unwrap()
            .to_string();
        for role in roles {
            let a = arm.assign(&rg, role, &principal).await;
            created.insert(a["name"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(created.len(), 30);
    // atScope() at the group: the 30 here and the administrator's Owner above.
    let mut url = format!(
        "{}{rg}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01&$filter=atScope()&$top=7",
        arm.base
    );
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = arm
            .http
            .get(&url)
            .bearer_auth(&arm.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let page = body["value"].as_array().unwrap();
        assert!(page.len() <= 7);
        seen.extend(page.iter().map(|a| a["name"].as_str().unwrap().to_string()));
        pages += 1;
        match body["nextLink"].as_str() {
            Some(next) => {
                assert!(next.contains("api-version=2022-04-01"), "{next}");
                assert!(next.contains("skiptoken"), "{next}");
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(pages, 5);
    let unique: std::collections::BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "an assignment was listed twice");
    assert_eq!(seen.len(), 31);
    assert!(created.is_subset(&unique));
    // The subscription-level list sees them too; principalId narrows to one principal.
    let r = arm
        .call(Method::GET, &format!("/subscriptions/{}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01", arm.sub), None)
        .await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 31);
    let one = arm
        .assignments_of(&arm.server.admin.object_id.to_string())
        .await;
    assert_eq!(one.len(), 1);
    let pager = arm
        .call(
            Method::GET,
            &format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/pager-0?{V}"),
            None,
        )
        .await;
    let p0 = pager.body["properties"]["principalId"].as_str().unwrap();
    assert_eq!(arm.assignments_of(p0).await.len(), 10);
    // A GET by full id.
    let any = one[0]["id"].as_str().unwrap();
    arm.call(Method::GET, &format!("{any}?api-version=2022-04-01"), None)
        .await
        .expect(200, "");
}

async fn deleting_a_group_takes_everything_in_one_transaction(backend: Backend) {
    let arm = Arm::start(backend).await;
    let doomed = arm.group("doomed").await;
    let keep = arm.group("keep").await;
    let uai = arm.identity(&doomed, "shared").await;
    let uai_id = uai["id"].as_str().unwrap().to_string();
    let uai_principal = uai["properties"]["principalId"]
        .as_str()
        .unwrap()
        .to_string();
    arm.put(
        &format!("{uai_id}/federatedIdentityCredentials/ci-main?{V}"),
        json!({"properties": {"issuer": "https://issuer.example", "subject": "ci", "audiences": ["api://AzureADTokenExchange"]}}),
    )
    .await;
    let vm = arm
        .put(
            &format!("{doomed}/providers/Microsoft.Compute/virtualMachines/vm1?{V}"),
            json!({"location": "westus", "identity": {"type": "SystemAssigned"}}),
        )
        .await;
    let vm_principal = vm["identity"]["principalId"].as_str().unwrap().to_string();
    // A site elsewhere holds the group's identity and its own.
    let site_path = format!("{keep}/providers/Microsoft.Web/sites/site1?{V}");
    let site = arm
        .put(
            &site_path,
            json!({"location": "westus", "identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {uai_id.clone(): {}}}}),
        )
        .await;
    assert_eq!(site["identity"]["type"], "SystemAssigned, UserAssigned");
    // Assignments of the group's identities elsewhere, and of someone else inside the group.
    let sub_scope = format!("/subscriptions/{}", arm.sub);
    arm.assign(&sub_scope, READER, &vm_principal).await;
    arm.assign(&keep, READER, &uai_principal).await;
    let site_principal = site["identity"]["principalId"]
        .as_str()
        .unwrap()
        .to_string();
    arm.assign(&doomed, READER, &site_principal).await;

    let r = arm
        .send(
            Some(&arm.token),
            Method::DELETE,
            &format!("{doomed}?{V}"),
            None,
            &[("x-ms-correlation-request-id", "group-delete")],
        )
        .await;
    r.expect(200, "");

    arm.call(Method::GET, &format!("{doomed}?{V}"), None)
        .await
        .expect(404, "ResourceGroupNotFound");
    assert!(arm.assignments_of(&vm_principal).await.is_empty());
    assert!(arm.assignments_of(&uai_principal).await.is_empty());
    assert!(arm.assignments_of(&site_principal).await.is_empty());
    let site = arm.call(Method::GET, &site_path, None).await;
    site.expect(200, "");
    assert_eq!(
        site.body["identity"]["type"], "SystemAssigned",
        "{}",
        site.body
    );
    assert!(site.body["identity"]
        .get("userAssignedIdentities")
        .is_none());
    assert_eq!(site.body["identity"]["principalId"], site_principal);
    // The identities' principals are gone from the directory.
    for p in [&vm_principal, &uai_principal] {
        arm.call(
            Method::PUT,
            &format!("{keep}/providers/Microsoft.Authorization/roleAssignments/{}?api-version=2022-04-01", Uuid::new_v4()),
            Some(&json!({"properties": {"roleDefinitionId": READER, "principalId": p}})),
        )
        .await
        .expect(400, "PrincipalNotFound");
    }
    // The system identity endpoint of the site still answers; the VM's is gone with it.
    let sys = arm
        .call(Method::GET, &format!("{keep}/providers/Microsoft.Web/sites/site1/providers/Microsoft.ManagedIdentity/identities/default?{V}"), None)
        .await;
    sys.expect(200, "");
    assert_eq!(sys.body["properties"]["principalId"], site_principal);
    // One correlation id ties the deletion and everything it took with it.
    let log = arm
        .activity("eventTimestamp ge '2000-01-01T00:00:00Z' and correlationId eq 'group-delete'")
        .await;
    let ops: Vec<&str> = log
        .iter()
        .map(|e| e["operationName"]["value"].as_str().unwrap())
        .collect();
    assert!(
        ops.contains(&"Microsoft.Resources/subscriptions/resourceGroups/delete"),
        "{ops:?}"
    );
    assert!(ops.contains(&"Microsoft.Web/sites/write"), "{ops:?}");
    assert_eq!(
        ops.iter()
            .filter(|o| **o == "Microsoft.Authorization/roleAssignments/delete")
            .count(),
        3,
        "{ops:?}"
    );
}

/// Creates of identity holders race a deletion of their group: each create either lands
/// before the deletion (and goes with it) or is refused; no principal outlives its resource.
async fn group_deletion_racing_writes_leaves_no_orphans(backend: Backend) {
    let arm = Arm::start(backend).await;
    let rg = arm.group("race").await;
    let shared = arm.identity(&arm.group("other").await, "shared").await;
    let shared_id = shared["id"].as_str().unwrap().to_string();
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (http, base, token) = (arm.http.clone(), arm.base.clone(), arm.token.clone());
        let path = if i == 12 {
            format!("{rg}?{V}")
        } else {
            format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm{i}?{V}")
        };
        let body = json!({"location": "westus", "identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {shared_id.clone(): {}}}});
        tasks.push(tokio::spawn(async move {
            let r = if i == 12 {
                http.delete(format!("{base}{path}"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
            } else {
                http.put(format!("{base}{path}"))
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
            };
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (
                i,
                status,
                body["error"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        }));
    }
    for t in tasks {
        let (i, status, code) = t.await.unwrap();
        if i == 12 {
            assert_eq!(status, 200, "delete: {code}");
        } else {
            assert!(
                status == 201
                    || (status == 409 && code == "ResourceGroupBeingDeleted")
                    || (status == 404 && code == "ResourceGroupNotFound"),
                "create {i}: {status} {code}"
            );
        }
    }
    arm.call(Method::GET, &format!("{rg}?{V}"), None)
        .await
        .expect(404, "ResourceGroupNotFound");
    let location = arm
        .server
        .database_url
        .clone()
        .unwrap_or_else(|| arm.server.data_dir.join("lanyard.db").display().to_string());
    let store = lanyard_storage::open(&location).await.unwrap();
    let principals = store.principals().await.unwrap();
    for p in &principals {
        let lanyard_domain::PrincipalKind::ServicePrincipal { source, .. } = &p.kind else {
            continue;
        };
        let host = match source {
            lanyard_domain::ServicePrincipalSource::SystemAssigned { host } => host,
            lanyard_domain::ServicePrincipalSource::UserAssigned { identity } => identity,
            lanyard_domain::ServicePrincipalSource::Application => continue,
        };
        assert!(
            store.resource(host).await.unwrap().is_some(),
            "principal {} outlived {host}",
            p.object_id
        );
    }
    // Only the shared identity is left, and no assignment names a missing principal.
    assert_eq!(
        principals
            .iter()
            .filter(|p| p.is_managed_identity())
            .count(),
        1
    );
}

async fn deleting_a_vm_removes_its_identity_and_the_log_shows_every_step(backend: Backend) {
    let arm = Arm::start(backend).await;
    let rg = arm.group("vmrg").await;
    let start = time_now();
    let vm_path = format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm1");
    let vm = arm
        .put(
            &format!("{vm_path}?{V}"),
            json!({"location": "westus", "identity": {"type": "SystemAssigned"}}),
        )
        .await;
    let principal = vm["identity"]["principalId"].as_str().unwrap().to_string();
    let assignment = arm.assign(&rg, READER, &principal).await;
    assert_eq!(arm.assignments_of(&principal).await.len(), 1);
    let r = arm
        .call(Method::DELETE, &format!("{vm_path}?{V}"), None)
        .await;
    r.expect(200, "");
    arm.call(Method::GET, &format!("{vm_path}?{V}"), None)
        .await
        .expect(404, "ResourceNotFound");
    assert!(arm.assignments_of(&principal).await.is_empty());
    arm.call(Method::DELETE, &format!("{vm_path}?{V}"), None)
        .await
        .expect(204, "");

    let log = arm
        .activity(&format!(
            "eventTimestamp ge '{start}' and resourceGroupName eq 'vmrg'"
        ))
        .await;
    // Newest first: the cascade and the delete, the assignment, the VM.
    let steps: Vec<(String, String)> = log
        .iter()
        .map(|e| {
            (
                e["operationName"]["value"].as_str().unwrap().to_string(),
                e["resourceId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let vm_id = vm["id"].as_str().unwrap().to_string();
    let ra_id = assignment["id"].as_str().unwrap().to_string();
    for step in [
        (
            "Microsoft.Compute/virtualMachines/write".to_string(),
            vm_id.clone(),
        ),
        (
            "Microsoft.Authorization/roleAssignments/write".to_string(),
            ra_id.clone(),
        ),
        (
            "Microsoft.Compute/virtualMachines/delete".to_string(),
            vm_id.clone(),
        ),
        (
            "Microsoft.Authorization/roleAssignments/delete".to_string(),
            ra_id.clone(),
        ),
    ] {
        assert!(steps.contains(&step), "{step:?} missing from {steps:?}");
    }
    // Newest first.
    let at = |op: &str| steps.iter().position(|(o, _)| o == op).unwrap();
    assert!(
        at("Microsoft.Compute/virtualMachines/delete")
            < at("Microsoft.Authorization/roleAssignments/write"),
        "{steps:?}"
    );
    assert!(
        at("Microsoft.Authorization/roleAssignments/write")
            < at("Microsoft.Compute/virtualMachines/write"),
        "{steps:?}"
    );
    for e in &log {
        assert_eq!(e["status"]["value"], "Succeeded");
        assert_eq!(e["caller"], arm.server.admin.object_id.to_string());
        assert!(e["correlationId"].is_string());
        assert!(e["eventTimestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(e["subscriptionId"], arm.sub);
        assert_eq!(e["authorization"]["action"], e["operationName"]["value"]);
    }
    let write = log
        .iter()
        .find(|e| e["operationName"]["value"] == "Microsoft.Authorization/roleAssignments/write")
        .unwrap();
    let body: Value =
        serde_json::from_str(write["properties"]["requestbody"].as_str().unwrap()).unwrap();
    assert_eq!(body["properties"]["principalId"], principal);
    // Narrowed to the VM.
    let only_vm = arm
        .activity(&format!(
            "eventTimestamp ge '{start}' and resourceUri eq '{vm_id}'"
        ))
        .await;
    assert_eq!(only_vm.len(), 2, "{only_vm:?}");
    // A time window that ends before anything happened is empty.
    assert!(arm
        .activity(
            "eventTimestamp ge '2000-01-01T00:00:00Z' and eventTimestamp le '2000-01-02T00:00:00Z'"
        )
        .await
        .is_empty());
}

fn time_now() -> String {
    // A second of slack for clock granularity between this process and the server.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    let days = t / 86_400;
    let secs = t % 86_400;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

async fn reader_gets_authorization_failed(backend: Backend) {
    let arm = Arm::start(backend).await;
    let rg = arm.group("shared").await;
    let (reader, token) = arm.app("reader-app").await;
    arm.assign(&format!("/subscriptions/{}", arm.sub), READER, &reader)
        .await;

    // Reads work.
    arm.send(Some(&token), Method::GET, &format!("{rg}?{V}"), None, &[])
        .await
        .expect(200, "");
    let listed = arm
        .send(
            Some(&token),
            Method::GET,
            &format!("/subscriptions/{}/resourcegroups?{V}", arm.sub),
            None,
            &[],
        )
        .await;
    assert_eq!(listed.body["value"].as_array().unwrap().len(), 1);
    let subs = arm
        .send(
            Some(&token),
            Method::GET,
            &format!("/subscriptions?{V}"),
            None,
            &[],
        )
        .await;
    assert_eq!(subs.body["value"][0]["subscriptionId"], arm.sub);
    // Writes do not.
    let target = arm.rg("forbidden");
    let r = arm
        .send(
            Some(&token),
            Method::PUT,
            &format!("{target}?{V}"),
            Some(&json!({"location": "westus"})),
            &[("x-ms-correlation-request-id", "denied-1")],
        )
        .await;
    r.expect(403, "AuthorizationFailed");
    let expected = format!(
        "The client '{reader}' with object id '{reader}' does not have authorization to perform action 'Microsoft.Resources/subscriptions/resourceGroups/write' over scope '{target}' or the scope is invalid."
    );
    assert!(r.message().starts_with(&expected), "{}", r.message());
    assert!(
        r.message().contains("Reader"),
        "the engine's explanation names the role: {}",
        r.message()
    );
    let r = arm
        .send(
            Some(&token),
            Method::PUT,
            &format!(
                "{rg}/providers/Microsoft.Authorization/roleAssignments/{}?api-version=2022-04-01",
                Uuid::new_v4()
            ),
            Some(&json!({"properties": {"roleDefinitionId": READER, "principalId": reader}})),
            &[],
        )
        .await;
    r.expect(403, "AuthorizationFailed");
    // The denied attempts are in the log, with the caller.
    let log = arm
        .activity("eventTimestamp ge '2000-01-01T00:00:00Z' and status eq 'Failed'")
        .await;
    let denied = log
        .iter()
        .find(|e| e["correlationId"] == "denied-1")
        .expect("denied attempt logged");
    assert_eq!(denied["caller"], reader);
    assert_eq!(denied["resourceId"], target);
    assert_eq!(denied["subStatus"]["value"], "Forbidden");
    let ra = log
        .iter()
        .find(|e| e["operationName"]["value"] == "Microsoft.Authorization/roleAssignments/write")
        .expect("denied assignment logged");
    assert!(ra["properties"]["requestbody"]
        .as_str()
        .unwrap()
        .contains(&reader));
    // Reader may read the log.
    let r = arm
        .send(
            Some(&token),
            Method::GET,
            &format!("/subscriptions/{}/providers/Microsoft.Insights/eventtypes/management/values?api-version=2015-04-01", arm.sub),
            None,
            &[],
        )
        .await;
    r.expect(200, "");
}

async fn attaching_an_identity_needs_managed_identity_operator(backend: Backend) {
    let arm = Arm::start(backend).await;
    let rg = arm.group("ops").await;
    let uai = arm.identity(&rg, "ops-id").await;
    let uai_id = uai["id"].as_str().unwrap().to_string();
    let (operator, token) = arm.app("vm-operator").await;
    arm.assign(&rg, VM_CONTRIBUTOR, &operator).await;
    let vm = format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm1?{V}");
    let with_uai = json!({"location": "westus", "identity": {"type": "UserAssigned", "userAssignedIdentities": {uai_id.clone(): {}}}});

    // VM write alone is enough for a VM without identities, not for one with a UAI.
    arm.send(
        Some(&token),
        Method::PUT,
        &vm,
        Some(&json!({"location": "westus", "identity": {"type": "SystemAssigned"}})),
        &[],
    )
    .await
    .expect(201, "");
    let r = arm
        .send(Some(&token), Method::PUT, &vm, Some(&with_uai), &[])
        .await;
    r.expect(403, "LinkedAuthorizationFailed");
    assert!(
        r.message()
            .contains("Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"),
        "{}",
        r.message()
    );
    assert!(r.message().contains(&uai_id), "{}", r.message());
    // Nothing changed.
    let now = arm.call(Method::GET, &vm, None).await;
    assert_eq!(now.body["identity"]["type"], "SystemAssigned");

    arm.assign(&uai_id, MI_OPERATOR, &operator).await;
    let r = arm
        .send(Some(&token), Method::PUT, &vm, Some(&with_uai), &[])
        .await;
    r.expect(200, "");
    assert_eq!(r.body["identity"]["type"], "UserAssigned");
    // PUT replaced the block: the system identity is gone.
    assert!(r.body["identity"].get("principalId").is_none());
    // Detaching needs no assign/action.
    let detach = json!({"identity": {"type": "None"}});
    let r = arm
        .send(Some(&token), Method::PATCH, &vm, Some(&detach), &[])
        .await;
    r.expect(200, "");
    assert_eq!(r.body["identity"]["type"], "None");
}

// ---------------------------------------------------------------------------------------
// The official SDKs

fn script(name: &str) -> PathBuf {
    python::scripts_dir().join("arm").join(name)
}

async fn run_sdk(arm: &Arm, name: &str) -> Value {
    let admin = (
        arm.server.admin.client_id.to_string(),
        arm.server.admin.client_secret.clone(),
    );
    run_sdk_as(arm, name, admin, &[]).await
}

/// Runs a script of `tests/python/arm` as the service principal `(client id, secret)`.
async fn run_sdk_as(
    arm: &Arm,
    name: &str,
    (client_id, secret): (String, String),
    args: &[String],
) -> Value {
    run_script_as(arm, script(name), name, (client_id, secret), args).await
}

async fn run_script_as(
    arm: &Arm,
    path: PathBuf,
    name: &str,
    (client_id, secret): (String, String),
    args: &[String],
) -> Value {
    let args = args.to_vec();
    let port = arm.server.addr.port();
    let ca = arm.server.data_dir.join("ca.pem").display().to_string();
    let env = vec![
        (
            "AZURE_AUTHORITY_HOST".to_string(),
            format!("https://localhost:{port}"),
        ),
        (
            "AZURE_TENANT_ID".to_string(),
            arm.server.admin.tenant_id.to_string(),
        ),
        ("AZURE_CLIENT_ID".to_string(), client_id),
        ("AZURE_CLIENT_SECRET".to_string(), secret),
        ("AZURE_SUBSCRIPTION_ID".to_string(), arm.sub.clone()),
        (
            "LANYARD_ARM_URL".to_string(),
            format!("https://localhost:{port}"),
        ),
        ("REQUESTS_CA_BUNDLE".to_string(), ca.clone()),
        ("SSL_CERT_FILE".to_string(), ca),
        (
            "PYTHONPATH".to_string(),
            script("common.py").parent().unwrap().display().to_string(),
        ),
    ];
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = python::command(&path, &argv, &[])
            .unwrap_or_else(|e| panic!("cannot run the management SDK tests: {e:#}"));
        for (k, _) in std::env::vars() {
            if k.starts_with("AZURE_") || k.starts_with("MSAL_") || k == "IDENTITY_ENDPOINT" {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name} failed: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{name} printed no JSON ({e}): {stdout}"))
    })
    .await
    .unwrap()
}

async fn official_management_sdks(backend: Backend) {
    let arm = Arm::start(backend).await;

    let groups = run_sdk(&arm, "resource_groups.py").await;
    assert_eq!(groups["missing_code"], "ResourceGroupNotFound");
    assert_eq!(groups["after_delete"], json!(["py-rg-2"]));

    let msi = run_sdk(&arm, "identities.py").await;
    // What the SDK created is what the REST API shows, and the deleted identity's principal
    // is gone from the directory.
    let id = msi["id"].as_str().unwrap();
    let shown = arm.call(Method::GET, &format!("{id}?{V}"), None).await;
    assert_eq!(shown.body["properties"]["principalId"], msi["principal_id"]);
    let fic = arm
        .call(
            Method::GET,
            &format!("{id}/federatedIdentityCredentials/github-main?{V}"),
            None,
        )
        .await;
    assert_eq!(
        fic.body,
        json!({
            "id": format!("{id}/federatedIdentityCredentials/github-main"),
            "name": "github-main",
            "type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
            "properties": {
                "issuer": "https://token.actions.githubusercontent.com",
                "subject": "repo:octo/app:ref:refs/heads/main",
                "audiences": ["api://AzureADTokenExchange"]
            }
        })
    );
    let gone = msi["deleted_principal_id"].as_str().unwrap();
    arm.call(
        Method::PUT,
        &format!(
            "{}/providers/Microsoft.Authorization/roleAssignments/{}?api-version=2022-04-01",
            arm.rg("py-msi"),
            Uuid::new_v4()
        ),
        Some(&json!({"properties": {"roleDefinitionId": READER, "principalId": gone}})),
    )
    .await
    .expect(400, "PrincipalNotFound");

    let compute = run_sdk(&arm, "compute.py").await;
    let system = compute["system_principal"].as_str().unwrap();
    arm.call(
        Method::PUT,
        &format!(
            "{}/providers/Microsoft.Authorization/roleAssignments/{}?api-version=2022-04-01",
            arm.rg("py-compute"),
            Uuid::new_v4()
        ),
        Some(&json!({"properties": {"roleDefinitionId": READER, "principalId": system}})),
    )
    .await
    .expect(400, "PrincipalNotFound");

    let authz = run_sdk(&arm, "authorization.py").await;
    assert_eq!(authz["duplicate"], json!([409, "RoleAssignmentExists"]));
    assert_eq!(authz["mismatch"], json!([400, "UnmatchedPrincipalType"]));
    assert_eq!(authz["unknown"], json!([400, "PrincipalNotFound"]));
}

/// The SDKs surface denials with ARM's codes: a Reader cannot create a group; a VM
/// Contributor cannot attach an identity it has no `assign/action` on, but can create a VM
/// with its own identity.
async fn sdk_callers_see_denials(backend: Backend) {
    let arm = Arm::start(backend).await;
    let rg = arm.group("sdk-ops").await;
    let uai = arm.identity(&rg, "sdk-ops-id").await;
    let app = arm.app_with_secret("sdk-operator").await;
    arm.assign(
        &format!("/subscriptions/{}", arm.sub),
        READER,
        &app.object_id,
    )
    .await;
    arm.assign(&rg, VM_CONTRIBUTOR, &app.object_id).await;
    let args = json!({"group": "sdk-ops", "identity": uai["id"]}).to_string();
    let out = run_sdk_as(
        &arm,
        "denials.py",
        (app.client_id.clone(), app.secret.clone()),
        &[args],
    )
    .await;
    assert_eq!(out["group"]["code"], "AuthorizationFailed");
    assert!(out["group"]["message"]
        .as_str()
        .unwrap()
        .contains(&format!("with object id '{}'", app.object_id)));
    assert_eq!(out["linked"]["code"], "LinkedAuthorizationFailed");
    assert_eq!(out["seen"], json!(["sdk-ops"]));
    assert!(out["own"].is_string());
}

// ---------------------------------------------------------------------------------------
// The generic resource listing and failed writes

const STORE: &str = "lanyardstore";
const VAULT: &str = "lanyard-kv";

/// Two groups holding one resource of every kind the plane serves, plus a child resource
/// (a federated credential) that the generic listing must not show. `rg1` holds `vm1`
/// (system identity, tag env=prod), `id1` (with the credential), the storage account, the
/// vault and `site1`; `rg2` holds `vm2` (tag env=dev) and the container app `app2`.
async fn estate(arm: &Arm) -> (String, String) {
    let rg1 = arm.group("rg1").await;
    let rg2 = arm.group("rg2").await;
    arm.put(
        &format!("{rg1}/providers/Microsoft.Compute/virtualMachines/vm1?{V}"),
        json!({"location": "westus", "tags": {"env": "prod"}, "identity": {"type": "SystemAssigned"}}),
    )
    .await;
    let id1 = arm.identity(&rg1, "id1").await;
    arm.put(
        &format!(
            "{}/federatedIdentityCredentials/fic1?{V}",
            id1["id"].as_str().unwrap()
        ),
        json!({"properties": {"issuer": "https://issuer.example", "subject": "s",
            "audiences": ["api://AzureADTokenExchange"]}}),
    )
    .await;
    arm.put(
        &format!("{rg1}/providers/Microsoft.Storage/storageAccounts/{STORE}?{V}"),
        json!({"location": "westus", "kind": "StorageV2", "sku": {"name": "Standard_LRS"},
            "properties": {}}),
    )
    .await;
    arm.put(
        &format!("{rg1}/providers/Microsoft.KeyVault/vaults/{VAULT}?{V}"),
        json!({"location": "westus", "properties": {"enableRbacAuthorization": true}}),
    )
    .await;
    arm.put(
        &format!("{rg1}/providers/Microsoft.Web/sites/site1?{V}"),
        json!({"location": "westus", "kind": "app"}),
    )
    .await;
    arm.put(
        &format!("{rg2}/providers/Microsoft.Compute/virtualMachines/vm2?{V}"),
        json!({"location": "eastus", "tags": {"env": "dev"}}),
    )
    .await;
    arm.put(
        &format!("{rg2}/providers/Microsoft.App/containerApps/app2?{V}"),
        json!({"location": "eastus"}),
    )
    .await;
    (rg1, rg2)
}

/// Sorted.
const RG1_NAMES: [&str; 5] = ["id1", VAULT, STORE, "site1", "vm1"];
const ALL_NAMES: [&str; 7] = ["app2", "id1", VAULT, STORE, "site1", "vm1", "vm2"];

impl Arm {
    /// Every page of a generic listing as `token` sees it (`path` without the host).
    async fn pages(&self, token: &str, path: &str) -> Vec<Vec<Value>> {
        let mut url = format!("{}{path}", self.base);
        let mut pages = Vec::new();
        loop {
            let r = self.http.get(&url).bearer_auth(token).send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            assert_eq!(status, 200, "{url}: {body}");
            pages.push(body["value"].as_array().unwrap().clone());
            match body["nextLink"].as_str() {
                Some(next) => url = next.to_string(),
                None => return pages,
            }
            assert!(pages.len() < 100, "paging does not end");
        }
    }

    /// The sorted names of a generic listing (all pages) as `token` sees it.
    async fn listed(&self, token: &str, path: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .pages(token, path)
            .await
            .concat()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }
}

async fn generic_resource_listing(backend: Backend) {
    let arm = Arm::start(backend).await;
    let (rg1, rg2) = estate(&arm).await;
    let sub = format!("/subscriptions/{}", arm.sub);
    let t = arm.token.clone();

    // Every top-level resource, no group, no federated credential.
    let all = arm
        .pages(&t, &format!("{sub}/resources?{V}"))
        .await
        .concat();
    let mut names: Vec<&str> = all.iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ALL_NAMES, "{all:?}");
    let by_name = |n: &str| all.iter().find(|r| r["name"] == n).unwrap().clone();
    let vm1 = by_name("vm1");
    assert_eq!(
        vm1["id"],
        format!("{rg1}/providers/Microsoft.Compute/virtualMachines/vm1")
    );
    assert_eq!(vm1["type"], "Microsoft.Compute/virtualMachines");
    assert_eq!(vm1["location"], "westus");
    assert_eq!(vm1["tags"], json!({"env": "prod"}));
    assert_eq!(vm1["identity"]["type"], "SystemAssigned");
    assert!(vm1["identity"]["principalId"].is_string(), "{vm1}");
    assert!(vm1.get("properties").is_none(), "{vm1}");
    let store = by_name(STORE);
    assert_eq!(store["kind"], "StorageV2");
    assert_eq!(store["sku"]["name"], "Standard_LRS");
    assert!(store.get("identity").is_none(), "{store}");
    assert_eq!(by_name("app2")["type"], "Microsoft.App/containerApps");
    assert_eq!(by_name(VAULT)["type"], "Microsoft.KeyVault/vaults");

    // One group; odd casing; $expand.
    let path = format!(
        "{}/RESOURCES?{V}&$expand=createdTime,changedTime,provisioningState",
        rg1.replace("resourceGroups", "resourcegroups")
    );
    let in_rg1 = arm.pages(&t, &path).await.concat();
    let mut names: Vec<&str> = in_rg1.iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, RG1_NAMES);
    assert!(in_rg1
        .iter()
        .all(|r| r["createdTime"].is_string() && r["provisioningState"] == "Succeeded"));

    // $top pages; every resource once.
    let pages = arm.pages(&t, &format!("{sub}/resources?{V}&$top=2")).await;
    assert_eq!(pages.len(), 4, "{pages:?}");
    assert!(pages.iter().all(|p| p.len() <= 2 && !p.is_empty()));
    let mut paged: Vec<String> = pages
        .concat()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    paged.sort();
    assert_eq!(paged, ALL_NAMES);

    // Filters.
    let filtered = |f: &str| format!("{sub}/resources?{V}&$filter={}", urlencode(f));
    assert_eq!(
        arm.listed(
            &t,
            &filtered("resourceType eq 'microsoft.compute/virtualmachines'")
        )
        .await,
        ["vm1", "vm2"]
    );
    assert_eq!(
        arm.listed(&t, &filtered("substringof('1', name)")).await,
        ["id1", "site1", "vm1"]
    );
    assert_eq!(
        arm.listed(&t, &filtered("tagName eq 'env' and tagValue eq 'dev'"))
            .await,
        ["vm2"]
    );
    assert_eq!(
        arm.listed(
            &t,
            &filtered("substringof('vm', name) and resourceGroup eq 'RG1'")
        )
        .await,
        ["vm1"]
    );
    assert_eq!(
        arm.listed(&t, &filtered("location eq 'East US'")).await,
        ["app2", "vm2"]
    );
    assert_eq!(
        arm.listed(
            &t,
            &format!("{rg2}/resources?{V}&$filter={}", urlencode("name eq 'vm2'"))
        )
        .await,
        ["vm2"]
    );

    // Errors in ARM's shape.
    let get = |path: String| {
        let arm = &arm;
        async move { arm.call(Method::GET, &path, None).await }
    };
    get(filtered("name gt 'a'"))
        .await
        .expect(400, "InvalidFilterInQueryString");
    get(filtered("tagValue eq 'dev'"))
        .await
        .expect(400, "InvalidFilterInQueryString");
    for top in ["0", "-3", "many"] {
        get(format!("{sub}/resources?{V}&$top={top}"))
            .await
            .expect(400, "InvalidQueryParameterValue");
    }
    get(format!("{}/resources?{V}", arm.rg("no-such-group")))
        .await
        .expect(404, "ResourceGroupNotFound");
    get(format!("{sub}/resources"))
        .await
        .expect(400, "MissingApiVersionParameter");
    arm.call(
        Method::PUT,
        &format!("{sub}/resources?{V}"),
        Some(&json!({})),
    )
    .await
    .expect(405, "MethodNotAllowed");

    // A Reader on rg1 sees rg1's resources, and nothing of rg2, from every list.
    let (reader, token) = arm.app("rg1-reader").await;
    arm.assign(&rg1, READER, &reader).await;
    assert_eq!(
        arm.listed(&token, &format!("{sub}/resources?{V}")).await,
        RG1_NAMES
    );
    assert_eq!(
        arm.listed(&token, &format!("{rg1}/resources?{V}")).await,
        RG1_NAMES
    );
    assert!(arm
        .listed(&token, &format!("{rg2}/resources?{V}"))
        .await
        .is_empty());
    // A Reader of one resource sees that one.
    let (one, one_token) = arm.app("vm2-reader").await;
    arm.assign(
        &format!("{rg2}/providers/Microsoft.Compute/virtualMachines/vm2"),
        READER,
        &one,
    )
    .await;
    assert_eq!(
        arm.listed(&one_token, &format!("{sub}/resources?{V}"))
            .await,
        ["vm2"]
    );

    // Deleted resources leave the list.
    arm.call(
        Method::DELETE,
        &format!("{rg2}/providers/Microsoft.Compute/virtualMachines/vm2?{V}"),
        None,
    )
    .await
    .expect(200, "");
    assert_eq!(
        arm.listed(&t, &format!("{rg2}/resources?{V}")).await,
        ["app2"]
    );
}

async fn generic_listing_through_the_sdk(backend: Backend) {
    let arm = Arm::start(backend).await;
    let (rg1, _) = estate(&arm).await;
    let admin = (
        arm.server.admin.client_id.to_string(),
        arm.server.admin.client_secret.clone(),
    );
    let args = json!({
        "group": "rg1",
        "filter": "substringof('1', name) and resourceType eq 'Microsoft.Compute/virtualMachines'",
        "top": 3,
    });
    let out = run_sdk_as(&arm, "list_resources.py", admin, &[args.to_string()]).await;
    let all = out["all"].as_array().unwrap();
    let mut names: Vec<&str> = all.iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ALL_NAMES, "{out}");
    let vm1 = all.iter().find(|r| r["name"] == "vm1").unwrap();
    assert_eq!(vm1["type"], "Microsoft.Compute/virtualMachines");
    assert_eq!(vm1["identity"], "SystemAssigned", "{vm1}");
    assert!(vm1["principal_id"].is_string(), "{vm1}");
    assert_eq!(vm1["tags"], json!({"env": "prod"}));
    assert!(vm1["created"].is_string(), "{vm1}");
    assert_eq!(vm1["state"], "Succeeded");
    let store = all.iter().find(|r| r["name"] == STORE).unwrap();
    assert_eq!(store["kind"], "StorageV2");
    assert_eq!(store["sku"], "Standard_LRS");
    assert_eq!(out["paged"], json!(ALL_NAMES));
    assert_eq!(out["group"], json!(RG1_NAMES));
    assert_eq!(out["filtered"], json!(["vm1"]));
    assert_eq!(out["missing"], json!([404, "ResourceGroupNotFound"]));
    assert_eq!(
        out["bad_filter"],
        json!([400, "InvalidFilterInQueryString"])
    );

    // A Reader scoped to rg1 sees only rg1's resources, from the subscription's list too.
    let reader = arm.app_with_secret("sdk-rg1-reader").await;
    arm.assign(&rg1, READER, &reader.object_id).await;
    let out = run_sdk_as(
        &arm,
        "list_resources.py",
        (reader.client_id.clone(), reader.secret.clone()),
        &[args.to_string()],
    )
    .await;
    let mut names: Vec<&str> = out["all"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, RG1_NAMES, "{out}");
    assert_eq!(out["paged"], json!(RG1_NAMES));
    assert_eq!(out["group"], json!(RG1_NAMES));
    assert_eq!(out["filtered"], json!(["vm1"]));
}

/// `lanyard resource list`, as `az resource list`: the whole subscription, `-g`, and the
/// `--resource-type`, `--name` and `--tag` filters, with `az`'s output shapes.
async fn resource_list_command(backend: Backend) {
    let arm = Arm::start(backend).await;
    estate(&arm).await;
    // The server writes `endpoints.json`, which the CLI reads, as it starts serving.
    let endpoints = arm.server.data_dir.join("endpoints.json");
    for _ in 0..200 {
        if std::fs::read_to_string(&endpoints)
            .is_ok_and(|t| t.contains(&arm.server.addr.port().to_string()))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let data_dir = arm.server.data_dir.clone();
    let run = |args: &'static [&'static str]| {
        let data_dir = data_dir.clone();
        async move {
            let mut cmd = lanyard();
            cmd.arg("resource")
                .arg("list")
                .args(args)
                .env("LANYARD_DATA_DIR", &data_dir);
            let out = tokio::process::Command::from(cmd)
                .stdin(Stdio::null())
                .output()
                .await
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let json_of = |args: &'static [&'static str]| {
        let run = &run;
        async move {
            let (code, stdout, stderr) = run(args).await;
            assert_eq!(code, 0, "resource list {args:?}: {stderr}");
            serde_json::from_str::<Value>(&stdout).unwrap()
        }
    };
    let names = |v: &Value| {
        let mut n: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };

    let all = json_of(&[]).await;
    assert_eq!(names(&all), ALL_NAMES);
    let vm2 = all
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "vm2")
        .unwrap();
    assert_eq!(vm2["resourceGroup"], "rg2");
    assert_eq!(vm2["provisioningState"], "Succeeded");
    assert!(vm2["createdTime"].is_string(), "{vm2}");
    assert_eq!(names(&json_of(&["-g", "rg1"]).await), RG1_NAMES);
    assert_eq!(
        names(&json_of(&["--resource-type", "Microsoft.Compute/virtualMachines"]).await),
        ["vm1", "vm2"]
    );
    assert_eq!(
        names(
            &json_of(&[
                "--namespace",
                "Microsoft.Web",
                "--resource-type",
                "sites",
                "-g",
                "rg1"
            ])
            .await
        ),
        ["site1"]
    );
    assert_eq!(names(&json_of(&["-n", "app2"]).await), ["app2"]);
    assert_eq!(names(&json_of(&["--tag", "env=prod"]).await), ["vm1"]);
    assert_eq!(names(&json_of(&["--tag", "env"]).await), ["vm1", "vm2"]);
    let (code, tsv, _) = run(&["-g", "rg2", "--query", "[].type", "-o", "tsv"]).await;
    assert_eq!(code, 0);
    let mut types: Vec<&str> = tsv.lines().collect();
    types.sort();
    assert_eq!(
        types,
        [
            "Microsoft.App/containerApps",
            "Microsoft.Compute/virtualMachines"
        ]
    );
    let (code, table, _) = run(&["-g", "rg2", "-o", "table"]).await;
    assert_eq!(code, 0);
    let header = table.lines().next().unwrap();
    for column in ["Name", "ResourceGroup", "Location", "Type", "Status"] {
        assert!(header.contains(column), "{table}");
    }
    // A missing group is the service's 404; a bad combination is refused before any call.
    let (code, _, stderr) = run(&["-g", "no-such-group"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("ResourceGroupNotFound"), "{stderr}");
    let (code, _, stderr) = run(&["--tag", "env", "-n", "vm1"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--tag"), "{stderr}");
}

/// Writes that were authorized and failed are in the activity log once, as `Failed` with
/// their status and error, without their bodies; reads, unauthenticated calls and refusals
/// (already logged) add nothing.
async fn failed_writes_are_in_the_activity_log(backend: Backend) {
    let arm = Arm::start(backend).await;
    let rg = arm.group("audit").await;
    let vm = format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm1");
    arm.put(&format!("{vm}?{V}"), json!({"location": "westus"}))
        .await;
    let with = |id: &'static str| [("x-ms-correlation-request-id", id)];
    let token = arm.token.clone();

    // A group moved to another location: 409.
    arm.send(
        Some(&token),
        Method::PUT,
        &format!("{rg}?{V}"),
        Some(&json!({"location": "eastus"})),
        &with("fail-group"),
    )
    .await
    .expect(409, "InvalidResourceGroupLocation");
    // A VM moved to another location, with a password in the body: 409.
    arm.send(
        Some(&token),
        Method::PUT,
        &format!("{vm}?{V}"),
        Some(&json!({"location": "eastus",
            "properties": {"osProfile": {"adminPassword": "hunter2-secret"}}})),
        &with("fail-vm"),
    )
    .await
    .expect(409, "InvalidResourceLocation");
    // The same role assignment twice: 409.
    let (principal, reader_token) = arm.app("audit-reader").await;
    arm.assign(&rg, READER, &principal).await;
    let duplicate = format!(
        "{rg}/providers/Microsoft.Authorization/roleAssignments/{}",
        Uuid::new_v4()
    );
    arm.send(
        Some(&token),
        Method::PUT,
        &format!("{duplicate}?api-version=2022-04-01"),
        Some(&json!({"properties": {
            "roleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{READER}", arm.sub),
            "principalId": principal,
        }})),
        &with("fail-assignment"),
    )
    .await
    .expect(409, "RoleAssignmentExists");
    // A delete of a group that is not there is 204 (no failure); a PATCH of a missing
    // identity is 404.
    arm.send(
        Some(&token),
        Method::PATCH,
        &format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ghost?{V}"),
        Some(&json!({"tags": {}})),
        &with("fail-patch"),
    )
    .await
    .expect(404, "");
    // Not logged: a failed read, an unauthenticated write, a write with no api-version.
    arm.send(
        Some(&token),
        Method::GET,
        &format!("{rg}/providers/Microsoft.Compute/virtualMachines/nope?{V}"),
        None,
        &with("read-404"),
    )
    .await
    .expect(404, "ResourceNotFound");
    arm.send(
        None,
        Method::PUT,
        &format!("{rg}?{V}"),
        Some(&json!({"location": "eastus"})),
        &with("anonymous"),
    )
    .await
    .expect(401, "");
    arm.send(
        Some(&token),
        Method::PUT,
        &rg,
        Some(&json!({"location": "eastus"})),
        &with("no-version"),
    )
    .await
    .expect(400, "MissingApiVersionParameter");
    // A refusal is logged once, by the authorization check.
    arm.send(
        Some(&reader_token),
        Method::PUT,
        &format!("{vm}?{V}"),
        Some(&json!({"location": "eastus"})),
        &with("denied"),
    )
    .await
    .expect(403, "AuthorizationFailed");

    let log = arm
        .activity("eventTimestamp ge '2000-01-01T00:00:00Z' and status eq 'Failed'")
        .await;
    let entries = |c: &str| -> Vec<Value> {
        log.iter()
            .filter(|e| e["correlationId"] == c)
            .cloned()
            .collect()
    };
    let error_of = |e: &Value| -> Value {
        serde_json::from_str(e["properties"]["statusMessage"].as_str().unwrap()).unwrap()
    };
    let check = |c: &str, operation: &str, resource: &str, sub_status: &str, code: &str| {
        let found = entries(c);
        assert_eq!(found.len(), 1, "{c}: {log:?}");
        let e = &found[0];
        assert_eq!(e["operationName"]["value"], operation, "{e}");
        assert_eq!(e["resourceId"], resource, "{e}");
        assert_eq!(e["status"]["value"], "Failed", "{e}");
        assert_eq!(e["subStatus"]["value"], sub_status, "{e}");
        assert_eq!(e["level"], "Error", "{e}");
        assert!(e["caller"].is_string(), "{e}");
        let error = error_of(e);
        assert_eq!(error["error"]["code"], code, "{e}");
        assert!(error["error"]["message"].is_string(), "{e}");
        assert!(e["properties"].get("requestbody").is_none(), "{e}");
        e.clone()
    };
    check(
        "fail-group",
        "Microsoft.Resources/subscriptions/resourceGroups/write",
        &rg,
        "Conflict",
        "InvalidResourceGroupLocation",
    );
    let e = check(
        "fail-vm",
        "Microsoft.Compute/virtualMachines/write",
        &vm,
        "Conflict",
        "InvalidResourceLocation",
    );
    assert!(!e.to_string().contains("hunter2"), "{e}");
    check(
        "fail-assignment",
        "Microsoft.Authorization/roleAssignments/write",
        &duplicate,
        "Conflict",
        "RoleAssignmentExists",
    );
    check(
        "fail-patch",
        "Microsoft.ManagedIdentity/userAssignedIdentities/write",
        &format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ghost"),
        "NotFound",
        "ResourceNotFound",
    );
    for c in ["read-404", "anonymous", "no-version"] {
        assert!(entries(c).is_empty(), "{c} is not logged: {log:?}");
    }
    let denied = entries("denied");
    assert_eq!(denied.len(), 1, "{log:?}");
    assert_eq!(denied[0]["subStatus"]["value"], "Forbidden");
    assert_eq!(denied[0]["caller"], principal);
    // The whole log holds no password, in failures or successes.
    let everything = arm
        .activity("eventTimestamp ge '2000-01-01T00:00:00Z'")
        .await;
    assert!(!Value::Array(everything).to_string().contains("hunter2"));
    // And the CLI's filter finds the failures by status.
    let failed_only = arm
        .activity(&format!(
            "eventTimestamp ge '2000-01-01T00:00:00Z' and resourceUri eq '{vm}' and status eq 'Failed'"
        ))
        .await;
    assert_eq!(failed_only.len(), 2, "{failed_only:?}");
}

/// A vault's `vaultUri` and an account's `primaryEndpoints.blob` name the server as it runs
/// now: after a restart on another port, reads (and a listing) point clients at the new one.
async fn data_plane_endpoints_follow_the_server(backend: Backend) {
    let server = TestServer::start(backend).await.unwrap();
    let sub = server.admin.subscription_id.to_string();
    let rg = format!("/subscriptions/{sub}/resourceGroups/endpoints");
    let vault = format!("{rg}/providers/Microsoft.KeyVault/vaults/ep-vault");
    let account = format!("{rg}/providers/Microsoft.Storage/storageAccounts/epstore");
    {
        let admin = Client::admin(&server).unwrap();
        admin
            .put_ok(&format!("{rg}?{V}"), &json!({"location": "local"}))
            .await
            .unwrap();
        admin
            .put_ok(
                &format!("{vault}?api-version=2023-07-01"),
                &json!({"location": "local", "properties": {"tenantId": server.admin.tenant_id, "sku": {"family": "A", "name": "standard"}}}),
            )
            .await
            .unwrap();
        admin
            .put_ok(
                &format!("{account}?api-version=2023-05-01"),
                &json!({"location": "local", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}),
            )
            .await
            .unwrap();
    }
    let old_port = server.addr.port();
    let server = server.restart().await.unwrap();
    let port = server.addr.port();
    assert_ne!(port, old_port, "the restarted server listens elsewhere");
    let admin = Client::admin(&server).unwrap();
    let read = |path: String| {
        let admin = &admin;
        async move {
            let reply = admin.arm(Method::GET, &path, None).await.unwrap();
            assert_eq!(reply.status, 200, "{}", reply.body);
            reply.body
        }
    };
    let v = read(format!("{vault}?api-version=2023-07-01")).await;
    assert_eq!(
        v["properties"]["vaultUri"],
        format!("https://ep-vault.vault.lanyard.localhost:{port}/")
    );
    let a = read(format!("{account}?api-version=2023-05-01")).await;
    assert_eq!(
        a["properties"]["primaryEndpoints"]["blob"],
        format!("https://epstore.blob.lanyard.localhost:{port}/")
    );
    let listed = read(format!(
        "{rg}/providers/Microsoft.Storage/storageAccounts?api-version=2023-05-01"
    ))
    .await;
    assert_eq!(
        listed["value"][0]["properties"]["primaryEndpoints"]["blob"],
        format!("https://epstore.blob.lanyard.localhost:{port}/")
    );
}
