"""Who the client is: X-Forwarded-For behind trusted proxies only, canonical addresses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from mlguard.decisions.policy import Policy, parse_networks
from mlguard.errors import UsageError
from mlguard.identity import ClientIdentity, parse_address
from tests.conftest import ROOT

NGINX_XFF = (
    'nginx:$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" "$http_x_forwarded_for"'
)


def resolve(trusted: list[str], rows: list[tuple[str, str | None]], **kw) -> tuple[list[str], ClientIdentity]:
    identity = ClientIdentity(parse_networks(trusted), **kw)
    frame = pl.DataFrame(
        {"client": [r[0] for r in rows], "http_x_forwarded_for": [r[1] for r in rows]},
        schema={"client": pl.String, "http_x_forwarded_for": pl.String},
    )
    return identity.resolve(frame)["client"].to_list(), identity


def test_the_client_is_the_right_most_untrusted_forwarded_address() -> None:
    clients, identity = resolve(
        ["10.0.0.0/8"],
        [
            ("10.0.0.5", "203.0.113.7"),  # one trusted proxy in front
            ("10.0.0.5", "203.0.113.7, 10.0.0.9"),  # two trusted hops
            # the client wrote its own header: only what the trusted proxy appended counts
            ("10.0.0.5", "198.51.100.1, 192.0.2.55, 203.0.113.8"),
            ("10.0.0.5", "10.1.1.1, 10.0.0.9"),  # every hop trusted: the left-most
            ("10.0.0.5", "[2001:DB8::7]:4431"),  # bracketed IPv6 with a port, canonical form
        ],
    )
    assert clients == ["203.0.113.7", "203.0.113.7", "203.0.113.8", "10.1.1.1", "2001:db8::7"]
    assert identity.via_proxy == 5 and identity.forged == 0


def test_forwarded_for_from_an_untrusted_peer_is_ignored_and_counted() -> None:
    # An attacker must not get someone else's address blocked by writing the header itself.
    clients, identity = resolve(
        ["10.0.0.0/8"],
        [("198.51.100.9", "203.0.113.50"), ("198.51.100.9", "203.0.113.50"), ("198.51.100.10", None)],
    )
    assert clients == ["198.51.100.9", "198.51.100.9", "198.51.100.10"]
    assert identity.forged == 2 and identity.via_proxy == 0


def test_a_trusted_proxy_without_a_usable_header_stays_the_client() -> None:
    clients, identity = resolve(
        ["10.0.0.0/8"],
        [("10.0.0.5", None), ("10.0.0.5", "-"), ("10.0.0.5", "<script>, 10.0.0.7")],
    )
    # junk where a trusted hop should have written an address: the last trusted hop is the client
    assert clients == ["10.0.0.5", "10.0.0.5", "10.0.0.7"]
    assert identity.unresolved == 2


def test_addresses_are_canonical_and_ipv6_can_be_grouped() -> None:
    clients, _ = resolve([], [("2001:DB8:0:0::1", None), ("::ffff:192.0.2.1", None), ("203.0.113.1", None)])
    assert clients == ["2001:db8::1", "192.0.2.1", "203.0.113.1"]
    clients, _ = resolve([], [("2001:db8:1:2:aaaa::1", None), ("2001:db8:1:2:bbbb::9", None)], ipv6_prefix=64)
    assert clients == ["2001:db8:1:2::/64", "2001:db8:1:2::/64"]
    assert parse_address("not-an-ip") is None
    with pytest.raises(UsageError):
        ClientIdentity([], ipv6_prefix=0)


def test_a_trusted_proxy_is_never_blocked() -> None:
    policy = Policy(trusted=parse_networks(["10.0.0.0/8"]), block_private=True)
    assert policy.protection("10.0.0.5") == "trusted proxy"
    assert policy.protection("203.0.113.5") is None


def mlguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlguard", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def _proxied_log(path: Path) -> Path:
    # A scanner and visitors behind a load balancer at 10.0.0.2, plus one direct client that
    # forges the header to frame 192.0.2.200.
    lines = []
    for i in range(60):
        lines.append(
            f'10.0.0.2 - - [20/Nov/2026:10:{i:02d}:00 +0000] "GET /admin/.env{i} HTTP/1.1" 404 9 "-" '
            f'"sqlmap/1.7" "203.0.113.66"'
        )
    for v in range(30):
        for page in ("/", "/style.css", "/about"):
            lines.append(
                f'10.0.0.2 - - [20/Nov/2026:11:{v:02d}:00 +0000] "GET {page} HTTP/1.1" 200 900 "-" '
                f'"Mozilla/5.0" "198.51.100.{v}, 10.0.0.3"'
            )
    lines.append(
        '198.51.100.250 - - [20/Nov/2026:12:00:00 +0000] "GET / HTTP/1.1" 200 900 "-" "Mozilla/5.0" '
        '"192.0.2.200"'
    )
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_detect_sees_through_trusted_proxies(tmp_path: Path) -> None:
    log = _proxied_log(tmp_path / "access.log")
    proc = mlguard("detect", str(log), "-f", NGINX_XFF, "--trusted-proxy", "10.0.0.0/8", "--json")
    assert proc.returncode == 0, proc.stderr
    found = {json.loads(line)["ip"]: json.loads(line) for line in proc.stdout.splitlines()}
    assert "10.0.0.2" not in found and "192.0.2.200" not in found
    assert "198.51.100.250" in found  # the forger is itself the client
    assert found["203.0.113.66"]["verdict"] in ("alert", "block")
    assert "150 lines took their client from X-Forwarded-For" in proc.stderr.replace(",", "")
    assert "1 lines carried X-Forwarded-For from an untrusted peer" in proc.stderr


def test_cli_trusted_proxy_needs_a_forwarded_field(tmp_path: Path) -> None:
    proc = mlguard("detect", str(ROOT / "examples" / "access.log"), "--trusted-proxy", "10.0.0.0/8")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "X-Forwarded-For" in proc.stderr
    proc = mlguard("detect", str(ROOT / "examples" / "access.log"), "--trusted-proxy", "not-a-net")
    assert proc.returncode == 2 and "not an IP address or CIDR" in proc.stderr


def test_a_grouped_ipv6_prefix_can_be_blocked_but_never_over_an_allowlist() -> None:
    policy = Policy(allow=parse_networks(["2a00:1450:1:2::5"]))
    assert policy.protection("2a00:1450:1:2::/64") == "allowlisted"  # the prefix holds an allowed address
    assert policy.protection("2a00:1450:9:9::/64") is None


def test_an_ipv6_zone_is_never_an_address_to_block() -> None:
    """ipaddress keeps the text after '%' as the zone; written into a deny line or a firewall
    script it would be an injection, so a client with a zone is no address at all."""
    from mlguard.decisions.policy import client_network

    hostile = "fe80::1%x; return 200 pwned"
    assert parse_address(hostile) is None
    assert client_network(hostile) is None
    assert client_network("fe80::%x/64") is None
    assert Policy(block_private=True).protection(hostile) == "not an IP address"
