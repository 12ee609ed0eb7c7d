"""``python -m bench peers LOG [--system crowdsec|fail2ban|all] [--json] [--labels labels.csv]``.

Flags the clients of an access log with CrowdSec and/or fail2ban and prints the flagged IPs and
the timing; with ``--labels`` (a bench/datasets ``labels.csv``) also precision and recall.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench.peers import available
from bench.peers.common import PeerRun, read_labels, score
from bench.peers.crowdsec import run_crowdsec
from bench.peers.fail2ban import run_fail2ban


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench peers", description=__doc__.split("\n")[0])
    ap.add_argument("log", type=Path, help="access log (Apache/nginx combined format)")
    ap.add_argument("--system", choices=("crowdsec", "fail2ban", "all"), default="all")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    ap.add_argument("--labels", type=Path, help="labels.csv (ip,label,...) to score the flagged sets")
    ap.add_argument("--work", type=Path, help="work directory (default: a new temporary one)")
    ap.add_argument("--timeout", type=float, default=1800, help="CrowdSec replay timeout, seconds")
    ap.add_argument(
        "--no-whitelist",
        action="store_true",
        help="drop CrowdSec's private-IP whitelist (for test logs whose clients are 127.0.0.1/192.168.x)",
    )
    a = ap.parse_args(argv)
    if not a.log.is_file():
        print(f"no such log: {a.log}", file=sys.stderr)
        return 2
    versions = available()
    systems = ["crowdsec", "fail2ban"] if a.system == "all" else [a.system]
    missing = [s for s in systems if versions[s] is None]
    if missing:
        print(f"not installed: {', '.join(missing)} (run bench/peers/install.sh as root)", file=sys.stderr)
        return 2
    work = a.work or Path(tempfile.mkdtemp(prefix="mlguard-peers-"))
    labels = read_labels(a.labels) if a.labels else None

    runs: list[PeerRun] = []
    for system in systems:
        if system == "crowdsec":
            runs.append(run_crowdsec(a.log, work, a.timeout, whitelist=not a.no_whitelist))
        else:
            runs.append(run_fail2ban(a.log, work / "fail2ban", timeout=a.timeout))

    if a.json:
        doc = {"log": str(a.log), "versions": versions, "runs": []}
        for r in runs:
            d = r.to_json()
            if labels is not None:
                d["score"] = score(r.flagged, labels)
            doc["runs"].append(d)
        print(json.dumps(doc, indent=2))
        return 0
    for r in runs:
        print(
            f"== {r.system} {versions[r.system]}: {len(r.flagged)} IPs flagged; {r.lines:,} lines in "
            f"{r.seconds:.2f} s ({r.lines_per_s:,.0f} lines/s), peak RSS {r.peak_rss_mib:.0f} MiB"
        )
        if labels is not None:
            s = score(r.flagged, labels)
            print(
                f"   precision {s['precision']:.3f}  recall {s['recall']:.3f}  "
                f"(tp {s['tp']}, fp {s['fp']}, fn {s['fn']}, unlabelled {s['flagged_unlabelled']})"
            )
        if r.system == "crowdsec":
            for name, n in r.details["ips_per_scenario"].items():
                print(f"   {name}: {n} IPs")
        else:
            for name, f in r.details["filters"].items():
                print(f"   {name}: {f['matched_lines']} lines matched, {f['ips_banned']} IPs banned")
        for ip in r.to_json()["flagged"]:
            print(ip)
    return 0


if __name__ == "__main__":
    sys.exit(main())
