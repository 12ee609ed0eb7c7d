"""A private nginx instance on 127.0.0.1, run under libfaketime so its clock runs ``speed`` times fast.

nginx's ``$time_local`` comes from its own (faked) clock, so 10 real minutes at x60 become 10 hours
of log time while every log line is still written by nginx for a request that really happened.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

# The site both listeners serve: static files by nginx, the rest by the app.
SITE = """\
        root {work}/site;
        index index.html;

        location ~ /\\. {{ return 403; }}          # .git/, .env, .htaccess ...
        location /static/ {{ expires 7d; try_files $uri =404; }}
        location = /favicon.ico {{ try_files $uri =404; }}
        location / {{ try_files $uri $uri/ @app; }}
        location @app {{
            proxy_pass http://app;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_connect_timeout 600s;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}"""

CONF = """\
# nginx wipes its environment at start-up; libfaketime re-reads FAKETIME every few seconds
# and, without it, silently falls back to the real date (keeping only the speed-up).
env FAKETIME;
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;

    # Every actor connects from 127.0.0.1 and names its own address in X-Forwarded-For.
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;

    access_log {access_log} combined;
    # Diagnostic twin of the access log: shows whether an actor forgot its X-Forwarded-For.
    log_format labdiag '$remote_addr $realip_remote_addr "$http_x_forwarded_for" $status';
    access_log {work}/diag.log labdiag;

    # Timeouts are in *log* seconds (libfaketime also speeds up nginx's timers), so they are long.
    keepalive_timeout 900s;
    client_header_timeout 3600s;
    client_body_timeout 3600s;
    send_timeout 3600s;
    sendfile on;
    server_tokens on;

    upstream app {{ server 127.0.0.1:{app_port}; }}

    # Direct port: tools that can set X-Forwarded-For themselves.
    server {{
        listen 127.0.0.1:{port} default_server;
{site}
    }}

    # PROXY-protocol port, used only by the lab's relay (bench/lab/xffproxy.py, for nmap).  nginx
    # rejects malformed request lines (400) before realip runs, so X-Forwarded-For cannot name the
    # client of those; a PROXY header names it per connection instead.  Same combined layout.
    log_format combined_pp '$proxy_protocol_addr - $remote_user [$time_local] '
                           '"$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"';
    server {{
        listen 127.0.0.1:{pp_port} proxy_protocol;
        real_ip_header proxy_protocol;
        access_log {access_log} combined_pp;
        access_log {work}/diag.log labdiag;
{site}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class Nginx:
    def __init__(self, work: Path, access_log: Path, port: int, pp_port: int, app_port: int, start: str,
                 speed: float) -> None:
        self.work, self.port, self.pp_port, self.start, self.speed = work, port, pp_port, start, speed
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (work / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        work.chmod(0o755)  # mkdtemp makes 0700; nginx workers (user nobody) must read the site
        self.conf = work / "nginx.conf"
        site = SITE.format(work=work)
        self.conf.write_text(CONF.format(work=work, access_log=access_log, port=port, pp_port=pp_port,
                                          app_port=app_port, site=site))
        self.proc: subprocess.Popen[bytes] | None = None
        self.real_start = 0.0

    def argv(self) -> list[str]:
        fake = shutil.which("faketime")
        if not fake:
            raise RuntimeError("faketime not installed: run bench/lab/install.sh")
        return [fake, "-f", f"@{self.start} x{self.speed:g}",
                "nginx", "-p", str(self.work), "-c", str(self.conf), "-g", "daemon off;"]

    def run(self) -> None:
        subprocess.run(["nginx", "-t", "-q", "-p", str(self.work), "-c", str(self.conf)], check=True)
        env = dict(os.environ, TZ="UTC")
        self.real_start = time.time()
        with open(self.work / "nginx.stderr", "wb") as err:
            self.proc = subprocess.Popen(self.argv(), env=env, start_new_session=True,
                                         stdout=subprocess.DEVNULL, stderr=err)
        wait_port(self.port)

    def stop(self) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        # SIGQUIT = graceful shutdown: workers finish in-flight requests and flush their log lines.
        pid_file = self.work / "nginx.pid"
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGQUIT)
            self.proc.wait(timeout=15)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
