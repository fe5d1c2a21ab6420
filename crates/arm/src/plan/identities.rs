//! User-assigned identities and their federated identity credentials.
//!
//! Creating an identity creates its service principal (source `UserAssigned`); the principal
//! lives as long as the identity. A federated credential is stored as the token service reads
//! it: `{"id","name","type","properties":{"issuer","subject","audiences"}}`.

use lanyard_domain::{ChangeMode, ResourceId, ServicePrincipalSource};
use lanyard_storage::{Batch, Change, Expect, ResourceRecord};
use serde_json::{json, Map, Value};

use super::{
    expect_as_read, expect_group, is_deleting, location, object, properties, same_location, tags,
    Context, Plan,
};
use crate::errors::ArmError;
use crate::kinds::{Kind, FIC_TYPE, UAI_TYPE};
use crate::shape::uai_ids;

const WRITE: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/write";
const FIC_WRITE: &str =
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write";

/// Azure's limit of federated credentials per identity.
pub const MAX_FEDERATED_CREDENTIALS: usize = 20;

/// The audience workload identity federation uses unless told otherwise.
pub const DEFAULT_AUDIENCE: &str = "api://AzureADTokenExchange";

/// PUT (create or replace tags) or PATCH (tags) of a user-assigned identity.
pub fn write(
    ctx: &Context<'_>,
    kind: &Kind,
    id: &ResourceId,
    request: &Value,
    group: &ResourceRecord,
    existing: Option<&ResourceRecord>,
    mode: ChangeMode,
) -> Result<Plan, ArmError> {
    if !(kind.name.check)(id.name()) {
        return Err(ArmError::InvalidResourceName {
            name: id.name().to_string(),
            rule: kind.name.description,
        });
    }
    object(request)?;
    let id = existing.map_or_else(|| kind.id_in(&group.id, id.name()), |e| e.id.clone());
    if mode == ChangeMode::Patch && existing.is_none() {
        return Err(ArmError::ResourceNotFound {
            resource: format!("{UAI_TYPE}/{}", id.name()),
            group: group.id.name().to_string(),
        });
    }
    let requested_location = location(request)?;
    let location = match (requested_location, existing) {
        (Some(l), Some(e)) if !same_location(&e.body, &l) => {
            return Err(ArmError::InvalidResourceLocation {
                resource: id.to_string(),
                existing: e.body["location"].as_str().unwrap_or_default().to_string(),
                requested: l,
            })
        }
        (Some(l), _) => l,
        (None, Some(e)) => e.body["location"].as_str().unwrap_or_default().to_string(),
        (None, None) => return Err(ArmError::LocationRequired),
    };
    let mut props: Map<String, Value> = match (mode, existing) {
        (ChangeMode::Patch, Some(e)) => e.body["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default(),
        _ => Map::new(),
    };
    for (k, v) in properties(request)? {
        if !matches!(k.as_str(), "tenantId" | "principalId" | "clientId") {
            props.insert(k, v);
        }
    }
    props
        .entry("isolationScope")
        .or_insert_with(|| json!("None"));
    let tags = match (tags(request)?, mode, existing) {
        (Some(t), _, _) => t,
        (None, ChangeMode::Patch, Some(e)) => e.body.get("tags").cloned().unwrap_or(json!({})),
        (None, _, _) => json!({}),
    };

    if let Some(e) = existing.filter(|e| is_deleting(e)) {
        return Err(ArmError::ResourceBeingDeleted(e.id.to_string()));
    }
    let mut batch = Batch::new();
    expect_as_read(&mut batch, &id, existing);
    expect_group(&mut batch, group)?;
    let (principal_id, client_id) = match existing.and_then(|e| uai_ids(&e.body)) {
        Some(ids) => ids,
        None => {
            let principal = ctx.new_principal(
                id.name(),
                ServicePrincipalSource::UserAssigned {
                    identity: id.clone(),
                },
            );
            let ids = (
                principal.object_id,
                principal.client_id().unwrap_or_default(),
            );
            batch.push(Change::PutPrincipal(principal));
            ids
        }
    };
    props.insert("tenantId".into(), json!(ctx.tenant_id.to_string()));
    props.insert("principalId".into(), json!(principal_id.to_string()));
    props.insert("clientId".into(), json!(client_id.to_string()));
    let body = json!({
        "id": id.to_string(),
        "name": id.name(),
        "type": UAI_TYPE,
        "location": location,
        "tags": tags,
        "properties": props,
    });
    batch.push(Change::PutResource(ctx.record(
        id.clone(),
        UAI_TYPE.to_string(),
        body.clone(),
        existing,
    )));
    let status = if existing.is_some() { 200 } else { 201 };
    batch.push(ctx.activity(WRITE, &id, status, None));
    Ok(Plan::new(batch, status, Some(body)))
}

/// PUT of a federated identity credential under `parent`; `siblings` counts the parent's
/// other credentials.
pub fn put_credential(
    ctx: &Context<'_>,
    kind: &Kind,
    id: &ResourceId,
    request: &Value,
    parent: &ResourceRecord,
    existing: Option<&ResourceRecord>,
    siblings: usize,
) -> Result<Plan, ArmError> {
    if !(kind.name.check)(id.name()) {
        return Err(ArmError::InvalidResourceName {
            name: id.name().to_string(),
            rule: kind.name.description,
        });
    }
    object(request)?;
    let props = properties(request)?;
    let text = |field: &'static str| -> Result<String, ArmError> {
        match props.get(field) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            _ => Err(ArmError::InvalidField {
                field,
                reason: "it is required and must be a non-empty string".into(),
            }),
        }
    };
    let issuer = text("issuer")?;
    if !issuer.starts_with("https://") {
        return Err(ArmError::InvalidField {
            field: "issuer",
            reason: format!("'{issuer}' must be an https URL"),
        });
    }
    let subject = text("subject")?;
    let audiences: Vec<String> = match props.get("audiences") {
        None | Some(Value::Null) => vec![DEFAULT_AUDIENCE.to_string()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| {
                v.as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| ArmError::InvalidField {
                        field: "audiences",
                        reason: "every audience must be a non-empty string".into(),
                    })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ArmError::InvalidField {
                field: "audiences",
                reason: "it must be a non-empty array of strings".into(),
            })
        }
    };
    if is_deleting(parent) {
        return Err(ArmError::ResourceBeingDeleted(parent.id.to_string()));
    }
    if existing.is_none() && siblings >= MAX_FEDERATED_CREDENTIALS {
        return Err(ArmError::InvalidField {
            field: "name",
            reason: format!(
                "an identity has at most {MAX_FEDERATED_CREDENTIALS} federated identity credentials"
            ),
        });
    }
    let id = existing.map_or_else(|| kind.id_in(&parent.id, id.name()), |e| e.id.clone());
    let body = json!({
        "id": id.to_string(),
        "name": id.name(),
        "type": FIC_TYPE,
        "properties": {
            "issuer": issuer,
            "subject": subject,
            "audiences": audiences,
        }
    });
    let mut batch = Batch::new();
    expect_as_read(&mut batch, &id, existing);
    batch.expect.push(Expect::ResourceExists(parent.id.clone()));
    batch.push(Change::PutResource(ctx.record(
        id.clone(),
        FIC_TYPE.to_string(),
        body.clone(),
        existing,
    )));
    let status = if existing.is_some() { 200 } else { 201 };
    batch.push(ctx.activity(FIC_WRITE, &id, status, None));
    Ok(Plan::new(batch, status, Some(body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::lookup;
    use crate::plan::testing::*;
    use lanyard_domain::{PrincipalKind, ServicePrincipalSource};

    const RG: &str = "/subscriptions/s/resourceGroups/rg";

    fn uai_kind() -> &'static Kind {
        lookup("Microsoft.ManagedIdentity", &["userAssignedIdentities"]).unwrap()
    }

    fn fic_kind() -> &'static Kind {
        lookup(
            "Microsoft.ManagedIdentity",
            &["userAssignedIdentities", "federatedIdentityCredentials"],
        )
        .unwrap()
    }

    #[test]
    fn create_makes_a_principal_and_update_keeps_it() {
        let fx = Fixture::new();
        let group = record(RG, json!({"location": "westus"}));
        let id = ResourceId::parse(&format!(
            "{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"
        ))
        .unwrap();
        let plan = with_ctx(&fx, |ctx| {
            write(
                ctx,
                uai_kind(),
                &id,
                &json!({"location": "West US", "tags": {"a": "1"}}),
                &group,
                None,
                ChangeMode::Put,
            )
        })
        .unwrap();
        assert_eq!(plan.status, 201);
        let body = plan.body.clone().unwrap();
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
            body["properties"]["principalId"],
            principal.object_id.to_string()
        );
        assert_eq!(
            body["properties"]["clientId"],
            principal.client_id().unwrap().to_string()
        );
        assert_eq!(body["properties"]["tenantId"], fx.tenant.to_string());
        assert!(matches!(
            principal.kind,
            PrincipalKind::ServicePrincipal {
                source: ServicePrincipalSource::UserAssigned { .. },
                ..
            }
        ));
        let existing = record(id.as_str(), body.clone());
        let patch = with_ctx(&fx, |ctx| {
            write(
                ctx,
                uai_kind(),
                &id,
                &json!({"tags": {"b": "2"}, "properties": {"principalId": "forged"}}),
                &group,
                Some(&existing),
                ChangeMode::Patch,
            )
        })
        .unwrap();
        assert_eq!(patch.status, 200);
        let b = patch.body.unwrap();
        assert_eq!(b["tags"], json!({"b": "2"}));
        assert_eq!(
            b["properties"]["principalId"],
            body["properties"]["principalId"]
        );
        assert!(!patch
            .batch
            .changes
            .iter()
            .any(|c| matches!(c, Change::PutPrincipal(_))));
        let missing = with_ctx(&fx, |ctx| {
            write(
                ctx,
                uai_kind(),
                &id,
                &json!({}),
                &group,
                None,
                ChangeMode::Patch,
            )
        });
        assert!(matches!(missing, Err(ArmError::ResourceNotFound { .. })));
        let bad = ResourceId::parse(&format!(
            "{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ab"
        ))
        .unwrap();
        assert!(matches!(
            with_ctx(&fx, |ctx| write(
                ctx,
                uai_kind(),
                &bad,
                &json!({"location": "x"}),
                &group,
                None,
                ChangeMode::Put
            )),
            Err(ArmError::InvalidResourceName { .. })
        ));
    }

    #[test]
    fn federated_credentials_have_the_shape_the_token_service_reads() {
        let fx = Fixture::new();
        let parent = record(
            &format!("{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"),
            json!({}),
        );
        let id = ResourceId::parse(&format!(
            "{}/federatedIdentityCredentials/gh-main",
            parent.id
        ))
        .unwrap();
        let plan = with_ctx(&fx, |ctx| {
            put_credential(
                ctx,
                fic_kind(),
                &id,
                &json!({"properties": {"issuer": "https://token.actions.githubusercontent.com", "subject": "repo:o/r:ref:refs/heads/main", "audiences": ["api://AzureADTokenExchange"], "extra": 1}}),
                &parent,
                None,
                0,
            )
        })
        .unwrap();
        assert_eq!(
            plan.body.unwrap(),
            json!({
                "id": id.to_string(),
                "name": "gh-main",
                "type": FIC_TYPE,
                "properties": {
                    "issuer": "https://token.actions.githubusercontent.com",
                    "subject": "repo:o/r:ref:refs/heads/main",
                    "audiences": ["api://AzureADTokenExchange"]
                }
            })
        );
        let no_subject = with_ctx(&fx, |ctx| {
            put_credential(
                ctx,
                fic_kind(),
                &id,
                &json!({"properties": {"issuer": "https://x"}}),
                &parent,
                None,
                0,
            )
        });
        assert!(matches!(
            no_subject,
            Err(ArmError::InvalidField {
                field: "subject",
                ..
            })
        ));
        let full = with_ctx(&fx, |ctx| {
            put_credential(
                ctx,
                fic_kind(),
                &id,
                &json!({"properties": {"issuer": "https://x", "subject": "s"}}),
                &parent,
                None,
                20,
            )
        });
        assert!(full.is_err());
        let bad_name =
            ResourceId::parse(&format!("{}/federatedIdentityCredentials/-x", parent.id)).unwrap();
        assert!(matches!(
            with_ctx(&fx, |ctx| put_credential(
                ctx,
                fic_kind(),
                &bad_name,
                &json!({}),
                &parent,
                None,
                0
            )),
            Err(ArmError::InvalidResourceName { .. })
        ));
    }
}
