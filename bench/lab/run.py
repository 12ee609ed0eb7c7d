"""``python -m bench lab``: run a scenario and write access.log, labels.csv and run.json.

Everything is aimed at 127.0.0.1 only, and every run is bounded: the scenario length in real
minutes, a timeout per tool (process group killed on expiry), bounded word/password lists.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.lab.attacks import Ctx, Job, have
from bench.lab.benign import BenignSim, Clock
from bench.lab.ips import IpAllocator
from bench.lab.nginx import Nginx, free_port, wait_port
from bench.lab.scenarios import SCENARIOS, Scenario, rng_for
from bench.lab.site import build_docroot, make_users, write_users
from bench.lab.xffproxy import XffProxy

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ["nginx", "nginx-light", "libfaketime", "faketime", "sqlmap", "gobuster", "dirb", "wfuzz",
            "hydra", "ffuf", "whatweb", "wapiti", "nmap", "wget"]
_LINE = re.compile(r'^(\S+) \S+ \S+ \[([^\]]+)\] "[^"]*" (\d{3}) ')


def tool_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for pkg in PACKAGES:
        r = subprocess.run(["dpkg-query", "-W", "-f", "${Status} ${Version}", pkg], capture_output=True,
                           text=True)
        if r.returncode == 0 and r.stdout.startswith("install ok installed"):
            out[pkg] = r.stdout.rsplit(" ", 1)[1]
    return out


class JobRunner:
    """Starts each attack job at its log-time start, bounded by its timeout and the run's end."""

    def __init__(self, jobs: list[Job], clock: Clock, pp_port: int, work: Path, out: Path, max_parallel: int,
                 run_deadline: float) -> None:
        self.jobs, self.clock, self.pp_port, self.work, self.out = jobs, clock, pp_port, work, out
        self.sem = threading.Semaphore(max_parallel)
        self.deadline = run_deadline  # time.monotonic() at which every tool must be gone
        self.records: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for i, job in enumerate(self.jobs):
            t = threading.Thread(target=self._run, args=(i, job), daemon=True)
            t.start()
            self.threads.append(t)

    def _run(self, i: int, job: Job) -> None:
        rec: dict[str, Any] = {"actor": job.actor, "ip": job.ip, "mode": job.mode,
                               "planned_start_log_s": round(job.start, 1)}
        if job.rotation:
            rec["ip"] = f"{len(job.rotation)} rotating addresses"
        with self.lock:
            self.records.append(rec)
        tool = job.argv[0]
        if not have(tool):
            rec["status"] = "skipped: not installed"
            return
        if not self.clock.sleep_until(job.start):
            rec["status"] = "skipped: run ended before start"
            return
        with self.sem:
            remaining = self.deadline - time.monotonic()
            if self.clock.stop.is_set() or remaining < 3:
                rec["status"] = "skipped: run ended before start"
                return
            d = self.work / "jobs" / f"{i:03d}-{job.actor}"
            d.mkdir(parents=True, exist_ok=True)
            for name, content in job.files.items():
                (d / name).write_text(content)
            proxy = None
            if job.via_proxy:
                proxy = XffProxy(self.pp_port, job.ip, job.proxy_cap, job.proxy_delay,
                                 rotation=job.rotation, unit_start=job.unit_start).start()
            argv = [a.replace("{DIR}", str(d)).replace("{PROXY_PORT}", str(proxy.port if proxy else ""))
                    for a in job.argv]
            rec["argv"] = argv
            timeout = min(job.timeout, remaining)
            rec["timeout_s"] = round(timeout, 1)
            logf = self.out / "tools" / f"{i:03d}-{job.actor}.log"
            t0 = time.monotonic()
            rec["real_start_offset_s"] = round(t0 - self.clock.t0, 1)
            rec["log_start_s"] = round(self.clock.now(), 1)
            # HOME in the job dir: sqlmap/wapiti keep state under ~ and must not share it across jobs.
            env = dict(os.environ, HOME=str(d), TERM="dumb")
            with open(logf, "wb") as fh:
                proc = subprocess.Popen(argv, cwd=d, stdin=subprocess.DEVNULL, stdout=fh,
                                        stderr=subprocess.STDOUT, env=env, start_new_session=True)
                with self.lock:
                    self.procs[i] = proc
                try:
                    rec["exit_code"] = proc.wait(timeout=timeout)
                    rec["status"] = "finished"
                except subprocess.TimeoutExpired:
                    _kill_group(proc)
                    rec["exit_code"] = proc.returncode
                    rec["status"] = "killed: timeout"
                finally:
                    with self.lock:
                        self.procs.pop(i, None)
            if self.clock.stop.is_set() and rec["status"] == "finished" and rec["exit_code"] not in (0, None):
                rec["status"] = "killed: run end"
            rec["real_duration_s"] = round(time.monotonic() - t0, 1)
            if proxy:
                rec["proxy_requests"] = proxy.count
                if job.rotation:
                    rec["rotation"] = _rotation_stats(job, proxy)
                proxy.stop()
            _truncate(logf, 200_000)

    def kill_all(self) -> None:
        with self.lock:
            procs = list(self.procs.values())
        for p in procs:
            _kill_group(p)

    def join(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))


def _rotation_stats(job: Job, proxy: XffProxy) -> dict[str, Any]:
    """What the rotating relay announced: addresses used, requests and units per address."""
    per = [proxy.sent[ip] for ip, _ in job.rotation if proxy.sent[ip]]
    planned = sum(n for _, n in job.rotation)
    return {"addresses_planned": len(job.rotation), "addresses_used": len(per),
            "units_planned": planned, "units_started": min(proxy.units, planned),
            "unit": "request" if job.unit_start is None else f"run of requests starting /{job.unit_start}/",
            "requests_forwarded": sum(per), "refused_after_schedule": max(0, proxy.count - sum(per)),
            "requests_per_address": {"min": min(per, default=0), "max": max(per, default=0),
                                     "mean": round(sum(per) / len(per), 2) if per else 0},
            "units_per_address_planned": dict(sorted(Counter(n for _, n in job.rotation).items()))}


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """TERM the tool's own process group (it was started in a new session), then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            return
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            continue


def _truncate(path: Path, keep: int) -> None:
    size = path.stat().st_size
    if size > keep:
        data = path.read_bytes()[-keep:]
        path.write_bytes(b"[... truncated ...]\n" + data)


def analyse(access: Path, labels: dict[str, tuple[str, str]]) -> dict[str, Any]:
    per_ip: Counter[str] = Counter()
    status: dict[str, Counter[str]] = defaultdict(Counter)
    first = last = None
    bad_lines = 0
    with open(access, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            m = _LINE.match(line)
            if not m:
                bad_lines += 1
                continue
            ip, ts, st = m.groups()
            per_ip[ip] += 1
            actor = labels.get(ip, ("?", "UNLABELLED"))[1]
            status[actor][st] += 1
            first = first or ts
            last = ts
    per_actor: dict[str, dict[str, Any]] = {}
    for ip, n in per_ip.items():
        label, actor = labels.get(ip, ("?", "UNLABELLED"))
        a = per_actor.setdefault(actor, {"label": label, "ips": 0, "lines": 0})
        a["ips"] += 1
        a["lines"] += n
    for actor, a in per_actor.items():
        a["status"] = dict(sorted(status[actor].items()))
    return {"lines": sum(per_ip.values()), "unparsed_lines": bad_lines, "first_time": first,
            "last_time": last, "per_actor": dict(sorted(per_actor.items())), "per_ip": per_ip}


def run_scenario(sc: Scenario, seed: int, out: Path, minutes: float, scale: float, keep_work: bool) -> int:
    out.mkdir(parents=True, exist_ok=True)
    (out / "tools").mkdir(exist_ok=True)
    for f in ("access.log", "labels.csv", "run.json"):
        (out / f).unlink(missing_ok=True)
    for f in (out / "tools").iterdir():
        f.unlink()
    work = Path(tempfile.mkdtemp(prefix=f"mlguard-lab-{sc.name}-"))
    access = (out / "access.log").resolve()
    speed = sc.speed
    log_seconds = minutes * 60 * speed
    build_docroot(work / "site")
    accounts = make_users(seed, 300)
    write_users(work / "users.json", accounts)
    app_port, port, pp_port = free_port(), free_port(), free_port()
    started = dt.datetime.now(dt.UTC)
    real0 = time.monotonic()
    app = subprocess.Popen([sys.executable, "-m", "bench.lab.app", "--port", str(app_port), "--users",
                            str(work / "users.json")], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                           start_new_session=True)
    nginx = Nginx(work, access, port, pp_port, app_port, sc.log_start, speed)
    runner: JobRunner | None = None
    sim: BenignSim | None = None
    try:
        wait_port(app_port)
        nginx.run()
        clock = Clock(speed, log_seconds)
        ips = IpAllocator(seed, sc.name)
        # Benign actors take addresses first, then attackers, always in the same order.
        sim = BenignSim(sc.benign(scale), seed, ips, port, clock, _hour(sc.log_start), accounts)
        ctx = Ctx(port, speed, work, rng_for(seed, sc.name), accounts)
        jobs = sc.plan(ctx, ips, log_seconds, scale)
        planned = sim.labels()
        for j in jobs:
            for ip in j.addresses():
                planned[ip] = ("malicious", j.actor)
        rotating = {ip for j in jobs if j.rotation for ip in j.addresses()}
        runner = JobRunner(jobs, clock, pp_port, work, out, max_parallel=6 if sc.stuffing_ips else 4,
                           run_deadline=clock.t0 + minutes * 60)
        print(f"[lab] {sc.name}: seed={seed} speed=x{speed:g} minutes={minutes:g} "
              f"log {sc.log_start} +{log_seconds / 3600:.1f}h, {len(sim.actors)} benign actors, "
              f"{len(jobs)} attack jobs, nginx 127.0.0.1:{port}", flush=True)
        sim.start()
        runner.start()
        while not clock.stop.wait(5):
            elapsed = time.monotonic() - clock.t0
            if elapsed >= minutes * 60:
                break
            if int(elapsed) % 60 < 5:
                print(f"[lab] {sc.name}: {elapsed / 60:.1f}/{minutes:g} min, "
                      f"benign requests sent {sum(sim.counter.values())}", flush=True)
    finally:
        if sim:
            sim.clock.stop.set()
        if runner:
            runner.kill_all()
            runner.join(20)
        if sim:
            sim.join(20)
        nginx.stop()
        _kill_group(app)  # type: ignore[arg-type]
    ended = dt.datetime.now(dt.UTC)

    result = analyse(access, planned)
    per_ip: Counter[str] = result.pop("per_ip")
    in_log = set(per_ip)
    unlabelled = sorted(in_log - set(planned))
    with open(out / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ip", "label", "actor"])
        for ip in sorted(in_log & set(planned), key=lambda x: (planned[x][1], x)):
            w.writerow([ip, *planned[ip]])
    no_xff = _count_no_xff(work / "diag.log")
    silent = sorted({f"{a}@{ip}" for ip, (_, a) in planned.items() if ip not in in_log and a not in
                     ("browser", "browser-nat") and ip not in rotating})
    run = {
        "scenario": sc.name, "description": sc.description, "seed": seed, "scale": scale,
        "speed": speed, "real_minutes_budget": minutes, "log_start": sc.log_start + " UTC",
        "log_seconds_budget": log_seconds,
        "started_utc": started.isoformat(timespec="seconds"),
        "ended_utc": ended.isoformat(timespec="seconds"),
        "real_duration_s": round(time.monotonic() - real0, 1),
        "nginx_argv": nginx.argv(), "tool_versions": tool_versions(),
        "log": result,
        "labels": {"ips_in_log": len(in_log), "labelled": len(in_log & set(planned)),
                   "unlabelled_ips": unlabelled, "requests_without_xff": no_xff,
                   "planned_ips_absent_from_log": len(set(planned) - in_log),
                   "non_browser_actors_absent": silent,
                   # a rotating pool is sized with slack; its unused tail never reaches the log
                   "rotating_pool_addresses_unused": len(rotating - in_log)},
        "benign_requests_sent": dict(sim.counter) if sim else {},
        "jobs": runner.records if runner else [],
    }
    (out / "run.json").write_text(json.dumps(run, indent=1, default=str))
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"[lab] {sc.name}: {result['lines']} lines, {len(in_log)} IPs "
          f"({len(unlabelled)} unlabelled, {no_xff} requests without XFF), "
          f"{result['first_time']} .. {result['last_time']}")
    for actor, a in result["per_actor"].items():
        print(f"    {actor:16s} {a['label']:9s} ips={a['ips']:4d} lines={a['lines']:6d}")
    return 1 if unlabelled or not result["lines"] else 0


def _hour(ts: str) -> float:
    t = dt.datetime.strptime(ts, "%Y-%m-%d %H:%M:%S")
    return t.hour + t.minute / 60


def _count_no_xff(diag: Path) -> int:
    if not diag.exists():
        return -1
    n = 0
    with open(diag, errors="replace") as fh:
        for line in fh:
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[2] == '"-"':
                n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench lab", description=__doc__)
    ap.add_argument("--scenario", required=True, choices=[*SCENARIOS, "all"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, help="real minutes per scenario (default: the scenario's)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies benign users and stuffing IPs")
    ap.add_argument("--keep-work", action="store_true",
                    help="keep the temp dir (nginx conf, site, tool files)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("[lab] note: not root; nginx may fail to write its temp paths", file=sys.stderr)
    for need in ("nginx", "faketime"):
        if not shutil.which(need):
            print(f"[lab] {need} is missing: run bench/lab/install.sh", file=sys.stderr)
            return 2
    # SIGTERM -> SystemExit so the finally blocks stop nginx, the app and the tools.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    rc = 0
    for name in names:
        sc = SCENARIOS[name]
        out = args.out / name if args.scenario == "all" else args.out
        rc |= run_scenario(sc, args.seed, out, args.minutes or sc.minutes, args.scale, args.keep_work)
    return rc


if __name__ == "__main__":
    random.seed(0)
    sys.exit(main())
