"""A small OpenID Connect issuer for tests of workload identity federation.

Usage: oidc_issuer.py DIR

Makes its own CA (DIR/ca.pem), a server certificate for localhost signed by it, and an RSA
signing key; serves HTTPS on 127.0.0.1 (a free port) and prints one JSON line
{"issuer": "https://localhost:PORT", "ca_file": ...}. Endpoints:

  GET  /.well-known/openid-configuration   issuer, jwks_uri
  GET  /keys                               the JWKS
  POST /mint  {"sub", "aud", "exp_in"?, "nbf_in"?, "iss"?, "kid"?}  -> a signed JWT (text)

It exits when its standard input closes (the test that started it ended).
"""

import base64
import datetime
import ipaddress
import json
import os
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def b64url_uint(n):
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def make_pki(directory):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lanyard test issuer CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = os.path.join(directory, "ca.pem")
    with open(ca_file, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    chain = os.path.join(directory, "server.pem")
    with open(chain, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    server_key = os.path.join(directory, "server-key.pem")
    with open(server_key, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return ca_file, chain, server_key


def main(directory):
    ca_file, chain, server_key = make_pki(directory)
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = signing_key.public_key().public_numbers()
    kid = uuid.uuid4().hex
    jwks = {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                      "n": b64url_uint(numbers.n), "e": b64url_uint(numbers.e)}]}
    state = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send_json(self, status, body, content_type="application/json"):
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            issuer = state["issuer"]
            if self.path == "/.well-known/openid-configuration":
                self.send_json(200, {
                    "issuer": issuer,
                    "jwks_uri": f"{issuer}/keys",
                    "response_types_supported": ["id_token"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                })
            elif self.path == "/keys":
                self.send_json(200, jwks)
            else:
                self.send_json(404, {"error": "not found"})

        def do_POST(self):
            if self.path != "/mint":
                self.send_json(404, {"error": "not found"})
                return
            length = int(self.headers.get("Content-Length", "0"))
            req = json.loads(self.rfile.read(length) or b"{}")
            now = int(time.time())
            claims = {
                "iss": req.get("iss", state["issuer"]),
                "sub": req["sub"],
                "aud": req.get("aud", "api://AzureADTokenExchange"),
                "iat": now,
                "nbf": now + int(req.get("nbf_in", 0)),
                "exp": now + int(req.get("exp_in", 600)),
                "jti": uuid.uuid4().hex,
            }
            token = jwt.encode(claims, signing_key, algorithm="RS256",
                               headers={"kid": req.get("kid", kid)})
            self.send_json(200, token, "text/plain")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    state["issuer"] = f"https://localhost:{port}"

    def watch_stdin():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(json.dumps({"issuer": state["issuer"], "ca_file": ca_file}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
