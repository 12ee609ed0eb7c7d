"""`mlguard` end to end, as a user runs it: a real subprocess, real files, real exit codes."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "access.log"


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlguard", *args],
        input=stdin.decode("utf-8", "replace") if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def example_json() -> list[dict]:
    proc = run("detect", str(EXAMPLE), "--json")
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_detect_json_has_the_documented_fields(example_json: list[dict]) -> None:
    labels = pl.read_csv(ROOT / "examples" / "labels.csv")
    assert len(example_json) == labels.height  # one object per client
    for obj in example_json:
        assert {
            "ip",
            "score",
            "verdict",
            "requests",
            "reasons",
            "first_seen",
            "last_seen",
            "features",
        } <= obj.keys()
        assert obj["verdict"] in ("block", "alert", "pass")
        assert 0.0 <= obj["score"] <= 1.0
        assert obj["first_seen"].endswith("Z") and obj["first_seen"] <= obj["last_seen"]
        if obj["verdict"] != "pass":
            assert 1 <= len(obj["reasons"]) <= 3
    scores = [o["score"] for o in example_json]
    assert scores == sorted(scores, reverse=True)


def test_example_attackers_are_on_top(example_json: list[dict]) -> None:
    labels = pl.read_csv(ROOT / "examples" / "labels.csv")
    bad = set(labels.filter(pl.col("label") == "malicious")["ip"].to_list())
    actor = dict(zip(labels["ip"].to_list(), labels["actor"].to_list(), strict=True))
    top5 = {actor[o["ip"]] for o in example_json[:5]}
    # The scanner, the brute-forcer and the worm of the example stand out clearly...
    assert {"netsparker", "joomla-bruteforce", "iis-worm"} <= top5
    # ...and the malicious clients as a whole rank well above the benign ones.
    y = [o["ip"] in bad for o in example_json]
    assert roc_auc_score(y, [o["score"] for o in example_json]) > 0.85
    blocked = {o["ip"] for o in example_json if o["verdict"] == "block"}
    assert blocked and blocked <= bad


def test_table_output_and_summary() -> None:
    proc = run("detect", str(EXAMPLE), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "flagged client" in proc.stdout
    assert "lines read" in proc.stderr and "lines/s" in proc.stderr
    # The time is the whole command's (scoring and output included), with the reading beside it:
    # a summary quoting the reading alone overstated the rate by a third on 10M lines.
    found = re.search(r"; ([\d.]+) s \(([\d,]+) lines/s; reading ([\d.]+) s\)", proc.stderr)
    assert found, proc.stderr
    total, rate, reading = float(found[1]), int(found[2].replace(",", "")), float(found[3])
    assert 0 < reading < total  # scoring and writing take time too
    lines = int(re.search(r"([\d,]+) lines read", proc.stderr)[1].replace(",", ""))
    assert rate == pytest.approx(lines / total, rel=0.01)  # the total is printed rounded


def test_csv_output(example_json: list[dict]) -> None:
    proc = run("detect", str(EXAMPLE), "--csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["ip"] for r in rows] == [o["ip"] for o in example_json]


def test_stdin_reads_the_same_as_the_file(example_json: list[dict]) -> None:
    proc = run("detect", "-", "--json", stdin=EXAMPLE.read_bytes())
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(x)["ip"] for x in proc.stdout.splitlines()] == [o["ip"] for o in example_json]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["detect", "/no/such/file.log"], "no such file"),
        (["detect", "/no/such/*.log"], "no file matches"),
        (["detect", str(EXAMPLE), "--log-format", "nope"], "unknown log format 'nope'"),
        (
            ["detect", str(EXAMPLE), "--alert-threshold", "0.9", "--block-threshold", "0.5"],
            "must be higher",
        ),
        (["detect", str(EXAMPLE), "--allow", "not-a-net"], "not an IP address or CIDR"),
        (["detect", str(EXAMPLE), "--model", "/no/such/model.npz"], "does not exist"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_strict_fails_on_a_bad_line(fixtures: Path) -> None:
    proc = run("detect", str(fixtures / "hostile.log"), "--strict")
    assert proc.returncode == 2
    assert "--strict" in proc.stderr and "Traceback" not in proc.stderr
    lenient = run("detect", str(fixtures / "hostile.log"), "--json")
    assert lenient.returncode == 0, lenient.stderr
    assert "unparsed" in lenient.stderr and "empty line" in lenient.stderr


def test_hostile_text_never_reaches_the_terminal_raw(fixtures: Path) -> None:
    proc = run(
        "detect",
        str(fixtures / "hostile.log"),
        "--alert-threshold",
        "0.0",
        "--block-threshold",
        "0.01",
        "--min-block-requests",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    as_json = run("detect", str(fixtures / "hostile.log"), "--json", "--alert-threshold", "0.0")
    assert as_json.returncode == 0, as_json.stderr
    for stream in (proc.stdout, proc.stderr, as_json.stdout):
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", stream)
    for obj in map(json.loads, as_json.stdout.splitlines()):
        assert obj["reasons"], obj  # every alert says why, even in a tiny population


def test_train_then_detect_with_the_model(tmp_path: Path, labelled_small) -> None:
    log, _labels = labelled_small
    model = tmp_path / "baseline.npz"
    proc = run(
        "train",
        str(ROOT / "tests" / "fixtures" / "combined_sample.log"),
        str(log),
        "--out",
        str(model),
    )
    assert proc.returncode == 0, proc.stderr
    assert model.exists()
    with np.load(model, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
    assert meta["format"] == "mlguard-model" and meta["training_clients"] > 100
    assert meta["features"] and meta["versions"]["scikit-learn"]
    first = run("detect", str(EXAMPLE), "--model", str(model), "--json")
    second = run("detect", str(EXAMPLE), "--model", str(model), "--json")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout  # deterministic for a fixed seed


def test_a_model_from_another_version_is_refused(tmp_path: Path, labelled_small) -> None:
    log, _ = labelled_small
    model = tmp_path / "m.npz"
    assert run("train", str(log), "--out", str(model)).returncode == 0
    with np.load(model, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta["feature_version"] = 999
    arrays["meta"] = np.array(json.dumps(meta))
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    proc = run("detect", str(EXAMPLE), "--model", str(old))
    assert proc.returncode == 2
    assert "retrain" in proc.stderr and "Traceback" not in proc.stderr


def test_a_pickled_model_is_never_unpickled(tmp_path: Path) -> None:
    evil = tmp_path / "evil.npz"
    marker = tmp_path / "pwned"
    payload = np.array([f"__import__('pathlib').Path({str(marker)!r}).touch()"], dtype=object)
    np.savez(evil, meta=payload, train_matrix=payload)
    proc = run("detect", str(EXAMPLE), "--model", str(evil))
    assert proc.returncode == 2
    assert "not an MLGuard model" in proc.stderr
    assert not marker.exists()


def test_explain_one_client(fixtures: Path) -> None:
    proc = run("explain", str(EXAMPLE), "--ip", "116.44.75.12", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "client 116.44.75.12" in out and "verdict" in out
    assert "ratio_404" in out and "typical" in out  # every feature against the population
    assert "cmd.exe" in out  # a sample of its parsed requests
    missing = run("explain", str(EXAMPLE), "--ip", "203.0.113.250")
    assert missing.returncode == 2 and "does not appear" in missing.stderr


def test_explain_shows_a_payload_carried_in_the_referer(
    fixtures: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real Log4Shell probe (CrowdSec hub test) with its payload in the Referer, among real
    # elastic traffic: the person checking it sees the header in the feature's words and in
    # the request sample.
    monkeypatch.setenv("COLUMNS", "300")  # one line per table row
    logs = [str(fixtures / "combined_sample.log"), str(fixtures / "header_injection.log")]
    proc = run("explain", *logs, "--ip", "192.168.1.5", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    sample = next(line for line in lines if "2021-12-12T05:06:43Z" in line and "GET" in line)
    assert "${jndi:${lower:l}" in sample  # the referer column
    # (a long example wraps inside its cell: read the table without its rules and blanks)
    table = re.sub(r"[│\s]+", " ", proc.stdout.split("ratio_injection", 1)[1])
    assert table.split("ratio_no_referer", 1)[0].count("injection markers such as referer: ${jndi:") == 1


LAB_LOG = ROOT / "tests" / "fixtures" / "lab_low_slow" / "access.log.gz"


def test_since_and_until_keep_only_lines_in_the_window() -> None:
    # The lab log runs 06:00-16:00 UTC on 21 Nov 2026; +02:00 is honoured (10:00+02:00 = 08:00Z).
    proc = run(
        "detect",
        str(LAB_LOG),
        "--since",
        "2026-11-21T10:00:00+02:00",
        "--until",
        "2026-11-21T09:00Z",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert rows and all("2026-11-21T08:00:00Z" <= r["first_seen"] < "2026-11-21T09:00:00Z" for r in rows)
    assert all(r["last_seen"] < "2026-11-21T09:00:00Z" for r in rows)
    assert "parsed lines outside --since/--until left out" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "is not a time"),
        (["--since", "2026-11-21T12:00Z", "--until", "2026-11-21T11:00Z"], "--since must be earlier"),
        (["--since", "1h"], "no parsed line falls between --since and --until"),  # the log is from 2026-11-21
    ],
)
def test_bad_or_empty_time_windows_are_one_line_errors(args: list[str], message: str) -> None:
    proc = run("detect", str(LAB_LOG), *args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


_REREAD = """
import contextlib, resource, sys, threading
import mlguard.allocator
faults = []
def read_twice():
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = open("/dev/zero", "rb").read(64 << 20)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        del block
if sys.argv[1] == "reading":
    reading = mlguard.allocator.reusing_large_blocks(64 << 20)
elif sys.argv[1] == "small chunks":
    reading = mlguard.allocator.reusing_large_blocks(16 << 20)
else:
    reading = contextlib.nullcontext()
with reading:
    reader = threading.Thread(target=read_twice)
    reader.start()
    reader.join()
print(faults[1])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_chunk_read_on_a_thread_reuses_the_memory_of_the_one_before() -> None:
    # Two 64 MiB reads on a reading thread: with glibc's defaults each is mmap()ed afresh
    # (16,384 page faults); while MLGuard reads a log the second reuses the first's pages. A
    # user's own MALLOC_* setting wins.
    def faults(*args: str, **env: str) -> int:
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
        proc = subprocess.run(
            [sys.executable, "-c", _REREAD, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**environment, **env},
        )
        assert proc.returncode == 0, proc.stderr
        return int(proc.stdout)

    assert faults("other") > 10_000
    assert faults("small chunks") > 10_000  # glibc keeps blocks <= 32 MiB by itself: untouched
    assert faults("reading") < 1_000
    assert faults("reading", MALLOC_ARENA_MAX="4") > 10_000


def test_only_an_input_of_many_chunks_keeps_freed_chunks_for_reuse(monkeypatch: pytest.MonkeyPatch) -> None:
    # Over a few chunks, keeping freed ones only raises the peak: reuse is asked for when the
    # files hold at least REUSE_MIN_CHUNKS chunks (stdin's size is unknown: never).
    import contextlib

    import mlguard.pipeline as pipeline

    asked: list[int] = []

    def recording(block_bytes: int) -> contextlib.AbstractContextManager[None]:
        asked.append(block_bytes)
        return contextlib.nullcontext()

    monkeypatch.setattr(pipeline, "reusing_large_blocks", recording)
    log = ROOT / "tests" / "fixtures" / "combined_sample.log"
    size = log.stat().st_size
    many = size // pipeline.REUSE_MIN_CHUNKS
    pipeline.read_logs([str(log)], chunk_bytes=many)
    pipeline.read_logs([str(log)], chunk_bytes=many + 1024)
    with open(log, "rb") as piped:
        pipeline.read_logs(["-"], chunk_bytes=many, stdin=piped)
    assert asked == [many, 0, 0]


def test_the_allocator_setting_is_one_polars_accepts_and_a_users_own_wins() -> None:
    # mlguard sets jemalloc's muzzy decay for Polars before Polars loads (Polars appends it to
    # its own defaults; the last pair wins). jemalloc prints "Invalid conf pair" on stderr for a
    # setting it does not know, so stderr must stay empty.
    code = (
        "import os, mlguard, polars as pl; pl.DataFrame({'a': list(range(1000))}).sum(); "
        "print(os.environ['_RJEM_MALLOC_CONF'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.strip().endswith(",muzzy_decay_ms:10000")
    env["_RJEM_MALLOC_CONF"] = "dirty_decay_ms:1000"
    mine = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert mine.stdout.strip().endswith(",dirty_decay_ms:1000") and mine.stderr == "", mine.stderr
    assert "10000" not in mine.stdout
