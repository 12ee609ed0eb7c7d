"""moto in server mode on 127.0.0.1 for the AWS tests: a real HTTP endpoint, dummy
credentials, and nothing in the environment that could send boto3 to a real account."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Anything that could send boto3 to a real account, profile or endpoint.
REAL_ENV = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_WAFV2",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)


@contextmanager
def moto_endpoint(scratch: Path) -> Iterator[str]:
    """The URL of a moto server on 127.0.0.1, with the environment made safe meanwhile."""
    with pytest.MonkeyPatch.context() as env:
        for key, value in DUMMY_ENV.items():
            env.setenv(key, value)
        for key in REAL_ENV:
            env.delenv(key, raising=False)
        nowhere = scratch / "absent"
        env.setenv("AWS_CONFIG_FILE", str(nowhere))
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere))
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()
