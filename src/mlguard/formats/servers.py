"""Built-in formats of other servers and load balancers, each compiled from its documented layout.

- `vhost_combined`: Apache's (Debian's default)
  `%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i"`.
- `traefik`: Traefik's CLF access log, combined plus `<requests> "<router>" "<service URL>" <ms>ms`.
- `alb`: AWS Application Load Balancer access logs (space-separated, quoted request and agent,
  the client as `ip:port`, the request with its full URL); newer fields AWS appends are kept.
- `elb`: AWS Classic Load Balancer access logs (HTTP listeners).
"""

from __future__ import annotations

import polars as pl

from mlguard.formats.base import LogFormat, address_text, conform
from mlguard.formats.template import (
    Piece,
    TemplateFormat,
    Variable,
    apache_pieces,
    nginx_pieces,
)
from mlguard.schema import dash_null

_ISO = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z"
_NUMBER = r"-?\d+(?:\.\d+)?|-"


def _v(column: str, pattern: str | None = None, role: str | None = None, time: str | None = None) -> Variable:
    return Variable(column, pattern, role, time)


def _balancer_fields(backend: str) -> list[Piece]:
    """The fields ALB and Classic ELB share, from the client to the TLS protocol; `backend` is
    what AWS calls the upstream in each (target, backend)."""
    return [
        _v("client_port", r"\S+", "client_port"),
        " ",
        _v(f"{backend}_port", r"\S+"),
        " ",
        _v("request_processing_time", _NUMBER),
        " ",
        _v(f"{backend}_processing_time", _NUMBER),
        " ",
        _v("response_processing_time", _NUMBER),
        " ",
        _v("status", r"\d{3}|-", "status"),
        " ",
        _v(f"{backend}_status_code", r"\d{3}|-"),
        " ",
        _v("received_bytes", r"\d+|-"),
        " ",
        _v("bytes", r"\d+|-", "bytes"),
        ' "',
        _v("request", None, "request"),
        '" "',
        _v("user_agent", None, "user_agent"),
        '" ',
        _v("ssl_cipher", r"\S+"),
        " ",
        _v("ssl_protocol", r"\S+"),
    ]


class _Builtin(TemplateFormat):
    """A named format whose pieces are fixed; subclasses set `name` and `pieces()`."""

    def __init__(self) -> None:
        self.dialect = "builtin"
        self.template = self.name
        self._compile(self.name, self.pieces())

    def pieces(self) -> list[Piece]:
        raise NotImplementedError


class VhostCombinedFormat(_Builtin):
    name = "vhost_combined"

    def pieces(self) -> list[Piece]:
        return apache_pieces('%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i"')


class TraefikFormat(_Builtin):
    name = "traefik"

    def pieces(self) -> list[Piece]:
        return nginx_pieces(
            '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
            '"$http_referer" "$http_user_agent" $request_count "$router_name" "$service_url" ${duration}ms'
        )


class IngressNginxFormat(_Builtin):
    """Kubernetes ingress-nginx's default `upstreaminfo` format (its documented log-format)."""

    name = "ingress-nginx"

    def pieces(self) -> list[Piece]:
        return nginx_pieces(
            '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
            '"$http_referer" "$http_user_agent" $request_length $request_time [$proxy_upstream_name] '
            "[$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length "
            "$upstream_response_time $upstream_status $req_id"
        )


_ALB_TAIL = [
    _v("request_creation_time", r"\S+"),
    ' "',
    _v("actions_executed", None),
    '" "',
    _v("redirect_url", None),
    '" "',
    _v("error_reason", None),
    '"',
]


class AlbFormat(_Builtin):
    name = "alb"
    absolute_targets = True

    def pieces(self) -> list[Piece]:
        return [
            _v("type", r"[a-z0-9]+"),
            " ",
            _v("time", _ISO, "time", "iso"),
            " ",
            _v("elb", r"\S+"),
            " ",
            *_balancer_fields("target"),
            " ",
            _v("target_group_arn", r"\S+"),
            ' "',
            _v("trace_id", None),
            '" "',
            _v("domain_name", None),
            '" "',
            _v("chosen_cert_arn", None),
            '" ',
            _v("matched_rule_priority", r"\S+"),
            " ",
            *_ALB_TAIL,
            # AWS appends fields over the years (targets, classification, conn_trace_id ...)
            _v("more_fields", r"(?: .*)?"),
        ]


class ElbFormat(_Builtin):
    name = "elb"
    absolute_targets = True

    def pieces(self) -> list[Piece]:
        return [
            _v("time", _ISO, "time", "iso"),
            " ",
            _v("elb", r"\S+"),
            " ",
            *_balancer_fields("backend"),
        ]


class EnvoyFormat(_Builtin):
    """Envoy's default text access log, also when written through a container runtime
    (`<time> stdout F <line>`, as in Kubernetes). It logs no peer address: the client is the
    right-most X-Forwarded-For entry (see --trusted-proxy)."""

    name = "envoy"

    def pieces(self) -> list[Piece]:
        return [
            _v("container_log", r"(?:\d{4}-\d{2}-\d{2}T\S+ (?:stdout|stderr) [FP] )?"),
            "[",
            _v("time", _ISO, "time", "iso"),
            '] "',
            _v("method", r"[A-Za-z_-]+|-", "method"),
            " ",
            _v("target", r"\S+", "target"),
            " ",
            _v("protocol", r"\S+", "protocol"),
            '" ',
            _v("status", r"\d{3}|0|-", "status"),
            " ",
            _v("response_flags", r"\S+"),
            " ",
            _v("bytes_received", r"\d+|-"),
            " ",
            _v("bytes", r"\d+|-", "bytes"),
            " ",
            _v("duration", r"\d+|-"),
            " ",
            _v("upstream_service_time", r"\S+"),
            ' "',
            _v("http_x_forwarded_for", None, "forwarded_client"),
            '" "',
            _v("user_agent", None, "user_agent"),
            '" "',
            _v("request_id", None),
            '" "',
            _v("authority", None),
            '" "',
            _v("upstream_host", None),
            '"',
        ]


__all__ = ["AlbFormat", "ElbFormat", "EnvoyFormat", "TraefikFormat", "VhostCombinedFormat"]


# CloudFront standard log fields, in the documented order (a file's "#Fields:" line names them).
CLOUDFRONT_FIELDS: tuple[str, ...] = (
    "date",
    "time",
    "x-edge-location",
    "sc-bytes",
    "c-ip",
    "cs-method",
    "cs(Host)",
    "cs-uri-stem",
    "sc-status",
    "cs(Referer)",
    "cs(User-Agent)",
    "cs-uri-query",
    "cs(Cookie)",
    "x-edge-result-type",
    "x-edge-request-id",
    "x-host-header",
    "cs-protocol",
    "cs-bytes",
    "time-taken",
    "x-forwarded-for",
    "ssl-protocol",
    "ssl-cipher",
    "x-edge-response-result-type",
    "cs-protocol-version",
    "fle-status",
    "fle-encrypted-fields",
    "c-port",
    "time-to-first-byte",
    "x-edge-detailed-result-type",
    "sc-content-type",
    "sc-content-len",
    "sc-range-start",
    "sc-range-end",
)


class CloudFrontFormat(LogFormat):
    """AWS CloudFront standard (access) logs: tab-separated, `#Version`/`#Fields` header lines,
    UTC date and time in two fields, user agent and referer percent-encoded by CloudFront."""

    name = "cloudfront"
    extra_columns = ("http_x_forwarded_for", "edge_location", "edge_result_type", "host")

    def plan(self, lines: pl.LazyFrame) -> pl.LazyFrame:
        index = {name: i for i, name in enumerate(CLOUDFRONT_FIELDS)}
        parts = pl.col("line").str.strip_suffix("\r").str.split("\t")

        def field(name: str) -> pl.Expr:
            return parts.list.get(index[name], null_on_oob=True)

        def decoded(name: str) -> pl.Expr:
            # CloudFront writes spaces (and a few more) percent-encoded in these fields
            return dash_null(
                field(name).str.replace_all("%20", " ", literal=True).str.replace_all("%2520", " ")
            )

        query = field("cs-uri-query")
        target = (
            pl.when(query.is_in(["-", ""]).fill_null(True))
            .then(field("cs-uri-stem"))
            .otherwise(field("cs-uri-stem") + "?" + query)
        )
        protocol = field("cs-protocol-version")
        frame = lines.with_columns(
            address_text(field("c-ip")).str.to_lowercase().alias("client"),
            (field("date") + " " + field("time"))
            .str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S", strict=False)
            .dt.replace_time_zone("UTC")
            .alias("time"),
            pl.concat_str([field("cs-method"), target, protocol], separator=" ", ignore_nulls=True).alias(
                "request"
            ),
            field("sc-status").cast(pl.UInt16, strict=False).alias("status"),
            field("sc-bytes").cast(pl.UInt64, strict=False).alias("bytes"),
            decoded("cs(Referer)").alias("referer"),
            decoded("cs(User-Agent)").alias("user_agent"),
            dash_null(field("x-forwarded-for")).alias("http_x_forwarded_for"),
            field("x-edge-location").alias("edge_location"),
            field("x-edge-result-type").alias("edge_result_type"),
            field("cs(Host)").alias("host"),
        )
        reason = (
            pl.when(pl.col("line").str.strip_chars() == "")
            .then(pl.lit("empty line"))
            .when(pl.col("line").str.starts_with("#"))
            .then(pl.lit("header line"))
            .when(parts.list.len() < 11)
            .then(pl.lit("not a cloudfront log line"))
            .when(pl.col("client").is_null())
            .then(pl.lit("no client address"))
            .when(pl.col("time").is_null())
            .then(pl.lit("bad timestamp"))
            .when(pl.col("status").is_null())
            .then(pl.lit("bad status"))
            .otherwise(None)
        )
        return conform(frame, reason, tuple(self.extra_columns))
