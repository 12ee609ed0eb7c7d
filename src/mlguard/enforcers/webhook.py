"""`webhook`: POST new decisions to a URL, as generic JSON or as a Slack message.

The original MLGuard alerted its security team on Slack. Each decision is delivered once per
target (the store remembers deliveries), in one batch per sync; a failed delivery (connection
error, timeout, 429 or 5xx) is retried with exponential backoff, and when it still fails the
decisions stay undelivered for the next sync, so nothing is lost. 4xx other than 429 is a
configuration error and is not retried.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from mlguard.decisions.store import Decision, DecisionStore
from mlguard.enforcers import SyncResult
from mlguard.errors import EnforcerError, UsageError
from mlguard.explain.reasons import safe_text

STYLES = ("json", "slack")
MAX_SLACK_DECISIONS = 20  # one message stays readable; the rest are counted


def _slack_escape(text: str) -> str:
    """Slack's mrkdwn reads <...> as links and mentions: escape &, < and > as Slack documents."""
    return safe_text(text, 300).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(decisions: list[Decision]) -> dict[str, object]:
    blocks = sum(d.verdict == "block" for d in decisions)
    head = f"MLGuard: {len(decisions)} new decision(s), {blocks} block(s)"
    lines = []
    for d in decisions[:MAX_SLACK_DECISIONS]:
        score = "" if d.score is None else f" (score {d.score:.2f})"
        why = "; ".join(d.reasons[:2]) or (d.note or "")
        lines.append(f"*{d.verdict}* `{_slack_escape(d.client)}`{score}: {_slack_escape(why)}")
    if len(decisions) > MAX_SLACK_DECISIONS:
        lines.append(f"... and {len(decisions) - MAX_SLACK_DECISIONS} more")
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}
    return {"text": head, "blocks": [section]}


class WebhookEnforcer:
    name = "webhook"
    blocks = False

    def __init__(
        self,
        url: str,
        store: DecisionStore,
        style: str = "json",
        attempts: int = 4,
        backoff_secs: float = 0.5,
        timeout_secs: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise UsageError(f"--webhook '{safe_text(url, 80)}' is not an http(s) URL")
        if style not in STYLES:
            expected = ", ".join(STYLES)
            raise UsageError(f"unknown webhook style '{safe_text(style, 20)}'; expected one of: {expected}")
        self.url, self.store, self.style = url, store, style
        self.attempts, self.backoff_secs, self.timeout_secs = attempts, backoff_secs, timeout_secs
        self._sleep = sleep
        self.target = f"webhook:{url}"

    def _payload(self, decisions: list[Decision]) -> bytes:
        if self.style == "slack":
            body: object = slack_message(decisions)
        else:
            body = {"source": "mlguard", "decisions": [d.as_json() for d in decisions]}
        return json.dumps(body).encode()

    def _post(self, payload: bytes) -> None:
        request = urllib.request.Request(
            self.url, data=payload, method="POST", headers={"Content-Type": "application/json"}
        )
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                self._sleep(self.backoff_secs * 2 ** (attempt - 1))
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_secs) as response:
                    response.read()
                return
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code}"
                if exc.code != 429 and exc.code < 500:
                    break  # the URL or payload is wrong: retrying will not help
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                problem = safe_text(getattr(exc, "reason", exc), 120)
        tries = f"{attempt + 1} attempt(s)"
        raise EnforcerError(f"webhook {safe_text(self.url, 80)} failed after {tries}: {problem}")

    def pending(self, decisions: list[Decision]) -> list[Decision]:
        """The alerts and blocks this target has not had yet."""
        return self.store.undelivered(self.target, [d for d in decisions if d.verdict in ("alert", "block")])

    def sync(self, decisions: list[Decision]) -> SyncResult:
        """Deliver the alerts and blocks this target has not had yet."""
        wanted = [d for d in decisions if d.verdict in ("alert", "block")]
        new = self.pending(wanted)
        result = SyncResult(unchanged=len(wanted) - len(new))
        if not new:
            return result
        try:
            self._post(self._payload(new))
        except EnforcerError as exc:
            result.failed = len(new)
            result.messages.append(str(exc))
            return result
        self.store.mark_delivered(self.target, [d.id for d in new], datetime.now(UTC))
        result.sent = len(new)
        return result

    def healthcheck(self) -> str | None:
        parts = urlsplit(self.url)
        return None if parts.hostname else "no host in the URL"

    def close(self) -> None:
        pass
