"""What every log format provides."""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from dataclasses import dataclass

import polars as pl

from mlguard.schema import RECORD_SCHEMA, UNPARSED_SCHEMA

MAX_LINE_BYTES = 64 * 1024
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"BZh", b"\xfd7zXZ", b"PK\x03\x04")


@dataclass
class ParsedChunk:
    records: pl.DataFrame  # RECORD_SCHEMA
    unparsed: pl.DataFrame  # UNPARSED_SCHEMA


def split_lines(data: bytes | bytearray, first_line_no: int) -> pl.DataFrame:
    """One row per line (`line_no`, `line`), decoded lossily, in Polars' native reader.

    Polars' CSV reader splits lines in parallel; with quoting off and a separator byte that is
    not in the data, every line is one field. Where the data holds that byte, or the reader's
    row count disagrees with the newline count, fall back to Python's split so that no line is
    ever cut or merged.
    """
    n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    frame: pl.DataFrame | None = None
    # Polars sniffs compression from the first bytes: a chunk that starts like a gzip or zstd
    # stream (an attacker can write those bytes into a log) must not be decompressed by it.
    if b"\x01" not in data and data and not data.startswith(_COMPRESSED_MAGIC):
        frame = pl.read_csv(
            io.BytesIO(data),
            separator="\x01",
            quote_char=None,
            has_header=False,
            schema={"line": pl.String},
            encoding="utf8-lossy",
            raise_if_empty=False,
        )
        if frame.height != n_lines:
            frame = None
    if frame is None:
        text = data.decode("utf-8", "replace")
        lines = text.split("\n") if text else []
        if text.endswith("\n"):
            lines.pop()
        frame = pl.DataFrame({"line": pl.Series(lines, dtype=pl.String)})
    line = pl.col("line").fill_null("")
    if b"\r" in data:  # CRLF files: drop the CR (a copy of every string, so only when needed)
        line = line.str.strip_suffix("\r")
    return frame.select(
        pl.int_range(first_line_no, first_line_no + frame.height, dtype=pl.UInt64).alias("line_no"),
        line.alias("line"),
    )


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """Select and cast the record columns, in schema order."""
    return frame.select([pl.col(name).cast(dtype) for name, dtype in RECORD_SCHEMA.items()])


def conform_unparsed(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select([pl.col(name).cast(dtype) for name, dtype in UNPARSED_SCHEMA.items()])


class LogFormat(ABC):
    """A parser from raw lines to the record schema. Must never raise on line content."""

    name: str = ""

    @abstractmethod
    def parse_lines(self, lines: pl.DataFrame) -> ParsedChunk:
        """Parse a frame of (`line_no`, `line`) into records and unparsed lines."""

    def parse(self, data: bytes | bytearray, first_line_no: int = 1) -> ParsedChunk:
        lines = split_lines(data, first_line_no)
        too_long = pl.col("line").str.len_bytes() > MAX_LINE_BYTES
        if not lines.select(too_long.any()).item():
            return self.parse_lines(lines)
        # A line no server writes: counted and shown (cut short), never parsed or buffered further.
        long_lines = lines.filter(too_long).select(
            "line_no",
            pl.lit(f"line longer than {MAX_LINE_BYTES} bytes").alias("reason"),
            pl.col("line").str.slice(0, 512).alias("text"),
        )
        parsed = self.parse_lines(lines.filter(~too_long))
        unparsed = pl.concat([parsed.unparsed, conform_unparsed(long_lines)]).sort("line_no")
        return ParsedChunk(parsed.records, unparsed)

    def sniff(self, sample: bytes) -> float:
        """Share of the sample's non-empty lines this format parses (0..1)."""
        lines = split_lines(sample, 1).filter(pl.col("line").str.strip_chars() != "")
        if lines.height == 0:
            return 0.0
        parsed = self.parse_lines(lines)
        return parsed.records.height / lines.height
