"""Records -> one row per client, built chunk by chunk in bounded memory.

Each chunk of parsed records is reduced to small partial tables (per client, per client and
time window, per client and path template/shape, per client and user agent) that merge by
sums, minima and maxima. Memory is bounded by those tables, not by the number of lines.
Request-level markers are computed once per distinct request in a chunk, never per line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from mlguard.features.catalogue import FEATURES
from mlguard.features.signals import (
    INJECTION_RE,
    SENSITIVE_RE,
    STATIC_RE,
    TOOL_UA_RE,
    path_template,
    request_shape,
)

WINDOW_SECS = 600
SHRINK_PSEUDO_REQUESTS = 5.0  # a ratio from 1 request says little: pull it towards the population
RARE_PAYLOAD_LEVEL = 0.75
MIN_GAPS = 4
MERGE_MIN_ROWS = 2_000_000

_SUM_COLUMNS = (
    "requests",
    "n_4xx",
    "n_404",
    "n_401_403",
    "n_429",
    "n_5xx",
    "n_post",
    "n_head_other",
    "n_static",
    "n_sensitive",
    "n_injection",
    "target_length_sum",
    "n_no_user_agent",
    "n_no_referer",
    "bytes_sum",
    "gap_n",
    "gap_sum",
    "gap_sumsq",
)


def _request_table(records: pl.DataFrame) -> pl.DataFrame:
    """Markers for each distinct (path, query) of a chunk."""
    path, query = pl.col("path"), pl.col("query")
    target = (
        pl.when(query.is_null())
        .then(path.fill_null(""))
        .otherwise(pl.concat_str([path.fill_null(""), pl.lit("?"), query]))
    )
    return (
        records.select("path", "query")
        .unique()
        .with_columns(target.alias("target"), path_template(path).alias("template"))
        .with_columns(
            request_shape(pl.col("target")).alias("shape"),
            pl.col("target").str.len_chars().alias("target_length"),
            query.str.len_chars().fill_null(0).alias("query_length"),
            path.fill_null("").str.contains(STATIC_RE).alias("is_static"),
            pl.col("target").str.contains(SENSITIVE_RE).alias("is_sensitive"),
            pl.col("target").str.contains(INJECTION_RE).alias("is_injection"),
        )
        .with_columns(
            pl.col("template").hash().alias("template_id"), pl.col("shape").hash().alias("shape_id")
        )
    )


@dataclass
class Partials:
    clients: pl.DataFrame
    windows: pl.DataFrame
    targets: pl.DataFrame  # client, template_id, shape_id -> requests
    user_agents: pl.DataFrame  # client, user_agent -> requests
    templates: pl.DataFrame  # template_id -> template, example path
    shapes: pl.DataFrame  # shape_id -> shape, example request target


def chunk_partials(records: pl.DataFrame, window_secs: int = WINDOW_SECS) -> Partials:
    requests = _request_table(records)
    status = pl.col("status")
    method = pl.col("method")
    frame = records.join(
        requests.select(
            "path",
            "query",
            "template_id",
            "shape_id",
            "target_length",
            "query_length",
            "is_static",
            "is_sensitive",
            "is_injection",
        ),
        on=["path", "query"],
        how="left",
        nulls_equal=True,
    )
    # Gaps between a client's consecutive requests: sort by (client hash, time) and difference
    # neighbours of the same client (8x faster than `diff().over("client")` on 300k rows).
    frame = frame.with_columns(pl.col("client").hash().alias("_client_id")).sort(["_client_id", "time"])
    same_client = pl.col("_client_id") == pl.col("_client_id").shift()
    gap = pl.when(same_client).then(pl.col("time").diff().dt.total_seconds())
    frame = frame.with_columns(pl.when(gap > 0).then(gap.cast(pl.Float64)).otherwise(None).alias("_gap"))
    clients = frame.group_by("client").agg(
        pl.len().alias("requests"),
        status.is_between(400, 499).sum().alias("n_4xx"),
        (status == 404).sum().alias("n_404"),
        status.is_in([401, 403]).sum().alias("n_401_403"),
        (status == 429).sum().alias("n_429"),
        status.is_between(500, 599).sum().alias("n_5xx"),
        (method == "POST").sum().alias("n_post"),
        (~method.is_in(["GET", "POST"]).fill_null(False)).sum().alias("n_head_other"),
        pl.col("is_static").sum().alias("n_static"),
        pl.col("is_sensitive").sum().alias("n_sensitive"),
        pl.col("is_injection").sum().alias("n_injection"),
        pl.col("target_length").sum().alias("target_length_sum"),
        pl.col("query_length").max().alias("query_length_max"),
        pl.col("user_agent").is_null().sum().alias("n_no_user_agent"),
        pl.col("referer").is_null().sum().alias("n_no_referer"),
        pl.col("bytes").fill_null(0).sum().alias("bytes_sum"),
        pl.col("_gap").count().alias("gap_n"),
        pl.col("_gap").sum().alias("gap_sum"),
        (pl.col("_gap") ** 2).sum().alias("gap_sumsq"),
        pl.col("time").min().alias("first_seen"),
        pl.col("time").max().alias("last_seen"),
        pl.col("path").filter(pl.col("is_sensitive")).min().alias("example_sensitive"),
        pl.col("path").filter(status == 404).min().alias("example_404"),
        pl.concat_str([pl.col("path").fill_null(""), pl.lit("?"), pl.col("query")])
        .filter(pl.col("is_injection"))
        .min()
        .alias("example_injection"),
    )
    windows = frame.group_by("client", pl.col("time").dt.truncate(f"{window_secs}s").alias("window")).agg(
        pl.len().alias("requests"), status.is_between(400, 499).sum().alias("n_4xx")
    )
    targets = frame.group_by("client", "template_id", "shape_id").agg(pl.len().alias("requests"))
    user_agents = frame.group_by("client", "user_agent").agg(pl.len().alias("requests"))
    templates = requests.group_by("template_id").agg(
        pl.col("template").first(), pl.col("path").min().alias("example_path")
    )
    shapes = requests.group_by("shape_id").agg(
        pl.col("shape").first(), pl.col("target").min().alias("example")
    )
    return Partials(clients, windows, targets, user_agents, templates, shapes)


def _merge(parts: list[Partials]) -> Partials:
    """Merge any number of partials in one pass (one concat and one group-by per table)."""
    if len(parts) == 1:
        return parts[0]

    def cat(name: str) -> pl.DataFrame:
        return pl.concat([getattr(p, name) for p in parts], how="diagonal")

    clients = (
        cat("clients")
        .group_by("client")
        .agg(
            *[pl.col(c).sum() for c in _SUM_COLUMNS],
            pl.col("query_length_max").max(),
            pl.col("first_seen").min(),
            pl.col("last_seen").max(),
            pl.col("example_sensitive").min(),
            pl.col("example_404").min(),
            pl.col("example_injection").min(),
        )
    )
    windows = cat("windows").group_by("client", "window").agg(pl.col("requests").sum(), pl.col("n_4xx").sum())
    targets = cat("targets").group_by("client", "template_id", "shape_id").agg(pl.col("requests").sum())
    user_agents = cat("user_agents").group_by("client", "user_agent").agg(pl.col("requests").sum())
    templates = (
        cat("templates").group_by("template_id").agg(pl.col("template").first(), pl.col("example_path").min())
    )
    shapes = cat("shapes").group_by("shape_id").agg(pl.col("shape").first(), pl.col("example").min())
    return Partials(clients, windows, targets, user_agents, templates, shapes)


@dataclass
class RarityReference:
    """How many clients used each path template and shape trigram: the site's own traffic."""

    clients: int
    templates: pl.DataFrame  # template (str), clients (u32)
    trigrams: pl.DataFrame  # trigram (str), clients (u32)


@dataclass
class FeatureTable:
    """One row per client: raw counts, the features of the catalogue, and examples for reasons."""

    frame: pl.DataFrame
    priors: dict[str, float]
    rarity: RarityReference
    window_secs: int = WINDOW_SECS
    notes: list[str] = field(default_factory=list)


def _trigrams(shapes: pl.DataFrame) -> pl.DataFrame:
    """shape_id -> trigram rows (a shape shorter than 3 characters is its own gram)."""
    length = pl.col("shape").str.len_chars().cast(pl.Int64)
    return (
        shapes.with_columns(pl.int_ranges(0, pl.max_horizontal(length - 2, pl.lit(1))).alias("_at"))
        .explode("_at")
        .select("shape_id", pl.col("shape").str.slice(pl.col("_at"), 3).alias("trigram"))
        .unique()
    )


def _rarity(used_by: pl.Expr, total: int) -> pl.Expr:
    """1 - log(clients using it) / log(all clients): 1 for one client alone, 0 for everyone."""
    if total <= 1:
        return pl.lit(1.0)
    return (1.0 - used_by.cast(pl.Float64).log() / float(pl.Series([total]).log()[0])).clip(0.0, 1.0)


class ClientAccumulator:
    """Feed parsed chunks with `add`, then `finish` for the per-client table."""

    def __init__(self, window_secs: int = WINDOW_SECS) -> None:
        self.window_secs = window_secs
        self._merged: Partials | None = None
        self._pending: list[Partials] = []
        self._pending_rows = 0

    def add(self, records: pl.DataFrame) -> None:
        if records.height == 0:
            return
        part = chunk_partials(records, self.window_secs)
        self._pending.append(part)
        self._pending_rows += part.targets.height
        # Merge when the pending partials are as large as the merged state: each row is then
        # re-aggregated O(log n) times instead of once per chunk, and memory stays bounded.
        merged_rows = self._merged.targets.height if self._merged is not None else 0
        if self._pending_rows >= max(merged_rows, MERGE_MIN_ROWS):
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            parts = ([self._merged] if self._merged is not None else []) + self._pending
            self._merged = _merge(parts)
            self._pending, self._pending_rows = [], 0

    @property
    def _state(self) -> Partials | None:
        self._flush()
        return self._merged

    @property
    def empty(self) -> bool:
        return self._merged is None and not self._pending

    def finish(
        self,
        *,
        reference: RarityReference | None = None,
        priors: dict[str, float] | None = None,
    ) -> FeatureTable:
        """Compute features. With a baseline `reference`, rarity is judged against the baseline."""
        if self._state is None:
            raise ValueError("no records were added")
        state = self._state
        # The input's own reference is only needed (and only built) without a baseline.
        ref = reference if reference is not None else self.rarity_reference()

        # Path rarity: templates requested by this client alone (or unknown to the baseline).
        templates = state.targets.join(state.templates.select("template_id", "template"), on="template_id")
        if reference is None:
            tmpl_clients = templates.group_by("template").agg(pl.col("client").n_unique().alias("others"))
            tmpl_clients = tmpl_clients.with_columns(pl.col("others") - 1)
        else:
            tmpl_clients = ref.templates.rename({"clients": "others"})
        templates = templates.join(tmpl_clients, on="template", how="left").with_columns(
            pl.col("others").fill_null(0)
        )
        rare_paths = templates.group_by("client").agg(
            pl.col("requests").filter(pl.col("others") == 0).sum().alias("n_rare_paths"),
            pl.col("template_id").n_unique().alias("distinct_paths"),
        )

        # Payload rarity from shape trigrams used by few clients.
        grams = _trigrams(state.shapes).join(ref.trigrams, on="trigram", how="left")
        grams = grams.with_columns(_rarity(pl.col("clients").fill_null(1).clip(1), ref.clients).alias("r"))
        shape_rarity = grams.group_by("shape_id").agg(
            pl.col("r").top_k(3).sort().mean().alias("shape_rarity")
        )
        payloads = (
            state.targets.join(shape_rarity, on="shape_id", how="left")
            .join(state.shapes.select("shape_id", "example"), on="shape_id", how="left")
            .group_by("client")
            .agg(
                pl.col("shape_rarity").max().alias("payload_rarity_max"),
                pl.col("example")
                .sort_by(["shape_rarity", "example"], descending=[True, False], nulls_last=True)
                .first()
                .alias("example_rare"),
                pl.col("requests")
                .filter(pl.col("shape_rarity") >= RARE_PAYLOAD_LEVEL)
                .sum()
                .alias("n_rare_payloads"),
            )
        )

        windows = state.windows.group_by("client").agg(
            pl.col("requests").max().alias("peak_window_requests"),
            pl.col("n_4xx").max().alias("peak_window_errors"),
        )
        agents = state.user_agents.with_columns(
            pl.col("user_agent").fill_null("").str.contains(TOOL_UA_RE).alias("tool")
        )
        agents = agents.group_by("client").agg(
            pl.col("user_agent").drop_nulls().n_unique().alias("distinct_user_agents"),
            pl.col("requests").filter(pl.col("tool")).sum().alias("n_tool_user_agent"),
            pl.col("user_agent")
            .sort_by(["requests", "user_agent"], descending=[True, False], nulls_last=True)
            .first()
            .alias("top_user_agent"),
        )
        frame = (
            state.clients.join(rare_paths, on="client", how="left")
            .join(payloads, on="client", how="left")
            .join(windows, on="client", how="left")
            .join(agents, on="client", how="left")
            .sort("client")
        )
        return self._features(frame, priors, ref)

    def rarity_reference(self) -> RarityReference:
        """The template and trigram client counts of everything added so far."""
        if self._state is None:
            raise ValueError("no records were added")
        state = self._state
        templates = (
            state.targets.join(state.templates.select("template_id", "template"), on="template_id")
            .group_by("template")
            .agg(pl.col("client").n_unique().cast(pl.UInt32).alias("clients"))
        )
        trigrams = (
            state.targets.select("client", "shape_id")
            .unique()
            .join(_trigrams(state.shapes), on="shape_id")
            .group_by("trigram")
            .agg(pl.col("client").n_unique().cast(pl.UInt32).alias("clients"))
        )
        return RarityReference(state.clients.height, templates.sort("template"), trigrams.sort("trigram"))

    def _features(
        self, frame: pl.DataFrame, priors: dict[str, float] | None, ref: RarityReference
    ) -> FeatureTable:
        n = pl.col("requests").cast(pl.Float64)
        counts = {
            "ratio_4xx": "n_4xx",
            "ratio_404": "n_404",
            "ratio_401_403": "n_401_403",
            "ratio_429": "n_429",
            "ratio_5xx": "n_5xx",
            "ratio_post": "n_post",
            "ratio_head_other": "n_head_other",
            "ratio_static": "n_static",
            "ratio_sensitive": "n_sensitive",
            "ratio_injection": "n_injection",
            "ratio_no_user_agent": "n_no_user_agent",
            "ratio_tool_user_agent": "n_tool_user_agent",
            "ratio_no_referer": "n_no_referer",
            "ratio_rare_paths": "n_rare_paths",
            "ratio_rare_payloads": "n_rare_payloads",
            "distinct_path_ratio": "distinct_paths",
        }
        frame = frame.with_columns(
            [
                pl.col(c).fill_null(0)
                for c in (
                    "n_rare_paths",
                    "n_rare_payloads",
                    "n_tool_user_agent",
                    "distinct_user_agents",
                    "distinct_paths",
                )
            ]
        )
        total = frame.select(pl.col("requests").sum()).item() or 1
        if priors is None:
            priors = {
                name: float(frame.select(pl.col(col).sum()).item()) / total for name, col in counts.items()
            }
        a = SHRINK_PSEUDO_REQUESTS
        minutes = ((pl.col("last_seen") - pl.col("first_seen")).dt.total_seconds() / 60.0).clip(1.0)
        mean_gap = pl.col("gap_sum") / pl.col("gap_n")
        var_gap = (pl.col("gap_sumsq") / pl.col("gap_n") - mean_gap**2).clip(0.0)
        cv = var_gap.sqrt() / mean_gap
        regularity = pl.when(pl.col("gap_n") >= MIN_GAPS).then(1.0 / (1.0 + cv)).otherwise(None)
        frame = frame.with_columns(
            *[
                ((pl.col(col).cast(pl.Float64) + a * priors[name]) / (n + a)).alias(name)
                for name, col in counts.items()
            ],
            (pl.col("target_length_sum") / n).alias("path_length_mean"),
            (n / minutes).alias("requests_per_minute"),
            regularity.alias("gap_regularity"),
            (pl.col("bytes_sum") / n).alias("bytes_per_request"),
            pl.col("payload_rarity_max").fill_null(0.0),
        )
        median_regularity = frame.select(pl.col("gap_regularity").median()).item()
        frame = frame.with_columns(
            pl.col("gap_regularity").fill_null(median_regularity if median_regularity is not None else 0.5)
        )
        casts = [pl.col(f.name).cast(pl.Float64) for f in FEATURES]
        frame = frame.with_columns(casts)
        return FeatureTable(frame, priors, ref, self.window_secs)
