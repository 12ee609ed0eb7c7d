"""A real CrowdSec Local API for tests: the Debian package's `crowdsec -no-cs` on 127.0.0.1.

Its own configuration, SQLite database and credentials in a temporary directory (as bench/peers
does, written out rather than copied from /etc/crowdsec so that an admin's edits change nothing);
no Central API, no metrics listener, no acquisition: only the LAPI runs, on a free port of
127.0.0.1. Machines and bouncers are registered with `cscli`, which writes to the database.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CROWDSEC = shutil.which("crowdsec")
CSCLI = shutil.which("cscli")
START_SECS = 30.0
FORWARDED = ("authorization", "content-type", "user-agent")  # what the proxy passes on

CONFIG = """\
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
  hub_dir: {root}/hub/
  index_path: {root}/hub/.index.json
  notification_dir: {root}/etc/notifications/
  plugin_dir: /usr/lib/crowdsec/plugins/
crowdsec_service:
  acquisition_path: {root}/acquis.yaml
cscli:
  output: human
  color: "no"
  hub_branch: master  # a set branch keeps cscli from asking the Internet for the latest version
db_config:
  log_level: info
  type: sqlite
  db_path: {root}/crowdsec.db
  use_wal: true
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
    # no online_client section: no Central API at all
prometheus:
  enabled: false
  level: full
  listen_addr: 127.0.0.1
  listen_port: 6060
"""

# The package's default profile (only used for alerts without decisions; MLGuard's carry their own).
PROFILES = """\
name: default_ip_remediation
filters:
 - Alert.Remediation == true && Alert.GetScope() == "Ip"
decisions:
 - type: ban
   duration: 4h
on_success: break
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(url: str, method: str = "GET", body: object = None, headers: dict[str, str] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return json.loads(raw) if raw.strip() else None


class Lapi:
    """Start a LAPI under `root` with one bouncer; `stop()` ends it."""

    def __init__(self, root: Path) -> None:
        assert CROWDSEC and CSCLI, "crowdsec and cscli must be installed"
        self.root = root
        for sub in ("etc", "data", "log"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = root / "config.yaml"
        self.config.write_text(CONFIG.format(root=root, port=self.port))
        (root / "profiles.yaml").write_text(PROFILES)
        (root / "simulation.yaml").write_text("simulation: off\n")
        (root / "acquis.yaml").write_text("")
        self.url = f"http://127.0.0.1:{self.port}"
        self.bouncer_key = secrets.token_hex(16)
        self.cscli("bouncers", "add", "test-bouncer", "-k", self.bouncer_key)
        self._out = (root / "lapi.out").open("wb")
        self.proc = subprocess.Popen(
            [CROWDSEC, "-c", str(self.config), "-no-cs"], stdout=self._out, stderr=subprocess.STDOUT
        )
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + START_SECS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"crowdsec exited (rc={self.proc.returncode}): {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"crowdsec did not listen on {self.url} within {START_SECS:.0f} s: {self.log_tail()}"
        )

    def log_tail(self) -> str:
        logs = [
            self.root / "lapi.out",
            self.root / "log" / "crowdsec.log",
            self.root / "log" / "crowdsec_api.log",
        ]
        text = "".join(p.read_text(errors="replace") for p in logs if p.exists())
        return text[-2000:]

    def cscli(self, *args: str) -> str:
        assert CSCLI is not None
        done = subprocess.run(
            [CSCLI, "-c", str(self.config), "--error", *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"cscli {' '.join(args)} failed: {done.stderr}"
        return done.stdout

    def add_machine(self, name: str) -> str:
        """Register a machine (validated, as `cscli machines add` does); its password."""
        password = secrets.token_hex(16)
        self.cscli("machines", "add", name, "--password", password, "--force", "-f", "/dev/null")
        return password

    def credentials_file(self, name: str, path: Path) -> Path:
        """What the docs tell a user to run: `cscli machines add NAME --auto -f FILE`."""
        self.cscli("machines", "add", name, "--auto", "--force", "-f", str(path))
        return path

    def admin_ban(self, ip: str, duration: str = "1h") -> None:
        """A person's ban with `cscli decisions add` (through the LAPI, as an admin does)."""
        if not (self.root / "local_api_credentials.yaml").exists():
            self.cscli("machines", "add", "test-admin", "--auto", "--force")  # to the config's credentials
        self.cscli("decisions", "add", "--ip", ip, "--duration", duration, "--reason", "admin")

    def bans(self, ip: str) -> list[dict[str, Any]]:
        """What a bouncer sees for this address (GET /v1/decisions with its API key)."""
        found = _call(f"{self.url}/v1/decisions?ip={ip}", headers={"X-Api-Key": self.bouncer_key})
        return list(found or [])

    def alerts(self, machine: str, password: str) -> list[dict[str, Any]]:
        """Every mlguard/block alert, as the machine sees them."""
        login = {"machine_id": machine, "password": password, "scenarios": []}
        token = _call(f"{self.url}/v1/watchers/login", "POST", login)["token"]
        found = _call(
            f"{self.url}/v1/alerts?scenario=mlguard/block&limit=0",
            headers={"Authorization": f"Bearer {token}"},
        )
        return list(found or [])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


class FlakyProxy:
    """Forwards to the LAPI, except that requests matching `fail` entries (method, path prefix,
    status) are answered with that status instead, each entry once, in order; `seen` lists every
    request as "METHOD /path"."""

    def __init__(self, upstream: str) -> None:
        self.fail: list[tuple[str, str, int]] = []
        self.seen: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.seen.append(f"{self.command} {self.path.split('?')[0]}")
                for i, (method, prefix, status) in enumerate(proxy.fail):
                    if method == self.command and self.path.startswith(prefix):
                        del proxy.fail[i]
                        self._answer(status, b'{"message":"injected by the test"}')
                        return
                headers = {k: v for k, v in self.headers.items() if k.lower() in FORWARDED}
                request = urllib.request.Request(
                    upstream + self.path, data=body, method=self.command, headers=headers
                )
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        self._answer(response.status, response.read())
                except urllib.error.HTTPError as exc:
                    self._answer(exc.code, exc.read())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _handle

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
