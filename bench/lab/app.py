"""Dynamic half of the lab site: a stdlib ``ThreadingHTTPServer`` app behind nginx ``proxy_pass``.

Run as ``python -m bench.lab.app --port P --users users.json``.  Routes: /login (form + POST),
/logout, /account, /search?q=, /blog/ and /blog/<slug> (+ POST comments), /feed.xml (ETag/304),
/health, /api/status, /api/products[/<id>], /api/orders (401), /admin/ (401), 404 otherwise.
Some junk input raises real unhandled errors (-> 500), as a real small app would.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import secrets
import sqlite3
import threading
import urllib.parse
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.lab.site import BLOG_POSTS, SECTIONS, page_html

_POSTS = dict(BLOG_POSTS)
_PRODUCTS = [{"id": i + 1, "slug": s, "price": 9.5 + 7 * i} for i, s in enumerate(SECTIONS["products"])]


class State:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.sessions: dict[str, str] = {}
        self.comments: dict[str, list[tuple[str, str]]] = {s: [] for s in _POSTS}
        self.lock = threading.Lock()
        # The search box queries a real (in-memory) SQL table, with bound parameters: sqlmap and
        # wapiti get a genuine database-backed endpoint to probe, and it is not injectable.
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.db.execute("create table items(name text, body text)")
        rows = [(p["slug"], f"{p['slug']} product page") for p in _PRODUCTS] + [(t, s) for s, t in BLOG_POSTS]
        self.db.executemany("insert into items values (?, ?)", rows)

    def search(self, q: str) -> list[str]:
        with self.lock:
            cur = self.db.execute("select name from items where name like ? or body like ? limit 20",
                                  (f"%{q}%", f"%{q}%"))
            return [r[0] for r in cur.fetchall()]


class Handler(BaseHTTPRequestHandler):
    server_version = "larkspur-app/1.4"
    state: State

    def log_message(self, format: str, *args: object) -> None:  # nginx keeps the log, not us
        pass

    # -- helpers -------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes | str, ctype: str = "text/html; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _json(self, status: int, obj: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj), "application/json", headers)

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, 1 << 20)).decode("utf-8")  # bad UTF-8 -> 500, like many apps
        return {k: v[0] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}

    def _user(self) -> str | None:
        for part in (self.headers.get("Cookie") or "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == "sid":
                return self.state.sessions.get(v)
        return None

    def _not_found(self) -> None:
        self._send(404, page_html("Not found", "<p>The page you requested does not exist.</p>", []))

    def _run(self, fn: object) -> None:
        try:
            fn()  # type: ignore[operator]
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # an unhandled error is a 500, as in any real framework
            with contextlib.suppress(OSError):
                self._send(500, page_html("Internal Server Error", f"<pre>{html.escape(type(exc).__name__)}"
                                          "</pre>", []))

    # -- dispatch ------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._run(self._get)

    def do_HEAD(self) -> None:
        self._run(self._get)

    def do_POST(self) -> None:
        self._run(self._post)

    def do_PUT(self) -> None:
        self._send(405, "Method Not Allowed", "text/plain", {"Allow": "GET, HEAD, POST"})

    do_DELETE = do_PUT
    do_OPTIONS = do_PUT
    do_PATCH = do_PUT

    def _get(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        # errors="strict": a query with invalid percent-encoded UTF-8 raises -> 500
        query = urllib.parse.parse_qs(url.query, errors="strict")
        if path == "/health":
            return self._json(200, {"status": "ok", "db": "ok"}, {"Cache-Control": "no-store"})
        if path == "/api/status":
            return self._json(200, {"version": "1.4.2", "maintenance": False})
        if path == "/api/products":
            page = int(query.get("page", ["1"])[0])  # junk page number -> ValueError -> 500
            return self._json(200, {"page": page, "items": _PRODUCTS[(page - 1) * 5:page * 5]})
        if path.startswith("/api/products/"):
            pid = int(path.rsplit("/", 1)[1])  # /api/products/abc -> 500, a classic
            match = [p for p in _PRODUCTS if p["id"] == pid]
            return self._json(200, match[0]) if match else self._json(404, {"error": "not found"})
        if path.startswith("/api/orders"):
            if not (self.headers.get("Authorization") or "").startswith("Bearer "):
                return self._json(401, {"error": "missing token"}, {"WWW-Authenticate": "Bearer"})
            return self._json(403, {"error": "invalid token"})
        if path.startswith("/admin"):
            return self._send(401, "Authorization required", "text/plain",
                              {"WWW-Authenticate": 'Basic realm="admin"'})
        if path == "/login":
            return self._send(200, _login_page(""))
        if path == "/logout":
            return self._send(302, "", headers={"Location": "/", "Set-Cookie": "sid=; Max-Age=0; Path=/"})
        if path == "/account":
            user = self._user()
            if not user:
                return self._send(302, "", headers={"Location": "/login?next=/account"})
            return self._send(200, page_html("Your account", f"<p>Hello {html.escape(user)}</p>", []))
        if path == "/search":
            q = query.get("q", [""])[0]
            hits = self.state.search(q) if q else []
            items = "".join(f"<li>{html.escape(h)}</li>" for h in hits)
            return self._send(200, page_html("Search", f"<p>{len(hits)} results for "
                                             f"{html.escape(q)}</p><ul>{items}</ul>", []))
        if path == "/feed.xml":
            return self._feed()
        if path in ("/blog", "/blog/"):
            items = "".join(f'<li><a href="/blog/{s}">{html.escape(t)}</a></li>' for s, t in BLOG_POSTS)
            return self._send(200, page_html("Blog", f"<ul>{items}</ul>", []))
        if path.startswith("/blog/"):
            slug = path[len("/blog/"):].strip("/")
            if slug in _POSTS:
                return self._send(200, self._post_page(slug))
        return self._not_found()

    def _post(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/login":
            form = self._form()
            user, pw = form.get("username", ""), form.get("password", "")
            if not user or not pw:
                return self._send(400, _login_page("Username and password are required."))
            if self.state.users.get(user) == pw:
                sid = secrets.token_hex(16)
                with self.state.lock:
                    self.state.sessions[sid] = user
                return self._send(302, "", headers={"Location": "/account",
                                                    "Set-Cookie": f"sid={sid}; Path=/; HttpOnly"})
            return self._send(200, _login_page("Invalid username or password."))
        if path.startswith("/blog/") and path.endswith("/comment"):
            slug = path[len("/blog/"):-len("/comment")]
            if slug not in _POSTS:
                return self._not_found()
            form = self._form()
            body = form.get("body", "").strip()
            if not body:
                return self._send(400, page_html("Bad request", "<p>Empty comment.</p>", []))
            with self.state.lock:
                self.state.comments[slug].append((form.get("name", "anonymous")[:40], body[:2000]))
            return self._send(303, "", headers={"Location": f"/blog/{slug}#comments"})
        if path == "/search" or path.startswith("/api/"):
            return self._send(405, "Method Not Allowed", "text/plain", {"Allow": "GET, HEAD"})
        return self._not_found()

    def _post_page(self, slug: str) -> str:
        comments = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(b)}</li>"
                           for n, b in self.state.comments[slug][-20:])
        form = (f'<form method="post" action="/blog/{slug}/comment"><input name="name">'
                '<textarea name="body"></textarea><button>Post</button></form>')
        return page_html(_POSTS[slug], f"<p>Post body for {slug}.</p><h2 id='comments'>Comments</h2>"
                         f"<ul>{comments}</ul>{form}", ["/static/img/hero.png"])

    def _feed(self) -> None:
        etag = '"feed-v3"'
        if self.headers.get("If-None-Match") == etag:
            return self._send(304, b"", headers={"ETag": etag})
        items = "".join(f"<item><title>{html.escape(t)}</title><link>/blog/{s}</link></item>"
                        for s, t in BLOG_POSTS)
        rss = (f'<?xml version="1.0"?><rss version="2.0"><channel><title>Larkspur blog</title>{items}'
               "</channel></rss>")
        self._send(200, rss, "application/rss+xml", {"ETag": etag,
                                                      "Last-Modified": formatdate(1790000000, usegmt=True)})


def _login_page(error: str) -> str:
    err = f'<p class="error">{html.escape(error)}</p>' if error else ""
    return page_html("Sign in", f'{err}<form method="post" action="/login"><input name="username">'
                     '<input type="password" name="password"><button>Sign in</button></form>', [])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--users", type=Path, required=True)
    args = ap.parse_args()
    Handler.state = State(json.loads(args.users.read_text()))
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.request_queue_size = 256
    server.serve_forever()


if __name__ == "__main__":
    main()
