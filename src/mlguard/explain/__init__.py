"""Explanations: which features drove a client's score, said with the client's own numbers."""

from mlguard.explain.reasons import reasons_for, safe_text

__all__ = ["reasons_for", "safe_text"]
