"""The crowdsec enforcer against a real CrowdSec Local API (Debian's crowdsec, `-no-cs`) started here
on 127.0.0.1: a bouncer's GET /v1/decisions is the proof that a block is enforced. Bounded: one
LAPI for the module, a few dozen requests, seconds of timeouts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from mlguard.decisions.policy import Policy, parse_networks
from mlguard.decisions.store import DecisionStore
from mlguard.enforcers.crowdsec import CrowdSecEnforcer, go_duration_secs, read_credentials
from mlguard.errors import UsageError
from tests.crowdsec_lapi import CROWDSEC, CSCLI, FlakyProxy, Lapi, free_port

needs_crowdsec = pytest.mark.skipif(
    (CROWDSEC is None or CSCLI is None) and not os.environ.get("CI"),
    reason="crowdsec is not installed (CI installs the Debian package)",
)


@pytest.fixture(scope="module")
def lapi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lapi]:
    assert CROWDSEC and CSCLI, "CI must install crowdsec (.ci/run)"
    server = Lapi(tmp_path_factory.mktemp("crowdsec"))
    yield server
    server.stop()


def _enforcer(lapi: Lapi, store: DecisionStore, machine: str, **options: object) -> CrowdSecEnforcer:
    """An enforcer logged in as its own machine: tests sharing the LAPI never see each other's bans."""
    password = lapi.add_machine(machine)
    return CrowdSecEnforcer(
        store=store, url=lapi.url, machine_id=machine, password=password, timeout_secs=5.0, **options
    )


def _record(store: DecisionStore, rows: dict[str, tuple[str, list[str]]], now: datetime) -> None:
    store.record(
        pl.DataFrame(
            {
                "client": list(rows),
                "verdict": [v for v, _ in rows.values()],
                "score": [0.9] * len(rows),
                "reasons": [r for _, r in rows.values()],
            }
        ),
        now,
    )


def _lasts_until(ban: dict[str, str], expires: str | None) -> bool:
    """Whether the ban ends when the block expires (to the seconds the round trips take)."""
    assert expires is not None
    end = datetime.strptime(expires, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return abs(go_duration_secs(ban["duration"]) - (end - datetime.now(UTC)).total_seconds()) < 3


@needs_crowdsec
def test_blocks_become_bans_a_bouncer_sees_and_ended_blocks_are_withdrawn(tmp_path: Path, lapi: Lapi) -> None:
    store = DecisionStore(tmp_path / "state.db")
    now = datetime.now(UTC)
    _record(
        store,
        {
            "81.2.69.160": ("block", ["\x1b[31m<script>alert(1)</script>", "404s"]),
            "81.2.69.161": ("alert", ["only an alert"]),
            "10.0.0.9": ("block", ["private: never pushed"]),
            "81.2.71.1": ("block", ["allowlisted: never pushed"]),
        },
        now,
    )
    store.block("81.2.70.0/24", now, "seen in our WAF", ttl=timedelta(hours=1))
    policy = Policy(allow=parse_networks(["81.2.71.0/24"]))
    password = lapi.add_machine("mlguard-main")
    cs = CrowdSecEnforcer(
        store=store, url=lapi.url, machine_id="mlguard-main", password=password, policy=policy
    )
    assert cs.healthcheck() is None
    assert [d.client for d in cs.pending(store.list())] == ["81.2.69.160", "81.2.70.0/24"]

    first = cs.sync(store.list())
    assert (first.sent, first.unchanged, first.failed) == (2, 0, 0), first.messages
    assert "2 protected client(s) not pushed" in first.messages
    block = next(d for d in store.list() if d.client == "81.2.69.160")
    (ban,) = lapi.bans("81.2.69.160")
    assert (ban["type"], ban["scope"], ban["value"]) == ("ban", "Ip", "81.2.69.160")
    assert (ban["origin"], ban["scenario"]) == ("mlguard", "mlguard/block")
    assert _lasts_until(ban, block.expires) and go_duration_secs(ban["duration"]) > 3.9 * 3600
    (ranged,) = lapi.bans("81.2.70.5")  # a bouncer asking about one address of the blocked range
    assert (ranged["scope"], ranged["value"]) == ("Range", "81.2.70.0/24")
    assert 3590 < go_duration_secs(ranged["duration"]) <= 3600
    for ip in ("10.0.0.9", "81.2.71.1", "81.2.69.161"):
        assert lapi.bans(ip) == [], ip
    messages = {a["source"]["value"]: a["message"] for a in lapi.alerts("mlguard-main", password)}
    assert "\x1b" not in messages["81.2.69.160"] and "\\x1b[31m<script>" in messages["81.2.69.160"]
    assert "seen in our WAF" in messages["81.2.70.0/24"]

    again = cs.sync(store.list())  # nothing new: nothing pushed twice
    assert (again.sent, again.unchanged, again.failed) == (0, 2, 0)
    assert len(lapi.alerts("mlguard-main", password)) == 2 and cs.pending(store.list()) == []

    # Unblocked in MLGuard: its ban goes, and only its own (an admin's ban of the same address stays).
    lapi.admin_ban("81.2.69.160")
    store.unblock("81.2.69.160", "customer called")
    released = cs.sync(store.list())
    assert (released.sent, released.failed) == (0, 0) and "1 ban(s) withdrawn" in released.messages
    assert [b["origin"] for b in lapi.bans("81.2.69.160")] == ["cscli"]
    assert len(lapi.bans("81.2.70.5")) == 1

    store.expire(now + timedelta(hours=2))  # the range's hour is over
    expired = cs.sync(store.list())
    assert "1 ban(s) withdrawn" in expired.messages and lapi.bans("81.2.70.5") == []
    assert cs.sync(store.list()).messages == ["2 protected client(s) not pushed"]  # nothing withdrawn twice
    store.close()


@needs_crowdsec
def test_a_refreshed_block_is_pushed_again_for_its_longer_time(tmp_path: Path, lapi: Lapi) -> None:
    store = DecisionStore(tmp_path / "state.db")
    now = datetime.now(UTC)
    _record(store, {"81.2.69.170": ("block", ["x"])}, now)
    cs = _enforcer(lapi, store, "mlguard-refresh")
    assert cs.sync(store.list()).sent == 1
    # As if the last sync had stopped after the push, before noting the delivery: found, not pushed again.
    cs.target += ":lost"
    assert [d.client for d in cs.pending(store.list())] == ["81.2.69.170"]
    found = cs.sync(store.list())
    assert (found.sent, found.unchanged) == (0, 1) and cs.pending(store.list()) == []
    assert len(lapi.bans("81.2.69.170")) == 1
    _record(store, {"81.2.69.170": ("block", ["seen again"])}, now + timedelta(hours=1))  # expiry +1 h
    (block,) = store.list()
    refreshed = cs.sync(store.list())
    assert (refreshed.sent, refreshed.unchanged, refreshed.failed) == (1, 0, 0), refreshed.messages
    (ban,) = lapi.bans("81.2.69.170")  # the new, longer ban; the old one was withdrawn
    assert _lasts_until(ban, block.expires) and go_duration_secs(ban["duration"]) > 4.9 * 3600
    steady = cs.sync(store.list())
    assert (steady.sent, steady.unchanged) == (0, 1) and len(lapi.bans("81.2.69.170")) == 1
    store.close()


@needs_crowdsec
def test_5xx_is_retried_with_backoff_and_an_expired_token_means_one_new_login(
    tmp_path: Path, lapi: Lapi
) -> None:
    proxy = FlakyProxy(lapi.url)
    try:
        store = DecisionStore(tmp_path / "state.db")
        _record(store, {"81.2.69.180": ("block", ["x"])}, datetime.now(UTC))
        waits: list[float] = []
        cs = _enforcer(lapi, store, "mlguard-flaky", sleep=waits.append)
        cs.url = proxy.url  # the same LAPI, through a proxy that fails on demand
        proxy.fail = [("POST", "/v1/alerts", 503), ("POST", "/v1/alerts", 502)]
        done = cs.sync(store.list())
        assert (done.sent, done.failed) == (1, 0) and waits == [0.5, 1.0]
        assert len(lapi.bans("81.2.69.180")) == 1

        cs._token = "expired"  # the LAPI answers 401, as it does once a token's hour is over
        store.unblock("81.2.69.180", "test")
        released = cs.sync(store.list())
        assert "1 ban(s) withdrawn" in released.messages and released.failed == 0
        assert proxy.seen.count("POST /v1/watchers/login") == 2 and lapi.bans("81.2.69.180") == []

        _record(store, {"81.2.69.181": ("block", ["x"])}, datetime.now(UTC))
        assert cs.sync(store.list()).sent == 1
        store.unblock("81.2.69.181", "test")
        proxy.fail = [("DELETE", "/v1/decisions/", 503)] * cs.attempts  # the withdrawal keeps failing
        kept = cs.sync(store.list())
        assert kept.failed == 1 and "HTTP 503" in kept.messages[0] and len(lapi.bans("81.2.69.181")) == 1
        assert "1 ban(s) withdrawn" in cs.sync(store.list()).messages and lapi.bans("81.2.69.181") == []

        proxy.fail = [("GET", "/v1/alerts", 400)]  # a refusal is not retried
        waits.clear()
        refused = cs.sync(store.list())
        assert "HTTP 400" in refused.messages[0] and waits == [] and proxy.fail == []
        store.close()
    finally:
        proxy.close()


@needs_crowdsec
def test_lapi_down_or_login_refused_fails_cleanly_and_keeps_the_blocks(tmp_path: Path, lapi: Lapi) -> None:
    store = DecisionStore(tmp_path / "state.db")
    _record(store, {"81.2.69.190": ("block", ["x"])}, datetime.now(UTC))
    waits: list[float] = []
    down = CrowdSecEnforcer(
        store=store,
        url=f"http://127.0.0.1:{free_port()}",
        machine_id="m",
        password="p",
        attempts=3,
        sleep=waits.append,
    )
    result = down.sync(store.list())
    assert (result.sent, result.failed) == (0, 1) and waits == [0.5, 1.0]
    assert "failed after 3 attempt(s)" in result.messages[0] and "refused" in result.messages[0].lower()
    assert down.healthcheck() is not None and len(down.pending(store.list())) == 1

    password = lapi.add_machine("mlguard-login")
    waits.clear()
    wrong = CrowdSecEnforcer(
        store=store, url=lapi.url, machine_id="mlguard-login", password="wrong", sleep=waits.append
    )
    refused = wrong.sync(store.list())
    assert refused.failed == 1 and waits == []  # a refused login is not retried
    assert "refused machine 'mlguard-login'" in refused.messages[0]
    assert "incorrect Username or Password" in refused.messages[0]
    assert wrong.healthcheck() is not None and lapi.bans("81.2.69.190") == []

    right = CrowdSecEnforcer(store=store, url=lapi.url, machine_id="mlguard-login", password=password)
    assert right.sync(store.list()).sent == 1 and len(lapi.bans("81.2.69.190")) == 1  # nothing was lost
    store.close()


@needs_crowdsec
def test_login_from_the_credentials_file_cscli_writes(tmp_path: Path, lapi: Lapi) -> None:
    path = lapi.credentials_file("mlguard-file", tmp_path / "crowdsec.yaml")
    found = read_credentials(path)
    assert found["login"] == "mlguard-file" and found["url"].rstrip("/") == lapi.url
    with DecisionStore(tmp_path / "state.db") as store:
        cs = CrowdSecEnforcer(store=store, credentials=path)
        assert (cs.url, cs.machine_id) == (lapi.url, "mlguard-file") and cs.healthcheck() is None
        with pytest.raises(UsageError, match="not an http"):
            CrowdSecEnforcer(store=store, credentials=path, url="ftp://x")
        with pytest.raises(UsageError, match="needs a machine login"):
            CrowdSecEnforcer(store=store)
        with pytest.raises(UsageError, match="crowdsec-credentials"):
            CrowdSecEnforcer(store=store, credentials=tmp_path / "missing.yaml")


def test_go_durations_as_the_lapi_prints_them() -> None:
    assert go_duration_secs("3h59m58.5s") == pytest.approx(4 * 3600 - 1.5)
    assert go_duration_secs("58m10.422856657s") == pytest.approx(3490.422856657)
    assert go_duration_secs("-3.182887ms") == pytest.approx(-0.003182887)
    assert go_duration_secs("0s") == 0.0 and go_duration_secs("1h0m0s") == 3600.0
    for bad in ("", "4 hours", "3h junk", "h"):
        with pytest.raises(ValueError):
            go_duration_secs(bad)
