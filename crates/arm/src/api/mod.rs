//! Thin handlers, one module per resource family. Each runs its write through
//! `Arm::transact` (the platform's one write path): an attempt loads what its plan needs,
//! plans, checks linked authorization, and returns the batch with its answer; on a
//! concurrent change the attempt runs again.
//!
//! - [`directory`]: `/metadata/endpoints`, `/tenants`, `/subscriptions[/{s}]`.
//! - [`groups`]: resource groups.
//! - [`resources`]: resources that hold identities, and the system identity of any scope.
//! - [`identities`]: user-assigned identities and federated credentials.
//! - [`vaults`]: Key Vault vaults, their access policy operations, and soft-deleted vaults.
//! - [`roles`]: role definitions.
//! - [`assignments`]: role assignments.
//! - [`activity`]: the activity log in Azure Monitor's shape.

pub mod activity;
pub mod assignments;
pub mod directory;
pub mod groups;
pub mod identities;
pub mod resources;
pub mod roles;
pub mod vaults;

use std::future::Future;

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use lanyard_authz::AccessRequest;
use lanyard_domain::{ResourceId, Subscription};
use lanyard_platform::{ApiError, Attempt, Retry, Step};
use lanyard_storage::{ActivityRecord, Batch, Change, ResourceRecord, StoreError};
use serde_json::Value;
use uuid::Uuid;

use crate::auth;
use crate::errors::ArmError;
use crate::kinds::{self, Family};
use crate::plan::{Context, Plan};
use crate::request::Call;
use crate::route::Route;
use crate::shape;
use crate::Arm;

/// Tries per write when concurrent changes keep invalidating what was read.
const ATTEMPTS: u32 = 8;

/// How a control-plane write retries; the last lost race is 409 `Conflict`.
const RETRY: Retry<ApiError> = Retry {
    attempts: ATTEMPTS,
    backoff: true,
    fail: store_failure,
};

fn store_failure(e: StoreError) -> ApiError {
    ArmError::from(e).into()
}

/// The step that commits `plan` and answers with its status and body.
pub(crate) fn committing(plan: Plan) -> Step<Response> {
    let response = json(plan.status, plan.body.as_ref());
    Step::Commit(plan.batch, response)
}

/// Times a deletion re-marks what it deletes before giving up (one is the norm).
pub(crate) const MAX_MARKS: u32 = 3;

/// Serves one authenticated call. A write (PUT, PATCH, DELETE, POST) that passed
/// authorization and then failed with a 4xx is logged here, once, under the operation a
/// success would have logged; refusals are logged where they are refused.
pub(crate) async fn dispatch(arm: &Arm, call: &Call, route: Route) -> Result<Response, ApiError> {
    let operation = write_operation(&route, &call.method);
    match serve(arm, call, route).await {
        Err(e) if e.status.is_client_error() && call.progress.failure_unlogged() => {
            if let Some((operation, scope)) = operation {
                arm.log_failed_write(call, &operation, &scope, &e).await;
            }
            Err(e)
        }
        other => other,
    }
}

/// The operation and scope a successful write at `route` logs; `None` for reads.
pub(crate) fn write_operation(route: &Route, method: &Method) -> Option<(String, ResourceId)> {
    let verb = match *method {
        Method::PUT | Method::PATCH => "write",
        Method::DELETE => "delete",
        Method::POST => "action",
        _ => return None,
    };
    match (route, verb) {
        (Route::Group(id), "write" | "delete") => Some((
            format!("Microsoft.Resources/subscriptions/resourceGroups/{verb}"),
            id.clone(),
        )),
        (Route::Resource(id), "write" | "delete") => {
            let kind = kinds::of(id)?;
            if kind.family == Family::VaultAccessPolicy {
                // Logged as the vault's own write, which it is.
                let vault = id.parent()?;
                let vault_kind = kinds::of(&vault)?;
                return Some((vault_kind.action("write"), vault));
            }
            Some((kind.action(verb), id.clone()))
        }
        (
            Route::Collection {
                scope,
                namespace,
                types,
            },
            "action",
        ) if identities::is_revoke(namespace, types) => {
            Some((identities::REVOKE_ACTION.to_string(), scope.clone()))
        }
        (Route::RoleAssignment { scope, name }, "write" | "delete") => Some((
            format!("Microsoft.Authorization/roleAssignments/{verb}"),
            scope.with_provider("Microsoft.Authorization", "roleAssignments", name),
        )),
        (
            Route::DeletedVault {
                subscription,
                location,
                name,
                purge: true,
            },
            "action",
        ) => Some((
            lanyard_keyvault::deleted::PURGE_ACTION.to_string(),
            lanyard_keyvault::deleted::deleted_vault_id(
                subscription,
                &lanyard_keyvault::deleted::normalize_location(location),
                name,
            ),
        )),
        (Route::RoleDefinition { scope, name }, "write" | "delete") => Some((
            format!("Microsoft.Authorization/roleDefinitions/{verb}"),
            scope.with_provider("Microsoft.Authorization", "roleDefinitions", name),
        )),
        _ => None,
    }
}

async fn serve(arm: &Arm, call: &Call, route: Route) -> Result<Response, ApiError> {
    if let Some(sub) = route_subscription(&route) {
        arm.subscription(&sub).await?;
    }
    let m = &call.method;
    match route {
        Route::Metadata => Ok(directory::metadata(arm)),
        Route::Tenants if m == Method::GET => directory::tenants(arm, call).await,
        Route::Subscriptions if m == Method::GET => directory::subscriptions(arm, call).await,
        Route::Subscription(s) if m == Method::GET => directory::subscription(arm, call, &s).await,
        Route::Groups(s) if m == Method::GET => groups::list(arm, call, &s).await,
        Route::Group(id) => match *m {
            Method::GET | Method::HEAD => groups::get(arm, call, &id).await,
            Method::PUT => groups::put(arm, call, &id).await,
            Method::PATCH => groups::patch(arm, call, &id).await,
            Method::DELETE => groups::delete(arm, call, &id).await,
            _ => Err(not_allowed(call)),
        },
        Route::Collection {
            scope,
            namespace,
            types,
        } => {
            if m == Method::POST {
                return identities::action(arm, call, &scope, &namespace, &types).await;
            }
            let kind = kinds::lookup(&namespace, &types)
                .ok_or_else(|| unknown_type(call, &namespace, &types))?;
            if m != Method::GET {
                return Err(not_allowed(call));
            }
            resources::list(arm, call, kind, &scope).await
        }
        Route::Resource(id) => {
            let kind = kinds::of(&id).ok_or_else(|| {
                let p = id.providers().last();
                let namespace = p.map(|p| p.namespace().to_string()).unwrap_or_default();
                let types: Vec<String> = p
                    .map(|p| p.types().iter().map(|(t, _)| t.clone()).collect())
                    .unwrap_or_default();
                unknown_type(call, &namespace, &types)
            })?;
            match (kind.family, m.clone()) {
                (_, Method::GET) => resources::get(arm, call, kind, &id).await,
                (_, Method::DELETE) => resources::delete(arm, call, kind, &id).await,
                (Family::Compute, Method::PUT | Method::PATCH) => {
                    resources::write(arm, call, kind, &id).await
                }
                (Family::UserAssignedIdentity, Method::PUT | Method::PATCH) => {
                    identities::write(arm, call, kind, &id).await
                }
                (Family::FederatedCredential, Method::PUT) => {
                    identities::put_credential(arm, call, kind, &id).await
                }
                (Family::Vault, Method::PUT | Method::PATCH) => {
                    vaults::write(arm, call, kind, &id).await
                }
                (Family::VaultAccessPolicy, Method::PUT) => {
                    vaults::access_policy(arm, call, &id).await
                }
                _ => Err(not_allowed(call)),
            }
        }
        Route::RoleAssignments(scope) if m == Method::GET => {
            assignments::list(arm, call, &scope).await
        }
        Route::RoleAssignment { scope, name } => match *m {
            Method::GET => assignments::get(arm, call, &scope, &name).await,
            Method::PUT => assignments::put(arm, call, &scope, &name).await,
            Method::DELETE => assignments::delete(arm, call, &scope, &name).await,
            _ => Err(not_allowed(call)),
        },
        Route::RoleDefinitions(scope) if m == Method::GET => roles::list(arm, call, &scope).await,
        Route::RoleDefinition { scope, name } => match *m {
            Method::GET => roles::get(arm, call, &scope, &name).await,
            Method::PUT => roles::put(arm, call, &scope, &name).await,
            Method::DELETE => roles::delete(arm, call, &scope, &name).await,
            _ => Err(not_allowed(call)),
        },
        Route::SystemIdentity(scope) if m == Method::GET => {
            resources::system_identity(arm, call, &scope).await
        }
        Route::ActivityLog(scope) if m == Method::GET => activity::list(arm, call, &scope).await,
        Route::DeletedVaults(s) if m == Method::GET => vaults::list_deleted(arm, call, &s).await,
        Route::DeletedVault {
            subscription,
            location,
            name,
            purge,
        } => match (purge, m.clone()) {
            (false, Method::GET) => {
                vaults::get_deleted(arm, call, &subscription, &location, &name).await
            }
            (true, Method::POST) => {
                vaults::purge_deleted(arm, call, &subscription, &location, &name).await
            }
            _ => Err(not_allowed(call)),
        },
        Route::GenericResources(scope) if m == Method::GET => {
            resources::list_generic(arm, call, &scope).await
        }
        _ => Err(not_allowed(call)),
    }
}

fn route_subscription(route: &Route) -> Option<String> {
    let from = |id: &ResourceId| id.subscription_id().map(str::to_string);
    match route {
        Route::Subscription(s) | Route::Groups(s) | Route::DeletedVaults(s) => Some(s.clone()),
        Route::DeletedVault { subscription, .. } => Some(subscription.clone()),
        Route::Group(id)
        | Route::GenericResources(id)
        | Route::Resource(id)
        | Route::RoleAssignments(id)
        | Route::RoleDefinitions(id)
        | Route::SystemIdentity(id)
        | Route::ActivityLog(id)
        | Route::Collection { scope: id, .. }
        | Route::RoleAssignment { scope: id, .. }
        | Route::RoleDefinition { scope: id, .. } => from(id),
        Route::Metadata | Route::Tenants | Route::Subscriptions => None,
    }
}

fn not_allowed(call: &Call) -> ApiError {
    ArmError::MethodNotAllowed {
        method: call.method.to_string(),
        path: call.path.clone(),
    }
    .into()
}

fn unknown_type<S: AsRef<str>>(call: &Call, namespace: &str, types: &[S]) -> ApiError {
    ArmError::InvalidResourceType {
        namespace: namespace.to_string(),
        resource_type: types
            .iter()
            .map(|t| t.as_ref())
            .collect::<Vec<_>>()
            .join("/"),
        api_version: call.api_version.clone(),
    }
    .into()
}

/// A JSON answer.
pub(crate) fn json(status: u16, body: Option<&Value>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    match body {
        Some(b) => {
            let mut r = (status, b.to_string()).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            r
        }
        None => status.into_response(),
    }
}

impl Arm {
    /// The subscription `id` names, or 404 `SubscriptionNotFound`.
    pub(crate) async fn subscription(&self, id: &str) -> Result<Subscription, ApiError> {
        let subs = self
            .state()
            .store
            .subscriptions()
            .await
            .map_err(ArmError::from)?;
        subs.into_iter()
            .find(|s| s.id.to_string().eq_ignore_ascii_case(id))
            .ok_or_else(|| ArmError::SubscriptionNotFound(id.to_string()).into())
    }

    /// Whether the caller may perform `action` at `scope` (no explanation, no log).
    pub(crate) fn allowed(&self, call: &Call, action: &str, scope: &ResourceId) -> bool {
        self.state().access.with_index(|index| {
            index.allows(&AccessRequest::control(
                call.caller.object_id,
                action,
                scope,
            ))
        })
    }

    /// Lets the call through if the caller may perform `action` at `scope`; otherwise logs
    /// the attempt and answers 403 `AuthorizationFailed` with the engine's explanation.
    pub(crate) async fn authorize(
        &self,
        call: &Call,
        action: &str,
        scope: &ResourceId,
    ) -> Result<(), ApiError> {
        self.authorize_because(call, action, scope, "").await
    }

    /// [`Self::authorize`] for an action the request needs besides its own: `because` (a
    /// sentence, or empty) says why, before the engine's explanation.
    pub(crate) async fn authorize_because(
        &self,
        call: &Call,
        action: &str,
        scope: &ResourceId,
        because: &str,
    ) -> Result<(), ApiError> {
        let decision = self.state().access.check(&AccessRequest::control(
            call.caller.object_id,
            action,
            scope,
        ));
        if decision.is_allowed() {
            call.progress.authorized();
            return Ok(());
        }
        let name = self.caller_name(call).await;
        self.log_denial(call, action, scope).await;
        let explanation = decision.explain_as(name.as_deref());
        let explanation = if because.is_empty() {
            explanation
        } else {
            format!("{because} {explanation}")
        };
        Err(auth::authorization_failed(
            call.caller.object_id,
            action,
            scope.as_str(),
            &explanation,
        ))
    }

    /// Checks `assign/action` on every identity `plan` newly attaches.
    pub(crate) async fn authorize_linked(
        &self,
        call: &Call,
        action: &str,
        scope: &ResourceId,
        plan: &Plan,
    ) -> Result<(), ApiError> {
        const ASSIGN: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action";
        for linked in &plan.linked {
            let decision = self.state().access.check(&AccessRequest::control(
                call.caller.object_id,
                ASSIGN,
                linked,
            ));
            if decision.is_allowed() {
                continue;
            }
            let name = self.caller_name(call).await;
            self.log_denial(call, action, scope).await;
            return Err(auth::linked_authorization_failed(
                call.caller.object_id,
                action,
                scope.as_str(),
                ASSIGN,
                linked.as_str(),
                &decision.explain_as(name.as_deref()),
            ));
        }
        Ok(())
    }

    async fn caller_name(&self, call: &Call) -> Option<String> {
        match self.state().store.principal(call.caller.object_id).await {
            Ok(p) => p.map(|p| p.display_name),
            Err(_) => None,
        }
    }

    /// A denied attempt, in its own commit. Failing to log does not change the answer.
    async fn log_denial(&self, call: &Call, action: &str, scope: &ResourceId) {
        call.progress.denial_logged();
        let body = if action.starts_with("Microsoft.Authorization/roleAssignments/") {
            call.json().ok().map(shape::logged_request)
        } else {
            None
        };
        let record = ActivityRecord {
            id: Uuid::new_v4(),
            time: self.state().clock.now(),
            caller: Some(call.caller.object_id),
            operation: action.to_string(),
            scope: scope.clone(),
            status: "Failed".into(),
            http_status: 403,
            correlation_id: call.correlation_id.clone(),
            body,
        };
        if let Err(e) = self
            .state()
            .commit(Batch::new().with(Change::AppendActivity(record)))
            .await
        {
            tracing::warn!(error = %e, "a denied attempt could not be written to the activity log");
        }
    }

    /// A write that was authorized and failed, in its own commit: `Failed`, its HTTP status,
    /// and the error code and message in `properties.statusMessage`. The request body is
    /// not kept (it may hold secrets). Failing to log does not change the answer.
    async fn log_failed_write(
        &self,
        call: &Call,
        operation: &str,
        scope: &ResourceId,
        error: &ApiError,
    ) {
        let record = ActivityRecord {
            id: Uuid::new_v4(),
            time: self.state().clock.now(),
            caller: Some(call.caller.object_id),
            operation: operation.to_string(),
            scope: scope.clone(),
            status: "Failed".into(),
            http_status: error.status.as_u16(),
            correlation_id: call.correlation_id.clone(),
            body: Some(shape::failure_body(&error.code, &error.message)),
        };
        if let Err(e) = self
            .state()
            .commit(Batch::new().with(Change::AppendActivity(record)))
            .await
        {
            tracing::warn!(error = %e, "a failed write could not be written to the activity log");
        }
    }

    /// Runs `f` with a plan context for this call.
    pub(crate) fn with_context<T>(&self, call: &Call, f: impl FnOnce(&Context<'_>) -> T) -> T {
        let state = self.state();
        let revoke = |p| state.tokens.revocation(p).0;
        let ctx = Context {
            now: state.clock.now(),
            tenant_id: state.directory.tenant.id,
            caller: call.caller.object_id,
            correlation_id: &call.correlation_id,
            new_id: &Uuid::new_v4,
            revoke: &revoke,
        };
        f(&ctx)
    }

    /// Runs a write: `attempt` loads what its plan needs and plans; its batch is committed,
    /// and on a concurrent change loaded and planned again (up to [`ATTEMPTS`] commits, with
    /// a jittered pause between them). The activity-log entry of a write is in its batch.
    pub(crate) async fn transact<T, A, Fut>(&self, attempt: A) -> Result<T, ApiError>
    where
        A: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<Step<T>, ApiError>>,
    {
        lanyard_platform::transact(self.state(), RETRY, attempt).await
    }

    /// The resource group `id`, or 404 `ResourceGroupNotFound`.
    pub(crate) async fn group(&self, id: &ResourceId) -> Result<ResourceRecord, ApiError> {
        let group = ResourceId::resource_group(
            id.subscription_id().unwrap_or_default(),
            id.resource_group_name().unwrap_or_default(),
        );
        self.state()
            .store
            .resource(&group)
            .await
            .map_err(ArmError::from)?
            .ok_or_else(|| ArmError::ResourceGroupNotFound(group.name().to_string()).into())
    }

    /// Every resource strictly within `scope`, in pages.
    pub(crate) async fn resources_within(
        &self,
        scope: &ResourceId,
    ) -> Result<Vec<ResourceRecord>, ApiError> {
        const PAGE: u32 = 1000;
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .state()
                .store
                .resources(&lanyard_storage::ResourceQuery {
                    within: Some(scope.clone()),
                    after: after.clone(),
                    limit: Some(PAGE),
                    ..Default::default()
                })
                .await
                .map_err(ArmError::from)?;
            let full = page.len() == PAGE as usize;
            after = page.last().map(|r| r.id.key().to_string());
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route;

    fn op(method: Method, path: &str) -> Option<(String, String)> {
        write_operation(&route::parse(path).unwrap(), &method)
            .map(|(o, s)| (o, s.as_str().to_string()))
    }

    #[test]
    fn failed_writes_are_named_as_their_success_would_be() {
        let rg = "/subscriptions/s/resourceGroups/rg";
        let vm = format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm1");
        let vault = format!("{rg}/providers/Microsoft.KeyVault/vaults/kv1");
        let uai = format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u1");
        assert_eq!(
            op(Method::PUT, "/subscriptions/s/resourcegroups/rg"),
            Some((
                "Microsoft.Resources/subscriptions/resourceGroups/write".into(),
                rg.into()
            ))
        );
        assert_eq!(
            op(Method::PATCH, &vm.to_lowercase()),
            Some((
                "Microsoft.Compute/virtualMachines/write".into(),
                vm.to_lowercase()
                    .replace("resourcegroups", "resourceGroups")
            ))
        );
        assert_eq!(
            op(Method::DELETE, &vm).unwrap().0,
            "Microsoft.Compute/virtualMachines/delete"
        );
        assert_eq!(
            op(Method::PUT, &format!("{vault}/accessPolicies/add")),
            Some(("Microsoft.KeyVault/vaults/write".into(), vault.clone()))
        );
        assert_eq!(
            op(Method::POST, &format!("{uai}/revokeTokens")),
            Some((identities::REVOKE_ACTION.into(), uai.clone()))
        );
        assert_eq!(
            op(
                Method::PUT,
                &format!("{uai}/federatedIdentityCredentials/f1")
            )
            .unwrap()
            .0,
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write"
        );
        assert_eq!(
            op(
                Method::PUT,
                &format!("{rg}/providers/Microsoft.Authorization/roleAssignments/a1")
            ),
            Some((
                "Microsoft.Authorization/roleAssignments/write".into(),
                format!("{rg}/providers/Microsoft.Authorization/roleAssignments/a1")
            ))
        );
        assert_eq!(
            op(
                Method::DELETE,
                "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/d1"
            )
            .unwrap()
            .0,
            "Microsoft.Authorization/roleDefinitions/delete"
        );
        assert_eq!(
            op(
                Method::POST,
                "/subscriptions/s/providers/Microsoft.KeyVault/locations/West%20US/deletedVaults/kv1/purge"
            ),
            Some((
                "Microsoft.KeyVault/locations/deletedVaults/purge/action".into(),
                "/subscriptions/s/providers/Microsoft.KeyVault/locations/westus/deletedVaults/kv1"
                    .into()
            ))
        );
        // Reads are not writes.
        assert_eq!(op(Method::GET, &vm), None);
        assert_eq!(op(Method::GET, "/subscriptions/s/resources"), None);
        assert_eq!(op(Method::POST, &format!("{uai}/other")), None);
    }
}
