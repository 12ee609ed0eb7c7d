"""Log formats: each turns a chunk of raw lines into the record schema plus the unparsed lines.

Formats register by name here, in one place. `auto` picks one from a sample of the input.
"""

from __future__ import annotations

from mlguard.errors import UsageError
from mlguard.formats.base import LogFormat, ParsedChunk
from mlguard.formats.clf import CombinedFormat, CommonFormat
from mlguard.formats.jsonlines import (
    CaddyFormat,
    EnvoyJsonFormat,
    JsonFormat,
    TraefikJsonFormat,
    parse_mapping,
)
from mlguard.formats.servers import (
    AlbFormat,
    CloudFrontFormat,
    ElbFormat,
    EnvoyFormat,
    IngressNginxFormat,
    TraefikFormat,
    VhostCombinedFormat,
)
from mlguard.formats.template import TemplateFormat, parse_spec

# In the order `auto` tries them: a richer format first, because a `combined` parser also
# takes a traefik or vhost_combined line (reading the vhost as the client).
FORMATS: dict[str, type[LogFormat]] = {
    "caddy": CaddyFormat,
    "envoy-json": EnvoyJsonFormat,
    "traefik-json": TraefikJsonFormat,
    "envoy": EnvoyFormat,
    "cloudfront": CloudFrontFormat,
    "alb": AlbFormat,
    "elb": ElbFormat,
    "ingress-nginx": IngressNginxFormat,
    "vhost_combined": VhostCombinedFormat,
    "traefik": TraefikFormat,
    "combined": CombinedFormat,
    "common": CommonFormat,
}

AUTO = "auto"


def get_format(name: str) -> LogFormat:
    """A built-in format by name, or one compiled from `nginx:…`, `apache:…`,
    `nginx-config:PATH[#NAME]` or `apache-config:PATH[#NAME]`."""
    if name.startswith("jsonl:"):
        return parse_mapping(name.removeprefix("jsonl:"))
    compiled = parse_spec(name)
    if compiled is not None:
        return compiled
    try:
        return FORMATS[name]()
    except KeyError:
        names = ", ".join([AUTO, *sorted(FORMATS), "nginx:FORMAT", "apache:FORMAT", "jsonl:MAPPING"])
        raise UsageError(f"unknown log format '{name}'; expected one of: {names}") from None


def detect_format(sample: bytes) -> LogFormat:
    """Pick the format that parses the most of a sample (ties go to the richer format)."""
    best: LogFormat | None = None
    best_score = -1.0
    for cls in FORMATS.values():
        fmt = cls()
        score = fmt.sniff(sample)
        if score > best_score:
            best, best_score = fmt, score
    if best is None or best_score <= 0:
        raise UsageError(
            "could not recognise the log format from the first lines; "
            "name it with --log-format (one of: " + ", ".join(sorted(FORMATS)) + ")"
        )
    return best


__all__ = [
    "AUTO",
    "FORMATS",
    "JsonFormat",
    "LogFormat",
    "ParsedChunk",
    "TemplateFormat",
    "detect_format",
    "get_format",
]
