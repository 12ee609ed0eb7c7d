"""The one record schema: what every log format turns a line into.

Only `mlguard.formats` turns text into these columns; every later stage reads them by name.
"""

import polars as pl

RECORD_SCHEMA: dict[str, pl.DataType] = {
    "line_no": pl.UInt64(),  # 1-based line number within its input
    "client": pl.String(),  # the client address as the log gives it (normalised IP text)
    "time": pl.Datetime("us", "UTC"),
    "request": pl.String(),  # the request line as logged: 'GET /a?b HTTP/1.1'; features key on it
    "method": pl.String(),  # method, path, query and protocol are split out of `request`
    "path": pl.String(),  # the request target without the query string
    "query": pl.String(),  # the query string without '?', null when absent
    "protocol": pl.String(),
    "status": pl.UInt16(),
    "bytes": pl.UInt64(),  # body bytes sent; null when the log says '-'
    "referer": pl.String(),  # null when absent or '-'
    "user_agent": pl.String(),  # null when absent or '-'
}

# What a format's plan yields for every line: the record fields before `request` is split, and
# for a line that could not be parsed, why and its text (record fields null).
PARSED_SCHEMA: dict[str, pl.DataType] = {
    **{name: RECORD_SCHEMA[name] for name in ("line_no", "client", "time", "request", "status", "bytes")},
    "referer": pl.String(),
    "user_agent": pl.String(),
    "reason": pl.String(),  # null when the line was parsed
    "text": pl.String(),  # the raw line when it was not parsed
}

UNPARSED_SCHEMA: dict[str, pl.DataType] = {
    "line_no": pl.UInt64(),
    "reason": pl.String(),
    "text": pl.String(),  # the raw line, lossily decoded; escape before showing it
}


def dash_null(expr: pl.Expr) -> pl.Expr:
    """Logs write '-' (or nothing) for an absent value."""
    return pl.when(expr.is_in(["-", ""])).then(None).otherwise(expr)


def request_fields(request: pl.Expr) -> list[pl.Expr]:
    """method, path, query, protocol from the request line `GET /a?b HTTP/1.1`.

    A line without a space (e.g. '-' or a bare target) has no method; its text is the path.
    """
    parts = request.str.splitn(" ", 3)
    has_target = parts.struct.field("field_1").is_not_null()
    target = pl.when(has_target).then(parts.struct.field("field_1")).otherwise(dash_null(request))
    path_query = target.str.splitn("?", 2)
    return [
        pl.when(has_target).then(parts.struct.field("field_0")).otherwise(None).alias("method"),
        path_query.struct.field("field_0").alias("path"),
        path_query.struct.field("field_1").alias("query"),
        parts.struct.field("field_2").alias("protocol"),
    ]
