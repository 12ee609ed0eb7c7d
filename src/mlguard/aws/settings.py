"""The Lambda functions' settings: environment variables, declared once here (name, default,
help). docs/deploy-aws.md documents each one, and a test checks that it does.

A bad value stops the invocation with one line naming the variable and the fix (UsageError).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from mlguard.decisions.policy import (
    DEFAULT_ALERT_THRESHOLD,
    DEFAULT_BLOCK_THRESHOLD,
    DEFAULT_MIN_BLOCK_REQUESTS,
)
from mlguard.errors import UsageError
from mlguard.explain.reasons import safe_text

ALERT_MODE, ENFORCE_MODE = "alert", "enforce"
MODES = (ALERT_MODE, ENFORCE_MODE)


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None  # None: required (or, for the optional ones, unset)
    help: str
    required: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("MLGUARD_MODEL_URI", None, "s3://bucket/key of the baseline model (mlguard train --out).", True),
    Setting("MLGUARD_FINDINGS_BUCKET", None, "Bucket the findings (JSON Lines) are written to.", True),
    Setting("MLGUARD_FINDINGS_PREFIX", "mlguard/findings/", "Key prefix of the findings objects."),
    Setting(
        "MLGUARD_TABLE",
        None,
        "DynamoDB table of decisions and processed objects (allow entries, TTLs, redelivery).",
        True,
    ),
    Setting("MLGUARD_MODE", ALERT_MODE, "alert: findings and decisions only; enforce: also the IP set."),
    Setting("MLGUARD_WAF_IPV4_SET_ARN", None, "ARN of the WAFv2 IPv4 IP set MLGuard owns (enforce mode)."),
    Setting("MLGUARD_WAF_IPV6_SET_ARN", None, "ARN of a WAFv2 IPv6 IP set (optional)."),
    Setting("MLGUARD_LOG_FORMAT", "auto", "Log format: auto, alb or cloudfront (any mlguard format)."),
    Setting("MLGUARD_ALERT_THRESHOLD", str(DEFAULT_ALERT_THRESHOLD), "Score from which a client is alerted."),
    Setting("MLGUARD_BLOCK_THRESHOLD", str(DEFAULT_BLOCK_THRESHOLD), "Score from which a client is blocked."),
    Setting(
        "MLGUARD_MIN_BLOCK_REQUESTS",
        str(DEFAULT_MIN_BLOCK_REQUESTS),
        "Requests a client (or its campaign) needs before it can be blocked.",
    ),
    Setting("MLGUARD_ALLOW", "", "Comma-separated addresses or CIDR ranges never blocked."),
    Setting("MLGUARD_CAMPAIGNS", "true", "Find campaigns (groups of clients acting as one): true or false."),
    Setting(
        "MLGUARD_CRAWLER_DNS",
        "true",
        "Confirm well-known crawlers by forward-confirmed reverse DNS (published ranges always).",
    ),
    Setting(
        "MLGUARD_CHUNK_BYTES",
        str(16 * 1024 * 1024),
        "Bytes of decompressed log parsed at a time (memory against speed).",
    ),
    Setting(
        "MLGUARD_HISTORY_DAYS",
        "30",
        "Days DynamoDB keeps ended decisions (for repeat offenders) and processed-object marks.",
    ),
    Setting(
        "MLGUARD_DYNAMODB_THREADS",
        "8",
        "Clients recorded in DynamoDB at a time (1 against moto, whose DynamoDB is not thread-safe).",
    ),
    Setting("MLGUARD_LOG_URI", None, "Retraining: s3://bucket/prefix of the logs to learn from."),
    Setting("MLGUARD_RETRAIN_DAYS", "7", "Retraining: learn from the objects of the last N days."),
    Setting(
        "MLGUARD_RETRAIN_MAX_BYTES",
        str(512 * 1024 * 1024),
        "Retraining: at most this many (compressed) bytes of the newest objects.",
    ),
    Setting("MLGUARD_AWS_ENDPOINT_URL", None, "Send every AWS call to this endpoint (tests, local stacks)."),
)
_BY_NAME = {s.name: s for s in SETTINGS}


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        return _BY_NAME[name].default
    return value.strip()


def _required(env: Mapping[str, str], name: str) -> str:
    value = _get(env, name)
    if value is None:
        raise UsageError(f"{name} is not set: {_BY_NAME[name].help}")
    return value


def _number(env: Mapping[str, str], name: str, kind: type[int] | type[float]) -> float:
    text = _get(env, name)
    try:
        return kind(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(f"{name} '{safe_text(text, 40)}' is not a {kind.__name__}") from None


def _flag(env: Mapping[str, str], name: str) -> bool:
    text = (_get(env, name) or "").lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise UsageError(f"{name} '{safe_text(text, 40)}' is not true or false")


def _s3_uri(env: Mapping[str, str], name: str, value: str) -> tuple[str, str]:
    bucket, _, key = value.removeprefix("s3://").partition("/")
    if not value.startswith("s3://") or not bucket:
        raise UsageError(f"{name} '{safe_text(value, 200)}' is not s3://bucket/key")
    return bucket, key


@dataclass(frozen=True)
class AwsSettings:
    model_bucket: str
    model_key: str
    findings_bucket: str
    findings_prefix: str
    table: str
    mode: str
    ipv4_set: str | None
    ipv6_set: str | None
    log_format: str
    alert_threshold: float
    block_threshold: float
    min_block_requests: int
    allow: list[str]
    campaigns: bool
    crawler_dns: bool
    chunk_bytes: int
    history_days: int
    dynamodb_threads: int
    endpoint_url: str | None

    @property
    def enforce(self) -> bool:
        return self.mode == ENFORCE_MODE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AwsSettings:
        env = os.environ if env is None else env
        mode = (_get(env, "MLGUARD_MODE") or "").lower()
        if mode not in MODES:
            raise UsageError(f"MLGUARD_MODE '{safe_text(mode, 40)}'; expected one of: {', '.join(MODES)}")
        ipv4_set = _get(env, "MLGUARD_WAF_IPV4_SET_ARN")
        if mode == ENFORCE_MODE and ipv4_set is None:
            raise UsageError("MLGUARD_MODE is enforce but MLGUARD_WAF_IPV4_SET_ARN is not set")
        model_uri = _required(env, "MLGUARD_MODEL_URI")
        model_bucket, model_key = _s3_uri(env, "MLGUARD_MODEL_URI", model_uri)
        chunk_bytes = int(_number(env, "MLGUARD_CHUNK_BYTES", int))
        history_days = int(_number(env, "MLGUARD_HISTORY_DAYS", int))
        if chunk_bytes < 1024 * 1024:
            raise UsageError(f"MLGUARD_CHUNK_BYTES {chunk_bytes} is below 1 MiB (1048576)")
        if history_days < 1:
            raise UsageError(f"MLGUARD_HISTORY_DAYS {history_days} must be at least 1")
        threads = int(_number(env, "MLGUARD_DYNAMODB_THREADS", int))
        if not 1 <= threads <= 64:
            raise UsageError(f"MLGUARD_DYNAMODB_THREADS {threads} must be between 1 and 64")
        allow = [part.strip() for part in (_get(env, "MLGUARD_ALLOW") or "").split(",") if part.strip()]
        return cls(
            model_bucket=model_bucket,
            model_key=model_key,
            findings_bucket=_required(env, "MLGUARD_FINDINGS_BUCKET"),
            findings_prefix=_get(env, "MLGUARD_FINDINGS_PREFIX") or "",
            table=_required(env, "MLGUARD_TABLE"),
            mode=mode,
            ipv4_set=ipv4_set,
            ipv6_set=_get(env, "MLGUARD_WAF_IPV6_SET_ARN"),
            log_format=_get(env, "MLGUARD_LOG_FORMAT") or "auto",
            alert_threshold=_number(env, "MLGUARD_ALERT_THRESHOLD", float),
            block_threshold=_number(env, "MLGUARD_BLOCK_THRESHOLD", float),
            min_block_requests=int(_number(env, "MLGUARD_MIN_BLOCK_REQUESTS", int)),
            allow=allow,
            campaigns=_flag(env, "MLGUARD_CAMPAIGNS"),
            crawler_dns=_flag(env, "MLGUARD_CRAWLER_DNS"),
            chunk_bytes=chunk_bytes,
            history_days=history_days,
            dynamodb_threads=threads,
            endpoint_url=_get(env, "MLGUARD_AWS_ENDPOINT_URL"),
        )


@dataclass(frozen=True)
class RetrainSettings:
    log_bucket: str
    log_prefix: str
    model_bucket: str
    model_key: str
    log_format: str
    days: int
    max_bytes: int
    table: str | None
    endpoint_url: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetrainSettings:
        env = os.environ if env is None else env
        log_bucket, log_prefix = _s3_uri(env, "MLGUARD_LOG_URI", _required(env, "MLGUARD_LOG_URI"))
        model_bucket, model_key = _s3_uri(env, "MLGUARD_MODEL_URI", _required(env, "MLGUARD_MODEL_URI"))
        days = int(_number(env, "MLGUARD_RETRAIN_DAYS", int))
        max_bytes = int(_number(env, "MLGUARD_RETRAIN_MAX_BYTES", int))
        if days < 1 or max_bytes < 1:
            raise UsageError("MLGUARD_RETRAIN_DAYS and MLGUARD_RETRAIN_MAX_BYTES must be at least 1")
        return cls(
            log_bucket=log_bucket,
            log_prefix=log_prefix,
            model_bucket=model_bucket,
            model_key=model_key,
            log_format=_get(env, "MLGUARD_LOG_FORMAT") or "auto",
            days=days,
            max_bytes=max_bytes,
            table=_get(env, "MLGUARD_TABLE"),
            endpoint_url=_get(env, "MLGUARD_AWS_ENDPOINT_URL"),
        )
