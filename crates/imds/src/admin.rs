//! The session API on the management host, used by `lanyard run --as`:
//! `POST /lanyard/sessions` opens one, `POST /lanyard/sessions/{id}/renew` keeps it alive,
//! `DELETE /lanyard/sessions/{id}` ends it.
//!
//! Opening a session for a resource needs write permission on it: whoever can run code on a
//! resource can use its identity. The session keeps needing it: renewing answers 403 once
//! the opener lost it, and 404 once the resource was deleted (or deleted and created again).
//!
//! Opening binds the session to the local process that sent the request (see
//! [`crate::attest`]), under the server's `session-attestation` setting: `process` (the
//! default) refuses with 403 `ProcessAttestationFailed` when that process cannot be
//! identified; `user` binds to the user owning the connection; `off` binds to nothing.
//! Beyond the caps (`max-sessions*`), opening answers 409 `SessionLimitReached`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Extension;
use axum::{Json, Router};
use lanyard_authz::AccessRequest;
use lanyard_domain::{workload, ResourceId};
use lanyard_platform::authn::{self, Caller};
use lanyard_platform::config::SessionAttestation;
use lanyard_platform::error::from_store;
use lanyard_platform::serve::Peer;
use lanyard_platform::{ApiError, Dialect};
use lanyard_storage::{ResourceQuery, ResourceRecord};
use lanyard_token::Validator;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::attest::{self, Binding};
use crate::service::{CheckError, Ended, IdentityService, Lapse, Session, SessionError};

/// Resource types whose code can run as their identity.
fn workload_types() -> Vec<String> {
    workload::running_code()
        .map(workload::WorkloadType::full_type)
        .collect()
}

#[derive(Clone)]
struct AdminState {
    service: Arc<IdentityService>,
    validator: Arc<Validator>,
}

/// Routes for the management host. They carry no fallback, so they merge with the control
/// plane's router.
pub fn router(service: Arc<IdentityService>) -> Router {
    let validator = Arc::new(
        service
            .app
            .tokens
            .validator(service.app.management_audiences()),
    );
    Router::new()
        .route("/lanyard/sessions", post(open))
        .route("/lanyard/sessions/{id}", delete(end))
        .route("/lanyard/sessions/{id}/renew", post(renew))
        .route("/lanyard/signins", axum::routing::get(sign_ins))
        .with_state(AdminState { service, validator })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenRequest {
    /// A resource id, or the name of a compute resource in the subscription.
    resource: String,
}

fn caller(state: &AdminState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    authn::authenticate(&state.service.app.tokens, &state.validator, headers)
        .map_err(|f| authn::arm_unauthorized(&f, &state.service.app.endpoints().localhost()))
}

async fn open(
    State(state): State<AdminState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    // axum's own rejection (a body over its limit) is plain text; answer in ARM's envelope.
    let body = body.map_err(|e| {
        let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "RequestEntityTooLarge"
        } else {
            "InvalidRequestContent"
        };
        ApiError::arm(
            e.status(),
            code,
            format!("The request content is not valid: {}.", e.body_text()),
        )
    })?;
    let request: OpenRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::arm(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            format!("The request content is not valid: {e}."),
        )
    })?;
    let record = find_workload(&state, &request.resource).await?;
    let resource = record.id.clone();
    let action = format!("{}/write", resource.resource_type());
    let decision = state.service.app.access.check(&AccessRequest::control(
        caller.object_id,
        &action,
        &resource,
    ));
    if !decision.is_allowed() {
        return Err(unauthorized(
            &caller,
            &action,
            &resource,
            &decision.explain(),
        ));
    }
    state
        .service
        .has_room(&resource, caller.object_id)
        .map_err(|e| session_error(&e))?;
    let binding = bind(&state, peer.as_deref()).await?;
    let (session, secret) = state
        .service
        .open_session(&record, caller.object_id, binding)
        .await
        .map_err(|e| session_error(&e))?;
    Ok((StatusCode::CREATED, Json(describe(&session, Some(&secret)))).into_response())
}

fn unauthorized(caller: &Caller, action: &str, resource: &ResourceId, why: &str) -> ApiError {
    ApiError::arm(
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        format!(
            "The client '{oid}' with object id '{oid}' does not have authorization to perform action '{action}' over scope '{resource}' or the scope is invalid. {why}",
            oid = caller.object_id,
        ),
    )
}

fn session_error(e: &SessionError) -> ApiError {
    match e {
        SessionError::Limit { .. } => {
            ApiError::arm(StatusCode::CONFLICT, "SessionLimitReached", e.to_string())
        }
        SessionError::Listen(_) => ApiError::internal(Dialect::Arm, e),
    }
}

/// What the new session's listener will serve, from the connection the request came on.
async fn bind(state: &AdminState, peer: Option<&Peer>) -> Result<Binding, ApiError> {
    let mode = state.service.app.config.session_attestation;
    if mode == SessionAttestation::Off {
        return Ok(Binding::Unbound);
    }
    let refused = |reason: &dyn std::fmt::Display| {
        ApiError::arm(
            StatusCode::FORBIDDEN,
            "ProcessAttestationFailed",
            format!(
                "The server cannot tell which local process opened this session: {reason}. \
                 A workload session serves only the process that opened it and its descendants \
                 (or, with session-attestation `user`, that process's user): open it from the \
                 server's machine, over loopback, as the server's user or with the server \
                 running as root; or the operator sets session-attestation to `user` or `off`."
            ),
        )
    };
    let Some(peer) = peer else {
        return Err(refused(&"the connection's addresses are unknown"));
    };
    let (remote, local) = (peer.remote, peer.local);
    let found = tokio::task::spawn_blocking(move || match mode {
        SessionAttestation::User => {
            if !attest::is_loopback(remote.ip()) {
                return Err(attest::Unidentified::NotLoopback);
            }
            attest::socket_owner(remote, local)
                .map(|owner| Binding::User { uid: owner.uid })
                .ok_or(attest::Unidentified::NoSocket)
        }
        _ => attest::identify(remote, local).map(|(root, _)| Binding::Process { root }),
    })
    .await
    .map_err(|e| ApiError::internal(Dialect::Arm, &e))?;
    found.map_err(|e| refused(&e))
}

fn describe(session: &Session, secret: Option<&str>) -> serde_json::Value {
    let base = format!("http://{}", session.addr);
    let mut v = json!({
        "id": session.id,
        "resourceId": session.resource.as_str(),
        "identityEndpoint": format!("{base}/msi/token"),
        "imdsEndpoint": base,
        "expiresOn": session.expires_at(),
    });
    if let Some(secret) = secret {
        v["identityHeader"] = json!(secret);
    }
    v
}

/// Resolves an id or a name to a workload resource that exists, as stored.
async fn find_workload(state: &AdminState, given: &str) -> Result<ResourceRecord, ApiError> {
    let app = &state.service.app;
    let store = app.store.as_ref();
    if given.starts_with('/') {
        let id = ResourceId::parse(given).map_err(|e| {
            ApiError::arm(StatusCode::BAD_REQUEST, "InvalidResourceId", e.to_string())
        })?;
        let types = workload_types();
        if !types.iter().any(|t| id.is_type(t)) {
            return Err(ApiError::arm(
                StatusCode::BAD_REQUEST,
                "InvalidResourceType",
                format!(
                    "`{id}` is not a resource that runs code; use one of: {}.",
                    types.join(", ")
                ),
            ));
        }
        return match store.resource(&id).await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(not_found(given)),
            Err(e) => Err(from_store(Dialect::Arm, &e)),
        };
    }
    let subscription = ResourceId::subscription(&app.directory.subscription.id.to_string());
    let mut matches = Vec::new();
    for ty in workload_types() {
        let found = store
            .resources(&ResourceQuery {
                within: Some(subscription.clone()),
                resource_type: Some(ty),
                ..Default::default()
            })
            .await
            .map_err(|e| from_store(Dialect::Arm, &e))?;
        matches.extend(
            found
                .into_iter()
                .filter(|r| r.id.name().eq_ignore_ascii_case(given)),
        );
    }
    match matches.len() {
        0 => Err(not_found(given)),
        1 => Ok(matches.remove(0)),
        _ => Err(ApiError::arm(
            StatusCode::BAD_REQUEST,
            "AmbiguousResourceName",
            format!(
                "More than one resource is named `{given}`; give its id: {}.",
                matches
                    .iter()
                    .map(|r| r.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

fn not_found(given: &str) -> ApiError {
    ApiError::arm(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!("The resource `{given}` was not found."),
    )
}

/// A session of the caller: open, or ended early (and remembered a while).
enum Owned {
    Open(Arc<Session>),
    Ended(Ended),
}

fn owned_session(state: &AdminState, caller: &Caller, id: &str) -> Result<Owned, ApiError> {
    let missing = || {
        ApiError::arm(
            StatusCode::NOT_FOUND,
            "SessionNotFound",
            format!("There is no open session `{id}`."),
        )
    };
    let id = Uuid::parse_str(id).map_err(|_| missing())?;
    // Another caller's session is none of this caller's business: same answer as absent.
    if let Some(session) = state.service.session(id) {
        return if session.owner == caller.object_id {
            Ok(Owned::Open(session))
        } else {
            Err(missing())
        };
    }
    match state.service.lapsed(id) {
        Some(ended) if ended.owner == caller.object_id => Ok(Owned::Ended(ended)),
        _ => Err(missing()),
    }
}

/// The answer to renewing a session that ended early: 403 while its opener still lacks the
/// access it lost, else 404 saying why it ended.
fn ended(
    state: &AdminState,
    caller: &Caller,
    id: &str,
    lapse: Lapse,
    (action, resource): (&str, &ResourceId),
) -> ApiError {
    if lapse == Lapse::AccessLost {
        let decision = state.service.app.access.check(&AccessRequest::control(
            caller.object_id,
            action,
            resource,
        ));
        if !decision.is_allowed() {
            let why = format!("The session `{id}` has ended. {}", decision.explain());
            return unauthorized(caller, action, resource, &why);
        }
    }
    ApiError::arm(
        StatusCode::NOT_FOUND,
        "SessionEnded",
        format!("The session `{id}` has ended: {lapse}. Open a new one."),
    )
}

async fn renew(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    let session = match owned_session(&state, &caller, &id)? {
        Owned::Open(session) => session,
        Owned::Ended(e) => {
            return Err(ended(
                &state,
                &caller,
                &id,
                e.lapse,
                (&e.action, &e.resource),
            ))
        }
    };
    // An expired session stays ended even before the reaper (every 5 s) removes it: renewing
    // it would bring an identity header back to life after its deadline.
    if !session.is_active(state.service.app.clock.unix()) {
        state.service.end_session(session.id);
        return Err(ApiError::arm(
            StatusCode::NOT_FOUND,
            "SessionNotFound",
            format!("There is no open session `{id}`."),
        ));
    }
    match state.service.check(&session).await {
        Ok(_) => {}
        Err(CheckError::Lapsed(lapse)) => {
            return Err(ended(
                &state,
                &caller,
                &id,
                lapse,
                (session.action(), &session.resource),
            ))
        }
        Err(CheckError::Store(e)) => return Err(from_store(Dialect::Arm, &e)),
    }
    state.service.renew(&session);
    Ok(Json(describe(&session, None)).into_response())
}

async fn end(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    match owned_session(&state, &caller, &id)? {
        Owned::Open(session) => {
            state.service.end_session(session.id);
        }
        // Ending a session that already ended early is done.
        Owned::Ended(_) => {
            if let Ok(uuid) = Uuid::parse_str(&id) {
                state.service.forget_lapsed(uuid);
            }
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Reading the sign-in log needs read access to the subscription's logs (Reader and above).
const SIGNIN_READ: &str = "Microsoft.Insights/eventtypes/values/read";

#[derive(Deserialize)]
struct SignInFilter {
    /// RFC 3339 bounds, both inclusive.
    from: Option<String>,
    to: Option<String>,
    #[serde(rename = "principalId")]
    principal_id: Option<Uuid>,
    #[serde(rename = "$top")]
    top: Option<u32>,
}

/// `GET /lanyard/signins`: tokens issued and refused, newest first.
async fn sign_ins(
    State(state): State<AdminState>,
    headers: HeaderMap,
    filter: Result<Query<SignInFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    let Query(filter) = filter
        .map_err(|e| ApiError::arm(StatusCode::BAD_REQUEST, "InvalidParameter", e.body_text()))?;
    let app = &state.service.app;
    let scope = ResourceId::subscription(&app.directory.subscription.id.to_string());
    let decision = app.access.check(&AccessRequest::control(
        caller.object_id,
        SIGNIN_READ,
        &scope,
    ));
    if !decision.is_allowed() {
        return Err(ApiError::arm(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!(
                "The client '{oid}' with object id '{oid}' does not have authorization to perform action '{SIGNIN_READ}' over scope '{scope}' or the scope is invalid. {}",
                decision.explain(),
                oid = caller.object_id,
            ),
        ));
    }
    let time = |v: &Option<String>, name: &str| -> Result<_, ApiError> {
        v.as_deref()
            .map(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        ApiError::arm(
                            StatusCode::BAD_REQUEST,
                            "InvalidParameter",
                            format!("`{name}` must be an RFC 3339 time"),
                        )
                    })
            })
            .transpose()
    };
    let query = lanyard_storage::LogQuery {
        from: time(&filter.from, "from")?,
        to: time(&filter.to, "to")?,
        principal: filter.principal_id,
        limit: Some(filter.top.unwrap_or(100).clamp(1, 1000)),
        ..Default::default()
    };
    let records = app
        .store
        .sign_ins(&query)
        .await
        .map_err(|e| from_store(Dialect::Arm, &e))?;
    Ok(Json(json!({ "value": records })).into_response())
}
