"""azure-mgmt-keyvault: soft-deleted vaults, with azure-keyvault-secrets for what they hold.

Usage: deleted_vaults.py GROUP VAULT LOCATION SECRET_VALUE

The vault VAULT exists in GROUP (RBAC mode, the caller a Secrets Officer on the group) and
holds the secret `db` with SECRET_VALUE and the deleted secret `old`. The script deletes it,
finds it among the deleted vaults, is refused a new vault of that name, recovers it and reads
the secret back, deletes and purges it, creates a fresh vault of that name (the secrets are
gone), and is refused the purge of a purge-protected vault. Shared helpers and environment:
tests/python/arm/common.py (on PYTHONPATH).
"""

import sys

from azure.core.exceptions import HttpResponseError
from azure.keyvault.secrets import SecretClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault.models import Sku, VaultCreateOrUpdateParameters, VaultProperties

from common import base_url, credential, env, error_code, expect, report, subscription

group, name, location, secret_value = sys.argv[1:5]
cred = credential()
kv = KeyVaultManagementClient(cred, subscription(), base_url=base_url())


def params(create_mode=None, purge_protection=None):
    properties = VaultProperties(
        tenant_id=env("AZURE_TENANT_ID"),
        sku=Sku(family="A", name="standard"),
        enable_rbac_authorization=True,
        create_mode=create_mode,
        enable_purge_protection=purge_protection,
    )
    return VaultCreateOrUpdateParameters(location=location, properties=properties)


def failure(call):
    """The status and ARM code of the HttpResponseError `call` raises."""
    try:
        call()
    except HttpResponseError as e:
        return {"status": e.status_code, "code": error_code(e), "message": str(e)}
    raise AssertionError("the call was expected to fail")


def deleted_names():
    return sorted(v.name for v in kv.vaults.list_deleted())


vault = kv.vaults.get(group, name)
uri = vault.properties.vault_uri
kv.vaults.delete(group, name)

listed = [v for v in kv.vaults.list_deleted() if v.name == name]
expect(len(listed) == 1, deleted_names())
shown = kv.vaults.get_deleted(name, location)
props = shown.properties
expect(props.vault_id.lower() == vault.id.lower(), props.vault_id)
expect(shown.type == "Microsoft.KeyVault/deletedVaults", shown.type)
retention = (props.scheduled_purge_date - props.deletion_date).days
missing_location = failure(lambda: kv.vaults.get_deleted(name, "elsewhere"))

# The name is reserved: a new vault is refused, recovery brings back the old one.
refused_create = failure(lambda: kv.vaults.begin_create_or_update(group, name, params()).result())
recovered = kv.vaults.begin_create_or_update(group, name, params("recover")).result()
expect(recovered.id.lower() == vault.id.lower(), recovered.id)
expect(name not in deleted_names(), deleted_names())
secrets = SecretClient(uri, cred)
value_after_recovery = secrets.get_secret("db").value
versions = len(list(secrets.list_properties_of_secret_versions("db")))
deleted_secrets = sorted(s.name for s in secrets.list_deleted_secrets())

# Purged: the record, the name and the secrets go.
kv.vaults.delete(group, name)
kv.vaults.begin_purge_deleted(name, location).result()
purged_lookup = failure(lambda: kv.vaults.get_deleted(name, location))
kv.vaults.begin_create_or_update(group, name, params()).result()
fresh = SecretClient(uri, cred)
secret_after_purge = failure(lambda: fresh.get_secret("db"))

# Recovering a name that is not soft-deleted.
not_deleted = failure(
    lambda: kv.vaults.begin_create_or_update(group, name + "x", params("recover")).result()
)

# Purge protection: deleted, listed, not purgeable.
protected = name + "pp"
kv.vaults.begin_create_or_update(group, protected, params(purge_protection=True)).result()
kv.vaults.delete(group, protected)
protected_shown = kv.vaults.get_deleted(protected, location)
protected_purge = failure(lambda: kv.vaults.begin_purge_deleted(protected, location).result())
still_there = protected in deleted_names()

report(
    {
        "retention_days": retention,
        "purge_protection": props.purge_protection_enabled,
        "deleted_location": props.location,
        "missing_location": missing_location,
        "refused_create": refused_create,
        "value_after_recovery": value_after_recovery == secret_value,
        "versions": versions,
        "deleted_secrets": deleted_secrets,
        "purged_lookup": purged_lookup,
        "secret_after_purge": secret_after_purge["status"],
        "not_deleted": not_deleted,
        "protected_flag": protected_shown.properties.purge_protection_enabled,
        "protected_purge": protected_purge,
        "protected_still_listed": still_there,
    }
)
