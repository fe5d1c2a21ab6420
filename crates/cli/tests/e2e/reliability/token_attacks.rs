//! Token attacks at every plane (control plane, Key Vault, blob storage): a token for
//! another audience, from another tenant or issuer, expired, not yet valid, with a forged
//! signature, `alg: none`, HS256 keyed with our public key, signed by a key we never issued,
//! and the token of a principal deleted since: each is refused with 401 and the plane's own
//! error, while the same request with a good token succeeds.
//!
//! Claims are signed with the server's real key (read from its store and unsealed with its
//! key-encryption key), so a refusal is about the claim under test, not the signature.

use reqwest::Method;
use serde_json::json;

use super::kit::*;
use crate::support::{Backend, TestServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Plane {
    Arm,
    Vault,
    Blob,
}

/// What the refusal must say, beyond 401.
#[derive(Debug, Clone, Copy)]
enum Why {
    Audience,
    Tenant,
    Expired,
    Invalid,
    Revoked,
}

struct Stage {
    t: Target,
    rg: String,
    app: App,
    forger: Forger,
}

const VAULT: &str = "kvattacks";
const ACCOUNT: &str = "stattacks";

impl Stage {
    fn audience(plane: Plane) -> &'static str {
        match plane {
            Plane::Arm => "https://management.azure.com/",
            Plane::Vault => "https://vault.azure.net",
            Plane::Blob => "https://storage.azure.com",
        }
    }

    async fn probe(&self, plane: Plane, token: &str) -> Reply {
        let t = &self.t;
        let url = match plane {
            Plane::Arm => t.arm(&format!("{}?{RG_API}", self.rg)),
            Plane::Vault => t.vault(VAULT, &format!("/secrets/s1?{SECRETS_API}")),
            Plane::Blob => t.blob(ACCOUNT, "/box1/b1"),
        };
        call(&t.http, Method::GET, &url, bearer(token)).await
    }
}

/// `None` if `r` is the refusal `why` calls for at `plane`, else what is wrong with it.
fn wrong_refusal(plane: Plane, why: Why, r: &Reply) -> Option<String> {
    if r.status != 401 {
        return Some(format!("status {} (not 401): {}", r.status, r.text));
    }
    let challenge = r.header("www-authenticate").unwrap_or("");
    if !challenge.starts_with("Bearer") {
        return Some(format!("no Bearer challenge: {challenge:?}"));
    }
    let message = r.json["error"]["message"].as_str().unwrap_or("");
    let ok = match plane {
        Plane::Arm => {
            let code = r.code();
            match why {
                Why::Audience => code == "InvalidAuthenticationTokenAudience",
                Why::Tenant => code == "InvalidAuthenticationTokenTenant",
                Why::Expired => code == "ExpiredAuthenticationToken",
                Why::Invalid => code == "InvalidAuthenticationToken",
                Why::Revoked => code == "InvalidAuthenticationToken" && message.contains("revoked"),
            }
        }
        Plane::Vault => {
            r.code() == "Unauthorized"
                && challenge.contains("authorization=")
                && challenge.contains("resource=")
                && match why {
                    Why::Audience => message.contains("AKV10022"),
                    Why::Tenant => message.contains("not from tenant"),
                    Why::Expired => message.contains("expired"),
                    Why::Revoked => message.contains("revoked"),
                    Why::Invalid => message.starts_with("Token validation failed"),
                }
        }
        Plane::Blob => r.header("x-ms-error-code") == Some("InvalidAuthenticationInfo"),
    };
    (!ok).then(|| format!("not the {why:?} refusal: {}", r.text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_foreign_stale_and_revoked_tokens_get_401() {
    let server = TestServer::start(Backend::Sqlite).await.unwrap();
    let t = Target::of(&server);
    let arm = t.admin_token(ARM_SCOPE).await;
    let graph = t.admin_token(GRAPH_SCOPE).await;
    let admin = t.admin.object_id.to_string();
    let rg = format!("{}/resourceGroups/attacks", t.subscription());
    put_ok(
        &t,
        &arm,
        &format!("{rg}?{RG_API}"),
        &json!({"location": "local"}),
    )
    .await;
    let vault = format!("{rg}/providers/Microsoft.KeyVault/vaults/{VAULT}");
    put_ok(
        &t,
        &arm,
        &format!("{vault}?{KV_API}"),
        &json!({"location": "local", "properties": {"tenantId": t.tenant(),
            "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": true}}),
    )
    .await;
    let account = format!("{rg}/providers/Microsoft.Storage/storageAccounts/{ACCOUNT}");
    put_ok(
        &t,
        &arm,
        &format!("{account}?{ACCOUNT_API}"),
        &json!({"location": "local", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}),
    )
    .await;
    assign(&t, &arm, &vault, KV_SECRETS_OFFICER, &admin).await;
    assign(&t, &arm, &account, BLOB_CONTRIBUTOR, &admin).await;
    let kv = t.admin_token(VAULT_SCOPE).await;
    let st = t.admin_token(STORAGE_SCOPE).await;
    let r = call(
        &t.http,
        Method::PUT,
        &t.vault(VAULT, &format!("/secrets/s1?{SECRETS_API}")),
        bearer_json(&kv, &json!({"value": "v"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(
        &t.http,
        Method::PUT,
        &t.blob(ACCOUNT, "/box1?restype=container"),
        bearer(&st),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = call(
        &t.http,
        Method::PUT,
        &t.blob(ACCOUNT, "/box1/b1"),
        Req {
            token: Some(&st),
            body: Some((b"b1".to_vec(), "text/plain")),
            headers: vec![("x-ms-blob-type", "BlockBlob".into())],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);

    // The victim: an app allowed everywhere the probes go.
    let app = create_app(&t, &graph, "attacks-app").await;
    assign(&t, &arm, &rg, READER, &app.object_id).await;
    assign(&t, &arm, &vault, KV_SECRETS_USER, &app.object_id).await;
    assign(&t, &arm, &account, BLOB_READER, &app.object_id).await;
    let forger = Forger::load(
        &server.data_dir,
        server.database_url.as_deref(),
        t.admin.tenant_id,
    )
    .await;
    let s = Stage {
        t: t.clone(),
        rg,
        app,
        forger,
    };

    let planes = [Plane::Arm, Plane::Vault, Plane::Blob];
    let mut problems = Vec::new();
    let mut refused = 0;

    // Control: good tokens, real and forged with honest claims, work everywhere.
    let mut real = std::collections::BTreeMap::new();
    for plane in planes {
        let scope = format!("{}/.default", Stage::audience(plane).trim_end_matches('/'));
        let token = t.token(&s.app.client_id, &s.app.secret, &scope).await;
        let r = s.probe(plane, &token).await;
        assert_eq!(r.status, 200, "{plane:?} with a real token: {}", r.text);
        let honest = s.forger.sign(&s.forger.claims(
            &s.app.object_id,
            &s.app.client_id,
            Stage::audience(plane),
        ));
        let r = s.probe(plane, &honest).await;
        assert_eq!(
            r.status, 200,
            "{plane:?} with honest claims under the real key: {}",
            r.text
        );
        real.insert(plane, token);
    }

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let other_tenant = uuid::Uuid::new_v4();
    for plane in planes {
        let aud = Stage::audience(plane);
        let base = s.forger.claims(&s.app.object_id, &s.app.client_id, aud);
        let mut attacks: Vec<(&str, Why, String)> = Vec::new();

        // Another audience: a real token for another plane (and for Graph).
        let other = match plane {
            Plane::Arm => &real[&Plane::Vault],
            _ => &real[&Plane::Arm],
        };
        attacks.push((
            "a real token for another audience",
            Why::Audience,
            other.clone(),
        ));
        attacks.push(("a real token for Graph", Why::Audience, graph.clone()));
        let mut c = base.clone();
        c.aud = format!("{aud}.evil.example");
        attacks.push((
            "our key, another audience",
            Why::Audience,
            s.forger.sign(&c),
        ));

        // Another tenant, another issuer.
        let mut c = base.clone();
        c.tid = other_tenant.to_string();
        c.iss = lanyard_token::IssuerConfig::default().v1(other_tenant);
        attacks.push(("our key, another tenant", Why::Tenant, s.forger.sign(&c)));
        let mut c = base.clone();
        c.iss = lanyard_token::IssuerConfig::default().v1(other_tenant);
        attacks.push((
            "our key, our tenant, another tenant's issuer",
            Why::Tenant,
            s.forger.sign(&c),
        ));
        let mut c = base.clone();
        c.iss = format!("https://evil.example/{}/", s.forger.tenant);
        attacks.push(("our key, a foreign issuer", Why::Tenant, s.forger.sign(&c)));

        // Time.
        let mut c = base.clone();
        (c.iat, c.nbf, c.exp) = (now - 7200, now - 7200, now - 3600);
        attacks.push(("expired an hour ago", Why::Expired, s.forger.sign(&c)));
        let mut c = base.clone();
        (c.iat, c.nbf, c.exp) = (now, now + 3600, now + 7200);
        attacks.push(("not valid for an hour", Why::Invalid, s.forger.sign(&c)));

        // Signatures.
        let good = s.forger.sign(&base);
        let (header, _) = good.split_once('.').unwrap();
        let signature = good.rsplit('.').next().unwrap();
        let mut c = base.clone();
        c.oid = admin.clone();
        c.sub = admin.clone();
        let payload = b64url(&serde_json::to_vec(&c).unwrap());
        attacks.push((
            "the administrator's oid under another token's signature",
            Why::Invalid,
            format!("{header}.{payload}.{signature}"),
        ));
        let kid = s.forger.kid();
        let stranger = lanyard_token::SigningKey::generate(now).unwrap();
        attacks.push((
            "signed by another key under our kid",
            Why::Invalid,
            sign_with(
                &stranger,
                &json!({"typ": "JWT", "alg": "RS256", "kid": kid, "x5t": kid}),
                &c,
            ),
        ));
        attacks.push((
            "signed by a key we never issued",
            Why::Invalid,
            sign_with(&stranger, &json!({"typ": "JWT", "alg": "RS256", "kid": "never-issued", "x5t": "never-issued"}), &base),
        ));
        let claims = b64url(&serde_json::to_vec(&base).unwrap());
        let none =
            b64url(&serde_json::to_vec(&json!({"typ": "JWT", "alg": "none", "kid": kid})).unwrap());
        attacks.push((
            "alg none, empty signature",
            Why::Invalid,
            format!("{none}.{claims}."),
        ));
        attacks.push((
            "alg none, some signature",
            Why::Invalid,
            format!("{none}.{claims}.AAAA"),
        ));
        let none_upper =
            b64url(&serde_json::to_vec(&json!({"typ": "JWT", "alg": "None", "kid": kid})).unwrap());
        attacks.push((
            "alg None",
            Why::Invalid,
            format!("{none_upper}.{claims}.AAAA"),
        ));
        for (what, key) in public_key_forms(&t).await {
            let header = b64url(
                &serde_json::to_vec(&json!({"typ": "JWT", "alg": "HS256", "kid": kid})).unwrap(),
            );
            let input = format!("{header}.{claims}");
            let tag = ring::hmac::sign(
                &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
                input.as_bytes(),
            );
            attacks.push((
                what,
                Why::Invalid,
                format!("{input}.{}", b64url(tag.as_ref())),
            ));
        }
        attacks.push(("not a JWT", Why::Invalid, "not-a-token".into()));

        for (what, why, token) in &attacks {
            let r = s.probe(plane, token).await;
            refused += 1;
            if let Some(e) = wrong_refusal(plane, *why, &r) {
                problems.push(format!("{plane:?}, {what}: {e}"));
            }
        }
    }

    // A principal deleted since its tokens were issued: refused at once, everywhere.
    let r = call(
        &t.http,
        Method::DELETE,
        &t.arm(&format!("/v1.0/applications/{}", s.app.id)),
        bearer(&graph),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    for plane in planes {
        let r = s.probe(plane, &real[&plane]).await;
        refused += 1;
        if let Some(e) = wrong_refusal(plane, Why::Revoked, &r) {
            problems.push(format!("{plane:?}, a deleted principal's token: {e}"));
        }
    }
    // And its secret no longer gets a new one.
    let (status, body) = t
        .try_token(&s.app.client_id, &s.app.secret, ARM_SCOPE)
        .await;
    if status == 200 {
        problems.push(format!("a deleted app still gets tokens: {body}"));
    }

    println!(
        "token_attacks: {refused} attacks on 3 planes, {} answered wrongly",
        problems.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A compact JWS of `claims` under `header`, signed (RS256) by `key`.
fn sign_with(
    key: &lanyard_token::SigningKey,
    header: &serde_json::Value,
    claims: &impl serde::Serialize,
) -> String {
    let input = format!(
        "{}.{}",
        b64url(&serde_json::to_vec(header).unwrap()),
        b64url(&serde_json::to_vec(claims).unwrap())
    );
    let signature = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64url(&signature))
}

/// The published public key in the forms an HS256 confusion attack would use as the HMAC key.
async fn public_key_forms(t: &Target) -> Vec<(&'static str, Vec<u8>)> {
    use base64::Engine;
    let r = call(
        &t.http,
        Method::GET,
        &t.arm("/common/discovery/keys"),
        Req::default(),
    )
    .await;
    let jwk = &r.json["keys"][0];
    let cert_b64 = jwk["x5c"][0].as_str().unwrap().to_string();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&cert_b64)
        .unwrap();
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in cert_b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    vec![
        ("HS256 keyed with our certificate (DER)", der),
        ("HS256 keyed with our certificate (PEM)", pem.into_bytes()),
        (
            "HS256 keyed with our modulus",
            b64url_decode(jwk["n"].as_str().unwrap()),
        ),
        ("HS256 keyed with our JWK", jwk.to_string().into_bytes()),
    ]
}
