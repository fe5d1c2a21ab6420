//! `POST /lanyard/access/explain`: the authorization engine's verdict on a question, with
//! its reasons, for `lanyard access explain`.
//!
//! Body: `{"principalId", "action", "scope", "dataAction": bool}`. Answer:
//! `{"allowed", "explanation", "grant"}` when allowed, `{"allowed", "explanation", "misses",
//! "rolesThatGrant"}` when denied: the nearest misses among the principal's assignments,
//! and the least-privileged roles that would grant the action if assigned at the scope or
//! above. `partial` says whether assignments may have been left out.
//!
//! Who may ask, and what the answer shows:
//! - About itself: anyone, as on Azure, where a principal may check its own access. Its
//!   own assignments (direct and through its groups) are its own to see; a denied call
//!   already explains them in its 403.
//! - About another principal: the caller needs `Microsoft.Authorization/roleAssignments/read`
//!   at the scope (held through `*/read` or `Microsoft.Authorization/*/read`); a refusal is
//!   logged like any other. The answer shows only assignments the caller could list itself:
//!   those at or above the scope (what `atScope()` lists there), and those at scopes where
//!   it holds that read. Others are left out, the explanation says that some may exist, the
//!   count of assignments considered is not given, and the principal's display name is
//!   shown to the tenant's administrator only (names come from Graph, which only it reads).
//!   The verdict itself reveals nothing more: every assignment that can decide it lies at
//!   or above the scope, where the caller may list them (with the principal's groups,
//!   through `assignedTo()`), and role definitions are readable by all.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use lanyard_authz::{AccessRequest, ActionKind, ActionPattern, Decision, Denial, MissReason};
use lanyard_domain::{builtin, ResourceId, RoleDefinition};
use lanyard_platform::ApiError;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::api::json;
use crate::errors::ArmError;
use crate::request::{ArmJson, Call};
use crate::{auth, Arm};

/// The path this module serves on the management host.
pub const PATH: &str = "/lanyard/access/explain";

/// axum's default limit for a buffered body, which the `Bytes` extractor applies.
const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// What the caller must hold at the scope asked about.
const READ: &str = "Microsoft.Authorization/roleAssignments/read";

/// Roles suggested in a denial, at most.
const SUGGESTIONS: usize = 3;

/// Misses the engine is asked for when some may be left out, before filtering: enough
/// that those shown are the nearest the caller may see, bounded for a principal that holds
/// very many assignments.
const CANDIDATE_MISSES: usize = 4096;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Question {
    principal_id: Uuid,
    action: String,
    scope: String,
    #[serde(default)]
    data_action: bool,
}

pub async fn handle(
    State(arm): State<Arm>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // axum's own rejection (a body over its limit) is plain text; answer in ARM's envelope.
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::from(ArmError::BodyTooLarge(DEFAULT_BODY_LIMIT)).into_response()
        }
        Err(e) => {
            return ApiError::from(ArmError::InvalidRequestContent(e.body_text())).into_response()
        }
    };
    match answer(&arm, &headers, body).await {
        Ok(v) => json(200, Some(&v)),
        Err(e) => e.into_response(),
    }
}

async fn answer(arm: &Arm, headers: &HeaderMap, body: Bytes) -> Result<Value, ApiError> {
    let state = arm.state();
    let caller = lanyard_platform::authn::authenticate(&state.tokens, &arm.0.validator, headers)
        .map_err(|failure| {
            let login = format!("{}/", state.endpoints().localhost());
            auth::unauthenticated(&failure, &login, &arm.0.audiences, state.clock.unix())
        })?;
    let question = ArmJson::<Question>::from_bytes(&body)?.0;
    let scope = ResourceId::parse(&question.scope).map_err(|e| {
        ArmError::InvalidRequestContent(format!("`scope` is not a resource id: {e}"))
    })?;
    if question.action.trim().is_empty() {
        return Err(ArmError::InvalidRequestContent("`action` is empty".into()).into());
    }
    let call = Call {
        method: Method::POST,
        path: PATH.to_string(),
        host: String::new(),
        query: Vec::new(),
        api_version: String::new(),
        correlation_id: Uuid::new_v4().to_string(),
        caller,
        body,
        progress: crate::request::Progress::default(),
    };
    let own = question.principal_id == call.caller.object_id;
    if !own {
        arm.authorize(&call, READ, &scope).await?;
    }

    let (kind, request) = if question.data_action {
        (
            ActionKind::Data,
            AccessRequest::data(question.principal_id, &question.action, &scope),
        )
    } else {
        (
            ActionKind::Control,
            AccessRequest::control(question.principal_id, &question.action, &scope),
        )
    };
    let decision = if own {
        state.access.check(&request)
    } else {
        // Everything the engine would say, then only what the caller may list.
        let decision = state
            .access
            .with_index(|index| index.check_explaining(&request, CANDIDATE_MISSES));
        match decision {
            Decision::Deny(d) => Decision::Deny(visible_only(arm, &call, &scope, d)),
            allowed => allowed,
        }
    };
    let names_visible = own || call.caller.object_id == state.directory.admin_object_id;
    let name = if names_visible {
        state
            .store
            .principal(question.principal_id)
            .await
            .ok()
            .flatten()
            .map(|p| p.display_name)
    } else {
        None
    };
    let explanation = match &decision {
        Decision::Deny(d) if !own && d.misses.is_empty() => format!(
            "`{who}` may not perform {noun} `{action}` on `{scope}`: none of the role assignments of `{who}` that you may read (direct or through groups) applies to this scope or grants this {noun}",
            who = name.clone().unwrap_or_else(|| question.principal_id.to_string()),
            noun = kind.noun(),
            action = question.action,
            scope = scope.as_str(),
        ),
        d => d.explain_as(name.as_deref()),
    };
    let explanation = if own || decision.is_allowed() {
        explanation
    } else {
        format!(
            "{explanation}. Only role assignments you may read are shown: those at or above `{}`, and those at scopes where you hold '{READ}'. Others may exist elsewhere; none of them applies at this scope",
            scope.as_str()
        )
    };
    Ok(match decision {
        Decision::Allow(g) => json!({
            "allowed": true,
            "principalId": question.principal_id,
            "principalName": name,
            "action": question.action,
            "dataAction": question.data_action,
            "scope": scope.as_str(),
            "explanation": explanation,
            "partial": false,
            "grant": {
                "assignmentId": g.assignment_id,
                "assigneeId": g.assignee_id,
                "roleDefinitionId": g.role_id,
                "roleName": &*g.role_name,
                "scope": &*g.assignment_scope,
                "grantedBy": &*g.granted_by,
            },
        }),
        Decision::Deny(d) => {
            let mut roles = builtin::built_in_roles();
            roles.extend(state.store.role_definitions().await.unwrap_or_default());
            let suggested: Vec<&RoleDefinition> = roles_granting(&roles, &question.action, kind)
                .into_iter()
                .filter(|r| r.is_assignable_at(&scope))
                .take(SUGGESTIONS)
                .collect();
            let explanation = match suggested.as_slice() {
                [] => explanation,
                some => format!(
                    "{explanation}. A role that grants it, assigned at `{}` or above, would allow it: {}",
                    scope.as_str(),
                    some.iter()
                        .map(|r| r.role_name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            json!({
                "allowed": false,
                "principalId": question.principal_id,
                "principalName": name,
                "action": question.action,
                "dataAction": question.data_action,
                "scope": scope.as_str(),
                "explanation": explanation,
                "partial": !own,
                "assignmentsConsidered": own.then_some(d.assignments_considered),
                "misses": d.misses.iter().map(|m| json!({
                    "assignmentId": m.assignment_id,
                    "assigneeId": m.assignee_id,
                    "roleDefinitionId": m.role_id,
                    "roleName": m.role_name.as_deref(),
                    "scope": &*m.assignment_scope,
                    "reason": reason(&m.reason),
                })).collect::<Vec<_>>(),
                "rolesThatGrant": suggested.iter().map(|r| json!({
                    "roleName": r.role_name,
                    "roleDefinitionId": r.arm_id(scope.subscription_id()),
                })).collect::<Vec<_>>(),
            })
        }
    })
}

/// `denial` with only the misses the caller of `call` could list itself: assignments at or
/// above `scope` (where it holds `roleAssignments/read`, checked before), or at a scope
/// where it holds that read. At most [`Denial::MAX_MISSES`] are kept, nearest first; the
/// count of assignments considered is dropped.
fn visible_only(arm: &Arm, call: &Call, scope: &ResourceId, mut denial: Denial) -> Denial {
    denial.misses.retain(|m| {
        ResourceId::parse(&m.assignment_scope)
            .is_ok_and(|at| scope.is_within(&at) || arm.allowed(call, READ, &at))
    });
    denial.more_misses = denial.misses.len().saturating_sub(Denial::MAX_MISSES);
    denial.misses.truncate(Denial::MAX_MISSES);
    denial.assignments_considered = 0;
    denial
}

fn reason(r: &MissReason) -> &'static str {
    match r {
        MissReason::OutOfScope { .. } => "OutOfScope",
        MissReason::NotAssignable { .. } => "NotAssignable",
        MissReason::Excluded { .. } => "Excluded",
        MissReason::OtherKind { .. } => "OtherKind",
        MissReason::NotGranted => "NotGranted",
        MissReason::RoleNotFound => "RoleNotFound",
    }
}

/// Roles with a permission block that grants `action` of `kind` (an allow entry matches,
/// no exclusion of the same block does), least privileged first: roles that grant
/// everything of a kind (`*`) last, roles that name the action exactly before those that
/// reach it through a wildcard, then fewest entries. Pure.
pub fn roles_granting<'r>(
    roles: &'r [RoleDefinition],
    action: &str,
    kind: ActionKind,
) -> Vec<&'r RoleDefinition> {
    // For each granting role: whether an allow entry names the action exactly.
    let mut found: Vec<(&RoleDefinition, bool)> = roles
        .iter()
        .filter_map(|role| {
            let mut grants = false;
            let mut exact = false;
            for p in &role.permissions {
                let (allow, deny) = match kind {
                    ActionKind::Control => (&p.actions, &p.not_actions),
                    ActionKind::Data => (&p.data_actions, &p.not_data_actions),
                };
                if deny.iter().any(|n| ActionPattern::new(n).matches(action)) {
                    continue;
                }
                for a in allow
                    .iter()
                    .filter(|a| ActionPattern::new(a).matches(action))
                {
                    grants = true;
                    exact |= a.eq_ignore_ascii_case(action);
                }
            }
            grants.then_some((role, exact))
        })
        .collect();
    let rank = |(r, exact): &(&RoleDefinition, bool)| {
        let everything = r
            .permissions
            .iter()
            .flat_map(|p| p.actions.iter().chain(&p.data_actions))
            .any(|a| a == "*");
        let entries: usize = r
            .permissions
            .iter()
            .map(|p| p.actions.len() + p.data_actions.len())
            .sum();
        (everything, !exact, entries, r.role_name.clone())
    };
    found.sort_by_key(rank);
    found.into_iter().map(|(r, _)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_privileged_roles_come_first() {
        let roles = builtin::built_in_roles();
        let blob_read = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read";
        let names: Vec<&str> = roles_granting(&roles, blob_read, ActionKind::Data)
            .iter()
            .map(|r| r.role_name.as_str())
            .collect();
        assert_eq!(
            names.first(),
            Some(&"Storage Blob Data Reader"),
            "{names:?}"
        );
        assert!(names.contains(&"Storage Blob Data Contributor"));
        assert!(!names.contains(&"Owner"), "Owner grants no data actions");

        let get = "Microsoft.KeyVault/vaults/secrets/getSecret/action";
        let names: Vec<&str> = roles_granting(&roles, get, ActionKind::Data)
            .iter()
            .map(|r| r.role_name.as_str())
            .collect();
        assert_eq!(names.first(), Some(&"Key Vault Secrets User"), "{names:?}");

        // Contributor's notActions take role assignment writes away; Owner keeps them.
        let write = "Microsoft.Authorization/roleAssignments/write";
        let names: Vec<&str> = roles_granting(&roles, write, ActionKind::Control)
            .iter()
            .map(|r| r.role_name.as_str())
            .collect();
        assert!(names.contains(&"Owner"));
        assert!(!names.contains(&"Contributor"));
        assert_eq!(names.last(), Some(&"Owner"));
    }
}
