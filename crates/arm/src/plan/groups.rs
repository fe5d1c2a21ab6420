//! Resource groups: create or update (PUT), update tags (PATCH), and delete with everything in
//! them.

use lanyard_domain::ResourceId;
use lanyard_storage::{Batch, Change, Expect, ResourceRecord};
use serde_json::{json, Map, Value};

use super::removal::{cascade, Cascade};
use super::{expect_as_read, is_deleting, location, object, same_location, tags, Context, Plan};
use crate::errors::ArmError;
use crate::kinds::{valid_group_name, RESOURCE_GROUP_TYPE, UAI_TYPE};

const WRITE: &str = "Microsoft.Resources/subscriptions/resourceGroups/write";
const DELETE: &str = "Microsoft.Resources/subscriptions/resourceGroups/delete";

fn body(id: &ResourceId, location: &str, tags: Value, managed_by: Option<&Value>) -> Value {
    let mut out = json!({
        "id": id.to_string(),
        "name": id.name(),
        "type": RESOURCE_GROUP_TYPE,
        "location": location,
        "tags": tags,
        "properties": { "provisioningState": "Succeeded" },
    });
    if let Some(m) = managed_by.filter(|m| m.is_string()) {
        out["managedBy"] = m.clone();
    }
    out
}

/// `PUT /subscriptions/{s}/resourcegroups/{rg}`: 201 when new, 200 when it existed. The
/// location of an existing group cannot change.
pub fn put(
    ctx: &Context<'_>,
    id: &ResourceId,
    request: &Value,
    existing: Option<&ResourceRecord>,
) -> Result<Plan, ArmError> {
    if !valid_group_name(id.name()) {
        return Err(ArmError::InvalidResourceGroupName(id.name().to_string()));
    }
    object(request)?;
    let requested = location(request)?.ok_or(ArmError::LocationRequired)?;
    let tags = tags(request)?.unwrap_or_else(|| Value::Object(Map::new()));
    if let Some(e) = existing {
        if is_deleting(e) {
            return Err(ArmError::ResourceGroupBeingDeleted(e.id.name().to_string()));
        }
        if !same_location(&e.body, &requested) {
            return Err(ArmError::InvalidResourceGroupLocation {
                existing: e.body["location"].as_str().unwrap_or_default().to_string(),
                requested,
            });
        }
    }
    let id = existing.map_or_else(|| id.clone(), |e| e.id.clone());
    let body = body(&id, &requested, tags, request.get("managedBy"));
    let mut batch = Batch::new();
    expect_as_read(&mut batch, &id, existing);
    batch.push(Change::PutResource(ctx.record(
        id.clone(),
        RESOURCE_GROUP_TYPE.to_string(),
        body.clone(),
        existing,
    )));
    let status = if existing.is_some() { 200 } else { 201 };
    batch.push(ctx.activity(WRITE, &id, status, None));
    Ok(Plan::new(batch, status, Some(body)))
}

/// `PATCH`: replaces `tags` and `managedBy` when given.
pub fn patch(
    ctx: &Context<'_>,
    existing: &ResourceRecord,
    request: &Value,
) -> Result<Plan, ArmError> {
    object(request)?;
    if is_deleting(existing) {
        return Err(ArmError::ResourceGroupBeingDeleted(
            existing.id.name().to_string(),
        ));
    }
    if let Some(requested) = location(request)? {
        if !same_location(&existing.body, &requested) {
            return Err(ArmError::InvalidResourceGroupLocation {
                existing: existing.body["location"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                requested,
            });
        }
    }
    let mut body = existing.body.clone();
    if let Some(tags) = tags(request)? {
        body["tags"] = tags;
    }
    if let Some(m) = request.get("managedBy") {
        if m.is_null() {
            if let Some(map) = body.as_object_mut() {
                map.remove("managedBy");
            }
        } else if m.is_string() {
            body["managedBy"] = m.clone();
        }
    }
    let mut batch = Batch::new();
    expect_as_read(&mut batch, &existing.id, Some(existing));
    batch.push(Change::PutResource(ctx.record(
        existing.id.clone(),
        RESOURCE_GROUP_TYPE.to_string(),
        body.clone(),
        Some(existing),
    )));
    batch.push(ctx.activity(WRITE, &existing.id, 200, None));
    Ok(Plan::new(batch, 200, Some(body)))
}

/// What deleting a group needs to know.
#[derive(Debug, Clone, Copy)]
pub struct GroupContents<'a> {
    pub group: &'a ResourceRecord,
    /// Every resource strictly within the group.
    pub resources: &'a [ResourceRecord],
    pub cascade: Cascade<'a>,
}

/// The first step of a deletion: marks the group and the user-assigned identities in it as
/// `Deleting`, so no write in the group and no attachment of its identities slips past the
/// second step. `None` when everything is marked already.
pub fn mark(
    ctx: &Context<'_>,
    group: &ResourceRecord,
    resources: &[ResourceRecord],
) -> Option<Batch> {
    let mut batch = Batch::new();
    if !is_deleting(group) {
        ctx.mark_deleting(&mut batch, group);
    }
    for r in resources {
        if r.id.is_type(UAI_TYPE) && !is_deleting(r) {
            ctx.mark_deleting(&mut batch, r);
        }
    }
    (!batch.is_empty()).then_some(batch)
}

/// `DELETE`, second step (after [`mark`]): the group, everything in it, the principals of
/// identities in it, assignments at scopes within it, and the group's user-assigned identities
/// in resources elsewhere; one batch. Answers 200 synchronously, which SDK pollers take as
/// done.
pub fn delete(ctx: &Context<'_>, contents: GroupContents<'_>) -> Plan {
    let group = contents.group;
    let mut batch = Batch::new();
    // INVARIANT: the group and its identities are marked `Deleting`: writes in the group and
    // attachments of its identities that read them before the mark fail their expectations,
    // later ones are refused, so `contents` and `cascade.referencing` are complete.
    batch.expect.push(Expect::ResourceUnchanged(
        group.id.clone(),
        group.updated_at,
    ));
    for r in contents.resources {
        if r.id.is_type(UAI_TYPE) {
            batch
                .expect
                .push(Expect::ResourceUnchanged(r.id.clone(), r.updated_at));
        }
    }
    cascade(ctx, &mut batch, contents.resources, contents.cascade);
    batch.push(Change::DeleteAssignmentsWithin(group.id.clone()));
    batch.push(Change::DeleteResourcesWithin(group.id.clone()));
    batch.push(Change::DeleteResource(group.id.clone()));
    batch.push(ctx.activity(DELETE, &group.id, 200, None));
    Plan::new(batch, 200, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testing::*;
    use lanyard_domain::{PrincipalType, RoleAssignment};

    const RG: &str = "/subscriptions/s/resourceGroups/rg";

    #[test]
    fn create_then_update() {
        let fx = Fixture::new();
        let id = ResourceId::parse("/subscriptions/s/resourcegroups/My-RG").unwrap();
        let plan = with_ctx(&fx, |ctx| {
            put(
                ctx,
                &id,
                &json!({"location": "West Europe", "tags": {"a": "b"}}),
                None,
            )
        })
        .unwrap();
        assert_eq!(plan.status, 201);
        let body = plan.body.unwrap();
        assert_eq!(body["location"], "westeurope");
        assert_eq!(body["id"], "/subscriptions/s/resourceGroups/My-RG");
        assert_eq!(body["properties"]["provisioningState"], "Succeeded");
        assert_eq!(plan.batch.expect, vec![Expect::ResourceAbsent(id.clone())]);

        let existing = record("/subscriptions/s/resourceGroups/My-RG", body);
        let again = with_ctx(&fx, |ctx| {
            put(
                ctx,
                &id,
                &json!({"location": "westeurope"}),
                Some(&existing),
            )
        })
        .unwrap();
        assert_eq!(again.status, 200);
        assert_eq!(again.body.unwrap()["tags"], json!({}));
        let moved = with_ctx(&fx, |ctx| {
            put(ctx, &id, &json!({"location": "eastus"}), Some(&existing))
        });
        assert!(matches!(
            moved,
            Err(ArmError::InvalidResourceGroupLocation { .. })
        ));
    }

    #[test]
    fn bad_input() {
        let fx = Fixture::new();
        let id = ResourceId::parse("/subscriptions/s/resourceGroups/rg.").unwrap();
        assert!(matches!(
            with_ctx(&fx, |ctx| put(ctx, &id, &json!({"location": "x"}), None)),
            Err(ArmError::InvalidResourceGroupName(_))
        ));
        let id = ResourceId::parse(RG).unwrap();
        assert!(matches!(
            with_ctx(&fx, |ctx| put(ctx, &id, &json!({}), None)),
            Err(ArmError::LocationRequired)
        ));
        assert!(matches!(
            with_ctx(&fx, |ctx| put(
                ctx,
                &id,
                &json!({"location": "x", "tags": {"a": 1}}),
                None
            )),
            Err(ArmError::InvalidField { field: "tags", .. })
        ));
        assert!(matches!(
            with_ctx(&fx, |ctx| put(ctx, &id, &json!([1]), None)),
            Err(ArmError::InvalidRequestContent(_))
        ));
    }

    #[test]
    fn deletion_marks_the_group_and_its_identities_first() {
        let fx = Fixture::new();
        let group = record(
            RG,
            json!({"location": "x", "properties": {"provisioningState": "Succeeded"}}),
        );
        let uai = record(
            &format!("{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u"),
            json!({"properties": {}}),
        );
        let vm = record(
            &format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm"),
            json!({}),
        );
        let batch = with_ctx(&fx, |ctx| mark(ctx, &group, &[uai.clone(), vm.clone()])).unwrap();
        let marked: Vec<ResourceRecord> = batch
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::PutResource(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(marked.len(), 2);
        assert!(marked.iter().all(crate::plan::is_deleting));
        assert!(batch.expect.contains(&Expect::ResourceUnchanged(
            group.id.clone(),
            group.updated_at
        )));
        // Once marked, writes in the group are refused.
        let marked_group = marked.iter().find(|r| r.id == group.id).unwrap().clone();
        assert!(with_ctx(&fx, |ctx| mark(ctx, &marked_group, &marked)).is_none());
        let id = ResourceId::parse(RG).unwrap();
        assert!(matches!(
            with_ctx(&fx, |ctx| put(
                ctx,
                &id,
                &json!({"location": "x"}),
                Some(&marked_group)
            )),
            Err(ArmError::ResourceGroupBeingDeleted(_))
        ));
    }

    #[test]
    fn delete_takes_identities_assignments_and_references() {
        let fx = Fixture::new();
        let group = record(RG, json!({"location": "x"}));
        let sys = fx.next();
        // An identity from another group, attached to a VM in this one.
        let elsewhere = fx.next();
        let elsewhere_id = "/subscriptions/s/resourceGroups/other/providers/Microsoft.ManagedIdentity/userAssignedIdentities/e";
        let vm = record(
            &format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm"),
            json!({"identity": {"type": "SystemAssigned, UserAssigned", "principalId": sys.to_string(),
                "userAssignedIdentities": {elsewhere_id: {"principalId": elsewhere.to_string(), "clientId": fx.next().to_string()}}}}),
        );
        let (up, uc) = (fx.next(), fx.next());
        let uai_id = format!("{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u");
        let uai = record(
            &uai_id,
            json!({"properties": {"principalId": up.to_string(), "clientId": uc.to_string()}}),
        );
        let outside = record(
            "/subscriptions/s/resourceGroups/other/providers/Microsoft.App/containerApps/app",
            json!({"identity": {"type": "SystemAssigned, UserAssigned", "principalId": fx.next().to_string(),
                "userAssignedIdentities": {uai_id.clone(): {"principalId": up.to_string(), "clientId": uc.to_string()}}}}),
        );
        let assignment = RoleAssignment {
            id: fx.next(),
            scope: ResourceId::parse("/subscriptions/s").unwrap(),
            role_definition_id: fx.next(),
            principal_id: sys,
            principal_type: PrincipalType::ServicePrincipal,
            description: None,
            condition: None,
            condition_version: None,
            created_on: fx.now,
            updated_on: fx.now,
            created_by: None,
            updated_by: None,
        };
        let resources = vec![vm.clone(), uai.clone()];
        let plan = with_ctx(&fx, |ctx| {
            delete(
                ctx,
                GroupContents {
                    group: &group,
                    resources: &resources,
                    cascade: Cascade {
                        assignments: std::slice::from_ref(&assignment),
                        referencing: std::slice::from_ref(&outside),
                    },
                },
            )
        });
        let c = &plan.batch.changes;
        for p in [sys, up] {
            assert!(c.contains(&Change::DeletePrincipal(p)));
            assert!(c.contains(&Change::DeleteAssignmentsOfPrincipal(p)));
            assert!(c.contains(&retired(p)));
        }
        // The identity from elsewhere survives, but its tokens from the VM stop.
        assert!(c.contains(&revoked_on(elsewhere, &vm.id)));
        assert!(!c.contains(&Change::DeletePrincipal(elsewhere)));
        assert!(c.contains(&Change::DeleteAssignmentsWithin(group.id.clone())));
        assert!(c.contains(&Change::DeleteResourcesWithin(group.id.clone())));
        assert!(c.contains(&Change::DeleteResource(group.id.clone())));
        let rewritten = c
            .iter()
            .find_map(|ch| match ch {
                Change::PutResource(r) if r.id == outside.id => Some(r.body.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(rewritten["identity"]["type"], "SystemAssigned");
        assert!(plan.batch.expect.contains(&Expect::ResourceUnchanged(
            group.id.clone(),
            group.updated_at
        )));
        assert!(plan
            .batch
            .expect
            .contains(&Expect::ResourceUnchanged(uai.id.clone(), uai.updated_at)));
        let log = activities(&plan.batch);
        assert!(log.contains(&(
            "Microsoft.Authorization/roleAssignments/delete".into(),
            assignment.resource_id().to_string(),
            200
        )));
        assert_eq!(log.last().unwrap().0, DELETE);
    }
}
