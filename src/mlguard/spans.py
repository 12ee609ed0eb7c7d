"""Spans of time as people type them: 30s, 15m, 4h, 7d, 2w (for --since, --ttl)."""

from __future__ import annotations

import re
from datetime import timedelta

_SPAN = re.compile(r"^(\d+)\s*([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_span(text: str) -> timedelta | None:
    """The span `text` names, or None when it is not one."""
    match = _SPAN.match(text.strip().lower())
    if match is None:
        return None
    return timedelta(seconds=int(match.group(1)) * _SECONDS[match.group(2)])
