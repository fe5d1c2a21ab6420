//! Resources that hold identities (virtual machines, scale sets, sites, container apps):
//! PUT and PATCH with Azure's `identity` rules, answered synchronously with
//! `provisioningState: Succeeded`. Properties this plane does not know are kept as sent.
//!
//! The identity block: PUT replaces it and PATCH merges `userAssignedIdentities` (see
//! [`lanyard_domain::identity`]); a request without `identity` leaves the identities as they
//! are. Enabling the system identity creates its service principal; disabling it retires the
//! principal (assignments, credentials, tokens) in the same batch. Newly attached user-assigned
//! identities are returned in [`Plan::linked`] for the caller's `assign/action` check.

use std::collections::BTreeMap;

use lanyard_domain::{ChangeMode, IdentityChange, ResourceId, ServicePrincipalSource};
use lanyard_storage::{Batch, Change, Expect, ResourceRecord};
use serde_json::{json, Map, Value};

use super::{
    expect_as_read, expect_group, is_deleting, location, object, properties, same_location, tags,
    Context, Plan,
};
use crate::errors::ArmError;
use crate::kinds::Kind;
use crate::shape::{merge_patch, uai_ids, AttachedIdentity, ResolvedIdentity};

/// What writing a resource needs to know.
#[derive(Debug, Clone, Copy)]
pub struct ResourceView<'a> {
    pub group: &'a ResourceRecord,
    pub existing: Option<&'a ResourceRecord>,
    /// User-assigned identities the request names that exist, by lower-cased id.
    pub identities: &'a BTreeMap<String, ResourceRecord>,
}

/// The user-assigned identities a request body names (to load before planning). Malformed
/// blocks name none; the plan reports them.
pub fn named_identities(request: &Value) -> Vec<ResourceId> {
    request
        .get("identity")
        .filter(|v| !v.is_null())
        .and_then(|v| IdentityChange::from_json(v).ok())
        .and_then(|c| c.user_assigned)
        .map(|m| m.into_values().flatten().collect())
        .unwrap_or_default()
}

/// Fields a client may send but never sets.
const READ_ONLY: &[&str] = &["id", "name", "type", "identity", "systemData"];

/// PUT (`mode` Put) or PATCH (`mode` Patch) of a resource of `kind` at `id`.
pub fn write(
    ctx: &Context<'_>,
    kind: &Kind,
    id: &ResourceId,
    request: &Value,
    view: ResourceView<'_>,
    mode: ChangeMode,
) -> Result<Plan, ArmError> {
    if !(kind.name.check)(id.name()) {
        return Err(ArmError::InvalidResourceName {
            name: id.name().to_string(),
            rule: kind.name.description,
        });
    }
    let fields = object(request)?;
    let existing = view.existing;
    if mode == ChangeMode::Patch && existing.is_none() {
        return Err(ArmError::ResourceNotFound {
            resource: format!("{}/{}", kind.full_type(), id.name()),
            group: view.group.id.name().to_string(),
        });
    }
    let id = existing.map_or_else(|| kind.id_in(&view.group.id, id.name()), |e| e.id.clone());
    let requested_location = location(request)?;
    let mut body = match (mode, existing) {
        (ChangeMode::Patch, Some(e)) => e.body.clone(),
        _ => Value::Object(Map::new()),
    };
    let location = match (&requested_location, existing) {
        (Some(l), Some(e)) if !same_location(&e.body, l) => {
            return Err(ArmError::InvalidResourceLocation {
                resource: id.to_string(),
                existing: e.body["location"].as_str().unwrap_or_default().to_string(),
                requested: l.clone(),
            })
        }
        (Some(l), _) => l.clone(),
        (None, Some(e)) if mode == ChangeMode::Patch => {
            e.body["location"].as_str().unwrap_or_default().to_string()
        }
        (None, _) => return Err(ArmError::LocationRequired),
    };
    let tags = tags(request)?;
    let props = properties(request)?;
    for (k, v) in fields {
        if READ_ONLY.contains(&k.as_str()) || matches!(k.as_str(), "location" | "tags") {
            continue;
        }
        match mode {
            ChangeMode::Put => {
                body[k.as_str()] = v.clone();
            }
            ChangeMode::Patch => merge_patch(&mut body[k.as_str()], v),
        }
    }
    body["id"] = json!(id.to_string());
    body["name"] = json!(id.name());
    body["type"] = json!(kind.full_type());
    body["location"] = json!(location);
    match (tags, mode) {
        (Some(t), _) => body["tags"] = t,
        (None, ChangeMode::Put) => body["tags"] = json!({}),
        (None, ChangeMode::Patch) => {}
    }
    if mode == ChangeMode::Put || !body["properties"].is_object() {
        body["properties"] = Value::Object(props);
    }
    body["properties"]["provisioningState"] = json!("Succeeded");
    if kind.types == ["virtualMachines"] {
        let vm_id = existing
            .and_then(|e| e.body["properties"].get("vmId").cloned())
            .unwrap_or_else(|| json!((ctx.new_id)().to_string()));
        body["properties"]["vmId"] = vm_id;
    }

    // The identity block.
    let current = existing.map_or_else(ResolvedIdentity::default, |e| {
        ResolvedIdentity::from_body(&e.body)
    });
    let identity_given = request.get("identity").filter(|v| !v.is_null());
    let next_state = match identity_given {
        None => current.state(),
        Some(v) => IdentityChange::from_json(v)
            .and_then(|c| c.apply(&current.state(), mode))
            .map_err(ArmError::InvalidIdentity)?,
    };
    let mut batch = Batch::new();
    expect_as_read(&mut batch, &id, existing);
    expect_group(&mut batch, view.group)?;
    let mut next = ResolvedIdentity::default();
    let mut linked = Vec::new();
    for (key, uai_id) in &next_state.user_assigned {
        if let Some(kept) = current.users.get(key) {
            next.users.insert(key.clone(), kept.clone());
            continue;
        }
        let not_found = || ArmError::IdentityNotFound {
            resource: id.to_string(),
            identity: uai_id.to_string(),
        };
        let uai = view.identities.get(key).ok_or_else(not_found)?;
        if is_deleting(uai) {
            return Err(ArmError::ResourceBeingDeleted(uai.id.to_string()));
        }
        let (principal_id, client_id) = uai_ids(&uai.body).ok_or_else(not_found)?;
        next.users.insert(
            key.clone(),
            AttachedIdentity {
                id: uai.id.clone(),
                principal_id,
                client_id,
            },
        );
        // Deleting the identity marks it first; a reference made from a stale read fails here.
        batch
            .expect
            .push(Expect::ResourceUnchanged(uai.id.clone(), uai.updated_at));
        linked.push(uai.id.clone());
    }
    // Identities detached from this resource: the tokens they got from it stop now.
    for (key, gone) in &current.users {
        if !next.users.contains_key(key) {
            ctx.revoke_on_host(&mut batch, gone.principal_id, &id);
        }
    }
    match (next_state.system_assigned, current.system) {
        (true, Some(p)) => next.system = Some(p),
        (true, None) => {
            let principal = ctx.new_principal(
                id.name(),
                ServicePrincipalSource::SystemAssigned { host: id.clone() },
            );
            next.system = Some(principal.object_id);
            batch.push(Change::PutPrincipal(principal));
        }
        (false, Some(p)) => ctx.retire_principal(&mut batch, p),
        (false, None) => {}
    }
    if identity_given.is_some() || body.get("identity").is_some() || next != current {
        body["identity"] = next.to_json(ctx.tenant_id);
    }
    batch.push(Change::PutResource(ctx.record(
        id.clone(),
        kind.full_type(),
        body.clone(),
        existing,
    )));
    let status = if existing.is_some() { 200 } else { 201 };
    batch.push(ctx.activity(&kind.action("write"), &id, status, None));
    Ok(Plan {
        batch,
        status,
        body: Some(body),
        linked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::lookup;
    use crate::plan::testing::*;
    use lanyard_domain::{PrincipalKind, ServicePrincipalSource};
    use lanyard_storage::Change;

    const RG: &str = "/subscriptions/s/resourceGroups/rg";

    fn vm_kind() -> &'static Kind {
        lookup("Microsoft.Compute", &["virtualMachines"]).unwrap()
    }

    fn vm_id() -> ResourceId {
        ResourceId::parse(&format!(
            "{RG}/providers/microsoft.compute/virtualmachines/vm1"
        ))
        .unwrap()
    }

    fn uai(fx: &Fixture, name: &str) -> ResourceRecord {
        record(
            &format!("{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"),
            json!({"properties": {"principalId": fx.next().to_string(), "clientId": fx.next().to_string()}}),
        )
    }

    fn commit(existing: &mut Option<ResourceRecord>, plan: &Plan) {
        for c in &plan.batch.changes {
            if let Change::PutResource(r) = c {
                if r.id == vm_id() {
                    *existing = Some(r.clone());
                }
            }
        }
    }

    #[test]
    fn system_identity_lifecycle() {
        let fx = Fixture::new();
        let group = record(RG, json!({"location": "westus"}));
        let none = BTreeMap::new();
        let mut existing = None;

        let plan = with_ctx(&fx, |ctx| {
            write(
                ctx,
                vm_kind(),
                &vm_id(),
                &json!({"location": "westus", "identity": {"type": "SystemAssigned"}, "properties": {"hardwareProfile": {"vmSize": "x"}}}),
                ResourceView { group: &group, existing: None, identities: &none },
                ChangeMode::Put,
            )
        })
        .unwrap();
        assert_eq!(plan.status, 201);
        let body = plan.body.clone().unwrap();
        assert_eq!(
            body["id"],
            format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1")
        );
        assert_eq!(body["type"], "Microsoft.Compute/virtualMachines");
        assert_eq!(body["properties"]["provisioningState"], "Succeeded");
        assert_eq!(body["properties"]["hardwareProfile"]["vmSize"], "x");
        assert_eq!(body["identity"]["tenantId"], fx.tenant.to_string());
        let principal = plan
            .batch
            .changes
            .iter()
            .find_map(|c| match c {
                Change::PutPrincipal(p) => Some(p.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            body["identity"]["principalId"],
            principal.object_id.to_string()
        );
        match &principal.kind {
            PrincipalKind::ServicePrincipal {
                source: ServicePrincipalSource::SystemAssigned { host },
                ..
            } => assert_eq!(host, &vm_id()),
            other => panic!("{other:?}"),
        }
        // The group is expected as read, so a concurrent group deletion sees the principal.
        assert!(plan.batch.expect.contains(&Expect::ResourceUnchanged(
            group.id.clone(),
            group.updated_at
        )));
        commit(&mut existing, &plan);

        // PATCH without identity keeps it; tags replace.
        let patched = with_ctx(&fx, |ctx| {
            write(
                ctx,
                vm_kind(),
                &vm_id(),
                &json!({"tags": {"env": "test"}, "properties": {"extra": 1}}),
                ResourceView {
                    group: &group,
                    existing: existing.as_ref(),
                    identities: &none,
                },
                ChangeMode::Patch,
            )
        })
        .unwrap();
        let b = patched.body.clone().unwrap();
        assert_eq!(
            b["identity"]["principalId"],
            principal.object_id.to_string()
        );
        assert_eq!(b["properties"]["hardwareProfile"]["vmSize"], "x");
        assert_eq!(b["properties"]["extra"], 1);
        assert_eq!(b["properties"]["vmId"], body["properties"]["vmId"]);
        assert!(!patched
            .batch
            .changes
            .iter()
            .any(|c| matches!(c, Change::PutPrincipal(_) | Change::DeletePrincipal(_))));
        commit(&mut existing, &patched);

        // Disabling retires the principal in the same batch.
        let off = with_ctx(&fx, |ctx| {
            write(
                ctx,
                vm_kind(),
                &vm_id(),
                &json!({"identity": {"type": "None"}}),
                ResourceView {
                    group: &group,
                    existing: existing.as_ref(),
                    identities: &none,
                },
                ChangeMode::Patch,
            )
        })
        .unwrap();
        let c = &off.batch.changes;
        assert!(c.contains(&Change::DeletePrincipal(principal.object_id)));
        assert!(c.contains(&Change::DeleteAssignmentsOfPrincipal(principal.object_id)));
        assert!(c.contains(&retired(principal.object_id)));
        assert_eq!(off.body.unwrap()["identity"], json!({"type": "None"}));
    }

    #[test]
    fn user_identities_attach_and_detach() {
        let fx = Fixture::new();
        let group = record(RG, json!({"location": "westus"}));
        let a = uai(&fx, "a");
        let mut identities = BTreeMap::new();
        identities.insert(a.id.key().to_string(), a.clone());
        let mut existing = None;
        let plan = with_ctx(&fx, |ctx| {
            write(
                ctx,
                vm_kind(),
                &vm_id(),
                &json!({"location": "westus", "identity": {"type": "SystemAssigned,UserAssigned",
                    "userAssignedIdentities": {a.id.to_string().to_uppercase(): {}}}}),
                ResourceView {
                    group: &group,
                    existing: None,
                    identities: &identities,
                },
                ChangeMode::Put,
            )
        })
        .unwrap();
        assert_eq!(plan.linked, vec![a.id.clone()]);
        let body = plan.body.clone().unwrap();
        assert_eq!(body["identity"]["type"], "SystemAssigned, UserAssigned");
        let entry = &body["identity"]["userAssignedIdentities"][a.id.as_str()];
        assert_eq!(entry["principalId"], a.body["properties"]["principalId"]);
        assert_eq!(entry["clientId"], a.body["properties"]["clientId"]);
        commit(&mut existing, &plan);

        // Re-sending the same identity links nothing new.
        let same = with_ctx(&fx, |ctx| {
            write(
                ctx,
                vm_kind(),
                &vm_id(),
                &json!({"identity": {"type": "SystemAssigned, UserAssigned",
                    "userAssignedIdentities": {a.id.as_str(): {}}}}),
                ResourceView {
                    group: &group,
                    existing: existing.as_ref(),
                    identities: &identities,
                },
                ChangeMode::Patch,
            )
        })
        .unwrap();
        assert!(same.linked.is_empty());

        // PATCH with null detaches; the system identity stays.
        let detach = with_ctx(&fx, |ctx| {
            write(
                ctx,
                vm_kind(),
                &vm_id(),
                &json!({"identity": {"type": "SystemAssigned", "userAssignedIdentities": {a.id.as_str(): null}}}),
                ResourceView { group: &group, existing: existing.as_ref(), identities: &identities },
                ChangeMode::Patch,
            )
        })
        .unwrap();
        assert!(detach
            .batch
            .changes
            .contains(&revoked_on(uai_ids(&a.body).unwrap().0, &vm_id())));
        let b = detach.body.unwrap();
        assert_eq!(b["identity"]["type"], "SystemAssigned");
        assert!(b["identity"].get("userAssignedIdentities").is_none());
        assert!(!detach
            .batch
            .changes
            .iter()
            .any(|c| matches!(c, Change::DeletePrincipal(_))));
    }

    #[test]
    fn missing_identities_and_bad_blocks() {
        let fx = Fixture::new();
        let group = record(RG, json!({"location": "westus"}));
        let none = BTreeMap::new();
        let view = ResourceView {
            group: &group,
            existing: None,
            identities: &none,
        };
        let ghost =
            format!("{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ghost");
        let r = with_ctx(&fx, |ctx| {
            write(
                ctx,
                vm_kind(),
                &vm_id(),
                &json!({"location": "x", "identity": {"type": "UserAssigned", "userAssignedIdentities": {ghost: {}}}}),
                view,
                ChangeMode::Put,
            )
        });
        assert!(matches!(r, Err(ArmError::IdentityNotFound { .. })));
        let r = with_ctx(&fx, |ctx| {
            write(
                ctx,
                vm_kind(),
                &vm_id(),
                &json!({"location": "x", "identity": {"type": "Both"}}),
                view,
                ChangeMode::Put,
            )
        });
        assert!(matches!(r, Err(ArmError::InvalidIdentity(_))));
        let r = with_ctx(&fx, |ctx| {
            write(
                ctx,
                vm_kind(),
                &vm_id(),
                &json!({"identity": {"type": "None"}}),
                view,
                ChangeMode::Put,
            )
        });
        assert!(matches!(r, Err(ArmError::LocationRequired)));
        let r = with_ctx(&fx, |ctx| {
            write(
                ctx,
                vm_kind(),
                &vm_id(),
                &json!({"location": "x"}),
                view,
                ChangeMode::Patch,
            )
        });
        assert!(matches!(r, Err(ArmError::ResourceNotFound { .. })));
        let bad = ResourceId::parse(&format!(
            "{RG}/providers/Microsoft.Compute/virtualMachines/bad_"
        ))
        .unwrap();
        let r = with_ctx(&fx, |ctx| {
            write(
                ctx,
                vm_kind(),
                &ResourceId::parse(&format!(
                    "{RG}/providers/Microsoft.Compute/virtualMachines/_x"
                ))
                .unwrap(),
                &json!({"location": "x"}),
                view,
                ChangeMode::Put,
            )
        });
        assert!(matches!(r, Err(ArmError::InvalidResourceName { .. })));
        assert!(bad.name().ends_with('_'));
    }

    #[test]
    fn unknown_properties_are_kept() {
        let fx = Fixture::new();
        let group = record(RG, json!({"location": "westus"}));
        let none = BTreeMap::new();
        let plan = with_ctx(&fx, |ctx| {
            write(
                ctx,
                lookup("Microsoft.Web", &["sites"]).unwrap(),
                &ResourceId::parse(&format!("{RG}/providers/Microsoft.Web/sites/app1")).unwrap(),
                &json!({"location": "westus", "kind": "functionapp", "properties": {"siteConfig": {"x": [1]}}, "id": "ignored"}),
                ResourceView { group: &group, existing: None, identities: &none },
                ChangeMode::Put,
            )
        })
        .unwrap();
        let b = plan.body.unwrap();
        assert_eq!(b["kind"], "functionapp");
        assert_eq!(b["properties"]["siteConfig"]["x"][0], 1);
        assert_eq!(b["id"], format!("{RG}/providers/Microsoft.Web/sites/app1"));
        assert!(b.get("identity").is_none());
    }
}
