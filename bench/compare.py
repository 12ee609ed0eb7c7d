"""MLGuard against its peers on every labelled log: `python -m bench compare`.

For every labelled set -- each lab scenario found under `--lab-dir` (bench/lab writes them) and
each scenario of bench/datasets for `--seeds` -- runs, on the same `access.log`:

* MLGuard: `mlguard eval --json` (alert and block) and `mlguard detect --json` (the scores);
* CrowdSec (replay of the log through the nginx parsers and HTTP scenarios) and fail2ban (stock
  filters turned into bans with the jail defaults), both from bench/peers.

Every system is scored on the same clients: those of the log that the labels name. A peer's ban
counts as both an alert and a block (that is what a ban is). Writes bench/results/compare.{md,json}
and two plots (score distributions; recall per actor per system) to bench/results/.

Peer runs are slow (CrowdSec replays ~190 lines/s), so their flagged sets are cached in
bench/.cache/peers/ keyed by the log's size, modification time and the peer's version;
`--no-cache` re-runs them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results"
DATASET_SCENARIOS = ("scanners", "spam-bots", "honeynet", "mixed", "almhuette")
PEERS = ("crowdsec", "fail2ban")
SYSTEMS = ("MLGuard alert", "MLGuard block", "CrowdSec", "fail2ban")


@dataclass(frozen=True)
class LabelledSet:
    name: str  # e.g. "lab/noisy (seed 1)" or "datasets/scanners (seed 2)"
    log: Path
    labels: Path
    held_out: bool


def _mlguard(args: list[str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "mlguard", *args, "--no-progress"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return proc.stdout


def mlguard_scores(log: Path) -> pl.DataFrame:
    """Every client's score and verdict from `mlguard detect --json`."""
    rows = [json.loads(line) for line in _mlguard(["detect", str(log), "--json"]).splitlines() if line]
    return pl.DataFrame(
        [
            {"ip": r["ip"], "score": r["score"], "verdict": r["verdict"], "requests": r["requests"]}
            for r in rows
        ],
        schema={"ip": pl.String, "score": pl.Float64, "verdict": pl.String, "requests": pl.Int64},
    )


def _cache_key(system: str, version: str | None, log: Path) -> Path:
    st = log.stat()
    raw = f"{system}|{version}|{log.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return CACHE / "peers" / f"{system}-{hashlib.sha256(raw.encode()).hexdigest()[:16]}.json"


def peer_run(system: str, log: Path, *, use_cache: bool) -> dict[str, Any]:
    """Flagged clients and cost of one peer on one log (cached: CrowdSec takes minutes)."""
    from bench import peers

    version = peers.available().get(system)
    if version is None:
        return {"system": system, "available": False}
    key = _cache_key(system, version, log)
    if use_cache and key.exists():
        return json.loads(key.read_text())
    work = CACHE / "peers" / "work" / system
    work.mkdir(parents=True, exist_ok=True)
    run = peers.run_crowdsec(log, work) if system == "crowdsec" else peers.run_fail2ban(log, work)
    result = {
        "system": system,
        "available": True,
        "version": version,
        "flagged": sorted(run.flagged),
        "lines": run.lines,
        "seconds": run.seconds,
        "peak_rss_mib": run.peak_rss_mib,
        "details": run.details,
    }
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text(json.dumps(result, indent=1, default=str))
    return result


def score_flagged(clients: pl.DataFrame, labels: pl.DataFrame, flagged: set[str]) -> dict[str, Any]:
    """Precision/recall/F1 of a set of flagged IPs over the labelled clients of the log.

    Reuses mlguard.evaluation so that every system is counted by exactly the same code.
    """
    from mlguard.evaluation import evaluate

    findings = clients.select(
        pl.col("ip").alias("client"),
        pl.col("ip").is_in(sorted(flagged)).cast(pl.Float64).alias("score"),
        pl.when(pl.col("ip").is_in(sorted(flagged)))
        .then(pl.lit("block"))
        .otherwise(pl.lit("pass"))
        .alias("verdict"),
        pl.lit(0).alias("requests"),
        pl.lit([], dtype=pl.List(pl.String)).alias("reasons"),
    )
    result = evaluate(findings, labels)
    return {"counts": result.block, "per_actor": result.per_actor, "actor_clients": result.actor_clients}


def evaluate_set(item: LabelledSet, *, peers: tuple[str, ...], use_cache: bool) -> dict[str, Any]:
    from mlguard.evaluation import load_labels

    labels = load_labels(item.labels)
    started = time.perf_counter()
    report = json.loads(_mlguard(["eval", str(item.log), "--labels", str(item.labels), "--json"]))
    seconds = time.perf_counter() - started
    scores = mlguard_scores(item.log)
    joined = scores.join(labels, on="ip", how="inner")
    out: dict[str, Any] = {
        "log": str(item.log),
        "held_out": item.held_out,
        "labelled": report["labelled"],
        "malicious": report["malicious"],
        "unlabelled": report["unlabelled"],
        "actor_clients": report["actor_clients"],
        "systems": {
            "MLGuard alert": {
                "counts": report["alert"],
                "per_actor": report["per_actor"],
                "seconds": seconds,
            },
            "MLGuard block": {"counts": report["block"], "per_actor": _block_per_actor(joined)},
        },
        "roc_auc": report["roc_auc"],
        "pr_auc": report["pr_auc"],
        "scores": {
            "malicious": joined.filter(pl.col("label") == "malicious")["score"].to_list(),
            "benign": joined.filter(pl.col("label") == "benign")["score"].to_list(),
        },
        "requests": {
            "malicious": joined.filter(pl.col("label") == "malicious")["requests"].to_list(),
            "benign": joined.filter(pl.col("label") == "benign")["requests"].to_list(),
        },
    }
    for system in peers:
        run = peer_run(system, item.log, use_cache=use_cache)
        name = "CrowdSec" if system == "crowdsec" else "fail2ban"
        if not run.get("available"):
            out["systems"][name] = None
            continue
        scored = score_flagged(scores, labels, set(run["flagged"]))
        scored.update(
            seconds=run["seconds"],
            lines=run["lines"],
            peak_rss_mib=run["peak_rss_mib"],
            version=run["version"],
            not_in_labels=sorted(set(run["flagged"]) - set(labels["ip"].to_list())),
        )
        out["systems"][name] = scored
    return out


def _block_per_actor(joined: pl.DataFrame) -> dict[str, float]:
    per = (
        joined.filter(pl.col("label") == "malicious")
        .group_by("actor")
        .agg((pl.col("verdict") == "block").mean().alias("recall"))
        .sort("actor")
    )
    return dict(zip(per["actor"].to_list(), per["recall"].to_list(), strict=True))


def labelled_sets(lab_dir: Path, seeds: list[int], work: Path, lab_tuning_seed: int) -> list[LabelledSet]:
    from bench.detection import build_datasets

    sets: list[LabelledSet] = []
    if lab_dir.is_dir():
        # one folder per lab run, at any depth (`--scenario all` writes one per scenario)
        for run in sorted(p.parent for p in lab_dir.rglob("labels.csv")):
            meta_path = run / "run.json"
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            seed = int(meta.get("seed", lab_tuning_seed))
            scenario = meta.get("scenario", run.name)
            sets.append(
                LabelledSet(
                    f"lab/{scenario} (seed {seed})",
                    run / "access.log",
                    run / "labels.csv",
                    seed != lab_tuning_seed,
                )
            )
    for seed in seeds:
        target = work / f"seed{seed}"
        if not all((target / s / "labels.csv").exists() for s in DATASET_SCENARIOS):
            build_datasets(target, seed)
        for scenario in DATASET_SCENARIOS:
            if scenario == "almhuette" and seed != seeds[0]:
                continue  # the almhuette log is used as is: another seed does not change it
            sets.append(
                LabelledSet(
                    f"datasets/{scenario} (seed {seed})",
                    target / scenario / "access.log",
                    target / scenario / "labels.csv",
                    seed != 1,
                )
            )
    return sets


def _cell(system: dict[str, Any] | None, key: str) -> str:
    if system is None:
        return "—"
    return f"{system['counts'][key]:.2f}"


def render(results: dict[str, dict[str, Any]], command: str) -> str:
    lines = [
        f"Reproduce: `{command}`",
        "",
        "P / R / F1 per client over the labelled clients of each log; FP = benign clients flagged.",
        "",
        "| labelled set | clients (malicious) | "
        + " | ".join(f"{s} P / R / F1 (FP)" for s in SYSTEMS)
        + " | MLGuard ROC-AUC |",
        "|---|---:|" + "---:|" * len(SYSTEMS) + "---:|",
    ]
    for name, r in results.items():
        cells = []
        for system in SYSTEMS:
            s = r["systems"].get(system)
            cells.append(
                "—"
                if s is None
                else f"{_cell(s, 'precision')} / {_cell(s, 'recall')} / "
                f"**{_cell(s, 'f1')}** ({s['counts']['fp']})"
            )
        auc = "—" if r["roc_auc"] is None else f"{r['roc_auc']:.3f}"
        held = " *held out*" if r["held_out"] else ""
        lines.append(
            f"| {name}{held} | {r['labelled']:,} ({r['malicious']:,}) | " + " | ".join(cells) + f" | {auc} |"
        )
    lines += ["", "Recall per actor (malicious actors only):", ""]
    lines.append("| labelled set | actor | clients | " + " | ".join(SYSTEMS) + " |")
    lines.append("|---|---|---:|" + "---:|" * len(SYSTEMS))
    for name, r in results.items():
        for actor, n in sorted(r["actor_clients"].items()):
            cells = []
            for system in SYSTEMS:
                s = r["systems"].get(system)
                cells.append("—" if s is None else f"{s['per_actor'].get(actor, 0.0):.2f}")
            lines.append(f"| {name} | {actor} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + render_headroom(results)


ALERT_SWEEP = (0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2)
BLOCK_MINIMUMS = (1, 5, 20)


def headroom(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What any single threshold on MLGuard's score could reach, all sets of the run pooled.

    The recall targets of issue #3 are over all sets at once, so one threshold is swept over the
    pooled clients: at `alert`, how recall and the benign clients flagged move as the threshold
    falls; at `block`, the most recall a threshold reaches while no benign client scores at or
    above it, with a client's own requests held against a minimum (1: no minimum at all).
    """
    from mlguard.evaluation import block_ceiling

    pooled: dict[str, list[tuple[float, int]]] = {"malicious": [], "benign": []}
    for r in results.values():
        for label, rows in pooled.items():
            rows.extend(zip(r["scores"][label], r["requests"][label], strict=True))
    attackers, benign = pooled["malicious"], pooled["benign"]
    alert = [
        {
            "threshold": t,
            "tp": sum(score >= t for score, _ in attackers),
            "fp": sum(score >= t for score, _ in benign),
        }
        for t in ALERT_SWEEP
    ]
    block = [block_ceiling(attackers, benign, minimum) for minimum in BLOCK_MINIMUMS]
    return {"attackers": len(attackers), "benign": len(benign), "alert": alert, "block": block}


def render_headroom(results: dict[str, dict[str, Any]]) -> str:
    h = headroom(results)
    n = max(h["attackers"], 1)
    blocked = sum(r["systems"]["MLGuard block"]["counts"]["tp"] for r in results.values())
    lines = [
        f"Headroom: every labelled set of this run pooled ({len(results)} sets, {h['attackers']:,} "
        f"attackers, {h['benign']:,} benign clients), one threshold on MLGuard's score for all.",
        "",
        "| alert threshold | attackers alerted (recall) | benign alerted | precision |",
        "|---:|---:|---:|---:|",
    ]
    for row in h["alert"]:
        flagged = row["tp"] + row["fp"]
        precision = f"{row['tp'] / flagged:.2f}" if flagged else "—"
        lines.append(
            f"| {row['threshold']:.2f} | {row['tp']:,} ({row['tp'] / n:.3f}) | {row['fp']:,} | {precision} |"
        )
    lines += [
        "",
        "| block: at least this many requests of its own | highest benign score | attackers above it "
        "(recall) |",
        "|---:|---:|---:|",
    ]
    for row in h["block"]:
        highest = "—" if row["highest_benign"] is None else f"{row['highest_benign']:.4f}"
        lines.append(f"| {row['min_requests']} | {highest} | {row['tp']:,} ({row['tp'] / n:.3f}) |")
    lines += [
        "",
        f"MLGuard's block verdicts in this run: {blocked:,} attackers ({blocked / n:.3f}), "
        "campaign members counted on their campaign's requests.",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict[str, Any]], out: Path, alert: float, block: float) -> list[Path]:
    """Score histograms (benign vs malicious) and recall per actor per system, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    names = [n for n, r in results.items() if not r["held_out"]] or list(results)
    cols = 3
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    bins = [i / 40 for i in range(41)]
    for ax, name in zip(axes.flat, names, strict=False):
        s = results[name]["scores"]
        for label, color in (("benign", "tab:blue"), ("malicious", "tab:red")):
            values = s[label]
            ax.hist(values, bins=bins, alpha=0.6, label=f"{label} ({len(values)})", color=color, log=True)
        ax.axvline(alert, color="orange", linestyle="--", linewidth=1, label=f"alert {alert}")
        ax.axvline(block, color="black", linestyle="--", linewidth=1, label=f"block {block}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("MLGuard score")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    path = out / "compare-scores.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    written.append(path)

    bars = [
        (
            f"{name}: {actor}",
            [(r["systems"].get(s) or {}).get("per_actor", {}).get(actor, 0.0) for s in SYSTEMS],
        )
        for name, r in results.items()
        if not r["held_out"]
        for actor in sorted(r["actor_clients"])
        # every lab tool; of the datasets only actors with 5+ clients (mixed holds dozens of
        # one-client CrowdSec test actors that would drown the plot; the table has them all)
        if name.startswith("lab/") or r["actor_clients"][actor] >= 5
    ]
    if bars:
        fig, ax = plt.subplots(figsize=(10, max(3.0, 0.28 * len(bars) * len(SYSTEMS) / 2)))
        height = 0.8 / len(SYSTEMS)
        for i, system in enumerate(SYSTEMS):
            ax.barh(
                [j + i * height for j in range(len(bars))],
                [b[1][i] for b in bars],
                height=height,
                label=system,
            )
        ax.set_yticks([j + 0.4 - height / 2 for j in range(len(bars))])
        ax.set_yticklabels([b[0] for b in bars], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("recall (share of the actor's clients flagged)")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = out / "compare-recall-per-actor.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench compare", description=__doc__)
    parser.add_argument(
        "--lab-dir", default=str(CACHE / "lab"), help="folder of lab runs (one subfolder each)"
    )
    parser.add_argument("--lab-tuning-seed", type=int, default=1)
    parser.add_argument("--seeds", default="1", help="bench/datasets seeds (comma-separated)")
    parser.add_argument("--work", default=str(CACHE / "datasets"))
    parser.add_argument("--peers", default=",".join(PEERS), help="peers to run ('' for none)")
    parser.add_argument("--no-cache", action="store_true", help="re-run the peers even if cached")
    parser.add_argument("--only", default="", help="only sets whose name contains this")
    parser.add_argument("--out-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    from mlguard.decisions.policy import DEFAULT_ALERT_THRESHOLD, DEFAULT_BLOCK_THRESHOLD

    peers = tuple(p for p in args.peers.split(",") if p)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    sets = [
        s
        for s in labelled_sets(Path(args.lab_dir), seeds, Path(args.work), args.lab_tuning_seed)
        if args.only in s.name
    ]
    results: dict[str, dict[str, Any]] = {}
    for item in sets:
        started = time.perf_counter()
        results[item.name] = evaluate_set(item, peers=peers, use_cache=not args.no_cache)
        f1 = {k: (v["counts"]["f1"] if v else None) for k, v in results[item.name]["systems"].items()}
        print(
            f"[compare] {item.name}: F1 {f1} ({time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m bench compare" + (" " + " ".join(argv) if argv else "")
    (out / "compare.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    (out / "compare.md").write_text(render(results, command))
    for path in plot(results, out, DEFAULT_ALERT_THRESHOLD, DEFAULT_BLOCK_THRESHOLD):
        print(f"wrote {path}", file=sys.stderr)
    print(render(results, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
