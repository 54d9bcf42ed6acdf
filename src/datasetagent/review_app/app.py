"""The review web app (Starlette): the page, its JSON API and the run's images.

Routes (the page uses the API, so scripts can too):

* ``GET /`` the page; ``GET /app.js``, ``GET /app.css`` its script and style (no CDN, no
  build step).
* ``GET /api/queue[?label=&reason=&source=&min=&max=&sort=confidence|similar&to=ID]`` →
  ``{"items": [{"id", "kind": "review"|"audit", "label", "confidence", "reason", "image",
  ...}]}``.
* ``POST /api/decisions`` ``{"id", "decision": "accept"|"reject"|"relabel", "label"?}``.
* ``POST /api/bulk`` ``{"min_confidence", "filter"?: {label, reason, source, min, max}}``:
  accept the filtered held-back items at or above that confidence.
* ``POST /api/boxes`` ``{"id", "box": INDEX, "label"?}``: relabel a box, or delete it
  without ``label``.
* ``POST /api/undo``: take back the last step. ``GET /api/progress``: per-class fill.
* ``GET /image/{id}``: the stored image of the run's sample ``id``.

Security: every request's ``Host`` must be the served address (DNS rebinding: 421 otherwise);
every POST needs the page's per-start token in ``X-CSRF-Token`` (403 otherwise); images are
looked up by sample id, never by a path from the request; every response forbids other
origins' scripts, styles, images and connections (``Content-Security-Policy``), sniffing and
referrers.
"""

from __future__ import annotations

import hmac
import html
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from datasetagent.errors import UsageError
from datasetagent.review_app.page import APP_CSS, APP_JS, PAGE
from datasetagent.review_app.session import QueueFilter, ReviewSession

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
#: Longest request body the API reads (a decision is a few hundred bytes).
MAX_BODY = 64 * 1024


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The Host header values of the served address: the --host and, for a loopback server,
    127.0.0.1 and localhost (and [::1]), each with the port."""
    names = {host.lower()}
    if host in ("127.0.0.1", "localhost", "::1"):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    names = {f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names}
    return frozenset(f"{n}:{port}" for n in names)


class _Guard:
    """Refuse a foreign Host (421) and set the security headers on every response."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS.items():
                    headers[k] = v
            await send(message)

        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").lower()
        if host not in self.hosts:
            refused = PlainTextResponse(
                "misdirected request: this review server answers only to "
                + ", ".join(sorted(self.hosts)),
                status_code=421,
            )
            await refused(scope, receive, secured)
            return
        await self.app(scope, receive, secured)


def create_app(
    session: ReviewSession, host: str, port: int, token: str | None = None
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The ASGI app serving ``session`` at ``host:port``; ``token`` (the CSRF token, random
    by default) is what every POST must send in ``X-CSRF-Token``."""
    csrf = token or secrets.token_urlsafe(32)

    def _error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def _body(request: Request) -> dict[str, Any] | Response:
        """The POST's JSON object, or the refusal: a missing or wrong token, no JSON object."""
        sent = request.headers.get("x-csrf-token", "")
        if not hmac.compare_digest(sent.encode(), csrf.encode()):
            return _error(403, "missing or wrong X-CSRF-Token: reload the page and try again")
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return _error(413, f"request body over {MAX_BODY} bytes")
        try:
            data = json.loads(raw or b"{}")
        except (ValueError, RecursionError):
            return _error(400, "the request body is not JSON")
        if not isinstance(data, dict):
            return _error(400, "the request body must be a JSON object")
        return data

    async def _run(call: Callable[[], Any]) -> Response:
        """The call's answer; it runs in a worker thread (a labeler refit may take a while)."""
        try:
            return JSONResponse(await run_in_threadpool(call))
        except LookupError as exc:
            return _error(404, f"sample {str(exc.args[0])[:64]!r} is not in this run")
        except UsageError as exc:
            return _error(400, str(exc))

    async def page(request: Request) -> Response:
        body = PAGE.replace("{{TOKEN}}", html.escape(csrf, quote=True)).replace(
            "{{RUN}}", html.escape(str(session.run_dir))
        )
        return Response(body, media_type="text/html; charset=utf-8")

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204)

    async def script(request: Request) -> Response:
        return Response(APP_JS, media_type="text/javascript; charset=utf-8")

    async def style(request: Request) -> Response:
        return Response(APP_CSS, media_type="text/css; charset=utf-8")

    def queue(request: Request) -> Response:
        try:
            only = _filter(dict(request.query_params))
        except ValueError as exc:
            return _error(400, str(exc))
        items = session.queue(only)
        if request.query_params.get("sort") == "confidence":
            items.sort(key=lambda i: (i["confidence"] is None, i["confidence"] or 0.0))
        elif request.query_params.get("sort") == "similar":
            ref = next((i for i in items if i["id"] == request.query_params.get("to")), None)
            if ref is not None and ref["hash"] is not None:
                items.sort(key=lambda i: _distance(ref["hash"], i["hash"]))
        return JSONResponse({"items": items, "classes": list(session.spec.class_names)})

    def progress(request: Request) -> Response:
        return JSONResponse(session.progress())

    def image(request: Request) -> Response:
        path = session.image_path(request.path_params["sample_id"])
        if path is None:
            return _error(404, "no image of this run has that id")
        return FileResponse(path)

    async def decisions(request: Request) -> Response:
        data = await _body(request)
        if isinstance(data, Response):
            return data
        sid, decision, label = data.get("id"), data.get("decision"), data.get("label")
        if not isinstance(sid, str) or not isinstance(decision, str):
            return _error(400, 'a decision needs "id" and "decision" (accept, reject, relabel)')
        if label is not None and not isinstance(label, str):
            return _error(400, '"label" must be a class name (text)')
        return await _run(lambda: session.decide(sid, decision, label))

    async def bulk(request: Request) -> Response:
        data = await _body(request)
        if isinstance(data, Response):
            return data
        threshold = data.get("min_confidence")
        if not isinstance(threshold, int | float) or isinstance(threshold, bool):
            return _error(400, 'a bulk accept needs "min_confidence" (a number 0-1)')
        raw = data.get("filter") or {}
        if not isinstance(raw, dict):
            return _error(400, '"filter" must be an object')
        try:
            only = _filter({k: str(v) for k, v in raw.items() if v is not None})
        except ValueError as exc:
            return _error(400, str(exc))
        return await _run(lambda: {"accepted": session.bulk_accept(float(threshold), only)})

    async def boxes(request: Request) -> Response:
        data = await _body(request)
        if isinstance(data, Response):
            return data
        sid, index, label = data.get("id"), data.get("box"), data.get("label")
        if not isinstance(sid, str) or not isinstance(index, int) or isinstance(index, bool):
            return _error(400, 'a box edit needs "id" and "box" (the object\'s index)')
        if label is not None and not isinstance(label, str):
            return _error(400, '"label" must be a class name (text)')
        return await _run(lambda: session.edit_box(sid, index, label))

    async def undo(request: Request) -> Response:
        data = await _body(request)
        if isinstance(data, Response):
            return data
        return await _run(session.undo)

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/app.js", script),
            Route("/app.css", style),
            Route("/favicon.ico", no_icon),
            Route("/api/queue", queue),
            Route("/api/progress", progress),
            Route("/image/{sample_id}", image),
            Route("/api/decisions", decisions, methods=["POST"]),
            Route("/api/bulk", bulk, methods=["POST"]),
            Route("/api/boxes", boxes, methods=["POST"]),
            Route("/api/undo", undo, methods=["POST"]),
        ]
    )
    return _Guard(app, allowed_hosts(host, port))


def _filter(params: dict[str, str]) -> QueueFilter:
    """A queue filter from query parameters (label, reason, source, min, max); empty values
    are no filter. Raises ValueError for a bound that is not a number."""

    def number(key: str) -> float | None:
        value = params.get(key) or None
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{key}={value!r} is not a number") from None

    return QueueFilter(
        label=params.get("label") or None,
        reason=params.get("reason") or None,
        source=params.get("source") or None,
        min_confidence=number("min"),
        max_confidence=number("max"),
    )


def _distance(a: int | None, b: int | None) -> int:
    """Hamming distance of two perceptual hashes; an image without one sorts last."""
    if a is None or b is None:
        return 1 << 30
    return (a ^ b).bit_count()
