"""A sliding window of per-client partial tables, for following live logs.

Records are reduced to the same partial tables as a batch run (`chunk_partials`) and kept in
buckets of log time; buckets older than the window (counted back from the newest record seen)
are dropped whole, so memory is bounded by the window, not by how long the daemon runs. Any
set of clients can be turned into a feature table at any moment: only their rows of each
bucket are merged, so rescoring the clients that just sent requests costs in proportion to
them, not to the window.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from mlguard.features.aggregate import (
    WINDOW_SECS,
    ClientAccumulator,
    FeatureTable,
    Partials,
    RarityReference,
    chunk_partials,
    merge_partials,
)

BUCKETS = 12  # the window is dropped in twelfths
MERGE_AFTER = 8  # a bucket's pending partials are merged into one after this many


class SlidingWindow:
    def __init__(self, window_secs: int = 3600, burst_window_secs: int = WINDOW_SECS) -> None:
        self.window = timedelta(seconds=window_secs)
        self.bucket_secs = max(window_secs // BUCKETS, 10)
        self.burst_window_secs = burst_window_secs
        self._buckets: dict[datetime, list[Partials]] = {}
        self.newest: datetime | None = None

    def add(self, records: pl.DataFrame) -> None:
        """Add parsed records (with `time`); records older than the window are left out."""
        records = records.filter(pl.col("time").is_not_null())
        if records.height == 0:
            return
        newest = records["time"].max()
        assert isinstance(newest, datetime)
        if self.newest is None or newest > self.newest:
            self.newest = newest
        records = records.filter(pl.col("time") > self.newest - self.window)
        key = pl.col("time").dt.truncate(f"{self.bucket_secs}s").alias("_bucket")
        for (bucket,), part in records.with_columns(key).partition_by("_bucket", as_dict=True).items():
            assert isinstance(bucket, datetime)
            parts = self._buckets.setdefault(bucket, [])
            parts.append(chunk_partials(part.drop("_bucket"), self.burst_window_secs))
            if len(parts) >= MERGE_AFTER:
                self._buckets[bucket] = [merge_partials(parts)]
        self._close_buckets()
        self._trim()

    def _close_buckets(self) -> None:
        """Merge the parts of every bucket but the newest into one: lines for them have stopped
        coming (or nearly), and every rescoring filters each part, so fewer parts cost less."""
        newest = max(self._buckets, default=None)
        for bucket, parts in self._buckets.items():
            if bucket != newest and len(parts) > 1:
                self._buckets[bucket] = [merge_partials(parts)]

    def _trim(self) -> None:
        if self.newest is None:
            return
        oldest = self.newest - self.window
        for bucket in [b for b in self._buckets if b + timedelta(seconds=self.bucket_secs) <= oldest]:
            del self._buckets[bucket]

    @property
    def empty(self) -> bool:
        return not self._buckets

    def rows(self) -> int:
        """Rows held (the per-client-and-request table): what memory grows with."""
        return sum(p.targets.height for parts in self._buckets.values() for p in parts)

    def _parts(self, clients: list[str] | None) -> list[Partials]:
        parts = [p for parts in self._buckets.values() for p in parts]
        if clients is None:
            return parts
        cids = pl.DataFrame({"cid": pl.Series(clients, dtype=pl.String).hash()})
        out = []
        for p in parts:
            targets = p.targets.join(cids, on="cid", how="semi")
            user_agents = p.user_agents.join(cids, on="cid", how="semi")
            # Only the user agents, path templates and request shapes these clients used: the
            # rest of the window's (tens of thousands) would be merged and examined for nothing.
            out.append(
                Partials(
                    p.clients.join(cids, on="cid", how="semi"),
                    p.windows.join(cids, on="cid", how="semi"),
                    targets,
                    user_agents,
                    p.agent_names.join(user_agents.select("uid"), on="uid", how="semi"),
                    p.templates.join(targets.select("template_id"), on="template_id", how="semi"),
                    p.shapes.join(targets.select("shape_id"), on="shape_id", how="semi"),
                )
            )
        return out

    def accumulator(self, clients: list[str] | None = None) -> ClientAccumulator:
        """The window's records of `clients` (all when None), ready to `finish`."""
        acc = ClientAccumulator(self.burst_window_secs)
        parts = self._parts(clients)
        if parts:
            acc.add_partials(merge_partials(parts))
        return acc

    def features(
        self,
        clients: list[str] | None = None,
        *,
        reference: RarityReference | None = None,
        priors: dict[str, float] | None = None,
    ) -> FeatureTable | None:
        acc = self.accumulator(clients)
        if acc.empty:
            return None
        table = acc.finish(reference=reference, priors=priors)
        return table if table.frame.height else None
