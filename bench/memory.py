"""Does memory grow with the number of lines? ``python -m bench memory``.

The throughput logs grow their client population with their length (10M lines hold 10x the
clients of 1M), so their peak RSS mixes two effects. This benchmark separates them: it runs
``mlguard detect --json`` on the 1M-line log and on the same log repeated N times (N x the
lines, the same 16,666 clients, so the same per-client tables) and reports the peak RSS of
each, plus the size of the per-client state after reading. If memory is bounded by the
per-client tables, the repeated log peaks at about the same RSS as the single one.

    python -m bench memory --times 10 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from bench.throughput import CACHE_DIR, RESULTS_DIR, ensure_log, machine_info, run_measured

STATE_CODE = """
import json, sys
from mlguard.pipeline import read_logs
state = read_logs([sys.argv[1]]).accumulator._state
print(json.dumps({name: [getattr(state, name).height, getattr(state, name).estimated_size("mb")]
                  for name in vars(state)}))
"""


def _repeated(path: Path, times: int) -> Path:
    out = CACHE_DIR / f"{path.stem}-x{times}.log"
    if not out.exists() or out.stat().st_size != path.stat().st_size * times:
        block = path.read_bytes()
        with out.open("wb") as f:
            for _ in range(times):
                f.write(block)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench memory", description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000, help="lines of the base log")
    ap.add_argument("--times", type=int, default=10, help="how many times to repeat it")
    ap.add_argument("--repeat", type=int, default=3, help="runs per input (median reported)")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args(argv)
    base, _ = ensure_log(a.lines, a.seed, skip_generate=False, force=False)
    inputs = [
        (f"{a.lines:,} lines", base),
        (f"{a.lines * a.times:,} lines (same log x{a.times})", _repeated(base, a.times)),
    ]
    rows = []
    for label, path in inputs:
        runs = [
            run_measured(
                [sys.executable, "-m", "mlguard", "detect", str(path), "--json"],
                capture=False,
                env=dict(os.environ),
                timeout=3600,
            )
            for _ in range(a.repeat)
        ]
        state = run_measured(
            [sys.executable, "-c", STATE_CODE, str(path)], capture=True, env=dict(os.environ), timeout=3600
        )
        tables = json.loads(state["stdout"])
        rows.append(
            {
                "input": label,
                "path": str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path),
                "wall_s": statistics.median(r["wall_s"] for r in runs),
                "peak_rss_mib": statistics.median(r["maxrss_mib"] for r in runs),
                "state": tables,
                "state_mib": sum(mb for _, mb in tables.values()),
            }
        )
        print(
            f"[bench] {label}: {rows[-1]['wall_s']:.2f} s, peak {rows[-1]['peak_rss_mib']:.0f} MiB",
            file=sys.stderr,
        )
    result = {
        "command": f"python -m bench memory --lines {a.lines} --times {a.times} --repeat {a.repeat}",
        "machine": machine_info(),
        "rows": rows,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "memory.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Memory against input length",
        "",
        f"Reproduce: `{result['command']}`",
        "",
        "| input | wall s (median) | peak RSS MiB (median) | per-client state MiB "
        "| state rows (clients / windows / targets) |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        t = r["state"]
        lines.append(
            f"| {r['input']} | {r['wall_s']:.2f} | {r['peak_rss_mib']:,.0f} | {r['state_mib']:.1f} | "
            f"{t['clients'][0]:,} / {t['windows'][0]:,} / {t['targets'][0]:,} |"
        )
    md = "\n".join(lines) + "\n"
    (RESULTS_DIR / "memory.md").write_text(md)
    print(md)
    return 0
