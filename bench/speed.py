"""What each system costs on the same big log: `python -m bench speed`.

Wall time, lines/s and peak RSS of MLGuard (`mlguard detect --json`), fail2ban (every stock
filter of bench/peers, one `fail2ban-regex` run each) and CrowdSec (replay with the nginx
parsers and HTTP scenarios) on the 1M-line combined log of `python -m bench throughput`, all in
one run. CrowdSec replays ~190 lines/s here (a 1M-line replay would take 1.5 h), so it gets the
first `--crowdsec-lines` lines of the same file and its rate is reported from those; the
table says so. Writes bench/results/speed.{md,json}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results"


def head(path: Path, lines: int, out: Path) -> Path:
    """The first `lines` lines of `path` (cached)."""
    if not out.exists():
        with open(path, "rb") as src, open(out, "wb") as dst:
            dst.writelines(itertools.islice(src, lines))
    return out


def mlguard_run(log: Path, lines: int, repeat: int) -> dict[str, Any]:
    from bench.throughput import mlguard_env, run_measured, summarize

    env, note = mlguard_env(dict(os.environ))
    if env is None:
        raise SystemExit(f"mlguard does not start: {note}")
    cmd = [sys.executable, "-m", "mlguard", "detect", str(log), "--json", "--no-progress"]
    runs = [run_measured(cmd, capture=False, env=env, timeout=3600) for _ in range(repeat)]
    s = summarize(runs, lines)
    return {
        "system": "MLGuard",
        "lines": lines,
        "seconds": s["wall_s_median"],
        "lines_per_s": s["lines_per_s"],
        "peak_rss_mib": s["peak_rss_mib_max"],
        "note": f"`mlguard detect --json`, median of {repeat}",
    }


def peer(system: str, log: Path) -> dict[str, Any]:
    from bench import peers

    work = CACHE / "peers" / "work" / f"speed-{system}"
    work.mkdir(parents=True, exist_ok=True)
    run = peers.run_crowdsec(log, work) if system == "crowdsec" else peers.run_fail2ban(log, work)
    return {
        "system": "CrowdSec" if system == "crowdsec" else "fail2ban",
        "version": peers.available().get(system),
        "lines": run.lines,
        "seconds": run.seconds,
        "lines_per_s": run.lines / run.seconds if run.seconds else None,
        "peak_rss_mib": run.peak_rss_mib,
        "flagged": len(run.flagged),
        "note": run.details.get("timing_note", ""),
    }


def render(rows: list[dict[str, Any]], command: str, machine: dict[str, Any]) -> str:
    base = next(r for r in rows if r["system"] == "MLGuard")["lines_per_s"]
    out = [
        f"Reproduce: `{command}`",
        "",
        f"Machine: {machine.get('cpu_model')}, {machine.get('logical_cpus')} logical CPUs, "
        f"{machine.get('ram_gib')} GiB, {machine.get('os')}, Python {machine.get('python')}; "
        f"{machine.get('date_utc')}.",
        "",
        "| system | lines timed | wall s | lines/s | peak RSS MiB | MLGuard is faster by |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rate = r["lines_per_s"] or 0.0
        ratio = "—" if r["system"] == "MLGuard" or not rate else f"{base / rate:,.0f}×"
        out.append(
            f"| {r['system']} | {r['lines']:,} | {r['seconds']:.1f} | {rate:,.0f} | "
            f"{r['peak_rss_mib']:.0f} | {ratio} |"
        )
    out += ["", *[f"- {r['system']}: {r['note']}" for r in rows if r.get("note")]]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench speed", description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--crowdsec-lines", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="MLGuard runs (median)")
    parser.add_argument("--peers", default="fail2ban,crowdsec")
    parser.add_argument("--out-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    from bench.throughput import ensure_log, machine_info, warm_cache

    log, meta = ensure_log(args.lines, args.seed, skip_generate=False, force=False)
    warm_cache(log)
    rows = [mlguard_run(log, meta["lines"], args.repeat)]
    print(f"[speed] MLGuard: {rows[-1]['lines_per_s']:,.0f} lines/s", file=sys.stderr, flush=True)
    for system in [p for p in args.peers.split(",") if p]:
        target = log
        if system == "crowdsec":
            target = head(log, args.crowdsec_lines, CACHE / f"{log.stem}-head{args.crowdsec_lines}.log")
        rows.append(peer(system, target))
        print(f"[speed] {system}: {rows[-1]['lines_per_s']:,.0f} lines/s", file=sys.stderr, flush=True)
    machine = machine_info()
    command = "python -m bench speed" + (" " + " ".join(argv) if argv else "")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    text = render(rows, command, machine)
    (out / "speed.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
