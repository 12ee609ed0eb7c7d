"""nginx/Apache `combined` and `common` (NCSA) access log formats.

Two paths, both vectorised Polars expressions:
- fast: split each line on `"` (a byte search) and slice the fixed-width timestamp; taken by
  every line whose fields hold no escaped quote and whose shape checks out;
- exact: one regex that understands `\\"` escapes (Apache writes them), for the rest.
A line neither path takes is returned as unparsed with a reason; nothing is dropped silently.
"""

from __future__ import annotations

import polars as pl

from mlguard.formats.base import LogFormat, ParsedChunk, conform, conform_unparsed
from mlguard.schema import empty_unparsed

TIME_FORMAT = "%d/%b/%Y:%H:%M:%S %z"
_QUOTED = r'"((?:[^"\\]|\\.)*)"'
# ip ident user [time] "request" status bytes ["referer" "user agent"] [anything more]
EXACT = (
    r"^(?<client>\S+) \S+ (?:.*?) \[(?<time>[^\]]+)\] "
    + _QUOTED.replace("(", "(?<request>", 1).replace("(?<request>?:", "(?:", 1)
    + r" (?<status>\d{3}|-) (?<bytes>\d+|-)"
    + r"(?: "
    + _QUOTED.replace("(", "(?<referer>", 1).replace("(?<referer>?:", "(?:", 1)
    # The user agent may lack its closing quote when a line was cut (real logs have such lines).
    + r' "(?<user_agent>(?:[^"\\]|\\.)*)(?:"|$)'
    + r")?(?<rest>.*)$"
)


def _dash_null(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr.is_in(["-", ""])).then(None).otherwise(expr)


def _request_columns(request: pl.Expr) -> list[pl.Expr]:
    """method, path, query, protocol from the request line `GET /a?b HTTP/1.1`."""
    parts = request.str.splitn(" ", 3)
    has_target = parts.struct.field("field_1").is_not_null()
    target = pl.when(has_target).then(parts.struct.field("field_1")).otherwise(_dash_null(request))
    path_query = target.str.splitn("?", 2)
    return [
        pl.when(has_target).then(parts.struct.field("field_0")).otherwise(None).alias("method"),
        path_query.struct.field("field_0").alias("path"),
        path_query.struct.field("field_1").alias("query"),
        parts.struct.field("field_2").alias("protocol"),
    ]


def _time(text: pl.Expr) -> pl.Expr:
    return text.str.strptime(pl.Datetime("us", "UTC"), TIME_FORMAT, strict=False, cache=True)


def _by_unique(frame: pl.DataFrame, key: str, exprs: list[pl.Expr]) -> pl.DataFrame:
    """Compute `exprs` of `key` once per distinct value and join them back (values repeat a lot)."""
    table = frame.select(pl.col(key).unique()).with_columns(exprs)
    return frame.join(table, on=key, how="left", maintain_order="left", nulls_equal=True)


def _parse_time(frame: pl.DataFrame) -> pl.DataFrame:
    # strptime's own cache of repeated values beats a unique-and-join here (timestamps repeat
    # within a second, and consecutive lines share them).
    return frame.with_columns(_time(pl.col("time_text")).alias("time"))


def _client(text: pl.Expr) -> pl.Expr:
    # IPv6 text is case-insensitive; lower-case it so one client is one key.
    return text.str.to_lowercase()


class CombinedFormat(LogFormat):
    """`combined`: `%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"` (nginx default)."""

    name = "combined"
    needs_agent = True
    rest_pattern = r"^(?: .*)?$"  # extra fields after the user agent are allowed

    def parse_lines(self, lines: pl.DataFrame) -> ParsedChunk:
        line = pl.col("line")
        # Split once into columns (a struct reused by many expressions would redo the split).
        split = lines.with_columns(line.str.split_exact('"', 8).alias("_f")).unnest("_f", separator="")
        f = [pl.col(f"_ffield_{i}") for i in range(9)]
        head = f[0]
        shape_ok = (
            head.str.ends_with("] ")
            & (head.str.slice(-29, 1) == "[")
            & ~head.str.starts_with(" ")
            & f[1].is_not_null()
            & f[2].str.starts_with(" ")
            & self._tail_ok(f)
        )
        # A field ending in a backslash means an escaped quote split it: the exact path decides.
        escaped = pl.any_horizontal([field.str.ends_with("\\").fill_null(False) for field in f[:8]])
        fast = split.with_columns(
            head.str.split_exact(" ", 1).struct.field("field_0").alias("client"),
            head.str.slice(-28, 26).alias("time_text"),
            f[1].alias("request"),
            f[2].str.slice(1, 3).cast(pl.UInt16, strict=False).alias("status"),
            f[2].str.slice(5).str.strip_chars_end(" ").alias("bytes_text"),
            _dash_null(f[3]).alias("referer"),
            _dash_null(f[5]).alias("user_agent"),
            (shape_ok & ~escaped & (f[2].str.slice(4, 1) == " ")).fill_null(False).alias("_shape_ok"),
        )
        fast = _parse_time(fast)
        bytes_ok = (pl.col("bytes_text") == "-") | pl.col("bytes_text").str.contains(r"^\d+$")
        ok = pl.col("_shape_ok") & pl.col("time").is_not_null() & pl.col("status").is_not_null() & bytes_ok
        fast = fast.with_columns(ok.fill_null(False).alias("_ok"))
        good = fast.filter(pl.col("_ok"))
        rest = fast.filter(~pl.col("_ok")).select("line_no", "line")
        records = [self._finish(good)]
        unparsed = []
        if rest.height:
            exact_records, exact_unparsed = self._exact(rest)
            records.append(exact_records)
            unparsed.append(exact_unparsed)
        out_records = pl.concat(records) if len(records) > 1 else records[0]
        out_unparsed = pl.concat(unparsed) if unparsed else empty_unparsed()
        return ParsedChunk(out_records, out_unparsed)

    def _tail_ok(self, f: list[pl.Expr]) -> pl.Expr:
        # referer and user agent present, anything after them separated by a space
        return (
            f[3].is_not_null()
            & (f[4] == " ")
            & f[5].is_not_null()
            & f[6].is_not_null()
            & ((f[6] == "") & f[7].is_null() | f[6].str.starts_with(" "))
        )

    def _finish(self, frame: pl.DataFrame) -> pl.DataFrame:
        frame = _by_unique(frame, "request", _request_columns(pl.col("request")))
        return conform(
            frame.with_columns(
                _client(pl.col("client")),
                pl.col("bytes_text").cast(pl.UInt64, strict=False).alias("bytes"),
            )
        )

    def _exact(self, rest: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        groups = rest.with_columns(pl.col("line").str.extract_groups(EXACT).alias("g")).unnest("g")
        groups = groups.with_columns(
            _time(pl.col("time")).alias("time_parsed"),
            pl.col("status").cast(pl.UInt16, strict=False),
            pl.col("bytes").alias("bytes_text"),
            _dash_null(pl.col("referer")).alias("referer"),
            _dash_null(pl.col("user_agent")).alias("user_agent"),
        )
        has_agent = (
            pl.col("user_agent").is_not_null()
            | pl.col("referer").is_not_null()
            | (pl.col("line").str.contains(r'" "[^"]*"$'))
        )
        matched = pl.col("client").is_not_null()
        rest_ok = pl.col("rest").fill_null("").str.contains(self.rest_pattern)
        agent_ok = has_agent if self.needs_agent else pl.lit(True)
        ok = matched & pl.col("time_parsed").is_not_null() & rest_ok & agent_ok
        reason = (
            pl.when(pl.col("line").str.strip_chars() == "")
            .then(pl.lit("empty line"))
            .when(~matched)
            .then(pl.lit(f"not a {self.name} log line"))
            .when(pl.col("time_parsed").is_null())
            .then(pl.lit("bad timestamp"))
            .when(~agent_ok)
            .then(pl.lit("no referer and user agent fields"))
            .otherwise(pl.lit(f"not a {self.name} log line"))
        )
        groups = groups.with_columns(ok.fill_null(False).alias("_ok"), reason.alias("reason"))
        good = groups.filter(pl.col("_ok")).with_columns(pl.col("time_parsed").alias("time"))
        bad = groups.filter(~pl.col("_ok")).select("line_no", "reason", pl.col("line").alias("text"))
        return self._finish(good), conform_unparsed(bad)


class CommonFormat(CombinedFormat):
    """`common` (NCSA CLF): `%h %l %u %t "%r" %>s %b`; referer and user agent are absent."""

    name = "common"
    needs_agent = False
    rest_pattern = r"^\s*$"  # nothing after the byte count: a combined line is not common

    def _tail_ok(self, f: list[pl.Expr]) -> pl.Expr:
        # nothing after the byte count (a combined line is left to the exact path and kept)
        return f[3].is_null()
