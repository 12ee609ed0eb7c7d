"""Campaigns: many clients that each do little, together doing one suspicious thing.

Per-client scores are blind to an attacker spread over many addresses: a client with three
requests says little, its shares are shrunk towards the population, and its paths are "used by
many clients" (all of them the same attacker's). Here clients are grouped by how alike they
behave, and each group is judged as one client:

1. **Candidates**: clients on the suspicious side of at least one behaviour share (errors,
   POSTs, sensitive paths, markers, tool or missing user agent). Everyone else is left out, so
   crowds doing what most clients do (the home page and its assets) cannot form a campaign.
2. **Groups**: DBSCAN (scikit-learn) over each candidate's unshrunk behaviour shares and its
   volume, on rows rounded to a grid and weighted by how many clients share them (so 100,000s
   of clients cost a few thousand points). Each DBSCAN cluster is then split by what members
   concretely share: the same most-requested path template, or else the same user agent. A
   group is a campaign when at least `MIN_CLIENTS` clients share it.
3. **Score**: only groups whose typical member sends few requests (a campaign spreads itself
   thin), judged as one client: the typical member's unshrunk features and the campaign's total
   volumes; every feature on which the typical member is clearly suspicious counts
   `sqrt(members)` times (k clients agreeing is stronger evidence than one), and the score is
   gated on an *action* (errors, POSTs, unusual methods, injection markers), never on looks
   alone, so a fleet of crawlers with odd user agents stays a crowd (and errors on page assets,
   broken links that link-preview fetchers follow, are no action).
4. **Recruits**: a campaign that scores recruits the clients that did its thing and nothing
   else (few requests, mostly to its path, no page assets) though they did nothing suspicious
   themselves: the spam bot that fetched the sign-up form and was cut off before it posted.

No I/O here: the CLI, the daemon, Lambda and Spark all call `find_campaigns` on a feature table.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

import numpy as np
import polars as pl

from mlguard.detectors.ensemble import ClientScorer
from mlguard.features.aggregate import RATIO_COUNTS
from mlguard.features.catalogue import FEATURE_NAMES

MIN_CLIENTS = 3  # fewer alike clients are a coincidence, not a campaign
CANDIDATE_Z = 0.5  # robust spreads on the suspicious side of some share to be a candidate
CLEAR_Z = 1.0  # the typical member must be this far out on a share for it to be amplified
MAX_AMPLIFY_CLIENTS = 100  # amplification stops growing here: sqrt(100) = 10x
# A campaign spreads itself thin: the typical member sends at most this many requests. Above it
# each client's own shares are already precise, its own score already says what it is, and a
# group of alike, busy clients is a population (a mobile app's users), not a campaign.
SMALL_MEMBER_REQUESTS = 20
# A campaign that scores this much recruits clients that did its thing without doing anything
# suspicious themselves (same path, few requests, no page assets).
RECRUIT_SCORE = 0.5
EVIDENCE_FULL = 2.0  # as for clients: this many spreads on an action share lets the full score through
GRID = 0.05  # shares rounded to this step before clustering
EPS = 0.1  # DBSCAN radius (Chebyshev, in share units): members differ by at most ~10 points per share
_CAP = 25.0

# Shares that say what a client does wrong; a campaign is suspicious on these or not at all.
BEHAVIOUR_SHARES = (
    "ratio_4xx",
    "ratio_404",
    "ratio_401_403",
    "ratio_429",
    "ratio_5xx",
    "ratio_post",
    "ratio_unusual_method",
    "ratio_sensitive",
    "ratio_injection",
    "ratio_tool_user_agent",
    "ratio_no_user_agent",
)
# Looks, not actions: a user agent or a sensitive-looking name answered 200 is not an attack.
LOOKS = ("ratio_sensitive", "ratio_tool_user_agent", "ratio_no_user_agent")
# The gate: a campaign must *do* something suspicious (errors, POSTs, unusual methods, markers).
ACTION_SHARES = tuple(name for name in BEHAVIOUR_SHARES if name not in LOOKS)
ERROR_SHARES = ("ratio_4xx", "ratio_404", "ratio_401_403", "ratio_429", "ratio_5xx")
ASSET_CROWD = 0.5  # typical member's share of static assets above which its errors are broken links
# Context shares amplified along with behaviour (no assets, no referer from every member), but
# never enough on their own: the gate looks at actions only.
CONTEXT_SHARES = ("ratio_static", "ratio_no_referer")
DESCRIPTOR_SHARES = (*BEHAVIOUR_SHARES, *CONTEXT_SHARES, "ratio_rare_paths")
# Volumes a campaign adds up (the campaign as one client); every other count is the typical member's.
POOLED_COUNTS = ("requests", "peak_window_requests", "peak_window_errors", "repeated_posts")

# Shares over all the members' requests, for the words of the campaign's reason.
_SUMMARY_SHARES = (
    "ratio_post",
    "ratio_4xx",
    "ratio_404",
    "ratio_401_403",
    "ratio_5xx",
    "ratio_static",
    "ratio_no_user_agent",
)

CAMPAIGN_SCHEMA = {
    "campaign": pl.String,
    "campaign_score": pl.Float64,
    "clients": pl.UInt32,
    "shared_by": pl.String,  # "path" or "user agent"
    "shared": pl.String,  # the path template or user agent the members share
    "shared_example": pl.String,  # a real path of the shared template (null when shared by agent)
    "shared_post": pl.Boolean,  # the shared path is mostly POSTed to
    "requests": pl.Int64,
    "requests_min": pl.Int64,
    "requests_median": pl.Float64,
    "requests_max": pl.Int64,
    "first_seen": pl.Datetime("us", "UTC"),
    "last_seen": pl.Datetime("us", "UTC"),
    "user_agents": pl.UInt32,
    "networks": pl.UInt32,  # distinct /24 (IPv4) or /48 (IPv6) networks among members
    "share_post": pl.Float64,
    "share_4xx": pl.Float64,
    "share_404": pl.Float64,
    "share_401_403": pl.Float64,
    "share_5xx": pl.Float64,
    "share_static": pl.Float64,
    "share_no_user_agent": pl.Float64,
    "members": pl.List(pl.String),
}


@dataclass
class Campaigns:
    table: pl.DataFrame  # one row per campaign (CAMPAIGN_SCHEMA), highest score first
    members: pl.DataFrame  # client -> campaign, campaign_score, campaign_requests, campaign_clients

    @classmethod
    def empty(cls) -> Campaigns:
        return cls(
            pl.DataFrame(schema=CAMPAIGN_SCHEMA),
            pl.DataFrame(
                schema={
                    "client": pl.String,
                    "campaign": pl.String,
                    "campaign_score": pl.Float64,
                    "campaign_requests": pl.Int64,
                    "campaign_clients": pl.Int64,
                }
            ),
        )


def _share(name: str) -> pl.Expr:
    """A client's own share, unshrunk (the features are shrunk towards the population)."""
    return pl.col(RATIO_COUNTS[name]).cast(pl.Float64) / pl.col("requests").cast(pl.Float64)


def _network(client: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) a client is in: rented addresses come in blocks."""
    try:
        address = ipaddress.ip_address(client.split("/")[0])
    except ValueError:
        return client
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


# A dotted-quad IPv4 address as Python's ipaddress writes it (no leading zeros): its /24 is
# a text edit. Anything else (IPv6, grouped networks, odd text) goes through `_network`.
_CANONICAL_IPV4 = r"^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$"


def _networks(table: pl.DataFrame) -> pl.DataFrame:
    """campaign -> number of distinct /24 (IPv4) or /48 (IPv6) networks among its members
    (parsing every member in Python took 0.3 s of a 10M-line run)."""
    members = table.select("campaign", pl.col("members").alias("client")).explode("client")
    v4 = pl.col("client").str.contains(_CANONICAL_IPV4)
    plain = members.filter(v4).with_columns(pl.col("client").str.replace(r"\.\d+$", ".0/24").alias("network"))
    other = members.filter(~v4)
    other = other.with_columns(pl.Series("network", [_network(c) for c in other["client"]], dtype=pl.String))
    return (
        pl.concat([plain, other])
        .group_by("campaign")
        .agg(pl.col("network").n_unique().cast(pl.UInt32).alias("networks"))
    )


def _groups(candidates: pl.DataFrame) -> pl.Series:
    """DBSCAN cluster of each candidate (-1: none), on rounded unshrunk shares and volume."""
    from sklearn.cluster import DBSCAN

    descriptor = candidates.select(
        *[_share(name) for name in DESCRIPTOR_SHARES],
        (pl.col("requests").cast(pl.Float64).log10() / 4.0).alias("volume"),
    ).to_numpy()
    rounded = np.round(np.nan_to_num(descriptor) / GRID) * GRID
    points, which, weight = np.unique(rounded, axis=0, return_inverse=True, return_counts=True)
    dbscan = DBSCAN(eps=EPS, min_samples=MIN_CLIENTS, metric="chebyshev")
    labels = dbscan.fit(points, sample_weight=weight).labels_
    return pl.Series("_cluster", labels[np.asarray(which).ravel()], dtype=pl.Int64)


def _campaign_id(shared_by: str, shared: str, first_member: str) -> str:
    digest = hashlib.blake2b(f"{shared_by}\0{shared}\0{first_member}".encode(), digest_size=4)
    return "c-" + digest.hexdigest()


def find_campaigns(frame: pl.DataFrame, scorer: ClientScorer) -> Campaigns:
    """Campaigns among the clients of `frame` (a feature table), scored with the same `scorer`
    that scored the clients."""
    if frame.height < MIN_CLIENTS:
        return Campaigns.empty()
    # Candidates by their own, unshrunk shares: one POST in three requests is on the suspicious
    # side even though, shrunk towards the population, it hardly shows.
    raw = frame.select(
        [_share(name) if name in BEHAVIOUR_SHARES else pl.col(name) for name in FEATURE_NAMES]
    ).fill_nan(0.0)
    behaviour = [FEATURE_NAMES.index(name) for name in BEHAVIOUR_SHARES]
    on_suspicious_side = scorer.deviation(raw.to_numpy())[:, behaviour].max(axis=1) >= CANDIDATE_Z
    if int(on_suspicious_side.sum()) < MIN_CLIENTS:
        return Campaigns.empty()
    candidates = frame.filter(pl.Series(on_suspicious_side)).filter(pl.col("requests") > 0)
    candidates = candidates.with_columns(_groups(candidates))
    ua = pl.col("top_user_agent")
    has_ua = ua.is_not_null() & (ua.str.len_chars() > 0)
    by_path = (pl.len().over("_cluster", "top_target") >= MIN_CLIENTS) & pl.col("top_target").is_not_null()
    grouped = (
        candidates.filter(pl.col("_cluster") >= 0)
        .with_columns(
            pl.when(by_path).then(pl.lit("path")).when(has_ua).then(pl.lit("user agent")).alias("shared_by"),
        )
        .with_columns(
            pl.when(pl.col("shared_by") == "path").then(pl.col("top_target")).otherwise(ua).alias("shared")
        )
        .filter(pl.col("shared_by").is_not_null())
        .with_columns(pl.len().over("_cluster", "shared_by", "shared").alias("_size"))
        .filter(pl.col("_size") >= MIN_CLIENTS)
    )
    if grouped.height == 0:
        return Campaigns.empty()
    key = ["_cluster", "shared_by", "shared"]
    pooled = (
        grouped.group_by(key)
        .agg(
            *[
                (_share(f) if f in RATIO_COUNTS else pl.col(f).cast(pl.Float64)).median().alias(f)
                for f in FEATURE_NAMES
                if f not in POOLED_COUNTS
            ],
            *[pl.col(f).cast(pl.Float64).sum().alias(f) for f in POOLED_COUNTS],
            pl.len().alias("clients"),
            pl.col("requests").cast(pl.Float64).median().alias("_median_requests"),
            pl.col("client").min().alias("_first_member"),
        )
        .filter(pl.col("_median_requests") <= SMALL_MEMBER_REQUESTS)
        .sort(key)
    )
    if pooled.height == 0:
        return Campaigns.empty()
    named = zip(pooled["shared_by"], pooled["shared"], pooled["_first_member"], strict=True)
    ids = [_campaign_id(by, shared, first) for by, shared, first in named]
    scores = pooled.select(
        *key, pl.Series("campaign", ids, dtype=pl.String), pl.Series("campaign_score", _score(pooled, scorer))
    )
    members = grouped.select("client", *key).join(scores, on=key)
    members = pl.concat([members, _recruits(frame, members)], how="diagonal")
    return _describe(frame, members)


def _score(pooled: pl.DataFrame, scorer: ClientScorer) -> np.ndarray:
    """Each group judged as one client: amplified where the typical member is clearly
    suspicious, gated on an action."""
    Z = scorer.deviation(pooled.select(FEATURE_NAMES).to_numpy())
    amplified = [j for j, name in enumerate(FEATURE_NAMES) if name not in POOLED_COUNTS]
    factor = np.sqrt(np.minimum(pooled["clients"].to_numpy(), MAX_AMPLIFY_CLIENTS)).astype(np.float64)
    part = Z[:, amplified]
    Z[:, amplified] = np.where(part >= CLEAR_Z, np.minimum(part * factor[:, None], _CAP), part)
    action = Z[:, [FEATURE_NAMES.index(name) for name in ACTION_SHARES]]
    # Errors on page assets are broken links, not probes: a link shared on a social network
    # sends its preview fetchers to the same missing image.
    on_assets = pooled["ratio_static"].to_numpy() >= ASSET_CROWD
    errors = [ACTION_SHARES.index(name) for name in ERROR_SHARES]
    action[np.ix_(on_assets, errors)] = 0.0
    actions = action.max(axis=1)
    gate = np.where(actions >= CLEAR_Z, np.clip(actions / EVIDENCE_FULL, 0.0, 1.0), 0.0)
    return np.round(scorer.ensemble_score(Z) * gate, 4)


def _recruits(frame: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """Clients that did nothing suspicious themselves but the very thing a suspicious campaign
    did: few requests, mostly to the campaign's path, and no page assets (a spam bot that
    fetched the sign-up form but was cut off before it posted)."""
    suspicious = members.filter(
        (pl.col("campaign_score") >= RECRUIT_SCORE) & (pl.col("shared_by") == "path")
    ).unique("campaign")
    if suspicious.height == 0:
        return members.clear()
    others = frame.filter(
        ~pl.col("client").is_in(members["client"].implode())
        & (pl.col("requests") <= SMALL_MEMBER_REQUESTS)
        & (pl.col("n_static") == 0)
    ).select("client", pl.col("top_target").alias("shared"))
    # A path two campaigns share recruits into the stronger one.
    recruits = others.join(suspicious.drop("client"), on="shared").sort("campaign_score", descending=True)
    return recruits.unique("client", keep="first", maintain_order=True).select(members.columns)


def _pooled_share(name: str) -> pl.Expr:
    share = pl.col(RATIO_COUNTS[name]).sum() / pl.col("requests").sum()
    return share.alias(name.replace("ratio_", "share_"))


def _describe(frame: pl.DataFrame, members: pl.DataFrame) -> Campaigns:
    """The campaign table: size, span, what the members share, in words and numbers."""
    joined = members.join(frame, on="client", how="left")
    table = joined.group_by("campaign").agg(
        pl.col("campaign_score").first(),
        pl.col("shared_by").first(),
        pl.col("shared").first(),
        # Every member's top template is the shared one, and a template has one example.
        pl.when(pl.col("shared_by") == "path")
        .then(pl.col("top_target_example"))
        .otherwise(None)
        .drop_nulls()
        .first()
        .alias("shared_example"),
        pl.len().cast(pl.UInt32).alias("clients"),
        pl.col("requests").cast(pl.Int64).sum(),
        pl.col("requests").cast(pl.Int64).min().alias("requests_min"),
        pl.col("requests").cast(pl.Float64).median().alias("requests_median"),
        pl.col("requests").cast(pl.Int64).max().alias("requests_max"),
        pl.col("first_seen").min(),
        pl.col("last_seen").max(),
        pl.col("top_user_agent").drop_nulls().n_unique().cast(pl.UInt32).alias("user_agents"),
        (pl.col("top_target_post").mean() >= 0.5).alias("shared_post"),
        *[_pooled_share(f) for f in _SUMMARY_SHARES],
        pl.col("client").sort().alias("members"),
    )
    table = (
        table.join(_networks(table), on="campaign", how="left")
        .select(list(CAMPAIGN_SCHEMA))
        .cast(CAMPAIGN_SCHEMA)
        .sort(["campaign_score", "clients", "campaign"], descending=[True, True, False])
    )
    assigned = table.select(
        pl.col("members").alias("client"),
        "campaign",
        "campaign_score",
        pl.col("requests").alias("campaign_requests"),
        pl.col("clients").cast(pl.Int64).alias("campaign_clients"),
    )
    return Campaigns(table, assigned.explode("client"))
