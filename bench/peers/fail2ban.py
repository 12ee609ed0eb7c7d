"""fail2ban (Debian package) on one access log: stock filters via ``fail2ban-regex``, bans in Python.

fail2ban-regex applies a filter to a file and prints, for each matching line, its time and host
(``-o '<time> <ip>'``).  The ban logic of a jail is then re-applied here on LOG time: an IP is banned
by a jail when it has >= maxretry matching lines within some findtime window (jail.conf's values for
that jail, else the [DEFAULT] maxretry=5, findtime=10m).  The real fail2ban server would do the same
live, but on a replayed old log it drops every line older than findtime before "now", so the server
itself cannot be used for replay.

Only filters whose stock failregex matches ACCESS-log lines are used (we have no error logs):
  nginx-botsearch      404s on /wp-login.php, phpMyAdmin, webmail, cgi-bin ... (5 in 10 min)
  nginx-bad-request    requests answered 400 (5 in 10 min)
  apache-badbots       known spam/e-mail-harvester user agents (jail: maxretry=1)
  php-url-fopen        ``?x=http://...`` remote-file-inclusion attempts (5 in 10 min)
  apache-fakegooglebot "Googlebot" user agents not from Google (jail: maxretry=1); its jail checks
                       the IP with reverse+forward DNS (ignorecommand), which needs the Internet:
                       replaced here by Google's crawler range 66.249.64.0/19 (the addresses
                       Googlebot uses; the logs here predate Google's other crawler ranges).
Left out, and why: nginx-http-auth, nginx-limit-req, apache-auth, apache-noscript,
apache-overflows, apache-nohome, apache-botsearch, apache-shellshock, apache-modsecurity all match
ERROR-log lines only (``[error] ... client: <HOST>``), never an access-log line.
"""

from __future__ import annotations

import configparser
import ipaddress
import re
import shutil
import subprocess
import time
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bench.peers.common import PeerRun, count_lines, normalise_ip, run_measured

CONFIG_DIR = Path("/etc/fail2ban")


@dataclass(frozen=True)
class Jail:
    filter: str
    maxretry: int
    findtime: float  # seconds


# jail.conf defaults (bookworm, 1.0.2): [DEFAULT] maxretry = 5, findtime = 10m; per-jail overrides
# are read from jail.conf at run time, these are the fallbacks if it cannot be read.
DEFAULT_JAILS: tuple[Jail, ...] = (
    Jail("nginx-botsearch", 5, 600),
    Jail("nginx-bad-request", 5, 600),
    Jail("apache-badbots", 1, 600),
    Jail("php-url-fopen", 5, 600),
    Jail("apache-fakegooglebot", 1, 600),
)

# Offline stand-in for filter.d/ignorecommands/apache-fakegooglebot (reverse + forward DNS).
GOOGLEBOT_NETS = (ipaddress.ip_network("66.249.64.0/19"),)
# jail.conf [DEFAULT] ignoreip (ignoreself also covers the machine's own addresses).
IGNORE_NETS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

_TIME = re.compile(r"^(\d+(?:\.\d+)?)\s+(\S+)$")


def version() -> str | None:
    exe = shutil.which("fail2ban-regex")
    if exe is None:
        return None
    p = subprocess.run([exe, "-V"], capture_output=True, text=True, timeout=60)
    out = (p.stdout or p.stderr).strip().splitlines()
    return out[0].strip() if out else None


def _duration(text: str) -> float:
    """fail2ban time abbreviations: 600, 10m, 1h, 2d, 1w (enough for jail.conf's values)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text.strip().lower()):
        total += float(num) * units.get(unit[:1], 1)
    return total


def jails(config_dir: Path = CONFIG_DIR) -> list[Jail]:
    """The jails above with maxretry/findtime as jail.conf (+ jail.local) sets them."""
    cp = configparser.RawConfigParser(strict=False, inline_comment_prefixes=("#", ";"))
    read = cp.read([config_dir / "jail.conf", config_dir / "jail.local"])
    if not read:
        return list(DEFAULT_JAILS)
    out = []
    for j in DEFAULT_JAILS:
        sec = j.filter if cp.has_section(j.filter) else "DEFAULT"
        try:
            maxretry = int(cp.get(sec, "maxretry"))
            findtime = _duration(cp.get(sec, "findtime"))
        except (configparser.Error, ValueError):
            maxretry, findtime = j.maxretry, j.findtime
        out.append(Jail(j.filter, maxretry, findtime))
    return out


def banned(hits: dict[str, list[float]], maxretry: int, findtime: float) -> set[str]:
    """IPs with >= maxretry hits inside some window of findtime seconds (log time)."""
    out = set()
    for ip, times in hits.items():
        if len(times) < maxretry:
            continue
        ts = sorted(times)
        # window ending at hit i: hits in [ts[i] - findtime, ts[i]]
        for i in range(maxretry - 1, len(ts)):
            if i - bisect_left(ts, ts[i] - findtime) + 1 >= maxretry:
                out.add(ip)
                break
    return out


def run_fail2ban(log: Path, work: Path, *, timeout: float = 1800) -> PeerRun:
    """Run every jail's filter over ``log``; flagged = union of the IPs the jails would ban.

    ``seconds`` = sum of the fail2ban-regex runs (one per filter, as the server runs one filter per
    jail) plus the ban computation here; ``peak_rss_mib`` = the largest fail2ban-regex process.
    """
    exe = shutil.which("fail2ban-regex")
    if exe is None:
        raise RuntimeError("fail2ban-regex not found: run bench/peers/install.sh")
    log = log.resolve()
    work.mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    peak = 0.0
    flagged: set[str] = set()
    per_filter: dict[str, dict[str, object]] = {}
    for jail in jails():
        out_path = work / f"fail2ban-{jail.filter}.out"
        with out_path.open("wb") as out, (work / f"fail2ban-{jail.filter}.err").open("wb") as err:
            # -r: raw hosts, never resolve DNS; the datepattern of each stock filter already reads
            # "[17/May/2015:10:05:03 +0000]" (``^[^\[]*\[({DATE})``), so no -d is needed.
            fin = run_measured(
                [exe, "-r", "--usedns=no", "-o", "<time> <ip>", str(log), jail.filter],
                stdout=out,
                stderr=err,
                timeout=timeout,
            )
        if fin.returncode != 0:
            raise RuntimeError(f"fail2ban-regex {jail.filter} failed (rc={fin.returncode}); see {out_path}")
        seconds += fin.seconds
        peak = max(peak, fin.maxrss_mib)
        t0 = time.perf_counter()
        hits: dict[str, list[float]] = defaultdict(list)
        matched = 0
        for line in out_path.read_text(errors="replace").splitlines():
            m = _TIME.match(line.strip())
            if not m:
                continue
            ip = normalise_ip(m.group(2))
            if ip is None:
                continue
            matched += 1
            addr = ipaddress.ip_address(ip)
            if any(addr in n for n in IGNORE_NETS):
                continue
            if jail.filter == "apache-fakegooglebot" and any(addr in n for n in GOOGLEBOT_NETS):
                continue  # ignorecommand would have confirmed a real Googlebot
            hits[ip].append(float(m.group(1)))
        bans = banned(hits, jail.maxretry, jail.findtime)
        seconds += time.perf_counter() - t0
        flagged |= bans
        per_filter[jail.filter] = {
            "maxretry": jail.maxretry,
            "findtime_s": jail.findtime,
            "matched_lines": matched,
            "ips_matched": len(hits),
            "ips_banned": len(bans),
            "seconds": round(fin.seconds, 3),
            "peak_rss_mib": round(fin.maxrss_mib, 1),
        }
    return PeerRun(
        system="fail2ban",
        flagged=flagged,
        lines=count_lines(log),
        seconds=seconds,
        peak_rss_mib=peak,
        details={"version": version(), "filters": per_filter},
    )
