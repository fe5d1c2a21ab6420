//! The HTTP face of one workload session: the IMDS and App Service token endpoints on the
//! session's own loopback listener. Handlers parse, call the service, and map the result.
//! A connection from a process the session's binding does not admit is answered 403 on
//! every request, before anything else is looked at.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::Router;
use lanyard_platform::serve::Peer;
use lanyard_platform::tokens::GuardedMintError;
use lanyard_platform::{ApiError, Dialect};
use lanyard_storage::SignInRecord;
use lanyard_token::TokenRequest;
use uuid::Uuid;

use crate::protocol::{self, Refusal, TokenAsk};
use crate::service::{CheckError, IdentityService, Session};

type SessionState = (Arc<IdentityService>, Arc<Session>);

/// Routes of a session listener.
pub fn router(service: Arc<IdentityService>, session: Arc<Session>) -> Router {
    Router::new()
        .route("/metadata/identity/oauth2/token", get(imds))
        .route("/msi/token", get(app_service))
        .fallback(|| async {
            ApiError::new(
                Dialect::Identity,
                StatusCode::NOT_FOUND,
                "not_found",
                "No such endpoint. Tokens are at /metadata/identity/oauth2/token and /msi/token.",
            )
        })
        .with_state((service, session))
}

fn refuse(refusal: &Refusal) -> Response {
    let (code, description) = refusal.body();
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut error = ApiError::new(Dialect::Identity, status, code, description);
    if matches!(refusal, Refusal::Throttled) {
        error = error.with_header(axum::http::header::RETRY_AFTER, "1");
    }
    error.into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `GET /metadata/identity/oauth2/token`: the IMDS protocol.
async fn imds(
    State((service, session)): State<SessionState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let ask = (|| {
        if headers.contains_key("x-forwarded-for") {
            return Err(Refusal::Forwarded);
        }
        if !header(&headers, "metadata").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Err(Refusal::MissingMetadata);
        }
        protocol::imds_request(&protocol::parse_query(query.as_deref().unwrap_or(""))?)
    })();
    respond(&service, &session, peer, ask, "imds").await
}

/// `GET /msi/token`: the App Service protocol (and its legacy 2017-09-01 form).
async fn app_service(
    State((service, session)): State<SessionState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let ask = (|| {
        if headers.contains_key("x-forwarded-for") {
            return Err(Refusal::Forwarded);
        }
        let query = protocol::parse_query(query.as_deref().unwrap_or(""))?;
        let legacy = query.get("api-version").map(String::as_str) == Some("2017-09-01");
        let presented = if legacy {
            header(&headers, "secret")
        } else {
            header(&headers, "x-identity-header")
        };
        if !presented.is_some_and(|h| session.header_matches(h)) {
            return Err(Refusal::BadIdentityHeader);
        }
        protocol::app_service_request(&query)
    })();
    respond(&service, &session, peer, ask, "app_service").await
}

async fn respond(
    service: &Arc<IdentityService>,
    session: &Arc<Session>,
    peer: Option<Extension<Peer>>,
    ask: Result<TokenAsk, Refusal>,
    source: &'static str,
) -> Response {
    let resource = ask.as_ref().map(|a| a.resource.clone()).unwrap_or_default();
    let ask = if service.admits(session, peer.as_deref()).await {
        ask
    } else {
        Err(Refusal::ForeignProcess)
    };
    match token(service, session, ask).await {
        Ok((body, principal, client_id, fresh)) => {
            // A cached answer was already logged when it was minted.
            if fresh {
                service.record(signin(
                    service,
                    session,
                    source,
                    &resource,
                    Some(principal),
                    client_id,
                    None,
                ));
            }
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "application/json; charset=utf-8",
                )],
                body.to_vec(),
            )
                .into_response()
        }
        Err(refusal) => {
            service.record(signin(
                service,
                session,
                source,
                &resource,
                None,
                None,
                Some(&refusal),
            ));
            refuse(&refusal)
        }
    }
}

/// The token for a request: from the cache, or minted. Returns the body, the identity's
/// object and client ids, and whether it was minted now.
async fn token(
    service: &Arc<IdentityService>,
    session: &Arc<Session>,
    ask: Result<TokenAsk, Refusal>,
) -> Result<(Arc<[u8]>, Uuid, Option<Uuid>, bool), Refusal> {
    let ask = ask?;
    if !session.is_active(service.app.clock.unix()) {
        return Err(Refusal::BadIdentityHeader);
    }
    let _permit = service.admit(&session.resource)?;
    // Before the attached identities are read: a detach or deletion committed meanwhile
    // drops the token (see `issue_guarded` below).
    let guard = service.app.tokens.mint_guard();
    let attached = service.check(session).await.map_err(|e| match e {
        CheckError::Lapsed(lapse) => Refusal::SessionEnded(lapse.to_string()),
        CheckError::Store(_) => {
            Refusal::BadRequest("the identity service cannot read its database; retry".into())
        }
    })?;
    let chosen = crate::resolve::select(&attached, &ask.selector)?;
    if let Some(body) = service.cached(chosen.principal_id, &session.resource, &ask.resource) {
        return Ok((body, chosen.principal_id, chosen.client_id, false));
    }
    let principal = service
        .app
        .store
        .principal(chosen.principal_id)
        .await
        .ok()
        .flatten()
        .ok_or(Refusal::IdentityNotFound)?;
    let request = TokenRequest::managed_identity(&principal, &session.resource, &ask.resource, 0)
        .map_err(|_| Refusal::IdentityNotFound)?;
    let (minted, claims) = service
        .app
        .tokens
        .issue_guarded(guard, &request, || {
            still_attached(service, session, &principal)
        })
        .await
        .map_err(|e| match e {
            GuardedMintError::Gone => Refusal::IdentityNotFound,
            e => {
                tracing::error!(error = %e, "cannot mint a managed-identity token");
                Refusal::BadRequest("the token could not be issued; retry".into())
            }
        })?;
    let client_id = principal.client_id();
    let body = protocol::token_body(
        &minted.access_token,
        minted.expires_in,
        minted.expires_on,
        minted.not_before,
        &ask.resource,
        &client_id.map(|c| c.to_string()).unwrap_or_default(),
    );
    let body: Arc<[u8]> = Arc::from(body.to_string().into_bytes());
    service.remember(
        principal.object_id,
        &session.resource,
        &ask.resource,
        Arc::clone(&body),
        claims.iat,
        minted.expires_on,
    );
    Ok((body, principal.object_id, client_id, true))
}

/// Whether `principal` is still attached to the session's resource and still exists, read
/// again after a revocation overlapped its mint.
async fn still_attached(
    service: &IdentityService,
    session: &Session,
    principal: &lanyard_domain::Principal,
) -> bool {
    let attached = service.check(session).await;
    attached.is_ok_and(|list| list.iter().any(|a| a.principal_id == principal.object_id))
        && matches!(
            service.app.store.principal(principal.object_id).await,
            Ok(Some(_))
        )
}

fn signin(
    service: &IdentityService,
    session: &Session,
    source: &str,
    resource: &str,
    principal: Option<Uuid>,
    client_id: Option<Uuid>,
    refusal: Option<&Refusal>,
) -> SignInRecord {
    SignInRecord {
        id: Uuid::new_v4(),
        time: service.app.clock.now(),
        principal_id: principal,
        client_id,
        resource: resource.chars().take(512).collect(),
        source: source.to_string(),
        session: Some(format!("{} ({})", session.id, session.resource)),
        result: if refusal.is_some() {
            "failure"
        } else {
            "success"
        }
        .to_string(),
        reason: refusal.map(|r| r.to_string()),
    }
}
