"""The decision store: a real SQLite file, the detector's verdicts recorded, a person's feedback
(allow, unblock, block) kept, TTLs, and survival of `kill -9` in the middle of writing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from mlguard.cli import app
from mlguard.decisions.policy import Policy
from mlguard.decisions.store import BLOCK_TTL, DecisionStore
from mlguard.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "access.log"
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def findings(*rows: tuple[str, str, float]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "client": [r[0] for r in rows],
            "verdict": [r[1] for r in rows],
            "score": [r[2] for r in rows],
            "reasons": [[f"reason for {r[0]}"] for r in rows],
        }
    )


def test_verdicts_are_recorded_once_refreshed_and_expire(tmp_path: Path) -> None:
    with DecisionStore(tmp_path / "state.db") as store:
        counts = store.record(findings(("203.0.113.7", "alert", 0.6), ("198.51.100.9", "block", 0.8)), T0)
        assert counts == {"new": 2, "refreshed": 0, "allowed": 0}
        # Seen again: the same decisions, refreshed; an alert that became a block supersedes it.
        later = T0 + timedelta(minutes=10)
        counts = store.record(findings(("203.0.113.7", "block", 0.9), ("198.51.100.9", "block", 0.85)), later)
        assert counts == {"new": 1, "refreshed": 1, "allowed": 0}
        active = {(d.client, d.verdict) for d in store.list()}
        assert active == {("203.0.113.7", "block"), ("198.51.100.9", "block")}
        refreshed = next(d for d in store.list() if d.client == "198.51.100.9")
        assert refreshed.score == 0.85 and refreshed.expires == iso(later + BLOCK_TTL)
        assert store.expire(later + BLOCK_TTL - timedelta(seconds=1)) == 0
        assert store.expire(later + BLOCK_TTL) == 2
        assert store.list() == []
        # A repeat offender is blocked for longer each time.
        store.record(findings(("198.51.100.9", "block", 0.8)), T0 + timedelta(days=1))
        again = store.list(verdict="block")[0]
        assert again.expires == iso(T0 + timedelta(days=1) + 2 * BLOCK_TTL)


def test_listing_for_enforcers_reasons_and_deliveries(tmp_path: Path) -> None:
    hostile = ['"quoted" \\ \u001b[31m <script>', "", "ünïcode, commas, [brackets]"]
    frame = findings(
        ("203.0.113.7", "alert", 0.6), ("198.51.100.9", "block", 0.8), ("192.0.2.1", "alert", 0.7)
    )
    frame = frame.with_columns(pl.Series("reasons", [hostile, [], ["plain"]]))
    with DecisionStore(tmp_path / "state.db") as store:
        store.record(frame, T0)
        listed = {d.client: d.reasons for d in store.list()}
        assert listed == {"203.0.113.7": hostile, "198.51.100.9": [], "192.0.2.1": ["plain"]}
        assert store.active_clients("block") == {"198.51.100.9"}
        assert store.active_clients("alert") == {"203.0.113.7", "192.0.2.1"}
        first = next(d for d in store.list() if d.client == "203.0.113.7")
        store.mark_delivered("webhook:x", [first.id], T0)
        assert {d.client for d in store.list(undelivered_to="webhook:x")} == {"198.51.100.9", "192.0.2.1"}
        assert len(store.list(undelivered_to="webhook:other")) == 3
        store.allow("192.0.2.0/24", T0, "our monitor")
        assert {d.client for d in store.list(undelivered_to="webhook:x")} == {"198.51.100.9"}


def test_allow_is_feedback_that_persists(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with DecisionStore(path) as store:
        store.record(findings(("203.0.113.7", "block", 0.9), ("203.0.113.8", "alert", 0.6)), T0)
        assert store.allow("203.0.113.0/24", T0, "our office") == 2
        assert store.list(verdict="block") == []
    with DecisionStore(path) as store:  # reopened: the allow is still there
        counts = store.record(findings(("203.0.113.7", "block", 0.95)), T0 + timedelta(days=30))
        assert counts["allowed"] == 1 and store.list(verdict="block") == []
        with pytest.raises(UsageError, match="allowed"):
            store.block("203.0.113.50", T0, "by hand")
        with pytest.raises(UsageError, match="private"):
            store.block("10.1.2.3", T0, "by hand")
        decision = store.block("81.2.69.160", T0, "by hand", ttl=timedelta(minutes=30))
        assert decision > 0 and store.unblock("81.2.69.160", "mistake") == 1
        assert [d.state for d in store.history("81.2.69.160")] == ["revoked"]


def test_detect_state_honours_allow_and_records(tmp_path: Path) -> None:
    """End to end through the CLI on the bundled example: the blocked scanner is recorded; once a
    person allows it, a new run neither blocks nor records it."""
    runner = CliRunner()
    state = str(tmp_path / "state.db")
    first = runner.invoke(app, ["detect", str(EXAMPLE), "--json", "--no-progress", "--state", state])
    assert first.exit_code == 0, first.output
    blocked = [json.loads(line)["ip"] for line in first.stdout.splitlines() if '"verdict":"block"' in line]
    assert blocked
    listed = runner.invoke(app, ["decisions", "list", "--state", state, "--json"])
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {"ip", "verdict", "score", "reasons", "created", "expires", "origin", "state"} <= set(rows[0])
    assert {r["ip"] for r in rows if r["verdict"] == "block"} == set(blocked)
    allow = ["decisions", "allow", blocked[0], "--state", state, "--reason", "our scanner"]
    allowed = runner.invoke(app, allow)
    assert allowed.exit_code == 0, allowed.output
    second = runner.invoke(app, ["detect", str(EXAMPLE), "--json", "--no-progress", "--state", state])
    again = next(json.loads(line) for line in second.stdout.splitlines() if blocked[0] in line)
    assert again["verdict"] == "pass" and again["protected"] == "allowlisted"
    shown = runner.invoke(app, ["decisions", "show", blocked[0], "--state", state])
    assert "revoked" in shown.stdout and "allow" in shown.stdout
    bad = runner.invoke(app, ["decisions", "list", "--state", state, "--verdict", "nuke"])
    assert bad.exit_code != 0


WRITER = """
import sys
from datetime import UTC, datetime, timedelta
import polars as pl
from mlguard.decisions.store import DecisionStore
store = DecisionStore(sys.argv[1])
t0 = datetime(2026, 11, 28, tzinfo=UTC)
for i in range(100000):
    host = f"{i // 250 % 250}.{i % 250 + 1}"
    rows = pl.DataFrame({"client": [f"198.18.{host}", f"198.19.{host}"], "verdict": ["block", "alert"],
                         "score": [0.9, 0.6], "reasons": [["x" * 500], ["y"]]})
    store.record(rows, t0 + timedelta(seconds=i))
    print(i + 1, flush=True)
"""


def test_store_survives_kill_9_mid_write(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert child.stdout is not None
    committed = 0
    deadline = time.monotonic() + 60
    while committed < 300 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        committed = int(line)
    os.kill(child.pid, signal.SIGKILL)  # in the middle of the next transaction, most likely
    child.wait(timeout=30)
    assert committed >= 300
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    db.close()
    # Every transaction the writer saw committed is there; at most the one it was in is not.
    assert 2 * committed <= rows <= 2 * (committed + 1)
    with DecisionStore(path) as store:  # and the store opens and works after the crash
        assert len(store.list(verdict="block")) >= committed
        store.record(findings(("192.0.2.1", "block", 0.9)), T0)


def test_more_evidence_lowers_the_score_a_block_needs_within_bounds() -> None:
    # 2,000 requests of a scanner are surer than 20: the block threshold holds at the minimum
    # number of requests and falls 0.04 per tenfold more, at most 0.10 and never to halfway
    # from the alert threshold; below the minimum there is no block at all. (Public addresses:
    # the documentation ranges count as private, which is never blocked.)
    clients = pl.DataFrame(
        {
            "client": ["45.33.32.1", "45.33.32.2", "45.33.32.3", "45.33.32.4", "45.33.32.5", "10.0.0.1"],
            "score": [0.70, 0.70, 0.70, 0.65, 0.77, 0.70],
            "requests": [25, 2_000, 10, 10_000_000, 19, 2_000],
        }
    )
    verdicts = dict(Policy().verdicts(clients).select("client", "verdict").iter_rows())
    assert verdicts == {
        "45.33.32.1": "alert",  # too little evidence for 0.70
        "45.33.32.2": "block",  # 2,000 requests: 0.76 - 0.04 * 2 = 0.68
        "45.33.32.3": "alert",
        "45.33.32.4": "alert",  # however much evidence, never under 0.66
        "45.33.32.5": "alert",  # under the minimum of 20 requests
        "10.0.0.1": "alert",  # private: never blocked
    }
    fixed = dict(Policy(block_discount=0.0).verdicts(clients).select("client", "verdict").iter_rows())
    assert fixed["45.33.32.2"] == "alert"
    assert Policy(alert_threshold=0.7, block_threshold=0.8).lowest_block_threshold == 0.75  # halfway
    with pytest.raises(UsageError):
        Policy(block_discount=0.5)
    # A campaign's requests are many addresses' few each: no discount for them.
    # And a campaign of thousands of addresses is never blocked by itself (alerted instead).
    campaigns = pl.DataFrame(
        {
            "campaign": ["c-1", "c-2", "c-3"],
            "campaign_score": [0.70, 0.77, 0.90],
            "requests": [3_000, 40, 50_000],
            "clients": [100, 10, 13_000],
        }
    )
    assert Policy().campaign_verdicts(campaigns)["verdict"].to_list() == ["alert", "block", "alert"]
    member = clients.head(1).with_columns(
        pl.lit(0.70).alias("score"),
        pl.lit(0.10).alias("client_score"),
        pl.lit(0.70).alias("campaign_score"),
        pl.lit(7).alias("requests"),
        pl.lit(3_000).alias("evidence_requests"),
        pl.lit(100).alias("campaign_clients"),
    )
    assert Policy().verdicts(member)["verdict"].to_list() == ["alert"]
    strong = member.with_columns(pl.lit(0.77).alias("score"), pl.lit(0.77).alias("campaign_score"))
    assert Policy().verdicts(strong)["verdict"].to_list() == ["block"]
    crowd = strong.with_columns(pl.lit(13_000).alias("campaign_clients"))
    assert Policy().verdicts(crowd)["verdict"].to_list() == ["alert"]
    # A client whose own score carries it is judged on its own, whatever its campaign's size.
    own = crowd.with_columns(
        pl.lit(0.80).alias("score"),
        pl.lit(0.80).alias("client_score"),
        pl.lit(2_000).alias("requests"),
        pl.lit(2_000).alias("evidence_requests"),
    )
    assert Policy().verdicts(own)["verdict"].to_list() == ["block"]
