"""Choosing the engine on the command line: `--engine polars` (one machine, the default) or
`--engine spark` (any Spark cluster), for `mlguard features` and `mlguard detect`.

Both engines give `score_table` the same `ReadResult`; only reading differs. PySpark is
imported only when the Spark engine is chosen (the `spark` extra).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer
from rich.text import Text

from mlguard.cli_options import (
    FormatOpt,
    Ipv6Opt,
    PathsArg,
    ProgressOpt,
    SinceOpt,
    StrictOpt,
    TrustedOpt,
    UntilOpt,
    VerboseOpt,
    WindowOpt,
    err,
    identity_from,
)
from mlguard.detectors.model import load_model
from mlguard.errors import InputError, UsageError
from mlguard.explain.reasons import safe_text
from mlguard.features.aggregate import WINDOW_SECS
from mlguard.formats import AUTO, get_format
from mlguard.identity import ClientIdentity
from mlguard.pipeline import ReadResult
from mlguard.spark import SPARK_EXTRA


class Engine(StrEnum):
    polars = "polars"
    spark = "spark"


EngineOpt = Annotated[
    Engine,
    typer.Option(
        "--engine",
        help="Where the feature table is computed: polars (this machine) or spark (the Spark session "
        "of spark-submit, or a local one; docs/spark.md).",
    ),
]
SparkMasterOpt = Annotated[
    str | None,
    typer.Option(
        "--spark-master",
        envvar="MLGUARD_SPARK_MASTER",
        help="Spark master for --engine spark when not run by spark-submit (default local[*]).",
    ),
]


def _spark() -> ModuleType:
    try:
        import pyarrow  # noqa: F401
        import pyspark  # noqa: F401
    except ImportError:
        raise UsageError(f"--engine spark needs PySpark and PyArrow: {SPARK_EXTRA}") from None
    import mlguard.spark

    return mlguard.spark


def read_spark(
    paths: list[str],
    *,
    log_format: str = AUTO,
    strict: bool = False,
    window_secs: int = WINDOW_SECS,
    identity: ClientIdentity | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    spark_master: str | None = None,
    keep_client: str | None = None,
) -> ReadResult:
    """`read_logs` on Spark, for the commands that score (`detect`): the same ReadResult."""
    if keep_client is not None:
        raise UsageError("--engine spark computes features only; explain one client with --engine polars")
    if log_format != AUTO:
        get_format(log_format)  # a bad name or format string fails before Spark starts
    engine = _spark()
    spark = engine.get_session(spark_master)
    return engine.read_logs_spark(
        spark,
        paths,
        log_format=log_format,
        strict=strict,
        window_secs=window_secs,
        identity=identity,
        since=since,
        until=until,
    )


def features_command(
    paths: PathsArg,
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            help="Directory for the Parquet files (part-*.parquet; read them back with DIR/*.parquet). "
            "With --engine spark, any path Spark writes to (s3://, gs://, hdfs://...).",
        ),
    ],
    engine: EngineOpt = Engine.polars,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the feature table already in --out.")
    ] = False,
    log_format: FormatOpt = AUTO,
    strict: StrictOpt = False,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help="Judge path and payload rarity against this baseline (from 'mlguard train'), "
            "as 'detect --model' does.",
        ),
    ] = None,
    window_secs: WindowOpt = WINDOW_SECS,
    trusted_proxy: TrustedOpt = None,
    ipv6_prefix: Ipv6Opt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    spark_master: SparkMasterOpt = None,
    progress: ProgressOpt = True,
    verbose: VerboseOpt = False,
) -> None:
    """Compute the per-client feature table of the logs and write it as Parquet."""
    # `mlguard.cli` imports this module to register the command: its helpers are taken late.
    from mlguard.cli import _read, _summary, _window

    if engine is Engine.polars and "://" in out:
        raise UsageError(
            f"--out '{safe_text(out, 80)}' is not a local directory: write it with --engine spark"
        )
    baseline = load_model(model) if model is not None else None  # a bad model fails before reading
    identity = identity_from(trusted_proxy, ipv6_prefix)
    window = _window(since, until)
    if engine is Engine.spark:
        result = read_spark(
            paths,
            log_format=log_format,
            strict=strict,
            window_secs=window_secs,
            identity=identity,
            spark_master=spark_master,
            **window,
        )
    else:
        result = _read(paths, log_format, strict, window_secs, progress, identity=identity, window=window)
    if result.accumulator.empty:
        if result.stats.outside_window:
            raise InputError("no parsed line falls between --since and --until, so there are no features")
        raise InputError("no log line could be parsed, so there are no features")
    if baseline is not None:
        table = result.accumulator.finish(reference=baseline.reference, priors=baseline.priors)
    else:
        table = result.accumulator.finish()
    from mlguard.spark.output import parquet_frame, write_parquet_polars, write_parquet_spark

    if engine is Engine.spark:
        write_parquet_spark(_spark().get_session(spark_master), parquet_frame(table), out, overwrite)
    else:
        write_parquet_polars(parquet_frame(table), out, overwrite)
    _summary(result, None)
    err.print(Text(f"features of {table.frame.height:,} clients written to {safe_text(out)}"))


__all__ = ["Engine", "EngineOpt", "SparkMasterOpt", "features_command", "read_spark"]
