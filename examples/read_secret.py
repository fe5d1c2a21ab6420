"""Reads a secret from Azure Key Vault with the workload's managed identity.

Configuration, as an app on Azure gets it from its settings:
  KEY_VAULT_URL   the vault, e.g. https://my-vault.vault.azure.net
  SECRET_NAME     the secret to read (default: db-password)

No credential appears here: DefaultAzureCredential finds the managed identity of the
VM, App Service or Functions host the code runs on.
"""

import os
import sys

from azure.core.exceptions import HttpResponseError
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient


def error_code(e: HttpResponseError) -> str:
    """The service's error code (Storage sets error_code; Key Vault fills error)."""
    return getattr(e, "error_code", None) or (e.error.code if e.error else None) or str(e.reason)


def main() -> int:
    vault_url = os.environ["KEY_VAULT_URL"]
    secret_name = os.environ.get("SECRET_NAME", "db-password")

    credential = DefaultAzureCredential()
    client = SecretClient(vault_url=vault_url, credential=credential)
    try:
        secret = client.get_secret(secret_name)
    except HttpResponseError as e:
        print(f"error: {e.status_code} {error_code(e)}: "
              f"cannot read secret '{secret_name}' from {vault_url}", file=sys.stderr)
        return 1

    # Never print a secret's value; show that it arrived.
    print(f"read secret '{secret.name}' (version {secret.properties.version}, "
          f"{len(secret.value or '')} characters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
