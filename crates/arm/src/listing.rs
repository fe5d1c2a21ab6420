//! The generic resource listing, as ARM's `Resources_List` and
//! `Resources_ListByResourceGroup` serve it (`GET /subscriptions/{s}[/resourceGroups/{rg}]/resources`):
//! which stored records it shows, who may see each, its `$filter`, `$expand` and `$top`, and
//! the `GenericResourceExpanded` shape. Pure.
//!
//! - Shown: top-level resources of every type (one provider, one `type/name` pair); not
//!   resource groups, not child resources (federated credentials).
//! - Visible: the caller may perform `{type}/read` at the resource or above (the role
//!   assignments of a Reader on one group show that group's resources, and only those, in the
//!   subscription's list).
//! - `$filter`: clauses joined by `and`: `resourceType`, `name`, `location`, `resourceGroup`
//!   and `identity/principalId` with `eq` or `ne`; `substringof('x', name|resourceGroup)`;
//!   `tagName eq 'k'` (optionally `and tagValue eq 'v'`); `startswith(tagName, 'prefix')`.
//!   Names, types, groups and locations compare case-insensitively, tag values exactly.
//! - `$expand`: `createdTime`, `changedTime`, `provisioningState` (comma-separated).
//! - `$top`: the page size (1 to [`MAX_TOP`]); pages continue with `nextLink`.

use lanyard_domain::{ResourceId, ScopeLevel};
use lanyard_storage::ResourceRecord;
use serde_json::{Map, Value};

use crate::errors::ArmError;
use crate::filter::{self, Arg, Clause};
use crate::kinds::{self, RESOURCE_GROUP_TYPE};
use crate::shape::{arm_time, normalize_location};

/// Page size without `$top`.
pub const DEFAULT_TOP: u32 = 1000;
/// The largest page; a larger `$top` is served in pages of this size.
pub const MAX_TOP: u32 = 1000;

/// Whether the listing shows `record` at all: a top-level resource, not a group.
pub fn shows(record: &ResourceRecord) -> bool {
    let id = &record.id;
    id.level() == ScopeLevel::Resource
        && id.resource_group_name().is_some()
        && matches!(id.providers(), [p] if p.types().len() == 1)
        && !id.is_type(RESOURCE_GROUP_TYPE)
}

/// The resource's type in canonical casing when it is served here, else as stored.
pub fn type_of(record: &ResourceRecord) -> String {
    kinds::of(&record.id).map_or_else(|| record.id.resource_type(), |k| k.full_type())
}

/// Whether the caller may see `record`: `can_read(action, scope)` answers for the caller, and
/// the action is `{type}/read` on the resource itself (assignments above it apply).
pub fn visible(record: &ResourceRecord, can_read: impl Fn(&str, &ResourceId) -> bool) -> bool {
    can_read(&format!("{}/read", type_of(record)), &record.id)
}

/// `$top` as a page size: absent → [`DEFAULT_TOP`]; an integer of at least 1 (at most
/// [`MAX_TOP`] per page); anything else is refused.
pub fn top(raw: Option<&str>) -> Result<u32, ArmError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_TOP);
    };
    match raw.trim().parse::<i64>() {
        Ok(n) if n >= 1 => Ok(u32::try_from(n).unwrap_or(u32::MAX).min(MAX_TOP)),
        _ => Err(ArmError::InvalidTop(raw.to_string())),
    }
}

/// The properties `$expand` adds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expand {
    pub created_time: bool,
    pub changed_time: bool,
    pub provisioning_state: bool,
}

impl Expand {
    /// `createdTime,changedTime,provisioningState` in any order and casing; other values are
    /// ignored, as they name properties this plane does not keep.
    pub fn parse(raw: Option<&str>) -> Self {
        let mut out = Self::default();
        for item in raw.unwrap_or_default().split(',').map(str::trim) {
            if item.eq_ignore_ascii_case("createdTime") {
                out.created_time = true;
            } else if item.eq_ignore_ascii_case("changedTime") {
                out.changed_time = true;
            } else if item.eq_ignore_ascii_case("provisioningState") {
                out.provisioning_state = true;
            }
        }
        out
    }
}

/// A property `eq`/`ne` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Property {
    ResourceType,
    Name,
    Location,
    ResourceGroup,
    PrincipalId,
}

/// One condition of a filter; a resource is listed when it meets all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    Compare {
        property: Property,
        value: String,
        equal: bool,
    },
    /// `substringof('text', name|resourceGroup)`, case-insensitive.
    Substring { property: Property, text: String },
    /// A tag named this (case-insensitively), with this exact value when given.
    Tag { name: String, value: Option<String> },
    /// A tag whose name starts with this (case-insensitively).
    TagPrefix(String),
}

/// A parsed `$filter` of the generic listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceFilter {
    conditions: Vec<Condition>,
}

impl ResourceFilter {
    /// Reads `raw`; anything outside the supported subset is `InvalidFilterInQueryString`.
    pub fn parse(raw: &str) -> Result<Self, ArmError> {
        let bad = || ArmError::UnsupportedFilter(raw.to_string());
        let mut conditions = Vec::new();
        let mut tag_name: Option<String> = None;
        let mut tag_value: Option<String> = None;
        for clause in filter::parse(raw).map_err(|_| bad())? {
            match clause {
                Clause::Compare { field, op, value } => {
                    let equal = match op.as_str() {
                        "eq" => true,
                        "ne" => false,
                        _ => return Err(bad()),
                    };
                    let property = match field.as_str() {
                        "resourcetype" => Property::ResourceType,
                        "name" => Property::Name,
                        "location" => Property::Location,
                        "resourcegroup" => Property::ResourceGroup,
                        "identity/principalid" => Property::PrincipalId,
                        "tagname" if equal && tag_name.is_none() => {
                            tag_name = Some(value);
                            continue;
                        }
                        "tagvalue" if equal && tag_value.is_none() => {
                            tag_value = Some(value);
                            continue;
                        }
                        _ => return Err(bad()),
                    };
                    conditions.push(Condition::Compare {
                        property,
                        value,
                        equal,
                    });
                }
                Clause::Call { name, args } => match (name.as_str(), args.as_slice()) {
                    ("substringof", [Arg::Text(text), Arg::Field(field)]) => {
                        let property = if field.eq_ignore_ascii_case("name") {
                            Property::Name
                        } else if field.eq_ignore_ascii_case("resourceGroup") {
                            Property::ResourceGroup
                        } else {
                            return Err(bad());
                        };
                        conditions.push(Condition::Substring {
                            property,
                            text: text.clone(),
                        });
                    }
                    ("startswith", [Arg::Field(field), Arg::Text(prefix)])
                        if field.eq_ignore_ascii_case("tagName") =>
                    {
                        conditions.push(Condition::TagPrefix(prefix.clone()));
                    }
                    _ => return Err(bad()),
                },
            }
        }
        match (tag_name, tag_value) {
            (Some(name), value) => conditions.push(Condition::Tag { name, value }),
            // A tag value means nothing without the tag's name.
            (None, Some(_)) => return Err(bad()),
            (None, None) => {}
        }
        Ok(Self { conditions })
    }

    /// The one type `resourceType eq` asks for, for the store to narrow by.
    pub fn resource_type(&self) -> Option<&str> {
        self.conditions.iter().find_map(|c| match c {
            Condition::Compare {
                property: Property::ResourceType,
                value,
                equal: true,
            } => Some(value.as_str()),
            _ => None,
        })
    }

    /// Whether `record` meets every condition.
    pub fn matches(&self, record: &ResourceRecord) -> bool {
        self.conditions.iter().all(|c| meets(c, record))
    }
}

fn property(record: &ResourceRecord, property: Property) -> Vec<String> {
    let body = &record.body;
    match property {
        Property::ResourceType => vec![type_of(record)],
        Property::Name => vec![record.id.name().to_string()],
        Property::ResourceGroup => record
            .id
            .resource_group_name()
            .map(str::to_string)
            .into_iter()
            .collect(),
        Property::Location => body["location"]
            .as_str()
            .map(normalize_location)
            .into_iter()
            .collect(),
        Property::PrincipalId => body["identity"]["principalId"]
            .as_str()
            .map(str::to_string)
            .into_iter()
            .collect(),
    }
}

fn meets(condition: &Condition, record: &ResourceRecord) -> bool {
    match condition {
        Condition::Compare {
            property: p,
            value,
            equal,
        } => {
            let wanted = if *p == Property::Location {
                normalize_location(value)
            } else {
                value.clone()
            };
            let found = property(record, *p)
                .iter()
                .any(|v| v.eq_ignore_ascii_case(&wanted));
            found == *equal
        }
        Condition::Substring { property: p, text } => {
            let text = text.to_lowercase();
            property(record, *p)
                .iter()
                .any(|v| v.to_lowercase().contains(&text))
        }
        Condition::Tag { name, value } => tags(record).any(|(k, v)| {
            k.eq_ignore_ascii_case(name) && value.as_deref().is_none_or(|want| v == Some(want))
        }),
        Condition::TagPrefix(prefix) => {
            let prefix = prefix.to_lowercase();
            tags(record).any(|(k, _)| k.to_lowercase().starts_with(&prefix))
        }
    }
}

fn tags(record: &ResourceRecord) -> impl Iterator<Item = (&String, Option<&str>)> {
    record.body["tags"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k, v.as_str()))
}

/// `record` as `GenericResourceExpanded`: `id`, `name`, `type`, `location`, and `tags`,
/// `identity`, `kind`, `sku`, `plan`, `managedBy`, `extendedLocation` where the resource has
/// them (an identity of type `None` is no identity); `properties` are not listed.
pub fn generic(record: &ResourceRecord, expand: Expand) -> Value {
    let body = &record.body;
    let mut out = Map::new();
    out.insert(
        "id".into(),
        Value::String(
            body["id"]
                .as_str()
                .map_or_else(|| record.id.to_string(), str::to_string),
        ),
    );
    out.insert(
        "name".into(),
        Value::String(
            body["name"]
                .as_str()
                .map_or_else(|| record.id.name().to_string(), str::to_string),
        ),
    );
    out.insert(
        "type".into(),
        Value::String(
            body["type"]
                .as_str()
                .map_or_else(|| type_of(record), str::to_string),
        ),
    );
    for key in [
        "location",
        "tags",
        "kind",
        "sku",
        "plan",
        "managedBy",
        "extendedLocation",
    ] {
        if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(identity) = body.get("identity").filter(|i| {
        i.is_object()
            && !i["type"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case("None"))
    }) {
        out.insert("identity".into(), identity.clone());
    }
    if expand.created_time {
        out.insert(
            "createdTime".into(),
            Value::String(arm_time(record.created_at)),
        );
    }
    if expand.changed_time {
        out.insert(
            "changedTime".into(),
            Value::String(arm_time(record.updated_at)),
        );
    }
    if expand.provisioning_state {
        let state = body["properties"]["provisioningState"]
            .as_str()
            .unwrap_or("Succeeded");
        out.insert("provisioningState".into(), Value::String(state.to_string()));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanyard_authz::{AccessIndex, AccessRequest};
    use lanyard_domain::{builtin, PrincipalType, RoleAssignment};
    use serde_json::json;
    use time::OffsetDateTime;
    use uuid::Uuid;

    const SUB: &str = "/subscriptions/00000000-0000-0000-0000-000000000001";
    const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";

    fn record(id: &str, body: Value) -> ResourceRecord {
        let id = ResourceId::parse(id).unwrap();
        let mut body = body;
        body["id"] = json!(id.as_str());
        body["name"] = json!(id.name());
        body["type"] = json!(id.resource_type());
        ResourceRecord {
            resource_type: id.resource_type(),
            id,
            body,
            created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            updated_at: OffsetDateTime::from_unix_timestamp(1_700_000_100).unwrap(),
        }
    }

    fn vm(group: &str, name: &str, tags: Value) -> ResourceRecord {
        record(
            &format!(
                "{SUB}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/{name}"
            ),
            json!({"location": "westus", "tags": tags, "identity": {"type": "SystemAssigned", "principalId": "p-1"},
                   "properties": {"provisioningState": "Succeeded"}}),
        )
    }

    fn uai(group: &str, name: &str) -> ResourceRecord {
        record(
            &format!("{SUB}/resourceGroups/{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"),
            json!({"location": "West Europe", "tags": {}, "properties": {"principalId": "p-2"}}),
        )
    }

    fn names(filter: &str, records: &[ResourceRecord]) -> Vec<String> {
        let f = ResourceFilter::parse(filter).unwrap();
        records
            .iter()
            .filter(|r| f.matches(r))
            .map(|r| r.id.name().to_string())
            .collect()
    }

    #[test]
    fn only_top_level_resources_are_shown() {
        let group = record(
            &format!("{SUB}/resourceGroups/rg1"),
            json!({"location": "westus"}),
        );
        let fic = record(
            &format!("{SUB}/resourceGroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u1/federatedIdentityCredentials/f1"),
            json!({}),
        );
        assert!(!shows(&group));
        assert!(!shows(&fic));
        assert!(shows(&uai("rg1", "u1")));
        assert!(shows(&vm("rg1", "vm1", json!({}))));
    }

    #[test]
    fn filters_as_arm_reads_them() {
        let all = [
            vm("rg1", "web-vm", json!({"env": "prod", "department": "x"})),
            vm("RG2", "batch-vm", json!({"env": "dev"})),
            uai("rg1", "shared-id"),
        ];
        assert_eq!(
            names("resourceType eq 'microsoft.compute/VIRTUALMACHINES'", &all),
            ["web-vm", "batch-vm"]
        );
        assert_eq!(
            names("resourceType ne 'Microsoft.Compute/virtualMachines'", &all),
            ["shared-id"]
        );
        assert_eq!(names("name eq 'WEB-VM'", &all), ["web-vm"]);
        assert_eq!(
            names("substringof('vm', name)", &all),
            ["web-vm", "batch-vm"]
        );
        assert_eq!(
            names("substringof('VM', name) and resourceGroup eq 'rg2'", &all),
            ["batch-vm"]
        );
        assert_eq!(names("substringof('rg', resourceGroup)", &all).len(), 3);
        assert_eq!(names("location eq 'westeurope'", &all), ["shared-id"]);
        assert_eq!(names("location eq 'West US'", &all), ["web-vm", "batch-vm"]);
        assert_eq!(
            names("tagName eq 'ENV' and tagValue eq 'prod'", &all),
            ["web-vm"]
        );
        assert!(names("tagName eq 'env' and tagValue eq 'PROD'", &all).is_empty());
        assert_eq!(names("tagName eq 'env'", &all), ["web-vm", "batch-vm"]);
        assert_eq!(names("startswith(tagName, 'dep')", &all), ["web-vm"]);
        assert_eq!(
            names(
                "resourceType eq 'Microsoft.Compute/virtualMachines' and tagName eq 'env' and tagValue eq 'dev' and substringof('batch', name)",
                &all
            ),
            ["batch-vm"]
        );
        assert_eq!(names("identity/principalId eq 'p-1'", &all).len(), 2);
        assert!(names("", &all).len() == 3);
        let f =
            ResourceFilter::parse("name eq 'x' and resourceType eq 'Microsoft.Web/sites'").unwrap();
        assert_eq!(f.resource_type(), Some("Microsoft.Web/sites"));
    }

    #[test]
    fn filters_outside_the_subset_are_refused() {
        for bad in [
            "name gt 'a'",
            "foo eq 'a'",
            "tagValue eq 'v'",
            "tagName eq 'a' and tagName eq 'b'",
            "substringof(name, 'x')",
            "substringof('x', location)",
            "startswith(name, 'x')",
            "name eq 'a' or name eq 'b'",
            "name eq",
            "atScope()",
        ] {
            let e = ResourceFilter::parse(bad).unwrap_err();
            assert_eq!(e.code(), "InvalidFilterInQueryString", "{bad}");
        }
    }

    #[test]
    fn top_and_expand() {
        assert_eq!(top(None).unwrap(), DEFAULT_TOP);
        assert_eq!(top(Some("5")).unwrap(), 5);
        assert_eq!(top(Some("100000")).unwrap(), MAX_TOP);
        for bad in ["0", "-1", "abc", "", "1.5"] {
            let e = top(Some(bad)).unwrap_err();
            assert_eq!(e.status().as_u16(), 400, "{bad}");
        }
        let e = Expand::parse(Some("createdTime, provisioningstate,unknown"));
        assert!(e.created_time && e.provisioning_state && !e.changed_time);
        let v = generic(&vm("rg1", "vm1", json!({"a": "b"})), e);
        assert_eq!(v["createdTime"], "2023-11-14T22:13:20.0000000Z");
        assert_eq!(v["provisioningState"], "Succeeded");
        assert!(v.get("changedTime").is_none());
    }

    #[test]
    fn the_generic_shape() {
        let mut account = record(
            &format!("{SUB}/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/acct1"),
            json!({"location": "westus", "kind": "StorageV2", "sku": {"name": "Standard_LRS"},
                   "identity": {"type": "None"}, "properties": {"primaryEndpoints": {}}}),
        );
        account.body["type"] = json!("Microsoft.Storage/storageAccounts");
        let v = generic(&account, Expand::default());
        assert_eq!(
            v,
            json!({
                "id": account.id.as_str(),
                "name": "acct1",
                "type": "Microsoft.Storage/storageAccounts",
                "location": "westus",
                "kind": "StorageV2",
                "sku": {"name": "Standard_LRS"},
            })
        );
        let v = generic(&vm("rg1", "vm1", json!({"k": "v"})), Expand::default());
        assert_eq!(v["identity"]["principalId"], "p-1");
        assert_eq!(v["tags"], json!({"k": "v"}));
        assert!(v.get("properties").is_none());
    }

    /// A Reader on one group sees that group's resources and nothing else; a Reader on one
    /// resource sees that resource; a role reading only VMs sees only VMs.
    #[test]
    fn authorization_filters_the_listing() {
        let reader = Uuid::parse_str(READER).unwrap();
        let mut roles = builtin::built_in_roles();
        let vm_reader = {
            let mut r = roles.iter().find(|r| r.id == reader).cloned().unwrap();
            r.id = Uuid::new_v4();
            r.role_name = "VM reader".into();
            r.permissions[0].actions = vec!["Microsoft.Compute/virtualMachines/read".into()];
            r
        };
        roles.push(vm_reader.clone());
        let mut index = AccessIndex::with_roles(&roles);
        let (group_reader, resource_reader, vm_only, nobody) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        let all = [
            vm("rg1", "vm1", json!({})),
            uai("rg1", "id1"),
            vm("rg2", "vm2", json!({})),
            uai("rg2", "id2"),
        ];
        let assign = |index: &mut AccessIndex, principal, role, scope: &str| {
            let now = OffsetDateTime::now_utc();
            index.add_assignment(&RoleAssignment {
                id: Uuid::new_v4(),
                scope: ResourceId::parse(scope).unwrap(),
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
            });
        };
        assign(
            &mut index,
            group_reader,
            reader,
            &format!("{SUB}/resourceGroups/rg1"),
        );
        assign(&mut index, resource_reader, reader, all[3].id.as_str());
        assign(&mut index, vm_only, vm_reader.id, SUB);
        let seen = |principal: Uuid| -> Vec<String> {
            all.iter()
                .filter(|r| {
                    visible(r, |action, scope| {
                        index.allows(&AccessRequest::control(principal, action, scope))
                    })
                })
                .map(|r| r.id.name().to_string())
                .collect()
        };
        assert_eq!(seen(group_reader), ["vm1", "id1"]);
        assert_eq!(seen(resource_reader), ["id2"]);
        assert_eq!(seen(vm_only), ["vm1", "vm2"]);
        assert!(seen(nobody).is_empty());
    }
}
