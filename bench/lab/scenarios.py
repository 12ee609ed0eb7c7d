"""Named scenarios: how fast log time runs, how long, which benign population, which attackers."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from bench.lab import attacks
from bench.lab.attacks import Ctx, Job
from bench.lab.benign import BROWSER_UAS, BenignConfig
from bench.lab.ips import IpAllocator


@dataclass
class Scenario:
    name: str
    description: str
    speed: float            # faketime multiplier: log seconds per real second
    minutes: float          # default real run length
    log_start: str          # nginx's fake clock at start (UTC)
    users: int
    benign_extra: dict[str, object] = field(default_factory=dict)
    tools: list[tuple[str, str, float, float]] = field(default_factory=list)  # tool, mode, start window
    stuffing_ips: int = 0
    # distributed campaigns: (attacks.CAMPAIGNS name, start window), one rotating-relay job each
    campaigns: list[tuple[str, float, float]] = field(default_factory=list)

    def benign(self, scale: float) -> BenignConfig:
        cfg = BenignConfig(users=max(5, round(self.users * scale)))
        for k, v in self.benign_extra.items():
            setattr(cfg, k, v)
        return cfg

    def plan(self, ctx: Ctx, ips: IpAllocator, log_seconds: float, scale: float) -> list[Job]:
        """Attack jobs in a fixed order from the seeded ``ctx.rng``: same seed, same jobs."""
        jobs: list[Job] = []
        for tool, mode, lo, hi in self.tools:
            start = ctx.rng.uniform(lo, hi) * log_seconds
            jobs.append(attacks.BUILDERS[tool](ctx, ips.v4(), mode, start))
        n = round(self.stuffing_ips * scale)
        if n:
            # A stuffing campaign rents addresses in bursts from a few proxy providers' subnets,
            # plus many scattered residential ones.
            blocks = [ip for _ in range(max(1, n // 20)) for ip in ips.v4_block(5)]
            addrs = (blocks + [ips.v4() for _ in range(max(0, n - len(blocks)))])[:n]
            lo = ctx.rng.uniform(0.05, 0.2)
            for ip in addrs:
                ua = ctx.rng.choice(BROWSER_UAS) if ctx.rng.random() < 0.6 else None
                jobs.append(attacks.hydra_stuffing(ctx, ip, ctx.rng.uniform(lo, 0.92) * log_seconds, ua))
        for name, lo, hi in self.campaigns:  # after the rest, so older scenarios plan as before
            start = ctx.rng.uniform(lo, hi) * log_seconds
            jobs.append(attacks.CAMPAIGNS[name](ctx, ips, start, scale))
        jobs.sort(key=lambda j: j.start)
        return jobs


_ALL_NOISY = [(t, "noisy", 0.05, 0.7) for t in
              ("sqlmap", "gobuster", "dirb", "wfuzz", "ffuf", "hydra", "whatweb", "wapiti", "nmap")]

SCENARIOS: dict[str, Scenario] = {
    s.name: s for s in (
        Scenario("noisy", "every scanner at full speed, one IP each, amid a normal working day",
                 speed=60, minutes=6, log_start="2026-11-20 08:00:00", users=180,
                 tools=_ALL_NOISY),
        Scenario("low-slow", "throttled tools, 2-6 requests per log minute, small totals each",
                 speed=60, minutes=10, log_start="2026-11-21 06:00:00", users=260,
                 tools=[(t, "slow", 0.0, 0.45) for t in
                        ("sqlmap", "gobuster", "dirb", "wfuzz", "ffuf", "hydra", "whatweb", "nmap")]),
        Scenario("stuffing", "credential stuffing: 120 IPs x 2-5 login POSTs with hydra -C",
                 speed=60, minutes=8, log_start="2026-11-22 09:00:00", users=220,
                 benign_extra={"login_share": 0.5}, stuffing_ips=120),
        Scenario("benign-heavy", "a full day: many crawlers, monitors and feed readers, few attackers",
                 speed=144, minutes=10, log_start="2026-11-23 00:00:00", users=450,
                 benign_extra={"nat_groups": 4, "monitors": 4, "feed_readers": 12,
                               "crawlers": {"googlebot": 4, "bingbot": 3, "yandexbot": 2, "duckduckbot": 1,
                                            "applebot": 2},
                               "crawl_rest": (7200.0, 14400.0)},
                 tools=[("whatweb", "noisy", 0.1, 0.9), ("gobuster", "noisy", 0.1, 0.9),
                        ("hydra", "slow", 0.1, 0.6)]),
        Scenario("distributed", "distributed attacks through a rotating relay: credential stuffing "
                 "(hydra, ~130 IPs x 2-4 tries), a gobuster probe split over ~110 IPs, a wget "
                 "scraper rotating its address every 3-6 requests",
                 speed=60, minutes=9, log_start="2026-11-24 08:00:00", users=200,
                 benign_extra={"login_share": 0.35},
                 campaigns=[("stuffing-rotating", 0.08, 0.3), ("dirprobe-rotating", 0.35, 0.55),
                            ("scraper-rotating", 0.05, 0.25), ("scraper-rotating", 0.45, 0.6),
                            ("scraper-rotating", 0.7, 0.8)]),
    )
}


def rng_for(seed: int, name: str) -> random.Random:
    return random.Random(f"lab-attacks/{seed}/{name}")
