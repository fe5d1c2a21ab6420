//! Shared helpers: assignments, roles, names → ids, a small deterministic RNG.

use std::collections::BTreeMap;

use lanyard_authz::reference::Environment;
use lanyard_authz::AccessIndex;
use lanyard_domain::{
    builtin, Permission, PrincipalType, ResourceId, RoleAssignment, RoleDefinition, RoleType,
};
use time::OffsetDateTime;
use uuid::Uuid;

pub fn rid(s: &str) -> ResourceId {
    ResourceId::parse(s).unwrap_or_else(|e| panic!("bad scope {s}: {e}"))
}

pub fn assignment(id: Uuid, principal: Uuid, role: Uuid, scope: &ResourceId) -> RoleAssignment {
    let now = OffsetDateTime::UNIX_EPOCH;
    RoleAssignment {
        id,
        scope: scope.clone(),
        role_definition_id: role,
        principal_id: principal,
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

pub fn custom_role(
    id: Uuid,
    name: &str,
    blocks: Vec<Permission>,
    assignable: Vec<ResourceId>,
) -> RoleDefinition {
    RoleDefinition {
        id,
        role_name: name.to_string(),
        description: String::new(),
        role_type: RoleType::CustomRole,
        permissions: blocks,
        assignable_scopes: assignable,
    }
}

pub fn block(
    actions: &[&str],
    not_actions: &[&str],
    data: &[&str],
    not_data: &[&str],
) -> Permission {
    let v = |xs: &[&str]| xs.iter().map(|s| (*s).to_string()).collect();
    Permission {
        actions: v(actions),
        not_actions: v(not_actions),
        data_actions: v(data),
        not_data_actions: v(not_data),
    }
}

pub fn builtin_id(name: &str) -> Uuid {
    builtin::built_in_by_name(name)
        .unwrap_or_else(|| panic!("no built-in role {name}"))
        .id
}

/// Stable ids for readable names.
#[derive(Default)]
pub struct Names {
    ids: BTreeMap<String, Uuid>,
}

impl Names {
    pub fn id(&mut self, name: &str) -> Uuid {
        if let Ok(u) = Uuid::parse_str(name) {
            return u;
        }
        let next = self.ids.len() as u128 + 1;
        *self
            .ids
            .entry(name.to_string())
            .or_insert_with(|| Uuid::from_u128(0x1000_0000_0000_0000_0000_0000_0000_0000 + next))
    }
}

/// An index and a reference environment kept in step.
pub struct Pair {
    pub index: AccessIndex,
    pub env: Environment,
}

impl Pair {
    pub fn with_builtins() -> Self {
        let roles = builtin::built_in_roles();
        Self {
            index: AccessIndex::with_roles(&roles),
            env: Environment {
                roles,
                ..Environment::default()
            },
        }
    }

    pub fn upsert_role(&mut self, role: &RoleDefinition) {
        self.index.upsert_role(role);
        match self.env.roles.iter_mut().find(|r| r.id == role.id) {
            Some(r) => *r = role.clone(),
            None => self.env.roles.push(role.clone()),
        }
    }

    pub fn remove_role(&mut self, id: Uuid) {
        self.index.remove_role(id);
        self.env.roles.retain(|r| r.id != id);
    }

    pub fn add(&mut self, a: &RoleAssignment) {
        self.index.add_assignment(a);
        self.env.assignments.retain(|x| x.id != a.id);
        self.env.assignments.push(a.clone());
    }

    pub fn remove(&mut self, id: Uuid) -> bool {
        let removed = self.index.remove_assignment(id);
        let before = self.env.assignments.len();
        self.env.assignments.retain(|x| x.id != id);
        assert_eq!(removed, before != self.env.assignments.len());
        removed
    }

    pub fn set_group(&mut self, group: Uuid, members: &[Uuid]) {
        self.index.set_group_members(group, members);
        if members.is_empty() {
            self.env.groups.remove(&group);
        } else {
            self.env.groups.insert(group, members.to_vec());
        }
    }
}

/// xorshift64*: deterministic and dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    pub fn uuid(&mut self) -> Uuid {
        Uuid::from_u64_pair(self.next(), self.next())
    }
}

// ---- vocabularies for generated environments ----

/// Scopes of every depth: root, subscriptions, groups (with `rg1`/`rg10` prefix traps),
/// resources, child resources and an extension resource.
pub fn scope_vocabulary() -> Vec<ResourceId> {
    let mut out = vec![ResourceId::root()];
    for sub in ["s1", "s2"] {
        out.push(ResourceId::subscription(sub));
        for rg in ["rg1", "rg10", "RG2"] {
            let g = ResourceId::resource_group(sub, rg);
            out.push(g.clone());
            let kv = g.with_provider("Microsoft.KeyVault", "vaults", "kv1");
            out.push(kv.with_child("secrets", "a"));
            out.push(kv.with_child("secrets", "a").with_child("versions", "v1"));
            out.push(kv.clone());
            let vm = g.with_provider("Microsoft.Compute", "virtualMachines", "vm1");
            out.push(vm.with_child("extensions", "e"));
            out.push(vm.with_provider("Microsoft.Authorization", "roleAssignments", "x"));
            out.push(vm);
        }
    }
    out.push(rid("/providers/Microsoft.Management/managementGroups/mg"));
    out
}

pub const ACTIONS: &[&str] = &[
    "Microsoft.Compute/virtualMachines/read",
    "Microsoft.Compute/virtualMachines/write",
    "Microsoft.Compute/virtualMachines/extensions/write",
    "Microsoft.Compute/disks/delete",
    "Microsoft.KeyVault/vaults/read",
    "Microsoft.KeyVault/vaults/secrets/getSecret/action",
    "Microsoft.KeyVault/vaults/secrets/setSecret/action",
    "Microsoft.KeyVault/vaults/secrets/read",
    "Microsoft.Authorization/roleAssignments/write",
    "Microsoft.Authorization/roleAssignments/read",
    "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
    "read",
    "a/b",
];

pub const PATTERNS: &[&str] = &[
    "*",
    "*/read",
    "*/write",
    "*/action",
    "Microsoft.Compute/*",
    "Microsoft.Compute/virtualMachines/*",
    "Microsoft.Compute/*/write",
    "microsoft.keyvault/VAULTS/*",
    "Microsoft.KeyVault/vaults/*/read",
    "Microsoft.KeyVault/vaults/secrets/*",
    "Microsoft.KeyVault/vaults/secrets/getSecret/action",
    "Microsoft.Authorization/*",
    "Microsoft.Authorization/*/Write",
    "Microsoft.Authorization/roleAssignments/read",
    "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
    "Microsoft.*/read",
    "*Secret*",
    "*/*/*",
    "Microsoft.Storage/*/blobs/*",
    "Microsoft.Compute/virtualMachines/read",
    "*a*b*",
    "a/*/b",
    "Microsoft.KeyVault/*/*/action",
];

/// An action from [`ACTIONS`] in a case the caller picks by `variant`.
pub fn cased(action: &str, variant: usize) -> String {
    match variant % 3 {
        0 => action.to_string(),
        1 => action.to_ascii_uppercase(),
        _ => action.to_ascii_lowercase(),
    }
}
