"""Denials as the management SDKs surface them, for a service principal that holds Reader on
the subscription and Virtual Machine Contributor on one group, but no Managed Identity
Operator: group creation is refused with AuthorizationFailed, a VM holding a user-assigned
identity with LinkedAuthorizationFailed, and a VM with only its own identity is created.

Argument: the JSON `{"group": name, "identity": resource id}`.
"""

import json
import sys

from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import UserAssignedIdentitiesValue, VirtualMachine, VirtualMachineIdentity
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.resource.resources.models import ResourceGroup

from common import base_url, credential, error_code, expect, report, subscription

args = json.loads(sys.argv[1])
cred = credential()
resources = ResourceManagementClient(cred, subscription(), base_url=base_url())
compute = ComputeManagementClient(cred, subscription(), base_url=base_url())


def refused(call):
    try:
        call()
    except HttpResponseError as e:
        return {"status": e.status_code, "code": error_code(e), "message": e.error.message}
    raise AssertionError("the call should have been refused")


group = refused(lambda: resources.resource_groups.create_or_update("sdk-denied", ResourceGroup(location="westus")))
expect(group["status"] == 403 and group["code"] == "AuthorizationFailed", group)
seen = [g.name for g in resources.resource_groups.list()]

linked = refused(lambda: compute.virtual_machines.begin_create_or_update(
    args["group"],
    "vm-linked",
    VirtualMachine(location="westus", identity=VirtualMachineIdentity(
        type="UserAssigned", user_assigned_identities={args["identity"]: UserAssignedIdentitiesValue()},
    )),
).result())
expect(linked["status"] == 403 and linked["code"] == "LinkedAuthorizationFailed", linked)

own = compute.virtual_machines.begin_create_or_update(
    args["group"], "vm-own", VirtualMachine(location="westus", identity=VirtualMachineIdentity(type="SystemAssigned")),
).result()
expect(own.identity.principal_id, own.identity)

report({"group": group, "linked": linked, "seen": seen, "own": own.identity.principal_id})
