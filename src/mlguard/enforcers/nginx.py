"""`nginx`: keep an include file of `deny` lines that nginx applies, then reload nginx.

Put `include /etc/nginx/mlguard-deny.conf;` in the `http` or `server` block that serves the
site; with `set_real_ip_from` + `real_ip_header` (realip), `deny` matches the real client
address behind a load balancer. Each sync writes the file atomically (a temporary file in the
same directory, then a rename), runs `nginx -t`, and reloads only when the file changed and the
test passed; when the test fails the previous file is put back and nginx is not reloaded.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from mlguard.decisions.policy import Policy
from mlguard.decisions.store import Decision
from mlguard.enforcers import SyncResult
from mlguard.errors import EnforcerError, UsageError
from mlguard.explain.reasons import safe_text

HEADER = "# Written by MLGuard (`mlguard enforce --nginx-include`); it is rewritten on every sync.\n"


class NginxEnforcer:
    name = "nginx"
    blocks = True

    def __init__(self, include: str | Path, command: str = "nginx", policy: Policy | None = None) -> None:
        self.include = Path(include)
        if not self.include.parent.is_dir():
            raise UsageError(f"--nginx-include: directory {safe_text(self.include.parent)} does not exist")
        self.command = shlex.split(command)
        if not self.command:
            raise UsageError("--nginx-command is empty")
        self.policy = policy or Policy()

    def _run(self, *args: str) -> None:
        try:
            done = subprocess.run([*self.command, *args], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EnforcerError(f"could not run {safe_text(' '.join(self.command), 80)}: {exc}") from None
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if "[emerg]" in line or "failed" in line]
            why = (lines or done.stderr.splitlines() or ["no output"])[0]
            raise EnforcerError(f"nginx {' '.join(args)} failed: {safe_text(why, 200)}")

    def _blocked(self, decisions: list[Decision]) -> list[str]:
        """Active blocks, never a protected address (private, loopback, allowlisted, trusted proxy)."""
        return sorted({d.client for d in decisions if d.verdict == "block" and self._may_block(d)})

    def _may_block(self, decision: Decision) -> bool:
        return self.policy.protection(decision.client) is None

    def _current(self) -> str | None:
        try:
            return self.include.read_text()
        except FileNotFoundError:
            return None

    def _render(self, clients: list[str]) -> str:
        return HEADER + "".join(f"deny {client};\n" for client in clients)

    def pending(self, decisions: list[Decision]) -> list[Decision]:
        current = self._current() or ""
        return [
            d
            for d in decisions
            if d.verdict == "block" and self._may_block(d) and f"deny {d.client};\n" not in current
        ]

    def _write(self, text: str | None) -> None:
        if text is None:
            self.include.unlink(missing_ok=True)
            return
        fd, tmp = tempfile.mkstemp(prefix=".mlguard-", dir=self.include.parent)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.include)

    def sync(self, decisions: list[Decision]) -> SyncResult:
        clients = self._blocked(decisions)
        wanted, before = self._render(clients), self._current()
        lines = [] if before is None else before.splitlines()
        previous = {line[len("deny ") : -1] for line in lines if line.startswith("deny ")}
        result = SyncResult(unchanged=len(previous & set(clients)))
        if wanted == before:
            return result
        self._write(wanted)
        try:
            self._run("-t")
        except EnforcerError as exc:
            self._write(before)  # put back what nginx accepted last
            result.failed = len(set(clients) - previous)
            result.messages.append(str(exc))
            return result
        self._run("-s", "reload")
        result.sent = len(set(clients) - previous)
        result.messages.append(f"{len(clients)} address(es) denied, {len(previous - set(clients))} released")
        return result

    def healthcheck(self) -> str | None:
        try:
            self._run("-t")
        except EnforcerError as exc:
            return str(exc)
        return None

    def close(self) -> None:
        pass
