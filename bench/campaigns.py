"""Campaigns: recall of the members of distributed attacks, innocent clients pulled in, and cost.

    python -m bench campaigns [--seeds 1,2,3] [--lab bench/.cache/lab] [--lines 10000000] [--repeat 3]

For every labelled log (every lab run under --lab, and the dataset scenarios of each seed):
- per-member alert recall of the *distributed* actors (each address sends little: the lab's
  credential stuffing and rotating-address tools, the basjes spam bots, the elastic WordPress
  probers), by MLGuard with campaigns, by MLGuard without (`--no-campaigns`, the per-client score
  alone), and by CrowdSec and fail2ban on the same log (cached peer runs, see bench/compare.py);
- benign clients pulled into a campaign that scores at or above the alert threshold, and benign
  clients flagged only because of a campaign, as a share of all benign clients.
Then the end-to-end wall time of `mlguard detect` on a big synthetic log with and without
campaigns, alternated `--repeat` times: medians and their ratio. Writes bench/results/campaigns.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

from bench.compare import CACHE, PEERS, RESULTS, ROOT, LabelledSet, labelled_sets, peer_run

DISTRIBUTED = (
    "hydra-stuffing",
    "stuffing-rotating",
    "dirprobe-rotating",
    "scraper-rotating",
    "spam-bot",
    "wp-prober",
)
ALERT = 0.5
COLUMNS = ("MLGuard", "per-client only", "in a campaign", "crowdsec", "fail2ban")


def _detect(log: Path, *extra: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "mlguard", "detect", str(log), "--json", "--no-progress", *extra],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return [json.loads(line) for line in proc.stdout.splitlines() if line]


def _recall(members: set[str], flagged: set[str]) -> float | None:
    return len(members & flagged) / len(members) if members else None


def evaluate(item: LabelledSet, use_cache: bool) -> dict[str, Any] | None:
    labels = pl.read_csv(item.labels, schema_overrides={"ip": pl.String})
    actors = labels.filter(pl.col("actor").is_in(DISTRIBUTED))
    if actors.height == 0:
        return None
    benign = set(labels.filter(pl.col("label") == "benign")["ip"])
    with_campaigns = _detect(item.log)
    alone = _detect(item.log, "--no-campaigns")
    flagged = {r["ip"] for r in with_campaigns if r["verdict"] in ("alert", "block")}
    flagged_alone = {r["ip"] for r in alone if r["verdict"] in ("alert", "block")}
    in_campaign = {r["ip"] for r in with_campaigns if (r["campaign_score"] or 0.0) >= ALERT}
    carried = {r["ip"] for r in with_campaigns if (r["campaign_score"] or 0.0) > r["client_score"]}
    by_campaign = flagged & carried
    out: dict[str, Any] = {"name": item.name, "benign": len(benign), "actors": {}}
    for actor in sorted(set(actors["actor"])):
        members = set(actors.filter(pl.col("actor") == actor)["ip"])
        row = {
            "members": len(members),
            "MLGuard": _recall(members, flagged),
            "per-client only": _recall(members, flagged_alone),
            "in a campaign": _recall(members, in_campaign),
        }
        for peer in PEERS:
            run = peer_run(peer, item.log, use_cache=use_cache)
            row[peer] = _recall(members, set(run["flagged"])) if run.get("available") else None
        out["actors"][actor] = row
    out["benign_in_campaigns"] = len(benign & in_campaign)
    out["benign_flagged_by_campaign"] = len(benign & by_campaign)
    return out


def timing(lines: int, repeat: int) -> dict[str, Any]:
    from bench.throughput import ensure_log

    log, _ = ensure_log(lines, 42, skip_generate=False, force=False)
    runs: dict[str, list[float]] = {"with campaigns": [], "--no-campaigns": []}
    for _ in range(repeat):
        for name, extra in (("--no-campaigns", ["--no-campaigns"]), ("with campaigns", [])):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "mlguard", "detect", str(log), "--json", "--no-progress", *extra],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
                cwd=ROOT,
            )
            runs[name].append(time.perf_counter() - started)
    medians = {k: statistics.median(v) for k, v in runs.items()}
    return {"log": str(log.relative_to(ROOT)), "lines": lines, "runs": runs, "medians": medians}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render(results: list[dict[str, Any]], cost: dict[str, Any] | None, command: str) -> str:
    machine = platform.processor() or platform.machine()
    out = ["# Campaigns", "", f"`{command}` on {platform.node()} ({machine}).", ""]
    out += [
        "Per-member alert recall of distributed attackers (each address sends little), and benign clients "
        "pulled into a campaign that scores >= 0.5 / flagged only because of one.",
        "",
        "| log | actor | members | MLGuard | per-client only | in a campaign | CrowdSec | fail2ban |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        for actor, row in r["actors"].items():
            cells = [_pct(row[k]) for k in COLUMNS]
            out.append(f"| {r['name']} | {actor} | {row['members']} | " + " | ".join(cells) + " |")
    members = sum(row["members"] for r in results for row in r["actors"].values())
    caught = sum(row["members"] * (row["MLGuard"] or 0) for r in results for row in r["actors"].values())
    out += ["", f"All members: {caught:.0f} of {members} alerted ({caught / max(members, 1):.3f}).", ""]
    out += [
        "| log | benign clients | benign in a scoring campaign | share | benign flagged by a campaign |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        share = r["benign_in_campaigns"] / max(r["benign"], 1)
        out.append(
            f"| {r['name']} | {r['benign']} | {r['benign_in_campaigns']} | {100 * share:.2f}% | "
            f"{r['benign_flagged_by_campaign']} |"
        )
    benign = sum(r["benign"] for r in results)
    pulled = sum(r["benign_in_campaigns"] for r in results)
    share = 100 * pulled / max(benign, 1)
    out += ["", f"All logs: {pulled} of {benign} benign clients in a scoring campaign ({share:.2f}%).", ""]
    if cost is not None:
        m = cost["medians"]
        ratio = m["with campaigns"] / m["--no-campaigns"]
        out += [
            f"End-to-end `mlguard detect --json` on `{cost['log']}` ({cost['lines']:,} lines), "
            f"{len(cost['runs']['with campaigns'])} runs each, alternated:",
            "",
            "| | median s | runs (s) |",
            "| --- | ---: | --- |",
        ]
        for name, runs in cost["runs"].items():
            out.append(f"| {name} | {m[name]:.2f} | {', '.join(f'{x:.2f}' for x in runs)} |")
        added = f"{100 * (ratio - 1):+.1f}% (ratio {ratio:.3f}; target <= +30%)"
        out += ["", f"Campaign detection adds {added}.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench campaigns", description=__doc__)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--lab", type=Path, default=CACHE / "lab")
    parser.add_argument("--lines", type=int, default=10_000_000, help="log size for the timing (0: skip)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-cache", action="store_true", help="re-run the peers even if cached")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    sets = labelled_sets(args.lab, seeds, CACHE / "datasets", lab_tuning_seed=1)
    results = [r for item in sets if (r := evaluate(item, use_cache=not args.no_cache)) is not None]
    cost = timing(args.lines, args.repeat) if args.lines else None
    command = "python -m bench campaigns " + " ".join(argv or [])
    text = render(results, cost, command.strip())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "campaigns.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
