"""CrowdSec (Debian package 1.4.6, offline hub snapshot) in replay mode on one access log.

Each run builds a throw-away configuration under ``work`` (own config dir with exactly the hub items
below, own SQLite database, own machine credentials), starts a Local API (LAPI) on 127.0.0.1, replays
the log with ``crowdsec -no-api -dsn file://LOG -type nginx``, waits for that agent to exit (it exits
by itself once the file is read and its buckets are flushed), then reads the ALERTS from the SQLite
database.  Alerts, not decisions: replay evaluates the log's own timestamps, so a decision dated from
2015 has long expired, but the alert that produced it is still there.

Why a private network namespace (``unshare -n``, when root): the LAPI then listens on a loopback that
only this run sees, so runs never collide on port 8080 and nothing can reach (or be reached from)
anything but 127.0.0.1; it also guarantees that CrowdSec's optional online lookups (hub version,
reverse DNS) cannot leave the machine.  Without root it falls back to a free port on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.peers.common import PeerRun, count_lines, normalise_ip, run_measured

HUB = Path("/usr/share/crowdsec/hub")  # the hub snapshot the Debian package ships
DATA = Path("/usr/share/crowdsec/data")  # the data files (word lists) the package ships
PATTERNS = Path("/etc/crowdsec/patterns")  # grok patterns, shipped by the package as conffiles
PLUGINS = Path("/usr/lib/crowdsec/plugins")

# What a user protecting nginx/Apache installs: the nginx collection (nginx-logs parser ->
# base-http-scenarios -> http-cve), plus the stage parsers every install has (s00 non-syslog
# framing, s02 date parsing so replay uses the log's timestamps, private-IP whitelist).
COLLECTIONS = ("crowdsecurity/nginx", "crowdsecurity/base-http-scenarios", "crowdsecurity/http-cve")
BASE_PARSERS = ("crowdsecurity/syslog-logs", "crowdsecurity/dateparse-enrich")
WHITELIST_PARSER = "crowdsecurity/whitelists"

LAPI_PORT = 8080  # inside the private namespace; a free port otherwise
MACHINE = "mlguard-bench"

# Same as the package's /etc/crowdsec/profiles.yaml (copied so an admin's edits don't change results).
PROFILES = """\
name: default_ip_remediation
filters:
 - Alert.Remediation == true && Alert.GetScope() == "Ip"
decisions:
 - type: ban
   duration: 4h
on_success: break
"""

_OVERFLOW = re.compile(r"Ip (\S+) performed '([^']+)'")


def version() -> str | None:
    exe = shutil.which("crowdsec")
    if exe is None:
        return None
    p = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=60)
    m = re.search(r"version:\s*(\S+)", p.stdout + p.stderr)
    return m.group(1) if m else None


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
def _resolve_items(whitelist: bool) -> dict[str, list[tuple[str, str]]]:
    """``kind -> [(name, hub path)]`` for the collections above and everything they pull in."""
    index = json.loads((HUB / ".index.json").read_text())
    items: dict[str, dict[str, str]] = {
        k: {} for k in ("parsers", "scenarios", "postoverflows", "collections")
    }

    def add(kind: str, name: str) -> None:
        if name in items[kind]:
            return
        entry = index[kind][name]
        items[kind][name] = entry["path"]
        if kind == "collections":
            for sub in ("parsers", "scenarios", "postoverflows", "collections"):
                for dep in entry.get(sub) or []:
                    add(sub, dep)

    for c in COLLECTIONS:
        add("collections", c)
    for p in (*BASE_PARSERS, *((WHITELIST_PARSER,) if whitelist else ())):
        add("parsers", p)
    return {k: sorted(v.items()) for k, v in items.items()}


def _link_items(etc: Path, items: dict[str, list[tuple[str, str]]]) -> None:
    """Enable items the way cscli does: symlinks in config_dir, vendor directory stripped."""
    for entries in items.values():
        for _name, rel in entries:
            src = HUB / rel
            parts = Path(rel).parts  # e.g. parsers/s01-parse/crowdsecurity/nginx-logs.yaml
            dest = etc.joinpath(*parts[:-2], parts[-1])  # -> parsers/s01-parse/nginx-logs.yaml
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(src)
    for kind in ("parsers", "scenarios", "postoverflows", "collections"):
        (etc / kind).mkdir(exist_ok=True)
    (etc / "patterns").symlink_to(PATTERNS)


_DATA_ITEM = re.compile(r"source_url:\s*(\S+)\s*\n\s*dest_file:\s*(\S+)")


def _link_data(data: Path, items: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    """Data dir = the package's files, plus aliases for files the hub items expect under another name.

    Why: in the 1.4.6 package, http-path-traversal-probing wants ``http_path_traversal.txt`` but the
    package ships the same list (same source URL) as ``path_traversal.txt``; unfixed, the scenario
    never fires and every event logs a multi-kilobyte error.  cscli would have downloaded it.
    """
    data.mkdir()
    for f in DATA.iterdir():
        (data / f.name).symlink_to(f)
    aliases: dict[str, str] = {}
    for entries in items.values():
        for _name, rel in entries:
            text = (HUB / rel).read_text(errors="replace")
            for url, dest in _DATA_ITEM.findall(text):
                src = DATA / url.rsplit("/", 1)[-1]
                if not (data / dest).exists() and src.exists():
                    (data / dest).symlink_to(src)
                    aliases[dest] = src.name
    return aliases


def _write_config(root: Path, port: int) -> Path:
    cfg = root / "config.yaml"
    cfg.write_text(
        f"""\
common:
  daemonize: false
  log_media: file
  log_level: info
  log_dir: {root}/log/
  working_dir: {root}
config_paths:
  config_dir: {root}/etc/
  data_dir: {root}/data/
  simulation_path: {root}/simulation.yaml
  hub_dir: {HUB}/
  index_path: {HUB}/.index.json
  notification_dir: {root}/etc/notifications/
  plugin_dir: {PLUGINS}/
crowdsec_service:
  acquisition_path: {root}/acquis.yaml
  parser_routines: 1
cscli:
  output: human
  color: "no"
  hub_branch: master  # a set branch stops cscli from asking the Internet for the latest version
db_config:
  log_level: info
  type: sqlite
  db_path: {root}/crowdsec.db
  use_wal: true
  flush:  # keep every alert of the replay (the defaults prune by count/age)
    max_items: 100000000
    max_age: 365000d
api:
  client:
    insecure_skip_verify: false
    credentials_path: {root}/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: 127.0.0.1:{port}
    profiles_path: {root}/profiles.yaml
    trusted_ips:
      - 127.0.0.1
    # no online_client section: no Central API (CAPI) at all
prometheus:
  enabled: false  # no metrics listener
  level: full
  listen_addr: 127.0.0.1
  listen_port: 6060
"""
    )
    (root / "profiles.yaml").write_text(PROFILES)
    (root / "simulation.yaml").write_text("simulation: off\n")
    (root / "acquis.yaml").write_text("")  # replay gives the source with -dsn
    (root / "log").mkdir()
    return cfg


# --------------------------------------------------------------------------------------------
# network namespace and LAPI
# --------------------------------------------------------------------------------------------
class _Netns:
    """A private network namespace with only ``lo`` up, held open by a sleeping process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["unshare", "-n", "--", "sh", "-c", "ip link set lo up && echo ready && exec sleep 2147483647"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"could not set up a network namespace: {err.strip()}")

    def wrap(self, cmd: list[str]) -> list[str]:
        # nsenter execs the command (no fork for a net namespace): its pid/rusage are the command's.
        return ["nsenter", "-t", str(self.proc.pid), "-n", "--", *cmd]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for s in (self.proc.stdout, self.proc.stderr):
            if s:
                s.close()


def _can_unshare() -> bool:
    return os.geteuid() == 0 and all(shutil.which(x) for x in ("unshare", "nsenter", "ip"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(pid: int) -> list[tuple[str, int]]:
    """Listening TCP sockets (address, port) owned by process ``pid``."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir() if fd_dir.exists() else ():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out: list[tuple[str, int]] = []
    for name, size in (("tcp", 4), ("tcp6", 16)):
        try:
            rows = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[3] != "0A" or f[9] not in inodes:  # LISTEN, and this process's own socket
                continue
            hexaddr, hexport = f[1].split(":")
            raw = bytes.fromhex(hexaddr)
            # /proc prints the address as host-order 32-bit words
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, size, 4))
            family = socket.AF_INET if size == 4 else socket.AF_INET6
            out.append((str(normalise_ip(socket.inet_ntop(family, raw))), int(hexport, 16)))
    return out


def _vm_hwm_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def run_crowdsec(log: Path, work: Path, timeout: float = 1800, *, whitelist: bool = True) -> PeerRun:
    """Replay ``log`` through CrowdSec; flagged = source IPs of every alert raised.

    ``seconds`` is the wall time of the replaying agent process, from exec to exit: loading parsers,
    scenarios and data files (~2 s), reading and evaluating every line, and pushing the alerts to the
    LAPI.  Not included: writing the config, registering the machine, starting/stopping the LAPI and
    reading the alerts back.  ``peak_rss_mib`` = agent peak + LAPI peak (they run at the same time;
    a production ``crowdsec`` runs both in one process).  ``whitelist=False`` drops the stock
    private-IP whitelist parser (for test logs made of 127.0.0.1/192.168.x clients).
    """
    for exe in ("crowdsec", "cscli"):
        if shutil.which(exe) is None:
            raise RuntimeError(f"{exe} not found: run bench/peers/install.sh")
    log = log.resolve()
    work.mkdir(parents=True, exist_ok=True)
    # A fresh directory per run: own config, credentials and database, so runs are independent.
    root = Path(tempfile.mkdtemp(prefix="crowdsec-", dir=work)).resolve()

    items = _resolve_items(whitelist)
    _link_items(root / "etc", items)
    aliases = _link_data(root / "data", items)
    netns: _Netns | None = None
    if _can_unshare():
        try:
            netns = _Netns()
        except RuntimeError:  # e.g. a container without CAP_SYS_ADMIN: use the host loopback
            netns = None
    port = LAPI_PORT if netns else _free_port()
    cfg = _write_config(root, port)

    def cmd(*args: str) -> list[str]:
        return netns.wrap(list(args)) if netns else list(args)

    lapi: subprocess.Popen[bytes] | None = None
    lapi_out = (root / "lapi.out").open("wb")
    agent_out = (root / "agent.log").open("wb")
    try:
        creds = root / "local_api_credentials.yaml"
        password = secrets.token_hex(16)
        add = ["cscli", "-c", str(cfg), "--error", "machines", "add", MACHINE, "--password", password]
        # cscli writes the machine into the SQLite db directly (no LAPI needed yet) and the creds file
        subprocess.run(cmd(*add, "-f", str(creds), "--force"), check=True, capture_output=True, timeout=120)
        lapi = subprocess.Popen(
            cmd("crowdsec", "-c", str(cfg), "-no-cs"), stdout=lapi_out, stderr=subprocess.STDOUT
        )
        listening = _wait_listening(lapi, port, timeout=60)
        exposed = [a for a in listening if a[0] not in ("127.0.0.1", "::1")]
        if exposed:  # the LAPI config says 127.0.0.1 only; refuse to run if that ever changes
            raise RuntimeError(f"crowdsec listens beyond loopback: {exposed}")

        agent = run_measured(
            cmd("crowdsec", "-c", str(cfg), "-no-api", "-dsn", f"file://{log}", "-type", "nginx"),
            stdout=agent_out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            cwd=root,
        )
        agent_out.flush()
        if agent.returncode != 0:
            raise RuntimeError(f"crowdsec replay failed (rc={agent.returncode}); see {root / 'agent.log'}")
        overflows = _overflows(root / "agent.log")
        # The agent pushes its last alerts before it exits; wait until the LAPI has stored them all.
        alerts = _wait_alerts(root / "crowdsec.db", len(overflows), timeout=60)
        lapi_peak = _vm_hwm_mib(lapi.pid)
    finally:
        if lapi is not None and lapi.poll() is None:
            lapi.send_signal(signal.SIGTERM)
            try:
                lapi.wait(timeout=30)
            except subprocess.TimeoutExpired:
                lapi.kill()
                lapi.wait()
        lapi_out.close()
        agent_out.close()
        if netns:
            netns.close()

    flagged: set[str] = set()
    per_scenario: Counter[str] = Counter()
    ips_per_scenario: dict[str, set[str]] = {}
    for scenario, scope, value in alerts:
        ip = normalise_ip(value) if scope.lower() == "ip" else None
        per_scenario[scenario] += 1
        if ip:
            flagged.add(ip)
            ips_per_scenario.setdefault(scenario, set()).add(ip)
    return PeerRun(
        system="crowdsec",
        flagged=flagged,
        lines=count_lines(log),
        seconds=agent.seconds,
        peak_rss_mib=agent.maxrss_mib + lapi_peak,
        details={
            "version": version(),
            "alerts": len(alerts),
            "alerts_per_scenario": dict(per_scenario.most_common()),
            "ips_per_scenario": {k: len(v) for k, v in sorted(ips_per_scenario.items())},
            "overflows_in_agent_log": len(overflows),
            "agent_peak_rss_mib": round(agent.maxrss_mib, 1),
            "lapi_peak_rss_mib": round(lapi_peak, 1),
            "scenarios": [n for n, _ in items["scenarios"]],
            "parsers": [n for n, _ in items["parsers"]],
            "data_aliases": aliases,
            "network": "private netns (unshare -n)" if netns else f"host loopback 127.0.0.1:{port}",
            "workdir": str(root),
            "command": f"crowdsec -c {cfg} -no-api -dsn file://{log} -type nginx",
        },
    )


def _wait_listening(lapi: subprocess.Popen[bytes], port: int, timeout: float) -> list[tuple[str, int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lapi.poll() is not None:
            raise RuntimeError(f"crowdsec LAPI exited early (rc={lapi.returncode})")
        socks = _listening(lapi.pid)
        if any(p == port for _, p in socks):
            return socks
        time.sleep(0.1)
    raise TimeoutError(f"crowdsec LAPI did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def _overflows(agent_log: Path) -> list[tuple[str, str]]:
    """``(ip, scenario)`` of each bucket overflow the agent logged (cross-check for the alert count)."""
    out: list[tuple[str, str]] = []
    with agent_log.open(errors="replace") as f:
        for line in f:
            if "performed '" in line and (m := _OVERFLOW.search(line)):
                out.append((m.group(1), m.group(2)))
    return out


def _wait_alerts(db: Path, expected: int, timeout: float) -> list[tuple[str, str, str]]:
    deadline = time.monotonic() + timeout
    rows: list[tuple[str, str, str]] = []
    while True:
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
            try:
                rows = con.execute("SELECT scenario, source_scope, source_value FROM alerts").fetchall()
            finally:
                con.close()
        except sqlite3.OperationalError:
            rows = []
        if len(rows) >= expected or time.monotonic() > deadline:
            if len(rows) < expected:
                raise RuntimeError(f"LAPI stored {len(rows)} alerts, the agent logged {expected} overflows")
            return rows
        time.sleep(0.2)
