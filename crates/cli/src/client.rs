//! How CLI commands reach a running server: its public REST APIs only, authenticated with
//! the administrator credential of a data directory, or with `AZURE_*` variables.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use lanyard_server::bootstrap::{read_admin, read_endpoints};
use lanyard_server::datadir::DataDir;
use serde_json::Value;

/// Exit code for a refusal by RBAC (documented in the README).
pub const EXIT_ACCESS_DENIED: u8 = 3;

/// An error the service returned, printed as `code: message` on one line.
#[derive(Debug)]
pub struct ServiceError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ServiceError {}

/// Where a server is and who we are to it.
pub struct Connection {
    /// `https://localhost:{port}`: control plane and token service.
    pub base: String,
    pub tenant_id: String,
    pub client_id: String,
    client_secret: String,
    /// The CA file clients must trust.
    pub ca_file: PathBuf,
    pub subscription_id: String,
    http: reqwest::Client,
}

impl Connection {
    /// From a data directory's `admin.json` and `endpoints.json`.
    pub fn from_data_dir(root: &Path) -> anyhow::Result<Self> {
        let dir = DataDir::existing(root)?;
        let admin = read_admin(&dir)?;
        let endpoints = read_endpoints(&dir)?;
        Self::new(
            format!("https://localhost:{}", endpoints.port),
            admin.tenant_id.to_string(),
            admin.client_id.to_string(),
            admin.client_secret,
            dir.ca_cert(),
            admin.subscription_id.to_string(),
        )
    }

    /// From `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`, `LANYARD_ARM_URL`,
    /// `REQUESTS_CA_BUNDLE`, `AZURE_SUBSCRIPTION_ID`.
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| {
            std::env::var(name)
                .map_err(|_| anyhow!("`{name}` is not set and no data directory was found"))
        };
        Self::new(
            var("LANYARD_ARM_URL")?,
            var("AZURE_TENANT_ID")?,
            var("AZURE_CLIENT_ID")?,
            var("AZURE_CLIENT_SECRET")?,
            PathBuf::from(var("REQUESTS_CA_BUNDLE")?),
            std::env::var("AZURE_SUBSCRIPTION_ID").unwrap_or_default(),
        )
    }

    /// The data directory if it holds an administrator credential, else the environment.
    pub fn resolve(data_dir: Option<&Path>) -> anyhow::Result<Self> {
        let root = data_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(lanyard_server::config::default_data_dir);
        if root.join("admin.json").exists() {
            return Self::from_data_dir(&root);
        }
        if data_dir.is_some() {
            bail!(
                "`{}` holds no administrator credential (admin.json)",
                root.display()
            );
        }
        Self::from_env()
    }

    fn new(
        base: String,
        tenant_id: String,
        client_id: String,
        client_secret: String,
        ca_file: PathBuf,
        subscription_id: String,
    ) -> anyhow::Result<Self> {
        let pem = std::fs::read(&ca_file)
            .with_context(|| format!("reading the CA file `{}`", ca_file.display()))?;
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            tenant_id,
            client_id,
            client_secret,
            ca_file,
            subscription_id,
            http,
        })
    }

    /// A token for `scope` through the client-credentials grant.
    pub async fn token(&self, scope: &str) -> anyhow::Result<String> {
        let url = format!("{}/{}/oauth2/v2.0/token", self.base, self.tenant_id);
        let response = self
            .http
            .post(&url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
                ("scope", scope),
            ])
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(ServiceError {
                status: status.as_u16(),
                code: body["error"].as_str().unwrap_or("error").to_string(),
                message: body["error_description"]
                    .as_str()
                    .unwrap_or("token request failed")
                    .to_string(),
            }
            .into());
        }
        body["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the token response has no access_token"))
    }

    /// A management-plane call; returns the JSON body (or `Null` for an empty one).
    pub async fn arm(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let token = self.token("https://management.azure.com/.default").await?;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(ServiceError {
                status: status.as_u16(),
                code: json["error"]["code"]
                    .as_str()
                    .unwrap_or("error")
                    .to_string(),
                message: json["error"]["message"]
                    .as_str()
                    .unwrap_or(text.as_str())
                    .to_string(),
            }
            .into());
        }
        Ok(json)
    }
}

/// The exit code for an error: 3 when the service refused access, else 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    match error.downcast_ref::<ServiceError>() {
        Some(e) if e.status == 403 => EXIT_ACCESS_DENIED,
        _ => 1,
    }
}
