//! Who may do what to a vault's secrets: RBAC data actions checked by the engine at the
//! secret's scope (`{vault id}/secrets/{name}`, or the vault for lists and restore) when the
//! vault is in RBAC mode, else the vault's access policies. A refusal is a 403 with Key
//! Vault's wording (`ForbiddenByRbac` or `AccessDenied`) followed by the evaluator's own
//! explanation of why.

use lanyard_authz::{
    check_secret_permission, AccessRequest, Decision, PolicyCaller, SecretPermission,
};
use lanyard_domain::ResourceId;
use lanyard_platform::authn::Caller;
use lanyard_platform::AppState;

use crate::errors::KvError;
use crate::route::Operation;
use crate::vault::VaultSettings;

/// The RBAC data action an operation needs.
pub fn data_action(op: &Operation) -> &'static str {
    match op {
        Operation::Get(..) => "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        Operation::List
        | Operation::Versions(_)
        | Operation::ListDeleted
        | Operation::GetDeleted(_) => "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        Operation::Set(_) => "Microsoft.KeyVault/vaults/secrets/setSecret/action",
        Operation::Update(..) => "Microsoft.KeyVault/vaults/secrets/update/action",
        Operation::Delete(_) => "Microsoft.KeyVault/vaults/secrets/delete",
        Operation::Recover(_) => "Microsoft.KeyVault/vaults/secrets/recover/action",
        Operation::Purge(_) => "Microsoft.KeyVault/vaults/secrets/purge/action",
        Operation::Backup(_) => "Microsoft.KeyVault/vaults/secrets/backup/action",
        Operation::Restore => "Microsoft.KeyVault/vaults/secrets/restore/action",
    }
}

/// The access-policy permission an operation needs (as Key Vault's REST reference says).
pub fn permission(op: &Operation) -> SecretPermission {
    match op {
        Operation::Get(..) | Operation::GetDeleted(_) => SecretPermission::Get,
        Operation::List | Operation::Versions(_) | Operation::ListDeleted => SecretPermission::List,
        Operation::Set(_) | Operation::Update(..) => SecretPermission::Set,
        Operation::Delete(_) => SecretPermission::Delete,
        Operation::Recover(_) => SecretPermission::Recover,
        Operation::Purge(_) => SecretPermission::Purge,
        Operation::Backup(_) => SecretPermission::Backup,
        Operation::Restore => SecretPermission::Restore,
    }
}

/// The scope an operation is checked at.
pub fn scope(vault: &ResourceId, op: &Operation) -> ResourceId {
    match op.secret() {
        Some(name) => vault.with_child("secrets", name.as_str()),
        None => vault.clone(),
    }
}

/// What the check needs to know about the vault.
pub struct VaultRef<'a> {
    pub id: &'a ResourceId,
    pub name: &'a str,
    pub settings: &'a VaultSettings,
}

/// Allows `op` for `caller` on the vault, or says why not.
pub fn check(
    state: &AppState,
    vault: &VaultRef<'_>,
    caller: &Caller,
    op: &Operation,
) -> Result<(), KvError> {
    let appid = caller.client_id.map(|c| c.to_string()).unwrap_or_default();
    if vault.settings.rbac {
        let action = data_action(op);
        let scope = scope(vault.id, op);
        let decision = state
            .access
            .check(&AccessRequest::data(caller.object_id, action, &scope));
        return match decision {
            Decision::Allow(_) => Ok(()),
            Decision::Deny(denial) => Err(KvError::ForbiddenByRbac(format!(
                "Caller is not authorized to perform action on resource.\r\n\
                 If role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\n\
                 Caller: appid={appid};oid={oid};iss={iss}\r\n\
                 Action: '{action}'\r\n\
                 Resource: '{resource}'\r\n\
                 Assignment: (not found)\r\n\
                 DenyAssignmentId: null\r\n\
                 DecisionReason: 'DeniedWithNoValidRBAC' \r\n\
                 Vault: {vault};location=local\r\n\
                 Lanyard: {why}",
                oid = caller.object_id,
                iss = caller.token.claims.iss,
                resource = scope.key(),
                vault = vault.name,
                why = denial.explain(),
            ))),
        };
    }
    let groups = state
        .access
        .with_index(|index| index.groups_of(caller.object_id));
    let who = PolicyCaller {
        tenant_id: caller.tenant_id,
        object_id: caller.object_id,
        groups: &groups,
        application_id: caller.client_id,
    };
    let decision = check_secret_permission(
        &vault.settings.access_policies,
        &who,
        permission(op),
        vault.name,
    );
    match decision {
        lanyard_authz::PolicyDecision::Allow(_) => Ok(()),
        lanyard_authz::PolicyDecision::Deny(denial) => Err(KvError::AccessDenied(format!(
            "{}. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287\r\nLanyard: {}",
            denial.azure_message(),
            denial.explain()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::SecretName;

    #[test]
    fn actions_permissions_and_scopes() {
        let n = SecretName::parse("db").unwrap();
        let vault = ResourceId::parse(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1",
        )
        .unwrap();
        let get = Operation::Get(n.clone(), None);
        assert_eq!(
            data_action(&get),
            "Microsoft.KeyVault/vaults/secrets/getSecret/action"
        );
        assert_eq!(
            permission(&Operation::Versions(n.clone())),
            SecretPermission::List
        );
        assert_eq!(
            permission(&Operation::Update(n.clone(), None)),
            SecretPermission::Set
        );
        assert_eq!(scope(&vault, &get).as_str(), format!("{vault}/secrets/db"));
        assert_eq!(scope(&vault, &Operation::List), vault);
        let secret_scope = scope(&vault, &get);
        assert!(secret_scope.is_within(&vault));
    }
}
