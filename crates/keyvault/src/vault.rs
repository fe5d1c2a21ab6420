//! The vault resource (`Microsoft.KeyVault/vaults`): the control plane's rules for it, and
//! the settings the data plane reads from it. Pure: bodies in, bodies or errors out.
//!
//! The control plane stores a vault like any resource; these functions decide what its
//! `properties` may become:
//! - [`validate_put`] / [`validate_patch`]: `tenantId`, `sku`, `accessPolicies`,
//!   `enableRbacAuthorization`, soft delete (always on, retention 7 to 90 days, fixed once
//!   set), purge protection (cannot be turned off), and the read-only `vaultUri`.
//! - [`apply_access_policy_operation`]: `PUT {vault}/accessPolicies/{add|replace|remove}`,
//!   and [`access_policy_response`], its answer.
//! - [`switches_permission_model`]: whether a write moves an existing vault between the RBAC
//!   and access-policy models, which needs [`PERMISSION_MODEL_ACTION`] at the vault besides
//!   `vaults/write`: either model decides who reads the vault's secrets, and under RBAC only
//!   those who manage role assignments (Owner, User Access Administrator) grant data access.
//!   Editing access policies of a vault in access-policy mode needs only vault write, as on
//!   Azure.
//!
//! A PUT that leaves out `enableRbacAuthorization`, `softDeleteRetentionInDays`,
//! `enablePurgeProtection`, `accessPolicies` or `tenantId` keeps the vault's current value,
//! so a client that sends only what it changes cannot silently switch a vault's permission
//! model or drop its protections. Properties this plane does not interpret
//! (`networkAcls`, `enabledForDeployment`, ...) are kept as sent.

use lanyard_authz::{AccessPolicy, SecretPermission};
use serde_json::{json, Map, Value};
use uuid::Uuid;

pub const VAULT_TYPE: &str = "Microsoft.KeyVault/vaults";
pub const ACCESS_POLICIES_TYPE: &str = "Microsoft.KeyVault/vaults/accessPolicies";
/// Soft-delete retention when none is given.
pub const DEFAULT_RETENTION_DAYS: i64 = 90;
pub const MIN_RETENTION_DAYS: i64 = 7;
pub const MAX_RETENTION_DAYS: i64 = 90;
/// Azure's limit on access policy entries per vault.
pub const MAX_ACCESS_POLICIES: usize = 1024;

/// What switching an existing vault's permission model (`enableRbacAuthorization`, either
/// way) needs at the vault, in addition to `Microsoft.KeyVault/vaults/write`.
pub const PERMISSION_MODEL_ACTION: &str = "Microsoft.Authorization/roleAssignments/write";

/// Properties a client may send but never sets.
const READ_ONLY: &[&str] = &[
    "vaultUri",
    "provisioningState",
    "hsmPoolResourceId",
    "createMode",
];

/// What the rules need beyond the bodies.
#[derive(Debug, Clone, Copy)]
pub struct VaultContext<'a> {
    /// The directory's tenant: the default `tenantId`.
    pub tenant_id: Uuid,
    /// `https://{name}.vault.{domain}[:{port}]/`.
    pub vault_uri: &'a str,
}

/// Why a vault write is refused. Messages are ARM's whole sentences.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultRuleError {
    #[error("The property 'properties' is required and must be an object.")]
    PropertiesRequired,
    #[error("The value of '{field}' is invalid: {reason}.")]
    InvalidField { field: String, reason: String },
    #[error("The property \"enableSoftDelete\" cannot be set to false. Enabling the 'soft delete' functionality is irreversible.")]
    SoftDeleteCannotBeDisabled,
    #[error("The property \"enablePurgeProtection\" cannot be set to false. Enabling the 'purge protection' functionality is irreversible.")]
    PurgeProtectionCannotBeDisabled,
    #[error("The property \"softDeleteRetentionInDays\" is {existing} and cannot be changed once set (requested {requested}).")]
    RetentionImmutable { existing: i64, requested: i64 },
    #[error(
        "The access policy operation '{0}' is not supported. Use 'add', 'replace' or 'remove'."
    )]
    UnknownOperation(String),
    #[error("The vault name '{0}' is already in use. Vault names are globally unique so it is possible that the name is already taken.")]
    NameInUse(String),
}

impl VaultRuleError {
    /// ARM's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NameInUse(_) => "VaultAlreadyExists",
            Self::UnknownOperation(_) => "InvalidRequestContent",
            _ => "BadRequest",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::NameInUse(_) => 409,
            _ => 400,
        }
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> VaultRuleError {
    VaultRuleError::InvalidField {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The `properties` to store for a PUT of `request` over the vault body `existing`.
pub fn validate_put(
    request: &Value,
    existing: Option<&Value>,
    ctx: &VaultContext<'_>,
) -> Result<Value, VaultRuleError> {
    let props = request
        .get("properties")
        .and_then(Value::as_object)
        .ok_or(VaultRuleError::PropertiesRequired)?;
    let current = existing
        .and_then(|e| e.get("properties"))
        .and_then(Value::as_object);
    validate_properties(props, current, ctx).map(Value::Object)
}

/// The `properties` to store for a PATCH of `request` over the vault body `existing`: the
/// properties it names replace the current ones, then the PUT rules apply.
pub fn validate_patch(
    request: &Value,
    existing: &Value,
    ctx: &VaultContext<'_>,
) -> Result<Value, VaultRuleError> {
    let current = existing.get("properties").and_then(Value::as_object);
    let mut merged = current.cloned().unwrap_or_default();
    match request.get("properties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(patch)) => {
            for (k, v) in patch {
                merged.insert(k.clone(), v.clone());
            }
        }
        Some(_) => return Err(VaultRuleError::PropertiesRequired),
    }
    validate_properties(&merged, current, ctx).map(Value::Object)
}

fn validate_properties(
    props: &Map<String, Value>,
    current: Option<&Map<String, Value>>,
    ctx: &VaultContext<'_>,
) -> Result<Map<String, Value>, VaultRuleError> {
    let given = |k: &str| props.get(k).filter(|v| !v.is_null());
    let kept = |k: &str| current.and_then(|c| c.get(k)).filter(|v| !v.is_null());
    let mut out = props.clone();
    for k in READ_ONLY {
        out.remove(*k);
    }

    let tenant = match given("tenantId").or_else(|| kept("tenantId")) {
        None => ctx.tenant_id,
        Some(Value::String(s)) => Uuid::parse_str(s.trim())
            .map_err(|_| invalid("properties.tenantId", format!("'{s}' is not a GUID")))?,
        Some(_) => return Err(invalid("properties.tenantId", "it must be a GUID string")),
    };
    out.insert("tenantId".into(), json!(tenant));

    let sku = match given("sku").or_else(|| kept("sku")) {
        None => json!({"family": "A", "name": "standard"}),
        Some(v) => validate_sku(v)?,
    };
    out.insert("sku".into(), sku);

    let policies = match given("accessPolicies") {
        Some(v) => parse_policies(v, "properties.accessPolicies")?,
        None => kept("accessPolicies")
            .map(stored_policies)
            .unwrap_or_default(),
    };
    out.insert("accessPolicies".into(), policies_json(&policies));

    let rbac = match given("enableRbacAuthorization") {
        Some(v) => v.as_bool().ok_or_else(|| {
            invalid(
                "properties.enableRbacAuthorization",
                "it must be true or false",
            )
        })?,
        None => kept("enableRbacAuthorization")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    out.insert("enableRbacAuthorization".into(), json!(rbac));

    match given("enableSoftDelete") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Err(VaultRuleError::SoftDeleteCannotBeDisabled),
        Some(_) => {
            return Err(invalid(
                "properties.enableSoftDelete",
                "it must be true or false",
            ))
        }
    }
    out.insert("enableSoftDelete".into(), json!(true));

    let existing_days = kept("softDeleteRetentionInDays").and_then(Value::as_i64);
    let days = match given("softDeleteRetentionInDays") {
        None => existing_days.unwrap_or(DEFAULT_RETENTION_DAYS),
        Some(v) => {
            let days = v.as_i64().ok_or_else(|| {
                invalid(
                    "properties.softDeleteRetentionInDays",
                    "it must be a whole number of days",
                )
            })?;
            if !(MIN_RETENTION_DAYS..=MAX_RETENTION_DAYS).contains(&days) {
                return Err(invalid(
                    "properties.softDeleteRetentionInDays",
                    format!("{days} is outside the allowed range of {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS} days"),
                ));
            }
            if let Some(existing) = existing_days.filter(|e| *e != days) {
                return Err(VaultRuleError::RetentionImmutable {
                    existing,
                    requested: days,
                });
            }
            days
        }
    };
    out.insert("softDeleteRetentionInDays".into(), json!(days));

    let protected_now = kept("enablePurgeProtection").and_then(Value::as_bool) == Some(true);
    let protected = match given("enablePurgeProtection") {
        None => protected_now,
        Some(Value::Bool(true)) => true,
        Some(Value::Bool(false)) if protected_now => {
            return Err(VaultRuleError::PurgeProtectionCannotBeDisabled)
        }
        Some(Value::Bool(false)) => false,
        Some(_) => {
            return Err(invalid(
                "properties.enablePurgeProtection",
                "it must be true or false",
            ))
        }
    };
    // Azure omits the property until purge protection is on.
    if protected {
        out.insert("enablePurgeProtection".into(), json!(true));
    } else {
        out.remove("enablePurgeProtection");
    }

    out.insert("vaultUri".into(), json!(ctx.vault_uri));
    Ok(out)
}

fn validate_sku(v: &Value) -> Result<Value, VaultRuleError> {
    let sku = v.as_object().ok_or_else(|| {
        invalid(
            "properties.sku",
            "it must be an object with 'family' and 'name'",
        )
    })?;
    let family = match sku.get("family") {
        None | Some(Value::Null) => "A".to_string(),
        Some(Value::String(f)) if f.eq_ignore_ascii_case("A") => "A".to_string(),
        Some(other) => {
            return Err(invalid(
                "properties.sku.family",
                format!("{other} is not 'A'"),
            ))
        }
    };
    let name = match sku.get("name").and_then(Value::as_str) {
        Some(n) if n.eq_ignore_ascii_case("standard") => "standard",
        Some(n) if n.eq_ignore_ascii_case("premium") => "premium",
        Some(n) => {
            return Err(invalid(
                "properties.sku.name",
                format!("'{n}' is not 'standard' or 'premium'"),
            ))
        }
        None => {
            return Err(invalid(
                "properties.sku.name",
                "it is required ('standard' or 'premium')",
            ))
        }
    };
    Ok(json!({"family": family, "name": name}))
}

fn parse_policies(v: &Value, field: &str) -> Result<Vec<AccessPolicy>, VaultRuleError> {
    let items = v
        .as_array()
        .ok_or_else(|| invalid(field, "it must be an array of access policy entries"))?;
    if items.len() > MAX_ACCESS_POLICIES {
        return Err(invalid(
            field,
            format!("a vault holds at most {MAX_ACCESS_POLICIES} access policy entries"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{field}[{i}]");
            let policy: AccessPolicy =
                serde_json::from_value(item.clone()).map_err(|e| invalid(&at, e.to_string()))?;
            for p in &policy.permissions.secrets {
                if !p.eq_ignore_ascii_case("all") && p.parse::<SecretPermission>().is_err() {
                    return Err(invalid(
                        format!("{at}.permissions.secrets"),
                        format!("'{p}' is not a secret permission (get, list, set, delete, recover, backup, restore, purge or all)"),
                    ));
                }
            }
            Ok(policy)
        })
        .collect()
}

/// Stored entries were validated when written; anything unreadable is skipped.
fn stored_policies(v: &Value) -> Vec<AccessPolicy> {
    v.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| serde_json::from_value(i.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn policies_json(policies: &[AccessPolicy]) -> Value {
    serde_json::to_value(policies).unwrap_or_else(|_| json!([]))
}

/// Whether storing `properties` (as [`validate_put`] or [`validate_patch`] made them) over
/// the stored vault body `existing` switches the vault between the RBAC and access-policy
/// permission models. A stored body without the flag is in access-policy mode, as the data
/// plane reads it ([`VaultSettings::from_body`]).
pub fn switches_permission_model(existing: &Value, properties: &Value) -> bool {
    let rbac = |props: &Value| props["enableRbacAuthorization"].as_bool().unwrap_or(false);
    rbac(&existing["properties"]) != rbac(properties)
}

/// The three access policy operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessPolicyOperation {
    /// Merge the given permissions into the entries of the same identity, or add entries.
    Add,
    /// The given entries become the whole list.
    Replace,
    /// Take the given permissions away; an entry left with none (or named with none) goes.
    Remove,
}

impl AccessPolicyOperation {
    pub fn parse(s: &str) -> Result<Self, VaultRuleError> {
        match s.to_ascii_lowercase().as_str() {
            "add" => Ok(Self::Add),
            "replace" => Ok(Self::Replace),
            "remove" => Ok(Self::Remove),
            _ => Err(VaultRuleError::UnknownOperation(s.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Replace => "replace",
            Self::Remove => "remove",
        }
    }
}

/// Whether `name` names an access policy operation (the last segment of
/// `{vault}/accessPolicies/{operation}`).
pub fn valid_access_policy_operation(name: &str) -> bool {
    AccessPolicyOperation::parse(name).is_ok()
}

/// The sentence that explains [`valid_access_policy_operation`] in errors.
pub const ACCESS_POLICY_OPERATION_RULE: &str =
    "The access policy operation is 'add', 'replace' or 'remove'.";

fn same_identity(a: &AccessPolicy, b: &AccessPolicy) -> bool {
    a.tenant_id == b.tenant_id && a.object_id == b.object_id && a.application_id == b.application_id
}

fn union(into: &mut Vec<String>, more: &[String]) {
    for p in more {
        if !into.iter().any(|q| q.eq_ignore_ascii_case(p)) {
            into.push(p.clone());
        }
    }
}

fn subtract(from: &mut Vec<String>, less: &[String]) {
    from.retain(|p| !less.iter().any(|q| q.eq_ignore_ascii_case(p)));
}

fn is_empty(p: &AccessPolicy) -> bool {
    let x = &p.permissions;
    x.keys.is_empty() && x.secrets.is_empty() && x.certificates.is_empty() && x.storage.is_empty()
}

/// Applies `PUT {vault}/accessPolicies/{operation}` with body `request` to the vault body
/// `existing`. Returns the vault's new `properties` and the entries the request named (the
/// answer's `properties.accessPolicies`).
pub fn apply_access_policy_operation(
    existing: &Value,
    operation: &str,
    request: &Value,
) -> Result<(Value, Value), VaultRuleError> {
    let op = AccessPolicyOperation::parse(operation)?;
    let given_json = request
        .get("properties")
        .and_then(|p| p.get("accessPolicies"))
        .ok_or_else(|| invalid("properties.accessPolicies", "it is required"))?;
    let given = parse_policies(given_json, "properties.accessPolicies")?;
    let mut props = existing
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut current = props
        .get("accessPolicies")
        .map(stored_policies)
        .unwrap_or_default();
    match op {
        AccessPolicyOperation::Replace => current = given.clone(),
        AccessPolicyOperation::Add => {
            for g in &given {
                match current.iter_mut().find(|c| same_identity(c, g)) {
                    Some(c) => {
                        union(&mut c.permissions.keys, &g.permissions.keys);
                        union(&mut c.permissions.secrets, &g.permissions.secrets);
                        union(&mut c.permissions.certificates, &g.permissions.certificates);
                        union(&mut c.permissions.storage, &g.permissions.storage);
                    }
                    None => current.push(g.clone()),
                }
            }
        }
        AccessPolicyOperation::Remove => {
            for g in &given {
                if is_empty(g) {
                    current.retain(|c| !same_identity(c, g));
                    continue;
                }
                if let Some(c) = current.iter_mut().find(|c| same_identity(c, g)) {
                    subtract(&mut c.permissions.keys, &g.permissions.keys);
                    subtract(&mut c.permissions.secrets, &g.permissions.secrets);
                    subtract(&mut c.permissions.certificates, &g.permissions.certificates);
                    subtract(&mut c.permissions.storage, &g.permissions.storage);
                }
            }
            current.retain(|c| !is_empty(c));
        }
    }
    if current.len() > MAX_ACCESS_POLICIES {
        return Err(invalid(
            "properties.accessPolicies",
            format!("a vault holds at most {MAX_ACCESS_POLICIES} access policy entries"),
        ));
    }
    props.insert("accessPolicies".into(), policies_json(&current));
    Ok((Value::Object(props), policies_json(&given)))
}

/// The answer to an access policy operation on the vault `vault_id`.
pub fn access_policy_response(
    vault_id: &str,
    location: Option<&str>,
    operation: AccessPolicyOperation,
    policies: &Value,
) -> Value {
    let mut v = json!({
        "id": format!("{vault_id}/accessPolicies/{}", operation.as_str()),
        "type": ACCESS_POLICIES_TYPE,
        "name": operation.as_str(),
        "properties": { "accessPolicies": policies },
    });
    if let Some(l) = location {
        v["location"] = json!(l);
    }
    v
}

/// What the data plane reads from a vault's stored body.
#[derive(Debug, Clone, PartialEq)]
pub struct VaultSettings {
    pub tenant_id: Uuid,
    /// RBAC mode (`enableRbacAuthorization`); access policies are ignored when true.
    pub rbac: bool,
    pub access_policies: Vec<AccessPolicy>,
    pub retention_days: i64,
    pub purge_protection: bool,
}

impl VaultSettings {
    /// Reads a stored vault body leniently: what the control plane wrote was validated.
    pub fn from_body(body: &Value, default_tenant: Uuid) -> Self {
        let p = &body["properties"];
        Self {
            tenant_id: p["tenantId"]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .unwrap_or(default_tenant),
            rbac: p["enableRbacAuthorization"].as_bool().unwrap_or(false),
            access_policies: stored_policies(&p["accessPolicies"]),
            retention_days: p["softDeleteRetentionInDays"]
                .as_i64()
                .filter(|d| (MIN_RETENTION_DAYS..=MAX_RETENTION_DAYS).contains(d))
                .unwrap_or(DEFAULT_RETENTION_DAYS),
            purge_protection: p["enablePurgeProtection"].as_bool().unwrap_or(false),
        }
    }

    /// `attributes.recoveryLevel` of the vault's secrets.
    pub fn recovery_level(&self) -> &'static str {
        match (
            self.retention_days == DEFAULT_RETENTION_DAYS,
            self.purge_protection,
        ) {
            (true, false) => "Recoverable+Purgeable",
            (true, true) => "Recoverable",
            (false, false) => "CustomizedRecoverable+Purgeable",
            (false, true) => "CustomizedRecoverable",
        }
    }

    /// How long a deleted secret stays recoverable, in seconds.
    pub fn retention_secs(&self) -> i64 {
        self.retention_days * 24 * 3600
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URI: &str = "https://kv1.vault.lanyard.localhost:8443/";

    fn ctx() -> VaultContext<'static> {
        VaultContext {
            tenant_id: Uuid::from_u128(7),
            vault_uri: URI,
        }
    }

    fn oid(n: u128) -> String {
        Uuid::from_u128(n).to_string()
    }

    fn policy(n: u128, secrets: &[&str]) -> Value {
        json!({"tenantId": oid(7), "objectId": oid(n), "permissions": {"secrets": secrets}})
    }

    #[test]
    fn put_fills_defaults_and_the_read_only_uri() {
        let props = validate_put(
            &json!({"location": "local", "properties": {"sku": {"name": "Standard"}, "vaultUri": "https://evil/", "networkAcls": {"x": 1}}}),
            None,
            &ctx(),
        )
        .unwrap();
        assert_eq!(props["vaultUri"], URI);
        assert_eq!(props["tenantId"], oid(7));
        assert_eq!(props["sku"], json!({"family": "A", "name": "standard"}));
        assert_eq!(props["enableSoftDelete"], true);
        assert_eq!(props["softDeleteRetentionInDays"], 90);
        assert_eq!(props["enableRbacAuthorization"], false);
        assert_eq!(props["accessPolicies"], json!([]));
        assert!(props.get("enablePurgeProtection").is_none());
        assert_eq!(props["networkAcls"], json!({"x": 1}));
    }

    #[test]
    fn switching_the_permission_model_is_detected_both_ways() {
        let rbac = json!({"properties": {"enableRbacAuthorization": true, "accessPolicies": []}});
        let policies = json!({"properties": {"enableRbacAuthorization": false}});
        let legacy = json!({"properties": {"accessPolicies": []}});
        let patch =
            |existing: &Value, request: Value| validate_patch(&request, existing, &ctx()).unwrap();
        // RBAC -> access policies, with a policy added on the way.
        let to_policies = patch(
            &rbac,
            json!({"properties": {"enableRbacAuthorization": false, "accessPolicies": [policy(9, &["get"])]}}),
        );
        assert!(switches_permission_model(&rbac, &to_policies));
        // Access policies -> RBAC, also from a body stored without the flag.
        let to_rbac = patch(
            &policies,
            json!({"properties": {"enableRbacAuthorization": true}}),
        );
        assert!(switches_permission_model(&policies, &to_rbac));
        assert!(switches_permission_model(
            &legacy,
            &patch(
                &legacy,
                json!({"properties": {"enableRbacAuthorization": true}})
            )
        ));
        // Not a switch: the flag left out, restated, or policies edited in access-policy mode.
        assert!(!switches_permission_model(
            &rbac,
            &patch(&rbac, json!({"tags": {"a": "b"}}))
        ));
        assert!(!switches_permission_model(
            &rbac,
            &patch(
                &rbac,
                json!({"properties": {"enableRbacAuthorization": true}})
            )
        ));
        let edited = patch(
            &policies,
            json!({"properties": {"accessPolicies": [policy(9, &["get"])]}}),
        );
        assert!(!switches_permission_model(&policies, &edited));
        let put = validate_put(
            &json!({"properties": {"sku": {"name": "standard"}}}),
            Some(&rbac),
            &ctx(),
        )
        .unwrap();
        assert!(
            !switches_permission_model(&rbac, &put),
            "a PUT that leaves the flag out keeps it"
        );
    }

    #[test]
    fn put_refuses_bad_input() {
        let cases = [
            json!({}),
            json!({"properties": []}),
            json!({"properties": {"tenantId": "nope"}}),
            json!({"properties": {"sku": {"name": "gold"}}}),
            json!({"properties": {"sku": {"family": "B", "name": "standard"}}}),
            json!({"properties": {"softDeleteRetentionInDays": 6}}),
            json!({"properties": {"softDeleteRetentionInDays": 91}}),
            json!({"properties": {"softDeleteRetentionInDays": "30"}}),
            json!({"properties": {"enableRbacAuthorization": "yes"}}),
            json!({"properties": {"accessPolicies": {}}}),
            json!({"properties": {"accessPolicies": [{"objectId": "x"}]}}),
            json!({"properties": {"accessPolicies": [policy(1, &["read"])]}}),
        ];
        for body in cases {
            let e = validate_put(&body, None, &ctx()).unwrap_err();
            assert_eq!(e.status(), 400, "{body}: {e}");
        }
        let e = validate_put(
            &json!({"properties": {"enableSoftDelete": false}}),
            None,
            &ctx(),
        )
        .unwrap_err();
        assert_eq!(e, VaultRuleError::SoftDeleteCannotBeDisabled);
    }

    #[test]
    fn protections_cannot_be_turned_off_or_changed() {
        let created = validate_put(
            &json!({"properties": {"sku": {"name": "standard"}, "softDeleteRetentionInDays": 7, "enablePurgeProtection": true, "enableRbacAuthorization": true}}),
            None,
            &ctx(),
        )
        .unwrap();
        let existing = json!({"properties": created});
        let off = json!({"properties": {"enablePurgeProtection": false}});
        assert_eq!(
            validate_put(&off, Some(&existing), &ctx()).unwrap_err(),
            VaultRuleError::PurgeProtectionCannotBeDisabled
        );
        assert_eq!(
            validate_patch(&off, &existing, &ctx()).unwrap_err(),
            VaultRuleError::PurgeProtectionCannotBeDisabled
        );
        let longer = json!({"properties": {"softDeleteRetentionInDays": 30}});
        assert!(matches!(
            validate_patch(&longer, &existing, &ctx()).unwrap_err(),
            VaultRuleError::RetentionImmutable {
                existing: 7,
                requested: 30
            }
        ));
        // Leaving properties out keeps them; the same values are accepted.
        let kept = validate_put(
            &json!({"properties": {"softDeleteRetentionInDays": 7}}),
            Some(&existing),
            &ctx(),
        )
        .unwrap();
        assert_eq!(kept["enablePurgeProtection"], true);
        assert_eq!(kept["enableRbacAuthorization"], true);
        assert_eq!(kept["softDeleteRetentionInDays"], 7);
        let patched = validate_patch(&json!({"tags": {"a": "b"}}), &existing, &ctx()).unwrap();
        assert_eq!(patched["enablePurgeProtection"], true);
        // Turning purge protection on is fine.
        let plain =
            json!({"properties": validate_put(&json!({"properties": {}}), None, &ctx()).unwrap()});
        let on = validate_patch(
            &json!({"properties": {"enablePurgeProtection": true}}),
            &plain,
            &ctx(),
        )
        .unwrap();
        assert_eq!(on["enablePurgeProtection"], true);
    }

    #[test]
    fn access_policy_operations() {
        let existing = json!({"properties": {"accessPolicies": [policy(1, &["get"])]}});
        let add = json!({"properties": {"accessPolicies": [policy(1, &["list", "GET"]), policy(2, &["all"])]}});
        let (props, answer) = apply_access_policy_operation(&existing, "add", &add).unwrap();
        let list = props["accessPolicies"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["permissions"]["secrets"], json!(["get", "list"]));
        assert_eq!(answer.as_array().unwrap().len(), 2);

        let after_add = json!({"properties": props});
        let remove = json!({"properties": {"accessPolicies": [policy(1, &["get", "list"]), policy(2, &["get"])]}});
        let (props, _) = apply_access_policy_operation(&after_add, "Remove", &remove).unwrap();
        let list = props["accessPolicies"].as_array().unwrap();
        assert_eq!(list.len(), 1, "an entry left without permissions goes");
        assert_eq!(list[0]["objectId"], oid(2));

        let replace = json!({"properties": {"accessPolicies": [policy(3, &["set"])]}});
        let (props, _) = apply_access_policy_operation(&after_add, "replace", &replace).unwrap();
        assert_eq!(props["accessPolicies"].as_array().unwrap().len(), 1);
        assert_eq!(props["accessPolicies"][0]["objectId"], oid(3));

        assert!(matches!(
            apply_access_policy_operation(&existing, "merge", &replace),
            Err(VaultRuleError::UnknownOperation(_))
        ));
        assert!(apply_access_policy_operation(&existing, "add", &json!({})).is_err());
        let response = access_policy_response(
            "/x/vaults/kv1",
            Some("local"),
            AccessPolicyOperation::Add,
            &answer,
        );
        assert_eq!(response["id"], "/x/vaults/kv1/accessPolicies/add");
        assert_eq!(response["type"], ACCESS_POLICIES_TYPE);
    }

    #[test]
    fn settings_and_recovery_levels() {
        let body = json!({"properties": {"tenantId": oid(7), "enableRbacAuthorization": true,
            "softDeleteRetentionInDays": 7, "accessPolicies": [policy(1, &["get"])]}});
        let s = VaultSettings::from_body(&body, Uuid::nil());
        assert!(s.rbac);
        assert_eq!(s.retention_secs(), 7 * 86400);
        assert_eq!(s.access_policies.len(), 1);
        assert_eq!(s.recovery_level(), "CustomizedRecoverable+Purgeable");
        let s = VaultSettings::from_body(
            &json!({"properties": {"enablePurgeProtection": true}}),
            Uuid::nil(),
        );
        assert_eq!(s.recovery_level(), "Recoverable");
        assert_eq!(s.tenant_id, Uuid::nil());
    }
}
