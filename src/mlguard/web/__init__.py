"""`mlguard serve`: a dashboard and JSON API over the decision store and/or log files.

    from mlguard.web import WebSettings, create_app

    app = create_app(WebSettings(paths=["access.log"], state=Path("mlguard.db"), token="..."))

- `mlguard.web.app`: the FastAPI application (pages, `/api/...`, sign-in);
- `mlguard.web.auth`: the token, browser sessions and CSRF tokens;
- `mlguard.web.data`: what the pages show, aggregated in SQL (store) and Polars (logs);
- `mlguard.web.charts`: charts as SVG drawn on the server (no script runs in the browser).

Needs the `web` extra (FastAPI, uvicorn, Jinja2): `pip install 'mlguard-web[web]'`. How to run
it and its security model: docs/web.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

WEB_EXTRA = "pip install 'mlguard-web[web]'"  # what a missing FastAPI, uvicorn or Jinja2 asks for

if TYPE_CHECKING:
    from mlguard.web.app import create_app
    from mlguard.web.settings import WebSettings

__all__ = ["WEB_EXTRA", "WebSettings", "create_app"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `mlguard.web.WEB_EXTRA` never needs FastAPI.
    if name == "create_app":
        from mlguard.web.app import create_app

        return create_app
    if name == "WebSettings":
        from mlguard.web.settings import WebSettings

        return WebSettings
    raise AttributeError(f"module 'mlguard.web' has no attribute {name!r}")
