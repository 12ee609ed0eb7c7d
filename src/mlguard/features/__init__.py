"""Features: parsed records -> one row per client (see catalogue.py for what and why)."""

from mlguard.features.aggregate import ClientAccumulator, FeatureTable
from mlguard.features.catalogue import FEATURE_NAMES, FEATURES

__all__ = ["FEATURES", "FEATURE_NAMES", "ClientAccumulator", "FeatureTable"]
