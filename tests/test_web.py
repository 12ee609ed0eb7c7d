"""`mlguard serve`: a real uvicorn server on 127.0.0.1 over a real decision store and real logs
(tests/fixtures/labelled_small plus a log of hostile clients written here), driven over HTTP
and by a real browser (Debian's chromium, headless, through Selenium and Debian's chromedriver).

Screenshots go to tests/artifacts/web/ (or $MLGUARD_TEST_ARTIFACTS).
"""

from __future__ import annotations

import hmac
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from mlguard.decisions.policy import ALERT, BLOCK, PASS, Policy, client_network
from mlguard.decisions.store import DecisionStore
from mlguard.errors import UsageError
from mlguard.pipeline import Detection, read_logs, score_table
from tests.conftest import FIXTURES, ROOT

try:
    import httpx
    import uvicorn
    from fastapi import FastAPI

    from mlguard.web import WebSettings, create_app
    from mlguard.web.app import CSP, local_target
except ImportError:  # pragma: no cover - the test extra installs them
    if os.environ.get("CI"):
        raise
    pytest.skip("the web extra is not installed: pip install -e '.[web,test]'", allow_module_level=True)

TOKEN = "test-token-5f0c2a9e41d7b3c8"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ARTIFACTS = Path(os.environ.get("MLGUARD_TEST_ARTIFACTS", ROOT / "tests" / "artifacts")) / "web"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")

# A hostile client: its paths, user agent and referer carry markup that would run if a page
# put it into HTML unescaped. Written here (60 lines, combined format, 404s), so that the
# payloads are exactly those the browser checks for.
XSS_IP = "45.155.205.99"
XSS_PATHS = (
    "/wp-admin/<script>window.__pwned='path'</script>",
    "/.env/<svg/onload=window.__pwned='svg'>",
    "/search/%3Cscript%3E?q=<img/src/onerror=window.__pwned='query'>",
)
XSS_UA = "Mozilla/5.0 <script>window.__pwned='ua'</script><img src=x onerror=window.__pwned='img'>"
XSS_REFERER = "<script>document.title='pwned'</script>"


def _xss_lines() -> str:
    lines = []
    for i in range(60):
        path = XSS_PATHS[i % len(XSS_PATHS)] + (f"{i}" if i % 2 else "")
        stamp = f"17/May/2015:12:{i // 6:02d}:{i % 6 * 10:02d} +0000"
        lines.append(f'{XSS_IP} - - [{stamp}] "GET {path} HTTP/1.1" 404 209 "{XSS_REFERER}" "{XSS_UA}"\n')
    return "".join(lines)


# Servers


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on a free port of 127.0.0.1, on a thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", server_header=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _wait_for_logs(base: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = httpx.get(f"{base}/api/status", headers=BEARER).json()
        if status["logs"]["status"] == "ready":
            return
        assert status["logs"]["status"] == "reading", status
        time.sleep(0.1)
    raise AssertionError("the server did not finish reading the logs")


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    hostile = tmp_path_factory.mktemp("web-logs") / "hostile.log"
    hostile.write_text(_xss_lines())
    return str(FIXTURES / "labelled_small" / "access.log"), str(hostile)


@pytest.fixture(scope="module")
def detection(logs: tuple[str, str]) -> Detection:
    return score_table(read_logs(list(logs)), Policy())


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory, detection: Detection) -> Path:
    """A store holding what `mlguard detect --state` records for the same logs."""
    path = tmp_path_factory.mktemp("web-store") / "state.db"
    with DecisionStore(path) as store:
        store.record(detection.findings, datetime.now(UTC).replace(microsecond=0))
    return path


@pytest.fixture(scope="module")
def server(logs: tuple[str, str], store_path: Path) -> Iterator[str]:
    settings = WebSettings.for_bind("127.0.0.1", paths=logs, state=store_path, token=TOKEN)
    with running(create_app(settings)) as base:
        _wait_for_logs(base)
        yield base


def _signed_in(base: str) -> httpx.Client:
    client = httpx.Client(base_url=base)
    response = client.post("/signin", data={"token": TOKEN, "next": "/"})
    assert response.status_code == 303 and response.headers["location"] == "/"
    return client


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def _public_clients(detection: Detection, verdict: str, count: int) -> list[str]:
    """Clients of the logs with this verdict that a person may block (public IPv4)."""
    candidates = detection.findings.filter(pl.col("verdict") == verdict).sort("client")["client"].to_list()
    chosen = [c for c in candidates if "." in c and Policy().protection(c) is None][:count]
    assert len(chosen) == count
    return chosen


# The command


def _serve_app() -> Any:
    import typer

    from mlguard.cli_serve import serve_command

    app = typer.Typer(add_completion=False)  # as mlguard's own app
    app.command()(serve_command)
    return app


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--state", "{db}"], {}, "a token is required"),
        (["--state", "{db}", "--token", "short"], {}, "use at least 16"),
        (["--token", TOKEN], {}, "nothing to serve"),
        (["-", "--token", TOKEN], {}, "not stdin"),
        (["--state", "{db}"], {"MLGUARD_TOKEN": ""}, "a token is required"),
    ],
)
def test_serve_refuses_to_start_without_a_usable_token_or_anything_to_serve(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    from typer.testing import CliRunner

    args = [a.replace("{db}", str(tmp_path / "s.db")) for a in args]
    result = CliRunner().invoke(_serve_app(), args, env={"MLGUARD_TOKEN": None, **env})  # type: ignore[dict-item]
    assert isinstance(result.exception, UsageError), result.output
    assert message in str(result.exception)
    assert not (tmp_path / "s.db").exists(), "nothing is created before the settings are checked"


def test_serve_command_serves_with_the_token_from_the_environment(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = (
        "import typer; from mlguard.cli_serve import serve_command; "
        "app = typer.Typer(); app.command()(serve_command); app()"
    )
    env = {**os.environ, "MLGUARD_TOKEN": TOKEN}
    command = [sys.executable, "-c", script, "--state", str(tmp_path / "s.db"), "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                health = httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "mlguard serve did not start"
                time.sleep(0.1)
        assert health.json() == {"status": "ok"}
        assert "server" not in health.headers
        assert httpx.get(f"{base}/api/decisions").status_code == 401
        listed = httpx.get(f"{base}/api/decisions", headers=BEARER)
        assert listed.status_code == 200 and listed.json() == {"decisions": [], "next_before": None}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    # uvicorn shuts down cleanly, then re-raises the signal, so the exit status says SIGTERM.
    assert proc.returncode in (0, -signal.SIGTERM), stderr
    assert "Application shutdown complete" in stderr
    assert f"mlguard serve: http://127.0.0.1:{port}/ (reading needs the token" in stderr


def test_every_serve_option_is_documented() -> None:
    import typer.main

    doc = (ROOT / "docs" / "web.md").read_text()
    command = typer.main.get_command(_serve_app())
    flags = [flag for param in command.params for flag in param.opts if flag.startswith("--")]
    assert set(flags) == {"--state", "--host", "--port", "--token", "--public-read"}
    for flag in flags:
        assert f"| `{flag}" in doc, flag


# Who may read and act


@pytest.mark.parametrize(
    ("method", "path", "signed_in", "status"),
    [
        ("GET", "/signin", False, 200),
        ("GET", "/", False, 303),
        ("GET", "/", True, 200),
        ("GET", f"/clients/{XSS_IP}", True, 200),
        ("GET", "/decisions", True, 200),
        ("GET", "/docs", False, 200),
        ("GET", "/openapi.json", False, 200),
        ("GET", "/static/style.css", False, 200),
        ("GET", "/api/findings", False, 401),
        ("GET", "/no/such/page", False, 404),
        ("POST", "/actions", True, 403),
    ],
)
def test_every_response_carries_the_security_headers(
    server: str, method: str, path: str, signed_in: bool, status: int
) -> None:
    client = _signed_in(server) if signed_in else httpx.Client(base_url=server)
    data = {"action": "allow", "client": XSS_IP, "reason": "x"} if method == "POST" else None
    response = client.request(method, path, data=data)
    assert response.status_code == status
    csp = response.headers["content-security-policy"]
    assert csp == CSP
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'" and "script-src" not in directives  # no script at all
    assert directives["style-src"] == "'self'"
    assert directives["img-src"] == "'self' data:"
    assert directives["form-action"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    if path != "/static/style.css":
        assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong-token-0000000000"},
        {"Authorization": f"Bearer {TOKEN[:-1]}X"},  # one character off, at the end
        {"Authorization": f"Bearer {TOKEN}X"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN.upper()}"},
    ],
)
def test_api_reads_need_the_bearer_token(server: str, headers: dict[str, str]) -> None:
    for path in ("/api/findings", "/api/decisions", f"/api/clients/{XSS_IP}", "/api/overview", "/api/status"):
        response = httpx.get(server + path, headers=headers)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert XSS_IP not in response.text
        assert httpx.get(server + path, headers=BEARER).status_code == 200


def test_the_token_is_compared_in_constant_time(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check of the token and of a CSRF token goes through hmac.compare_digest (the
    server runs on a thread of this process, so the spy sees its calls)."""
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert httpx.get(f"{server}/api/decisions", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert seen[-1] == (b"nope", TOKEN.encode())
    assert httpx.post(f"{server}/signin", data={"token": "wrong"}).status_code == 401
    assert seen[-1] == (b"wrong", TOKEN.encode())
    client = _signed_in(server)
    csrf = _csrf(client.get(f"/clients/{XSS_IP}").text)
    client.post("/actions", data={"csrf": "forged", "action": "allow", "client": XSS_IP, "reason": "x"})
    assert seen[-1] == (b"forged", csrf.encode())


def test_browser_sign_in_sets_a_strict_http_only_session_cookie(server: str) -> None:
    wrong = httpx.post(f"{server}/signin", data={"token": TOKEN[:-1], "next": "/"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    right = httpx.post(f"{server}/signin", data={"token": TOKEN, "next": "/decisions?state=all"})
    assert right.status_code == 303 and right.headers["location"] == "/decisions?state=all"
    cookie = right.headers["set-cookie"]
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "secure" not in attributes  # served on 127.0.0.1 over http
    assert TOKEN not in cookie
    # Never sent back to another site, even one named by the sign-in form.
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        answer = httpx.post(f"{server}/signin", data={"token": TOKEN, "next": target})
        assert answer.headers["location"] == "/", target
    assert local_target("/clients/1.2.3.4?done=allow") == "/clients/1.2.3.4?done=allow"


def test_pages_send_a_stranger_to_sign_in_and_back(server: str) -> None:
    client = httpx.Client(base_url=server)
    response = client.get("/decisions?verdict=block")
    assert response.status_code == 303
    assert response.headers["location"] == "/signin?next=%2Fdecisions%3Fverdict%3Dblock"
    signin = client.get(response.headers["location"])
    assert 'name="next" value="/decisions?verdict=block"' in signin.text
    assert (
        client.post("/signin", data={"token": TOKEN, "next": "/decisions?verdict=block"}).status_code == 303
    )
    assert client.get("/decisions?verdict=block").status_code == 200
    # Signing out ends the session on the server, not only in this browser.
    csrf = _csrf(client.get("/").text)
    session = client.cookies["mlguard_session"]
    assert client.post("/signout", data={"csrf": csrf}).status_code == 303
    stolen = httpx.get(f"{server}/", cookies={"mlguard_session": session})
    assert stolen.status_code == 303


def test_actions_need_the_csrf_token_of_their_own_session(
    server: str, store_path: Path, detection: Detection
) -> None:
    ip = _public_clients(detection, PASS, 1)[0]
    victim, other = _signed_in(server), _signed_in(server)
    page = f"/clients/{ip}"
    csrf, other_csrf = _csrf(victim.get(page).text), _csrf(other.get(page).text)
    assert csrf != other_csrf
    form = {"action": "block", "client": ip, "reason": "seen scanning", "ttl": "4h"}
    with DecisionStore(store_path) as store:
        before = store.history(ip)
    refused = [
        victim.post("/actions", data=form),  # no token
        victim.post("/actions", data={**form, "csrf": ""}),
        victim.post("/actions", data={**form, "csrf": other_csrf}),  # another session's
        victim.post("/actions", data={**form, "csrf": csrf[:-1]}),
        httpx.post(f"{server}/actions", data={**form, "csrf": csrf}),  # no session cookie
        victim.post("/actions", data={**form, "csrf": csrf}, headers={"Sec-Fetch-Site": "cross-site"}),
        victim.post("/actions", json={**form, "csrf": csrf}),  # not a form
    ]
    assert [r.status_code for r in refused] == [403, 403, 403, 403, 403, 403, 415]
    with DecisionStore(store_path) as store:
        assert store.history(ip) == before
    done = victim.post("/actions", data={**form, "csrf": csrf})
    assert done.status_code == 303 and done.headers["location"] == f"/clients/{ip}?done=block"
    with DecisionStore(store_path) as store:
        blocks = [d for d in store.history(ip) if d.verdict == BLOCK and d.state == "active"]
    assert [(b.origin, b.note) for b in blocks] == [("person", "seen scanning")]
    unblocked = victim.post("/actions", data={**form, "action": "unblock", "csrf": csrf, "reason": "mistake"})
    assert unblocked.status_code == 303
    with DecisionStore(store_path) as store:
        assert [d.state for d in store.history(ip) if d.verdict == BLOCK] == ["revoked"]


def test_api_actions_change_the_store_as_a_person(
    server: str, store_path: Path, detection: Detection
) -> None:
    ip = _public_clients(detection, PASS, 2)[1]
    api = httpx.Client(base_url=server, headers=BEARER)
    blocked = api.post(f"/api/clients/{ip}/block", json={"reason": "manual test", "ttl": "1h"})
    assert blocked.status_code == 200, blocked.text
    assert blocked.json()["decisions"][0]["origin"] == "person"
    assert blocked.json()["decisions"][0]["verdict"] == "block"
    shorter = api.post(f"/api/clients/{ip}/block", json={"reason": "again", "ttl": "30m"})
    assert shorter.status_code == 400 and "already blocked until" in shorter.json()["detail"]
    extended = api.post(f"/api/clients/{ip}/block", json={"reason": "longer", "ttl": "24h"})
    assert extended.status_code == 200
    with DecisionStore(store_path) as store:
        active = [d for d in store.history(ip) if d.verdict == BLOCK and d.state == "active"]
    assert sorted(d.note or "" for d in active) == ["longer", "manual test"]
    assert max(d.expires or "" for d in active) > min(d.expires or "" for d in active)
    assert api.post(f"/api/clients/{ip}/unblock", json={"reason": "done"}).status_code == 200
    again = api.post(f"/api/clients/{ip}/unblock", json={"reason": "done"})
    assert again.status_code == 400 and "no active block" in again.json()["detail"]
    allowed = api.post(f"/api/clients/{ip}/allow", json={"reason": "partner", "ttl": "7d"})
    assert allowed.status_code == 200
    refused = api.post(f"/api/clients/{ip}/block", json={"reason": "x"})
    assert refused.status_code == 400 and "is allowed" in refused.json()["detail"]
    private = api.post("/api/clients/10.1.2.3/block", json={"reason": "x"})
    assert private.status_code == 400 and "private" in private.json()["detail"]
    assert api.post(f"/api/clients/{ip}/allow", json={"reason": ""}).status_code == 422
    assert api.post(f"/api/clients/{ip}/allow", json={"reason": "x", "ttl": "forever"}).status_code == 400
    with DecisionStore(store_path) as store:
        history = store.history(ip)
        allows = [d for d in store.list(verdict="allow") if d.client == f"{ip}/32"]
    assert [(d.verdict, d.state, d.origin) for d in history] == [("block", "revoked", "person")] * 2
    assert [(d.origin, d.note) for d in allows] == [("person", "partner")] and allows[0].expires
    # The client's page and API show the allow that covers it.
    shown = api.get(f"/api/clients/{ip}").json()
    assert shown["current"]["verdict"] == "allow" and shown["decisions"][0]["id"] == allows[0].id
    # A signed-in browser's cookie is not enough to act through the API (no CSRF token there).
    browser = _signed_in(server)
    assert browser.post(f"/api/clients/{ip}/unblock", json={"reason": "x"}).status_code == 401


def test_api_mirrors_the_cli(server: str, store_path: Path, detection: Detection) -> None:
    api = httpx.Client(base_url=server, headers=BEARER)
    flagged = api.get("/api/findings", params={"verdict": "flagged", "limit": 1000}).json()
    expected = detection.findings.filter(pl.col("verdict").is_in([ALERT, BLOCK]))
    assert flagged["total"] == expected.height
    assert [(f["ip"], f["score"]) for f in flagged["findings"]] == list(
        zip(expected["client"], expected["score"], strict=True)
    )
    fields = {
        "ip",
        "score",
        "verdict",
        "requests",
        "reasons",
        "campaign",
        "first_seen",
        "last_seen",
        "features",
    }
    assert fields <= set(flagged["findings"][0])
    everyone = api.get("/api/findings", params={"limit": 10_000}).json()
    assert everyone["total"] == detection.findings.height
    page = api.get("/api/findings", params={"limit": 3, "offset": 2}).json()["findings"]
    assert [f["ip"] for f in page] == [f["ip"] for f in everyone["findings"][2:5]]
    with DecisionStore(store_path) as store:
        stored = store.list(state=None)
    listed = api.get("/api/decisions", params={"state": "all", "limit": 1000}).json()
    assert [d["id"] for d in listed["decisions"]] == sorted((d.id for d in stored), reverse=True)
    first = api.get("/api/decisions", params={"state": "all", "limit": 2}).json()
    second = api.get(
        "/api/decisions", params={"state": "all", "limit": 2, "before": first["next_before"]}
    ).json()
    assert [d["id"] for d in first["decisions"] + second["decisions"]] == [
        d["id"] for d in listed["decisions"][:4]
    ]
    client = api.get(f"/api/clients/{XSS_IP}").json()
    assert client["finding"]["verdict"] in (ALERT, BLOCK)
    assert client["requests"]["requests"] == 60
    assert client["requests"]["user_agents"] == [{"user_agent": XSS_UA, "requests": 60}]
    paths = [p["path"] for p in client["requests"]["top_paths"]]
    assert len(paths) == 12 and all(p.startswith(XSS_PATHS) for p in paths)
    assert any(s["referer"] == XSS_REFERER for s in client["requests"]["samples"])
    assert api.get("/api/clients/no-such-client-here").status_code == 404
    assert api.get("/api/clients/" + "1" * 200).status_code == 404


def test_hostile_text_is_escaped_in_every_page(server: str) -> None:
    client = _signed_in(server)
    for path in ("/", f"/clients/{XSS_IP}", f"/decisions?client={XSS_IP}&state=all"):
        html = client.get(path).text
        assert "<script" not in html.lower(), path  # the pages have no script of their own either
        assert "<svg/onload" not in html and "<img" not in html, path
        assert re.search(r"<[a-zA-Z][^<>]*[\s/]on[a-z]+\s*=", html) is None, path  # no event handler
    page = client.get(f"/clients/{XSS_IP}").text
    assert (
        "Mozilla/5.0 &lt;script&gt;window.__pwned=&#39;ua&#39;&lt;/script&gt;&lt;img src=x onerror=" in page
    )
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in page
    # Inside the SVG chart of top paths too.
    labels = re.findall(r'<text class="label"[^>]*>([^<]*)</text>', page)
    assert any("&lt;script&gt;window.__pwned=&#39;path&#39;" in label for label in labels)
    assert any("&lt;svg/onload=" in label for label in labels)
    overview = client.get("/").text
    assert XSS_IP in overview  # flagged, with a reason that quotes one of its paths
    # The JSON API returns the text as it is, as JSON that no browser renders as a page.
    raw = httpx.get(f"{server}/api/clients/{XSS_IP}", headers=BEARER)
    assert raw.headers["content-type"] == "application/json"
    assert XSS_UA in {u["user_agent"] for u in raw.json()["requests"]["user_agents"]}


def test_a_loopback_server_answers_only_to_its_own_names(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.2", "attacker.localhost"):
        response = httpx.get(f"{server}/signin", headers={"Host": host})
        assert response.status_code == 400, host
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
        assert httpx.get(f"{server}/signin", headers={"Host": host}).status_code == 200, host
    big = httpx.post(f"{server}/signin", content=b"token=" + b"a" * 70_000)
    assert big.status_code == 413


def test_a_store_only_server_for_anyone_reading(store_path: Path, tmp_path: Path) -> None:
    """--public-read without a token: pages and API open, nothing can be changed; served
    elsewhere than on loopback, any Host is answered."""
    settings = WebSettings.for_bind("0.0.0.0", state=store_path, public_read=True)
    assert settings.secure_cookies and settings.allowed_hosts is None
    with running(create_app(settings)) as base:
        overview = httpx.get(f"{base}/", headers={"Host": "dashboard.example"})
        assert overview.status_code == 200
        assert "active blocks" in overview.text and 'id="top-clients"' in overview.text
        assert 'name="csrf"' not in overview.text and "Sign in" not in overview.text
        with DecisionStore(store_path) as store:
            blocked = store.list(verdict=BLOCK)[0].client
        page = httpx.get(f"{base}/clients/{blocked}")
        assert page.status_code == 200 and "<form" not in page.text.split("</header>", 1)[1]
        assert httpx.get(f"{base}/api/decisions").status_code == 200
        assert httpx.get(f"{base}/api/findings").status_code == 404  # no logs given
        act = httpx.post(f"{base}/api/clients/{blocked}/unblock", json={"reason": "x"}, headers=BEARER)
        assert act.status_code == 401
        assert httpx.post(f"{base}/actions", data={"action": "unblock", "client": blocked}).status_code == 403
        assert httpx.post(f"{base}/signin", data={"token": "anything"}).status_code == 404
    with DecisionStore(store_path) as store:
        assert any(d.client == blocked for d in store.list(verdict=BLOCK))


def test_a_server_off_loopback_marks_its_cookie_secure(tmp_path: Path) -> None:
    settings = WebSettings.for_bind("0.0.0.0", state=tmp_path / "s.db", token=TOKEN)
    with running(create_app(settings)) as base:
        response = httpx.post(f"{base}/signin", data={"token": TOKEN})
        assert response.status_code == 303
        assert "; secure" in response.headers["set-cookie"].lower()
        empty = httpx.get(f"{base}/api/overview", headers=BEARER).json()
        assert empty["store"]["decisions"] == 0 and empty["top"] == []
        # (httpx, like a browser, keeps a Secure cookie off plain http: sent here by hand.)
        cookie = {"Cookie": response.headers["set-cookie"].split(";", 1)[0]}
        assert "no decision yet" in httpx.get(f"{base}/", headers=cookie).text


def test_a_logs_only_server(logs: tuple[str, str]) -> None:
    """Findings without a store: no decisions, no actions, the pages and the API still work."""
    paths = (str(FIXTURES / "combined_sample.log"), logs[1])
    with running(create_app(WebSettings.for_bind("127.0.0.1", paths=paths, token=TOKEN))) as base:
        api = httpx.Client(base_url=base, headers=BEARER)
        early = api.get("/api/findings")
        assert early.status_code in (200, 503)  # 503 while the first reading runs
        _wait_for_logs(base)
        findings = api.get("/api/findings", params={"verdict": "flagged"}).json()["findings"]
        assert XSS_IP in {f["ip"] for f in findings}
        assert api.get("/api/status").json()["can_act"] is False
        assert api.get("/api/decisions").status_code == 404
        refused = api.post(f"/api/clients/{XSS_IP}/block", json={"reason": "x"})
        assert refused.status_code == 403
        browser = _signed_in(base)
        overview = browser.get("/").text
        assert "Requests and client errors" in overview and "Clients by score" in overview
        assert "active blocks" not in overview and 'href="/decisions"' not in overview
        page = browser.get(f"/clients/{XSS_IP}").text
        assert 'id="samples"' in page and 'name="csrf" value' not in page.split("</header>", 1)[1]
        assert browser.get("/decisions").status_code == 404


def test_store_pages_aggregate_a_larger_store(tmp_path: Path) -> None:
    """Counts, score bins and top clients come from SQL over the whole store, expired-by-time
    decisions counted as expired before anyone ran `expire`."""
    path = tmp_path / "s.db"
    now = datetime.now(UTC).replace(microsecond=0)
    clients = [f"198.18.{i // 250}.{i % 250 + 1}" for i in range(600)]
    findings = pl.DataFrame(
        {
            "client": clients,
            "verdict": [BLOCK if i % 3 == 0 else ALERT for i in range(600)],
            "score": [0.5 + (i % 50) / 100 for i in range(600)],
            "reasons": [[f"reason {i}"] for i in range(600)],
        }
    )
    with DecisionStore(path) as store:
        store.record(findings, now.replace(year=now.year - 1))  # all long expired by now
        store.record(findings.head(90), now)
    settings = WebSettings.for_bind("127.0.0.1", state=path, token=TOKEN)
    with running(create_app(settings)) as base:
        data = httpx.get(f"{base}/api/overview", headers=BEARER).json()
    counts = data["store"]["counts"]
    assert counts["block"] == {"active": 30, "expired": 200, "revoked": 0}
    assert counts["alert"] == {"active": 60, "expired": 400, "revoked": 0}
    assert data["store"]["decisions"] == 690
    assert sum(data["store"]["score_bins"]["block"]) == 30 and sum(data["store"]["score_bins"]["alert"]) == 60
    top = data["top"]
    assert len(top) == 20 and [r["score"] for r in top] == sorted((r["score"] for r in top), reverse=True)
    assert all(client_network(r["ip"]) is not None and r["decision"]["state"] == "active" for r in top)
    # New decisions are drawn over the store's last two weeks: the year-old ones are left out.
    assert sum(sum(b[v] for v in ("block", "alert")) for b in data["store"]["timeline"]) == 90


# A real browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.environ.get("CI"):
            pytest.fail("CI must install chromium and chromium-driver (.ci/run) for the browser tests")
        pytest.skip("chromium or chromedriver is missing: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1360,1600",
    ):
        options.add_argument(argument)
    # The driver's path is given, so Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ignore = ARTIFACTS.parent / ".gitignore"
    if not ignore.exists():  # screenshots are test output, never part of the repository
        ignore.write_text("*\n")
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver: Any, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _sign_in(driver: Any, base: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/healthz")
    driver.delete_all_cookies()  # a fresh visitor each time
    driver.get(f"{base}/")
    assert driver.current_url.startswith(f"{base}/signin"), driver.current_url
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.ID, "signin").click()
    _wait_for_url(driver, f"{base}/")


def _wait_for_url(driver: Any, url: str) -> None:
    """A click that submits a form returns before the next page has loaded."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(driver, 15).until(expected_conditions.url_to_be(url), f"never reached {url}")


def test_browser_overview_client_and_allow(
    server: str, browser: Any, store_path: Path, detection: Detection
) -> None:
    from selenium.webdriver.common.by import By

    target = detection.findings.filter(pl.col("verdict") == BLOCK).sort("score", descending=True)
    ip = next(c for c in target["client"] if c != XSS_IP)
    _sign_in(browser, server)
    rows = browser.find_elements(By.CSS_SELECTOR, "#top-clients tbody tr")
    assert len(rows) >= 5
    assert browser.find_elements(By.CSS_SELECTOR, "figure.chart svg rect")  # the charts were drawn
    assert "Clients by score" in browser.page_source and "block 0.76" in browser.page_source
    _shot(browser, "1-overview")
    browser.find_element(By.CSS_SELECTOR, f'#top-clients a[href="/clients/{ip}"]').click()
    _wait_for_url(browser, f"{server}/clients/{ip}")
    assert browser.find_element(By.ID, "current").text.startswith("block")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#samples tbody tr")) > 5
    _shot(browser, "2-client-blocked")
    browser.find_element(By.ID, "allow-reason").send_keys("our uptime monitor")
    browser.find_element(By.ID, "allow").click()
    _wait_for_url(browser, f"{server}/clients/{ip}?done=allow")
    assert "Allowed" in browser.find_element(By.CSS_SELECTOR, ".flash.done").text
    assert browser.find_element(By.ID, "current").text.startswith("allow")
    states = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "table.decisions tbody tr")]
    assert any(r.startswith(tuple("0123456789")) and "allow" in r and "active" in r for r in states)
    assert any("block" in r and "revoked" in r for r in states)
    _shot(browser, "3-client-allowed")
    with DecisionStore(store_path) as store:
        history = store.history(ip)
        allowed = [d for d in store.list(verdict="allow") if d.client == f"{ip}/32"]
    assert [d.state for d in history if d.verdict == BLOCK] == ["revoked"]
    assert [(d.origin, d.note) for d in allowed] == [("person", "our uptime monitor")]
    browser.get(f"{server}/decisions?state=all&verdict=allow")
    assert f"{ip}/32" in browser.find_element(By.CSS_SELECTOR, "table.decisions").text
    _shot(browser, "4-decisions")
    # Enter in a row's reason field presses no action: the store is left as it was.
    browser.get(f"{server}/decisions?verdict=alert")
    row = browser.find_element(By.CSS_SELECTOR, "table.decisions tbody tr")
    alerted = row.find_element(By.CSS_SELECTOR, "a.client").text
    with DecisionStore(store_path) as store:
        before = store.history(alerted)
    row.find_element(By.NAME, "reason").send_keys("pressed enter\n")
    _wait_for_url(browser, f"{server}/actions")
    assert "nothing was changed" in browser.find_element(By.CSS_SELECTOR, ".flash.error").text
    with DecisionStore(store_path) as store:
        assert store.history(alerted) == before


def test_browser_hostile_log_lines_render_inert(server: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    _sign_in(browser, server)
    pages = {
        "5-hostile-client": f"/clients/{XSS_IP}",
        "6-hostile-overview": "/",
        "7-hostile-decisions": (f"/decisions?client={XSS_IP}&state=all"),
    }
    for name, path in pages.items():
        browser.get(server + path)
        _shot(browser, name)
        assert browser.execute_script("return typeof window.__pwned") == "undefined", path
        assert browser.title.endswith("· MLGuard") and "pwned" not in browser.title, path
        injected = browser.execute_script(
            "return document.querySelectorAll('script, iframe, object, [onerror], [onload]').length"
        )
        assert injected == 0, path
    browser.get(f"{server}/clients/{XSS_IP}")
    agents = browser.find_element(By.ID, "user-agents").text
    assert "<script>window.__pwned='ua'</script><img src=x onerror=window.__pwned='img'>" in agents
    samples = browser.find_element(By.ID, "samples").text
    assert "<script>document.title='pwned'</script>" in samples
    assert "GET /wp-admin/<script>window.__pwned='path'</script>" in samples
    chart_text = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg text.label')).map(t => t.textContent).join('\\n')"
    )
    assert "/.env/<svg/onload=window.__pwned='svg'>" in chart_text
