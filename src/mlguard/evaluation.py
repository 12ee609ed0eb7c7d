"""How well detection matches labels: what `mlguard eval` prints and bench/detection reports.

Per client. A client is *flagged* at `alert` when its verdict is alert or block, and at `block`
when it is block. Clients of the log that the labels do not name are counted and listed, never
treated as either class; labelled clients that are not in the log are listed too.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from mlguard.decisions.policy import ALERT, BLOCK
from mlguard.errors import InputError
from mlguard.explain.reasons import safe_text

LABELS = ("malicious", "benign")
NO_ACTOR = "unnamed"
# Recall levels at which `eval` says what alert threshold reaches them and at what cost.
RECALL_GOALS = (0.90, 0.95)


def load_labels(path: Path) -> pl.DataFrame:
    """`ip,label[,actor]` with a header; label `malicious` or `benign`. One row per address."""
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError as exc:
        raise InputError(f"cannot read labels '{safe_text(path)}': {exc.strerror or exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if "ip" not in fields or "label" not in fields:
        raise InputError(f"labels '{safe_text(path)}' need a header with columns ip,label[,actor]")
    rows: dict[str, tuple[str, str]] = {}
    for n, raw in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if isinstance(v, str)}
        ip, label = row.get("ip", "").lower(), row.get("label", "").lower()
        if not ip:
            raise InputError(f"labels '{safe_text(path)}' line {n}: no ip")
        if label not in LABELS:
            raise InputError(
                f"labels '{safe_text(path)}' line {n}: label {safe_text(label, 40)!r} is not "
                "'malicious' or 'benign'"
            )
        actor = row.get("actor") or (NO_ACTOR if label == "malicious" else "benign")
        if ip in rows and rows[ip][0] != label:
            raise InputError(
                f"labels '{safe_text(path)}' line {n}: {safe_text(ip, 60)} is labelled both ways"
            )
        rows[ip] = (label, actor)
    if not rows:
        raise InputError(f"labels '{safe_text(path)}' hold no rows")
    return pl.DataFrame(
        {
            "ip": list(rows),
            "label": [v[0] for v in rows.values()],
            "actor": [v[1] for v in rows.values()],
        },
        schema={"ip": pl.String, "label": pl.String, "actor": pl.String},
    )


def _counts(truth: pl.Series, flagged: pl.Series) -> dict[str, float]:
    frame = pl.DataFrame({"y": truth, "f": flagged})
    tp = frame.filter(pl.col("y") & pl.col("f")).height
    fp = frame.filter(~pl.col("y") & pl.col("f")).height
    fn = frame.filter(pl.col("y") & ~pl.col("f")).height
    tn = frame.filter(~pl.col("y") & ~pl.col("f")).height
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    fpr = fp / (fp + tn) if fp + tn else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "fpr": fpr,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def alert_point(attacker_scores: list[float], benign_scores: list[float], recall: float) -> dict[str, Any]:
    """The highest alert threshold that flags `recall` of the attackers, and what it flags."""
    ranked = sorted(attacker_scores, reverse=True)
    # The epsilon keeps 0.9 * 10 = 9.000000000000002 from asking for a tenth attacker.
    needed = max(1, math.ceil(recall * len(ranked) - 1e-9))
    threshold = ranked[needed - 1] if ranked else None
    if threshold is None:
        return {"recall_goal": recall, "threshold": None, "tp": 0, "fp": 0}
    return {
        "recall_goal": recall,
        "threshold": threshold,
        "tp": sum(score >= threshold for score in ranked),
        "fp": sum(score >= threshold for score in benign_scores),
    }


def block_ceiling(
    attackers: list[tuple[float, int]], benign: list[tuple[float, int]], min_requests: int
) -> dict[str, Any]:
    """Of (score, requests) pairs: the highest benign score among clients with at least
    `min_requests`, and how many such attackers score above it. A single block threshold above
    that score blocks no benign client of these labels; none blocks more attackers without
    blocking one. (Own requests: a campaign member's campaign is not counted here.)"""
    eligible = [score for score, n in benign if n >= min_requests]
    highest = max(eligible, default=None)
    return {
        "min_requests": min_requests,
        "highest_benign": highest,
        "tp": sum(n >= min_requests and (highest is None or score > highest) for score, n in attackers),
    }


@dataclass
class Evaluation:
    alert: dict[str, float]
    block: dict[str, float]
    roc_auc: float | None  # None when the labels present hold one class only
    pr_auc: float | None
    per_actor: dict[str, float]  # recall at alert of each malicious actor
    actor_clients: dict[str, int]  # how many labelled clients each malicious actor has
    labelled: int  # labelled clients found in the log
    malicious: int
    misses: pl.DataFrame  # malicious clients that were passed
    false_positives: pl.DataFrame  # benign clients that were flagged
    unlabelled: list[str] = field(default_factory=list)  # in the log, not in the labels
    missing: list[str] = field(default_factory=list)  # in the labels, not in the log
    # What single thresholds would do on these labels: `alert` at each of RECALL_GOALS, and
    # `block` the highest benign score a block threshold must stay above (see block_ceiling).
    operating_points: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        def clients(frame: pl.DataFrame) -> list[dict[str, Any]]:
            return frame.select("ip", "actor", "score", "verdict", "requests", "reasons").to_dicts()

        return {
            "alert": self.alert,
            "block": self.block,
            "roc_auc": self.roc_auc,
            "pr_auc": self.pr_auc,
            "per_actor": self.per_actor,
            "actor_clients": self.actor_clients,
            "labelled": self.labelled,
            "malicious": self.malicious,
            "benign": self.labelled - self.malicious,
            "unlabelled": len(self.unlabelled),
            "unlabelled_clients": self.unlabelled,
            "missing_from_log": self.missing,
            "misses": clients(self.misses),
            "false_positives": clients(self.false_positives),
            "operating_points": self.operating_points,
        }


Explain = Callable[[list[str]], dict[str, list[str]]]


def evaluate(
    findings: pl.DataFrame,
    labels: pl.DataFrame,
    explain: Explain | None = None,
    min_block_requests: int = 1,
) -> Evaluation:
    """Compare `findings` (client, score, verdict, requests, reasons) with `labels`.

    `explain` writes reasons for the missed attackers (passed clients carry none of their own);
    `min_block_requests` is the policy's, for the block operating point.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    found = findings.select(pl.col("client").alias("ip"), "score", "verdict", "requests", "reasons")
    joined = found.join(labels, on="ip", how="inner").sort("score", "ip", descending=[True, False])
    truth = joined["label"] == "malicious"
    alerted = joined["verdict"].is_in([ALERT, BLOCK])
    both = truth.n_unique() == 2
    scores = joined["score"].to_numpy()
    per_actor = (
        joined.filter(truth)
        .group_by("actor")
        .agg(pl.col("verdict").is_in([ALERT, BLOCK]).mean().alias("recall"), pl.len().alias("clients"))
        .sort("actor")
    )
    misses = joined.filter(truth & ~alerted)
    if explain is not None and misses.height:
        written = explain(misses["ip"].to_list())
        misses = misses.with_columns(
            pl.col("ip").replace_strict(written, default=[], return_dtype=pl.List(pl.String)).alias("reasons")
        )
    pairs = {
        label: list(zip(part["score"].to_list(), part["requests"].to_list(), strict=True))
        for label, part in (("malicious", joined.filter(truth)), ("benign", joined.filter(~truth)))
    }
    attacker_scores = [score for score, _ in pairs["malicious"]]
    benign_scores = [score for score, _ in pairs["benign"]]
    ceiling = block_ceiling(pairs["malicious"], pairs["benign"], min_block_requests)
    if ceiling["highest_benign"] is not None:
        # Name the client: a person checks whether it is really benign (a label can be wrong).
        # `joined` is sorted by score (ties by address): the first such row is the highest.
        top = joined.filter((pl.col("label") == "benign") & (pl.col("requests") >= min_block_requests))
        ceiling["highest_benign_client"] = top["ip"][0]
    return Evaluation(
        alert=_counts(truth, alerted),
        block=_counts(truth, joined["verdict"] == BLOCK),
        roc_auc=float(roc_auc_score(truth.to_numpy(), scores)) if both else None,
        pr_auc=float(average_precision_score(truth.to_numpy(), scores)) if both else None,
        per_actor=dict(zip(per_actor["actor"].to_list(), per_actor["recall"].to_list(), strict=True)),
        actor_clients=dict(zip(per_actor["actor"].to_list(), per_actor["clients"].to_list(), strict=True)),
        labelled=joined.height,
        malicious=int(truth.sum()),
        misses=misses,
        false_positives=joined.filter(~truth & alerted),
        unlabelled=sorted(set(found["ip"].to_list()) - set(labels["ip"].to_list())),
        missing=sorted(set(labels["ip"].to_list()) - set(found["ip"].to_list())),
        operating_points={
            "alert": [alert_point(attacker_scores, benign_scores, goal) for goal in RECALL_GOALS],
            "block": ceiling,
        },
    )
