"""MLGuard: find malicious web clients in HTTP access logs with unsupervised machine learning."""

__version__ = "0.1.0"
