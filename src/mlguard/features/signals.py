"""Request-level markers, computed on distinct values (paths, user agents), never per line.

These are inputs to the model, not rules: each becomes a per-client share that the detectors
weigh against the rest of the site's traffic.
"""

from __future__ import annotations

import polars as pl

from mlguard.schema import PARSED_SCHEMA

STATIC_RE = (
    r"(?i)\.(?:css|js|mjs|map|png|jpe?g|gif|ico|svg|webp|avif|bmp|woff2?|ttf|otf|eot|mp4|webm|"
    r"mp3|ogg|pdf|txt|xml|json|rss|atom)$"
)
# Well-known names attackers look for; a signal, weighed against how the site's own clients behave.
SENSITIVE_RE = (
    r"(?i)(?:/\.(?:env|git|svn|hg|ht(?:access|passwd)|aws|ssh|docker|DS_Store|vscode|idea)"
    r"|wp-login\.php|wp-admin|xmlrpc\.php|wp-config|wp-content/plugins|phpmyadmin|pma/|myadmin|"
    r"adminer|/administrator|/admin(?:[/._-]|$)|/manager/html|/cgi-bin|/etc/passwd|/proc/self|"
    r"web\.config|\.(?:bak|old|orig|swp|sql|sqlite|db|tar|tgz|gz|zip|rar|7z|ini|conf|cfg|log|"
    r"pem|key|sh|asp|aspx|jsp|cgi|pl|exe|dll)$|phpinfo|setup\.php|install\.php|config\.php|"
    r"shell|eval-stdin|boaform|/HNAP1|/actuator|/server-status|/console|/solr|/jenkins|"
    r"owa/|/autodiscover|\.well-known/security)"
)
# Quotes, angle brackets, traversal, null bytes and their encoded forms; SQL/shell keywords.
INJECTION_RE = (
    r"(?i)(?:['\"<>`]|\.\./|\.\.\\|%00|%0[ad]|%2e%2e|%252e|%27|%22|%3c|%3e|%60|\\x[0-9a-f]{2}|"
    r"\$\{|\{\{|\bunion\b.{0,40}\bselect\b|\bselect\b.{1,60}\bfrom\b|\bsleep\(|\bbenchmark\(|"
    r"\bor\b\s*\d+\s*=\s*\d+|/etc/passwd|cmd\.exe|/bin/(?:ba)?sh|\bwget\b|\bcurl\b|"
    r"<script|javascript:|onerror\s*=|alert\()"
)
# Payloads sent in the User-Agent or Referer header instead of the URL (Log4Shell's `${jndi:`,
# Shellshock's `() {`, SQL and script injection, traversal). Only unambiguous markers: quotes,
# parentheses and the words curl/wget are ordinary in these headers. On the bench datasets, the
# lab and the generated 1M-line log no benign client's header matches (bench/datasets, 2026-11-28).
HEADER_INJECTION_RE = (
    r"(?i)(?:\$\{|\(\)\s*\{|<script|javascript:|\bunion\b.{0,40}\bselect\b|\bsleep\s*\(|"
    r"\bbenchmark\s*\(|/etc/passwd|cmd\.exe|/bin/(?:ba)?sh\b|\.\./|\.\.\\|%00|"
    r"\bor\b\s*\d+\s*=\s*\d+|'\s*or\s*')"
)
# A referer can hold a marker only if it holds one of these: the parse copies out the text of
# those referers alone (the referer is often the longest field and most are plain URLs; copying
# them all cost 3.5% of a 10M-line run). In a referer, a marker counts when both match.
REFERER_CANDIDATE_RE = r"[$(<']|\.\.[/\\]|%00"


def columns_for_features() -> list[pl.Expr]:
    """The parsed columns as the features need them (`read_logs` and the Spark executor): all,
    but the referer's text only where it may hold an injection marker ("" for any other
    referer sent, null when none was)."""
    referer = pl.col("referer")
    kept = (
        pl.when(referer.str.contains(REFERER_CANDIDATE_RE))
        .then(referer)
        .when(referer.is_not_null())
        .then(pl.lit(""))
        .otherwise(None)
        .alias("referer")
    )
    return [kept if name == "referer" else pl.col(name) for name in PARSED_SCHEMA]


TOOL_UA_RE = (
    r"(?i)(?:sqlmap|nikto|nmap|masscan|zgrab|nuclei|wpscan|dirbuster|gobuster|dirb|ffuf|wfuzz|"
    r"hydra|acunetix|netsparker|w3af|burp|zap|arachni|skipfish|openvas|nessus|whatweb|wapiti|"
    r"jorgee|fuzz|scan|curl/|wget/|python-requests|python-urllib|aiohttp|httpx|go-http-client|"
    r"java/|libwww-perl|lwp::|okhttp|apache-httpclient|php/|ruby|perl|winhttp|powershell|"
    r"headlesschrome|phantomjs|^mozilla/?[45]\.0$)"
)


def path_template(path: pl.Expr) -> pl.Expr:
    """A path with ids folded: digits and hex runs become 0, so /post/123 and /post/456 match."""
    return (
        path.fill_null("")
        .str.to_lowercase()
        .str.replace_all(r"[0-9a-f]{8,}", "#")
        .str.replace_all(r"\d+", "0")
    )


def request_shape(target: pl.Expr) -> pl.Expr:
    """Character-class shape of a request target: letters->a, digits->0, punctuation kept.

    Runs are folded so that length does not matter: '/item.php?id=42' -> '/a.a?a=0'.
    """
    return (
        target.fill_null("")
        .str.slice(0, 512)
        .str.replace_all(r"[A-Za-z]+", "a")
        .str.replace_all(r"[0-9]+", "0")
        .str.replace_all(r"\s+", " ")
    )
