"""MLGuard: find malicious web clients in HTTP access logs with unsupervised machine learning."""

from mlguard import allocator

allocator.configure()  # before Polars and NumPy load

__version__ = "0.1.0"
