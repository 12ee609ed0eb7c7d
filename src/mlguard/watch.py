"""`mlguard watch`: follow live logs, rescore clients as they act, decide, and enforce.

One loop, driven by `step()` (the CLI calls it until SIGTERM/SIGINT; tests call it directly
with a frozen clock):

1. read the whole new lines of every followed log (`sources.follow`), parse them with the
   same formats as `detect`, and add them to a sliding window of per-client partial tables
   (`features.window`), counting what does not parse;
2. every `interval_secs`, rescore the clients that sent requests since the last time against
   the baseline, with the campaigns found by the last full pass; every `full_every_secs`,
   score the whole window and look for campaigns again;
3. record alerts and blocks in the decision store (a client already decided is refreshed,
   never decided twice), through the circuit breaker, and save where reading stopped in the
   same store, so a restart goes on from there without reading or alerting twice;
4. every `enforce_every_secs` (and after new decisions), expire what is due and push the
   active decisions to the enforcers: notifiers (webhook) always, blockers (nginx, nftables,
   AWS WAF, CrowdSec) only with `enforce`; a failing enforcer is retried with backoff while
   the others go on, and the store keeps what it has not had yet.

Time: windows follow the log's own timestamps; decisions, TTLs and cadences follow the clock
(`clock`, injectable).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from mlguard.allocator import release_free_memory
from mlguard.decisions.breaker import CircuitBreaker
from mlguard.decisions.policy import ALERT, BLOCK, Policy
from mlguard.decisions.store import DETECTOR, Decision, DecisionStore
from mlguard.detectors.campaigns import Campaigns, find_campaigns
from mlguard.detectors.model import Baseline, build_baseline, load_model, refresh_baseline, save_model
from mlguard.enforcers import Enforcer
from mlguard.errors import MLGuardError, UsageError
from mlguard.explain.reasons import safe_text
from mlguard.features.aggregate import WINDOW_SECS
from mlguard.features.catalogue import FEATURE_NAMES
from mlguard.features.window import SlidingWindow
from mlguard.formats import AUTO, LogFormat, detect_format, get_format
from mlguard.formats.base import records_of, unparsed_of
from mlguard.identity import FORWARDED_COLUMN, ClientIdentity
from mlguard.pipeline import decide
from mlguard.sources.files import Chunk
from mlguard.sources.follow import LogFollower, Position, history_before

log = logging.getLogger("mlguard.watch")


MIN_FIT_CLIENTS = 50  # without --model, the window must hold this many clients to learn from
REFIT_GROWTH = 2  # a baseline learned from the window is learned again when its clients double
MAX_HELD_RECORDS = 100_000  # records read but not yet in the window (added at least this often)
READ_EARLY_BYTES = 16 * 1024 * 1024  # read before the next rescoring when this much is waiting
MAX_ENFORCER_BACKOFF_SECS = 300.0


@dataclass
class WatchSettings:
    paths: list[str]
    log_format: str = AUTO
    window_secs: int = 3600  # how much recent traffic each client is judged on
    burst_window_secs: int = WINDOW_SECS
    interval_secs: float = 5.0  # rescoring of the clients that just acted
    full_every_secs: float = 300.0  # the whole window, and campaigns
    enforce_every_secs: float = 10.0
    refresh_every_secs: float | None = None  # refresh the baseline from recent unflagged traffic
    start_at_end: bool = True
    history_bytes: int = 64 * 1024 * 1024  # read back this much at start, as context only
    enforce: bool = False
    dry_run: bool = False
    campaigns: bool = True
    save_model: Path | None = None
    model_path: Path | None = None  # --model: loaded again when the file is replaced
    seed: int = 0


@dataclass
class StepReport:
    lines: int = 0
    scored: int = 0
    new_decisions: int = 0
    held_by_breaker: int = 0


@dataclass
class _EnforcerState:
    enforcer: Enforcer
    blocks: bool  # enforces blocks (only with --enforce); else a notifier
    failures: int = 0
    next_try: float = 0.0


@dataclass
class WatchCounters:
    """What the daemon did, for metrics and the final summary."""

    lines: int = 0
    unparsed: int = 0
    records: int = 0
    alerts: int = 0
    blocks: int = 0
    held_blocks: int = 0
    enforcer_errors: dict[str, int] = field(default_factory=dict)
    unparsed_examples: list[str] = field(default_factory=list)


class Watcher:
    def __init__(
        self,
        settings: WatchSettings,
        policy: Policy,
        store: DecisionStore,
        baseline: Baseline | None = None,
        enforcers: list[Enforcer] | None = None,
        identity: ClientIdentity | None = None,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        metrics: object | None = None,
    ) -> None:
        if settings.log_format != AUTO:
            get_format(settings.log_format)  # a bad name fails before anything is read
        self.settings = settings
        self.policy = policy
        self._given_allow = list(policy.allow)
        self.store = store
        self.baseline = baseline
        self.identity = identity or ClientIdentity()
        self.breaker = breaker or CircuitBreaker()
        self.clock = clock
        self.monotonic = monotonic
        self.metrics = metrics
        self.counters = WatchCounters()
        self.window = SlidingWindow(settings.window_secs, settings.burst_window_secs)
        self.campaigns = Campaigns.empty()
        # Without --model: the clients the baseline was learned from (0: not learned yet). The
        # first one comes from few clients; it is learned again as the window fills.
        self._learned_from: int | None = None if baseline is not None else 0
        self._full_clients = 0  # clients scored by the last full pass
        self._model_stamp = self._stamp(settings.model_path)  # the --model file as last loaded
        self._formats: dict[str, LogFormat] = {}
        self._touched: set[str] = set()
        # Records read are added to the window when a scoring (or the first fit) needs them:
        # each addition has a fixed cost (a dozen group-bys, and a merge of the newest bucket
        # every few), so five small ones cost more than one five times larger. (Reading and
        # adding every second cost 8.7% of a core against 6.2% every 5 s, with a full hour of
        # 140,000 clients at 1,000 lines/s.)
        self._held: list[pl.DataFrame] = []
        self._held_records = 0
        self._newest_read: datetime | None = None
        self._live_since: datetime | None = None  # decisions only for clients seen after this
        self._enforcers = [_EnforcerState(e, blocks=getattr(e, "blocks", True)) for e in (enforcers or [])]
        self._said_alert_only = False
        stored = {p[0]: Position(*p) for p in store.positions()}
        self.resumed = bool(stored) and any(path in stored for path in settings.paths)
        self._warm(stored)
        self.follower = LogFollower(settings.paths, stored, start_at_end=settings.start_at_end)
        start = self.monotonic()
        self._next_score = start + settings.interval_secs
        self._next_read = start
        self._next_full = start  # the first step scores the whole window (and fits, if needed)
        self._next_enforce = start
        self._next_refresh = start + settings.refresh_every_secs if settings.refresh_every_secs else None
        self._decided_since_enforce = False
        log.info(
            "watching",
            extra={
                "event": "started",
                "paths": [safe_text(p) for p in settings.paths],
                "resumed": self.resumed,
                "baseline": "model" if baseline is not None else "learned from the window",
                "enforce": settings.enforce,
                "dry_run": settings.dry_run,
            },
        )

    # Reading

    def _format(self, chunk: Chunk) -> LogFormat | None:
        fmt = self._formats.get(chunk.source)
        if fmt is not None:
            return fmt
        if self.settings.log_format != AUTO:
            fmt = get_format(self.settings.log_format)
        else:
            try:
                fmt = detect_format(bytes(chunk.data[: min(len(chunk.data), 256 * 1024, chunk.end)]))
            except UsageError:
                return None  # too little to tell yet: these lines are counted as unparsed
        if self.identity.uses_forwarded and FORWARDED_COLUMN not in fmt.extra_columns:
            raise UsageError(
                f"--trusted-proxy needs X-Forwarded-For in the log, and format '{fmt.name}' has none"
            )
        self._formats[chunk.source] = fmt
        log.info("log format", extra={"event": "format", "path": safe_text(chunk.source), "format": fmt.name})
        return fmt

    def _records(self, chunk: Chunk) -> pl.DataFrame | None:
        """Parse a chunk; count (and log a few of) the lines that do not parse."""
        fmt = self._format(chunk)
        n_lines = chunk.lines
        self.counters.lines += n_lines
        if fmt is None:
            self.counters.unparsed += n_lines
            self._metric("unparsed", n_lines)
            return None
        parsed = fmt.run(chunk.data, chunk.first_line_no, chunk.end, lines=n_lines)
        unparsed = unparsed_of(parsed)
        if unparsed.height:
            self.counters.unparsed += unparsed.height
            self._metric("unparsed", unparsed.height)
            if len(self.counters.unparsed_examples) < 5:
                row = unparsed.row(0, named=True)
                where = f"{safe_text(chunk.source)}:{row['line_no']}"
                example = f"{where}: {row['reason']}: {safe_text(row['text'], 200)}"
                self.counters.unparsed_examples.append(example)
                log.warning("unparsed line", extra={"event": "unparsed", "example": example})
        records = records_of(parsed)
        return self.identity.resolve(records) if records.height else None

    def _warm(self, stored: dict[str, Position]) -> None:
        """Fill the window with the recent past (context only: no decisions are made from it)."""
        for path in self.settings.paths:
            position = stored.get(path)
            if position is None and not self.settings.start_at_end:
                continue  # the whole file is about to be read anyway
            chunk = history_before(path, position, self.settings.history_bytes)
            if chunk is None:
                continue
            records = self._records(chunk)
            if records is not None:
                self.window.add(records)
        self.counters = WatchCounters()  # history is not what was read live
        self._live_since = self.window.newest

    def _read(self) -> int:
        lines = 0
        for chunk in self.follower.poll():
            before = self.counters.lines
            records = self._records(chunk)
            lines += self.counters.lines - before
            if records is None:
                continue
            self.counters.records += records.height
            self._held.append(records)
            self._held_records += records.height
            newest = records["time"].max()
            if isinstance(newest, datetime) and (self._newest_read is None or newest > self._newest_read):
                self._newest_read = newest
            self._touched.update(records["client"].unique().to_list())
        if self._held_records >= MAX_HELD_RECORDS:
            self._add_held()
        self._metric("lines", lines)
        return lines

    def _add_held(self) -> None:
        """Put the records read since the last time into the window."""
        if not self._held:
            return
        records = self._held[0] if len(self._held) == 1 else pl.concat(self._held, how="diagonal_relaxed")
        self._held, self._held_records = [], 0
        self.window.add(records)

    # Scoring and deciding

    def _fit(self) -> bool:
        """Without a model, learn the baseline from the window once it holds enough clients,
        and again each time they have doubled since, until the window is full (a baseline
        learned from 50 clients is rough: it alerts on much of what it has not seen)."""
        self._add_held()
        table = self.window.features()
        if table is None or table.frame.height < MIN_FIT_CLIENTS:
            return False
        X = table.frame.select(FEATURE_NAMES).to_numpy()
        meta = {"training_clients": table.frame.height, "learned_from": "watch window"}
        self.baseline = build_baseline(X, table.rarity, table.priors, meta, self.settings.seed)
        again = bool(self._learned_from)
        self._learned_from = table.frame.height
        log.info(
            "baseline learned again, from a fuller window" if again else "baseline learned",
            extra={"event": "baseline_learned", "clients": table.frame.height},
        )
        return True

    def _window_grew(self) -> bool:
        """A baseline learned from the window, whose clients have doubled since (it fills, or
        the site got busier); with steady traffic this stops once the window is full."""
        learned = self._learned_from or 0  # None: a --model; 0: not learned yet
        return learned > 0 and self._full_clients >= REFIT_GROWTH * learned

    @staticmethod
    def _stamp(path: Path | None) -> tuple[int, int, int] | None:
        try:
            st = path.stat() if path is not None else None
        except OSError:
            return None
        return None if st is None else (st.st_ino, st.st_size, st.st_mtime_ns)

    def _reload_model(self) -> None:
        """A --model file replaced since it was loaded (a new `mlguard train --out`) is loaded
        and used from this pass on; one that does not load is said once and the last kept."""
        path = self.settings.model_path
        stamp = self._stamp(path)
        if path is None or stamp is None or stamp == self._model_stamp:
            return
        self._model_stamp = stamp
        try:
            self.baseline = load_model(path)
        except MLGuardError as exc:
            log.error(
                "the model file changed but does not load; the current baseline is kept",
                extra={
                    "event": "model_not_reloaded",
                    "path": safe_text(str(path)),
                    "error": safe_text(str(exc)),
                },
            )
            return
        log.info(
            "model reloaded",
            extra={
                "event": "model_reloaded",
                "path": safe_text(str(path)),
                "clients": self.baseline.meta.get("training_clients"),
            },
        )

    def _score(self, clients: list[str] | None) -> tuple[pl.DataFrame, int] | None:
        """Findings for `clients`, or a full pass over the window (None): every client scored,
        campaigns found again, and findings for the clients that acted since the last pass and
        the members of campaigns (the others' evidence has not changed since they were judged).
        Also how many clients were scored."""
        assert self.baseline is not None
        self._add_held()
        # A person may have allowed a client since the last pass: that feedback holds at once.
        self.policy.allow = [*self._given_allow, *self.store.allowed()]
        table = self.window.features(clients, reference=self.baseline.reference, priors=self.baseline.priors)
        if table is None:
            return None
        scorer = self.baseline.scorer
        scores = scorer.score(table.frame.select(FEATURE_NAMES).to_numpy())
        only: set[str] | None = None
        if clients is None:
            if self.settings.campaigns:
                self.campaigns = find_campaigns(table.frame, scorer)
            strong = self.campaigns.members.filter(pl.col("campaign_score") >= self.policy.alert_threshold)
            only = self._touched | set(strong["client"].to_list())
        return decide(table, scores, self.campaigns, self.policy, only), table.frame.height

    def _decide(self, findings: pl.DataFrame, report: StepReport) -> None:
        flagged = findings.filter(pl.col("verdict").is_in([ALERT, BLOCK]))
        if self._live_since is not None:
            flagged = flagged.filter(pl.col("last_seen") > self._live_since)
        if flagged.height == 0:
            return
        now = self.clock().replace(microsecond=0)
        blocked = self.store.active_clients(BLOCK)
        new_blocks = flagged.filter((pl.col("verdict") == BLOCK) & ~pl.col("client").is_in(list(blocked)))
        _, held, closed = self.breaker.admit(new_blocks["client"].to_list(), now)
        if closed:
            log.warning("circuit breaker closed", extra={"event": "breaker_closed"})
        if held:
            note = "held back: the circuit breaker is open (too many new blocks in a minute)"
            hold = pl.col("client").is_in(held)
            flagged = flagged.with_columns(
                pl.when(hold).then(pl.lit(ALERT)).otherwise(pl.col("verdict")).alias("verdict"),
                pl.when(hold)
                .then(pl.concat_list(pl.lit([note]), pl.col("reasons")))
                .otherwise(pl.col("reasons"))
                .alias("reasons"),
            )
            self.counters.held_blocks += len(held)
            report.held_by_breaker += len(held)
            log.error(
                "circuit breaker open: new blocks are held back as alerts",
                extra={
                    "event": "breaker_open",
                    "held": len(held),
                    "limit_per_minute": self.breaker.max_blocks_per_minute,
                    "opened": self.breaker.opened.isoformat() if self.breaker.opened else None,
                },
            )
        last = self.store.last_id()
        counts = self.store.record(flagged, now)
        report.new_decisions += counts["new"]
        if counts["new"]:
            self._decided_since_enforce = True
            for d in self.store.since(last):
                if d.origin != DETECTOR:
                    continue  # a person's decision made meanwhile with `mlguard decisions`
                if d.verdict == BLOCK:
                    self.counters.blocks += 1
                else:
                    self.counters.alerts += 1
                self._metric("decisions", 1, verdict=d.verdict)
                log.warning(
                    "new decision",
                    extra={
                        "event": "decision",
                        "client": d.client,
                        "verdict": d.verdict,
                        "score": d.score,
                        "campaign": d.campaign,
                        "reasons": d.reasons[:3],
                        "expires": d.expires,
                    },
                )

    def _refresh(self) -> None:
        """Learn from the window's clients without an active alert or block (allowed ones
        count as normal: their alerts and blocks were revoked)."""
        assert self.baseline is not None
        self._add_held()
        table = self.window.features()
        if table is None:
            return
        flagged = self.store.active_clients(ALERT) | self.store.active_clients(BLOCK)
        normal = table.frame.filter(~pl.col("client").is_in(list(flagged)))
        if normal.height < 2:
            return
        if self._learned_from is not None:
            self._learned_from = normal.height
        now = self.clock().replace(microsecond=0)
        self.baseline = refresh_baseline(
            self.baseline,
            normal.select(FEATURE_NAMES).to_numpy(),
            table.rarity,
            table.priors,
            refreshed=now.isoformat(),
            random_state=self.settings.seed,
        )
        if self.settings.save_model is not None:
            save_model(self.baseline, self.settings.save_model)
            if (
                self.settings.model_path is not None
                and self.settings.save_model.resolve() == self.settings.model_path.resolve()
            ):
                self._model_stamp = self._stamp(self.settings.model_path)
        log.info(
            "baseline refreshed",
            extra={"event": "baseline_refreshed", "clients": normal.height, "left_out": len(flagged)},
        )

    # Enforcing

    def _enforce(self) -> None:
        now = self.clock().replace(microsecond=0)
        self.store.expire(now)
        tick = self.monotonic()
        blocks: list[Decision] | None = None  # listed once, and only if an enforcer runs now
        for state in self._enforcers:
            name = state.enforcer.name
            if state.blocks and not self.settings.enforce and not self.settings.dry_run:
                if not self._said_alert_only:
                    log.warning(
                        "alert-only: --enforce was not given, so blocks are not pushed",
                        extra={"event": "alert_only", "enforcer": name},
                    )
                    self._said_alert_only = True
                continue
            if not self.settings.dry_run and tick < state.next_try:
                continue
            # Blockers act on the active blocks only; a notifier on what it has not had yet
            # (alerts are most decisions: tens of thousands on a busy site, not listed each time).
            if state.blocks:
                blocks = self.store.list(verdict=BLOCK) if blocks is None else blocks
                active = blocks
            else:
                target = getattr(state.enforcer, "target", None)
                active = self.store.list(undelivered_to=target) if target else self.store.list()
            if self.settings.dry_run:
                for d in state.enforcer.pending(active):
                    log.info(
                        "would enforce",
                        extra={
                            "event": "dry_run",
                            "enforcer": name,
                            "client": d.client,
                            "verdict": d.verdict,
                        },
                    )
                continue
            try:
                result = state.enforcer.sync(active)
                problem = result.messages[0] if result.failed else None
            except MLGuardError as exc:  # a back-end that could not even start its sync
                problem = str(exc)
            if problem is None:
                state.failures, state.next_try = 0, 0.0
                if result.sent:
                    log.info("enforced", extra={"event": "enforced", "enforcer": name, "sent": result.sent})
                continue
            state.failures += 1
            delay = min(
                self.settings.enforce_every_secs * 2 ** (state.failures - 1), MAX_ENFORCER_BACKOFF_SECS
            )
            state.next_try = tick + delay
            self.counters.enforcer_errors[name] = self.counters.enforcer_errors.get(name, 0) + 1
            self._metric("enforcer_errors", 1, enforcer=name)
            log.error(
                "enforcer failed; its decisions are kept and retried",
                extra={
                    "event": "enforcer_failed",
                    "enforcer": name,
                    "error": safe_text(problem, 300),
                    "retry_in_secs": delay,
                },
            )

    # The loop

    def step(self) -> StepReport:
        """Read what is new; score, decide and enforce when due."""
        tick = self.monotonic()
        report = StepReport()
        # New lines are read at the rescoring cadence, just before the rescoring (reading them
        # every second costs more, and nothing is decided from them sooner), or sooner when
        # a lot has been written.
        if tick >= self._next_read or self.follower.bytes_behind() >= READ_EARLY_BYTES:
            report.lines = self._read()
            self._next_read = tick + self.settings.interval_secs
        if self.baseline is None and tick >= self._next_full and not self._fit():
            self._next_full = tick + self.settings.full_every_secs
        if self.baseline is not None:
            scored: tuple[pl.DataFrame, int] | None = None
            full = tick >= self._next_full
            if full:
                self._reload_model()
                if self._window_grew():
                    self._fit()
                scored = self._score(None)
                self._next_full = tick + self.settings.full_every_secs
                self._next_score = tick + self.settings.interval_secs
                self._touched.clear()
            elif tick >= self._next_score and self._touched:
                scored = self._score(sorted(self._touched))
                self._next_score = tick + self.settings.interval_secs
                self._touched.clear()
            if scored is not None:
                findings, report.scored = scored
                self._decide(findings, report)
                if full:
                    self._full_clients = report.scored
                    self._gauges(clients=report.scored)
                    release_free_memory()
                self.store.save_positions(
                    [(p.path, p.device, p.inode, p.offset, p.line_no) for p in self.follower.positions()],
                    self.clock(),
                )
            if self._next_refresh is not None and tick >= self._next_refresh:
                self._refresh()
                assert self.settings.refresh_every_secs is not None
                self._next_refresh = tick + self.settings.refresh_every_secs
        if self._decided_since_enforce or tick >= self._next_enforce:
            self._enforce()
            self._decided_since_enforce = False
            self._next_enforce = tick + self.settings.enforce_every_secs
        self._gauges()
        return report

    def flush(self) -> StepReport:
        """At shutdown: score what was read since the last scoring and save where reading stopped."""
        report = StepReport(lines=self._read())
        if self.baseline is not None and self._touched:
            scored = self._score(sorted(self._touched))
            self._touched.clear()
            if scored is not None:
                self._decide(scored[0], report)
        self.store.save_positions(
            [(p.path, p.device, p.inode, p.offset, p.line_no) for p in self.follower.positions()],
            self.clock(),
        )
        if self._decided_since_enforce:
            self._enforce()
        return report

    def log_summary(self) -> None:
        c = self.counters
        log.info(
            "stopped",
            extra={
                "event": "stopped",
                "lines": c.lines,
                "unparsed": c.unparsed,
                "alerts": c.alerts,
                "blocks": c.blocks,
                "held_blocks": c.held_blocks,
                "enforcer_errors": sum(c.enforcer_errors.values()),
                "rotations": self.follower.stats.rotations,
                "truncations": self.follower.stats.truncations,
            },
        )

    def close(self) -> None:
        self.follower.close()
        for state in self._enforcers:
            state.enforcer.close()

    # Metrics

    def _metric(self, name: str, value: float, **labels: str) -> None:
        if self.metrics is not None and value:
            self.metrics.inc(name, value, **labels)  # type: ignore[attr-defined]

    def lag_secs(self) -> float | None:
        """How far behind the clock the newest line read is (None before any line)."""
        newest = self._newest_read or self.window.newest
        return None if newest is None else max((self.clock() - newest).total_seconds(), 0.0)

    def _gauges(self, clients: int | None = None) -> None:
        if self.metrics is None:
            return
        self.metrics.set_gauges(  # type: ignore[attr-defined]
            window_rows=self.window.rows(),
            clients=clients,
            lag_secs=self.lag_secs(),
            breaker_open=1.0 if self.breaker.is_open else 0.0,
            bytes_behind=float(self.follower.bytes_behind()),
        )
