"""An unsupervised ensemble over one-sided, robustly scaled features.

Contract (as in scikit-learn and PyOD): `__init__` only stores parameters, `fit(X)` returns
self, learned state ends in `_`, randomness comes only from `random_state`, and every score
means *higher = more anomalous* (scikit-learn's IsolationForest is the other way round and is
flipped once, here).

Why one-sided: each feature has a suspicious direction (catalogue). Values are centred on the
population median and scaled by a robust spread, then the harmless side is cut to zero, so a
client can only look unusual by being unusual in a suspicious way: a visitor with fewer errors
than anyone else is not an outlier here.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from mlguard.features.catalogue import CONTEXT_FEATURES, FEATURES, Feature

# The smallest spread a feature is given, so that a feature where nearly every client has the
# same value (most clients never get a 401) still measures distance in meaningful units.
_MIN_SCALE = {"count": 0.35, "ratio": 0.03, "rarity": 0.05, "value": 0.05}
_CAP = 25.0  # one feature cannot dominate the ensemble without bound
SCORE_HALF = 5.0  # ensemble z at which the 0..1 score reaches 0.5 (0.8 at 4x that)
EVIDENCE_FULL = 2.0  # robust spreads of deviation on an evidence feature for the full score
_PARALLEL_ROWS = 20_000  # below this, threads cost more than they save


def transform(features: tuple[Feature, ...], X: np.ndarray) -> np.ndarray:
    """Counts to log scale; ratios and rarities as they are."""
    out = np.array(X, dtype=np.float64, copy=True)
    for j, feature in enumerate(features):
        if feature.kind == "count":
            out[:, j] = np.log1p(np.clip(out[:, j], 0.0, None))
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _cache_numba(module: object) -> None:
    """Keep PyOD's numba-compiled kernels on disk: compiling them costs ~4 s on every run.

    Numba writes next to the module, or to NUMBA_CACHE_DIR; where neither is writable the
    kernel is compiled in memory as before.
    """
    kernel = getattr(module, "_calculate_outlier_scores", None)
    if kernel is None or getattr(kernel, "_mlguard_cached", False):
        return
    if "NUMBA_CACHE_DIR" not in os.environ and not os.access(os.path.dirname(module.__file__), os.W_OK):  # type: ignore[attr-defined]
        os.environ["NUMBA_CACHE_DIR"] = os.path.join(
            os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "mlguard", "numba"
        )
    try:
        kernel.enable_caching()
        kernel._mlguard_cached = True
    except Exception:  # caching is an optimisation; compiling in memory still works
        pass


def preload() -> threading.Thread:
    """Import scikit-learn and PyOD on a thread (about a second of start-up) while the caller
    reads logs: Polars releases the GIL while it parses, so the two overlap."""

    def load() -> None:
        from pyod.models import hbos as pyod_hbos
        from sklearn import ensemble  # noqa: F401

        _cache_numba(pyod_hbos)
        # The first fit loads HBOS's compiled kernel (~0.3 s): do it here, on a few rows of the
        # same dtype and layout as the real ones, rather than after the logs are read.
        warm = np.linspace(0.0, 1.0, 40, dtype=np.float64).reshape(20, 2)
        pyod_hbos.HBOS().fit(np.ascontiguousarray(warm))

    thread = threading.Thread(target=load, name="mlguard-preload", daemon=True)
    thread.start()
    return thread


@dataclass
class Scores:
    score: np.ndarray  # (n,) 0..1, higher = more malicious
    deviation: np.ndarray  # (n, d) one-sided robust z per feature (0 = not suspicious)
    contribution: np.ndarray  # (n, d) -log10 tail probability per feature, vs the baseline
    detectors: dict[str, np.ndarray]  # per-detector standardised scores


class ClientScorer:
    """IsolationForest (scikit-learn) + HBOS (PyOD) + total deviation, on one-sided z-scores.

    The three look at different things: IsolationForest at how easily a client is cut off from
    the rest (combinations of features), HBOS at how improbable each value is on its own, and
    the total deviation at how far out, in robust spreads, the client is on all suspicious
    sides together: the magnitude the other two, being rank- or bin-based, cap. On the
    labelled datasets (bench/datasets) this trio beat IsolationForest alone, ECOD, COPOD,
    KNN and LODA (see docs/detection.md).
    """

    def __init__(self, random_state: int = 0, n_estimators: int = 200) -> None:
        self.random_state = random_state
        self.n_estimators = n_estimators
        self.features: tuple[Feature, ...] = FEATURES

    def fit(self, X: np.ndarray) -> ClientScorer:
        from pyod.models import hbos as pyod_hbos
        from pyod.models.hbos import HBOS

        _cache_numba(pyod_hbos)
        from sklearn.ensemble import IsolationForest

        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.features) or X.shape[0] < 2:
            raise ValueError("need a matrix of at least 2 clients x every catalogue feature")
        T = transform(self.features, X)
        self.center_ = np.median(T, axis=0)
        q75, q25 = np.percentile(T, [75, 25], axis=0)
        floors = np.array([_MIN_SCALE[f.kind] for f in self.features])
        self.scale_ = np.maximum((q75 - q25) / 1.349, floors)
        self.direction_ = np.array([f.direction for f in self.features], dtype=np.float64)
        Z = self._deviation(T)
        self.train_deviation_ = np.sort(Z, axis=0)  # for tail probabilities of each feature
        self.iforest_ = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=min(256, X.shape[0]),
            random_state=self.random_state,
        ).fit(Z)
        self.hbos_ = HBOS().fit(Z)
        raw = self._raw_scores(Z, hbos=np.asarray(self.hbos_.decision_scores_, dtype=np.float64))
        # Standardise each detector by its own training distribution (median and MAD), so
        # their scales are comparable before averaging.
        self.score_center_ = {k: float(np.median(v)) for k, v in raw.items()}
        self.score_scale_ = {
            k: float(max(1.4826 * np.median(np.abs(v - self.score_center_[k])), 1e-6)) for k, v in raw.items()
        }
        self.n_train_ = X.shape[0]
        self._train_ = (Z, raw)  # so that fit_score does not score the same clients twice
        return self

    def fit_score(self, X: np.ndarray) -> Scores:
        """Fit on X and score the same clients (the default: the input judged against itself)."""
        self.fit(X)
        Z, raw = self._train_
        return self._scores(Z, raw)

    def _deviation(self, T: np.ndarray) -> np.ndarray:
        Z = (T - self.center_) / self.scale_ * self.direction_
        return np.clip(Z, 0.0, _CAP)

    def _iforest_scores(self, Z: np.ndarray) -> np.ndarray:
        """IsolationForest path lengths, rows split over the CPUs: the tree walk releases the GIL
        and each row's sum over trees runs in the same order, so the result is bit-identical."""
        workers = min(os.cpu_count() or 1, 4)
        if workers < 2 or Z.shape[0] < _PARALLEL_ROWS:
            return -self.iforest_.score_samples(Z)
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(self.iforest_.score_samples, np.array_split(Z, workers)))
        return -np.concatenate(parts)  # flipped: higher = more anomalous

    def _raw_scores(self, Z: np.ndarray, hbos: np.ndarray | None = None) -> dict[str, np.ndarray]:
        return {
            "iforest": self._iforest_scores(Z),
            "hbos": self.hbos_.decision_function(Z) if hbos is None else hbos,
            "deviation": Z.sum(axis=1),
        }

    def score(self, X: np.ndarray) -> Scores:
        Z = self.deviation(X)
        return self._scores(Z, self._raw_scores(Z))

    def deviation(self, X: np.ndarray) -> np.ndarray:
        """One-sided robust z per feature (0 = not on the suspicious side), capped."""
        return self._deviation(transform(self.features, np.asarray(X, dtype=np.float64)))

    def ensemble_score(self, Z: np.ndarray) -> np.ndarray:
        """0..1 score of deviation rows before any evidence gate (callers with their own notion
        of evidence, such as campaigns, gate it themselves)."""
        return self._ensemble(self._raw_scores(np.clip(Z, 0.0, _CAP)))[1]

    def _ensemble(self, raw: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        standard = {k: (v - self.score_center_[k]) / self.score_scale_[k] for k, v in raw.items()}
        z = np.clip(np.mean(np.vstack(list(standard.values())), axis=0), 0.0, None)
        return standard, z / (z + SCORE_HALF)

    def _scores(self, Z: np.ndarray, raw: dict[str, np.ndarray]) -> Scores:
        standard, score = self._ensemble(raw)
        # Context alone is no evidence: a client unusual only in how it behaves (a monitor with
        # no referer, tiny responses and clockwork timing) is scaled down to nothing; one
        # robust spread of deviation on any evidence feature lets the full score through.
        evidence = [j for j, f in enumerate(self.features) if f.name not in CONTEXT_FEATURES]
        gate = np.clip(Z[:, evidence].max(axis=1) / EVIDENCE_FULL, 0.0, 1.0)
        return Scores(score * gate, Z, self._contribution(Z), standard)

    def _contribution(self, Z: np.ndarray) -> np.ndarray:
        """-log10 of the share of baseline clients at least as far out on each feature."""
        n = self.train_deviation_.shape[0]
        out = np.zeros_like(Z)
        for j in range(Z.shape[1]):
            # Only the suspicious side counts, and most clients sit at 0 on most features.
            rows = np.flatnonzero(Z[:, j] > 0)
            at_least = n - np.searchsorted(self.train_deviation_[:, j], Z[rows, j], side="left")
            out[rows, j] = -np.log10((at_least + 1) / (n + 1))
        return out
