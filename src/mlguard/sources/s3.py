"""Logs in S3: `s3://bucket/prefix` names every object under the prefix, read in time order.

Load balancers and CDNs (ALB, CloudFront) deliver their logs as many small gzip objects in S3.
Objects are listed (paginated), sorted by last-modified time then key, and streamed: nothing is
downloaded to disk, and gzip/bzip2/xz/zstd are recognised by content like local files. boto3
finds credentials, region and endpoint the usual way (environment, profile, instance role;
`AWS_ENDPOINT_URL` for an S3-compatible store). boto3 comes with the `aws` extra.
"""

from __future__ import annotations

import io
from typing import Any

from mlguard.errors import InputError

PREFIX = "s3://"


def is_s3(spec: str) -> bool:
    return spec.startswith(PREFIX)


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len(PREFIX) :].partition("/")
    if not bucket:
        raise InputError(f"'{uri}' names no bucket: use s3://bucket/prefix")
    return bucket, key


def _client() -> Any:
    try:
        import boto3
    except ImportError:
        raise InputError("reading s3:// needs boto3: pip install 'mlguard-web[aws]'") from None
    return boto3.client("s3")


def _failure(uri: str, exc: Exception) -> InputError:
    # One line a person can act on, from botocore's error shapes.
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
    what = code or type(exc).__name__
    return InputError(f"cannot read '{uri}': {what}")


def list_objects(spec: str) -> list[str]:
    """Every object under `spec`, oldest first (ties by key); an empty listing is an error."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = _split(spec)
    found: list[tuple[Any, str]] = []
    try:
        pages = _client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                if not item["Key"].endswith("/"):  # "folder" placeholder objects
                    found.append((item["LastModified"], item["Key"]))
    except (BotoCoreError, ClientError) as exc:
        raise _failure(spec, exc) from exc
    if not found:
        raise InputError(f"no object under '{spec}'")
    return [f"{PREFIX}{bucket}/{key}" for _, key in sorted(found)]


class ObjectStream(io.RawIOBase):
    """botocore's streaming body as a raw binary stream (readinto), for the chunk readers."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


def open_object(uri: str) -> io.RawIOBase:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _split(uri)
    try:
        response = _client().get_object(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError) as exc:
        raise _failure(uri, exc) from exc
    return ObjectStream(response["Body"])
