"""MLGuard on Apache Spark: the same per-client feature table, computed on a cluster.

    from mlguard.spark import get_session, read_logs_spark
    from mlguard.pipeline import score_table

    result = read_logs_spark(get_session(), ["s3://logs/2026/11/"])   # a pipeline.ReadResult
    detection = score_table(result, policy, baseline)                 # as with the Polars engine

Executors parse and reduce the lines with MLGuard's own Polars code (`executor`); the driver
merges the partial tables in Spark and finishes the features with the shared code (`engine`).
Needs the `spark` extra (PySpark with PyArrow) on the driver, and MLGuard with the same Polars
version on every executor. docs/spark.md shows spark-submit, EMR, Dataproc and Databricks.

The names below are imported on first use: `mlguard.spark.output` (Parquet) serves the Polars
engine too, without PySpark or PyArrow installed.
"""

from __future__ import annotations

import importlib
from typing import Any

SPARK_EXTRA = "pip install 'mlguard-web[spark]'"  # what a missing PySpark or PyArrow asks for

_EXPORTS = {
    "read_logs_spark": "mlguard.spark.engine",
    "get_session": "mlguard.spark.session",
    "parquet_frame": "mlguard.spark.output",
    "write_parquet_polars": "mlguard.spark.output",
    "write_parquet_spark": "mlguard.spark.output",
}

__all__ = sorted([*_EXPORTS, "SPARK_EXTRA"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlguard.spark' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
