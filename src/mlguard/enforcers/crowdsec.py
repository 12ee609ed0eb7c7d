"""`crowdsec`: push blocks to a CrowdSec Local API (LAPI), so that the bouncers already there enforce them.

MLGuard logs in as a CrowdSec *machine* (`cscli machines add mlguard --auto -f FILE`), like an agent
or `cscli decisions add`: each active block becomes one alert (scenario `mlguard/block`, the reasons
in its message) carrying one `ban` decision (scope `Ip`, or `Range` for a CIDR block, origin
`mlguard`) that lasts until the block expires. Bouncers (firewall, nginx, ...) see it in
`GET /v1/decisions` like any other ban. Only blocks are pushed, and never a protected client
(private, loopback, allowlisted, trusted proxy).

Each block is pushed once (the store remembers deliveries per LAPI and machine); a block refreshed
by a later detection (a later expiry) is pushed again with the longer duration and its old ban
withdrawn. A ban MLGuard pushed whose block is no longer active (unblocked, allowed, expired) is
withdrawn with `DELETE /v1/decisions/{id}`, which a machine may call (CrowdSec 1.4.6); only
decisions found under this machine's own `mlguard/block` alerts are ever deleted, never those of
CrowdSec's scenarios or of a person. A ban deleted in CrowdSec (`cscli decisions delete`) is not
pushed again while the same block lasts.

Connection errors, timeouts, 429 and 5xx are retried with exponential backoff; an expired token
(401) means one new login. When the LAPI still cannot be reached, the blocks stay unpushed for the
next sync and the result says why; nothing raises.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlguard import __version__
from mlguard.decisions.policy import Policy, client_network
from mlguard.decisions.store import Decision, DecisionStore
from mlguard.enforcers import SyncResult
from mlguard.errors import EnforcerError, UsageError
from mlguard.explain.reasons import safe_text

DEFAULT_URL = "http://127.0.0.1:8080"
# The 1.4.6 LAPI refuses a login whose User-Agent is not "name/version" (it records the version).
USER_AGENT = f"mlguard/{__version__}"
SCENARIO = "mlguard/block"
ORIGIN = "mlguard"
META_ID = "mlguard_decision"  # alert meta that ties a CrowdSec alert to its MLGuard decision
MAX_MESSAGE_CHARS = 500
ALERTS_PER_POST = 200  # bounds one request's size; the LAPI inserts in bulk either way
# A refreshed block is pushed again only when it outlasts its ban by more than this (clock skew
# and the seconds between our computation and the LAPI's must not cause a push on every sync).
EXTEND_SLACK = timedelta(minutes=5)
NEVER = timedelta(days=365)  # a block without expiry (none is stored so today) still needs a duration

# 500s of CrowdSec 1.4.6 that are not transient: a rejected alert and an already purged decision.
_PERMANENT_500 = ("validation failure", "doesn't exist")
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|μs|ms|h|m|s)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration_secs(text: str) -> float:
    """Seconds in a Go duration as the LAPI prints remaining time ("3h59m58.6s", "-3.1ms")."""
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0
    body = body.lstrip("+-")
    parts = _GO_DURATION.findall(body)
    if body == "0":
        return 0.0
    if not parts or "".join(n + u for n, u in parts) != body:
        raise ValueError(f"not a Go duration: {text!r}")
    return sign * sum(float(n) * _GO_UNITS[u] for n, u in parts)


def read_credentials(path: str | Path) -> dict[str, str]:
    """`url`, `login`, `password` from a file written by `cscli machines add NAME --auto -f FILE`.

    Flat `key: value` YAML; read without a YAML library, quotes undone."""
    found: dict[str, str] = {}
    try:
        for line in Path(path).read_text().splitlines():
            key, sep, value = line.partition(":")
            if not sep or line.startswith((" ", "#")):
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1].replace("''", "'") if value[0] == "'" else str(json.loads(value))
            found[key.strip()] = value
    except OSError as exc:
        raise UsageError(f"--crowdsec-credentials {safe_text(path, 120)}: {exc.strerror}") from None
    except ValueError:  # not text, or a broken double-quoted value
        found = {}
    if not found.get("login") or not found.get("password"):
        raise UsageError(
            f"--crowdsec-credentials {safe_text(path, 120)} has no login and password; "
            "write it with `cscli machines add NAME --auto -f FILE`"
        )
    return found


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _wall_clock() -> datetime:
    return datetime.now(UTC)


class _Refused(EnforcerError):
    """The LAPI answered with an HTTP error status (kept apart so a refused login can say so)."""

    def __init__(self, message: str, status: int, problem: str) -> None:
        super().__init__(message)
        self.status, self.problem = status, problem


@dataclass
class _Ban:
    """One decision this machine pushed that the LAPI still enforces."""

    crowdsec_id: int
    remaining_secs: float


class CrowdSecEnforcer:
    name = "crowdsec"
    blocks = True

    def __init__(
        self,
        store: DecisionStore,
        machine_id: str | None = None,
        password: str | None = None,
        url: str | None = None,
        credentials: str | Path | None = None,
        policy: Policy | None = None,
        attempts: int = 4,
        backoff_secs: float = 0.5,
        timeout_secs: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = _wall_clock,
    ) -> None:
        # Explicit values win over the credentials file, as with cscli's own flags.
        found = read_credentials(credentials) if credentials is not None else {}
        self.url = (url or found.get("url") or DEFAULT_URL).rstrip("/")
        self.machine_id = machine_id or found.get("login") or ""
        self._password = password or found.get("password") or ""
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"--crowdsec-url '{safe_text(self.url, 80)}' is not an http(s) URL")
        if not self.machine_id or not self._password:
            raise UsageError(
                "the crowdsec enforcer needs a machine login: --crowdsec-credentials FILE "
                "(from `cscli machines add mlguard --auto -f FILE`) or --crowdsec-machine and "
                "--crowdsec-password"
            )
        if attempts < 1:
            raise UsageError("the crowdsec enforcer needs at least 1 attempt")
        self.store, self.policy = store, policy or Policy()
        self.attempts, self.backoff_secs, self.timeout_secs = attempts, backoff_secs, timeout_secs
        self._sleep, self._clock = sleep, clock
        self._token: str | None = None
        # Per LAPI and machine: another LAPI, or a new machine on the same one, gets every block.
        self.target = f"crowdsec:{self.url}:{self.machine_id}"

    # HTTP

    def _request(self, method: str, path: str, body: object = None, auth: bool = True) -> Any:
        """JSON in, JSON out; retried on transient failures; one new login on 401."""
        data = None if body is None else json.dumps(body).encode()
        relogged = False
        problem, attempt, status = "", 0, 0
        while attempt < self.attempts:
            if auth and self._token is None:
                self._login()
            headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
            if auth:
                headers["Authorization"] = f"Bearer {self._token}"
            request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
            if attempt:
                self._sleep(self.backoff_secs * 2 ** (attempt - 1))
            attempt += 1
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_secs) as response:
                    raw = response.read()
                return json.loads(raw) if raw.strip() else None
            except urllib.error.HTTPError as exc:
                why, status = _lapi_message(exc), exc.code
                problem = f"HTTP {exc.code}" + (f" ({why})" if why else "")
                if exc.code == 401 and auth and not relogged:
                    # The token expired (it lasts an hour): log in again, once, without counting a try.
                    self._token, relogged = None, True
                    attempt -= 1
                    continue
                transient = exc.code == 429 or (exc.code >= 500 and not any(p in why for p in _PERMANENT_500))
                if not transient:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                problem, status = safe_text(getattr(exc, "reason", exc), 120), 0
            except ValueError:
                problem = "the answer is not JSON"
                break
        where = f"{safe_text(self.url, 80)}{path.split('?')[0]}"
        message = f"CrowdSec LAPI {method} {where} failed after {attempt} attempt(s): {problem}"
        if status:
            raise _Refused(message, status, problem)
        raise EnforcerError(message)

    def _login(self) -> None:
        body = {"machine_id": self.machine_id, "password": self._password, "scenarios": [SCENARIO]}
        try:
            answer = self._request("POST", "/v1/watchers/login", body, auth=False)
        except _Refused as exc:
            if exc.status not in (401, 403):
                raise
            raise EnforcerError(
                f"CrowdSec LAPI {safe_text(self.url, 80)} refused machine "
                f"'{safe_text(self.machine_id, 60)}': {exc.problem}; check the "
                "login and password (`cscli machines list` on the LAPI host)"
            ) from None
        token = answer.get("token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise EnforcerError(f"CrowdSec LAPI {safe_text(self.url, 80)} answered a login without a token")
        self._token = token

    # What is there

    def _ours(self) -> dict[int, list[_Ban]]:
        """MLGuard decision id -> the bans this machine pushed for it that are still in force."""
        # limit=0: CrowdSec 1.4.6 returns 100 alerts by default, and a limit above the number of
        # matching alerts makes its pagination loop forever; 0 means "count, then fetch them all".
        alerts = self._request("GET", f"/v1/alerts?scenario={SCENARIO}&has_active_decision=true&limit=0")
        alerts = [] if alerts is None else alerts  # 1.4.6 answers null when there are none
        if not isinstance(alerts, list):
            raise EnforcerError(
                f"CrowdSec LAPI {safe_text(self.url, 80)} answered GET /v1/alerts with no list"
            )
        found: dict[int, list[_Ban]] = {}
        for alert in alerts:
            if not isinstance(alert, dict) or alert.get("scenario") != SCENARIO:
                continue
            if alert.get("machine_id") not in (None, self.machine_id):
                continue  # another MLGuard's machine: its bans are its own business
            meta = {m.get("key"): m.get("value") for m in alert.get("meta") or [] if isinstance(m, dict)}
            try:
                mlguard_id = int(str(meta.get(META_ID)), 10)
                bans = [
                    _Ban(int(d["id"]), go_duration_secs(str(d["duration"])))
                    for d in alert.get("decisions") or []
                    if d.get("origin") == ORIGIN
                ]
            except (KeyError, TypeError, ValueError, AttributeError):
                continue  # not one of ours after all
            found.setdefault(mlguard_id, []).extend(b for b in bans if b.remaining_secs > 0)
        return {i: bans for i, bans in found.items() if bans}

    # What should be there

    def _wanted(self, decisions: list[Decision], now: datetime) -> tuple[list[Decision], int]:
        """Blocks to enforce (unprotected, not past their expiry), and how many were protected."""
        wanted, protected = [], 0
        for d in decisions:
            if d.verdict != "block" or (d.expires is not None and _parse_iso(d.expires) <= now):
                continue
            if self.policy.protection(d.client) is not None:
                protected += 1
                continue
            wanted.append(d)
        return wanted, protected

    def _alert(self, decision: Decision, now: datetime) -> dict[str, object]:
        network = client_network(decision.client)
        assert network is not None  # protection() refused everything that is not an address
        if network.num_addresses == 1:
            scope, value = "Ip", str(network.network_address)
        else:
            scope, value = "Range", str(network)
        until = _parse_iso(decision.expires) if decision.expires else now + NEVER
        started = _iso(now)  # the LAPI sets until = stop_at + duration: both from this same second
        seconds = max(int((until - _parse_iso(started)).total_seconds()), 1)
        score = "" if decision.score is None else f" (score {decision.score:.2f})"
        why = "; ".join(decision.reasons) or decision.note or "no reason recorded"
        message = safe_text(f"MLGuard block {decision.id}{score}: {why}", MAX_MESSAGE_CHARS)
        source: dict[str, object] = {
            "scope": scope,
            "value": value,
            "ip" if scope == "Ip" else "range": value,
        }
        return {
            "scenario": SCENARIO,
            "scenario_hash": "",
            "scenario_version": "",
            "message": message,
            "events_count": 1,
            "events": [],
            "start_at": started,
            "stop_at": started,
            "created_at": started,
            "capacity": 0,
            "leakspeed": "0",
            "simulated": False,
            "remediation": True,
            "source": source,
            "meta": [
                {"key": META_ID, "value": str(decision.id)},
                {"key": "mlguard_origin", "value": decision.origin},
            ],
            "decisions": [
                {
                    "origin": ORIGIN,
                    "type": "ban",
                    "scope": scope,
                    "value": value,
                    "duration": f"{seconds}s",
                    "scenario": SCENARIO,
                }
            ],
        }

    def _outlasts(self, decision: Decision, bans: list[_Ban], now: datetime) -> bool:
        """Whether the block was refreshed past the end of the ban(s) pushed for it."""
        if decision.expires is None:
            return False
        wanted = (_parse_iso(decision.expires) - now).total_seconds()
        return max(b.remaining_secs for b in bans) < wanted - EXTEND_SLACK.total_seconds()

    # The interface

    def pending(self, decisions: list[Decision]) -> list[Decision]:
        """The blocks this LAPI has not had yet (withdrawals and refreshes need the LAPI to tell)."""
        wanted, _ = self._wanted(decisions, self._clock())
        return self.store.undelivered(self.target, wanted)

    def sync(self, decisions: list[Decision]) -> SyncResult:
        """Push the blocks not pushed yet (and refreshed ones again), withdraw bans whose block ended."""
        now = self._clock()
        wanted, protected = self._wanted(decisions, now)
        new = self.store.undelivered(self.target, wanted)
        result = SyncResult()
        # Errors come first in the messages (the CLI reports the first), notes after them.
        note = [f"{protected} protected client(s) not pushed"] if protected else []
        try:
            present = self._ours()
        except EnforcerError as exc:
            result.failed = len(new)
            result.unchanged = len(wanted) - len(new)
            result.messages += [str(exc), *note]
            return result
        # Pushed, but the sync stopped before it could note the delivery: note it, push nothing twice.
        found = [d.id for d in new if d.id in present]
        if found:
            self.store.mark_delivered(self.target, found, now)
            new = [d for d in new if d.id not in present]
        fresh = {d.id for d in new}
        extended = [
            d
            for d in wanted
            if d.id not in fresh and d.id in present and self._outlasts(d, present[d.id], now)
        ]
        result.unchanged = len(wanted) - len(new) - len(extended)
        keep = {d.id for d in wanted}
        withdraw = {i: bans for i, bans in present.items() if i not in keep}

        push = new + extended
        replaced: dict[int, list[_Ban]] = {}
        for start in range(0, len(push), ALERTS_PER_POST):
            chunk = push[start : start + ALERTS_PER_POST]
            try:
                self._request("POST", "/v1/alerts", [self._alert(d, now) for d in chunk])
            except EnforcerError as exc:
                result.failed += len(push) - start
                result.messages.append(str(exc))
                break
            self.store.mark_delivered(self.target, [d.id for d in chunk if d.id in fresh], self._clock())
            result.sent += len(chunk)
            # A refreshed block's new ban is in: its old, shorter one goes.
            replaced.update((d.id, present[d.id]) for d in chunk if d.id not in fresh)

        withdrawn, todo = 0, [*withdraw.items(), *replaced.items()]
        for done, (mlguard_id, bans) in enumerate(todo):
            try:
                for ban in bans:
                    self._request("DELETE", f"/v1/decisions/{ban.crowdsec_id}")
            except EnforcerError as exc:
                # Still in the LAPI: the next sync finds them and tries again (no retrying each one
                # with backoff here when the LAPI has gone away).
                result.failed += len(todo) - done
                result.messages.append(str(exc))
                break
            withdrawn += mlguard_id in withdraw
        if withdrawn:
            result.messages.append(f"{withdrawn} ban(s) withdrawn")
        result.messages += note
        return result

    def healthcheck(self) -> str | None:
        """None when the LAPI answers and accepts the machine's login."""
        try:
            self._token = None
            self._login()
        except EnforcerError as exc:
            return str(exc)
        return None

    def close(self) -> None:
        self._token = None


def _lapi_message(exc: urllib.error.HTTPError) -> str:
    """The LAPI's `message` from an error answer, made safe to show."""
    try:
        body = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        return ""
    return safe_text(body.get("message", ""), 200) if isinstance(body, dict) else ""
