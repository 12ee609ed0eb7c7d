"""The Spark engine gives what the Polars engine gives: the same feature table, counts and
unparsed lines from the same real logs, the same `detect` output, and Parquet that Polars
reads back. Spark runs in local[2] on 127.0.0.1, one session for every test here
(`pytest -m spark` runs these alone, `-m 'not spark'` skips them and the session start).

Files are cut into many small splits so that what crosses a split boundary (a client's gaps
between requests, line numbers, a line longer than a split) is exercised on small fixtures.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from mlguard.decisions.policy import (
    DEFAULT_ALERT_THRESHOLD,
    DEFAULT_BLOCK_THRESHOLD,
    DEFAULT_MIN_BLOCK_REQUESTS,
)
from mlguard.detectors.model import build_baseline
from mlguard.errors import InputError, StrictParseError, UsageError
from mlguard.features.catalogue import FEATURE_NAMES
from mlguard.findings import json_lines
from mlguard.identity import ClientIdentity
from mlguard.pipeline import ReadResult, read_logs, score_table
from tests.conftest import FIXTURES

pytestmark = [
    pytest.mark.spark,
    # PySpark warns on its Arrow calls that it does not know pandas 3; MLGuard hands it no pandas.
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]

REL_TOL = 1e-9  # float sums may be added in another order
KIB = 1024


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        pytest.fail("PySpark is not installed: pip install -e '.[spark]', or skip with -m 'not spark'")
    saved = {k: os.environ.get(k) for k in ("SPARK_LOCAL_IP", "PYSPARK_PYTHON")}
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # no traffic beyond the loopback
    os.environ["PYSPARK_PYTHON"] = sys.executable  # workers with MLGuard and the same Polars
    session = (
        SparkSession.builder.master("local[2]")
        .appName("mlguard-tests")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def spark_read(spark: Any, paths: list[str], **options: Any) -> ReadResult:
    from mlguard.spark import read_logs_spark

    return read_logs_spark(spark, paths, **options)


def splits_of(spark: Any, path: Path, split_bytes: int) -> int:
    """How many splits Spark cuts the file into at `split_bytes` (what the engine reads)."""
    from mlguard.spark.engine import _conf

    with _conf(spark, {"spark.sql.files.maxPartitionBytes": str(split_bytes)}):
        return spark.read.text(str(path)).rdd.getNumPartitions()


def assert_same_read(got: ReadResult, want: ReadResult) -> None:
    for name in (
        "lines",
        "records",
        "unparsed",
        "unparsed_by_reason",
        "examples",
        "formats",
        "outside_window",
        "via_proxy",
        "forged_forwarded",
    ):
        assert getattr(got.stats, name) == getattr(want.stats, name), name
    assert got.table is not None and want.table is not None
    assert_frame_equal(got.table.frame, want.table.frame, check_exact=False, rel_tol=REL_TOL, abs_tol=0.0)
    assert got.table.priors == pytest.approx(want.table.priors, rel=REL_TOL)
    assert_frame_equal(got.table.rarity.templates, want.table.rarity.templates)
    assert_frame_equal(got.table.rarity.trigrams, want.table.rarity.trigrams)
    assert got.table.rarity.clients == want.table.rarity.clients


PARITY_CASES = {
    # escapes, control bytes, invalid UTF-8, a 200 KB line that spans many splits, garbage
    "hostile": ("hostile.log", 16 * KIB, {}),
    # 410 clients with injected attackers; IPv6 clients grouped by /64 on the executors
    "labelled": ("labelled_small/access.log", 32 * KIB, {"identity": ClientIdentity(ipv6_prefix=64)}),
    # gzip (one split: Spark cannot cut a gzip stream), the lab's credential-stuffing run
    "gzip": ("crowds/lab_stuffing.log.gz", 0, {}),
    # an ALB log: another format, microsecond times
    "alb": ("formats/alb_crowdsec.log", 1 * KIB, {}),
}


@pytest.mark.parametrize("case", PARITY_CASES)
def test_spark_and_polars_compute_the_same_feature_table(spark: Any, case: str) -> None:
    name, split_bytes, options = PARITY_CASES[case]
    path = FIXTURES / name
    if split_bytes:
        assert splits_of(spark, path, split_bytes) >= 4
    got = spark_read(spark, [str(path)], split_bytes=split_bytes or None, **options)
    polars_options = {k: ClientIdentity(ipv6_prefix=v.ipv6_prefix) for k, v in options.items()}
    want = read_logs([str(path)], **polars_options)
    assert_same_read(got, want)
    if case == "hostile":  # the unparsed lines are counted and shown as the Polars engine does
        assert got.stats.unparsed == len(got.stats.examples) == 4
        assert got.stats.unparsed_by_reason["line longer than 65536 bytes"] == 1


def test_a_log_out_of_time_order_gives_what_polars_gives_cut_at_the_same_places(
    spark: Any, tmp_path: Path
) -> None:
    """Where a client's requests are out of time order, the gaps between them depend on where
    the input is cut (each cut is sorted on its own; across cuts, only forward gaps count), in
    the Polars engine too (its 64 MiB chunks). Cut where Spark cuts, Polars gives Spark's table."""
    path = FIXTURES / "combined_sample.log"  # real lines, not in time order
    from mlguard.spark.engine import _conf, _lines, plan_inputs

    with _conf(spark, {"spark.sql.files.maxPartitionBytes": str(8 * KIB)}):
        lines = pl.from_arrow(_lines(spark, plan_inputs([str(path)])).toArrow())
    assert isinstance(lines, pl.DataFrame)
    pieces = []
    for i, (_, split) in enumerate(sorted(lines.group_by("_start", maintain_order=True), key=lambda g: g[0])):
        piece = tmp_path / f"piece-{i:03d}.log"
        piece.write_bytes(b"".join(line + b"\n" for line in split["line"]))
        pieces.append(str(piece))
    assert len(pieces) >= 8
    got = spark_read(spark, [str(path)], split_bytes=8 * KIB)
    want = read_logs(pieces, log_format="combined")  # one chunk per piece, in order
    assert got.table is not None and want.table is not None
    assert got.stats.records == want.stats.records == 300
    assert_frame_equal(got.table.frame, want.table.frame, check_exact=False, rel_tol=REL_TOL, abs_tol=0.0)
    whole = spark_read(spark, [str(path)])  # one split: the whole log, as Polars reads it
    assert_same_read(whole, read_logs([str(path)]))


def test_several_files_in_time_order_with_a_time_window(spark: Any, tmp_path: Path) -> None:
    """A directory is read oldest file first, as the Polars engine reads it (not by name), and
    --since/--until keep the same lines; line numbers of unparsed lines count per file."""
    folder = tmp_path / "logs"
    folder.mkdir()
    newer, older = folder / "a.log", folder / "b.log"
    shutil.copy(FIXTURES / "combined_sample.log", newer)
    shutil.copy(FIXTURES / "hostile.log", older)
    os.utime(older, (1_700_000_000, 1_700_000_000))
    os.utime(newer, (1_800_000_000, 1_800_000_000))
    window = {
        "since": datetime(2015, 5, 17, 12, 0, tzinfo=UTC),
        "until": datetime(2015, 5, 19, 0, 0, tzinfo=UTC),
    }
    got = spark_read(spark, [str(folder)], split_bytes=16 * KIB, **window)
    want = read_logs([str(folder)], **window)
    assert_same_read(got, want)
    assert got.stats.outside_window > 0
    assert list(got.stats.formats) == [str(older), str(newer)]
    # Small files packed into one task (as Spark packs them by default): its batches hold both
    from mlguard.spark.engine import _conf

    with _conf(spark, {"spark.sql.files.openCostInBytes": "1", "spark.sql.files.minPartitionNum": "1"}):
        assert spark.read.text(str(folder)).rdd.getNumPartitions() == 1
        packed = spark_read(spark, [str(folder)], **window)
    assert_same_read(packed, want)


@pytest.mark.parametrize("listed_by_spark", [False, True])
def test_auto_format_is_the_one_of_each_file_start(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listed_by_spark: bool
) -> None:
    """A file's format is the one its start shows, as in the Polars engine, even where a split
    far into it looks like another. A local file is judged on the driver; a file Spark lists
    (s3://, hdfs://...) by its first split, and when other splits chose otherwise the input is
    parsed again with the first split's format."""
    head = (FIXTURES / "labelled_small" / "access.log").read_bytes().split(b"\n")[:60]
    tail = (FIXTURES / "formats" / "caddy_crowdsec.log").read_bytes()
    mixed = tmp_path / "mixed.log"
    mixed.write_bytes(b"\n".join(head) + b"\n" + tail)
    from mlguard.formats import detect_format
    from mlguard.spark import engine

    assert detect_format(tail).name == "caddy"  # a split holding only these lines would say caddy
    real_run, passes = engine._run, []

    def counted(*args: Any) -> Any:
        passes.append(args)
        return real_run(*args)

    monkeypatch.setattr(engine, "_run", counted)
    if listed_by_spark:
        monkeypatch.setattr(engine, "local_formats", lambda inputs: {})
    got = spark_read(spark, [str(mixed)], split_bytes=2 * KIB)
    assert len(passes) == (2 if listed_by_spark else 1)
    want = read_logs([str(mixed)])
    assert want.stats.formats == {str(mixed): "combined"} and want.stats.unparsed >= 5
    assert_same_read(got, want)


def policy() -> Any:
    from mlguard.cli_options import policy_from

    return policy_from(
        DEFAULT_ALERT_THRESHOLD, DEFAULT_BLOCK_THRESHOLD, DEFAULT_MIN_BLOCK_REQUESTS, [], False
    )


def test_detect_gives_the_same_findings_on_both_engines(spark: Any, labelled_small: tuple[Path, Any]) -> None:
    path, _ = labelled_small
    got = spark_read(spark, [str(path)], split_bytes=64 * KIB)
    want = read_logs([str(path)])
    assert json_lines(score_table(got, policy()).findings) == json_lines(score_table(want, policy()).findings)
    # against a baseline fitted on other traffic: rarity and priors come from the model
    history = read_logs([str(FIXTURES / "combined_sample.log")]).table
    assert history is not None
    baseline = build_baseline(
        history.frame.select(FEATURE_NAMES).to_numpy(), history.rarity, history.priors, {}
    )
    flagged = score_table(got, policy(), baseline).findings
    assert json_lines(flagged) == json_lines(score_table(want, policy(), baseline).findings)
    assert flagged.filter(pl.col("verdict") != "pass").height > 0


def cli(*args: str) -> Any:
    from mlguard.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_detect_engine_spark_prints_what_detect_prints(spark: Any, labelled_small: tuple[Path, Any]) -> None:
    path, _ = labelled_small
    common = ["detect", str(path), "--json", "--no-crawler-dns", "--no-progress"]
    polars_run = cli(*common)
    spark_run = cli(*common, "--engine", "spark")
    assert polars_run.exit_code == 0 and spark_run.exit_code == 0, spark_run.output
    assert spark_run.stdout == polars_run.stdout and spark_run.stdout.count("\n") == 410

    def counts(stderr: str) -> str:  # the summary without its timing
        return stderr.splitlines()[0].split(" s (")[0].rsplit(";", 1)[0]

    assert counts(spark_run.stderr) == counts(polars_run.stderr)


def test_features_parquet_is_read_back_with_a_glob(spark: Any, tmp_path: Path) -> None:
    path = str(FIXTURES / "hostile.log")
    spark_out, polars_out = tmp_path / "spark", tmp_path / "polars"
    assert cli("features", path, "--engine", "spark", "--out", str(spark_out)).exit_code == 0
    assert cli("features", path, "--out", str(polars_out)).exit_code == 0
    assert (spark_out / "_SUCCESS").exists()  # why readers give a glob, not the directory
    got = pl.read_parquet(f"{spark_out}/*.parquet").sort("client")
    want = pl.read_parquet(f"{polars_out}/*.parquet").sort("client")
    assert_frame_equal(got, want, check_exact=False, rel_tol=REL_TOL, abs_tol=0.0)
    assert got.height == 12 and set(FEATURE_NAMES) <= set(got.columns)
    assert got.schema["first_seen"] == pl.Datetime("us", "UTC")
    # an existing table is kept unless --overwrite is given
    with pytest.raises(UsageError, match="already holds a feature table"):
        cli("features", path, "--engine", "spark", "--out", str(spark_out))
    assert cli("features", path, "--engine", "spark", "--out", str(spark_out), "--overwrite").exit_code == 0


def test_errors_are_those_of_the_polars_engine(spark: Any, tmp_path: Path) -> None:
    hostile = str(FIXTURES / "hostile.log")
    with pytest.raises(StrictParseError) as polars_error:
        read_logs([hostile], strict=True)
    with pytest.raises(StrictParseError) as spark_error:
        spark_read(spark, [hostile], strict=True, split_bytes=16 * KIB)
    assert str(spark_error.value) == str(polars_error.value)
    with pytest.raises(UsageError, match="not standard input"):
        spark_read(spark, ["-"])
    with pytest.raises(InputError, match="no such file"):
        spark_read(spark, [str(tmp_path / "missing.log")])
    garbage = tmp_path / "garbage.log"
    garbage.write_bytes(b"\x00\x01 not a log line\n" * 50)
    with pytest.raises(UsageError, match="could not recognise the log format"):
        spark_read(spark, [str(garbage)])


def test_the_cut_lines_are_the_bytes_of_the_file(spark: Any) -> None:
    """What the executors parse is the file itself, byte for byte (no decoding, no '\\r' taken
    as a line end), however the file is cut."""
    from mlguard.spark.engine import _lines, plan_inputs
    from mlguard.spark.executor import _joined

    path = FIXTURES / "hostile.log"
    rows = _lines(spark, plan_inputs([str(path)])).toArrow()
    data = _joined(rows.column("line").chunks)
    assert data == path.read_bytes() + (b"" if path.read_bytes().endswith(b"\n") else b"\n")
