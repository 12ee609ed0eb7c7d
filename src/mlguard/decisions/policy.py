"""Verdicts from scores: `block` needs far stronger evidence than `alert`.

A false alert costs a person a look; a false block cuts off a user. So a block needs a higher
score, a minimum number of requests, an address outside every allowlisted range, and (unless
asked) an address that is not private or loopback, where one address is often many people.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import polars as pl

from mlguard.errors import UsageError

BLOCK, ALERT, PASS = "block", "alert", "pass"

DEFAULT_ALERT_THRESHOLD = 0.5
DEFAULT_BLOCK_THRESHOLD = 0.76
DEFAULT_MIN_BLOCK_REQUESTS = 20

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: list[str]) -> list[Network]:
    out: list[Network] = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise UsageError(f"'{value}' is not an IP address or CIDR range") from None
    return out


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass
class Policy:
    alert_threshold: float = DEFAULT_ALERT_THRESHOLD
    block_threshold: float = DEFAULT_BLOCK_THRESHOLD
    min_block_requests: int = DEFAULT_MIN_BLOCK_REQUESTS
    allow: list[Network] = field(default_factory=list)
    block_private: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.alert_threshold <= 1.0 or not 0.0 <= self.block_threshold <= 1.0:
            raise UsageError("thresholds must be between 0 and 1")
        if self.block_threshold <= self.alert_threshold:
            raise UsageError(
                f"the block threshold ({self.block_threshold}) must be higher than the alert "
                f"threshold ({self.alert_threshold})"
            )

    def protection(self, client: str) -> str | None:
        """Why this client may never be blocked, or None."""
        address = _address(client)
        if address is None:
            return "not an IP address"
        if any(address.version == net.version and address in net for net in self.allow):
            return "allowlisted"
        if not self.block_private and (address.is_private or address.is_loopback or address.is_link_local):
            return "private or loopback address"
        return None

    def verdicts(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Add `verdict` and `protected` to a frame with `client`, `score`, `requests`.

        `protected` is filled for clients at or above the alert threshold (null for the rest).
        """
        # Only a client that could be alerted on needs its address examined (IP parsing in
        # Python is the slow part with 100,000s of clients); the rest pass either way.
        clients = frame.filter(pl.col("score") >= self.alert_threshold)["client"].unique().to_list()
        protected = pl.DataFrame(
            {"client": clients, "protected": [self.protection(c) for c in clients]},
            schema={"client": pl.String, "protected": pl.String},
        )
        frame = frame.join(protected, on="client", how="left")
        allowed = pl.col("protected") == "allowlisted"
        verdict = (
            pl.when(allowed.fill_null(False))
            .then(pl.lit(PASS))
            .when(
                (pl.col("score") >= self.block_threshold)
                & (pl.col("requests") >= self.min_block_requests)
                & pl.col("protected").is_null()
            )
            .then(pl.lit(BLOCK))
            .when(pl.col("score") >= self.alert_threshold)
            .then(pl.lit(ALERT))
            .otherwise(pl.lit(PASS))
        )
        return frame.with_columns(verdict.alias("verdict"))
