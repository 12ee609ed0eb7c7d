"""Well-known good crawlers, recognised so that MLGuard never blocks them.

A user agent is a claim anyone can forge, so a crawler is recognised only by proof:

- **published ranges**: the address lies in a prefix the operator publishes (Google, Bing, Apple,
  DuckDuckGo, OpenAI, Common Crawl). The lists are bundled in `crawler_ranges.json` with their source
  URL and the date of the copy; `python -m mlguard.decisions.crawlers --update FILES` refreshes them
  from downloaded copies, and a deployment can point at its own file (`crawler_ranges_path`).
- **forward-confirmed reverse DNS** (FCrDNS), as Google, Bing, Apple, Yandex and Baidu document it:
  the PTR name of the address ends in one of the crawler's domains (on a label boundary) and that
  name resolves back to the same address.

DNS is slow, so only a client whose user agent claims a crawler is checked by DNS, and only against
that crawler's domains: the user agent selects what to verify and never grants trust by itself.
Lookups have a timeout, a per-call cap and a time budget; results are cached (positive, negative
and failed, each with its own TTL). A failed or odd answer means "not verified", never "trusted".
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from mlguard.decisions.policy import client_network, parse_address
from mlguard.errors import UsageError
from mlguard.explain.reasons import safe_text

BUNDLED_RANGES = Path(__file__).with_name("crawler_ranges.json")
FORMAT = 1
MAX_FILE_BYTES = 10 * 1024 * 1024
# A published prefix broader than this is refused: "never block" must not cover a whole network.
MIN_PREFIX_LEN = {4: 16, 6: 32}
MAX_UA_CHARS = 4096  # crawler tokens sit near the start; a huge forged header is not scanned whole
MAX_PTR_NAMES = 4
MAX_FORWARD_ADDRESSES = 64
_HOSTNAME = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


# --------------------------------------------------------------------------- published ranges


@dataclass(frozen=True)
class KnownList:
    """A range list an operator publishes, and the file names its download has."""

    key: str
    label: str
    operator: str
    source: str
    files: tuple[str, ...]


KNOWN_LISTS: tuple[KnownList, ...] = (
    KnownList("googlebot", "Googlebot", "Google",
              "https://developers.google.com/static/crawling/ipranges/common-crawlers.json",
              ("common-crawlers.json", "googlebot.json")),
    KnownList("google-special", "Google special-case crawler", "Google",
              "https://developers.google.com/static/crawling/ipranges/special-crawlers.json",
              ("special-crawlers.json",)),
    KnownList("google-user-triggered", "Google user-triggered fetcher", "Google",
              "https://developers.google.com/static/crawling/ipranges/user-triggered-fetchers.json",
              ("user-triggered-fetchers.json",)),
    KnownList("bingbot", "Bingbot", "Microsoft", "https://www.bing.com/toolbox/bingbot.json",
              ("bingbot.json",)),
    KnownList("applebot", "Applebot", "Apple", "https://search.developer.apple.com/applebot.json",
              ("applebot.json",)),
    KnownList("duckduckbot", "DuckDuckBot", "DuckDuckGo", "https://duckduckgo.com/duckduckbot.json",
              ("duckduckbot.json",)),
    KnownList("gptbot", "GPTBot", "OpenAI", "https://openai.com/gptbot.json", ("gptbot.json",)),
    KnownList("oai-searchbot", "OAI-SearchBot", "OpenAI", "https://openai.com/searchbot.json",
              ("searchbot.json",)),
    KnownList("ccbot", "CCBot", "Common Crawl", "https://index.commoncrawl.org/ccbot.json", ("ccbot.json",)),
)
_KNOWN = {k.key: k for k in KNOWN_LISTS}


@dataclass
class RangeList:
    key: str
    label: str
    operator: str
    source: str
    creation_time: str | None  # the publisher's own timestamp of the copy
    copied_from: str | None  # where and when this copy was taken
    prefixes: list[str]


def _prefix(value: object, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """One published prefix, refused when it is not public or far too broad to be one crawler."""
    if not isinstance(value, str):
        raise UsageError(f"{where}: prefix {safe_text(repr(value), 80)} is not a string")
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)  # publishers sometimes set host bits
    except ValueError:
        raise UsageError(f"{where}: '{safe_text(value, 80)}' is not a CIDR prefix") from None
    if net.prefixlen < MIN_PREFIX_LEN[net.version]:
        raise UsageError(
            f"{where}: prefix {net} is broader than /{MIN_PREFIX_LEN[net.version]}; refusing to protect it"
        )
    first = net.network_address
    if not first.is_global or first.is_multicast:
        raise UsageError(f"{where}: prefix {net} is not a public address range")
    return net


def parse_published(document: object, where: str) -> tuple[str | None, list[str]]:
    """The creation time and prefixes of a list in the Google/Bing format:
    `{"creationTime": ..., "prefixes": [{"ipv4Prefix": ...}, {"ipv6Prefix": ...}]}`."""
    if not isinstance(document, dict) or not isinstance(document.get("prefixes"), list):
        raise UsageError(f"{where}: not a published range list (no \"prefixes\" array)")
    prefixes: list[str] = []
    for i, entry in enumerate(document["prefixes"]):
        value = entry.get("ipv4Prefix", entry.get("ipv6Prefix")) if isinstance(entry, dict) else None
        if value is None:
            raise UsageError(f"{where}: prefixes[{i}] has neither ipv4Prefix nor ipv6Prefix")
        net = str(_prefix(value, where))
        if net not in prefixes:
            prefixes.append(net)
    if not prefixes:
        raise UsageError(f"{where}: the list has no prefixes; refusing to replace a list with nothing")
    created = document.get("creationTime")
    return (created if isinstance(created, str) else None), prefixes


def _read_json(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {safe_text(path)}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise UsageError(f"{safe_text(path)} is larger than {MAX_FILE_BYTES} bytes")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"{safe_text(path)} is not JSON (an error page instead of the list?)") from None


class CrawlerRanges:
    """Published crawler prefixes, indexed for fast membership tests of many clients.

    The index holds, per IP version and prefix length, the network numbers shifted down to that
    length; a client is looked up with one dict probe per distinct length (a handful).
    """

    def __init__(self, lists: Sequence[RangeList], origin: str = "given lists") -> None:
        self.lists = list(lists)
        self.origin = origin
        self._index: dict[int, dict[int, dict[int, str]]] = {4: {}, 6: {}}
        for lst in self.lists:
            where = f"{origin}: list '{safe_text(lst.key, 40)}'"
            for text in lst.prefixes:
                net = _prefix(text, where)
                bits = net.max_prefixlen - net.prefixlen
                by_key = self._index[net.version].setdefault(net.prefixlen, {})
                by_key.setdefault(int(net.network_address) >> bits, lst.label)  # first list wins
        # Most specific first, so nested prefixes answer with the narrower list.
        self._lengths = {v: sorted(self._index[v], reverse=True) for v in (4, 6)}

    @classmethod
    def load(cls, path: str | Path | None = None) -> CrawlerRanges:
        """The bundled lists, or a file in the same format that replaces them (`crawler_ranges_path`)."""
        path = BUNDLED_RANGES if path is None else Path(path)
        document = _read_json(path)
        where = safe_text(path)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise UsageError(f"{where}: not an MLGuard crawler range file (format {FORMAT})")
        lists = document.get("lists")
        if not isinstance(lists, list):
            raise UsageError(f"{where}: \"lists\" must be an array")
        out: list[RangeList] = []
        for i, item in enumerate(lists):
            if not isinstance(item, dict) or not isinstance(item.get("prefixes"), list):
                raise UsageError(f"{where}: lists[{i}] has no \"prefixes\" array")
            key = str(item.get("key") or f"list-{i}")
            known = _KNOWN.get(key)
            out.append(
                RangeList(
                    key=key,
                    label=str(item.get("label") or (known.label if known else key)),
                    operator=str(item.get("operator") or (known.operator if known else "")),
                    source=str(item.get("source") or (known.source if known else "")),
                    creation_time=item.get("creation_time"),
                    copied_from=item.get("copied_from"),
                    prefixes=[str(p) for p in item["prefixes"]],
                )
            )
        return cls(out, origin=where)

    def to_json(self) -> str:
        lists = [
            {
                "key": lst.key,
                "label": lst.label,
                "operator": lst.operator,
                "source": lst.source,
                "creation_time": lst.creation_time,
                "copied_from": lst.copied_from,
                "prefixes": lst.prefixes,
            }
            for lst in self.lists
        ]
        about = (
            "Published IP prefixes of well-known crawlers, used by MLGuard to never block them. "
            "Refresh: python -m mlguard.decisions.crawlers --update FILES (see docs/crawlers.md)."
        )
        return json.dumps({"format": FORMAT, "about": about, "lists": lists}, indent=1) + "\n"

    def _find(self, version: int, number: int, prefixlen: int, max_bits: int) -> str | None:
        index = self._index[version]
        for length in self._lengths[version]:
            if length <= prefixlen:
                label = index[length].get(number >> (max_bits - length))
                if label is not None:
                    return label
        return None

    def label(self, client: str) -> str | None:
        """The list whose prefix holds this client (an address, or a grouped network), or None."""
        if not isinstance(client, str):
            return None
        if "/" not in client:
            address = parse_address(client)
            if address is None:
                return None
            return self._find(address.version, int(address), address.max_prefixlen, address.max_prefixlen)
        net = client_network(client)
        if net is None:
            return None
        return self.label_network(net)

    def label_network(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str | None:
        """As `label`, for a client already parsed (one address is a /32 or /128)."""
        return self._find(net.version, int(net.network_address), net.prefixlen, net.max_prefixlen)

    def members(self, clients: Iterable[str]) -> dict[str, str]:
        """{client: list label} for the clients inside a published prefix."""
        out: dict[str, str] = {}
        for client in dict.fromkeys(clients):
            label = self.label(client)
            if label is not None:
                out[client] = label
        return out


def _spec(text: str) -> tuple[KnownList, Path]:
    """`KEY=PATH`, or a PATH whose file name is the one the operator publishes."""
    key, sep, rest = text.partition("=")
    if sep and key in _KNOWN:
        return _KNOWN[key], Path(rest)
    path = Path(text)
    for known in KNOWN_LISTS:
        if path.name in known.files:
            return known, path
    names = ", ".join(f"{k.key} ({'/'.join(k.files)})" for k in KNOWN_LISTS)
    raise UsageError(
        f"cannot tell which crawler '{safe_text(path.name, 80)}' is for; "
        f"name it as KEY=PATH with KEY one of: {names}"
    )


def update_ranges(
    files: Sequence[str], output: str | Path, base: str | Path | None = None, today: str | None = None
) -> list[str]:
    """Replace (or add) the lists given as downloaded files and write `output` atomically.

    Starts from `output` when it exists, else from `base` (default: the bundled lists), so lists
    not named keep their current copy. Returns one line per list written.
    """
    output = Path(output)
    current = CrawlerRanges.load(output if output.exists() else base)
    lists = {lst.key: lst for lst in current.lists}
    today = today or datetime.now(UTC).strftime("%Y-%m-%d")
    report = []
    for spec in files:
        known, path = _spec(spec)
        created, prefixes = parse_published(_read_json(path), safe_text(path))
        lists[known.key] = RangeList(
            known.key, known.label, known.operator, known.source, created,
            f"downloaded file {path.name}, imported {today}", prefixes,
        )
        report.append(f"{known.key}: {len(prefixes)} prefixes (creationTime {created or 'not given'})")
    text = CrawlerRanges(list(lists.values()), origin=safe_text(output)).to_json()  # validates all
    fd, tmp = tempfile.mkstemp(prefix=".mlguard-crawlers-", dir=output.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return report


# --------------------------------------------------------------------------- DNS


class LookupFailed(Exception):
    """DNS gave no answer (timeout, SERVFAIL, refused): unlike an empty answer, not a 'no'."""


class Resolver(Protocol):
    def ptr(self, address: str) -> list[str]:
        """PTR names of an address; [] when DNS answered that there is none."""
        ...

    def addresses(self, name: str, version: int) -> list[str]:
        """A (version 4) or AAAA (version 6) addresses of a name; [] when it has none."""
        ...


class DnsPythonResolver:
    """Queries through dnspython, to the given nameservers (address, port) or the system's ones."""

    def __init__(
        self, nameservers: Sequence[str] | None = None, port: int = 53, timeout_secs: float = 2.0
    ) -> None:
        import dns.resolver

        if nameservers:
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = list(nameservers)
        else:
            self._resolver = dns.resolver.Resolver(configure=True)
        self._resolver.port = port
        self._resolver.timeout = timeout_secs
        self._resolver.lifetime = timeout_secs  # bounds the whole query, retries included

    def _query(self, qname: Any, rdtype: str) -> list[Any]:
        import dns.exception
        import dns.resolver

        try:
            return list(self._resolver.resolve(qname, rdtype, search=False))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            raise LookupFailed(type(exc).__name__) from None

    def ptr(self, address: str) -> list[str]:
        import dns.reversename

        answer = self._query(dns.reversename.from_address(address), "PTR")
        return [rr.target.to_text(omit_final_dot=True) for rr in answer]

    def addresses(self, name: str, version: int) -> list[str]:
        import dns.name

        try:
            qname = dns.name.from_text(name)
        except Exception:
            return []
        return [rr.address for rr in self._query(qname, "A" if version == 4 else "AAAA")]


def _with_timeout(func: Callable[..., Any], args: tuple[Any, ...], timeout_secs: float) -> Any:
    """The system resolver cannot be given a timeout: run it in a daemon thread and stop waiting."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = func(*args)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name="mlguard-dns", daemon=True)
    thread.start()
    thread.join(timeout_secs)
    if thread.is_alive():
        raise LookupFailed("timeout")
    if "error" in box:
        raise box["error"]
    return box["value"]


class SystemResolver:
    """The C library's resolver (/etc/hosts, then DNS), when dnspython is not installed."""

    def __init__(self, timeout_secs: float = 2.0) -> None:
        self.timeout_secs = timeout_secs

    def ptr(self, address: str) -> list[str]:
        try:
            name, aliases, _ = _with_timeout(socket.gethostbyaddr, (address,), self.timeout_secs)
        except socket.herror as exc:
            if exc.errno in (1, 4):  # HOST_NOT_FOUND, NO_DATA: an answer, and it is no
                return []
            raise LookupFailed("herror") from None
        except (OSError, UnicodeError) as exc:
            raise LookupFailed(type(exc).__name__) from None
        return [name, *aliases]

    def addresses(self, name: str, version: int) -> list[str]:
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        try:
            infos = _with_timeout(
                socket.getaddrinfo, (name, None, family, socket.SOCK_STREAM), self.timeout_secs
            )
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                return []
            raise LookupFailed("gaierror") from None
        except (OSError, UnicodeError) as exc:
            raise LookupFailed(type(exc).__name__) from None
        return [str(info[4][0]).split("%", 1)[0] for info in infos]


def parse_nameserver(text: str) -> tuple[str, int]:
    """`ADDRESS`, `ADDRESS:PORT` or `[IPV6]:PORT` -> (address, port)."""
    text = text.strip()
    port = 53
    host = text
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, rest = text.partition(":")
        port = _port(rest, text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(
            f"nameserver '{safe_text(text, 80)}' is not an IP address (with an optional :PORT)"
        ) from None
    return host, port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"nameserver '{safe_text(whole, 80)}' has a bad port")
    return int(text)


def make_resolver(
    nameservers: Sequence[str] | None = None, port: int = 53, timeout_secs: float = 2.0
) -> DnsPythonResolver | SystemResolver:
    """dnspython when installed (required for a chosen nameserver), else the system resolver."""
    try:
        import dns.resolver  # noqa: F401
    except ImportError:
        if nameservers:
            raise UsageError(
                "querying a chosen nameserver needs dnspython: pip install dnspython"
            ) from None
        return SystemResolver(timeout_secs)
    try:
        return DnsPythonResolver(nameservers, port, timeout_secs)
    except Exception:  # no usable /etc/resolv.conf: the C library may still resolve
        if nameservers:
            raise
        return SystemResolver(timeout_secs)


# --------------------------------------------------------------------------- crawlers and the verifier


@dataclass(frozen=True)
class Crawler:
    """A crawler whose operator documents forward-confirmed reverse DNS.

    `tokens` (lower case) select it from a user agent; `domains` are where its PTR names must end.
    """

    name: str
    tokens: tuple[str, ...]
    domains: tuple[str, ...]
    documented_at: str


_GOOGLE_DOC = "https://developers.google.com/search/docs/crawling-indexing/verifying-googlebot"
# Google also names googleusercontent.com (user-triggered fetchers), but every Google Cloud VM can
# have a PTR there (*.bc.googleusercontent.com) that forward-confirms: it proves nothing, so it is left out.
CRAWLERS: tuple[Crawler, ...] = (
    Crawler("Googlebot",
            ("googlebot", "google-inspectiontool", "googleother", "storebot-google", "google-cloudvertexbot"),
            ("googlebot.com", "google.com"), _GOOGLE_DOC),
    Crawler("Google special-case crawler",
            ("adsbot-google", "mediapartners-google", "apis-google", "feedfetcher-google",
             "google-read-aloud", "google-site-verification", "googleproducer", "google-safety"),
            ("googlebot.com", "google.com"), _GOOGLE_DOC),
    Crawler("Bingbot", ("bingbot", "msnbot", "bingpreview", "adidxbot"), ("search.msn.com",),
            "https://www.bing.com/webmasters/help/how-to-verify-bingbot-3905dc26"),
    Crawler("Applebot", ("applebot",), ("applebot.apple.com",), "https://support.apple.com/en-us/119829"),
    Crawler("YandexBot", ("yandex",), ("yandex.ru", "yandex.net", "yandex.com"),
            "https://yandex.com/support/webmaster/robot-workings/check-yandex-robots.html"),
    Crawler("Baiduspider", ("baiduspider",), ("baidu.com", "baidu.jp"),
            "https://www.baidu.com/search/spider_english.html"),
)


def _hostname(raw: object) -> str | None:
    """A PTR name as plain lower-case LDH text, or None: anything odd (escapes, controls, dots
    inside labels) is attacker-made and never verifies."""
    if not isinstance(raw, str):
        return None
    name = raw.lower().removesuffix(".")
    if len(name) > 253 or not _HOSTNAME.fullmatch(name):
        return None
    return name


def _in_domains(name: str, domains: Sequence[str]) -> bool:
    return any(name == d or name.endswith("." + d) for d in domains)


def _same_address(address: Address, text: object) -> bool:
    if not isinstance(text, str):
        return False
    try:
        return ipaddress.ip_address(text) == address
    except ValueError:
        return False


class CrawlerVerifier:
    """Which clients are well-known good crawlers, by published range or by FCrDNS.

    `verify` and `verify_many` return a reason such as "Googlebot (published range)" or
    "Bingbot (forward-confirmed reverse DNS msnbot-157-55-39-1.search.msn.com)", or nothing.
    """

    def __init__(
        self,
        ranges: CrawlerRanges | None = None,
        resolver: Resolver | None = None,
        dns: bool = True,
        crawlers: Sequence[Crawler] = CRAWLERS,
        timeout_secs: float = 2.0,
        ttl_secs: float = 6 * 3600,
        negative_ttl_secs: float = 3600,
        error_ttl_secs: float = 300,
        max_lookups: int = 50,
        budget_secs: float = 10.0,
        max_cache: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout_secs <= 0 or max_lookups < 0 or budget_secs <= 0 or max_cache < 1:
            raise UsageError("crawler DNS: timeout and budget must be positive, lookups not negative")
        self.ranges = ranges if ranges is not None else CrawlerRanges.load()
        self.dns = dns
        self._resolver = resolver
        self.crawlers = tuple(crawlers)
        self.timeout_secs = timeout_secs
        self.ttl_secs = ttl_secs
        self.negative_ttl_secs = negative_ttl_secs
        self.error_ttl_secs = error_ttl_secs
        self.max_lookups = max_lookups
        self.budget_secs = budget_secs
        self.max_cache = max_cache
        self.clock = clock
        self._cache: OrderedDict[tuple[str, str], tuple[float, str | None]] = OrderedDict()
        self.lookups = 0  # FCrDNS checks that went to DNS, over this verifier's life
        self.last_skipped = 0  # claims left unchecked by the last verify_many (cap or budget)

    @property
    def resolver(self) -> Resolver:
        if self._resolver is None:  # created on first need: no DNS set-up when no client claims a crawler
            self._resolver = make_resolver(timeout_secs=self.timeout_secs)
        return self._resolver

    def claimed(self, user_agent: object) -> Crawler | None:
        """The crawler a user agent claims to be: a reason to check DNS, never proof."""
        if not isinstance(user_agent, str) or not user_agent:
            return None
        text = user_agent[:MAX_UA_CHARS].lower()
        for crawler in self.crawlers:
            if any(token in text for token in crawler.tokens):
                return crawler
        return None

    def in_published_ranges(self, clients: Iterable[str]) -> dict[str, str]:
        """{client: "<list> (published range)"} for the clients inside a published prefix."""
        return {c: f"{label} (published range)" for c, label in self.ranges.members(clients).items()}

    def verify(self, client: str, user_agent: str | None) -> str | None:
        """Why this client is a well-known good crawler, or None."""
        return self.verify_many([(client, user_agent)]).get(client)

    def verify_many(self, requests: Iterable[tuple[str, str | None]]) -> dict[str, str]:
        """{client: reason} for (client, user agent) pairs; clients absent are not verified.

        At most `max_lookups` DNS checks start per call, none after `budget_secs`; the claims left
        unchecked are counted in `last_skipped` and are not cached, so a later call checks them.
        """
        out: dict[str, str] = {}
        started = self.clock()
        lookups = 0
        self.last_skipped = 0
        for client, user_agent in requests:
            if not isinstance(client, str) or client in out:
                continue
            label = self.ranges.label(client)
            if label is not None:
                out[client] = f"{label} (published range)"
                continue
            crawler = self.claimed(user_agent) if self.dns else None
            address = parse_address(client) if crawler is not None and "/" not in client else None
            if crawler is None or address is None:
                continue
            key = (str(address), crawler.name)
            cached = self._cached(key)
            if cached is not None:
                if cached[1] is not None:
                    out[client] = cached[1]
                continue
            if lookups >= self.max_lookups or self.clock() - started >= self.budget_secs:
                self.last_skipped += 1
                continue
            lookups += 1
            self.lookups += 1
            reason, ttl = self._fcrdns(address, crawler)
            self._store(key, reason, ttl)
            if reason is not None:
                out[client] = reason
        return out

    def _cached(self, key: tuple[str, str]) -> tuple[float, str | None] | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._cache[key]
            return None
        return entry

    def _store(self, key: tuple[str, str], reason: str | None, ttl: float) -> None:
        self._cache[key] = (self.clock() + ttl, reason)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_cache:  # many forged claims cannot grow memory without bound
            self._cache.popitem(last=False)

    def _fcrdns(self, address: Address, crawler: Crawler) -> tuple[str | None, float]:
        """PTR name in the crawler's domains, resolving back to the address. (reason, cache TTL)."""
        try:
            names = self.resolver.ptr(str(address))
            for raw in list(names)[:MAX_PTR_NAMES]:
                name = _hostname(raw)
                if name is None or not _in_domains(name, crawler.domains):
                    continue
                forward = self.resolver.addresses(name, address.version)
                if any(_same_address(address, a) for a in list(forward)[:MAX_FORWARD_ADDRESSES]):
                    reason = f"{crawler.name} (forward-confirmed reverse DNS {safe_text(name, 120)})"
                    return reason, self.ttl_secs
        except LookupFailed:
            return None, self.error_ttl_secs
        except Exception:  # a resolver surprise is a failure to verify, never a crash or a pass
            return None, self.error_ttl_secs
        return None, self.negative_ttl_secs


# --------------------------------------------------------------------------- command line


def _list(ranges: CrawlerRanges) -> str:
    lines = [f"{ranges.origin}:"]
    for lst in ranges.lists:
        v6 = sum(":" in p for p in lst.prefixes)
        lines.append(
            f"  {lst.key:<22} {len(lst.prefixes) - v6:>4} IPv4 {v6:>4} IPv6  "
            f"created {lst.creation_time or '?'}  from {lst.source}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlguard.decisions.crawlers",
        description="Show, refresh or try the well-known crawler recognition of MLGuard.",
    )
    parser.add_argument("--ranges", help="range file to read (default: the bundled one)")
    parser.add_argument("--list", action="store_true", help="list the range lists and their dates")
    parser.add_argument(
        "--update", nargs="+", metavar="FILE",
        help="downloaded lists (googlebot.json, bingbot.json, ... or KEY=PATH) to import",
    )
    parser.add_argument("--output", help="file --update writes (default: --ranges, else the bundled file)")
    parser.add_argument("--check", metavar="ADDRESS", help="say whether ADDRESS is a known crawler")
    parser.add_argument("--user-agent", default=None, help="with --check: the user agent the client sent")
    parser.add_argument("--nameserver", help="with --check: ADDRESS[:PORT] of the DNS server to ask")
    args = parser.parse_args(argv)
    try:
        if args.update:
            output = args.output or args.ranges or BUNDLED_RANGES
            for line in update_ranges(args.update, output, base=args.ranges):
                print(line)
            print(f"wrote {output}")
        if args.list:
            print(_list(CrawlerRanges.load(args.output or args.ranges)))
        if args.check:
            resolver = None
            if args.nameserver:
                host, port = parse_nameserver(args.nameserver)
                resolver = make_resolver([host], port)
            verifier = CrawlerVerifier(CrawlerRanges.load(args.ranges), resolver=resolver)
            reason = verifier.verify(args.check, args.user_agent)
            print(f"{safe_text(args.check, 80)}: {reason or 'not a recognised crawler'}")
        if not (args.update or args.list or args.check):
            parser.print_usage()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
