"""`mlguard serve` against the target of issue #7: `python -m bench web [--decisions N] [--requests N]`.

The overview page must render in < 300 ms of server time for a store of 100,000 decisions.

A decision store of N decisions (default 100,000) is written once to bench/.cache/web/ (the
store's own schema, made by DecisionStore; rows inserted in bulk): 30 days of a busy site's
verdicts, ~11 an hour per client class: 70% alerts, 25% blocks, 5% allows, scores 0.5-1.0,
three reasons each, some revoked by a person; then the store's own `expire` marks the old ones.
`mlguard serve --state STORE` runs in its own process (uvicorn, as in production; the token
from MLGUARD_TOKEN); this process signs in like a browser and requests each page R times
(default 30) after 3 warm-up requests, one at a time over loopback. The time of a request is
the client's wall time from sending to the last byte read, so it holds the server's time plus
loopback and HTTP parsing: an upper bound of the server time. Baselines in the same run:
`/healthz` (the HTTP floor: uvicorn + FastAPI + loopback), `/api/decisions?limit=100` (the JSON
listing the CLI's `decisions list --json` mirrors), and `SELECT COUNT(*)` on the store directly.
The SQL part of the overview (`StoreView.overview`) is also timed in this process.

Writes bench/results/web.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache" / "web"
RESULTS = ROOT / "bench" / "results"
TARGET_MS = 300.0
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # the store's "now": fixed, so the store is reusable
REASONS = (
    "{n} of {m} requests ({p}%) answered 404 such as /wp-login.php",
    "{n} requests to sensitive paths such as /.env",
    "{n} client errors within 10 minutes",
    "{n} distinct paths answered 4xx such as /admin/config.php",
    'user agent "python-requests/2.31" (a tool)',
    "{n} requests with injection markers such as /index.php?id=1%27%20OR%201=1--",
)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_store(path: Path, count: int, seed: int = 7) -> None:
    """`count` decisions over the 30 days before NOW, in the store's schema."""
    from mlguard.decisions.store import DecisionStore

    rng = random.Random(seed)
    path.unlink(missing_ok=True)
    with DecisionStore(path) as store:
        store.close()
    rows = []
    for i in range(count):
        created = NOW - timedelta(seconds=int((count - i) * 30 * 86400 / count))
        roll = rng.random()
        verdict = "alert" if roll < 0.70 else "block" if roll < 0.95 else "allow"
        client = f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        if verdict == "allow":
            rows.append(
                (client, "allow", None, "[]", None, _iso(created), None, "person", "active", "office")
            )
            continue
        ttl = timedelta(hours=4) if verdict == "block" else timedelta(hours=24)
        n = rng.randint(20, 900)
        reasons = [
            r.format(n=n, m=n + rng.randint(0, 50), p=rng.randint(50, 100)) for r in rng.sample(REASONS, 3)
        ]
        state = "revoked" if rng.random() < 0.02 else "active"
        rows.append(
            (
                client,
                verdict,
                round(rng.uniform(0.5, 1.0), 4),
                json.dumps(reasons),
                None,
                _iso(created),
                _iso(created + ttl),
                "detector",
                state,
                "unblocked: false positive" if state == "revoked" else None,
            )
        )
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO decisions (client, verdict, score, reasons, campaign, created, expires, origin, "
            "state, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    db.close()
    with DecisionStore(path) as store:
        store.expire(NOW)  # the store's own expiry, as `mlguard decisions expire` would


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _timed(client: Any, path: str, requests: int, warmup: int = 3) -> dict[str, float]:
    for _ in range(warmup):
        client.get(path).raise_for_status()
    times = []
    size = 0
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        size = len(response.content)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 2),
        "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2),
        "min_ms": round(times[0], 2),
        "max_ms": round(times[-1], 2),
        "bytes": size,
    }


def _timed_call(fn: Any, requests: int, warmup: int = 3) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 2),
        "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2),
        "min_ms": round(times[0], 2),
        "max_ms": round(times[-1], 2),
    }


def run(decisions: int, requests: int) -> dict[str, Any]:
    import httpx

    from mlguard.web.data import StoreView

    CACHE.mkdir(parents=True, exist_ok=True)
    store = CACHE / f"store-{decisions}.db"
    if not store.exists():
        started = time.perf_counter()
        build_store(store, decisions)
        print(f"built {store} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    db = sqlite3.connect(store)
    counts = dict(db.execute("SELECT state, COUNT(*) FROM decisions GROUP BY state").fetchall())
    total = db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    results: dict[str, Any] = {"decisions": total, "states": counts, "requests": requests}
    results["sqlite_count"] = _timed_call(
        lambda: db.execute("SELECT COUNT(*) FROM decisions").fetchone(), requests
    )
    db.close()
    view = StoreView(store)
    results["overview_sql"] = _timed_call(lambda: view.overview(datetime.now(UTC)), requests)

    token = secrets.token_hex(16)
    port = _free_port()
    script = (
        "import typer; from mlguard.cli_serve import serve_command; "
        "app = typer.Typer(); app.command()(serve_command); app()"
    )
    env = {**os.environ, "MLGUARD_TOKEN": token}
    command = [sys.executable, "-c", script, "--state", str(store), "--port", str(port)]
    server = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("mlguard serve did not start") from None
                time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=30) as browser:
            signed = browser.post("/signin", data={"token": token, "next": "/"})
            assert signed.status_code == 303, signed.status_code
            results["overview_page"] = _timed(browser, "/", requests)
            results["decisions_page"] = _timed(browser, "/decisions", requests)
            results["healthz"] = _timed(browser, "/healthz", requests)
        with httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"}) as api:
            results["api_overview"] = _timed(api, "/api/overview", requests)
            results["api_decisions"] = _timed(api, "/api/decisions?limit=100", requests)
    finally:
        server.terminate()
        server.wait(timeout=20)
    return results


def _machine() -> str:
    import polars

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, Linux {platform.release()}, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, Polars {polars.__version__}"
    )


def report(results: dict[str, Any], argv: list[str]) -> str:
    import fastapi
    import uvicorn

    rows = [
        ("overview page `/` (HTML, charts as SVG)", "overview_page"),
        ("overview numbers `/api/overview` (JSON)", "api_overview"),
        ("decisions page `/decisions` (100 rows)", "decisions_page"),
        ("baseline: `/api/decisions?limit=100` (JSON listing)", "api_decisions"),
        ("baseline: `/healthz` (HTTP floor)", "healthz"),
        ("in process: the overview's SQL (`StoreView.overview`)", "overview_sql"),
        ("in process: `SELECT COUNT(*) FROM decisions`", "sqlite_count"),
    ]
    median = results["overview_page"]["median_ms"]
    met = "**met**" if median < TARGET_MS else "**not met**"
    states = ", ".join(f"{n:,} {s}" for s, n in sorted(results["states"].items()))
    lines = [
        "# mlguard serve",
        "",
        "Reproduce: `" + " ".join(["python -m bench web", *argv]) + "`",
        "",
        f"Machine: {_machine()}; FastAPI {fastapi.__version__}, uvicorn {uvicorn.__version__}; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        f"Store: {results['decisions']:,} decisions ({states}) over 30 days. `mlguard serve --state` in its "
        f"own process; {results['requests']} requests per row after 3 warm-up requests, one at a time "
        "over loopback; times are the client's wall time per request (server time plus loopback: an "
        "upper bound of the server time).",
        "",
        "| request | median ms | p90 ms | min ms | max ms | response bytes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, key in rows:
        r = results[key]
        size = f"{r['bytes']:,}" if "bytes" in r else "-"
        times = " | ".join(f"{r[k]:.1f}" for k in ("median_ms", "p90_ms", "min_ms", "max_ms"))
        lines.append(f"| {label} | {times} | {size} |")
    lines += [
        "",
        f"Target (overview < {TARGET_MS:.0f} ms server time with {results['decisions']:,} decisions): {met} "
        f"(median {median:.1f} ms, p90 {results['overview_page']['p90_ms']:.1f} ms).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench web", description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=100_000, help="decisions in the store")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page")
    args = parser.parse_args(args_list)
    results = run(args.decisions, args.requests)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "web.json").write_text(json.dumps(results, indent=2) + "\n")
    text = report(results, args_list)
    (RESULTS / "web.md").write_text(text)
    print(text)
    return 0 if results["overview_page"]["median_ms"] < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
