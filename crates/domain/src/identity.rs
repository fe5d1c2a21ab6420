//! The `identity` block of a resource and Azure's rules for changing it.
//!
//! PUT replaces the block; PATCH merges `userAssignedIdentities`, where `{}` adds or keeps
//! an identity and `null` removes it; `None` clears everything. [`IdentityChange::apply`]
//! computes the resulting state without touching storage.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::ResourceId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdentityType {
    None,
    SystemAssigned,
    UserAssigned,
    SystemAssignedUserAssigned,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity type `{0}` is not one of `None`, `SystemAssigned`, `UserAssigned`, `SystemAssigned, UserAssigned`")]
    UnknownType(String),
    #[error("identity type `{0}` requires at least one entry in `userAssignedIdentities`")]
    UserAssignedMissing(&'static str),
    #[error(
        "`userAssignedIdentities` may only be given when the identity type includes `UserAssigned`"
    )]
    UserAssignedNotAllowed,
    #[error("`{0}` is not the resource id of a user-assigned identity")]
    NotAUserAssignedIdentity(String),
}

impl IdentityType {
    /// Accepts both spellings of the combined type, with or without the space.
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        match compact.to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "systemassigned" => Ok(Self::SystemAssigned),
            "userassigned" => Ok(Self::UserAssigned),
            "systemassigned,userassigned" | "userassigned,systemassigned" => {
                Ok(Self::SystemAssignedUserAssigned)
            }
            _ => Err(IdentityError::UnknownType(s.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "None",
            Self::SystemAssigned => "SystemAssigned",
            Self::UserAssigned => "UserAssigned",
            Self::SystemAssignedUserAssigned => "SystemAssigned, UserAssigned",
        }
    }

    pub fn has_system(self) -> bool {
        matches!(
            self,
            Self::SystemAssigned | Self::SystemAssignedUserAssigned
        )
    }

    pub fn has_user(self) -> bool {
        matches!(self, Self::UserAssigned | Self::SystemAssignedUserAssigned)
    }

    fn from_parts(system: bool, user: bool) -> Self {
        match (system, user) {
            (false, false) => Self::None,
            (true, false) => Self::SystemAssigned,
            (false, true) => Self::UserAssigned,
            (true, true) => Self::SystemAssignedUserAssigned,
        }
    }
}

/// Which identities a resource holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityState {
    pub system_assigned: bool,
    /// User-assigned identities, keyed by lower-cased resource id.
    pub user_assigned: BTreeMap<String, ResourceId>,
}

impl IdentityState {
    pub fn identity_type(&self) -> IdentityType {
        IdentityType::from_parts(self.system_assigned, !self.user_assigned.is_empty())
    }
}

/// An identity block as a request gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityChange {
    pub identity_type: IdentityType,
    /// `Some(id)` for `{}` (add or keep), `None` for `null` (remove). Keyed by lower-cased id.
    pub user_assigned: Option<BTreeMap<String, Option<ResourceId>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeMode {
    Put,
    Patch,
}

impl IdentityChange {
    /// Reads the `identity` JSON object of a request body.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, IdentityError> {
        let ty = value
            .get("type")
            .and_then(|t| t.as_str())
            .ok_or_else(|| IdentityError::UnknownType(String::new()))?;
        let identity_type = IdentityType::parse(ty)?;
        let user_assigned = match value.get("userAssignedIdentities") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Object(map)) => {
                let mut out = BTreeMap::new();
                for (k, v) in map {
                    let id = ResourceId::parse(k)
                        .map_err(|_| IdentityError::NotAUserAssignedIdentity(k.clone()))?;
                    if !id.is_type("Microsoft.ManagedIdentity/userAssignedIdentities") {
                        return Err(IdentityError::NotAUserAssignedIdentity(k.clone()));
                    }
                    let entry = if v.is_null() { None } else { Some(id.clone()) };
                    out.insert(id.key().to_string(), entry);
                }
                Some(out)
            }
            Some(_) => return Err(IdentityError::NotAUserAssignedIdentity(String::new())),
        };
        Ok(Self {
            identity_type,
            user_assigned,
        })
    }

    /// The state after applying this change to `current`.
    pub fn apply(
        &self,
        current: &IdentityState,
        mode: ChangeMode,
    ) -> Result<IdentityState, IdentityError> {
        let ty = self.identity_type;
        if !ty.has_user() {
            let adds = self
                .user_assigned
                .as_ref()
                .is_some_and(|m| m.values().any(Option::is_some));
            if adds {
                return Err(IdentityError::UserAssignedNotAllowed);
            }
            return Ok(IdentityState {
                system_assigned: ty.has_system(),
                user_assigned: BTreeMap::new(),
            });
        }
        let mut users = match mode {
            ChangeMode::Put => BTreeMap::new(),
            ChangeMode::Patch => current.user_assigned.clone(),
        };
        if let Some(map) = &self.user_assigned {
            for (key, entry) in map {
                match entry {
                    Some(id) => {
                        users.entry(key.clone()).or_insert_with(|| id.clone());
                    }
                    None => {
                        users.remove(key);
                    }
                }
            }
        }
        if users.is_empty() {
            return Err(IdentityError::UserAssignedMissing(ty.as_str()));
        }
        Ok(IdentityState {
            system_assigned: ty.has_system(),
            user_assigned: users,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn uai(name: &str) -> String {
        format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}")
    }

    #[test]
    fn both_spellings_of_the_combined_type() {
        for s in [
            "SystemAssigned, UserAssigned",
            "SystemAssigned,UserAssigned",
            "systemassigned,userassigned",
        ] {
            assert_eq!(
                IdentityType::parse(s),
                Ok(IdentityType::SystemAssignedUserAssigned)
            );
        }
        assert!(IdentityType::parse("Both").is_err());
    }

    #[test]
    fn patch_merges_and_put_replaces() {
        let put = IdentityChange::from_json(&json!({
            "type": "UserAssigned",
            "userAssignedIdentities": { uai("a"): {}, uai("b"): {} }
        }))
        .unwrap();
        let state = put
            .apply(&IdentityState::default(), ChangeMode::Put)
            .unwrap();
        assert_eq!(state.user_assigned.len(), 2);

        let patch = IdentityChange::from_json(&json!({
            "type": "SystemAssigned, UserAssigned",
            "userAssignedIdentities": { uai("a"): null, uai("c"): {} }
        }))
        .unwrap();
        let merged = patch.apply(&state, ChangeMode::Patch).unwrap();
        assert!(merged.system_assigned);
        let names: Vec<_> = merged
            .user_assigned
            .values()
            .map(|i| i.name().to_string())
            .collect();
        assert_eq!(names, vec!["b", "c"]);

        let replaced = patch.apply(&state, ChangeMode::Put).unwrap();
        assert_eq!(replaced.user_assigned.len(), 1);

        let none = IdentityChange::from_json(&json!({"type": "None"})).unwrap();
        assert_eq!(
            none.apply(&merged, ChangeMode::Patch).unwrap(),
            IdentityState::default()
        );
    }

    #[test]
    fn user_assigned_needs_an_identity() {
        let patch = IdentityChange::from_json(&json!({
            "type": "UserAssigned",
            "userAssignedIdentities": { uai("a"): null }
        }))
        .unwrap();
        let mut current = IdentityState::default();
        let id = ResourceId::parse(&uai("a")).unwrap();
        current.user_assigned.insert(id.key().to_string(), id);
        assert!(matches!(
            patch.apply(&current, ChangeMode::Patch),
            Err(IdentityError::UserAssignedMissing(_))
        ));
        let bad = IdentityChange::from_json(&json!({
            "type": "UserAssigned",
            "userAssignedIdentities": { "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm": {} }
        }));
        assert!(matches!(
            bad,
            Err(IdentityError::NotAUserAssignedIdentity(_))
        ));
    }
}
