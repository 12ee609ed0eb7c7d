"""The documented fields of a finding, as `mlguard detect --json` writes them (and the Lambda
function, to S3): one object per client with `ip`, `score`, `verdict`, `requests`, `reasons`,
`campaign`, `campaign_score`, `client_score`, `first_seen`, `last_seen`, `protected`, `features`.
"""

from __future__ import annotations

import polars as pl

from mlguard.explain.reasons import ndjson_of
from mlguard.features.catalogue import FEATURE_NAMES

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def output_frame(findings: pl.DataFrame) -> pl.DataFrame:
    """The documented fields of every finding, in order; JSON and CSV are both written from it
    by Polars (a Python object per client is slow with 100,000s of clients)."""
    return findings.select(
        pl.col("client").alias("ip"),
        "score",
        "verdict",
        pl.col("requests").cast(pl.Int64),
        "reasons",
        "campaign",
        "campaign_score",
        "client_score",
        pl.col("first_seen").dt.strftime(TIME_FORMAT),
        pl.col("last_seen").dt.strftime(TIME_FORMAT),
        "protected",
        pl.struct([pl.col(name).round(6) for name in FEATURE_NAMES]).alias("features"),
    )


def json_lines(findings: pl.DataFrame) -> str:
    """JSON Lines, one object per finding; control characters escaped (see escape_json_text)."""
    return ndjson_of(output_frame(findings))
