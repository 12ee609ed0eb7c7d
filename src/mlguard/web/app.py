"""The FastAPI application of `mlguard serve`: server-rendered pages and a JSON API over the
same data (mlguard.web.data), guarded by mlguard.web.auth.

Pages: `/` overview, `/clients/{ip}` drill-down, `/decisions`, `/docs` (the API reference,
rendered here from FastAPI's OpenAPI schema at `/openapi.json`: Swagger UI would bring a
megabyte of script into a page that runs none). Browser actions are POSTs to `/actions`
with the session's CSRF token; the API's are POSTs to `/api/clients/{ip}/...` with the
bearer token. Every response carries the headers of `SECURITY_HEADERS`.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, and those
# name dependencies local to create_app.
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, quote, urlencode

import jinja2
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlguard import __version__
from mlguard.decisions.policy import ALERT, BLOCK, PASS
from mlguard.decisions.store import ALLOW, Decision, DecisionStore
from mlguard.errors import UsageError
from mlguard.explain.reasons import safe_text
from mlguard.spans import parse_span
from mlguard.web import charts
from mlguard.web.auth import COOKIE, Guard, Session
from mlguard.web.data import (
    STATES,
    TOP_CLIENTS,
    Analysis,
    ClientLog,
    LogView,
    StoreView,
    canonical_client,
    iso,
)
from mlguard.web.settings import WebSettings

log = logging.getLogger("mlguard.web")

# No script runs on any page: default-src 'none' and no script-src. Styles only from the
# stylesheet (charts use classes, not style attributes); images from here or data: URIs.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
MAX_BODY_BYTES = 64 * 1024  # the largest action is a reason of 200 characters
MAX_REASON_CHARS = 200
MAX_TTL = timedelta(days=365)
PAGE_ROWS = 100
SERIES_CSS = {
    BLOCK: "s-block",
    ALERT: "s-alert",
    ALLOW: "s-allow",
    PASS: "s-pass",
    "requests": "s-requests",
    "client errors (4xx)": "s-errors",
    "2xx": "s-2xx",
    "3xx": "s-3xx",
    "4xx": "s-4xx",
    "5xx": "s-5xx",
    "other": "s-other",
}
DONE = {  # fixed words after an action: nothing from the request is echoed back
    "allow": "Allowed: this client is never blocked again, and its alerts and blocks were revoked.",
    "unblock": "Unblocked: the client's active blocks were revoked.",
    "block": "Blocked by a person for the time chosen.",
}
ACTIONS = ("allow", "unblock", "block")


# Every response: security headers; on a loopback bind, only our own Host names (a page of
# another site that rebinds its DNS name to 127.0.0.1 gets nothing); POSTs only same-origin,
# with a declared and small body.


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guardrails:
    """Pure ASGI middleware (no per-request task, unlike BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...] | None) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")

        async def send_guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if "cache-control" not in headers:
                    static = path.startswith("/static/")
                    headers["cache-control"] = "public, max-age=3600" if static else "no-store"
            await send(message)

        refused = self._refusal(scope)
        if refused is not None:
            status, text = refused
            await Response(text, status, media_type="text/plain")(scope, receive, send_guarded)
            return
        await self.app(scope, receive, send_guarded)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers = Headers(scope=scope)
        if self.allowed_hosts is not None and _host_name(headers.get("host", "")) not in self.allowed_hosts:
            return 400, "unknown Host: this server answers to localhost only"
        if scope["method"] == "POST":
            if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                return 403, "refused: the request came from another site"
            length = headers.get("content-length")
            if length is None or not length.isdigit():
                return 411, "a POST needs a Content-Length"
            if int(length) > MAX_BODY_BYTES:
                return 413, "request body too large"
        return None


# Templates


def _url_part(value: object) -> str:
    """A client as one URL path segment (an IPv6 address keeps its colons)."""
    return quote(str(value), safe=":")


def _when(value: object) -> str:
    if value is None:
        return "never"
    if isinstance(value, datetime):
        return iso(value).replace("T", " ").rstrip("Z")
    return str(value).replace("T", " ").rstrip("Z")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mlguard.web", "templates"),
        autoescape=True,  # every template, whatever its name: log text is never markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        t=lambda value, limit=None: safe_text(value, limit),  # control characters shown as \xNN
        num=lambda value: "-" if value is None else f"{int(value):,}",
        score=lambda value: "-" if value is None else f"{value:.3f}",
        px=lambda value: f"{value:.1f}",
        when=_when,
        urlpart=_url_part,
    )
    return env


@dataclass(frozen=True)
class Viewer:
    """Who is looking: a signed-in browser (with its CSRF token when it may act) or not."""

    session: Session | None
    can_act: bool

    @property
    def csrf(self) -> str | None:
        return self.session.csrf if self.session is not None and self.can_act else None


class SignInFirst(Exception):
    def __init__(self, target: str) -> None:
        self.target = target


class PageError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def local_target(value: str | None, default: str = "/") -> str:
    """A path on this server to go back to: never another site (//host, /\\host, a scheme)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")) or len(value) > 2000:
        return default
    if any(ord(c) < 0x21 or c == "\\" for c in value):
        return default
    return value


# API models


class ReasonBody(BaseModel):
    reason: str = Field(min_length=1, max_length=MAX_REASON_CHARS, description="Why: kept with the decision.")


class AllowBody(ReasonBody):
    ttl: str | None = Field(
        None, max_length=10, description="Allow for this long (30m, 24h, 7d); default: for good."
    )


class BlockBody(ReasonBody):
    ttl: str = Field("4h", max_length=10, description="How long, from now (30m, 4h, 7d).")


class ActionResult(BaseModel):
    message: str
    decisions: list[dict[str, Any]] = Field(description="The client's decisions, newest first.")


def _ttl(value: str | None) -> timedelta | None:
    if value is None or not value.strip():
        return None
    span = parse_span(value)
    if span is None or span <= timedelta(0) or span > MAX_TTL:
        raise UsageError(f"ttl '{safe_text(value, 20)}' is not a duration up to 365d: use e.g. 30m, 4h or 7d")
    return span


def create_app(settings: WebSettings) -> FastAPI:
    guard = Guard(settings.token, settings.public_read, settings.session_ttl.total_seconds())
    store = StoreView(settings.state) if settings.state is not None else None

    def store_allows() -> list[Any]:
        assert settings.state is not None
        with DecisionStore(settings.state) as db:
            return db.allowed()

    logs = (
        LogView(settings.paths, settings.policy, settings.refresh_secs, store_allows if store else None)
        if settings.paths
        else None
    )
    env = _environment()
    css = resources.files("mlguard.web").joinpath("static/style.css").read_bytes()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if logs is not None:
            logs.start()
        yield

    app = FastAPI(
        title="MLGuard",
        version=__version__,
        summary="Findings and decisions of MLGuard, and a person's actions on them.",
        description=(
            "Every `/api` request takes the server's token as `Authorization: Bearer TOKEN` (reads "
            "need none when the server runs with `--public-read`). Times are ISO 8601 UTC. "
            "See docs/web.md."
        ),
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.add_middleware(Guardrails, allowed_hosts=settings.allowed_hosts)
    app.state.logs = logs
    bearer_scheme = HTTPBearer(auto_error=False, description="The token `mlguard serve` was started with.")

    # Who may do what

    def page_viewer(request: Request) -> Viewer:
        if not guard.may_read(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise SignInFirst(target)
        return Viewer(guard.session(request), settings.can_act)

    def api_reader(
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> None:
        if not guard.may_read(request):
            raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})

    def api_actor(
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> None:
        # The bearer token only: a browser's cookie is never enough to act through the API.
        if guard.bearer(request) is not True:
            raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})
        if not settings.can_act:
            raise HTTPException(403, "read-only: this server was started without a decision store")

    PageViewer = Annotated[Viewer, Depends(page_viewer)]
    reader = [Depends(api_reader)]
    actor = [Depends(api_actor)]

    @app.exception_handler(SignInFirst)
    async def _sign_in_first(request: Request, exc: SignInFirst) -> Response:
        return RedirectResponse("/signin?" + urlencode({"next": exc.target}), 303)

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> Response:
        viewer = Viewer(guard.session(request), settings.can_act)
        return render("error.html", viewer, exc.status, message=exc.message, title="Error")

    # Rendering

    def render(name: str, viewer: Viewer, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(
            viewer=viewer,
            version=__version__,
            has_logs=logs is not None,
            has_store=store is not None,
            can_sign_in=settings.token is not None,
            nav=context.pop("nav", ""),
            message=context.pop("message", None),
            message_kind=context.pop("message_kind", "info"),
            **context,
        )
        return HTMLResponse(html, status)

    def analysis() -> Analysis | None:
        if logs is None:
            return None
        logs.poke()
        return logs.latest

    def logs_note() -> str | None:
        if logs is None:
            return None
        if logs.status == "reading":
            return "Reading the logs: findings appear when the first pass is done (reload in a moment)."
        if logs.status == "failed":
            return f"The logs could not be read: {logs.error}"
        return None

    # The data behind the pages and the API

    def overview_data() -> dict[str, Any]:
        now = settings.clock()
        found = analysis()
        data: dict[str, Any] = {"now": iso(now), "logs": None, "store": None}
        top: list[dict[str, Any]] = []
        if found is not None:
            flagged = found.findings.filter(found.findings["verdict"].is_in([ALERT, BLOCK]))
            data["logs"] = {
                "analysed": iso(found.finished),
                "lines": found.stats.lines,
                "records": found.stats.records,
                "unparsed": found.stats.unparsed,
                "clients": found.findings.height,
                "verdicts": found.verdict_counts(),
                "score_bins": found.score_bins(),
                "traffic": found.traffic,
                "window_secs": found.window_secs,
            }
            top = [
                {
                    "ip": r["ip"],
                    "score": r["score"],
                    "verdict": r["verdict"],
                    "requests": r["requests"],
                    "reasons": r["reasons"],
                    "protected": r["protected"],
                    "decision": None,
                }
                for r in flagged.head(TOP_CLIENTS)
                .select("ip", "score", "verdict", "requests", "reasons", "protected")
                .iter_rows(named=True)
            ]
        if store is not None:
            summary = store.overview(now)
            data["store"] = summary
            if found is None:
                top = [
                    {
                        "ip": d.client,
                        "score": d.score,
                        "verdict": d.verdict,
                        "requests": None,
                        "reasons": d.reasons,
                        "protected": None,
                        "decision": d,
                    }
                    for d in summary.top
                ]
            else:
                current = store.current([row["ip"] for row in top], now)
                for row in top:
                    row["decision"] = current.get(row["ip"])
        data["top"] = top
        return data

    def client_data(ip: str) -> dict[str, Any]:
        client = canonical_client(ip)
        if client is None:
            raise PageError(404, "not a client: give an IP address or a CIDR range")
        now = settings.clock()
        found = analysis()
        finding = found.finding(client) if found is not None else None
        history = store.history(client, now) if store is not None else []
        if finding is None and not history and (logs is None or logs.status != "reading"):
            raise PageError(404, f"nothing is known about {safe_text(client, 60)}")
        requests = logs.client(client) if logs is not None and finding is not None else None
        current = store.current([client], now).get(client) if store is not None else None
        # The finding's reasons, else those of the newest decision that has some.
        why = finding["reasons"] if finding else next((d.reasons for d in history if d.reasons), [])
        return {
            "client": client,
            "finding": finding,
            "history": history,
            "requests": requests,
            "current": current,
            "why": why,
        }

    def perform(action: str, ip: str, reason: str, ttl: str | None) -> str:
        """Change the store as a person (origin `person`); the message says what happened."""
        if store is None or not settings.can_act:
            raise PageError(403, "read-only: this server was started without a decision store or token")
        client = canonical_client(ip)
        if client is None:
            raise UsageError("not a client: give an IP address or a CIDR range")
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON_CHARS:
            raise UsageError(f"give a reason of 1 to {MAX_REASON_CHARS} characters")
        now = settings.clock()
        assert settings.state is not None
        with DecisionStore(settings.state) as db:
            if action == "allow":
                revoked = db.allow(client, now, reason, _ttl(ttl))
                message = f"allowed {client}; {revoked} active decision(s) revoked"
            elif action == "unblock":
                if db.unblock(client, reason) == 0:
                    raise UsageError(f"{safe_text(client, 60)} has no active block")
                message = f"unblocked {client}"
            elif action == "block":
                span = _ttl(ttl or "4h")
                assert span is not None
                until = iso(now + span)
                # Extending: refused when a block in force already lasts at least as long.
                ends = [
                    d.expires or "9999"
                    for d in db.history(client)
                    if d.verdict == BLOCK and d.state == "active" and (d.expires or "9999") > iso(now)
                ]
                longest = max(ends, default=None)
                if longest is not None and longest >= until:
                    raise UsageError(f"{safe_text(client, 60)} is already blocked until {longest}")
                db.block(client, now, reason, span, policy=settings.policy)
                message = f"blocked {client} until {until}"
            else:
                raise PageError(404, "unknown action")
        if logs is not None:
            logs.invalidate()  # an allow changes what the policy may block
        return message

    # Pages

    @app.get("/signin", include_in_schema=False)
    def signin_page(request: Request, next: str | None = None) -> Response:
        viewer = Viewer(guard.session(request), settings.can_act)
        return render("signin.html", viewer, target=local_target(next), error=None, nav="signin")

    @app.post("/signin", include_in_schema=False)
    async def signin(request: Request) -> Response:
        form = await _form(request)
        target = local_target(form.get("next"))
        viewer = Viewer(None, settings.can_act)
        if settings.token is None:
            raise PageError(404, "this server has no token: reading is open and nothing can be changed")
        if not guard.token_matches(form.get("token", "")):
            return render("signin.html", viewer, 401, target=target, error="That is not the token.")
        session = guard.sessions.create()
        response = RedirectResponse(target, 303)
        response.set_cookie(
            COOKIE,
            session.id,
            max_age=int(settings.session_ttl.total_seconds()),
            path="/",
            secure=settings.secure_cookies,
            httponly=True,
            samesite="strict",
        )
        return response

    @app.post("/signout", include_in_schema=False)
    async def signout(request: Request) -> Response:
        form = await _form(request)
        session = guard.session(request)
        if session is None or not guard.csrf_ok(session, form.get("csrf")):
            raise PageError(403, "sign-out refused: the form did not come from this dashboard")
        guard.sessions.end(session.id)
        response = RedirectResponse("/signin", 303)
        response.delete_cookie(
            COOKIE, path="/", secure=settings.secure_cookies, httponly=True, samesite="strict"
        )
        return response

    @app.get("/", include_in_schema=False)
    def overview_page(viewer: PageViewer) -> Response:
        data = overview_data()
        shown: list[charts.Chart] = []
        if data["logs"] is not None:
            shown.append(_traffic_chart(data["logs"]["traffic"], data["logs"]["window_secs"]))
            shown.append(
                charts.score_histogram(
                    "Clients by score",
                    data["logs"]["score_bins"],
                    SERIES_CSS,
                    settings.policy.alert_threshold,
                    settings.policy.block_threshold,
                )
            )
        summary = data["store"]
        if summary is not None:
            shown.append(
                charts.time_bars(
                    "New decisions",
                    summary.timeline_starts,
                    summary.timeline_secs,
                    summary.timeline,
                    SERIES_CSS,
                    empty="no decision yet",
                )
            )
            if data["logs"] is None:
                shown.append(
                    charts.score_histogram(
                        "Active decisions by score",
                        summary.scores,
                        SERIES_CSS,
                        settings.policy.alert_threshold,
                        settings.policy.block_threshold,
                    )
                )
        return render("overview.html", viewer, nav="overview", data=data, charts=shown, note=logs_note())

    @app.get("/clients/{ip:path}", include_in_schema=False)
    def client_page(ip: str, viewer: PageViewer, done: str | None = None) -> Response:
        data = client_data(ip)
        requests: ClientLog | None = data["requests"]
        shown = []
        if requests is not None:
            shown.append(
                charts.time_bars(
                    "Responses over time",
                    requests.status_starts,
                    requests.status_secs,
                    requests.status_mix,
                    SERIES_CSS,
                )
            )
            shown.append(charts.ranked_bars("Top paths", requests.paths, "s-requests", requests.requests))
        return render(
            "client.html",
            viewer,
            nav="clients",
            charts=shown,
            note=logs_note(),
            message=DONE.get(done or ""),
            message_kind="done",
            back=f"/clients/{_url_part(data['client'])}",
            **data,
        )

    @app.get("/decisions", include_in_schema=False)
    def decisions_page(
        request: Request,
        viewer: PageViewer,
        verdict: str | None = None,
        state: str | None = "active",
        client: str | None = None,
        before: int | None = None,
    ) -> Response:
        if store is None:
            raise PageError(404, "this server was started without a decision store (--state)")
        verdict = verdict if verdict in (ALERT, BLOCK, ALLOW) else None
        state = state if state in (*STATES, "all") else "active"
        wanted = canonical_client(client) if client else None
        rows = store.decisions(
            settings.clock(),
            verdict=verdict,
            state=None if state == "all" else state,
            client=wanted,
            before=before,
            limit=PAGE_ROWS + 1,
        )
        more = rows[PAGE_ROWS].id + 1 if len(rows) > PAGE_ROWS else None
        query = {k: v for k, v in (("verdict", verdict), ("state", state), ("client", wanted)) if v}
        here = {**query, "before": before} if before else query
        back = "/decisions" + (f"?{urlencode(here)}" if here else "")
        return render(
            "decisions.html",
            viewer,
            nav="decisions",
            rows=rows[:PAGE_ROWS],
            verdict=verdict or "",
            state=state,
            client=wanted or "",
            next_page=f"?{urlencode({**query, 'before': more})}" if more else None,
            back=back,
            now=iso(settings.clock()),
        )

    @app.post("/actions", include_in_schema=False)
    async def action_form(request: Request) -> Response:
        form = await _form(request)
        session = guard.session(request)
        if not guard.csrf_ok(session, form.get("csrf")):
            raise PageError(
                403,
                "refused: this form did not come from this dashboard, or its sign-in has ended; "
                "reload the page and try again",
            )
        action, ip = form.get("action", ""), form.get("client", "")
        if action not in ACTIONS:
            raise PageError(400, "nothing was changed: press the button of the action you want")
        try:
            await run_in_threadpool(perform, action, ip, form.get("reason", ""), form.get("ttl"))
        except UsageError as exc:
            raise PageError(400, safe_text(exc, 300)) from None
        client = canonical_client(ip) or ""
        back = local_target(form.get("back"), f"/clients/{_url_part(client)}")
        separator = "&" if "?" in back else "?"
        return RedirectResponse(f"{back}{separator}done={action}", 303)

    @app.get("/docs", include_in_schema=False)
    def docs_page(request: Request) -> Response:
        viewer = Viewer(guard.session(request), settings.can_act)
        return render("docs.html", viewer, nav="docs", api=_api_reference(app.openapi()))

    @app.get("/static/style.css", include_in_schema=False)
    def stylesheet() -> Response:
        return Response(css, media_type="text/css")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # The JSON API

    @app.get("/api/status", dependencies=reader, tags=["read"], summary="Status")
    def api_status() -> dict[str, Any]:
        """What this server serves, and whether the logs have been read."""
        found = logs.latest if logs is not None else None
        return {
            "version": __version__,
            "logs": None
            if logs is None
            else {
                "status": logs.status,
                "error": logs.error,
                "analysed": iso(found.finished) if found else None,
                "seconds": round(found.seconds, 3) if found else None,
            },
            "store": store is not None,
            "can_act": settings.can_act,
            "thresholds": {
                "alert": settings.policy.alert_threshold,
                "block": settings.policy.block_threshold,
            },
        }

    @app.get("/api/overview", dependencies=reader, tags=["read"], summary="Overview")
    def api_overview() -> dict[str, Any]:
        """The overview page's numbers: verdict counts, score bins (0.05 wide), requests and
        client errors per window (logs), decisions by verdict and state, new decisions per bin
        (store), and the top flagged clients."""
        data = overview_data()
        logs_part = data["logs"]
        if logs_part is not None:
            traffic = logs_part.pop("traffic")
            logs_part["traffic"] = [
                {"start": iso(w), "requests": r, "client_errors": e} for w, r, e in traffic.iter_rows()
            ]
        summary = data["store"]
        if summary is not None:
            data["store"] = {
                "decisions": summary.total,
                "counts": summary.counts,
                "timeline": [
                    {"start": iso(s), **{v: summary.timeline[v][i] for v in summary.timeline}}
                    for i, s in enumerate(summary.timeline_starts)
                ],
                "timeline_bin_secs": summary.timeline_secs,
                "score_bins": summary.scores,
            }
        data["top"] = [
            {**row, "decision": row["decision"].as_json() if row["decision"] else None} for row in data["top"]
        ]
        return data

    @app.get("/api/findings", dependencies=reader, tags=["read"], summary="Findings")
    def api_findings(
        verdict: Annotated[Literal["block", "alert", "pass", "flagged"] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> JSONResponse:
        """Findings of the logs, most suspicious first, with the fields of `mlguard detect --json`
        (`flagged`: alert and block)."""
        if logs is None:
            raise HTTPException(404, "this server was started without log paths")
        found = analysis()
        if found is None:
            if logs.status == "failed":
                raise HTTPException(500, f"the logs could not be read: {logs.error}")
            raise HTTPException(503, "reading the logs; try again in a moment", {"Retry-After": "5"})
        frame = found.findings
        if verdict == "flagged":
            frame = frame.filter(frame["verdict"].is_in([ALERT, BLOCK]))
        elif verdict is not None:
            frame = frame.filter(frame["verdict"] == verdict)
        return JSONResponse(
            {
                "analysed": iso(found.finished),
                "total": frame.height,
                "findings": frame.slice(offset, limit).to_dicts(),
            }
        )

    @app.get("/api/clients/{ip:path}", dependencies=reader, tags=["read"], summary="One client")
    def api_client(ip: str) -> JSONResponse:
        """One client: its finding in the logs (or null), every decision about it (newest
        first), and a summary of its requests: status mix over time, top paths, user agents,
        referers and sample requests (all as the log has them)."""
        try:
            data = client_data(ip)
        except PageError as exc:
            raise HTTPException(exc.status, exc.message) from None
        requests: ClientLog | None = data["requests"]
        current: Decision | None = data["current"]
        return JSONResponse(
            {
                "ip": data["client"],
                "finding": data["finding"],
                "current": current.as_json() if current else None,
                "decisions": [d.as_json() for d in data["history"]],
                "requests": requests.as_json() if requests else None,
            }
        )

    @app.get("/api/decisions", dependencies=reader, tags=["read"], summary="Decisions")
    def api_decisions(
        verdict: Literal["alert", "block", "allow"] | None = None,
        state: Literal["active", "expired", "revoked", "all"] = "active",
        client: str | None = None,
        before: Annotated[int | None, Query(description="Only decisions older than this id.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Decisions newest first, as `mlguard decisions list --json`; `next_before` pages on."""
        if store is None:
            raise HTTPException(404, "this server was started without a decision store (--state)")
        wanted = canonical_client(client) if client else None
        rows = store.decisions(
            settings.clock(),
            verdict=verdict,
            state=None if state == "all" else state,
            client=wanted,
            before=before,
            limit=limit + 1,
        )
        return {
            "decisions": [d.as_json() for d in rows[:limit]],
            "next_before": rows[limit - 1].id if len(rows) > limit else None,
        }

    def api_action(action: str, ip: str, reason: str, ttl: str | None) -> ActionResult:
        try:
            message = perform(action, ip, reason, ttl)
        except UsageError as exc:
            raise HTTPException(400, safe_text(exc, 300)) from None
        except PageError as exc:
            raise HTTPException(exc.status, exc.message) from None
        assert store is not None
        history = store.history(canonical_client(ip) or ip, settings.clock())
        return ActionResult(message=message, decisions=[d.as_json() for d in history])

    @app.post("/api/clients/{ip:path}/allow", dependencies=actor, tags=["act"], summary="Allow")
    def api_allow(ip: str, body: AllowBody) -> ActionResult:
        """Allow a client or range (as `mlguard decisions allow`): never blocked again, and its
        active alerts and blocks are revoked."""
        return api_action("allow", ip, body.reason, body.ttl)

    @app.post("/api/clients/{ip:path}/unblock", dependencies=actor, tags=["act"], summary="Unblock")
    def api_unblock(ip: str, body: ReasonBody) -> ActionResult:
        """Revoke the client's active blocks (as `mlguard decisions unblock`)."""
        return api_action("unblock", ip, body.reason, None)

    @app.post("/api/clients/{ip:path}/block", dependencies=actor, tags=["act"], summary="Block or extend")
    def api_block(ip: str, body: BlockBody) -> ActionResult:
        """Block a client by hand for `ttl` from now, or extend its block to that (as `mlguard
        decisions block`); refused for allowed, private and loopback addresses."""
        return api_action("block", ip, body.reason, body.ttl)

    return app


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form (the standard library's parser: no multipart, no files)."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise PageError(415, "expected a form (application/x-www-form-urlencoded)")
    body = await request.body()
    try:
        pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=20)
    except ValueError:
        raise PageError(400, "too many form fields") from None
    return dict(pairs)


def _traffic_chart(traffic: Any, window_secs: int) -> charts.Chart:
    """Requests and client errors of the whole site, re-binned from the burst windows."""
    if traffic.height == 0:
        return charts.Chart("Requests and client errors", charts.WIDTH, charts.HEIGHT, empty="no requests")
    windows = traffic["window"].to_list()
    secs = max(charts.bin_secs(windows[0], windows[-1]), window_secs)
    starts = charts.bin_starts(windows[0], windows[-1], secs)
    requests, errors = [0] * len(starts), [0] * len(starts)
    for window, n, e in traffic.iter_rows():
        i = int((window - starts[0]).total_seconds() // secs)
        requests[i] += n
        errors[i] += e
    return charts.time_bars(
        "Requests and client errors",
        starts,
        secs,
        {"requests": requests, "client errors (4xx)": errors},
        SERIES_CSS,
        stacked=False,
    )


def _api_reference(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """FastAPI's OpenAPI schema as rows a template can list: each operation's method, path,
    summary, parameters and body fields."""
    components = schema.get("components", {}).get("schemas", {})

    def type_of(spec: dict[str, Any]) -> str:
        if "$ref" in spec:
            return spec["$ref"].rsplit("/", 1)[-1]
        if "anyOf" in spec:
            return " or ".join(type_of(s) for s in spec["anyOf"])
        if "enum" in spec:
            return " | ".join(str(v) for v in spec["enum"])
        if spec.get("type") == "array":
            return f"list of {type_of(spec.get('items', {}))}"
        return str(spec.get("type", "object"))

    operations = []
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            params = [
                {
                    "name": p["name"],
                    "where": p["in"],
                    "type": type_of(p.get("schema", {})),
                    "required": p.get("required", False),
                    "default": p.get("schema", {}).get("default"),
                    "about": p.get("description") or p.get("schema", {}).get("description", ""),
                }
                for p in op.get("parameters", [])
            ]
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            fields = []
            if body is not None:
                model = components.get(type_of(body), {})
                for name, spec in model.get("properties", {}).items():
                    fields.append(
                        {
                            "name": name,
                            "type": type_of(spec),
                            "required": name in model.get("required", []),
                            "default": spec.get("default"),
                            "about": spec.get("description", ""),
                        }
                    )
            operations.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": op.get("summary", ""),
                    "about": op.get("description", ""),
                    "params": params,
                    "body": fields,
                    "responses": sorted(op.get("responses", {})),
                }
            )
    return operations
