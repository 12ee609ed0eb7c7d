"""MLGuard benchmarks: ``python -m bench <command> [...]`` (see ``bench/__main__.py``)."""
