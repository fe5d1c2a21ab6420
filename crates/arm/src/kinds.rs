//! The resource types this plane serves, with their naming rules. Pure.
//!
//! A type that holds identities is one entry in [`lanyard_domain::workload::WORKLOAD_TYPES`]:
//! it is served here as [`Family::Compute`], with the generic create/update/patch/delete and
//! the `identity` block.

use std::sync::LazyLock;

pub use lanyard_domain::workload::NameRule;
use lanyard_domain::workload::{WorkloadType, WORKLOAD_TYPES};
use lanyard_domain::ResourceId;

pub const RESOURCE_GROUP_TYPE: &str = "Microsoft.Resources/resourceGroups";
pub const UAI_TYPE: &str = "Microsoft.ManagedIdentity/userAssignedIdentities";
pub const FIC_TYPE: &str =
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials";

/// How a type behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A resource that can hold a system-assigned identity and user-assigned identities.
    Compute,
    /// `Microsoft.ManagedIdentity/userAssignedIdentities`.
    UserAssignedIdentity,
    /// Its `federatedIdentityCredentials` children.
    FederatedCredential,
    /// `Microsoft.KeyVault/vaults`: properties checked by `lanyard_keyvault::vault`.
    Vault,
    /// `{vault}/accessPolicies/{add|replace|remove}`: an operation on the vault, not a resource.
    VaultAccessPolicy,
}

/// A resource type served here.
#[derive(Debug, Clone)]
pub struct Kind {
    pub namespace: &'static str,
    /// The type path below the namespace, outermost first.
    pub types: &'static [&'static str],
    pub family: Family,
    pub name: NameRule,
}

impl Kind {
    /// `{namespace}/{type}[/{childType}]` in canonical casing.
    pub fn full_type(&self) -> String {
        let mut out = self.namespace.to_string();
        for t in self.types {
            out.push('/');
            out.push_str(t);
        }
        out
    }

    /// The permission prefix of this type: `{full type}/` + `read|write|delete`.
    pub fn action(&self, verb: &str) -> String {
        format!("{}/{verb}", self.full_type())
    }

    /// The canonical id for `name` under `parent` (a resource group, or the parent resource
    /// of a child type).
    pub fn id_in(&self, parent: &ResourceId, name: &str) -> ResourceId {
        match self.types {
            [t] => parent.with_provider(self.namespace, t, name),
            [.., last] => parent.with_child(last, name),
            [] => parent.clone(),
        }
    }

    /// Whether this is a child type (its parent is a resource, not a group).
    pub fn is_child(&self) -> bool {
        self.types.len() > 1
    }
}

/// The types that are not in [`WORKLOAD_TYPES`].
static OTHER_KINDS: &[Kind] = &[
    Kind {
        namespace: "Microsoft.ManagedIdentity",
        types: &["userAssignedIdentities"],
        family: Family::UserAssignedIdentity,
        name: NameRule {
            check: identity_name,
            description: "A user-assigned identity name is 3 to 128 characters: letters, digits, '-' and '_'; it starts with a letter or digit.",
        },
    },
    Kind {
        namespace: "Microsoft.ManagedIdentity",
        types: &["userAssignedIdentities", "federatedIdentityCredentials"],
        family: Family::FederatedCredential,
        name: NameRule {
            check: credential_name,
            description: "A federated identity credential name is 3 to 120 characters: letters, digits, '-' and '_'; it starts with a letter or digit.",
        },
    },
    Kind {
        namespace: "Microsoft.KeyVault",
        types: &["vaults"],
        family: Family::Vault,
        name: NameRule {
            check: lanyard_keyvault::names::valid_vault_name,
            description: lanyard_keyvault::names::VAULT_NAME_RULE,
        },
    },
    Kind {
        namespace: "Microsoft.KeyVault",
        types: &["vaults", "accessPolicies"],
        family: Family::VaultAccessPolicy,
        name: NameRule {
            check: lanyard_keyvault::vault::valid_access_policy_operation,
            description: lanyard_keyvault::vault::ACCESS_POLICY_OPERATION_RULE,
        },
    },
];

impl Kind {
    /// A type that can hold identities.
    fn workload(w: &'static WorkloadType) -> Self {
        Kind {
            namespace: w.namespace,
            types: std::slice::from_ref(&w.type_name),
            family: Family::Compute,
            name: w.name,
        }
    }
}

/// Every type served here: each of [`WORKLOAD_TYPES`] as [`Family::Compute`], then the others.
pub static KINDS: LazyLock<Vec<Kind>> = LazyLock::new(|| {
    WORKLOAD_TYPES
        .iter()
        .map(Kind::workload)
        .chain(OTHER_KINDS.iter().cloned())
        .collect()
});

/// The kind for a namespace and type path, matched case-insensitively.
pub fn lookup<S: AsRef<str>>(namespace: &str, types: &[S]) -> Option<&'static Kind> {
    KINDS.iter().find(|k| {
        k.namespace.eq_ignore_ascii_case(namespace)
            && k.types.len() == types.len()
            && k.types
                .iter()
                .zip(types)
                .all(|(a, b)| a.eq_ignore_ascii_case(b.as_ref()))
    })
}

/// The kind of a resource id (its last provider run).
pub fn of(id: &ResourceId) -> Option<&'static Kind> {
    let p = id.providers().last()?;
    let types: Vec<&str> = p.types().iter().map(|(t, _)| t.as_str()).collect();
    lookup(p.namespace(), &types)
}

/// Whether `name` is a valid resource group name: 1 to 90 letters, digits, `-`, `_`, `.`,
/// `(` and `)`, not ending with `.`.
pub fn valid_group_name(name: &str) -> bool {
    let count = name.chars().count();
    (1..=90).contains(&count)
        && !name.ends_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
}

/// `^[a-zA-Z0-9][a-zA-Z0-9-_]{min-1,max-1}$`.
fn word_name(name: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn identity_name(name: &str) -> bool {
    word_name(name, 3, 128)
}

fn credential_name(name: &str) -> bool {
    word_name(name, 3, 120)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case() {
        let k = lookup("microsoft.compute", &["VIRTUALMACHINES"]).unwrap();
        assert_eq!(k.full_type(), "Microsoft.Compute/virtualMachines");
        assert_eq!(k.action("write"), "Microsoft.Compute/virtualMachines/write");
        assert!(lookup("Microsoft.Compute", &["disks"]).is_none());
        let fic = lookup(
            "Microsoft.ManagedIdentity",
            &["userAssignedIdentities", "federatedIdentityCredentials"],
        )
        .unwrap();
        assert_eq!(fic.full_type(), FIC_TYPE);
        assert!(fic.is_child());
    }

    #[test]
    fn canonical_ids() {
        let rg = ResourceId::parse("/subscriptions/s/resourcegroups/rg").unwrap();
        let k = lookup("microsoft.managedidentity", &["userassignedidentities"]).unwrap();
        let uai = k.id_in(&rg, "u1");
        assert_eq!(
            uai.as_str(),
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u1"
        );
        let fic = lookup(
            "Microsoft.ManagedIdentity",
            &["userAssignedIdentities", "federatedIdentityCredentials"],
        )
        .unwrap()
        .id_in(&uai, "f1");
        assert!(fic
            .as_str()
            .ends_with("/u1/federatedIdentityCredentials/f1"));
        assert_eq!(
            of(&fic).map(|k| k.family),
            Some(Family::FederatedCredential)
        );
    }

    #[test]
    fn naming_rules() {
        assert!(valid_group_name("my-rg_1.(x)"));
        assert!(!valid_group_name("rg."));
        assert!(!valid_group_name("rg/x"));
        assert!(!valid_group_name(&"a".repeat(91)));
        assert!(identity_name("id_1-x"));
        assert!(!identity_name("ab"));
        assert!(!identity_name("-abc"));
        assert!(credential_name("fic"));
        assert!(!credential_name(&"a".repeat(121)));
    }
}
