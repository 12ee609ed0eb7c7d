"""Where lines come from: finite sources that yield line-aligned byte chunks.

A source never decodes or splits lines itself beyond finding the last newline of a block, so
the formats can parse whole chunks with vectorised expressions.
"""

from mlguard.sources.files import Chunk, expand_paths, read_chunks

__all__ = ["Chunk", "expand_paths", "read_chunks"]
