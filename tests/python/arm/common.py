"""What the control-plane scripts share: the credential and endpoint from the environment.

The official management SDKs are used unmodified apart from `base_url`; the credential is
the stock ClientSecretCredential pointed at Lanyard's token service. TLS trust comes from
REQUESTS_CA_BUNDLE. Each script prints one JSON object for the Rust test to check and exits
non-zero (with a traceback) when any expectation fails.
"""

import json
import os
import sys

from azure.identity import ClientSecretCredential


def env(name):
    value = os.environ.get(name)
    if not value:
        sys.exit(f"the environment variable {name} is required")
    return value


def credential():
    return ClientSecretCredential(
        tenant_id=env("AZURE_TENANT_ID"),
        client_id=env("AZURE_CLIENT_ID"),
        client_secret=env("AZURE_CLIENT_SECRET"),
        authority=env("AZURE_AUTHORITY_HOST"),
        disable_instance_discovery=True,
    )


def base_url():
    return env("LANYARD_ARM_URL")


def subscription():
    return env("AZURE_SUBSCRIPTION_ID")


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def error_code(exc):
    """The ARM error code of an HttpResponseError."""
    error = getattr(exc, "error", None)
    return getattr(error, "code", None)


def report(result):
    print(json.dumps(result))
