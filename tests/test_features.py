"""Per-client features from real log lines: order does not matter, chunks merge exactly."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from mlguard.features.aggregate import ClientAccumulator, chunk_partials
from mlguard.formats import get_format


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
