"""azure-mgmt-msi: user-assigned identities and federated identity credentials."""

from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.resource.resources.models import ResourceGroup

from common import base_url, credential, env, error_code, expect, report, subscription

cred = credential()
resources = ResourceManagementClient(cred, subscription(), base_url=base_url())
resources.resource_groups.create_or_update("py-msi", ResourceGroup(location="westus"))
msi = ManagedServiceIdentityClient(cred, subscription(), base_url=base_url())
models = msi.models()

identity = msi.user_assigned_identities.create_or_update(
    "py-msi", "py-id-1", models.Identity(location="westus", tags={"app": "web"})
)
expect(identity.principal_id and identity.client_id, identity)
expect(identity.tenant_id == env("AZURE_TENANT_ID"), identity.tenant_id)
expect(identity.type == "Microsoft.ManagedIdentity/userAssignedIdentities", identity.type)
second = msi.user_assigned_identities.create_or_update(
    "py-msi", "py-id-2", models.Identity(location="westus")
)

got = msi.user_assigned_identities.get("py-msi", "py-id-1")
expect(got.principal_id == identity.principal_id, got)
updated = msi.user_assigned_identities.update(
    "py-msi", "py-id-1", models.IdentityUpdate(tags={"app": "api"})
)
expect(updated.tags == {"app": "api"}, updated.tags)
expect(updated.client_id == identity.client_id, updated)
# Create-or-update of an existing identity keeps its principal.
replaced = msi.user_assigned_identities.create_or_update(
    "py-msi", "py-id-1", models.Identity(location="westus")
)
expect(replaced.principal_id == identity.principal_id, replaced)

in_group = sorted(i.name for i in msi.user_assigned_identities.list_by_resource_group("py-msi"))
expect(in_group == ["py-id-1", "py-id-2"], in_group)
in_sub = sorted(i.name for i in msi.user_assigned_identities.list_by_subscription())
expect("py-id-1" in in_sub and "py-id-2" in in_sub, in_sub)

fic = msi.federated_identity_credentials.create_or_update(
    "py-msi",
    "py-id-1",
    "github-main",
    models.FederatedIdentityCredential(
        issuer="https://token.actions.githubusercontent.com",
        subject="repo:octo/app:ref:refs/heads/main",
        audiences=["api://AzureADTokenExchange"],
    ),
)
expect(fic.name == "github-main", fic)
expect(fic.subject == "repo:octo/app:ref:refs/heads/main", fic)
msi.federated_identity_credentials.create_or_update(
    "py-msi",
    "py-id-1",
    "k8s-web",
    models.FederatedIdentityCredential(
        issuer="https://oidc.example.com", subject="system:serviceaccount:web:app",
        audiences=["api://AzureADTokenExchange"],
    ),
)
fics = sorted(f.name for f in msi.federated_identity_credentials.list("py-msi", "py-id-1"))
expect(fics == ["github-main", "k8s-web"], fics)
one = msi.federated_identity_credentials.get("py-msi", "py-id-1", "k8s-web")
expect(one.issuer == "https://oidc.example.com", one)
msi.federated_identity_credentials.delete("py-msi", "py-id-1", "k8s-web")
fics_after = sorted(f.name for f in msi.federated_identity_credentials.list("py-msi", "py-id-1"))
expect(fics_after == ["github-main"], fics_after)

msi.user_assigned_identities.delete("py-msi", "py-id-2")
try:
    msi.user_assigned_identities.get("py-msi", "py-id-2")
    raise AssertionError("get after delete should fail")
except ResourceNotFoundError as e:
    code = error_code(e)
expect(code == "ResourceNotFound", code)

report({
    "id": identity.id,
    "principal_id": identity.principal_id,
    "client_id": identity.client_id,
    "deleted_principal_id": second.principal_id,
    "federated": fics_after,
})
