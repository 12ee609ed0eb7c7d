"""What the daemon tells the people running it: structured logs and Prometheus metrics.

Logs: one event per line, as JSON (`--log-format json`, for Loki, Elasticsearch, CloudWatch)
or as text; every record carries an `event` name and its fields. Strings from log lines (a
client, reasons, an unparsed line) are escaped before they get here, and JSON escapes any
control character again, so a hostile line cannot forge a log entry or drive a terminal.

Metrics (prometheus_client, own registry, served on 127.0.0.1 unless told otherwise):
`mlguard_lines_total`, `mlguard_unparsed_lines_total`, `mlguard_decisions_total{verdict}`,
`mlguard_enforcer_errors_total{enforcer}`, gauges `mlguard_clients`, `mlguard_window_rows`,
`mlguard_lag_seconds` (clock minus the newest line's time), `mlguard_bytes_behind`,
`mlguard_circuit_breaker_open`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from mlguard.explain.reasons import safe_text

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
            **_fields(record),
        }
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        fields = " ".join(f"{k}={safe_text(v, 300)}" for k, v in _fields(record).items() if k != "event")
        return f"{when} {record.levelname.lower():7} {record.getMessage()}" + (
            f"  {fields}" if fields else ""
        )


def configure_logging(style: str = "text", verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if style == "json" else TextFormatter())
    root = logging.getLogger("mlguard")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


class Metrics:
    """The daemon's counters and gauges in a registry of their own (so tests can read them)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

        disable_created_metrics()  # the *_created series only clutter a daemon's page

        self.registry = CollectorRegistry()
        r = self.registry
        self._counters = {
            "lines": Counter("mlguard_lines", "Log lines read.", registry=r),
            "unparsed": Counter("mlguard_unparsed_lines", "Lines that could not be parsed.", registry=r),
            "decisions": Counter("mlguard_decisions", "New decisions.", ["verdict"], registry=r),
            "enforcer_errors": Counter(
                "mlguard_enforcer_errors", "Failed enforcer syncs.", ["enforcer"], registry=r
            ),
        }
        self._gauges = {
            "clients": Gauge("mlguard_clients", "Clients in the window at the last full pass.", registry=r),
            "window_rows": Gauge("mlguard_window_rows", "Rows held by the sliding window.", registry=r),
            "lag_secs": Gauge("mlguard_lag_seconds", "Clock minus the newest line's time.", registry=r),
            "bytes_behind": Gauge("mlguard_bytes_behind", "Bytes written and not read yet.", registry=r),
            "breaker_open": Gauge(
                "mlguard_circuit_breaker_open", "1 while new blocks are held back.", registry=r
            ),
        }

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        counter = self._counters[name]
        (counter.labels(**labels) if labels else counter).inc(value)

    def set_gauges(self, **values: float | None) -> None:
        for name, value in values.items():
            if value is not None:
                self._gauges[name].set(value)

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics over HTTP in a thread; returns the port (0 picks a free one)."""
        from prometheus_client import start_http_server

        server, _ = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_address[1])

    def close(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()

    def text(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()
