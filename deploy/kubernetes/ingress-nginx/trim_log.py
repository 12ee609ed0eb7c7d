"""Keep ingress-nginx's access log from filling its emptyDir: truncate it once MLGuard has read it.

Runs beside `mlguard watch` in the ingress-nginx controller pod (docs/deploy-kubernetes.md); the
image carries it as /opt/mlguard/libexec/trim_log.py. nginx opens its log with O_APPEND, so after
a truncation its next line goes to the start of the file: no signal to nginx (which would need a
shared process namespace) is ever sent. `mlguard watch` sees the file shrink and reads it again
from the top.

The log is truncated when it is larger than --max-bytes and watch's `mlguard_bytes_behind` metric
says that all but --slack-bytes of it have been read, so only the lines written since watch's last
read (about a second) are lost. Past --hard-max-bytes it is truncated whatever watch says (watch
down or far behind): an emptyDir over its sizeLimit gets the whole ingress pod evicted.

Standard library only; one JSON object per line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

_UNITS = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
_SIZE = re.compile(r"^(\d+)(Ki|Mi|Gi)?$")
_BEHIND = re.compile(r"^mlguard_bytes_behind(?:\{[^}]*\})? (\S+)$", re.M)


def size(text: str) -> int:
    """Bytes from '268435456', '256Mi', '1Gi' (the suffixes Kubernetes uses)."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r}; expected bytes or a number with Ki, Mi or Gi"
        )
    return int(match.group(1)) * _UNITS[match.group(2) or ""]


def bytes_behind(metrics_url: str, timeout_secs: float = 5.0) -> float | None:
    """What watch has not read yet, from its /metrics; None when it cannot be asked."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout_secs) as response:
            text = response.read(1 << 20).decode("utf-8", "replace")
    except (OSError, urllib.error.URLError, ValueError):
        return None
    match = _BEHIND.search(text)
    return float(match.group(1)) if match else None


def trim_once(
    path: str, max_bytes: int, hard_max_bytes: int, slack_bytes: int, metrics_url: str
) -> dict[str, object] | None:
    """Truncate `path` when it is due; what was done (for the log), or None."""
    try:
        length = os.stat(path).st_size
    except FileNotFoundError:
        return None  # nginx creates it with its first line
    if length <= max_bytes:
        return None
    behind = bytes_behind(metrics_url)
    caught_up = behind is not None and behind <= slack_bytes
    if not caught_up and length <= hard_max_bytes:
        return None  # wait for watch to read it
    os.truncate(path, 0)
    return {
        "event": "truncated",
        "path": path,
        "bytes": length,
        "bytes_behind": behind,
        "why": "read by watch" if caught_up else "over the hard limit",
    }


def _log(level: str, message: str, **fields: object) -> None:
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "level": level, "message": message}
    print(json.dumps({**record, **fields}), file=sys.stderr, flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trim_log.py", description=__doc__.split("\n\n")[0])
    p.add_argument("path", help="the access log nginx writes")
    p.add_argument(
        "--max-bytes", type=size, default=size("256Mi"), help="truncate past this size (default 256Mi)"
    )
    p.add_argument(
        "--hard-max-bytes",
        type=size,
        default=size("768Mi"),
        help="truncate past this size even when watch has not read the log (default 768Mi)",
    )
    p.add_argument(
        "--slack-bytes", type=size, default=size("1Mi"), help="watch may be this far behind (default 1Mi)"
    )
    p.add_argument(
        "--metrics-url",
        default="http://127.0.0.1:9464/metrics",
        help="watch's Prometheus endpoint (default http://127.0.0.1:9464/metrics)",
    )
    p.add_argument("--every-secs", type=float, default=10.0, help="seconds between checks (default 10)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.max_bytes <= args.hard_max_bytes:
        parser().error("--max-bytes must not be larger than --hard-max-bytes")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    _log("info", "started", event="started", path=args.path, max_bytes=args.max_bytes)
    while not stop.is_set():
        try:
            done = trim_once(
                args.path, args.max_bytes, args.hard_max_bytes, args.slack_bytes, args.metrics_url
            )
        except OSError as exc:  # e.g. not allowed to write the log: say so, keep trying
            _log("error", f"cannot truncate: {exc}", event="failed", path=args.path)
        else:
            if done is not None:
                _log("warning" if done["why"] != "read by watch" else "info", "access log truncated", **done)
        stop.wait(args.every_secs)
    _log("info", "stopped", event="stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
