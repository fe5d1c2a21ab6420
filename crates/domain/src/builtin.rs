//! The built-in role definitions, with Azure's GUIDs and permissions.
//!
//! Generated from Azure's published built-in role list; a role's permissions here are the
//! ones that role grants on Azure for the services Lanyard implements.

use uuid::Uuid;

use crate::id::ResourceId;
use crate::role::{Permission, RoleDefinition, RoleType};

struct BuiltIn {
    name: &'static str,
    id: &'static str,
    description: &'static str,
    actions: &'static [&'static str],
    not_actions: &'static [&'static str],
    data_actions: &'static [&'static str],
    not_data_actions: &'static [&'static str],
}

const BUILT_INS: &[BuiltIn] = &[
    BuiltIn {
        name: "Owner",
        id: "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        description: "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltIn {
        name: "Contributor",
        id: "b24988ac-6180-42a0-ab88-20f7382dd24c",
        description: "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &["Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write", "Microsoft.Authorization/elevateAccess/Action", "Microsoft.Blueprint/blueprintAssignments/write", "Microsoft.Blueprint/blueprintAssignments/delete", "Microsoft.Compute/galleries/share/action"],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltIn {
        name: "Reader",
        id: "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        description: "View all resources, but does not allow you to make any changes.",
        actions: &["*/read"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltIn {
        name: "User Access Administrator",
        id: "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        description: "Lets you manage user access to Azure resources.",
        actions: &["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltIn {
        name: "Role Based Access Control Administrator",
        id: "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
        description: "Manage access to Azure resources by assigning roles using Azure RBAC.",
        actions: &["Microsoft.Authorization/roleAssignments/write", "Microsoft.Authorization/roleAssignments/delete", "*/read", "Microsoft.Support/*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltIn {
        name: "Key Vault Administrator",
        id: "00482a5a-887f-4fb3-b363-3b7fe8e74483",
        description: "Perform all data plane operations on a key vault and all objects in it, including certificates, keys, and secrets.",
        actions: &["Microsoft.Authorization/*/read", "Microsoft.Insights/alertRules/*", "Microsoft.Resources/deployments/*", "Microsoft.Resources/subscriptions/resourceGroups/read", "Microsoft.Support/*", "Microsoft.KeyVault/checkNameAvailability/read", "Microsoft.KeyVault/deletedVaults/read", "Microsoft.KeyVault/locations/*/read", "Microsoft.KeyVault/vaults/*/read", "Microsoft.KeyVault/operations/read"],
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/*"],
        not_data_actions: &[],
    },
    BuiltIn {
        name: "Key Vault Secrets Officer",
        id: "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
        description: "Perform any action on the secrets of a key vault, except manage permissions.",
        actions: &["Microsoft.Authorization/*/read", "Microsoft.Insights/alertRules/*", "Microsoft.Resources/deployments/*", "Microsoft.Resources/subscriptions/resourceGroups/read", "Microsoft.Support/*", "Microsoft.KeyVault/checkNameAvailability/read", "Microsoft.KeyVault/deletedVaults/read", "Microsoft.KeyVault/locations/*/read", "Microsoft.KeyVault/vaults/*/read", "Microsoft.KeyVault/operations/read"],
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/secrets/*"],
        not_data_actions: &[],
    },
    BuiltIn {
        name: "Key Vault Secrets User",
        id: "4633458b-17de-408a-b874-0445c86b69e6",
        description: "Read secret contents.",
        actions: &[],
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/secrets/getSecret/action", "Microsoft.KeyVault/vaults/secrets/readMetadata/action"],
        not_data_actions: &[],
    },
    BuiltIn {
        name: "Key Vault Reader",
        id: "21090545-7ca7-4776-b22c-e363652d74d2",
        description: "Read metadata of key vaults and its certificates, keys, and secrets. Cannot read sensitive values such as secret contents or key material.",
        actions: &["Microsoft.Authorization/*/read", "Microsoft.Insights/alertRules/*", "Microsoft.Resources/deployments/*", "Microsoft.Resources/subscriptions/resourceGroups/read", "Microsoft.Support/*", "Microsoft.KeyVault/checkNameAvailability/read", "Microsoft.KeyVault/deletedVaults/read", "Microsoft.KeyVault/locations/*/read", "Microsoft.KeyVault/vaults/*/read", "Microsoft.KeyVault/operations/read"],
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/*/read", "Microsoft.KeyVault/vaults/secrets/readMetadata/action"],
        not_data_actions: &[],
    },
    BuiltIn {
        name: "Key Vault Contributor",
        id: "f25e0fa2-a7c8-4377-a976-54943a77a395",
        description: "Manage key vaults, but does not allow you to assign roles in Azure RBAC, and does not allow you to access secrets, keys, or certificates.",
        actions: &["Microsoft.Authorization/*/read", "Microsoft.Insights/alertRules/*", "Microsoft.KeyVault/*", "Microsoft.Resources/deployments/*", "Microsoft.Resources/subscriptions/resourceGroups/read", "Microsoft.Support/*"],
        not_actions: &["Microsoft.KeyVault/locations/deletedVaults/purge/action", "Microsoft.KeyVault/hsmPools/*", "Microsoft.KeyVault/managedHsms/*"],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltIn {
        name: "Storage Blob Data Owner",
        id: "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
        description: "Provides full access to Azure Storage blob containers and data, including assigning POSIX access control.",
        actions: &["Microsoft.Storage/storageAccounts/blobServices/containers/*", "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action"],
        not_actions: &[],
        data_actions: &["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/*"],
        not_data_actions: &[],
    },
    BuiltIn {
        name: "Storage Blob Data Contributor",
        id: "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        description: "Read, write, and delete Azure Storage containers and blobs.",
        actions: &["Microsoft.Storage/storageAccounts/blobServices/containers/delete", "Microsoft.Storage/storageAccounts/blobServices/containers/read", "Microsoft.Storage/storageAccounts/blobServices/containers/write", "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action"],
        not_actions: &[],
        data_actions: &["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete", "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read", "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write", "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/move/action", "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action"],
        not_data_actions: &[],
    },
    BuiltIn {
        name: "Storage Blob Data Reader",
        id: "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
        description: "Read and list Azure Storage containers and blobs.",
        actions: &["Microsoft.Storage/storageAccounts/blobServices/containers/read", "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action"],
        not_actions: &[],
        data_actions: &["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"],
        not_data_actions: &[],
    },
    BuiltIn {
        name: "Storage Account Contributor",
        id: "17d1049b-9a84-46fb-8f53-869881c3d3ab",
        description: "Permits management of storage accounts.",
        actions: &["Microsoft.Authorization/*/read", "Microsoft.Insights/alertRules/*", "Microsoft.Insights/diagnosticSettings/*", "Microsoft.Network/virtualNetworks/subnets/joinViaServiceEndpoint/action", "Microsoft.ResourceHealth/availabilityStatuses/read", "Microsoft.Resources/deployments/*", "Microsoft.Resources/subscriptions/resourceGroups/read", "Microsoft.Storage/storageAccounts/*", "Microsoft.Support/*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltIn {
        name: "Virtual Machine Contributor",
        id: "9980e02c-c2be-4d73-94e8-173b1dc7cf3c",
        description: "Create and manage virtual machines, manage disks, install and run software, reset password of the root user of the virtual machine using VM extensions, and manage local user accounts using VM extensions. This role does not grant you management access to the virtual network or storage account the virtual machines are connected to. This role does not allow you to assign roles in Azure RBAC.",
        actions: &["Microsoft.Authorization/*/read", "Microsoft.Compute/availabilitySets/*", "Microsoft.Compute/locations/*", "Microsoft.Compute/virtualMachines/*", "Microsoft.Compute/virtualMachineScaleSets/*", "Microsoft.Compute/cloudServices/*", "Microsoft.Compute/disks/write", "Microsoft.Compute/disks/read", "Microsoft.Compute/disks/delete", "Microsoft.DevTestLab/schedules/*", "Microsoft.Insights/alertRules/*", "Microsoft.Network/networkInterfaces/*", "Microsoft.Network/networkSecurityGroups/join/action", "Microsoft.Network/networkSecurityGroups/read", "Microsoft.Network/publicIPAddresses/join/action", "Microsoft.Network/publicIPAddresses/read", "Microsoft.Network/virtualNetworks/read", "Microsoft.Network/virtualNetworks/subnets/join/action", "Microsoft.RecoveryServices/locations/*", "Microsoft.Resources/deployments/*", "Microsoft.Resources/subscriptions/resourceGroups/read", "Microsoft.SqlVirtualMachine/*", "Microsoft.Storage/storageAccounts/listKeys/action", "Microsoft.Storage/storageAccounts/read", "Microsoft.Support/*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltIn {
        name: "Website Contributor",
        id: "de139f84-1756-47ae-9be6-808fbbe84772",
        description: "Lets you manage websites (not web plans), but not access to them.",
        actions: &["Microsoft.Authorization/*/read", "Microsoft.Insights/alertRules/*", "Microsoft.Insights/components/*", "Microsoft.ResourceHealth/availabilityStatuses/read", "Microsoft.Resources/deployments/*", "Microsoft.Resources/subscriptions/resourceGroups/read", "Microsoft.Support/*", "Microsoft.Web/certificates/*", "Microsoft.Web/listSitesAssignedToHostName/read", "Microsoft.Web/serverFarms/join/action", "Microsoft.Web/serverFarms/read", "Microsoft.Web/sites/*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltIn {
        name: "Managed Identity Operator",
        id: "f1a07417-d97a-45cb-824c-7a7467783830",
        description: "Read and Assign User Assigned Identity",
        actions: &["Microsoft.ManagedIdentity/userAssignedIdentities/*/read", "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action", "Microsoft.Authorization/*/read", "Microsoft.Insights/alertRules/*", "Microsoft.Resources/subscriptions/resourceGroups/read", "Microsoft.Resources/deployments/*", "Microsoft.Support/*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    BuiltIn {
        name: "Managed Identity Contributor",
        id: "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59",
        description: "Create, Read, Update, and Delete User Assigned Identity",
        actions: &["Microsoft.ManagedIdentity/userAssignedIdentities/read", "Microsoft.ManagedIdentity/userAssignedIdentities/write", "Microsoft.ManagedIdentity/userAssignedIdentities/delete", "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read", "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write", "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete", "Microsoft.ManagedIdentity/userAssignedIdentities/revokeTokens/action", "Microsoft.Authorization/*/read", "Microsoft.Insights/alertRules/*", "Microsoft.Resources/subscriptions/resourceGroups/read", "Microsoft.Resources/deployments/*", "Microsoft.Support/*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
];

fn to_strings(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| (*s).to_string()).collect()
}

/// Every built-in role definition, assignable anywhere.
pub fn built_in_roles() -> Vec<RoleDefinition> {
    BUILT_INS
        .iter()
        .filter_map(|b| {
            Some(RoleDefinition {
                id: Uuid::parse_str(b.id).ok()?,
                role_name: b.name.to_string(),
                description: b.description.to_string(),
                role_type: RoleType::BuiltInRole,
                permissions: vec![Permission {
                    actions: to_strings(b.actions),
                    not_actions: to_strings(b.not_actions),
                    data_actions: to_strings(b.data_actions),
                    not_data_actions: to_strings(b.not_data_actions),
                }],
                assignable_scopes: vec![ResourceId::root()],
            })
        })
        .collect()
}

/// The built-in role named `name`, matched case-insensitively.
pub fn built_in_by_name(name: &str) -> Option<RoleDefinition> {
    built_in_roles()
        .into_iter()
        .find(|r| r.role_name.eq_ignore_ascii_case(name))
}

/// The built-in role with GUID `id`.
pub fn built_in_by_id(id: Uuid) -> Option<RoleDefinition> {
    built_in_roles().into_iter().find(|r| r.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_guid_parses_and_is_unique() {
        let roles = built_in_roles();
        assert_eq!(roles.len(), BUILT_INS.len());
        let mut ids: Vec<_> = roles.iter().map(|r| r.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), roles.len());
    }

    #[test]
    fn well_known_roles_keep_their_azure_guids() {
        let owner = built_in_by_name("owner").map(|r| r.id.to_string());
        assert_eq!(
            owner.as_deref(),
            Some("8e3af657-a8ff-443c-a75c-2fe8c4bcb635")
        );
        let kv = built_in_by_name("Key Vault Secrets User").map(|r| r.id.to_string());
        assert_eq!(kv.as_deref(), Some("4633458b-17de-408a-b874-0445c86b69e6"));
        let reader = built_in_by_name("Storage Blob Data Reader").map(|r| r.id.to_string());
        assert_eq!(
            reader.as_deref(),
            Some("2a2b9908-6ea1-4ae2-8e65-a410df84e7d1")
        );
    }
}
