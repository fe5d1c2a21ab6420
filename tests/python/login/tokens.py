"""Gets and checks tokens from Lanyard's token service with the official Python SDKs.

Run by the Rust end-to-end tests (crates/cli/tests/e2e/login.rs) as a subprocess; prints one
JSON document on stdout. Subcommands:

  get         a token with azure-identity, as chosen by LANYARD_CREDENTIAL:
                secret       ClientSecretCredential (AZURE_CLIENT_SECRET)
                certificate  CertificateCredential (LANYARD_CERT_PATH: PEM with key and cert)
                workload     WorkloadIdentityCredential (AZURE_FEDERATED_TOKEN_FILE)
                assertion    ClientAssertionCredential (a callback reading AZURE_FEDERATED_TOKEN_FILE)
              for LANYARD_SCOPE, against AZURE_AUTHORITY_HOST with disable_instance_discovery=True;
              then verifies it as `verify` does and prints {"token", "expires_on", "header", "claims"}.
  verify      reads {"tokens": [...], "audience": A} on stdin and verifies each token with PyJWT
              against the JWKS the server publishes; prints {"kids": [...], "results": [...]}.
  make-cert   writes DIR/cert.pem (RSA key and self-signed certificate) and prints
              {"pem_path", "der_b64", "thumbprint"}.

TLS trust comes from REQUESTS_CA_BUNDLE / SSL_CERT_FILE (the server's CA).
"""

import base64
import datetime
import json
import os
import sys

import jwt
import requests


def authority():
    return os.environ["AZURE_AUTHORITY_HOST"].rstrip("/")


def tenant():
    return os.environ["AZURE_TENANT_ID"]


def jwks():
    url = f"{authority()}/{tenant()}/discovery/v2.0/keys"
    response = requests.get(url, verify=os.environ["REQUESTS_CA_BUNDLE"], timeout=30)
    response.raise_for_status()
    return response.json()


def verify(token, audience, keys):
    """PyJWT's own validation: signature with the published key, times, audience, issuer."""
    header = jwt.get_unverified_header(token)
    unverified = jwt.decode(token, options={"verify_signature": False})
    tid = unverified.get("tid")
    issuer = {
        "1.0": f"https://sts.windows.net/{tid}/",
        "2.0": f"https://login.microsoftonline.com/{tid}/v2.0",
    }.get(unverified.get("ver"))
    matching = [k for k in keys["keys"] if k.get("kid") == header.get("kid")]
    if not matching:
        return {"valid": False, "error": f"kid {header.get('kid')} is not published", "header": header}
    key = jwt.PyJWK.from_dict(matching[0]).key
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub"]},
        )
    except jwt.PyJWTError as e:
        return {"valid": False, "error": f"{type(e).__name__}: {e}", "header": header}
    return {"valid": True, "header": header, "claims": claims}


def credential():
    from azure.identity import (
        CertificateCredential,
        ClientAssertionCredential,
        ClientSecretCredential,
        WorkloadIdentityCredential,
    )

    kind = os.environ["LANYARD_CREDENTIAL"]
    common = {"authority": authority(), "disable_instance_discovery": True}
    client_id = os.environ["AZURE_CLIENT_ID"]
    if kind == "secret":
        return ClientSecretCredential(tenant(), client_id, os.environ["AZURE_CLIENT_SECRET"], **common)
    if kind == "certificate":
        return CertificateCredential(tenant(), client_id, os.environ["LANYARD_CERT_PATH"], **common)
    if kind == "workload":
        # Reads AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST.
        return WorkloadIdentityCredential(disable_instance_discovery=True)
    if kind == "assertion":
        path = os.environ["AZURE_FEDERATED_TOKEN_FILE"]

        def read_assertion():
            with open(path) as f:
                return f.read().strip()

        return ClientAssertionCredential(tenant(), client_id, read_assertion, **common)
    raise SystemExit(f"unknown LANYARD_CREDENTIAL {kind!r}")


def get():
    scope = os.environ["LANYARD_SCOPE"]
    token = credential().get_token(scope)
    audience = scope[: -len("/.default")]
    result = verify(token.token, audience, jwks())
    result.update({"token": token.token, "expires_on": token.expires_on})
    print(json.dumps(result))


def verify_many():
    request = json.load(sys.stdin)
    keys = jwks()
    results = [verify(t, request["audience"], keys) for t in request["tokens"]]
    print(json.dumps({"kids": [k.get("kid") for k in keys["keys"]], "results": results}))


def make_cert(directory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lanyard-test-app")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    path = os.path.join(directory, "cert.pem")
    with open(path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    der = cert.public_bytes(serialization.Encoding.DER)
    print(
        json.dumps(
            {
                "pem_path": path,
                "der_b64": base64.b64encode(der).decode(),
                "thumbprint": cert.fingerprint(hashes.SHA1()).hex().upper(),
            }
        )
    )


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "get":
        get()
    elif command == "verify":
        verify_many()
    elif command == "make-cert":
        make_cert(sys.argv[2])
    else:
        raise SystemExit(__doc__)
