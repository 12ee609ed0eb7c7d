"""The Spark session MLGuard runs in: the one `spark-submit` or a notebook already made, or a
new one (local unless a master is named)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from mlguard.errors import UsageError
from mlguard.spark.engine import _first_line, _pyspark

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Only for a session MLGuard starts itself; spark-submit's and a cluster's settings win.
LOCAL_DEFAULTS = {
    "spark.ui.showConsoleProgress": "false",  # stderr carries MLGuard's summary, not progress bars
    "spark.sql.execution.arrow.maxRecordsPerBatch": "100000",  # fewer, larger line batches
}


def get_session(master: str | None = None, app_name: str = "mlguard") -> SparkSession:
    """The active session, or one started with `master` (`local[*]` when None and not under
    spark-submit, which names its own)."""
    _pyspark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:  # a session made in another thread
        return SparkSession.builder.getOrCreate()
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        # Started from a plain `python`/`mlguard`: local Python workers must be this interpreter
        # (the one with MLGuard and Polars), not whatever `python3` is first on the PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for key, value in LOCAL_DEFAULTS.items():
        builder = builder.config(key, value)
    try:
        return builder.getOrCreate()
    except Exception as exc:  # no Java, a bad master URL, a port in use: one line, not a trace
        raise UsageError(
            f"could not start Spark ({_first_line(exc)}); it needs Java 17 or later (JAVA_HOME) "
            "and a reachable master (--spark-master)"
        ) from None
