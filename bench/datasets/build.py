#!/usr/bin/env python3

"""Build labelled evaluation scenarios for MLGuard from public real access logs.

Usage:
    python bench/datasets/build.py --out DIR [--seed N] [--src DATASETS_DIR] [--only NAME ...]

For each scenario writes ``DIR/<scenario>/access.log`` (lines sorted by time),
``DIR/<scenario>/labels.csv`` (``ip,label,actor``) and ``DIR/<scenario>/clients.csv``
(provenance of every injected client: new ip, source file, original ip, time shift, lines).

Mixing = real benign background (elastic-apache-logs, unchanged) + real attacker clients
from other public logs with their IPs re-mapped to fresh public-looking addresses and
their timestamps shifted into the background's time window (each client keeps its own
relative timing; the timezone offset is rewritten to the background's). Apart from the
IP and the timestamp, injected lines are byte-exact copies of the source lines.

Standard library only. Deterministic for a given ``--seed`` (default 1). See README.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import ipaddress
import os
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SRC = os.environ.get("MLGUARD_DATASETS", "/work/shared/datasets")

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
MONTH_NUM = {m.encode(): i + 1 for i, m in enumerate(MONTHS)}

# client, ident, user, [dd/Mon/yyyy:HH:MM:SS +zzzz]
HEAD_RE = re.compile(
    rb"^(\S+) \S+ \S+ \[(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})\] "
)
# full combined format prefix: ... "request" status bytes "referer" "user-agent" (extra fields allowed)
_Q = rb'"(?:[^"\\]|\\.)*"'
COMBINED_RE = re.compile(
    rb"^\S+ \S+ \S+ \[[^\]]+\] " + _Q + rb" (?:\d{3}|-) (?:\d+|-) " + _Q + rb" " + _Q + rb"(?: |$)"
)
BOT_RE = re.compile(r"bot|spider|crawl", re.I)


# --------------------------------------------------------------------------- parsing


def parse_time(line: bytes) -> tuple[re.Match[bytes], dt.datetime] | None:
    m = HEAD_RE.match(line)
    if not m or m[3] not in MONTH_NUM:
        return None
    off = dt.timedelta(hours=int(m[9]), minutes=int(m[10]))
    if m[8] == b"-":
        off = -off
    t = dt.datetime(
        int(m[4]),
        MONTH_NUM[m[3]],
        int(m[2]),
        int(m[5]),
        int(m[6]),
        int(m[7]),
        tzinfo=dt.timezone(off),
    )
    return m, t


def fmt_time(t: dt.datetime) -> bytes:
    off = t.utcoffset() or dt.timedelta(0)
    sign = "-" if off < dt.timedelta(0) else "+"
    mins = abs(int(off.total_seconds())) // 60
    return (
        f"{t.day:02d}/{MONTHS[t.month - 1]}/{t.year:04d}:{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        f" {sign}{mins // 60:02d}{mins % 60:02d}"
    ).encode()


def rewrite(line: bytes, new_ip: str, shift: dt.timedelta, out_tz: dt.tzinfo) -> bytes:
    """Replace the client field and the timestamp; every other byte is kept."""
    parsed = parse_time(line)
    assert parsed is not None, line[:120]
    m, t = parsed
    nt = (t + shift).astimezone(out_tz)
    ts_start = m.start(2)  # just after '['
    ts_end = m.end(10)  # just before ']'
    return new_ip.encode() + line[m.end(1) : ts_start] + fmt_time(nt) + line[ts_end:]


def read_lines(path: Path) -> list[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- model


@dataclass
class Client:
    source: str  # dataset folder
    file: str  # file inside the dataset folder (or test name)
    orig_ip: str
    label: str
    actor: str
    # (utc time, original 1-based line number, raw line) sorted by time
    lines: list[tuple[dt.datetime, int, bytes]] = field(default_factory=list)
    new_ip: str = ""
    shift: dt.timedelta = dt.timedelta(0)
    dropped: int = 0

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.source, self.file, self.orig_ip)

    def span(self) -> dt.timedelta:
        return self.lines[-1][0] - self.lines[0][0]


@dataclass
class Background:
    lines: list[tuple[dt.datetime, int, bytes]]  # file order
    labels: dict[str, tuple[str, str]]  # ip -> (label, actor)
    tz: dt.tzinfo
    start: dt.datetime
    end: dt.datetime


def clients_from_file(source: str, fname: str, path: Path, label_of, keep_line=None) -> dict[str, Client]:
    """Group a log file's lines by client IP. label_of(ip) -> (label, actor) or None (skip)."""
    out: dict[str, Client] = {}
    for no, line in enumerate(read_lines(path), 1):
        if keep_line is not None and not keep_line(line):
            continue
        parsed = parse_time(line)
        if parsed is None:
            continue
        m, t = parsed
        ip = m[1].decode("ascii", "replace")
        la = label_of(ip)
        if la is None:
            continue
        c = out.get(ip)
        if c is None:
            c = out[ip] = Client(source, fname, ip, la[0], la[1])
        c.lines.append((t.astimezone(dt.UTC), no, line))
    for c in out.values():
        c.lines.sort(key=lambda x: (x[0], x[1]))
    return out


# --------------------------------------------------------------------------- sources


def load_elastic(src: Path, line_range: tuple[int, int] | None = None) -> Background:
    d = src / "elastic-apache-logs"
    weak = {r["ip"]: r["label"] for r in read_csv(d / "weak_labels.csv")}
    lines = []
    uas: dict[str, bool] = {}
    tz = None
    for no, line in enumerate(read_lines(d / "apache_logs.log.gz"), 1):
        if line_range and not (line_range[0] <= no <= line_range[1]):
            continue
        parsed = parse_time(line)
        assert parsed is not None, no
        m, t = parsed
        tz = tz or t.tzinfo
        ip = m[1].decode()
        lines.append((t.astimezone(dt.UTC), no, line))
        ua = line.rsplit(b'"', 2)[-2] if line.endswith(b'"') else line.rsplit(b'"', 1)[-1]
        uas[ip] = uas.get(ip, False) or bool(BOT_RE.search(ua.decode("utf-8", "replace")))
    labels = {}
    for ip, is_bot in uas.items():
        if weak.get(ip) == "malicious":
            labels[ip] = ("malicious", "wp-prober")
        else:
            labels[ip] = ("benign", "crawler" if is_bot else "benign")
    times = [x[0] for x in lines]
    return Background(lines, labels, tz, min(times), max(times))


def load_ocatak(src: Path) -> list[Client]:
    d = src / "ocatak-scanner-logs"
    out = []
    spec = [
        ("acunetix.log.gz", {"192.168.4.25": ("malicious", "acunetix")}),
        ("netsparker.log.gz", {"192.168.4.164": ("malicious", "netsparker")}),
        (
            "w3af.log",
            {
                "192.168.4.163": ("malicious", "w3af"),
                "192.168.1.20": ("malicious", "w3af-small"),
                "192.168.4.25": ("benign", "dvwa-operator"),
            },
        ),
    ]
    for fname, lab in spec:
        out += clients_from_file("ocatak-scanner-logs", fname, d / fname, lab.get).values()
    return out


def load_basjes(src: Path) -> list[Client]:
    d = src / "basjes-hackers-access"
    mal = {r["ip"] for r in read_csv(d / "labels.csv") if r["label"] == "malicious"}
    cl = clients_from_file(
        "basjes-hackers-access",
        "hackers-access.log",
        d / "hackers-access.log",
        lambda ip: ("malicious", "spam-bot") if ip in mal else None,
    )
    return list(cl.values())


def load_sotm34(src: Path) -> list[Client]:
    d = src / "sotm34-honeynet"
    mal = {r["ip"] for r in read_csv(d / "labels.csv") if r["label"] == "malicious"}
    cl = clients_from_file(
        "sotm34-honeynet",
        "access.log",
        d / "access.log",
        lambda ip: ("malicious", "honeynet-attacker") if ip in mal else None,
    )
    return list(cl.values())


def cs_actor(source: str) -> str:
    first = source.split(";")[0]
    return "cs-" + first.split("/")[-1].lower()


def load_crowdsec(src: Path, report: list[str] | None = None) -> list[Client]:
    d = src / "crowdsec-hub-tests"
    index = {r["test"]: r for r in read_csv(d / "index.csv")}
    by_test: dict[str, dict[str, tuple[str, str]]] = {}
    for r in read_csv(d / "labels.csv"):
        if r["label"] != "malicious":
            continue
        if index.get(r["test"], {}).get("log_type") not in ("nginx", "apache2"):
            continue
        by_test.setdefault(r["test"], {})[r["ip"]] = ("malicious", cs_actor(r["source"]))
    out = []
    skipped_lines = 0
    for test in sorted(by_test):
        path = d / "tests" / test / index[test]["log_file"]
        all_lines = read_lines(path)
        ok = [ln for ln in all_lines if COMBINED_RE.match(ln) and parse_time(ln)]
        skipped_lines += len(all_lines) - len(ok)
        cl = clients_from_file(
            "crowdsec-hub-tests",
            test,
            path,
            by_test[test].get,
            keep_line=lambda ln: bool(COMBINED_RE.match(ln)),
        )
        for ip in by_test[test]:
            if ip not in cl and report is not None:
                report.append(f"crowdsec {test}: malicious {ip} has no combined-format line; skipped")
        out += cl.values()
    if report is not None:
        report.append(f"crowdsec: {skipped_lines} non-combined lines skipped in labelled tests")
    return out


def load_almhuette(src: Path) -> tuple[list[bytes], dict[str, tuple[str, str]]]:
    d = src / "almhuette-raith-sample"
    labels = {}
    for r in read_csv(d / "labels.csv"):
        if r["label"] not in ("malicious", "benign"):
            continue
        s = r["source"].removeprefix("heuristic-")
        actor = s.replace(":", "-").replace("_", "-").lower()
        labels[r["ip"]] = (r["label"], actor)
    return read_lines(d / "access.log.gz"), labels


def almhuette_client(src: Path, ip: str, actor: str, method: bytes | None = None) -> Client:
    d = src / "almhuette-raith-sample"
    cl = clients_from_file(
        "almhuette-raith-sample",
        "access.log.gz",
        d / "access.log.gz",
        lambda x: ("malicious", actor) if x == ip else None,
        keep_line=(lambda ln: f'"{method.decode()} '.encode() in ln) if method else None,
    )
    return cl[ip]


def all_source_ips(src: Path) -> set[str]:
    """Every client IP of every source file used, so fresh IPs never collide with any of them."""
    ips: set[str] = set()
    files = [
        "elastic-apache-logs/apache_logs.log.gz",
        "ocatak-scanner-logs/acunetix.log.gz",
        "ocatak-scanner-logs/netsparker.log.gz",
        "ocatak-scanner-logs/w3af.log",
        "basjes-hackers-access/hackers-access.log",
        "sotm34-honeynet/access.log",
        "almhuette-raith-sample/access.log.gz",
    ]
    for f in files:
        for ln in read_lines(src / f):
            ips.add(ln.split(b" ", 1)[0].decode("ascii", "replace"))
    for r in read_csv(src / "crowdsec-hub-tests/labels.csv"):
        ips.add(r["ip"])
    return ips


# --------------------------------------------------------------------------- IP allocation

V6_PREFIXES = [  # realistic allocated global unicast /32s (hosting / ISP style)
    "2a01:4f8",
    "2a01:4f9",
    "2a02:c207",
    "2a03:b0c0",
    "2604:a880",
    "2001:41d0",
    "2a05:d014",
    "2600:1f18",
    "2406:da18",
    "2a00:1450",
    "2804:14c",
    "2409:8a1e",
    "2a0b:f4c2",
    "2003:e2",
]


class IPAllocator:
    def __init__(self, rng: random.Random, forbidden: set[str]):
        self.rng = rng
        self.used = set(forbidden)

    def v4(self) -> str:
        while True:
            a = self.rng.randint(1, 223)
            ip = ipaddress.IPv4Address((a << 24) | self.rng.getrandbits(16) << 8 | self.rng.randint(1, 254))
            if (
                not ip.is_global
                or ip.is_multicast
                or ip.is_reserved
                or ip in ipaddress.ip_network("100.64.0.0/10")
                or ip in ipaddress.ip_network("198.18.0.0/15")
            ):
                continue
            s = str(ip)
            if s not in self.used:
                self.used.add(s)
                return s

    def v6(self) -> str:
        while True:
            pfx = self.rng.choice(V6_PREFIXES)
            hextets = pfx.split(":")
            rest = [f"{self.rng.getrandbits(16):x}" for _ in range(8 - len(hextets))]
            if self.rng.random() < 0.5:  # many real v6 clients have a short interface id
                rest[-4:-1] = ["0", "0", "0"]
            ip = ipaddress.IPv6Address(":".join(hextets + rest))
            if not ip.is_global or ip in ipaddress.ip_network("2001:db8::/32"):
                continue
            s = ip.compressed
            if s not in self.used:
                self.used.add(s)
                return s


# --------------------------------------------------------------------------- mixing


def place_clients(
    clients: list[Client],
    bg: Background,
    rng: random.Random,
    alloc: IPAllocator,
    v6_fraction: float = 0.03,
    min_v6: int = 1,
) -> None:
    """Assign new IPs and time shifts (in place). Deterministic for rng state and client order."""
    clients.sort(key=lambda c: c.key)
    n_v6 = max(min_v6, round(len(clients) * v6_fraction)) if clients else 0
    v4_only = [c for c in clients if ":" not in c.orig_ip]
    v6_pick = {id(c) for c in rng.sample(v4_only, min(n_v6, len(v4_only)))}
    window = (bg.end - bg.start).total_seconds()
    for c in clients:
        c.new_ip = alloc.v6() if (":" in c.orig_ip or id(c) in v6_pick) else alloc.v4()
        span = c.span().total_seconds()
        start = bg.start + dt.timedelta(seconds=rng.randint(0, int(max(0, window - span))))
        c.shift = start - c.lines[0][0]
        if span > window:  # longer than the background window: keep the part that fits
            keep = [x for x in c.lines if x[0] + c.shift <= bg.end]
            c.dropped = len(c.lines) - len(keep)
            c.lines = keep


def write_scenario(
    out: Path,
    name: str,
    bg: Background | None,
    clients: list[Client],
    raw: list[tuple[dt.datetime, int, bytes]] | None = None,
    labels: dict[str, tuple[str, str]] | None = None,
) -> str:
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[dt.datetime, int, int, bytes]] = []
    lab: dict[str, tuple[str, str]] = {}
    if bg is not None:
        rows += [(t, 0, no, ln) for t, no, ln in bg.lines]
        lab.update(bg.labels)
    if raw is not None:
        rows += [(t, 0, no, ln) for t, no, ln in raw]
        lab.update(labels or {})
    tz = bg.tz if bg is not None else dt.UTC
    for i, c in enumerate(clients, 1):
        for t, no, ln in c.lines:
            rows.append((t + c.shift, i, no, rewrite(ln, c.new_ip, c.shift, tz)))
        lab[c.new_ip] = (c.label, c.actor)
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    present: set[str] = set()
    with open(d / "access.log", "wb") as f:
        for r in rows:
            f.write(r[3] + b"\n")
            present.add(r[3].split(b" ", 1)[0].decode("ascii", "replace"))
    lab = {ip: v for ip, v in lab.items() if ip in present}
    with open(d / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["ip", "label", "actor"])
        for ip in sorted(lab):
            w.writerow([ip, *lab[ip]])
    with open(d / "clients.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(
            [
                "new_ip",
                "label",
                "actor",
                "source",
                "file",
                "orig_ip",
                "shift_seconds",
                "lines",
                "dropped_lines",
                "orig_first_line",
                "orig_last_line",
            ]
        )
        for c in clients:
            nos = [x[1] for x in c.lines]
            w.writerow(
                [
                    c.new_ip,
                    c.label,
                    c.actor,
                    c.source,
                    c.file,
                    c.orig_ip,
                    int(c.shift.total_seconds()),
                    len(c.lines),
                    c.dropped,
                    min(nos),
                    max(nos),
                ]
            )
    mal = sum(1 for v in lab.values() if v[0] == "malicious")
    ben = sum(1 for v in lab.values() if v[0] == "benign")
    return (
        f"{name}: lines={len(rows)} clients={len(present)} malicious={mal} benign={ben}"
        f" unlabelled={len(present) - mal - ben}"
    )


def contiguous_chunk(c: Client, max_lines: int, rng: random.Random) -> Client:
    if len(c.lines) > max_lines:
        i = rng.randint(0, len(c.lines) - max_lines)
        c.lines = c.lines[i : i + max_lines]
    return c


# --------------------------------------------------------------------------- scenarios


def build(src: Path, out: Path, seed: int, only: list[str] | None = None) -> list[str]:
    report: list[str] = []
    bg = load_elastic(src)
    forbidden = all_source_ips(src)
    summaries = []

    def want(n: str) -> bool:
        return not only or n in only

    def rng_for(n: str) -> random.Random:
        return random.Random(f"mlguard-bench:{seed}:{n}")

    def note_drops(name: str, cl: list[Client]) -> None:
        dropped = [c for c in cl if c.dropped]
        if dropped:
            report.append(
                f"{name}: {len(dropped)} clients longer than the background window were cut"
                f" ({sum(c.dropped for c in dropped)} lines dropped)"
            )

    if want("scanners"):
        r = rng_for("scanners")
        cl = load_ocatak(src)
        place_clients(cl, bg, r, IPAllocator(r, forbidden))
        summaries.append(write_scenario(out, "scanners", bg, cl))
    if want("spam-bots"):
        r = rng_for("spam-bots")
        cl = load_basjes(src)
        place_clients(cl, bg, r, IPAllocator(r, forbidden))
        note_drops("spam-bots", cl)
        summaries.append(write_scenario(out, "spam-bots", bg, cl))
    if want("honeynet"):
        r = rng_for("honeynet")
        cl = load_sotm34(src)
        place_clients(cl, bg, r, IPAllocator(r, forbidden))
        note_drops("honeynet", cl)
        summaries.append(write_scenario(out, "honeynet", bg, cl))
    if want("mixed"):
        r = rng_for("mixed")
        oc = sorted(load_ocatak(src), key=lambda c: c.key)
        oc = [c for c in oc if c.label == "malicious"]
        cl = [contiguous_chunk(c, 1500, r) for c in r.sample(oc, 2)]
        cl += r.sample(sorted(load_basjes(src), key=lambda c: c.key), 60)
        cl += r.sample(sorted(load_sotm34(src), key=lambda c: c.key), 40)
        cl.append(contiguous_chunk(almhuette_client(src, "193.106.31.130", "joomla-bf", b"POST"), 800, r))
        cl += load_crowdsec(src, report)
        place_clients(cl, bg, r, IPAllocator(r, forbidden), v6_fraction=0.04)
        note_drops("mixed", cl)
        summaries.append(write_scenario(out, "mixed", bg, cl))
    if want("almhuette"):
        lines, labels = load_almhuette(src)
        raw = []
        for no, ln in enumerate(lines, 1):
            p = parse_time(ln)
            assert p is not None
            raw.append((p[1].astimezone(dt.UTC), no, ln))
        summaries.append(write_scenario(out, "almhuette", None, [], raw=raw, labels=labels))
    for s in report:
        print("note:", s, file=sys.stderr)
    return summaries


SCENARIOS = ["scanners", "spam-bots", "honeynet", "mixed", "almhuette"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--seed", type=int, default=1, help="seed (default 1; keep e.g. 2, 3 held out)")
    ap.add_argument(
        "--src",
        type=Path,
        default=Path(DEFAULT_SRC),
        help="public datasets folder (default $MLGUARD_DATASETS or %(default)s)",
    )
    ap.add_argument("--only", nargs="*", choices=SCENARIOS, help="build only these scenarios")
    a = ap.parse_args(argv)
    for line in build(a.src, a.out, a.seed, a.only):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
