//! Non-escalation: no principal raises its own rights.
//!
//! Seeded random sequences of control-plane writes (custom role definitions created, replaced
//! and deleted through any scope; role assignments made and removed; user-assigned identities
//! attached and detached; VMs deleted and made again; vault permission models switched and
//! access policies added; workload sessions opened, whose managed identities then act too),
//! each issued by a principal holding random partial rights. Operations lean towards what an
//! attacker would try: scopes where the actor holds some right, roles it holds, itself as the
//! assignee.
//!
//! After every step the effective rights of every principal (4 apps, the VM's system identity,
//! the user-assigned identity) are read back as the server enforces them: the engine's
//! verdict (`POST /lanyard/access/explain`, as the administrator) on 5 control actions at 6
//! scopes, and the right to read the vault's secrets (RBAC data action or access policy,
//! whichever model the vault is in; for the apps also by reading the secret). A right that a
//! principal did not hold before the step and holds after it must have been granted by an
//! actor that already held, at that scope, `roleAssignments/write` or
//! `roleDefinitions/write` (or, for a vault's secrets while the vault was in access-policy
//! mode, `vaults/write`: Azure's documented access-policy model). Anything else is an
//! escalation and fails the test with the steps that led to it.
//!
//! In CI: 2 sequences of 24 steps per backend. A longer run:
//! `LANYARD_ESCALATION_SEQUENCES=20 LANYARD_ESCALATION_STEPS=60 cargo nextest run -p lanyard
//! --test e2e -E 'test(/privilege/)'` (and `LANYARD_RELIABILITY_SEED` to replay one).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use super::kit::*;
use crate::both_backends;
use crate::support::{Backend, TestServer};

const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
const KV_CONTRIBUTOR: &str = "f25e0fa2-a7c8-4377-a976-54943a77a395";

const RA_WRITE: &str = "Microsoft.Authorization/roleAssignments/write";
const RD_WRITE: &str = "Microsoft.Authorization/roleDefinitions/write";
const RG_WRITE: &str = "Microsoft.Resources/subscriptions/resourceGroups/write";
const VM_WRITE: &str = "Microsoft.Compute/virtualMachines/write";
const KV_WRITE: &str = "Microsoft.KeyVault/vaults/write";
const GET_SECRET: &str = "Microsoft.KeyVault/vaults/secrets/getSecret/action";

/// The control actions probed at every scope.
const PROBED: [&str; 5] = [RA_WRITE, RD_WRITE, RG_WRITE, VM_WRITE, KV_WRITE];

const APPS: usize = 4;
const SECRET: &str = "probe";

fn sequences() -> u64 {
    env_count("LANYARD_ESCALATION_SEQUENCES", 2)
}

fn steps() -> usize {
    env_count("LANYARD_ESCALATION_STEPS", 24) as usize
}

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

both_backends!(no_principal_raises_its_own_rights);

async fn no_principal_raises_its_own_rights(backend: Backend) {
    let seed = seed("privilege");
    let mut escalations = Vec::new();
    let mut totals = Totals::default();
    for sequence in 0..sequences() {
        let mut rng = Rng::new(seed).fork(sequence);
        let server = TestServer::start(backend).await.unwrap();
        let mut world = World::build(&server, &mut rng).await;
        let found = world.run(&mut rng, steps(), &mut totals).await;
        escalations.extend(
            found
                .into_iter()
                .map(|e| format!("sequence {sequence}: {e}")),
        );
    }
    println!(
        "privilege ({backend:?}): {} steps, {} writes accepted, {} refused, {} rights gained \
         legitimately, {} rights probed per step at most, {} escalations",
        totals.steps,
        totals.accepted,
        totals.refused,
        totals.legitimate_gains,
        totals.probes,
        escalations.len()
    );
    assert!(
        escalations.is_empty(),
        "escalations (seed {seed}):\n{}",
        escalations.join("\n\n")
    );
    assert!(
        totals.accepted > 0 && totals.refused > 0,
        "the sequences exercised nothing: {totals:?}"
    );
}

#[derive(Debug, Default)]
struct Totals {
    steps: usize,
    accepted: usize,
    refused: usize,
    legitimate_gains: usize,
    probes: usize,
}

/// Someone who can act: an app (client secret) or a managed identity (a token from a
/// workload session's identity endpoint).
#[derive(Clone)]
struct Actor {
    name: String,
    oid: Uuid,
    arm: String,
    /// The vault token, for apps.
    vault: Option<String>,
}

/// What a principal may do: (action, scope) pairs, and whether it reads the vault's secrets.
type Rights = BTreeSet<(String, String)>;

struct World {
    t: Target,
    admin: String,
    sub: String,
    rg1: String,
    rg2: String,
    vm1: String,
    uami: String,
    uami_oid: Uuid,
    vault: String,
    vault_name: String,
    custom: [Uuid; 3],
    apps: Vec<Actor>,
    /// Managed identities whose tokens a session handed out, by object id.
    identities: BTreeMap<Uuid, Actor>,
    /// What happened so far, for the failure message.
    log: Vec<String>,
}

impl World {
    async fn build(server: &TestServer, rng: &mut Rng) -> World {
        let t = Target::of(server);
        let admin = t.admin_token(ARM_SCOPE).await;
        let sub = t.subscription();
        let rg1 = format!("{sub}/resourceGroups/esc1");
        let rg2 = format!("{sub}/resourceGroups/esc2");
        for rg in [&rg1, &rg2] {
            put_ok(
                &t,
                &admin,
                &format!("{rg}?{RG_API}"),
                &json!({"location": "local"}),
            )
            .await;
        }
        let uami = format!("{rg1}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ua1");
        let body = put_ok(
            &t,
            &admin,
            &format!("{uami}?{UAI_API}"),
            &json!({"location": "local"}),
        )
        .await;
        let uami_oid =
            Uuid::parse_str(body["properties"]["principalId"].as_str().unwrap()).unwrap();
        let vm1 = format!("{rg1}/providers/Microsoft.Compute/virtualMachines/vm1");
        put_ok(
            &t,
            &admin,
            &format!("{vm1}?{VM_API}"),
            &json!({"location": "local", "identity": {"type": "SystemAssigned"}}),
        )
        .await;
        let vault_name = format!("kvesc{}", rng.word(8));
        let vault = format!("{rg2}/providers/Microsoft.KeyVault/vaults/{vault_name}");
        put_ok(
            &t,
            &admin,
            &format!("{vault}?{KV_API}"),
            &json!({"location": "local", "properties": {
                "tenantId": t.tenant(), "sku": {"family": "A", "name": "standard"},
                "enableRbacAuthorization": true}}),
        )
        .await;
        // The administrator writes the probe secret (Owner grants no data actions).
        assign(
            &t,
            &admin,
            &vault,
            KV_SECRETS_OFFICER,
            &t.admin.object_id.to_string(),
        )
        .await;
        let admin_vault = t.admin_token(VAULT_SCOPE).await;
        let r = call(
            &t.http,
            Method::PUT,
            &t.vault(&vault_name, &format!("/secrets/{SECRET}?{SECRETS_API}")),
            bearer_json(&admin_vault, &json!({"value": "sealed"})),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);

        // Custom roles: one assignable at the subscription, one at a group, one not there yet.
        let custom = [rng.uuid(), rng.uuid(), rng.uuid()];
        for (id, actions, scope) in [
            (
                custom[0],
                "Microsoft.Resources/subscriptions/resourceGroups/read",
                &sub,
            ),
            (custom[1], "Microsoft.Compute/virtualMachines/read", &rg1),
        ] {
            put_ok(
                &t,
                &admin,
                &format!("{scope}/providers/Microsoft.Authorization/roleDefinitions/{id}?{RA_API}"),
                &json!({"properties": {
                    "roleName": format!("esc-{id}"),
                    "permissions": [{"actions": [actions]}],
                    "assignableScopes": [scope]}}),
            )
            .await;
        }

        let graph = t.admin_token(GRAPH_SCOPE).await;
        let mut apps = Vec::new();
        for i in 0..APPS {
            let app = create_app(&t, &graph, &format!("esc-{i}")).await;
            apps.push(Actor {
                name: format!("app{i}"),
                oid: Uuid::parse_str(&app.object_id).unwrap(),
                arm: t.token(&app.client_id, &app.secret, ARM_SCOPE).await,
                vault: Some(t.token(&app.client_id, &app.secret, VAULT_SCOPE).await),
            });
        }
        let mut world = World {
            t,
            admin,
            sub,
            rg1,
            rg2,
            vm1,
            uami,
            uami_oid,
            vault,
            vault_name,
            custom,
            apps,
            identities: BTreeMap::new(),
            log: Vec::new(),
        };

        // Partial rights. The first app always gets the shape of a known attack: Owner of
        // one group and a narrow custom role at the subscription.
        let first = world.apps[0].oid;
        world.grant(&world.rg1.clone(), OWNER, first).await;
        world
            .grant(&world.sub.clone(), &custom[0].to_string(), first)
            .await;
        let menu = world.initial_menu();
        for i in 1..APPS {
            let oid = world.apps[i].oid;
            for _ in 0..1 + rng.below(2) {
                let (scope, role) = rng.pick(&menu).clone();
                world.grant(&scope, &role, oid).await;
            }
        }
        world
    }

    fn initial_menu(&self) -> Vec<(String, String)> {
        vec![
            (self.rg1.clone(), OWNER.into()),
            (self.rg2.clone(), OWNER.into()),
            (self.sub.clone(), CONTRIBUTOR.into()),
            (self.rg2.clone(), USER_ACCESS_ADMIN.into()),
            (self.vault.clone(), KV_CONTRIBUTOR.into()),
            (self.rg1.clone(), VM_CONTRIBUTOR.into()),
            (self.uami.clone(), MI_OPERATOR.into()),
            (self.sub.clone(), self.custom[0].to_string()),
            (self.rg1.clone(), self.custom[1].to_string()),
            (self.sub.clone(), READER.into()),
            (self.vm1.clone(), CONTRIBUTOR.into()),
        ]
    }

    /// An assignment made by the administrator.
    async fn grant(&mut self, scope: &str, role: &str, principal: Uuid) {
        let r = self
            .assign_as(&self.admin.clone(), scope, role, principal)
            .await;
        if r.status == 409 {
            return; // drawn twice
        }
        assert!((200..300).contains(&r.status), "{}", r.text);
        self.log.push(format!(
            "setup: {} at {scope} for {principal}",
            self.role_name(role)
        ));
    }

    async fn assign_as(&self, token: &str, scope: &str, role: &str, principal: Uuid) -> Reply {
        let path = format!(
            "{scope}/providers/Microsoft.Authorization/roleAssignments/{}?{RA_API}",
            Uuid::new_v4()
        );
        let body = json!({"properties": {
            "roleDefinitionId": format!(
                "{}/providers/Microsoft.Authorization/roleDefinitions/{role}", self.sub),
            "principalId": principal,
            "principalType": "ServicePrincipal"}});
        call(
            &self.t.http,
            Method::PUT,
            &self.t.arm(&path),
            bearer_json(token, &body),
        )
        .await
    }

    fn role_name(&self, role: &str) -> String {
        let known = [
            (OWNER, "Owner"),
            (CONTRIBUTOR, "Contributor"),
            (READER, "Reader"),
            (USER_ACCESS_ADMIN, "User Access Administrator"),
            (KV_CONTRIBUTOR, "Key Vault Contributor"),
            (VM_CONTRIBUTOR, "Virtual Machine Contributor"),
            (MI_OPERATOR, "Managed Identity Operator"),
            (KV_SECRETS_USER, "Key Vault Secrets User"),
        ];
        known
            .iter()
            .find(|(id, _)| *id == role)
            .map(|(_, n)| n.to_string())
            .or_else(|| {
                self.custom
                    .iter()
                    .position(|c| c.to_string() == role)
                    .map(|i| format!("custom{i}"))
            })
            .unwrap_or_else(|| role.to_string())
    }

    fn scopes(&self) -> Vec<String> {
        vec![
            self.sub.clone(),
            self.rg1.clone(),
            self.rg2.clone(),
            self.vm1.clone(),
            self.uami.clone(),
            self.vault.clone(),
        ]
    }

    fn short(&self, scope: &str) -> String {
        let names = [
            (&self.vault, "vault"),
            (&self.uami, "ua1"),
            (&self.vm1, "vm1"),
            (&self.rg2, "rg2"),
            (&self.rg1, "rg1"),
            (&self.sub, "sub"),
        ];
        names
            .iter()
            .find(|(s, _)| s.eq_ignore_ascii_case(scope))
            .map(|(_, n)| n.to_string())
            .unwrap_or_else(|| scope.to_string())
    }

    // --------------------------------------------------------------------------------------
    // Observing

    /// The VM's system identity, if the VM exists and has one.
    async fn vm_identity(&self) -> Option<Uuid> {
        let r = call(
            &self.t.http,
            Method::GET,
            &self.t.arm(&format!("{}?{VM_API}", self.vm1)),
            bearer(&self.admin),
        )
        .await;
        if r.status != 200 {
            return None;
        }
        r.json["identity"]["principalId"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
    }

    /// The vault's properties as the administrator reads them.
    async fn vault_properties(&self) -> Value {
        let r = call(
            &self.t.http,
            Method::GET,
            &self.t.arm(&format!("{}?{KV_API}", self.vault)),
            bearer(&self.admin),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["properties"].clone()
    }

    /// Every principal's rights as the server enforces them now.
    async fn observe(&self) -> Observation {
        let mut principals: Vec<Uuid> = self.apps.iter().map(|a| a.oid).collect();
        principals.push(self.uami_oid);
        let vm_identity = self.vm_identity().await;
        principals.extend(vm_identity);
        let vault = self.vault_properties().await;
        let rbac = vault["enableRbacAuthorization"].as_bool().unwrap_or(true);

        let mut questions = Vec::new();
        for &p in &principals {
            for scope in self.scopes() {
                for action in PROBED {
                    questions.push((p, action.to_string(), scope.clone(), false));
                }
            }
            questions.push((p, GET_SECRET.to_string(), self.vault.clone(), true));
        }
        let answers = explain_all(&self.t, &self.admin, &questions).await;
        let mut rights: BTreeMap<Uuid, Rights> =
            principals.iter().map(|p| (*p, Rights::new())).collect();
        let mut rbac_reader = BTreeSet::new();
        for ((p, action, scope, data), allowed) in questions.iter().zip(answers) {
            if !allowed {
                continue;
            }
            if *data {
                rbac_reader.insert(*p);
            } else if let Some(r) = rights.get_mut(p) {
                r.insert((action.clone(), scope.to_ascii_lowercase()));
            }
        }
        // Reading the vault's secrets, in the model the vault is in.
        let policy_readers: BTreeSet<Uuid> = vault["accessPolicies"]
            .as_array()
            .map(|policies| {
                policies
                    .iter()
                    .filter(|p| {
                        p["permissions"]["secrets"].as_array().is_some_and(|s| {
                            s.iter().any(|v| {
                                v.as_str().is_some_and(|v| {
                                    v.eq_ignore_ascii_case("get") || v.eq_ignore_ascii_case("all")
                                })
                            })
                        })
                    })
                    .filter_map(|p| p["objectId"].as_str().and_then(|s| Uuid::parse_str(s).ok()))
                    .collect()
            })
            .unwrap_or_default();
        let readers = if rbac { rbac_reader } else { policy_readers };
        for p in &principals {
            if readers.contains(p) {
                if let Some(r) = rights.get_mut(p) {
                    r.insert(("secrets/get".into(), self.vault.to_ascii_lowercase()));
                }
            }
        }
        Observation {
            rights,
            rbac_vault: rbac,
            vm_identity,
            probes: questions.len(),
        }
    }

    /// The apps' real answers at the vault agree with what was observed.
    async fn check_vault_reads(&self, seen: &Observation) -> Vec<String> {
        let mut wrong = Vec::new();
        for app in &self.apps {
            let Some(token) = &app.vault else { continue };
            let r = call(
                &self.t.http,
                Method::GET,
                &self.t.vault(
                    &self.vault_name,
                    &format!("/secrets/{SECRET}?{SECRETS_API}"),
                ),
                bearer(token),
            )
            .await;
            let expected = seen.rights[&app.oid]
                .contains(&("secrets/get".to_string(), self.vault.to_ascii_lowercase()));
            let got = r.status == 200;
            if got != expected || !(r.status == 200 || r.status == 403) {
                wrong.push(format!(
                    "{} reading the vault's secret: expected {}, got {} {}",
                    app.name,
                    if expected { "200" } else { "403" },
                    r.status,
                    r.text
                ));
            }
        }
        wrong
    }

    // --------------------------------------------------------------------------------------
    // Acting

    async fn run(&mut self, rng: &mut Rng, steps: usize, totals: &mut Totals) -> Vec<String> {
        let mut escalations = Vec::new();
        let mut before = self.observe().await;
        for step in 0..steps {
            let actors: Vec<Actor> = self
                .apps
                .iter()
                .chain(self.identities.values())
                .cloned()
                .collect();
            let actor = if self.identities.is_empty() || rng.chance(0.75) {
                self.apps[rng.below(self.apps.len())].clone()
            } else {
                actors[self.apps.len() + rng.below(actors.len() - self.apps.len())].clone()
            };
            let held = before.rights.get(&actor.oid).cloned().unwrap_or_default();
            let (what, reply) = self.act(rng, &actor, &held, &before).await;
            let accepted = (200..300).contains(&reply.status);
            assert!(
                reply.status < 500,
                "step {step}: {what} answered {}: {}",
                reply.status,
                reply.text
            );
            if accepted {
                totals.accepted += 1;
            } else {
                totals.refused += 1;
            }
            self.log.push(format!(
                "step {step}: {} ({}) {what} -> {} {}",
                actor.name,
                actor.oid,
                reply.status,
                if accepted {
                    String::new()
                } else {
                    reply.code().to_string()
                }
            ));
            if accepted && what.starts_with("open a session") {
                self.take_identities(&reply).await;
            }

            let after = self.observe().await;
            totals.steps += 1;
            totals.probes = totals.probes.max(after.probes);
            for wrong in self.check_vault_reads(&after).await {
                escalations.push(format!("{wrong}\n{}", self.log.join("\n")));
            }
            for (principal, rights) in &after.rights {
                let had = before.rights.get(principal).cloned().unwrap_or_default();
                for (action, scope) in rights.difference(&had) {
                    let vault_policy = action == "secrets/get" && !before.rbac_vault;
                    let legitimate = held.contains(&(RA_WRITE.into(), scope.clone()))
                        || held.contains(&(RD_WRITE.into(), scope.clone()))
                        || (vault_policy && held.contains(&(KV_WRITE.into(), scope.clone())));
                    if legitimate {
                        totals.legitimate_gains += 1;
                    } else {
                        escalations.push(format!(
                            "{principal} gained {action} at {} through step {step} by {}, which \
                             held neither roleAssignments/write nor roleDefinitions/write there\n{}",
                            self.short(scope),
                            actor.name,
                            self.log.join("\n")
                        ));
                    }
                }
            }
            if !escalations.is_empty() {
                return escalations;
            }
            before = after;
        }
        escalations
    }

    /// One write chosen for `actor`; returns what it was and the answer.
    async fn act(
        &mut self,
        rng: &mut Rng,
        actor: &Actor,
        held: &Rights,
        seen: &Observation,
    ) -> (String, Reply) {
        let scopes = self.scopes();
        // A scope where the actor holds `action`, most of the time; any scope otherwise.
        let favoured = |action: &str, among: &[String], rng: &mut Rng| -> String {
            let mine: Vec<&String> = among
                .iter()
                .filter(|s| held.contains(&(action.to_string(), s.to_ascii_lowercase())))
                .collect();
            if !mine.is_empty() && rng.chance(0.8) {
                mine[rng.below(mine.len())].clone()
            } else {
                rng.pick(among).clone()
            }
        };
        let groups = [self.sub.clone(), self.rg1.clone(), self.rg2.clone()];
        let token = actor.arm.clone();
        match rng.below(12) {
            0..=2 => {
                // Create or replace a custom role through some scope; often one the actor
                // holds somewhere.
                let mine = self.custom_roles_of(actor.oid).await;
                let id = if !mine.is_empty() && rng.chance(0.7) {
                    *rng.pick(&mine)
                } else {
                    *rng.pick(&self.custom)
                };
                let url_scope = favoured(RD_WRITE, &groups, rng);
                let actions = rng
                    .pick(&[
                        vec!["*"],
                        vec!["Microsoft.Authorization/*"],
                        vec![RA_WRITE, "*/read"],
                        vec![RG_WRITE],
                        vec!["Microsoft.Compute/*"],
                        vec!["*/read"],
                    ])
                    .clone();
                let data: Vec<&str> = if rng.chance(0.3) {
                    vec!["Microsoft.KeyVault/vaults/secrets/*"]
                } else {
                    vec![]
                };
                let mut assignable = vec![url_scope.clone()];
                if rng.chance(0.4) {
                    assignable.push(rng.pick(&groups).clone());
                }
                assignable.dedup();
                let path = format!(
                    "{url_scope}/providers/Microsoft.Authorization/roleDefinitions/{id}?{RA_API}"
                );
                let body = json!({"properties": {
                    "roleName": format!("esc-{id}"),
                    "permissions": [{"actions": actions, "dataActions": data}],
                    "assignableScopes": assignable}});
                let what = format!(
                    "put role {} via {} actions {actions:?} data {data:?} assignable {:?}",
                    self.role_name(&id.to_string()),
                    self.short(&url_scope),
                    assignable.iter().map(|s| self.short(s)).collect::<Vec<_>>()
                );
                let r = call(
                    &self.t.http,
                    Method::PUT,
                    &self.t.arm(&path),
                    bearer_json(&token, &body),
                )
                .await;
                (what, r)
            }
            3 => {
                let id = *rng.pick(&self.custom);
                let url_scope = favoured(RD_WRITE, &groups, rng);
                let path = format!(
                    "{url_scope}/providers/Microsoft.Authorization/roleDefinitions/{id}?{RA_API}"
                );
                let what = format!(
                    "delete role {} via {}",
                    self.role_name(&id.to_string()),
                    self.short(&url_scope)
                );
                (
                    what,
                    call(
                        &self.t.http,
                        Method::DELETE,
                        &self.t.arm(&path),
                        bearer(&token),
                    )
                    .await,
                )
            }
            4 | 5 => {
                // An assignment, often to itself, often of a strong role.
                let scope = favoured(RA_WRITE, &scopes, rng);
                let roles = [
                    OWNER.to_string(),
                    CONTRIBUTOR.to_string(),
                    USER_ACCESS_ADMIN.to_string(),
                    KV_SECRETS_USER.to_string(),
                    KV_CONTRIBUTOR.to_string(),
                    self.custom[0].to_string(),
                    self.custom[1].to_string(),
                    self.custom[2].to_string(),
                ];
                let role = rng.pick(&roles).clone();
                let mut principals: Vec<Uuid> = seen.rights.keys().copied().collect();
                principals.sort();
                let principal = if rng.chance(0.5) {
                    actor.oid
                } else {
                    *rng.pick(&principals)
                };
                let what = format!(
                    "assign {} at {} to {principal}",
                    self.role_name(&role),
                    self.short(&scope)
                );
                (what, self.assign_as(&token, &scope, &role, principal).await)
            }
            6 => {
                // Remove somebody's assignment.
                let r = call(
                    &self.t.http,
                    Method::GET,
                    &self.t.arm(&format!(
                        "{}/providers/Microsoft.Authorization/roleAssignments?{RA_API}",
                        self.sub
                    )),
                    bearer(&self.admin),
                )
                .await;
                let ids: Vec<String> = r.json["value"]
                    .as_array()
                    .map(|v| {
                        v.iter()
                            .filter_map(|a| a["id"].as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                if ids.is_empty() {
                    return self.noop(&token).await;
                }
                let id = rng.pick(&ids).clone();
                let what = format!("delete assignment {id}");
                (
                    what,
                    call(
                        &self.t.http,
                        Method::DELETE,
                        &self.t.arm(&format!("{id}?{RA_API}")),
                        bearer(&token),
                    )
                    .await,
                )
            }
            7 => {
                // Attach or detach the user-assigned identity.
                let attach = rng.chance(0.6);
                let identity = if attach {
                    json!({"type": "SystemAssigned,UserAssigned",
                           "userAssignedIdentities": {self.uami.clone(): {}}})
                } else {
                    json!({"type": "SystemAssigned"})
                };
                let what = format!("{} ua1 on vm1", if attach { "attach" } else { "detach" });
                let r = call(
                    &self.t.http,
                    Method::PUT,
                    &self.t.arm(&format!("{}?{VM_API}", self.vm1)),
                    bearer_json(&token, &json!({"location": "local", "identity": identity})),
                )
                .await;
                (what, r)
            }
            8 => {
                // Delete the VM, or make it again.
                if seen.vm_identity.is_some() && rng.chance(0.5) {
                    let r = call(
                        &self.t.http,
                        Method::DELETE,
                        &self.t.arm(&format!("{}?{VM_API}", self.vm1)),
                        bearer(&token),
                    )
                    .await;
                    ("delete vm1".into(), r)
                } else {
                    let r = call(
                        &self.t.http,
                        Method::PUT,
                        &self.t.arm(&format!("{}?{VM_API}", self.vm1)),
                        bearer_json(
                            &token,
                            &json!({"location": "local", "identity": {"type": "SystemAssigned"}}),
                        ),
                    )
                    .await;
                    ("put vm1 with a system identity".into(), r)
                }
            }
            9 => {
                // Switch the vault's permission model, granting itself secrets on the way.
                let rbac = !seen.rbac_vault;
                let body = json!({"properties": {
                    "enableRbacAuthorization": rbac,
                    "accessPolicies": [{"tenantId": self.t.tenant(), "objectId": actor.oid,
                                        "permissions": {"secrets": ["get", "list"]}}]}});
                let what =
                    format!("patch vault: enableRbacAuthorization {rbac}, policy for itself");
                let r = call(
                    &self.t.http,
                    Method::PATCH,
                    &self.t.arm(&format!("{}?{KV_API}", self.vault)),
                    bearer_json(&token, &body),
                )
                .await;
                (what, r)
            }
            10 => {
                let body = json!({"properties": {"accessPolicies": [{
                    "tenantId": self.t.tenant(), "objectId": actor.oid,
                    "permissions": {"secrets": ["all"]}}]}});
                let r = call(
                    &self.t.http,
                    Method::PUT,
                    &self
                        .t
                        .arm(&format!("{}/accessPolicies/add?{KV_API}", self.vault)),
                    bearer_json(&token, &body),
                )
                .await;
                ("add an access policy for itself".into(), r)
            }
            _ => {
                let r = call(
                    &self.t.http,
                    Method::POST,
                    &self.t.arm("/lanyard/sessions"),
                    bearer_json(&token, &json!({"resource": self.vm1})),
                )
                .await;
                ("open a session on vm1".into(), r)
            }
        }
    }

    /// The custom roles assigned to `principal` anywhere.
    async fn custom_roles_of(&self, principal: Uuid) -> Vec<Uuid> {
        let r = call(
            &self.t.http,
            Method::GET,
            &self.t.arm(&format!(
                "{}/providers/Microsoft.Authorization/roleAssignments?{RA_API}&$filter={}",
                self.sub,
                urlencoding::encode(&format!("principalId eq '{principal}'"))
            )),
            bearer(&self.admin),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let held: BTreeSet<Uuid> = r.json["value"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|a| a["properties"]["roleDefinitionId"].as_str())
                    .filter_map(|id| id.rsplit('/').next())
                    .filter_map(|id| Uuid::parse_str(id).ok())
                    .collect()
            })
            .unwrap_or_default();
        self.custom
            .iter()
            .copied()
            .filter(|c| held.contains(c))
            .collect()
    }

    /// A harmless read, when the drawn write has nothing to act on.
    async fn noop(&self, token: &str) -> (String, Reply) {
        let r = call(
            &self.t.http,
            Method::GET,
            &self.t.arm(&format!("{}?{RG_API}", self.rg1)),
            bearer(token),
        )
        .await;
        ("read rg1".into(), r)
    }

    /// The identities a new session hands out become actors (as their tokens allow).
    async fn take_identities(&mut self, session: &Reply) {
        let Some(imds) = session.json["imdsEndpoint"].as_str() else {
            return;
        };
        let http = reqwest::Client::new();
        for selector in ["".to_string(), format!("&mi_res_id={}", self.uami)] {
            let url = format!(
                "{imds}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/{selector}"
            );
            let Ok(r) = http.get(url).header("Metadata", "true").send().await else {
                continue;
            };
            if r.status() != 200 {
                continue;
            }
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let (Some(token), Some(oid)) = (
                body["access_token"].as_str(),
                body["access_token"]
                    .as_str()
                    .map(jwt_parts)
                    .and_then(|(_, claims)| {
                        claims["oid"].as_str().and_then(|s| Uuid::parse_str(s).ok())
                    }),
            ) else {
                continue;
            };
            let name = if oid == self.uami_oid {
                "ua1".to_string()
            } else {
                format!("vm1-identity-{}", &oid.to_string()[..8])
            };
            self.identities.insert(
                oid,
                Actor {
                    name,
                    oid,
                    arm: token.to_string(),
                    vault: None,
                },
            );
        }
    }
}

struct Observation {
    rights: BTreeMap<Uuid, Rights>,
    rbac_vault: bool,
    vm_identity: Option<Uuid>,
    probes: usize,
}

/// The engine's verdicts on `questions` (principal, action, scope, data action), asked as the
/// administrator, a few at a time.
async fn explain_all(
    t: &Target,
    admin: &str,
    questions: &[(Uuid, String, String, bool)],
) -> Vec<bool> {
    let admin: Arc<str> = admin.into();
    let mut answers = vec![false; questions.len()];
    for (chunk_index, chunk) in questions.chunks(8).enumerate() {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (principal, action, scope, data)) in chunk.iter().enumerate() {
            let http = t.http.clone();
            let url = t.arm("/lanyard/access/explain");
            let admin = Arc::clone(&admin);
            let body = json!({"principalId": principal, "action": action, "scope": scope, "dataAction": data});
            tasks.spawn(async move {
                let r = call(&http, Method::POST, &url, bearer_json(&admin, &body)).await;
                assert_eq!(r.status, 200, "explain {body}: {}", r.text);
                (i, r.json["allowed"].as_bool().unwrap_or(false))
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (i, allowed) = done.unwrap();
            answers[chunk_index * 8 + i] = allowed;
        }
    }
    answers
}
