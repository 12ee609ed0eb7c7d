"""Enforcers: push the decision store's active decisions to what already acts on traffic.

Every back-end has one small interface (as the CrowdSec firewall bouncer's): `sync(decisions)`
makes the target reflect the given active decisions and says what it did; `pending(decisions)`
is what a sync would push (for --dry-run); `healthcheck()` says whether the target can be
reached; `close()`. `mlguard watch` gives a blocker (`blocks`) the active blocks, and a notifier
with a `target` (its name in the store's deliveries) only what that target has not had yet.
Back-ends register by name here, and their modules (and any SDK they need) are imported only
when chosen.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlguard.decisions.store import Decision
from mlguard.errors import UsageError

# name -> "module:class"
ENFORCERS: dict[str, str] = {
    "aws-waf": "mlguard.enforcers.aws_waf:AwsWafEnforcer",
    "crowdsec": "mlguard.enforcers.crowdsec:CrowdSecEnforcer",
    "nftables": "mlguard.enforcers.nftables:NftablesEnforcer",
    "nginx": "mlguard.enforcers.nginx:NginxEnforcer",
    "webhook": "mlguard.enforcers.webhook:WebhookEnforcer",
}


@dataclass
class SyncResult:
    sent: int = 0  # decisions pushed to the target this time
    unchanged: int = 0  # already there (or already delivered)
    failed: int = 0  # kept for the next sync
    messages: list[str] = field(default_factory=list)


class Enforcer(Protocol):
    name: str
    blocks: bool  # True: it enforces blocks (only with --enforce); False: it notifies people

    def pending(self, decisions: list[Decision]) -> list[Decision]: ...  # what sync would push

    def sync(self, decisions: list[Decision]) -> SyncResult: ...

    def healthcheck(self) -> str | None: ...  # None when healthy, else what is wrong

    def close(self) -> None: ...


def get_enforcer(name: str, **options: Any) -> Enforcer:
    if name not in ENFORCERS:
        raise UsageError(f"unknown enforcer '{name}'; expected one of: {', '.join(sorted(ENFORCERS))}")
    module, cls = ENFORCERS[name].split(":")
    enforcer: Enforcer = getattr(importlib.import_module(module), cls)(**options)
    return enforcer
