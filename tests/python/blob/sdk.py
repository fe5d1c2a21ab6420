"""Drives a Lanyard storage account with the official azure-storage-blob client, authenticated
by azure-identity the way an unmodified application would be (run it under
`lanyard run --as APP`).

Prints one JSON object on its last line: {"ok": true, ...} or {"ok": false, "error": "..."}.

Usage: sdk.py ACCOUNT_URL SCENARIO [--container C] [--blob B] [--size N] [--block-size N]
  round-trip   create C; upload 1 KiB whole and N bytes in blocks of --block-size (Put Block +
               Put Block List); download both whole and by range, comparing SHA-256; list with
               a prefix and walk with a delimiter; metadata and conditional reads; delete
  seed         create C and upload B (1 KiB, known content) and "dir/x", "dir/y"
  reader       read B and list C (must work); every write must be refused with 403
               AuthorizationPermissionMismatch
  upload-then-hang
               upload N bytes to B in blocks of --block-size, one at a time; after three
               blocks print {"ready": true, "pid": ...} and hang inside the upload, so the
               caller can SIGKILL the process between blocks
  hang-mid-block
               send Put Block for B with a body of N bytes but only half of it, print
               {"ready": true, ...} and hang, so the caller can SIGKILL the process mid-request
  check        print B's size, SHA-256 and uncommitted block count (or that it is absent)
"""
import argparse
import hashlib
import http.client
import json
import os
import ssl
import sys
import time
import urllib.parse

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.identity import ManagedIdentityCredential
from azure.storage.blob import BlobServiceClient, ContentSettings

KIB = 1024
MIB = 1024 * 1024
SEED = bytes(range(256)) * 4


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def client(args, **options):
    return BlobServiceClient(args.account_url, credential=ManagedIdentityCredential(), **options)


def error_code(e):
    return getattr(e, "error_code", None) or (e.response.headers.get("x-ms-error-code") if e.response else None)


def expect_denied(call, what):
    try:
        call()
    except HttpResponseError as e:
        check(e.status_code == 403, f"{what}: expected 403, got {e.status_code}: {e.message}")
        code = error_code(e)
        check(code == "AuthorizationPermissionMismatch", f"{what}: code {code}")
        return {"status": e.status_code, "code": code, "message": str(e.message)}
    raise AssertionError(f"{what}: expected 403, but it succeeded")


def round_trip(args):
    service = client(args, max_single_put_size=args.block_size, max_block_size=args.block_size)
    container = service.create_container(args.container, metadata={"purpose": "e2e"})
    try:
        service.create_container(args.container)
        raise AssertionError("a second create must fail")
    except ResourceExistsError:
        pass
    check(
        container.get_container_properties().metadata == {"purpose": "e2e"},
        "container metadata",
    )

    small = os.urandom(KIB)
    small_client = container.get_blob_client("small/one.bin")
    small_client.upload_blob(
        small,
        metadata={"kind": "small"},
        content_settings=ContentSettings(content_type="application/x-test"),
    )
    try:
        small_client.upload_blob(small)
        raise AssertionError("upload without overwrite must fail on an existing blob")
    except ResourceExistsError:
        pass

    big = os.urandom(args.size)
    big_client = container.get_blob_client("big/data.bin")
    started = time.monotonic()
    big_client.upload_blob(big, max_concurrency=4)
    upload_secs = time.monotonic() - started
    blocks = big_client.get_block_list("committed")[0]
    check(len(blocks) >= 2, f"expected a chunked upload, got {len(blocks)} committed blocks")

    check(small_client.download_blob().readall() == small, "small download")
    started = time.monotonic()
    downloaded = big_client.download_blob(max_concurrency=4).readall()
    download_secs = time.monotonic() - started
    check(sha256(downloaded) == sha256(big), "big download SHA-256")
    offset, length = 3 * MIB + 17, 5 * MIB + 3
    part = big_client.download_blob(offset=offset, length=length).readall()
    check(sha256(part) == sha256(big[offset:offset + length]), "range SHA-256")
    tail = big_client.download_blob(offset=args.size - 10).readall()
    check(tail == big[-10:], "tail range")

    props = small_client.get_blob_properties()
    check(props.size == KIB, "size")
    check(props.metadata == {"kind": "small"}, f"metadata {props.metadata}")
    check(props.content_settings.content_type == "application/x-test", "content type")
    check(props.blob_type == "BlockBlob", "blob type")
    # Conditional reads: If-None-Match with the current ETag is 304; If-Match with another
    # is 412 ConditionNotMet.
    try:
        small_client.download_blob(etag=props.etag, match_condition=MatchConditions.IfModified).readall()
        raise AssertionError("expected 304")
    except HttpResponseError as e:
        check(e.status_code == 304, f"expected 304, got {e.status_code}")
    try:
        small_client.download_blob(etag='"0x0"', match_condition=MatchConditions.IfNotModified).readall()
        raise AssertionError("expected 412")
    except HttpResponseError as e:
        check(e.status_code == 412 and error_code(e) == "ConditionNotMet", f"got {e.status_code} {error_code(e)}")

    for name in ["dir/a.txt", "dir/b.txt", "dir/sub/c.txt", "top.txt"]:
        container.upload_blob(name, name.encode())
    listed = [b.name for b in container.list_blobs(name_starts_with="dir/")]
    check(listed == ["dir/a.txt", "dir/b.txt", "dir/sub/c.txt"], f"prefix listing {listed}")
    # The SDK yields a page's prefixes before its blobs.
    walked = sorted(b.name for b in container.walk_blobs(delimiter="/"))
    check(walked == ["big/", "dir/", "small/", "top.txt"], f"delimiter listing {walked}")
    walked_dir = sorted(b.name for b in container.walk_blobs(name_starts_with="dir/", delimiter="/"))
    check(walked_dir == ["dir/a.txt", "dir/b.txt", "dir/sub/"], f"walk of dir/ {walked_dir}")
    paged = [b.name for b in container.list_blobs(results_per_page=2)]
    check(len(paged) == 6, f"paged listing {paged}")
    containers = [c.name for c in service.list_containers(name_starts_with=args.container)]
    check(containers == [args.container], f"containers {containers}")

    big_client.delete_blob()
    check(not big_client.exists(), "deleted blob still exists")
    container.delete_container()
    try:
        container.get_container_properties()
        raise AssertionError("the container must be gone")
    except ResourceNotFoundError:
        pass
    return {
        "committed_blocks": len(blocks),
        "upload_secs": round(upload_secs, 2),
        "download_secs": round(download_secs, 2),
    }


def seed(args):
    service = client(args)
    container = service.create_container(args.container)
    container.upload_blob(args.blob, SEED)
    container.upload_blob("dir/x", b"x")
    container.upload_blob("dir/y", b"y")
    return {}


def reader(args):
    service = client(args)
    container = service.get_container_client(args.container)
    blob = container.get_blob_client(args.blob)
    check(blob.download_blob().readall() == SEED, "read")
    check(blob.download_blob(offset=10, length=5).readall() == SEED[10:15], "range read")
    names = [b.name for b in container.list_blobs()]
    check(names == ["dir/x", "dir/y", args.blob], f"list {names}")
    check(container.get_container_properties().name == args.container, "container properties")
    denied = [
        expect_denied(lambda: blob.upload_blob(b"new", overwrite=True), "overwrite"),
        expect_denied(lambda: container.upload_blob("other", b"new"), "create"),
        expect_denied(lambda: blob.set_blob_metadata({"a": "b"}), "set metadata"),
        expect_denied(lambda: blob.delete_blob(), "delete"),
        expect_denied(lambda: service.create_container(args.container + "2"), "create container"),
        expect_denied(lambda: container.delete_container(), "delete container"),
    ]
    check(blob.download_blob().readall() == SEED, "content unchanged")
    return {"denied": denied}


class Hanging:
    """A stream that hangs (without returning) once `after` bytes were read."""

    def __init__(self, data, after):
        self.data, self.pos, self.after = data, 0, after

    def read(self, n=-1):
        if self.pos >= self.after:
            print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
            time.sleep(3600)
        n = len(self.data) - self.pos if n is None or n < 0 else n
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk


def upload_then_hang(args):
    service = client(args, max_single_put_size=args.block_size, max_block_size=args.block_size)
    blob = service.get_blob_client(args.container, args.blob)
    data = os.urandom(args.size)
    blob.upload_blob(
        Hanging(data, 3 * args.block_size),
        length=args.size,
        overwrite=True,
        max_concurrency=1,
    )
    raise AssertionError("the upload should have hung")


def hang_mid_block(args):
    token = ManagedIdentityCredential().get_token("https://storage.azure.com/.default").token
    url = urllib.parse.urlparse(args.account_url)
    context = ssl.create_default_context(cafile=os.environ["REQUESTS_CA_BUNDLE"])
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=context)
    block_id = urllib.parse.quote("bWlkLWJsb2Nr")
    conn.putrequest("PUT", f"/{args.container}/{urllib.parse.quote(args.blob)}?comp=block&blockid={block_id}")
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("x-ms-version", "2025-11-05")
    conn.putheader("Content-Length", str(args.size))
    conn.endheaders()
    half = os.urandom(args.size // 2)
    for i in range(0, len(half), 64 * KIB):
        conn.send(half[i:i + 64 * KIB])
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    time.sleep(3600)
    raise AssertionError("the request should have hung")


def check_blob(args):
    service = client(args)
    blob = service.get_blob_client(args.container, args.blob)
    out = {}
    try:
        data = blob.download_blob().readall()
        out.update({"exists": True, "size": len(data), "sha256": sha256(data), "seed": data == SEED})
    except ResourceNotFoundError:
        out["exists"] = False
    try:
        _, uncommitted = blob.get_block_list("uncommitted")
        out["uncommitted"] = len(uncommitted)
    except ResourceNotFoundError:
        out["uncommitted"] = 0
    return out


SCENARIOS = {
    "round-trip": round_trip,
    "seed": seed,
    "reader": reader,
    "upload-then-hang": upload_then_hang,
    "hang-mid-block": hang_mid_block,
    "check": check_blob,
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("account_url")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--container", default="data")
    parser.add_argument("--blob", default="seed.bin")
    parser.add_argument("--size", type=int, default=100 * MIB)
    parser.add_argument("--block-size", type=int, default=4 * MIB)
    args = parser.parse_args()
    try:
        result = SCENARIOS[args.scenario](args)
        print(json.dumps({"ok": True, **result}))
    except Exception as e:  # the test asserts on the message
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)


if __name__ == "__main__":
    main()
