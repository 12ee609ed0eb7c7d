"""The detection pipeline shared by every entry point: read -> parse -> features -> scores ->
verdicts -> reasons. The CLI, and later the daemon, Lambda and Spark, call these functions.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl

from mlguard.allocator import reusing_large_blocks
from mlguard.decisions.policy import ALERT, BLOCK, Policy
from mlguard.detectors.campaigns import Campaigns, find_campaigns
from mlguard.detectors.ensemble import ClientScorer, Scores
from mlguard.detectors.model import Baseline
from mlguard.errors import InputError, StrictParseError, UsageError
from mlguard.explain.reasons import campaign_reason, reasons_for, safe_text
from mlguard.features.aggregate import WINDOW_SECS, ClientAccumulator, FeatureTable
from mlguard.features.catalogue import FEATURE_NAMES
from mlguard.features.signals import columns_for_features
from mlguard.formats import AUTO, LogFormat, detect_format, get_format
from mlguard.formats.base import parsed_lines, records_of, unparsed_of
from mlguard.identity import FORWARDED_COLUMN, ClientIdentity
from mlguard.sources import s3
from mlguard.sources.files import CHUNK_BYTES, STDIN, ReadProblem, expand_paths, prefetch, read_chunks

MAX_EXAMPLES = 5
MAX_CAMPAIGN_OWN_REASONS = 2  # after the campaign's own reason
SNIFF_BYTES = 256 * 1024


@dataclass
class UnparsedLine:
    source: str
    line_no: int
    reason: str
    text: str  # already made safe to print


@dataclass
class ReadStats:
    lines: int = 0
    records: int = 0
    unparsed: int = 0
    unparsed_by_reason: Counter[str] = field(default_factory=Counter)
    examples: list[UnparsedLine] = field(default_factory=list)
    problems: list[ReadProblem] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)  # source -> format name
    outside_window: int = 0  # parsed lines before --since or from --until on (left out)
    via_proxy: int = 0  # lines whose client came from X-Forwarded-For behind a trusted proxy
    forged_forwarded: int = 0  # lines with X-Forwarded-For from an untrusted peer (ignored)
    bytes_read: int = 0
    seconds: float = 0.0


@dataclass
class ReadResult:
    stats: ReadStats
    accumulator: ClientAccumulator
    kept: pl.DataFrame | None = None  # records of one client, for `explain`

    @cached_property
    def table(self) -> FeatureTable | None:
        """Features judged against the input itself; built on first use only, because scoring
        against a baseline builds its own table instead."""
        return None if self.accumulator.empty else self.accumulator.finish()


ProgressFn = Callable[[int], None]


def _choose_format(name: str, sample: bytes) -> LogFormat:
    if name == AUTO:
        return detect_format(sample)
    return get_format(name)


def _time_window(since: datetime | None, until: datetime | None) -> pl.Expr:
    """Lines from `since` (inclusive) to `until` (exclusive); times are UTC."""
    keep = pl.lit(True)
    if since is not None:
        keep = keep & (pl.col("time") >= since)
    if until is not None:
        keep = keep & (pl.col("time") < until)
    return keep


# Reusing the memory of freed chunks pays over many chunks; over a few it only keeps freed ones
# resident (1M lines, 4 chunks: +0.2 GiB of peak RSS and no time saved).
REUSE_MIN_CHUNKS = 16


def _input_bytes(files: list[str]) -> int:
    """Bytes on disk of the local files among `files` (stdin and S3 objects count 0)."""
    total = 0
    for name in files:
        if name != STDIN and not s3.is_s3(name):
            with contextlib.suppress(OSError):  # reported when it is read
                total += os.path.getsize(name)
    return total


def read_logs(
    paths: list[str],
    *,
    log_format: str = AUTO,
    strict: bool = False,
    window_secs: int = WINDOW_SECS,
    keep_client: str | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    progress: ProgressFn | None = None,
    stdin: Any = None,
    identity: ClientIdentity | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ReadResult:
    """Parse every input into the per-client accumulator; count and keep examples of bad lines.

    `identity` says who the client of a line is (trusted proxies, IPv6 grouping); by default
    the peer address, in canonical form."""
    identity = identity if identity is not None else ClientIdentity()
    started = time.perf_counter()
    files = expand_paths(paths)
    stats = ReadStats()
    acc = ClientAccumulator(window_secs)
    kept: list[pl.DataFrame] = []
    chosen: dict[str, LogFormat] = {}
    # Unless records are kept for `explain`, the referer text is copied out of the parse only
    # where it may hold an injection marker (columns_for_features).
    columns = None
    if keep_client is None:
        columns = columns_for_features()

    def parse_chunks() -> Iterator[tuple[str, int, pl.DataFrame]]:
        raw = prefetch(
            read_chunks(files, chunk_bytes=chunk_bytes, problems=stats.problems, stdin=stdin), depth=1
        )
        for chunk in raw:
            fmt = chosen.get(chunk.source)
            if fmt is None:
                sample = chunk.data[: min(SNIFF_BYTES, chunk.end)]
                fmt = chosen[chunk.source] = _choose_format(log_format, sample)
                stats.formats[chunk.source] = fmt.name
                if identity.uses_forwarded and FORWARDED_COLUMN not in fmt.extra_columns:
                    raise UsageError(
                        f"--trusted-proxy needs X-Forwarded-For in the log, and format '{fmt.name}' has "
                        "none: give your format with $http_x_forwarded_for (nginx) or "
                        "%{X-Forwarded-For}i (Apache)"
                    )
            wanted = columns
            if columns is not None and identity.uses_forwarded:
                wanted = [*columns, pl.col(FORWARDED_COLUMN)]
            # One streaming pass over the chunk: every line parsed or given a reason.
            parsed = fmt.run(chunk.data, chunk.first_line_no, chunk.end, wanted, chunk.lines)
            yield chunk.source, chunk.end, parsed

    # Three stages on their own threads: read (and decompress), parse, aggregate. Polars lets go
    # of the GIL while it works, so parsing one chunk overlaps aggregating the one before.
    with reusing_large_blocks(chunk_bytes if _input_bytes(files) >= REUSE_MIN_CHUNKS * chunk_bytes else 0):
        for source, n_bytes, parsed in prefetch(parse_chunks(), depth=1):
            records = parsed_lines(parsed)
            unparsed = unparsed_of(parsed)
            stats.lines += parsed.height
            if since is not None or until is not None:
                inside = records.filter(_time_window(since, until))
                stats.outside_window += records.height - inside.height
                records = inside
            stats.records += records.height
            stats.bytes_read += n_bytes
            if unparsed.height:
                stats.unparsed += unparsed.height
                stats.unparsed_by_reason.update(unparsed["reason"].to_list())
                if strict:
                    first = unparsed.row(0, named=True)
                    raise StrictParseError(
                        f"{source}:{first['line_no']}: {first['reason']} (--strict): "
                        f"{safe_text(first['text'], 120)}"
                    )
                room = MAX_EXAMPLES - len(stats.examples)
                for row in unparsed.head(max(room, 0)).iter_rows(named=True):
                    stats.examples.append(
                        UnparsedLine(source, row["line_no"], row["reason"], safe_text(row["text"], 200))
                    )
            records = identity.resolve(records)
            acc.add(records)
            if keep_client is not None:
                kept.append(records_of(records.filter(pl.col("client") == keep_client)).sort("line_no"))
            if progress is not None:
                progress(n_bytes)
    if strict and stats.problems:
        raise StrictParseError(f"{stats.problems[0].source}: {stats.problems[0].message}")
    stats.via_proxy, stats.forged_forwarded = identity.via_proxy, identity.forged
    stats.seconds = time.perf_counter() - started
    return ReadResult(stats, acc, pl.concat(kept) if kept else None)


@dataclass
class Detection:
    findings: pl.DataFrame  # one row per client: client, score, verdict, reasons, features...
    scores: Scores
    table: FeatureTable
    scorer: ClientScorer
    campaigns: Campaigns


def score_table(
    result: ReadResult,
    policy: Policy,
    baseline: Baseline | None = None,
    random_state: int = 0,
    campaigns: bool = True,
) -> Detection:
    """Score every client (against `baseline`, or against the input itself), find campaigns of
    clients acting as one (unless `campaigns` is False), and decide."""
    if result.accumulator.empty:
        if result.stats.outside_window:
            raise InputError("no parsed line falls between --since and --until, so there is nothing to score")
        raise InputError("no log line could be parsed, so there is nothing to score")
    if baseline is not None:
        table = result.accumulator.finish(reference=baseline.reference, priors=baseline.priors)
        scorer = baseline.scorer
        scores = scorer.score(table.frame.select(FEATURE_NAMES).to_numpy())
    else:
        table = result.table
        assert table is not None
        X_fit = table.frame.select(FEATURE_NAMES).to_numpy()
        if X_fit.shape[0] < 2:
            raise InputError(
                "the input holds a single client: there is nothing to compare it with; "
                "score it against a baseline with --model"
            )
        scorer = ClientScorer(random_state=random_state)
        scores = scorer.fit_score(X_fit)
    found = find_campaigns(table.frame, scorer) if campaigns else Campaigns.empty()
    return Detection(decide(table, scores, found, policy), scores, table, scorer, found)


def decide(
    table: FeatureTable,
    scores: Scores,
    found: Campaigns,
    policy: Policy,
    only: Collection[str] | None = None,
) -> pl.DataFrame:
    """Findings from scored clients and campaigns: one row per client of `table` (or of those
    in `only`) with its score, verdict and reasons, most suspicious first. (The daemon calls
    this for the clients it rescored, with the campaigns of its last full pass.)"""
    own = pl.Series("client_score", np.round(scores.score, 4))
    frame = (
        table.frame.with_columns(own, pl.lit(table.window_secs).alias("_window_secs"))
        .with_columns(pl.int_range(pl.len()).alias("_row"))  # the row of `scores` it was scored in
        .join(found.members, on="client", how="left", maintain_order="left")
        .with_columns(
            # A member of a campaign is judged by the stronger of its own score and the
            # campaign's, and for a block by the requests of whichever carried it.
            pl.max_horizontal("client_score", pl.col("campaign_score").fill_null(0.0)).alias("score"),
            pl.when(pl.col("campaign_score") > pl.col("client_score"))
            .then(pl.col("campaign_requests"))
            .otherwise(pl.col("requests"))
            .alias("evidence_requests"),
        )
    )
    if only is not None:
        frame = frame.filter(pl.col("client").is_in(pl.Series(list(only), dtype=pl.String).implode()))
    frame = policy.verdicts(frame)
    # Reasons are written in Python, so only for the clients that get them (a few thousand of
    # hundreds of thousands); the rest get an empty list.
    flagged = frame.filter(pl.col("verdict").is_in([ALERT, BLOCK]))
    strong = found.table.filter(pl.col("campaign_score") >= policy.alert_threshold)
    said = {row["campaign"]: campaign_reason(row) for row in strong.iter_rows(named=True)}
    written = []
    for row in flagged.iter_rows(named=True):
        own_reasons = reasons_for(row, scores.contribution[row["_row"]], scores.deviation[row["_row"]])
        lead = said.get(row["campaign"])
        written.append(own_reasons if lead is None else [lead, *own_reasons[:MAX_CAMPAIGN_OWN_REASONS]])
    reasons = pl.DataFrame({"_row": flagged["_row"], "reasons": pl.Series(written, dtype=pl.List(pl.String))})
    frame = frame.join(reasons, on="_row", how="left", maintain_order="left").with_columns(
        pl.col("reasons").fill_null(pl.lit([], dtype=pl.List(pl.String)))
    )
    return frame.sort(["score", "requests", "client"], descending=[True, True, False])


def reasons_of(detection: Detection, clients: list[str]) -> dict[str, list[str]]:
    """Reasons for any clients, flagged or not (e.g. the attackers an evaluation missed)."""
    wanted = detection.findings.filter(pl.col("client").is_in(clients))
    scores = detection.scores
    return {
        row["client"]: reasons_for(
            row,
            scores.contribution[row["_row"]],
            scores.deviation[row["_row"]],
            when_none="nothing about this client is on a suspicious side",
        )
        for row in wanted.iter_rows(named=True)
    }
