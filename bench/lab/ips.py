"""Deterministic, public-looking but made-up client addresses, one per actor.

Every actor reaches nginx from 127.0.0.1 and announces its address in ``X-Forwarded-For``;
nginx's realip module turns that into ``$remote_addr``.  Addresses must look public because
MLGuard (rightly) never blocks private, loopback, CGNAT or documentation ranges, so a lab that
used 10.x addresses would test nothing.
"""

from __future__ import annotations

import ipaddress
import random

# Prefixes that are globally routable in ``ipaddress``'s eyes but that we avoid anyway, so the
# lab never impersonates a famous resolver or a real crawler's published range.
_AVOID_V4 = [ipaddress.ip_network(n) for n in ("1.1.1.0/24", "8.8.8.0/24", "8.8.4.0/24", "9.9.9.0/24",
                                                "66.249.64.0/19", "157.55.0.0/16", "40.77.0.0/16")]


def is_usable_v4(addr: ipaddress.IPv4Address) -> bool:
    first = int(addr) >> 24
    return (
        addr.is_global
        and not addr.is_multicast
        and not addr.is_reserved
        and 1 <= first <= 223
        and not any(addr in n for n in _AVOID_V4)
        # .0 and .255 hosts look odd in a log; real clients rarely use them.
        and int(addr) & 0xFF not in (0, 255)
    )


class IpAllocator:
    """Hands out unique addresses from a seeded RNG; the same call order gives the same addresses."""

    def __init__(self, seed: int, scope: str = "") -> None:
        # ``scope`` (the scenario name) keeps scenarios' address sets apart, so the logs of several
        # scenarios can be evaluated together without one IP being benign here and malicious there.
        self._rng = random.Random(f"lab-ips/{scope}/{seed}")
        self._used: set[str] = set()

    def _take(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        text = str(addr)  # compressed lowercase form: the same text nginx writes for $remote_addr
        if text in self._used:
            return None
        self._used.add(text)
        return text

    def v4(self) -> str:
        while True:
            addr = ipaddress.IPv4Address(self._rng.getrandbits(32))
            if is_usable_v4(addr) and (got := self._take(addr)):
                return got

    def v4_block(self, n: int) -> list[str]:
        """``n`` addresses inside one random /24, like a crawler's or a botnet provider's subnet."""
        while True:
            base = ipaddress.IPv4Address(self._rng.getrandbits(24) << 8)
            hosts = [base + h for h in self._rng.sample(range(2, 254), n)]
            if all(is_usable_v4(h) and str(h) not in self._used for h in hosts):
                return [t for h in hosts if (t := self._take(h))]

    def v6(self) -> str:
        # 2a00::/12 (RIPE) and 2600::/12 (ARIN) style residential addresses; always is_global.
        while True:
            top = self._rng.choice((0x2A00, 0x2A01, 0x2A02, 0x2600, 0x2601, 0x2604))
            addr = ipaddress.IPv6Address((top << 112) | self._rng.getrandbits(112))
            if addr.is_global and (got := self._take(addr)):
                return got
