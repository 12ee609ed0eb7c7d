"""What runs on Spark's executors, all of it MLGuard's own Polars code.

`partials_of_lines` (mapInArrow): the raw lines of each file split (a byte range of one file,
read by Spark's text source in line order) are parsed and reduced by what the Polars engine
runs on its chunks: `LogFormat.run`, the client identity, `chunk_partials`, `merge_partials`.
Each of the split's seven partial tables is cut into buckets by its key (a client, user agent,
path template or shape id) and leaves the Python worker as Arrow IPC bytes, one row per
(bucket, table); then one row of the split's counts (`_meta` JSON: lines, unparsed-line
examples, the format it chose).

`merge_bucket` (groupBy(bucket).applyInArrow): one bucket's pieces from every split merged by
`merge_partials`, the splits in input order, so that a client's gaps across splits are those
of the log. A key lives in one bucket only, so the buckets' results together are the merge of
everything.

The tables travel as IPC bytes, not as Spark columns: exact Polars types (unsigned ids, UTC
times) both ways, and a few compressed bytes per row where a row of Spark columns would carry
every table's columns, mostly empty.

Nothing here raises on log content: errors MLGuard raises on purpose travel back in `_meta`
and are raised again on the driver.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from functools import cache
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from mlguard.errors import MLGuardError, UsageError
from mlguard.explain.reasons import safe_text
from mlguard.features.aggregate import Partials, chunk_partials, merge_partials
from mlguard.features.signals import columns_for_features
from mlguard.formats import AUTO, LogFormat
from mlguard.formats.base import parsed_lines, unparsed_of
from mlguard.identity import FORWARDED_COLUMN, ClientIdentity
from mlguard.pipeline import MAX_EXAMPLES, SNIFF_BYTES, _choose_format, _time_window
from mlguard.schema import RECORD_SCHEMA
from mlguard.sources.files import CHUNK_BYTES

TABLES = tuple(f.name for f in fields(Partials))
SPLIT_ROW = "split"  # the `_table` of a split's row of counts
BUCKET, SPLIT, TABLE, DATA = "_bucket", "_split", "_table", "_data"
FILE, START, META = "_file", "_start", "_meta"  # on a split's row of counts only
LINE, MTIME = "line", "mtime"  # the input: a line's bytes; its file's modification time

DDL_TYPES = {pa.int32(): "int", pa.int64(): "bigint", pa.string(): "string", pa.binary(): "binary"}
PARTS_SCHEMA = pa.schema(
    [
        (BUCKET, pa.int32()),
        (SPLIT, pa.int64()),
        (TABLE, pa.string()),
        (DATA, pa.binary()),
        (FILE, pa.string()),
        (START, pa.int64()),
        (META, pa.string()),
    ]
)
PARTS_DDL = ", ".join(f"{f.name} {DDL_TYPES[f.type]}" for f in PARTS_SCHEMA)
MERGED_SCHEMA = pa.schema([(TABLE, pa.string()), (DATA, pa.binary())])
MERGED_DDL = ", ".join(f"{f.name} {DDL_TYPES[f.type]}" for f in MERGED_SCHEMA)


@cache
def partial_schemas() -> dict[str, pl.Schema]:
    """The columns and types of each partial table (taken from the code that makes them)."""
    empty = chunk_partials(pl.DataFrame(schema=RECORD_SCHEMA))
    schemas = {name: getattr(empty, name).schema for name in TABLES}
    for name, schema in schemas.items():
        # Buckets follow the first column, which every table groups by in `merge_partials`.
        key, dtype = next(iter(schema.items()))
        if dtype != pl.UInt64 or not key.endswith("id"):
            raise RuntimeError(f"partial table {name} does not start with its id column")
    return schemas


def to_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compression="lz4")
    return buffer.getvalue()


def from_bytes(data: bytes) -> pl.DataFrame:
    return pl.read_ipc(io.BytesIO(data))


def partials_of(pieces: dict[str, list[bytes]]) -> Partials:
    """Partial tables from their IPC pieces (a table without pieces is empty)."""
    tables = {}
    for name, schema in partial_schemas().items():
        frames = [from_bytes(p) for p in pieces.get(name, [])]
        tables[name] = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
    return Partials(**tables)


def file_key(uri: str) -> str:
    """One name per file however Spark or the user wrote it: the absolute local path of a
    `file:` URI (Spark reports `file:/a/b%20c`), any other URI as it is."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return os.path.abspath(unquote(parsed.path))
    return uri


def split_id(file: str, start: int) -> int:
    """A split's id on its rows: 64 bits of a hash of its file and start (the same everywhere)."""
    digest = hashlib.blake2b(f"{file}\0{start}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def bucketed(partials: Partials, buckets: int) -> Iterator[tuple[int, str, bytes]]:
    """(bucket, table, IPC bytes) for every non-empty piece of every table."""
    for name in TABLES:
        table = getattr(partials, name)
        if table.height == 0:
            continue
        key = pl.col(table.columns[0])
        pieces = table.with_columns((key % buckets).cast(pl.Int32).alias(BUCKET)).partition_by(
            BUCKET, as_dict=True, include_key=False
        )
        for (bucket,), piece in pieces.items():
            yield int(bucket), name, to_bytes(piece)  # type: ignore[arg-type]


@dataclass
class SplitPlan:
    """What every split is parsed with; shipped to the executors inside the task."""

    log_format: LogFormat | None  # None: pick per file, as `auto` does
    file_formats: dict[str, LogFormat]  # `file_key` -> format, overriding `log_format`
    window_secs: int
    identity: ClientIdentity
    since: datetime | None = None
    until: datetime | None = None
    chunk_bytes: int = CHUNK_BYTES
    buckets: int = 1  # of keys, for the merge

    def columns(self) -> list[pl.Expr]:
        # As `read_logs` without `keep_client`.
        wanted = columns_for_features()
        if self.identity.uses_forwarded:
            wanted.append(pl.col(FORWARDED_COLUMN))
        return wanted


def _joined(arrays: list[pa.Array]) -> bytes:
    """The lines of `arrays` as the bytes they were read from: each followed by '\\n'."""
    nonempty = [a for a in arrays if len(a)]
    if not nonempty:
        return b""
    lines = pa.concat_arrays(nonempty)
    # The values buffer of the joined array holds every line and its newline, back to back.
    joined = pc.binary_join_element_wise(lines, pa.scalar(b"", pa.binary()), pa.scalar(b"\n", pa.binary()))
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)[joined.offset :]
    first, last = int(offsets[0]), int(offsets[len(joined)])
    return joined.buffers()[2].slice(first, last - first).to_pybytes()


class _Split:
    """One split's lines, parsed chunk by chunk as they arrive (memory bounded by a chunk)."""

    def __init__(self, file: str, start: int, mtime: int, plan: SplitPlan) -> None:
        self.file, self.start, self.mtime, self.plan = file, start, mtime, plan
        self.fmt: LogFormat | None = plan.file_formats.get(file_key(file), plan.log_format)
        self.pending: list[pa.Array] = []
        self.pending_bytes = 0
        self.parts: list[Partials] = []
        self.reasons: Counter[str] = Counter()
        self.examples: list[list[Any]] = []
        self.texts: dict[str, str] = {}
        self.counts = Counter[str]()
        self.error: tuple[str, str] | None = None  # (kind, message) of an MLGuardError

    def add(self, lines: pa.Array) -> None:
        self.pending.append(lines)
        self.pending_bytes += lines.nbytes
        if self.pending_bytes >= self.plan.chunk_bytes:
            self._run()

    def _run(self) -> None:
        arrays, self.pending, self.pending_bytes = self.pending, [], 0
        if self.error is not None:
            return  # the driver raises it; the rest of the split is not worth parsing
        data = _joined(arrays)
        if not data:
            return
        try:
            self._parse(data)
        except MLGuardError as exc:
            self.error = (type(exc).__name__, str(exc))

    def _parse(self, data: bytes) -> None:
        plan = self.plan
        if self.fmt is None:
            # `auto` judges a file by its first lines: this split's, which for the split at
            # the start of the file are the file's own (the driver checks the others agree).
            self.fmt = _choose_format(AUTO, data[: min(SNIFF_BYTES, len(data))])
        if plan.identity.uses_forwarded and FORWARDED_COLUMN not in self.fmt.extra_columns:
            raise UsageError(
                f"--trusted-proxy needs X-Forwarded-For in the log, and format '{self.fmt.name}' has "
                "none: give your format with $http_x_forwarded_for (nginx) or "
                "%{X-Forwarded-For}i (Apache)"
            )
        # The same steps, in the same order, as `read_logs` takes with each chunk.
        parsed = self.fmt.run(data, self.counts["lines"] + 1, len(data), plan.columns())
        records = parsed_lines(parsed)
        unparsed = unparsed_of(parsed)
        self.counts["lines"] += parsed.height
        if plan.since is not None or plan.until is not None:
            inside = records.filter(_time_window(plan.since, plan.until))
            self.counts["outside_window"] += records.height - inside.height
            records = inside
        self.counts["records"] += records.height
        self.counts["bytes"] += len(data)
        if unparsed.height:
            self.counts["unparsed"] += unparsed.height
            self.reasons.update(unparsed["reason"].to_list())
            if "strict" not in self.texts:  # as --strict shows the first one
                self.texts["strict"] = safe_text(unparsed["text"][0], 120)
            room = MAX_EXAMPLES - len(self.examples)
            for row in unparsed.head(max(room, 0)).iter_rows(named=True):
                self.examples.append([row["line_no"], row["reason"], safe_text(row["text"], 200)])
        identity = plan.identity
        before = identity.via_proxy, identity.forged
        records = identity.resolve(records)
        self.counts["via_proxy"] += identity.via_proxy - before[0]
        self.counts["forged"] += identity.forged - before[1]
        if records.height:
            self.parts.append(chunk_partials(records, plan.window_secs))

    def finish(self) -> pa.Table:
        self._run()
        split = split_id(self.file, self.start)
        pieces = []
        if self.parts and self.error is None:
            pieces = list(bucketed(merge_partials(self.parts), self.plan.buckets))
        meta = {
            **self.counts,
            "reasons": dict(self.reasons),
            "examples": self.examples,
            "strict_text": self.texts.get("strict"),
            "format": self.fmt.name if self.fmt is not None else None,
            "error": self.error,
            "mtime": self.mtime,
            "polars": pl.__version__,
        }
        none = [None] * len(pieces)
        columns = {
            BUCKET: [b for b, _, _ in pieces] + [None],
            SPLIT: [split] * (len(pieces) + 1),
            TABLE: [t for _, t, _ in pieces] + [SPLIT_ROW],
            DATA: [d for _, _, d in pieces] + [None],
            FILE: [*none, self.file],
            START: [*none, self.start],
            META: [*none, json.dumps(meta)],
        }
        return pa.table(columns, schema=PARTS_SCHEMA)


def _split_runs(batch: pa.RecordBatch) -> Iterator[tuple[tuple[str, int, int], pa.RecordBatch]]:
    """A batch cut where the split changes (Spark packs small files' splits into one task)."""
    files, starts = batch.column(FILE), batch.column(START)
    n = batch.num_rows
    if files[0] == files[n - 1] and starts[0] == starts[n - 1]:
        yield _key(batch, 0), batch
        return
    keys = pl.DataFrame({"f": pl.from_arrow(files), "s": pl.from_arrow(starts)})
    runs = (
        keys.select(pl.struct("f", "s").rle_id().alias("run"))
        .with_row_index("i")
        .group_by("run", maintain_order=True)
        .agg(pl.col("i").first().alias("lo"), pl.len().alias("n"))
    )
    for lo, count in runs.select("lo", "n").iter_rows():
        yield _key(batch, lo), batch.slice(lo, count)


def _key(batch: pa.RecordBatch, i: int) -> tuple[str, int, int]:
    mtime = batch.column(MTIME)[i]
    micros = mtime.cast(pa.int64()).as_py() if mtime.is_valid else 0
    return batch.column(FILE)[i].as_py(), batch.column(START)[i].as_py(), micros


def partials_of_lines(batches: Iterator[pa.RecordBatch], plan: SplitPlan) -> Iterator[pa.RecordBatch]:
    """The `mapInArrow` function: (line, _file, _start, mtime) rows, split after split, to the
    transported partial tables of each split."""
    current: _Split | None = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        for (file, start, mtime), rows in _split_runs(batch):
            if current is None or (current.file, current.start) != (file, start):
                if current is not None:
                    yield from current.finish().to_batches()
                current = _Split(file, start, mtime, plan)
            current.add(rows.column(LINE))
    if current is not None:
        yield from current.finish().to_batches()


def merge_bucket(order: dict[int, int]) -> Callable[[pa.Table], pa.Table]:
    """The `applyInArrow` function: one bucket's pieces from every split, merged by
    `merge_partials` with the splits in input order (`order`: split id -> rank)."""

    def merge(rows: pa.Table) -> pa.Table:
        by_split: dict[int, dict[str, list[bytes]]] = defaultdict(lambda: defaultdict(list))
        for split, name, data in zip(
            rows.column(SPLIT).to_pylist(),
            rows.column(TABLE).to_pylist(),
            rows.column(DATA).to_pylist(),
            strict=True,
        ):
            by_split[split][name].append(data)
        if not by_split:
            return MERGED_SCHEMA.empty_table()
        parts = [partials_of(by_split[split]) for split in sorted(by_split, key=order.__getitem__)]
        merged = merge_partials(parts)
        names = [name for name in TABLES if getattr(merged, name).height]
        data = [to_bytes(getattr(merged, name)) for name in names]
        return pa.table({TABLE: names, DATA: data}, schema=MERGED_SCHEMA)

    return merge
