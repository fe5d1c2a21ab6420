//! The Key Vault secrets data plane: `https://{vault}.vault.{domain}:{port}`, with a token
//! for the vault audience (`https://vault.{domain}:{port}`), as the Key Vault SDKs use it.

use reqwest::Method;
use serde_json::{json, Value};

use super::enc;
use crate::client::{Connection, Payload};

pub const SECRETS_API: &str = "7.5";

/// One vault, reached through its data-plane host.
pub struct Vault<'a> {
    conn: &'a Connection,
    base: String,
    scope: String,
}

impl<'a> Vault<'a> {
    pub fn new(conn: &'a Connection, name: &str) -> Self {
        Self {
            conn,
            base: conn.vault_url(name),
            scope: format!("{}/.default", conn.vault_audience()),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{sep}api-version={SECRETS_API}", self.base);
        let payload = body.map_or(Payload::None, Payload::Json);
        Ok(self
            .conn
            .send(method, &url, &self.scope, &[], payload)
            .await?
            .json())
    }

    pub async fn set(
        &self,
        name: &str,
        value: &str,
        content_type: Option<&str>,
        tags: &Value,
    ) -> anyhow::Result<Value> {
        let mut body = json!({ "value": value });
        if let Some(ct) = content_type {
            body["contentType"] = json!(ct);
        }
        if tags.as_object().is_some_and(|t| !t.is_empty()) {
            body["tags"] = tags.clone();
        }
        self.call(Method::PUT, &format!("/secrets/{}", enc(name)), Some(&body))
            .await
    }

    /// The latest version, or `version`.
    pub async fn get(&self, name: &str, version: Option<&str>) -> anyhow::Result<Value> {
        let path = format!("/secrets/{}/{}", enc(name), enc(version.unwrap_or("")));
        self.call(Method::GET, &path, None).await
    }

    /// Every secret's item (no values), following `nextLink`.
    pub async fn list(&self) -> anyhow::Result<Vec<Value>> {
        let url = format!(
            "{}/secrets?maxresults=25&api-version={SECRETS_API}",
            self.base
        );
        self.conn.list_all(&url, &self.scope).await
    }

    /// Deleted secrets still recoverable.
    pub async fn list_deleted(&self) -> anyhow::Result<Vec<Value>> {
        let url = format!(
            "{}/deletedsecrets?maxresults=25&api-version={SECRETS_API}",
            self.base
        );
        self.conn.list_all(&url, &self.scope).await
    }

    pub async fn delete(&self, name: &str) -> anyhow::Result<Value> {
        self.call(Method::DELETE, &format!("/secrets/{}", enc(name)), None)
            .await
    }

    pub async fn recover(&self, name: &str) -> anyhow::Result<Value> {
        let path = format!("/deletedsecrets/{}/recover", enc(name));
        self.call(Method::POST, &path, None).await
    }

    pub async fn purge(&self, name: &str) -> anyhow::Result<()> {
        self.call(
            Method::DELETE,
            &format!("/deletedsecrets/{}", enc(name)),
            None,
        )
        .await?;
        Ok(())
    }
}
