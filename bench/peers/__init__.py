"""Peer tools on the same access logs: CrowdSec and fail2ban (``python -m bench peers LOG``).

    from bench.peers import run_crowdsec, run_fail2ban, available
    run = run_crowdsec(Path("access.log"), Path("/tmp/peers-work"))
    run.flagged, run.seconds, run.lines_per_s, run.peak_rss_mib, run.details

Install the tools first with ``bench/peers/install.sh`` (root; Debian packages, offline).
"""

from __future__ import annotations

from bench.peers import crowdsec as _crowdsec
from bench.peers import fail2ban as _fail2ban
from bench.peers.common import PeerRun, read_labels, score
from bench.peers.crowdsec import run_crowdsec
from bench.peers.fail2ban import run_fail2ban

__all__ = ["PeerRun", "available", "read_labels", "run_crowdsec", "run_fail2ban", "score"]


def available() -> dict[str, str | None]:
    """Installed version of each peer tool, or None when it is not installed."""
    return {"crowdsec": _crowdsec.version(), "fail2ban": _fail2ban.version()}
