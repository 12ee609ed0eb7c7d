"""Per-client features from real log lines: order does not matter, chunks merge exactly."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl

from mlguard.features.aggregate import ClientAccumulator, chunk_partials
from mlguard.features.signals import INJECTION_RE
from mlguard.features.window import SlidingWindow
from mlguard.formats import get_format
from mlguard.pipeline import read_logs


def _records(fixtures: Path) -> pl.DataFrame:
    return get_format("combined").parse((fixtures / "combined_sample.log").read_bytes()).records


def test_gap_statistics_do_not_depend_on_line_order(fixtures: Path) -> None:
    # Logs are not always in time order (requests are written when they finish, files are
    # concatenated): the per-client gaps must come out the same for any order of the lines.
    records = _records(fixtures)
    gaps = ["cid", "gap_n", "gap_sum", "gap_sumsq"]
    ordered = chunk_partials(records).clients.select(gaps).sort("cid")
    shuffled = records.sample(fraction=1.0, shuffle=True, seed=11)
    assert not shuffled["time"].is_sorted()
    assert chunk_partials(shuffled).clients.select(gaps).sort("cid").equals(ordered)
    assert ordered["gap_n"].sum() > 0


def test_features_are_the_same_in_one_chunk_or_many(fixtures: Path) -> None:
    # Chunk boundaries are where the reader happened to cut: nothing may depend on them, not
    # even the gaps between a client's requests that straddle a cut.
    records = _records(fixtures).sort("time", "line_no")
    whole = ClientAccumulator()
    whole.add(records)
    for size in (1, 37, 150):
        pieces = ClientAccumulator()
        for start in range(0, records.height, size):
            pieces.add(records[start : start + size])
        assert pieces.finish().frame.equals(whole.finish().frame), size


def test_a_sliding_window_gives_the_batch_features_for_all_or_some_clients(fixtures: Path) -> None:
    # `watch` rescores only the clients that just acted, from their rows of each time bucket:
    # their features must be exactly what scoring the whole window (or a batch run) gives them.
    records = _records(fixtures).sort("time", "line_no")
    batch = ClientAccumulator()
    batch.add(records)
    expected = batch.finish()
    window = SlidingWindow(window_secs=10 * 365 * 86400)  # wide enough to keep every line
    for start in range(0, records.height, 40):
        window.add(records[start : start + 40])
    full = window.features()
    assert full is not None and full.frame.equals(expected.frame)
    clients = expected.frame.sort("requests", descending=True)["client"].to_list()
    some = clients[:3] + clients[-3:]
    # As `watch` does, both against a baseline (here, the window's own rarity and priors).
    judged = window.features(reference=full.rarity, priors=full.priors)
    subset = window.features(some, reference=full.rarity, priors=full.priors)
    assert judged is not None and subset is not None and sorted(subset.frame["client"]) == sorted(some)
    # Everything but the fill-in for clients with too few gaps (the population's median).
    columns = [c for c in subset.frame.columns if c != "gap_regularity"]
    want = judged.frame.filter(pl.col("client").is_in(some)).select(columns)
    assert subset.frame.select(columns).equals(want)


def test_a_sliding_window_forgets_what_is_older_than_it(fixtures: Path) -> None:
    records = _records(fixtures).sort("time", "line_no")
    span = (records["time"].max() - records["time"].min()).total_seconds()
    assert span > 600
    window = SlidingWindow(window_secs=300)
    window.add(records)
    kept = window.features()
    assert kept is not None
    newest = records["time"].max()
    recent = records.filter(pl.col("time") > newest - timedelta(seconds=300))
    assert kept.frame["requests"].sum() <= recent.height + records.height // 12 + 1
    assert kept.frame["last_seen"].min() > newest - timedelta(seconds=300 + 300 // 12)


def test_payloads_in_the_user_agent_or_referer_count_as_injection_once_per_request(fixtures: Path) -> None:
    # Log4Shell and Shellshock ride in headers, not in the URL (real lines: CrowdSec's hub tests,
    # Netsparker, Acunetix). A request counts once however many of its fields carry markers.
    attacks = get_format("combined").parse((fixtures / "header_injection.log").read_bytes()).records
    assert attacks.height == 5
    background = _records(fixtures)
    acc = ClientAccumulator()
    acc.add(pl.concat([background, attacks]))
    frame = acc.finish().frame
    rows = {row["client"]: row for row in frame.iter_rows(named=True)}
    assert rows["192.168.1.3"]["n_injection"] == 1
    assert rows["192.168.1.3"]["example_injection"].startswith("user agent: ${jndi:ldap://")
    assert rows["192.168.1.5"]["example_injection"].startswith("referer: ${jndi:")
    assert rows["192.168.4.164"]["example_injection"].startswith("referer: () { :;};")
    # the Acunetix request: markers in its query and in its referer; one request, the URL shown
    acunetix = rows["192.168.4.25"]
    assert (acunetix["requests"], acunetix["n_injection"]) == (1, 1)
    assert acunetix["example_injection"].startswith("/index.php?wvstest=javascript:")
    # The real elastic background: its headers (quotes, parentheses, curl and wget in user
    # agents) mark nothing, so its injection count is that of its URLs alone.
    in_urls = background.filter(
        pl.col("request").str.splitn(" ", 3).struct.field("field_1").str.contains(INJECTION_RE)
    ).height
    others = frame.filter(~pl.col("client").is_in(attacks["client"].implode()))
    assert others["n_injection"].sum() == in_urls
    assert background.filter(pl.col("user_agent").str.contains(r"[()';]")).height > 100
    # A payload in a header is judged for rarity like one in the URL, under its header's name,
    # and adds no request, path or rare-payload count.
    carried = {"192.168.1.3": "user agent", "192.168.1.4": "user agent", "192.168.1.5": "referer"}
    for client, where in carried.items():
        row = rows[client]
        assert row["payload_rarity_max"] >= 0.8 and row["example_rare"].startswith(f"{where}: ${{jndi:")
        assert (row["requests"], row["distinct_paths"], row["n_rare_payloads"]) == (1, 1, 0)
    # `detect` reads without copying out most referers' text (columns_for_features): it must
    # find the same as the full records do.
    read = read_logs([str(fixtures / "combined_sample.log"), str(fixtures / "header_injection.log")])
    assert read.table is not None
    columns = ["client", "n_injection", "example_injection", "payload_rarity_max", "example_rare"]
    assert read.table.frame.select(columns).sort("client").equals(frame.select(columns).sort("client"))
