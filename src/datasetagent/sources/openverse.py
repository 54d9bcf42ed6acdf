"""Openverse (https://api.openverse.org): openly licensed images from many collections.

``GET /v1/images/?q=&page=&page_size=&license=&mature=false``. Anonymous use allows 20 results
a page and small daily limits; with ``OPENVERSE_CLIENT_ID`` and ``OPENVERSE_CLIENT_SECRET`` set
(register at https://api.openverse.org/v1/#tag/auth/operation/register), the source asks
``POST /v1/auth_tokens/token/`` for an access token (form-encoded client credentials), keeps it
in memory, renews it a minute before it expires (or once when the API stops accepting it), and
sends it as ``Authorization: Bearer``; pages then hold 100 results (option ``page_size``, up to
500). Either way the API
serves at most 20 pages a query. The licence filter is sent as the codes the spec's policy
allows and checked again on every result; mature results are asked to be left out, and left
out here too. Credentials appear in no candidate, message, log line or ``repr``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from datasetagent.errors import ConfigError, SourceError
from datasetagent.licences import licence_url, normalise
from datasetagent.sources.websearch import (
    BITMAP_TYPES,
    WEB_SEARCHES,
    Screen,
    SearchPage,
    api_address,
    dump_cursor,
    int_field,
    is_http_url,
    load_cursor,
    text_field,
)
from datasetagent.spec import DatasetSpec, LicencePolicy, SourceSpec
from datasetagent.store import Candidate, WebInfo
from datasetagent.web.html import to_text
from datasetagent.web.http import FetchError, WebClient

DEFAULT_BASE_URL = "https://api.openverse.org"
CLIENT_ID_VAR = "OPENVERSE_CLIENT_ID"
CLIENT_SECRET_VAR = "OPENVERSE_CLIENT_SECRET"
#: The API's limits (``api/conf/settings``: MAX_ANONYMOUS_PAGE_SIZE, MAX_AUTHED_PAGE_SIZE,
#: MAX_PAGINATION_DEPTH).
MAX_ANONYMOUS_PAGE_SIZE = 20
MAX_AUTHED_PAGE_SIZE = 500
MAX_PAGES = 20
#: Results a page with client credentials unless ``page_size`` says otherwise (the API allows
#: 500, but large pages answer slowly, and a build rarely needs that many from one query).
DEFAULT_AUTHED_PAGE_SIZE = 100
#: A token is renewed this many seconds before it expires.
TOKEN_MARGIN = 60.0
#: The licence codes the API filters by (``api/constants/licenses.py``), with a version to
#: normalise each by (any version: the policy looks at the kind of licence only).
LICENCE_CODES = (
    ("by", "4.0"),
    ("by-sa", "4.0"),
    ("by-nd", "4.0"),
    ("by-nc", "4.0"),
    ("by-nc-sa", "4.0"),
    ("by-nc-nd", "4.0"),
    ("cc0", "1.0"),
    ("pdm", "1.0"),
    ("sampling+", "1.0"),
    ("nc-sampling+", "1.0"),
)
_TEXT_LIMIT = 500


def licence_codes(policy: LicencePolicy) -> tuple[str, ...]:
    """The Openverse ``license`` codes whose licences ``policy`` allows."""
    return tuple(code for code, version in LICENCE_CODES if policy.allows(normalise(code, version)))


class _Credentials:
    """An OAuth2 client id and secret that never show in a repr or a message."""

    __slots__ = ("client_id", "client_secret")

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret

    def __repr__(self) -> str:
        return "<credentials hidden>"

    def __reduce__(self) -> Any:  # never written to disk with a pickled source
        raise TypeError("Openverse credentials are not to be pickled")


@WEB_SEARCHES.register("openverse")
class OpenverseSearch:
    """The Openverse image search; see the module docstring. ``env`` is where the credentials
    are read from (``os.environ``); ``clock`` times the token's life (``time.monotonic``)."""

    kind = "openverse"

    def __init__(
        self,
        source: SourceSpec,
        spec: DatasetSpec,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = api_address(source, DEFAULT_BASE_URL)
        self.policy = spec.licences
        self.codes = licence_codes(self.policy)
        self._credentials = _read_credentials(os.environ if env is None else env)
        self._clock = clock
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        limit = MAX_AUTHED_PAGE_SIZE if self.authenticated else MAX_ANONYMOUS_PAGE_SIZE
        default = DEFAULT_AUTHED_PAGE_SIZE if self.authenticated else MAX_ANONYMOUS_PAGE_SIZE
        wanted = _page_size_option(source.options.get("page_size"), default)
        self.page_size = min(wanted, limit)
        self._capped = wanted > limit
        self.host_limits: Mapping[str, int] = {}

    @property
    def authenticated(self) -> bool:
        return self._credentials is not None

    def __repr__(self) -> str:
        auth = "client credentials" if self.authenticated else "anonymous"
        return f"OpenverseSearch({self.base_url!r}, {auth}, page_size={self.page_size})"

    def describe(self) -> str:
        if self.authenticated:
            how = f"with client credentials: {self.page_size} results a page, {MAX_PAGES} pages"
        else:
            how = (
                f"anonymous: {self.page_size} results a page, {MAX_PAGES} pages, small daily "
                f"limits; set {CLIENT_ID_VAR} and {CLIENT_SECRET_VAR} for more"
            )
        if self._capped:
            how += f"; page_size capped at {self.page_size}"
        codes = ", ".join(self.codes) or "none"
        return f"openverse at {self.base_url} ({how}); licences {codes}; mature results left out"

    # -- searching -----------------------------------------------------------------------------
    async def search(self, client: WebClient, query: str, cursor: str | None) -> SearchPage:
        state = load_cursor(self.kind, cursor)
        offset = state.get("offset", 0)
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise SourceError(
                f"openverse: the saved search position {cursor!r} has no valid offset; start a "
                "new run folder"
            )
        page, skip = offset // self.page_size + 1, offset % self.page_size
        if page > MAX_PAGES or not self.codes:
            return SearchPage((), None, {})
        params: dict[str, str | int | float] = {
            "q": query,
            "page": page,
            "page_size": self.page_size,
            "license": ",".join(self.codes),
            "mature": "false",
        }
        data = await self._get(client, params)
        results = data.get("results")
        if not isinstance(results, list):  # the API's failure: asked again on --resume
            raise FetchError(
                "bad-answer",
                "the answer has no results list; is the address an Openverse API (e.g. "
                "https://api.openverse.org)?",
                f"{self.base_url}/v1/images/",
            )
        screen = Screen(self.policy)
        found = [c for r in results[skip:] if (c := self._candidate(r, screen)) is not None]
        pages = int_field(data.get("page_count"))
        last = min(pages, MAX_PAGES) if pages is not None else MAX_PAGES
        more = bool(results) and page < last
        if pages is None and len(results) < self.page_size:
            more = False
        next_cursor = dump_cursor({"offset": page * self.page_size}) if more else None
        return SearchPage(tuple(found), next_cursor, dict(screen.dropped))

    async def _get(self, client: WebClient, params: dict[str, str | int | float]) -> dict[str, Any]:
        url = f"{self.base_url}/v1/images/"
        for renewed in (False, True):
            headers = await self._authorization(client, renew=renewed)
            try:
                data = await client.get_json(url, params=params, headers=headers)
            except FetchError as exc:
                if headers and not renewed and _status(exc) in (401, 403):
                    continue  # the token stopped being accepted: one new token, one more try
                if exc.reason == "rate-limited" and not self.authenticated:
                    raise FetchError(
                        exc.reason,
                        f"{exc.detail}; anonymous Openverse use has small limits: set "
                        f"{CLIENT_ID_VAR} and {CLIENT_SECRET_VAR}",
                        exc.url,
                    ) from None
                raise
            if not isinstance(data, dict):
                raise FetchError("bad-answer", "the answer is no JSON object", url)
            return data
        raise AssertionError("unreachable: the second try returns or raises")

    def _candidate(self, result: object, screen: Screen) -> Candidate | None:
        if not isinstance(result, dict):
            screen.drop("malformed")
            return None
        if result.get("mature") is True:
            screen.drop("mature")
            return None
        url = result.get("url")
        if not is_http_url(url):
            screen.drop("no-url")
            return None
        filetype = (text_field(result.get("filetype")) or "").lower()
        if filetype and filetype not in BITMAP_TYPES:
            screen.drop("not-an-image-type")
            return None
        given_url = text_field(result.get("license_url"))
        licence = normalise(
            text_field(result.get("license")), text_field(result.get("license_version")), given_url
        )
        if screen.licence_refused(licence):
            return None
        page = result.get("foreign_landing_url")
        return Candidate(
            source_kind=self.kind,
            location=url,
            licence=licence,
            creator=to_text(text_field(result.get("creator")), limit=_TEXT_LIMIT) or None,
            web=WebInfo(
                page=page if is_http_url(page) else None,
                licence_url=given_url or licence_url(licence),
                title=to_text(text_field(result.get("title")), limit=_TEXT_LIMIT) or None,
                width=int_field(result.get("width")),
                height=int_field(result.get("height")),
            ),
        )

    # -- the access token ----------------------------------------------------------------------
    async def _authorization(self, client: WebClient, *, renew: bool) -> dict[str, str]:
        if self._credentials is None:
            return {}
        async with self._lock():
            stale = self._token is None or self._clock() >= self._token_expires - TOKEN_MARGIN
            if renew or stale:
                await self._fetch_token(client)
        return {"Authorization": f"Bearer {self._token}"}

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._token_lock is None or self._token_lock[0] is not loop:
            self._token_lock = (loop, asyncio.Lock())
        return self._token_lock[1]

    async def _fetch_token(self, client: WebClient) -> None:
        assert self._credentials is not None
        url = f"{self.base_url}/v1/auth_tokens/token/"
        form = {
            "grant_type": "client_credentials",
            "client_id": self._credentials.client_id,
            "client_secret": self._credentials.client_secret,
        }
        started = self._clock()
        try:
            data = await client.post_form(url, form)
        except FetchError as exc:
            if _status(exc) in (400, 401, 403):
                raise ConfigError(
                    f"openverse at {self.base_url} refused the client credentials "
                    f"({exc.detail}): check {CLIENT_ID_VAR} and {CLIENT_SECRET_VAR}, or unset "
                    "both to search anonymously"
                ) from None
            raise
        token = data.get("access_token") if isinstance(data, dict) else None
        lifetime = data.get("expires_in") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token.strip():
            raise FetchError(
                "bad-answer", "the answer to the token request has no access token", url
            )
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = TOKEN_MARGIN * 2  # unsaid: use it briefly, then ask again
        self._token = token.strip()
        self._token_expires = started + float(lifetime)


def _read_credentials(env: Mapping[str, str]) -> _Credentials | None:
    client_id = (env.get(CLIENT_ID_VAR) or "").strip()
    secret = (env.get(CLIENT_SECRET_VAR) or "").strip()
    if not client_id and not secret:
        return None
    if not client_id or not secret:
        have, missing = (
            (CLIENT_ID_VAR, CLIENT_SECRET_VAR) if client_id else (CLIENT_SECRET_VAR, CLIENT_ID_VAR)
        )
        raise ConfigError(
            f"{have} is set but {missing} is not: set both to use Openverse with client "
            "credentials, or neither to search anonymously"
        )
    return _Credentials(client_id, secret)


def _page_size_option(value: object, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"openverse option page_size={value!r} must be a whole number of results, 1 to "
            f"{MAX_AUTHED_PAGE_SIZE} (at most {MAX_ANONYMOUS_PAGE_SIZE} without credentials)"
        )
    return value


def _status(exc: Exception) -> int | None:
    """The HTTP status a ``FetchError`` reports, if it is one."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    detail = str(getattr(exc, "detail", ""))
    words = detail.split()
    if len(words) >= 2 and words[0] == "HTTP" and words[1].isdigit():
        return int(words[1])
    return None
