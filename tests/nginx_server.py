"""A real nginx on 127.0.0.1 for tests and benchmarks: its own prefix directory, realip from
X-Forwarded-For (so one test can play many clients), a small static site, an access log in
the combined format, and MLGuard's deny include file."""

from __future__ import annotations

import ipaddress
import os
import random
import shlex
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)

CONF = """\
{user}pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {work}/tmp;
    proxy_temp_path {work}/tmp;
    fastcgi_temp_path {work}/tmp;
    uwsgi_temp_path {work}/tmp;
    scgi_temp_path {work}/tmp;
    access_log {access_log};
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
    server {{
        listen 127.0.0.1:{port};
        root {work}/site;
        include {work}/mlguard-deny.conf;
        location = /login {{ try_files /nonexistent @login; }}
        location @login {{ return 200 "ok\\n"; }}
        index index.html;
        location / {{ try_files $uri $uri.html $uri/ =404; }}
    }}
}}
"""

PAGES = {
    "index.html": "<html><body><a href='/about'>about</a></body></html>",
    "about.html": "<html><body>about us</body></html>",
    "blog/index.html": "<html><body>blog</body></html>",
    "static/app.css": "body { color: #333 }",
    "static/app.js": "console.log('hi')",
    "static/logo.png": "PNG",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NginxServer:
    def __init__(self, work: Path, access_log: str = "off") -> None:
        if NGINX is None:
            raise RuntimeError("nginx is not installed")
        self.work = work
        (work / "tmp").mkdir(parents=True, exist_ok=True)
        for name, text in PAGES.items():
            page = work / "site" / name
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(text)
        work.chmod(0o755)
        self.port = free_port()
        self.include = work / "mlguard-deny.conf"
        self.include.write_text("")
        self.conf = work / "nginx.conf"
        log = "off" if access_log == "off" else f"{access_log} combined"
        # Workers must read the site in a private temporary directory: as root, run them as root.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        self.conf.write_text(CONF.format(user=user, work=work, port=self.port, access_log=log))
        self.command = f"{NGINX} -p {work} -c {self.conf}"
        self.proc = subprocess.Popen(
            [*shlex.split(self.command), "-g", "daemon off;"], stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.get("/", "127.0.0.1")
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("nginx did not start")

    def get(
        self,
        target: str,
        client: str,
        user_agent: str = "Mozilla/5.0",
        method: str = "GET",
        referer: str = "",
    ) -> int:
        headers = {"X-Forwarded-For": client, "User-Agent": user_agent}
        if referer:
            headers["Referer"] = referer
        data = b"user=a&password=b" if method == "POST" else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{target}", headers=headers, method=method, data=data
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def diagnostics(self) -> str:
        """nginx's error log and the processes it runs, for a test that fails."""
        log = self.work / "error.log"
        errors = log.read_text(errors="replace")[-3000:] if log.exists() else "(no error log)"
        ps = subprocess.run(
            ["ps", "-o", "pid,ppid,etime,args", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        )
        return f"nginx error log: {errors}\nnginx workers:\n{ps.stdout}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def browse(server: NginxServer, client: str, rng: random.Random) -> None:
    """One person's visit: pages with their assets, following links, now and then a typo (404)
    or a sign-in."""
    agent = rng.choice(BROWSERS)
    previous = ""
    for _ in range(rng.randint(2, 5)):
        page = rng.choice(["/", "/about", "/blog/", "/"])
        server.get(page, client, agent, referer=previous)
        for asset in ("/static/app.css", "/static/app.js", "/static/logo.png"):
            server.get(asset, client, agent, referer=f"http://127.0.0.1{page}")
        previous = f"http://127.0.0.1{page}"
    if rng.random() < 0.15:
        server.get(rng.choice(["/abuot", "/blog/old-post", "/favicon.ico"]), client, agent, referer=previous)
    if rng.random() < 0.2:
        server.get("/login", client, agent, method="POST", referer=previous)


BROWSERS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
]

SCANNER_PATHS = [
    "/.env",
    "/.git/config",
    "/wp-login.php",
    "/admin/",
    "/phpmyadmin/",
    "/backup.zip",
    "/config.php.bak",
    "/server-status",
    "/.aws/credentials",
    "/wp-admin/setup-config.php",
    "/admin.php",
    "/db.sql",
    "/cgi-bin/test.cgi",
    "/.htpasswd",
    "/login.jsp",
    "/manager/html",
    "/actuator/env",
    "/debug/pprof",
    "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
    "/index.php?id=1'%20OR%20'1'='1",
]


def scan(server: NginxServer, client: str, requests: int, user_agent: str = "gobuster/3.6") -> list[int]:
    """A noisy content scanner: many paths that do not exist, quickly; the statuses it got."""
    return [
        server.get(
            SCANNER_PATHS[i % len(SCANNER_PATHS)] + (f"?n={i}" if i >= len(SCANNER_PATHS) else ""),
            client,
            user_agent,
        )
        for i in range(requests)
    ]


def public_addresses(rng: random.Random, count: int) -> list[str]:
    """Distinct global IPv4 addresses from many networks, as real visitors come."""
    found: set[str] = set()
    while len(found) < count:
        address = ipaddress.IPv4Address(rng.getrandbits(32))
        if address.is_global and not address.is_multicast:
            found.add(str(address))
    return sorted(found)
