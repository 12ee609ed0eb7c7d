"""Who the client is: the address behind trusted proxies, in one canonical text form.

Behind a load balancer or CDN every line's peer is the proxy, and the client is in
`X-Forwarded-For`. That header is written by whoever sends the request, so it is believed only
as far as the proxies that appended to it are trusted: when the peer is a trusted proxy, the
client is the right-most address of the header that is not itself a trusted proxy (each
trusted hop appends the address it saw). A header from a peer that is not a trusted proxy is
ignored and counted: otherwise anyone could get someone else's address blocked.

Addresses are canonical (`2001:DB8:0::1` and `2001:db8::1` are one client; `::ffff:1.2.3.4` is
`1.2.3.4`), and IPv6 clients can be grouped by prefix (`--ipv6-prefix 64`: one home or one
server's whole /64 is one client). The work is done once per distinct (peer, header) pair, not
per line.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import polars as pl

from mlguard.decisions.policy import Network, parse_address
from mlguard.errors import UsageError

FORWARDED_COLUMN = "http_x_forwarded_for"  # the name every format gives X-Forwarded-For
MAX_CACHED = 200_000  # resolved (peer, header) pairs kept; a daemon's memory must stay flat

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

__all__ = ["FORWARDED_COLUMN", "ClientIdentity", "parse_address"]


@dataclass
class ClientIdentity:
    trusted: list[Network] = field(default_factory=list)
    ipv6_prefix: int | None = None
    via_proxy: int = 0  # lines whose client came from X-Forwarded-For
    forged: int = 0  # lines with X-Forwarded-For from a peer that is not a trusted proxy (ignored)
    unresolved: int = 0  # lines from a trusted proxy whose header names no usable address
    _cache: dict[tuple[str, str | None], tuple[str, str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.ipv6_prefix is not None and not 1 <= self.ipv6_prefix <= 128:
            raise UsageError("--ipv6-prefix must be between 1 and 128")

    @property
    def uses_forwarded(self) -> bool:
        return bool(self.trusted)

    def _is_trusted(self, address: Address) -> bool:
        return any(address.version == net.version and address in net for net in self.trusted)

    def canonical(self, address: Address) -> str:
        if self.ipv6_prefix is not None and address.version == 6:
            return str(ipaddress.ip_network(f"{address}/{self.ipv6_prefix}", strict=False))
        return str(address)

    def _resolve(self, peer: str, forwarded: str | None) -> tuple[str, str]:
        """(client, how): how is 'peer', 'forwarded', 'forged' or 'unresolved'."""
        address = parse_address(peer)
        if address is None:
            return peer, "peer"  # not an address (a hostname): left as the log has it
        hops = [h.strip() for h in (forwarded or "").split(",")]
        hops = [h for h in hops if h and h != "-"]
        if not self._is_trusted(address):
            return self.canonical(address), "forged" if hops and self.trusted else "peer"
        if not hops:
            return self.canonical(address), "unresolved"
        found: Address | None = None
        for hop in reversed(hops):
            hop_address = parse_address(hop)
            if hop_address is None:
                # A trusted proxy writes addresses: junk here came from the client itself.
                break
            found = hop_address
            if not self._is_trusted(hop_address):
                return self.canonical(hop_address), "forwarded"
        if found is None:
            return self.canonical(address), "unresolved"
        return self.canonical(found), "forwarded"  # every hop trusted: the left-most one

    def resolve(self, records: pl.DataFrame) -> pl.DataFrame:
        """`records` with `client` replaced by the resolved, canonical client."""
        if not self.trusted:
            return self._canonical_only(records)
        has_forwarded = FORWARDED_COLUMN in records.columns
        if self.trusted and not has_forwarded:
            raise UsageError(
                "--trusted-proxy needs the client's X-Forwarded-For in the log: use a format with "
                "$http_x_forwarded_for (nginx) or %{X-Forwarded-For}i (Apache)"
            )
        forwarded = pl.col(FORWARDED_COLUMN)
        keys = records.select(pl.col("client").alias("_peer"), forwarded.alias("_fwd"))
        pairs = keys.group_by("_peer", "_fwd").agg(pl.len().alias("_n"))
        resolved_client: list[str] = []
        how: list[str] = []
        for peer, fwd, n in pairs.iter_rows():
            client, kind = self._remember((peer, fwd))
            resolved_client.append(client)
            how.append(kind)
            if kind == "forwarded":
                self.via_proxy += n
            elif kind == "forged":
                self.forged += n
            elif kind == "unresolved":
                self.unresolved += n
        table = pairs.select("_peer", "_fwd").with_columns(
            pl.Series("_client", resolved_client, dtype=pl.String)
        )
        joined = records.with_columns(pl.col("client").alias("_peer"), forwarded.alias("_fwd")).join(
            table, on=["_peer", "_fwd"], how="left", nulls_equal=True
        )
        return joined.with_columns(pl.col("_client").alias("client")).drop("_peer", "_fwd", "_client")

    def _remember(self, key: tuple[str, str | None]) -> tuple[str, str]:
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()  # cheaper than tracking use; resolving again is exact
            found = self._cache[key] = self._resolve(*key)
        return found

    def _canonical_only(self, records: pl.DataFrame) -> pl.DataFrame:
        # No proxies to see through: only addresses that may not be canonical are looked at
        # (IPv6, mapped or bracketed forms); a plain dotted quad already is, unless grouped.
        plain = pl.col("client").str.contains(_PLAIN_IPV4)
        odd = records.filter(~plain)["client"].unique().to_list()
        if not odd:
            return records
        mapping = {}
        for text in odd:
            mapping[text] = self._remember((text, None))[0]
        changed = {k: v for k, v in mapping.items() if k != v}
        if not changed:
            return records
        return records.with_columns(pl.col("client").replace(changed))


# Digits and dots only: a dotted quad as servers write it (a cheap test on every line; the rest,
# IPv6, mapped and bracketed forms, hostnames, is looked at once per distinct text).
_PLAIN_IPV4 = r"^[0-9.]+$"
