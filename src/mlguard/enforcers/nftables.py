"""`nftables`: keep the active blocks as elements of two named sets, each with the kernel timeout
of its decision, so the kernel drops an expired block on its own even when MLGuard is down.

The sets (`mlguard_block_v4`, type ipv4_addr, and `mlguard_block_v6`, type ipv6_addr, both with
flags interval,timeout) live in one table (`inet mlguard` by default) and belong to MLGuard: a
sync makes them hold exactly the active blocks, so an element added by hand is removed. A rule
that drops their sources makes them act; with `create=True` the table, sets and an input chain
with those rules are created when missing. Each sync reads the sets (`nft -j list table`), and
when something differs applies one atomic batch (`nft -f -`): `delete element` for what is no
longer blocked, `add element ... timeout Ns` for what is new (or whose expiry moved). A client
is only ever written into that script as the text `ipaddress` makes of it, so no string from a
log reaches nft.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mlguard.decisions.policy import Network, Policy, client_network
from mlguard.decisions.store import Decision
from mlguard.enforcers import SyncResult
from mlguard.errors import EnforcerError, UsageError
from mlguard.explain.reasons import safe_text

FAMILIES = ("inet", "ip", "ip6", "bridge", "netdev")
CHAIN = "filter"
CHAIN_PRIORITY = -10  # before the usual filter chains (priority 0), so an accept there cannot skip it
REFRESH_SLACK_SECS = 300  # an element within this of its decision's expiry is left alone (the
# daemon refreshes an active block's expiry every pass; re-adding it each minute would be churn)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_ELEMENT = re.compile(r"[0-9A-Fa-f:./-]{1,100}")  # what a validated element can look like, checked again
_SET_TYPES = {4: "ipv4_addr", 6: "ipv6_addr"}


def element_key(client: str) -> tuple[str, int] | None:
    """The nft element for a client (`1.2.3.4`, `2001:db8::/32`) and its IP version, or None when
    the client is not an address or CIDR range. Built from the number, never from the text: an
    IPv6 scope (`fe80::1%anything`) is dropped, so nothing but digits, dots, colons and `/` remain."""
    network = _client_network(client)
    return None if network is None else (_key(network), network.version)


def _client_network(client: str) -> Network | None:
    network = client_network(client)
    return None if network is None else _bare(network)


def _bare(network: Network) -> Network:
    """The network rebuilt from its number and length: no IPv6 scope text survives."""
    return ipaddress.ip_network((int(network.network_address), network.prefixlen), strict=False)


def _key(network: Network) -> str:
    bare = _bare(network)
    if bare.prefixlen == bare.max_prefixlen:
        return str(bare.network_address)
    return str(bare)


def _inside(inner: Network, outer: Network) -> bool:
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]


def _longer(timeout: int | None, than: int | None) -> bool:
    """Whether a timeout lasts longer than another (None = forever)."""
    return than is not None and (timeout is None or timeout > than)


def _expiry(decision: Decision) -> datetime:
    try:
        return datetime.fromisoformat(str(decision.expires).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise EnforcerError(
            f"decision {decision.id} expires at {safe_text(decision.expires, 40)}, which is not an ISO time"
        ) from None


@dataclass(frozen=True)
class Element:
    """One element of a set as the kernel holds it."""

    key: str  # as nft writes it: "1.2.3.4", "10.0.0.0/8", or a range "1.2.3.4-1.2.3.9"
    version: int
    expires_secs: int | None  # what the kernel still keeps it for; None = no timeout


@dataclass(frozen=True)
class _Want:
    key: str
    version: int
    network: Network
    timeout_secs: int | None  # None = until unblocked
    decision: Decision

    @property
    def order(self) -> tuple[int, int, int]:  # by start, the wider of two with one start first
        return self.version, int(self.network.network_address), self.network.prefixlen


@dataclass
class Plan:
    """What one sync changes: additions (new or refreshed, with their timeouts) and deletions."""

    add: list[tuple[str, int, int | None]] = field(default_factory=list)  # key, version, timeout
    delete: list[tuple[str, int]] = field(default_factory=list)  # key, version
    new: list[Decision] = field(default_factory=list)  # blocks not in the set yet
    refreshed: int = 0  # in the set with another expiry: deleted and added again
    unchanged: int = 0


def _element_value(value: object, version: int) -> str:
    """An element value from `nft -j` output: an address, {"prefix": ...} or {"range": [...]}."""
    try:
        if isinstance(value, str):
            return _key(ipaddress.ip_network(value))
        if isinstance(value, dict) and "prefix" in value:
            prefix = value["prefix"]
            return _key(ipaddress.ip_network(f"{prefix['addr']}/{int(prefix['len'])}", strict=False))
        if isinstance(value, dict) and "range" in value:
            low, high = (ipaddress.ip_address(part) for part in value["range"])
            if low.version != version or high.version != version:
                raise ValueError("mixed versions")
            return f"{low}-{high}"
    except (ValueError, TypeError, KeyError):
        pass
    raise EnforcerError(f"nft listed a set element MLGuard does not understand: {safe_text(value, 80)}")


def parse_elements(listing: dict[str, object], set_names: dict[int, str]) -> dict[int, dict[str, Element]]:
    """The elements of the two sets in `nft -j list table` output, by IP version and key.
    A set missing from the listing is missing from the result."""
    by_name = {name: version for version, name in set_names.items()}
    found: dict[int, dict[str, Element]] = {}
    items = listing.get("nftables")
    for item in items if isinstance(items, list) else []:
        nft_set = item.get("set") if isinstance(item, dict) else None
        if not isinstance(nft_set, dict) or nft_set.get("name") not in by_name:
            continue
        version = by_name[nft_set["name"]]
        elements = found.setdefault(version, {})
        for raw in nft_set.get("elem") or []:
            expires: int | None = None
            if isinstance(raw, dict) and "elem" in raw:  # an element with a timeout, counter, ...
                inner = raw["elem"] if isinstance(raw["elem"], dict) else {}
                raw = inner.get("val")
                if isinstance(inner.get("expires"), int):
                    expires = inner["expires"]
            key = _element_value(raw, version)
            elements[key] = Element(key, version, expires)
    return found


class NftablesEnforcer:
    name = "nftables"
    blocks = True

    def __init__(
        self,
        command: str = "nft",
        table: str = "inet mlguard",
        set_v4: str = "mlguard_block_v4",
        set_v6: str = "mlguard_block_v6",
        create: bool = False,
        policy: Policy | None = None,
        timeout_secs: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.command = shlex.split(command)
        if not self.command:
            raise UsageError("--nftables-command is empty")
        parts = table.split()
        if len(parts) != 2 or parts[0] not in FAMILIES or not _NAME.fullmatch(parts[1]):
            raise UsageError(
                f"--nftables-table '{safe_text(table, 80)}' is not 'FAMILY NAME' "
                f"(FAMILY one of {', '.join(FAMILIES)}; NAME letters, digits and _), e.g. 'inet mlguard'"
            )
        self.family, self.table = parts
        for flag, value in (("--nftables-set-v4", set_v4), ("--nftables-set-v6", set_v6)):
            if not _NAME.fullmatch(value):
                raise UsageError(f"{flag} '{safe_text(value, 80)}' is not a set name (letters, digits and _)")
        if set_v4 == set_v6:
            raise UsageError("--nftables-set-v4 and --nftables-set-v6 must be different sets")
        if create and self.family != "inet":
            raise UsageError("--nftables-create makes an input chain, which needs an 'inet' table")
        self.sets = {4: set_v4, 6: set_v6}
        self.create = create
        self.policy = policy or Policy()
        self.timeout_secs = timeout_secs
        self._clock = clock

    # --- nft ---------------------------------------------------------------------------------

    def _call(self, args: list[str], script: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [*self.command, *args],
                input=script,
                capture_output=True,
                text=True,
                timeout=self.timeout_secs,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EnforcerError(f"could not run {safe_text(' '.join(self.command), 80)}: {exc}") from None

    def _failure(self, args: list[str], done: subprocess.CompletedProcess[str]) -> EnforcerError:
        lines = [line for line in done.stderr.splitlines() if "Error:" in line]
        why = (lines or done.stderr.splitlines() or [f"exit status {done.returncode}"])[0]
        return EnforcerError(f"nft {' '.join(args)} failed: {safe_text(why.strip(), 200)}")

    def _run(self, args: list[str], script: str | None = None) -> str:
        done = self._call(args, script)
        if done.returncode != 0:
            raise self._failure(args, done)
        return done.stdout

    def _listing(self) -> dict[str, object] | None:
        """`nft -j list table`, or None when the table does not exist."""
        args = ["-j", "list", "table", self.family, self.table]
        done = self._call(args)
        if done.returncode != 0:
            if "No such file or directory" in done.stderr:  # nft's words for a missing table
                return None
            raise self._failure(args, done)
        try:
            listing = json.loads(done.stdout)
        except json.JSONDecodeError:
            raise EnforcerError("nft -j list table printed something that is not JSON") from None
        if not isinstance(listing, dict):
            raise EnforcerError("nft -j list table printed JSON without an 'nftables' list")
        return listing

    def _elements(self) -> dict[int, dict[str, Element]]:
        """The sets' elements; creates what is missing when asked to, else says how to."""
        listing = self._listing()
        found = parse_elements(listing, self.sets) if listing is not None else {}
        if len(found) == 2:
            return found
        if not self.create:
            raise EnforcerError(self._missing(listing))
        self._run(["-f", "-"], self.create_script(chain=not self._has_chain(listing)))
        return {version: found.get(version, {}) for version in (4, 6)}

    def _missing(self, listing: dict[str, object] | None) -> str:
        what = "does not exist" if listing is None else f"lacks the set {self.sets[4]} or {self.sets[6]}"
        return (
            f"nftables table {self.family} {self.table} {what}; create it as docs/enforcer-nftables.md "
            "shows, or pass --nftables-create"
        )

    def _has_chain(self, listing: dict[str, object] | None) -> bool:
        items = listing.get("nftables") if listing is not None else None
        for item in items if isinstance(items, list) else []:
            chain = item.get("chain") if isinstance(item, dict) else None
            if isinstance(chain, dict) and chain.get("name") == CHAIN:
                return True
        return False

    # --- what to change ----------------------------------------------------------------------

    def create_script(self, chain: bool = True) -> str:
        """Table, sets and (when `chain`) the input chain that drops their sources. `add` of an
        existing table or set is a no-op; rules are only added with a new chain, never twice."""
        where = f"{self.family} {self.table}"
        lines = [f"add table {where}"]
        for version, name in self.sets.items():
            lines.append(f"add set {where} {name} {{ type {_SET_TYPES[version]}; flags interval,timeout; }}")
        if chain:
            hook = f"type filter hook input priority {CHAIN_PRIORITY}; policy accept;"
            lines.append(f"add chain {where} {CHAIN} {{ {hook} }}")
            lines.append(f"add rule {where} {CHAIN} ip saddr @{self.sets[4]} drop")
            lines.append(f"add rule {where} {CHAIN} ip6 saddr @{self.sets[6]} drop")
        return "\n".join(lines) + "\n"

    def _wanted(self, decisions: list[Decision]) -> list[_Want]:
        """One entry per blocked network, never a protected one; a network inside another
        blocked one is left out (an interval set refuses overlaps; the wider one blocks it)."""
        now = self._clock()
        best: dict[str, _Want] = {}
        for d in decisions:
            if d.verdict != "block" or self.policy.protection(d.client) is not None:
                continue
            network = _client_network(d.client)
            if network is None:
                continue
            timeout: int | None = None
            if d.expires is not None:
                left = (_expiry(d) - now).total_seconds()
                if left <= 0:
                    continue  # expired: the store will mark it so; the kernel needs no element
                timeout = max(1, math.ceil(left))
            want = _Want(_key(network), network.version, network, timeout, d)
            held = best.get(want.key)
            if held is None or _longer(timeout, held.timeout_secs):  # several decisions: the longest counts
                best[want.key] = want
        # CIDR blocks nest or are apart: in this order, a network inside an earlier one is
        # inside the last one kept.
        kept: list[_Want] = []
        for w in sorted(best.values(), key=lambda w: w.order):
            last = kept[-1] if kept else None
            if last is not None and last.version == w.version and _inside(w.network, last.network):
                continue
            kept.append(w)
        return kept

    def plan(self, decisions: list[Decision], current: dict[int, dict[str, Element]]) -> Plan:
        plan = Plan()
        wanted = self._wanted(decisions)
        keep = {(w.version, w.key) for w in wanted}
        for version in (4, 6):
            for key in sorted(current.get(version, {})):
                if (version, key) not in keep:
                    plan.delete.append((key, version))
        for w in wanted:
            held = current.get(w.version, {}).get(w.key)
            if held is None:
                plan.add.append((w.key, w.version, w.timeout_secs))
                plan.new.append(w.decision)
            elif self._stale(held.expires_secs, w.timeout_secs):
                # Re-adding an element does not change its timeout on every kernel: replace it.
                plan.delete.append((w.key, w.version))
                plan.add.append((w.key, w.version, w.timeout_secs))
                plan.refreshed += 1
            else:
                plan.unchanged += 1
        return plan

    @staticmethod
    def _stale(have: int | None, want: int | None) -> bool:
        if have is None or want is None:
            return have != want
        return abs(have - want) > REFRESH_SLACK_SECS

    def script(self, plan: Plan) -> str:
        """The nft batch for a plan: deletions first (a range leaving makes room for an address
        inside it), then additions. Empty when there is nothing to change."""
        deletions = [(key, version, None) for key, version in plan.delete]
        lines = [*self._statements("delete", deletions), *self._statements("add", plan.add)]
        return "".join(line + "\n" for line in lines)

    def _statements(self, verb: str, entries: list[tuple[str, int, int | None]]) -> list[str]:
        lines = []
        for version in (4, 6):
            items = []
            for key, entry_version, timeout in entries:
                if entry_version != version:
                    continue
                if not _ELEMENT.fullmatch(key):  # unreachable by construction: a second lock on the door
                    raise EnforcerError(f"refusing to write {safe_text(key, 60)} into an nft script")
                items.append(key if timeout is None else f"{key} timeout {timeout}s")
            if items:
                where = f"{self.family} {self.table} {self.sets[version]}"
                lines.append(f"{verb} element {where} {{ {', '.join(items)} }}")
        return lines

    # --- the Enforcer interface --------------------------------------------------------------

    def pending(self, decisions: list[Decision]) -> list[Decision]:
        """The blocks not in the sets yet (all of them when the sets cannot be read)."""
        try:
            listing = self._listing()
        except EnforcerError:
            listing = None
        current = parse_elements(listing, self.sets) if listing is not None else {}
        return self.plan(decisions, current).new

    def sync(self, decisions: list[Decision]) -> SyncResult:
        """Make the sets hold exactly the active blocks. `sent` counts elements added (new or
        with a new timeout); `failed`, when nft refused, the additions and removals that did not
        happen (all active blocks when the sets could not even be read)."""
        plan: Plan | None = None
        blocks = sum(d.verdict == "block" for d in decisions)  # the count if even the decisions are bad
        try:
            blocks = len(self._wanted(decisions))
            for attempt in range(2):
                plan = self.plan(decisions, self._elements())
                text = self.script(plan)
                if not text:
                    break
                try:
                    self._run(["-f", "-"], text)
                    break
                except EnforcerError:
                    # An element can time out between the read and the batch (its delete then
                    # fails, and the whole batch with it): read again and retry once.
                    if attempt:
                        raise
        except EnforcerError as exc:
            # New and refreshed additions plus removals; every block when the sets could not be read.
            failed = blocks if plan is None else len(plan.new) + len(plan.delete)
            unchanged = 0 if plan is None else plan.unchanged
            return SyncResult(unchanged=unchanged, failed=failed, messages=[str(exc)])
        assert plan is not None
        result = SyncResult(sent=len(plan.new) + plan.refreshed, unchanged=plan.unchanged)
        if plan.add or plan.delete:
            released = len(plan.delete) - plan.refreshed
            result.messages.append(
                f"{len(plan.new)} element(s) added, {plan.refreshed} refreshed, {released} removed"
            )
        return result

    def healthcheck(self) -> str | None:
        try:
            listing = self._listing()
            if listing is not None and len(parse_elements(listing, self.sets)) == 2:
                return None
            if not self.create:
                return self._missing(listing)
            self._run(["list", "tables"])  # the sync will create them: can nft reach the kernel?
        except EnforcerError as exc:
            return str(exc)
        return None

    def close(self) -> None:
        pass
