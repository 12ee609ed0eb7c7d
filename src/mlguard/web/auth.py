"""Who may read and who may act: the token, browser sessions and CSRF tokens.

- The API takes the token as `Authorization: Bearer TOKEN`, on every request.
- A browser signs in once with the token and gets a random session id in an HttpOnly,
  SameSite=Strict cookie (Secure unless served on a loopback address). The token itself is
  never stored in the browser.
- Every action of the browser is a POST carrying the session's CSRF token (a synchronizer
  token: random, kept with the session on the server, compared in constant time). The API's
  actions take the bearer token only, never the cookie, so a page elsewhere cannot make a
  browser act through the API.

Secrets are compared with `hmac.compare_digest` on bytes, so the time taken does not say how
many leading characters were right. Sessions live in this process's memory: a restart (or a
new token) signs everyone out.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.requests import HTTPConnection

COOKIE = "mlguard_session"
MAX_SESSIONS = 1024  # the oldest is dropped beyond this: signing in must not grow memory for ever


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets (any characters)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


@dataclass(frozen=True)
class Session:
    id: str
    csrf: str
    expires: float  # time.monotonic()


class Sessions:
    """Signed-in browsers: random ids, each with its own CSRF token and expiry."""

    def __init__(self, ttl_secs: float, max_sessions: int = MAX_SESSIONS) -> None:
        self.ttl_secs = ttl_secs
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self) -> Session:
        session = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.monotonic() + self.ttl_secs
        )
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and session.expires <= time.monotonic():
                del self._sessions[session_id]
                return None
            return session

    def end(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)


class Guard:
    """Answers "may this request read?" and "may it act?" for pages and API alike."""

    def __init__(self, token: str | None, public_read: bool, session_ttl_secs: float) -> None:
        self.token = token
        self.public_read = public_read
        self.sessions = Sessions(session_ttl_secs)

    def token_matches(self, given: str) -> bool:
        return self.token is not None and same_secret(given, self.token)

    def bearer(self, conn: HTTPConnection) -> bool | None:
        """True: a valid bearer token; False: an Authorization header that is not one;
        None: no Authorization header."""
        header = conn.headers.get("authorization")
        if header is None:
            return None
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(value.strip())

    def session(self, conn: HTTPConnection) -> Session | None:
        return self.sessions.get(conn.cookies.get(COOKIE))

    def may_read(self, conn: HTTPConnection) -> bool:
        bearer = self.bearer(conn)
        if bearer is not None:
            return bearer  # a wrong token is refused even where reading is public
        return self.public_read or self.session(conn) is not None

    def csrf_ok(self, session: Session | None, given: str | None) -> bool:
        return session is not None and given is not None and same_secret(given, session.csrf)
