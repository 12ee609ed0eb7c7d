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
    HEADER_INJECTION_RE,
    INJECTION_RE,
    REFERER_CANDIDATE_RE,
    SENSITIVE_RE,
    STATIC_RE,
    TOOL_UA_RE,
    path_template,
    request_shape,
)
from mlguard.schema import request_fields

WINDOW_SECS = 600
SHRINK_PSEUDO_REQUESTS = 5.0  # a ratio from 1 request says little: pull it towards the population
RARE_PAYLOAD_LEVEL = 0.75
MIN_GAPS = 4
# Pending partial tables are merged once they hold this many target rows (and at least as many
# as the merged state): ~11 chunks of a busy log, ~0.15 GiB. Measured on 10M lines (median of 3):
# 1M took 24.1 s and 4M 22.5 s; with the allocator setting of mlguard/__init__.py, 4M 21.3 s and
# 2M 21.9 s. At 30M lines of 16,666 clients 4M peaked 0.26 GiB higher than 2M.
MERGE_MIN_ROWS = 2_000_000
# Each ratio feature and the count it is the share of (requests is the denominator).
RATIO_COUNTS: dict[str, str] = {
    "ratio_4xx": "n_4xx",
    "ratio_404": "n_404",
    "ratio_401_403": "n_401_403",
    "ratio_429": "n_429",
    "ratio_5xx": "n_5xx",
    "ratio_post": "n_post",
    "ratio_unusual_method": "n_unusual_method",
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

_SUM_COLUMNS = (
    "requests",
    "n_4xx",
    "n_404",
    "n_401_403",
    "n_429",
    "n_5xx",
    "n_post",
    "n_unusual_method",
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


def _request_features(requests: pl.LazyFrame) -> pl.LazyFrame:
    """Markers for each distinct request line (`rid`, `request`) of a chunk."""
    path, query = pl.col("path"), pl.col("query")
    target = (
        pl.when(query.is_null())
        .then(path.fill_null(""))
        .otherwise(pl.concat_str([path.fill_null(""), pl.lit("?"), query]))
    )
    return (
        requests.with_columns(request_fields(pl.col("request")))
        .with_columns(target.alias("target"), path_template(path).alias("template"))
        .with_columns(
            request_shape(pl.col("target")).alias("shape"),
            pl.col("target").str.len_chars().alias("target_length"),
            query.str.len_chars().fill_null(0).alias("query_length"),
            path.fill_null("").str.contains(STATIC_RE).alias("is_static"),
            pl.col("target").str.contains(SENSITIVE_RE).alias("is_sensitive"),
            pl.col("target").str.contains(INJECTION_RE).alias("is_injection"),
            (pl.col("method") == "POST").fill_null(False).alias("is_post"),
            (~pl.col("method").is_in(["GET", "POST", "HEAD"]).fill_null(False)).alias("is_unusual_method"),
        )
        .with_columns(
            pl.col("template").hash().alias("template_id"), pl.col("shape").hash().alias("shape_id")
        )
    )


# Which header values carry a payload. A referer is judged only where the parse may have copied
# its text out (columns_for_features), so that `detect` and `explain` agree.
_UA_MARKED = pl.col("user_agent").str.contains(HEADER_INJECTION_RE)
_REFERER_MARKED = pl.col("referer").str.contains(REFERER_CANDIDATE_RE) & pl.col("referer").str.contains(
    HEADER_INJECTION_RE
)


def _marked_referers(lines: pl.LazyFrame) -> pl.LazyFrame:
    """The referers (by hash) of a chunk that carry an injection marker, judged once each."""
    return (
        lines.filter(pl.col("referer").is_not_null())
        .group_by(pl.col("referer").hash().alias("fid"))
        .agg(pl.col("referer").first())
        .filter(_REFERER_MARKED)
        .select("fid")
    )


def _header_injection(agent_names: pl.DataFrame, marked_referers: pl.DataFrame) -> pl.Expr | None:
    """Whether a line's user agent or referer carries an injection marker, or None when none in
    the chunk does: the usual case, which then costs no per-line work."""
    agents = agent_names.filter(_UA_MARKED)["uid"]
    if agents.is_empty() and marked_referers.is_empty():
        return None
    referers = marked_referers["fid"].implode()
    return pl.col("uid").is_in(agents.implode()) | pl.col("referer").hash().is_in(referers)


@dataclass
class Partials:
    clients: pl.DataFrame  # cid -> client, counts, sums, first/last seen, examples
    windows: pl.DataFrame  # cid, window -> requests, n_4xx
    targets: pl.DataFrame  # cid, template_id, shape_id -> requests, n_4xx, n_post
    user_agents: pl.DataFrame  # cid, uid -> requests
    agent_names: pl.DataFrame  # uid -> user_agent
    templates: pl.DataFrame  # template_id -> template, example path
    shapes: pl.DataFrame  # shape_id -> shape, example request target


def chunk_partials(records: pl.DataFrame, window_secs: int = WINDOW_SECS) -> Partials:
    """The partial tables of one chunk of records (parsed lines, in memory).

    Lines are reduced first to one row per (client, request line) and only then is each
    distinct request examined, so regexes run once per distinct request, not once per line.
    Clients, requests and user agents are keyed by 64-bit hashes: group-bys and merges on
    integers are several times faster than on strings.
    """
    status = pl.col("status")
    r = records.select("client", "time", "request", "status", "bytes", "referer", "user_agent").with_columns(
        pl.col("client").hash().alias("cid"),
        pl.col("request").hash().alias("rid"),
        pl.col("user_agent").hash().alias("uid"),
    )
    # Distinct requests, user agents and referers first (together: Polars runs them side by side).
    requests, agent_names, marked_referers = pl.collect_all(
        [
            _request_features(r.lazy().group_by("rid").agg(pl.col("request").first())),
            r.lazy().group_by("uid").agg(pl.col("user_agent").first()),
            _marked_referers(r.lazy()),
        ]
    )
    in_header = _header_injection(agent_names, marked_referers)
    by_request = r.group_by("cid", "rid").agg(
        pl.len().alias("requests"),
        status.is_between(400, 499).sum().alias("n_4xx"),
        (status == 404).sum().alias("n_404"),
        status.is_in([401, 403]).sum().alias("n_401_403"),
        (status == 429).sum().alias("n_429"),
        status.is_between(500, 599).sum().alias("n_5xx"),
        (pl.lit(0, pl.UInt32) if in_header is None else in_header.sum()).alias("n_header_injection"),
    )
    joined = by_request.join(requests, on="rid", how="left").lazy()
    n = pl.col("requests")
    from_requests = joined.group_by("cid").agg(
        n.sum(),
        *[pl.col(c).sum() for c in ("n_4xx", "n_404", "n_401_403", "n_429", "n_5xx")],
        n.filter(pl.col("is_post")).sum().alias("n_post"),
        n.filter(pl.col("is_unusual_method")).sum().alias("n_unusual_method"),
        n.filter(pl.col("is_static")).sum().alias("n_static"),
        n.filter(pl.col("is_sensitive")).sum().alias("n_sensitive"),
        # A request counts once whether its markers are in the URL, a header or both.
        (
            n.filter(pl.col("is_injection")).sum()
            + pl.col("n_header_injection").filter(~pl.col("is_injection")).sum()
        ).alias("n_injection"),
        (n * pl.col("target_length")).sum().alias("target_length_sum"),
        pl.col("query_length").max().alias("query_length_max"),
        pl.col("path").filter(pl.col("is_sensitive")).min().alias("example_sensitive"),
        pl.col("path").filter(pl.col("n_404") > 0).min().alias("example_404"),
        pl.col("target").filter(pl.col("is_injection")).min().alias("example_injection"),
    )
    lines = r.lazy()
    from_lines = lines.group_by("cid").agg(
        pl.col("client").first(),
        pl.col("user_agent").is_null().sum().alias("n_no_user_agent"),
        pl.col("referer").is_null().sum().alias("n_no_referer"),
        pl.col("bytes").fill_null(0).sum().alias("bytes_sum"),
        pl.col("time").min().alias("first_seen"),
        pl.col("time").max().alias("last_seen"),
    )
    # Gaps between a client's consecutive requests within the chunk: sort by (client, time)
    # and difference neighbours of the same client (8x faster than `diff().over("client")`).
    # Logs are nearly always in time order already: a stable sort by client alone (3x faster)
    # then leaves each client's times sorted; where it does not, sort by both.
    same_client = pl.col("cid") == pl.col("cid").shift()
    times = r.select("cid", "time").sort("cid", maintain_order=True)
    if times.select((same_client & (pl.col("time").diff() < pl.duration())).any()).item():
        times = times.sort("cid", "time")
    gap = pl.when(same_client).then(pl.col("time").diff().dt.total_seconds()).cast(pl.Float64)
    gaps = (
        times.lazy()
        .with_columns(pl.when(gap > 0).then(gap).otherwise(None).alias("_gap"))
        .group_by("cid")
        .agg(
            pl.col("_gap").count().alias("gap_n"),
            pl.col("_gap").sum().alias("gap_sum"),
            (pl.col("_gap") ** 2).sum().alias("gap_sumsq"),
        )
    )
    clients = from_lines.join(from_requests, on="cid").join(gaps, on="cid", how="left")
    windows = lines.group_by("cid", pl.col("time").dt.truncate(f"{window_secs}s").alias("window")).agg(
        pl.len().alias("requests"), status.is_between(400, 499).sum().alias("n_4xx")
    )
    targets = joined.group_by("cid", "template_id", "shape_id").agg(
        n.sum(), pl.col("n_4xx").sum(), n.filter(pl.col("is_post")).sum().alias("n_post")
    )
    user_agents = lines.group_by("cid", "uid").agg(pl.len().alias("requests"))
    templates = (
        requests.lazy()
        .group_by("template_id")
        .agg(pl.col("template").first(), pl.col("path").min().alias("example_path"))
    )
    shapes = (
        requests.lazy()
        .group_by("shape_id")
        .agg(pl.col("shape").first(), pl.col("target").min().alias("example"))
    )
    if in_header is not None:
        marked = lines.filter(in_header)
        # Where the URLs hold no marker, the header that did is the example a person reads.
        header = (
            pl.when(_UA_MARKED)
            .then(pl.concat_str([pl.lit("user agent: "), pl.col("user_agent")]))
            .otherwise(pl.concat_str([pl.lit("referer: "), pl.col("referer")]))
        )
        examples = marked.group_by("cid").agg(header.min().alias("_example_header"))
        clients = (
            clients.join(examples, on="cid", how="left")
            .with_columns(pl.coalesce("example_injection", "_example_header").alias("example_injection"))
            .drop("_example_header")
        )
        targets, shapes = _with_header_payloads(marked, requests, targets, shapes)
    tables = [clients, windows, targets, user_agents, agent_names.lazy(), templates, shapes]
    return Partials(*pl.collect_all(tables))


def _with_header_payloads(
    marked: pl.LazyFrame, requests: pl.DataFrame, targets: pl.LazyFrame, shapes: pl.LazyFrame
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """A payload in a header is judged for rarity like one in the URL: its shape joins the
    shapes of the request that carried it (a row of no requests, so that no count changes),
    and the header is the example a person reads."""
    payloads = pl.concat(
        [
            marked.filter(is_marked).select(
                "cid", "rid", pl.col(column).alias("text"), pl.lit(f"{label}: ").alias("where")
            )
            for column, label, is_marked in (
                ("user_agent", "user agent", _UA_MARKED),
                ("referer", "referer", _REFERER_MARKED),
            )
        ]
    ).unique(["cid", "rid", "text"])
    # The header's name is part of the shape: the example shown for it names the right header.
    payloads = payloads.with_columns(
        pl.concat_str(["where", request_shape(pl.col("text"))]).alias("shape")
    ).with_columns(pl.col("shape").hash().alias("shape_id"))
    rows = payloads.join(requests.lazy().select("rid", "template_id"), on="rid").select(
        "cid",
        "template_id",
        "shape_id",
        *[pl.lit(0, pl.UInt32).alias(c) for c in ("requests", "n_4xx", "n_post")],
    )
    targets = (
        pl.concat([targets, rows], how="vertical_relaxed")
        .group_by("cid", "template_id", "shape_id")
        .agg(pl.col("requests", "n_4xx", "n_post").sum())
    )
    examples = payloads.select("shape_id", "shape", pl.concat_str(["where", "text"]).alias("example"))
    shapes = (
        pl.concat([shapes, examples], how="vertical_relaxed")
        .group_by("shape_id")
        .agg(pl.col("shape").first(), pl.col("example").min())
    )
    return targets, shapes


def merge_partials(parts: list[Partials]) -> Partials:
    """Merge any number of partials in one pass (one concat and one group-by per table)."""
    if len(parts) == 1:
        return parts[0]

    def cat(name: str) -> pl.DataFrame:
        return pl.concat([getattr(p, name) for p in parts], how="diagonal")

    # The gap between a client's last request in one chunk and its first in a later one: parts
    # arrive in input order, so with them the gaps are those of the whole log, not of where
    # the chunks happened to be cut.
    clients = pl.concat(
        [p.clients.with_columns(pl.lit(i, pl.UInt32).alias("_part")) for i, p in enumerate(parts)],
        how="diagonal",
    ).sort("cid", "_part")
    same_client = pl.col("cid") == pl.col("cid").shift()
    since_last = (pl.col("first_seen") - pl.col("last_seen").shift()).dt.total_seconds()
    across = pl.when(same_client).then(since_last)
    clients = clients.with_columns(pl.when(across > 0).then(across.cast(pl.Float64)).alias("_across"))
    gap_sums = [
        (pl.col("gap_n").sum() + pl.col("_across").count()).alias("gap_n"),
        (pl.col("gap_sum").sum() + pl.col("_across").sum()).alias("gap_sum"),
        (pl.col("gap_sumsq").sum() + (pl.col("_across") ** 2).sum()).alias("gap_sumsq"),
    ]
    clients = clients.group_by("cid").agg(
        pl.col("client").first(),
        *[pl.col(c).sum() for c in _SUM_COLUMNS if not c.startswith("gap_")],
        *gap_sums,
        pl.col("query_length_max").max(),
        pl.col("first_seen").min(),
        pl.col("last_seen").max(),
        pl.col("example_sensitive").min(),
        pl.col("example_404").min(),
        pl.col("example_injection").min(),
    )
    windows = cat("windows").group_by("cid", "window").agg(pl.col("requests").sum(), pl.col("n_4xx").sum())
    # One 64-bit key for (client, template, shape): a group-by on one integer column takes
    # about half the time of one on three (this is the largest table).
    targets = (
        cat("targets")
        .with_columns(pl.struct("cid", "template_id", "shape_id").hash().alias("_key"))
        .group_by("_key")
        .agg(
            pl.col("cid", "template_id", "shape_id").first(),
            pl.col("requests").sum(),
            pl.col("n_4xx").sum(),
            pl.col("n_post").sum(),
        )
    )
    user_agents = cat("user_agents").group_by("cid", "uid").agg(pl.col("requests").sum())
    agent_names = cat("agent_names").unique("uid")
    templates = (
        cat("templates").group_by("template_id").agg(pl.col("template").first(), pl.col("example_path").min())
    )
    shapes = cat("shapes").group_by("shape_id").agg(pl.col("shape").first(), pl.col("example").min())
    merged = [clients, windows, targets, user_agents, agent_names, templates, shapes]
    # Same columns in the same order as one chunk's partials, however many were merged.
    first = parts[0]
    names = list(vars(first))
    return Partials(*(t.select(getattr(first, name).columns) for t, name in zip(merged, names, strict=True)))


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
        """Add a chunk of records (parsed lines)."""
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

    def add_partials(self, part: Partials) -> None:
        """Add partial tables built elsewhere (a sliding window's buckets)."""
        self._pending.append(part)
        self._pending_rows += part.targets.height

    def _flush(self) -> None:
        if self._pending:
            parts = ([self._merged] if self._merged is not None else []) + self._pending
            self._merged = merge_partials(parts)
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
        # The reference counts every client that requested a template; "others" leaves this one out.
        tmpl_clients = ref.templates.rename({"clients": "others"})
        if reference is None:
            tmpl_clients = tmpl_clients.with_columns(pl.col("others") - 1)
        templates = templates.join(tmpl_clients, on="template", how="left").with_columns(
            pl.col("others").fill_null(0)
        )
        rare_paths = templates.group_by("cid").agg(
            pl.col("requests").filter(pl.col("others") == 0).sum().alias("n_rare_paths"),
            pl.col("template_id").n_unique().alias("distinct_paths"),
            pl.col("template_id").filter(pl.col("n_4xx") > 0).n_unique().alias("distinct_error_paths"),
        )
        # POSTs per path template (summed over the shapes of its queries); the client's maximum.
        posts = (
            state.targets.filter(pl.col("n_post") > 0)  # few rows: most requests are GETs
            .group_by("cid", "template_id")
            .agg(pl.col("n_post").sum())
            .group_by("cid")
            .agg(pl.col("n_post").max().alias("repeated_posts"))
        )

        # The path template each client requested most (ties: the first in text order), for
        # telling which clients share a target when they are grouped into campaigns, and a real
        # path of it for a person to read (a template reads "system0" for "system32").
        top_targets = (
            state.targets.group_by("cid", "template_id")
            .agg(pl.col("requests").sum(), pl.col("n_post").sum())
            .join(state.templates.select("template_id", "template", "example_path"), on="template_id")
            # One sort for the three columns (a sort per column per client cost 0.1 s at 10M lines).
            .sort(["cid", "requests", "template"], descending=[False, True, False])
            .unique("cid", keep="first", maintain_order=True)
            .select(
                "cid",
                pl.col("template").alias("top_target"),
                pl.col("example_path").alias("top_target_example"),
                (pl.col("n_post") * 2 >= pl.col("requests")).alias("top_target_post"),
            )
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
            .group_by("cid")
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

        windows = state.windows.group_by("cid").agg(
            pl.col("requests").max().alias("peak_window_requests"),
            pl.col("n_4xx").max().alias("peak_window_errors"),
        )
        names = state.agent_names.with_columns(
            pl.col("user_agent").fill_null("").str.contains(TOOL_UA_RE).alias("tool")
        )
        agents = state.user_agents.join(names, on="uid", how="left")
        agents = agents.group_by("cid").agg(
            pl.col("user_agent").drop_nulls().n_unique().alias("distinct_user_agents"),
            pl.col("requests").filter(pl.col("tool")).sum().alias("n_tool_user_agent"),
            pl.col("user_agent")
            .sort_by(["requests", "user_agent"], descending=[True, False], nulls_last=True)
            .first()
            .alias("top_user_agent"),
        )
        frame = (
            state.clients.join(rare_paths, on="cid", how="left")
            .join(posts, on="cid", how="left")
            .join(payloads, on="cid", how="left")
            .join(windows, on="cid", how="left")
            .join(agents, on="cid", how="left")
            .join(top_targets, on="cid", how="left")
            .drop("cid")
            .sort("client")
        )
        return self._features(frame, priors, ref)

    def traffic(self) -> pl.DataFrame:
        """Requests and client errors (4xx) of all clients per burst window, oldest first."""
        state = self._state
        if state is None:
            schema = {"window": pl.Datetime("us", "UTC"), "requests": pl.Int64, "errors": pl.Int64}
            return pl.DataFrame(schema=schema)
        return (
            state.windows.group_by("window")
            .agg(
                pl.col("requests").sum().cast(pl.Int64),
                pl.col("n_4xx").sum().cast(pl.Int64).alias("errors"),
            )
            .sort("window")
        )

    def rarity_reference(self) -> RarityReference:
        """The template and trigram client counts of everything added so far."""
        if self._state is None:
            raise ValueError("no records were added")
        state = self._state
        templates = (
            state.targets.join(state.templates.select("template_id", "template"), on="template_id")
            .group_by("template")
            .agg(pl.col("cid").n_unique().cast(pl.UInt32).alias("clients"))
        )
        trigrams = (
            state.targets.select("cid", "shape_id")
            .unique()
            .join(_trigrams(state.shapes), on="shape_id")
            .group_by("trigram")
            .agg(pl.col("cid").n_unique().cast(pl.UInt32).alias("clients"))
        )
        return RarityReference(state.clients.height, templates.sort("template"), trigrams.sort("trigram"))

    def _features(
        self, frame: pl.DataFrame, priors: dict[str, float] | None, ref: RarityReference
    ) -> FeatureTable:
        n = pl.col("requests").cast(pl.Float64)
        counts = RATIO_COUNTS
        frame = frame.with_columns(
            [
                pl.col(c).fill_null(0)
                for c in (
                    "n_rare_paths",
                    "n_rare_payloads",
                    "n_tool_user_agent",
                    "distinct_user_agents",
                    "distinct_paths",
                    "distinct_error_paths",
                    "repeated_posts",
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
