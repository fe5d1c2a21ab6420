"""azure-mgmt-resource: create, read, update, list and delete resource groups."""

from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.resource.resources.models import ResourceGroup, ResourceGroupPatchable

from common import base_url, credential, error_code, expect, report, subscription

client = ResourceManagementClient(credential(), subscription(), base_url=base_url())

created = client.resource_groups.create_or_update(
    "py-rg-1", ResourceGroup(location="West Europe", tags={"team": "identity"})
)
expect(created.name == "py-rg-1", created)
expect(created.location == "westeurope", created.location)
expect(created.properties.provisioning_state == "Succeeded", created)
expect(created.tags == {"team": "identity"}, created.tags)
again = client.resource_groups.create_or_update("py-rg-1", ResourceGroup(location="westeurope"))
expect(again.id == created.id, again)
client.resource_groups.create_or_update("py-rg-2", ResourceGroup(location="westus"))

expect(client.resource_groups.check_existence("py-rg-1"), "py-rg-1 should exist")
expect(not client.resource_groups.check_existence("py-rg-none"), "py-rg-none should not exist")
got = client.resource_groups.get("PY-RG-1")
expect(got.id == created.id, got)
patched = client.resource_groups.update("py-rg-1", ResourceGroupPatchable(tags={"env": "test"}))
expect(patched.tags == {"env": "test"}, patched.tags)

names = sorted(g.name for g in client.resource_groups.list())
expect("py-rg-1" in names and "py-rg-2" in names, names)

client.resource_groups.begin_delete("py-rg-1").result()
expect(not client.resource_groups.check_existence("py-rg-1"), "py-rg-1 should be gone")
try:
    client.resource_groups.get("py-rg-1")
    raise AssertionError("get after delete should fail")
except ResourceNotFoundError as e:
    code = error_code(e)
expect(code == "ResourceGroupNotFound", code)

after = sorted(g.name for g in client.resource_groups.list())
report({"listed": names, "after_delete": after, "missing_code": code})
