//! Which ARM endpoint a path names. Pure: no I/O, no HTTP types.
//!
//! ARM paths are case-insensitive (`az` sends `resourcegroups`) and extension resources hang
//! off any scope (`{scope}/providers/Microsoft.Authorization/roleAssignments/{guid}`), so the
//! control plane parses paths itself instead of declaring axum routes. The last `providers`
//! segment decides: what precedes it is a scope, what follows it is a namespace and a run of
//! `type/name` pairs (an odd run ends with a collection).

use lanyard_domain::{ResourceId, ResourceIdError, ScopeLevel};

/// An endpoint of the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /metadata/endpoints`.
    Metadata,
    /// `GET /tenants`.
    Tenants,
    /// `GET /subscriptions`.
    Subscriptions,
    /// `/subscriptions/{s}`.
    Subscription(String),
    /// `/subscriptions/{s}/resourcegroups`.
    Groups(String),
    /// `/subscriptions/{s}/resourcegroups/{rg}`.
    Group(ResourceId),
    /// A collection of resources of one type: `{subscription or group}/providers/{ns}/{type}`
    /// (top-level resources) or `{resource}/{childType}` (children, or a POST action).
    Collection {
        /// The subscription or group for top-level types; the parent resource for children.
        scope: ResourceId,
        namespace: String,
        /// The type path as written, e.g. `["userAssignedIdentities", "federatedIdentityCredentials"]`.
        types: Vec<String>,
    },
    /// A resource or child resource in a resource group.
    Resource(ResourceId),
    /// `{scope}/providers/Microsoft.Authorization/roleAssignments`.
    RoleAssignments(ResourceId),
    /// `{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`.
    RoleAssignment { scope: ResourceId, name: String },
    /// `{scope}/providers/Microsoft.Authorization/roleDefinitions`.
    RoleDefinitions(ResourceId),
    /// `{scope}/providers/Microsoft.Authorization/roleDefinitions/{name}`.
    RoleDefinition { scope: ResourceId, name: String },
    /// `{scope}/providers/Microsoft.ManagedIdentity/identities/default`.
    SystemIdentity(ResourceId),
    /// `/subscriptions/{s}/providers/Microsoft.Insights/eventtypes/management/values`.
    ActivityLog(ResourceId),
    /// `/subscriptions/{s}[/resourceGroups/{rg}]/resources`: every top-level resource of a
    /// subscription or a group, whatever its type.
    GenericResources(ResourceId),
    /// `/subscriptions/{s}/providers/Microsoft.KeyVault/deletedVaults`.
    DeletedVaults(String),
    /// `/subscriptions/{s}/providers/Microsoft.KeyVault/locations/{loc}/deletedVaults/{name}`,
    /// and with `purge` its `/purge` action.
    DeletedVault {
        subscription: String,
        location: String,
        name: String,
        purge: bool,
    },
}

/// Why a path names no endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Nothing lives at this path.
    #[error("no endpoint at `{0}`")]
    NotFound(String),
    /// A scope that is not a resource id.
    #[error(transparent)]
    BadScope(#[from] ResourceIdError),
    /// A provider namespace and type this plane does not serve, under a scope where only
    /// extension resources of known providers may hang.
    #[error("no resource type `{namespace}/{}` here", types.join("/"))]
    UnknownType {
        namespace: String,
        types: Vec<String>,
    },
    /// A segment that is not valid percent-encoding or UTF-8.
    #[error("path segment `{0}` is not valid percent-encoded UTF-8")]
    BadEncoding(String),
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Parses the path of a request (without query). Segments are percent-decoded.
pub fn parse(path: &str) -> Result<Route, RouteError> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Err(RouteError::NotFound(path.to_string()));
    }
    let mut segments = Vec::new();
    for raw in trimmed.split('/') {
        if raw.is_empty() {
            return Err(RouteError::NotFound(path.to_string()));
        }
        let decoded =
            urlencoding::decode(raw).map_err(|_| RouteError::BadEncoding(raw.to_string()))?;
        // An encoded `/` would make a name that reads as two segments once formatted.
        if decoded.contains('/') {
            return Err(RouteError::BadEncoding(raw.to_string()));
        }
        segments.push(decoded.into_owned());
    }
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let not_found = || RouteError::NotFound(path.to_string());

    let Some(p) = segs.iter().rposition(|s| eq(s, "providers")) else {
        return match segs.as_slice() {
            [m, e] if eq(m, "metadata") && eq(e, "endpoints") => Ok(Route::Metadata),
            [t] if eq(t, "tenants") => Ok(Route::Tenants),
            [s] if eq(s, "subscriptions") => Ok(Route::Subscriptions),
            [s, id] if eq(s, "subscriptions") => Ok(Route::Subscription((*id).to_string())),
            [s, id, g] if eq(s, "subscriptions") && eq(g, "resourceGroups") => {
                Ok(Route::Groups((*id).to_string()))
            }
            [s, id, g, name] if eq(s, "subscriptions") && eq(g, "resourceGroups") => {
                Ok(Route::Group(ResourceId::resource_group(id, name)))
            }
            [s, id, r] if eq(s, "subscriptions") && eq(r, "resources") => {
                Ok(Route::GenericResources(ResourceId::subscription(id)))
            }
            [s, id, g, name, r]
                if eq(s, "subscriptions") && eq(g, "resourceGroups") && eq(r, "resources") =>
            {
                Ok(Route::GenericResources(ResourceId::resource_group(
                    id, name,
                )))
            }
            _ => Err(not_found()),
        };
    };
    let scope = scope_of(&segs[..p])?;
    let Some(namespace) = segs.get(p + 1) else {
        return Err(not_found());
    };
    let rest = &segs[p + 2..];
    if eq(namespace, "Microsoft.Authorization") {
        return match rest {
            [t] if eq(t, "roleAssignments") => Ok(Route::RoleAssignments(scope)),
            [t, n] if eq(t, "roleAssignments") => Ok(Route::RoleAssignment {
                scope,
                name: (*n).to_string(),
            }),
            [t] if eq(t, "roleDefinitions") => Ok(Route::RoleDefinitions(scope)),
            [t, n] if eq(t, "roleDefinitions") => Ok(Route::RoleDefinition {
                scope,
                name: (*n).to_string(),
            }),
            _ => Err(unknown(namespace, rest)),
        };
    }
    if eq(namespace, "Microsoft.ManagedIdentity") {
        if let [t, n] = rest {
            if eq(t, "identities") && eq(n, "default") {
                return Ok(Route::SystemIdentity(scope));
            }
        }
    }
    if eq(namespace, "Microsoft.Insights") {
        if let [e, m, v] = rest {
            if eq(e, "eventtypes") && eq(m, "management") && eq(v, "values") {
                return match scope.level() {
                    ScopeLevel::Subscription => Ok(Route::ActivityLog(scope)),
                    _ => Err(not_found()),
                };
            }
        }
    }
    if rest.is_empty() {
        return Err(not_found());
    }
    if eq(namespace, "Microsoft.KeyVault") && scope.level() == ScopeLevel::Subscription {
        let subscription = scope.subscription_id().unwrap_or_default().to_string();
        let deleted = |location: &str, name: &str, purge: bool| Route::DeletedVault {
            subscription: subscription.clone(),
            location: (*location).to_string(),
            name: (*name).to_string(),
            purge,
        };
        match rest {
            [t] if eq(t, "deletedVaults") => return Ok(Route::DeletedVaults(subscription)),
            [l, loc, d, name] if eq(l, "locations") && eq(d, "deletedVaults") => {
                return Ok(deleted(loc, name, false))
            }
            [l, loc, d, name, p]
                if eq(l, "locations") && eq(d, "deletedVaults") && eq(p, "purge") =>
            {
                return Ok(deleted(loc, name, true))
            }
            _ => {}
        }
    }
    match scope.level() {
        ScopeLevel::Subscription => match rest {
            [t] => Ok(Route::Collection {
                scope,
                namespace: (*namespace).to_string(),
                types: vec![(*t).to_string()],
            }),
            _ => Err(unknown(namespace, rest)),
        },
        ScopeLevel::ResourceGroup => {
            if rest.len() == 1 {
                return Ok(Route::Collection {
                    scope,
                    namespace: (*namespace).to_string(),
                    types: vec![rest[0].to_string()],
                });
            }
            let pairs = rest.len() / 2;
            let mut id = scope.with_provider(namespace, rest[0], rest[1]);
            let mut types = vec![rest[0].to_string()];
            for i in 1..pairs {
                id = id.with_child(rest[2 * i], rest[2 * i + 1]);
                types.push(rest[2 * i].to_string());
            }
            if pairs * 2 == rest.len() {
                Ok(Route::Resource(id))
            } else {
                types.push(rest[rest.len() - 1].to_string());
                Ok(Route::Collection {
                    scope: id,
                    namespace: (*namespace).to_string(),
                    types,
                })
            }
        }
        // Extension resources of other providers on resources, and anything at the root.
        _ => Err(unknown(namespace, rest)),
    }
}

fn unknown(namespace: &str, rest: &[&str]) -> RouteError {
    RouteError::UnknownType {
        namespace: namespace.to_string(),
        types: rest.iter().step_by(2).map(|s| (*s).to_string()).collect(),
    }
}

fn scope_of(segs: &[&str]) -> Result<ResourceId, RouteError> {
    let text = format!("/{}", segs.join("/"));
    Ok(ResourceId::parse(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RG: &str = "/subscriptions/s1/resourceGroups/rg1";

    fn id(s: &str) -> ResourceId {
        ResourceId::parse(s).unwrap()
    }

    #[test]
    fn deleted_vault_paths() {
        let base = "/subscriptions/s1/providers/microsoft.keyvault";
        assert_eq!(
            parse(&format!("{base}/deletedvaults")),
            Ok(Route::DeletedVaults("s1".into()))
        );
        let one = |purge| Route::DeletedVault {
            subscription: "s1".into(),
            location: "westus".into(),
            name: "kv1".into(),
            purge,
        };
        assert_eq!(
            parse(&format!("{base}/locations/westus/deletedVaults/kv1")),
            Ok(one(false))
        );
        assert_eq!(
            parse(&format!("{base}/Locations/westus/deletedVaults/kv1/Purge")),
            Ok(one(true))
        );
        assert!(parse(&format!("{base}/locations/westus/deletedVaults/kv1/other")).is_err());
        // Vaults are still a collection at subscription scope.
        assert!(matches!(
            parse(&format!("{base}/vaults")),
            Ok(Route::Collection { .. })
        ));
    }

    #[test]
    fn fixed_paths_in_any_casing() {
        assert_eq!(parse("/metadata/endpoints"), Ok(Route::Metadata));
        assert_eq!(parse("/TENANTS"), Ok(Route::Tenants));
        assert_eq!(parse("/subscriptions/"), Ok(Route::Subscriptions));
        assert_eq!(
            parse("/Subscriptions/s1"),
            Ok(Route::Subscription("s1".into()))
        );
        assert_eq!(
            parse("/subscriptions/s1/resourcegroups"),
            Ok(Route::Groups("s1".into()))
        );
        let group = parse("/subscriptions/s1/resourcegroups/My.RG(1)").unwrap();
        assert_eq!(
            group,
            Route::Group(id("/subscriptions/s1/resourceGroups/My.RG(1)"))
        );
        if let Route::Group(g) = group {
            assert_eq!(g.as_str(), "/subscriptions/s1/resourceGroups/My.RG(1)");
        }
        assert!(matches!(parse("/"), Err(RouteError::NotFound(_))));
        assert!(matches!(parse("/foo/bar"), Err(RouteError::NotFound(_))));
        assert!(matches!(
            parse("/subscriptions//resourceGroups"),
            Err(RouteError::NotFound(_))
        ));
    }

    #[test]
    fn resources_children_and_collections() {
        assert_eq!(
            parse(&format!(
                "{RG}/providers/Microsoft.Compute/virtualMachines/vm1"
            )),
            Ok(Route::Resource(id(&format!(
                "{RG}/providers/Microsoft.Compute/virtualMachines/vm1"
            ))))
        );
        assert_eq!(
            parse(&format!("{RG}/providers/Microsoft.Compute/virtualMachines")),
            Ok(Route::Collection {
                scope: id(RG),
                namespace: "Microsoft.Compute".into(),
                types: vec!["virtualMachines".into()]
            })
        );
        assert_eq!(
            parse("/subscriptions/s1/providers/Microsoft.ManagedIdentity/userAssignedIdentities"),
            Ok(Route::Collection {
                scope: id("/subscriptions/s1"),
                namespace: "Microsoft.ManagedIdentity".into(),
                types: vec!["userAssignedIdentities".into()]
            })
        );
        let uai = format!("{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u1");
        assert_eq!(
            parse(&format!("{uai}/federatedIdentityCredentials")),
            Ok(Route::Collection {
                scope: id(&uai),
                namespace: "Microsoft.ManagedIdentity".into(),
                types: vec![
                    "userAssignedIdentities".into(),
                    "federatedIdentityCredentials".into()
                ]
            })
        );
        let fic = parse(&format!("{uai}/federatedIdentityCredentials/f1")).unwrap();
        match fic {
            Route::Resource(r) => assert_eq!(
                r.resource_type(),
                "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn extension_resources_at_any_scope() {
        let vm = format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1");
        assert_eq!(
            parse(&format!(
                "{vm}/providers/Microsoft.Authorization/roleAssignments/abc"
            )),
            Ok(Route::RoleAssignment {
                scope: id(&vm),
                name: "abc".into()
            })
        );
        assert_eq!(
            parse("/providers/Microsoft.Authorization/roleDefinitions"),
            Ok(Route::RoleDefinitions(ResourceId::root()))
        );
        assert_eq!(
            parse("/subscriptions/s1/providers/microsoft.authorization/ROLEASSIGNMENTS"),
            Ok(Route::RoleAssignments(id("/subscriptions/s1")))
        );
        assert_eq!(
            parse(&format!(
                "{vm}/providers/Microsoft.ManagedIdentity/identities/default"
            )),
            Ok(Route::SystemIdentity(id(&vm)))
        );
        assert_eq!(
            parse("/subscriptions/s1/providers/Microsoft.Insights/eventtypes/management/values"),
            Ok(Route::ActivityLog(id("/subscriptions/s1")))
        );
        assert!(matches!(
            parse(&format!("{vm}/providers/Microsoft.Foo/bars/x")),
            Err(RouteError::UnknownType { .. })
        ));
        assert!(matches!(
            parse("/subscriptions/s1/providers/Microsoft.Authorization/denyAssignments"),
            Err(RouteError::UnknownType { .. })
        ));
    }

    #[test]
    fn generic_resource_lists() {
        assert_eq!(
            parse("/subscriptions/s1/resources"),
            Ok(Route::GenericResources(id("/subscriptions/s1")))
        );
        assert_eq!(
            parse("/subscriptions/s1/resourcegroups/rg1/Resources/"),
            Ok(Route::GenericResources(id(RG)))
        );
        // A group may be named `resources`.
        assert_eq!(
            parse("/subscriptions/s1/resourceGroups/resources"),
            Ok(Route::Group(id(
                "/subscriptions/s1/resourceGroups/resources"
            )))
        );
        assert!(matches!(
            parse("/subscriptions/s1/resourceGroups/rg1/resources/x"),
            Err(RouteError::NotFound(_))
        ));
    }

    #[test]
    fn segments_are_percent_decoded() {
        assert_eq!(
            parse("/subscriptions/s1/resourceGroups/rg%281%29"),
            Ok(Route::Group(id("/subscriptions/s1/resourceGroups/rg(1)")))
        );
    }
}
