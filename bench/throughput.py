"""Throughput / peak-memory benchmark of ``mlguard detect`` on big Apache combined logs.

For each size (default 1M and 10M lines) a deterministic log is generated once with
``bench/make_big_log.py`` and cached under ``bench/.cache/``.  Then, in the same run and with a
warm page cache, each of the following is run ``--repeat`` times, round-robin, every run in its
own fresh subprocess:

* ``Polars read (eager)``     -- ``pl.read_csv(path, separator='\\x01', quote_char=None,
  has_header=False, schema={'line': pl.String}).height``: the floor, reading the file as lines;
* ``Polars read (streaming)`` -- the same options with ``pl.scan_csv(...).select(pl.len())
  .collect(engine='streaming')``;
* ``Python loop (re.match)``  -- ``for line in f: regex.match(line)`` with a combined-log regex
  (text mode, ``errors='replace'``): the naive baseline;
* ``mlguard detect --json``   -- ``python -m mlguard detect PATH --json > /dev/null``;
* ``mlguard detect (table)``  -- ``python -m mlguard detect PATH > /dev/null``.
  Both are skipped with a message when ``python -m mlguard --help`` fails.

Measurement: every run goes through a fresh *wrapper* process (``throughput.py _measure``)
that starts the command, times it (wall clock, from spawn to exit, interpreter start-up and
imports included) and reads ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` -- the kernel's peak RSS of
that single child, so no run can contaminate another's number.  The wrapper also polls the
child's process tree with psutil every 20 ms as a cross-check (``poll_peak_rss_mib`` in the JSON).

Outputs: a Markdown table on stdout and in ``bench/results/throughput.md`` (with machine info
and the command that reproduces it) and the raw numbers in ``bench/results/throughput.json``.

    python -m bench throughput --sizes 1000000,10000000 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CACHE_DIR = BENCH_DIR / ".cache"
RESULTS_DIR = BENCH_DIR / "results"
POLL_INTERVAL = 0.020  # s

# The combined log format: host ident authuser [time] "request" status bytes "referer" "ua"
# (quoted fields may contain Apache-escaped characters such as \" ).
COMBINED_RE = (
    r'^(\S+) (\S+) (\S+) \[([^\]]+)\] "((?:[^"\\]|\\.)*)" (\d{3}) (\S+) '
    r'"((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"'
)

POLARS_OPTS = "separator='\\x01', quote_char=None, has_header=False, schema={'line': pl.String}"

CODE_POLARS_EAGER = f"""
import sys, polars as pl
df = pl.read_csv(sys.argv[1], {POLARS_OPTS})
print(df.height)
"""

CODE_POLARS_STREAMING = f"""
import sys, polars as pl
out = pl.scan_csv(sys.argv[1], {POLARS_OPTS}).select(pl.len()).collect(engine='streaming')
print(out.item())
"""

# Same read, but the query needs the strings (so Polars cannot answer it with its FAST COUNT
# plan, which it uses for `select(pl.len())` and which only counts newlines).
CODE_POLARS_STREAMING_MAT = f"""
import sys, polars as pl
q = pl.scan_csv(sys.argv[1], {POLARS_OPTS})
out = q.select(pl.len(), pl.col('line').str.len_bytes().sum()).collect(engine='streaming')
print(*out.row(0))
"""

CODE_STARTUP = "import polars"

CODE_PY_LOOP = f"""
import re, sys
regex = re.compile({COMBINED_RE!r})
n = matched = 0
with open(sys.argv[1], encoding='utf-8', errors='replace') as f:
    for line in f:
        n += 1
        if regex.match(line):
            matched += 1
print(n, matched)
"""

FLOOR_TOOLS = (
    "Polars read (eager)",
    "Polars read (streaming)",
    "Polars read (streaming, len_bytes)",
)
FLOOR = FLOOR_TOOLS[0]  # the reference for "slowdown vs Polars floor"
STARTUP_TOOL = "Start-up only (import polars)"
PY_TOOL = "Python loop (re.match)"
ML_JSON = "mlguard detect --json"
ML_TABLE = "mlguard detect (table)"
ML_CUSTOM = "mlguard detect --json, nginx: format string"
# The combined format given as a user's own nginx log_format: the format compiler's cost
# against the built-in parser (issue #4 asks for >= 70% of the built-in throughput).
NGINX_COMBINED = (
    'nginx:$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent"'
)


# --------------------------------------------------------------------------------------------
# wrapper: one fresh process per measured run
# --------------------------------------------------------------------------------------------
def _measure_main(argv: list[str]) -> int:
    """``throughput.py _measure [--capture] -- CMD...``: run CMD, print one JSON line."""
    import resource
    import threading

    capture = False
    if argv and argv[0] == "--capture":
        capture = True
        argv = argv[1:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    cmd = argv
    peak = [0]
    stop = threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE if capture else subprocess.DEVNULL, stderr=subprocess.PIPE
    )

    def poll() -> None:
        try:
            import psutil
        except ImportError:
            return
        try:
            ps = psutil.Process(proc.pid)
        except psutil.Error:
            return
        while not stop.is_set():
            try:
                rss = ps.memory_info().rss
                for ch in ps.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        rss += ch.memory_info().rss
                peak[0] = max(peak[0], rss)
            except psutil.Error:
                return
            stop.wait(POLL_INTERVAL)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = {
        "rc": proc.returncode,
        "wall_s": wall,
        "maxrss_mib": ru.ru_maxrss / 1024.0,  # Linux: KiB
        "poll_peak_rss_mib": peak[0] / 2**20 if peak[0] else None,
        "cpu_user_s": ru.ru_utime,
        "cpu_sys_s": ru.ru_stime,
        "stdout": (out or b"").decode("utf-8", "replace")[-2000:] if capture else None,
        "stderr_tail": (err or b"").decode("utf-8", "replace")[-3000:],
    }
    sys.stdout.write(json.dumps(res) + "\n")
    return 0


def run_measured(cmd: list[str], *, capture: bool, env: dict[str, str], timeout: float) -> dict:
    wrapper = [sys.executable, str(Path(__file__).resolve()), "_measure"]
    if capture:
        wrapper.append("--capture")
    p = subprocess.run(
        [*wrapper, "--", *cmd],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(REPO_ROOT),
        timeout=timeout,
    )
    if p.returncode != 0 or not p.stdout.strip():
        raise RuntimeError(f"measurement wrapper failed (rc={p.returncode}): {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def cache_path(lines: int, seed: int) -> Path:
    return CACHE_DIR / f"combined-{lines}-s{seed}.log"


def ensure_log(lines: int, seed: int, *, skip_generate: bool, force: bool) -> tuple[Path, dict]:
    from bench import make_big_log

    path = cache_path(lines, seed)
    meta_path = Path(str(path) + ".meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    ok = (
        path.exists()
        and meta is not None
        and meta.get("lines") == lines
        and meta.get("seed") == seed
        and meta.get("bytes") == path.stat().st_size
        and meta.get("generator_version") == make_big_log.GENERATOR_VERSION
    )
    if path.exists() and skip_generate and not force:
        print(f"[bench] reusing {path} (--skip-generate)", file=sys.stderr)
    elif ok and not force:
        print(f"[bench] reusing cached {path}", file=sys.stderr)
    else:
        print(f"[bench] generating {lines:,} lines -> {path}", file=sys.stderr)
        meta = make_big_log.generate(lines, path, seed=seed)
    if meta is None:
        with open(path, "rb") as fh:
            n = sum(1 for _ in fh)
        meta = {"lines": n, "bytes": path.stat().st_size}
    return path, meta


def warm_cache(path: Path) -> float:
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        while fh.read(16 << 20):
            pass
    return time.perf_counter() - t0


def mlguard_env(base: dict[str, str]) -> tuple[dict[str, str] | None, str]:
    """Return (env, note) under which ``python -m mlguard --help`` works, or (None, reason)."""
    cmd = [sys.executable, "-m", "mlguard", "--help"]
    tries = [("installed", dict(base))]
    src = REPO_ROOT / "src"
    if (src / "mlguard").is_dir():
        env = dict(base)
        env["PYTHONPATH"] = str(src) + (os.pathsep + base["PYTHONPATH"] if base.get("PYTHONPATH") else "")
        tries.append((f"PYTHONPATH={src}", env))
    last = ""
    for note, env in tries:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=str(REPO_ROOT))
        except (OSError, subprocess.TimeoutExpired) as e:
            last = str(e)
            continue
        if p.returncode == 0:
            return env, note
        last = (p.stderr or p.stdout).strip().splitlines()[-1:] or [f"rc={p.returncode}"]
        last = last[0]
    return None, last


def machine_info() -> dict:
    info: dict = {}
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                info["cpu_model"] = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["logical_cpus"] = os.cpu_count()
    with contextlib.suppress(AttributeError):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    try:
        for ln in Path("/proc/meminfo").read_text().splitlines():
            if ln.startswith("MemTotal:"):
                info["ram_gib"] = round(int(ln.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    info["os"] = f"{platform.system()} {platform.release()}"
    info["python"] = platform.python_version()
    info["python_executable"] = sys.executable
    for mod in ("polars", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            info[mod] = None
    info["date_utc"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    try:
        info["git_commit"] = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
            ).stdout.strip()
            or None
        )
    except OSError:
        info["git_commit"] = None
    return info


def _fmt_rate(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    return f"{x / 1e3:.0f} k"


def summarize(runs: list[dict], lines: int) -> dict:
    ok = [r for r in runs if r["rc"] == 0]
    if not ok:
        return {"ok": False, "n": 0}
    walls = [r["wall_s"] for r in ok]
    med = statistics.median(walls)
    return {
        "ok": True,
        "n": len(ok),
        "wall_s_median": med,
        "wall_s_min": min(walls),
        "wall_s_max": max(walls),
        "lines_per_s": lines / med if med > 0 else None,
        "peak_rss_mib_median": statistics.median(r["maxrss_mib"] for r in ok),
        "peak_rss_mib_max": max(r["maxrss_mib"] for r in ok),
        "cpu_s_median": statistics.median(r["cpu_user_s"] + r["cpu_sys_s"] for r in ok),
    }


def render_markdown(result: dict) -> str:
    m = result["machine"]
    out = ["# MLGuard throughput benchmark", ""]
    out.append(f"Reproduce: `{result['command']}`")
    out.append("")
    out.append(f"- Date: {m.get('date_utc')}; git commit: {m.get('git_commit') or 'none'}")
    out.append(
        f"- CPU: {m.get('cpu_model')} — {m.get('logical_cpus')} logical CPUs "
        f"({m.get('usable_cpus')} usable); RAM {m.get('ram_gib')} GiB; {m.get('os')}"
    )
    out.append(f"- Python {m.get('python')}, Polars {m.get('polars')}, NumPy {m.get('numpy')}")
    out.append(f"- mlguard: {result['mlguard']}")
    out.append(
        f"- Repeats: {result['repeat']} per tool and size, round-robin, each run a fresh "
        "process (interpreter start-up and imports included in the wall time); page cache "
        "warm (file read once before the runs). Values are medians; peak RSS is the "
        "kernel's `ru_maxrss` of the run's process."
    )
    out.append("")
    out.append(
        "| Lines | File | Tool | Wall s (median) | min–max | Lines/s | Peak RSS MiB | CPU s "
        "| Speed-up vs Python loop | Slowdown vs Polars floor |"
    )
    out.append("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for sz in result["sizes"]:
        s = sz["summary"]
        py = s.get(PY_TOOL, {})
        floor = s[FLOOR]["wall_s_median"] if s.get(FLOOR, {}).get("ok") else None
        for tool, st in s.items():
            if not st.get("ok"):
                reason = sz.get("skipped", {}).get(tool, "failed")
                out.append(
                    f"| {sz['lines']:,} | {sz['bytes'] / 2**20:,.0f} MiB | {tool} | "
                    f"— | — | — | — | — | — | {reason} |"
                )
                continue
            w = st["wall_s_median"]
            spd = f"{py['wall_s_median'] / w:.2f}×" if py.get("ok") else "—"
            slow = f"{w / floor:.2f}×" if floor else "—"
            if tool == STARTUP_TOOL:
                out.append(
                    f"| {sz['lines']:,} | {sz['bytes'] / 2**20:,.0f} MiB | {tool} | {w:.2f} | "
                    f"{st['wall_s_min']:.2f}–{st['wall_s_max']:.2f} | — | "
                    f"{st['peak_rss_mib_median']:,.0f} | {st['cpu_s_median']:.1f} | — | — |"
                )
                continue
            out.append(
                f"| {sz['lines']:,} | {sz['bytes'] / 2**20:,.0f} MiB | {tool} | {w:.2f} | "
                f"{st['wall_s_min']:.2f}–{st['wall_s_max']:.2f} | {_fmt_rate(st['lines_per_s'])} | "
                f"{st['peak_rss_mib_median']:,.0f} | {st['cpu_s_median']:.1f} | {spd} | {slow} |"
            )
    out.append("")
    out.append(
        "Speed-up vs Python loop = Python-loop wall / tool wall (higher is better). "
        f"Slowdown vs Polars floor = tool wall / wall of `{FLOOR}` (1.00× = as fast as just "
        "reading every line into a Polars String column). "
        "`Polars read (streaming)` is the requested `scan_csv(...).select(pl.len())` query: "
        "Polars plans it as FAST COUNT (it only counts newlines, no strings are built), so "
        "it is a lower bound on I/O, not a parse floor; `Polars read (streaming, len_bytes)` "
        "runs the same scan but sums `str.len_bytes()` so every line is materialized in "
        "streaming batches. `Start-up only` is `python -c 'import polars'`: the fixed cost "
        "included in every Polars/mlguard wall time above. "
        "Peak RSS counts file-backed pages too: Polars memory-maps the input, so pages of the "
        "log it touches are in its RSS (FAST COUNT at 10M lines shows about the file size "
        "although it builds no strings); that memory is page cache, reclaimable, not heap."
    )
    for sz in result["sizes"]:
        built_in, custom = sz["summary"].get(ML_JSON, {}), sz["summary"].get(ML_CUSTOM, {})
        if built_in.get("ok") and custom.get("ok"):
            out.append("")
            out.append(
                f"Format compiler, {sz['lines']:,} lines: `{ML_CUSTOM}` (the combined format given as "
                f"`{NGINX_COMBINED}`) runs at "
                f"{built_in['wall_s_median'] / custom['wall_s_median']:.0%} of the built-in "
                "`combined` parser's throughput (target >= 70%)."
            )
    for sz in result["sizes"]:
        g = sz.get("generator") or {}
        out.append("")
        out.append(
            f"Input {sz['lines']:,} lines: `{sz['path_rel']}`, {sz['bytes']:,} bytes, "
            f"{g.get('clients', '?'):,} clients ({g.get('scanner_clients', '?')} scanners, "
            f"{g.get('scanner_lines', '?'):,} scanner lines), {g.get('escaped_quote_lines', '?')} "
            f"lines with an escaped quote, {g.get('truncated_lines', '?')} truncated, "
            f"{g.get('garbage_lines', '?')} garbage; seed {g.get('seed', '?')}. "
            f"Generated by `python bench/make_big_log.py --lines {sz['lines']} --seed "
            f"{g.get('seed', '?')} --out {sz['path_rel']}`."
        )
        checks = sz.get("checks")
        if checks:
            out.append(f"Sanity: {checks}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_measure":
        return _measure_main(argv[1:])
    if argv and argv[0] == "--render-from":  # re-render the Markdown from a saved JSON
        if len(argv) != 2:
            print("usage: python -m bench throughput --render-from RESULTS.json", file=sys.stderr)
            return 2
        src = Path(argv[1])
        md = render_markdown(json.loads(src.read_text()))
        (src.parent / "throughput.md").write_text(md)
        print(md)
        return 0
    ap = argparse.ArgumentParser(
        prog="python -m bench throughput",
        description="Throughput / peak RSS of mlguard detect vs Polars "
        "and a plain Python loop on big Apache combined logs.",
    )
    ap.add_argument(
        "--sizes",
        default="1000000,10000000",
        help="comma-separated line counts (default: %(default)s)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool and size (median reported)")
    ap.add_argument("--seed", type=int, default=42, help="generator seed")
    ap.add_argument(
        "--skip-generate",
        action="store_true",
        help="reuse a cached log file when it exists, without checking its metadata",
    )
    ap.add_argument("--force-generate", action="store_true", help="regenerate the cached logs")
    ap.add_argument(
        "--tools",
        default="floor,python,mlguard",
        help="subset of floor,python,mlguard (default: all)",
    )
    ap.add_argument("--timeout", type=float, default=3600.0, help="per-run timeout in seconds")
    ap.add_argument("--out-dir", default=str(RESULTS_DIR), help="where to write the results")
    a = ap.parse_args(argv)
    sizes = [int(x.replace("_", "")) for x in a.sizes.split(",") if x.strip()]
    tools_sel = {t.strip() for t in a.tools.split(",") if t.strip()}
    unknown = tools_sel - {"floor", "python", "mlguard"}
    if unknown:
        ap.error(f"unknown --tools: {', '.join(sorted(unknown))}")

    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    ml_env, ml_note = (None, "not requested (--tools)")
    if "mlguard" in tools_sel:
        ml_env, ml_note = mlguard_env(env)
        if ml_env is None:
            print(
                f"[bench] SKIPPING mlguard: `{sys.executable} -m mlguard --help` failed: {ml_note}",
                file=sys.stderr,
            )
            ml_note = f"skipped — `python -m mlguard --help` failed ({ml_note})"
        else:
            ml_note = f"available ({ml_note})"

    cmd_parts = [
        "python",
        "-m",
        "bench",
        "throughput",
        "--sizes",
        ",".join(map(str, sizes)),
        "--repeat",
        str(a.repeat),
        "--seed",
        str(a.seed),
    ]
    if tools_sel != {"floor", "python", "mlguard"}:
        cmd_parts += ["--tools", ",".join(sorted(tools_sel))]
    result: dict = {
        "command": shlex.join(cmd_parts),
        "argv": [sys.executable, *sys.argv],
        "machine": machine_info(),
        "mlguard": ml_note,
        "repeat": a.repeat,
        "sizes": [],
    }

    for lines in sizes:
        path, meta = ensure_log(lines, a.seed, skip_generate=a.skip_generate, force=a.force_generate)
        tools: list[tuple[str, list[str], bool, dict[str, str]]] = []
        if "floor" in tools_sel:
            tools.append((FLOOR_TOOLS[0], [sys.executable, "-c", CODE_POLARS_EAGER, str(path)], True, env))
            tools.append(
                (
                    FLOOR_TOOLS[1],
                    [sys.executable, "-c", CODE_POLARS_STREAMING, str(path)],
                    True,
                    env,
                )
            )
            tools.append(
                (
                    FLOOR_TOOLS[2],
                    [sys.executable, "-c", CODE_POLARS_STREAMING_MAT, str(path)],
                    True,
                    env,
                )
            )
            tools.append((STARTUP_TOOL, [sys.executable, "-c", CODE_STARTUP], True, env))
        if "python" in tools_sel:
            tools.append((PY_TOOL, [sys.executable, "-c", CODE_PY_LOOP, str(path)], True, env))
        skipped: dict[str, str] = {}
        if "mlguard" in tools_sel:
            if ml_env is not None:
                base = [sys.executable, "-m", "mlguard", "detect", str(path)]
                tools.append((ML_JSON, [*base, "--json"], False, ml_env))
                tools.append((ML_TABLE, base, False, ml_env))
                tools.append((ML_CUSTOM, [*base, "--json", "--log-format", NGINX_COMBINED], False, ml_env))
            else:
                skipped = {
                    ML_JSON: "skipped: mlguard unavailable",
                    ML_TABLE: "skipped: mlguard unavailable",
                    ML_CUSTOM: "skipped: mlguard unavailable",
                }
        warm = warm_cache(path)
        print(f"[bench] {lines:,} lines: page cache warmed in {warm:.1f} s", file=sys.stderr)
        runs: dict[str, list[dict]] = {name: [] for name, *_ in tools}
        for rep in range(a.repeat):
            for name, cmd, capture, tenv in tools:
                r = run_measured(cmd, capture=capture, env=tenv, timeout=a.timeout)
                r["repeat"] = rep
                runs[name].append(r)
                status = "ok" if r["rc"] == 0 else f"FAILED rc={r['rc']}: {r['stderr_tail'][-300:]}"
                print(
                    f"[bench] {lines:>11,} {name:<36} run {rep + 1}/{a.repeat}: "
                    f"{r['wall_s']:7.2f} s  {r['maxrss_mib']:8.0f} MiB  {status}",
                    file=sys.stderr,
                )
        summary = {name: summarize(rs, lines) for name, rs in runs.items()}
        for name in skipped:
            summary[name] = {"ok": False, "n": 0}
        # sanity: the floors and the python loop must all see every line
        checks = []
        for name in (*FLOOR_TOOLS, PY_TOOL):
            for r in runs.get(name, []):
                if r["rc"] == 0 and r.get("stdout"):
                    first = r["stdout"].split()
                    if first and int(first[0]) != lines:
                        checks.append(f"{name} counted {first[0]} lines, expected {lines}")
        py_out = [r["stdout"].split() for r in runs.get(PY_TOOL, []) if r["rc"] == 0 and r.get("stdout")]
        check_txt = "; ".join(sorted(set(checks))) if checks else "all line counts match."
        if py_out and len(py_out[0]) == 2:
            check_txt += (
                f" Python regex matched {int(py_out[0][1]):,} of {int(py_out[0][0]):,} "
                f"lines ({int(py_out[0][0]) - int(py_out[0][1]):,} unparsed)."
            )
        for rs in runs.values():
            for r in rs:
                r.pop("stdout", None) if r["rc"] == 0 else None
        try:
            rel = str(path.relative_to(REPO_ROOT))
        except ValueError:
            rel = str(path)
        result["sizes"].append(
            {
                "lines": lines,
                "bytes": path.stat().st_size,
                "path_rel": rel,
                "generator": meta,
                "warm_cache_s": warm,
                "summary": summary,
                "skipped": skipped,
                "runs": runs,
                "checks": check_txt,
            }
        )

    md = render_markdown(result)
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "throughput.md").write_text(md)
    (out_dir / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print(md)
    print(
        f"[bench] wrote {out_dir / 'throughput.md'} and {out_dir / 'throughput.json'}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())
