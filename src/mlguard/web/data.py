"""What the pages and the API show: the decision store aggregated in SQL, and the findings of
the log files (the detect pipeline, run in the background and again when the files change).

Every string from a log line or a person's note is returned as it is: escaping is the job of
the template (HTML) and of the JSON encoder, each for its own output.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from mlguard.decisions.policy import ALERT, BLOCK, PASS, Network, Policy, client_network, parse_address
from mlguard.decisions.store import ALLOW, Decision, DecisionStore
from mlguard.detectors.ensemble import preload
from mlguard.errors import MLGuardError
from mlguard.explain.reasons import safe_text
from mlguard.findings import output_frame
from mlguard.pipeline import ReadStats, read_logs, score_table
from mlguard.sources import s3
from mlguard.sources.files import expand_paths
from mlguard.web.charts import SCORE_BINS, bin_secs, bin_starts

log = logging.getLogger("mlguard.web")

VERDICTS = (BLOCK, ALERT, ALLOW)
STATES = ("active", "expired", "revoked")
TOP_CLIENTS = 20
TIMELINE_SPAN = timedelta(days=14)  # the decisions chart covers the last two weeks of the store
MAX_CLIENT_CHARS = 100  # longer is neither an address nor a range: not looked up at all
CLIENT_CACHE = 16  # drill-downs kept (each one reads the logs again)
SAMPLE_LINES = 25
TOP_ROWS = 12

_COLUMNS = "id, client, verdict, score, reasons, campaign, created, expires, origin, state, note"
# A decision whose TTL has passed is expired even before anyone ran `expire`: readers here
# never write, so the state is worked out at read time.
_STATE_NOW = (
    "CASE WHEN state = 'active' AND expires IS NOT NULL AND expires <= :now THEN 'expired' ELSE state END"
)
_ACTIVE_NOW = "state = 'active' AND (expires IS NULL OR expires > :now)"
_STATE_WHERE = {
    "active": _ACTIVE_NOW,
    "expired": "(state = 'expired' OR (state = 'active' AND expires <= :now))",
    "revoked": "state = 'revoked'",
}


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def canonical_client(text: str) -> str | None:
    """The form a client is stored and logged in (2001:DB8::1 -> 2001:db8::1, a range's
    network address); a name that is no address is kept as given (logs may hold host names).
    None when it cannot be a client at all."""
    text = text.strip()
    if not text or len(text) > MAX_CLIENT_CHARS:
        return None
    if "/" in text:
        network = client_network(text)
        return None if network is None else str(network)
    address = parse_address(text)
    return str(address) if address is not None else text


def _decision(row: tuple[Any, ...]) -> Decision:
    return Decision(row[0], row[1], row[2], row[3], json.loads(row[4]), *row[5:])


@dataclass(frozen=True)
class StoreOverview:
    total: int
    counts: dict[str, dict[str, int]]  # verdict -> state -> decisions
    timeline_starts: list[datetime]
    timeline_secs: int
    timeline: dict[str, list[int]]  # verdict -> new decisions per bin
    scores: dict[str, list[int]]  # alert/block -> active decisions per score bin
    top: list[Decision]  # active alerts and blocks, highest score first


class StoreView:
    """Reads of the decision store for the pages, one read transaction each (WAL: they never
    wait for `mlguard watch` writing). Each server thread keeps its own connection."""

    def __init__(self, path: Path) -> None:
        with DecisionStore(path):  # creates a new store, and checks an old one's schema version
            pass
        self.path = path
        self._local = threading.local()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
            db.execute("PRAGMA query_only = ON")
            self._local.db = db
        db.execute("BEGIN")  # one snapshot for every query of a page
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def overview(self, now: datetime) -> StoreOverview:
        at = {"now": iso(now)}
        with self.read() as db:
            counts: dict[str, dict[str, int]] = {v: dict.fromkeys(STATES, 0) for v in VERDICTS}
            # By stored state from the (state, verdict) index alone (a scan of whole rows costs
            # 10x more), then the active ones whose TTL has passed are moved to expired.
            for verdict, state, n in db.execute(
                "SELECT verdict, state, COUNT(*) FROM decisions GROUP BY state, verdict"
            ):
                counts.setdefault(verdict, dict.fromkeys(STATES, 0))[state] += n
            for verdict, n in db.execute(
                "SELECT verdict, COUNT(*) FROM decisions WHERE state = 'active' AND expires <= :now "
                "GROUP BY verdict",
                at,
            ):
                counts[verdict]["active"] -= n
                counts[verdict]["expired"] += n
            starts, secs, timeline = self._timeline(db)
            scores = {BLOCK: [0] * SCORE_BINS, ALERT: [0] * SCORE_BINS}
            rows = db.execute(
                f"SELECT verdict, MIN(CAST(score * {SCORE_BINS} AS INTEGER), {SCORE_BINS - 1}), COUNT(*) "
                f"FROM decisions WHERE {_ACTIVE_NOW} AND verdict IN ('alert', 'block') "
                "AND score IS NOT NULL GROUP BY 1, 2",
                at,
            )
            for verdict, i, n in rows:
                scores[verdict][max(i, 0)] += n
            top = [
                _decision(r)
                for r in db.execute(
                    f"SELECT {_COLUMNS} FROM decisions WHERE {_ACTIVE_NOW} AND verdict IN ('alert', 'block') "
                    "ORDER BY score DESC, id DESC LIMIT :limit",
                    {**at, "limit": TOP_CLIENTS},
                )
            ]
        total = sum(sum(by_state.values()) for by_state in counts.values())
        return StoreOverview(total, counts, starts, secs, timeline, scores, top)

    def _timeline(self, db: sqlite3.Connection) -> tuple[list[datetime], int, dict[str, list[int]]]:
        """New alerts, blocks and allows per bin over the last two weeks of the store (grouped
        by hour, or by minute for a short span, in SQL; then into nice bins here)."""
        last = db.execute("SELECT created FROM decisions ORDER BY id DESC LIMIT 1").fetchone()
        series: dict[str, list[int]] = {v: [] for v in VERDICTS}
        if last is None:
            return [], 3600, series
        since = iso(parse_iso(last[0]) - TIMELINE_SPAN)
        groups: list[tuple[str, str, int]] = []
        suffix = ""
        for chars, suffix in ((13, ":00:00Z"), (16, ":00Z")):  # noqa: B007 (used after the loop)
            groups = db.execute(
                f"SELECT substr(created, 1, {chars}), verdict, COUNT(*) FROM decisions "
                "WHERE created >= ? GROUP BY 1, 2",
                (since,),
            ).fetchall()
            times = sorted({g[0] for g in groups})
            if chars == 16 or len(times) > 6:
                break  # a span of a few hours is drawn by the minute instead
        stamps = {text: parse_iso(text + suffix) for text in {g[0] for g in groups}}
        first, end = min(stamps.values()), max(stamps.values())
        secs = max(bin_secs(first, end), 3600 if chars == 13 else 60)
        starts = bin_starts(first, end, secs)
        series = {v: [0] * len(starts) for v in VERDICTS}
        origin = starts[0]
        for text, verdict, n in groups:
            i = int((stamps[text] - origin).total_seconds() // secs)
            series.setdefault(verdict, [0] * len(starts))[i] += n
        return starts, secs, series

    def decisions(
        self,
        now: datetime,
        *,
        verdict: str | None = None,
        state: str | None = "active",
        client: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[Decision]:
        """Newest first; `before` (a decision id) pages through older ones."""
        where, args = ["1"], {"now": iso(now), "limit": limit}
        if verdict is not None:
            where.append("verdict = :verdict")
            args["verdict"] = verdict
        if state is not None:
            where.append(_STATE_WHERE[state])
        if client is not None:
            where.append("client = :client")
            args["client"] = client
        if before is not None:
            where.append("id < :before")
            args["before"] = before
        sql = (
            "SELECT id, client, verdict, score, reasons, campaign, created, expires, origin, "
            f"{_STATE_NOW}, note "
            f"FROM decisions WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT :limit"
        )
        with self.read() as db:
            return [_decision(r) for r in db.execute(sql, args)]

    def history(self, client: str, now: datetime) -> list[Decision]:
        """Every decision about `client`, newest first, and the allow entries covering it."""
        found = self.decisions(now, state=None, client=client, limit=1000)
        network = client_network(client)
        if network is not None:
            seen = {d.id for d in found}
            for entry in self.decisions(now, verdict=ALLOW, state=None, limit=10_000):
                covers = client_network(entry.client)
                if entry.id in seen or covers is None or covers.version != network.version:
                    continue
                if covers.overlaps(network):
                    found.append(entry)
            found.sort(key=lambda d: d.id, reverse=True)
        return found

    def current(self, clients: list[str], now: datetime) -> dict[str, Decision]:
        """The decision in force for each client that has one: an allow covering it, else its
        newest active block, else its newest active alert."""
        if not clients:
            return {}
        at = {"now": iso(now)}
        with self.read() as db:
            marks = ", ".join(f":c{i}" for i in range(len(clients)))
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM decisions WHERE client IN ({marks}) AND {_ACTIVE_NOW} ORDER BY id",
                {**at, **{f"c{i}": c for i, c in enumerate(clients)}},
            ).fetchall()
            allows = db.execute(
                f"SELECT {_COLUMNS} FROM decisions WHERE verdict = 'allow' AND {_ACTIVE_NOW}", at
            ).fetchall()
        rank = {ALERT: 0, BLOCK: 1}
        found: dict[str, Decision] = {}
        for decision in map(_decision, rows):
            old = found.get(decision.client)
            if old is None or rank.get(decision.verdict, 2) >= rank.get(old.verdict, 2):
                found[decision.client] = decision
        networks: list[tuple[Network, Decision]] = []
        for entry in map(_decision, allows):
            net = client_network(entry.client)
            if net is not None:
                networks.append((net, entry))
        for client in clients:
            address = client_network(client)
            for net, entry in networks:
                if address is not None and net.version == address.version and net.overlaps(address):
                    found[client] = entry
                    break
        return found

    def count(self) -> int:
        with self.read() as db:
            return int(db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])


# The logs


@dataclass(frozen=True)
class Analysis:
    """One run of the detect pipeline over the log paths."""

    findings: pl.DataFrame  # the documented fields (mlguard.findings), most suspicious first
    traffic: pl.DataFrame  # window (UTC), requests, errors: the whole site per 10-minute window
    window_secs: int
    stats: ReadStats
    finished: datetime
    seconds: float
    signature: tuple[tuple[Any, ...], ...]

    def finding(self, client: str) -> dict[str, Any] | None:
        rows = self.findings.filter(pl.col("ip") == client)
        return rows.row(0, named=True) if rows.height else None

    def verdict_counts(self) -> dict[str, int]:
        counts = self.findings["verdict"].value_counts()
        found = dict(zip(counts["verdict"].to_list(), counts["count"].to_list(), strict=True))
        return {v: int(found.get(v, 0)) for v in (BLOCK, ALERT, PASS)}

    def score_bins(self) -> dict[str, list[int]]:
        b = (pl.col("score") * SCORE_BINS).floor().cast(pl.Int64).clip(0, SCORE_BINS - 1)
        binned = self.findings.group_by("verdict", b.alias("b")).len()
        bins = {v: [0] * SCORE_BINS for v in (BLOCK, ALERT, PASS)}
        for verdict, b, n in binned.iter_rows():
            bins[verdict][b] += n
        return bins


@dataclass(frozen=True)
class ClientLog:
    """One client's requests in the logs, summarised for its page."""

    requests: int
    status_starts: list[datetime]
    status_secs: int
    status_mix: dict[str, list[int]]  # 2xx, 3xx, 4xx, 5xx, other -> requests per bin
    paths: list[tuple[str, int]]
    user_agents: list[tuple[str, int]]
    referers: list[tuple[str, int]]
    methods: list[tuple[str, int]]
    samples: list[dict[str, Any]]  # line_no, time, request, status, bytes, referer, user_agent

    def as_json(self) -> dict[str, Any]:
        def counted(pairs: list[tuple[str, int]], key: str) -> list[dict[str, Any]]:
            return [{key: value, "requests": n} for value, n in pairs]

        return {
            "requests": self.requests,
            "status_over_time": [
                {"start": iso(start), **{name: values[i] for name, values in self.status_mix.items()}}
                for i, start in enumerate(self.status_starts)
            ],
            "bin_secs": self.status_secs,
            "top_paths": counted(self.paths, "path"),
            "user_agents": counted(self.user_agents, "user_agent"),
            "referers": counted(self.referers, "referer"),
            "methods": counted(self.methods, "method"),
            "samples": [{**s, "time": iso(s["time"]) if s["time"] else None} for s in self.samples],
        }


STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "other")


def _top(frame: pl.DataFrame, column: str) -> list[tuple[str, int]]:
    counts = frame.group_by(pl.col(column).fill_null("")).len()
    counts = counts.sort(["len", column], descending=[True, False])
    return [(value, int(n)) for value, n in counts.head(TOP_ROWS).iter_rows()]


def client_log(records: pl.DataFrame) -> ClientLog:
    """Summarise one client's parsed records (`read_logs(..., keep_client=...)`)."""
    frame = records.sort("time")
    first, last = frame["time"].min(), frame["time"].max()
    starts: list[datetime] = []
    secs = 60
    mix: dict[str, list[int]] = {name: [] for name in STATUS_CLASSES}
    if isinstance(first, datetime) and isinstance(last, datetime):
        secs = bin_secs(first, last)
        starts = bin_starts(first, last, secs)
        mix = {name: [0] * len(starts) for name in STATUS_CLASSES}
        status = pl.col("status")
        klass = (
            pl.when(status.is_between(200, 299))
            .then(pl.lit("2xx"))
            .when(status.is_between(300, 399))
            .then(pl.lit("3xx"))
            .when(status.is_between(400, 499))
            .then(pl.lit("4xx"))
            .when(status.is_between(500, 599))
            .then(pl.lit("5xx"))
            .otherwise(pl.lit("other"))
        )
        origin = int(starts[0].timestamp())
        binned = (
            frame.filter(pl.col("time").is_not_null())
            .group_by(((pl.col("time").dt.epoch("s") - origin) // secs).alias("i"), klass.alias("k"))
            .len()
        )
        for i, k, n in binned.iter_rows():
            mix[k][i] += n
    # Evenly spread over the client's requests, in time order: the whole story, not its start.
    picks = sorted({round(i * (frame.height - 1) / max(SAMPLE_LINES - 1, 1)) for i in range(SAMPLE_LINES)})
    samples = frame[picks] if frame.height else frame
    target = pl.col("path").fill_null("") + pl.when(pl.col("query").is_not_null()).then(
        pl.lit("?") + pl.col("query")
    ).otherwise(pl.lit(""))
    return ClientLog(
        requests=frame.height,
        status_starts=starts,
        status_secs=secs,
        status_mix=mix,
        paths=_top(frame.with_columns(target.alias("target")), "target"),
        user_agents=_top(frame, "user_agent"),
        referers=_top(frame, "referer"),
        methods=_top(frame, "method"),
        samples=samples.select(
            "line_no", "time", "request", "status", "bytes", "referer", "user_agent"
        ).to_dicts(),
    )


def _signature(paths: tuple[str, ...]) -> tuple[tuple[Any, ...], ...]:
    """What the inputs look like now (names, sizes, modification times): a change means the
    findings are stale. S3 objects count by name (new objects arrive, old ones do not change)."""
    found: list[tuple[Any, ...]] = []
    for path in expand_paths(list(paths)):
        if s3.is_s3(path):
            found.append((path,))
            continue
        try:
            st = Path(path).stat()
        except OSError:
            found.append((path, None))
            continue
        found.append((path, st.st_size, st.st_mtime_ns))
    return tuple(found)


class LogView:
    """The findings of the log paths: read in the background at start, read again (at most
    every `refresh_secs`) when the files changed or a person's action asks for it; pages show
    the last finished run meanwhile. A drill-down reads the logs once more for that client's
    own records, and is cached."""

    def __init__(
        self,
        paths: tuple[str, ...],
        policy: Policy,
        refresh_secs: float,
        allowed: Callable[[], list[Network]] | None = None,
    ) -> None:
        self.paths = paths
        self.policy = policy
        self.refresh_secs = refresh_secs
        self.allowed = allowed
        self.latest: Analysis | None = None
        self.error: str | None = None
        self._running = False
        self._stale = False
        self._checked = 0.0
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()  # one drill-down read at a time: each reads every log
        self._clients: OrderedDict[tuple[str, datetime], ClientLog | None] = OrderedDict()
        self.done = threading.Event()  # set after each run, finished or failed

    @property
    def status(self) -> str:
        if self.latest is None and self.error is None:
            return "reading"
        return "failed" if self.error is not None else "ready"

    def start(self) -> None:
        self._launch(force=True)

    def poke(self) -> None:
        """Called on each page view: read the logs again if they may have changed."""
        if time.monotonic() - self._checked >= self.refresh_secs:
            self._launch(force=False)

    def invalidate(self) -> None:
        """A person's decision changed what the policy allows: judge the clients again."""
        with self._lock:
            self._stale = True  # a run under way reads again when it is done
        self._launch(force=True)

    def _launch(self, force: bool) -> None:
        with self._lock:
            if self._running:
                return
            self._running = True
            self._stale = False
            self._checked = time.monotonic()
        threading.Thread(target=self._run, args=(force,), name="mlguard-web-logs", daemon=True).start()

    def _run(self, force: bool) -> None:
        while True:
            self._pass(force)
            with self._lock:
                if not self._stale:
                    self._running = False
                    self._checked = time.monotonic()
                    break
                self._stale, force = False, True
        self.done.set()

    def _pass(self, force: bool) -> None:
        try:
            signature = _signature(self.paths)
            if force or self.latest is None or signature != self.latest.signature:
                self.latest = self._analyse(signature)
            self.error = None
        except MLGuardError as exc:
            self.error = safe_text(exc, 300)
            log.warning("reading the logs failed: %s", self.error)
        except Exception:  # the dashboard stays up on the store; the cause goes to its log
            self.error = "internal error while reading the logs (see the server's log)"
            log.exception("reading the logs failed")

    def _analyse(self, signature: tuple[tuple[Any, ...], ...]) -> Analysis:
        started = time.perf_counter()
        preload()
        result = read_logs(list(self.paths))
        policy = self.policy
        if self.allowed is not None:  # a person's allow entries hold here as in `detect --state`
            policy = replace(policy, allow=[*policy.allow, *self.allowed()])
        detection = score_table(result, policy)
        return Analysis(
            findings=output_frame(detection.findings),
            traffic=result.accumulator.traffic(),
            window_secs=result.accumulator.window_secs,
            stats=result.stats,
            finished=datetime.now(UTC),
            seconds=time.perf_counter() - started,
            signature=signature,
        )

    def client(self, client: str) -> ClientLog | None:
        """The client's own requests (None when the logs hold none, or are not read yet)."""
        analysis = self.latest
        if analysis is None or analysis.finding(client) is None:
            return None
        key = (client, analysis.finished)
        with self._read_lock:
            if key in self._clients:
                self._clients.move_to_end(key)
                return self._clients[key]
            kept = read_logs(list(self.paths), keep_client=client).kept
            found = client_log(kept) if kept is not None and kept.height else None
            self._clients[key] = found
            while len(self._clients) > CLIENT_CACHE:
                self._clients.popitem(last=False)
        return found
