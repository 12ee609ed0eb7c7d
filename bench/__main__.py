"""Dispatcher: ``python -m bench <command> [args...]``.

Each command is ``name -> "module:function"``; the function takes the remaining argv list and
returns an exit code.  Modules are imported lazily so that one command's dependencies do not
slow down or break another.  To add a command, add an entry to ``COMMANDS``.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    # name: ("module:function", one-line help)
    "all": ("bench.all:main", "run every benchmark below and refresh the tables in BENCHMARKS.md"),
    "throughput": (
        "bench.throughput:main",
        "wall time / peak RSS of mlguard detect vs Polars and a Python loop",
    ),
    "make-log": ("bench.make_big_log:main", "generate a big synthetic Apache combined log"),
    "detection": ("bench.detection:main", "precision/recall/ROC-AUC on every labelled dataset"),
    "compare": (
        "bench.compare:main",
        "MLGuard vs CrowdSec and fail2ban: precision/recall/F1 on every labelled log, plots",
    ),
    "speed": (
        "bench.speed:main",
        "wall time, lines/s and peak RSS of MLGuard, fail2ban and CrowdSec on one big log",
    ),
    "memory": ("bench.memory:main", "peak RSS on a log and on the same log repeated (same clients)"),
    "campaigns": (
        "bench.campaigns:main",
        "recall of distributed attackers' members, innocent clients pulled in, cost at 10M lines",
    ),
    "watch": (
        "bench.watch:main",
        "mlguard watch: time to decision vs CrowdSec live, CPU at 1,000 lines/s, memory over hours",
    ),
    "lambda-memory": (
        "bench.lambda_memory:main",
        "peak RSS of the Lambda handler scoring a 100 MB gzip ALB object (target: 1,024 MB)",
    ),
    "spark": ("bench.spark:main", "feature table on Polars and on Spark local[2], same log: times, parity"),
    "lab": ("bench.lab.run:main", "run the attack lab and write access.log + labels.csv"),
    "peers": ("bench.peers.cli:main", "flag the clients of a log with CrowdSec and fail2ban"),
    "web": ("bench.web:main", "mlguard serve: overview time over a store of 100,000 decisions (< 300 ms)"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: python -m bench <command> [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    mod_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(mod_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
