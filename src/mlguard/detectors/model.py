"""Baseline model files: a versioned envelope loaded without unpickling anything.

A model is what is needed to rebuild the detector exactly: the training feature matrix, the
rarity reference (how many clients used each path template and request-shape trigram), the
shrinkage priors, thresholds and parameters, plus metadata. It is stored as a NumPy `.npz`
archive of plain numeric arrays and JSON text, read with `allow_pickle=False`, and the
ensemble is refitted from it deterministically on load (a second or so).
"""

from __future__ import annotations

import json
import platform
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mlguard import __version__
from mlguard.detectors.ensemble import ClientScorer
from mlguard.errors import ModelError
from mlguard.features.aggregate import RarityReference
from mlguard.features.catalogue import FEATURE_NAMES, FEATURE_VERSION

MODEL_FORMAT = "mlguard-model"
MODEL_VERSION = 1
MAX_TRAINING_CLIENTS = 50_000


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "mlguard": __version__}
    for name in ("polars", "numpy", "scikit-learn", "pyod"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


@dataclass
class Baseline:
    scorer: ClientScorer
    reference: RarityReference
    priors: dict[str, float]
    meta: dict[str, Any]


def build_baseline(
    X: np.ndarray,
    reference: RarityReference,
    priors: dict[str, float],
    meta: dict[str, Any],
    random_state: int = 0,
) -> Baseline:
    if X.shape[0] > MAX_TRAINING_CLIENTS:
        rows = np.random.default_rng(random_state).choice(X.shape[0], MAX_TRAINING_CLIENTS, replace=False)
        X = X[np.sort(rows)]
    scorer = ClientScorer(random_state=random_state).fit(X)
    scorer.train_matrix_ = X
    return Baseline(scorer, reference, priors, meta)


def save_model(baseline: Baseline, path: str | Path) -> None:
    ref = baseline.reference
    meta = {
        **baseline.meta,
        "format": MODEL_FORMAT,
        "model_version": MODEL_VERSION,
        "feature_version": FEATURE_VERSION,
        "features": list(FEATURE_NAMES),
        "priors": baseline.priors,
        "random_state": baseline.scorer.random_state,
        "n_estimators": baseline.scorer.n_estimators,
        "reference_clients": ref.clients,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    arrays = {
        "meta": np.array(json.dumps(meta)),
        "train_matrix": np.asarray(baseline.scorer.train_matrix_, dtype=np.float64),
        "templates": np.array(json.dumps(ref.templates["template"].to_list())),
        "template_clients": ref.templates["clients"].to_numpy().astype(np.uint32),
        "trigrams": np.array(json.dumps(ref.trigrams["trigram"].to_list())),
        "trigram_clients": ref.trigrams["clients"].to_numpy().astype(np.uint32),
    }
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    tmp.replace(target)


def load_model(path: str | Path) -> Baseline:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise ModelError(f"model file '{path}' does not exist") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelError(f"'{path}' is not an MLGuard model file ({exc.__class__.__name__})") from None
    try:
        meta = json.loads(str(arrays["meta"]))
        if meta.get("format") != MODEL_FORMAT:
            raise KeyError("format")
    except (KeyError, ValueError, TypeError):
        raise ModelError(f"'{path}' is not an MLGuard model file") from None
    built_by = meta.get("versions", {}).get("mlguard", "an unknown version")
    if meta.get("model_version") != MODEL_VERSION or meta.get("feature_version") != FEATURE_VERSION:
        raise ModelError(
            f"model '{path}' was built by MLGuard {built_by} (model format "
            f"{meta.get('model_version')}, features v{meta.get('feature_version')}); this MLGuard "
            f"{__version__} needs format {MODEL_VERSION}, features v{FEATURE_VERSION}: "
            "retrain it with 'mlguard train'"
        )
    if meta.get("features") != list(FEATURE_NAMES):
        raise ModelError(f"model '{path}' lists other features than this MLGuard: retrain it")
    try:
        X = np.asarray(arrays["train_matrix"], dtype=np.float64)
        templates = pl.DataFrame(
            {
                "template": pl.Series(json.loads(str(arrays["templates"])), dtype=pl.String),
                "clients": pl.Series(arrays["template_clients"], dtype=pl.UInt32),
            }
        )
        trigrams = pl.DataFrame(
            {
                "trigram": pl.Series(json.loads(str(arrays["trigrams"])), dtype=pl.String),
                "clients": pl.Series(arrays["trigram_clients"], dtype=pl.UInt32),
            }
        )
        priors = {str(k): float(v) for k, v in meta["priors"].items()}
        reference = RarityReference(int(meta["reference_clients"]), templates, trigrams)
        scorer = ClientScorer(
            random_state=int(meta["random_state"]), n_estimators=int(meta["n_estimators"])
        ).fit(X)
    except (KeyError, ValueError, TypeError, pl.exceptions.PolarsError) as exc:
        raise ModelError(f"model '{path}' is damaged ({exc.__class__.__name__}: {exc})") from None
    scorer.train_matrix_ = X
    return Baseline(scorer, reference, priors, meta)


MAX_REFERENCE_ROWS = 200_000  # templates or trigrams kept in a refreshed reference (most used first)


def _merge_counts(old: pl.DataFrame, new: pl.DataFrame, key: str) -> pl.DataFrame:
    merged = pl.concat([old, new]).group_by(key).agg(pl.col("clients").sum().cast(pl.UInt32))
    if merged.height > MAX_REFERENCE_ROWS:
        merged = merged.sort(["clients", key], descending=[True, False]).head(MAX_REFERENCE_ROWS)
    return merged.sort(key)


def refresh_baseline(
    old: Baseline,
    X_new: np.ndarray,
    reference: RarityReference,
    priors: dict[str, float],
    *,
    refreshed: str,
    random_state: int = 0,
) -> Baseline:
    """The baseline after seeing more (unflagged) clients: every client seen since training
    weighs the same, however long ago (a sample of the old training rows and the new ones in
    proportion to how many clients each stands for), so that behaviour seen once a month is
    still normal a month later; the rarity counts and priors are pooled the same way."""
    seen_old = int(old.meta.get("training_clients_seen", old.meta.get("training_clients", 0)) or 0)
    X_old = old.scorer.train_matrix_
    seen_old = max(seen_old, X_old.shape[0])
    seen_new = X_new.shape[0]
    total = seen_old + seen_new
    size = min(MAX_TRAINING_CLIENTS, X_old.shape[0] + seen_new)
    rng = np.random.default_rng(random_state)
    take_new = min(seen_new, round(size * seen_new / total)) if total else 0
    take_old = min(X_old.shape[0], size - take_new)
    rows_old = np.sort(rng.choice(X_old.shape[0], take_old, replace=False))
    rows_new = np.sort(rng.choice(seen_new, take_new, replace=False))
    X = np.vstack([X_old[rows_old], X_new[rows_new]])
    merged_reference = RarityReference(
        old.reference.clients + reference.clients,
        _merge_counts(old.reference.templates, reference.templates, "template"),
        _merge_counts(old.reference.trigrams, reference.trigrams, "trigram"),
    )
    pooled = {
        name: (old.priors.get(name, value) * seen_old + value * seen_new) / total
        for name, value in priors.items()
    }
    meta = {
        **old.meta,
        "training_clients_seen": total,
        "training_clients": X.shape[0],
        "refreshed": refreshed,
        "refreshes": int(old.meta.get("refreshes", 0)) + 1,
    }
    scorer = ClientScorer(random_state=random_state, n_estimators=old.scorer.n_estimators).fit(X)
    scorer.train_matrix_ = X
    return Baseline(scorer, merged_reference, pooled, meta)
