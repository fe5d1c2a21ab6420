"""Reads a blob from Azure Storage with the workload's managed identity.

Configuration, as an app on Azure gets it from its settings:
  STORAGE_ACCOUNT_URL   the account's blob endpoint, e.g. https://myaccount.blob.core.windows.net
  BLOB_CONTAINER        the container (default: reports)
  BLOB_NAME             the blob (default: hello.txt)

No connection string and no account key: DefaultAzureCredential finds the managed
identity of the host, and the identity's role assignments decide what it may read.
"""

import os
import sys

from azure.core.exceptions import HttpResponseError
from azure.identity import DefaultAzureCredential
from azure.storage.blob import BlobServiceClient


def error_code(e: HttpResponseError) -> str:
    """The service's error code (Storage sets error_code; Key Vault fills error)."""
    return getattr(e, "error_code", None) or (e.error.code if e.error else None) or str(e.reason)


def main() -> int:
    account_url = os.environ["STORAGE_ACCOUNT_URL"]
    container = os.environ.get("BLOB_CONTAINER", "reports")
    name = os.environ.get("BLOB_NAME", "hello.txt")

    credential = DefaultAzureCredential()
    service = BlobServiceClient(account_url=account_url, credential=credential)
    blob = service.get_blob_client(container=container, blob=name)
    try:
        data = blob.download_blob().readall()
    except HttpResponseError as e:
        print(f"error: {e.status_code} {error_code(e)}: "
              f"cannot read {container}/{name} from {account_url}", file=sys.stderr)
        return 1

    print(f"read {container}/{name} ({len(data)} bytes):")
    print(data.decode("utf-8", errors="replace"), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
