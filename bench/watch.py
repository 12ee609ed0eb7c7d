"""`mlguard watch` against the targets of issue #5: `python -m bench watch [--quick]`.

Three measurements, each beside a baseline measured in the same run:

1. **Time to decision** (target <= 30 s). A real nginx on 127.0.0.1 (tests/nginx_server.py: realip
   from X-Forwarded-For, a small site) writes its access log while a thread plays visitors from
   ~200 public addresses. `mlguard watch --enforce --nginx-include` follows the log with its
   defaults (cadences, baseline learned from the window; `--baseline model` trains one with
   `mlguard train` on the warm-up log instead) and CrowdSec 1.4.6's live agent (Debian's
   package; file acquisition, the nginx parsers, base-http-scenarios and http-cve from the hub it
   ships; own LAPI on 127.0.0.1) follows the same log. Then real scanners from Debian (gobuster,
   ffuf, dirb, wfuzz; each run from its own public address through X-Forwarded-For, with the
   tool's own user agent or a browser's, bounded word list and time) run one after another. Per
   run, the wall time from the tool's start to MLGuard's decision row in the store, to its block,
   to the first 403 nginx returns to the scanner, and to CrowdSec's ban in its LAPI (GET
   /v1/decisions with a bouncer key, as a bouncer sees it).
2. **CPU while following a log growing at 1,000 lines/s** (target <= 10% of one core). A thread
   appends lines of the 10M-line generated combined log (bench/make_big_log.py: five days of a
   site's traffic) re-stamped to now, ~44 two-hour slices of it played at once (`_Stream`: every
   client keeps its own pace, the rates add up to ~1,000 lines/s);
   `mlguard watch` follows it from an empty window, then again with a full window (an hour of
   history written first and read with --from-start), then CrowdSec's agent; `tail -F FILE >
   /dev/null` follows the same file in every phase (the cost of just following). CPU = psutil
   user+system delta / wall over the measured span (whole periods of watch's full pass), RSS
   sampled every second.
3. **Memory over hours** (target: flat once the window is full). In a child process, the Watcher
   is driven with an injected clock over four hours of log time at ~1,000 lines/s (the same kind
   of stream, from the 20M-line log so that no line is played twice; re-stamped to the simulated
   second), one `step()` per 5 simulated seconds, RSS sampled every 5 simulated minutes.

`--quick` runs a short version of each (a few minutes). `--only` runs some parts and keeps the
others from the last bench/results/watch.json. Writes bench/results/watch.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results"
WORK = CACHE / "watch"
PARTS = ("decision", "cpu", "memory")
TOOLS = ("gobuster", "ffuf", "dirb", "wfuzz")
WORDS = Path("/usr/share/dirb/wordlists/big.txt")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
PACKAGES = ("nginx", "crowdsec", "gobuster", "ffuf", "dirb", "wfuzz", "coreutils")
SIM_T0 = datetime(2026, 1, 5, tzinfo=UTC)  # simulated log time of the memory run (any fixed day)
# Each scanner is throttled to an Internet-like pace (tens of requests/s, bounded), not localhost's
# thousands per second, so that it is still scanning when it is blocked.
SCANNER_FLAGS = {
    "gobuster": ["-t", "5", "--delay", "100ms"],
    "ffuf": ["-t", "5", "-p", "0.1"],
    "dirb": ["-z", "20"],
    "wfuzz": ["-t", "5", "-s", "0.02"],
}


@dataclass
class Plan:
    runs: int = 8  # scanner runs (tools in turn; the second half with a browser user agent)
    warmup_secs: float = 120.0  # visitors only, before the first scanner
    max_wait_secs: float = 90.0  # per scanner run
    visitors: int = 200
    visitor_rate: float = 30.0  # requests/s of all visitors together
    words: int = 3000  # per scanner run
    # Measured span of each CPU phase; 0: whole periods of watch's full pass, at least 120 s (a span
    # holding a part of a period would count its costly full pass once or not at all).
    cpu_secs: float = 0.0
    cpu_warmup_secs: float = 60.0
    cpu_rate: int = 1000  # lines/s
    cpu_history_secs: int = 3600  # history written before the full-window phase (0: skip it)
    memory_secs: int = 14400  # simulated log time: the window fills in the first hour, then three more
    memory_window_secs: int = 3600
    memory_rate: int = 1000
    memory_sample_secs: int = 300


QUICK = Plan(
    runs=2,
    warmup_secs=45.0,
    max_wait_secs=45.0,
    words=1500,
    cpu_secs=30.0,
    cpu_warmup_secs=20.0,
    cpu_history_secs=300,
    memory_secs=900,
    memory_window_secs=300,
    memory_sample_secs=25,
)


# --------------------------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------------------------
def _stamp(t: datetime) -> bytes:
    return f"[{t.day:02d}/{MONTHS[t.month - 1]}/{t.year}:{t:%H:%M:%S} +0000]".encode()


def _restamp(line: bytes, stamp: bytes) -> bytes:
    """The line with its `[time]` field replaced (lines without one are kept as they are)."""
    i = line.find(b"[")
    j = line.find(b"]", i) if i >= 0 else -1
    return line[:i] + stamp + line[j + 1 :] if j > i else line


_DAYS: dict[bytes, int | None] = {}


def _line_time(line: bytes) -> int | None:
    """Seconds since the epoch of a combined line's `[dd/Mon/yyyy:HH:MM:SS +0000]` (None if none)."""
    i = line.find(b"[")
    if i < 0 or line[i + 12 : i + 13] != b":":
        return None
    date = line[i + 1 : i + 12]
    if date not in _DAYS:
        try:
            _DAYS[date] = datetime.strptime(date.decode(), "%d/%b/%Y").toordinal() - 719163
        except (UnicodeDecodeError, ValueError):
            _DAYS[date] = None
    day = _DAYS[date]
    try:
        hms = int(line[i + 13 : i + 15]) * 3600 + int(line[i + 16 : i + 18]) * 60 + int(line[i + 19 : i + 21])
    except ValueError:
        return None
    return None if day is None else day * 86400 + hms


def _offset_at(path: Path, when: int) -> int:
    """Byte offset of the first line at or after `when` in a log sorted by time (binary search)."""
    with path.open("rb") as f:

        def time_after(pos: int) -> int | None:
            f.seek(pos)
            if pos:
                f.readline()  # the line cut by the seek
            while line := f.readline():
                if (t := _line_time(line)) is not None:
                    return t
            return None

        lo, hi = 0, path.stat().st_size
        while hi - lo > 1 << 16:
            mid = (lo + hi) // 2
            t = time_after(mid)
            lo, hi = (lo, mid) if t is None or t >= when else (mid, hi)
        f.seek(lo)
        if lo:
            f.readline()
        while True:
            pos = f.tell()
            line = f.readline()
            if not line:
                return pos
            t = _line_time(line)
            if t is not None and t >= when:
                return pos


LOG_SPAN_SECS = 5 * 86400  # bench/make_big_log.py's default: five days


def _source_for(rate: int, secs: int) -> tuple[Path, int]:
    """The smallest generated log (10M lines, or a multiple: five days of a site either way) that
    holds enough slices of `secs` for `rate` lines/s without playing any line twice."""
    from bench.throughput import ensure_log

    lines = 10_000_000
    while math.ceil(rate * LOG_SPAN_SECS / lines) * secs > 0.97 * LOG_SPAN_SECS:
        lines += 10_000_000
    path, meta = ensure_log(lines, 42, skip_generate=False, force=False)
    return path, int(meta["lines"])


def _cpu_slice_secs(plan: Plan) -> int:
    return max(7200, plan.cpu_history_secs + 1800)


def _memory_slice_secs(plan: Plan) -> int:
    return max(7200, plan.memory_secs)


class _Stream:
    """Lines of a generated log (sorted by time) at about `rate` lines/s, each client keeping its
    own pace: the log is cut into consecutive slices of `secs` of its own time, and all slices are
    played at once, each from its start, one second of log time per `second()` call (lines without
    a time go with the line before). Re-timestamping the log line by line at a fixed rate would
    squeeze its days into hours and every visit into a burst."""

    def __init__(self, path: Path, lines: int, rate: int, secs: int) -> None:
        with path.open("rb") as f:
            first = next(t for line in f if (t := _line_time(line)) is not None)
            f.seek(max(path.stat().st_size - (1 << 16), 0))
            last = max(t for line in f if (t := _line_time(line)) is not None)
        self.source_rate = lines / max(last - first, 1)
        self.slices = max(1, math.ceil(rate / self.source_rate))
        if self.slices * secs > last - first:
            raise ValueError(f"{path} is too short for {self.slices} slices of {secs} s: use a longer log")
        self.secs = secs
        self.starts = [first + k * secs for k in range(self.slices)]
        self.offsets = [_offset_at(path, t) for t in self.starts]
        self.handles = [path.open("rb") for _ in self.starts]
        self.rewind()
        self.cycles = 0

    def rewind(self) -> None:
        for handle, offset in zip(self.handles, self.offsets, strict=True):
            handle.seek(offset)
        self.carry: list[bytes | None] = [None] * self.slices
        self.next = 0

    def second(self) -> list[bytes]:
        out: list[bytes] = []
        for k, handle in enumerate(self.handles):
            limit = self.starts[k] + self.next
            line = self.carry[k] or handle.readline()
            while line:
                t = _line_time(line)
                if t is not None and t > limit:
                    break
                out.append(line if line.endswith(b"\n") else line + b"\n")
                line = handle.readline()
            self.carry[k] = line or None
        self.next += 1
        if self.next >= self.secs:  # played through: from the start again
            self.rewind()
            self.cycles += 1
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "slices": self.slices,
            "slice_secs": self.secs,
            "source_lines_per_s": round(self.source_rate, 2),
            "nominal_lines_per_s": round(self.slices * self.source_rate, 1),
        }

    def close(self) -> None:
        for handle in self.handles:
            handle.close()


def _deb_version(package: str) -> str | None:
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=30
        )
    except OSError:
        return None
    return done.stdout.strip() or None


def _versions() -> dict[str, str | None]:
    out = {p: _deb_version(p) for p in PACKAGES}
    from importlib.metadata import version

    out["mlguard"] = version("mlguard-web")
    return out


def _code_state() -> dict[str, Any]:
    """The commit and the number of changed paths under src/ (the package is installed editable:
    what runs is the working tree), and watch's default cadences there."""
    import inspect

    from mlguard.cli_watch import watch_command

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    params = inspect.signature(watch_command).parameters
    return {
        "git_commit": git("rev-parse", "--short", "HEAD") or None,
        "src_changed_paths": len(git("status", "--porcelain", "--", "src").splitlines()),
        "interval_secs": params["interval"].default,
        "full_every_secs": params["full_every"].default,
    }


def _events(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return out


def _wait_event(path: Path, event: str, secs: float, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        found = [e for e in _events(path) if e.get("event") == event]
        if found:
            return found[0]
        if proc.poll() is not None:
            raise RuntimeError(f"mlguard watch exited (rc={proc.returncode}): {path.read_text()[-2000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"no '{event}' event from mlguard watch within {secs:.0f} s; see {path}")


def _watch_cmd(log: Path, state: Path, *extra: str) -> list[str]:
    # --no-crawler-dns: a block of a client claiming to be a search engine would otherwise ask
    # the system's resolver, and nothing here may leave 127.0.0.1.
    return [
        sys.executable, "-m", "mlguard", "watch", str(log), "--state", str(state),
        "--log-style", "json", "--no-crawler-dns", *extra,
    ]  # fmt: skip


def _shown(cmd: list[str]) -> str:
    return " ".join(cmd).replace(sys.executable, "python")


def _stop(proc: subprocess.Popen[bytes] | None, secs: float = 60) -> int | None:
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=secs)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _scrape(url: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (comments left out)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def _metric_sum(metrics: dict[str, float], prefix: str) -> float | None:
    values = [v for k, v in metrics.items() if k == prefix or k.startswith(prefix + "{")]
    return sum(values) if values else None


def _gauge(text: str, name: str) -> float | None:
    """One unlabelled series of a Prometheus text page."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# --------------------------------------------------------------------------------------------
# CrowdSec live: agent + LAPI in one process, as the package runs it
# --------------------------------------------------------------------------------------------
class CrowdsecLive:
    """`crowdsec -c CONFIG` following `log` (file acquisition, type nginx) with the hub items of
    bench/peers (nginx parsers, base-http-scenarios, http-cve, private-IP whitelist), its own
    SQLite database, LAPI and Prometheus listener on free ports of 127.0.0.1, no Central API. A
    bouncer key reads decisions as a bouncer does."""

    def __init__(self, root: Path, log: Path) -> None:
        from bench.peers import crowdsec as peer

        for exe in ("crowdsec", "cscli"):
            if shutil.which(exe) is None:
                raise RuntimeError(f"{exe} not found: run bench/peers/install.sh")
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        items = peer._resolve_items(whitelist=True)
        peer._link_items(root / "etc", items)
        peer._link_data(root / "data", items)
        self.port, self.metrics_port = peer._free_port(), peer._free_port()
        config = peer._write_config(root, self.port)
        text = config.read_text()
        for old, new in (
            ("enabled: false  # no metrics listener", "enabled: true"),
            ("listen_port: 6060", f"listen_port: {self.metrics_port}"),
        ):
            if old not in text:
                raise RuntimeError(f"bench/peers/crowdsec.py's config changed: no {old!r} in it")
            text = text.replace(old, new)
        config.write_text(text)
        (root / "acquis.yaml").write_text(f"filenames:\n  - {log}\nlabels:\n  type: nginx\n")
        self.config = config
        self.cscli("machines", "add", peer.MACHINE, "--password", secrets.token_hex(16),
                   "-f", str(root / "local_api_credentials.yaml"), "--force")  # fmt: skip
        self.key = secrets.token_hex(16)
        self.cscli("bouncers", "add", "mlguard-bench", "-k", self.key)
        self._out = (root / "crowdsec.out").open("wb")
        self.proc = subprocess.Popen(
            ["crowdsec", "-c", str(config)], stdout=self._out, stderr=subprocess.STDOUT
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + 60
        agent_log = root / "log" / "crowdsec.log"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"crowdsec exited (rc={self.proc.returncode}); see {root}")
            started = agent_log.exists() and "Starting processing data" in agent_log.read_text(
                errors="replace"
            )
            if started and self._reachable():
                break
            time.sleep(0.2)
        else:
            self.stop()
            raise TimeoutError(f"crowdsec did not start within 60 s; see {root}")
        exposed = [a for a in peer._listening(self.pid) if a[0] not in ("127.0.0.1", "::1")]
        if exposed:
            self.stop()
            raise RuntimeError(f"crowdsec listens beyond loopback: {exposed}")

    def cscli(self, *args: str) -> str:
        done = subprocess.run(
            ["cscli", "-c", str(self.config), "--error", *args], capture_output=True, text=True, timeout=120
        )
        if done.returncode:
            raise RuntimeError(f"cscli {' '.join(args[:2])} failed: {done.stderr.strip()}")
        return done.stdout

    def _reachable(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def bans(self, ip: str | None = None) -> list[dict[str, Any]]:
        query = f"?ip={ip}" if ip else ""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/decisions{query}", headers={"X-Api-Key": self.key}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            raw = response.read().strip()
        return list(json.loads(raw) or []) if raw else []

    def metrics(self) -> dict[str, float]:
        return _scrape(f"http://127.0.0.1:{self.metrics_port}/metrics")

    def stop(self) -> None:
        _stop(self.proc, 30)
        self._out.close()


# --------------------------------------------------------------------------------------------
# 1. time to decision
# --------------------------------------------------------------------------------------------
class _AccessTail(threading.Thread):
    """Reads nginx's access log as it grows. For the addresses being watched: when their first
    line was seen, how many lines so far, and when the first 403 was seen (not under /static/,
    a directory without an index that nginx answers 403 by itself)."""

    LINE = re.compile(rb'^(\S+) \S+ \S+ \[[^\]]*\] "\S* ?(\S*)[^"]*" (\d{3}) ')

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.lines = 0
        self.watched: dict[str, dict[str, Any]] = {}

    def watch(self, ip: str) -> None:
        with self.lock:
            self.watched[ip] = {"first": None, "count": 0, "first_403": None}

    def get(self, ip: str) -> dict[str, Any]:
        with self.lock:
            return dict(self.watched[ip])

    def run(self) -> None:
        with self.path.open("rb") as handle:
            rest = b""
            while not self.halt.is_set():
                data = handle.read()
                if not data:
                    time.sleep(0.05)
                    continue
                now = time.monotonic()
                lines = (rest + data).split(b"\n")
                rest = lines.pop()
                with self.lock:
                    self.lines += len(lines)
                    for line in lines:
                        m = self.LINE.match(line)
                        if m is None:
                            continue
                        seen = self.watched.get(m.group(1).decode())
                        if seen is None:
                            continue
                        seen["count"] += 1
                        seen["first"] = seen["first"] or now
                        if m.group(3) == b"403" and not m.group(2).startswith(b"/static"):
                            seen["first_403"] = seen["first_403"] or now


class _Paced:
    """An NginxServer whose `get` keeps to `rate` requests/s (and does nothing once halted)."""

    def __init__(self, server: Any, rate: float, halt: threading.Event) -> None:
        self.server, self.gap, self.halt = server, 1.0 / rate, halt
        self.next = time.monotonic()
        self.sent = 0

    def get(self, *args: Any, **kwargs: Any) -> int:
        if self.halt.is_set():
            return 0
        self.next = max(self.next + self.gap, time.monotonic() - 1.0)
        pause = self.next - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        self.sent += 1
        try:
            return int(self.server.get(*args, **kwargs))
        except OSError:
            return 0


class _Visitors(threading.Thread):
    """People browsing the site (tests/nginx_server.py's browse) from `addresses`, paced."""

    def __init__(self, server: Any, addresses: list[str], rate: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.halt = threading.Event()
        self.paced = _Paced(server, rate, self.halt)
        self.addresses, self.rng = addresses, random.Random(seed)

    def run(self) -> None:
        from tests.nginx_server import browse

        while not self.halt.is_set():
            browse(self.paced, self.rng.choice(self.addresses), self.rng)  # type: ignore[arg-type]


class _StoreReader:
    """MLGuard's decisions for one client, read from the store as another process would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None

    def verdicts(self, client: str) -> set[str]:
        try:
            if self.db is None:
                self.db = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, timeout=2, isolation_level=None
                )
            rows = self.db.execute(
                "SELECT DISTINCT verdict FROM decisions WHERE client = ? AND verdict IN ('alert', 'block')",
                (client,),
            ).fetchall()
        except sqlite3.Error:
            self.db = None
            return set()
        return {r[0] for r in rows}

    def all(self) -> list[tuple[str, str]]:
        with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute("SELECT client, verdict FROM decisions WHERE verdict != 'allow'").fetchall()


def _scanner_argv(tool: str, base: str, ip: str, words: Path, agent: str | None) -> list[str]:
    xff = f"X-Forwarded-For: {ip}"
    if tool == "gobuster":
        argv = ["gobuster", "dir", "-u", base + "/", "-w", str(words), "-H", xff, "-q", "-z", "--no-error",
                "--timeout", "10s", *(["-a", agent] if agent else [])]  # fmt: skip
    elif tool == "ffuf":
        argv = ["ffuf", "-u", base + "/FUZZ", "-w", str(words), "-H", xff, "-s",
                *(["-H", f"User-Agent: {agent}"] if agent else [])]  # fmt: skip
    elif tool == "dirb":
        argv = ["dirb", base + "/", str(words), "-H", xff, "-S", "-r", *(["-a", agent] if agent else [])]
    else:
        argv = ["wfuzz", "-w", str(words), "-H", xff, "--hc", "404",
                *(["-H", f"User-Agent: {agent}"] if agent else [])]  # fmt: skip
    argv += SCANNER_FLAGS[tool]
    if tool == "wfuzz":
        argv.append(base + "/FUZZ")
    return argv


def _scan_once(
    i: int,
    tool: str,
    agent: str | None,
    ip: str,
    server: Any,
    tail: _AccessTail,
    store: _StoreReader,
    crowdsec: CrowdsecLive | None,
    plan: Plan,
    work: Path,
    rng: random.Random,
) -> dict[str, Any]:
    words = [w for w in WORDS.read_text(errors="replace").splitlines() if w and not w.startswith("#")]
    start = rng.randrange(0, max(1, len(words) - plan.words))
    run_dir = work / f"run{i}-{tool}"
    run_dir.mkdir()
    wordlist = run_dir / "words.txt"
    wordlist.write_text("\n".join(words[start : start + plan.words]) + "\n")
    argv = _scanner_argv(tool, f"http://127.0.0.1:{server.port}", ip, wordlist, agent)
    tail.watch(ip)
    got: dict[str, Any] = {"decision": None, "first_verdict": None, "block": None, "crowdsec": None}
    counts: dict[str, int | None] = {"decision": None, "block": None, "crowdsec": None}
    scenario = None
    probes = 0
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, cwd=run_dir)  # fmt: skip
    ended = None
    try:
        while time.monotonic() - t0 < plan.max_wait_secs:
            now = time.monotonic()
            seen = tail.get(ip)
            if got["block"] is None:
                verdicts = store.verdicts(ip)
                if verdicts and got["decision"] is None:
                    got["decision"], counts["decision"] = now, seen["count"]
                    got["first_verdict"] = "block" if "block" in verdicts else "alert"
                if "block" in verdicts:
                    got["block"], counts["block"] = now, seen["count"]
            if crowdsec is not None and got["crowdsec"] is None:
                with contextlib.suppress(OSError, ValueError):
                    bans = crowdsec.bans(ip)
                    if bans:
                        got["crowdsec"], counts["crowdsec"] = now, seen["count"]
                        scenario = bans[0].get("scenario")
            if ended is None and proc.poll() is not None:
                ended = now
            if (
                seen["first_403"] is not None
                and got["block"] is not None
                and (crowdsec is None or got["crowdsec"] is not None)
            ):
                break
            if ended is not None and got["block"] is not None and seen["first_403"] is None:
                server.get("/", ip, agent or "Mozilla/5.0")  # the tool is done: ask as it would
                probes += 1
            time.sleep(0.1)
    finally:
        stopped = time.monotonic()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    seen = tail.get(ip)

    def rel(t: float | None) -> float | None:
        return None if t is None else round(t - t0, 2)

    return {
        "run": i + 1,
        "tool": tool,
        "user_agent": "browser" if agent else "tool's own",
        "ip": ip,
        "argv": argv,
        "first_line_s": rel(seen["first"]),
        "decision_s": rel(got["decision"]),
        "first_verdict": got["first_verdict"],
        "block_s": rel(got["block"]),
        "first_403_s": rel(seen["first_403"]),
        "crowdsec_s": rel(got["crowdsec"]),
        "crowdsec_scenario": scenario,
        "tool_ended_s": rel(ended),
        "stopped_s": rel(stopped),
        "requests": seen["count"],
        "requests_at_decision": counts["decision"],
        "requests_at_block": counts["block"],
        "requests_at_crowdsec": counts["crowdsec"],
        "probes_after_tool_ended": probes,
    }


def time_to_decision(plan: Plan, baseline: str, use_crowdsec: bool) -> dict[str, Any]:
    from tests.nginx_server import BROWSERS, NginxServer, public_addresses

    work = WORK / "decision"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = work / "access.log"
    rng = random.Random(5)
    visitors = public_addresses(rng, plan.visitors)
    taken = set(visitors)
    scanners: list[str] = []
    while len(scanners) < plan.runs:
        scanners += [a for a in public_addresses(rng, plan.runs) if a not in taken and a not in scanners]
    scanners = scanners[: plan.runs]
    server = NginxServer(work / "nginx", access_log=str(log))
    tail = _AccessTail(log)
    tail.start()
    crowd: CrowdsecLive | None = None
    watch: subprocess.Popen[bytes] | None = None
    people = _Visitors(server, visitors, plan.visitor_rate, seed=6)
    stderr = work / "watch.err"
    runs: list[dict[str, Any]] = []
    out: dict[str, Any] = {"baseline": baseline, "visitors": plan.visitors}
    try:
        if use_crowdsec:
            crowd = CrowdsecLive(work / "crowdsec", log)
        started = time.monotonic()
        people.start()
        extra = ["--enforce", "--nginx-include", str(server.include), "--nginx-command", server.command]
        if baseline == "model":
            time.sleep(plan.warmup_secs)
            model = work / "model.npz"
            subprocess.run(
                [sys.executable, "-m", "mlguard", "train", str(log), "--out", str(model), "--no-progress"],
                check=True, capture_output=True, cwd=ROOT,
            )  # fmt: skip
            extra += ["--model", str(model)]
        with stderr.open("wb") as err:
            watch = subprocess.Popen(_watch_cmd(log, work / "state.db", *extra), stderr=err, cwd=ROOT)
        if baseline == "model":
            _wait_event(stderr, "started", 120, watch)
            time.sleep(10)  # its first full pass, on the history it reads back
        else:
            # Without --model the baseline is fitted at a full pass once the window holds enough
            # clients: up to one full-pass period after they arrive.
            period = float(_code_state()["full_every_secs"])
            _wait_event(stderr, "baseline_learned", plan.warmup_secs + period + 180, watch)
            out["baseline_learned_after_s"] = round(time.monotonic() - started, 1)
            time.sleep(max(0.0, plan.warmup_secs - (time.monotonic() - started)))
        out["warmup_s"] = round(time.monotonic() - started, 1)
        store = _StoreReader(work / "state.db")
        loads: list[float] = []
        for i, ip in enumerate(scanners):
            tool = TOOLS[i % len(TOOLS)]
            agent = BROWSERS[0] if (i // len(TOOLS)) % 2 else None
            result = _scan_once(i, tool, agent, ip, server, tail, store, crowd, plan, work, rng)
            runs.append(result)
            shown = {k: v for k, v in result.items() if k != "argv"}
            print(f"[watch] decision run {i + 1}: {json.dumps(shown)}", file=sys.stderr, flush=True)
            loads.append(os.getloadavg()[0])
            # A random pause, so that scanners start at any point of watch's 5 s rescoring cadence
            # (a fixed 5 s pause after a decision would start each one just after a rescoring).
            time.sleep(rng.uniform(5.0, 15.0))
        elapsed = time.monotonic() - started
        out["load_avg_1m_median"] = round(statistics.median(loads), 2)
        visitor_lines = tail.lines - sum(r["requests"] for r in runs)
        out["visitor_requests_per_s"] = round(visitor_lines / elapsed, 1)
        decided = store.all()
        out["visitors_alerted"] = len({c for c, v in decided if v == "alert"} & taken)
        out["visitors_blocked"] = len({c for c, v in decided if v == "block"} & taken)
        if crowd is not None:
            out["visitors_banned_by_crowdsec"] = len({b.get("value") for b in crowd.bans()} & taken)
        allowed_now = sum(server.get("/", c) == 200 for c in visitors[:20])
        out["visitors_served_200_of_20"] = allowed_now
    finally:
        people.halt.set()
        code = _stop(watch)
        out["watch_exit_code"] = code
        if crowd is not None:
            crowd.stop()
        tail.halt.set()
        server.stop()
    out["runs"] = runs
    out["max_wait_secs"] = plan.max_wait_secs
    shown = ["--enforce", "--nginx-include", "deny.conf", "--nginx-command", "'nginx -p DIR -c CONF'"]
    shown += ["--model", "model.npz"] if baseline == "model" else []
    out["watch_command"] = _shown(_watch_cmd(Path("access.log"), Path("state.db"), *shown))
    return out


# --------------------------------------------------------------------------------------------
# 2. CPU while following
# --------------------------------------------------------------------------------------------
class _Writer(threading.Thread):
    """Appends the stream's lines to `path` as time goes: each second's lines in ten writes, their
    time set to the current second."""

    def __init__(self, stream: _Stream, path: Path) -> None:
        super().__init__(daemon=True)
        self.stream, self.path = stream, path
        self.halt = threading.Event()
        self.written = 0

    def run(self) -> None:
        with self.path.open("ab") as out:
            started = time.monotonic()
            second = 0
            while not self.halt.is_set():
                lines = self.stream.second()
                stamp = _stamp(datetime.now(UTC))
                for part in range(10):
                    at = started + second + part / 10
                    pause = at - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    chunk = lines[part * len(lines) // 10 : (part + 1) * len(lines) // 10]
                    out.write(b"".join(_restamp(line, stamp) for line in chunk))
                    out.flush()
                    self.written += len(chunk)
                second += 1


def _prefill(stream: _Stream, path: Path, secs: int) -> int:
    """`secs` seconds of the stream, ending now."""
    end = datetime.now(UTC).replace(microsecond=0)
    written = 0
    with path.open("wb") as out:
        for s in range(secs, 0, -1):
            stamp = _stamp(end - timedelta(seconds=s))
            lines = stream.second()
            out.write(b"".join(_restamp(line, stamp) for line in lines))
            written += len(lines)
    return written


def _cpu(proc: Any) -> tuple[float, float]:
    t = proc.cpu_times()
    return t.user, t.system


def _cpu_phase(kind: str, plan: Plan, source: tuple[Path, int], history_secs: int = 0) -> dict[str, Any]:
    """One system following a log that grows at plan.cpu_rate lines/s, `tail -F` beside it."""
    import psutil

    name = kind if not history_secs else f"{kind}-full"
    work = WORK / "cpu" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = work / "access.log"
    stream = _Stream(*source, rate=plan.cpu_rate, secs=_cpu_slice_secs(plan))
    prefilled = _prefill(stream, log, history_secs) if history_secs else 0
    if not prefilled:
        log.touch()
    out: dict[str, Any] = {"phase": name, "history_lines": prefilled, "rate": plan.cpu_rate}
    tail = subprocess.Popen(["tail", "-F", str(log)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watch: subprocess.Popen[bytes] | None = None
    crowd: CrowdsecLive | None = None
    writer = _Writer(stream, log)
    metrics_url = None
    stderr = work / "watch.err"

    def read_so_far() -> float | None:
        with contextlib.suppress(OSError, ValueError):
            if crowd is not None:
                return _metric_sum(crowd.metrics(), "cs_filesource_hits_total")
            if metrics_url is not None:
                return _metric_sum(_scrape(metrics_url), "mlguard_lines_total")
        return None

    try:
        if kind == "crowdsec":
            crowd = CrowdsecLive(work / "crowdsec", log)
            pid = crowd.pid
            out["command"] = "crowdsec -c CONFIG (acquisition: the file, type nginx)"
        else:
            extra = ["--metrics-port", "0"]
            if history_secs:
                extra += ["--from-start", "--window", f"{history_secs}s"]
            with stderr.open("wb") as err:
                watch = subprocess.Popen(_watch_cmd(log, work / "state.db", *extra), stderr=err, cwd=ROOT)
            pid = watch.pid
            metrics_url = _wait_event(stderr, "metrics", 120, watch)["url"]
            out["command"] = _shown(_watch_cmd(Path("access.log"), Path("state.db"), *extra))
        writer.start()
        t_start = time.monotonic()
        if watch is not None and history_secs:
            # Caught up: every history line read and less than a second of lines behind.
            deadline = t_start + max(600.0, history_secs / 2)
            while time.monotonic() < deadline:
                m = _scrape(metrics_url) if metrics_url else {}
                done = (m.get("mlguard_lines_total") or 0) >= prefilled
                if done and (m.get("mlguard_bytes_behind") or 0) < plan.cpu_rate * 300:
                    break
                if watch.poll() is not None:
                    raise RuntimeError(f"mlguard watch exited: {stderr.read_text()[-2000:]}")
                time.sleep(2)
            out["caught_up_after_s"] = round(time.monotonic() - t_start, 1)
            out["caught_up"] = time.monotonic() < deadline
            t_start = time.monotonic()
        elif watch is not None:
            period = float(_code_state()["full_every_secs"])
            _wait_event(stderr, "baseline_learned", plan.cpu_warmup_secs + period + 300, watch)
        time.sleep(max(0.0, plan.cpu_warmup_secs - (time.monotonic() - t_start)))
        proc, tail_proc = psutil.Process(pid), psutil.Process(tail.pid)
        c0, k0, w0, r0 = _cpu(proc), _cpu(tail_proc), writer.written, read_so_far()
        t0 = time.monotonic()
        rss: list[float] = []
        loads: list[float] = []
        while time.monotonic() - t0 < plan.cpu_secs:
            rss.append(proc.memory_info().rss / 2**20)
            loads.append(os.getloadavg()[0])
            if watch is not None and watch.poll() is not None:
                raise RuntimeError(f"mlguard watch exited: {stderr.read_text()[-2000:]}")
            time.sleep(1.0)
        wall = time.monotonic() - t0
        c1, k1, w1, r1 = _cpu(proc), _cpu(tail_proc), writer.written, read_so_far()
        user, system = c1[0] - c0[0], c1[1] - c0[1]
        out.update(
            wall_s=round(wall, 1),
            user_s=round(user, 2),
            system_s=round(system, 2),
            cpu_pct=round(100 * (user + system) / wall, 2),
            tail_cpu_pct=round(100 * ((k1[0] - k0[0]) + (k1[1] - k0[1])) / wall, 3),
            rss_median_mib=round(statistics.median(rss), 1),
            rss_max_mib=round(max(rss), 1),
            lines_written=w1 - w0,
            lines_per_s=round((w1 - w0) / wall, 1),
            lines_read=None if r0 is None or r1 is None else int(r1 - r0),
            load_avg_1m_median=round(statistics.median(loads), 2),
            stream_cycles=stream.cycles,
        )
        if metrics_url is not None:
            m = _scrape(metrics_url)
            out.update(
                window_rows=m.get("mlguard_window_rows"),
                clients_in_window=m.get("mlguard_clients"),
                bytes_behind=m.get("mlguard_bytes_behind"),
                lag_s=m.get("mlguard_lag_seconds"),
            )
        if crowd is not None:
            m = crowd.metrics()
            out.update(
                parser_hits=_metric_sum(m, "cs_parser_hits_total"),
                parser_hits_ok=_metric_sum(m, "cs_parser_hits_ok_total"),
                file_hits=_metric_sum(m, "cs_filesource_hits_total"),
                lines_written_total=writer.written,
            )
    finally:
        writer.halt.set()
        writer.join(timeout=10)
        _stop(watch)
        if crowd is not None:
            crowd.stop()
        tail.kill()
        tail.wait()
        stream.close()
        if history_secs:
            log.unlink(missing_ok=True)  # GBs
    return out


def cpu_following(plan: Plan, source: tuple[Path, int], use_crowdsec: bool) -> dict[str, Any]:
    if not plan.cpu_secs:
        period = float(_code_state()["full_every_secs"])
        plan = replace(plan, cpu_secs=period * math.ceil(120.0 / period))
    phases = [_cpu_phase("watch", plan, source)]
    print(f"[watch] cpu: {json.dumps(phases[-1])}", file=sys.stderr, flush=True)
    if plan.cpu_history_secs:
        phases.append(_cpu_phase("watch", plan, source, history_secs=plan.cpu_history_secs))
        print(f"[watch] cpu: {json.dumps(phases[-1])}", file=sys.stderr, flush=True)
    if use_crowdsec:
        phases.append(_cpu_phase("crowdsec", plan, source))
        print(f"[watch] cpu: {json.dumps(phases[-1])}", file=sys.stderr, flush=True)
    stream = _Stream(*source, rate=plan.cpu_rate, secs=_cpu_slice_secs(plan))
    stream.close()
    return {
        "source": str(source[0].relative_to(ROOT)),
        "stream": stream.describe(),
        "rate": plan.cpu_rate,
        "warmup_secs": plan.cpu_warmup_secs,
        "secs": plan.cpu_secs,
        "phases": phases,
    }


# --------------------------------------------------------------------------------------------
# 3. memory over hours (the Watcher in a child process, injected clock)
# --------------------------------------------------------------------------------------------
def memory_child(argv: list[str]) -> int:
    """Runs in its own process so that its RSS is the Watcher's (plus the few lines in hand)."""
    import psutil

    from mlguard.cli_options import crawlers_from, policy_from
    from mlguard.decisions.store import DecisionStore
    from mlguard.detectors.ensemble import preload
    from mlguard.observability import Metrics, configure_logging
    from mlguard.watch import Watcher, WatchSettings

    p = argparse.ArgumentParser()
    for flag in ("--source", "--work"):
        p.add_argument(flag, type=Path, required=True)
    for flag in ("--rate", "--secs", "--window", "--sample"):
        p.add_argument(flag, type=int, required=True)
    p.add_argument("--step", type=int, default=5)
    p.add_argument("--lines", type=int, required=True, help="lines in --source")
    a = p.parse_args(argv)
    configure_logging("json", False)  # as the daemon logs (each decision is a line on stderr)
    a.work.mkdir(parents=True, exist_ok=True)
    log = a.work / "access.log"
    log.write_bytes(b"")
    clock = {"wall": SIM_T0, "tick": 1000.0}
    preload()
    store = DecisionStore(a.work / "state.db")
    # What `mlguard watch FILE --state DB` builds: default policy, a baseline learned from the
    # window and refreshed hourly, metrics; no enforcer.
    policy = policy_from(0.5, 0.76, 20, [], False, None, crawlers_from(None, False))
    cli = _code_state()
    settings = WatchSettings(
        [str(log)],
        window_secs=a.window,
        interval_secs=cli["interval_secs"],
        full_every_secs=cli["full_every_secs"],
        refresh_every_secs=3600.0,
    )
    metrics = Metrics()
    watcher = Watcher(
        settings, policy, store, None, [],
        clock=lambda: clock["wall"], monotonic=lambda: clock["tick"], metrics=metrics,
    )  # fmt: skip
    me = psutil.Process()
    stream = _Stream(a.source, a.lines, a.rate, max(7200, a.secs))  # as _memory_slice_secs
    print(json.dumps({"stream": stream.describe()}), flush=True)
    counter = sqlite3.connect(f"file:{a.work / 'state.db'}?mode=ro", uri=True, isolation_level=None)
    step_cpu = 0.0
    total_written = 0
    low, high = float("inf"), 0.0  # RSS after each step since the last sample
    started = time.monotonic()
    with log.open("ab") as out:
        for sim in range(0, a.secs, a.step):
            written = 0
            for k in range(a.step):
                stamp = _stamp(SIM_T0 + timedelta(seconds=sim + k))
                lines = stream.second()
                out.write(b"".join(_restamp(line, stamp) for line in lines))
                written += len(lines)
            out.flush()
            del lines
            total_written += written
            clock["wall"] = SIM_T0 + timedelta(seconds=sim + a.step)
            clock["tick"] += a.step
            cpu0 = time.process_time()
            watcher.step()
            step_cpu += time.process_time() - cpu0
            rss = me.memory_info().rss / 2**20
            low, high = min(low, rss), max(high, rss)
            done = sim + a.step
            if done % a.sample == 0:
                sample = {
                    "sim_s": done,
                    "rss_mib": round(rss, 1),
                    "rss_min_mib": round(low, 1),  # over the steps since the previous sample
                    "rss_max_mib": round(high, 1),
                    "window_rows": watcher.window.rows(),
                    "clients": _gauge(metrics.text(), "mlguard_clients"),
                    "decisions": counter.execute("SELECT count(*) FROM decisions").fetchone()[0],
                    "step_cpu_s": round(step_cpu, 2),
                    "wall_s": round(time.monotonic() - started, 1),
                    "lines_read": watcher.counters.lines,
                    "lines_written": total_written,
                    "baseline": watcher.baseline is not None,
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                }
                print(json.dumps(sample), flush=True)
                low, high = float("inf"), 0.0
    watcher.close()
    store.close()
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                print(json.dumps({"vm_hwm_mib": round(int(line.split()[1]) / 1024, 1)}), flush=True)
    print(json.dumps({"stream_cycles": stream.cycles}), flush=True)
    return 0


def memory_over_hours(plan: Plan, source: tuple[Path, int]) -> dict[str, Any]:
    work = WORK / "memory"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    child = "import sys; from bench.watch import memory_child; sys.exit(memory_child(sys.argv[1:]))"
    cmd = [
        sys.executable, "-c", child,
        "--source", str(source[0]), "--lines", str(source[1]), "--work", str(work),
        "--rate", str(plan.memory_rate),
        "--secs", str(plan.memory_secs), "--window", str(plan.memory_window_secs),
        "--sample", str(plan.memory_sample_secs),
    ]  # fmt: skip
    samples: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    with (work / "child.err").open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=ROOT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            row = json.loads(line)
            if "sim_s" in row:
                samples.append(row)
                print(f"[watch] memory: {line.strip()}", file=sys.stderr, flush=True)
            else:
                extra.update(row)
        code = proc.wait()
    if code:
        raise RuntimeError(f"memory run failed (rc={code}); see {work / 'child.err'}")
    (work / "access.log").unlink(missing_ok=True)  # GBs
    return {
        "source": str(source[0].relative_to(ROOT)),
        "rate": plan.memory_rate,
        "window_secs": plan.memory_window_secs,
        "secs": plan.memory_secs,
        "samples": samples,
        **extra,
    }


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def _s(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _stats(values: list[float | None]) -> tuple[float | None, float | None, int]:
    got = [v for v in values if v is not None]
    return _median(got), (max(got) if got else None), len(got)


def _hms(secs: int) -> str:
    hm = f"{secs // 3600}:{secs % 3600 // 60:02d}"
    return hm if secs % 60 == 0 else f"{hm}:{secs % 60:02d}"


def _n(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def render_decision(d: dict[str, Any]) -> list[str]:
    runs = d["runs"]
    n = len(runs)
    max_wait = d["max_wait_secs"]
    if d["baseline"] == "learned":
        baseline = "learned from the window by `watch` itself (its default without --model)"
        if "baseline_learned_after_s" in d:
            baseline += f", {d['baseline_learned_after_s']} s after the visitors started"
    else:
        baseline = "a model from `mlguard train` on the warm-up access log (--model)"
    out = [
        "### 1. Time from a scanner's first request to its decision (target <= 30 s)",
        "",
        *_measured(d),
        f"nginx on 127.0.0.1 (realip from X-Forwarded-For), {d['visitors']} visitor addresses browsing "
        f"at {d.get('visitor_requests_per_s', '?')} requests/s throughout; baseline {baseline}; first "
        f"scanner after {d.get('warmup_s', '?')} s. MLGuard: `{d['watch_command']}` (default cadences: "
        f"the clients that acted are rescored every {d.get('interval_secs', 5):g} s, the whole window "
        f"every {d.get('full_every_secs', 60):g} s; new lines are read just before each rescoring). "
        "CrowdSec's live agent follows the same file. Times are wall seconds from "
        "the scanner process's start (its first line in the access log: *first line*), polled every "
        "0.1 s; the scanners run one after another, 5-15 s apart (random)"
        + (
            f"; 1-minute load average {d['load_avg_1m_median']} (median)."
            if "load_avg_1m_median" in d
            else "."
        ),
        "",
        "| run | tool | user agent | requests/s | first line s | MLGuard decision s (verdict) "
        "| MLGuard block s | nginx 403 s | requests before block | CrowdSec ban s (scenario) "
        "| requests before ban |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        span = (r["tool_ended_s"] or r.get("stopped_s") or max_wait) - (r["first_line_s"] or 0)
        rate = r["requests"] / span if span > 0 else None
        verdict = f" ({r['first_verdict']})" if r["first_verdict"] else ""
        scenario = f" ({r['crowdsec_scenario'].split('/')[-1]})" if r["crowdsec_scenario"] else ""
        probe = "\\*" if r["probes_after_tool_ended"] and r["first_403_s"] is not None else ""
        out.append(
            f"| {r['run']} | {r['tool']} | {r['user_agent']} | {_s(rate, 0)} | "
            f"{_s(r['first_line_s'], 2)} | {_s(r['decision_s'])}{verdict} | {_s(r['block_s'])} | "
            f"{_s(r['first_403_s'])}{probe} | {_n(r['requests_at_block'])} | "
            f"{_s(r['crowdsec_s'])}{scenario} | {_n(r['requests_at_crowdsec'])} |"
        )
    rows = [
        ("MLGuard: decision in the store (alert or block)", "decision_s"),
        ("MLGuard: block in the store", "block_s"),
        ("nginx: first 403 to the scanner (MLGuard's deny)", "first_403_s"),
        ("CrowdSec: ban in its LAPI", "crowdsec_s"),
    ]
    out += ["", "| over the runs | median s | max s | runs reached |", "|---|---:|---:|---:|"]
    medians: dict[str, float | None] = {}
    for label, key in rows:
        med, top, got = _stats([r[key] for r in runs])
        medians[key] = med
        out.append(f"| {label} | {_s(med)} | {_s(top)} | {got} of {n} |")
    out.append("")
    if any(r["probes_after_tool_ended"] and r["first_403_s"] is not None for r in runs):
        out += [
            "\\* the tool had finished its word list before the deny: the 403 answered a request sent "
            "as the scanner afterwards (every 0.1 s).",
            "",
        ]
    cs, ml = medians["crowdsec_s"], medians["decision_s"]
    if cs and ml:
        out.append(
            f"Median time to a decision: MLGuard {ml:.1f} s, CrowdSec {cs:.1f} s "
            f"(MLGuard / CrowdSec = {ml / cs:.1f}×)."
        )
    worst = _stats([r["decision_s"] for r in runs])[1]
    missed = sum(r["decision_s"] is None for r in runs)
    met = worst is not None and worst <= 30 and not missed
    never = f", {missed} not decided within {max_wait:.0f} s" if missed else ""
    out += [
        f"Target (<= 30 s from the first request to the decision): **{'met' if met else 'missed'}** "
        f"(max {_s(worst)} s over {n} runs{never}).",
        "",
        f"Visitors (innocent): MLGuard alerted {d.get('visitors_alerted', '?')} and blocked "
        f"{d.get('visitors_blocked', '?')} of {d['visitors']}; CrowdSec banned "
        f"{d.get('visitors_banned_by_crowdsec', '—')}; {d.get('visitors_served_200_of_20', '?')} of 20 "
        "visitors checked at the end were served 200.",
        "",
    ]
    return out


def render_cpu(c: dict[str, Any]) -> list[str]:
    phases = c["phases"]
    st = c["stream"]
    out = [
        f"### 2. CPU while following a log growing at {c['rate']:,} lines/s (target <= 10% of one core)",
        "",
        *_measured(c),
        f"Lines of `{c['source']}` (generated combined log, five days of a site), {st['slices']} "
        f"slices of two hours of it played at once so that every client keeps its own pace "
        f"({st['source_lines_per_s']} lines/s each, ~{st['nominal_lines_per_s']:,.0f} together), "
        "appended ten times a second and re-stamped to now. Each phase: warm-up "
        f"{c['warmup_secs']:.0f} s (after the baseline is learned, or after "
        f"catching up with the history), then {c['secs']:.0f} s measured: CPU = (user + system) / wall "
        "of the process (psutil), RSS sampled every second. `tail -F FILE > /dev/null` follows the "
        "same file in every phase. *load average*: the machine's 1-minute load average (median over "
        "the span; 2 cores).",
        "",
        "| phase | command | CPU % of one core | user s | system s | `tail -F` CPU % "
        "| ratio to `tail -F` | RSS median / max MiB | lines/s written | lines/s read "
        "| CPU % per 1,000 lines/s read | clients in window | load average |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "watch": "MLGuard, window filling (started empty)",
        "watch-full": "MLGuard, full window ({:,} lines of history read first)",
        "crowdsec": "CrowdSec agent + LAPI",
    }
    for p in phases:
        label = labels[p["phase"]].format(p["history_lines"])
        ratio = p["cpu_pct"] / p["tail_cpu_pct"] if p.get("tail_cpu_pct") else None
        read = p["lines_read"] / p["wall_s"] if p.get("lines_read") is not None else None
        per = 1000 * p["cpu_pct"] / read if read else None
        clients = f"{p['clients_in_window']:,.0f}" if p.get("clients_in_window") else "—"
        out.append(
            f"| {label} | `{p['command']}` | **{p['cpu_pct']:.1f}** | {p['user_s']:.1f} | "
            f"{p['system_s']:.1f} | {p['tail_cpu_pct']:.2f} | {_s(ratio, 0)}× | "
            f"{p['rss_median_mib']:.0f} / {p['rss_max_mib']:.0f} | {p['lines_per_s']:,.0f} | "
            f"{_s(read, 0)} | {_s(per)} | {clients} | {_s(p.get('load_avg_1m_median'), 2)} |"
        )
    out.append("")
    by = {p["phase"]: p for p in phases}

    def per_1000(p: dict[str, Any]) -> float | None:
        read = p.get("lines_read")
        return 1000 * p["cpu_pct"] / (read / p["wall_s"]) if read else None

    for key, what in (("watch", "window filling"), ("watch-full", "full window")):
        if key in by:
            pct = by[key]["cpu_pct"]
            line = f"Target (<= 10% of one core), {what}: **{'met' if pct <= 10 else 'missed'}** ({pct:.1f}%"
            theirs, ours = per_1000(by.get("crowdsec", {"cpu_pct": 0})), per_1000(by[key])
            if theirs and ours:
                line += (
                    f"; per 1,000 lines/s read MLGuard {ours:.1f}%, CrowdSec {theirs:.1f}%: "
                    f"MLGuard / CrowdSec = {ours / theirs:.2f}×"
                )
            out.append(line + ").")
    for p in phases:
        read = p.get("lines_read")
        if read is not None and read < 0.95 * p["lines_written"]:
            out.append(
                f"{labels[p['phase']].format(p['history_lines'])} did not keep up: it read "
                f"{read / p['wall_s']:,.0f} of the {p['lines_per_s']:,.0f} lines/s written during the "
                f"measured span ({read:,} of {p['lines_written']:,} lines), so its CPU % is for that rate."
            )
    full = by.get("watch-full", {})
    if full.get("caught_up_after_s") is not None:
        done = "read its history" if full.get("caught_up") else "had NOT caught up with its history"
        out.append(f"The full-window phase {done} {full['caught_up_after_s']:.0f} s after it started.")
    out.append("")
    return out


def _trend(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def render_memory(m: dict[str, Any]) -> list[str]:
    samples = m["samples"]
    window = m["window_secs"]
    quarter = max(window // 4, 1)
    out = [
        f"### 3. Memory over {m['secs'] / 3600:g} hours of log time at {m['rate']:,} lines/s "
        f"(window {window // 60} min)",
        "",
        *_measured(m),
        "The Watcher in a child process with an injected clock, built as `mlguard watch FILE --state DB` "
        "builds it (baseline learned from the window and refreshed hourly, metrics, no enforcer); one "
        f"`step()` per 5 simulated seconds after appending those seconds' lines of `{m['source']}` "
        f"({m['stream']['slices']} slices of it played at once, as in part 2), re-stamped to simulated "
        f"time: {m['samples'][-1]['lines_written'] if m['samples'] else 0:,} lines. RSS of the process "
        "(psutil) after the step at each mark, and the lowest and highest RSS after any step of the "
        f"quarter before it (full passes, every {m.get('full_every_secs', 60):g} s of log time, raise it "
        "for a moment).",
        "",
        "| log time | RSS MiB | RSS min–max MiB over the quarter | window rows | clients in window "
        "| decisions stored | CPU s per log s over the quarter | real s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    prev: dict[str, Any] | None = None
    for s in samples:
        if s["sim_s"] % quarter:
            continue
        inside = [x for x in samples if (prev["sim_s"] if prev else 0) < x["sim_s"] <= s["sim_s"]]
        low = min(x.get("rss_min_mib", x["rss_mib"]) for x in inside)
        high = max(x.get("rss_max_mib", x["rss_mib"]) for x in inside)
        before = prev or {"step_cpu_s": 0.0, "sim_s": 0}
        rate = (s["step_cpu_s"] - before["step_cpu_s"]) / (s["sim_s"] - before["sim_s"])
        clients = f"{s['clients']:,.0f}" if s["clients"] else "—"
        out.append(
            f"| {_hms(s['sim_s'])} | {s['rss_mib']:.0f} | {low:.0f}–{high:.0f} | {s['window_rows']:,} | "
            f"{clients} | {s['decisions']:,} | {rate:.3f} | {s['wall_s']:.0f} |"
        )
        prev = s
    by = {s["sim_s"]: s for s in samples}
    end = samples[-1]["sim_s"] if samples else 0
    if end >= 2 * window and (end - window) in by:
        first, last = by[end - window], by[end]
        growth = 100 * (last["rss_mib"] - first["rss_mib"]) / first["rss_mib"]
        tail = [s for s in samples if s["sim_s"] > end - window]
        floors = [(s["sim_s"] / 3600, s.get("rss_min_mib", s["rss_mib"])) for s in tail]
        slope = _trend(floors)
        per_hour = 100 * slope / statistics.fmean(y for _, y in floors)
        rows = 100 * (last["window_rows"] - tail[0]["window_rows"]) / max(tail[0]["window_rows"], 1)
        cpu = (last["step_cpu_s"] - first["step_cpu_s"]) / (end - first["sim_s"])
        refresh = " (both marks fall right after the hourly baseline refresh)" if window % 3600 == 0 else ""
        every = samples[0]["sim_s"]
        every_text = f"{every // 60}-minute" if every % 60 == 0 else f"{every}-second"
        out += [
            "",
            f"**Last {_hms(window)}** ({_hms(end - window)} → {_hms(end)}): RSS at the marks "
            f"{first['rss_mib']:.0f} → {last['rss_mib']:.0f} MiB, **{growth:+.1f}%**{refresh}; the lowest "
            f"RSS after a step, per {every_text} span, {floors[0][1]:.0f} → {floors[-1][1]:.0f} MiB "
            f"(least-squares trend {slope:+.0f} MiB per hour, {per_hour:+.1f}%); window rows {rows:+.1f}%.",
        ]
        # Once full: the lowest RSS of each window-long span after the first (full) one.
        spans = []
        for k in range(1, end // window):
            inside = [x for x in samples if k * window < x["sim_s"] <= (k + 1) * window]
            if inside:
                low = statistics.fmean(x.get("rss_min_mib", x["rss_mib"]) for x in inside)
                high = max(x.get("rss_max_mib", x["rss_mib"]) for x in inside)
                spans.append((k, low, high))
        if len(spans) >= 2:
            change = 100 * (spans[-1][1] - spans[0][1]) / spans[0][1]
            listed = ", ".join(
                f"{_hms(k * window)}–{_hms((k + 1) * window)}: {low:.0f} (peak {high:.0f})"
                for k, low, high in spans
            )
            out.append(
                f"Once the window is full, mean of the lowest RSS per {every_text} span, by window length "
                "(MiB): "
                f"{listed}; the last against the first full one: **{change:+.1f}%**. Target (no growth once "
                f"the window is full; read as within +5%): **{'met' if change <= 5 else 'missed'}**."
            )
        else:
            verdict = "met" if per_hour <= 5 else "missed"
            out.append(
                "Target (no growth once the window is full; read as the lowest RSS trending within +5% per "
                f"hour): **{verdict}**."
            )
        out.append(
            f"CPU over the last {_hms(window)}: {cpu:.3f} CPU-s per second of log, i.e. {100 * cpu:.1f}% of "
            f"one core at {m['rate']:,} lines/s with a full window (the steps' own CPU, all threads)."
        )
    loads = [s["load_avg_1m"] for s in samples if "load_avg_1m" in s]
    if loads:
        out.append(
            f"1-minute load average during the run: median {statistics.median(loads):.2f}, "
            f"max {max(loads):.2f}."
        )
    if "vm_hwm_mib" in m:
        out.append(f"Peak RSS of the run (VmHWM): {m['vm_hwm_mib']:.0f} MiB.")
    out.append("")
    return out


def _measured(part: dict[str, Any]) -> list[str]:
    if "command" not in part:
        return []
    code = f"git commit {part.get('git_commit')}"
    if part.get("src_changed_paths"):
        code += f" + {part['src_changed_paths']} changed paths under src/"
    return [f"Measured by `{part['command']}`, started {part['measured_utc']}, on {code}.", ""]


def render(result: dict[str, Any], command: str) -> str:
    machine = result["machine"]
    v = result["versions"]
    out = [
        "# mlguard watch",
        "",
        f"Reproduce: `{command}`",
        "",
        f"Machine: {machine.get('cpu_model')}, {machine.get('logical_cpus')} logical CPUs, "
        f"{machine.get('ram_gib')} GiB, {machine.get('os')}, Python {machine.get('python')}, "
        f"Polars {machine.get('polars')}; run started {machine.get('date_utc')}.",
        "",
        "Versions (Debian 12 packages): " + ", ".join(f"{k} {v[k]}" for k in PACKAGES if v.get(k))
        + f"; mlguard {v.get('mlguard')}.",
        "",
    ]  # fmt: skip
    if "decision" in result:
        out += render_decision(result["decision"])
    if "cpu" in result:
        out += render_cpu(result["cpu"])
    if "memory" in result:
        out += render_memory(result["memory"])
    return "\n".join(out).rstrip("\n") + "\n"


# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench watch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a short version of each part (smoke test)")
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts: " + ", ".join(PARTS))
    parser.add_argument(
        "--baseline",
        choices=("learned", "model"),
        default="learned",
        help="decision part: baseline learned by watch, or --model from mlguard train",
    )
    parser.add_argument("--no-crowdsec", action="store_true", help="skip the CrowdSec baseline")
    for f in fields(Plan):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None)
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    plan = replace(
        plan, **{f.name: getattr(args, f.name) for f in fields(Plan) if getattr(args, f.name) is not None}
    )
    parts = [p for p in args.only.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s): {', '.join(unknown)}; expected some of {', '.join(PARTS)}")
    import psutil  # noqa: F401 - fail early: `pip install -e '.[test]'` brings it

    from bench.throughput import machine_info

    use_crowdsec = not args.no_crowdsec and shutil.which("crowdsec") is not None
    name = "watch-quick" if args.quick else "watch"
    previous = RESULTS / f"{name}.json"
    result: dict[str, Any] = (
        json.loads(previous.read_text()) if previous.exists() and parts != list(PARTS) else {}
    )
    result.update(machine=machine_info(), versions=_versions(), plan=asdict(plan))
    command = "python -m bench watch" + (" " + " ".join(argv) if argv else "")
    # Each part says what it measured: the code may change between parts run at different times.
    stamp = {"command": command, "measured_utc": result["machine"]["date_utc"]}
    if "decision" in parts:
        missing = [t for t in TOOLS if shutil.which(t) is None] + ([] if WORDS.exists() else [str(WORDS)])
        if missing:
            raise SystemExit(f"missing: {', '.join(missing)} (apt-get install gobuster ffuf dirb wfuzz)")
        at = _code_state()
        result["decision"] = {**time_to_decision(plan, args.baseline, use_crowdsec), **stamp, **at}
    if "cpu" in parts:
        source = _source_for(plan.cpu_rate, _cpu_slice_secs(plan))
        at = _code_state()
        result["cpu"] = {**cpu_following(plan, source, use_crowdsec), **stamp, **at}
    if "memory" in parts:
        source = _source_for(plan.memory_rate, _memory_slice_secs(plan))
        at = _code_state()
        result["memory"] = {**memory_over_hours(plan, source), **stamp, **at}
    RESULTS.mkdir(parents=True, exist_ok=True)
    previous.write_text(json.dumps(result, indent=1) + "\n")
    text = render(result, "python -m bench watch" + (" --quick" if args.quick else ""))
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
