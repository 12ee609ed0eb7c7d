"""boto3 clients, made once per process and kept across warm invocations (making one costs
tens of milliseconds). Region and credentials come the usual way (the Lambda role, AWS_REGION);
`endpoint_url` (MLGUARD_AWS_ENDPOINT_URL) sends every call elsewhere, e.g. to a local moto."""

from __future__ import annotations

from typing import Any

from mlguard.errors import UsageError

_MISSING_BOTO3 = "MLGuard on AWS needs boto3: pip install 'mlguard-web[aws]'"
_clients: dict[tuple[str, str | None], Any] = {}


def aws_client(service: str, endpoint_url: str | None = None) -> Any:
    key = (service, endpoint_url)
    if key not in _clients:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise UsageError(_MISSING_BOTO3) from None
        config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=60)
        _clients[key] = boto3.session.Session().client(service, endpoint_url=endpoint_url, config=config)
    return _clients[key]


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError (NoSuchKey, AccessDenied...), else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None
