//! Garbage bodies at every write endpoint of a live server: the control plane (groups, VMs,
//! identities, federated credentials, role assignments and definitions, vaults and their
//! access policies, storage accounts, sessions, access explanations), Graph, the token
//! endpoints (forms), Key Vault and blob block lists. Two kinds of body, from a seed:
//!
//! - broken: not JSON (or not a form, or not XML) at all, truncated, bytes flipped, invalid
//!   UTF-8, nesting deeper than any parser allows, trailing junk, the wrong top-level type,
//!   over the size limit: every answer must be a 4xx in the plane's error shape;
//! - mutated: a valid body with a field deleted, added, or replaced by a value of another type
//!   or an extreme one: any 2xx or 4xx (in the plane's shape), never a 5xx.
//!
//! Afterwards the server still answers a good request. The pure parsers behind these
//! endpoints are also fuzzed with cargo-fuzz (`fuzz/`).

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use super::kit::*;
use crate::support::{Backend, TestServer};

const BROKEN_PER_ENDPOINT: usize = 15;
const MUTATED_PER_ENDPOINT: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Arm,
    Entra,
    KeyVault,
    Blob,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Form,
    Xml,
}

struct Endpoint {
    name: String,
    method: Method,
    /// `{n}` becomes a fresh number, so creations do not collide.
    url: String,
    token: Option<String>,
    dialect: Dialect,
    format: Format,
    /// A body the endpoint accepts.
    template: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bodies_get_4xx_in_the_planes_shape() {
    let seed = seed("garbage");
    let mut rng = Rng::new(seed);
    let server = TestServer::start(Backend::Sqlite).await.unwrap();
    let t = Target::of(&server);
    let endpoints = stage(&t).await;
    let mut problems = Vec::new();
    let mut sent = 0;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for (i, e) in endpoints.iter().enumerate() {
        // The template works: the endpoint is really reached.
        let r = send(&t, e, e.template.as_bytes(), &format!("ok{i}"))
            .await
            .unwrap();
        assert!(
            (200..300).contains(&r.status),
            "{}: the template itself fails with {}: {}",
            e.name,
            r.status,
            r.text
        );
        for k in 0..BROKEN_PER_ENDPOINT + MUTATED_PER_ENDPOINT {
            let broken = k < BROKEN_PER_ENDPOINT;
            let body = if broken {
                break_body(&mut rng, e, k)
            } else {
                mutate_body(&mut rng, e)
            };
            let r = match send(&t, e, &body, &format!("g{i}x{k}")).await {
                Ok(r) => r,
                // A body over the plane's limit may be answered before it is all sent, and
                // the connection closed under the rest: a refusal, not a failure.
                Err(_) if body.len() > 1024 * 1024 => {
                    sent += 1;
                    *statuses.entry(0).or_default() += 1;
                    continue;
                }
                Err(err) => {
                    problems.push(format!("{}: no answer: {err:?}", e.name));
                    continue;
                }
            };
            sent += 1;
            *statuses.entry(r.status).or_default() += 1;
            let shown: String = String::from_utf8_lossy(&body[..body.len().min(160)]).into();
            if r.status >= 500 {
                problems.push(format!(
                    "{}: {} for {shown:?}: {}",
                    e.name, r.status, r.text
                ));
            } else if broken && !(400..500).contains(&r.status) {
                problems.push(format!(
                    "{}: broken body answered {} ({shown:?}): {}",
                    e.name, r.status, r.text
                ));
            } else if (400..500).contains(&r.status) && !shaped(e.dialect, &r) {
                problems.push(format!(
                    "{}: {} not in the plane's shape for {shown:?}: {}",
                    e.name, r.status, r.text
                ));
            }
        }
    }
    // Still healthy.
    let token = t.admin_token(ARM_SCOPE).await;
    let r = call(
        &t.http,
        Method::GET,
        &t.arm(&format!("{}?api-version=2022-12-01", t.subscription())),
        bearer(&token),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    println!(
        "garbage: {sent} bodies to {} endpoints, answers by status (0: connection closed during an oversized body) {statuses:?}, {} problems",
        endpoints.len(),
        problems.len()
    );
    assert!(problems.is_empty(), "seed {seed}:\n{}", problems.join("\n"));
}

async fn send(t: &Target, e: &Endpoint, body: &[u8], n: &str) -> Result<Reply, reqwest::Error> {
    let fresh = |s: &str| {
        s.replace("{n}", n)
            .replace("{uuid}", &Uuid::new_v4().to_string())
    };
    let body = match std::str::from_utf8(body) {
        Ok(text) => fresh(text).into_bytes(),
        Err(_) => body.to_vec(),
    };
    let content_type = match e.format {
        Format::Json => "application/json",
        Format::Form => "application/x-www-form-urlencoded",
        Format::Xml => "application/xml",
    };
    let req = Req {
        token: e.token.as_deref(),
        body: Some((body, content_type)),
        headers: vec![("x-ms-version", "2023-11-03".to_string())],
        ..Default::default()
    };
    try_call(&t.http, e.method.clone(), &fresh(&e.url), req).await
}

fn shaped(dialect: Dialect, r: &Reply) -> bool {
    match dialect {
        Dialect::Arm | Dialect::KeyVault => {
            r.json["error"]["code"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
                && r.json["error"]["message"].is_string()
        }
        Dialect::Entra => {
            r.json["error"].as_str().is_some_and(|c| !c.is_empty())
                && r.json["error_description"].is_string()
                && r.json["error_codes"].is_array()
        }
        Dialect::Blob => {
            r.header("x-ms-error-code").is_some_and(|c| !c.is_empty())
                && r.text.contains("<Error><Code>")
        }
    }
}

/// A body no parser should accept. `k` walks through the kinds so each endpoint gets all.
fn break_body(rng: &mut Rng, e: &Endpoint, k: usize) -> Vec<u8> {
    let template = &e.template;
    let cut = |rng: &mut Rng| {
        let at = 1 + rng.below(template.len().saturating_sub(2).max(1));
        let mut at = at.min(template.len() - 1);
        while !template.is_char_boundary(at) {
            at -= 1;
        }
        template[..at].to_string()
    };
    if k % 15 == 14 {
        // Invalid UTF-8 where text belongs.
        let mut bytes = e.template.as_bytes().to_vec();
        let at = rng.below(bytes.len().max(1));
        bytes.splice(at..at, [0xff, 0xfe, 0xc3, 0x28]);
        return bytes;
    }
    let text: String = match (e.format, k % 15) {
        (_, 0) => {
            let len = rng.below(40) + 1;
            rng.word(len) + "\u{1}\u{7f}"
        }
        (Format::Json, 1) => cut(rng),
        (Format::Json, 2) => format!("{template}}}junk"),
        (Format::Json, 3) => format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        (Format::Json, 4) => format!("{}1{}", "{\"a\":".repeat(600), "}".repeat(600)),
        (Format::Json, 5) => "null".into(),
        (Format::Json, 6) => "[]".into(),
        (Format::Json, 7) => "\"just a string\"".into(),
        (Format::Json, 8) => "12345678901234567890123456789e999999".into(),
        (Format::Json, 9) => template.replacen('"', "'", 2),
        (Format::Json, 10) => format!("\u{feff}{}", cut(rng)),
        (Format::Json, 11) => template.replacen(':', "", 1),
        (Format::Json, 12) => format!("{{\"a\": \"{}\"", "x".repeat(5 * 1024 * 1024)),
        (Format::Json, _) => "{\"a\": NaN, \"b\": undefined}".into(),
        (Format::Form, 1) => "grant_type=client_credentials&grant_type=client_credentials".into(),
        (Format::Form, 2) => format!("{template}&client_id=again"),
        (Format::Form, 3) => "%ZZ%%%=&&&==".into(),
        (Format::Form, 4) => "grant_type=password&username=u&password=p".into(),
        (Format::Form, 5) => format!("grant_type=client_credentials&client_id={}", "a".repeat(100_000)),
        (Format::Form, 6) => "grant_type=client_credentials&client_id=x&client_secret=y&scope=a%0Ab/.default".into(),
        (Format::Form, 7) => String::new(),
        (Format::Form, 8) => format!("{}=1", "k".repeat(70_000)),
        (Format::Form, 9) => "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=a.b.c&client_id=x&scope=https%3A%2F%2Fvault.azure.net%2F.default".into(),
        (Format::Form, 10) => template.replace("client_credentials", "authorization_code"),
        (Format::Form, 11) => template.replace("client_secret=", "client_secret=wrong"),
        (Format::Form, 12) => "grant_type=client_credentials&client_id=00000000-0000-0000-0000-000000000000&client_secret=x&scope=x".into(),
        (Format::Form, _) => "\u{0}\u{0}\u{0}".into(),
        (Format::Xml, 1) => cut(rng),
        (Format::Xml, 2) => "<BlockList><Latest>notbase64!!</Latest></BlockList>".into(),
        (Format::Xml, 3) => format!("{}{}", "<a>".repeat(50_000), "</a>".repeat(50_000)),
        (Format::Xml, 4) => "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e \"e\">]><BlockList><Latest>&e;</Latest></BlockList>".into(),
        (Format::Xml, 5) => "<BlockList><Latest>YmxvY2s=</Latest>".into(),
        (Format::Xml, 6) => "<BlockList><Latest>bm9uZXhpc3RlbnQ=</Latest></BlockList>".into(),
        (Format::Xml, 7) => "{\"json\": true}".into(),
        (Format::Xml, 8) => "<BlockList><Latest>YmxvY2s=</Latest></BlockLis>".into(),
        (Format::Xml, 9) => format!("<BlockList>{}</BlockList>", "<Latest>YQ==</Latest>".repeat(60_000)),
        (Format::Xml, 10) => "<BlockList><Latest></Latest></BlockList>".into(),
        (Format::Xml, 11) => "<BlockList><Latest>YmxvY2s=</Latest><Latest>".into(),
        (Format::Xml, 12) => "<BlockList><Latest>YmxvY2s=<Latest></BlockList>".into(),
        (Format::Xml, _) => "<BlockList><Latest>\u{0}</Latest></BlockList>".into(),
    };
    text.into_bytes()
}

/// A valid body with one to three fields changed.
fn mutate_body(rng: &mut Rng, e: &Endpoint) -> Vec<u8> {
    let text = match e.format {
        Format::Json => {
            let mut v: Value = serde_json::from_str(&e.template).unwrap();
            for _ in 0..=rng.below(3) {
                mutate_value(rng, &mut v, 0);
            }
            v.to_string()
        }
        Format::Form => {
            let mut pairs: Vec<(String, String)> = form_urlencoded_pairs(&e.template);
            for _ in 0..=rng.below(2) {
                if pairs.is_empty() {
                    break;
                }
                let i = rng.below(pairs.len());
                match rng.below(3) {
                    0 => {
                        pairs.remove(i);
                    }
                    1 => pairs[i].1 = odd_string(rng),
                    _ => pairs.push((pairs[i].0.clone(), odd_string(rng))),
                }
            }
            pairs
                .iter()
                .map(|(k, v)| format!("{}={}", urlencoding::encode(k), urlencoding::encode(v)))
                .collect::<Vec<_>>()
                .join("&")
        }
        Format::Xml => {
            let ids = ["YmxvY2s=", "", "AAAA", "//8=", "YQ", "YmxvY2stMDAwMDE="];
            let tags = ["Latest", "Committed", "Uncommitted", "Other"];
            let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
            for _ in 0..rng.below(4) {
                let tag = rng.pick(&tags);
                out.push_str(&format!("<{tag}>{}</{tag}>", rng.pick(&ids)));
            }
            out.push_str("</BlockList>");
            out
        }
    };
    text.into_bytes()
}

fn form_urlencoded_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            (
                urlencoding::decode(k).unwrap().into_owned(),
                urlencoding::decode(v).unwrap().into_owned(),
            )
        })
        .collect()
}

fn odd_string(rng: &mut Rng) -> String {
    match rng.below(9) {
        0 => String::new(),
        1 => "x".repeat(rng.below(70_000)),
        2 => "\u{0}\u{1f}\u{7f}".into(),
        3 => "é漢字🙂\u{202e}".into(),
        4 => "/subscriptions/../../etc/passwd".into(),
        5 => Uuid::new_v4().to_string(),
        6 => "' OR 1=1 --".into(),
        7 => "https://evil.example/.default".into(),
        _ => rng.word(12),
    }
}

fn odd_value(rng: &mut Rng) -> Value {
    match rng.below(12) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(1e308),
        4 => json!(u64::MAX),
        5 => json!(i64::MIN),
        6 => json!(0.5),
        7 => json!([]),
        8 => json!({}),
        9 => json!([{"a": [null]}]),
        _ => Value::String(odd_string(rng)),
    }
}

fn mutate_value(rng: &mut Rng, v: &mut Value, depth: usize) {
    match v {
        Value::Object(m) if !m.is_empty() && depth < 6 => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let key = rng.pick(&keys).clone();
            match rng.below(5) {
                0 => {
                    m.remove(&key);
                }
                1 => {
                    m.insert(odd_string(rng).chars().take(64).collect(), odd_value(rng));
                }
                2 => {
                    m.insert(key, odd_value(rng));
                }
                _ => mutate_value(rng, m.get_mut(&key).unwrap(), depth + 1),
            }
        }
        Value::Array(a) if !a.is_empty() && depth < 6 => {
            let i = rng.below(a.len());
            if rng.chance(0.3) {
                a.push(odd_value(rng));
            } else {
                mutate_value(rng, &mut a[i], depth + 1);
            }
        }
        other => *other = odd_value(rng),
    }
}

/// Every write endpoint, with a body it accepts.
async fn stage(t: &Target) -> Vec<Endpoint> {
    let arm = t.admin_token(ARM_SCOPE).await;
    let graph = t.admin_token(GRAPH_SCOPE).await;
    let sub = t.subscription();
    let tenant = t.tenant();
    let rg = format!("{sub}/resourceGroups/garbage");
    put_ok(
        t,
        &arm,
        &format!("{rg}?{RG_API}"),
        &json!({"location": "local"}),
    )
    .await;
    let ua1 = format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ua1");
    put_ok(
        t,
        &arm,
        &format!("{ua1}?{UAI_API}"),
        &json!({"location": "local"}),
    )
    .await;
    let vm1 = format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm1");
    put_ok(
        t,
        &arm,
        &format!("{vm1}?{VM_API}"),
        &json!({"location": "local", "identity": {"type": "SystemAssigned"}}),
    )
    .await;
    let vault = format!("{rg}/providers/Microsoft.KeyVault/vaults/kvgarbage");
    let vault_body = json!({"location": "local", "properties": {"tenantId": tenant,
        "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": true}});
    put_ok(t, &arm, &format!("{vault}?{KV_API}"), &vault_body).await;
    assign(
        t,
        &arm,
        &vault,
        KV_SECRETS_OFFICER,
        &t.admin.object_id.to_string(),
    )
    .await;
    let account = format!("{rg}/providers/Microsoft.Storage/storageAccounts/stgarbage");
    put_ok(
        t,
        &arm,
        &format!("{account}?{ACCOUNT_API}"),
        &json!({"location": "local", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}),
    )
    .await;
    assign(
        t,
        &arm,
        &account,
        BLOB_CONTRIBUTOR,
        &t.admin.object_id.to_string(),
    )
    .await;
    let app = create_app(t, &graph, "garbage-app").await;
    let kv = t.admin_token(VAULT_SCOPE).await;
    let st = t.admin_token(STORAGE_SCOPE).await;
    let r = call(
        &t.http,
        Method::PUT,
        &t.vault("kvgarbage", &format!("/secrets/s1?{SECRETS_API}")),
        bearer_json(&kv, &json!({"value": "v"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let backup = call(
        &t.http,
        Method::POST,
        &t.vault("kvgarbage", &format!("/secrets/s1/backup?{SECRETS_API}")),
        bearer(&kv),
    )
    .await;
    assert_eq!(backup.status, 200, "{}", backup.text);
    let r = call(
        &t.http,
        Method::PUT,
        &t.blob("stgarbage", "/box1?restype=container"),
        bearer(&st),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let block_id = "YmxvY2s="; // "block"
    let r = call(
        &t.http,
        Method::PUT,
        &t.blob(
            "stgarbage",
            &format!(
                "/box1/blocks?comp=block&blockid={}",
                urlencoding::encode(block_id)
            ),
        ),
        Req {
            token: Some(&st),
            body: Some((b"data".to_vec(), "application/octet-stream")),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let arm_e = |name: &str, method: Method, url: String, template: Value| Endpoint {
        name: name.into(),
        method,
        url,
        token: Some(arm.clone()),
        dialect: Dialect::Arm,
        format: Format::Json,
        template: template.to_string(),
    };
    let graph_e = |name: &str, method: Method, path: String, template: Value| Endpoint {
        name: name.into(),
        method,
        url: t.arm(&path),
        token: Some(graph.clone()),
        dialect: Dialect::Arm,
        format: Format::Json,
        template: template.to_string(),
    };
    let reader = format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/{READER}");
    let mut out = vec![
        arm_e(
            "PUT group",
            Method::PUT,
            t.arm(&format!("{sub}/resourceGroups/g{{n}}?{RG_API}")),
            json!({"location": "local", "tags": {"a": "b"}, "managedBy": "x"}),
        ),
        arm_e(
            "PATCH group",
            Method::PATCH,
            t.arm(&format!("{rg}?{RG_API}")),
            json!({"tags": {"a": "b"}}),
        ),
        arm_e(
            "PUT VM",
            Method::PUT,
            t.arm(&format!(
                "{rg}/providers/Microsoft.Compute/virtualMachines/vm{{n}}?{VM_API}"
            )),
            json!({"location": "local", "tags": {"a": "b"}, "identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {&ua1: {}}}, "properties": {"hardwareProfile": {"vmSize": "Standard_B1s"}}}),
        ),
        arm_e(
            "PATCH VM",
            Method::PATCH,
            t.arm(&format!("{vm1}?{VM_API}")),
            json!({"tags": {"a": "b"}, "identity": {"type": "SystemAssigned"}}),
        ),
        arm_e(
            "PUT web app",
            Method::PUT,
            t.arm(&format!(
                "{rg}/providers/Microsoft.Web/sites/site{{n}}?api-version=2023-01-01"
            )),
            json!({"location": "local", "identity": {"type": "SystemAssigned"}}),
        ),
        arm_e(
            "PUT identity",
            Method::PUT,
            t.arm(&format!(
                "{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u{{n}}?{UAI_API}"
            )),
            json!({"location": "local", "tags": {"a": "b"}}),
        ),
        arm_e(
            "PATCH identity",
            Method::PATCH,
            t.arm(&format!("{ua1}?{UAI_API}")),
            json!({"tags": {"a": "b"}}),
        ),
        arm_e(
            "PUT federated credential",
            Method::PUT,
            t.arm(&format!(
                "{ua1}/federatedIdentityCredentials/fic{{n}}?{UAI_API}"
            )),
            json!({"properties": {"issuer": "https://issuer.example", "subject": "system:serviceaccount:ns:sa", "audiences": ["api://AzureADTokenExchange"]}}),
        ),
        arm_e(
            "PUT role assignment",
            Method::PUT,
            t.arm(&format!(
                "{rg}/providers/Microsoft.Authorization/roleAssignments/{{uuid}}?{RA_API}"
            )),
            json!({"properties": {"roleDefinitionId": reader, "principalId": app.object_id, "principalType": "ServicePrincipal", "description": "d"}}),
        ),
        arm_e(
            "PUT role definition",
            Method::PUT,
            t.arm(&format!(
                "{sub}/providers/Microsoft.Authorization/roleDefinitions/{{uuid}}?{RA_API}"
            )),
            json!({"properties": {"roleName": "custom {n}", "description": "d", "type": "CustomRole", "assignableScopes": [sub], "permissions": [{"actions": ["*/read"], "notActions": [], "dataActions": [], "notDataActions": []}]}}),
        ),
        arm_e(
            "PUT vault",
            Method::PUT,
            t.arm(&format!(
                "{rg}/providers/Microsoft.KeyVault/vaults/kv{{n}}?{KV_API}"
            )),
            vault_body.clone(),
        ),
        arm_e(
            "PATCH vault",
            Method::PATCH,
            t.arm(&format!("{vault}?{KV_API}")),
            json!({"tags": {"a": "b"}, "properties": {"enableRbacAuthorization": true}}),
        ),
        arm_e(
            "PUT vault access policy",
            Method::PUT,
            t.arm(&format!("{vault}/accessPolicies/add?{KV_API}")),
            json!({"properties": {"accessPolicies": [{"tenantId": tenant, "objectId": app.object_id, "permissions": {"secrets": ["get", "list"]}}]}}),
        ),
        arm_e(
            "PUT storage account",
            Method::PUT,
            t.arm(&format!(
                "{rg}/providers/Microsoft.Storage/storageAccounts/st{{n}}?{ACCOUNT_API}"
            )),
            json!({"location": "local", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}),
        ),
        arm_e(
            "POST session",
            Method::POST,
            t.arm("/lanyard/sessions"),
            json!({"resource": vm1}),
        ),
        arm_e(
            "POST access explain",
            Method::POST,
            t.arm("/lanyard/access/explain"),
            json!({"principalId": app.object_id, "action": "Microsoft.Compute/virtualMachines/read", "scope": rg, "dataAction": false}),
        ),
        graph_e(
            "POST application",
            Method::POST,
            "/v1.0/applications".into(),
            json!({"displayName": "app {n}", "api": {"requestedAccessTokenVersion": 2}}),
        ),
        graph_e(
            "PATCH application",
            Method::PATCH,
            format!("/v1.0/applications/{}", app.id),
            json!({"displayName": "renamed"}),
        ),
        graph_e(
            "POST addPassword",
            Method::POST,
            format!("/v1.0/applications/{}/addPassword", app.id),
            json!({"passwordCredential": {"displayName": "p"}}),
        ),
        graph_e(
            "POST federated credential",
            Method::POST,
            format!("/v1.0/applications/{}/federatedIdentityCredentials", app.id),
            json!({"name": "fic{n}", "issuer": "https://issuer.example", "subject": "sub{n}", "audiences": ["api://AzureADTokenExchange"]}),
        ),
    ];
    // Graph: a service principal for a fresh app each time is not possible with one template;
    // an existing app's id answers 409 or 201, both fine for mutations, and the template
    // is checked against a new app.
    let spare = call(
        &t.http,
        Method::POST,
        &t.arm("/v1.0/applications"),
        bearer_json(&graph, &json!({"displayName": "spare"})),
    )
    .await;
    assert_eq!(spare.status, 201, "{}", spare.text);
    out.push(graph_e(
        "POST service principal",
        Method::POST,
        "/v1.0/servicePrincipals".into(),
        json!({"appId": spare.json["appId"]}),
    ));
    let form = |version: &str| {
        let scope = if version == "v2" {
            "scope=https%3A%2F%2Fvault.azure.net%2F.default"
        } else {
            "resource=https%3A%2F%2Fvault.azure.net"
        };
        format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&{scope}",
            urlencoding::encode(&app.client_id),
            urlencoding::encode(&app.secret)
        )
    };
    for (name, path, version) in [
        (
            "POST v2 token",
            format!("/{tenant}/oauth2/v2.0/token"),
            "v2",
        ),
        ("POST v1 token", format!("/{tenant}/oauth2/token"), "v1"),
    ] {
        out.push(Endpoint {
            name: name.into(),
            method: Method::POST,
            url: t.url(&format!("login.{DOMAIN}"), &path),
            token: None,
            dialect: Dialect::Entra,
            format: Format::Form,
            template: form(version),
        });
    }
    let kv_e = |name: &str, method: Method, path: &str, template: Value| Endpoint {
        name: name.into(),
        method,
        url: t.vault("kvgarbage", &format!("{path}?{SECRETS_API}")),
        token: Some(kv.clone()),
        dialect: Dialect::KeyVault,
        format: Format::Json,
        template: template.to_string(),
    };
    out.push(kv_e("PUT secret", Method::PUT, "/secrets/n{n}", json!({"value": "v", "contentType": "text/plain", "tags": {"a": "b"}, "attributes": {"enabled": true, "exp": 4102444800u64}})));
    out.push(kv_e(
        "PATCH secret",
        Method::PATCH,
        "/secrets/s1",
        json!({"contentType": "text/plain", "tags": {"a": "b"}, "attributes": {"enabled": true}}),
    ));
    // Restoring needs the name free: the mutations of this one are the point, the template
    // is checked after the secret is deleted and purged.
    out.push(kv_e(
        "POST restore",
        Method::POST,
        "/secrets/restore",
        json!({"value": backup.json["value"]}),
    ));
    out.push(Endpoint {
        name: "PUT block list".into(),
        method: Method::PUT,
        url: t.blob("stgarbage", "/box1/blocks{n}?comp=blocklist"),
        token: Some(st.clone()),
        dialect: Dialect::Blob,
        format: Format::Xml,
        template: String::new(),
    });
    // The block list needs its block staged under the blob it commits: stage it for each name.
    let last = out.len() - 1;
    out[last].url = t.blob("stgarbage", "/box1/blocks?comp=blocklist");
    out[last].template = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList><Latest>{block_id}</Latest></BlockList>");
    // Free the name `s1` so the restore template succeeds.
    let r = call(
        &t.http,
        Method::DELETE,
        &t.vault("kvgarbage", &format!("/secrets/s1?{SECRETS_API}")),
        bearer(&kv),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(
        &t.http,
        Method::DELETE,
        &t.vault("kvgarbage", &format!("/deletedsecrets/s1?{SECRETS_API}")),
        bearer(&kv),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // PATCH secret needs `s1`: point it at another secret.
    let r = call(
        &t.http,
        Method::PUT,
        &t.vault("kvgarbage", &format!("/secrets/s2?{SECRETS_API}")),
        bearer_json(&kv, &json!({"value": "v"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for e in out.iter_mut() {
        if e.name == "PATCH secret" {
            e.url = t.vault("kvgarbage", &format!("/secrets/s2?{SECRETS_API}"));
        }
    }
    out
}
