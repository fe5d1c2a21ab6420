"""azure-mgmt-compute: a virtual machine with a system-assigned identity, then a
user-assigned identity attached (PATCH) and detached (PATCH with null)."""

from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import (
    UserAssignedIdentitiesValue,
    VirtualMachine,
    VirtualMachineIdentity,
    VirtualMachineUpdate,
)
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.resource.resources.models import ResourceGroup

from common import base_url, credential, env, error_code, expect, report, subscription

cred = credential()
resources = ResourceManagementClient(cred, subscription(), base_url=base_url())
resources.resource_groups.create_or_update("py-compute", ResourceGroup(location="westus"))
msi = ManagedServiceIdentityClient(cred, subscription(), base_url=base_url())
uai = msi.user_assigned_identities.create_or_update(
    "py-compute", "py-vm-id", msi.models().Identity(location="westus")
)
compute = ComputeManagementClient(cred, subscription(), base_url=base_url())

vm = compute.virtual_machines.begin_create_or_update(
    "py-compute",
    "py-vm-1",
    VirtualMachine(location="westus", identity=VirtualMachineIdentity(type="SystemAssigned"),
                   tags={"role": "web"}),
).result()
expect(vm.name == "py-vm-1", vm)
expect(vm.identity.type == "SystemAssigned", vm.identity)
expect(vm.identity.tenant_id == env("AZURE_TENANT_ID"), vm.identity)
system_principal = vm.identity.principal_id
expect(system_principal, vm.identity)
expect(vm.properties.provisioning_state == "Succeeded", vm.properties)

default = msi.system_assigned_identities.get_by_scope(vm.id)
expect(default.principal_id == system_principal, default)

attached = compute.virtual_machines.begin_update(
    "py-compute",
    "py-vm-1",
    VirtualMachineUpdate(identity=VirtualMachineIdentity(
        type="SystemAssigned, UserAssigned",
        user_assigned_identities={uai.id: UserAssignedIdentitiesValue()},
    )),
).result()
expect(attached.identity.type == "SystemAssigned, UserAssigned", attached.identity)
users = {k.lower(): v for k, v in (attached.identity.user_assigned_identities or {}).items()}
expect(uai.id.lower() in users, users)
expect(users[uai.id.lower()].principal_id == uai.principal_id, users)
expect(users[uai.id.lower()].client_id == uai.client_id, users)
expect(attached.identity.principal_id == system_principal, attached.identity)

detached = compute.virtual_machines.begin_update(
    "py-compute",
    "py-vm-1",
    VirtualMachineUpdate(identity=VirtualMachineIdentity(
        type="SystemAssigned", user_assigned_identities={uai.id: None},
    )),
).result()
expect(detached.identity.type == "SystemAssigned", detached.identity)
expect(not detached.identity.user_assigned_identities, detached.identity)
expect(detached.identity.principal_id == system_principal, detached.identity)
fetched = compute.virtual_machines.get("py-compute", "py-vm-1")
expect(not fetched.identity.user_assigned_identities, fetched.identity)
expect(fetched.tags == {"role": "web"}, fetched.tags)

names = [v.name for v in compute.virtual_machines.list("py-compute")]
expect(names == ["py-vm-1"], names)

compute.virtual_machines.begin_delete("py-compute", "py-vm-1").result()
try:
    compute.virtual_machines.get("py-compute", "py-vm-1")
    raise AssertionError("get after delete should fail")
except ResourceNotFoundError as e:
    code = error_code(e)
expect(code == "ResourceNotFound", code)

report({"system_principal": system_principal, "uai_principal": uai.principal_id, "vm_id": vm.id})
