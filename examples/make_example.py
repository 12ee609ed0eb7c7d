#!/usr/bin/env python3
# ruff: noqa: E501  (long literal log lines and provenance text)
"""Regenerate examples/access.log, examples/labels.csv and examples/PROVENANCE.md.

    python examples/make_example.py [--src /work/shared/datasets] [--out examples]

Real benign background (a contiguous slice of elastic-apache-logs) plus a few real attacker
clients from other public logs, IP-remapped and time-shifted into the slice's window.
Reuses the mixing code of bench/datasets/build.py (standard library only, deterministic).
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location(
    "mlguard_bench_build", HERE.parent / "bench/datasets/build.py"
)
assert _spec and _spec.loader
build = importlib.util.module_from_spec(_spec)
sys.modules["mlguard_bench_build"] = build
_spec.loader.exec_module(build)

SEED = "mlguard-example:1"
BG_LINES = (1, 3000)  # 1-based, inclusive, of elastic apache_logs.log.gz
N_NETSPARKER = 400
N_BRUTEFORCE = 300
N_SPAMBOTS = 4
WORM_RE = re.compile(rb"cmd\.exe|root\.exe|default\.ida")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=Path(build.DEFAULT_SRC))
    ap.add_argument("--out", type=Path, default=HERE)
    a = ap.parse_args(argv)
    src = a.src
    rng = random.Random(SEED)

    bg = build.load_elastic(src, BG_LINES)

    net = next(c for c in build.load_ocatak(src) if c.actor == "netsparker")
    net.lines = net.lines[:N_NETSPARKER]  # the first 400 requests of the scan (by time)

    bf = build.almhuette_client(src, "193.106.31.130", "joomla-bruteforce", b"POST")
    bf.lines = bf.lines[:N_BRUTEFORCE]

    bots = sorted(build.load_basjes(src), key=lambda c: c.key)
    posters = [
        c
        for c in bots
        if 6 <= len(c.lines) <= 20 and any(b'"POST /join_form' in ln for _, _, ln in c.lines)
    ]
    spam = rng.sample(posters, N_SPAMBOTS)

    worms = sorted(
        (
            c
            for c in build.load_sotm34(src)
            if sum(bool(WORM_RE.search(ln)) for _, _, ln in c.lines) >= 10 and c.span().days < 1
        ),
        key=lambda c: c.key,
    )
    worm = rng.choice(worms)
    worm.actor = "iis-worm"

    clients = [net, bf, *spam, worm]
    alloc = build.IPAllocator(rng, build.all_source_ips(src))
    build.place_clients(clients, bg, rng, alloc, v6_fraction=0, min_v6=0)
    net.new_ip = alloc.v6()  # at least one IPv6 client

    a.out.mkdir(parents=True, exist_ok=True)
    tmp = a.out / "_tmp_example"
    summary = build.write_scenario(tmp, "x", bg, clients)
    (a.out / "access.log").write_bytes((tmp / "x/access.log").read_bytes())
    (a.out / "labels.csv").write_bytes((tmp / "x/labels.csv").read_bytes())
    for f in (tmp / "x").iterdir():
        f.unlink()
    (tmp / "x").rmdir()
    tmp.rmdir()

    n_bg = len(bg.lines)
    total = n_bg + sum(len(c.lines) for c in clients)
    wp = sorted(ip for ip, (lab, _) in bg.labels.items() if lab == "malicious")
    rows = "\n".join(
        f"| `{c.new_ip}` | {c.actor} | `{c.source}/{c.file}` | `{c.orig_ip}` | {len(c.lines)} "
        f"| {min(x[1] for x in c.lines)}–{max(x[1] for x in c.lines)} | {int(c.shift.total_seconds()):+d} s |"
        for c in clients
    )
    doc = f"""# examples/ — provenance

`access.log` ({total} lines) is **real traffic**, assembled by `make_example.py` (deterministic;
re-run `python examples/make_example.py` to regenerate byte-identical files). `labels.csv`
(`ip,label,actor`) gives a label for every client IP in the log.

## Background: {n_bg} real lines, unchanged
Lines {BG_LINES[0]}–{BG_LINES[1]} of `elastic-apache-logs/apache_logs.log.gz` (GitHub `elastic/examples`,
`Common Data Formats/apache_logs/apache_logs`, Apache-2.0; semicomplete.com, May 2015, +0000), byte-exact,
client IPs unchanged. They are re-ordered by timestamp only (the source file is not strictly sorted).
Labels: {len(bg.labels)} client IPs; `benign` (actor `crawler` if the user agent contains bot/spider/crawl,
else `benign`) except {len(wp)} IPs that request WordPress/admin login pages on a non-WordPress site
(`malicious`, actor `wp-prober`: {", ".join(wp) or "none"}). These are **weak** labels: unlabelled
elastic traffic is assumed benign, nobody verified it. Note the source keeps only minute :05 of every hour.

## Injected attackers: real lines, IP and time shifted
Each injected client is a real client from another public log. For every one of its lines **only two
things were changed**: the client IP (replaced by a fresh public-looking address that collides with no
IP in any source log) and the timestamp (shifted by one constant per client so it lands inside the
background window; the timezone was converted to +0000 like the background). Method, path, status,
bytes, referer and user agent are byte-exact (the almhuette lines keep their extra trailing `"-"` field).

| new IP | actor | source file | original IP | lines | source line range | time shift |
|---|---|---|---|---|---|---|
{rows}

- `netsparker`: the first {N_NETSPARKER} requests (by time) of the Netsparker scan in
  `ocatak-scanner-logs/netsparker.log.gz` (M. Baş Seyyar, F. Ö. Çatak, E. Gül, Applied Computing and
  Informatics 14(1), 2018; GitHub `ocatak/apache-http-logs`), lab traffic against DVWA; spoofs a Chrome UA.
  Given an IPv6 address on purpose.
- `joomla-bruteforce`: the first {N_BRUTEFORCE} `POST /administrator/index.php` lines of 193.106.31.130 in
  `almhuette-raith-sample/access.log.gz` (public log of www.almhuette-raith.at, via GitHub
  `42ibaran/bots_detection`).
- `spam-bot`: {N_SPAMBOTS} registration/login spam bots (all their lines) from
  `basjes-hackers-access/hackers-access.log` (GitHub `nielsbasjes/logparser`, Apache-2.0), chosen among
  clients with 6–20 requests that `POST /join_form`.
- `iis-worm`: one client of the 2005 Honeynet SotM34 honeypot log (`sotm34-honeynet/access.log`,
  labelled malicious by UAHL) probing for `cmd.exe`/`root.exe`.

Source line numbers are 1-based in the files of `/work/shared/datasets/` (see each folder's `SOURCE.md`).

## Caveats
- Injected scanners/brute-forcers have their own real timing, which is continuous, while the background
  only has minute :05 of each hour; do not read anything into minute-of-hour.
- Injected requests keep the paths, statuses and sizes of the site they originally hit (DVWA lab,
  Joomla, Plone, a 2005 honeypot), so e.g. a spam bot's `POST /join_form` got 200 there although this
  site has no such page. Path/status statistics of attackers therefore do not match this site exactly.
- Summary: {summary.split(": ", 1)[1]}
"""
    (a.out / "PROVENANCE.md").write_text(doc, encoding="utf-8")
    print(summary.replace("x:", "examples:", 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
