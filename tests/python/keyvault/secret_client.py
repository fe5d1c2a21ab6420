"""Drives a Lanyard vault with the official azure-keyvault-secrets client, default options
(challenge resource verification left on), authenticated by azure-identity the way an
unmodified application on a VM would be (run it under `lanyard run --as VM`).

Prints one JSON object on its last line: {"ok": true, ...} or {"ok": false, "error": "..."}.

Usage: secret_client.py VAULT_URL SCENARIO [--name N] [--value V] [--denied-inner CODE]
  read            get N (expecting V), then try to set it: must be refused with 403 and
                  innererror CODE (ForbiddenByRbac or AccessDenied)
  lifecycle       set, versions, get by version, update, list paging, disabled, delete,
                  get/list deleted, recover, backup, purge, restore
  wrong-audience  a token for Azure Storage must be refused with 401
  set             set N to V
"""
import argparse
import json
import sys
import uuid

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient


def error_of(e):
    """status, code, inner code and message of a service error."""
    body = {}
    try:
        body = e.response.json()
    except Exception:  # not JSON: leave the fields empty
        pass
    error = body.get("error") or {}
    inner = error.get("innererror") or {}
    return {
        "status": e.status_code,
        "code": error.get("code"),
        "inner": inner.get("code"),
        "message": error.get("message"),
    }


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def expect_refusal(call, status, what):
    try:
        call()
    except HttpResponseError as e:
        got = error_of(e)
        check(got["status"] == status, f"{what}: expected {status}, got {got}")
        return got
    raise AssertionError(f"{what}: expected {status}, but it succeeded")


def read(client, args):
    secret = client.get_secret(args.name)
    check(secret.value == args.value, "get returned another value")
    denied = expect_refusal(lambda: client.set_secret(args.name, "not-allowed"), 403, "set")
    check(denied["code"] == "Forbidden", f"code {denied}")
    check(denied["inner"] == args.denied_inner, f"inner code {denied}")
    return {"value": secret.value, "version": secret.properties.version, "denied": denied}


def lifecycle(client, args):
    run = uuid.uuid4().hex[:8]
    name = f"life-{run}"
    first = client.set_secret(name, "first-value", content_type="text/plain", tags={"run": run})
    second = client.set_secret(name, "second-value")
    check(first.properties.version != second.properties.version, "a new version each time")
    check(client.get_secret(name).value == "second-value", "latest")
    check(client.get_secret(name, first.properties.version).value == "first-value", "by version")
    check(first.properties.content_type == "text/plain", "content type")

    versions = client.list_properties_of_secret_versions(name, max_page_size=1)
    pages = list(versions.by_page())
    version_ids = sorted(p.version for page in pages for p in page)
    check(version_ids == sorted([first.properties.version, second.properties.version]), f"versions {version_ids}")
    check(len(pages) >= 2, f"versions paged by one: {len(pages)} pages")

    updated = client.update_secret_properties(name, content_type="application/x-test", tags={"updated": "yes"})
    check(updated.content_type == "application/x-test" and updated.tags == {"updated": "yes"}, "update")
    old = client.update_secret_properties(name, first.properties.version, enabled=False)
    check(old.enabled is False, "disable an old version")
    disabled = expect_refusal(lambda: client.get_secret(name, first.properties.version), 403, "get disabled")
    check(disabled["inner"] == "SecretDisabled", f"disabled {disabled}")

    page_names = [f"page-{run}-{i}" for i in range(5)]
    for i, n in enumerate(page_names):
        client.set_secret(n, f"page-value-{i}")
    listed = client.list_properties_of_secrets(max_page_size=2)
    pages = list(listed.by_page())
    names = [p.name for page in pages for p in page]
    check(all(n in names for n in page_names + [name]), f"list {names}")
    check(len(pages) >= 3, f"listed in pages of two: {len(pages)} pages")

    deleted = client.begin_delete_secret(name).result()
    check(deleted.recovery_id and deleted.scheduled_purge_date and deleted.deleted_date, "deleted secret")
    expect_refusal(lambda: client.get_secret(name), 404, "get deleted secret")
    check(client.get_deleted_secret(name).name == name, "get deleted")
    check(name in [d.name for d in client.list_deleted_secrets()], "list deleted")
    recovered = client.begin_recover_deleted_secret(name)
    recovered.wait()
    check(recovered.result().name == name, "recover")
    check(client.get_secret(name).value == "second-value", "recovered value")

    backup = client.backup_secret(name)
    check(isinstance(backup, bytes) and b"second-value" not in backup, "backup is opaque")
    poller = client.begin_delete_secret(name)
    poller.wait()
    client.purge_deleted_secret(name)
    try:
        client.get_deleted_secret(name)
        raise AssertionError("purged secret still listed as deleted")
    except ResourceNotFoundError:
        pass
    restored = client.restore_secret_backup(backup)
    check(restored.name == name, "restore")
    check(client.get_secret(name).value == "second-value", "restored value")
    restored_versions = {p.version: p.enabled for p in client.list_properties_of_secret_versions(name)}
    check(restored_versions == {first.properties.version: False, second.properties.version: True},
          f"restored versions keep their attributes: {restored_versions}")
    return {"name": name, "pages": len(pages)}


class StorageTokens:
    """A credential that always asks for an Azure Storage token, whatever the vault asks."""

    def __init__(self, inner):
        self.inner = inner

    def get_token(self, *scopes, **kwargs):
        return self.inner.get_token("https://storage.azure.com/.default")


def wrong_audience(args):
    client = SecretClient(vault_url=args.vault_url, credential=StorageTokens(DefaultAzureCredential()))
    try:
        client.get_secret(args.name)
    except ClientAuthenticationError as e:
        got = error_of(e)
        check(got["status"] == 401, f"expected 401, got {got}")
        return {"refused": got}
    raise AssertionError("a storage token was accepted by the vault")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("vault_url")
    parser.add_argument("scenario", choices=["read", "lifecycle", "wrong-audience", "set"])
    parser.add_argument("--name", default="app-secret")
    parser.add_argument("--value", default="")
    parser.add_argument("--denied-inner", default="ForbiddenByRbac")
    args = parser.parse_args()
    try:
        if args.scenario == "wrong-audience":
            result = wrong_audience(args)
        else:
            client = SecretClient(vault_url=args.vault_url, credential=DefaultAzureCredential())
            if args.scenario == "read":
                result = read(client, args)
            elif args.scenario == "set":
                result = {"version": client.set_secret(args.name, args.value).properties.version}
            else:
                result = lifecycle(client, args)
        print(json.dumps({"ok": True, **result}))
    except Exception as e:  # the test asserts on the message
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)


if __name__ == "__main__":
    main()
