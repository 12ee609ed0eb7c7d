"""The nftables enforcer. The script tests always run: the exact nft batch for given decisions and
set contents, and that no client text but what `ipaddress` makes of it reaches that batch. The
kernel tests run the real nft against a private network namespace made for each test (`ip netns
add`, deleted after), so the host's ruleset is never touched; they skip, saying why, where
namespaces cannot be made or nft cannot talk to the kernel. The one traffic test connects
between two addresses on the namespace's own loopback, bounded to a few 1-second connects."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlguard.decisions.policy import Policy, parse_networks
from mlguard.decisions.store import Decision
from mlguard.enforcers.nftables import Element, NftablesEnforcer, Plan, element_key, parse_elements
from mlguard.errors import EnforcerError, UsageError

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
V4, V6 = "inet mlguard mlguard_block_v4", "inet mlguard mlguard_block_v6"
_ids = itertools.count(1)


def decision(client: str, expires: datetime | None, verdict: str = "block") -> Decision:
    when = None if expires is None else expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Decision(
        next(_ids),
        client,
        verdict,
        0.9,
        ["x"],
        None,
        "2026-11-28T11:00:00Z",
        when,
        "detector",
        "active",
        None,
    )


def at(now: datetime, **options: object) -> NftablesEnforcer:
    return NftablesEnforcer(clock=lambda: now, **options)  # type: ignore[arg-type]


# --- the script, without nft -------------------------------------------------------------------


def test_script_adds_new_blocks_with_timeouts_deletes_old_ones_and_refreshes_moved_expiries() -> None:
    now = T0 + timedelta(seconds=0.5)
    decisions = [
        decision("81.2.69.160", T0 + timedelta(hours=1)),  # in the set, expiry as the kernel has it
        decision("81.2.69.170", T0 + timedelta(hours=2)),  # new
        decision("81.2.69.171", T0 + timedelta(seconds=1)),  # 0.5 s left: at least 1 s
        decision("81.2.69.172", T0 - timedelta(seconds=1)),  # expired: nothing to add
        decision("81.2.69.173", T0 + timedelta(hours=1), verdict="alert"),  # alerts never block
        decision("185.199.108.0/22", T0 + timedelta(hours=2)),  # a person's range block ...
        decision("185.199.109.5", T0 + timedelta(minutes=10)),  # ... holds this one (no overlap in sets)
        decision("10.0.0.9", None),  # private: never
        decision("151.101.1.1", None),  # allowlisted below: never
        decision("2a01:4f8:c0c::7", None),  # new, no expiry: no timeout
        decision("2a01:4f8:c0c::9", None),  # in the set with a timeout: made permanent
        decision("::ffff:81.2.69.180", T0 + timedelta(hours=1)),  # IPv4-mapped: goes to the v4 set
    ]
    current = {
        4: {
            "81.2.69.160": Element("81.2.69.160", 4, 3600 - 15),  # within the slack: left alone
            "5.6.7.8": Element("5.6.7.8", 4, 100),  # no longer blocked
            "8.8.8.0-8.8.8.10": Element("8.8.8.0-8.8.8.10", 4, None),  # added by hand: the set is ours
        },
        6: {"2a01:4f8:c0c::9": Element("2a01:4f8:c0c::9", 6, 100)},
    }
    enforcer = at(now, policy=Policy(allow=parse_networks(["151.101.0.0/16"])))
    plan = enforcer.plan(decisions, current)
    assert enforcer.script(plan) == (
        f"delete element {V4} {{ 5.6.7.8, 8.8.8.0-8.8.8.10 }}\n"
        f"delete element {V6} {{ 2a01:4f8:c0c::9 }}\n"
        f"add element {V4} {{ 81.2.69.170 timeout 7200s, 81.2.69.171 timeout 1s, "
        "81.2.69.180 timeout 3600s, 185.199.108.0/22 timeout 7200s }\n"
        f"add element {V6} {{ 2a01:4f8:c0c::7, 2a01:4f8:c0c::9 }}\n"
    )
    assert [d.client for d in plan.new] == [
        "81.2.69.170",
        "81.2.69.171",
        "::ffff:81.2.69.180",
        "185.199.108.0/22",
        "2a01:4f8:c0c::7",
    ]
    assert (plan.refreshed, plan.unchanged) == (1, 1)
    # The same decisions against the set as this batch leaves it: nothing to do.
    after = {
        4: {k: Element(k, 4, t) for k, v, t in plan.add if v == 4}
        | {"81.2.69.160": current[4]["81.2.69.160"]},
        6: {k: Element(k, 6, t) for k, v, t in plan.add if v == 6},
    }
    assert enforcer.script(enforcer.plan(decisions, after)) == ""
    # The longest of two decisions for one address counts; none at all is the longest.
    twice = [
        decision("81.2.69.190", T0 + timedelta(hours=1)),
        decision("81.2.69.190", T0 + timedelta(hours=3)),
    ]
    assert enforcer.plan(twice, {}).add == [("81.2.69.190", 4, 10800)]
    assert enforcer.plan([*twice, decision("81.2.69.190", None)], {}).add == [("81.2.69.190", 4, None)]


def test_attacker_text_never_reaches_the_script() -> None:
    hostile = "1.2.3.4 } ; flush ruleset ; {"
    assert element_key(hostile) is None
    # Python keeps any text after % as an IPv6 zone: such a client is no address at all.
    assert element_key("fe80::1%}; flush ruleset") is None
    assert element_key("[2a01:4f8:c0c::7]:443") == ("2a01:4f8:c0c::7", 6)
    assert element_key("81.2.69.160/24") == ("81.2.69.0/24", 4)
    enforcer = at(T0, policy=Policy(block_private=True))  # so the link-local one gets this far
    decisions = [decision(c, None) for c in (hostile, "fe80::1%}; flush ruleset", "81.2.69.160\n")]
    assert enforcer.script(enforcer.plan(decisions, {})) == (
        f"add element {V4} {{ 81.2.69.160 }}\n"
    )
    with pytest.raises(EnforcerError, match="refusing"):  # the last lock, should a bug open the others
        enforcer.script(Plan(add=[("1.2.3.4 } ; flush ruleset ; {", 4, None)]))
    # What nft lists goes through the same door: a value that is not an address is refused.
    listing = {"nftables": [{"set": {"name": "mlguard_block_v4", "elem": ["1.2.3.4 } ; flush ruleset"]}}]}
    with pytest.raises(EnforcerError, match="does not understand"):
        parse_elements(listing, {4: "mlguard_block_v4", 6: "mlguard_block_v6"})
    for bad in ("inet mlguard; flush ruleset", "mlguard", "arp mlguard", "inet ml guard"):
        with pytest.raises(UsageError, match="--nftables-table"):
            NftablesEnforcer(table=bad)
    with pytest.raises(UsageError, match="--nftables-set-v4"):
        NftablesEnforcer(set_v4="x } ; flush ruleset")
    with pytest.raises(UsageError, match="inet"):
        NftablesEnforcer(table="ip mlguard", create=True)
    with pytest.raises(UsageError, match="empty"):
        NftablesEnforcer(command="  ")


def test_parses_what_nft_lists() -> None:
    """`nft -j list table` output of nft 1.0.6 (Debian 12): bare addresses, prefixes, ranges and
    elements with a timeout; the chain and other sets are ignored."""
    listing = json.loads(
        '{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "inet", "name": "mlguard"}},'
        ' {"set": {"family": "inet", "name": "mlguard_block_v4", "table": "mlguard", "type": "ipv4_addr",'
        ' "flags": ["interval", "timeout"], "elem": ["1.2.3.4", {"prefix": {"addr": "5.6.7.0", "len": 24}},'
        ' {"range": ["8.8.8.0", "8.8.8.10"]},'
        ' {"elem": {"val": "20.0.0.1", "timeout": 3600, "expires": 3599}}]}},'
        ' {"set": {"family": "inet", "name": "mlguard_block_v6", "table": "mlguard", "type": "ipv6_addr",'
        ' "elem": [{"elem": {"val": {"prefix": {"addr": "2001:db8:1::", "len": 48}}, "timeout": 5,'
        ' "expires": 4}}]}}, {"set": {"name": "other", "elem": ["9.9.9.9"]}},'
        ' {"chain": {"family": "inet", "table": "mlguard", "name": "filter"}}]}'
    )
    found = parse_elements(listing, {4: "mlguard_block_v4", 6: "mlguard_block_v6"})
    assert found == {
        4: {
            "1.2.3.4": Element("1.2.3.4", 4, None),
            "5.6.7.0/24": Element("5.6.7.0/24", 4, None),
            "8.8.8.0-8.8.8.10": Element("8.8.8.0-8.8.8.10", 4, None),
            "20.0.0.1": Element("20.0.0.1", 4, 3599),
        },
        6: {"2001:db8:1::/48": Element("2001:db8:1::/48", 6, 4)},
    }


def test_a_missing_nft_is_a_failed_sync_not_a_traceback() -> None:
    enforcer = at(T0, command="/nonexistent/nft")
    decisions = [decision("81.2.69.160", None), decision("81.2.69.161", None, verdict="alert")]
    result = enforcer.sync(decisions)
    assert (result.sent, result.failed) == (0, 1) and "could not run /nonexistent/nft" in result.messages[0]
    assert "could not run" in (enforcer.healthcheck() or "")
    assert [d.client for d in enforcer.pending(decisions)] == ["81.2.69.160"]


# --- the real nft, in a network namespace of its own -------------------------------------------


def _tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()), None
    )


NFT, IP = _tool("nft"), _tool("ip")
_namespaces = itertools.count()


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace (its own empty ruleset); deleted afterwards."""
    if NFT is None or IP is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install nftables and iproute2 (.ci/run) for the nftables tests")
        pytest.skip("nft or ip is not installed (apt-get install nftables iproute2)")
    name = f"mlguard-test-{os.getpid()}-{next(_namespaces)}"
    made = subprocess.run([str(IP), "netns", "add", name], capture_output=True, text=True, timeout=10)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {made.stderr.strip()}")
    try:
        probe = subprocess.run(
            [str(IP), "netns", "exec", name, str(NFT), "list", "ruleset"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if probe.returncode != 0:
            pytest.skip(f"nft cannot talk to the kernel here: {probe.stderr.strip()}")
        yield name
    finally:
        subprocess.run([str(IP), "netns", "delete", name], capture_output=True, timeout=10)


def nft_command(ns: str) -> str:
    return f"{IP} netns exec {ns} {NFT}"


def nft(ns: str, *args: str, script: str | None = None) -> str:
    done = subprocess.run(
        [str(IP), "netns", "exec", ns, str(NFT), *args],
        input=script,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def elements(ns: str, name: str) -> dict[str, int | None]:
    """A set's elements as the kernel has them: address -> seconds left (None: no timeout)."""
    listing = json.loads(nft(ns, "-j", "list", "set", "inet", "mlguard", name))
    out: dict[str, int | None] = {}
    for item in listing["nftables"]:
        for elem in item.get("set", {}).get("elem", []):
            if isinstance(elem, dict) and "elem" in elem:
                out[elem["elem"]["val"]] = elem["elem"].get("expires")
            else:
                out[elem] = None
    return out


class Spy:
    """Records which nft commands an enforcer runs (they still run)."""

    def __init__(self, enforcer: NftablesEnforcer) -> None:
        self.calls: list[list[str]] = []
        real = enforcer._call

        def call(args: list[str], script: str | None = None) -> subprocess.CompletedProcess[str]:
            self.calls.append(args)
            return real(args, script)

        enforcer._call = call  # type: ignore[method-assign]

    def batches(self) -> int:
        return sum(args == ["-f", "-"] for args in self.calls)


def test_blocks_land_in_the_sets_with_timeouts_and_leave_when_unblocked(netns: str) -> None:
    plain = NftablesEnforcer(command=nft_command(netns))
    refused = plain.sync([decision("81.2.69.160", None), decision("10.0.0.9", None)])
    assert refused.failed == 1 and "--nftables-create" in refused.messages[0]
    assert "does not exist" in (plain.healthcheck() or "")

    now = datetime.now(UTC)
    blocked = decision("81.2.69.160", now + timedelta(hours=1))
    v6 = decision("2a01:4f8:c0c::7", None)
    decisions = [blocked, v6, decision("10.0.0.9", None), decision("81.2.69.161", None, verdict="alert")]
    enforcer = NftablesEnforcer(command=nft_command(netns), create=True)
    spy = Spy(enforcer)
    assert [d.client for d in enforcer.pending(decisions)] == ["81.2.69.160", "2a01:4f8:c0c::7"]
    first = enforcer.sync(decisions)
    assert (first.sent, first.failed) == (2, 0), first.messages
    v4_now = elements(netns, "mlguard_block_v4")
    assert set(v4_now) == {"81.2.69.160"} and 3590 <= (v4_now["81.2.69.160"] or 0) <= 3600
    assert elements(netns, "mlguard_block_v6") == {"2a01:4f8:c0c::7": None}
    assert (
        enforcer.healthcheck() is None and plain.healthcheck() is None and enforcer.pending(decisions) == []
    )
    table = nft(netns, "list", "table", "inet", "mlguard")
    assert "hook input priority filter - 10" in table and "ip saddr @mlguard_block_v4 drop" in table

    # Unchanged: the sets are read, no batch is applied; a second creator adds no second rule.
    batches = spy.batches()
    again = enforcer.sync(decisions)
    assert (again.sent, again.unchanged, again.messages, spy.batches()) == (0, 2, [], batches)
    assert NftablesEnforcer(command=nft_command(netns), create=True).sync(decisions).unchanged == 2
    assert nft(netns, "list", "table", "inet", "mlguard").count("saddr @mlguard_block_v4 drop") == 1

    # Seen again: the expiry moved, so the element is replaced with the new timeout.
    later = decision("81.2.69.160", now + timedelta(hours=3))
    moved = enforcer.sync([later, v6])
    assert (moved.sent, moved.unchanged) == (1, 1)
    assert 10790 <= (elements(netns, "mlguard_block_v4")["81.2.69.160"] or 0) <= 10800

    # Someone puts a private address in MLGuard's set by hand: the next sync takes it out, and
    # the unblocked v6 address leaves with it.
    nft(netns, "-f", "-", script=f"add element {V4} {{ 10.0.0.9 }}\n")
    released = enforcer.sync([later])
    assert released.failed == 0 and "2 removed" in released.messages[0]
    assert set(elements(netns, "mlguard_block_v4")) == {"81.2.69.160"}
    assert elements(netns, "mlguard_block_v6") == {}
    assert enforcer.sync([]).failed == 0 and elements(netns, "mlguard_block_v4") == {}


def test_the_kernel_expires_elements_and_a_late_sync_does_not_fail(netns: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    short = decision("81.2.69.160", now + timedelta(seconds=2))
    clock_now = now + timedelta(microseconds=1)  # the decision has just under 2 s left: timeout 2s
    enforcer = NftablesEnforcer(command=nft_command(netns), create=True, clock=lambda: clock_now)
    assert enforcer.sync([short]).sent == 1
    assert elements(netns, "mlguard_block_v4")["81.2.69.160"] in (0, 1, 2)
    deadline = time.monotonic() + 5
    while "81.2.69.160" in elements(netns, "mlguard_block_v4") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert elements(netns, "mlguard_block_v4") == {}, "the kernel did not expire the element"

    # MLGuard was down meanwhile; the decision has expired too: nothing to do, nothing fails.
    clock_now = datetime.now(UTC)
    late = enforcer.sync([short])
    assert (late.sent, late.failed, late.messages) == (0, 0, [])

    # The race: the set was read with the element still there, the kernel dropped it, and the
    # batch's delete of it fails. The enforcer reads again and applies the rest.
    reads = [{4: {"81.2.69.160": Element("81.2.69.160", 4, 0)}, 6: {}}]  # read just before it went
    real = enforcer._elements
    enforcer._elements = lambda: reads.pop() if reads else real()  # type: ignore[method-assign]
    raced = enforcer.sync([decision("81.2.69.170", None)])
    assert (raced.sent, raced.failed) == (1, 0), raced.messages
    assert elements(netns, "mlguard_block_v4") == {"81.2.69.170": None}


def test_nft_errors_are_failed_syncs(netns: str) -> None:
    decisions = [decision("81.2.69.160", None)]
    # "timeout" is a set name by our rules but a keyword to nft: its batch is a syntax error.
    keyword = NftablesEnforcer(command=nft_command(netns), set_v4="timeout", create=True)
    syntax = keyword.sync(decisions)
    assert syntax.failed == 1 and "syntax error" in syntax.messages[0], syntax.messages
    assert nft(netns, "list", "ruleset").strip() == ""  # one batch: nothing half-made is left behind
    setpriv = _tool("setpriv")  # util-linux, on every Debian
    if setpriv is None:
        return
    nobody = NftablesEnforcer(
        command=f"{IP} netns exec {netns} {setpriv} --reuid=65534 --regid=65534 --clear-groups {NFT}"
    )
    denied = nobody.sync(decisions)
    assert denied.failed == 1 and "Operation not permitted" in denied.messages[0], denied.messages
    assert "Operation not permitted" in (nobody.healthcheck() or "")


PROBE = """
import socket, sys
server = socket.create_server(("10.9.9.1", 8080))
for source in sys.argv[1:]:
    with socket.socket() as client:
        client.bind((source, 0))
        client.settimeout(1.0)
        try:
            client.connect(("10.9.9.1", 8080))
            print(source, "open")
        except TimeoutError:  # no answer at all: the SYN was dropped (anything else fails the probe)
            print(source, "dropped")
"""


def test_a_blocked_address_cannot_connect(netns: str) -> None:
    """Traffic inside the namespace, on its own loopback: 10.9.9.9 connects to 10.9.9.1 until it
    is blocked, 10.9.9.1 itself always can. (Private addresses are blockable only here, where
    the policy is told to.)"""
    for args in (
        ["link", "set", "lo", "up"],
        ["addr", "add", "10.9.9.1/32", "dev", "lo"],
        ["addr", "add", "10.9.9.9/32", "dev", "lo"],
    ):
        subprocess.run([str(IP), "-n", netns, *args], check=True, timeout=10)

    def probe() -> str:
        done = subprocess.run(
            [str(IP), "netns", "exec", netns, sys.executable, "-c", PROBE, "10.9.9.9", "10.9.9.1"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    enforcer = NftablesEnforcer(command=nft_command(netns), create=True, policy=Policy(block_private=True))
    assert probe() == "10.9.9.9 open\n10.9.9.1 open\n"
    assert enforcer.sync([decision("10.9.9.9", datetime.now(UTC) + timedelta(minutes=5))]).sent == 1
    assert probe() == "10.9.9.9 dropped\n10.9.9.1 open\n"
    assert enforcer.sync([]).failed == 0
    assert probe() == "10.9.9.9 open\n10.9.9.1 open\n"
