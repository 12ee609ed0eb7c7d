"""nginx/Apache `combined` and `common` (NCSA) access log formats.

Two paths, both vectorised Polars expressions:
- fast: split each line on `"` (a byte search) and slice the fixed-width timestamp; taken by
  every line whose fields hold no escaped quote and whose shape checks out;
- exact: one regex that understands `\\"` escapes (Apache writes them), for the rest.
A line neither path takes is returned as unparsed with a reason; nothing is dropped silently.
"""

from __future__ import annotations

import polars as pl

from mlguard.formats.base import LogFormat, conform
from mlguard.schema import dash_null

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


def _time(text: pl.Expr) -> pl.Expr:
    # strptime's own cache of repeated values makes this cheap: timestamps repeat.
    return text.str.strptime(pl.Datetime("us", "UTC"), TIME_FORMAT, strict=False, cache=True)


def _client(text: pl.Expr) -> pl.Expr:
    # IPv6 text is case-insensitive; lower-case it so one client is one key.
    return text.str.to_lowercase()


class CombinedFormat(LogFormat):
    """`combined`: `%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"` (nginx default)."""

    name = "combined"
    needs_agent = True
    rest_pattern = r"^(?: .*)?$"  # extra fields after the user agent are allowed

    def plan(self, lines: pl.LazyFrame) -> pl.LazyFrame:
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
            & (f[2].str.slice(4, 1) == " ")
            # Polars' number cast takes "+12", the exact path's `\d{3}` does not.
            & (f[2].str.slice(1, 1) != "+")
            & self._tail_ok(f)
        )
        # A field ending in a backslash means an escaped quote split it: the exact path decides.
        escaped = pl.any_horizontal([field.str.ends_with("\\").fill_null(False) for field in f[:8]])
        bytes_text = f[2].str.slice(5).str.strip_chars_end(" ")
        fast = split.with_columns(
            _client(head.str.split_exact(" ", 1).struct.field("field_0")).alias("client"),
            _time(head.str.slice(-28, 26)).alias("time"),
            f[1].alias("request"),
            f[2].str.slice(1, 3).cast(pl.UInt16, strict=False).alias("status"),
            bytes_text.cast(pl.UInt64, strict=False).alias("bytes"),
            dash_null(f[3]).alias("referer"),
            dash_null(f[5]).alias("user_agent"),
            ((bytes_text == "-") | bytes_text.str.contains(r"^\d+$")).alias("_bytes_ok"),
            (shape_ok & ~escaped).alias("_shape_ok"),
        )
        ok = (
            pl.col("_shape_ok")
            & pl.col("time").is_not_null()
            & pl.col("status").is_not_null()
            & pl.col("_bytes_ok")
        ).fill_null(False)
        fast = fast.with_columns(ok.alias("_ok"))
        good = conform(fast.filter(pl.col("_ok")))
        return pl.concat([good, self._exact(fast.filter(~pl.col("_ok")).select("line_no", "line"))])

    def _tail_ok(self, f: list[pl.Expr]) -> pl.Expr:
        # referer and user agent present, anything after them separated by a space
        return (
            f[3].is_not_null()
            & (f[4] == " ")
            & f[5].is_not_null()
            & f[6].is_not_null()
            & ((f[6] == "") & f[7].is_null() | f[6].str.starts_with(" "))
        )

    def _exact(self, rest: pl.LazyFrame) -> pl.LazyFrame:
        groups = rest.with_columns(pl.col("line").str.extract_groups(EXACT).alias("g")).unnest("g")
        groups = groups.with_columns(
            _time(pl.col("time")).alias("time_parsed"),
            pl.col("status").cast(pl.UInt16, strict=False),
            pl.col("bytes").cast(pl.UInt64, strict=False),
            _client(pl.col("client")),
            dash_null(pl.col("referer")).alias("referer"),
            dash_null(pl.col("user_agent")).alias("user_agent"),
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
        groups = groups.with_columns(pl.col("time_parsed").alias("time"))
        return conform(groups, pl.when(ok.fill_null(False)).then(None).otherwise(reason))


class CommonFormat(CombinedFormat):
    """`common` (NCSA CLF): `%h %l %u %t "%r" %>s %b`; referer and user agent are absent."""

    name = "common"
    needs_agent = False
    rest_pattern = r"^\s*$"  # nothing after the byte count: a combined line is not common

    def _tail_ok(self, f: list[pl.Expr]) -> pl.Expr:
        # nothing after the byte count (a combined line is left to the exact path and kept)
        return f[3].is_null()
