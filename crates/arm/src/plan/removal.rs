//! What deleting resources takes with it, in the same batch: the principals of system
//! identities and of user-assigned identities (with their role assignments, credentials and
//! tokens), the tokens user-assigned identities that survive got on the deleted resources
//! (per-host revocation, as detaching does), role assignments at scopes within, child
//! resources, and the entries of deleted user-assigned identities in the identity blocks of
//! resources that survive.

use std::collections::BTreeSet;

use lanyard_domain::{ResourceId, RoleAssignment};
use lanyard_storage::{Batch, Change, Expect, ResourceRecord};

use super::{Context, Plan};
use crate::kinds::{self, Family, UAI_TYPE};
use crate::shape::{uai_ids, ResolvedIdentity};

/// What a removal needs to know beyond the removed records.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cascade<'a> {
    /// Role assignments that go with the removal (within the removed scopes, or held by
    /// retired principals); listed in the activity log.
    pub assignments: &'a [RoleAssignment],
    /// Resources that may hold one of the removed user-assigned identities.
    pub referencing: &'a [ResourceRecord],
}

/// Principals whose lives end with `records`: system identities of the resources that hold
/// one, and the principals of user-assigned identities.
pub fn principals_of(records: &[ResourceRecord]) -> Vec<uuid::Uuid> {
    let mut out = Vec::new();
    for r in records {
        if r.id.is_type(UAI_TYPE) {
            if let Some((principal, _)) = uai_ids(&r.body) {
                out.push(principal);
            }
        } else if let Some(system) = ResolvedIdentity::from_body(&r.body).system {
            out.push(system);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether `record` holds one of the user-assigned identities keyed in `identities`.
pub fn references_any(record: &ResourceRecord, identities: &BTreeSet<String>) -> bool {
    ResolvedIdentity::from_body(&record.body)
        .users
        .keys()
        .any(|k| identities.contains(k))
}

/// Adds to `batch` everything removing `removed` (already expected as read by the caller)
/// takes with it, except the deletes of the records themselves.
pub fn cascade(ctx: &Context<'_>, batch: &mut Batch, removed: &[ResourceRecord], c: Cascade<'_>) {
    for principal in principals_of(removed) {
        ctx.retire_principal(batch, principal);
    }
    // A removed host detaches its user-assigned identities: the tokens they got on it stop
    // now (a host created again with the same id starts afresh).
    for host in removed.iter().filter(|r| !r.id.is_type(UAI_TYPE)) {
        for attached in ResolvedIdentity::from_body(&host.body).users.values() {
            ctx.revoke_on_host(batch, attached.principal_id, &host.id);
        }
    }
    let removed_keys: BTreeSet<&str> = removed.iter().map(|r| r.id.key()).collect();
    let gone: BTreeSet<String> = removed
        .iter()
        .filter(|r| r.id.is_type(UAI_TYPE))
        .map(|r| r.id.key().to_string())
        .collect();
    if !gone.is_empty() {
        for r in c.referencing {
            if removed_keys.contains(r.id.key()) || !references_any(r, &gone) {
                continue;
            }
            let mut identity = ResolvedIdentity::from_body(&r.body);
            identity.users.retain(|k, _| !gone.contains(k));
            let mut body = r.body.clone();
            body["identity"] = identity.to_json(ctx.tenant_id);
            batch
                .expect
                .push(Expect::ResourceUnchanged(r.id.clone(), r.updated_at));
            batch.push(Change::PutResource(ctx.record(
                r.id.clone(),
                r.resource_type.clone(),
                body,
                Some(r),
            )));
            batch.push(ctx.activity(&format!("{}/write", r.resource_type), &r.id, 200, None));
        }
    }
    let mut logged = BTreeSet::new();
    for a in c.assignments {
        if logged.insert(a.id) {
            batch.push(ctx.activity(
                "Microsoft.Authorization/roleAssignments/delete",
                &a.resource_id(),
                200,
                None,
            ));
        }
    }
}

/// The first step of deleting a user-assigned identity: mark it `Deleting` so that no
/// attachment slips past the second step. `None` for other resources, or when marked.
pub fn mark(ctx: &Context<'_>, record: &ResourceRecord) -> Option<Batch> {
    if !record.id.is_type(UAI_TYPE) || super::is_deleting(record) {
        return None;
    }
    let mut batch = Batch::new();
    ctx.mark_deleting(&mut batch, record);
    Some(batch)
}

/// Deleting one resource (a resource holding identities, a user-assigned identity, or a
/// federated credential) with everything below it.
pub fn delete_resource(ctx: &Context<'_>, record: &ResourceRecord, c: Cascade<'_>) -> Plan {
    let mut batch = Batch::new();
    batch.expect.push(Expect::ResourceUnchanged(
        record.id.clone(),
        record.updated_at,
    ));
    cascade(ctx, &mut batch, std::slice::from_ref(record), c);
    let family = kinds::of(&record.id).map(|k| k.family);
    if family != Some(Family::FederatedCredential) {
        batch.push(Change::DeleteAssignmentsWithin(record.id.clone()));
        batch.push(Change::DeleteResourcesWithin(record.id.clone()));
    }
    batch.push(Change::DeleteResource(record.id.clone()));
    batch.push(ctx.activity(
        &format!("{}/delete", record.resource_type),
        &record.id,
        200,
        None,
    ));
    Plan::new(batch, 200, None)
}

/// The top-level resource an id lies in (itself for a top-level resource), or `None` above
/// resource level.
pub fn top_level(id: &ResourceId) -> Option<ResourceId> {
    let first = id.providers().first()?;
    let (t, n) = first.types().first()?;
    let group = ResourceId::resource_group(id.subscription_id()?, id.resource_group_name()?);
    Some(group.with_provider(first.namespace(), t, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testing::*;
    use serde_json::json;

    const RG: &str = "/subscriptions/s/resourceGroups/rg";

    #[test]
    fn deleting_a_uai_detaches_it_everywhere_and_retires_it() {
        let fx = Fixture::new();
        let uai_id = format!("{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u");
        let (p, c) = (fx.next(), fx.next());
        let uai = record(
            &uai_id,
            json!({"properties": {"principalId": p.to_string(), "clientId": c.to_string()}}),
        );
        let other = format!("{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/o");
        let vm = record(
            "/subscriptions/s/resourceGroups/other/providers/Microsoft.Compute/virtualMachines/vm",
            json!({"identity": {"type": "UserAssigned", "userAssignedIdentities": {
                uai_id.clone(): {"principalId": p.to_string(), "clientId": c.to_string()},
                other.clone(): {"principalId": fx.next().to_string(), "clientId": fx.next().to_string()},
            }}}),
        );
        let plan = with_ctx(&fx, |ctx| {
            delete_resource(
                ctx,
                &uai,
                Cascade {
                    assignments: &[],
                    referencing: std::slice::from_ref(&vm),
                },
            )
        });
        let changes = &plan.batch.changes;
        assert!(changes.contains(&Change::DeletePrincipal(p)));
        assert!(changes.contains(&Change::DeleteAssignmentsOfPrincipal(p)));
        assert!(changes.contains(&retired(p)));
        assert!(changes.contains(&Change::DeleteResourcesWithin(uai.id.clone())));
        let rewritten = changes
            .iter()
            .find_map(|c| match c {
                Change::PutResource(r) if r.id == vm.id => Some(r.clone()),
                _ => None,
            })
            .unwrap();
        let users = ResolvedIdentity::from_body(&rewritten.body).users;
        assert_eq!(users.len(), 1);
        assert!(users.contains_key(&other.to_ascii_lowercase()));
        assert!(plan
            .batch
            .expect
            .contains(&Expect::ResourceUnchanged(vm.id.clone(), vm.updated_at)));
        let log = activities(&plan.batch);
        assert!(log
            .iter()
            .any(|(op, _, _)| op == "Microsoft.Compute/virtualMachines/write"));
        assert!(log
            .iter()
            .any(|(op, _, _)| op == "Microsoft.ManagedIdentity/userAssignedIdentities/delete"));
    }

    #[test]
    fn deleting_a_host_revokes_its_user_identities_there_and_retires_its_own() {
        let fx = Fixture::new();
        let sys = fx.next();
        let (a, b) = (fx.next(), fx.next());
        let ua = |n: &str| {
            format!("/subscriptions/s/resourceGroups/ids/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{n}")
        };
        let vm = record(
            &format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm"),
            json!({"identity": {"type": "SystemAssigned, UserAssigned", "principalId": sys.to_string(),
            "userAssignedIdentities": {
                ua("a"): {"principalId": a.to_string(), "clientId": fx.next().to_string()},
                ua("b"): {"principalId": b.to_string(), "clientId": fx.next().to_string()},
            }}}),
        );
        let plan = with_ctx(&fx, |ctx| delete_resource(ctx, &vm, Cascade::default()));
        let changes = &plan.batch.changes;
        assert!(changes.contains(&retired(sys)));
        for p in [a, b] {
            assert!(changes.contains(&revoked_on(p, &vm.id)), "{changes:?}");
            // The identities themselves live on.
            assert!(!changes.contains(&Change::DeletePrincipal(p)));
            assert!(!changes.contains(&retired(p)));
        }
        assert!(changes.contains(&Change::DeleteResource(vm.id.clone())));
    }

    #[test]
    fn the_last_user_identity_leaves_type_none() {
        let fx = Fixture::new();
        let uai_id = format!("{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u");
        let (p, c) = (fx.next(), fx.next());
        let uai = record(
            &uai_id,
            json!({"properties": {"principalId": p.to_string(), "clientId": c.to_string()}}),
        );
        let vm = record(
            &format!("{RG}2/providers/Microsoft.Web/sites/app"),
            json!({"identity": {"type": "UserAssigned", "userAssignedIdentities": {
                uai_id.clone(): {"principalId": p.to_string(), "clientId": c.to_string()}}}}),
        );
        let plan = with_ctx(&fx, |ctx| {
            delete_resource(
                ctx,
                &uai,
                Cascade {
                    assignments: &[],
                    referencing: std::slice::from_ref(&vm),
                },
            )
        });
        let body = plan
            .batch
            .changes
            .iter()
            .find_map(|c| match c {
                Change::PutResource(r) => Some(r.body.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(body["identity"], json!({"type": "None"}));
    }

    #[test]
    fn top_level_resource_of_a_scope() {
        let id = ResourceId::parse(&format!(
            "{RG}/providers/Microsoft.Storage/storageAccounts/a/blobServices/default/containers/c"
        ))
        .unwrap();
        assert_eq!(
            top_level(&id).unwrap().as_str(),
            format!("{RG}/providers/Microsoft.Storage/storageAccounts/a")
        );
        assert!(top_level(&ResourceId::parse(RG).unwrap()).is_none());
    }
}
