"""Benign traffic: browsers (incl. a few behind one NAT), crawlers, uptime monitors, feed readers.

Every actor is planned up front from the seed (who, when in log time, which pages, which typos,
which logins), so a run does the same things for the same seed; only timing varies.  Actors send
real HTTP requests to nginx with their own ``X-Forwarded-For`` and a realistic User-Agent.
Durations are in *log* seconds and divided by the faketime speed before sleeping.
"""

from __future__ import annotations

import http.client
import math
import random
import re
import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bench.lab.ips import IpAllocator
from bench.lab.site import BLOG_POSTS, SEARCH_TERMS, static_pages

BROWSER_UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.102 "
    "Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/129.0.6668.100 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 "
    "Mobile/15E148 Safari/604.1",
]

CRAWLER_UAS = {
    "googlebot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "bingbot": "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "yandexbot": "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "duckduckbot": "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
    "applebot": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                "Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
}

MONITOR_UAS = [
    "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
    "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
    "Site24x7",
    "Better Uptime Bot Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)",
]

FEED_UAS = [
    "Feedly/1.0 (+http://www.feedly.com/fetcher.html; 14 subscribers; like FeedFetcher-Google)",
    "Mozilla/5.0 (compatible; Inoreader/1.0; +http://www.inoreader.com/feed-fetcher; 3 subscribers; )",
    "NewsBlur Feed Fetcher - 5 subscribers - https://www.newsblur.com/site/1 (Mozilla/5.0)",
    "Tiny Tiny RSS/22.12 (https://tt-rss.org/)",
    "FreshRSS/1.22.1 (Linux; https://freshrss.org)",
    "Mozilla/5.0 (compatible; Miniflux/2.0.49; +https://miniflux.app)",
    "Thunderbird/115.5.0",
]

_LINK = re.compile(r'href="(/[^"#]*)')
_ASSET = re.compile(r'(?:src|href)="(/(?:static/[^"]+|favicon\.ico))"')


@dataclass
class BenignConfig:
    users: int = 200            # distinct browser users (each 1-3 sessions over the run)
    nat_groups: int = 2         # IPs shared by several users (office / carrier NAT)
    nat_size: tuple[int, int] = (3, 6)
    v6_share: float = 0.2       # fraction of browser users on IPv6
    crawlers: dict[str, int] = field(default_factory=lambda: {"googlebot": 3, "bingbot": 2})
    crawl_gap: tuple[float, float] = (2.0, 25.0)     # log seconds between a crawler's fetches
    crawl_rest: tuple[float, float] = (3600.0, 10800.0)  # log seconds between crawl passes
    monitors: int = 2
    monitor_interval: float = 60.0                   # log seconds between health checks
    feed_readers: int = 4
    feed_interval: tuple[float, float] = (900.0, 3600.0)
    login_share: float = 0.25   # users with an account who sign in during a session


@dataclass
class Actor:
    ip: str
    actor: str          # role label in labels.csv: browser, browser-nat, crawler, monitor, feed-reader
    ua: str
    detail: str = ""


class Clock:
    """Maps log seconds to real seconds for a faketime speed factor; one stop event for everyone."""

    def __init__(self, speed: float, log_seconds: float) -> None:
        self.speed, self.log_seconds = speed, log_seconds
        self.t0 = time.monotonic()
        self.stop = threading.Event()

    def now(self) -> float:
        return (time.monotonic() - self.t0) * self.speed

    def sleep(self, log_secs: float) -> bool:
        """Sleep ``log_secs`` of log time; False if the run is stopping or its log time is over."""
        if self.stop.wait(max(0.0, log_secs) / self.speed):
            return False
        return self.now() < self.log_seconds

    def sleep_until(self, log_t: float) -> bool:
        return self.sleep(log_t - self.now())


class Client:
    """One keep-alive connection with fixed identity headers and a tiny cookie jar."""

    def __init__(self, port: int, actor: Actor, counter: Counter[str], lock: threading.Lock,
                 accept_lang: str = "en-US,en;q=0.9") -> None:
        self.port, self.actor, self.counter, self.lock = port, actor, counter, lock
        self.accept_lang = accept_lang
        self.cookies: dict[str, str] = {}
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, referer: str | None = None, body: str | None = None,
                accept: str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
                extra: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
        headers = {"Host": "www.larkspur-tools.example", "User-Agent": self.actor.ua, "Accept": accept,
                   "Accept-Language": self.accept_lang, "X-Forwarded-For": self.actor.ip}
        if referer:
            headers["Referer"] = referer
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers.update(extra or {})
        for attempt in range(2):  # one retry: nginx may have closed an idle keep-alive connection
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    return 0, "", {}
        with self.lock:
            self.counter[self.actor.actor] += 1
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        if "set-cookie" in hdrs:
            k, _, v = hdrs["set-cookie"].split(";")[0].partition("=")
            self.cookies[k.strip()] = v.strip()
        return resp.status, data.decode("utf-8", "replace"), hdrs

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Session:
    start: float                 # log seconds from run start
    actor: Actor
    seed: str
    account: tuple[str, str] | None


def _diurnal(rng: random.Random, log_start_hour: float, log_seconds: float) -> float:
    """A start time with more traffic in the afternoon/evening than at night (rejection sampling)."""
    while True:
        t = rng.uniform(0, log_seconds * 0.97)
        hour = (log_start_hour + t / 3600) % 24
        weight = 0.15 + 0.85 * math.sin(math.pi * max(0.0, hour - 6) / 18) ** 2 if hour >= 6 else 0.15
        if rng.random() < weight:
            return t


class BenignSim:
    def __init__(self, cfg: BenignConfig, seed: int, ips: IpAllocator, port: int, clock: Clock,
                 log_start_hour: float, accounts: dict[str, str]) -> None:
        self.cfg, self.seed, self.port, self.clock = cfg, seed, port, clock
        self.counter: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.actors: list[Actor] = []
        self.sessions: list[Session] = []
        rng = random.Random(f"lab-benign/{seed}")
        acct_items = sorted(accounts.items())
        # Browser users: one IP each (some IPv6), 1-3 sessions across the run.
        for i in range(cfg.users):
            ip = ips.v6() if rng.random() < cfg.v6_share else ips.v4()
            actor = Actor(ip, "browser", rng.choice(BROWSER_UAS))
            self.actors.append(actor)
            account = acct_items[i % len(acct_items)] if rng.random() < cfg.login_share else None
            for k in range(rng.choice((1, 1, 1, 2, 2, 3))):
                self.sessions.append(Session(_diurnal(rng, log_start_hour, clock.log_seconds), actor,
                                             f"{seed}/u{i}/{k}", account))
        # NAT: several people (different browsers) behind one public address.
        for g in range(cfg.nat_groups):
            ip = ips.v4()
            for j in range(rng.randint(*cfg.nat_size)):
                actor = Actor(ip, "browser-nat", rng.choice(BROWSER_UAS), detail=f"nat{g}-user{j}")
                self.actors.append(actor)
                for k in range(rng.choice((1, 2, 3))):
                    self.sessions.append(Session(_diurnal(rng, log_start_hour, clock.log_seconds), actor,
                                                 f"{seed}/nat{g}/{j}/{k}", None))
        self.sessions.sort(key=lambda s: s.start)
        self.periodic: list[tuple[Actor, str]] = []
        for bot, n in cfg.crawlers.items():
            for ip in ips.v4_block(n):
                self.periodic.append((Actor(ip, "crawler", CRAWLER_UAS[bot], detail=bot), "crawler"))
        for m in range(cfg.monitors):
            self.periodic.append((Actor(ips.v4(), "monitor", MONITOR_UAS[m % len(MONITOR_UAS)]), "monitor"))
        for f in range(cfg.feed_readers):
            self.periodic.append((Actor(ips.v4(), "feed-reader", FEED_UAS[f % len(FEED_UAS)]), "feed"))
        self.actors += [a for a, _ in self.periodic]
        self.threads: list[threading.Thread] = []

    def labels(self) -> dict[str, tuple[str, str]]:
        return {a.ip: ("benign", a.actor) for a in self.actors}

    # -- running ---------------------------------------------------------------------------------
    def start(self) -> None:
        for i, (actor, kind) in enumerate(self.periodic):
            fn = {"crawler": self._crawler, "monitor": self._monitor, "feed": self._feed}[kind]
            t = threading.Thread(target=self._guard, args=(fn, actor, f"{self.seed}/p{i}"), daemon=True)
            t.start()
            self.threads.append(t)
        t = threading.Thread(target=self._schedule, daemon=True)
        t.start()
        self.threads.append(t)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _guard(self, fn: object, *args: object) -> None:
        try:
            fn(*args)  # type: ignore[operator]
        except Exception as exc:  # one broken actor must not stop the run; record it
            with self.lock:
                self.counter[f"error:{type(exc).__name__}"] += 1

    def _schedule(self) -> None:
        with ThreadPoolExecutor(max_workers=64, thread_name_prefix="browser") as pool:
            for s in self.sessions:
                if not self.clock.sleep_until(s.start):
                    break
                pool.submit(self._guard, self._browse, s)

    def _browse(self, s: Session) -> None:
        rng = random.Random(s.seed)
        c = Client(self.port, s.actor, self.counter, self.lock,
                   rng.choice(("en-US,en;q=0.9", "en-GB,en;q=0.8", "de-DE,de;q=0.9,en;q=0.6",
                               "fr-FR,fr;q=0.9,en;q=0.5", "es-ES,es;q=0.9")))
        cached: set[str] = set()
        roll = rng.random()
        if roll < 0.45:
            page, ref = "/", rng.choice((None, "https://www.google.com/"))
        elif roll < 0.75:
            page, ref = rng.choice(static_pages()), "https://www.google.com/"
        elif roll < 0.9:
            page, ref = f"/blog/{rng.choice(BLOG_POSTS)[0]}", "https://www.reddit.com/"
        else:
            page, ref = "/products/", "https://duckduckgo.com/"
        logged_in = False
        try:
            for _ in range(min(15, 1 + int(rng.expovariate(1 / 4)))):
                html = self._view(c, page, ref, cached)
                if not self.clock.sleep(min(300.0, rng.lognormvariate(math.log(25), 0.9))):
                    return
                links = [u for u in _LINK.findall(html) if not u.startswith("/static/")] or ["/"]
                ref_url = f"http://www.larkspur-tools.example{page}"
                r = rng.random()
                if r < 0.08:  # search box
                    q = urllib.parse.quote_plus(rng.choice(SEARCH_TERMS))
                    page, ref = f"/search?q={q}", ref_url
                elif r < 0.12:  # typo in a URL: a 404
                    u = rng.choice(links)
                    i = rng.randrange(1, max(2, len(u)))
                    page, ref = (u[:i] + u[i + 1:] if rng.random() < 0.5 else u + rng.choice("sx/")), None
                elif r < 0.22 and s.account and not logged_in:
                    self._login(c, rng, s.account, ref_url, cached)
                    logged_in = True
                    page, ref = rng.choice(links), "http://www.larkspur-tools.example/account"
                elif r < 0.28 and page.startswith("/blog/") and page != "/blog/":
                    name = s.account[0] if s.account else rng.choice(("Sam", "J.", "woodfan", "Alex"))
                    body = urllib.parse.urlencode({"name": name, "body": rng.choice(
                        ("Great post, thanks!", "Which clamp would you pick for a small bench?",
                         "I had the same problem with my chisels.", "Very helpful."))})
                    st, _, h = c.request("POST", f"{page}/comment", referer=ref_url, body=body)
                    if st == 303:
                        self._view(c, h.get("location", page).split("#")[0], ref_url, cached)
                    page, ref = rng.choice(links), ref_url
                else:
                    page, ref = rng.choice(links), ref_url
        finally:
            c.close()

    def _view(self, c: Client, page: str, referer: str | None, cached: set[str]) -> str:
        """Load a page like a browser: HTML, then uncached assets, then the page's XHR calls."""
        status, html, _ = c.request("GET", page, referer=referer)
        if status != 200:
            return html
        url = f"http://www.larkspur-tools.example{page}"
        for asset in dict.fromkeys(_ASSET.findall(html)):
            if asset not in cached:
                cached.add(asset)
                accept = "text/css,*/*;q=0.1" if asset.endswith(".css") else "*/*"
                c.request("GET", asset, referer=url, accept=accept)
        c.request("GET", "/api/status", referer=url, accept="application/json")  # app.js beacon
        if page.startswith("/products/"):
            c.request("GET", "/api/products?page=1", referer=url, accept="application/json")
        return html

    def _login(self, c: Client, rng: random.Random, account: tuple[str, str], ref: str,
               cached: set[str]) -> None:
        self._view(c, "/login", ref, cached)
        self.clock.sleep(rng.uniform(5, 20))
        user, pw = account
        if rng.random() < 0.12:  # fat-fingered password once, then the right one
            c.request("POST", "/login", referer="http://www.larkspur-tools.example/login",
                      body=urllib.parse.urlencode({"username": user, "password": pw[:-1] + "x"}))
            self.clock.sleep(rng.uniform(4, 15))
        st, _, h = c.request("POST", "/login", referer="http://www.larkspur-tools.example/login",
                             body=urllib.parse.urlencode({"username": user, "password": pw}))
        if st == 302:
            self._view(c, h.get("location", "/account"), "http://www.larkspur-tools.example/login", cached)

    def _crawler(self, actor: Actor, seed: str) -> None:
        rng = random.Random(seed)
        if not self.clock.sleep(rng.uniform(0, 1800)):
            return
        c = Client(self.port, actor, self.counter, self.lock, "en")
        disallow = ("/admin/", "/account", "/search")
        while True:
            c.request("GET", "/robots.txt", accept="text/plain,*/*")
            _, sitemap, _ = c.request("GET", "/sitemap.xml", accept="application/xml,*/*")
            urls = [urllib.parse.urlsplit(u).path for u in re.findall(r"<loc>([^<]+)</loc>", sitemap)]
            rng.shuffle(urls)
            seen: set[str] = set()
            queue = urls[: rng.randint(max(1, len(urls) // 2), max(1, len(urls)))]
            while queue:
                u = queue.pop(0)
                if u in seen or u.startswith(disallow):
                    continue
                seen.add(u)
                if not self.clock.sleep(rng.uniform(*self.cfg.crawl_gap)):
                    return
                st, html, _ = c.request("GET", u)
                if st == 200 and rng.random() < 0.3:  # follow some links not in the sitemap
                    queue += [x for x in _LINK.findall(html) if x not in seen][:3]
                if actor.detail == "googlebot" and rng.random() < 0.1:  # renderer fetches resources
                    c.request("GET", rng.choice(("/static/css/site.css", "/static/js/app.js")), referer=None)
            c.close()
            if not self.clock.sleep(rng.uniform(*self.cfg.crawl_rest)):
                return

    def _monitor(self, actor: Actor, seed: str) -> None:
        rng = random.Random(seed)
        if not self.clock.sleep(rng.uniform(0, self.cfg.monitor_interval)):
            return
        c = Client(self.port, actor, self.counter, self.lock, "en")
        n = 0
        while True:
            c.request("GET", "/health", accept="*/*")
            n += 1
            if n % 5 == 0:
                c.request("HEAD", "/", accept="*/*")
            c.close()  # monitors open a fresh connection per check
            if not self.clock.sleep(self.cfg.monitor_interval * rng.uniform(0.98, 1.02)):
                return

    def _feed(self, actor: Actor, seed: str) -> None:
        rng = random.Random(seed)
        interval = rng.uniform(*self.cfg.feed_interval)
        if not self.clock.sleep(rng.uniform(0, interval)):
            return
        c = Client(self.port, actor, self.counter, self.lock, "en")
        etag: str | None = None
        while True:
            extra = {"If-None-Match": etag} if etag else None
            _, _, h = c.request("GET", "/feed.xml", accept="application/rss+xml, application/xml;q=0.9, */*",
                                extra=extra)
            etag = h.get("etag", etag)
            c.close()
            if not self.clock.sleep(interval * rng.uniform(0.9, 1.1)):
                return
