//! An in-process blob plane over a fresh SQLite store, with principals holding roles, and
//! requests sent to its router without a socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use lanyard_domain::{
    builtin, Permission, Principal, PrincipalKind, PrincipalType, ResourceId, RoleAssignment,
    RoleDefinition, RoleType, ServicePrincipalSource, SharedClock, Subscription, SubscriptionState,
    SystemClock, Tenant,
};
use lanyard_platform::access::AccessRuntime;
use lanyard_platform::config::{Config, ConfigLayer};
use lanyard_platform::tokens::TokenRuntime;
use lanyard_platform::{AccountName, AppState, Directory, Shared};
use lanyard_storage::{Batch, Change};
use lanyard_token::{ClientAuthMethod, Kek, RotationPolicy, TokenRequest};
use tower::ServiceExt;
use uuid::Uuid;

pub const ACCOUNT: &str = "acct1";

pub struct Plane {
    pub state: AppState,
    pub router: Router,
    pub account: ResourceId,
    pub tenant: Uuid,
    _tmp: tempfile::TempDir,
}

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn code(&self) -> Option<&str> {
        self.header("x-ms-error-code")
    }

    /// Asserts an XML error with `code`, and returns the message.
    pub fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        assert_eq!(self.code(), Some(code), "{}", self.text());
        let text = self.text();
        assert!(text.contains(&format!("<Code>{code}</Code>")), "{text}");
        text
    }
}

/// One request.
pub struct Call<'a> {
    pub method: Method,
    pub target: &'a str,
    pub token: Option<&'a str>,
    pub headers: Vec<(&'a str, String)>,
    pub body: Body,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, target: &'a str, token: &'a str) -> Call<'a> {
        Call {
            method,
            target,
            token: Some(token),
            headers: Vec::new(),
            body: Body::empty(),
        }
    }

    pub fn header(mut self, name: &'a str, value: impl Into<String>) -> Call<'a> {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Body>) -> Call<'a> {
        self.body = body.into();
        self
    }

    pub fn anonymous(mut self) -> Call<'a> {
        self.token = None;
        self
    }
}

impl Plane {
    pub async fn new() -> Plane {
        Self::with_clock(Arc::new(SystemClock)).await
    }

    /// A plane whose time is `clock` (a [`lanyard_domain::ManualClock`] in tests of time).
    pub async fn with_clock(clock: SharedClock) -> Plane {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let config = Config::from_layer(ConfigLayer {
            data_dir: Some(data_dir.clone()),
            port: Some(8443),
            ..Default::default()
        })
        .unwrap();
        let store = lanyard_storage::open(data_dir.join("lanyard.db").to_str().unwrap())
            .await
            .unwrap();
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
        let tokens = TokenRuntime::load(
            Arc::clone(&store),
            Kek::generate(),
            clock.clone(),
            RotationPolicy::default(),
            3600,
            vec![tenant.id],
        )
        .await
        .unwrap();
        let access = AccessRuntime::load(store.as_ref()).await.unwrap();
        let account = ResourceId::parse(&format!(
            "/subscriptions/{}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/{ACCOUNT}",
            subscription.id
        ))
        .unwrap();
        let state = AppState::new(Shared {
            config,
            port: 8443,
            store,
            clock,
            directory: Directory {
                tenant: tenant.clone(),
                subscription,
                admin_object_id: Uuid::new_v4(),
                admin_client_id: Uuid::new_v4(),
            },
            tokens: Arc::new(tokens),
            access: Arc::new(access),
            generation: Default::default(),
        });
        let registration = lanyard_blob::account::registration(&account, None).unwrap();
        let mut batch = Batch::new();
        batch.expect = registration.expect;
        batch.changes = registration.changes;
        state.commit(batch).await.unwrap();
        let router = lanyard_blob::router(state.clone());
        Plane {
            state,
            router,
            account,
            tenant: tenant.id,
            _tmp: tmp,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.state.config.data_dir
    }

    pub fn blob_root(&self) -> PathBuf {
        self.data_dir().join("blobs")
    }

    /// A new service principal.
    pub async fn principal(&self) -> Principal {
        let principal = Principal {
            object_id: Uuid::new_v4(),
            tenant_id: self.tenant,
            display_name: "app".into(),
            kind: PrincipalKind::ServicePrincipal {
                client_id: Uuid::new_v4(),
                source: ServicePrincipalSource::Application,
            },
        };
        self.state
            .commit(Batch::new().with(Change::PutPrincipal(principal.clone())))
            .await
            .unwrap();
        principal
    }

    /// A token of `principal` for `audience`.
    pub fn token_for(&self, principal: &Principal, audience: &str) -> String {
        let request =
            TokenRequest::application(principal, ClientAuthMethod::ClientSecret, audience, 0)
                .unwrap();
        self.state.tokens.issue(&request).unwrap().0.access_token
    }

    /// Assigns `role` to `principal` at `scope`.
    pub async fn assign(&self, principal: &Principal, role: &RoleDefinition, scope: &ResourceId) {
        let now = time::OffsetDateTime::now_utc();
        let assignment = RoleAssignment {
            id: Uuid::new_v4(),
            scope: scope.clone(),
            role_definition_id: role.id,
            principal_id: principal.object_id,
            principal_type: PrincipalType::ServicePrincipal,
            description: None,
            condition: None,
            condition_version: None,
            created_on: now,
            updated_on: now,
            created_by: None,
            updated_by: None,
        };
        self.state
            .commit(Batch::new().with(Change::PutAssignment(assignment)))
            .await
            .unwrap();
    }

    /// A token of a new principal holding the built-in `role` on the account.
    pub async fn token_with(&self, role: &str) -> String {
        let principal = self.principal().await;
        let role = builtin::built_in_by_name(role).unwrap();
        self.assign(&principal, &role, &self.account).await;
        self.token_for(&principal, "https://storage.azure.com")
    }

    /// A token of a new principal holding a custom role with these data actions.
    pub async fn token_with_data_actions(&self, actions: &[&str]) -> String {
        let principal = self.principal().await;
        let role = RoleDefinition {
            id: Uuid::new_v4(),
            role_name: format!("custom-{}", Uuid::new_v4()),
            description: String::new(),
            role_type: RoleType::CustomRole,
            permissions: vec![Permission {
                actions: vec![],
                not_actions: vec![],
                data_actions: actions.iter().map(|a| a.to_string()).collect(),
                not_data_actions: vec![],
            }],
            assignable_scopes: vec![ResourceId::root()],
        };
        self.state
            .commit(Batch::new().with(Change::PutRoleDefinition(role.clone())))
            .await
            .unwrap();
        self.assign(&principal, &role, &self.account).await;
        self.token_for(&principal, "https://storage.azure.com")
    }

    pub async fn call(&self, call: Call<'_>) -> Response {
        self.call_account(ACCOUNT, call).await
    }

    pub async fn call_account(&self, account: &str, call: Call<'_>) -> Response {
        let mut builder = Request::builder()
            .method(call.method)
            .uri(call.target)
            .header("host", format!("{account}.blob.lanyard.localhost:8443"))
            .header("x-ms-version", "2025-11-05");
        if let Some(t) = call.token {
            builder = builder.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in call.headers {
            builder = builder.header(k, v);
        }
        let mut request = builder.body(call.body).unwrap();
        request
            .extensions_mut()
            .insert(AccountName(account.to_string()));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Response {
            status,
            headers,
            body,
        }
    }

    /// Every file under the blob root, relative to it. Background removals may take a
    /// directory or file away while this looks: what vanished is simply not listed.
    pub fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        let root = self.blob_root();
        let Ok(dirs) = std::fs::read_dir(&root) else {
            return out;
        };
        for dir in dirs.flatten() {
            let Ok(kind) = dir.file_type() else {
                continue;
            };
            if !kind.is_dir() {
                out.push(dir.file_name().to_string_lossy().into_owned());
                continue;
            }
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for f in files.flatten() {
                out.push(format!(
                    "{}/{}",
                    dir.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                ));
            }
        }
        out.sort();
        out
    }

    /// Waits until background removals have left exactly `n` files.
    pub async fn settle(&self, n: usize) -> Vec<String> {
        for _ in 0..200 {
            let files = self.files();
            if files.len() == n {
                return files;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("expected {n} files, found {:?}", self.files());
    }
}

/// A base64 block id of `n`.
pub fn block_id(n: u32) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("block-{n:06}"))
}

/// `s` percent-encoded for a query string.
pub fn q(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
