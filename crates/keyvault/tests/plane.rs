//! The data plane through its router, in process (`oneshot`, no socket): authentication,
//! RBAC and access policies, the secret life cycle, retention by the injected clock, at-rest
//! encryption, and malformed input answered with 4xx in Key Vault's error shape.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use lanyard_domain::{
    builtin, Clock, ManualClock, PrincipalType, ResourceId, RoleAssignment, Subscription,
    SubscriptionState, Tenant,
};
use lanyard_keyvault::errors::KvError;
use lanyard_keyvault::resolve::{ResolvedVault, VaultDirectory};
use lanyard_keyvault::vault::{validate_put, VaultContext, VAULT_TYPE};
use lanyard_platform::access::AccessRuntime;
use lanyard_platform::config::{Config, ConfigLayer};
use lanyard_platform::tokens::TokenRuntime;
use lanyard_platform::{AppState, Directory, Shared, VaultName};
use lanyard_storage::{Batch, Change, ResourceRecord};
use lanyard_token::{
    ClientAuthMethod, Kek, RotationPolicy, TokenPrincipal, TokenRequest, TokenVersion,
};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tower::ServiceExt;
use uuid::Uuid;

const START: i64 = 1_750_000_000;
const OWN_AUDIENCE: &str = "https://vault.lanyard.localhost:8443";
const DAY: u64 = 86_400;

struct Plane {
    state: AppState,
    router: Router,
    clock: ManualClock,
    tenant: Uuid,
    subscription: Uuid,
    _tmp: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    fn inner(&self) -> &str {
        self.body["error"]["innererror"]["code"]
            .as_str()
            .unwrap_or("")
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

impl Plane {
    async fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let store = lanyard_storage::open(tmp.path().join("lanyard.db").to_str().unwrap())
            .await
            .unwrap();
        let clock = ManualClock::at_unix(START);
        let tenant = Tenant {
            id: Uuid::new_v4(),
            display_name: "t".into(),
            default_domain: "lanyard.localhost".into(),
        };
        let subscription = Subscription {
            id: Uuid::new_v4(),
            tenant_id: tenant.id,
            display_name: "s".into(),
            state: SubscriptionState::Enabled,
        };
        store
            .commit(
                Batch::new()
                    .with(Change::PutTenant(tenant.clone()))
                    .with(Change::PutSubscription(subscription.clone())),
            )
            .await
            .unwrap();
        let shared_clock: lanyard_domain::SharedClock = Arc::new(clock.clone());
        let tokens = TokenRuntime::load(
            Arc::clone(&store),
            Kek::generate(),
            Arc::clone(&shared_clock),
            RotationPolicy::default(),
            3600,
            vec![tenant.id],
        )
        .await
        .unwrap();
        let access = AccessRuntime::load(store.as_ref()).await.unwrap();
        let config = Config::from_layer(ConfigLayer {
            data_dir: Some(tmp.path().to_path_buf()),
            port: Some(8443),
            domain: Some("lanyard.localhost".into()),
            ..Default::default()
        })
        .unwrap();
        let state = AppState::new(Shared {
            config,
            port: 8443,
            store,
            clock: shared_clock,
            directory: Directory {
                tenant: tenant.clone(),
                subscription: subscription.clone(),
                admin_object_id: Uuid::new_v4(),
                admin_client_id: Uuid::new_v4(),
            },
            tokens: Arc::new(tokens),
            access: Arc::new(access),
            generation: Default::default(),
        });
        Self {
            router: lanyard_keyvault::router(state.clone()),
            state,
            clock,
            tenant: tenant.id,
            subscription: subscription.id,
            _tmp: tmp,
        }
    }

    fn group(&self, subscription: Uuid) -> ResourceId {
        ResourceId::resource_group(&subscription.to_string(), "rg1")
    }

    /// Writes a vault resource the way the control plane does (through the same rules).
    async fn vault(&self, subscription: Uuid, name: &str, properties: Value) -> ResourceId {
        let (id, record) = self.vault_record(subscription, name, properties).await;
        self.state
            .commit(Batch::new().with(Change::PutResource(record)))
            .await
            .unwrap();
        id
    }

    /// Writes a vault resource straight to the store, as another server sharing the
    /// database would: this server's commit generation does not move.
    async fn vault_elsewhere(&self, subscription: Uuid, name: &str, properties: Value) {
        let (_, record) = self.vault_record(subscription, name, properties).await;
        self.state
            .store
            .commit(Batch::new().with(Change::PutResource(record)))
            .await
            .unwrap();
    }

    async fn vault_record(
        &self,
        subscription: Uuid,
        name: &str,
        properties: Value,
    ) -> (ResourceId, ResourceRecord) {
        let id = self
            .group(subscription)
            .with_provider("Microsoft.KeyVault", "vaults", name);
        let uri = format!("https://{name}.vault.lanyard.localhost:8443/");
        let ctx = VaultContext {
            tenant_id: self.tenant,
            vault_uri: &uri,
        };
        let existing = self.state.store.resource(&id).await.unwrap();
        let props = validate_put(
            &json!({ "properties": properties }),
            existing.as_ref().map(|r| &r.body),
            &ctx,
        )
        .unwrap();
        let now = OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(self.clock.unix()) * 1_000_000_000 + i128::from(rand_nanos()),
        )
        .unwrap();
        let record = ResourceRecord {
            id: id.clone(),
            resource_type: VAULT_TYPE.into(),
            body: json!({"id": id.as_str(), "name": name, "type": VAULT_TYPE, "location": "local", "properties": props}),
            created_at: existing.as_ref().map_or(now, |e| e.created_at),
            updated_at: now,
        };
        (id, record)
    }

    async fn drop_vault(&self, id: &ResourceId) {
        self.state
            .commit(Batch::new().with(Change::DeleteResource(id.clone())))
            .await
            .unwrap();
    }

    async fn assign(&self, principal: Uuid, role: &str, scope: &ResourceId) {
        let role = builtin::built_in_by_name(role).unwrap();
        let now = OffsetDateTime::from_unix_timestamp(START).unwrap();
        self.state
            .commit(Batch::new().with(Change::PutAssignment(RoleAssignment {
                id: Uuid::new_v4(),
                scope: scope.clone(),
                role_definition_id: role.id,
                principal_id: principal,
                principal_type: PrincipalType::ServicePrincipal,
                description: None,
                condition: None,
                condition_version: None,
                created_on: now,
                updated_on: now,
                created_by: None,
                updated_by: None,
            })))
            .await
            .unwrap();
    }

    fn token(&self, principal: Uuid, audience: &str) -> String {
        let (minted, _) = self
            .state
            .tokens
            .issue(&TokenRequest {
                tenant_id: self.tenant,
                object_id: principal,
                client_id: Uuid::new_v4(),
                audience: audience.into(),
                version: TokenVersion::V1,
                principal: TokenPrincipal::Application {
                    auth: ClientAuthMethod::ClientSecret,
                    identity: None,
                },
                tenant_created_at: START,
            })
            .unwrap();
        minted.access_token
    }

    async fn raw(
        &self,
        vault: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path).header(
            header::HOST,
            format!("{vault}.vault.lanyard.localhost:8443"),
        );
        if let Some(t) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let mut request = request
            .body(Body::from(body.map(<[u8]>::to_vec).unwrap_or_default()))
            .unwrap();
        request
            .extensions_mut()
            .insert(VaultName(vault.to_string()));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_client_error() || status.is_server_error() {
            assert!(
                body["error"]["code"].is_string(),
                "{status} without Key Vault's error shape: {body}"
            );
        }
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn call(
        &self,
        vault: &str,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Reply {
        let bytes = body.map(|b| b.to_string().into_bytes());
        self.raw(vault, method, path, Some(token), bytes.as_deref())
            .await
    }
}

fn rand_nanos() -> u32 {
    (Uuid::new_v4().as_u128() % 1_000_000_000) as u32
}

const V: &str = "?api-version=7.5";

fn p(path: &str) -> String {
    format!("{path}{V}")
}

#[tokio::test]
async fn challenge_and_audiences() {
    let plane = Plane::new().await;
    plane
        .vault(
            plane.subscription,
            "kv1",
            json!({"enableRbacAuthorization": true}),
        )
        .await;
    let who = Uuid::new_v4();

    // The SDK's first request: no token, no body.
    let r = plane
        .raw(
            "kv1",
            Method::PUT,
            "/secrets/db?api-version=2026-04-01",
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "Unauthorized");
    let challenge = r.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert_eq!(
        challenge,
        format!(
            "Bearer authorization=\"https://localhost:8443/{}\", resource=\"{OWN_AUDIENCE}\"",
            plane.tenant
        )
    );
    // Nothing is written for a caller who has not authenticated.
    let vaults = plane
        .state
        .store
        .documents(&lanyard_storage::DocumentQuery {
            collection: lanyard_keyvault::stored::VAULTS.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(vaults.is_empty());

    // A token for another audience is refused with the same challenge.
    let storage = plane.token(who, "https://storage.azure.com");
    let r = plane
        .call("kv1", Method::GET, &p("/secrets"), &storage, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.message().contains("https://storage.azure.com"),
        "{}",
        r.message()
    );
    assert!(r.headers.contains_key(header::WWW_AUTHENTICATE));
    let r = plane
        .raw("kv1", Method::GET, &p("/secrets"), Some("not.a.jwt"), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Our audience and Azure's, with or without the trailing slash, are accepted (the
    // caller then meets authorization).
    for aud in [
        OWN_AUDIENCE,
        "https://vault.lanyard.localhost:8443/",
        "https://vault.azure.net",
        "https://vault.azure.net/",
    ] {
        let r = plane
            .call(
                "kv1",
                Method::GET,
                &p("/secrets"),
                &plane.token(who, aud),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{aud}: {}", r.body);
    }

    // A vault that does not exist.
    let r = plane
        .raw("nope", Method::GET, &p("/secrets"), None, None)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "VaultNotFound")
    );
}

#[tokio::test]
async fn rbac_secrets_user_reads_and_officer_runs_the_life_cycle() {
    let plane = Plane::new().await;
    let vault = plane
        .vault(
            plane.subscription,
            "kv1",
            json!({"enableRbacAuthorization": true}),
        )
        .await;
    let officer = Uuid::new_v4();
    let user = Uuid::new_v4();
    plane
        .assign(
            officer,
            "Key Vault Secrets Officer",
            &plane.group(plane.subscription),
        )
        .await;
    plane.assign(user, "Key Vault Secrets User", &vault).await;
    let off = plane.token(officer, OWN_AUDIENCE);
    let usr = plane.token(user, "https://vault.azure.net");

    // Set: the answer carries the value and a 32-hex version.
    let r = plane
        .call(
            "kv1",
            Method::PUT,
            &p("/secrets/Db-Password"),
            &off,
            Some(json!({"value": "hunter2", "contentType": "text/plain", "tags": {"env": "ci"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["value"], "hunter2");
    let id1 = r.body["id"].as_str().unwrap().to_string();
    assert!(id1.starts_with("https://kv1.vault.lanyard.localhost:8443/secrets/Db-Password/"));
    let v1 = id1.rsplit('/').next().unwrap().to_string();
    assert_eq!(v1.len(), 32);
    assert_eq!(
        r.body["attributes"]["recoveryLevel"],
        "Recoverable+Purgeable"
    );
    assert_eq!(r.body["attributes"]["recoverableDays"], 90);
    assert_eq!(r.body["attributes"]["created"], START);

    // The user reads it (latest, trailing slash, any case) but may not write.
    let r = plane
        .call("kv1", Method::GET, &p("/secrets/db-password/"), &usr, None)
        .await;
    assert_eq!(
        (r.status, r.body["value"].as_str()),
        (StatusCode::OK, Some("hunter2"))
    );
    assert_eq!(r.body["tags"]["env"], "ci");
    let r = plane
        .call(
            "kv1",
            Method::PUT,
            &p("/secrets/db-password"),
            &usr,
            Some(json!({"value": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!((r.code(), r.inner()), ("Forbidden", "ForbiddenByRbac"));
    assert!(
        r.message()
            .contains("Action: 'Microsoft.KeyVault/vaults/secrets/setSecret/action'"),
        "{}",
        r.message()
    );
    assert!(
        r.message().contains("Key Vault Secrets User"),
        "the explanation names the role held: {}",
        r.message()
    );
    let r = plane
        .call(
            "kv1",
            Method::DELETE,
            &p("/secrets/db-password"),
            &usr,
            None,
        )
        .await;
    assert_eq!(r.inner(), "ForbiddenByRbac");

    // A second version; versions list; get by version.
    plane.clock.advance(std::time::Duration::from_secs(10));
    let r = plane
        .call(
            "kv1",
            Method::PUT,
            &p("/secrets/db-password"),
            &off,
            Some(json!({"value": "hunter3"})),
        )
        .await;
    let v2 = r.body["id"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    assert!(
        r.body["id"]
            .as_str()
            .unwrap()
            .contains("/secrets/Db-Password/"),
        "the first spelling stays"
    );
    let r = plane
        .call(
            "kv1",
            Method::GET,
            &p(&format!("/secrets/db-password/{v1}")),
            &usr,
            None,
        )
        .await;
    assert_eq!(r.body["value"], "hunter2");
    let r = plane
        .call("kv1", Method::GET, &p("/secrets/db-password"), &usr, None)
        .await;
    assert_eq!(r.body["value"], "hunter3");
    let r = plane
        .call(
            "kv1",
            Method::GET,
            &p("/secrets/db-password/versions"),
            &off,
            None,
        )
        .await;
    let mut versions: Vec<String> = r.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["id"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    versions.sort();
    let mut expected = vec![v1.clone(), v2.clone()];
    expected.sort();
    assert_eq!(versions, expected);
    let r = plane
        .call(
            "kv1",
            Method::GET,
            &p(&format!("/secrets/db-password/{}", "0".repeat(32))),
            &usr,
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "SecretNotFound")
    );

    // Update attributes of the old version, then disable the latest: get refuses it.
    let r = plane
        .call(
            "kv1",
            Method::PATCH,
            &p(&format!("/secrets/db-password/{v1}")),
            &off,
            Some(json!({"contentType": "old"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["contentType"].as_str()),
        (StatusCode::OK, Some("old"))
    );
    assert!(r.body.get("value").is_none());
    let r = plane
        .call(
            "kv1",
            Method::PATCH,
            &p("/secrets/db-password/"),
            &off,
            Some(json!({"attributes": {"enabled": false}, "tags": {"a": "b"}})),
        )
        .await;
    assert_eq!(r.body["attributes"]["enabled"], false);
    let r = plane
        .call("kv1", Method::GET, &p("/secrets/db-password"), &usr, None)
        .await;
    assert_eq!(
        (r.status, r.code(), r.inner()),
        (StatusCode::FORBIDDEN, "Forbidden", "SecretDisabled")
    );
    assert_eq!(
        r.message(),
        "Operation get is not allowed on a disabled secret."
    );
    // Listing shows the latest's metadata.
    let r = plane
        .call("kv1", Method::GET, &p("/secrets"), &usr, None)
        .await;
    assert_eq!(r.body["value"][0]["attributes"]["enabled"], false);
    assert_eq!(r.body["value"][0]["tags"]["a"], "b");
    assert_eq!(
        r.body["value"][0]["id"],
        "https://kv1.vault.lanyard.localhost:8443/secrets/Db-Password"
    );
    plane
        .call(
            "kv1",
            Method::PATCH,
            &p("/secrets/db-password"),
            &off,
            Some(json!({"attributes": {"enabled": true}})),
        )
        .await;

    // Outside `nbf` .. `exp` the value is withheld; the injected clock moves it in and out.
    let now = plane.clock.unix();
    let r = plane
        .call(
            "kv1",
            Method::PATCH,
            &p("/secrets/db-password"),
            &off,
            Some(json!({"attributes": {"nbf": now + 100, "exp": now + 200}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let latest = p("/secrets/db-password");
    let get = || plane.call("kv1", Method::GET, &latest, &usr, None);
    let r = get().await;
    assert_eq!(
        (r.status, r.inner()),
        (StatusCode::FORBIDDEN, "SecretNotYetValid")
    );
    plane.clock.advance(std::time::Duration::from_secs(150));
    assert_eq!(get().await.status, StatusCode::OK);
    plane.clock.advance(std::time::Duration::from_secs(100));
    let r = get().await;
    assert_eq!(
        (r.status, r.inner()),
        (StatusCode::FORBIDDEN, "SecretExpired")
    );
    plane
        .call(
            "kv1",
            Method::PATCH,
            &p("/secrets/db-password"),
            &off,
            Some(json!({"attributes": {"exp": plane.clock.unix() + 86_400}})),
        )
        .await;
    assert_eq!(get().await.status, StatusCode::OK);

    // Paging: five secrets, two per page, following nextLink.
    for i in 0..4 {
        plane
            .call(
                "kv1",
                Method::PUT,
                &p(&format!("/secrets/s{i}")),
                &off,
                Some(json!({"value": format!("v{i}")})),
            )
            .await;
    }
    let mut names = Vec::new();
    let mut next = Some("/secrets?api-version=7.5&maxresults=2".to_string());
    let mut pages = 0;
    while let Some(link) = next {
        let path = link.trim_start_matches("https://kv1.vault.lanyard.localhost:8443");
        let r = plane.call("kv1", Method::GET, path, &usr, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        for item in r.body["value"].as_array().unwrap() {
            names.push(
                item["id"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
            );
        }
        next = r.body["nextLink"].as_str().map(str::to_string);
        if let Some(n) = &next {
            assert!(
                n.contains("api-version=7.5")
                    && n.contains("$skiptoken=")
                    && n.contains("maxresults=2"),
                "{n}"
            );
        }
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(names, vec!["Db-Password", "s0", "s1", "s2", "s3"]);

    // Delete → deleted bundle; the live secret is gone; recover; delete again; purge.
    let r = plane
        .call(
            "kv1",
            Method::DELETE,
            &p("/secrets/db-password"),
            &off,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["recoveryId"],
        "https://kv1.vault.lanyard.localhost:8443/deletedsecrets/Db-Password"
    );
    assert_eq!(
        r.body["scheduledPurgeDate"].as_i64().unwrap() - r.body["deletedDate"].as_i64().unwrap(),
        90 * 86_400
    );
    assert!(r.body.get("value").is_none());
    let r = plane
        .call("kv1", Method::GET, &p("/secrets/db-password"), &usr, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = plane
        .call(
            "kv1",
            Method::PUT,
            &p("/secrets/db-password"),
            &off,
            Some(json!({"value": "x"})),
        )
        .await;
    assert_eq!(
        (r.status, r.inner()),
        (StatusCode::CONFLICT, "ObjectIsDeletedButRecoverable")
    );
    let r = plane
        .call("kv1", Method::GET, &p("/deletedsecrets"), &off, None)
        .await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 1);
    let r = plane
        .call(
            "kv1",
            Method::GET,
            &p("/deletedsecrets/db-password"),
            &off,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = plane
        .call(
            "kv1",
            Method::POST,
            &p("/deletedsecrets/db-password/recover"),
            &off,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = plane
        .call("kv1", Method::GET, &p("/secrets/db-password"), &usr, None)
        .await;
    assert_eq!(r.body["value"], "hunter3");
    let r = plane
        .call(
            "kv1",
            Method::GET,
            &p("/deletedsecrets/db-password"),
            &off,
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "SecretNotFound")
    );

    // Backup, delete, purge, restore: every version comes back.
    let r = plane
        .call(
            "kv1",
            Method::POST,
            &p("/secrets/db-password/backup"),
            &off,
            None,
        )
        .await;
    let blob = r.body["value"].as_str().unwrap().to_string();
    assert!(!blob.contains("hunter"));
    let r = plane
        .call(
            "kv1",
            Method::POST,
            &p("/secrets/restore"),
            &off,
            Some(json!({"value": blob})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "Conflict"),
        "restore over a live secret"
    );
    plane
        .call(
            "kv1",
            Method::DELETE,
            &p("/secrets/db-password"),
            &off,
            None,
        )
        .await;
    let r = plane
        .call(
            "kv1",
            Method::DELETE,
            &p("/deletedsecrets/db-password"),
            &off,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = plane
        .call(
            "kv1",
            Method::GET,
            &p("/deletedsecrets/db-password"),
            &off,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = plane
        .call(
            "kv1",
            Method::POST,
            &p("/secrets/restore"),
            &off,
            Some(json!({"value": blob})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = plane
        .call(
            "kv1",
            Method::GET,
            &p(&format!("/secrets/db-password/{v1}")),
            &usr,
            None,
        )
        .await;
    assert_eq!(r.body["value"], "hunter2");
    let r = plane
        .call("kv1", Method::GET, &p("/secrets/db-password"), &usr, None)
        .await;
    assert_eq!(r.body["value"], "hunter3");

    // Restore into another vault of the same subscription works; of another, it does not.
    plane
        .vault(
            plane.subscription,
            "kv2",
            json!({"enableRbacAuthorization": true}),
        )
        .await;
    let r = plane
        .call(
            "kv2",
            Method::POST,
            &p("/secrets/restore"),
            &off,
            Some(json!({"value": blob})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let other_sub = Uuid::new_v4();
    plane
        .vault(other_sub, "kv3", json!({"enableRbacAuthorization": true}))
        .await;
    plane
        .assign(
            officer,
            "Key Vault Secrets Officer",
            &plane.group(other_sub),
        )
        .await;
    let r = plane
        .call(
            "kv3",
            Method::POST,
            &p("/secrets/restore"),
            &off,
            Some(json!({"value": blob})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "BadParameter")
    );
    assert!(r.message().contains("another subscription"));
}

#[tokio::test]
async fn access_policies_decide_in_access_policy_mode() {
    let plane = Plane::new().await;
    let reader = Uuid::new_v4();
    let admin = Uuid::new_v4();
    let policy = |oid: Uuid, secrets: &[&str]| json!({"tenantId": plane.tenant, "objectId": oid, "permissions": {"secrets": secrets}});
    plane
        .vault(
            plane.subscription,
            "kv1",
            json!({"accessPolicies": [policy(reader, &["get"]), policy(admin, &["all"])]}),
        )
        .await;
    // An RBAC role means nothing to an access-policy vault.
    let rbac_only = Uuid::new_v4();
    plane
        .assign(
            rbac_only,
            "Key Vault Secrets Officer",
            &plane.group(plane.subscription),
        )
        .await;

    let adm = plane.token(admin, OWN_AUDIENCE);
    let rd = plane.token(reader, OWN_AUDIENCE);
    let r = plane
        .call(
            "kv1",
            Method::PUT,
            &p("/secrets/db"),
            &adm,
            Some(json!({"value": "v"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = plane
        .call("kv1", Method::GET, &p("/secrets/db"), &rd, None)
        .await;
    assert_eq!(r.body["value"], "v");
    let r = plane
        .call(
            "kv1",
            Method::PUT,
            &p("/secrets/db"),
            &rd,
            Some(json!({"value": "w"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code(), r.inner()),
        (StatusCode::FORBIDDEN, "Forbidden", "AccessDenied")
    );
    assert!(
        r.message()
            .contains("does not have secrets set permission on key vault 'kv1"),
        "{}",
        r.message()
    );
    assert!(
        r.message().contains("grants secrets get but not set"),
        "{}",
        r.message()
    );
    let r = plane
        .call("kv1", Method::GET, &p("/secrets"), &rd, None)
        .await;
    assert_eq!(r.inner(), "AccessDenied");
    let r = plane
        .call(
            "kv1",
            Method::GET,
            &p("/secrets/db"),
            &plane.token(rbac_only, OWN_AUDIENCE),
            None,
        )
        .await;
    assert_eq!(r.inner(), "AccessDenied");
    for (method, path) in [
        (Method::GET, "/secrets/db/versions"),
        (Method::POST, "/secrets/db/backup"),
        (Method::DELETE, "/secrets/db"),
        (Method::GET, "/deletedsecrets/db"),
        (Method::POST, "/deletedsecrets/db/recover"),
        (Method::DELETE, "/secrets/db"),
        (Method::DELETE, "/deletedsecrets/db"),
    ] {
        let r = plane
            .call("kv1", method.clone(), &p(path), &adm, None)
            .await;
        assert!(r.status.is_success(), "{method} {path}: {}", r.body);
    }

    // Switching the vault to RBAC mode makes the policies irrelevant at once.
    plane
        .vault(
            plane.subscription,
            "kv1",
            json!({"enableRbacAuthorization": true}),
        )
        .await;
    let r = plane
        .call("kv1", Method::GET, &p("/secrets"), &adm, None)
        .await;
    assert_eq!(r.inner(), "ForbiddenByRbac");
    let r = plane
        .call(
            "kv1",
            Method::GET,
            &p("/secrets"),
            &plane.token(rbac_only, OWN_AUDIENCE),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn retention_runs_on_the_injected_clock_and_purge_protection_holds() {
    let plane = Plane::new().await;
    let vault = plane
        .vault(
            plane.subscription,
            "kv1",
            json!({"enableRbacAuthorization": true, "softDeleteRetentionInDays": 7}),
        )
        .await;
    let officer = Uuid::new_v4();
    plane
        .assign(officer, "Key Vault Secrets Officer", &vault)
        .await;
    let t = plane.token(officer, OWN_AUDIENCE);
    plane
        .call(
            "kv1",
            Method::PUT,
            &p("/secrets/a"),
            &t,
            Some(json!({"value": "1"})),
        )
        .await;
    let r = plane
        .call("kv1", Method::DELETE, &p("/secrets/a"), &t, None)
        .await;
    assert_eq!(
        r.body["attributes"]["recoveryLevel"],
        "CustomizedRecoverable+Purgeable"
    );
    assert_eq!(r.body["scheduledPurgeDate"], START + 7 * 86_400);

    plane
        .clock
        .advance(std::time::Duration::from_secs(7 * DAY - 1));
    let t = plane.token(officer, OWN_AUDIENCE);
    let r = plane
        .call("kv1", Method::GET, &p("/deletedsecrets/a"), &t, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    plane.clock.advance(std::time::Duration::from_secs(1));
    let r = plane
        .call("kv1", Method::GET, &p("/deletedsecrets"), &t, None)
        .await;
    assert_eq!(r.body["value"], json!([]));
    let r = plane
        .call("kv1", Method::GET, &p("/deletedsecrets/a"), &t, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The name is free again, with no trace of the old versions.
    let r = plane
        .call(
            "kv1",
            Method::PUT,
            &p("/secrets/a"),
            &t,
            Some(json!({"value": "2"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = plane
        .call("kv1", Method::GET, &p("/secrets/a/versions"), &t, None)
        .await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 1);

    // Purge protection: purge is refused, the clock still purges.
    plane
        .vault(
            plane.subscription,
            "kv1",
            json!({"enablePurgeProtection": true}),
        )
        .await;
    plane
        .call("kv1", Method::DELETE, &p("/secrets/a"), &t, None)
        .await;
    let r = plane
        .call("kv1", Method::DELETE, &p("/deletedsecrets/a"), &t, None)
        .await;
    assert_eq!(
        (r.status, r.inner()),
        (StatusCode::FORBIDDEN, "PurgeProtectionEnabled")
    );
    plane.clock.advance(std::time::Duration::from_secs(7 * DAY));
    let t = plane.token(officer, OWN_AUDIENCE);
    let r = plane
        .call("kv1", Method::DELETE, &p("/deletedsecrets/a"), &t, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn values_are_sealed_at_rest_and_a_recreated_vault_starts_empty() {
    let plane = Plane::new().await;
    let vault = plane
        .vault(
            plane.subscription,
            "kv1",
            json!({"enableRbacAuthorization": true}),
        )
        .await;
    let officer = Uuid::new_v4();
    plane
        .assign(
            officer,
            "Key Vault Secrets Officer",
            &plane.group(plane.subscription),
        )
        .await;
    let t = plane.token(officer, OWN_AUDIENCE);
    let marker = format!("marker-{}", Uuid::new_v4().simple());
    plane
        .call(
            "kv1",
            Method::PUT,
            &p("/secrets/a"),
            &t,
            Some(json!({"value": marker})),
        )
        .await;
    let r = plane
        .call("kv1", Method::GET, &p("/secrets/a"), &t, None)
        .await;
    assert_eq!(r.body["value"], marker.as_str());
    for doc in plane
        .state
        .store
        .documents(&lanyard_storage::DocumentQuery {
            collection: lanyard_keyvault::stored::SECRETS.into(),
            ..Default::default()
        })
        .await
        .unwrap()
    {
        assert!(!doc.body.to_string().contains(&marker));
    }
    for entry in std::fs::read_dir(plane._tmp.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        assert!(!bytes.windows(marker.len()).any(|w| w == marker.as_bytes()));
    }

    // The vault is deleted and created again under the same id: nothing of the old one.
    plane.drop_vault(&vault).await;
    let r = plane
        .call("kv1", Method::GET, &p("/secrets/a"), &t, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    plane
        .vault(
            plane.subscription,
            "kv1",
            json!({"enableRbacAuthorization": true}),
        )
        .await;
    let r = plane
        .call("kv1", Method::GET, &p("/secrets"), &t, None)
        .await;
    assert_eq!(r.body["value"], json!([]));
}

#[tokio::test]
async fn malformed_input_gets_4xx_in_key_vaults_shape() {
    let plane = Plane::new().await;
    let vault = plane
        .vault(
            plane.subscription,
            "kv1",
            json!({"enableRbacAuthorization": true}),
        )
        .await;
    let officer = Uuid::new_v4();
    plane
        .assign(officer, "Key Vault Secrets Officer", &vault)
        .await;
    let t = plane.token(officer, OWN_AUDIENCE);
    plane
        .call(
            "kv1",
            Method::PUT,
            &p("/secrets/a"),
            &t,
            Some(json!({"value": "1"})),
        )
        .await;
    let big = "x".repeat(25 * 1024 + 1);
    let cases: Vec<(Method, String, Option<Vec<u8>>, u16)> = vec![
        (Method::PUT, p("/secrets/a"), None, 400),
        (
            Method::PUT,
            p("/secrets/a"),
            Some(b"{not json".to_vec()),
            400,
        ),
        (Method::PUT, p("/secrets/a"), Some(b"[1,2]".to_vec()), 400),
        (
            Method::PUT,
            p("/secrets/a"),
            Some(br#"{"value": 5}"#.to_vec()),
            400,
        ),
        (
            Method::PUT,
            p("/secrets/a"),
            Some(br#"{"value": null}"#.to_vec()),
            400,
        ),
        (
            Method::PUT,
            p("/secrets/a"),
            Some(format!(r#"{{"value": "{big}"}}"#).into_bytes()),
            400,
        ),
        (
            Method::PUT,
            p("/secrets/a"),
            Some(br#"{"value": "v", "tags": []}"#.to_vec()),
            400,
        ),
        (
            Method::PUT,
            p("/secrets/a"),
            Some(br#"{"value": "v", "attributes": {"exp": -1}}"#.to_vec()),
            400,
        ),
        (
            Method::PUT,
            p("/secrets/a"),
            Some(br#"{"value": "v", "attributes": {"nbf": 1e400}}"#.to_vec()),
            400,
        ),
        (Method::PUT, p("/secrets/a"), Some(vec![0xff, 0xfe]), 400),
        (
            Method::PUT,
            p("/secrets/a_b"),
            Some(br#"{"value": "v"}"#.to_vec()),
            400,
        ),
        (
            Method::PUT,
            p(&format!("/secrets/{}", "a".repeat(128))),
            Some(br#"{"value": "v"}"#.to_vec()),
            400,
        ),
        (Method::GET, p("/secrets/a/zz"), None, 400),
        (
            Method::PATCH,
            p("/secrets/a"),
            Some(br#"{"value": "v"}"#.to_vec()),
            400,
        ),
        (
            Method::PATCH,
            p("/secrets/a"),
            Some(br#"{"attributes": {"enabled": 1}}"#.to_vec()),
            400,
        ),
        (Method::GET, "/secrets?maxresults=0".to_string(), None, 400),
        (Method::GET, "/secrets?maxresults=26".to_string(), None, 400),
        (
            Method::GET,
            "/secrets?maxresults=abc".to_string(),
            None,
            400,
        ),
        (Method::GET, "/secrets?$skiptoken=!!".to_string(), None, 400),
        (
            Method::GET,
            "/deletedsecrets?maxresults=-1".to_string(),
            None,
            400,
        ),
        (
            Method::POST,
            p("/secrets/restore"),
            Some(br#"{"value": "bm90IGEgYmFja3Vw"}"#.to_vec()),
            400,
        ),
        (
            Method::POST,
            p("/secrets/restore"),
            Some(br#"{"value": 1}"#.to_vec()),
            400,
        ),
        (Method::POST, p("/secrets/restore"), Some(b"".to_vec()), 400),
        (Method::GET, p("/keys/k1"), None, 404),
        (Method::GET, p("/"), None, 404),
        (Method::GET, p("/secrets/missing"), None, 404),
        (Method::DELETE, p("/deletedsecrets/missing"), None, 404),
        (
            Method::POST,
            p("/deletedsecrets/missing/recover"),
            None,
            404,
        ),
        (Method::POST, p("/secrets"), None, 405),
        (Method::PUT, p("/secrets/a/versions"), None, 405),
        (
            Method::PUT,
            p("/secrets/a"),
            Some(vec![b' '; 300 * 1024]),
            413,
        ),
    ];
    for (method, path, body, status) in cases {
        let r = plane
            .raw("kv1", method.clone(), &path, Some(&t), body.as_deref())
            .await;
        assert_eq!(r.status.as_u16(), status, "{method} {path}: {}", r.body);
        assert!(!r.message().contains(&big), "errors never echo a value");
    }
    // And nothing above changed the secret.
    let r = plane
        .call("kv1", Method::GET, &p("/secrets/a"), &t, None)
        .await;
    assert_eq!(r.body["value"], "1");
}

/// The directory keeps a vault's record only while the commit generation it was read at is
/// current (and for a couple of seconds at most), never remembers a miss for longer than
/// that, and holds no more than it was given room for.
#[tokio::test]
async fn the_vault_directory_caches_records_by_commit_generation() {
    let plane = Plane::new().await;
    let state = &plane.state;
    let sub = plane.subscription;
    let dir = VaultDirectory::new();
    plane
        .vault(sub, "kv1", json!({"enableRbacAuthorization": true}))
        .await;
    let a = dir.find(state, "kv1").await.unwrap();
    let b = dir.find(state, "KV1").await.unwrap();
    assert!(a.settings.rbac);
    assert!(
        std::ptr::eq(&*a, &*b),
        "a second request reads nothing from the store"
    );

    // Another server switches the vault to access policies. Until the generation moves
    // (or the entry ages out), this server's copy answers.
    plane
        .vault_elsewhere(sub, "kv1", json!({"enableRbacAuthorization": false}))
        .await;
    assert!(dir.find(state, "kv1").await.unwrap().settings.rbac);
    // The generation advances (a commit here or, through the platform, on another server
    // sharing the database): the next request reads the record again.
    state
        .generation
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let c = dir.find(state, "kv1").await.unwrap();
    assert!(!c.settings.rbac, "a new generation re-reads the vault");
    assert!(!std::ptr::eq(&*a, &*c));

    // Without any commit seen, an entry is read again after it is two seconds old.
    plane
        .vault_elsewhere(sub, "kv1", json!({"enableRbacAuthorization": true}))
        .await;
    assert!(!dir.find(state, "kv1").await.unwrap().settings.rbac);
    plane.clock.advance(std::time::Duration::from_secs(2));
    assert!(dir.find(state, "kv1").await.unwrap().settings.rbac);

    // A local commit changes the record: the next request sees it.
    plane
        .vault(sub, "kv1", json!({"enableRbacAuthorization": false}))
        .await;
    assert!(!dir.find(state, "kv1").await.unwrap().settings.rbac);

    // Deleted here: gone at once.
    let id = plane
        .group(sub)
        .with_provider("Microsoft.KeyVault", "vaults", "kv1");
    plane.drop_vault(&id).await;
    assert!(matches!(
        dir.find(state, "kv1").await,
        Err(KvError::VaultNotFound(_))
    ));

    // A miss is not remembered for long: a vault created on another server appears within
    // a couple of seconds even though no commit happened here.
    assert!(dir.find(state, "kv9").await.is_err());
    plane
        .vault_elsewhere(sub, "kv9", json!({"enableRbacAuthorization": true}))
        .await;
    plane.clock.advance(std::time::Duration::from_secs(2));
    assert_eq!(dir.find(state, "kv9").await.unwrap().name, "kv9");

    // Bounded: many vaults, room for two records and two keys.
    let small = VaultDirectory::with_capacity(2, 2);
    for i in 0..5 {
        let name = format!("many{i}");
        plane
            .vault(sub, &name, json!({"enableRbacAuthorization": true}))
            .await;
        let found = small.find(state, &name).await.unwrap();
        small.unlock(state, found).await.unwrap();
        let (records, keys) = small.held();
        assert!(
            records <= 2 && keys <= 2,
            "held {records} records, {keys} keys"
        );
    }
    assert_eq!(small.held(), (2, 2));
    // What was dropped is read again when asked for.
    let again = small.find(state, "many0").await.unwrap();
    assert_eq!(small.unlock(state, again).await.unwrap().name, "many0");
    // Misses take no room.
    for i in 0..20 {
        assert!(small.find(state, &format!("absent{i}")).await.is_err());
    }
    assert!(small.held().0 <= 2);
}

async fn unlock(state: &AppState, dir: &VaultDirectory, name: &str) -> ResolvedVault {
    let found = dir.find(state, name).await.unwrap();
    dir.unlock(state, found).await.unwrap()
}

/// A vault's data key is kept per resource: the same resource always unlocks with the same
/// key, and a vault deleted and created again under the same name gets a new one.
#[tokio::test]
async fn a_recreated_vault_unlocks_with_a_new_data_key() {
    let plane = Plane::new().await;
    let state = &plane.state;
    let sub = plane.subscription;
    let dir = VaultDirectory::new();
    let id = plane
        .vault(sub, "kv2", json!({"enableRbacAuthorization": true}))
        .await;
    let first = unlock(state, &dir, "kv2").await;
    let aad = b"lanyard/test";
    let sealed = first.key.data_key.seal(b"value", aad).unwrap();
    // A commit elsewhere in the platform moves the generation; the key stays the same one.
    state
        .generation
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let again = unlock(state, &dir, "kv2").await;
    assert!(Arc::ptr_eq(&first.key, &again.key));
    // What is cached is what the store says: a fresh directory unlocks the same key.
    let fresh = unlock(state, &VaultDirectory::new(), "kv2").await;
    assert_eq!(fresh.key.layout, first.key.layout);
    assert_eq!(fresh.key.data_key.open(&sealed, aad).unwrap(), b"value");

    plane.drop_vault(&id).await;
    assert!(dir.find(state, "kv2").await.is_err());
    plane
        .vault(sub, "kv2", json!({"enableRbacAuthorization": true}))
        .await;
    let second = unlock(state, &dir, "kv2").await;
    assert!(!Arc::ptr_eq(&first.key, &second.key));
    assert_ne!(second.key.layout, first.key.layout);
    assert!(
        second.key.data_key.open(&sealed, aad).is_err(),
        "the new vault's data key is a different key"
    );
}
