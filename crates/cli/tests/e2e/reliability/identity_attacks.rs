//! Identity endpoint attacks that `identity.rs` does not already cover, with the tokens
//! issued counted in the sign-in log (`GET /lanyard/signins`): Metadata header variants,
//! another session's identity header (both ways, and near misses of the right one), the
//! legacy protocol's header confusion, identities attached to another VM asked for by every
//! selector on both protocols, two selectors at once, an ended session's IMDS listener, a
//! session whose resource was deleted or whose system identity was disabled, odd paths and
//! methods, and a session that expired on the server's clock. Every answer is a refusal
//! without a token, and the sign-in log shows no token issued but the control's.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::kit::*;
use crate::support::{Backend, TestServer};

/// A raw request to an identity endpoint: (status, body), or `None` when nothing answers.
async fn ask(method: Method, url: &str, headers: &[(&str, &str)]) -> Option<(u16, Value)> {
    let mut r = reqwest::Client::new().request(method, url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.timeout(Duration::from_secs(10)).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.unwrap_or(Value::Null)))
}

/// What an attack is called, its method, URL and headers.
type Attack = (String, Method, String, Vec<(&'static str, String)>);

const IMDS_Q: &str = "api-version=2018-02-01&resource=https://vault.azure.net";
const APP_Q: &str = "api-version=2019-08-01&resource=https://vault.azure.net";

/// Sign-in records of the identity endpoints from `since` on: (successes, failures).
async fn signins(t: &Target, token: &str, since: &str) -> (Vec<Value>, Vec<Value>) {
    let r = call(
        &t.http,
        Method::GET,
        &t.arm(&format!(
            "/lanyard/signins?from={}&$top=1000",
            urlencoding::encode(since)
        )),
        bearer(token),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let entries: Vec<Value> = r.json["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "imds" || e["source"] == "app_service")
        .cloned()
        .collect();
    entries.into_iter().partition(|e| e["result"] == "success")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_endpoint_attacks_issue_no_tokens() {
    let server = TestServer::start(Backend::Sqlite).await.unwrap();
    let t = Target::of(&server);
    let arm = t.admin_token(ARM_SCOPE).await;
    let rg = format!("{}/resourceGroups/imds", t.subscription());
    put_ok(
        &t,
        &arm,
        &format!("{rg}?{RG_API}"),
        &json!({"location": "local"}),
    )
    .await;
    let mut uai = Vec::new();
    for name in ["ua1", "ua2"] {
        let id = format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}");
        uai.push(
            put_ok(
                &t,
                &arm,
                &format!("{id}?{UAI_API}"),
                &json!({"location": "local"}),
            )
            .await,
        );
    }
    let vm = |name: &str| format!("{rg}/providers/Microsoft.Compute/virtualMachines/{name}");
    let with = |ua: &Value| {
        json!({"location": "local", "identity": {"type": "SystemAssigned, UserAssigned",
            "userAssignedIdentities": {ua["id"].as_str().unwrap(): {}}}})
    };
    put_ok(&t, &arm, &format!("{}?{VM_API}", vm("vm1")), &with(&uai[0])).await;
    let vm2 = put_ok(&t, &arm, &format!("{}?{VM_API}", vm("vm2")), &with(&uai[1])).await;
    for name in ["vm3", "vm4"] {
        put_ok(
            &t,
            &arm,
            &format!("{}?{VM_API}", vm(name)),
            &json!({"location": "local", "identity": {"type": "SystemAssigned"}}),
        )
        .await;
    }
    let s1 = open_session(&t, &arm, &vm("vm1")).await;
    let s2 = open_session(&t, &arm, &vm("vm2")).await;
    let s3 = open_session(&t, &arm, &vm("vm3")).await;
    let s4 = open_session(&t, &arm, &vm("vm4")).await;
    let s5 = open_session(&t, &arm, &vm("vm1")).await;

    // The happy paths work, so each refusal below is about what it changes. They are minted
    // (and logged) before the attack window opens.
    for s in [&s1, &s2, &s3, &s4, &s5] {
        let (status, body) = ask(
            Method::GET,
            &format!("{}?{IMDS_Q}", s.imds),
            &[("Metadata", "true")],
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let (status, body) = ask(
            Method::GET,
            &format!("{}?{APP_Q}", s.app),
            &[("X-IDENTITY-HEADER", &s.header)],
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let since = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();

    let ua2 = &uai[1];
    let ua2_client = ua2["properties"]["clientId"].as_str().unwrap();
    let ua2_principal = ua2["properties"]["principalId"].as_str().unwrap();
    let ua2_id = ua2["id"].as_str().unwrap();
    let ua1_client = uai[0]["properties"]["clientId"].as_str().unwrap();
    let vm2_system = vm2["identity"]["principalId"].as_str().unwrap();

    // (what, method, url, headers); every one must be refused without a token.
    let mut attacks: Vec<Attack> = Vec::new();
    let imds = |q: &str| format!("{}?{q}", s1.imds);
    let app = |q: &str| format!("{}?{q}", s1.app);
    for value in ["false", "", "1", "yes", "true, true"] {
        attacks.push((
            format!("Metadata: {value:?}"),
            Method::GET,
            imds(IMDS_Q),
            vec![("Metadata", value.to_string())],
        ));
    }
    attacks.push((
        "X-Forwarded-For empty".into(),
        Method::GET,
        imds(IMDS_Q),
        vec![
            ("Metadata", "true".into()),
            ("X-Forwarded-For", String::new()),
        ],
    ));
    attacks.push((
        "X-Forwarded-For on the legacy protocol".into(),
        Method::GET,
        app("api-version=2017-09-01&resource=https://vault.azure.net"),
        vec![
            ("secret", s1.header.clone()),
            ("X-Forwarded-For", "10.1.1.1".into()),
        ],
    ));
    // Identity headers.
    attacks.push((
        "another session's header".into(),
        Method::GET,
        app(APP_Q),
        vec![("X-IDENTITY-HEADER", s2.header.clone())],
    ));
    attacks.push((
        "this header at another session".into(),
        Method::GET,
        format!("{}?{APP_Q}", s2.app),
        vec![("X-IDENTITY-HEADER", s1.header.clone())],
    ));
    attacks.push((
        "a header for the same VM from another session".into(),
        Method::GET,
        app(APP_Q),
        vec![("X-IDENTITY-HEADER", s5.header.clone())],
    ));
    attacks.push((
        "the header plus one character".into(),
        Method::GET,
        app(APP_Q),
        vec![("X-IDENTITY-HEADER", format!("{}x", s1.header))],
    ));
    attacks.push((
        "the header less one character".into(),
        Method::GET,
        app(APP_Q),
        vec![(
            "X-IDENTITY-HEADER",
            s1.header[..s1.header.len() - 1].to_string(),
        )],
    ));
    attacks.push(
        (
            "the header upper-cased".into(),
            Method::GET,
            app(APP_Q),
            vec![("X-IDENTITY-HEADER", s1.header.to_ascii_uppercase())],
        )
            .clone(),
    );
    attacks.push((
        "the legacy protocol with X-IDENTITY-HEADER".into(),
        Method::GET,
        app("api-version=2017-09-01&resource=https://vault.azure.net"),
        vec![("X-IDENTITY-HEADER", s1.header.clone())],
    ));
    attacks.push((
        "the 2019 protocol with the legacy `secret` header".into(),
        Method::GET,
        app(APP_Q),
        vec![("secret", s1.header.clone())],
    ));
    attacks.push((
        "the legacy protocol with another session's secret".into(),
        Method::GET,
        app("api-version=2017-09-01&resource=https://vault.azure.net"),
        vec![("secret", s2.header.clone())],
    ));
    attacks.push((
        "Metadata instead of a header".into(),
        Method::GET,
        app(APP_Q),
        vec![("Metadata", "true".into())],
    ));
    // Identities of another VM, by every selector, on both protocols.
    for (sel, value) in [
        ("client_id", ua2_client),
        ("object_id", ua2_principal),
        ("principal_id", ua2_principal),
        ("msi_res_id", ua2_id),
        ("mi_res_id", ua2_id),
        ("object_id", vm2_system),
    ] {
        let q = format!("{IMDS_Q}&{sel}={}", urlencoding::encode(value));
        attacks.push((
            format!("IMDS, vm2's identity by {sel}"),
            Method::GET,
            imds(&q),
            vec![("Metadata", "true".into())],
        ));
        let q = format!("{APP_Q}&{sel}={}", urlencoding::encode(value));
        attacks.push((
            format!("App Service, vm2's identity by {sel}"),
            Method::GET,
            app(&q),
            vec![("X-IDENTITY-HEADER", s1.header.clone())],
        ));
    }
    attacks.push((
        "msi_res_id upper-cased, of vm2's identity".into(),
        Method::GET,
        imds(&format!(
            "{IMDS_Q}&msi_res_id={}",
            urlencoding::encode(&ua2_id.to_ascii_uppercase())
        )),
        vec![("Metadata", "true".into())],
    ));
    attacks.push((
        "legacy clientid of vm2's identity".into(),
        Method::GET,
        app(&format!(
            "api-version=2017-09-01&resource=https://vault.azure.net&clientid={ua2_client}"
        )),
        vec![("secret", s1.header.clone())],
    ));
    attacks.push((
        "two selectors, one attached and one not".into(),
        Method::GET,
        imds(&format!(
            "{IMDS_Q}&client_id={ua1_client}&mi_res_id={}",
            urlencoding::encode(ua2_id)
        )),
        vec![("Metadata", "true".into())],
    ));
    attacks.push((
        "a selector repeated in another case".into(),
        Method::GET,
        imds(&format!(
            "{IMDS_Q}&client_id={ua1_client}&CLIENT_ID={ua2_client}"
        )),
        vec![("Metadata", "true".into())],
    ));
    attacks.push((
        "no api-version".into(),
        Method::GET,
        imds("resource=https://vault.azure.net"),
        vec![("Metadata", "true".into())],
    ));
    attacks.push((
        "an api-version before IMDS had identities".into(),
        Method::GET,
        imds("api-version=2017-04-02&resource=https://vault.azure.net"),
        vec![("Metadata", "true".into())],
    ));
    attacks.push((
        "a resource with a newline".into(),
        Method::GET,
        imds("api-version=2018-02-01&resource=https://vault.azure.net%0A"),
        vec![("Metadata", "true".into())],
    ));
    // Paths and methods.
    let base = s1
        .imds
        .trim_end_matches("/metadata/identity/oauth2/token")
        .to_string();
    for path in [
        "/metadata/identity/oauth2/token/",
        "/METADATA/identity/oauth2/token",
        "/metadata/identity/oauth2/token%2F",
        "/metadata/identity/oauth2//token",
        "/",
    ] {
        attacks.push((
            format!("path {path}"),
            Method::GET,
            format!("{base}{path}?{IMDS_Q}"),
            vec![("Metadata", "true".into())],
        ));
    }
    attacks.push((
        "POST".into(),
        Method::POST,
        imds(IMDS_Q),
        vec![("Metadata", "true".into())],
    ));
    attacks.push((
        "PUT on the App Service endpoint".into(),
        Method::PUT,
        app(APP_Q),
        vec![("X-IDENTITY-HEADER", s1.header.clone())],
    ));

    // Sessions whose resource lost its identity, and an ended session's IMDS listener.
    let r = call(
        &t.http,
        Method::DELETE,
        &t.arm(&format!("{}?{VM_API}", vm("vm3"))),
        bearer(&arm),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(
        &t.http,
        Method::PATCH,
        &t.arm(&format!("{}?{VM_API}", vm("vm4"))),
        bearer_json(&arm, &json!({"identity": {"type": "None"}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for (what, s) in [
        ("deleted VM", &s3),
        ("VM whose system identity was disabled", &s4),
    ] {
        attacks.push((
            format!("IMDS of a {what}"),
            Method::GET,
            format!("{}?{IMDS_Q}", s.imds),
            vec![("Metadata", "true".into())],
        ));
        attacks.push((
            format!("App Service of a {what}"),
            Method::GET,
            format!("{}?{APP_Q}", s.app),
            vec![("X-IDENTITY-HEADER", s.header.clone())],
        ));
        attacks.push((
            format!("IMDS of a {what}, new audience"),
            Method::GET,
            format!(
                "{}?api-version=2018-02-01&resource=https://storage.azure.com",
                s.imds
            ),
            vec![("Metadata", "true".into())],
        ));
    }
    let r = call(
        &t.http,
        Method::DELETE,
        &t.arm(&format!("/lanyard/sessions/{}", s5.id)),
        bearer(&arm),
    )
    .await;
    assert_eq!(r.status, 204);
    attacks.push((
        "an ended session's IMDS listener".into(),
        Method::GET,
        format!("{}?{IMDS_Q}", s5.imds),
        vec![("Metadata", "true".into())],
    ));
    attacks.push((
        "an ended session's IMDS listener, new audience".into(),
        Method::GET,
        format!(
            "{}?api-version=2018-02-01&resource=https://storage.azure.com",
            s5.imds
        ),
        vec![("Metadata", "true".into())],
    ));
    attacks.push((
        "an ended session's header".into(),
        Method::GET,
        format!("{}?{APP_Q}", s5.app),
        vec![("X-IDENTITY-HEADER", s5.header.clone())],
    ));

    let mut problems = Vec::new();
    let mut answered = 0;
    // Refusals by the token handlers (not the router's 404/405), each of which is logged.
    let mut refusals = 0;
    for (what, method, url, headers) in &attacks {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match ask(method.clone(), url, &hs).await {
            None => {} // nothing listens: no token either
            Some((status, body)) => {
                answered += 1;
                if (200..300).contains(&status) || body.get("access_token").is_some() {
                    problems.push(format!("{what}: {status} {body}"));
                } else if status >= 500 {
                    problems.push(format!("{what}: a server error {status} {body}"));
                } else if status != 404 && status != 405 && body["error"].as_str().is_none() {
                    problems.push(format!(
                        "{what}: {status} not in the identity endpoints' shape: {body}"
                    ));
                }
                if status != 404 && status != 405 {
                    refusals += 1;
                }
            }
        }
    }

    // A control: one new token, which the log must show as the only success.
    let (status, _) = ask(
        Method::GET,
        &format!(
            "{}?api-version=2018-02-01&resource=https://storage.azure.com",
            s1.imds
        ),
        &[("Metadata", "true")],
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    for _ in 0..100 {
        let (successes, failures) = signins(&t, &arm, &since).await;
        if !successes.is_empty() && failures.len() >= refusals {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give the background writer a moment to flush any stragglers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (successes, failures) = signins(&t, &arm, &since).await;
    if successes.len() != 1 {
        problems.push(format!(
            "the sign-in log shows {} tokens issued during the attacks (1 expected, the control): {successes:?}",
            successes.len()
        ));
    }
    if failures.len() < refusals {
        problems.push(format!(
            "the sign-in log recorded {} of {refusals} refusals",
            failures.len()
        ));
    }
    println!(
        "identity_attacks: {} attacks ({answered} answered), 0 tokens expected; sign-in log: {} issued (the control), {} refusals recorded",
        attacks.len(),
        successes.len(),
        failures.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A session stops issuing tokens when it expires on the server's clock, on both protocols,
/// even for a token it had cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_issues_no_tokens() {
    let clock = Arc::new(lanyard_domain::ManualClock::at_unix(
        time::OffsetDateTime::now_utc().unix_timestamp(),
    ));
    let server = TestServer::start_with_clock(Backend::Sqlite, clock.clone())
        .await
        .unwrap();
    let t = Target::of(&server);
    let arm = t.admin_token(ARM_SCOPE).await;
    let rg = format!("{}/resourceGroups/expiry", t.subscription());
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
    let s = open_session(&t, &arm, &vm).await;
    let (status, _) = ask(
        Method::GET,
        &format!("{}?{IMDS_Q}", s.imds),
        &[("Metadata", "true")],
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    // Past the session's 90 s without renewal.
    clock.advance(Duration::from_secs(91));
    for (what, url, header) in [
        (
            "IMDS, cached audience",
            format!("{}?{IMDS_Q}", s.imds),
            ("Metadata", "true".to_string()),
        ),
        (
            "IMDS, new audience",
            format!(
                "{}?api-version=2018-02-01&resource=https://storage.azure.com",
                s.imds
            ),
            ("Metadata", "true".to_string()),
        ),
        (
            "App Service",
            format!("{}?{APP_Q}", s.app),
            ("X-IDENTITY-HEADER", s.header.clone()),
        ),
    ] {
        if let Some((status, body)) = ask(Method::GET, &url, &[(header.0, header.1.as_str())]).await
        {
            assert!(
                !(200..300).contains(&status) && body.get("access_token").is_none(),
                "{what}: an expired session issued a token: {status} {body}"
            );
        }
    }
    // Renewing an expired session does not bring it back (whether or not the reaper, which
    // runs every 5 s, has already ended it).
    let r = call(
        &t.http,
        Method::POST,
        &t.arm(&format!("/lanyard/sessions/{}/renew", s.id)),
        bearer(&arm),
    )
    .await;
    assert_eq!(r.status, 404, "renewing an expired session: {}", r.text);
    if let Some((status, body)) = ask(
        Method::GET,
        &format!("{}?{IMDS_Q}", s.imds),
        &[("Metadata", "true")],
    )
    .await
    {
        assert_ne!(
            status, 200,
            "a renewed expired session issued a token: {body}"
        );
    }
    println!("identity_attacks: an expired session refused on both protocols");
}
