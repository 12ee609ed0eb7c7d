"""The one record schema: what every log format turns a line into.

Only `mlguard.formats` turns text into these columns; every later stage reads them by name.
"""

import polars as pl

RECORD_SCHEMA: dict[str, pl.DataType] = {
    "line_no": pl.UInt64(),  # 1-based line number within its input
    "client": pl.String(),  # the client address as the log gives it (normalised IP text)
    "time": pl.Datetime("us", "UTC"),
    "method": pl.String(),
    "path": pl.String(),  # the request target without the query string
    "query": pl.String(),  # the query string without '?', null when absent
    "protocol": pl.String(),
    "status": pl.UInt16(),
    "bytes": pl.UInt64(),  # body bytes sent; null when the log says '-'
    "referer": pl.String(),  # null when absent or '-'
    "user_agent": pl.String(),  # null when absent or '-'
}

UNPARSED_SCHEMA: dict[str, pl.DataType] = {
    "line_no": pl.UInt64(),
    "reason": pl.String(),
    "text": pl.String(),  # the raw line, lossily decoded; escape before showing it
}


def empty_records() -> pl.DataFrame:
    return pl.DataFrame(schema=RECORD_SCHEMA)


def empty_unparsed() -> pl.DataFrame:
    return pl.DataFrame(schema=UNPARSED_SCHEMA)
