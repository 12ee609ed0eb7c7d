"""MLGuard: find malicious web clients in HTTP access logs with unsupervised machine learning."""

import os

# Polars' allocator (jemalloc) returns freed pages to the kernel as soon as they are purged, so
# every 64 MiB chunk of a log faults its memory in afresh: on 10M lines, ~2 s of kernel time.
# Lazily freed pages kept for 10 s instead are reused without a fault, and the kernel still
# takes them back when it is short of memory. Read when Polars loads; a user's setting wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "muzzy_decay_ms:10000")

__version__ = "0.1.0"
