"""`mlguard eval`: detection scored against labels, end to end on the bundled labelled example."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from tests.conftest import ROOT
from tests.test_cli import EXAMPLE, run

LABELS = ROOT / "examples" / "labels.csv"
KEYS = {"precision", "recall", "f1", "fpr", "tp", "fp", "fn", "tn"}


@pytest.fixture(scope="module")
def report() -> dict:
    proc = run("eval", str(EXAMPLE), "--labels", str(LABELS), "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_json_report_agrees_with_the_verdicts_of_detect(report: dict) -> None:
    # Recompute every figure from `detect --json` and the labels, independently of the code.
    proc = run("detect", str(EXAMPLE), "--json", "--no-progress")
    found = pl.DataFrame([json.loads(x) for x in proc.stdout.splitlines()]).select("ip", "score", "verdict")
    joined = found.join(pl.read_csv(LABELS), on="ip")
    bad = joined["label"] == "malicious"
    assert {"alert", "block", "roc_auc", "pr_auc", "per_actor"} <= report.keys()
    for level, flagged in (("alert", joined["verdict"] != "pass"), ("block", joined["verdict"] == "block")):
        got = report[level]
        assert set(got) == KEYS
        tp, fp = int((bad & flagged).sum()), int((~bad & flagged).sum())
        fn, tn = int((bad & ~flagged).sum()), int((~bad & ~flagged).sum())
        assert (got["tp"], got["fp"], got["fn"], got["tn"]) == (tp, fp, fn, tn)
        assert got["precision"] == pytest.approx(tp / (tp + fp))
        assert got["recall"] == pytest.approx(tp / (tp + fn))
        assert got["fpr"] == pytest.approx(fp / (fp + tn))
    assert report["block"]["fp"] == 0  # the bundled example blocks no benign client
    assert report["roc_auc"] == pytest.approx(roc_auc_score(bad.to_list(), joined["score"].to_list()))
    actors = joined.filter(bad).group_by("actor").agg((pl.col("verdict") != "pass").mean())
    assert report["per_actor"] == pytest.approx(dict(actors.iter_rows()))


def test_operating_points_say_what_one_threshold_would_do_on_these_labels(report: dict) -> None:
    # Recomputed from `detect --json`: the highest alert threshold reaching each recall goal,
    # and the benign client a block threshold must stay above (20+ requests, the default).
    proc = run("detect", str(EXAMPLE), "--json", "--no-progress")
    found = pl.DataFrame([json.loads(x) for x in proc.stdout.splitlines()]).select("ip", "score", "requests")
    joined = found.join(pl.read_csv(LABELS), on="ip")
    attackers = joined.filter(pl.col("label") == "malicious")["score"]
    benign = joined.filter(pl.col("label") == "benign")
    points = report["operating_points"]
    assert [p["recall_goal"] for p in points["alert"]] == [0.90, 0.95]
    for point in points["alert"]:
        t, goal = point["threshold"], point["recall_goal"] * attackers.len()
        assert point["tp"] == (attackers >= t).sum() >= goal
        assert (attackers > t).sum() < goal  # any higher threshold falls short of the goal
        assert point["fp"] == (benign["score"] >= t).sum()
    block = points["block"]
    busy = benign.filter(pl.col("requests") >= 20).sort("score", "ip", descending=[True, False])
    assert block["min_requests"] == 20
    assert (block["highest_benign"], block["highest_benign_client"]) == (busy["score"][0], busy["ip"][0])
    busy_attackers = joined.filter((pl.col("label") == "malicious") & (pl.col("requests") >= 20))
    assert block["tp"] == (busy_attackers["score"] > busy["score"][0]).sum()


def test_the_table_shows_the_operating_points() -> None:
    proc = run("eval", str(EXAMPLE), "--labels", str(LABELS), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "thresholds on these labels" in proc.stdout
    assert "alert 95% of attackers" in proc.stdout and "block no benign client (20+ requests)" in proc.stdout


def test_misses_and_false_positives_are_named_with_reasons(report: dict) -> None:
    assert len(report["misses"]) == report["alert"]["fn"]
    assert len(report["false_positives"]) == report["alert"]["fp"]
    for client in report["misses"] + report["false_positives"]:
        assert client["ip"] and client["actor"] and 1 <= len(client["reasons"]) <= 3
    assert all(c["verdict"] == "pass" for c in report["misses"])
    assert all(c["verdict"] != "pass" for c in report["false_positives"])


def test_clients_missing_from_the_labels_are_reported_not_counted(tmp_path: Path, report: dict) -> None:
    labels = pl.read_csv(LABELS)
    partial = pl.concat(
        [labels.head(100), pl.DataFrame({"ip": ["192.0.2.77"], "label": ["benign"], "actor": ["ghost"]})]
    )
    path = tmp_path / "partial.csv"
    partial.write_csv(path)
    proc = run("eval", str(EXAMPLE), "--labels", str(path), "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["labelled"] == 100
    assert got["unlabelled"] == labels.height - 100 == len(got["unlabelled_clients"])
    assert set(got["unlabelled_clients"]) == set(labels["ip"].to_list()[100:])
    assert got["missing_from_log"] == ["192.0.2.77"]
    table = run("eval", str(EXAMPLE), "--labels", str(path), "--no-progress")
    assert f"{labels.height - 100} clients of the log are not in the labels" in table.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("address,verdict\n1.2.3.4,malicious\n", "need a header"),
        ("ip,label\n1.2.3.4,evil\n", "is not 'malicious' or 'benign'"),
        ("ip,label\n1.2.3.4,benign\n1.2.3.4,malicious\n", "labelled both ways"),
        ("ip,label\n", "hold no rows"),
    ],
)
def test_bad_labels_are_a_one_line_usage_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(content)
    proc = run("eval", str(EXAMPLE), "--labels", str(path))
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_attacker_controlled_names_are_escaped_in_the_table(tmp_path: Path) -> None:
    labels = pl.read_csv(LABELS).with_columns(
        pl.when(pl.col("label") == "malicious")
        .then(pl.lit("\x1b[31mred\x1b[0m"))
        .otherwise(pl.col("actor"))
        .alias("actor")
    )
    path = tmp_path / "labels.csv"
    labels.write_csv(path)
    proc = run("eval", str(EXAMPLE), "--labels", str(path), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\\x1b[31mred" in proc.stdout


def test_bench_headroom_is_the_best_any_single_threshold_does_on_the_example() -> None:
    # bench/compare's "headroom" tells readers of BENCHMARKS.md how far a target is from any
    # threshold; check it against the example's own scores, counted here a different way.
    from bench.compare import headroom

    proc = run("detect", str(EXAMPLE), "--json", "--no-progress")
    found = pl.DataFrame([json.loads(x) for x in proc.stdout.splitlines()]).select("ip", "score", "requests")
    joined = found.join(pl.read_csv(LABELS), on="ip")
    by = {label: joined.filter(pl.col("label") == label) for label in ("malicious", "benign")}
    result = {
        "scores": {label: frame["score"].to_list() for label, frame in by.items()},
        "requests": {label: frame["requests"].to_list() for label, frame in by.items()},
    }
    # The same set twice: pooling must count each client once per set.
    h = headroom({"a": result, "b": result})
    assert h["attackers"] == 2 * by["malicious"].height and h["benign"] == 2 * by["benign"].height
    for row in h["alert"]:
        assert row["tp"] == 2 * (by["malicious"]["score"] >= row["threshold"]).sum()
        assert row["fp"] == 2 * (by["benign"]["score"] >= row["threshold"]).sum()
    for row in h["block"]:
        m = row["min_requests"]
        benign = by["benign"].filter(pl.col("requests") >= m)
        attackers = by["malicious"].filter(pl.col("requests") >= m)
        # No threshold above the highest benign score flags a benign client; none reaches more.
        assert row["highest_benign"] == (benign["score"].max() if benign.height else None)
        above = (
            attackers
            if row["highest_benign"] is None
            else attackers.filter(pl.col("score") > row["highest_benign"])
        )
        assert row["tp"] == 2 * above.height
