//! Check latency of `AccessIndex` at 1k, 100k and 1M role assignments over 100k principals,
//! against casbin-rs on an equivalent policy set, plus memory per assignment.
//!
//! Run: `cargo bench -p lanyard-authz --bench check`. `LANYARD_BENCH_QUICK=1` shrinks sizes
//! (1k and 20k) and times for a CI smoke run; `LANYARD_BENCH_SKIP_CASBIN=1` leaves casbin out
//! (for profiling our side); `LANYARD_BENCH_SIZES=1000,1000000` picks the sizes.
//!
//! World: 50 subscriptions × 20 resource groups × 100 resources (vaults, storage accounts,
//! VMs, user-assigned identities, sites), 100k principals, 1k groups (30% of principals are in
//! one). Assignments: 3% at subscriptions, 25% at resource groups, 62% at resources, 10% at
//! child resources; 5% held by groups; roles fit the scope (built-ins plus 8 custom roles with
//! wildcards and notActions). Requests sit at child resources (10–12 segments deep), near a
//! sampled assignment (30% moved to a sibling resource group); they are split by our answer
//! into an allow set and a deny set, and casbin answers the same requests.
//!
//! Casbin model (equivalent by construction, checked on every request before timing):
//! `r = sub, obj, act, kind`, `p = sub, obj, act, nact, kind`, `g = _, _` (principal → group),
//! matcher `r.kind == p.kind && keyMatch(r.obj, p.obj) && actMatch(r.act, p.act) &&
//! !anyActMatch(r.act, p.nact) && g(r.sub, p.sub)` (cheap tests first: casbin's role manager
//! scans every node when the subject is in no group), effect "some allow". One policy
//! row per (assignment, permission block, allow pattern): `p.obj` is the assignment scope's
//! lower-cased key + `/*` (`/*` for the root) and `r.obj` the request key + `/`, so keyMatch's
//! prefix test is exactly "at or below"; `p.act` is one lower-cased reading of the pattern
//! (`/*/` patterns get a row per reading), `p.nact` every reading of the block's exclusions
//! joined by `|`; `actMatch`/`anyActMatch` are plain `*` globs registered as functions.
//!
//! Memory: `AccessIndex::memory_usage()` sums the capacities of the index's vectors and hash
//! tables (hashbrown layout) and string lengths; the VmRSS growth from /proc/self/status
//! while building is printed beside it as a cross-check (it includes allocator slack).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use casbin::function_map::OperatorFunction;
use casbin::rhai::Dynamic;
use casbin::{CoreApi, DefaultModel, Enforcer, MemoryAdapter};
use criterion::{BenchmarkId, Criterion};
use lanyard_authz::{AccessIndex, AccessRequest, ActionKind};
use lanyard_domain::{
    builtin, Permission, PrincipalType, ResourceId, RoleAssignment, RoleDefinition, RoleType,
};
use uuid::Uuid;

const SUBS: usize = 50;
const RGS_PER_SUB: usize = 20;
const RES_PER_RG: usize = 100;
const PRINCIPALS: usize = 100_000;
const GROUPS: usize = 1_000;
const CASBIN_BUDGET: Duration = Duration::from_secs(60);

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pct(&mut self) -> u64 {
        self.next() % 100
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Vault,
    Storage,
    Vm,
    Identity,
    Site,
}

fn kind_of(k: usize) -> Kind {
    [
        Kind::Vault,
        Kind::Storage,
        Kind::Vm,
        Kind::Identity,
        Kind::Site,
    ][k % 5]
}

/// Where an assignment or request sits, as cheap indices.
#[derive(Clone, Copy)]
struct Place {
    /// 0 subscription, 1 resource group, 2 resource, 3 child resource.
    level: u8,
    rg: usize,
    k: usize,
    j: usize,
}

#[derive(Clone, Copy)]
struct Spec {
    holder: Uuid,
    role: Uuid,
    place: Place,
}

struct Catalog {
    subs: Vec<ResourceId>,
    rgs: Vec<ResourceId>,
    principals: Vec<Uuid>,
    groups: Vec<Uuid>,
    members: Vec<Vec<Uuid>>,
    roles: Vec<RoleDefinition>,
    ids: HashMap<&'static str, Uuid>,
    customs: Vec<Uuid>,
}

fn perm(a: &[&str], na: &[&str], d: &[&str], nd: &[&str]) -> Permission {
    let v = |xs: &[&str]| xs.iter().map(|s| (*s).to_string()).collect();
    Permission {
        actions: v(a),
        not_actions: v(na),
        data_actions: v(d),
        not_data_actions: v(nd),
    }
}

fn custom_roles() -> Vec<RoleDefinition> {
    let kv = "Microsoft.KeyVault/vaults/";
    let defs = vec![
        (
            "Ops reader",
            perm(&["*/read"], &["Microsoft.KeyVault/*/read"], &[], &[]),
        ),
        (
            "Compute operator",
            perm(
                &[
                    "Microsoft.Compute/virtualMachines/*",
                    "Microsoft.Compute/*/read",
                ],
                &["Microsoft.Compute/virtualMachines/delete"],
                &[],
                &[],
            ),
        ),
        (
            "Secret rotator",
            perm(
                &[],
                &[],
                &["Microsoft.KeyVault/vaults/secrets/*"],
                &["Microsoft.KeyVault/vaults/secrets/purge/action"],
            ),
        ),
        (
            "Blob auditor",
            perm(
                &["Microsoft.Storage/storageAccounts/blobServices/containers/read"],
                &[],
                &["Microsoft.Storage/*/blobs/read"],
                &[],
            ),
        ),
        (
            "Identity assigner",
            perm(
                &[
                    "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
                    "*/read",
                ],
                &[],
                &[],
                &[],
            ),
        ),
        (
            "App deployer",
            perm(
                &["Microsoft.Web/sites/*", "Microsoft.Resources/deployments/*"],
                &["Microsoft.Web/sites/delete"],
                &[],
                &[],
            ),
        ),
        (
            "Almost owner",
            perm(
                &["*"],
                &[
                    "Microsoft.Authorization/*",
                    "Microsoft.KeyVault/vaults/delete",
                ],
                &[],
                &[],
            ),
        ),
        (
            "Vault operator",
            perm(
                &["Microsoft.KeyVault/*"],
                &["Microsoft.KeyVault/vaults/delete"],
                &[
                    &format!("{kv}*/read"),
                    &format!("{kv}secrets/getSecret/action"),
                ],
                &[&format!("{kv}keys/*")],
            ),
        ),
    ];
    defs.into_iter()
        .enumerate()
        .map(|(i, (name, p))| RoleDefinition {
            id: Uuid::from_u128(0xc0_0000 + i as u128),
            role_name: name.to_string(),
            description: String::new(),
            role_type: RoleType::CustomRole,
            permissions: vec![p],
            assignable_scopes: vec![ResourceId::root()],
        })
        .collect()
}

impl Catalog {
    fn new() -> Self {
        let mut rng = Rng::new(42);
        let subs: Vec<ResourceId> = (0..SUBS)
            .map(|_| {
                ResourceId::subscription(&Uuid::from_u64_pair(rng.next(), rng.next()).to_string())
            })
            .collect();
        let rgs = (0..SUBS * RGS_PER_SUB)
            .map(|i| {
                let sub = subs[i / RGS_PER_SUB]
                    .subscription_id()
                    .unwrap_or_default()
                    .to_string();
                ResourceId::resource_group(&sub, &format!("rg-app{}", i % RGS_PER_SUB))
            })
            .collect();
        let principals: Vec<Uuid> = (0..PRINCIPALS)
            .map(|_| Uuid::from_u64_pair(rng.next(), rng.next()))
            .collect();
        let groups: Vec<Uuid> = (0..GROUPS)
            .map(|_| Uuid::from_u64_pair(rng.next(), rng.next()))
            .collect();
        let mut members = vec![Vec::new(); GROUPS];
        for p in &principals {
            if rng.pct() < 30 {
                members[rng.below(GROUPS)].push(*p);
            }
        }
        let mut roles = builtin::built_in_roles();
        let customs = custom_roles();
        let custom_ids = customs.iter().map(|r| r.id).collect();
        roles.extend(customs);
        let mut ids = HashMap::new();
        for r in builtin::built_in_roles() {
            ids.insert(&*r.role_name.clone().leak(), r.id);
        }
        Self {
            subs,
            rgs,
            principals,
            groups,
            members,
            roles,
            ids,
            customs: custom_ids,
        }
    }

    fn role(&self, name: &str) -> Uuid {
        self.ids[name]
    }

    fn scope(&self, place: Place) -> ResourceId {
        match place.level {
            0 => self.subs[place.rg / RGS_PER_SUB].clone(),
            1 => self.rgs[place.rg].clone(),
            2 => self.resource(place.rg, place.k),
            _ => self.child(place.rg, place.k, place.j),
        }
    }

    fn resource(&self, rg: usize, k: usize) -> ResourceId {
        let g = &self.rgs[rg];
        match kind_of(k) {
            Kind::Vault => g.with_provider("Microsoft.KeyVault", "vaults", &format!("kv-{rg}-{k}")),
            Kind::Storage => g.with_provider(
                "Microsoft.Storage",
                "storageAccounts",
                &format!("st{rg}x{k}"),
            ),
            Kind::Vm => g.with_provider("Microsoft.Compute", "virtualMachines", &format!("vm-{k}")),
            Kind::Identity => g.with_provider(
                "Microsoft.ManagedIdentity",
                "userAssignedIdentities",
                &format!("id-{k}"),
            ),
            Kind::Site => g.with_provider("Microsoft.Web", "sites", &format!("web-{rg}-{k}")),
        }
    }

    fn child(&self, rg: usize, k: usize, j: usize) -> ResourceId {
        let r = self.resource(rg, k);
        match kind_of(k) {
            Kind::Vault => r.with_child("secrets", &format!("secret-{j}")),
            Kind::Storage => r.with_provider_child_container(j),
            Kind::Vm => r.with_child("extensions", &format!("ext-{j}")),
            Kind::Identity => r.with_child("federatedIdentityCredentials", &format!("fic-{j}")),
            Kind::Site => r.with_child("slots", &format!("slot-{j}")),
        }
    }

    fn pick_role(&self, rng: &mut Rng, level: u8, kind: Kind) -> Uuid {
        if rng.pct() < 10 {
            return self.customs[rng.below(self.customs.len())];
        }
        let choose = |rng: &mut Rng, xs: &[(&str, u64)]| -> Uuid {
            let mut roll = rng.pct();
            for (name, weight) in xs {
                if roll < *weight {
                    return self.role(name);
                }
                roll -= weight;
            }
            self.role(xs[0].0)
        };
        match (level, kind) {
            (0, _) => choose(
                rng,
                &[
                    ("Reader", 40),
                    ("Contributor", 30),
                    ("Owner", 10),
                    ("User Access Administrator", 20),
                ],
            ),
            (1, _) => choose(
                rng,
                &[
                    ("Reader", 25),
                    ("Contributor", 15),
                    ("Key Vault Secrets User", 15),
                    ("Storage Blob Data Reader", 15),
                    ("Virtual Machine Contributor", 10),
                    ("Website Contributor", 10),
                    ("Managed Identity Operator", 10),
                ],
            ),
            (_, Kind::Vault) => choose(
                rng,
                &[
                    ("Key Vault Secrets User", 50),
                    ("Key Vault Secrets Officer", 20),
                    ("Key Vault Reader", 15),
                    ("Key Vault Administrator", 5),
                    ("Reader", 10),
                ],
            ),
            (_, Kind::Storage) => choose(
                rng,
                &[
                    ("Storage Blob Data Reader", 40),
                    ("Storage Blob Data Contributor", 40),
                    ("Storage Blob Data Owner", 10),
                    ("Storage Account Contributor", 10),
                ],
            ),
            (_, Kind::Vm) => choose(rng, &[("Virtual Machine Contributor", 60), ("Reader", 40)]),
            (_, Kind::Identity) => choose(
                rng,
                &[
                    ("Managed Identity Operator", 60),
                    ("Managed Identity Contributor", 40),
                ],
            ),
            (_, Kind::Site) => choose(rng, &[("Website Contributor", 70), ("Reader", 30)]),
        }
    }

    /// The `i`-th assignment of the deterministic stream.
    fn specs(&self, n: usize, mut each: impl FnMut(usize, Spec)) {
        let mut rng = Rng::new(7);
        for i in 0..n {
            let holder = if rng.pct() < 5 {
                self.groups[rng.below(GROUPS)]
            } else {
                self.principals[rng.below(PRINCIPALS)]
            };
            let roll = rng.pct();
            let level = match roll {
                0..=2 => 0,
                3..=27 => 1,
                28..=89 => 2,
                _ => 3,
            };
            let place = Place {
                level,
                rg: rng.below(SUBS * RGS_PER_SUB),
                k: rng.below(RES_PER_RG),
                j: rng.below(4),
            };
            let role = self.pick_role(&mut rng, level, kind_of(place.k));
            each(
                i,
                Spec {
                    holder,
                    role,
                    place,
                },
            );
        }
    }
}

trait ContainerChild {
    fn with_provider_child_container(&self, j: usize) -> ResourceId;
}

impl ContainerChild for ResourceId {
    fn with_provider_child_container(&self, j: usize) -> ResourceId {
        self.with_child("blobServices", "default")
            .with_child("containers", &format!("c{j}"))
    }
}

fn actions_for(kind: Kind) -> &'static [(&'static str, ActionKind)] {
    use ActionKind::{Control as C, Data as D};
    match kind {
        Kind::Vault => &[
            ("Microsoft.KeyVault/vaults/secrets/getSecret/action", D),
            ("Microsoft.KeyVault/vaults/secrets/setSecret/action", D),
            ("Microsoft.KeyVault/vaults/secrets/readMetadata/action", D),
            ("Microsoft.KeyVault/vaults/read", C),
            ("Microsoft.KeyVault/vaults/write", C),
        ],
        Kind::Storage => &[
            (
                "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
                D,
            ),
            (
                "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
                D,
            ),
            (
                "Microsoft.Storage/storageAccounts/blobServices/containers/read",
                C,
            ),
            ("Microsoft.Storage/storageAccounts/listKeys/action", C),
        ],
        Kind::Vm => &[
            ("Microsoft.Compute/virtualMachines/read", C),
            ("Microsoft.Compute/virtualMachines/write", C),
            ("Microsoft.Compute/virtualMachines/extensions/write", C),
            ("Microsoft.Authorization/roleAssignments/write", C),
        ],
        Kind::Identity => &[
            ("Microsoft.ManagedIdentity/userAssignedIdentities/read", C),
            (
                "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
                C,
            ),
            ("Microsoft.ManagedIdentity/userAssignedIdentities/write", C),
        ],
        Kind::Site => &[
            ("Microsoft.Web/sites/read", C),
            ("Microsoft.Web/sites/write", C),
            ("Microsoft.Web/sites/slots/write", C),
        ],
    }
}

struct Request {
    principal: Uuid,
    action: &'static str,
    kind: ActionKind,
    scope: ResourceId,
}

impl Request {
    fn as_access(&self) -> AccessRequest<'_> {
        AccessRequest {
            principal: self.principal,
            action: self.action,
            kind: self.kind,
            scope: &self.scope,
        }
    }
}

fn make_requests(cat: &Catalog, sample: &[Spec], rng: &mut Rng) -> Vec<Request> {
    let group_index: HashMap<Uuid, usize> = cat
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| (*g, i))
        .collect();
    sample
        .iter()
        .map(|s| {
            let principal = match group_index.get(&s.holder) {
                Some(&g) if !cat.members[g].is_empty() => {
                    cat.members[g][rng.below(cat.members[g].len())]
                }
                _ => s.holder,
            };
            let mut p = s.place;
            // Descend to a child resource below the assignment.
            if p.level == 0 {
                p.rg = (p.rg / RGS_PER_SUB) * RGS_PER_SUB + rng.below(RGS_PER_SUB);
            }
            if p.level <= 1 {
                p.k = rng.below(RES_PER_RG);
            }
            if p.level <= 2 {
                p.j = rng.below(4);
            }
            if rng.pct() < 30 {
                p.rg = (p.rg / RGS_PER_SUB) * RGS_PER_SUB
                    + (p.rg % RGS_PER_SUB + 1 + rng.below(RGS_PER_SUB - 1)) % RGS_PER_SUB;
            }
            p.level = 3;
            let options = actions_for(kind_of(p.k));
            let (action, kind) = options[rng.below(options.len())];
            Request {
                principal,
                action,
                kind,
                scope: cat.scope(p),
            }
        })
        .collect()
}

fn assignment_for(cat: &Catalog, i: usize, s: &Spec) -> RoleAssignment {
    let now = time::OffsetDateTime::UNIX_EPOCH;
    RoleAssignment {
        id: Uuid::from_u64_pair(0xa55e_0000, i as u64),
        scope: cat.scope(s.place),
        role_definition_id: s.role,
        principal_id: s.holder,
        principal_type: PrincipalType::ServicePrincipal,
        description: None,
        condition: None,
        condition_version: None,
        created_on: now,
        updated_on: now,
        created_by: None,
        updated_by: None,
    }
}

fn rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

struct Built {
    index: AccessIndex,
    sample: Vec<Spec>,
    build_time: Duration,
    rss_growth: Option<usize>,
    /// `memory_usage().total` before the first assignment (roles and group memberships).
    baseline: usize,
}

fn build_index(cat: &Catalog, n: usize) -> Built {
    let before = rss_bytes();
    let start = Instant::now();
    let mut index = AccessIndex::with_roles(&cat.roles);
    for (g, members) in cat.groups.iter().zip(&cat.members) {
        index.set_group_members(*g, members);
    }
    let baseline = index.memory_usage().total;
    let mut sample = Vec::new();
    let stride = (n / 2048).max(1);
    cat.specs(n, |i, s| {
        index.add_assignment(&assignment_for(cat, i, &s));
        if i % stride == 0 && sample.len() < 2048 {
            sample.push(s);
        }
    });
    let build_time = start.elapsed();
    let rss_growth = before.zip(rss_bytes()).map(|(b, a)| a.saturating_sub(b));
    Built {
        index,
        sample,
        build_time,
        rss_growth,
        baseline,
    }
}

// ---- casbin ----

const CASBIN_MODEL: &str = r#"
[request_definition]
r = sub, obj, act, kind

[policy_definition]
p = sub, obj, act, nact, kind

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.kind == p.kind && keyMatch(r.obj, p.obj) && actMatch(r.act, p.act) && !anyActMatch(r.act, p.nact) && g(r.sub, p.sub)
"#;

/// `*`-only glob on lower-cased input.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = si;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

fn act_match(a: Dynamic, p: Dynamic) -> Dynamic {
    let (a, p) = (
        casbin::function_map::dynamic_to_str(&a),
        casbin::function_map::dynamic_to_str(&p),
    );
    glob(p.as_bytes(), a.as_bytes()).into()
}

fn any_act_match(a: Dynamic, ps: Dynamic) -> Dynamic {
    let (a, ps) = (
        casbin::function_map::dynamic_to_str(&a),
        casbin::function_map::dynamic_to_str(&ps),
    );
    (!ps.is_empty() && ps.split('|').any(|p| glob(p.as_bytes(), a.as_bytes()))).into()
}

/// Every reading of a pattern with each `/*/` kept or collapsed to `/`, lower-cased.
fn readings(pattern: &str) -> Vec<String> {
    fn go(p: &str, from: usize, out: &mut Vec<String>) {
        match p[from..].find("/*/").map(|i| from + i) {
            None => out.push(p.to_string()),
            Some(i) => {
                go(p, i + 2, out);
                go(&format!("{}/{}", &p[..i], &p[i + 3..]), i, out);
            }
        }
    }
    let mut out = Vec::new();
    go(&pattern.to_ascii_lowercase(), 0, &mut out);
    out.sort();
    out.dedup();
    out
}

fn obj_pattern(scope: &ResourceId) -> String {
    if scope.is_root() {
        "/*".to_string()
    } else {
        format!("{}/*", scope.key())
    }
}

fn obj_request(scope: &ResourceId) -> String {
    if scope.is_root() {
        "/".to_string()
    } else {
        format!("{}/", scope.key())
    }
}

fn kind_tag(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Control => "c",
        ActionKind::Data => "d",
    }
}

struct CasbinBuilt {
    enforcer: Enforcer,
    rows: usize,
    build_time: Duration,
}

fn build_casbin(rt: &tokio::runtime::Runtime, cat: &Catalog, n: usize) -> CasbinBuilt {
    let start = Instant::now();
    // Per role: (allow reading, joined exclusions, kind) rows.
    let mut role_rows: HashMap<Uuid, Vec<(String, String, &'static str)>> = HashMap::new();
    for role in &cat.roles {
        let mut rows = Vec::new();
        for block in &role.permissions {
            for (allow, deny, kind) in [
                (&block.actions, &block.not_actions, ActionKind::Control),
                (
                    &block.data_actions,
                    &block.not_data_actions,
                    ActionKind::Data,
                ),
            ] {
                let nact = deny
                    .iter()
                    .flat_map(|d| readings(d))
                    .collect::<Vec<_>>()
                    .join("|");
                for a in allow.iter().flat_map(|a| readings(a)) {
                    rows.push((a, nact.clone(), kind_tag(kind)));
                }
            }
        }
        role_rows.insert(role.id, rows);
    }
    let mut policies = Vec::new();
    cat.specs(n, |_, s| {
        let sub = s.holder.to_string();
        let obj = obj_pattern(&cat.scope(s.place));
        for (act, nact, kind) in &role_rows[&s.role] {
            policies.push(vec![
                sub.clone(),
                obj.clone(),
                act.clone(),
                nact.clone(),
                (*kind).to_string(),
            ]);
        }
    });
    let mut groupings = Vec::new();
    for (g, members) in cat.groups.iter().zip(&cat.members) {
        for m in members {
            groupings.push(vec![m.to_string(), g.to_string()]);
        }
    }
    let rows = policies.len();
    let enforcer = rt.block_on(async {
        let model = DefaultModel::from_str(CASBIN_MODEL).await.unwrap();
        let mut e = Enforcer::new(model, MemoryAdapter::default())
            .await
            .unwrap();
        e.add_function("actMatch", OperatorFunction::Arg2(act_match));
        e.add_function("anyActMatch", OperatorFunction::Arg2(any_act_match));
        e.get_mut_model().add_policies("p", "p", policies);
        e.get_mut_model().add_policies("g", "g", groupings);
        e.build_role_links().unwrap();
        e
    });
    CasbinBuilt {
        enforcer,
        rows,
        build_time: start.elapsed(),
    }
}

fn casbin_args(r: &Request) -> (String, String, String, &'static str) {
    (
        r.principal.to_string(),
        obj_request(&r.scope),
        r.action.to_ascii_lowercase(),
        kind_tag(r.kind),
    )
}

// ---- timing helpers ----

/// Median per-call time: the calls run in chunks of 128 consecutive items, `passes` times
/// over all items, and the median is taken over the chunks' mean times. Short chunks keep
/// bursts of outside load (a shared machine) from skewing the median.
fn median_ns(passes: usize, items: usize, mut f: impl FnMut(usize)) -> f64 {
    const CHUNK: usize = 128;
    let mut samples = Vec::new();
    for _ in 0..passes {
        let mut start = 0;
        while start < items {
            let end = (start + CHUNK).min(items);
            let t = Instant::now();
            for i in start..end {
                f(i);
            }
            samples.push(t.elapsed().as_nanos() as f64 / (end - start) as f64);
            start = end;
        }
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

struct Row {
    n: usize,
    check_mixed: f64,
    check_allow: f64,
    check_deny: f64,
    allows_mixed: f64,
    bytes_per: f64,
    marginal_per: f64,
    rss_per: Option<f64>,
    build: Duration,
    casbin: Option<CasbinRow>,
}

#[derive(Clone, Copy)]
struct CasbinRow {
    /// Median per-request enforce time over the subset.
    median: f64,
    /// Median per-request `check` time of ours over the same subset.
    ours: f64,
    /// How many requests were timed.
    requests: usize,
    rows: usize,
    build: Duration,
}

const CASBIN_SUBSET: usize = 16;

fn per_request_median(reqs: &[&Request], mut time: impl FnMut(&Request) -> Duration) -> f64 {
    let mut xs: Vec<f64> = reqs.iter().map(|r| time(r).as_nanos() as f64).collect();
    xs.sort_by(|a, b| a.total_cmp(b));
    if xs.is_empty() {
        return f64::NAN;
    }
    xs[xs.len() / 2]
}

fn main() {
    let quick = std::env::var("LANYARD_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
    let sizes: Vec<usize> = if quick {
        vec![1_000, 20_000]
    } else {
        vec![1_000, 10_000, 100_000, 1_000_000]
    };
    let sizes: Vec<usize> = match std::env::var("LANYARD_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .filter_map(|x| x.trim().parse().ok())
            .collect(),
        Err(_) => sizes,
    };
    let casbin_sizes: Vec<usize> = if quick {
        vec![1_000]
    } else {
        vec![1_000, 10_000, 100_000]
    };
    let mut casbin_skip: Option<String> = std::env::var("LANYARD_BENCH_SKIP_CASBIN")
        .is_ok_and(|v| v != "0" && !v.is_empty())
        .then(|| "casbin skipped (LANYARD_BENCH_SKIP_CASBIN)".to_string());
    let (measure, warm, rounds) = if quick {
        (Duration::from_millis(300), Duration::from_millis(100), 7)
    } else {
        (Duration::from_secs(2), Duration::from_millis(500), 21)
    };
    let mut criterion = Criterion::default()
        .sample_size(10)
        .measurement_time(measure)
        .warm_up_time(warm)
        .without_plots()
        .configure_from_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let cat = Catalog::new();
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    for &n in &sizes {
        let built = build_index(&cat, n);
        let idx = &built.index;
        let mut rng = Rng::new(99);
        let requests = make_requests(&cat, &built.sample, &mut rng);
        let (allow, deny): (Vec<&Request>, Vec<&Request>) =
            requests.iter().partition(|r| idx.allows(&r.as_access()));
        let usage = idx.memory_usage();
        assert!(
            allow.len() >= CASBIN_SUBSET && deny.len() >= CASBIN_SUBSET,
            "request mix too lopsided"
        );
        let considered: Vec<usize> = deny
            .iter()
            .map(|r| match idx.check(&r.as_access()) {
                lanyard_authz::Decision::Deny(d) => d.assignments_considered,
                lanyard_authz::Decision::Allow(_) => 0,
            })
            .collect();
        println!(
            "  denials examine {:.1} assignments on average (max {}) across the principal and its groups",
            considered.iter().sum::<usize>() as f64 / considered.len().max(1) as f64,
            considered.iter().max().copied().unwrap_or(0)
        );
        println!(
            "[{n} assignments] built in {:.2?}; {} requests ({} allowed, {} denied); index heap {} MiB",
            built.build_time,
            requests.len(),
            allow.len(),
            deny.len(),
            usage.total >> 20
        );

        let mut group = criterion.benchmark_group("authz");
        group.bench_with_input(
            BenchmarkId::new("ours_check_allow", n),
            &allow,
            |b, reqs| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % reqs.len();
                    black_box(idx.check(&reqs[i].as_access()))
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("ours_check_deny", n), &deny, |b, reqs| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % reqs.len();
                black_box(idx.check(&reqs[i].as_access()))
            })
        });
        group.bench_with_input(
            BenchmarkId::new("ours_allows_bool", n),
            &requests,
            |b, reqs| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % reqs.len();
                    black_box(idx.allows(&reqs[i].as_access()))
                })
            },
        );

        // The same fixed subset (half allowed, half denied) is timed request by request for
        // both engines; the ratio compares their medians.
        let subset: Vec<&Request> = allow
            .iter()
            .take(CASBIN_SUBSET / 2)
            .chain(deny.iter().take(CASBIN_SUBSET / 2))
            .copied()
            .collect();
        let ours_subset = per_request_median(&subset, |r| {
            let req = r.as_access();
            let t = Instant::now();
            for _ in 0..1000 {
                black_box(idx.check(&req));
            }
            t.elapsed() / 1000
        });
        let subset_small: Vec<&Request> = allow
            .iter()
            .take(CASBIN_SUBSET / 4)
            .chain(deny.iter().take(CASBIN_SUBSET / 4))
            .copied()
            .collect();
        let ours_subset_small = per_request_median(&subset_small, |r| {
            let req = r.as_access();
            let t = Instant::now();
            for _ in 0..1000 {
                black_box(idx.check(&req));
            }
            t.elapsed() / 1000
        });
        let mut casbin = None;
        if casbin_sizes.contains(&n) && casbin_skip.is_none() {
            // A hard budget per size, build included; what is left undone is reported.
            let deadline = Instant::now() + CASBIN_BUDGET;
            let cb = build_casbin(&rt, &cat, n);
            let e = &cb.enforcer;
            let first = n == casbin_sizes[0];
            // Past the first size, half the requests keep casbin within its budget.
            let timed: &[&Request] = if first { &subset } else { &subset_small };
            let ours_timed = if first {
                ours_subset
            } else {
                ours_subset_small
            };
            let mut times = Vec::new();
            for r in timed {
                if Instant::now() > deadline {
                    break;
                }
                let args = casbin_args(r);
                let t = Instant::now();
                let answer = e.enforce(args).unwrap();
                times.push(t.elapsed().as_nanos() as f64);
                // Equivalence, on every request timed.
                assert_eq!(
                    answer,
                    idx.allows(&r.as_access()),
                    "casbin and the index disagree at {n}"
                );
            }
            if first && Instant::now() < deadline {
                let args: Vec<_> = subset.iter().map(|r| casbin_args(r)).collect();
                group.bench_with_input(BenchmarkId::new("casbin_enforce", n), &args, |b, args| {
                    let mut i = 0;
                    b.iter(|| {
                        i = (i + 1) % args.len();
                        black_box(e.enforce(args[i].clone()).unwrap())
                    })
                });
            }
            times.sort_by(|a, b| a.total_cmp(b));
            if times.len() < timed.len() {
                notes.push(format!(
                    "casbin at {n}: only {} of {} requests answered within the {CASBIN_BUDGET:?} budget (build {:.1?})",
                    times.len(),
                    timed.len(),
                    cb.build_time
                ));
            }
            if let Some(&ns) = times.get(times.len() / 2) {
                casbin = Some(CasbinRow {
                    median: ns,
                    requests: times.len(),
                    ours: ours_timed,
                    rows: cb.rows,
                    build: cb.build_time,
                });
                // Evaluation is linear in policy rows: project the next size before trying it.
                if let Some(&next) = casbin_sizes.iter().find(|&&m| m > n) {
                    let scale = next as f64 / n as f64;
                    let projected =
                        Duration::from_secs_f64((ns * (CASBIN_SUBSET / 2) as f64 * scale) / 1e9)
                            + cb.build_time.mul_f64(scale);
                    if projected > CASBIN_BUDGET {
                        casbin_skip = Some(format!(
                            "casbin at {next} and above: not run; projected {projected:.0?} (enforce ~{} per request at {n}, linear in policy rows) exceeds the {CASBIN_BUDGET:?} budget",
                            fmt_ns(ns * scale)
                        ));
                    }
                }
            } else {
                casbin_skip = Some(format!(
                    "casbin at {n} and above: no request answered within the {CASBIN_BUDGET:?} budget (build {:.1?})",
                    cb.build_time
                ));
            }
        }
        group.finish();

        let all: Vec<AccessRequest<'_>> = requests.iter().map(Request::as_access).collect();
        let allow_reqs: Vec<AccessRequest<'_>> = allow.iter().map(|r| r.as_access()).collect();
        let deny_reqs: Vec<AccessRequest<'_>> = deny.iter().map(|r| r.as_access()).collect();
        rows.push(Row {
            n,
            check_mixed: median_ns(rounds, all.len(), |i| {
                black_box(idx.check(&all[i]));
            }),
            check_allow: median_ns(rounds, allow_reqs.len(), |i| {
                black_box(idx.check(&allow_reqs[i]));
            }),
            check_deny: median_ns(rounds, deny_reqs.len(), |i| {
                black_box(idx.check(&deny_reqs[i]));
            }),
            allows_mixed: median_ns(rounds, all.len(), |i| {
                black_box(idx.allows(&all[i]));
            }),
            bytes_per: usage.total as f64 / n as f64,
            marginal_per: (usage.total - built.baseline) as f64 / n as f64,
            rss_per: built.rss_growth.map(|g| g as f64 / n as f64),
            build: built.build_time,
            casbin,
        });
    }
    if let Some(skip) = casbin_skip {
        notes.push(skip);
    }
    if quick {
        notes.push("quick mode: sizes 1k and 20k, casbin at 1k only".to_string());
    }
    criterion.final_summary();

    println!(
        "\n== lanyard-authz check latency (median over chunks of 128 requests of the mean per request) =="
    );
    println!(
        "{:>10} {:>11} {:>11} {:>11} {:>11} {:>10} {:>10} {:>10} {:>9}",
        "assigns", "check", "allow", "deny", "allows()", "B/assign", "marginal", "RSS B/a", "build"
    );
    for r in &rows {
        println!(
            "{:>10} {:>11} {:>11} {:>11} {:>11} {:>10.0} {:>10.0} {:>10} {:>9.2?}",
            r.n,
            fmt_ns(r.check_mixed),
            fmt_ns(r.check_allow),
            fmt_ns(r.check_deny),
            fmt_ns(r.allows_mixed),
            r.bytes_per,
            r.marginal_per,
            r.rss_per.map_or("-".to_string(), |x| format!("{x:.0}")),
            r.build
        );
    }
    println!("\n== casbin-rs on the equivalent policy (the same requests for both, half allowed, half denied; median per request) ==");
    for r in &rows {
        if let Some(c) = r.casbin {
            println!(
                "{:>10} assignments: {} policy rows built in {:.2?}; {} requests: casbin enforce {} vs ours check {} -> {:.0}x",
                r.n,
                c.rows,
                c.build,
                c.requests,
                fmt_ns(c.median),
                fmt_ns(c.ours),
                c.median / c.ours
            );
        }
    }
    for note in &notes {
        println!("note: {note}");
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        println!(
            "\nratio {} vs {} assignments: check {:.2}x, allow {:.2}x, deny {:.2}x, allows() {:.2}x",
            last.n,
            first.n,
            last.check_mixed / first.check_mixed,
            last.check_allow / first.check_allow,
            last.check_deny / first.check_deny,
            last.allows_mixed / first.allows_mixed
        );
        println!(
            "targets (reported, not asserted): median check <= 2 µs at the largest size: {}; largest within 2x of 1k: {}; >= 100x casbin: {}; <= 300 B/assignment: {}",
            yes(last.check_mixed <= 2000.0),
            yes(last.check_mixed <= 2.0 * first.check_mixed),
            yes(rows.iter().filter_map(|r| r.casbin.map(|c| c.median / c.ours)).all(|x| x >= 100.0)),
            yes(last.marginal_per <= 300.0)
        );
    }
    println!(
        "memory: B/assign = AccessIndex::memory_usage() (capacities of vectors and hash tables, string lengths) / assignments, including the fixed cost of roles and 30k group memberships; marginal = the same without that fixed cost; RSS B/a = VmRSS growth while building / assignments"
    );
}

fn yes(b: bool) -> &'static str {
    if b {
        "met"
    } else {
        "missed"
    }
}
