//! The token endpoints (`/{tenant}/oauth2/token`, `/{tenant}/oauth2/v2.0/token`): the
//! client-credentials grant with a client secret, a certificate-signed client assertion, or a
//! federated assertion from an external issuer.
//!
//! [`TokenService::request`] authenticates the client and issues the token (through the token
//! runtime's mint guard, so a principal deleted or revoked while the request is read gets
//! no token that outlives the revocation); every outcome,
//! issued or refused, is written to the sign-in log before the client hears it (with group
//! commits: [`crate::audit`]).
//!
//! Client assertions (certificate and federated) are accepted for at most the configured
//! lifetime ([`Config::client_assertion_max_lifetime`] and
//! [`Config::federated_assertion_max_lifetime`]). An issuer whose keys cannot be fetched is
//! answered with AADSTS50166 and a trace id; the cause is logged under that id only.
//!
//! [`Config::client_assertion_max_lifetime`]: lanyard_platform::config::Config
//! [`Config::federated_assertion_max_lifetime`]: lanyard_platform::config::Config

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use lanyard_domain::{PrincipalKind, ResourceId, ServicePrincipalSource};
use lanyard_platform::tokens::GuardedMintError;
use lanyard_platform::AppState;
use lanyard_storage::{ResourceQuery, SignInRecord};
use lanyard_token::credentials::{verify_client_assertion, verify_federated_assertion_with_keys};
use lanyard_token::{
    peek_unverified_issuer, AssertionError, ClientAuthMethod, FederatedCredential, TokenRequest,
    TokenServiceError, TokenVersion,
};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::apps::Credentials;
use crate::audit::SignInLog;
use crate::discovery::{resolve_tenant, token_endpoint_audiences};
use crate::errors::TokenError;
use crate::federation::{FetchError, IssuerKeys};
use crate::form::{
    apply_basic_auth, bounded, parse_form, requested_resource, EndpointVersion, JWT_BEARER,
};
use crate::outbound::AddressPolicy;

/// The ARM type of a user-assigned identity's federated identity credentials.
pub const UAI_FIC_TYPE: &str =
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials";

/// What the sign-in log learns about a request as it is processed.
#[derive(Debug, Default)]
struct SignIn {
    principal: Option<Uuid>,
    client_id: Option<Uuid>,
    resource: String,
}

/// A token issued.
struct Issued {
    access_token: String,
    expires_in: i64,
    expires_on: i64,
    not_before: i64,
    resource: String,
    auth: ClientAuthMethod,
}

/// The token endpoint with what it keeps between requests.
pub struct TokenService {
    state: AppState,
    issuers: IssuerKeys,
    /// Longest accepted lifetimes of certificate and federated assertions, in seconds.
    client_assertion_max_lifetime: i64,
    federated_assertion_max_lifetime: i64,
    sign_ins: SignInLog,
    tenant_created: tokio::sync::OnceCell<i64>,
}

impl TokenService {
    pub fn new(state: AppState) -> Self {
        let config = &state.config;
        let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Self {
            sign_ins: SignInLog::start(state.clone()),
            issuers: IssuerKeys::new(AddressPolicy::new(
                config.federation_allowed_networks.clone(),
            )),
            client_assertion_max_lifetime: secs(config.client_assertion_max_lifetime),
            federated_assertion_max_lifetime: secs(config.federated_assertion_max_lifetime),
            state,
            tenant_created: tokio::sync::OnceCell::new(),
        }
    }

    /// Handles one token request. `base` is the URL the client reached us at; `body` is
    /// already read (or the reason it could not be).
    pub async fn request(
        &self,
        tenant: &str,
        version: EndpointVersion,
        base: &str,
        headers: &HeaderMap,
        body: Result<&[u8], TokenError>,
    ) -> Response {
        let mut sign_in = SignIn::default();
        let outcome = self
            .issue(tenant, version, base, headers, body, &mut sign_in)
            .await;
        let (result, reason) = match &outcome {
            Ok(issued) => ("success", Some(auth_reason(issued.auth).to_string())),
            Err(e) => ("failure", Some(e.reason())),
        };
        let logged = self.record(sign_in, result, reason).await;
        match outcome {
            Ok(issued) => match logged {
                // An unaudited token is not handed out.
                Err(e) => TokenError::Store(e).into_api().into_response(),
                Ok(()) => token_response(&issued, version),
            },
            Err(e) => {
                if let Err(log) = logged {
                    tracing::warn!(error = %log, "a refused token request could not be logged");
                }
                e.into_api().into_response()
            }
        }
    }

    async fn record(
        &self,
        sign_in: SignIn,
        result: &str,
        reason: Option<String>,
    ) -> Result<(), lanyard_storage::StoreError> {
        let record = SignInRecord {
            id: Uuid::new_v4(),
            time: self.state.clock.now(),
            principal_id: sign_in.principal,
            client_id: sign_in.client_id,
            resource: sign_in.resource,
            source: "token_endpoint".into(),
            session: None,
            result: result.into(),
            reason,
        };
        self.sign_ins.append(record).await
    }

    async fn issue(
        &self,
        tenant: &str,
        version: EndpointVersion,
        base: &str,
        headers: &HeaderMap,
        body: Result<&[u8], TokenError>,
        sign_in: &mut SignIn,
    ) -> Result<Issued, TokenError> {
        let directory = &self.state.directory;
        let tenant_id = resolve_tenant(&directory.tenant, tenant).ok_or_else(|| {
            TokenServiceError::UnknownTenant {
                tenant: bounded(tenant),
            }
        })?;
        let body = body?;
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let mut form = parse_form(content_type, body)?;
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        apply_basic_auth(&mut form, authorization)?;

        let grant = form
            .grant_type
            .as_deref()
            .ok_or(TokenError::MissingParameter("grant_type"))?;
        if grant != "client_credentials" {
            return Err(TokenServiceError::UnsupportedGrantType {
                grant_type: bounded(grant),
            }
            .into());
        }
        let client_text = form
            .client_id
            .clone()
            .ok_or(TokenError::MissingParameter("client_id"))?;
        sign_in.client_id = Uuid::parse_str(&client_text).ok();
        let resource = requested_resource(&form, version).map_err(|e| match e {
            TokenError::Service(TokenServiceError::InvalidResource { resource, .. }) => {
                TokenServiceError::InvalidResource {
                    resource,
                    tenant: tenant_id.to_string(),
                }
                .into()
            }
            other => other,
        })?;
        sign_in.resource = resource.clone();

        let unknown_client = || TokenServiceError::UnknownClient {
            client_id: bounded(&client_text),
            tenant: tenant_id.to_string(),
        };
        let client_id = sign_in.client_id.ok_or_else(unknown_client)?;
        // Before the principal is read: a revocation committed meanwhile drops the token.
        let guard = self.state.tokens.mint_guard();
        let principal = self
            .state
            .store
            .principal_by_client_id(client_id)
            .await?
            .filter(|p| p.tenant_id == tenant_id)
            .ok_or_else(unknown_client)?;
        sign_in.principal = Some(principal.object_id);
        let PrincipalKind::ServicePrincipal { source, .. } = &principal.kind else {
            return Err(unknown_client().into());
        };
        let creds =
            Credentials::from_records(&self.state.store.credentials_of(principal.object_id).await?);

        let auth = match (&form.client_secret, &form.client_assertion) {
            (Some(_), Some(_)) => {
                return Err(TokenError::Malformed(
                    "send either client_secret or client_assertion, not both".into(),
                ))
            }
            (None, None) => return Err(TokenServiceError::MissingClientCredential.into()),
            (Some(secret), None) => {
                let now = self.state.clock.now();
                // A managed identity has no secret: nothing it is sent can match.
                let is_app = matches!(source, ServicePrincipalSource::Application);
                if !(is_app && creds.secrets.iter().any(|s| s.accepts(secret, now))) {
                    return Err(TokenServiceError::InvalidClientSecret {
                        client_id: client_id.to_string(),
                    }
                    .into());
                }
                ClientAuthMethod::ClientSecret
            }
            (None, Some(assertion)) => {
                if form.client_assertion_type.as_deref() != Some(JWT_BEARER) {
                    return Err(TokenServiceError::MalformedAssertion {
                        reason: format!("client_assertion_type must be '{JWT_BEARER}'"),
                    }
                    .into());
                }
                let iss = peek_unverified_issuer(assertion).map_err(TokenServiceError::from)?;
                if iss.eq_ignore_ascii_case(&client_id.to_string()) {
                    self.verify_certificate(assertion, &iss, base, &creds)?;
                    ClientAuthMethod::Certificate
                } else {
                    let candidates = self.federated_candidates(source, &creds).await?;
                    self.verify_federated(assertion, &iss, &candidates).await?;
                    ClientAuthMethod::FederatedAssertion
                }
            }
        };
        if matches!(source, ServicePrincipalSource::Application)
            && !creds.settings().service_principal
        {
            return Err(TokenError::NoServicePrincipal(client_id.to_string()));
        }

        let token_version = match version {
            EndpointVersion::V1 => TokenVersion::V1,
            EndpointVersion::V2 => self.resource_token_version(&resource).await?,
        };
        let tenant_created = self.tenant_created().await;
        let request = TokenRequest::application(&principal, auth, &resource, tenant_created)
            .map_err(|e| TokenError::Internal(e.to_string()))?
            .with_version(token_version);
        let store = &self.state.store;
        let object_id = principal.object_id;
        let (minted, claims) = self
            .state
            .tokens
            .issue_guarded(guard, &request, || async move {
                // Revoking tokens keeps the principal; deleting it does not.
                matches!(store.principal(object_id).await, Ok(Some(_)))
            })
            .await
            .map_err(|e| match e {
                GuardedMintError::Gone => unknown_client().into(),
                GuardedMintError::Busy => {
                    TokenError::Store(lanyard_storage::StoreError::Unavailable(e.to_string()))
                }
                GuardedMintError::Mint(e) => TokenError::Internal(e.to_string()),
            })?;
        Ok(Issued {
            expires_in: minted.expires_on - claims.iat,
            expires_on: minted.expires_on,
            not_before: minted.not_before,
            access_token: minted.access_token,
            resource,
            auth,
        })
    }

    fn verify_certificate(
        &self,
        assertion: &str,
        iss: &str,
        base: &str,
        creds: &Credentials,
    ) -> Result<(), TokenError> {
        let endpoints = self.state.endpoints();
        let mut bases = vec![base.to_string(), endpoints.localhost(), endpoints.login()];
        bases.dedup();
        let audiences = token_endpoint_audiences(&bases, &self.state.directory.tenant);
        let certificates: Vec<_> = creds
            .certificates
            .iter()
            .map(|c| c.certificate.clone())
            .collect();
        verify_client_assertion(
            assertion,
            iss,
            &audiences,
            &certificates,
            self.state.clock.as_ref(),
            self.client_assertion_max_lifetime,
        )
        .map(|_| ())
        .map_err(|e| TokenServiceError::from(e).into())
    }

    /// The federated credentials an assertion for this client may match: the application's,
    /// or those of the user-assigned identity (ARM child resources).
    async fn federated_candidates(
        &self,
        source: &ServicePrincipalSource,
        creds: &Credentials,
    ) -> Result<Vec<FederatedCredential>, TokenError> {
        Ok(match source {
            ServicePrincipalSource::Application => creds
                .federated
                .iter()
                .map(|f| f.credential.clone())
                .collect(),
            ServicePrincipalSource::UserAssigned { identity } => {
                self.identity_credentials(identity).await?
            }
            // Azure has no federation for system-assigned identities.
            ServicePrincipalSource::SystemAssigned { .. } => Vec::new(),
        })
    }

    async fn identity_credentials(
        &self,
        identity: &ResourceId,
    ) -> Result<Vec<FederatedCredential>, TokenError> {
        let records = self
            .state
            .store
            .resources(&ResourceQuery {
                parent: Some(identity.clone()),
                resource_type: Some(UAI_FIC_TYPE.to_string()),
                ..Default::default()
            })
            .await?;
        Ok(records
            .iter()
            .filter(|r| r.resource_type.eq_ignore_ascii_case(UAI_FIC_TYPE))
            .filter_map(|r| uai_credential(r.id.name(), &r.body))
            .collect())
    }

    async fn verify_federated(
        &self,
        assertion: &str,
        iss: &str,
        candidates: &[FederatedCredential],
    ) -> Result<(), TokenError> {
        if !candidates.iter().any(|c| c.issuer == iss) {
            // Refused before any request to the issuer: only configured issuers are fetched.
            let (subject, audience) = peek_subject_audience(assertion);
            return Err(TokenServiceError::NoMatchingFederatedCredential {
                issuer: bounded(iss),
                subject,
                audience,
            }
            .into());
        }
        let clock = self.state.clock.as_ref();
        let max = self.federated_assertion_max_lifetime;
        let keys = self.issuers.keys(iss, false).await.map_err(unreachable)?;
        let result =
            match verify_federated_assertion_with_keys(assertion, &keys, candidates, clock, max) {
                Err(AssertionError::UnknownKey(_)) => {
                    // The issuer may have rotated its keys since we fetched them.
                    let keys = self.issuers.keys(iss, true).await.map_err(unreachable)?;
                    verify_federated_assertion_with_keys(assertion, &keys, candidates, clock, max)
                        .map(|_| ())
                }
                other => other.map(|_| ()),
            };
        result.map_err(|e| TokenServiceError::from(e).into())
    }

    /// v2 tokens for a resource that is an application asking for them
    /// (`api.requestedAccessTokenVersion: 2`), named by its app id or `api://{appId}`.
    async fn resource_token_version(&self, resource: &str) -> Result<TokenVersion, TokenError> {
        let id = resource
            .strip_prefix("api://")
            .unwrap_or(resource)
            .trim_end_matches('/');
        let Ok(app_id) = Uuid::parse_str(id) else {
            return Ok(TokenVersion::V1);
        };
        let Some(app) = self.state.store.principal_by_client_id(app_id).await? else {
            return Ok(TokenVersion::V1);
        };
        if !matches!(
            app.kind,
            PrincipalKind::ServicePrincipal {
                source: ServicePrincipalSource::Application,
                ..
            }
        ) {
            return Ok(TokenVersion::V1);
        }
        let creds =
            Credentials::from_records(&self.state.store.credentials_of(app.object_id).await?);
        Ok(creds.settings().token_version())
    }

    /// `xms_tcdt`: when the directory was made (its administrator's first credential).
    async fn tenant_created(&self) -> i64 {
        let admin = self.state.directory.admin_object_id;
        let store = Arc::clone(&self.state.store);
        let found = self
            .tenant_created
            .get_or_try_init(|| async move {
                let records = store.credentials_of(admin).await?;
                Ok::<_, lanyard_storage::StoreError>(
                    records
                        .iter()
                        .map(|r| r.created_at.unix_timestamp())
                        .min()
                        .unwrap_or(0),
                )
            })
            .await;
        found.copied().unwrap_or(0)
    }
}

/// A failed fetch of an issuer's keys. The client learns only that it failed, and a trace
/// id; the cause (addresses, network and TLS errors, the issuer's answers) goes to the log
/// under that id, since whoever wrote the federated credential chose the URL and must not
/// get a probe of the server's network out of it.
fn unreachable(e: FetchError) -> TokenError {
    let trace_id = Uuid::new_v4();
    match &e {
        FetchError::Trust(reason) => tracing::error!(
            %trace_id,
            %reason,
            "external issuers cannot be trusted: fix {}",
            crate::federation::EXTRA_CA_VAR
        ),
        FetchError::Refused { .. } => tracing::warn!(
            %trace_id,
            error = %e,
            "an external issuer's keys were not fetched: its address is refused (allow its network with federation-allowed-networks)"
        ),
        _ => {
            tracing::warn!(%trace_id, error = %e, "an external issuer's keys could not be fetched")
        }
    }
    TokenError::IssuerUnreachable { trace_id }
}

fn auth_reason(auth: ClientAuthMethod) -> &'static str {
    match auth {
        ClientAuthMethod::ClientSecret => "client secret",
        ClientAuthMethod::Certificate => "client certificate",
        ClientAuthMethod::FederatedAssertion => "federated assertion",
    }
}

/// A federated identity credential of a user-assigned identity, from its ARM body
/// (`{"properties":{"issuer","subject","audiences"}}`).
pub fn uai_credential(name: &str, body: &Value) -> Option<FederatedCredential> {
    let props = body.get("properties")?;
    let text = |k: &str| props.get(k).and_then(Value::as_str).map(str::to_string);
    Some(FederatedCredential {
        name: name.to_string(),
        issuer: text("issuer")?,
        subject: text("subject")?,
        audiences: props
            .get("audiences")?
            .as_array()?
            .iter()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect(),
    })
}

/// `sub` and `aud` of an unverified JWT, for the message of a refusal only.
fn peek_subject_audience(jwt: &str) -> (String, String) {
    let payload = jwt
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .unwrap_or(Value::Null);
    let subject = payload.get("sub").and_then(Value::as_str).unwrap_or("");
    let audience = match payload.get("aud") {
        Some(Value::String(a)) => a.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    };
    (bounded(subject), bounded(&audience))
}

/// v2: numbers. v1: strings, as Entra's v1 endpoint (and ADAL-era clients) have them.
fn token_body(issued: &Issued, version: EndpointVersion) -> Value {
    match version {
        EndpointVersion::V2 => json!({
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "ext_expires_in": issued.expires_in,
            "access_token": issued.access_token,
        }),
        EndpointVersion::V1 => json!({
            "token_type": "Bearer",
            "expires_in": issued.expires_in.to_string(),
            "ext_expires_in": issued.expires_in.to_string(),
            "expires_on": issued.expires_on.to_string(),
            "not_before": issued.not_before.to_string(),
            "resource": issued.resource,
            "access_token": issued.access_token,
        }),
    }
}

fn token_response(issued: &Issued, version: EndpointVersion) -> Response {
    let mut response = axum::Json(token_body(issued, version)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn uai_credentials_come_from_arm_bodies() {
        let body = json!({
            "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1/federatedIdentityCredentials/k8s",
            "name": "k8s",
            "type": UAI_FIC_TYPE,
            "properties": {"issuer": "https://issuer", "subject": "system:serviceaccount:ns:sa", "audiences": ["api://AzureADTokenExchange"]}
        });
        let c = uai_credential("k8s", &body).unwrap();
        assert_eq!(c.issuer, "https://issuer");
        assert_eq!(c.audiences, vec!["api://AzureADTokenExchange"]);
        assert!(uai_credential("x", &json!({"properties": {"issuer": "i"}})).is_none());
    }

    #[test]
    fn refusal_messages_peek_only_subject_and_audience() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"s1","aud":["a","b"],"secret":"x"}"#);
        let (s, a) = peek_subject_audience(&format!("h.{payload}.sig"));
        assert_eq!((s.as_str(), a.as_str()), ("s1", "a, b"));
        assert_eq!(
            peek_subject_audience("garbage"),
            (String::new(), String::new())
        );
    }

    #[test]
    fn v1_bodies_use_strings_and_v2_numbers() {
        let issued = Issued {
            access_token: "t".into(),
            expires_in: 86399,
            expires_on: 1_700_086_399,
            not_before: 1_700_000_000,
            resource: "https://vault.azure.net".into(),
            auth: ClientAuthMethod::ClientSecret,
        };
        let v2 = token_body(&issued, EndpointVersion::V2);
        assert_eq!(v2["expires_in"], 86399);
        assert_eq!(v2["ext_expires_in"], 86399);
        assert!(v2.get("resource").is_none());
        let v1 = token_body(&issued, EndpointVersion::V1);
        assert_eq!(v1["expires_in"], "86399");
        assert_eq!(v1["expires_on"], "1700086399");
        assert_eq!(v1["not_before"], "1700000000");
        assert_eq!(v1["resource"], "https://vault.azure.net");
    }
}
