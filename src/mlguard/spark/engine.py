"""The driver side of the Spark engine: plan the job, merge the partial tables in Spark, and
hand the merged tables to the feature code every engine shares.

    files --Spark text source--> (line bytes, file, split start) rows, in line order per split
      --mapInArrow: executor.partials_of_lines--> each split's partial tables, cut into buckets
         of keys, as Arrow IPC bytes, + the split's counts (MLGuard's own parse,
         `chunk_partials` and `merge_partials`, in Polars, on the executors)
      --persisted; counts collected first: splits put in input order, line numbers made global
      --groupBy(bucket).applyInArrow: executor.merge_bucket, `merge_partials` on each bucket's
         pieces, splits in input order (a client's gaps across splits as in the log)
      --collected (one row per client, per client and window, per client and path...)
      --> ClientAccumulator.finish on the driver: the same features as the Polars engine.

The feature definitions are written once (`mlguard.features.aggregate`: `chunk_partials`,
`merge_partials`, `ClientAccumulator.finish`) and run unchanged on both engines; Spark only
moves the partial tables. The parity tests (tests/test_spark.py) hold the two to one result.
"""

from __future__ import annotations

import functools
import json
import lzma
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import polars as pl

from mlguard import errors
from mlguard.errors import InputError, StrictParseError, UsageError
from mlguard.features.aggregate import WINDOW_SECS, ClientAccumulator, Partials
from mlguard.formats import AUTO, LogFormat, get_format
from mlguard.identity import ClientIdentity
from mlguard.pipeline import MAX_EXAMPLES, SNIFF_BYTES, ReadResult, ReadStats, UnparsedLine, _choose_format
from mlguard.sources.files import CHUNK_BYTES, STDIN, _open_decoded, expand_paths
from mlguard.spark import SPARK_EXTRA
from mlguard.spark.executor import (
    BUCKET,
    DATA,
    FILE,
    LINE,
    MERGED_DDL,
    META,
    MTIME,
    PARTS_DDL,
    SPLIT_ROW,
    START,
    TABLE,
    SplitPlan,
    file_key,
    merge_bucket,
    partials_of,
    partials_of_lines,
    split_id,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

MAX_BUCKETS = 4096  # each split's tables travel in up to 7 x this many pieces


def _pyspark() -> Any:
    try:
        import pyspark
    except ImportError:
        raise UsageError(f"the Spark engine needs PySpark and PyArrow: {SPARK_EXTRA}") from None
    # PySpark warns about pandas versions on every Arrow call; MLGuard never hands it pandas.
    warnings.filterwarnings("ignore", message=".*PySpark does not yet fully support pandas.*")
    return pyspark


@dataclass(frozen=True)
class Input:
    """One file to read: the URI Spark is given, the name the summary shows, its place."""

    uri: str
    name: str
    order: int | None  # index among local files (in `expand_paths` order); None: by time and name


def _is_uri(spec: str) -> bool:
    scheme = urlparse(spec).scheme
    return len(scheme) > 1 and "://" in spec  # not a Windows drive letter


def head_sample(path: str) -> bytes:
    """What `read_logs` judges a local file's format by: the first SNIFF_BYTES of its
    (decompressed) bytes; of a shorter input, the lines its first chunk holds."""
    pieces: list[bytes] = []
    size = 0
    try:
        with open(path, "rb") as raw:
            stream, _ = _open_decoded(raw)
            while size < SNIFF_BYTES:
                piece = stream.read(SNIFF_BYTES - size)
                if not piece:
                    break
                pieces.append(piece)
                size += len(piece)
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError):
        pass  # Spark's reader will say what is wrong with it
    sample = b"".join(pieces)
    if size < SNIFF_BYTES and b"\n" in sample:
        sample = sample[: sample.rfind(b"\n") + 1]  # a chunk ends at its last line end
    return sample


def local_formats(inputs: list[Input]) -> dict[str, LogFormat]:
    """With `auto`, each local file's format, chosen on the driver from its start exactly as
    the Polars engine chooses it (files Spark lists are judged by their first split)."""
    chosen = {}
    for i in inputs:
        if i.order is not None:
            sample = head_sample(file_key(i.uri))
            if sample:
                chosen[file_key(i.uri)] = _choose_format(AUTO, sample)
    return chosen


def plan_inputs(paths: list[str]) -> list[Input]:
    """Local paths, globs and directories expand as the Polars engine expands them (same files,
    same order); URIs (s3://, s3a://, gs://, hdfs://, abfss://, dbfs:/) are listed by Spark."""
    inputs: list[Input] = []
    local = 0
    for spec in paths:
        if spec == STDIN:
            raise UsageError("the Spark engine reads files, not standard input ('-'): give file paths")
        if _is_uri(spec) and not spec.startswith("file:"):
            inputs.append(Input(spec, spec, None))
            continue
        for name in expand_paths([file_key(spec) if spec.startswith("file:") else spec]):  # type: ignore[list-item]
            inputs.append(Input(Path(name).resolve().as_uri(), name, local))
            local += 1
    return inputs


@contextmanager
def _conf(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """Session settings for the length of one read, put back afterwards."""
    old = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def _lines(spark: SparkSession, inputs: list[Input]) -> DataFrame:
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    try:
        # lineSep: lines end at '\n' only, as in the Polars engine (Hadoop's default also
        # splits at a lone '\r', which an attacker can write into a line).
        # recursiveFileLookup: every file under a prefix (ALB and CloudFront write a folder per
        # day), and no partition columns made up from folder names.
        reader = spark.read.option("lineSep", "\n").option("recursiveFileLookup", "true")
        text = reader.text([i.uri for i in inputs])
    except AnalysisException as exc:
        raise InputError(f"cannot read the input: {_first_line(exc)}") from None
    return text.select(
        F.col("value").cast("binary").alias(LINE),  # the bytes as read: no decoding on the way
        F.col("_metadata.file_path").alias(FILE),
        F.col("_metadata.file_block_start").alias(START),
        F.col("_metadata.file_modification_time").alias(MTIME),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class Split:
    file: str
    start: int
    meta: dict[str, Any]


def _splits(parts: DataFrame) -> list[Split]:
    from pyspark.sql import functions as F

    rows = pl.from_arrow(parts.where(F.col(TABLE) == SPLIT_ROW).select(FILE, START, META).toArrow())
    assert isinstance(rows, pl.DataFrame)
    return [Split(file, start, json.loads(meta)) for file, start, meta in rows.iter_rows()]


def _raise(error: list[str]) -> None:
    """An error an executor met, raised again on the driver as the class it had there."""
    kind, message = error
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.MLGuardError)):
        cls = InputError
    raise cls(message)


def _in_order(splits: list[Split], inputs: list[Input]) -> list[Split]:
    """Splits in the order the Polars engine reads the same lines: local files as expanded,
    then the listed ones oldest first (then by name, as for a directory); within a file, by
    position."""
    by_path = {file_key(i.uri): i.order for i in inputs if i.order is not None}

    def key(split: Split) -> tuple[int, int, str, int]:
        order = by_path.get(file_key(split.file))
        if order is not None:
            return (0, order, "", split.start)
        return (1, int(split.meta.get("mtime") or 0), split.file, split.start)

    return sorted(splits, key=key)


def _formats_disagree(splits: list[Split], decided: set[str]) -> dict[str, str] | None:
    """With `auto`, the splits of files not `decided` on the driver judged their own lines; a
    file's first split decides for the file, as its start does in the Polars engine. Those
    files' formats if any other split chose otherwise, else None."""
    undecided = [s for s in splits if file_key(s.file) not in decided]
    heads = {s.file: s for s in undecided if s.start == 0}
    for head in heads.values():
        if head.meta["error"] is not None:
            _raise(head.meta["error"])
    chosen = {file: head.meta["format"] for file, head in heads.items()}
    if all(s.meta["format"] == chosen.get(s.file) and s.meta["error"] is None for s in undecided):
        return None
    return chosen


def _stats(splits: list[Split], inputs: list[Input], strict: bool) -> ReadStats:
    """The counts of every split, in input order: what `read_logs` counts as it reads."""
    names = {file_key(i.uri): i.name for i in inputs if i.order is not None}
    stats = ReadStats()
    lines_before: Counter[str] = Counter()  # per file: where the next split's lines start
    for split in splits:
        m = split.meta
        source = names.get(file_key(split.file), split.file)  # the local name as given
        if m["error"] is not None:
            _raise(m["error"])
        stats.lines += m.get("lines", 0)
        stats.records += m.get("records", 0)
        stats.unparsed += m.get("unparsed", 0)
        stats.outside_window += m.get("outside_window", 0)
        stats.via_proxy += m.get("via_proxy", 0)
        stats.forged_forwarded += m.get("forged", 0)
        stats.bytes_read += m.get("bytes", 0)
        stats.unparsed_by_reason.update(m["reasons"])
        if m["format"] is not None and m.get("lines", 0):
            stats.formats.setdefault(source, m["format"])
        for line_no, reason, text in m["examples"]:
            number = lines_before[split.file] + line_no
            if strict:
                raise StrictParseError(f"{source}:{number}: {reason} (--strict): {m['strict_text']}")
            if len(stats.examples) < MAX_EXAMPLES:
                stats.examples.append(UnparsedLine(source, number, reason, text))
        lines_before[split.file] += m.get("lines", 0)
    return stats


def _buckets(spark: SparkSession, lines: DataFrame) -> int:
    """Buckets of keys for the merge: one per input split (the partial tables of a bucket are
    then about those of a split), at least one per core, at most MAX_BUCKETS."""
    try:
        splits = lines.rdd.getNumPartitions()
        cores = int(spark.sparkContext.defaultParallelism)
    except Exception:  # Spark Connect has no RDDs: its shuffle width instead
        splits = cores = int(spark.conf.get("spark.sql.shuffle.partitions") or 200)
    return max(1, min(max(splits, cores), MAX_BUCKETS))


def merge_in_spark(parts: DataFrame, order: dict[int, int]) -> DataFrame:
    """Every split's partial tables merged by `merge_partials` itself, bucket by bucket."""
    from pyspark.sql import functions as F

    pieces = parts.where(F.col(TABLE) != SPLIT_ROW)
    return pieces.groupBy(BUCKET).applyInArrow(merge_bucket(order), MERGED_DDL)


def _collect(merged: DataFrame) -> Partials | None:
    rows = merged.toArrow()
    pieces: dict[str, list[bytes]] = {}
    for name, data in zip(rows.column(TABLE).to_pylist(), rows.column(DATA).to_pylist(), strict=True):
        pieces.setdefault(name, []).append(data)
    partials = partials_of(pieces)
    return partials if partials.clients.height else None


def read_logs_spark(
    spark: SparkSession,
    paths: list[str],
    *,
    log_format: str = AUTO,
    strict: bool = False,
    window_secs: int = WINDOW_SECS,
    identity: ClientIdentity | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    split_bytes: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> ReadResult:
    """`mlguard.pipeline.read_logs` on Spark: the same ReadResult (counts, unparsed-line
    examples, per-client accumulator) from the same inputs, for `score_table` and the rest.

    `split_bytes` caps the bytes of each file split (Spark's `maxPartitionBytes`; its default,
    128 MiB, when None); each split is parsed in chunks of `chunk_bytes` on its executor."""
    pyspark = _pyspark()
    started = time.perf_counter()
    identity = identity if identity is not None else ClientIdentity()
    fmt = get_format(log_format) if log_format != AUTO else None  # a bad format fails here
    inputs = plan_inputs(paths)
    plan = SplitPlan(fmt, {}, window_secs, identity, since, until, chunk_bytes)
    if fmt is None:
        plan.file_formats = local_formats(inputs)
    settings = {"spark.sql.files.maxPartitionBytes": str(split_bytes)} if split_bytes else {}
    with _conf(spark, settings):
        lines = _lines(spark, inputs)
        plan.buckets = _buckets(spark, lines)
        parts, splits = _run(lines, plan, inputs, pyspark)
        try:
            disagree = _formats_disagree(splits, set(plan.file_formats)) if fmt is None else None
            if disagree is not None:
                # Some splits' own lines looked like another format than their file's start:
                # parse again, each file with its first split's format, as the Polars engine.
                parts.unpersist()
                plan.file_formats.update({file_key(f): get_format(name) for f, name in disagree.items()})
                parts, splits = _run(lines, plan, inputs, pyspark)
            stats = _stats(splits, inputs, strict)
            order = {split_id(s.file, s.start): rank for rank, s in enumerate(splits)}
            merged = _collect(merge_in_spark(parts, order)) if stats.records else None
        finally:
            parts.unpersist()
    accumulator = ClientAccumulator(window_secs)
    if merged is not None:
        accumulator.add_partials(merged)
    stats.seconds = time.perf_counter() - started
    return ReadResult(stats, accumulator)


def _run(
    lines: DataFrame, plan: SplitPlan, inputs: list[Input], pyspark: Any
) -> tuple[DataFrame, list[Split]]:
    """One pass over the lines: every split's partials, persisted; the splits' counts, in order."""
    parts = lines.mapInArrow(functools.partial(partials_of_lines, plan=plan), PARTS_DDL)
    parts = parts.persist(pyspark.StorageLevel.MEMORY_AND_DISK)
    splits = _in_order(_splits(parts), inputs)
    versions = {s.meta["polars"] for s in splits}
    if versions - {pl.__version__}:
        parts.unpersist()
        raise UsageError(
            f"the executors run Polars {', '.join(sorted(versions))} and the driver {pl.__version__}: "
            "install one version everywhere (client ids are Polars hashes, which differ by version)"
        )
    return parts, splits
