//! A client for tests that talks to a test server as the bootstrap administrator (or any
//! service principal with a secret), the way SDKs do: a client-credentials token, then REST.

use anyhow::{anyhow, Context};
use reqwest::Method;
use serde_json::Value;

use crate::TestServer;

/// An authenticated REST client for one principal.
pub struct Client {
    http: reqwest::Client,
    base: String,
    tenant: String,
    client_id: String,
    secret: String,
}

/// A service principal made through the Graph API.
#[derive(Debug, Clone)]
pub struct App {
    pub object_id: String,
    pub client_id: String,
    pub secret: String,
}

/// A response: status and JSON body (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Client {
    /// As the bootstrap administrator (Owner of the subscription).
    pub fn admin(server: &TestServer) -> anyhow::Result<Self> {
        Self::for_app(
            server,
            &server.admin.client_id.to_string(),
            &server.admin.client_secret,
        )
    }

    /// As the service principal `client_id` with `secret`.
    pub fn for_app(server: &TestServer, client_id: &str, secret: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: server.client()?,
            base: server.url("localhost", ""),
            tenant: server.admin.tenant_id.to_string(),
            client_id: client_id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// A token for `scope` from the token service (client-credentials grant).
    pub async fn token(&self, scope: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .post(format!("{}/{}/oauth2/v2.0/token", self.base, self.tenant))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.secret.as_str()),
                ("scope", scope),
            ])
            .send()
            .await
            .context("token request")?;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        body["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("token request failed ({status}): {body}"))
    }

    /// A control-plane call as this principal.
    pub async fn arm(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        self.call("https://management.azure.com/.default", method, path, body)
            .await
    }

    /// A Graph call as this principal.
    pub async fn graph(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        self.call("https://graph.microsoft.com/.default", method, path, body)
            .await
    }

    /// A call on the combined host with a token for `scope`.
    async fn call(
        &self,
        scope: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        let token = self.token(scope).await?;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            request = request.json(b);
        }
        let r = request
            .send()
            .await
            .with_context(|| format!("request to `{path}`"))?;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        Ok(Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        })
    }

    /// Registers an application with a service principal and a client secret (the caller
    /// must be the administrator).
    pub async fn create_app(&self, name: &str) -> anyhow::Result<App> {
        let ok = |r: Reply, what: &str| {
            if matches!(r.status, 200 | 201) {
                Ok(r.body)
            } else {
                Err(anyhow!("{what}: {} {}", r.status, r.body))
            }
        };
        let app = ok(
            self.graph(
                Method::POST,
                "/v1.0/applications",
                Some(&serde_json::json!({"displayName": name})),
            )
            .await?,
            "create application",
        )?;
        let app_id = app["appId"].as_str().unwrap_or_default().to_string();
        let id = app["id"].as_str().unwrap_or_default().to_string();
        let sp = ok(
            self.graph(
                Method::POST,
                "/v1.0/servicePrincipals",
                Some(&serde_json::json!({"appId": app_id})),
            )
            .await?,
            "create service principal",
        )?;
        let password = ok(
            self.graph(
                Method::POST,
                &format!("/v1.0/applications/{id}/addPassword"),
                Some(&serde_json::json!({"passwordCredential": {"displayName": "test"}})),
            )
            .await?,
            "add password",
        )?;
        Ok(App {
            object_id: sp["id"].as_str().unwrap_or_default().to_string(),
            client_id: app_id,
            secret: password["secretText"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// Assigns the built-in role `role_id` to `principal` at `scope`.
    pub async fn assign(&self, scope: &str, role_id: &str, principal: &str) -> anyhow::Result<()> {
        let sub = scope
            .split('/')
            .nth(2)
            .ok_or_else(|| anyhow!("scope `{scope}` has no subscription"))?;
        let body = serde_json::json!({"properties": {
            "roleDefinitionId": format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{role_id}"),
            "principalId": principal,
            "principalType": "ServicePrincipal",
        }});
        let path = format!(
            "{scope}/providers/Microsoft.Authorization/roleAssignments/{}?api-version=2022-04-01",
            uuid::Uuid::new_v4()
        );
        self.put_ok(&path, &body).await.map(|_| ())
    }

    /// `PUT` that must succeed (200 or 201); returns the body.
    pub async fn put_ok(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let reply = self.arm(Method::PUT, path, Some(body)).await?;
        if !(200..300).contains(&reply.status) {
            return Err(anyhow!("PUT {path} -> {}: {}", reply.status, reply.body));
        }
        Ok(reply.body)
    }
}
