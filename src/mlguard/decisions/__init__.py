"""Decisions: turning scores into verdicts under a policy (thresholds, allowlists, minimums)."""

from mlguard.decisions.policy import ALERT, BLOCK, PASS, Policy

__all__ = ["ALERT", "BLOCK", "PASS", "Policy"]
