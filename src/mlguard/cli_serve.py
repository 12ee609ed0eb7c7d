"""`mlguard serve`: the dashboard and JSON API (the work is in `mlguard.web`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from mlguard.cli_options import StateOpt, err
from mlguard.errors import UsageError
from mlguard.web import WEB_EXTRA

ServePathsArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Log files, globs or directories to show findings of (read in the background, again "
        "when they change).",
        show_default=False,
    ),
]
# The shared --state option (flag, MLGUARD_STATE, help), optional here: logs alone are enough.
ServeStateOpt = Annotated[Path | None, *StateOpt.__metadata__]
HostOpt = Annotated[
    str,
    typer.Option(
        "--host",
        help="Address to listen on. On a loopback address only Host names of this machine are "
        "answered; elsewhere the session cookie is Secure (https, or http://localhost).",
    ),
]
PortOpt = Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="MLGUARD_TOKEN",
        show_default=False,
        help="The secret for the API (Authorization: Bearer) and the sign-in form, 16 characters "
        "or more. Prefer MLGUARD_TOKEN: a command line is visible to other users.",
    ),
]
PublicReadOpt = Annotated[
    bool,
    typer.Option(
        "--public-read",
        help="Anyone who reaches the server may read, without the token; actions still need it "
        "(and are off without a token).",
    ),
]


def serve_command(
    paths: ServePathsArg = None,
    state_path: ServeStateOpt = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8080,
    token: TokenOpt = None,
    public_read: PublicReadOpt = False,
) -> None:
    """A dashboard and JSON API over the decision store and/or log files: findings, a client's
    requests, decisions; allow, unblock and block (docs/web.md)."""
    from mlguard.web.settings import WebSettings

    settings = WebSettings.for_bind(
        host,
        paths=tuple(paths or ()),
        state=state_path,
        token=token or None,
        public_read=public_read,
    )
    try:
        import uvicorn

        from mlguard.web.app import create_app
    except ImportError as exc:
        raise UsageError(f"mlguard serve needs {exc.name or 'FastAPI'}: {WEB_EXTRA}") from None
    if settings.paths:
        from mlguard.sources.files import expand_paths

        expand_paths(list(settings.paths))  # a missing file stops start-up, not the first page
    app = create_app(settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    shown = f"[{host}]" if ":" in host else host
    access = "reading is public" if public_read else "reading needs the token"
    acting = "actions need the token" if settings.can_act else "no actions (needs --state and a token)"
    err.print(Text(f"mlguard serve: http://{shown}:{port}/ ({access}; {acting})"))
    # No access log: request paths are chosen by whoever connects, and need not reach a terminal.
    uvicorn.run(app, host=host, port=port, access_log=False, server_header=False, log_level="info")
