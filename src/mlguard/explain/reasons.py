"""Short reasons a person can check, from the features that pushed a score the most."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from mlguard.features.aggregate import RATIO_COUNTS
from mlguard.features.catalogue import FEATURES

MAX_REASONS = 3
MIN_CONTRIBUTION = 1.0  # the client is in the top 10% of the baseline on that feature
_EXAMPLE_CHARS = 80
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_RAW_IN_JSON = re.compile("[\x7f-\x9f]")


def safe_text(value: object, limit: int | None = None) -> str:
    """Attacker-controlled text made safe to print: control characters shown as escapes.

    Strips nothing silently: ESC becomes the four characters '\\x1b', so a person sees that
    the log held an escape sequence instead of having their terminal obey it.
    """
    text = "" if value is None else str(value)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def ndjson_of(frame: pl.DataFrame) -> str:
    """`frame` as JSON Lines written by Polars, DEL and C1 controls escaped (escape_json_text).

    Polars looks for them in the text columns first (a vectorised search, ~30 ms on 166,000
    findings): only when one holds some is the written text scanned in Python (~0.5 s)."""
    text = frame.write_ndjson()
    return escape_json_text(text) if _holds_raw_controls(frame) else text


def _holds_raw_controls(frame: pl.DataFrame) -> bool:
    def search(column: pl.Expr, dtype: pl.DataType) -> pl.Expr | None:
        if dtype == pl.String:
            return column.str.contains(_RAW_IN_JSON.pattern).fill_null(False)
        if isinstance(dtype, pl.List):
            inner = search(pl.element(), dtype.inner)
            return None if inner is None else column.list.eval(inner).list.any().fill_null(False)
        if isinstance(dtype, pl.Struct):
            found = [search(column.struct.field(f.name), f.dtype) for f in dtype.fields]
            found = [f for f in found if f is not None]
            return pl.any_horizontal(found) if found else None
        return None  # numbers, dates, booleans hold no text

    found = (search(pl.col(name), dtype) for name, dtype in frame.schema.items())
    checks = [column.any() for column in found if column is not None]
    return bool(frame.select(pl.any_horizontal(checks)).item()) if checks else False


def escape_json_text(text: str) -> str:
    """JSON text with DEL and C1 controls escaped too (JSON escapes only C0 controls, and a
    terminal that `cat`s the file would obey C1 ones). They can only occur inside strings."""
    if text.isascii() and "\x7f" not in text:  # the usual case: skip the scan of 100s of MB
        return text
    return _RAW_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _only(part: float, whole: float) -> bool:
    return whole == 1 and part == 1


def _pct(part: float, whole: float) -> str:
    if _only(part, whole):
        return "its only request"  # "1 of 1 requests (100%)" says the same thing worse
    return f"{part:.0f} of {whole:.0f} requests ({100.0 * part / max(whole, 1):.0f}%)"


def _count(n: float, noun: str) -> str:
    """'1 request', '3 requests' ('path' -> 'paths'; nouns here are regular)."""
    return f"{n:.0f} {noun}" + ("" if round(n) == 1 else "s")


def _static(r: dict[str, Any]) -> str:
    if r["n_static"] == 0:
        if r["requests"] == 1:
            return "its only request loaded no static asset"
        return f"none of {r['requests']:.0f} requests loaded static assets"
    return f"only {_pct(r['n_static'], r['requests'])} loaded static assets"


def _example(row: dict[str, Any], key: str, count: str | None = None, lead: str | None = None) -> str:
    """' such as /x', or ': /x' when the `count` column says there was just one."""
    value = row.get(key)
    if not value:
        return ""
    if lead is None:
        lead = ":" if count is None or row.get(count) == 1 else " such as"
    return f"{lead} {safe_text(value, _EXAMPLE_CHARS)}"


def _minutes(row: dict[str, Any]) -> str:
    return f"{row['_window_secs'] // 60:.0f} minutes"


_TEMPLATES: dict[str, Callable[[dict[str, Any]], str]] = {
    "requests": lambda r: _count(r["requests"], "request"),
    "peak_window_requests": lambda r: f"{_count(r['peak_window_requests'], 'request')} within {_minutes(r)}",
    "requests_per_minute": lambda r: f"{_count(r['requests_per_minute'], 'request')} per minute",
    "ratio_4xx": lambda r: f"{_pct(r['n_4xx'], r['requests'])} answered 4xx",
    "ratio_404": lambda r: (
        f"{_pct(r['n_404'], r['requests'])} answered 404{_example(r, 'example_404', 'n_404')}"
    ),
    "ratio_401_403": lambda r: f"{_pct(r['n_401_403'], r['requests'])} answered 401 or 403",
    "ratio_429": lambda r: f"{_pct(r['n_429'], r['requests'])} answered 429 (rate limited)",
    "ratio_5xx": lambda r: f"{_pct(r['n_5xx'], r['requests'])} answered 5xx",
    "peak_window_errors": lambda r: f"{_count(r['peak_window_errors'], 'client error')} within {_minutes(r)}",
    "distinct_paths": lambda r: _count(r["distinct_paths"], "distinct path"),
    "distinct_error_paths": lambda r: (
        f"{_count(r['distinct_error_paths'], 'distinct path')} answered 4xx"
        + _example(r, "example_404", "distinct_error_paths")
    ),
    "distinct_path_ratio": lambda r: (
        f"{_count(r['distinct_paths'], 'distinct path')} in {_count(r['requests'], 'request')}"
    ),
    "ratio_post": lambda r: (
        f"{_pct(r['n_post'], r['requests'])} {'was' if _only(r['n_post'], r['requests']) else 'were'} POST"
    ),
    "repeated_posts": lambda r: f"{_count(r['repeated_posts'], 'POST request')} to one path",
    "ratio_unusual_method": lambda r: (
        f"{_pct(r['n_unusual_method'], r['requests'])} used "
        + ("an unusual method" if _only(r["n_unusual_method"], r["requests"]) else "unusual methods")
    ),
    "ratio_static": _static,
    "ratio_sensitive": lambda r: (
        f"{_count(r['n_sensitive'], 'request')} to "
        + ("a sensitive path" if r["n_sensitive"] == 1 else "sensitive paths")
        + _example(r, "example_sensitive", "n_sensitive")
    ),
    "ratio_injection": lambda r: (
        # "such as" even for one: the example may be a header ("referer: ${jndi:...").
        f"{_count(r['n_injection'], 'request')} with injection markers"
        + _example(r, "example_injection", lead=" such as")
    ),
    "path_length_mean": lambda r: f"request targets of {r['path_length_mean']:.0f} characters on average",
    "query_length_max": lambda r: f"a query string of {r['query_length_max']:.0f} characters",
    "ratio_no_user_agent": lambda r: f"{_pct(r['n_no_user_agent'], r['requests'])} sent no user agent",
    "ratio_tool_user_agent": lambda r: f'user agent "{safe_text(r.get("top_user_agent"), 60)}"',
    "distinct_user_agents": lambda r: _count(r["distinct_user_agents"], "different user agent"),
    "ratio_no_referer": lambda r: f"{_pct(r['n_no_referer'], r['requests'])} sent no referer",
    "gap_regularity": lambda r: "requests at machine-regular intervals",
    "bytes_per_request": lambda r: f"only {r['bytes_per_request']:.0f} bytes per response on average",
    "ratio_rare_paths": lambda r: (
        f"{_pct(r['n_rare_paths'], r['requests'])} to paths no other client requested"
    ),
    "payload_rarity_max": lambda r: (
        f"a request shaped like nothing else on this site{_example(r, 'example_rare')}"
    ),
    "ratio_rare_payloads": lambda r: (
        f"{_pct(r['n_rare_payloads'], r['requests'])} shaped like nothing else on this site"
    ),
}

assert set(_TEMPLATES) == {f.name for f in FEATURES}, "every feature needs a reason template"


def ranked_features(contribution: np.ndarray, deviation: np.ndarray) -> list[int]:
    """Feature indexes that pushed this client's score, strongest first."""
    order = np.lexsort((-deviation, -contribution))
    return [int(j) for j in order if deviation[j] > 0 and contribution[j] >= MIN_CONTRIBUTION]


NOTHING_FLAGGED = "no feature is on its suspicious side; flagged only by the alert threshold"


def reasons_for(
    row: dict[str, Any],
    contribution: np.ndarray,
    deviation: np.ndarray,
    limit: int = MAX_REASONS,
    when_none: str = NOTHING_FLAGGED,
) -> list[str]:
    """1-3 reasons for one client, from its own counts."""
    out: list[str] = []
    seen_status = False
    ranked = ranked_features(contribution, deviation)
    if not ranked:
        # Too few clients for any tail to be rare: fall back to the largest deviations.
        ranked = [int(j) for j in np.argsort(-deviation, kind="stable") if deviation[j] > 0]
    if not ranked:
        return [when_none]
    for j in ranked:
        name = FEATURES[j].name
        # A share pulled above the site's typical value by shrinkage alone (the client sent none
        # of it) is no reason: "0 requests with injection markers" explains nothing.
        count = RATIO_COUNTS.get(name)
        if count is not None and FEATURES[j].direction > 0 and not row.get(count):
            continue
        # 4xx and 404 usually say the same thing twice: keep the more specific one.
        if name in ("ratio_4xx", "ratio_404", "peak_window_errors"):
            if seen_status:
                continue
            seen_status = True
        out.append(_TEMPLATES[name](row))
        if len(out) == limit:
            break
    return out


def describe(name: str, row: dict[str, Any]) -> str:
    return _TEMPLATES[name](row)


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"within {max(seconds, 1):.0f} seconds"
    if seconds < 2 * 3600:
        return f"within {seconds / 60:.0f} minutes"
    if seconds < 2 * 86400:
        return f"over {seconds / 3600:.0f} hours"
    return f"over {seconds / 86400:.0f} days"


def _plural(n: float, word: str) -> str:
    return f"{n:g} {word}" + ("" if n == 1 else "s")


def campaign_behaviour(row: dict[str, Any]) -> str:
    """What the members of a campaign share, in a person's words, e.g. 'each sent 3 requests,
    mostly POST /login (no page assets), within 4 minutes, rotating 12 user agents'."""
    low, high = row["requests_min"], row["requests_max"]
    sent = (
        f"each sent {_plural(low, 'request')}"
        if low == high
        else f"sent {low}-{high} requests each (median {row['requests_median']:g})"
    )
    parts = [sent]
    if row["shared_by"] == "path":
        method = "POST " if row["shared_post"] else ""
        # The shared template folds digits and case ("/winnt/system0/cmd.exe"): show a real
        # path, and say "paths like" where the members' paths may differ from it in those.
        example = row.get("shared_example")
        shown = example if example is not None else row["shared"]
        like = "paths like " if example is not None and example.lower() != row["shared"] else ""
        path = safe_text(shown, _EXAMPLE_CHARS) or "(an empty path)"
        parts[0] += f", {'to' if high == 1 else 'mostly'} {method}{like}{path}"
    answered = [
        ("share_404", "answered 404"),
        ("share_401_403", "answered 401/403"),
        ("share_4xx", "answered 4xx"),
        ("share_5xx", "answered 5xx"),
    ]
    for key, words in answered:
        if row[key] >= 0.5:
            parts.append(f"{100 * row[key]:.0f}% {words}")
            break
    if row["share_post"] >= 0.2 and not (row["shared_by"] == "path" and row["shared_post"]):
        parts.append(f"{100 * row['share_post']:.0f}% POST")
    if row["share_static"] == 0:
        parts.append("no page assets")
    seconds = (row["last_seen"] - row["first_seen"]).total_seconds()
    parts.append(_span(seconds))
    if row["share_no_user_agent"] >= 0.5:
        parts.append("sending no user agent")
    elif row["shared_by"] == "user agent":
        parts.append(f'with the same user agent "{safe_text(row["shared"], 60)}"')
    elif row["user_agents"] == 1:
        parts.append("with the same user agent")
    else:
        parts.append(f"rotating {row['user_agents']} user agents")
    if row["networks"] * 2 <= row["clients"]:
        parts.append(f"from {_plural(row['networks'], 'network')} (/24 or /48)")
    return ", ".join(parts)


def campaign_reason(row: dict[str, Any]) -> str:
    """The reason a member of a campaign is flagged, led by the campaign's size."""
    return f"one of {row['clients']} clients that {campaign_behaviour(row)} (campaign {row['campaign']})"
