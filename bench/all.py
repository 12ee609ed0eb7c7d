"""Every benchmark, then BENCHMARKS.md refreshed: `python -m bench all`.

Runs the benchmarks in order (each writes bench/results/NAME.md) and copies each result into
BENCHMARKS.md between the markers `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, so the
tables there are always the ones the last run measured; the prose around them is written by
hand and says what the numbers mean. `--only` runs a subset; `--splice-only` just copies the
existing results.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BENCHMARKS = ROOT / "BENCHMARKS.md"

# name -> argv of `python -m bench NAME ...` (the settings BENCHMARKS.md quotes)
STEPS: dict[str, list[str]] = {
    "detection": ["--seeds", "1,2,3"],
    "compare": ["--seeds", "1"],
    "speed": ["--lines", "1000000", "--crowdsec-lines", "20000"],
    "throughput": ["--sizes", "1000000,10000000", "--repeat", "3", "--seed", "42"],
    "memory": ["--lines", "1000000", "--times", "10", "--repeat", "3"],
    "campaigns": ["--seeds", "1,2,3", "--lines", "10000000", "--repeat", "3"],
    "watch": [],
    "spark": ["--lines", "10000000", "--repeat", "3"],
}


def splice(document: str, name: str, body: str) -> str:
    """Replace what lies between the markers of `name` (which must both be present)."""
    pattern = re.compile(rf"(<!-- bench:{re.escape(name)} -->\n).*?(<!-- /bench:{re.escape(name)} -->)", re.S)
    if not pattern.search(document):
        raise SystemExit(f"BENCHMARKS.md has no <!-- bench:{name} --> ... <!-- /bench:{name} --> markers")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), document, count=1)


def main(argv: list[str] | None = None) -> int:
    from bench.__main__ import main as bench_main

    parser = argparse.ArgumentParser(prog="python -m bench all", description=__doc__)
    parser.add_argument("--only", default=",".join(STEPS), help="comma-separated benchmarks to run")
    parser.add_argument("--splice-only", action="store_true", help="do not run; copy results in")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(STEPS))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    if not args.splice_only:
        for name in names:
            print(f"[bench all] python -m bench {name} {' '.join(STEPS[name])}", file=sys.stderr, flush=True)
            rc = bench_main([name, *STEPS[name]])
            if rc:
                return rc
    document = BENCHMARKS.read_text()
    for name in STEPS:
        result = RESULTS / f"{name}.md"
        if f"<!-- bench:{name} -->" in document and result.exists():
            lines = result.read_text().splitlines()
            if lines and lines[0].startswith("# "):  # the result file's own title
                lines = lines[1:]
            document = splice(document, name, "\n".join(lines).strip("\n"))
    BENCHMARKS.write_text(document)
    print(f"updated {BENCHMARKS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
