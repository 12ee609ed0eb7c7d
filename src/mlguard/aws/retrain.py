"""The scheduled retraining function: learn a fresh baseline from the last days of logs in S3.

It reads the newest log objects under MLGUARD_LOG_URI from the last MLGUARD_RETRAIN_DAYS (at
most MLGUARD_RETRAIN_MAX_BYTES of them, newest first, then read oldest first), builds the
per-client table as `mlguard train` does, leaves out the clients that are under an active alert
or block in the decision table (a baseline learns what normal looks like), and replaces the model
at MLGUARD_MODEL_URI. The detector function notices the new ETag and loads it on its next run.

ALB and CloudFront deliver gzip objects; the objects are read as one stream of gzip members
(which gzip reads as one file), so an object that is not gzip is left out with a log line.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from mlguard.aws.clients import aws_client
from mlguard.aws.dynamodb import DynamoDecisionStore
from mlguard.aws.lambda_handler import NOT_LOGS
from mlguard.aws.settings import RetrainSettings
from mlguard.decisions.policy import ALERT, BLOCK
from mlguard.detectors.model import build_baseline, save_model
from mlguard.errors import InputError, UsageError
from mlguard.features.aggregate import WINDOW_SECS
from mlguard.features.catalogue import FEATURE_NAMES
from mlguard.pipeline import read_logs

log = logging.getLogger("mlguard.aws")
log.setLevel(logging.INFO)

GZIP_MAGIC = b"\x1f\x8b"


def _say(event: str, **fields: Any) -> None:
    log.info(json.dumps({"event": event, **fields}, ensure_ascii=True, default=str))


def recent_objects(s3: Any, settings: RetrainSettings, now: datetime) -> list[tuple[datetime, str, int]]:
    """(last modified, key, size) of the objects to learn from, oldest first."""
    since = now - timedelta(days=settings.days)
    found = []
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=settings.log_bucket, Prefix=settings.log_prefix
    )
    for page in pages:
        for item in page.get("Contents", []):
            key = item["Key"]
            if key.endswith("/") or key.rsplit("/", 1)[-1] in NOT_LOGS or item["LastModified"] < since:
                continue
            found.append((item["LastModified"], key, int(item["Size"])))
    chosen, total = [], 0
    for item in sorted(found, reverse=True):  # newest first, within the byte budget
        if total + item[2] > settings.max_bytes and chosen:
            break
        chosen.append(item)
        total += item[2]
    return sorted(chosen)


class _GzipObjects(io.RawIOBase):
    """The gzip objects one after another, as one stream of gzip members."""

    def __init__(self, s3: Any, bucket: str, keys: list[str]) -> None:
        self._s3, self._bucket = s3, bucket
        self._bodies: Iterator[tuple[str, Any]] = ((k, self._open(k)) for k in keys)
        self._body: Any = None
        self._head = b""
        self.skipped: list[str] = []

    def _open(self, key: str) -> Any:
        return self._s3.get_object(Bucket=self._bucket, Key=key)["Body"]

    def readable(self) -> bool:
        return True

    def _next(self) -> bool:
        for key, body in self._bodies:
            head = body.read(len(GZIP_MAGIC))
            if head == GZIP_MAGIC:
                self._body, self._head = body, head
                return True
            body.close()
            if head:
                self.skipped.append(key)
                _say("retrain_skipped", object=f"s3://{self._bucket}/{key}", why="not gzip")
        return False

    def readinto(self, buffer: Any) -> int:
        while True:
            if self._body is None and not self._next():
                return 0
            if self._head:
                n = min(len(buffer), len(self._head))
                buffer[:n] = self._head[:n]
                self._head = self._head[n:]
                return n
            data = self._body.read(len(buffer))
            if data:
                buffer[: len(data)] = data
                return len(data)
            self._body.close()
            self._body = None

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
        super().close()


def handle(
    event: Mapping[str, Any] | None = None,
    context: Any = None,
    *,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> dict[str, Any]:
    settings = RetrainSettings.from_env(env)
    now = (clock or (lambda: datetime.now(UTC)))().replace(microsecond=0)
    s3 = aws_client("s3", settings.endpoint_url)
    source = f"s3://{settings.log_bucket}/{settings.log_prefix}"
    objects = recent_objects(s3, settings, now)
    if not objects:
        raise InputError(f"no log object under {source} from the last {settings.days} day(s)")
    stream = _GzipObjects(s3, settings.log_bucket, [key for _, key, _ in objects])
    result = read_logs(["-"], log_format=settings.log_format, stdin=stream)
    table = result.table
    if table is None or table.frame.height < 2:
        raise UsageError(f"a baseline needs at least two clients; the logs under {source} hold fewer")
    flagged: set[str] = set()
    if settings.table:
        store = DynamoDecisionStore(settings.table, aws_client("dynamodb", settings.endpoint_url))
        flagged = {d.client for d in store.list() if d.verdict in (ALERT, BLOCK)}
    normal = table.frame.filter(~pl.col("client").is_in(sorted(flagged)))
    if normal.height < 2:
        raise UsageError(f"fewer than two clients under {source} are free of alerts and blocks")
    when = "%Y-%m-%dT%H:%M:%SZ"
    meta = {
        "training_first": normal["first_seen"].min().strftime(when),  # type: ignore[union-attr]
        "training_last": normal["last_seen"].max().strftime(when),  # type: ignore[union-attr]
        "training_clients": normal.height,
        "training_lines": result.stats.lines,
        "window_secs": WINDOW_SECS,
        "learned_from": source,
        "objects": len(objects) - len(stream.skipped),
        "left_out_flagged": table.frame.height - normal.height,
    }
    baseline = build_baseline(normal.select(FEATURE_NAMES).to_numpy(), table.rarity, table.priors, meta)
    with tempfile.TemporaryDirectory(prefix="mlguard-train-") as folder:
        path = Path(folder) / "model.npz"
        save_model(baseline, path)
        s3.upload_file(str(path), settings.model_bucket, settings.model_key)
    summary = {
        "model": f"s3://{settings.model_bucket}/{settings.model_key}",
        "lines": result.stats.lines,
        "unparsed": result.stats.unparsed,
        "skipped_objects": [f"s3://{settings.log_bucket}/{k}" for k in stream.skipped],
        **meta,
    }
    _say("retrained", **summary)
    return summary


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The scheduled Lambda entry point (settings: mlguard.aws.settings)."""
    return handle(event, context, env=os.environ)
