"""`ResourceManagementClient.resources.list()` and `.list_by_resource_group(rg, filter=)`,
run as the caller in the environment. Argument: `{"group", "filter", "top"}`."""
import json
import sys

from azure.core.exceptions import HttpResponseError
from azure.mgmt.resource.resources import ResourceManagementClient

from common import base_url, credential, error_code, report, subscription

args = json.loads(sys.argv[1])
client = ResourceManagementClient(credential(), subscription(), base_url=base_url())


def shape(r):
    return {
        "id": r.id,
        "name": r.name,
        "type": r.type,
        "location": r.location,
        "tags": r.tags,
        "kind": r.kind,
        "sku": r.sku.name if r.sku else None,
        "identity": getattr(r.identity.type, "value", r.identity.type) if r.identity else None,
        "principal_id": r.identity.principal_id if r.identity else None,
        "created": r.created_time.isoformat() if r.created_time else None,
        "state": r.provisioning_state,
    }


def refused(call):
    try:
        call()
    except HttpResponseError as e:
        return [e.status_code, error_code(e)]
    return None


report({
    "all": [shape(r) for r in client.resources.list(expand="createdTime,provisioningState")],
    "paged": sorted(r.name for r in client.resources.list(top=args["top"])),
    "group": sorted(r.name for r in client.resources.list_by_resource_group(args["group"])),
    "filtered": sorted(
        r.name for r in client.resources.list_by_resource_group(args["group"], filter=args["filter"])
    ),
    "missing": refused(lambda: list(client.resources.list_by_resource_group("no-such-group"))),
    "bad_filter": refused(lambda: list(client.resources.list(filter="name gt 'x'"))),
})
