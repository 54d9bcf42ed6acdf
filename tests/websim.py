"""A loopback web for tests: Openverse- and Commons-shaped search APIs and the images they name.

Written from the APIs' documentation and source (WordPress/openverse ``api/``, the MediaWiki
Action API), it speaks just enough of each for our sources, and serves real JPEG photos,
generated on first request, distinct per image (dedup must not merge them) and per class.

Usage::

    with WebSim(classes={"red fox": 30, "arctic fox": 30}) as sim:
        sim.base_url          # "http://127.0.0.1:PORT": both APIs and every file live here
        sim.address           # ("127.0.0.1", PORT): AddressPolicy(frozenset({sim.address}))
        sim.other_base_url    # a second loopback server (a redirect target the guard must refuse)
        sim.other_address
        sim.requests          # list[Recorded], in arrival order (a copy)
        sim.requests_to("openverse")   # only one route's requests
        sim.tokens_issued     # access tokens the token endpoint handed out
        sim.item("openverse", "red fox", 3)   # SimItem: what result 3 of that class says
        sim.image_bytes("commons", "red fox", 3)   # the original file's bytes
        sim.faults.mature = {2}                    # switches, see Faults
        sim.reset()           # forget recorded requests and route counters

``WebSim(classes, *, client_id="sim-client", client_secret="sim-secret",
token_lifetime=36000)``: ``classes`` maps a class name to how many results each API holds for
it. A query finds the class whose every word it contains, singular or plural ("a photo of red
foxes" finds "red fox"; the longest such name wins); a query that names no class finds nothing.

Routes (``Recorded.route``):

* ``openverse`` — ``GET /v1/images/?q=&page=&page_size=&license=&mature=`` answers
  ``{result_count, page_count, page_size, page, results: [...]}``; results carry ``id, title,
  foreign_landing_url, url, creator, creator_url, license, license_version, license_url,
  provider, source, category, filesize, filetype, tags, attribution, fields_matched, mature,
  height, width, thumbnail, detail_url, related_url``. As the real API: anonymous ``page_size``
  over 20 is a 401, over 500 a 400; ``page`` over 20 a 400; an unknown licence code a 400;
  ``license`` and ``mature`` (default false) filter server-side; ``page_count`` is at most 20;
  ``X-RateLimit-*`` headers. ``Authorization: Bearer T`` with a token it issued makes the
  request authenticated; any other token is ignored (anonymous), as django-oauth-toolkit does.
* ``token`` — ``POST /v1/auth_tokens/token/`` form-encoded ``grant_type=client_credentials``,
  ``client_id``, ``client_secret``: 200 ``{access_token, scope, expires_in, token_type}``, or
  401 ``{"error": "invalid_client"}``, 400 ``{"error": "unsupported_grant_type"}``.
* ``commons`` — ``GET /w/api.php?action=query&format=json&formatversion=2&generator=search&
  gsrnamespace=6&gsrsearch=Q&gsrlimit=N&gsroffset=&prop=imageinfo&iiprop=...&iiurlwidth=W``:
  ``{"batchcomplete": true, "continue": {"gsroffset": N, "continue": "gsroffset||"},
  "query": {"pages": [{pageid, ns, title, index, imageinfo: [{size, width, height, thumburl,
  thumbwidth, thumbheight, url, descriptionurl, descriptionshorturl, mime, extmetadata}]}]}}``;
  no ``continue`` on the last batch, no ``query`` when nothing matched. ``filetype:bitmap`` in
  the search leaves SVGs out. ``thumburl`` is a scaled copy where W is below the original
  width, else the original. ``extmetadata`` values are HTML (``{"value", "source",
  "hidden"}``), flags are "true"/"false". A User-Agent that is empty or a library default
  (python-httpx, python-requests, Python-urllib, curl) gets a 403, as Wikimedia's policy does.
* ``media`` — ``/media/{openverse,commons}/SLUG/I.jpg`` (and ``.svg``), ``/thumb/commons/SLUG/
  I.jpg?width=W``; ``page`` — landing pages (``/pages/...``, ``/wiki/File:...``), HTML.
* ``bad`` — misbehaving files, usable directly (``sim.url("/bad/404.jpg")``) or through
  ``faults.media``: ``/bad/html.jpg`` (HTML served as image/jpeg), ``/bad/404.jpg``,
  ``/bad/trickle.jpg?seconds=S`` (a real JPEG a few bytes at a time over S seconds),
  ``/bad/huge.jpg?mb=N`` (N MiB, with Content-Length), ``/bad/huge-chunked.jpg?mb=N`` (chunked,
  no Content-Length), ``/bad/loop.jpg`` (endless redirects), ``/bad/redirect-out.jpg`` (a 302
  to a real image on ``other_base_url``), ``/redirect?to=PATH`` (a good 302 on this server).
  ``sim.huge_sent`` counts the bytes the huge files got written before the client hung up.

Faults (``sim.faults``), settable at any time:

* ``mature``, ``nc``, ``unknown``, ``svg``, ``no_artist``: sets of result indices (0-based,
  within each class, same for both APIs) that are mature (Openverse), licensed non-commercially
  (``by-nc`` 2.0 / "CC BY-NC 2.0"), under a licence our normaliser cannot name (Openverse's
  deprecated ``sampling+`` / Commons' "GFDL"), SVG drawings, or without an ``Artist`` (Commons).
* ``ignore_filters``: the APIs ignore ``license=``, ``mature=`` and ``filetype:bitmap`` and
  return everything (to prove our sources filter again on their side).
* ``shared``: the first ``shared`` results of each class are the same photo in both APIs (same
  bytes at two URLs).
* ``media``: result index → one of ``html``, ``404``, ``trickle``, ``huge``, ``huge-chunked``,
  ``loop``, ``redirect-out``, ``redirect``: that result's download URL (both APIs) goes to the
  matching ``bad`` endpoint instead (``trickle_seconds``: how long a trickle takes, 30).
* ``throttle(route, at=1, count=1, retry_after=1)``: requests ``at``..``at+count-1`` to the
  route (1-based, counted per route from the call: ``at=1`` is the route's next request) get
  a 429 with ``Retry-After`` (and, on ``openverse``,
  ``X-RateLimit-*``).
* ``errors(route, at=1, count=1, status=500)``: the same, with ``status``.
* ``maxlag(at=1, count=1, retry_after=5, lag=7)``: ``commons`` requests that send ``maxlag``
  get HTTP 200 ``{"error": {"code": "maxlag", ...}}`` with ``Retry-After`` and
  ``X-Database-Lag``, as MediaWiki does.
* ``revoke_tokens()``: tokens issued so far stop being valid (requests that send one are
  anonymous); tokens issued later are valid.
* ``api_error``: a MediaWiki error code (e.g. ``"internal_api_error_DBQueryError"``) every
  ``commons`` request is answered with, HTTP 200 ``{"error": {"code", "info"}}``.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import numpy as np
from PIL import Image, ImageDraw

#: Original sizes the results cycle through (width, height).
SIZES = ((320, 240), (240, 320), (400, 300), (160, 120))
MAX_ANON_PAGE_SIZE = 20
MAX_AUTHED_PAGE_SIZE = 500
MAX_PAGINATION_DEPTH = 20
OPENVERSE_LICENCES = ("by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd", "cc0", "pdm")
OPENVERSE_ALL = (*OPENVERSE_LICENCES, "sampling+", "nc-sampling+")
BLOCKED_AGENTS = ("python-httpx", "python-requests", "python-urllib", "curl", "aiohttp")

# (Openverse code, version) and Commons (LicenseShortName, LicenseUrl, License) by result index.
_OV_OPEN = (("by", "4.0"), ("by-sa", "4.0"), ("cc0", "1.0"), ("pdm", "1.0"), ("by", "2.0"))
_CO_OPEN = (
    ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0", "cc-by-sa-4.0"),
    ("CC0", "http://creativecommons.org/publicdomain/zero/1.0/deed.en", "cc0"),
    ("Public domain", "", "pd"),
    ("CC BY 2.0", "https://creativecommons.org/licenses/by/2.0", "cc-by-2.0"),
    (
        "CC BY-SA 3.0 de",
        "https://creativecommons.org/licenses/by-sa/3.0/de/deed.en",
        "cc-by-sa-3.0-de",
    ),
)
_CO_NC = ("CC BY-NC 2.0", "https://creativecommons.org/licenses/by-nc/2.0", "cc-by-nc-2.0")
_CO_UNKNOWN = ("GFDL", "https://www.gnu.org/copyleft/fdl.html", "gfdl")
_PEOPLE = ("Ana Pérez", "Bo Li", "Chidi Okafor", "Dana O'Neil", "Eero Mäki")


def slug(name: str) -> str:
    return "-".join(name.lower().split())


@dataclass(frozen=True)
class SimItem:
    """What one search result says, in plain text (what a source should record)."""

    api: str
    cls: str
    index: int
    title: str
    url: str  # the download URL the API gives (the original file)
    page: str  # the landing page
    creator: str | None  # plain text
    licence_code: str  # Openverse code or Commons LicenseShortName
    licence_version: str | None
    licence_url: str | None
    width: int
    height: int
    mature: bool
    svg: bool


@dataclass
class Recorded:
    """One request as the server saw it."""

    route: str
    method: str
    path: str
    #: Query parameters (the last value of each).
    query: dict[str, str]
    #: Header names in lower case.
    headers: dict[str, str]
    #: A form-encoded body, decoded.
    form: dict[str, str]
    status: int = 0
    port: int = 0


@dataclass
class Rule:
    route: str
    at: int
    count: int
    status: int
    retry_after: float | None = None
    maxlag: bool = False
    lag: int = 7
    #: Requests the route had seen when the rule was made: ``at`` counts from there.
    base: int = 0


@dataclass
class Faults:
    """Switches the tests turn on; see the module docstring."""

    mature: set[int] = field(default_factory=set)
    nc: set[int] = field(default_factory=set)
    unknown: set[int] = field(default_factory=set)
    svg: set[int] = field(default_factory=set)
    no_artist: set[int] = field(default_factory=set)
    ignore_filters: bool = False
    shared: int = 0
    media: dict[int, str] = field(default_factory=dict)
    #: How long a ``trickle`` result's body takes to arrive.
    trickle_seconds: float = 30
    rules: list[Rule] = field(default_factory=list)
    #: A MediaWiki error code every ``commons`` request is answered with (HTTP 200).
    api_error: str | None = None
    #: How many requests a route has seen (set by WebSim).
    seen: Callable[[str], int] = field(default=lambda route: 0, repr=False)
    #: Forgets the tokens issued so far (set by WebSim).
    revoke: Callable[[], None] = field(default=lambda: None, repr=False)

    def _add(self, rule: Rule) -> None:
        rule.base = self.seen(rule.route)
        self.rules.append(rule)

    def throttle(self, route: str, at: int = 1, count: int = 1, retry_after: float = 1) -> None:
        self._add(Rule(route, at, count, 429, retry_after))

    def errors(self, route: str, at: int = 1, count: int = 1, status: int = 500) -> None:
        self._add(Rule(route, at, count, status))

    def maxlag(self, at: int = 1, count: int = 1, retry_after: float = 5, lag: int = 7) -> None:
        self._add(Rule("commons", at, count, 200, retry_after, maxlag=True, lag=lag))

    def revoke_tokens(self) -> None:
        self.revoke()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sim: WebSim


class WebSim:
    """The loopback web; see the module docstring."""

    def __init__(
        self,
        classes: Mapping[str, int] | None = None,
        *,
        client_id: str = "sim-client",
        client_secret: str = "sim-secret",
        token_lifetime: int = 36000,
    ) -> None:
        self.classes = dict(classes if classes is not None else {"red fox": 30, "arctic fox": 30})
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime = token_lifetime
        self.huge_sent = 0
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._counts: Counter[str] = Counter()
        self.faults = Faults(seen=self._seen, revoke=self._revoke)
        self._tokens: set[str] = set()
        self.tokens_issued = 0
        self._cache: dict[tuple[str, int, int], bytes] = {}
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> WebSim:
        for _ in range(2):
            server = _Server(("127.0.0.1", 0), _Handler)
            server.sim = self
            thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> WebSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self._servers[0].server_address[1])

    @property
    def other_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self._servers[1].server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.address[1]}"

    @property
    def other_base_url(self) -> str:
        return f"http://127.0.0.1:{self.other_address[1]}"

    def url(self, path: str) -> str:
        return self.base_url + path

    # -- records -------------------------------------------------------------------------------
    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, route: str) -> list[Recorded]:
        return [r for r in self.requests if r.route == route]

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._counts.clear()
            for rule in self.faults.rules:
                rule.base = 0

    # -- content -------------------------------------------------------------------------------
    def find_class(self, query: str) -> str | None:
        """The class whose every word (plural or not) ``query`` holds; the longest such name."""
        words = _stems(query)
        found = [c for c in self.classes if _stems(c) <= words]
        return max(found, key=len) if found else None

    def item(self, api: str, cls: str, index: int) -> SimItem:
        f = self.faults
        name = f"{cls[:1].upper()}{cls[1:]} {index:03d}"
        width, height = SIZES[index % len(SIZES)]
        svg = index in f.svg
        ext = "svg" if svg else "jpg"
        url = self.url(f"/media/{api}/{slug(cls)}/{index}.{ext}")
        person = _PEOPLE[index % len(_PEOPLE)]
        if api == "openverse":
            code, version = _OV_OPEN[index % len(_OV_OPEN)]
            if index in f.nc:
                code, version = "by-nc", "2.0"
            if index in f.unknown:
                code, version = "sampling+", "1.0"
            lic_url = _ov_licence_url(code, version)
            page = self.url(f"/pages/openverse/{_uuid(api, cls, index)}")
            creator: str | None = f"{person} {index}"
        else:
            code, lic_url, _ = _CO_OPEN[index % len(_CO_OPEN)]
            if index in f.nc:
                code, lic_url, _ = _CO_NC
            if index in f.unknown:
                code, lic_url, _ = _CO_UNKNOWN
            version = None
            page = self.url("/wiki/" + quote(f"File:{name}.{ext}".replace(" ", "_")))
            creator = None if index in f.no_artist else f"{person} & Bo {index}"
        return SimItem(
            api=api,
            cls=cls,
            index=index,
            title=name if api == "openverse" else f"File:{name}.{ext}",
            url=url,
            page=page,
            creator=creator,
            licence_code=code,
            licence_version=version,
            licence_url=lic_url or None,
            width=width,
            height=height,
            mature=api == "openverse" and index in f.mature,
            svg=svg,
        )

    def items(self, api: str, cls: str | None) -> list[SimItem]:
        """Every result ``api`` holds for ``cls`` (none for None), before any filter."""
        return [] if cls is None else [self.item(api, cls, i) for i in range(self.classes[cls])]

    def download_url(self, item: SimItem) -> str:
        """Where the API sends a client for ``item``'s file (a ``bad`` endpoint under a fault)."""
        fault = self.faults.media.get(item.index)
        if fault is None:
            return item.url
        if fault == "redirect":
            return self.url("/redirect?to=" + quote(urlsplit(item.url).path))
        tag = f"item={item.api}-{slug(item.cls)}-{item.index}"  # one URL per result
        if fault in ("huge", "huge-chunked"):
            return self.url(f"/bad/{fault}.jpg?mb=64&{tag}")
        if fault == "trickle":
            return self.url(f"/bad/trickle.jpg?seconds={self.faults.trickle_seconds:g}&{tag}")
        return self.url(f"/bad/{fault}.jpg?{tag}")

    def image_bytes(self, api: str, cls: str, index: int, width: int | None = None) -> bytes:
        """The JPEG ``item(api, cls, index)`` names; scaled to ``width`` when given."""
        if api == "commons" and index < self.faults.shared:
            api = "openverse"  # the same photo, found by both
        seed = zlib.crc32(f"{api}|{cls}|{index}".encode())
        size = SIZES[index % len(SIZES)]
        key = (f"{api}|{cls}", index, width or 0)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        image = _photo(seed, list(self.classes).index(cls), size)
        if width is not None and width < size[0]:
            image = image.resize((width, max(1, round(size[1] * width / size[0]))), Image.LANCZOS)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=88)
        data = buf.getvalue()
        with self._lock:
            self._cache[key] = data
        return data

    # -- request bookkeeping (handler side) ----------------------------------------------------
    def _seen(self, route: str) -> int:
        with self._lock:
            return self._counts[route]

    def _record(self, rec: Recorded) -> tuple[int, Rule | None]:
        with self._lock:
            self._requests.append(rec)
            self._counts[rec.route] += 1
            n = self._counts[rec.route]
            rules = list(self.faults.rules)
        for rule in rules:
            if rule.route == rec.route and rule.at <= n - rule.base < rule.at + rule.count:
                return n, rule
        return n, None

    def _issue_token(self) -> str:
        with self._lock:
            self.tokens_issued += 1
            token = f"sim-token-{self.tokens_issued}-{uuid.uuid4().hex[:8]}"
            self._tokens.add(token)
            return token

    def _token_valid(self, token: str) -> bool:
        with self._lock:
            return token in self._tokens

    def _revoke(self) -> None:
        with self._lock:
            self._tokens.clear()

    def _add_huge(self, n: int) -> None:
        with self._lock:
            self.huge_sent += n


def _uuid(api: str, cls: str, index: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"websim/{api}/{cls}/{index}"))


def _ov_licence_url(code: str, version: str) -> str:
    if code == "cc0":
        return "https://creativecommons.org/publicdomain/zero/1.0/"
    if code == "pdm":
        return "https://creativecommons.org/publicdomain/mark/1.0/"
    return f"https://creativecommons.org/licenses/{code}/{version}/"


def _photo(seed: int, class_index: int, size: tuple[int, int]) -> Image.Image:
    """A photo-like picture: a class-tinted smooth field, texture, and random shapes."""
    rng = np.random.default_rng(seed)
    width, height = size
    hue = np.array(
        [(90, 60, 30), (200, 210, 220), (60, 110, 50), (40, 70, 140)][class_index % 4], np.float32
    )
    coarse = rng.normal(0, 40, (6, 8, 3)).astype(np.float32)
    field_img = Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8))
    smooth = np.asarray(field_img.resize((width, height), Image.BICUBIC), np.float32) - 128
    texture = rng.normal(0, 12, (height, width, 3)).astype(np.float32)
    pixels = np.clip(hue + smooth + texture, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
        x1 = int(min(width, x0 + rng.integers(8, width // 2)))
        y1 = int(min(height, y0 + rng.integers(8, height // 2)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    return image


_SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
    b'<circle cx="32" cy="32" r="20" fill="red"/></svg>'
)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    # -- plumbing ------------------------------------------------------------------------------
    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._rec.status = status
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _json(self, status: int, payload: object, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_redirect(self, location: str) -> None:
        self._send(302, b"", "text/plain", {"Location": location})

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._handle(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._handle(self.rfile.read(length))

    def _handle(self, body: bytes) -> None:
        sim = self.server.sim
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        form: dict[str, str] = {}
        ctype = self.headers.get("Content-Type", "")
        if body and ctype.startswith("application/x-www-form-urlencoded"):
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        route = _route(self.command, path)
        self._rec = Recorded(
            route=route,
            method=self.command,
            path=path,
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            form=form,
            port=self.server.server_address[1],
        )
        _, rule = sim._record(self._rec)
        if rule is not None and not rule.maxlag:
            headers = {}
            if rule.retry_after is not None:
                headers["Retry-After"] = _number(rule.retry_after)
                if route == "openverse":
                    headers["X-RateLimit-Limit-anon_burst"] = "20/min"
                    headers["X-RateLimit-Available-anon_burst"] = "0"
            self._json(rule.status, {"detail": f"sim fault {rule.status}"}, headers)
            return
        handler = getattr(self, "_" + route.replace("-", "_"))
        handler(path, query, form, rule)

    # -- routes --------------------------------------------------------------------------------
    def _unknown(self, path: str, query: dict[str, str], form: dict[str, str], rule: Any) -> None:
        self._json(404, {"detail": "Not found."})

    def _token(self, path: str, query: dict[str, str], form: dict[str, str], rule: Any) -> None:
        sim = self.server.sim
        if form.get("grant_type") != "client_credentials":
            self._json(400, {"error": "unsupported_grant_type"})
            return
        if form.get("client_id") != sim.client_id or form.get("client_secret") != sim.client_secret:
            self._json(401, {"error": "invalid_client"})
            return
        token = sim._issue_token()
        self._json(
            200,
            {
                "access_token": token,
                "scope": "read write groups",
                "expires_in": sim.token_lifetime,
                "token_type": "Bearer",
            },
        )

    def _openverse(self, path: str, query: dict[str, str], form: dict[str, str], rule: Any) -> None:
        sim = self.server.sim
        auth = self.headers.get("Authorization", "")
        authed = auth.startswith("Bearer ") and sim._token_valid(auth[7:].strip())
        try:
            page = int(query.get("page", "1"))
            page_size = int(query.get("page_size", str(MAX_ANON_PAGE_SIZE)))
        except ValueError:
            self._json(400, {"detail": "page and page_size must be integers"})
            return
        limit = MAX_AUTHED_PAGE_SIZE if authed else MAX_ANON_PAGE_SIZE
        if page_size > limit:
            status = 400 if authed else 401
            message = f"Ensure this value is less than or equal to {limit}."
            self._json(status, {"detail": message})
            return
        if page < 1 or page > MAX_PAGINATION_DEPTH or page_size < 1:
            self._json(400, {"page": [f"Ensure this value is less than or equal to {20}."]})
            return
        wanted = [c for c in query.get("license", "").lower().split(",") if c]
        bad = [c for c in wanted if c not in OPENVERSE_ALL]
        if bad:
            self._json(400, {"license": [f"License '{bad[0]}' does not exist."]})
            return
        mature_ok = query.get("mature", "false").lower() in ("true", "1")
        cls = sim.find_class(query.get("q", ""))
        items = (
            [] if cls is None else [sim.item("openverse", cls, i) for i in range(sim.classes[cls])]
        )
        if not sim.faults.ignore_filters:
            if wanted:
                items = [it for it in items if it.licence_code in wanted]
            if not mature_ok:
                items = [it for it in items if not it.mature]
        count = len(items)
        pages = min(MAX_PAGINATION_DEPTH, -(-count // page_size))
        chunk = items[(page - 1) * page_size : page * page_size]
        results = [self._ov_result(it) for it in chunk]
        headers = (
            {}
            if authed
            else {
                "X-RateLimit-Limit-anon_burst": "20/min",
                "X-RateLimit-Available-anon_burst": "19",
            }
        )
        self._json(
            200,
            {
                "result_count": count,
                "page_count": pages,
                "page_size": page_size,
                "page": page,
                "results": results,
            },
            headers,
        )

    def _ov_result(self, it: SimItem) -> dict[str, Any]:
        sim = self.server.sim
        ident = _uuid(it.api, it.cls, it.index)
        return {
            "id": ident,
            "indexed_on": "2024-01-01T00:00:00Z",
            "title": it.title,
            "foreign_landing_url": it.page,
            "url": sim.download_url(it),
            "creator": it.creator,
            "creator_url": sim.url("/people/" + quote(it.creator or "")),
            "license": it.licence_code,
            "license_version": it.licence_version,
            "license_url": it.licence_url,
            "provider": "flickr",
            "source": "flickr",
            "category": "photograph",
            "filesize": None,
            "filetype": "svg" if it.svg else "jpg",
            "tags": [{"name": it.cls, "accuracy": None}],
            "attribution": f'"{it.title}" by {it.creator} is licensed under CC.',
            "fields_matched": ["title"],
            "mature": it.mature,
            "height": it.height,
            "width": it.width,
            "thumbnail": sim.url(f"/v1/images/{ident}/thumb/"),
            "detail_url": sim.url(f"/v1/images/{ident}/"),
            "related_url": sim.url(f"/v1/images/{ident}/related/"),
            "unstable__sensitivity": ["user_reported_sensitive"] if it.mature else [],
        }

    def _commons(self, path: str, query: dict[str, str], form: dict[str, str], rule: Any) -> None:
        sim = self.server.sim
        agent = self.headers.get("User-Agent", "").strip().lower()
        if not agent or agent.startswith(BLOCKED_AGENTS):
            self._send(
                403,
                b"Please set a user-agent and respect our robot policy "
                b"https://meta.wikimedia.org/wiki/User-Agent_policy",
                "text/plain",
            )
            return
        if rule is not None and rule.maxlag and "maxlag" in query:
            headers = {
                "Retry-After": _number(rule.retry_after or 5),
                "X-Database-Lag": str(rule.lag),
            }
            error = {
                "code": "maxlag",
                "info": f"Waiting for 10.0.0.1: {rule.lag} seconds lagged.",
                "host": "10.0.0.1",
                "lag": rule.lag,
                "type": "db",
            }
            self._json(200, {"error": error, "servedby": "websim"}, headers)
            return
        if sim.faults.api_error is not None:
            error = {"code": sim.faults.api_error, "info": "websim was told to refuse."}
            self._json(200, {"error": error, "servedby": "websim"})
            return
        need = {"action": "query", "format": "json", "formatversion": "2", "generator": "search"}
        wrong = [k for k, v in need.items() if query.get(k) != v]
        if wrong:
            error = {"code": "badvalue", "info": f"websim needs {wrong[0]}={need[wrong[0]]}."}
            self._json(200, {"error": error, "servedby": "websim"})
            return
        search = query.get("gsrsearch", "")
        words = [w for w in search.split() if ":" not in w]
        bitmap_only = "filetype:bitmap" in search.lower().split()
        cls = sim.find_class(" ".join(words))
        items = (
            [] if cls is None else [sim.item("commons", cls, i) for i in range(sim.classes[cls])]
        )
        if bitmap_only and not sim.faults.ignore_filters:
            items = [it for it in items if not it.svg]
        try:
            offset = int(query.get("gsroffset", "0") or 0)
            limit_text = query.get("gsrlimit", "10")
            limit = 500 if limit_text == "max" else int(limit_text)
            width = int(query["iiurlwidth"]) if query.get("iiurlwidth") else None
        except ValueError:
            self._json(200, {"error": {"code": "badinteger", "info": "not an integer"}})
            return
        limit = max(1, min(limit, 500))
        chunk = items[offset : offset + limit]
        out: dict[str, Any] = {"batchcomplete": True}
        if offset + limit < len(items):
            out["continue"] = {"gsroffset": offset + limit, "continue": "gsroffset||"}
        if chunk:
            pages = [self._co_page(it, offset + k + 1, width) for k, it in enumerate(chunk)]
            pages.sort(key=lambda p: p["pageid"])  # by page id, as the API lists them
            out["query"] = {"pages": pages}
        self._json(200, out)

    def _co_page(self, it: SimItem, rank: int, width: int | None) -> dict[str, Any]:
        sim = self.server.sim
        short, lic_url, lic = (it.licence_code, it.licence_url or "", "")
        for entry in (*_CO_OPEN, _CO_NC, _CO_UNKNOWN):
            if entry[0] == short:
                lic = entry[2]
        pd = short == "Public domain"
        meta: dict[str, str] = {
            "ObjectName": it.title.removeprefix("File:").rsplit(".", 1)[0],
            "ImageDescription": f"<p>A <b>{it.cls}</b> in the snow &amp; wind.\n</p>",
            "Credit": '<span class="int-own-work" lang="en">Own work</span>',
            "LicenseShortName": short,
            "UsageTerms": "Public domain" if pd else f"Creative Commons {short}",
            "AttributionRequired": "false" if pd else "true",
            "License": lic,
            "Copyrighted": "False" if pd else "True",
        }
        if lic_url:
            meta["LicenseUrl"] = lic_url
        if it.creator is not None:
            person, _, rest = it.creator.partition(" & ")
            user = quote(person.replace(" ", "_"))
            meta["Artist"] = (
                f'<a href="//commons.wikimedia.org/wiki/User:{user}" title="User:{person}">'
                f'{_html(person)}</a> &amp; <span class="x">{_html(rest)}</span>'
            )
        original = sim.download_url(it)
        info: dict[str, Any] = {
            "size": 12345,
            "width": it.width,
            "height": it.height,
            "url": original,
            "descriptionurl": it.page,
            "descriptionshorturl": sim.url(f"/w/index.php?curid={_pageid(it)}"),
            "mime": "image/svg+xml" if it.svg else "image/jpeg",
            "extmetadata": {
                k: {"value": v, "source": "commons-desc-page", "hidden": ""}
                for k, v in meta.items()
            },
        }
        if width is not None:
            if width < it.width and original == it.url:
                path = urlsplit(it.url).path.replace("/media/", "/thumb/", 1)
                info["thumburl"] = sim.url(f"{path}?width={width}")
                info["thumbwidth"] = width
                info["thumbheight"] = max(1, round(it.height * width / it.width))
            else:
                info["thumburl"] = original
                info["thumbwidth"] = it.width
                info["thumbheight"] = it.height
        return {
            "pageid": _pageid(it),
            "ns": 6,
            "title": it.title,
            "index": rank,
            "imagerepository": "local",
            "imageinfo": [info],
        }

    def _media(self, path: str, query: dict[str, str], form: dict[str, str], rule: Any) -> None:
        sim = self.server.sim
        parts = path.strip("/").split("/")  # media|thumb, api, slug, I.ext
        if len(parts) != 4:
            self._unknown(path, query, form, rule)
            return
        _, api, cls_slug, name = parts
        cls = next((c for c in sim.classes if slug(c) == cls_slug), None)
        stem, _, ext = name.partition(".")
        if cls is None or not stem.isdigit() or int(stem) >= sim.classes[cls]:
            self._unknown(path, query, form, rule)
            return
        if ext == "svg":
            self._send(200, _SVG, "image/svg+xml")
            return
        width = int(query["width"]) if parts[0] == "thumb" and query.get("width") else None
        self._send(200, sim.image_bytes(api, cls, int(stem), width), "image/jpeg")

    def _page(self, path: str, query: dict[str, str], form: dict[str, str], rule: Any) -> None:
        self._send(200, b"<!doctype html><title>page</title><p>A landing page.</p>", "text/html")

    def _redirect(self, path: str, query: dict[str, str], form: dict[str, str], rule: Any) -> None:
        self._send_redirect(query.get("to", "/"))

    def _bad(self, path: str, query: dict[str, str], form: dict[str, str], rule: Any) -> None:
        sim = self.server.sim
        name = path.removeprefix("/bad/").rsplit(".", 1)[0]
        first = next(iter(sim.classes))
        if name == "html":
            body = b"<!doctype html><html><body><h1>Not an image</h1></body></html>"
            self._send(200, body, "image/jpeg")
        elif name == "404":
            self._send(404, b"<h1>Not Found</h1>", "text/html")
        elif name == "loop":
            n = int(query.get("n", "0") or 0)
            self._send_redirect(f"/bad/loop.jpg?n={n + 1}")
        elif name == "redirect-out":
            self._send_redirect(sim.other_base_url + f"/media/openverse/{slug(first)}/0.jpg")
        elif name == "trickle":
            self._trickle(sim.image_bytes("openverse", first, 0), float(query.get("seconds", "30")))
        elif name in ("huge", "huge-chunked"):
            self._huge(int(float(query.get("mb", "64")) * 2**20), chunked=name == "huge-chunked")
        else:
            self._unknown(path, query, form, rule)

    def _trickle(self, data: bytes, seconds: float) -> None:
        self._rec.status = 200
        step = 16
        pause = seconds / max(1, len(data) // step)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for start in range(0, len(data), step):
                self.wfile.write(data[start : start + step])
                self.wfile.flush()
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _huge(self, size: int, *, chunked: bool) -> None:
        self._rec.status = 200
        sim = self.server.sim
        block = b"\xff\xd8\xff\xe0" + b"\0" * (2**16 - 4)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(size))
            self.end_headers()
            left = size
            while left > 0:
                part = block[: min(left, len(block))]
                if chunked:
                    self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                else:
                    self.wfile.write(part)
                sim._add_huge(len(part))
                left -= len(part)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True


def _route(method: str, path: str) -> str:
    if path == "/v1/auth_tokens/token/" and method == "POST":
        return "token"
    if path in ("/v1/images/", "/v1/images") and method in ("GET", "HEAD"):
        return "openverse"
    if path == "/w/api.php":
        return "commons"
    if path.startswith(("/media/", "/thumb/")):
        return "media"
    if path.startswith(("/pages/", "/wiki/", "/people/")):
        return "page"
    if path == "/redirect":
        return "redirect"
    if path.startswith("/bad/"):
        return "bad"
    return "unknown"


def _stems(text: str) -> set[str]:
    """Lower-case words without punctuation or a plural ending: "Red foxes," → {"red", "fox"}."""
    out = set()
    for raw in text.lower().split():
        word = raw.strip(".,;:!?\"'()[]")
        if word.endswith(("xes", "ses", "ches", "shes")):
            word = word[:-2]
        elif word.endswith("s") and not word.endswith("ss") and len(word) > 3:
            word = word[:-1]
        if word:
            out.add(word)
    return out


def _pageid(it: SimItem) -> int:
    return 1000 + zlib.crc32(f"{it.cls}|{it.index}".encode()) % 9_000_000


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&#039;")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
