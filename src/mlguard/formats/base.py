"""What every log format provides, and how a chunk of raw bytes becomes lines and records.

A format builds a lazy Polars plan from lines to one row per line (the record fields, or why
the line could not be parsed). Polars' streaming engine runs it in small batches on every core
and only the columns a later step needs come out of it; `request` is split into method, path
and query only where a caller asks for records.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from mlguard.schema import PARSED_SCHEMA, RECORD_SCHEMA, UNPARSED_SCHEMA, request_fields
from mlguard.sources.files import count_lines

MAX_LINE_BYTES = 64 * 1024
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"BZh", b"\xfd7zXZ", b"PK\x03\x04")
ENGINE = "streaming"
_TOO_LONG = pl.col("line").str.len_bytes() > MAX_LINE_BYTES


@dataclass
class ParsedChunk:
    records: pl.DataFrame  # RECORD_SCHEMA
    unparsed: pl.DataFrame  # UNPARSED_SCHEMA, by line number


def polars_lines(
    data: bytes | bytearray, first_line_no: int, end: int | None = None, lines: int | None = None
) -> pl.LazyFrame | None:
    """Lines of `data[:end]` scanned lazily by Polars' CSV reader, or None where it cannot be
    trusted.

    With quoting off and a separator byte absent from the data, every line is one field. Where
    the data holds that byte, or starts like a compressed stream (Polars sniffs compression from
    the first bytes, and an attacker can write those bytes into a log), Python splits instead.
    Only `bytes` are handed over without a copy; the lines past `end` are left out by count
    (`lines`, the number in `data[:end]`, when the caller has counted them already).
    """
    end = len(data) if end is None else end
    if not end or data.find(b"\x01", 0, end) >= 0 or data.startswith(_COMPRESSED_MAGIC):
        return None
    source = data if isinstance(data, bytes) else io.BytesIO(data)
    return pl.scan_csv(
        source,
        separator="\x01",
        quote_char=None,
        has_header=False,
        schema={"line": pl.String},
        encoding="utf8-lossy",
        raise_if_empty=False,
        row_index_name="line_no",
        row_index_offset=first_line_no,
        n_rows=(count_lines(data, end) if lines is None else lines) if end < len(data) else None,
    ).select(pl.col("line_no").cast(pl.UInt64), pl.col("line").fill_null(""))


def python_lines(data: bytes | bytearray, first_line_no: int, end: int | None = None) -> pl.LazyFrame:
    """The slow, always exact split: one row per '\\n'-terminated line, CR of CRLF dropped."""
    text = bytes(data[:end]).decode("utf-8", "replace")
    lines = text.split("\n") if text else []
    if text.endswith("\n"):
        lines.pop()
    frame = pl.DataFrame({"line": pl.Series(lines, dtype=pl.String)})
    return frame.lazy().select(
        pl.int_range(first_line_no, first_line_no + frame.height, dtype=pl.UInt64).alias("line_no"),
        pl.col("line").str.strip_suffix("\r"),
    )


def address_text(text: pl.Expr) -> pl.Expr:
    """The address of "1.2.3.4", "1.2.3.4:5678", "[::1]:80" or "::1" (a port is dropped)."""
    bracketed = text.str.extract(r"^\[([^\]]*)\]", 1)
    one_colon = text.str.count_matches(":") == 1
    return (
        pl.when(bracketed.is_not_null())
        .then(bracketed)
        .when(one_colon)
        .then(text.str.split(":").list.first())
        .otherwise(text)
    )


def conform(frame: pl.LazyFrame, reason: pl.Expr | None = None, extra: tuple[str, ...] = ()) -> pl.LazyFrame:
    """The plan's columns, in schema order: `reason` and `text` null where `reason` is null.
    A format's `extra` columns (fields the features do not read) follow, as text."""
    reason = pl.lit(None, pl.String) if reason is None else reason
    text = pl.when(reason.is_not_null()).then(pl.col("line")).otherwise(None)
    frame = frame.with_columns(reason.alias("reason"), text.alias("text"))
    columns = [pl.col(name).cast(dtype) for name, dtype in PARSED_SCHEMA.items()]
    return frame.select(columns + [pl.col(name).cast(pl.String) for name in extra])


def records_of(parsed: pl.DataFrame) -> pl.DataFrame:
    """The parsed lines of a plan's output as records (method, path, query, protocol split)."""
    frame = parsed.lazy().filter(pl.col("reason").is_null()).with_columns(request_fields(pl.col("request")))
    extra = [pl.col(name) for name in parsed.columns if name not in PARSED_SCHEMA]
    return frame.select([pl.col(name).cast(dtype) for name, dtype in RECORD_SCHEMA.items()] + extra).collect()


def parsed_lines(parsed: pl.DataFrame) -> pl.DataFrame:
    """The rows of a plan's output whose line parsed (every field as the plan gave it). Most
    chunks of a real log parse whole: such a chunk is returned as it is, without a copy."""
    if parsed["reason"].null_count() == parsed.height:
        return parsed
    return parsed.filter(pl.col("reason").is_null())


def unparsed_of(parsed: pl.DataFrame) -> pl.DataFrame:
    """The lines of a plan's output that could not be parsed, by line number."""
    unparsed = parsed.filter(pl.col("reason").is_not_null())
    columns = [pl.col(name).cast(dtype) for name, dtype in UNPARSED_SCHEMA.items()]
    return unparsed.select(columns).sort("line_no")


class LogFormat(ABC):
    """A parser from raw lines to the record schema. Must never raise on line content."""

    name: str = ""
    # Fields of the format beyond the record schema, kept as text columns after it.
    extra_columns: Sequence[str] = ()

    @abstractmethod
    def plan(self, lines: pl.LazyFrame) -> pl.LazyFrame:
        """From (`line_no`, `line`) to one row per line in `PARSED_SCHEMA` (see `conform`)."""

    def _plan_chunk(self, lines: pl.LazyFrame) -> pl.LazyFrame:
        # A line no server writes is blanked before the format sees it (a choice between
        # string views: nothing is copied, where filtering the lines in two copied them all);
        # `_mark_long_lines` then gives it its own reason.
        return self.plan(
            lines.with_columns(pl.when(_TOO_LONG).then(pl.lit("")).otherwise(pl.col("line")).alias("line"))
        )

    @staticmethod
    def _mark_long_lines(parsed: pl.DataFrame, lines: pl.LazyFrame) -> pl.DataFrame:
        """Blanked long lines came out as unparsed with an empty text: give them their reason
        and the start of their text. Looked for only when the chunk has such a row."""
        if "reason" not in parsed.columns or "text" not in parsed.columns:
            return parsed
        blank = parsed.select((pl.col("reason").is_not_null() & (pl.col("text") == "")).any()).item()
        if not blank:
            return parsed
        long_lines = (
            lines.filter(_TOO_LONG)
            .select("line_no", pl.col("line").str.slice(0, 512).alias("_long_text"))
            .collect()
        )
        if long_lines.height == 0:
            return parsed
        order = parsed.columns
        marked = parsed.join(long_lines, on="line_no", how="left").with_columns(
            pl.when(pl.col("_long_text").is_not_null())
            .then(pl.lit(f"line longer than {MAX_LINE_BYTES} bytes"))
            .otherwise(pl.col("reason"))
            .alias("reason"),
            pl.coalesce("_long_text", "text").alias("text"),
        )
        # a format's fields stay null on such a line, as they would on any unparsed one
        return marked.select(order)

    def run(
        self,
        data: bytes | bytearray,
        first_line_no: int = 1,
        end: int | None = None,
        columns: list[pl.Expr] | None = None,
        lines: int | None = None,
    ) -> pl.DataFrame:
        """Every line of `data[:end]` in `PARSED_SCHEMA` (or as `columns` of it), in one
        streaming pass, in no set order (sorting 300,000 rows of strings costs a fifth of the
        parse; sort what you show). Columns left out are never built.

        If Polars' reader and the newline count disagree about how many lines there are, the
        chunk is run again on Python's split, so that no line is ever cut, merged or lost.
        `lines` is that count for `data[:end]` when the caller has it (a `Chunk` counts once).
        """
        end = len(data) if end is None else end
        if lines is None:
            lines = count_lines(data, end)

        def collect(lines: pl.LazyFrame) -> pl.DataFrame:
            plan = self._plan_chunk(lines)
            parsed = (plan if columns is None else plan.select(columns)).collect(engine=ENGINE)
            return self._mark_long_lines(parsed, lines)

        fast = polars_lines(data, first_line_no, end, lines)
        if fast is not None:
            parsed = collect(fast)
            if parsed.height == lines:
                return parsed
        return collect(python_lines(data, first_line_no, end))

    def parse(self, data: bytes | bytearray, first_line_no: int = 1) -> ParsedChunk:
        """Records and unparsed lines of a chunk (tests, samples)."""
        parsed = self.run(data, first_line_no).sort("line_no")
        return ParsedChunk(records_of(parsed), unparsed_of(parsed))

    def sniff(self, sample: bytes | bytearray) -> float:
        """Share of the sample's non-empty lines this format parses (0..1)."""
        parsed = self.parse(sample)
        blank = parsed.unparsed.filter(pl.col("reason") == "empty line").height
        lines = parsed.records.height + parsed.unparsed.height - blank
        return parsed.records.height / lines if lines else 0.0
