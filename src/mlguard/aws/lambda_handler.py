"""The Lambda function: score each ALB or CloudFront log object that lands in S3.

For every S3 `ObjectCreated` record of the event, the object is streamed (gzip or plain, never
to disk), parsed and scored with the pipeline of `mlguard detect --model` (`read_logs`, then
`score_table` against the baseline in S3, campaigns included), and its flagged clients are
written as JSON Lines (the fields of `detect --json`) to the findings prefix, one object per log
object. Their alerts and blocks are recorded in DynamoDB (`mlguard.aws.dynamodb`, the rules of
the SQLite decision store: refreshed, not repeated; blocks with TTLs; a person's allow revokes
and protects). In enforce mode the WAFv2 IP set is then made to hold exactly the active blocks,
by the same `AwsWafEnforcer` that `mlguard enforce` and `mlguard watch` use.

Redelivery: S3 delivers events at least once. Each object (bucket, key and version, else the
event's sequencer) is claimed in DynamoDB before it is read and marked done after: a second
delivery changes nothing (no second findings object, no decision touched, the IP set as it was)
and is reported as `skipped`. A claim is a lease, so a copy of the event processed at the same
time waits for the first.

Failures: an object that cannot be used (not a log, corrupt gzip, deleted) is reported in the
result and the log as `failed` and marked done, and the other records are processed. A failure
worth retrying (AWS throttling, a network error) gives the object's claim back and, after the
other records, makes the invocation fail so that Lambda delivers the event again; what was done
already is skipped then.

A scheduled event (EventBridge) only expires decisions and, in enforce mode, syncs the IP set,
so blocks leave it when their TTL ends even while no log arrives.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from mlguard.aws.clients import aws_client, error_code
from mlguard.aws.dynamodb import DONE, DynamoDecisionStore
from mlguard.aws.settings import AwsSettings
from mlguard.decisions.crawlers import CrawlerRanges, CrawlerVerifier
from mlguard.decisions.policy import ALERT, BLOCK, Policy, parse_networks
from mlguard.detectors.model import Baseline, load_model
from mlguard.errors import InputError, MLGuardError, UsageError
from mlguard.explain.reasons import safe_text
from mlguard.findings import json_lines
from mlguard.pipeline import read_logs, score_table
from mlguard.sources.s3 import ObjectStream

log = logging.getLogger("mlguard.aws")
log.setLevel(logging.INFO)

CLAIM_LEASE = timedelta(minutes=15)  # Lambda's longest run: a claim older than that was abandoned
# Objects that are not access logs: the test file ALB writes when logging is switched on.
NOT_LOGS = ("ELBAccessLogTestFile",)
# AWS error codes that mean the object itself cannot be had (retrying will not help).
GONE = {"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "AccessDenied", "InvalidObjectState", "404", "403"}

_models: dict[tuple[str, str], tuple[str, Baseline]] = {}  # (bucket, key) -> (ETag, model)
_ranges: list[CrawlerRanges] = []


def _say(event: str, **fields: Any) -> None:
    """One JSON log line (CloudWatch); ensure_ascii, so attacker-controlled text stays inert."""
    log.info(json.dumps({"event": event, **fields}, ensure_ascii=True, default=str))


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str
    version: str | None
    sequencer: str | None
    etag: str | None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def tag(self) -> str:
        """What tells this upload from another of the same key."""
        return self.version or self.sequencer or (self.etag or "").strip('"') or "-"

    @property
    def identity(self) -> str:
        return f"{self.bucket}/{self.key}#{self.tag}"


def s3_objects(event: Mapping[str, Any]) -> tuple[list[S3Object], list[dict[str, Any]]]:
    """The created objects of an S3 event notification, and the records left alone (why)."""
    objects, ignored = [], []
    for record in event.get("Records") or []:
        name = str(record.get("eventName", ""))
        if record.get("eventSource") != "aws:s3" or not name.startswith("ObjectCreated:"):
            ignored.append(
                {"record": safe_text(name or record.get("eventSource"), 80), "why": "not ObjectCreated"}
            )
            continue
        s3 = record.get("s3") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        item = s3.get("object") or {}
        raw_key = item.get("key")
        if not bucket or not raw_key:
            ignored.append({"record": name, "why": "no bucket or key"})
            continue
        # S3 URL-encodes the key in events (a space arrives as '+').
        key = urllib.parse.unquote_plus(raw_key)
        objects.append(S3Object(bucket, key, item.get("versionId"), item.get("sequencer"), item.get("eTag")))
    return objects, ignored


def _baseline(settings: AwsSettings) -> Baseline:
    """The model in S3, loaded once per ETag: a warm invocation reuses it after one HeadObject."""
    s3 = aws_client("s3", settings.endpoint_url)
    where = (settings.model_bucket, settings.model_key)
    uri = f"s3://{settings.model_bucket}/{settings.model_key}"
    try:
        etag = s3.head_object(Bucket=where[0], Key=where[1])["ETag"]
    except Exception as exc:
        if error_code(exc) is None:
            raise
        raise MLGuardError(f"cannot read the model {uri}: {error_code(exc)}") from None
    cached = _models.get(where)
    if cached is not None and cached[0] == etag:
        return cached[1]
    with tempfile.TemporaryDirectory(prefix="mlguard-model-") as folder:
        path = Path(folder) / "model.npz"
        # IfMatch: the bytes of the version whose ETag is cached, even if it is replaced meanwhile.
        body = s3.get_object(Bucket=where[0], Key=where[1], IfMatch=etag)["Body"]
        with open(path, "wb") as handle:
            for block in iter(lambda: body.read(1024 * 1024), b""):
                handle.write(block)
        baseline = load_model(path)  # numpy arrays and JSON only, allow_pickle=False
    _models[where] = (etag, baseline)
    _say("model_loaded", model=uri, etag=etag, clients=baseline.scorer.train_matrix_.shape[0])
    return baseline


def _crawler_ranges() -> CrawlerRanges:
    if not _ranges:
        _ranges.append(CrawlerRanges.load())
    return _ranges[0]


def _policy(settings: AwsSettings, store: DynamoDecisionStore, dns: bool) -> Policy:
    return Policy(
        settings.alert_threshold,
        settings.block_threshold,
        settings.min_block_requests,
        allow=[*parse_networks(settings.allow), *store.allowed()],  # a person's allow holds at once
        crawlers=CrawlerVerifier(_crawler_ranges(), dns=dns),
    )


def _findings_key(settings: AwsSettings, obj: S3Object) -> str:
    # One key per log object and upload: a second run writes the same key, never a second object.
    return f"{settings.findings_prefix}{obj.bucket}/{obj.key}.{obj.tag}.jsonl"


def _is_ours(settings: AwsSettings, obj: S3Object) -> bool:
    """Findings written into the log bucket must not trigger the function again."""
    return obj.bucket == settings.findings_bucket and obj.key.startswith(settings.findings_prefix)


class _Retry(Exception):
    """A failure worth another delivery of the event."""


def _score_object(
    obj: S3Object, settings: AwsSettings, store: DynamoDecisionStore, baseline: Baseline, now: datetime
) -> dict[str, Any]:
    s3 = aws_client("s3", settings.endpoint_url)
    version = {"VersionId": obj.version} if obj.version else {}
    try:
        body = s3.get_object(Bucket=obj.bucket, Key=obj.key, **version)["Body"]
    except Exception as exc:
        code = error_code(exc)
        if code in GONE:
            raise InputError(f"cannot read {obj.uri}: {code}") from None
        raise _Retry(f"cannot read {obj.uri}: {code or type(exc).__name__}") from exc
    started = time.perf_counter()
    try:
        result = read_logs(
            ["-"], log_format=settings.log_format, chunk_bytes=settings.chunk_bytes, stdin=ObjectStream(body)
        )
    finally:
        body.close()
    stats = result.stats
    problems = [safe_text(p.message, 200) for p in stats.problems]
    detection = score_table(
        result, _policy(settings, store, settings.crawler_dns), baseline, campaigns=settings.campaigns
    )
    flagged = detection.findings.filter(pl.col("verdict").is_in([ALERT, BLOCK]))
    findings_uri = None
    if flagged.height:
        key = _findings_key(settings, obj)
        s3.put_object(
            Bucket=settings.findings_bucket,
            Key=key,
            Body=json_lines(flagged).encode(),
            ContentType="application/x-ndjson",
        )
        findings_uri = f"s3://{settings.findings_bucket}/{key}"
    counts = store.record(flagged, now)
    verdicts = flagged["verdict"].value_counts()
    by_verdict = dict(zip(verdicts["verdict"].to_list(), verdicts["count"].to_list(), strict=True))
    return {
        "object": obj.uri,
        "version": obj.tag,
        "format": ", ".join(sorted(set(stats.formats.values()))),
        "lines": stats.lines,
        "unparsed": stats.unparsed,
        "problems": problems,
        "clients": detection.findings.height,
        "alerts": by_verdict.get(ALERT, 0),
        "blocks": by_verdict.get(BLOCK, 0),
        "findings": findings_uri,
        "decisions": counts,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _enforce(settings: AwsSettings, store: DynamoDecisionStore) -> dict[str, Any]:
    """Make the IP set(s) hold exactly the active blocks: the enforcer `mlguard enforce` uses."""
    from mlguard.enforcers.aws_waf import AwsWafEnforcer

    assert settings.ipv4_set is not None  # checked by AwsSettings
    enforcer = AwsWafEnforcer(
        ipv4_set=settings.ipv4_set,
        ipv6_set=settings.ipv6_set,
        endpoint_url=settings.endpoint_url,
        # Allowlisted, private and published-crawler addresses never enter the set, whatever decided.
        policy=_policy(settings, store, dns=False),
        client=aws_client("wafv2", settings.endpoint_url),
    )
    try:
        result = enforcer.sync(store.list())
    finally:
        enforcer.close()
    return {
        "sent": result.sent,
        "unchanged": result.unchanged,
        "failed": result.failed,
        "messages": [safe_text(m, 300) for m in result.messages],
    }


def _scheduled(event: Mapping[str, Any]) -> bool:
    return event.get("source") == "aws.events" or event.get("detail-type") == "Scheduled Event"


def handle(
    event: Mapping[str, Any],
    context: Any = None,
    *,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> dict[str, Any]:
    """`handler`, with the environment and the clock given (tests)."""
    settings = AwsSettings.from_env(env)
    now = (clock or (lambda: datetime.now(UTC)))().replace(microsecond=0)
    store = DynamoDecisionStore(
        settings.table,
        aws_client("dynamodb", settings.endpoint_url),
        history=timedelta(days=settings.history_days),
        threads=settings.dynamodb_threads,
    )
    report: dict[str, Any] = {"mode": settings.mode, "processed": [], "skipped": [], "failed": []}
    objects, ignored = ([], []) if _scheduled(event) else s3_objects(event)
    report["ignored"] = ignored
    retry: list[str] = []
    baseline = None
    for obj in objects:
        if _is_ours(settings, obj) or obj.key.rsplit("/", 1)[-1] in NOT_LOGS:
            report["skipped"].append({"object": obj.uri, "why": "not an access log"})
            continue
        claim, before = store.claim(obj.identity, now, CLAIM_LEASE)
        if claim != "claimed":
            why = "already processed" if claim == DONE else "being processed by another invocation"
            report["skipped"].append({"object": obj.uri, "version": obj.tag, "why": why, "before": before})
            _say("skipped", object=obj.uri, version=obj.tag, why=why)
            continue
        try:
            # Loaded once the first object is claimed, so a duplicate event costs no model read.
            baseline = baseline or _baseline(settings)
            outcome = _score_object(obj, settings, store, baseline, now)
        except (InputError, UsageError) as exc:  # this object: not a log we can read
            failure = {"object": obj.uri, "version": obj.tag, "error": safe_text(exc, 300)}
            store.finish(obj.identity, now, failure)
            report["failed"].append(failure)
            _say("failed", **failure)
            continue
        except Exception as exc:  # AWS errors, a bad model, a bug: the others go on, then a retry
            store.release(obj.identity)
            failure = {"object": obj.uri, "version": obj.tag, "error": safe_text(exc, 300), "retry": True}
            report["failed"].append(failure)
            retry.append(str(failure["error"]))
            log.exception("failed, will be retried: %s", json.dumps(failure, ensure_ascii=True))
            continue
        store.finish(obj.identity, now, outcome)
        report["processed"].append(outcome)
        _say("processed", **outcome)
    report["expired"] = store.expire(now)
    if settings.enforce:
        report["enforced"] = _enforce(settings, store)
        _say("enforced", **report["enforced"])
    if retry:
        raise MLGuardError(f"{len(retry)} object(s) failed and will be retried: {retry[0]}")
    return report


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point (configured by environment variables, see mlguard.aws.settings)."""
    return handle(event, context, env=os.environ)
