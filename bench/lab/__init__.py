"""Attack lab: real nginx + a small app, attacked by real tools, producing labelled access logs.

Entry point: ``python -m bench lab --scenario NAME --seed N --out DIR`` (see ``bench/lab/README.md``).
"""
