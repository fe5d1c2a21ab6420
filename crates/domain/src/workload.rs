//! The resource types that can hold managed identities, listed once. Pure.
//!
//! The control plane serves each with the generic create/update/patch/delete and its
//! `identity` block; the identity endpoints open sessions (`lanyard run --as`) for those whose
//! code runs as their identity ([`WorkloadType::runs_code`]); the CLI finds identities by name
//! among them. Adding such a type is one entry in [`WORKLOAD_TYPES`].

/// A naming rule, with the sentence that explains it in errors.
#[derive(Debug, Clone, Copy)]
pub struct NameRule {
    pub check: fn(&str) -> bool,
    pub description: &'static str,
}

/// A resource type that can hold a system-assigned identity and user-assigned identities.
#[derive(Debug)]
pub struct WorkloadType {
    pub namespace: &'static str,
    /// The type below the namespace.
    pub type_name: &'static str,
    pub name: NameRule,
    /// Whether code runs as its identity (a storage account holds one only for its own use).
    pub runs_code: bool,
    /// How messages name it.
    pub noun: &'static str,
    /// The api-version the CLI sends (the control plane accepts any).
    pub api_version: &'static str,
}

impl WorkloadType {
    /// `{namespace}/{type}` in canonical casing.
    pub fn full_type(&self) -> String {
        format!("{}/{}", self.namespace, self.type_name)
    }
}

pub const VIRTUAL_MACHINES: WorkloadType = WorkloadType {
    namespace: "Microsoft.Compute",
    type_name: "virtualMachines",
    name: NameRule {
        check: vm_name,
        description: "A virtual machine name is 1 to 64 characters: letters, digits, '-', '_' and '.'; it may not start with '_' or end with '.' or '-'.",
    },
    runs_code: true,
    noun: "virtual machine",
    api_version: "2024-03-01",
};

pub const SCALE_SETS: WorkloadType = WorkloadType {
    namespace: "Microsoft.Compute",
    type_name: "virtualMachineScaleSets",
    name: NameRule {
        check: vm_name,
        description: "A scale set name is 1 to 64 characters: letters, digits, '-', '_' and '.'; it may not start with '_' or end with '.' or '-'.",
    },
    runs_code: true,
    noun: "scale set",
    api_version: "2024-03-01",
};

pub const SITES: WorkloadType = WorkloadType {
    namespace: "Microsoft.Web",
    type_name: "sites",
    name: NameRule {
        check: site_name,
        description: "A site name is 2 to 60 characters: letters, digits and '-'; it may not start or end with '-'.",
    },
    runs_code: true,
    noun: "web app",
    api_version: "2023-12-01",
};

pub const CONTAINER_APPS: WorkloadType = WorkloadType {
    namespace: "Microsoft.App",
    type_name: "containerApps",
    name: NameRule {
        check: container_app_name,
        description: "A container app name is 2 to 32 characters: lower-case letters, digits and '-'; it starts with a letter, ends with a letter or digit, and has no '--'.",
    },
    runs_code: true,
    noun: "container app",
    api_version: "2024-03-01",
};

/// Storage accounts: the blob plane's other rules (names unique, endpoints, data cascade)
/// are applied by the control plane through `lanyard_blob::account`.
pub const STORAGE_ACCOUNTS: WorkloadType = WorkloadType {
    namespace: "Microsoft.Storage",
    type_name: "storageAccounts",
    name: NameRule {
        check: storage_account_name,
        description: STORAGE_ACCOUNT_NAME_RULE,
    },
    runs_code: false,
    noun: "storage account",
    api_version: "2023-05-01",
};

/// Every resource type that can hold managed identities.
pub static WORKLOAD_TYPES: &[WorkloadType] = &[
    VIRTUAL_MACHINES,
    SCALE_SETS,
    SITES,
    CONTAINER_APPS,
    STORAGE_ACCOUNTS,
];

/// The types whose code runs as their identity, in [`WORKLOAD_TYPES`] order.
pub fn running_code() -> impl Iterator<Item = &'static WorkloadType> {
    WORKLOAD_TYPES.iter().filter(|w| w.runs_code)
}

/// The storage account naming rule, as the control plane states it in errors.
pub const STORAGE_ACCOUNT_NAME_RULE: &str = "Storage account name must be between 3 and 24 characters in length and use numbers and lower-case letters only.";

/// 3 to 24 lower-case letters and digits.
pub fn storage_account_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn vm_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('_')
        && !name.ends_with('.')
        && !name.ends_with('-')
}

fn site_name(name: &str) -> bool {
    (2..=60).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn container_app_name(name: &str) -> bool {
    (2..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naming_rules() {
        assert!(vm_name("vm-1.a"));
        assert!(!vm_name("_vm"));
        assert!(!vm_name("vm-"));
        assert!(container_app_name("app-1"));
        assert!(!container_app_name("App"));
        assert!(!container_app_name("a--b"));
        assert!(site_name("my-site"));
        assert!(!site_name("a"));
        assert!(storage_account_name("acct1"));
        assert!(!storage_account_name("Acct1"));
        assert!(!storage_account_name("ab"));
    }

    #[test]
    fn types_running_code() {
        let running: Vec<String> = running_code().map(WorkloadType::full_type).collect();
        assert_eq!(
            running,
            [
                "Microsoft.Compute/virtualMachines",
                "Microsoft.Compute/virtualMachineScaleSets",
                "Microsoft.Web/sites",
                "Microsoft.App/containerApps",
            ]
        );
    }
}
