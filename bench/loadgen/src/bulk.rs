//! Bulk load: user-assigned identities (the resource and its service principal, shaped as
//! the control plane writes them) in resource groups, and role assignments over them, written
//! straight through `lanyard_storage` in large batches. The server must be stopped: it keeps
//! its authorization index in memory and would not see these rows until it restarts.
//!
//! Assignment `j` of identity `p` uses built-in role `j mod R` at resource group
//! `(home(p) + j div R) mod G`, so every (scope, role, principal) is distinct.

use std::time::Instant;

use anyhow::{anyhow, Context};
use clap::Args;
use lanyard_domain::{
    builtin, Principal, PrincipalKind, PrincipalType, ResourceId, RoleAssignment,
    ServicePrincipalSource,
};
use lanyard_storage::{Batch, Change, ResourceRecord};
use serde_json::json;
use uuid::Uuid;

#[derive(Args, Debug)]
pub struct BulkArgs {
    /// The store: a SQLite file path or a `postgres://` URL.
    #[arg(long)]
    store: String,
    #[arg(long, default_value_t = 100_000)]
    identities: usize,
    #[arg(long, default_value_t = 1_000_000)]
    assignments: usize,
    #[arg(long, default_value_t = 100)]
    groups: usize,
    /// Changes per transaction.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
}

const UAI_TYPE: &str = "Microsoft.ManagedIdentity/userAssignedIdentities";

pub fn run(args: BulkArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.identities > 0 && args.groups > 0,
        "--identities and --groups must be positive"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(load(args))
}

async fn load(args: BulkArgs) -> anyhow::Result<()> {
    let store = lanyard_storage::open(&args.store)
        .await
        .map_err(|e| anyhow!("opening the store: {e}"))?;
    let subscription = store
        .subscriptions()
        .await
        .map_err(|e| anyhow!("{e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| {
            anyhow!("the store has no subscription; start `lanyard serve` on it once first")
        })?;
    let sub = subscription.id.to_string();
    let tenant = subscription.tenant_id;
    let now = time::OffsetDateTime::now_utc();
    let roles: Vec<Uuid> = builtin::built_in_roles().iter().map(|r| r.id).collect();
    anyhow::ensure!(!roles.is_empty(), "no built-in roles");
    let per_identity = args.assignments.div_ceil(args.identities);
    anyhow::ensure!(
        per_identity <= roles.len() * args.groups,
        "too many assignments per identity for distinct (scope, role) pairs"
    );

    let started = Instant::now();
    let groups: Vec<ResourceId> = (0..args.groups)
        .map(|g| ResourceId::resource_group(&sub, &format!("bench-rg-{g}")))
        .collect();
    let mut batch = Batch::new();
    for id in &groups {
        let body = json!({
            "id": id.to_string(),
            "name": id.name(),
            "type": "Microsoft.Resources/resourceGroups",
            "location": "local",
            "tags": {},
            "properties": { "provisioningState": "Succeeded" },
        });
        batch.push(Change::PutResource(ResourceRecord {
            id: id.clone(),
            resource_type: "Microsoft.Resources/resourceGroups".to_string(),
            body,
            created_at: now,
            updated_at: now,
        }));
    }
    commit(store.as_ref(), &mut batch).await?;

    let mut principals = Vec::with_capacity(args.identities);
    for i in 0..args.identities {
        let group = &groups[i % args.groups];
        let id = group.with_provider(
            "Microsoft.ManagedIdentity",
            "userAssignedIdentities",
            &format!("bench-id-{i}"),
        );
        let principal = Principal {
            object_id: Uuid::new_v4(),
            tenant_id: tenant,
            display_name: id.name().to_string(),
            kind: PrincipalKind::ServicePrincipal {
                client_id: Uuid::new_v4(),
                source: ServicePrincipalSource::UserAssigned {
                    identity: id.clone(),
                },
            },
        };
        let body = json!({
            "id": id.to_string(),
            "name": id.name(),
            "type": UAI_TYPE,
            "location": "local",
            "tags": {},
            "properties": {
                "isolationScope": "None",
                "tenantId": tenant.to_string(),
                "principalId": principal.object_id.to_string(),
                "clientId": principal.client_id().unwrap_or_default().to_string(),
            },
        });
        principals.push(principal.object_id);
        batch.push(Change::PutPrincipal(principal));
        batch.push(Change::PutResource(ResourceRecord {
            id,
            resource_type: UAI_TYPE.to_string(),
            body,
            created_at: now,
            updated_at: now,
        }));
        if batch.changes.len() >= args.batch {
            commit(store.as_ref(), &mut batch).await?;
        }
    }
    commit(store.as_ref(), &mut batch).await?;
    let identities_done = started.elapsed();

    let mut written = 0usize;
    'outer: for j in 0..per_identity {
        for (p, principal) in principals.iter().enumerate() {
            if written == args.assignments {
                break 'outer;
            }
            let scope = &groups[(p + j / roles.len()) % args.groups];
            batch.push(Change::PutAssignment(RoleAssignment {
                id: Uuid::new_v4(),
                scope: scope.clone(),
                role_definition_id: roles[j % roles.len()],
                principal_id: *principal,
                principal_type: PrincipalType::ServicePrincipal,
                description: None,
                condition: None,
                condition_version: None,
                created_on: now,
                updated_on: now,
                created_by: None,
                updated_by: None,
            }));
            written += 1;
            if batch.changes.len() >= args.batch {
                commit(store.as_ref(), &mut batch).await?;
            }
        }
    }
    commit(store.as_ref(), &mut batch).await?;
    let total = started.elapsed();
    println!(
        "{}",
        json!({
            "identities": args.identities,
            "assignments": written,
            "groups": args.groups,
            "identities_seconds": identities_done.as_secs_f64(),
            "assignments_seconds": (total - identities_done).as_secs_f64(),
            "seconds": total.as_secs_f64(),
            "backend": store.backend(),
        })
    );
    Ok(())
}

async fn commit(store: &dyn lanyard_storage::Store, batch: &mut Batch) -> anyhow::Result<()> {
    if batch.changes.is_empty() {
        return Ok(());
    }
    let full = std::mem::take(batch);
    store
        .commit(full)
        .await
        .map_err(|e| anyhow!("writing a batch: {e}"))
}
