"""Attack jobs: real tools from Debian packages, each aimed at the lab's nginx on 127.0.0.1.

Each job is one tool invocation with one client address, announced through the tool's own
header option (``X-Forwarded-For``).  nmap has no generic header option, so it goes through a
per-actor relay (``bench.lab.xffproxy``).  Distributed campaigns (``*-rotating``) are one tool
invocation too, but through a *rotating* relay that announces a new address from the job's pool
every few requests, so one tool run shows up as many clients.  Every job is bounded: a bounded
word/password list or module set, a real-time timeout (the process group is killed on expiry)
and, where the tool has one, its own time limit.  Throttled ("slow") jobs use the tool's own delay
option.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bench.lab.benign import BROWSER_UAS
from bench.lab.ips import IpAllocator

DIRB_LIST = Path("/usr/share/dirb/wordlists/big.txt")
DIRB_SMALL = Path("/usr/share/dirb/wordlists/common.txt")

# A leaked-password style list: the head of every public breach compilation looks like this.
COMMON_PASSWORDS = [
    "123456", "password", "123456789", "12345678", "12345", "qwerty", "1234567", "111111", "123123",
    "abc123", "password1", "1234", "iloveyou", "1q2w3e4r", "000000", "qwerty123", "zaq12wsx", "dragon",
    "sunshine", "princess", "letmein", "654321", "monkey", "27653", "1qaz2wsx", "123321", "qwertyuiop",
    "superman", "asdfghjkl", "football", "baseball", "welcome", "admin", "admin123", "master", "shadow",
    "michael", "jennifer", "trustno1", "hunter2", "starwars", "passw0rd", "Password1", "Password123",
    "Summer2024!", "Winter2025!", "Spring2026", "Autumn2025", "changeme", "secret", "solo", "login",
    "welcome1", "P@ssw0rd", "Qwerty1!", "abcd1234", "charlie", "donald", "freedom", "whatever", "ninja",
    "mustang", "access", "flower", "hello123", "loveme", "batman", "lovely", "666666", "888888", "121212",
]
_FIRST = ["john", "mike", "sarah", "emma", "david", "laura", "chris", "anna", "tom", "lisa", "mark",
          "julia", "paul", "nina", "peter", "kate", "alex", "maria", "steve", "olga", "ben", "greta"]
_DOMAINS = ["gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "web.de", "mail.ru", "aol.com",
            "gmx.net", "icloud.com", "yandex.ru"]


@dataclass
class Job:
    actor: str                  # label actor, e.g. "gobuster", "hydra-stuffing"
    ip: str
    argv: list[str]
    start: float                # log seconds from run start
    timeout: float              # real seconds
    mode: str                   # noisy | slow | stuffing
    via_proxy: bool = False     # nmap: argv contains {PROXY_PORT}, filled in when the relay starts
    proxy_cap: int = 0
    proxy_delay: float = 0.0    # real seconds the relay waits before each request (throttling)
    files: dict[str, str] = field(default_factory=dict)  # name -> content, written to the job dir
    rotation: list[tuple[str, int]] = field(default_factory=list)  # rotating relay: (address, units)
    unit_start: str | None = None  # rotating relay: regex on "METHOD target" that starts a unit

    def addresses(self) -> list[str]:
        """Every address this job may be seen from (the label set): its pool, or its one IP."""
        return [ip for ip, _ in self.rotation] if self.rotation else [self.ip]


@dataclass
class Ctx:
    port: int
    speed: float
    work: Path
    rng: random.Random
    accounts: dict[str, str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def _xff(ip: str) -> str:
    return f"X-Forwarded-For: {ip}"


def _wordlist(ctx: Ctx, n: int, small: bool = False) -> str:
    """``n`` consecutive words from a random offset of a dirb list: bounded, seed-deterministic."""
    src = DIRB_SMALL if small else DIRB_LIST
    words = [w for w in src.read_text(errors="replace").splitlines() if w and not w.startswith("#")]
    start = ctx.rng.randrange(0, max(1, len(words) - n))
    return "\n".join(words[start:start + n]) + "\n"


def _slow_delay(ctx: Ctx) -> float:
    """Real seconds between requests for a low-and-slow job: 2-6 requests per *log* minute."""
    return ctx.rng.uniform(10.0, 30.0) / ctx.speed


def gobuster(ctx: Ctx, ip: str, mode: str, start: float) -> Job:
    n = 2000 if mode == "noisy" else ctx.rng.randint(60, 120)
    argv = ["gobuster", "dir", "-u", ctx.base + "/", "-w", "{DIR}/words.txt", "-H", _xff(ip),
            "-q", "-z", "--no-error", "--timeout", "10s"]
    argv += ["-t", "10"] if mode == "noisy" else ["-t", "1", "--delay", f"{int(_slow_delay(ctx) * 1000)}ms"]
    return Job("gobuster", ip, argv, start, 240 if mode == "noisy" else 900, mode,
               files={"words.txt": _wordlist(ctx, n)})


def dirb(ctx: Ctx, ip: str, mode: str, start: float) -> Job:
    n = 1500 if mode == "noisy" else ctx.rng.randint(60, 120)
    argv = ["dirb", ctx.base + "/", "{DIR}/words.txt", "-H", _xff(ip), "-S", "-r", "-o", "{DIR}/dirb.out"]
    if mode != "noisy":
        argv += ["-z", str(int(_slow_delay(ctx) * 1000))]
    return Job("dirb", ip, argv, start, 240 if mode == "noisy" else 900, mode,
               files={"words.txt": _wordlist(ctx, n, small=True)})


def wfuzz(ctx: Ctx, ip: str, mode: str, start: float) -> Job:
    n = 1500 if mode == "noisy" else ctx.rng.randint(60, 120)
    argv = ["wfuzz", "-w", "{DIR}/words.txt", "-H", _xff(ip), "--hc", "404", "-f", "{DIR}/wfuzz.out,raw"]
    argv += ["-t", "10"] if mode == "noisy" else ["-t", "1", "-s", f"{_slow_delay(ctx):.2f}"]
    argv.append(ctx.base + "/FUZZ")
    return Job("wfuzz", ip, argv, start, 240 if mode == "noisy" else 900, mode,
               files={"words.txt": _wordlist(ctx, n)})


def ffuf(ctx: Ctx, ip: str, mode: str, start: float) -> Job:
    n = 700 if mode == "noisy" else ctx.rng.randint(60, 120)
    argv = ["ffuf", "-u", ctx.base + "/FUZZ", "-w", "{DIR}/words.txt", "-H", _xff(ip), "-s",
            "-o", "{DIR}/ffuf.json"]
    if mode == "noisy":
        argv += ["-t", "20", "-e", ".php,.bak", "-maxtime", "200"]
    else:
        argv += ["-t", "1", "-p", f"{_slow_delay(ctx):.2f}"]
    return Job("ffuf", ip, argv, start, 240 if mode == "noisy" else 900, mode,
               files={"words.txt": _wordlist(ctx, n)})


def sqlmap(ctx: Ctx, ip: str, mode: str, start: float) -> Job:
    target = ctx.rng.choice(("search", "login", "api"))
    argv = ["sqlmap", "--batch", "--headers", _xff(ip), "--output-dir", "{DIR}/out", "--flush-session",
            "--disable-coloring", "--timeout", "10", "--retries", "0"]
    if target == "search":
        argv += ["-u", ctx.base + "/search?q=drill", "-p", "q"]
    elif target == "login":
        argv += ["-u", ctx.base + "/login", "--data", "username=admin&password=test"]
    else:
        argv += ["-u", ctx.base + "/api/products?page=1", "-p", "page"]
    if mode == "noisy":
        argv += ["--level", "3", "--risk", "2", "--threads", "4"]
    else:  # a careful attacker: random browser UA, one thread, a delay
        argv += ["--level", "1", "--random-agent", "--delay", f"{_slow_delay(ctx):.2f}",
                 "--technique", "BT"]
    return Job("sqlmap", ip, argv, start, 180 if mode == "noisy" else 120, mode)


def hydra(ctx: Ctx, ip: str, mode: str, start: float) -> Job:
    """Brute force one account (``admin``) with a common-password list."""
    n = 300 if mode == "noisy" else ctx.rng.randint(20, 40)
    words = list(COMMON_PASSWORDS)
    while len(words) < n:  # extend with breach-style mutations: word + year/suffix
        suffix = ctx.rng.choice(("1", "!", "2024", "2025", "123", "#"))
        words.append(ctx.rng.choice(COMMON_PASSWORDS) + suffix)
    # hydra 9.4 mis-parses an F= condition that precedes an escaped H= header, so F= goes last.
    form = f"/login:username=^USER^&password=^PASS^:H={_hydra_hdr(_xff(ip))}:F=Invalid username or password"
    argv = ["hydra", "-l", "admin", "-P", "{DIR}/pass.txt", "-I", "-o", "{DIR}/hydra.out",
            "-s", str(ctx.port)]
    argv += ["-t", "4"] if mode == "noisy" else ["-c", str(max(1, round(_slow_delay(ctx))))]
    argv += ["127.0.0.1", "http-post-form", form]
    return Job("hydra", ip, argv, start, 240 if mode == "noisy" else 900, mode,
               files={"pass.txt": "\n".join(dict.fromkeys(words[:n])) + "\n"})


def _hydra_hdr(header: str) -> str:
    return header.replace(":", "\\:")


def _leaked_combo(ctx: Ctx) -> str:
    if ctx.rng.random() < 0.15:  # a real user of this site, leaked with a password from elsewhere
        user = ctx.rng.choice(sorted(ctx.accounts))
        pw = ctx.accounts[user] if ctx.rng.random() < 0.1 else ctx.rng.choice(COMMON_PASSWORDS)
    else:
        user = (f"{ctx.rng.choice(_FIRST)}{ctx.rng.choice(('.', '_', ''))}{ctx.rng.choice(_FIRST)}"
                f"{ctx.rng.randint(1, 99)}@{ctx.rng.choice(_DOMAINS)}")
        pw = ctx.rng.choice(COMMON_PASSWORDS)
    return f"{user}:{pw}"


def hydra_stuffing(ctx: Ctx, ip: str, start: float, ua: str | None) -> Job:
    """Credential stuffing from one IP: 2-5 leaked ``email:password`` pairs, hydra ``-C``."""
    combos = [_leaked_combo(ctx) for _ in range(ctx.rng.randint(2, 5))]
    hdr = f":H={_hydra_hdr(_xff(ip))}"
    if ua:  # most stuffing kits rotate browser User-Agents; hydra's H= replaces its own
        hdr += f":H={_hydra_hdr('User-Agent: ' + ua)}"
    form = f"/login:username=^USER^&password=^PASS^{hdr}:F=Invalid username or password"
    argv = ["hydra", "-C", "{DIR}/combos.txt", "-I", "-t", "1", "-o", "{DIR}/hydra.out",
            "-s", str(ctx.port), "127.0.0.1", "http-post-form", form]
    return Job("hydra-stuffing", ip, argv, start, 60, "stuffing",
               files={"combos.txt": "\n".join(combos) + "\n"})


def whatweb(ctx: Ctx, ip: str, mode: str, start: float) -> Job:
    argv = ["whatweb", "--header", f"X-Forwarded-For:{ip}", "-q", "--no-errors",
            "--log-brief", "{DIR}/ww.txt"]
    argv += ["-a", "3"] if mode == "noisy" else ["-a", "1", f"--wait={max(1, round(_slow_delay(ctx)))}"]
    argv += [ctx.base + "/", ctx.base + "/login", ctx.base + "/blog/"]
    return Job("whatweb", ip, argv, start, 180 if mode == "noisy" else 300, mode)


def wapiti(ctx: Ctx, ip: str, mode: str, start: float) -> Job:
    argv = ["wapiti", "-u", ctx.base + "/", "-H", _xff(ip), "--flush-session", "--store-session",
            "{DIR}/session", "-m", "sql,blindsql,xss,exec,file,crlf,redirect,backup,htaccess",
            "-d", "2", "--max-links-per-page", "20", "--max-files-per-dir", "15",
            "--max-scan-time", "150", "--max-attack-time", "25", "-t", "10",
            "-f", "txt", "-o", "{DIR}/report.txt", "-v", "0", "--no-bugreport"]
    return Job("wapiti", ip, argv, start, 200, mode)


def nmap(ctx: Ctx, ip: str, mode: str, start: float) -> Job:
    scripts = ("http-enum,http-title,http-headers,http-methods,http-robots.txt,http-server-header,"
               "http-config-backup,http-userdir-enum" if mode == "noisy" else
               "http-title,http-headers,http-robots.txt,http-methods")
    argv = ["nmap", "-sT", "-Pn", "-n", "-p", "{PROXY_PORT}", "--script", scripts,
            "--script-timeout", "150s", "-oN", "{DIR}/nmap.txt", "127.0.0.1"]
    return Job("nmap", ip, argv, start, 200 if mode == "noisy" else 600, mode, via_proxy=True,
               proxy_cap=4000 if mode == "noisy" else 60,
               proxy_delay=0.0 if mode == "noisy" else _slow_delay(ctx))


# ---------------------------------------------------------------------------------------------
# Distributed campaigns: one tool run behind a rotating relay (bench.lab.xffproxy rotating mode).
# The tool talks to the relay ({PROXY_PORT}); the relay forwards each request to nginx's
# PROXY-protocol port announcing the current address of the job's pool.  gobuster and wget use the
# relay as their HTTP proxy for the site's name (never resolved: a proxy client sends the URL to the
# proxy), so Host and Referer name the site as a browser's do; hydra (whose proxy support resolves
# the target itself) is aimed at the relay's port directly.
SITE_URL = "http://www.larkspur-tools.example"


def _pool(ips: IpAllocator, n: int, blocks: int, block_size: int, v6_share: float,
          rng: random.Random) -> list[str]:
    """``n`` addresses: ``blocks`` /24 bursts (a proxy provider's subnets) + scattered ones."""
    addrs = [ip for _ in range(blocks) for ip in ips.v4_block(block_size)]
    while len(addrs) < n:
        addrs.append(ips.v6() if rng.random() < v6_share else ips.v4())
    addrs = addrs[:n]
    rng.shuffle(addrs)  # a rotating service hands out subnet neighbours interleaved with the rest
    return addrs


def stuffing_rotating(ctx: Ctx, ips: IpAllocator, start: float, scale: float = 1.0) -> Job:
    """Credential stuffing over ~100-150 addresses: one ``hydra -C`` run, 2-4 tries per address.

    hydra -t 1 sends ``GET /login`` then ``POST /login`` per try; the relay's unit is one try
    (a unit starts at ``GET /login``), so both requests of a try leave from the same address.
    """
    n = max(5, round(ctx.rng.randint(110, 150) * scale))
    pool = _pool(ips, n, blocks=max(1, n // 30), block_size=6, v6_share=0.0, rng=ctx.rng)
    rotation = [(ip, ctx.rng.choices((2, 3, 4), weights=(1, 2, 1))[0]) for ip in pool]
    combos = [_leaked_combo(ctx) for _ in range(sum(k for _, k in rotation))]
    ua = ctx.rng.choice(BROWSER_UAS)
    form = (f"/login:username=^USER^&password=^PASS^:H={_hydra_hdr('User-Agent: ' + ua)}"
            ":F=Invalid username or password")
    argv = ["hydra", "-C", "{DIR}/combos.txt", "-I", "-t", "1", "-o", "{DIR}/hydra.out",
            "-s", "{PROXY_PORT}", "127.0.0.1", "http-post-form", form]
    # ~7 requests per real second on its own; the relay's hold brings it to ~4 (x60: ~2-3 log hours).
    return Job("stuffing-rotating", pool[0], argv, start, 420, "rotating", via_proxy=True,
               proxy_delay=0.08, files={"combos.txt": "\n".join(combos) + "\n"},
               rotation=rotation, unit_start=r"GET /login\b")


def dirprobe_rotating(ctx: Ctx, ips: IpAllocator, start: float, scale: float = 1.0) -> Job:
    """A gobuster directory probe (600-1000 words) split across ~100 addresses, 5-10 requests each."""
    words = ctx.rng.randint(600, 1000)
    need = words + 1 + 10  # + gobuster's wildcard check + slack
    per: list[int] = []
    while sum(per) < need:
        per.append(ctx.rng.randint(5, 10))
    pool = _pool(ips, len(per), blocks=2, block_size=8, v6_share=0.0, rng=ctx.rng)
    rotation = list(zip(pool, per, strict=True))
    ua = ctx.rng.choice(BROWSER_UAS)
    argv = ["gobuster", "dir", "-u", SITE_URL + "/", "--proxy", "http://127.0.0.1:{PROXY_PORT}",
            "-w", "{DIR}/words.txt", "-a", ua, "-q", "-z", "--no-error", "--timeout", "10s", "-t", "3"]
    return Job("dirprobe-rotating", pool[0], argv, start, 300, "rotating", via_proxy=True,
               proxy_delay=0.3, files={"words.txt": _wordlist(ctx, words)}, rotation=rotation)


def scraper_rotating(ctx: Ctx, ips: IpAllocator, start: float, scale: float = 1.0) -> Job:
    """A site scrape with ``wget --recursive --level 3`` (robots.txt ignored, browser UA), a new
    address every 3-6 requests; some residential proxies are IPv6."""
    per = [ctx.rng.randint(3, 6) for _ in range(22)]  # >= 66 requests; a full crawl is ~62
    pool = _pool(ips, len(per), blocks=1, block_size=6, v6_share=0.15, rng=ctx.rng)
    rotation = list(zip(pool, per, strict=True))
    ua = ctx.rng.choice(BROWSER_UAS)
    argv = ["wget", "--recursive", "--level", "3", "-e", "robots=off", "--no-verbose",
            "--user-agent", ua, "--wait", "0.5", "--random-wait", "--timeout", "10", "--tries", "1",
            "-e", "use_proxy=on", "-e", "http_proxy=http://127.0.0.1:{PROXY_PORT}",
            "--directory-prefix", "{DIR}/mirror", SITE_URL + "/"]
    return Job("scraper-rotating", pool[0], argv, start, 240, "rotating", via_proxy=True,
               files={}, rotation=rotation)


CAMPAIGNS = {"stuffing-rotating": stuffing_rotating, "dirprobe-rotating": dirprobe_rotating,
             "scraper-rotating": scraper_rotating}

BUILDERS = {"gobuster": gobuster, "dirb": dirb, "wfuzz": wfuzz, "ffuf": ffuf, "sqlmap": sqlmap,
            "hydra": hydra, "whatweb": whatweb, "wapiti": wapiti, "nmap": nmap}
