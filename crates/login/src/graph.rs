//! The Microsoft Graph subset for app registrations, under `/v1.0/`: applications, their
//! passwords, certificates and federated identity credentials, and service principals.
//!
//! Every call needs a bearer token for Graph (`https://graph.microsoft.com` or
//! `https://graph.{domain}`) from the tenant's administrator; anyone else is refused with
//! 403 `Authorization_RequestDenied`. See [`crate::apps`] for how objects are stored.
//!
//! Handlers parse, load, and hand what they read to the pure plans in [`plan`] (the batch
//! and the answer), committed through the platform's write path.

use std::future::Future;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use lanyard_domain::{Principal, PrincipalKind, ServicePrincipalSource};
use lanyard_platform::authn::{authenticate, Caller};
use lanyard_platform::{ApiError, AppState, Attempt, Retry, Step};
use lanyard_storage::StoreError;
use lanyard_token::Validator;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::apps::{self, Credentials, Filter};
use crate::errors::graph as err;
use crate::paths::GraphRoute;
use plan::ApplicationPatch;

pub mod plan;

/// How a Graph write commits: once; a lost race is an error (409).
const RETRY: Retry<ApiError> = Retry {
    attempts: 1,
    backoff: false,
    fail: store_failure,
};

fn store_failure(e: StoreError) -> ApiError {
    err::store(&e)
}

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

    /// Runs a write through the platform's write path: `attempt` loads what its plan (in
    /// [`plan`]) needs and plans. A Graph write is committed once: a lost race is 409.
    async fn transact<T, A, Fut>(&self, attempt: A) -> Result<T, ApiError>
    where
        A: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<Step<T>, ApiError>>,
    {
        lanyard_platform::transact(&self.state, RETRY, attempt).await
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
        let req = &parse::<ApplicationPatch>(body)?;
        let principal = self
            .transact(|_| async move {
                let (batch, principal) =
                    plan::create_application(req, self.tenant().id, self.state.clock.now())?;
                Ok(Step::Commit(batch, principal))
            })
            .await?;
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
        let req = &parse::<ApplicationPatch>(body)?;
        self.transact(|_| async move {
            let (p, creds) = self.application(id).await?;
            let batch = plan::patch_application(req, p, &creds, self.state.clock.now())?;
            Ok(Step::Commit(batch, ()))
        })
        .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    async fn delete_application(&self, id: &str) -> GraphResult {
        self.transact(|_| async move {
            let (p, _) = self.application(id).await?;
            let batch = plan::delete_principal(&p, self.state.directory.admin_object_id)?;
            Ok(Step::Commit(batch, ()))
        })
        .await?;
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
        let req = &body.password_credential.unwrap_or_default();
        let (secret, record) = self
            .transact(|_| async move {
                let (p, _) = self.application(id).await?;
                let now = self.state.clock.now();
                let time = |s: &Option<String>, default| match s {
                    None => Ok(default),
                    Some(s) => apps::parse_graph_time(s).ok_or_else(|| {
                        err::bad_request(format!("'{s}' is not a valid date and time."))
                    }),
                };
                let start = time(&req.start_date_time, now)?;
                let end = time(&req.end_date_time, now + apps::DEFAULT_PASSWORD_LIFETIME)?;
                if end <= start {
                    return Err(err::bad_request("endDateTime must be after startDateTime."));
                }
                let (secret, hash) = lanyard_token::generate_client_secret();
                let record = apps::secret_record(
                    Uuid::new_v4(),
                    p.object_id,
                    req.display_name.as_deref(),
                    &hash,
                    start,
                    end,
                );
                let batch = plan::add_credential(&p, record.clone());
                Ok(Step::Commit(batch, (secret, record)))
            })
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
        self.transact(|_| async move {
            let (p, creds) = self.application(id).await?;
            Ok(Step::Commit(
                plan::remove_password(&p, &creds, body.key_id)?,
                (),
            ))
        })
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
        let body = &plan::NewFederated {
            name: body.name,
            issuer: body.issuer,
            subject: body.subject,
            audiences: body.audiences,
            description: body.description,
        };
        let entry = self
            .transact(|_| async move {
                let (p, creds) = self.application(id).await?;
                let (batch, entry) =
                    plan::create_federated(body, &p, &creds, self.state.clock.now())?;
                Ok(Step::Commit(batch, entry))
            })
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
        self.transact(|_| async move {
            let (p, creds) = self.application(id).await?;
            let entry = Self::find_federated(&creds, fic).ok_or_else(|| err::not_found(fic))?;
            Ok(Step::Commit(plan::remove_credential(&p, entry.id), ()))
        })
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
        let app_id = &body
            .app_id
            .ok_or_else(|| err::bad_request("Property 'appId' is required."))?;
        let app = self
            .transact(|_| async move {
                let app = match Uuid::parse_str(app_id) {
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
                let batch =
                    plan::create_service_principal(&app, app_id, &creds, self.state.clock.now())?;
                Ok(Step::Commit(batch, app))
            })
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
        self.transact(|_| async move {
            let p = self.service_principal(id).await?;
            if p.is_managed_identity() {
                return Err(err::bad_request(
                    "A managed identity's service principal is deleted with its resource, not through Graph.",
                ));
            }
            let batch = plan::delete_principal(&p, self.state.directory.admin_object_id)?;
            Ok(Step::Commit(batch, ()))
        })
        .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
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
