"""MLGuard: find malicious web clients in HTTP access logs with unsupervised machine learning."""

import os

# Polars' allocator (jemalloc) is set by Polars to purge freed pages within a second (dirty
# 500 ms, muzzy 1 s), so every 64 MiB chunk of a log faults its memory in afresh: on 10M lines,
# ~2 s of kernel time. Lazily freed (muzzy) pages kept for 10 s are reused without a fault, and
# the kernel still takes them back when it is short of memory. Polars appends this to its own
# defaults when it loads (the last setting wins); a user's own setting wins over ours.
os.environ.setdefault("_RJEM_MALLOC_CONF", "muzzy_decay_ms:10000")

__version__ = "0.1.0"
