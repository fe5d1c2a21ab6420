//! The Microsoft Graph subset for app registrations, under `/v1.0/`: applications, their
//! passwords, certificates and federated identity credentials, and service principals.
//!
//! Every call needs a bearer token for Graph (`https://graph.microsoft.com` or
//! `https://graph.{domain}`) from the tenant's administrator; anyone else is refused with
//! 403 `Authorization_RequestDenied`. See [`crate::apps`] for how objects are stored.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use lanyard_domain::{Principal, PrincipalKind, ServicePrincipalSource};
use lanyard_platform::authn::{authenticate, Caller};
use lanyard_platform::{ApiError, AppState};
use lanyard_storage::{Batch, Change, Expect};
use lanyard_token::credentials::CertificateCredential;
use lanyard_token::{FederatedCredential, Validator};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::apps::{self, ApplicationSettings, Credentials, Filter};
use crate::errors::graph as err;
use crate::paths::GraphRoute;

/// Largest Graph request body (a few certificates).
pub const MAX_JSON_BYTES: usize = 1024 * 1024;

/// The Graph API with its token validator.
pub struct Graph {
    state: AppState,
    validator: Validator,
}

/// A request, parsed down to what the handlers need.
pub struct GraphRequest<'a> {
    pub method: &'a Method,
    pub headers: &'a axum::http::HeaderMap,
    pub query: Option<&'a str>,
    pub body: Result<&'a [u8], ApiError>,
}

type GraphResult = Result<Response, ApiError>;

impl Graph {
    pub fn new(state: AppState) -> Self {
        let domain = &state.config.domain;
        let port = state.port;
        let validator = state.tokens.validator([
            "https://graph.microsoft.com".to_string(),
            format!("https://graph.{domain}"),
            format!("https://graph.{domain}:{port}"),
        ]);
        Self { state, validator }
    }

    /// Only the tenant's administrator manages app registrations.
    fn admin(&self, headers: &axum::http::HeaderMap) -> Result<Caller, ApiError> {
        let caller = authenticate(&self.state.tokens, &self.validator, headers)
            .map_err(|f| err::unauthenticated(&f.to_string()))?;
        if caller.object_id != self.state.directory.admin_object_id {
            return Err(err::denied());
        }
        Ok(caller)
    }

    pub async fn handle(&self, route: GraphRoute<'_>, req: GraphRequest<'_>) -> Response {
        match self.dispatch(route, req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    async fn dispatch(&self, route: GraphRoute<'_>, req: GraphRequest<'_>) -> GraphResult {
        self.admin(req.headers)?;
        let m = req.method;
        let json = || -> Result<Value, ApiError> {
            let bytes = req.body.clone()?;
            if bytes.is_empty() {
                return Ok(json!({}));
            }
            let value: Value = serde_json::from_slice(bytes).map_err(|e| {
                err::bad_request(format!("The request body is not valid JSON: {e}"))
            })?;
            // serde reads a struct from an array too (`[]` as `{}`); Graph takes objects only.
            if !value.is_object() {
                return Err(err::bad_request("The request body must be a JSON object."));
            }
            Ok(value)
        };
        let filter = || -> Result<Option<Filter>, ApiError> {
            match query_param(req.query, "$filter") {
                None => Ok(None),
                Some(f) => Filter::parse(&f)
                    .map(Some)
                    .ok_or_else(|| err::bad_request(format!("Unsupported filter '{f}'."))),
            }
        };
        use GraphRoute::*;
        match (route, m.clone()) {
            (Applications, Method::GET) => self.list_applications(filter()?).await,
            (Applications, Method::POST) => self.create_application(json()?).await,
            (Application(id), Method::GET) => self.get_application(id).await,
            (Application(id), Method::PATCH) => self.patch_application(id, json()?).await,
            (Application(id), Method::DELETE) => self.delete_application(id).await,
            (AddPassword(id), Method::POST) => self.add_password(id, json()?).await,
            (RemovePassword(id), Method::POST) => self.remove_password(id, json()?).await,
            (FederatedCredentials(id), Method::GET) => self.list_federated(id).await,
            (FederatedCredentials(id), Method::POST) => self.create_federated(id, json()?).await,
            (FederatedCredential(id, fic), Method::GET) => self.get_federated(id, fic).await,
            (FederatedCredential(id, fic), Method::DELETE) => self.delete_federated(id, fic).await,
            (ServicePrincipals, Method::GET) => self.list_service_principals(filter()?).await,
            (ServicePrincipals, Method::POST) => self.create_service_principal(json()?).await,
            (ServicePrincipal(id), Method::GET) => self.get_service_principal(id).await,
            (ServicePrincipal(id), Method::DELETE) => self.delete_service_principal(id).await,
            (_, m) => Err(err::method(m.as_str())),
        }
    }

    // -----------------------------------------------------------------------------------
    // Lookups

    /// An application by object id or app id, with its credentials.
    async fn application(&self, id: &str) -> Result<(Principal, Credentials), ApiError> {
        let principal = self
            .principal(id)
            .await?
            .filter(is_application)
            .ok_or_else(|| err::not_found(id))?;
        let creds = self.credentials(principal.object_id).await?;
        Ok((principal, creds))
    }

    async fn principal(&self, id: &str) -> Result<Option<Principal>, ApiError> {
        let Ok(uuid) = Uuid::parse_str(id) else {
            return Ok(None);
        };
        let store = &self.state.store;
        if let Some(p) = store.principal(uuid).await.map_err(|e| err::store(&e))? {
            return Ok(Some(p));
        }
        store
            .principal_by_client_id(uuid)
            .await
            .map_err(|e| err::store(&e))
    }

    async fn credentials(&self, principal: Uuid) -> Result<Credentials, ApiError> {
        let records = self
            .state
            .store
            .credentials_of(principal)
            .await
            .map_err(|e| err::store(&e))?;
        Ok(Credentials::from_records(&records))
    }

    async fn commit(&self, batch: Batch) -> Result<(), ApiError> {
        self.state.commit(batch).await.map_err(|e| err::store(&e))
    }

    fn tenant(&self) -> &lanyard_domain::Tenant {
        &self.state.directory.tenant
    }

    // -----------------------------------------------------------------------------------
    // Applications

    async fn list_applications(&self, filter: Option<Filter>) -> GraphResult {
        let principals = self
            .state
            .store
            .principals()
            .await
            .map_err(|e| err::store(&e))?;
        let mut values = Vec::new();
        for p in principals.iter().filter(|p| is_application(p)) {
            if filter.as_ref().is_some_and(|f| !f.matches(p)) {
                continue;
            }
            let creds = self.credentials(p.object_id).await?;
            values.push(apps::application_json(p, &creds, self.tenant()));
        }
        Ok(axum::Json(apps::collection("applications", values)).into_response())
    }

    async fn create_application(&self, body: Value) -> GraphResult {
        let req: ApplicationPatch = parse(body)?;
        let name = req
            .display_name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| err::bad_request("Property 'displayName' is required."))?;
        let now = self.state.clock.now();
        let principal = Principal {
            object_id: Uuid::new_v4(),
            tenant_id: self.tenant().id,
            display_name: name,
            kind: PrincipalKind::ServicePrincipal {
                client_id: Uuid::new_v4(),
                source: ServicePrincipalSource::Application,
            },
        };
        let mut settings = ApplicationSettings {
            service_principal: false,
            ..Default::default()
        };
        req.apply_settings(&mut settings)?;
        let mut batch = Batch::new()
            .with(Change::PutPrincipal(principal.clone()))
            .with(Change::PutCredential(apps::settings_record(
                Uuid::new_v4(),
                principal.object_id,
                &settings,
                now,
            )));
        if let Some(keys) = &req.key_credentials {
            for change in key_changes(principal.object_id, &Credentials::default(), keys, now)? {
                batch.push(change);
            }
        }
        self.commit(batch).await?;
        let creds = self.credentials(principal.object_id).await?;
        Ok((
            StatusCode::CREATED,
            axum::Json(apps::application_json(&principal, &creds, self.tenant())),
        )
            .into_response())
    }

    async fn get_application(&self, id: &str) -> GraphResult {
        let (p, creds) = self.application(id).await?;
        Ok(axum::Json(apps::application_json(&p, &creds, self.tenant())).into_response())
    }

    async fn patch_application(&self, id: &str, body: Value) -> GraphResult {
        let req: ApplicationPatch = parse(body)?;
        let (mut p, creds) = self.application(id).await?;
        let now = self.state.clock.now();
        let mut batch = Batch::new().expect(Expect::PrincipalExists(p.object_id));
        if let Some(name) = &req.display_name {
            if name.trim().is_empty() {
                return Err(err::bad_request("Property 'displayName' cannot be empty."));
            }
            p.display_name = name.clone();
            batch.push(Change::PutPrincipal(p.clone()));
        }
        if req.touches_settings() {
            let mut settings = creds.settings();
            req.apply_settings(&mut settings)?;
            let record_id = creds
                .application
                .as_ref()
                .map_or_else(Uuid::new_v4, |(id, _)| *id);
            batch.push(Change::PutCredential(apps::settings_record(
                record_id,
                p.object_id,
                &settings,
                now,
            )));
        }
        if let Some(keys) = &req.key_credentials {
            for change in key_changes(p.object_id, &creds, keys, now)? {
                batch.push(change);
            }
        }
        self.commit(batch).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    async fn delete_application(&self, id: &str) -> GraphResult {
        let (p, _) = self.application(id).await?;
        self.delete_principal(&p).await
    }

    /// Deletes a principal with its credentials and role assignments and revokes its tokens,
    /// in one batch.
    async fn delete_principal(&self, p: &Principal) -> GraphResult {
        if p.object_id == self.state.directory.admin_object_id {
            return Err(err::bad_request(
                "The tenant's administrator cannot be deleted.",
            ));
        }
        let revoke = lanyard_platform::tokens::retirement(p.object_id);
        let batch = Batch::new()
            .expect(Expect::PrincipalExists(p.object_id))
            .with(Change::DeleteCredentialsOf(p.object_id))
            .with(Change::DeleteAssignmentsOfPrincipal(p.object_id))
            .with(Change::DeletePrincipal(p.object_id))
            .with(revoke);
        self.commit(batch).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    async fn add_password(&self, id: &str, body: Value) -> GraphResult {
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            #[serde(default)]
            password_credential: Option<PasswordRequest>,
        }
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct PasswordRequest {
            #[serde(default)]
            display_name: Option<String>,
            #[serde(default)]
            start_date_time: Option<String>,
            #[serde(default)]
            end_date_time: Option<String>,
        }
        let body: Body = parse(body)?;
        let req = body.password_credential.unwrap_or_default();
        let (p, _) = self.application(id).await?;
        let now = self.state.clock.now();
        let time = |s: &Option<String>, default| match s {
            None => Ok(default),
            Some(s) => apps::parse_graph_time(s)
                .ok_or_else(|| err::bad_request(format!("'{s}' is not a valid date and time."))),
        };
        let start = time(&req.start_date_time, now)?;
        let end = time(&req.end_date_time, now + apps::DEFAULT_PASSWORD_LIFETIME)?;
        if end <= start {
            return Err(err::bad_request("endDateTime must be after startDateTime."));
        }
        let (secret, hash) = lanyard_token::generate_client_secret();
        let key_id = Uuid::new_v4();
        let record = apps::secret_record(
            key_id,
            p.object_id,
            req.display_name.as_deref(),
            &hash,
            start,
            end,
        );
        self.commit(
            Batch::new()
                .expect(Expect::PrincipalExists(p.object_id))
                .with(Change::PutCredential(record.clone())),
        )
        .await?;
        let entry = Credentials::from_records(&[record])
            .secrets
            .pop()
            .ok_or_else(|| err::bad_request("The password could not be stored."))?;
        let mut body = apps::password_json(&entry, Some(secret.expose()));
        body["@odata.context"] =
            json!("https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.passwordCredential");
        Ok(axum::Json(body).into_response())
    }

    async fn remove_password(&self, id: &str, body: Value) -> GraphResult {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            key_id: Uuid,
        }
        let body: Body = parse(body)?;
        let (p, creds) = self.application(id).await?;
        if !creds.secrets.iter().any(|s| s.key_id == body.key_id) {
            return Err(err::not_found(&body.key_id.to_string()));
        }
        self.commit(
            Batch::new()
                .expect(Expect::PrincipalExists(p.object_id))
                .with(Change::DeleteCredential(body.key_id)),
        )
        .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    // -----------------------------------------------------------------------------------
    // Federated identity credentials

    async fn list_federated(&self, id: &str) -> GraphResult {
        let (p, creds) = self.application(id).await?;
        let values = creds.federated.iter().map(apps::federated_json).collect();
        let context = format!(
            "applications('{}')/federatedIdentityCredentials",
            p.object_id
        );
        Ok(axum::Json(apps::collection(&context, values)).into_response())
    }

    async fn create_federated(&self, id: &str, body: Value) -> GraphResult {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            name: Option<String>,
            issuer: Option<String>,
            subject: Option<String>,
            audiences: Option<Vec<String>>,
            description: Option<String>,
        }
        let body: Body = parse(body)?;
        let (p, creds) = self.application(id).await?;
        let required = |v: Option<String>, name: &str| {
            v.filter(|s| !s.trim().is_empty())
                .ok_or_else(|| err::bad_request(format!("Property '{name}' is required.")))
        };
        let name = required(body.name, "name")?;
        let issuer = required(body.issuer, "issuer")?;
        let subject = required(body.subject, "subject")?;
        if !apps::valid_fic_name(&name) {
            return Err(err::bad_request(format!(
                "Name '{name}' is invalid: 3 to 120 letters, digits, '-' or '_', starting with a letter or digit."
            )));
        }
        if !issuer.starts_with("https://") || issuer.len() > 600 || subject.len() > 600 {
            return Err(err::bad_request(
                "The issuer must be an https URL and issuer and subject at most 600 characters.",
            ));
        }
        let audiences = body.audiences.unwrap_or_default();
        if audiences.len() != 1 || audiences.iter().any(|a| a.is_empty() || a.len() > 600) {
            return Err(err::bad_request(
                "Property 'audiences' must hold exactly one value.",
            ));
        }
        if creds
            .federated
            .iter()
            .any(|f| f.credential.name.eq_ignore_ascii_case(&name))
        {
            return Err(err::conflict(format!(
                "A federated identity credential named '{name}' already exists."
            )));
        }
        let entry = apps::FederatedEntry {
            id: Uuid::new_v4(),
            description: body.description,
            credential: FederatedCredential {
                name,
                issuer,
                subject,
                audiences,
            },
        };
        let record = apps::federated_record(
            entry.id,
            p.object_id,
            &entry.credential,
            entry.description.as_deref(),
            self.state.clock.now(),
        );
        self.commit(
            Batch::new()
                .expect(Expect::PrincipalExists(p.object_id))
                .with(Change::PutCredential(record)),
        )
        .await?;
        Ok((
            StatusCode::CREATED,
            axum::Json(apps::federated_json(&entry)),
        )
            .into_response())
    }

    fn find_federated<'c>(creds: &'c Credentials, fic: &str) -> Option<&'c apps::FederatedEntry> {
        creds.federated.iter().find(|f| {
            f.id.to_string().eq_ignore_ascii_case(fic)
                || f.credential.name.eq_ignore_ascii_case(fic)
        })
    }

    async fn get_federated(&self, id: &str, fic: &str) -> GraphResult {
        let (_, creds) = self.application(id).await?;
        let entry = Self::find_federated(&creds, fic).ok_or_else(|| err::not_found(fic))?;
        Ok(axum::Json(apps::federated_json(entry)).into_response())
    }

    async fn delete_federated(&self, id: &str, fic: &str) -> GraphResult {
        let (p, creds) = self.application(id).await?;
        let entry = Self::find_federated(&creds, fic).ok_or_else(|| err::not_found(fic))?;
        self.commit(
            Batch::new()
                .expect(Expect::PrincipalExists(p.object_id))
                .with(Change::DeleteCredential(entry.id)),
        )
        .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    // -----------------------------------------------------------------------------------
    // Service principals

    /// Whether `p` is a service principal that exists in Graph's sense.
    async fn has_service_principal(&self, p: &Principal) -> Result<bool, ApiError> {
        Ok(match &p.kind {
            PrincipalKind::ServicePrincipal {
                source: ServicePrincipalSource::Application,
                ..
            } => {
                self.credentials(p.object_id)
                    .await?
                    .settings()
                    .service_principal
            }
            PrincipalKind::ServicePrincipal { .. } => true,
            _ => false,
        })
    }

    async fn list_service_principals(&self, filter: Option<Filter>) -> GraphResult {
        let principals = self
            .state
            .store
            .principals()
            .await
            .map_err(|e| err::store(&e))?;
        let mut values = Vec::new();
        for p in &principals {
            if filter.as_ref().is_some_and(|f| !f.matches(p)) {
                continue;
            }
            if self.has_service_principal(p).await? {
                values.push(apps::service_principal_json(p, self.tenant()));
            }
        }
        Ok(axum::Json(apps::collection("servicePrincipals", values)).into_response())
    }

    async fn create_service_principal(&self, body: Value) -> GraphResult {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            app_id: Option<String>,
        }
        let body: Body = parse(body)?;
        let app_id = body
            .app_id
            .ok_or_else(|| err::bad_request("Property 'appId' is required."))?;
        let app = match Uuid::parse_str(&app_id) {
            Ok(id) => self
                .state
                .store
                .principal_by_client_id(id)
                .await
                .map_err(|e| err::store(&e))?,
            Err(_) => None,
        }
        .filter(is_application)
        .ok_or_else(|| {
            err::bad_request(format!(
                "The appId '{app_id}' of the service principal does not reference a valid application object."
            ))
        })?;
        let creds = self.credentials(app.object_id).await?;
        let mut settings = creds.settings();
        if settings.service_principal {
            return Err(err::conflict(format!(
                "A service principal for application '{app_id}' already exists."
            )));
        }
        settings.service_principal = true;
        let record_id = creds
            .application
            .as_ref()
            .map_or_else(Uuid::new_v4, |(id, _)| *id);
        self.commit(
            Batch::new()
                .expect(Expect::PrincipalExists(app.object_id))
                .with(Change::PutCredential(apps::settings_record(
                    record_id,
                    app.object_id,
                    &settings,
                    self.state.clock.now(),
                ))),
        )
        .await?;
        Ok((
            StatusCode::CREATED,
            axum::Json(apps::service_principal_json(&app, self.tenant())),
        )
            .into_response())
    }

    async fn service_principal(&self, id: &str) -> Result<Principal, ApiError> {
        match self.principal(id).await? {
            Some(p) if self.has_service_principal(&p).await? => Ok(p),
            _ => Err(err::not_found(id)),
        }
    }

    async fn get_service_principal(&self, id: &str) -> GraphResult {
        let p = self.service_principal(id).await?;
        Ok(axum::Json(apps::service_principal_json(&p, self.tenant())).into_response())
    }

    async fn delete_service_principal(&self, id: &str) -> GraphResult {
        let p = self.service_principal(id).await?;
        if p.is_managed_identity() {
            return Err(err::bad_request(
                "A managed identity's service principal is deleted with its resource, not through Graph.",
            ));
        }
        self.delete_principal(&p).await
    }
}

fn is_application(p: &Principal) -> bool {
    matches!(
        p.kind,
        PrincipalKind::ServicePrincipal {
            source: ServicePrincipalSource::Application,
            ..
        }
    )
}

fn parse<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, ApiError> {
    serde_json::from_value(body)
        .map_err(|e| err::bad_request(format!("The request body is not valid: {e}")))
}

/// One query parameter, decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The writable properties of an application (POST and PATCH).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ApplicationPatch {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    identifier_uris: Option<Vec<String>>,
    #[serde(default)]
    api: Option<ApiSettings>,
    /// The manifest's name for `api.requestedAccessTokenVersion`.
    #[serde(default)]
    access_token_accepted_version: Option<Option<u8>>,
    #[serde(default)]
    key_credentials: Option<Vec<KeyCredentialRequest>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ApiSettings {
    #[serde(default)]
    requested_access_token_version: Option<Option<u8>>,
}

impl ApplicationPatch {
    fn touches_settings(&self) -> bool {
        self.description.is_some()
            || self.identifier_uris.is_some()
            || self.access_token_accepted_version.is_some()
            || self
                .api
                .as_ref()
                .is_some_and(|a| a.requested_access_token_version.is_some())
    }

    fn apply_settings(&self, settings: &mut ApplicationSettings) -> Result<(), ApiError> {
        let version = self
            .api
            .as_ref()
            .and_then(|a| a.requested_access_token_version)
            .or(self.access_token_accepted_version);
        if let Some(v) = version {
            if !matches!(v, None | Some(1) | Some(2)) {
                return Err(err::bad_request(
                    "requestedAccessTokenVersion must be null, 1 or 2.",
                ));
            }
            settings.requested_access_token_version = v;
        }
        if let Some(uris) = &self.identifier_uris {
            settings.identifier_uris = uris.clone();
        }
        if let Some(d) = &self.description {
            settings.description = Some(d.clone());
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyCredentialRequest {
    #[serde(default, rename = "type")]
    key_type: Option<String>,
    #[serde(default)]
    usage: Option<String>,
    /// Base64 of the certificate's DER (or of its PEM).
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_id: Option<Uuid>,
    #[serde(default)]
    display_name: Option<String>,
}

/// The changes that make an application's certificates exactly `wanted`: entries with a
/// `key` are added (or replace the certificate with their `keyId`), entries with only the
/// `keyId` of a registered certificate keep it, and every other certificate is removed.
fn key_changes(
    principal: Uuid,
    existing: &Credentials,
    wanted: &[KeyCredentialRequest],
    now: time::OffsetDateTime,
) -> Result<Vec<Change>, ApiError> {
    let mut keep = Vec::new();
    let mut changes = Vec::new();
    for entry in wanted {
        let ty = entry.key_type.as_deref().unwrap_or("AsymmetricX509Cert");
        if !ty.eq_ignore_ascii_case("AsymmetricX509Cert") {
            return Err(err::bad_request(format!(
                "Key credential type '{ty}' is not supported; use 'AsymmetricX509Cert'."
            )));
        }
        let usage = entry.usage.as_deref().unwrap_or("Verify");
        if !usage.eq_ignore_ascii_case("Verify") {
            return Err(err::bad_request(format!(
                "Key credential usage '{usage}' is not supported; use 'Verify'."
            )));
        }
        match (&entry.key, entry.key_id) {
            (Some(key), key_id) => {
                let certificate = parse_certificate(key)?;
                let key_id = key_id.unwrap_or_else(Uuid::new_v4);
                keep.push(key_id);
                changes.push(Change::PutCredential(apps::certificate_record(
                    key_id,
                    principal,
                    entry.display_name.as_deref(),
                    &certificate,
                    now,
                )));
            }
            (None, Some(key_id)) if existing.certificates.iter().any(|c| c.key_id == key_id) => {
                keep.push(key_id);
            }
            (None, _) => {
                return Err(err::bad_request(
                    "A new key credential needs its 'key' (the base64 certificate).",
                ))
            }
        }
    }
    for c in &existing.certificates {
        if !keep.contains(&c.key_id) {
            changes.push(Change::DeleteCredential(c.key_id));
        }
    }
    Ok(changes)
}

fn parse_certificate(key: &str) -> Result<CertificateCredential, ApiError> {
    let compact: String = key.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = STANDARD
        .decode(compact)
        .map_err(|_| err::bad_request("Key credential 'key' is not base64."))?;
    let parsed = if bytes.starts_with(b"-----BEGIN") {
        CertificateCredential::from_pem(&String::from_utf8_lossy(&bytes))
    } else {
        CertificateCredential::from_der(&bytes)
    };
    parsed.map_err(|e| err::bad_request(format!("Key credential 'key' is not usable: {e}.")))
}
