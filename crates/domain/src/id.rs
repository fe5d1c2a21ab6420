//! ARM resource ids and scopes.
//!
//! A [`ResourceId`] is any scope Azure RBAC knows: the root `/`, a subscription, a resource
//! group, a resource (with child resources), or an extension resource that hangs off any of
//! those (`{scope}/providers/Microsoft.Authorization/roleAssignments/{guid}`).
//!
//! Equality and hashing ignore case, as ARM does; formatting keeps the caller's casing of
//! names and types and writes the fixed keywords (`subscriptions`, `resourceGroups`,
//! `providers`) in their canonical form.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a resource id. Positions count `/`-separated segments from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceIdError {
    #[error("resource id is empty")]
    Empty,
    #[error("resource id `{input}` must start with `/`")]
    NotAbsolute { input: String },
    #[error("resource id `{input}` has an empty segment at position {position}")]
    EmptySegment { input: String, position: usize },
    #[error("resource id `{input}` has an invalid character in segment `{segment}`")]
    InvalidCharacter { input: String, segment: String },
    #[error("resource id `{input}`: unexpected segment `{segment}` at position {position}, expected {expected}")]
    UnexpectedSegment {
        input: String,
        segment: String,
        position: usize,
        expected: &'static str,
    },
    #[error("resource id `{input}`: `{segment}` at position {position} needs a name after it")]
    MissingName {
        input: String,
        segment: String,
        position: usize,
    },
}

/// One `providers/{namespace}/{type}/{name}[/{childType}/{childName}...]` run.
#[derive(Debug, Clone)]
pub struct ProviderSegment {
    namespace: String,
    /// `(type, name)` pairs, outermost first. Never empty.
    types: Vec<(String, String)>,
}

impl ProviderSegment {
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `(type, name)` pairs, outermost first.
    pub fn types(&self) -> &[(String, String)] {
        &self.types
    }
}

/// An ARM resource id, which is also an RBAC scope.
#[derive(Clone)]
pub struct ResourceId {
    subscription: Option<String>,
    resource_group: Option<String>,
    providers: Vec<ProviderSegment>,
    /// The formatted id, computed once.
    text: String,
    /// Lower-cased `text`: the identity used for equality, hashing and storage keys.
    key: String,
}

/// What level of the hierarchy an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeLevel {
    Root,
    Subscription,
    ResourceGroup,
    /// A resource or an extension resource.
    Resource,
}

impl ResourceId {
    /// The root scope `/`.
    pub fn root() -> Self {
        Self::build(None, None, Vec::new())
    }

    pub fn subscription(subscription_id: &str) -> Self {
        Self::build(Some(subscription_id.to_string()), None, Vec::new())
    }

    pub fn resource_group(subscription_id: &str, group: &str) -> Self {
        Self::build(
            Some(subscription_id.to_string()),
            Some(group.to_string()),
            Vec::new(),
        )
    }

    /// Appends `providers/{namespace}/{type}/{name}` to this id (an extension resource when
    /// `self` is already a resource).
    pub fn with_provider(&self, namespace: &str, resource_type: &str, name: &str) -> Self {
        let mut providers = self.providers.clone();
        providers.push(ProviderSegment {
            namespace: namespace.to_string(),
            types: vec![(resource_type.to_string(), name.to_string())],
        });
        Self::build(
            self.subscription.clone(),
            self.resource_group.clone(),
            providers,
        )
    }

    /// Appends a child `{type}/{name}` to the last provider run. On an id without providers
    /// this is the same as `self.clone()`.
    pub fn with_child(&self, child_type: &str, name: &str) -> Self {
        let mut providers = self.providers.clone();
        if let Some(last) = providers.last_mut() {
            last.types.push((child_type.to_string(), name.to_string()));
        }
        Self::build(
            self.subscription.clone(),
            self.resource_group.clone(),
            providers,
        )
    }

    fn build(
        subscription: Option<String>,
        resource_group: Option<String>,
        providers: Vec<ProviderSegment>,
    ) -> Self {
        let mut text = String::new();
        if let Some(s) = &subscription {
            text.push_str("/subscriptions/");
            text.push_str(s);
            if let Some(g) = &resource_group {
                text.push_str("/resourceGroups/");
                text.push_str(g);
            }
        }
        for p in &providers {
            text.push_str("/providers/");
            text.push_str(&p.namespace);
            for (t, n) in &p.types {
                text.push('/');
                text.push_str(t);
                text.push('/');
                text.push_str(n);
            }
        }
        if text.is_empty() {
            text.push('/');
        }
        let key = text.to_ascii_lowercase();
        Self {
            subscription,
            resource_group,
            providers,
            text,
            key,
        }
    }

    /// Parses an id. Keywords match case-insensitively; a trailing `/` is tolerated.
    pub fn parse(input: &str) -> Result<Self, ResourceIdError> {
        if input.is_empty() {
            return Err(ResourceIdError::Empty);
        }
        if !input.starts_with('/') {
            return Err(ResourceIdError::NotAbsolute {
                input: input.to_string(),
            });
        }
        let body = input.trim_start_matches('/');
        let body = body.strip_suffix('/').unwrap_or(body);
        if body.is_empty() {
            return Ok(Self::root());
        }
        let segments: Vec<&str> = body.split('/').collect();
        for (i, seg) in segments.iter().enumerate() {
            if seg.is_empty() {
                return Err(ResourceIdError::EmptySegment {
                    input: input.to_string(),
                    position: i + 1,
                });
            }
            if seg
                .chars()
                .any(|c| c.is_control() || matches!(c, '?' | '#' | '\\'))
            {
                return Err(ResourceIdError::InvalidCharacter {
                    input: input.to_string(),
                    segment: (*seg).to_string(),
                });
            }
        }
        let unexpected = |pos: usize, expected: &'static str| ResourceIdError::UnexpectedSegment {
            input: input.to_string(),
            segment: segments[pos].to_string(),
            position: pos + 1,
            expected,
        };
        let missing = |pos: usize| ResourceIdError::MissingName {
            input: input.to_string(),
            segment: segments[pos].to_string(),
            position: pos + 1,
        };

        let mut pos = 0;
        let mut subscription = None;
        let mut resource_group = None;
        if segments[pos].eq_ignore_ascii_case("subscriptions") {
            let name = segments.get(pos + 1).ok_or_else(|| missing(pos))?;
            subscription = Some((*name).to_string());
            pos += 2;
            if pos < segments.len() && segments[pos].eq_ignore_ascii_case("resourceGroups") {
                let name = segments.get(pos + 1).ok_or_else(|| missing(pos))?;
                resource_group = Some((*name).to_string());
                pos += 2;
            }
        } else if !segments[pos].eq_ignore_ascii_case("providers") {
            return Err(unexpected(pos, "`subscriptions` or `providers`"));
        }

        let mut providers: Vec<ProviderSegment> = Vec::new();
        while pos < segments.len() {
            if !segments[pos].eq_ignore_ascii_case("providers") {
                let expected = if providers.is_empty() && resource_group.is_none() {
                    "`resourceGroups` or `providers`"
                } else {
                    "`providers`"
                };
                return Err(unexpected(pos, expected));
            }
            let namespace = segments.get(pos + 1).ok_or_else(|| missing(pos))?;
            if namespace.eq_ignore_ascii_case("providers") {
                return Err(unexpected(pos + 1, "a resource provider namespace"));
            }
            pos += 2;
            let mut types = Vec::new();
            while pos < segments.len() && !segments[pos].eq_ignore_ascii_case("providers") {
                let name = segments.get(pos + 1).ok_or_else(|| missing(pos))?;
                types.push((segments[pos].to_string(), (*name).to_string()));
                pos += 2;
            }
            if types.is_empty() {
                return Err(missing(pos - 1));
            }
            providers.push(ProviderSegment {
                namespace: (*namespace).to_string(),
                types,
            });
        }
        Ok(Self::build(subscription, resource_group, providers))
    }

    /// The formatted id, keeping the caller's casing of names.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The lower-cased id: the key for maps, indexes and storage.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn subscription_id(&self) -> Option<&str> {
        self.subscription.as_deref()
    }

    pub fn resource_group_name(&self) -> Option<&str> {
        self.resource_group.as_deref()
    }

    pub fn providers(&self) -> &[ProviderSegment] {
        &self.providers
    }

    pub fn level(&self) -> ScopeLevel {
        if !self.providers.is_empty() {
            ScopeLevel::Resource
        } else if self.resource_group.is_some() {
            ScopeLevel::ResourceGroup
        } else if self.subscription.is_some() {
            ScopeLevel::Subscription
        } else {
            ScopeLevel::Root
        }
    }

    pub fn is_root(&self) -> bool {
        self.level() == ScopeLevel::Root
    }

    /// The name of the thing this id names (the last name segment); `""` for the root.
    pub fn name(&self) -> &str {
        if let Some(p) = self.providers.last() {
            if let Some((_, n)) = p.types.last() {
                return n;
            }
        }
        if let Some(g) = &self.resource_group {
            return g;
        }
        if let Some(s) = &self.subscription {
            return s;
        }
        ""
    }

    /// The ARM resource type: `Microsoft.Compute/virtualMachines`,
    /// `Microsoft.KeyVault/vaults/secrets`, `Microsoft.Resources/resourceGroups`,
    /// `Microsoft.Resources/subscriptions`, or `""` for the root.
    pub fn resource_type(&self) -> String {
        match self.level() {
            ScopeLevel::Root => String::new(),
            ScopeLevel::Subscription => "Microsoft.Resources/subscriptions".to_string(),
            ScopeLevel::ResourceGroup => "Microsoft.Resources/resourceGroups".to_string(),
            ScopeLevel::Resource => {
                let mut out = String::new();
                if let Some(p) = self.providers.last() {
                    out.push_str(&p.namespace);
                    for (t, _) in &p.types {
                        out.push('/');
                        out.push_str(t);
                    }
                }
                out
            }
        }
    }

    /// Whether the resource type equals `ty`, ignoring case.
    pub fn is_type(&self, ty: &str) -> bool {
        self.resource_type().eq_ignore_ascii_case(ty)
    }

    /// The scope directly above: a child's parent resource, a resource's group, an extension
    /// resource's scope, a group's subscription, a subscription's root. `None` for the root.
    pub fn parent(&self) -> Option<Self> {
        match self.level() {
            ScopeLevel::Root => None,
            ScopeLevel::Subscription => Some(Self::root()),
            ScopeLevel::ResourceGroup => Some(Self::build(self.subscription.clone(), None, vec![])),
            ScopeLevel::Resource => {
                let mut providers = self.providers.clone();
                if let Some(last) = providers.last_mut() {
                    if last.types.len() > 1 {
                        last.types.pop();
                    } else {
                        providers.pop();
                    }
                }
                Some(Self::build(
                    self.subscription.clone(),
                    self.resource_group.clone(),
                    providers,
                ))
            }
        }
    }

    /// This id and every scope above it, nearest first, ending with the root.
    pub fn ancestors(&self) -> Ancestors {
        Ancestors {
            next: Some(self.clone()),
        }
    }

    /// Whether `self` is `other` or lies beneath it.
    pub fn is_within(&self, other: &ResourceId) -> bool {
        let (me, them) = (self.key(), other.key());
        if them == "/" {
            return true;
        }
        me == them || (me.starts_with(them) && me.as_bytes().get(them.len()) == Some(&b'/'))
    }
}

/// Iterator over a scope and its parents; see [`ResourceId::ancestors`].
pub struct Ancestors {
    next: Option<ResourceId>,
}

impl Iterator for Ancestors {
    type Item = ResourceId;

    fn next(&mut self) -> Option<ResourceId> {
        let current = self.next.take()?;
        self.next = current.parent();
        Some(current)
    }
}

impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for ResourceId {}

impl Hash for ResourceId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl PartialOrd for ResourceId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ResourceId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceId({})", self.text)
    }
}

impl FromStr for ResourceId {
    type Err = ResourceIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ResourceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1";

    #[test]
    fn parses_every_level() {
        assert_eq!(
            ResourceId::parse("/").map(|i| i.level()),
            Ok(ScopeLevel::Root)
        );
        let sub = ResourceId::parse("/subscriptions/s1").unwrap();
        assert_eq!(sub.level(), ScopeLevel::Subscription);
        assert_eq!(sub.subscription_id(), Some("s1"));
        let rg = ResourceId::parse("/subscriptions/s1/resourcegroups/My-RG").unwrap();
        assert_eq!(rg.as_str(), "/subscriptions/s1/resourceGroups/My-RG");
        assert_eq!(rg.resource_type(), "Microsoft.Resources/resourceGroups");
        let vm = ResourceId::parse(VM).unwrap();
        assert_eq!(vm.resource_type(), "Microsoft.Compute/virtualMachines");
        assert_eq!(vm.name(), "vm1");
        assert_eq!(vm.resource_group_name(), Some("rg1"));
    }

    #[test]
    fn child_and_extension_resources() {
        let secret = ResourceId::parse(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv/secrets/db",
        )
        .unwrap();
        assert_eq!(secret.resource_type(), "Microsoft.KeyVault/vaults/secrets");
        assert_eq!(
            secret.parent().unwrap().as_str(),
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"
        );
        let ra = ResourceId::parse(&format!(
            "{VM}/providers/Microsoft.Authorization/roleAssignments/1b2d"
        ))
        .unwrap();
        assert_eq!(
            ra.resource_type(),
            "Microsoft.Authorization/roleAssignments"
        );
        assert_eq!(ra.parent().unwrap().as_str(), VM);
        let def = ResourceId::parse(
            "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/abc",
        )
        .unwrap();
        assert_eq!(def.parent().unwrap().as_str(), "/subscriptions/s");
        let mg = ResourceId::parse("/providers/Microsoft.Management/managementGroups/mg").unwrap();
        assert_eq!(mg.parent().unwrap(), ResourceId::root());
    }

    #[test]
    fn equality_ignores_case_but_display_keeps_it() {
        let a = ResourceId::parse(VM).unwrap();
        let b = ResourceId::parse(&VM.to_uppercase()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.key(), b.key());
        assert!(b.as_str().contains("/RG1/"));
        assert!(b.as_str().contains("/resourceGroups/"));
    }

    #[test]
    fn ancestors_walk_to_root() {
        let vm = ResourceId::parse(VM).unwrap();
        let all: Vec<String> = vm.ancestors().map(|s| s.to_string()).collect();
        assert_eq!(
            all,
            vec![
                VM.to_string(),
                "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1"
                    .to_string(),
                "/subscriptions/00000000-0000-0000-0000-000000000001".to_string(),
                "/".to_string(),
            ]
        );
        assert!(vm.is_within(
            &ResourceId::parse(
                "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/RG1"
            )
            .unwrap()
        ));
        assert!(!ResourceId::parse("/subscriptions/s/resourceGroups/rg10")
            .unwrap()
            .is_within(&ResourceId::parse("/subscriptions/s/resourceGroups/rg1").unwrap()));
    }

    #[test]
    fn malformed_ids_name_the_bad_segment() {
        assert_eq!(ResourceId::parse(""), Err(ResourceIdError::Empty));
        assert!(matches!(
            ResourceId::parse("subscriptions/s"),
            Err(ResourceIdError::NotAbsolute { .. })
        ));
        assert!(matches!(
            ResourceId::parse("/subscriptions//resourceGroups/rg"),
            Err(ResourceIdError::EmptySegment { position: 2, .. })
        ));
        match ResourceId::parse("/subscriptions/s/resourcegroup/rg") {
            Err(ResourceIdError::UnexpectedSegment {
                segment, position, ..
            }) => {
                assert_eq!(segment, "resourcegroup");
                assert_eq!(position, 3);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            ResourceId::parse("/subscriptions"),
            Err(ResourceIdError::MissingName { position: 1, .. })
        ));
        assert!(matches!(
            ResourceId::parse(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines"
            ),
            Err(ResourceIdError::MissingName { .. })
        ));
        assert!(matches!(
            ResourceId::parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute"),
            Err(ResourceIdError::MissingName { .. })
        ));
        assert!(matches!(
            ResourceId::parse("/subscriptions/s\n/resourceGroups/rg"),
            Err(ResourceIdError::InvalidCharacter { .. })
        ));
    }
}
