"""azure-mgmt-authorization: built-in roles by name; role assignments created, listed, read
and deleted."""

import uuid

from azure.core.exceptions import HttpResponseError
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.resource.resources.models import ResourceGroup

from common import base_url, credential, error_code, expect, report, subscription

cred = credential()
resources = ResourceManagementClient(cred, subscription(), base_url=base_url())
group = resources.resource_groups.create_or_update("py-authz", ResourceGroup(location="westus"))
msi = ManagedServiceIdentityClient(cred, subscription(), base_url=base_url())
uai = msi.user_assigned_identities.create_or_update(
    "py-authz", "py-authz-id", msi.models().Identity(location="westus")
)
auth = AuthorizationManagementClient(cred, subscription(), base_url=base_url())
models = auth.models("2022-04-01")
scope = group.id

secrets_user = list(auth.role_definitions.list(scope, filter="roleName eq 'Key Vault Secrets User'"))
expect(len(secrets_user) == 1, secrets_user)
role = secrets_user[0]
expect(role.name == "4633458b-17de-408a-b874-0445c86b69e6", role.name)
expect(role.role_type == "BuiltInRole", role.role_type)
reader = list(auth.role_definitions.list(scope, filter="roleName eq 'reader'"))
expect([r.role_name for r in reader] == ["Reader"], reader)
builtins = list(auth.role_definitions.list(scope, filter="type eq 'BuiltInRole'"))
expect(len(builtins) >= 10, len(builtins))
by_id = auth.role_definitions.get(scope, role.name)
expect(by_id.role_name == "Key Vault Secrets User", by_id)

name = str(uuid.uuid4())
created = auth.role_assignments.create(
    scope,
    name,
    models.RoleAssignmentCreateParameters(
        role_definition_id=role.id, principal_id=uai.principal_id, principal_type="ServicePrincipal",
    ),
)
expect(created.name == name, created)
expect(created.scope.lower() == scope.lower(), created.scope)
expect(created.principal_id == uai.principal_id, created)
expect(created.role_definition_id.lower().endswith(role.name), created.role_definition_id)

for_principal = list(auth.role_assignments.list_for_scope(scope, filter=f"principalId eq '{uai.principal_id}'"))
expect([a.name for a in for_principal] == [name], for_principal)
at_scope = [a.name for a in auth.role_assignments.list_for_scope(scope, filter="atScope()")]
expect(name in at_scope, at_scope)
in_sub = [a.name for a in auth.role_assignments.list_for_subscription()]
expect(name in in_sub, in_sub)
got = auth.role_assignments.get(scope, name)
expect(got.id == created.id, got)
got_by_id = auth.role_assignments.get_by_id(created.id)
expect(got_by_id.name == name, got_by_id)

try:
    auth.role_assignments.create(
        scope,
        str(uuid.uuid4()),
        models.RoleAssignmentCreateParameters(
            role_definition_id=role.id, principal_id=uai.principal_id, principal_type="ServicePrincipal",
        ),
    )
    raise AssertionError("a duplicate assignment should be refused")
except HttpResponseError as e:
    duplicate = (e.status_code, error_code(e))
expect(duplicate == (409, "RoleAssignmentExists"), duplicate)

# The SDK's default principal_type is "User"; like Azure, a mismatch is refused.
try:
    auth.role_assignments.create(
        scope,
        str(uuid.uuid4()),
        models.RoleAssignmentCreateParameters(role_definition_id=role.id, principal_id=uai.principal_id),
    )
    raise AssertionError("a principal type mismatch should be refused")
except HttpResponseError as e:
    mismatch = (e.status_code, error_code(e))
expect(mismatch == (400, "UnmatchedPrincipalType"), mismatch)

try:
    auth.role_assignments.create(
        scope,
        str(uuid.uuid4()),
        models.RoleAssignmentCreateParameters(role_definition_id=role.id, principal_id=str(uuid.uuid4())),
    )
    raise AssertionError("an unknown principal should be refused")
except HttpResponseError as e:
    unknown = (e.status_code, error_code(e))
expect(unknown == (400, "PrincipalNotFound"), unknown)

deleted = auth.role_assignments.delete(scope, name)
expect(deleted is not None and deleted.name == name, deleted)
after = list(auth.role_assignments.list_for_scope(scope, filter=f"principalId eq '{uai.principal_id}'"))
expect(after == [], after)

report({"assignment": created.id, "duplicate": list(duplicate), "mismatch": list(mismatch), "unknown": list(unknown)})
