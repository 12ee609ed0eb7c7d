"""`mlguard watch`: live detection on real logs, decisions that persist across restarts, the
circuit breaker, enforcer failures, and end to end with a real nginx on 127.0.0.1."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path
from threading import Thread
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pytest

from mlguard.decisions.breaker import CircuitBreaker
from mlguard.decisions.policy import Policy
from mlguard.decisions.store import DecisionStore
from mlguard.detectors.model import Baseline, build_baseline, load_model, refresh_baseline, save_model
from mlguard.enforcers import Enforcer, get_enforcer
from mlguard.features.catalogue import FEATURE_NAMES
from mlguard.observability import Metrics
from mlguard.pipeline import read_logs, score_table
from mlguard.watch import Watcher, WatchSettings
from tests.nginx_server import NGINX, NginxServer, browse, free_port, public_addresses, scan

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
# labelled_small's Acunetix scan and Joomla brute force (addresses as in its labels.csv)
ACUNETIX, JOOMLA = "209.39.36.42", "105.10.250.9"


class Clock:
    """Wall clock and monotonic clock that move only when told (cadences, TTLs)."""

    def __init__(self) -> None:
        self.wall, self.tick = T0, 1000.0

    def advance(self, secs: float) -> None:
        self.wall += timedelta(seconds=secs)
        self.tick += secs


@pytest.fixture(scope="module")
def baseline(labelled_small: tuple[Path, pl.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    """A baseline from the benign clients of the fixture log (what `mlguard train` builds)."""
    log, labels = labelled_small
    bad = set(labels.filter(pl.col("label") == "malicious")["ip"].to_list())
    benign = tmp_path_factory.mktemp("train") / "benign.log"
    benign.write_bytes(
        b"".join(
            line for line in log.read_bytes().splitlines(True) if line.split(b" ")[0].decode() not in bad
        )
    )
    table = read_logs([str(benign)]).table
    assert table is not None
    return build_baseline(table.frame.select(FEATURE_NAMES).to_numpy(), table.rarity, table.priors, {})


def _watcher(
    tmp_path: Path,
    store: DecisionStore,
    baseline: Baseline | None,
    clock: Clock,
    policy: Policy | None = None,
    enforcers: list[Enforcer] | None = None,
    **settings: Any,
) -> Watcher:
    (tmp_path / "access.log").touch()
    watch = WatchSettings(
        [str(tmp_path / "access.log")],
        window_secs=7 * 86400,  # the fixture spans hours of 2015: judge it whole, like detect
        interval_secs=5,
        full_every_secs=60,
        enforce_every_secs=10,
        **settings,
    )
    return Watcher(
        watch,
        policy or Policy(),
        store,
        baseline,
        enforcers,
        clock=lambda: clock.wall,
        monotonic=lambda: clock.tick,
        metrics=Metrics(),
    )


def _replay(
    watcher: Watcher,
    log: Path,
    lines: list[bytes],
    clock: Clock,
    per_step: int = 250,
    after_step: Callable[[], None] | None = None,
) -> None:
    for i in range(0, len(lines), per_step):
        with open(log, "ab") as handle:
            handle.writelines(lines[i : i + per_step])
        clock.advance(5)
        watcher.step()
        if after_step is not None:
            after_step()


def test_attackers_are_decided_live_and_a_restart_neither_rereads_nor_realerts(
    tmp_path: Path, labelled_small: tuple[Path, pl.DataFrame], baseline: Baseline
) -> None:
    source, labels = labelled_small
    lines = source.read_bytes().splitlines(True)
    clock = Clock()
    store = DecisionStore(tmp_path / "state.db")
    watcher = _watcher(tmp_path, store, baseline, clock)
    _replay(watcher, tmp_path / "access.log", lines[:-20], clock)
    decided = {d.client: d for d in store.list()}
    assert decided[ACUNETIX].verdict == "block"
    assert decided[JOOMLA].verdict in ("alert", "block")
    benign = set(labels.filter(pl.col("label") == "benign")["ip"].to_list())
    # Live, a client is judged on part of its evidence before the rest arrives: it may be
    # alerted on where the whole log would not, but not much more often; and never blocked.
    batch = score_table(read_logs([str(source)]), Policy(), baseline).findings
    batch_alerts = set(batch.filter(pl.col("verdict") != "pass")["client"].to_list())
    assert len(benign & set(decided)) <= len(benign & batch_alerts) + 2
    assert not any(decided[c].verdict == "block" for c in benign & set(decided))
    assert watcher.counters.lines == len(lines) - 20 and watcher.counters.unparsed == 0
    metrics = watcher.metrics.text()  # type: ignore[union-attr]
    assert f"mlguard_lines_total {len(lines) - 20}.0" in metrics
    assert 'mlguard_decisions_total{verdict="block"}' in metrics
    watcher.flush()
    watcher.close()
    ids = {d.id for d in store.list()}

    # Restart on the same store: reading goes on where it stopped, nothing is decided twice.
    with open(tmp_path / "access.log", "ab") as handle:
        handle.writelines(lines[-20:])
    again = _watcher(tmp_path, store, baseline, clock)
    assert again.resumed
    clock.advance(120)
    again.step()
    assert again.counters.lines == 20
    assert {d.id for d in store.list()} == ids
    again.close()
    store.close()


def test_the_circuit_breaker_holds_a_flood_of_blocks_as_alerts(
    tmp_path: Path, labelled_small: tuple[Path, pl.DataFrame], baseline: Baseline
) -> None:
    lines = labelled_small[0].read_bytes().splitlines(True)
    clock = Clock()
    store = DecisionStore(tmp_path / "state.db")
    # A policy that blocks far too eagerly stands in for poisoned input or a broken model.
    eager = Policy(alert_threshold=0.3, block_threshold=0.35, min_block_requests=1)
    watcher = _watcher(tmp_path, store, baseline, clock, policy=eager)
    watcher.breaker = CircuitBreaker(max_blocks_per_minute=2, cooldown=timedelta(minutes=15))
    _replay(watcher, tmp_path / "access.log", lines, clock, per_step=len(lines))
    blocks = store.list(verdict="block")
    held = [d for d in store.list(verdict="alert") if d.reasons and "circuit breaker" in d.reasons[0]]
    assert len(blocks) == 2 and len(held) >= 3
    assert watcher.breaker.is_open and watcher.counters.held_blocks == len(held)
    assert "mlguard_circuit_breaker_open 1.0" in watcher.metrics.text()  # type: ignore[union-attr]
    # Quiet for the whole cooldown: the breaker closes and blocks are made again.
    _, _, closed = watcher.breaker.admit([], clock.wall + timedelta(minutes=16))
    assert closed and not watcher.breaker.is_open
    store.close()


def test_breaker_counts_per_minute() -> None:
    breaker = CircuitBreaker(max_blocks_per_minute=3, cooldown=timedelta(minutes=5))
    assert breaker.admit(["a", "b"], T0)[:2] == (["a", "b"], [])
    assert breaker.admit(["c"], T0 + timedelta(seconds=61))[:2] == (["c"], [])  # a and b aged out
    assert breaker.admit(["d", "e", "f"], T0 + timedelta(seconds=62))[:2] == (["d", "e"], ["f"])
    assert breaker.admit(["g"], T0 + timedelta(minutes=3))[:2] == ([], ["g"])  # still open: held again
    assert breaker.admit([], T0 + timedelta(minutes=7))[2] is False  # 4 minutes since g: not yet
    assert breaker.admit(["h"], T0 + timedelta(minutes=8, seconds=1)) == (["h"], [], True)


class _Hook(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        _Hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def hook_port() -> Iterator[int]:
    port = free_port()  # nothing listens yet: the enforcer finds it down
    yield port


def test_a_failing_enforcer_backs_off_keeps_its_decisions_and_others_go_on(
    tmp_path: Path, labelled_small: tuple[Path, pl.DataFrame], baseline: Baseline, hook_port: int
) -> None:
    lines = labelled_small[0].read_bytes().splitlines(True)
    clock = Clock()
    store = DecisionStore(tmp_path / "state.db")
    url = f"http://127.0.0.1:{hook_port}/a"
    down = get_enforcer("webhook", url=url, store=store, attempts=1, timeout_secs=2)
    nginx_include = tmp_path / "deny.conf"
    deny = get_enforcer("nginx", include=nginx_include, command="true")  # only the file is checked here
    watcher = _watcher(tmp_path, store, baseline, clock, enforcers=[down, deny], enforce=True)
    _replay(watcher, tmp_path / "access.log", lines, clock, per_step=len(lines))
    assert f"deny {ACUNETIX};" in nginx_include.read_text()  # the working enforcer went on
    assert watcher.counters.enforcer_errors == {"webhook": 1}
    undelivered = down.pending(store.list())
    assert undelivered  # kept for later
    # Within the backoff nothing is retried; after it, the webhook (now up) gets everything once.
    server = ThreadingHTTPServer(("127.0.0.1", hook_port), _Hook)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        clock.advance(5)
        watcher._enforce()
        assert _Hook.bodies == [] and watcher.counters.enforcer_errors == {"webhook": 1}
        clock.advance(30)
        watcher._enforce()
        assert len(_Hook.bodies) == 1
        sent = {d["ip"] for d in _Hook.bodies[0]["decisions"]}
        assert sent == {d.client for d in undelivered}
        assert down.pending(store.list()) == []
    finally:
        server.shutdown()
        server.server_close()
    store.close()


def test_without_a_model_the_baseline_is_learned_and_refreshed_without_flagged_clients(
    tmp_path: Path, labelled_small: tuple[Path, pl.DataFrame]
) -> None:
    lines = labelled_small[0].read_bytes().splitlines(True)
    clock = Clock()
    store = DecisionStore(tmp_path / "state.db")
    watcher = _watcher(tmp_path, store, None, clock, refresh_every_secs=600)
    _replay(watcher, tmp_path / "access.log", lines[:40], clock, per_step=40)
    assert watcher.baseline is None  # too few clients yet to learn what is normal
    _replay(watcher, tmp_path / "access.log", lines[40:], clock, per_step=100)
    assert watcher.baseline is not None
    assert store.list(verdict="block") or store.list(verdict="alert")
    learned = watcher.baseline
    flagged = {d.client for d in store.list()}
    clock.advance(601)
    watcher.step()
    refreshed = watcher.baseline
    assert refreshed is not learned and refreshed.meta["refreshes"] == 1
    # Every unflagged client of the window was learned from, and none of the flagged ones.
    window = watcher.window.features(reference=learned.reference, priors=learned.priors)
    assert window is not None
    unflagged = window.frame.filter(~pl.col("client").is_in(list(flagged))).height
    assert refreshed.meta["training_clients_seen"] == learned.scorer.train_matrix_.shape[0] + unflagged
    store.close()


def test_a_baseline_learned_from_a_filling_window_is_learned_again_as_it_doubles(
    tmp_path: Path, labelled_small: tuple[Path, pl.DataFrame]
) -> None:
    # The first baseline comes from 50 clients and alerts on much of what it has not seen; as
    # the window fills it is learned again each time the clients have doubled, then left be.
    lines = labelled_small[0].read_bytes().splitlines(True)
    clock = Clock()
    store = DecisionStore(tmp_path / "state.db")
    watcher = _watcher(tmp_path, store, None, clock)
    learned_from: list[int] = []

    def note_baseline() -> None:
        if watcher.baseline is not None and watcher.baseline.meta["training_clients"] not in learned_from:
            learned_from.append(watcher.baseline.meta["training_clients"])

    # 20 lines a step and a full pass every 12 steps: 240 lines between passes
    _replay(watcher, tmp_path / "access.log", lines, clock, per_step=20, after_step=note_baseline)
    for _ in range(30):  # the log has ended: full passes go on, and nothing is learned again
        clock.advance(5)
        watcher.step()
    assert watcher.baseline is not None
    clients = watcher.window.features()
    assert clients is not None
    assert len(learned_from) >= 3 and learned_from[0] >= 50
    assert all(b >= 2 * a for a, b in pairwise(learned_from))
    assert watcher.baseline.meta["training_clients"] == learned_from[-1] > clients.frame.height / 2
    store.close()


def test_a_replaced_model_file_is_loaded_at_the_next_full_pass(
    tmp_path: Path,
    baseline: Baseline,
    labelled_small: tuple[Path, pl.DataFrame],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # `mlguard train --out MODEL` while the daemon runs: the new baseline is used without a
    # restart; a file that does not load (half copied, wrong version) leaves the last one.
    model = tmp_path / "model.npz"

    def trained_by(who: str) -> Baseline:
        return Baseline(baseline.scorer, baseline.reference, baseline.priors, {"trained_by": who})

    save_model(trained_by("first"), model)
    clock = Clock()
    store = DecisionStore(tmp_path / "state.db")
    watcher = _watcher(tmp_path, store, load_model(model), clock, model_path=model)
    lines = labelled_small[0].read_bytes().splitlines(True)
    _replay(watcher, tmp_path / "access.log", lines[:500], clock)
    assert watcher.baseline is not None and watcher.baseline.meta["trained_by"] == "first"
    save_model(trained_by("second"), model)
    clock.advance(5)
    watcher.step()  # not a full pass yet
    assert watcher.baseline.meta["trained_by"] == "first"
    clock.advance(61)
    watcher.step()
    assert watcher.baseline.meta["trained_by"] == "second"
    model.write_bytes(b"\x1b[31mnot a model")
    clock.advance(61)
    with caplog.at_level("ERROR", logger="mlguard.watch"):
        watcher.step()
    assert watcher.baseline.meta["trained_by"] == "second"
    assert [r for r in caplog.records if getattr(r, "event", None) == "model_not_reloaded"]
    clock.advance(61)
    with caplog.at_level("ERROR", logger="mlguard.watch"):
        watcher.step()  # the same bad file: said once
    assert len([r for r in caplog.records if getattr(r, "event", None) == "model_not_reloaded"]) == 1
    _replay(watcher, tmp_path / "access.log", lines[500:], clock)
    assert {d.client for d in store.list(verdict="block")} >= {ACUNETIX}
    store.close()


def test_refreshing_keeps_old_behaviour_in_proportion(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every client seen since training weighs the same, however long ago: when the training
    rows are full, old and new rows are kept in proportion to the clients they stand for."""
    rng = np.random.default_rng(0)
    table = read_logs([str(Path(__file__).parent / "fixtures" / "combined_sample.log")]).table
    assert table is not None
    width = len(FEATURE_NAMES)
    old = build_baseline(rng.normal(0, 1, (300, width)), table.rarity, table.priors, {})
    fresh = refresh_baseline(old, rng.normal(50, 1, (100, width)), table.rarity, table.priors, refreshed="t")
    X = fresh.scorer.train_matrix_
    assert X.shape[0] == 400 and fresh.meta["training_clients_seen"] == 400 and (X[:, 0] > 25).sum() == 100
    assert fresh.reference.clients == 2 * table.rarity.clients
    monkeypatch.setattr("mlguard.detectors.model.MAX_TRAINING_CLIENTS", 100)
    again = refresh_baseline(
        fresh, rng.normal(-50, 1, (400, width)), table.rarity, table.priors, refreshed="t"
    )
    X = again.scorer.train_matrix_
    # 400 clients seen before (300 + 100), 400 now: half and half; the once-seen +50 group stays.
    assert X.shape[0] == 100 and (X[:, 0] < -25).sum() == 50 and (X[:, 0] > 25).sum() > 0


@pytest.mark.skipif(
    NGINX is None and not os.environ.get("CI"), reason="nginx is not installed (CI installs it)"
)
def test_cli_watch_blocks_a_scanner_at_a_real_nginx_within_seconds(tmp_path: Path) -> None:
    """nginx writes its access log; `mlguard watch --enforce` follows it, learns what normal is
    from the visitors, and denies a noisy scanner at nginx (403) while visitors still get 200;
    SIGTERM stops it cleanly with its position saved; /metrics is served on 127.0.0.1."""
    assert NGINX is not None, "CI must install nginx (.ci/run)"
    log = tmp_path / "access.log"
    server = NginxServer(tmp_path / "nginx", access_log=str(log))
    rng = random.Random(7)
    visitors = public_addresses(rng, 70)
    for client in visitors:
        browse(server, client, rng)
    stderr = tmp_path / "watch.err"
    command = [
        sys.executable, "-m", "mlguard", "watch", str(log), "--state", str(tmp_path / "state.db"),
        "--from-start", "--interval", "1", "--full-every", "2", "--enforce",
        "--nginx-include", str(server.include), "--nginx-command", server.command,
        "--metrics-port", "0", "--log-style", "json",
    ]  # fmt: skip
    with open(stderr, "wb") as err:
        watch = subprocess.Popen(command, stderr=err)
    try:
        events = _wait_for(stderr, "baseline_learned", 60)
        scanner = "45.155.205.99"  # a public address (203.0.113.0/24 would count as private)
        started = time.monotonic()
        statuses = scan(server, scanner, 60)
        assert statuses.count(404) >= 50
        while time.monotonic() - started < 30 and server.get("/", scanner) != 403:
            browse(server, rng.choice(visitors), rng)  # life goes on meanwhile
            time.sleep(0.5)
        if server.get("/", scanner) != 403:  # say what nginx was given and what it logged
            pytest.fail(
                f"not denied within 30 s\nwatch: {stderr.read_text()[-3000:]}\n"
                f"include: {server.include.read_text()!r}\n{server.diagnostics()}"
            )
        assert all(server.get("/", c) == 200 for c in visitors[:10])
        events = _events(stderr)
        url = next(e["url"] for e in events if e.get("event") == "metrics")
        with urllib.request.urlopen(url, timeout=5) as response:
            metrics = response.read().decode()
        assert 'mlguard_decisions_total{verdict="block"}' in metrics and "mlguard_lag_seconds" in metrics
    finally:
        watch.send_signal(signal.SIGTERM)
        code = watch.wait(timeout=30)
        server.stop()
    assert code == 0, stderr.read_text()[-3000:]
    events = _events(stderr)
    assert events[-1]["event"] == "stopped" and events[-1]["blocks"] >= 1
    decision = next(e for e in events if e.get("event") == "decision" and e["client"] == scanner)
    assert decision["verdict"] == "block" and decision["reasons"]
    with DecisionStore(tmp_path / "state.db") as store:
        assert store.positions()[0][3] == log.stat().st_size  # everything read, position saved
        assert not {d.client for d in store.list(verdict="block")} & set(visitors)


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _wait_for(path: Path, event: str, secs: float) -> list[dict]:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        events = _events(path)
        if any(e.get("event") == event for e in events):
            return events
        time.sleep(0.2)
    raise AssertionError(f"no '{event}' within {secs} s: {path.read_text()[-2000:]}")


@pytest.mark.parametrize("style", ["text", "json"])
def test_hostile_lines_are_counted_and_never_reach_the_log_raw(tmp_path: Path, style: str) -> None:
    """The hostile fixture (escape sequences, HTML, invalid bytes, huge lines) followed live:
    the unparsed lines are counted as the fixture says, and nothing attacker-written reaches
    stderr unescaped (no ESC, BEL or other control character in either log style)."""
    fixture = Path(__file__).parent / "fixtures"
    expected = json.loads((fixture / "hostile.expect.json").read_text())
    log = tmp_path / "access.log"
    log.write_bytes((fixture / "hostile.log").read_bytes())
    stderr = tmp_path / "watch.err"
    command = [sys.executable, "-m", "mlguard", "watch", str(log), "--state", str(tmp_path / "s.db"),
               "--from-start", "-f", "combined", "--log-style", style, "--interval", "1"]  # fmt: skip
    with open(stderr, "wb") as err:
        watch = subprocess.Popen(command, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "unparsed" not in stderr.read_text(errors="replace"):
            time.sleep(0.2)
    finally:
        watch.send_signal(signal.SIGTERM)
        code = watch.wait(timeout=30)
    raw = stderr.read_bytes()
    assert code == 0, raw[-2000:]
    assert not any(byte < 0x20 and byte not in (0x0A,) for byte in raw), raw[-2000:]
    text = raw.decode()
    stopped = text.strip().splitlines()[-1]
    unparsed = sum(not e["parses"] for e in expected)
    if style == "json":
        assert json.loads(stopped)["unparsed"] == unparsed
    else:
        assert f"unparsed={unparsed}" in stopped and "unparsed line" in text


@pytest.mark.parametrize("mode", ["alert-only", "dry-run"])
def test_without_enforce_blockers_are_left_alone(
    tmp_path: Path,
    labelled_small: tuple[Path, pl.DataFrame],
    baseline: Baseline,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Alert-only unless --enforce: the block is in the store, nginx's file is never written;
    --dry-run logs what each enforcer would be sent."""
    lines = labelled_small[0].read_bytes().splitlines(True)
    clock = Clock()
    store = DecisionStore(tmp_path / "state.db")
    include = tmp_path / "deny.conf"
    deny = get_enforcer("nginx", include=include, command="true")
    watcher = _watcher(tmp_path, store, baseline, clock, enforcers=[deny], dry_run=mode == "dry-run")
    with caplog.at_level("INFO", logger="mlguard"):
        _replay(watcher, tmp_path / "access.log", lines, clock, per_step=len(lines))
    assert ACUNETIX in {d.client for d in store.list(verdict="block")}
    assert not include.exists()
    events = [getattr(r, "event", None) for r in caplog.records]
    if mode == "dry-run":
        dry = [getattr(r, "client", None) for r in caplog.records if getattr(r, "event", None) == "dry_run"]
        assert ACUNETIX in dry
    else:
        assert events.count("alert_only") == 1
    store.close()
