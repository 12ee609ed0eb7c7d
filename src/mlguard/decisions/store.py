"""The decision store: what was decided about which client, by whom, until when.

One SQLite file in WAL mode (readers never wait for the writer; a process killed mid-write
leaves the last committed transaction intact). Every change is one transaction. Decisions are
rows, never rewritten in place except their `state` and, for a decision seen again, its score,
reasons and expiry:

- verdict `alert` or `block` from the detector (origin `detector`) or a person (`person`);
- verdict `allow` from a person: feedback that persists. An allowed client or range is never
  blocked again by the detector, and a person's block of it is refused.

States: `active`, `expired` (its TTL passed), `revoked` (a person unblocked it, or an allow
covered it). Times are UTC; the caller passes `now` (the wall clock for the CLI, an injected
clock in tests), so expiry is testable and replays can use the log's own time.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from mlguard.decisions.policy import ALERT, BLOCK, Network, Policy, client_network, parse_networks
from mlguard.errors import InputError, UsageError

ALLOW = "allow"
ACTIVE, EXPIRED, REVOKED = "active", "expired", "revoked"
DETECTOR, PERSON = "detector", "person"
BLOCK_TTL = timedelta(hours=4)
ALERT_TTL = timedelta(hours=24)
MAX_BLOCK_TTL = timedelta(days=7)  # a repeat offender's TTL doubles per earlier block, up to this
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    client TEXT NOT NULL,          -- an address, or a CIDR range for allow
    verdict TEXT NOT NULL CHECK (verdict IN ('alert', 'block', 'allow')),
    score REAL,
    reasons TEXT NOT NULL DEFAULT '[]',  -- JSON list of sentences
    campaign TEXT,
    created TEXT NOT NULL,         -- ISO 8601 UTC
    expires TEXT,                  -- ISO 8601 UTC, NULL = never
    origin TEXT NOT NULL CHECK (origin IN ('detector', 'person')),
    state TEXT NOT NULL CHECK (state IN ('active', 'expired', 'revoked')),
    note TEXT
);
CREATE INDEX IF NOT EXISTS decisions_client ON decisions (client, state);
CREATE INDEX IF NOT EXISTS decisions_state ON decisions (state, verdict);
CREATE INDEX IF NOT EXISTS decisions_expiry ON decisions (state, expires);
CREATE TABLE IF NOT EXISTS deliveries (  -- which decision reached which target (webhooks)
    decision_id INTEGER NOT NULL REFERENCES decisions (id),
    target TEXT NOT NULL,
    delivered TEXT NOT NULL,
    PRIMARY KEY (decision_id, target)
);
CREATE TABLE IF NOT EXISTS positions (  -- where `mlguard watch` stopped reading each log
    path TEXT PRIMARY KEY,
    device INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    line_no INTEGER NOT NULL,
    updated TEXT NOT NULL
);
"""


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Decision:
    id: int
    client: str
    verdict: str
    score: float | None
    reasons: list[str]
    campaign: str | None
    created: str
    expires: str | None
    origin: str
    state: str
    note: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ip": self.client,
            "verdict": self.verdict,
            "score": self.score,
            "reasons": self.reasons,
            "campaign": self.campaign,
            "created": self.created,
            "expires": self.expires,
            "origin": self.origin,
            "state": self.state,
            "note": self.note,
        }


def _expire(db: sqlite3.Connection, now: datetime) -> int:
    cur = db.execute(
        "UPDATE decisions SET state = 'expired' "
        "WHERE state = 'active' AND expires IS NOT NULL AND expires <= ?",
        (_iso(now),),
    )
    return cur.rowcount


def _network(value: str) -> Network:
    return parse_networks([value])[0]


class DecisionStore:
    """Open (creating if needed) the store at `path`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are ours (BEGIN IMMEDIATE ... COMMIT).
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            found = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{self.path} is not a usable decision store: {exc}") from None
        if found is None:
            self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif found[0] != str(SCHEMA_VERSION):
            raise InputError(
                f"{self.path} holds decision store schema {found[0]}; this MLGuard reads {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> DecisionStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # Reading

    def _rows(self, where: str = "1", args: Iterable[Any] = ()) -> list[Decision]:
        sql = (
            "SELECT id, client, verdict, score, reasons, campaign, created, expires, origin, state, note "
            f"FROM decisions WHERE {where} ORDER BY id"
        )
        rows = self._db.execute(sql, tuple(args)).fetchall()
        try:  # one parse for all the reasons: `watch` lists tens of thousands of decisions
            reasons = json.loads("[" + ",".join(r[4] for r in rows) + "]")
        except ValueError:
            reasons = [json.loads(r[4]) for r in rows]  # raises on the row that is not JSON
        return [
            Decision(r[0], r[1], r[2], r[3], why, r[5], r[6], r[7], r[8], r[9], r[10])
            for r, why in zip(rows, reasons, strict=True)
        ]

    def list(
        self, *, state: str | None = ACTIVE, verdict: str | None = None, undelivered_to: str | None = None
    ) -> list[Decision]:
        """Decisions in `state` (all when None) with `verdict`; with `undelivered_to`, only the
        alerts and blocks that target has not had yet."""
        where, args = ["1"], []
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if verdict is not None:
            where.append("verdict = ?")
            args.append(verdict)
        if undelivered_to is not None:
            where.append(
                "verdict IN ('alert', 'block') AND id NOT IN "
                "(SELECT decision_id FROM deliveries WHERE target = ?)"
            )
            args.append(undelivered_to)
        return self._rows(" AND ".join(where), args)

    def active_clients(self, verdict: str) -> set[str]:
        """The clients under an active decision of `verdict` (cheaper than `list`)."""
        rows = self._db.execute(
            "SELECT client FROM decisions WHERE state = 'active' AND verdict = ?", (verdict,)
        )
        return {r[0] for r in rows}

    def since(self, last_id: int) -> list[Decision]:
        """Decisions made after the one numbered `last_id` (whatever their state now)."""
        return self._rows("id > ?", (last_id,))

    def last_id(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM decisions").fetchone()[0])

    def history(self, client: str) -> list[Decision]:
        return self._rows("client = ?", (client,))

    def allowed(self) -> list[Network]:
        """Every active allow entry, as networks (for `Policy.allow`)."""
        return [_network(d.client) for d in self.list(verdict=ALLOW)]

    def _allowed_by(self, address: Network) -> Decision | None:
        for entry in self.list(verdict=ALLOW):
            net = _network(entry.client)
            if net.version == address.version and net.overlaps(address):
                return entry
        return None

    def undelivered(self, target: str, decisions: list[Decision]) -> list[Decision]:
        """The decisions not yet delivered to `target`."""
        rows = self._db.execute("SELECT decision_id FROM deliveries WHERE target = ?", (target,))
        done = {r[0] for r in rows}
        return [d for d in decisions if d.id not in done]

    def positions(self) -> list[tuple[str, int, int, int, int]]:
        """Where following each log stopped: (path, device, inode, offset, line_no)."""
        rows = self._db.execute("SELECT path, device, inode, offset, line_no FROM positions ORDER BY path")
        return [tuple(r) for r in rows]

    # Writing

    def save_positions(self, positions: list[tuple[str, int, int, int, int]], now: datetime) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO positions VALUES (?, ?, ?, ?, ?, ?)",
                [(*p, _iso(now)) for p in positions],
            )

    def mark_delivered(self, target: str, ids: list[int], now: datetime) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO deliveries VALUES (?, ?, ?)", [(i, target, _iso(now)) for i in ids]
            )

    def expire(self, now: datetime) -> int:
        """Mark every active decision whose TTL has passed as expired; how many."""
        with self._transaction() as db:
            return _expire(db, now)

    def _block_ttl(self, db: sqlite3.Connection, client: str) -> timedelta:
        earlier = db.execute(
            "SELECT COUNT(*) FROM decisions WHERE client = ? AND verdict = 'block' AND state != 'active'",
            (client,),
        ).fetchone()[0]
        return min(BLOCK_TTL * (2 ** min(earlier, 10)), MAX_BLOCK_TTL)

    def record(self, findings: pl.DataFrame, now: datetime) -> dict[str, int]:
        """Store the detector's alert and block verdicts of `findings` (client, verdict, score,
        reasons[, campaign]) in one transaction. A client already under an active decision of
        the same verdict has that decision refreshed (score, reasons, expiry), not repeated; a
        block supersedes an active alert. Allowed clients get nothing. Counts by outcome."""
        flagged = findings.filter(pl.col("verdict").is_in([ALERT, BLOCK]))
        counts = {"new": 0, "refreshed": 0, "allowed": 0}
        if flagged.height == 0:
            return counts
        # The policy that decided has allowlists of its own; the store's allow entries are
        # checked here too, so that a caller that did not load them cannot record past them.
        allow = self.allowed()
        has_campaign = "campaign" in flagged.columns
        with self._transaction() as db:
            _expire(db, now)
            for row in flagged.iter_rows(named=True):
                client, verdict = row["client"], row["verdict"]
                address = client_network(client)
                if address is not None and any(
                    n.version == address.version and n.overlaps(address) for n in allow
                ):
                    counts["allowed"] += 1
                    continue
                ttl = self._block_ttl(db, client) if verdict == BLOCK else ALERT_TTL
                reasons = json.dumps(row["reasons"] or [])
                campaign = row["campaign"] if has_campaign else None
                current = db.execute(
                    "SELECT id, verdict FROM decisions WHERE client = ? AND state = 'active' "
                    "AND verdict IN ('alert', 'block') ORDER BY id DESC LIMIT 1",
                    (client,),
                ).fetchone()
                if current is not None and (current[1] == verdict or current[1] == BLOCK):
                    db.execute(
                        "UPDATE decisions SET score = ?, reasons = ?, campaign = ?, expires = ? WHERE id = ?",
                        (row["score"], reasons, campaign, _iso(now + ttl), current[0]),
                    )
                    counts["refreshed"] += 1
                    continue
                if current is not None:  # an alert that became a block
                    db.execute(
                        "UPDATE decisions SET state = 'revoked', note = 'superseded by a block' WHERE id = ?",
                        (current[0],),
                    )
                db.execute(
                    "INSERT INTO decisions (client, verdict, score, reasons, campaign, created, expires, "
                    "origin, state) VALUES (?, ?, ?, ?, ?, ?, ?, 'detector', 'active')",
                    (client, verdict, row["score"], reasons, campaign, _iso(now), _iso(now + ttl)),
                )
                counts["new"] += 1
        return counts

    def allow(self, value: str, now: datetime, reason: str, ttl: timedelta | None = None) -> int:
        """Allow a client or range from now on (for `ttl`, or for good); revokes its active
        alerts and blocks. Returns the number of decisions revoked."""
        network = _network(value)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO decisions (client, verdict, reasons, created, expires, origin, state, note) "
                "VALUES (?, 'allow', '[]', ?, ?, 'person', 'active', ?)",
                (str(network), _iso(now), _iso(now + ttl) if ttl else None, reason),
            )
            revoked = 0
            active = db.execute(
                "SELECT id, client FROM decisions WHERE state = 'active' AND verdict IN ('alert', 'block')"
            ).fetchall()
            for decision_id, client in active:
                address = client_network(client)
                if address is not None and address.version == network.version and address.overlaps(network):
                    db.execute(
                        "UPDATE decisions SET state = 'revoked', note = ? WHERE id = ?",
                        (f"allowed: {reason}", decision_id),
                    )
                    revoked += 1
            return revoked

    def unblock(self, client: str, reason: str) -> int:
        """Revoke the client's active blocks (a person's call); how many."""
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE decisions SET state = 'revoked', note = ? WHERE client = ? AND state = 'active' "
                "AND verdict = 'block'",
                (f"unblocked: {reason}", client),
            )
            return cur.rowcount

    def block(
        self,
        client: str,
        now: datetime,
        reason: str,
        ttl: timedelta = BLOCK_TTL,
        policy: Policy | None = None,
    ) -> int:
        """A person's block of an address or range. Refused for an allowed client or a protected
        address (private, loopback, trusted proxy, allowlisted in `policy`)."""
        address = client_network(client)
        if address is None:
            raise UsageError(f"'{client}' is not an IP address or CIDR range")
        entry = self._allowed_by(address)
        if entry is not None:
            raise UsageError(f"{client} is allowed ({entry.client}: {entry.note}); remove the allow first")
        value = str(address.network_address) if address.num_addresses == 1 else str(address)
        why = (policy or Policy()).protection(value)
        if why is not None:
            raise UsageError(f"{client} may not be blocked: {why}")
        with self._transaction() as db:
            cur = db.execute(
                "INSERT INTO decisions (client, verdict, reasons, created, expires, origin, state, note) "
                "VALUES (?, 'block', ?, ?, ?, 'person', 'active', ?)",
                (value, json.dumps([reason]), _iso(now), _iso(now + ttl), reason),
            )
            return int(cur.lastrowid or 0)
