"""Shared pieces of the peer runners: the result type and a measured child-process runner."""

from __future__ import annotations

import csv
import ipaddress
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


@dataclass
class PeerRun:
    """What one peer tool made of one log."""

    system: str  # "crowdsec" or "fail2ban"
    flagged: set[str]  # client IPs the tool would ban/alert on, normalised (ipaddress)
    lines: int  # lines in the input log
    seconds: float  # wall time of the detection itself (what is included: see each runner)
    peak_rss_mib: float  # peak resident memory of the tool's own processes during that time
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "flagged": sorted(self.flagged, key=_ip_sort_key),
            "n_flagged": len(self.flagged),
            "lines": self.lines,
            "seconds": round(self.seconds, 3),
            "lines_per_s": round(self.lines_per_s, 1),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "details": self.details,
        }


def _ip_sort_key(ip: str) -> tuple[int, int]:
    a = ipaddress.ip_address(ip)
    return (a.version, int(a))


def normalise_ip(text: str) -> str | None:
    """Canonical text of an IP address (``::ffff:1.2.3.4`` -> ``1.2.3.4``), or None if not an IP."""
    try:
        a = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return str(a)


def count_lines(path: Path) -> int:
    n = 0
    last = b"\n"
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")  # a last line without newline still counts


@dataclass
class Finished:
    returncode: int
    seconds: float
    maxrss_mib: float


def run_measured(
    cmd: list[str],
    *,
    stdout: IO[Any] | int | None = subprocess.DEVNULL,
    stderr: IO[Any] | int | None = subprocess.DEVNULL,
    timeout: float,
    cwd: Path | None = None,
) -> Finished:
    """Run ``cmd`` to completion; wall time and the peak RSS of that child (and its descendants).

    Why os.wait4: it returns the rusage of this one child, so ``ru_maxrss`` is this run's peak,
    unlike ``getrusage(RUSAGE_CHILDREN)``, which is the max over every child this process ever had.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, cwd=cwd)
    deadline = start + timeout
    pause = 0.002
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise TimeoutError(f"{cmd[0]} did not finish within {timeout:.0f} s: {' '.join(cmd)}")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)  # poll fast for short runs, cheaply for long ones
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: keep Popen from waiting again
    return Finished(proc.returncode, seconds, usage.ru_maxrss / 1024)  # ru_maxrss is KiB on Linux


def read_labels(path: Path) -> dict[str, str]:
    """``ip -> label`` from a ``labels.csv`` (columns ``ip,label,...``) of bench/datasets."""
    out: dict[str, str] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            ip = normalise_ip(row.get("ip", ""))
            if ip is not None:
                out[ip] = row.get("label", "")
    return out


def score(flagged: set[str], labels: dict[str, str]) -> dict[str, float | int]:
    """Precision/recall of a flagged set against labels (IPs without a label are ignored)."""
    malicious = {ip for ip, lab in labels.items() if lab == "malicious"}
    benign = {ip for ip, lab in labels.items() if lab == "benign"}
    tp = len(flagged & malicious)
    fp = len(flagged & benign)
    fn = len(malicious - flagged)
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "flagged_unlabelled": len(flagged - malicious - benign),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
    }
