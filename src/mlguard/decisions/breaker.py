"""The circuit breaker: a flood of new blocks switches the detector to alert-only.

Real attacks rarely bring many new blocking-grade clients in one minute; poisoned input (a
proxy whose address stopped being resolved, a log format change, forged X-Forwarded-For) or a
broken model does. So when more than `max_blocks_per_minute` new blocks would be made within
a minute, the breaker opens: from then on, every would-be block is held back as an alert
(still reported, never enforced) until a whole `cooldown` has passed without one. The blocks
made before it opened stand. The caller says so loudly; a person decides.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

DEFAULT_MAX_BLOCKS_PER_MINUTE = 10
DEFAULT_COOLDOWN = timedelta(minutes=15)
MINUTE = timedelta(minutes=1)


class CircuitBreaker:
    def __init__(
        self,
        max_blocks_per_minute: int = DEFAULT_MAX_BLOCKS_PER_MINUTE,
        cooldown: timedelta = DEFAULT_COOLDOWN,
    ) -> None:
        self.max_blocks_per_minute = max_blocks_per_minute
        self.cooldown = cooldown
        self._admitted: deque[datetime] = deque()
        self.opened: datetime | None = None  # when it opened; None while closed
        self._last_held: datetime | None = None
        self.held_total = 0
        self.trips = 0

    @property
    def is_open(self) -> bool:
        return self.opened is not None

    def _tick(self, now: datetime) -> bool:
        """Close after a quiet cooldown; True when it closed now."""
        while self._admitted and now - self._admitted[0] >= MINUTE:
            self._admitted.popleft()
        if self.opened is not None and self._last_held is not None and now - self._last_held >= self.cooldown:
            self.opened = self._last_held = None
            return True
        return False

    def admit(self, clients: list[str], now: datetime) -> tuple[list[str], list[str], bool]:
        """Which of these new blocks may be made now and which are held back as alerts, and
        whether the breaker closed again now (after its cooldown)."""
        closed_now = self._tick(now)
        admitted: list[str] = []
        held: list[str] = []
        for client in clients:
            if self.opened is None and len(self._admitted) + 1 > self.max_blocks_per_minute:
                self.opened = now
                self.trips += 1
            if self.opened is not None:
                held.append(client)
                self._last_held = now
                continue
            self._admitted.append(now)
            admitted.append(client)
        self.held_total += len(held)
        return admitted, held, closed_now
