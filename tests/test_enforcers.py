"""Enforcers against the real thing: the webhook posts to an HTTP server started here on
127.0.0.1 (bounded: a handful of requests, seconds of timeouts)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from mlguard.cli import app
from mlguard.decisions.store import DecisionStore
from mlguard.enforcers import get_enforcer
from mlguard.errors import UsageError
from tests.nginx_server import NGINX, NginxServer

# The decisions `mlguard enforce` reads are judged by the real clock (a block lives 4 hours):
# record them now, or the CLI test fails once the date passes a fixed one.
T0 = datetime.now(UTC).replace(microsecond=0)


class Receiver:
    """A local HTTP endpoint that answers the statuses it is told to, then 200, and keeps bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.bodies.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def stored(tmp_path: Path) -> DecisionStore:
    store = DecisionStore(tmp_path / "state.db")
    store.record(
        pl.DataFrame(
            {
                "client": ["81.2.69.160", "81.2.69.161"],
                "verdict": ["block", "alert"],
                "score": [0.9, 0.6],
                "reasons": [["<script>alert(1)</script> & <!channel>"], ["404s"]],
            }
        ),
        T0,
    )
    return store


def test_webhook_retries_then_delivers_each_decision_once(tmp_path: Path, receiver: Receiver) -> None:
    store = stored(tmp_path)
    waits: list[float] = []
    hook = get_enforcer("webhook", url=receiver.url, store=store, sleep=waits.append)
    receiver.statuses = [503, 429]  # two failures, then 200
    result = hook.sync(store.list())
    assert (result.sent, result.failed) == (2, 0) and waits == [0.5, 1.0]
    assert {d["ip"] for d in receiver.bodies[0]["decisions"]} == {"81.2.69.160", "81.2.69.161"}
    again = hook.sync(store.list())  # nothing new: nothing sent
    assert (again.sent, again.unchanged) == (0, 2) and len(receiver.bodies) == 1


def test_webhook_failure_keeps_decisions_for_the_next_sync(tmp_path: Path, receiver: Receiver) -> None:
    store = stored(tmp_path)
    hook = get_enforcer("webhook", url=receiver.url, store=store, attempts=2, sleep=lambda _: None)
    receiver.statuses = [500, 500]
    failed = hook.sync(store.list())
    assert failed.failed == 2 and "HTTP 500" in failed.messages[0] and not receiver.bodies
    assert hook.sync(store.list()).sent == 2  # the server is back: nothing was lost
    receiver.statuses = [404]  # a wrong URL is not retried
    store.record(
        pl.DataFrame({"client": ["81.2.69.170"], "verdict": ["alert"], "score": [0.5], "reasons": [[]]}), T0
    )
    assert hook.sync(store.list()).failed == 1 and receiver.statuses == []


def test_slack_message_escapes_attacker_text_and_cli_dry_run(tmp_path: Path, receiver: Receiver) -> None:
    stored(tmp_path).close()
    runner = CliRunner()
    state = str(tmp_path / "state.db")
    dry = runner.invoke(app, ["enforce", "--state", state, "--webhook", receiver.url, "--dry-run"])
    assert (
        dry.exit_code == 0
        and "would send to webhook: block 81.2.69.160" in dry.stdout
        and not receiver.bodies
    )
    sent = runner.invoke(
        app, ["enforce", "--state", state, "--webhook", receiver.url, "--webhook-style", "slack"]
    )
    assert sent.exit_code == 0, sent.output
    text = receiver.bodies[0]["blocks"][0]["text"]["text"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;!channel&gt;" in text and "<script>" not in text
    with pytest.raises(UsageError, match="unknown enforcer"):
        get_enforcer("nft")
    bad = runner.invoke(app, ["enforce", "--state", state, "--webhook", "ftp://x"])
    assert bad.exit_code != 0


@pytest.mark.skipif(
    NGINX is None and not os.environ.get("CI"), reason="nginx is not installed (CI installs it)"
)
def test_nginx_denies_blocked_clients_and_expiry_releases_them(tmp_path: Path) -> None:
    """A real nginx on 127.0.0.1 with realip: a blocked client (by X-Forwarded-For) gets 403, the
    others 200; when the block expires the next sync releases it; a broken file is never loaded."""
    assert NGINX is not None, "CI must install nginx (.ci/run)"
    server = NginxServer(tmp_path / "nginx")
    work, command = server.work, server.command
    try:
        store = DecisionStore(tmp_path / "state.db")
        found = pl.DataFrame(
            {
                "client": ["81.2.69.160", "10.0.0.9"],
                "verdict": ["block", "block"],
                "score": [0.9, 0.9],
                "reasons": [["x"], ["private: never denied"]],
            }
        )
        now = datetime.now(UTC)
        store.record(found, now)
        runner = CliRunner()
        include = str(work / "mlguard-deny.conf")
        args = ["enforce", "--state", str(tmp_path / "state.db"), "--nginx-include", include]
        done = runner.invoke(app, [*args, "--nginx-command", command])
        assert done.exit_code == 0, done.output
        text = (work / "mlguard-deny.conf").read_text()
        assert "deny 81.2.69.160;" in text and "10.0.0.9" not in text
        time.sleep(0.5)  # reload: old workers finish, new ones read the file
        assert server.get("/", "81.2.69.160") == 403 and server.get("/", "81.2.69.161") == 200
        # A file nginx -t rejects is put back and nginx is not reloaded.
        bogus = f"{command} -g 'bogus_directive on;'"
        hook = get_enforcer("nginx", include=work / "mlguard-deny.conf", command=bogus)
        broken = hook.sync([])  # releasing everything needs a reload; -t fails on the bogus directive
        assert broken.messages and "failed" in broken.messages[0]
        assert "deny 81.2.69.160;" in (work / "mlguard-deny.conf").read_text()
        # The block expires: the next sync releases the address.
        store.expire(now + timedelta(days=8))
        done = runner.invoke(app, [*args, "--nginx-command", command])
        assert done.exit_code == 0, done.output
        time.sleep(0.5)
        assert "81.2.69.160" not in (work / "mlguard-deny.conf").read_text()
        assert server.get("/", "81.2.69.160") == 200
        store.close()
    finally:
        server.stop()
