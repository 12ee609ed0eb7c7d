"""The feature table as Parquet: a directory of `part-*.parquet` files, whichever engine wrote it.

Read it back with a glob, `pl.read_parquet("DIR/*.parquet")` (Spark also leaves a `_SUCCESS`
file there, which a plain directory read stumbles on).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from mlguard.errors import UsageError
from mlguard.features.aggregate import FeatureTable

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

POLARS_PART = "part-00000.parquet"


def parquet_frame(table: FeatureTable) -> pl.DataFrame:
    """One row per client, every column of the feature table; counts as Int64 because Spark
    has no unsigned integers, so that both engines write the same schema."""
    frame = table.frame
    return frame.with_columns(
        pl.col(c).cast(pl.Int64) for c, t in frame.schema.items() if t.is_unsigned_integer()
    )


def _exists(out: str) -> UsageError:
    return UsageError(f"'{out}' already holds a feature table: choose another --out or add --overwrite")


def write_parquet_polars(frame: pl.DataFrame, out: str, overwrite: bool = False) -> Path:
    """`DIR/part-00000.parquet`; with `overwrite`, the directory's other Parquet files go first
    (so that a glob reads this table only), and nothing else in it is touched."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out '{out}' is a file: give a directory")
    existing = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if existing and not overwrite:
        raise _exists(out)
    folder.mkdir(parents=True, exist_ok=True)
    for old in existing:
        old.unlink()
    path = folder / POLARS_PART
    frame.write_parquet(path)
    return path


def write_parquet_spark(spark: SparkSession, frame: pl.DataFrame, out: str, overwrite: bool = False) -> None:
    """Spark's own Parquet writer, so that `out` may be any path the cluster writes to
    (s3://, gs://, hdfs://, abfss://, dbfs:/)."""
    from pyspark.errors import AnalysisException

    from mlguard.spark.engine import _conf

    data = spark.createDataFrame(frame.to_arrow(compat_level=pl.CompatLevel.oldest()))
    # Spark's default, INT96, reads back as naive nanoseconds: UTC microseconds as the Polars engine.
    try:
        with _conf(spark, {"spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS"}):
            data.write.mode("overwrite" if overwrite else "errorifexists").parquet(out)
    except AnalysisException as exc:
        if "PATH_ALREADY_EXISTS" in str(exc) or "already exists" in str(exc):
            raise _exists(out) from None
        raise
