"""Detectors: a per-client feature matrix in, a 0..1 score out (higher = more malicious)."""

from mlguard.detectors.ensemble import ClientScorer, Scores

__all__ = ["ClientScorer", "Scores"]
