"""Attack jobs: real tools from Debian packages, each aimed at the lab's nginx on 127.0.0.1.

Each job is one tool invocation with one client address, announced through the tool's own
header option (``X-Forwarded-For``).  nmap has no generic header option, so it goes through a
per-actor relay (``bench.lab.xffproxy``).  Every job is bounded: a bounded word/password list or
module set, a real-time timeout (the process group is killed on expiry) and, where the tool has
one, its own time limit.  Throttled ("slow") jobs use the tool's own delay option.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

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


def hydra_stuffing(ctx: Ctx, ip: str, start: float, ua: str | None) -> Job:
    """Credential stuffing from one IP: 2-5 leaked ``email:password`` pairs, hydra ``-C``."""
    real_users = sorted(ctx.accounts)
    combos = []
    for _ in range(ctx.rng.randint(2, 5)):
        if ctx.rng.random() < 0.15:  # a real user of this site, leaked with a password from elsewhere
            user = ctx.rng.choice(real_users)
            pw = ctx.accounts[user] if ctx.rng.random() < 0.1 else ctx.rng.choice(COMMON_PASSWORDS)
        else:
            user = (f"{ctx.rng.choice(_FIRST)}{ctx.rng.choice(('.', '_', ''))}{ctx.rng.choice(_FIRST)}"
                    f"{ctx.rng.randint(1, 99)}@{ctx.rng.choice(_DOMAINS)}")
            pw = ctx.rng.choice(COMMON_PASSWORDS)
        combos.append(f"{user}:{pw}")
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


BUILDERS = {"gobuster": gobuster, "dirb": dirb, "wfuzz": wfuzz, "ffuf": ffuf, "sqlmap": sqlmap,
            "hydra": hydra, "whatweb": whatweb, "wapiti": wapiti, "nmap": nmap}
