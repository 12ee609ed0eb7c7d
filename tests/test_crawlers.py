"""Well-known crawlers, against the real thing: a DNS server (dnslib) started here on 127.0.0.1
answers the PTR/A/AAAA records each test defines, dnspython queries it, and the server counts
every query. Bounded: a few dozen queries, timeouts of a fraction of a second."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dnslib import AAAA, PTR, QTYPE, RCODE, RR, A, DNSLabel, DNSRecord
from dnslib.server import BaseResolver, DNSServer

from mlguard.decisions.crawlers import (
    BUNDLED_RANGES,
    KNOWN_LISTS,
    Crawler,
    CrawlerRanges,
    CrawlerVerifier,
    DnsPythonResolver,
    RangeList,
    SystemResolver,
    main,
    make_resolver,
    parse_nameserver,
    update_ranges,
)
from mlguard.errors import UsageError

NO_RANGES = CrawlerRanges([])  # DNS tests: nothing may be recognised by a bundled range instead


def reverse_name(address: str) -> str:
    return ipaddress.ip_address(address).reverse_pointer + "."


class Zone(BaseResolver):
    """Answers from a dict {(name, type): [rdata]}; NXDOMAIN for names it does not hold."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[object]] = {}
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def add_ptr(self, address: str, target: str | DNSLabel) -> None:
        self.records.setdefault((reverse_name(address), "PTR"), []).append(PTR(target))

    def add_address(self, name: str | DNSLabel, address: str) -> None:
        kind = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
        rdata = A(address) if kind == "A" else AAAA(address)
        key = str(name).lower().rstrip(".") + "."  # dnslib's text form, as str(request.q.qname) gives
        self.records.setdefault((key, kind), []).append(rdata)

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname).lower()
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            self.queries.append((qname, qtype))
        answers = self.records.get((qname, qtype), [])
        for rdata in answers:
            reply.add_answer(RR(request.q.qname, request.q.qtype, rdata=rdata, ttl=60))
        if not answers and not any(name == qname for name, _ in self.records):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply

    def count(self) -> int:
        with self.lock:
            return len(self.queries)


class QuietLogger:
    def __getattr__(self, _name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


@pytest.fixture
def zone() -> Iterator[tuple[Zone, int]]:
    zone = Zone()
    server = DNSServer(zone, port=0, address="127.0.0.1", logger=QuietLogger()).server
    # dnslib's own start_thread polls every 0.5 s, which each shutdown would wait for.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield zone, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def verifier(port: int, **kwargs: object) -> CrawlerVerifier:
    resolver = DnsPythonResolver(["127.0.0.1"], port=port, timeout_secs=1.0)
    return CrawlerVerifier(ranges=kwargs.pop("ranges", NO_RANGES), resolver=resolver, **kwargs)  # type: ignore[arg-type]


GOOGLEBOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
BINGBOT_UA = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"


# ------------------------------------------------------------------ forward-confirmed reverse DNS


def test_genuine_googlebot_is_verified_by_forward_confirmed_reverse_dns(zone: tuple[Zone, int]) -> None:
    records, port = zone
    records.add_ptr("66.249.66.1", "crawl-66-249-66-1.googlebot.com.")
    records.add_address("crawl-66-249-66-1.googlebot.com", "66.249.66.1")
    v = verifier(port)
    assert v.verify("66.249.66.1", GOOGLEBOT_UA) == (
        "Googlebot (forward-confirmed reverse DNS crawl-66-249-66-1.googlebot.com)"
    )
    assert records.queries == [
        ("1.66.249.66.in-addr.arpa.", "PTR"),
        ("crawl-66-249-66-1.googlebot.com.", "A"),
    ]


def test_genuine_bingbot_and_an_ipv6_googlebot(zone: tuple[Zone, int]) -> None:
    records, port = zone
    records.add_ptr("157.55.39.1", "msnbot-157-55-39-1.search.msn.com.")
    records.add_address("msnbot-157-55-39-1.search.msn.com", "157.55.39.1")
    records.add_ptr("2001:4860:4801:10::1", "crawl-2001-4860-4801-10--1.googlebot.com.")
    records.add_address("crawl-2001-4860-4801-10--1.googlebot.com", "2001:4860:4801:10::1")
    v = verifier(port)
    assert v.verify("157.55.39.1", BINGBOT_UA) == (
        "Bingbot (forward-confirmed reverse DNS msnbot-157-55-39-1.search.msn.com)"
    )
    assert v.verify("[2001:4860:4801:10::1]:443", GOOGLEBOT_UA) == (
        "Googlebot (forward-confirmed reverse DNS crawl-2001-4860-4801-10--1.googlebot.com)"
    )
    assert ("crawl-2001-4860-4801-10--1.googlebot.com.", "AAAA") in records.queries


def test_forged_ptr_whose_forward_lookup_gives_another_address_is_not_verified(
    zone: tuple[Zone, int],
) -> None:
    records, port = zone
    # The attacker controls the PTR of their own address, not Google's forward zone.
    records.add_ptr("203.0.113.7", "crawl-66-249-66-1.googlebot.com.")
    records.add_address("crawl-66-249-66-1.googlebot.com", "66.249.66.1")
    records.add_ptr("203.0.113.10", "crawl-203-0-113-10.googlebot.com.")  # forward name does not exist
    v = verifier(port)
    assert v.verify("203.0.113.7", GOOGLEBOT_UA) is None
    assert v.verify("203.0.113.10", GOOGLEBOT_UA) is None
    assert ("crawl-66-249-66-1.googlebot.com.", "A") in records.queries  # the forward check did run


@pytest.mark.parametrize(
    "ptr",
    [
        "crawl-203-0-113-8.googlebot.com.evil.example.",  # suffix check must anchor at the end
        "crawl-203-0-113-8.evilgooglebot.com.",  # and on a label boundary
        "googlebot.com.evil.example.",
    ],
)
def test_ptr_outside_the_crawler_domains_is_not_verified_even_when_it_forward_confirms(
    zone: tuple[Zone, int], ptr: str
) -> None:
    records, port = zone
    records.add_ptr("203.0.113.8", ptr)
    records.add_address(ptr, "203.0.113.8")  # the attacker's own zone confirms
    v = verifier(port)
    assert v.verify("203.0.113.8", GOOGLEBOT_UA) is None
    assert all(kind == "PTR" for _, kind in records.queries)  # never worth a forward lookup


def test_a_claim_from_an_address_without_ptr_is_not_verified(zone: tuple[Zone, int]) -> None:
    records, port = zone
    v = verifier(port)
    assert v.verify("203.0.113.9", GOOGLEBOT_UA) is None
    assert records.queries == [("9.113.0.203.in-addr.arpa.", "PTR")]


def test_the_user_agent_selects_the_crawler_and_never_grants_trust(zone: tuple[Zone, int]) -> None:
    records, port = zone
    records.add_ptr("66.249.66.1", "crawl-66-249-66-1.googlebot.com.")
    records.add_address("crawl-66-249-66-1.googlebot.com", "66.249.66.1")
    v = verifier(port)
    assert v.verify("66.249.66.1", BROWSER_UA) is None
    assert v.verify("66.249.66.1", None) is None
    assert records.count() == 0  # no claim, no DNS
    assert v.verify("66.249.66.1", BINGBOT_UA) is None  # a Google host is no Bingbot
    assert v.verify("66.249.66.1", "googlebot") is not None
    off = verifier(port, dns=False)
    assert off.verify("66.249.66.1", GOOGLEBOT_UA) is None


def test_control_characters_and_escaped_dots_in_a_ptr_never_verify(zone: tuple[Zone, int]) -> None:
    records, port = zone
    # Labels a zone can hold but no crawler uses: ESC sequences, a dot inside a label.
    # They even forward-confirm here, so only the refusal of odd names stops them.
    for address, labels in [
        ("203.0.113.11", [b"crawl\x1b[2j", b"x.googlebot", b"com"]),
        ("203.0.113.12", [b"a", b"googlebot\x00", b"com"]),
        ("203.0.113.13", [b"a b", b"googlebot", b"com"]),
    ]:
        records.add_ptr(address, DNSLabel(labels))
        records.add_address(DNSLabel(labels), address)
    v = verifier(port)
    for address in ("203.0.113.11", "203.0.113.12", "203.0.113.13"):
        assert v.verify(address, GOOGLEBOT_UA) is None
    assert records.count() == 3  # refused before any forward lookup


def test_results_are_cached_positive_and_negative_until_their_ttl(zone: tuple[Zone, int]) -> None:
    records, port = zone
    records.add_ptr("66.249.66.1", "crawl-66-249-66-1.googlebot.com.")
    records.add_address("crawl-66-249-66-1.googlebot.com", "66.249.66.1")
    now = [1000.0]
    v = verifier(port, clock=lambda: now[0], ttl_secs=600, negative_ttl_secs=60)
    first = v.verify("66.249.66.1", GOOGLEBOT_UA)
    assert v.verify("203.0.113.9", GOOGLEBOT_UA) is None
    seen = records.count()
    assert seen == 3  # PTR + A, then one PTR
    assert v.verify("66.249.66.1", GOOGLEBOT_UA) == first
    assert v.verify("203.0.113.9", GOOGLEBOT_UA) is None
    assert records.count() == seen  # both answered from the cache
    now[0] += 61  # the negative entry expired, the positive one not
    v.verify("203.0.113.9", GOOGLEBOT_UA)
    v.verify("66.249.66.1", GOOGLEBOT_UA)
    assert records.count() == seen + 1
    now[0] += 600
    assert v.verify("66.249.66.1", GOOGLEBOT_UA) == first
    assert records.count() == seen + 3


def test_a_cap_on_lookups_per_call_leaves_the_rest_for_later(zone: tuple[Zone, int]) -> None:
    records, port = zone
    addresses = [f"203.0.113.{i}" for i in range(20, 25)]
    for address in addresses:
        name = f"crawl-{address.replace('.', '-')}.googlebot.com"
        records.add_ptr(address, name + ".")
        records.add_address(name, address)
    v = verifier(port, max_lookups=2)
    got = v.verify_many([(a, GOOGLEBOT_UA) for a in addresses])
    assert len(got) == 2 and v.last_skipped == 3
    assert sum(kind == "PTR" for _, kind in records.queries) == 2
    got = v.verify_many([(a, GOOGLEBOT_UA) for a in addresses])  # 2 cached, 2 new, 1 skipped
    assert len(got) == 4 and v.last_skipped == 1


def test_an_unanswering_dns_server_means_not_verified_within_the_timeout() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # receives, never answers
    try:
        resolver = DnsPythonResolver(["127.0.0.1"], port=silent.getsockname()[1], timeout_secs=0.3)
        v = CrawlerVerifier(ranges=NO_RANGES, resolver=resolver, budget_secs=0.5)
        start = time.monotonic()
        assert v.verify("66.249.66.1", GOOGLEBOT_UA) is None
        assert time.monotonic() - start < 1.5
        start = time.monotonic()
        assert v.verify("66.249.66.1", GOOGLEBOT_UA) is None  # the failure is cached for a while
        assert time.monotonic() - start < 0.1
        # Many claims while DNS is down: the time budget stops new lookups.
        start = time.monotonic()
        got = v.verify_many([(f"203.0.113.{i}", GOOGLEBOT_UA) for i in range(30, 40)])
        assert got == {} and v.last_skipped >= 7
        assert time.monotonic() - start < 1.5
    finally:
        silent.close()


def test_a_closed_dns_port_means_not_verified_within_the_timeout() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    resolver = DnsPythonResolver(["127.0.0.1"], port=port, timeout_secs=0.3)
    start = time.monotonic()
    assert CrawlerVerifier(ranges=NO_RANGES, resolver=resolver).verify("66.249.66.1", GOOGLEBOT_UA) is None
    assert time.monotonic() - start < 1.5


def test_the_system_resolver_fallback_verifies_through_the_c_library() -> None:
    # /etc/hosts maps 127.0.0.1 to localhost both ways: a real FCrDNS round trip, no network.
    if socket.gethostbyaddr("127.0.0.1")[0] != "localhost":
        pytest.skip("this machine's /etc/hosts does not name 127.0.0.1 localhost")
    test_crawler = Crawler("Loopback test crawler", ("loopbacktest",), ("localhost",), "this test")
    v = CrawlerVerifier(ranges=NO_RANGES, resolver=SystemResolver(1.0), crawlers=[test_crawler])
    assert v.verify("127.0.0.1", "LoopbackTest/1.0") == (
        "Loopback test crawler (forward-confirmed reverse DNS localhost)"
    )
    assert v.verify("127.0.0.1", GOOGLEBOT_UA) is None


def test_without_dnspython_the_system_resolver_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "dns" or m.startswith("dns.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "dns", None)  # import dns -> ImportError, as when not installed
    assert isinstance(make_resolver(), SystemResolver)
    with pytest.raises(UsageError, match="pip install dnspython"):
        make_resolver(["127.0.0.1"], 5353)


def test_nameserver_text() -> None:
    assert parse_nameserver("127.0.0.1") == ("127.0.0.1", 53)
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("[::1]:5353") == ("::1", 5353)
    assert parse_nameserver("::1") == ("::1", 53)
    for bad in ("dns.example", "127.0.0.1:0", "127.0.0.1:x", "[::1]:70000"):
        with pytest.raises(UsageError):
            parse_nameserver(bad)


# ------------------------------------------------------------------ hostile input


def test_hostile_user_agents_and_clients_never_crash(zone: tuple[Zone, int]) -> None:
    _, port = zone
    v = verifier(port, ranges=CrawlerRanges.load())
    invalid_utf8 = b"\xff\xfe\xc3(Googlebot\xed\xa0\x80".decode("utf-8", "surrogateescape")
    agents: list[object] = [
        "\x1b[2J\x1b]0;pwned\x07Googlebot",
        "Googlebot" + "\x00" * 100,
        "x" * 1_000_000 + "Googlebot",  # beyond the scanned prefix: no claim
        invalid_utf8,
        b"Googlebot",
        None,
        "",
    ]
    for agent in agents:
        assert v.verify("203.0.113.50", agent) is None  # type: ignore[arg-type]
    for client in ["\x1b[2J", "", "1.2.3.4\n\x00", "9" * 10_000, "66.249.66.1/99", "[::1", "::ffff:zz"]:
        assert v.verify(client, GOOGLEBOT_UA) is None
    # A Googlebot claim inside hostile text still only triggers a check, which fails here.
    assert v.claimed("\x1b[31mGoogleBot\x1b[0m") is not None


# ------------------------------------------------------------------ published ranges


def test_published_ranges_recognise_ipv4_and_ipv6_without_any_dns(zone: tuple[Zone, int]) -> None:
    records, port = zone
    v = verifier(port, ranges=CrawlerRanges.load())
    assert v.verify("66.249.66.1", None) == "Googlebot (published range)"
    assert v.verify("66.249.66.1", BROWSER_UA) == "Googlebot (published range)"  # the address is proof
    assert records.count() == 0
    got = v.in_published_ranges(
        [
            "66.249.64.0",  # first address of a /27
            "66.249.64.31",  # last address of it
            "2001:4860:4801:10::abcd",
            "[2001:4860:4801:10::1]:443",
            "::ffff:66.249.66.1",
            "66.249.66.0/28",  # a grouped client inside one prefix
            "157.55.39.200",
            "17.241.208.170",
            "20.171.206.9",
            "2600:1f28:365:80ff::1",
            "66.249.90.77",
        ]
    )
    assert got == {
        "66.249.64.0": "Googlebot (published range)",
        "66.249.64.31": "Googlebot (published range)",
        "2001:4860:4801:10::abcd": "Googlebot (published range)",
        "[2001:4860:4801:10::1]:443": "Googlebot (published range)",
        "::ffff:66.249.66.1": "Googlebot (published range)",
        "66.249.66.0/28": "Googlebot (published range)",
        "157.55.39.200": "Bingbot (published range)",
        "17.241.208.170": "Applebot (published range)",
        "20.171.206.9": "GPTBot (published range)",
        "2600:1f28:365:80ff::1": "CCBot (published range)",
        "66.249.90.77": "Google special-case crawler (published range)",
    }
    outside = ["203.0.113.1", "2001:4860:4801:11::1", "66.249.0.0/16", "10.0.0.1", "not an ip", "::1"]
    assert v.in_published_ranges(outside) == {}


def test_membership_of_100k_clients_is_fast() -> None:
    ranges = CrawlerRanges.load()
    clients = [f"{10 + i % 200}.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(99_000)]
    clients += [f"2001:db8:{i:x}::1" for i in range(500)] + [f"66.249.66.{i % 32}" for i in range(500)]
    start = time.perf_counter()
    got = CrawlerVerifier(ranges=ranges, dns=False).in_published_ranges(clients)
    elapsed = time.perf_counter() - start
    assert set(got) == {f"66.249.66.{i}" for i in range(32)}
    assert elapsed < 3.0, elapsed


def test_the_bundled_lists_say_where_each_copy_comes_from() -> None:
    document = json.loads(BUNDLED_RANGES.read_text())
    keys = {k.key for k in KNOWN_LISTS}
    lists = document["lists"]
    assert {lst["key"] for lst in lists} >= {"googlebot", "google-special", "bingbot", "applebot", "gptbot"}
    for lst in lists:
        assert lst["key"] in keys
        assert lst["source"].startswith("https://") and lst["copied_from"]
        assert lst["prefixes"] and len(set(lst["prefixes"])) == len(lst["prefixes"])
        for prefix in lst["prefixes"]:
            assert str(ipaddress.ip_network(prefix)) == prefix  # canonical, host bits clear


# ------------------------------------------------------------------ refreshing the lists


def published(path: Path, prefixes: list[str], created: str = "2026-11-01T00:00:00.000000") -> Path:
    entries = [{"ipv6Prefix" if ":" in p else "ipv4Prefix": p} for p in prefixes]
    path.write_text(json.dumps({"creationTime": created, "prefixes": entries}))
    return path


def test_update_replaces_the_named_lists_and_keeps_the_others(tmp_path: Path) -> None:
    download = published(tmp_path / "googlebot.json", ["66.249.64.0/27", "34.22.85.0/27"])
    bing = published(tmp_path / "bing-today.json", ["40.77.167.0/24"])
    out = tmp_path / "ranges.json"
    report = update_ranges([str(download), f"bingbot={bing}"], out, today="2026-11-02")
    assert report[0].startswith("googlebot: 2 prefixes")
    ranges = CrawlerRanges.load(out)
    by_key = {lst.key: lst for lst in ranges.lists}
    assert by_key["googlebot"].prefixes == ["66.249.64.0/27", "34.22.85.0/27"]
    assert by_key["googlebot"].creation_time == "2026-11-01T00:00:00.000000"
    assert "2026-11-02" in (by_key["googlebot"].copied_from or "")
    assert by_key["bingbot"].prefixes == ["40.77.167.0/24"]
    assert len(by_key["duckduckbot"].prefixes) > 100  # untouched, from the bundled file
    assert ranges.label("66.249.66.1") is None and ranges.label("34.22.85.1") == "Googlebot"
    # The command line does the same, and the file it wrote is what --ranges reads.
    user = published(tmp_path / "user-triggered-fetchers.json", ["2600:1900:0:100::/64"])
    assert main(["--update", str(user), "--output", str(out)]) == 0
    assert CrawlerRanges.load(out).label("2600:1900:0:100::5") == "Google user-triggered fetcher"


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("googlebot.json", "<!DOCTYPE html><html>rate limited</html>", "not JSON"),
        ("googlebot.json", json.dumps({"creationTime": "x", "prefixes": []}), "no prefixes"),
        ("googlebot.json", json.dumps({"items": []}), "not a published range list"),
        ("googlebot.json", json.dumps({"prefixes": [{"ipv4Prefix": "0.0.0.0/0"}]}), "broader than"),
        ("googlebot.json", json.dumps({"prefixes": [{"ipv4Prefix": "10.1.0.0/16"}]}), "not a public"),
        ("googlebot.json", json.dumps({"prefixes": [{"ipv4Prefix": "66.249.64.0/33"}]}), "not a CIDR"),
        ("googlebot.json", json.dumps({"prefixes": [{"service": "x"}]}), "neither"),
        ("mystery.json", json.dumps({"prefixes": [{"ipv4Prefix": "66.249.64.0/27"}]}), "KEY=PATH"),
    ],
)
def test_update_refuses_a_bad_download_and_keeps_the_file(
    tmp_path: Path, name: str, body: str, message: str
) -> None:
    out = tmp_path / "ranges.json"
    update_ranges([str(published(tmp_path / "bingbot.json", ["40.77.167.0/24"]))], out)
    before = out.read_text()
    (tmp_path / name).write_text(body)
    with pytest.raises(UsageError, match=message):
        update_ranges([str(tmp_path / name)], out)
    assert out.read_text() == before


def test_a_broken_range_file_stops_start_up(tmp_path: Path) -> None:
    bad = tmp_path / "ranges.json"
    bad.write_text(json.dumps({"format": 1, "lists": [{"key": "x", "prefixes": ["8.0.0.0/8"]}]}))
    with pytest.raises(UsageError, match="broader than"):
        CrawlerRanges.load(bad)
    bad.write_text("[]")
    with pytest.raises(UsageError, match="not an MLGuard crawler range file"):
        CrawlerRanges.load(bad)
    with pytest.raises(UsageError, match="cannot read"):
        CrawlerRanges.load(tmp_path / "missing.json")


def test_the_module_runs_as_a_command(tmp_path: Path) -> None:
    ranges = tmp_path / "ranges.json"
    ranges.write_text(
        CrawlerRanges(
            [
                RangeList(
                    "gptbot",
                    "GPTBot",
                    "OpenAI",
                    "https://openai.com/gptbot.json",
                    None,
                    "test",
                    ["20.171.206.0/24"],
                )
            ]
        ).to_json()
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlguard.decisions.crawlers",
            "--ranges",
            str(ranges),
            "--list",
            "--check",
            "20.171.206.9",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "gptbot" in done.stdout and "20.171.206.9: GPTBot (published range)" in done.stdout
    assert main(["--ranges", str(tmp_path / "missing.json"), "--list"]) == 2


# ------------------------------------------------------------------ wired into the block decision


def test_a_verified_crawler_is_alerted_on_but_never_blocked(zone: tuple[Zone, int]) -> None:
    """The policy asks DNS only about clients a block is in reach for whose user agent claims a
    crawler; a confirmed one is protected (alert at most), a forger is still blocked, and a
    published-range crawler is protected for enforcers without any DNS."""
    import polars as pl

    from mlguard.decisions.policy import Policy

    records, port = zone
    records.add_ptr("66.249.66.1", "crawl-66-249-66-1.googlebot.com.")
    records.add_address("crawl-66-249-66-1.googlebot.com", "66.249.66.1")
    records.add_ptr("81.2.69.160", "crawl-66-249-66-1.googlebot.com.")  # a forger's PTR
    frame = pl.DataFrame(
        {
            "client": ["66.249.66.1", "81.2.69.160", "81.2.69.161"],
            "score": [0.9, 0.9, 0.9],
            "requests": [500, 500, 500],
            "top_user_agent": [GOOGLEBOT_UA, GOOGLEBOT_UA, BROWSER_UA],
        }
    )
    test_list = RangeList("googlebot", "Googlebot", "Google", "test", None, None, ["66.249.64.0/19"])
    ranges = CrawlerRanges([test_list], "test")
    policy = Policy(crawlers=verifier(port))
    out = {r["client"]: r for r in policy.verdicts(frame).iter_rows(named=True)}
    assert out["66.249.66.1"]["verdict"] == "alert"
    assert "forward-confirmed reverse DNS" in out["66.249.66.1"]["protected"]
    assert out["81.2.69.160"]["verdict"] == "block" and out["81.2.69.161"]["verdict"] == "block"
    # PTR + A for the genuine one and for the forger (whose A is not its address); none for the
    # client that claims no crawler.
    assert len(records.queries) == 4 and not any("161.69.2.81" in name for name, _ in records.queries)
    enforcing = Policy(crawlers=CrawlerVerifier(ranges, dns=False))
    assert enforcing.protection("66.249.70.5") == "well-known crawler: Googlebot (published range)"
    assert enforcing.protection("81.2.69.160") is None
