//! Requests and explained decisions.

use std::fmt;
use std::sync::Arc;

use lanyard_domain::ResourceId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Control-plane actions (`actions`/`notActions`) and data actions
/// (`dataActions`/`notDataActions`) are separate spaces: a request is checked only against
/// the lists of its own kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ActionKind {
    Control,
    Data,
}

impl ActionKind {
    /// `action` or `data action`, for sentences.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Control => "action",
            Self::Data => "data action",
        }
    }

    /// The role-definition list that grants this kind (`actions` or `dataActions`).
    pub fn allow_list(self) -> &'static str {
        match self {
            Self::Control => "actions",
            Self::Data => "dataActions",
        }
    }

    /// The role-definition list that excludes this kind (`notActions` or `notDataActions`).
    pub fn exclude_list(self) -> &'static str {
        match self {
            Self::Control => "notActions",
            Self::Data => "notDataActions",
        }
    }
}

/// "May `principal` perform `action` (of `kind`) on `scope`?"
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// Object id of the caller (user, service principal or managed identity).
    pub principal: Uuid,
    pub action: &'a str,
    pub kind: ActionKind,
    pub scope: &'a ResourceId,
}

impl<'a> AccessRequest<'a> {
    pub fn control(principal: Uuid, action: &'a str, scope: &'a ResourceId) -> Self {
        Self {
            principal,
            action,
            kind: ActionKind::Control,
            scope,
        }
    }

    pub fn data(principal: Uuid, action: &'a str, scope: &'a ResourceId) -> Self {
        Self {
            principal,
            action,
            kind: ActionKind::Data,
            scope,
        }
    }
}

/// The answer to an [`AccessRequest`], with its reasons.
#[derive(Debug, Clone)]
pub enum Decision {
    Allow(Grant),
    Deny(Denial),
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow(_))
    }

    /// One paragraph naming the principal by object id.
    pub fn explain(&self) -> String {
        self.explain_as(None)
    }

    /// One paragraph naming the principal `principal_name` (the engine does not know
    /// display names), or by object id when `None`.
    pub fn explain_as(&self, principal_name: Option<&str>) -> String {
        match self {
            Self::Allow(g) => g.explain_as(principal_name),
            Self::Deny(d) => d.explain_as(principal_name),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explain())
    }
}

/// What allowed a request: the assignment, its role and scope, and the pattern that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub principal_id: Uuid,
    pub action: String,
    pub kind: ActionKind,
    /// The requested scope.
    pub scope: String,
    pub assignment_id: Uuid,
    /// Who holds the assignment: `principal_id` itself, or a group it belongs to.
    pub assignee_id: Uuid,
    pub role_id: Uuid,
    pub role_name: Arc<str>,
    pub assignment_scope: Arc<str>,
    /// The `actions`/`dataActions` entry that matched.
    pub granted_by: Arc<str>,
}

impl Grant {
    pub fn via_group(&self) -> Option<Uuid> {
        (self.assignee_id != self.principal_id).then_some(self.assignee_id)
    }

    pub fn explain(&self) -> String {
        self.explain_as(None)
    }

    pub fn explain_as(&self, principal_name: Option<&str>) -> String {
        let who = who(self.principal_id, principal_name);
        let via = match self.via_group() {
            Some(g) => format!(" through group `{g}`"),
            None => String::new(),
        };
        format!(
            "`{who}` may perform {} `{}` on `{}`: it holds {} at `{}`{via} (assignment `{}`), whose {} entry `{}` grants it",
            self.kind.noun(),
            self.action,
            self.scope,
            self.role_name,
            self.assignment_scope,
            self.assignment_id,
            self.kind.allow_list(),
            self.granted_by,
        )
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explain())
    }
}

/// Why a request was denied: the nearest misses among the principal's assignments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub principal_id: Uuid,
    pub action: String,
    pub kind: ActionKind,
    /// The requested scope.
    pub scope: String,
    /// Nearest first: right role at the wrong scope or ignored (not assignable at its own
    /// scope), then covering assignments whose role excludes or lacks the action. At most [`Denial::MAX_MISSES`] from
    /// [`crate::AccessIndex::check`]; any number from `check_explaining`.
    pub misses: Vec<Miss>,
    /// Misses left out of `misses` to bound the size of a denial.
    pub more_misses: usize,
    /// Role assignments of the principal and its groups that were considered.
    pub assignments_considered: usize,
}

impl Denial {
    /// How many misses [`crate::AccessIndex::check`] reports.
    pub const MAX_MISSES: usize = 5;

    pub fn explain(&self) -> String {
        self.explain_as(None)
    }

    /// `"`{who}` may not perform ... : {reason}"`.
    pub fn explain_as(&self, principal_name: Option<&str>) -> String {
        format!(
            "`{}` may not perform {} `{}` on `{}`: {}",
            who(self.principal_id, principal_name),
            self.kind.noun(),
            self.action,
            self.scope,
            self.reason_as(principal_name)
        )
    }

    /// Just the reason, for appending to a message that already names the request (e.g.
    /// ARM's `AuthorizationFailed` text).
    pub fn reason_as(&self, principal_name: Option<&str>) -> String {
        let who = who(self.principal_id, principal_name);
        if self.misses.is_empty() {
            return if self.assignments_considered == 0 {
                format!("`{who}` holds no role assignments, directly or through groups")
            } else {
                format!(
                    "none of the {} role assignments of `{who}` (direct or through groups) applies to this scope or grants this {}",
                    self.assignments_considered,
                    self.kind.noun()
                )
            };
        }
        let mut out = self
            .misses
            .iter()
            .map(|m| m.describe(&who, self))
            .collect::<Vec<_>>()
            .join("; ");
        if self.more_misses > 0 {
            out.push_str(&format!(
                "; and {} more assignment(s) that do not grant it here",
                self.more_misses
            ));
        }
        out
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explain())
    }
}

/// An assignment that nearly allowed the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss {
    pub assignment_id: Uuid,
    /// The principal itself or one of its groups.
    pub assignee_id: Uuid,
    pub role_id: Uuid,
    /// `None` when the role definition is unknown to the index (deleted or not loaded).
    pub role_name: Option<Arc<str>>,
    pub assignment_scope: Arc<str>,
    pub reason: MissReason,
}

/// Why an assignment did not allow the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissReason {
    /// The role grants the action, but the assignment's scope does not cover the request.
    OutOfScope { granted_by: Arc<str> },
    /// The role grants the action, but it is not assignable at the assignment's scope
    /// (outside its `assignableScopes`), so the assignment is ignored.
    NotAssignable { granted_by: Arc<str> },
    /// The assignment covers the request; its role's `granted_by` entry matches, but an
    /// exclusion of the same permission block (`notActions`/`notDataActions`) removes it.
    Excluded {
        granted_by: Arc<str>,
        excluded_by: Arc<str>,
    },
    /// The assignment covers the request; the role matches the action only in the lists of
    /// the other kind (e.g. `*` in `actions` for a data action).
    OtherKind { pattern: Arc<str> },
    /// The assignment covers the request; its role does not grant the action.
    NotGranted,
    /// The assignment covers the request; its role definition is unknown.
    RoleNotFound,
}

impl Miss {
    fn describe(&self, who: &str, d: &Denial) -> String {
        let holder = if self.assignee_id == d.principal_id {
            format!("`{who}` holds")
        } else {
            format!("`{who}` (through group `{}`) holds", self.assignee_id)
        };
        let role = match &self.role_name {
            Some(n) => n.to_string(),
            None => format!("role `{}`", self.role_id),
        };
        let at = &self.assignment_scope;
        let action = &d.action;
        match &self.reason {
            MissReason::OutOfScope { .. } => format!(
                "{holder} {role} at `{at}`, which grants `{action}` there; {}",
                where_request_is(&d.scope, at)
            ),
            MissReason::NotAssignable { .. } => format!(
                "{holder} {role} at `{at}`, which grants `{action}`, but that assignment is ignored: the role is not assignable at `{at}` (outside its assignableScopes)"
            ),
            MissReason::Excluded {
                granted_by,
                excluded_by,
            } => format!(
                "{holder} {role} at `{at}`, whose {} entry `{granted_by}` is cut back by its {} entry `{excluded_by}`, so it does not grant `{action}`",
                d.kind.allow_list(),
                d.kind.exclude_list()
            ),
            MissReason::OtherKind { pattern } => {
                let other = match d.kind {
                    crate::ActionKind::Control => crate::ActionKind::Data,
                    crate::ActionKind::Data => crate::ActionKind::Control,
                };
                format!(
                    "{holder} {role} at `{at}`, which does not grant {} `{action}`: its {} entry `{pattern}` matches only {}s",
                    d.kind.noun(),
                    other.allow_list(),
                    other.noun()
                )
            }
            MissReason::NotGranted => {
                format!("{holder} {role} at `{at}`, which does not grant `{action}`")
            }
            MissReason::RoleNotFound => format!(
                "{holder} {role} at `{at}`, but that role definition does not exist"
            ),
        }
    }
}

fn who(id: Uuid, name: Option<&str>) -> String {
    match name {
        Some(n) => n.to_string(),
        None => id.to_string(),
    }
}

/// Says where the request is relative to an assignment scope that does not cover it.
fn where_request_is(request: &str, assignment_scope: &str) -> String {
    let (Ok(at), Ok(request)) = (
        ResourceId::parse(assignment_scope),
        ResourceId::parse(request),
    ) else {
        return format!("the request is for `{request}`, outside that scope");
    };
    let target = if request.name().is_empty() {
        format!("`{request}`")
    } else {
        format!("`{}`", request.name())
    };
    let same_sub = at
        .subscription_id()
        .zip(request.subscription_id())
        .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b));
    if at.subscription_id().is_some() && !same_sub {
        return match request.subscription_id() {
            Some(s) => format!("the request is for {target} in subscription `{s}`"),
            None => format!("the request is for `{request}`, above that scope"),
        };
    }
    if let Some(rg) = at.resource_group_name() {
        match request.resource_group_name() {
            Some(r) if !r.eq_ignore_ascii_case(rg) => {
                return format!("the request is for {target} in resource group `{r}`");
            }
            None => return format!("the request is for `{request}`, above that scope"),
            Some(_) => {}
        }
    }
    if at.is_within(&request) {
        format!("the request is for `{request}`, above that scope")
    } else {
        format!("the request is for `{request}`, outside that scope")
    }
}
