"""Gets a managed-identity token the way an unmodified application would, then checks it
with an independent validator (PyJWT against the published JWKS).

Prints one JSON object: {"ok": true, "claims": {...}} or {"ok": false, "error": "..."}.

Usage: mi_token.py LIB CRED [--client-id X | --object-id X | --resource-id X] [--scope S]
                [--protocol app-service|imds]
  LIB:  azure-identity | msal
  CRED: mi (ManagedIdentityCredential / ManagedIdentityClient) | dac (DefaultAzureCredential)
  --protocol imds: forget the App Service variables, as on a VM where only IMDS exists
                   (the SDK then reads AZURE_POD_IDENTITY_AUTHORITY_HOST).
"""
import argparse
import json
import os
import sys

import jwt
import requests


def azure_identity_token(args, resource):
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if args.cred == "dac":
        credential = DefaultAzureCredential()
    elif args.client_id:
        credential = ManagedIdentityCredential(client_id=args.client_id)
    elif args.object_id:
        credential = ManagedIdentityCredential(identity_config={"object_id": args.object_id})
    elif args.resource_id:
        credential = ManagedIdentityCredential(identity_config={"resource_id": args.resource_id})
    else:
        credential = ManagedIdentityCredential()
    return credential.get_token(resource + "/.default").token


def msal_token(args, resource):
    import msal

    if args.client_id:
        identity = msal.UserAssignedManagedIdentity(client_id=args.client_id)
    elif args.object_id:
        identity = msal.UserAssignedManagedIdentity(object_id=args.object_id)
    elif args.resource_id:
        identity = msal.UserAssignedManagedIdentity(resource_id=args.resource_id)
    else:
        identity = msal.SystemAssignedManagedIdentity()
    client = msal.ManagedIdentityClient(identity, http_client=requests.Session())
    result = client.acquire_token_for_client(resource=resource)
    if "access_token" not in result:
        raise RuntimeError(json.dumps(result))
    return result["access_token"]


def verify(token, resource):
    authority = os.environ["AZURE_AUTHORITY_HOST"].rstrip("/")
    keys = requests.get(authority + "/common/discovery/keys", timeout=10).json()
    header = jwt.get_unverified_header(token)
    jwk = next(k for k in keys["keys"] if k["kid"] == header["kid"])
    key = jwt.PyJWK(jwk).key
    tenant = os.environ["AZURE_TENANT_ID"]
    return jwt.decode(
        token,
        key,
        algorithms=["RS256"],
        audience=resource,
        issuer=f"https://sts.windows.net/{tenant}/",
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("lib", choices=["azure-identity", "msal"])
    parser.add_argument("cred", choices=["mi", "dac"])
    parser.add_argument("--client-id")
    parser.add_argument("--object-id")
    parser.add_argument("--resource-id")
    parser.add_argument("--scope", default="https://vault.azure.net")
    parser.add_argument("--protocol", choices=["app-service", "imds"], default="app-service")
    args = parser.parse_args()
    if args.protocol == "imds":
        for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER"):
            os.environ.pop(name, None)
    try:
        if args.lib == "msal":
            token = msal_token(args, args.scope)
        else:
            token = azure_identity_token(args, args.scope)
        claims = verify(token, args.scope)
        print(json.dumps({"ok": True, "claims": claims}))
    except Exception as e:  # the test asserts on the message
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)


if __name__ == "__main__":
    main()
