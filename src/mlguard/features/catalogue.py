"""Every per-client feature, declared once: name, direction, kind and why it matters.

`direction` is the side on which a value is suspicious: +1 means "more than usual is suspicious"
(404 share), -1 means "less than usual is suspicious" (share of static assets). The detectors
only ever see deviations on the suspicious side, so an unusually well-behaved client cannot be
flagged. docs/features.md is written from this table and a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FEATURE_VERSION = 4  # 4: header injection markers count in ratio_injection

Kind = Literal["count", "ratio", "rarity", "value"]


@dataclass(frozen=True)
class Feature:
    name: str
    kind: Kind  # count: log-scaled; ratio: 0..1 share, shrunk towards the population; rarity: 0..1
    direction: Literal[1, -1]
    label: str  # a few words a person reads in a table
    why: str
    how: str


FEATURES: tuple[Feature, ...] = (
    Feature(
        "requests",
        "count",
        1,
        "requests",
        "Scanners, brute-forcers and scrapers send far more requests than a visitor.",
        "Number of parsed requests from the client in the input.",
    ),
    Feature(
        "peak_window_requests",
        "count",
        1,
        "requests in busiest window",
        "A burst inside an otherwise quiet log: the most requests in one time window.",
        "Requests per client per window (default 600 s, aligned to the epoch); the maximum.",
    ),
    Feature(
        "requests_per_minute",
        "count",
        1,
        "requests per active minute",
        "Automated clients sustain rates no person reaches.",
        "requests / minutes between first and last request (at least one minute).",
    ),
    Feature(
        "ratio_4xx",
        "ratio",
        1,
        "share answered 4xx",
        "Probing for things that do not exist or are forbidden produces client errors "
        "(the response-code mix is what the original MLGuard was built on).",
        "Share of requests with status 400-499, shrunk towards the population share.",
    ),
    Feature(
        "ratio_404",
        "ratio",
        1,
        "share answered 404",
        "Path and file discovery (dirb, gobuster, vulnerability scanners) is mostly 404s.",
        "Share of requests with status 404, shrunk.",
    ),
    Feature(
        "ratio_401_403",
        "ratio",
        1,
        "share answered 401/403",
        "Brute-forcing protected areas and hitting forbidden files gives 401/403.",
        "Share of requests with status 401 or 403, shrunk.",
    ),
    Feature(
        "ratio_429",
        "ratio",
        1,
        "share answered 429",
        "A client already being rate-limited keeps going.",
        "Share of requests with status 429, shrunk.",
    ),
    Feature(
        "ratio_5xx",
        "ratio",
        1,
        "share answered 5xx",
        "Injection payloads and fuzzing break the application and cause server errors.",
        "Share of requests with status 500-599, shrunk.",
    ),
    Feature(
        "peak_window_errors",
        "count",
        1,
        "4xx in busiest error window",
        "A short error burst stands out even in a long log.",
        "Client errors (4xx) per client per window; the maximum.",
    ),
    Feature(
        "distinct_paths",
        "count",
        1,
        "distinct paths",
        "Discovery tools request many different paths, visitors few.",
        "Number of distinct normalised paths (digits and hex ids folded) the client requested.",
    ),
    Feature(
        "distinct_error_paths",
        "count",
        1,
        "distinct paths answered 4xx",
        "Breadth of probing: discovery tries many different paths that do not exist or are "
        "forbidden, while a misconfigured client or monitor repeats the same missing one.",
        "Number of distinct normalised paths the client requested that were answered 4xx.",
    ),
    Feature(
        "distinct_path_ratio",
        "ratio",
        1,
        "share of requests to new paths",
        "A scanner almost never repeats a path; a visitor and a monitor do.",
        "distinct_paths / requests, shrunk.",
    ),
    Feature(
        "ratio_post",
        "ratio",
        1,
        "share of POST",
        "Login brute force, comment spam and injection through forms are POST-heavy.",
        "Share of requests with method POST, shrunk.",
    ),
    Feature(
        "repeated_posts",
        "count",
        1,
        "POSTs to one path",
        "Password guessing and form spam submit the same form over and over; a person logs in "
        "or comments a few times.",
        "The most POST requests the client sent to any one normalised path.",
    ),
    Feature(
        "ratio_unusual_method",
        "ratio",
        1,
        "share of unusual methods",
        "OPTIONS, PROPFIND, CONNECT, PUT, TRACE and malformed requests are tool traffic. "
        "(HEAD is not counted: monitors and link checkers use it every day.)",
        "Share of requests whose method is not GET, POST or HEAD (or is missing), shrunk.",
    ),
    Feature(
        "ratio_static",
        "ratio",
        -1,
        "share of static assets",
        "Browsers load images, CSS and scripts; bots mostly do not.",
        "Share of requests for static assets (.css .js .png .jpg .gif .ico .svg .woff ...), shrunk.",
    ),
    Feature(
        "ratio_sensitive",
        "ratio",
        1,
        "share to sensitive paths",
        "Requests to admin panels, config, backup and version-control files are the "
        "hallmark of probing. A signal for the model, not a block list.",
        "Share of requests whose path holds a well-known sensitive name (.env, .git, "
        "wp-login.php, phpmyadmin, /etc/passwd, .bak ...), shrunk.",
    ),
    Feature(
        "ratio_injection",
        "ratio",
        1,
        "share with injection markers",
        "SQL injection, XSS, traversal and null-byte payloads carry characters that ordinary URLs do "
        "not; Log4Shell (${jndi:...}) and Shellshock (() {) payloads ride in the User-Agent or Referer.",
        "Share of requests whose path or query holds quotes, angle brackets, ../, %00 or "
        "their encoded forms, or SQL/shell keywords in a query, or whose user agent or referer holds "
        "an unambiguous payload marker (${, () {, <script, union select, ../ ...; in a referer, one that "
        "comes with $ ( < ' ../ or %00), shrunk. A "
        "request counts once wherever its markers are.",
    ),
    Feature(
        "path_length_mean",
        "count",
        1,
        "mean path+query length",
        "Payloads and overflow attempts make long request targets.",
        "Mean length in characters of path plus query.",
    ),
    Feature(
        "query_length_max",
        "count",
        1,
        "longest query",
        "One long payload in an otherwise ordinary session.",
        "Longest query string in characters.",
    ),
    Feature(
        "ratio_no_user_agent",
        "ratio",
        1,
        "share without user agent",
        "Scripts often send no User-Agent.",
        "Share of requests whose user agent is empty or '-', shrunk.",
    ),
    Feature(
        "ratio_tool_user_agent",
        "ratio",
        1,
        "share with a tool user agent",
        "Attack tools and HTTP libraries announce themselves (sqlmap, nikto, curl, python-requests ...).",
        "Share of requests whose user agent names an HTTP library or security tool, shrunk.",
    ),
    Feature(
        "distinct_user_agents",
        "count",
        1,
        "distinct user agents",
        "Rotating user agents from one address is evasion.",
        "Number of distinct user-agent strings.",
    ),
    Feature(
        "ratio_no_referer",
        "ratio",
        1,
        "share without referer",
        "Browsers following links send a referer; tools rarely do.",
        "Share of requests with no referer, shrunk.",
    ),
    Feature(
        "gap_regularity",
        "value",
        1,
        "timing regularity",
        "Machines fire at regular intervals, people do not.",
        "1 / (1 + coefficient of variation of the gaps between consecutive requests); "
        "clients with fewer than 5 requests get the population median.",
    ),
    Feature(
        "bytes_per_request",
        "count",
        -1,
        "bytes per request",
        "Error pages are small; real page views and assets are not.",
        "Mean response body bytes.",
    ),
    Feature(
        "ratio_rare_paths",
        "ratio",
        1,
        "share to paths no one else requests",
        "Request-level signal: paths that no other client of this site asks for are "
        "discovery or attack; learned from the site's own traffic, not a list.",
        "Share of requests whose normalised path no other client requested (with a baseline: "
        "that the baseline never saw), shrunk.",
    ),
    Feature(
        "payload_rarity_max",
        "rarity",
        1,
        "rarest request shape",
        "Request-level signal: a never-seen payload stands out even from a quiet client.",
        "Each path+query is reduced to a shape (letters->a, digits->0, punctuation kept); "
        "each shape trigram's rarity is 1 - log(clients using it)/log(all clients); a "
        "request's rarity is the mean of its 3 rarest trigrams; the client's maximum. A payload "
        "in the User-Agent or Referer (see ratio_injection) is shaped and judged the same way.",
    ),
    Feature(
        "ratio_rare_payloads",
        "ratio",
        1,
        "share of rare-shaped requests",
        "Fuzzers send many never-seen payload shapes.",
        "Share of requests whose shape rarity is at least 0.75, shrunk.",
    ),
)

# How a client behaves, but no evidence of malice on its own: a monitoring probe, a feed reader
# or an API client is unusual in every one of these (no referer, no assets, clockwork timing,
# tiny responses, long life). They sharpen a score that evidence raised; alone they never
# raise one (detectors/ensemble.py). Every other feature is evidence.
CONTEXT_FEATURES = frozenset(
    {
        "requests",
        "ratio_static",
        "ratio_no_referer",
        "gap_regularity",
        "bytes_per_request",
        "path_length_mean",
    }
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
