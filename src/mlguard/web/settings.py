"""What `mlguard serve` serves and how it guards it: declared once, checked at start-up."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mlguard.decisions.policy import Policy
from mlguard.errors import UsageError

MIN_TOKEN_CHARS = 16  # a token a person can guess or brute-force over HTTP is no token
SESSION_TTL = timedelta(hours=12)
REFRESH_SECS = 60.0  # how often changed log files are read again, at most
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class WebSettings:
    """`paths`: log files, globs or directories (read in the background, again when they
    change); `state`: the decision store; at least one of them. `token`: required unless
    `public_read`, which opens reading (never actions) to anyone who reaches the server.
    `secure_cookies`: the session cookie only travels over https (or to http://localhost).
    `allowed_hosts`: the Host headers answered (None: any), against DNS rebinding."""

    paths: tuple[str, ...] = ()
    state: Path | None = None
    token: str | None = None
    public_read: bool = False
    secure_cookies: bool = True
    allowed_hosts: tuple[str, ...] | None = None
    session_ttl: timedelta = SESSION_TTL
    refresh_secs: float = REFRESH_SECS
    policy: Policy = field(default_factory=Policy)
    clock: Callable[[], datetime] = now_utc

    def __post_init__(self) -> None:
        if not self.paths and self.state is None:
            raise UsageError("nothing to serve: give log paths, --state PATH, or both")
        if "-" in self.paths:
            raise UsageError("mlguard serve reads log files, not stdin: give paths instead of '-'")
        if self.token is None and not self.public_read:
            raise UsageError(
                "a token is required: set MLGUARD_TOKEN (e.g. to `openssl rand -hex 32`) or --token, "
                "or give --public-read for a read-only dashboard without one"
            )
        if self.token is not None and len(self.token) < MIN_TOKEN_CHARS:
            raise UsageError(
                f"the token has {len(self.token)} characters; use at least {MIN_TOKEN_CHARS} "
                "(e.g. `openssl rand -hex 32`)"
            )

    @property
    def can_act(self) -> bool:
        """Actions (allow, unblock, block) need a store and a token to prove who asks."""
        return self.state is not None and self.token is not None

    @classmethod
    def for_bind(cls, host: str, **values: object) -> WebSettings:
        """Settings for a server bound to `host`: on a loopback address the Host header must
        name the machine itself and the cookie may travel over plain http; elsewhere the
        cookie is marked Secure (https, or http://localhost through a port-forward)."""
        loopback = is_loopback(host)
        return cls(
            secure_cookies=not loopback,
            allowed_hosts=LOOPBACK_NAMES if loopback else None,
            **values,  # type: ignore[arg-type]
        )
