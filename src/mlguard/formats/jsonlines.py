"""JSON access logs, one object per line: Caddy, Traefik's JSON format, and any JSON Lines log
given a field mapping (`--log-format 'jsonl:client=remote_addr,time=time,...'`).

Each record field is read with a JSONPath (`str.json_path_match`, vectorised; a line that is
not JSON gives nulls and is reported, never raises). A field may name several paths: the first
one present wins (Caddy's `client_ip`, set from trusted proxies, before its `remote_ip`).
Times may be epoch seconds (numbers) or ISO 8601 text.
"""

from __future__ import annotations

from typing import ClassVar

import polars as pl

from mlguard.errors import UsageError
from mlguard.formats.base import LogFormat, address_text, conform
from mlguard.schema import dash_null

# record field -> JSONPaths, first present wins
Mapping = dict[str, list[str]]
FIELDS = (
    "client",
    "time",
    "request",
    "method",
    "target",
    "protocol",
    "status",
    "bytes",
    "referer",
    "user_agent",
)


def _first(paths: list[str]) -> pl.Expr:
    line = pl.col("line")
    return pl.coalesce([dash_null(line.str.json_path_match(p)) for p in paths])


# Kubernetes container runtimes (CRI) write each line as "<time> stdout|stderr F|P <line>".
_CRI_PREFIX = r"^\d{4}-\d{2}-\d{2}T\S+ (?:stdout|stderr) [FP] "


def _time(text: pl.Expr) -> pl.Expr:
    epoch = text.cast(pl.Float64, strict=False)
    from_epoch = (epoch * 1_000_000).cast(pl.Int64).cast(pl.Datetime("us", "UTC"))
    from_text = text.str.to_datetime(time_zone="UTC", strict=False, time_unit="us")
    return pl.when(epoch.is_not_null()).then(from_epoch).otherwise(from_text)


class JsonFormat(LogFormat):
    """A JSON Lines access log read through a mapping of record fields to JSONPaths."""

    mapping: ClassVar[Mapping] = {}
    marker = "{"  # text every entry of this format holds (for `auto`, and to tell other lines apart)

    def __init__(self, name: str | None = None, mapping: Mapping | None = None) -> None:
        if name is not None:
            self.name = name
        if mapping is not None:
            self.mapping = mapping  # type: ignore[misc]  # per-instance mapping of `jsonl:`
        missing = [f for f in ("client", "time", "status") if f not in self.mapping]
        if "request" not in self.mapping and "target" not in self.mapping:
            missing.append("request (or target)")
        if missing:
            raise UsageError(f"the JSON field mapping has no {', '.join(missing)}")

    def _request(self) -> pl.Expr:
        if "request" in self.mapping:
            return _first(self.mapping["request"])
        parts = [
            _first(self.mapping["method"]) if "method" in self.mapping else pl.lit("-"),
            _first(self.mapping["target"]),
        ]
        if "protocol" in self.mapping:
            parts.append(_first(self.mapping["protocol"]))
        return pl.concat_str(parts, separator=" ", ignore_nulls=True)

    def plan(self, lines: pl.LazyFrame) -> pl.LazyFrame:
        # the JSON object of a line written through a container runtime starts after its prefix
        lines = lines.with_columns(pl.col("line").alias("_raw"), pl.col("line").str.replace(_CRI_PREFIX, ""))

        def field(name: str) -> pl.Expr:
            return _first(self.mapping[name]) if name in self.mapping else pl.lit(None, pl.String)

        status_text = field("status")
        frame = lines.with_columns(
            address_text(field("client")).str.to_lowercase().alias("client"),
            _time(field("time")).alias("time"),
            self._request().alias("request"),
            status_text.cast(pl.Float64, strict=False).cast(pl.UInt16, strict=False).alias("status"),
            field("bytes").cast(pl.Float64, strict=False).cast(pl.UInt64, strict=False).alias("bytes"),
            field("referer").alias("referer"),
            field("user_agent").alias("user_agent"),
        )
        stripped = pl.col("line").str.strip_chars()
        reason = (
            pl.when(stripped == "")
            .then(pl.lit("empty line"))
            .when(~stripped.str.starts_with("{"))
            .then(pl.lit("not a JSON object"))
            .when(stripped.str.json_path_match("$").is_null())
            .then(pl.lit("not valid JSON"))
            .when(~stripped.str.contains(self.marker, literal=True))
            .then(pl.lit(f"not a {self.name} access log entry"))
            .when(pl.col("client").is_null())
            .then(pl.lit("no client address"))
            .when(pl.col("time").is_null())
            .then(pl.lit("bad timestamp"))
            .when(pl.col("status").is_null())
            .then(pl.lit("no status"))
            .otherwise(None)
        )
        # unparsed lines are reported as the log has them, prefix included
        frame = frame.with_columns(reason.alias("_reason")).with_columns(pl.col("_raw").alias("line"))
        return conform(frame, pl.col("_reason"))

    def sniff(self, sample: bytes | bytearray) -> float:
        # Only lines that hold this format's own keys count: any JSON would parse otherwise.
        if self.marker.encode() not in sample:
            return 0.0
        return super().sniff(sample)


class CaddyFormat(JsonFormat):
    """Caddy's default JSON access log (`log` directive, logger http.log.access)."""

    name = "caddy"
    marker = '"http.log.access'
    mapping: ClassVar[Mapping] = {
        "client": ["$.request.client_ip", "$.request.remote_ip"],
        "time": ["$.ts"],
        "method": ["$.request.method"],
        "target": ["$.request.uri"],
        "protocol": ["$.request.proto"],
        "status": ["$.status"],
        "bytes": ["$.size"],
        "referer": ["$.request.headers.Referer[0]"],
        "user_agent": ["$.request.headers['User-Agent'][0]"],
    }


class TraefikJsonFormat(JsonFormat):
    """Traefik's JSON access log (`accessLog.format: json`)."""

    name = "traefik-json"
    marker = '"ClientHost"'
    mapping: ClassVar[Mapping] = {
        "client": ["$.ClientHost"],
        "time": ["$.StartUTC", "$.time"],
        "method": ["$.RequestMethod"],
        "target": ["$.RequestPath"],
        "protocol": ["$.RequestProtocol"],
        "status": ["$.DownstreamStatus", "$.OriginStatus"],
        "bytes": ["$.DownstreamContentSize"],
        "referer": ["$['request_Referer']"],
        "user_agent": ["$['request_User-Agent']"],
    }


class EnvoyJsonFormat(JsonFormat):
    """Envoy's JSON access log with the default fields of Envoy Gateway (Kubernetes), also
    when written through a container runtime (`<time> stdout F {...}`)."""

    name = "envoy-json"
    marker = '"response_code"'
    mapping: ClassVar[Mapping] = {
        "client": ["$.downstream_remote_address", "$['x-forwarded-for']"],
        "time": ["$.start_time"],
        "method": ["$.method"],
        "target": ["$['x-envoy-origin-path']", "$['x-envoy-original-path']", "$[':path']", "$.path"],
        "protocol": ["$.protocol"],
        "status": ["$.response_code"],
        "bytes": ["$.bytes_sent"],
        "referer": ["$.referer"],
        "user_agent": ["$['user-agent']"],
    }


def parse_mapping(spec: str) -> JsonFormat:
    """`jsonl:client=remote_addr,time=time_iso8601,...`: record field = JSON key or JSONPath."""
    mapping: Mapping = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise UsageError(f"jsonl mapping item '{item}' is not FIELD=JSON_KEY")
        if key not in FIELDS:
            raise UsageError(
                f"unknown record field '{key}' in the jsonl mapping; expected one of: {', '.join(FIELDS)}"
            )
        paths = []
        for alternative in value.split("|"):
            alternative = alternative.strip()
            paths.append(alternative if alternative.startswith("$") else f"$['{alternative}']")
        mapping[key] = paths
    return JsonFormat(f"jsonl:{spec}", mapping)
