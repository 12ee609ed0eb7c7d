"""Polars and Spark on the same big log: ``python -m bench spark``.

Both engines compute the per-client feature table of one generated log (``bench/make_big_log.py``,
10M lines by default) and write it as Parquet, what ``mlguard features --engine polars|spark LOG
--out DIR`` does. Each run is a fresh process started by the throughput harness's wrapper, so
its wall time includes interpreter start-up and, for Spark, starting the JVM (``local[2]`` on
this machine, one executor thread per core). Peak RSS is that of the whole process tree
(Python driver, JVM, Python workers), polled every 20 ms. After the runs the two tables are
compared (every column, floats to 1e-9 relative): the parity check at 10M lines.

    python -m bench spark --lines 10000000 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from bench.throughput import CACHE_DIR, RESULTS_DIR, ensure_log, machine_info, run_measured, warm_cache

OUT_DIR = CACHE_DIR / "spark-bench"
ENGINES = ("polars", "spark")


def _child(argv: list[str]) -> int:
    """``bench.spark _child ENGINE LOG OUT MASTER``: one engine's run, phase times as JSON."""
    engine, log, out, master = argv
    started = time.perf_counter()
    phases: dict[str, float] = {}
    if engine == "spark":
        from mlguard.spark import get_session, read_logs_spark, write_parquet_spark

        spark = get_session(master)
        spark.sparkContext.setLogLevel("ERROR")
        phases["session_s"] = time.perf_counter() - started
        mark = time.perf_counter()
        result = read_logs_spark(spark, [log])
    else:
        from mlguard.pipeline import read_logs

        mark = time.perf_counter()
        result = read_logs([log])
    phases["read_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    table = result.accumulator.finish()
    phases["finish_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    from mlguard.spark.output import parquet_frame, write_parquet_polars

    frame = parquet_frame(table)
    if engine == "spark":
        write_parquet_spark(spark, frame, out, overwrite=True)
    else:
        write_parquet_polars(frame, out, overwrite=True)
    phases["write_s"] = time.perf_counter() - mark
    print(
        json.dumps(
            {
                **phases,
                "lines": result.stats.lines,
                "unparsed": result.stats.unparsed,
                "clients": frame.height,
            }
        )
    )
    return 0


def _same_tables(a: Path, b: Path) -> tuple[bool, str]:
    import polars as pl
    from polars.testing import assert_frame_equal

    left = pl.read_parquet(f"{a}/*.parquet").sort("client")
    right = pl.read_parquet(f"{b}/*.parquet").sort("client")
    try:
        assert_frame_equal(left, right, check_exact=False, rel_tol=1e-9, abs_tol=0.0)
    except AssertionError as exc:
        return False, str(exc).splitlines()[0]
    return True, f"{left.height:,} clients x {left.width} columns equal"


def render(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"Reproduce: `{result['command']}`",
        "",
        f"- Date: {m['date_utc']}; git commit: {m.get('git_commit')}",
        f"- CPU: {m.get('cpu_model')} — {m.get('logical_cpus')} logical CPUs; RAM {m.get('ram_gib')} GiB; "
        f"{m['os']}",
        f"- Python {m['python']}, Polars {m['polars']}, PySpark {result['pyspark']}, Java {result['java']}",
        f"- Spark master: `{result['master']}`; input split {result['split_mib']} MiB (Spark's default); "
        f"runs per engine: {result['repeat']} (medians)",
        f"- Load average (1 / 5 / 15 min) when the runs started: {result['load_average']}; when they ended: "
        f"{result.get('load_average_end', '?')} (the machine is shared: other work ran beside the runs)",
        "",
        "| Engine | Wall s | Spark session s | Read + merge s | Features s | Parquet s | Lines/s "
        "| Peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for engine in ENGINES:
        r = result["engines"][engine]
        session = f"{r['session_s']:.1f}" if r.get("session_s") is not None else "—"
        lines.append(
            f"| {engine} | {r['wall_s']:.1f} | {session} | {r['read_s']:.1f} | {r['finish_s']:.1f} | "
            f"{r['write_s']:.1f} | {result['lines'] / r['wall_s']:,.0f} | {r['peak_rss_mib']:,.0f} |"
        )
    lines += [
        "",
        f"Input: `{result['input']}`, {result['lines']:,} lines, {result['bytes']:,} bytes; "
        f"{result['clients']:,} clients. Same table from both engines: **{result['parity']}** "
        f"({result['parity_detail']}).",
    ]
    return "\n".join(lines) + "\n"


def _java_version() -> str:
    import subprocess

    try:
        proc = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return "not found"
    first = (proc.stderr or proc.stdout).splitlines()
    return first[0].split('"')[1] if first and '"' in first[0] else "?"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_child":
        return _child(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m bench spark", description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=10_000_000, help="lines of the generated log")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeat", type=int, default=1, help="runs per engine (median reported)")
    ap.add_argument("--master", default="local[2]", help="Spark master (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=3600.0)
    a = ap.parse_args(argv)
    import pyspark

    log, meta = ensure_log(a.lines, a.seed, skip_generate=False, force=False)
    warm_cache(log)
    env = dict(os.environ)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    load = os.getloadavg()
    runs: dict[str, list[dict]] = {engine: [] for engine in ENGINES}
    for _ in range(a.repeat):
        for engine in ENGINES:
            out = OUT_DIR / engine
            cmd = [sys.executable, "-m", "bench.spark", "_child", engine, str(log), str(out), a.master]
            run = run_measured(cmd, capture=True, env=env, timeout=a.timeout)
            if run["rc"] != 0:
                print(run["stderr_tail"], file=sys.stderr)
                return 1
            phases = json.loads(run["stdout"].strip().splitlines()[-1])
            runs[engine].append({**run, **phases})
            print(f"[bench spark] {engine}: {run['wall_s']:.1f} s", file=sys.stderr, flush=True)
    parity, detail = _same_tables(OUT_DIR / "polars", OUT_DIR / "spark")

    def median(engine: str, key: str) -> float | None:
        values = [r[key] for r in runs[engine] if r.get(key) is not None]
        return statistics.median(values) if values else None

    result = {
        "command": f"python -m bench spark --lines {a.lines} --repeat {a.repeat}",
        "machine": machine_info(),
        "pyspark": pyspark.__version__,
        "java": _java_version(),
        "master": a.master,
        "split_mib": 128,
        "repeat": a.repeat,
        "load_average": " / ".join(f"{x:.1f}" for x in load),
        "load_average_end": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
        "input": str(log.relative_to(Path.cwd())) if log.is_relative_to(Path.cwd()) else str(log),
        "lines": meta["lines"],
        "bytes": log.stat().st_size,
        "clients": runs["polars"][0]["clients"],
        "parity": "yes" if parity else "NO",
        "parity_detail": detail,
        "engines": {
            engine: {
                "wall_s": median(engine, "wall_s"),
                "session_s": median(engine, "session_s"),
                "read_s": median(engine, "read_s"),
                "finish_s": median(engine, "finish_s"),
                "write_s": median(engine, "write_s"),
                "peak_rss_mib": median(engine, "poll_peak_rss_mib") or median(engine, "maxrss_mib"),
                "runs": [
                    {k: v for k, v in r.items() if k not in ("stdout", "stderr_tail")} for r in runs[engine]
                ],
            }
            for engine in ENGINES
        },
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "spark.json").write_text(json.dumps(result, indent=2))
    markdown = render(result)
    (RESULTS_DIR / "spark.md").write_text(markdown)
    print(markdown)
    return 0 if parity else 1


if __name__ == "__main__":
    sys.exit(main())
