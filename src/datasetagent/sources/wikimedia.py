"""Wikimedia Commons (https://commons.wikimedia.org): freely licensed photos, through the
MediaWiki Action API.

One request a page: a full-text search of the File namespace for bitmaps (``generator=search``,
``gsrsearch=QUERY filetype:bitmap``) with each file's URL, size, type and licence metadata
(``prop=imageinfo``, ``iiprop=url|size|mime|extmetadata``) and a thumbnail URL at the width the
spec asks for (``iiurlwidth``). The answer's ``continue`` object, passed back whole, is the next
page's position. Every request sends ``maxlag=5``; a "maxlag" error (HTTP 200, ``Retry-After``)
is waited out and retried by the client a bounded number of times. Wikimedia's policies ask for
a descriptive User-Agent (the client sends one) and few requests at once (``host_limits``).

``extmetadata`` values are HTML (``Artist``, ``LicenseShortName``, ``ObjectName`` …): they are
recorded as plain text. Some files name no ``Artist``: their creator is left empty, and the
attribution points to the file's page.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from datasetagent.errors import ConfigError, SourceError
from datasetagent.licences import UNKNOWN, licence_url, normalise
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
from datasetagent.spec import DatasetSpec, SourceSpec
from datasetagent.store import Candidate, WebInfo
from datasetagent.web.html import to_text
from datasetagent.web.http import FetchError, WebClient

DEFAULT_BASE_URL = "https://commons.wikimedia.org"
#: Results a page: MediaWiki scales at most 50 thumbnails a request.
MAX_PAGE_SIZE = 50
#: Thumbnail width when the spec asks for no image size.
DEFAULT_WIDTH = 1024
#: Seconds of database lag beyond which the API asks us to wait (Wikimedia's recommendation).
MAXLAG = 5
#: Requests in flight to one Wikimedia host.
HOST_CAP = 3
UPLOAD_HOST = "upload.wikimedia.org"
#: The metadata fields asked for (``iiextmetadatafilter``).
METADATA = (
    "Artist",
    "Credit",
    "LicenseShortName",
    "LicenseUrl",
    "License",
    "UsageTerms",
    "AttributionRequired",
    "ObjectName",
    "ImageDescription",
)
_FIXED = frozenset(
    {"action", "format", "formatversion", "generator", "gsrnamespace", "gsrsearch", "gsrlimit"}
    | {"prop", "iiprop", "iiurlwidth", "iiextmetadatafilter", "maxlag"}
)
_TEXT_LIMIT = 500


def maxlag_error(document: object) -> str | None:
    """Why to try again: MediaWiki's ``maxlag`` error, which comes with HTTP 200."""
    if not isinstance(document, dict):
        return None
    error = document.get("error")
    if isinstance(error, dict) and error.get("code") == "maxlag":
        info = text_field(error.get("info")) or "the database replicas are lagging"
        return f"maxlag: {info}"
    return None


@WEB_SEARCHES.register("wikimedia")
class WikimediaSearch:
    """The Wikimedia Commons file search; see the module docstring."""

    kind = "wikimedia"

    def __init__(self, source: SourceSpec, spec: DatasetSpec) -> None:
        self.base_url = api_address(source, DEFAULT_BASE_URL)
        self.api_url = f"{self.base_url}/w/api.php"
        self.policy = spec.licences
        size = spec.image.size
        self.width = max(size) if size is not None else DEFAULT_WIDTH
        self.page_size = _page_size_option(source.options.get("page_size"))
        host = httpx.URL(self.base_url).host
        caps = {host: HOST_CAP}
        if source.base_url is None:
            caps[UPLOAD_HOST] = HOST_CAP  # where Commons' files and thumbnails come from
        self.host_limits: Mapping[str, int] = caps

    def __repr__(self) -> str:
        return f"WikimediaSearch({self.base_url!r}, page_size={self.page_size}, width={self.width})"

    def describe(self) -> str:
        return (
            f"wikimedia commons at {self.base_url} ({self.page_size} results a page, bitmaps "
            f"at most {self.width} px wide, {HOST_CAP} requests at a time, maxlag={MAXLAG}); "
            f"licences {self.policy.describe()}"
        )

    async def search(self, client: WebClient, query: str, cursor: str | None) -> SearchPage:
        position = load_cursor(self.kind, cursor)
        bad = [k for k, v in position.items() if k in _FIXED or not isinstance(v, str | int)]
        if bad:
            raise SourceError(
                f"wikimedia: the saved search position {cursor!r} is not one this source "
                "wrote; start a new run folder"
            )
        params: dict[str, str | int | float] = {
            "action": "query",
            "format": "json",
            "formatversion": 2,
            "generator": "search",
            "gsrnamespace": 6,
            "gsrsearch": f"{query} filetype:bitmap",
            "gsrlimit": self.page_size,
            "prop": "imageinfo",
            "iiprop": "url|size|mime|extmetadata",
            "iiurlwidth": self.width,
            "iiextmetadatafilter": "|".join(METADATA),
            "maxlag": MAXLAG,
        }
        params.update({k: v for k, v in position.items() if isinstance(v, str | int)})
        try:
            data = await client.get_json(self.api_url, params=params, retry_when=maxlag_error)
        except FetchError as exc:
            if exc.detail.startswith("maxlag"):
                raise FetchError(
                    exc.reason,
                    f"{exc.detail}; Wikimedia's servers are busy, try again later",
                    exc.url,
                ) from None
            raise
        # the API's failures, not this query's: the source is asked again on --resume
        if not isinstance(data, dict):
            raise FetchError("bad-answer", "the answer is no JSON object", self.api_url)
        error = data.get("error")
        if isinstance(error, dict):
            code = text_field(error.get("code")) or "error"
            info = text_field(error.get("info")) or ""
            raise FetchError(
                "bad-answer",
                f"the API refused the search {query!r}: {code}: {info}; is the address a "
                "MediaWiki site (e.g. https://commons.wikimedia.org)?",
                self.api_url,
            )
        query_part = data.get("query")
        pages = query_part.get("pages") if isinstance(query_part, dict) else None
        if not isinstance(pages, list):
            pages = []
        ranked = sorted(
            (p for p in pages if isinstance(p, dict)), key=lambda p: int_field(p.get("index")) or 0
        )
        screen = Screen(self.policy)
        found = [c for p in ranked if (c := self._candidate(p, screen)) is not None]
        screen.dropped["malformed"] += len(pages) - len(ranked)
        more = _continuation(data.get("continue"))
        next_cursor = dump_cursor(more) if more else None
        dropped = {k: v for k, v in screen.dropped.items() if v}
        return SearchPage(tuple(found), next_cursor, dropped)

    def _candidate(self, page: dict[str, Any], screen: Screen) -> Candidate | None:
        infos = page.get("imageinfo")
        info = infos[0] if isinstance(infos, list) and infos else None
        if not isinstance(info, dict):
            # a page with no file, or one whose details came in an earlier batch of the same
            # results (MediaWiki repeats the pages while it continues their imageinfo)
            if page.get("missing") or page.get("invalid") or page.get("imagerepository") == "":
                screen.drop("no-url")
            return None
        mime = (text_field(info.get("mime")) or "").lower()
        kind, _, subtype = mime.partition("/")
        if kind != "image" or subtype not in BITMAP_TYPES:
            screen.drop("not-an-image-type")
            return None
        original, thumb = info.get("url"), info.get("thumburl")
        width, height = int_field(info.get("width")), int_field(info.get("height"))
        location = original
        if is_http_url(thumb) and (width is None or self.width < width):
            location = thumb
            width, height = int_field(info.get("thumbwidth")), int_field(info.get("thumbheight"))
        if not is_http_url(location):
            screen.drop("no-url")
            return None
        meta = _metadata(info.get("extmetadata"))
        given_url = meta.get("LicenseUrl") or None
        licence = normalise(meta.get("LicenseShortName"), url=given_url)
        for other in ("License", "UsageTerms"):  # the licence's code, its long name
            if licence == UNKNOWN and meta.get(other):
                licence = normalise(meta[other], url=given_url)
        if screen.licence_refused(licence):
            return None
        if given_url is not None and given_url.startswith("//"):
            given_url = "https:" + given_url
        title = meta.get("ObjectName") or _file_name(text_field(page.get("title")))
        landing = info.get("descriptionurl")
        return Candidate(
            source_kind=self.kind,
            location=location,
            licence=licence,
            creator=meta.get("Artist") or None,
            web=WebInfo(
                page=landing if is_http_url(landing) else None,
                licence_url=given_url if is_http_url(given_url) else licence_url(licence),
                title=title or None,
                width=width,
                height=height,
            ),
        )


def _continuation(value: object) -> dict[str, str | int]:
    """What of an answer's ``continue`` object goes back with the next request: its text and
    number values (all MediaWiki sends), never a parameter this source sets itself."""
    if not isinstance(value, dict):
        return {}
    return {
        k: v
        for k, v in value.items()
        if isinstance(k, str)
        and k not in _FIXED
        and isinstance(v, str | int)
        and not isinstance(v, bool)
    }


def _metadata(value: object) -> dict[str, str]:
    """``extmetadata`` as plain text: each field's HTML ``value``, tags and entities gone."""
    out: dict[str, str] = {}
    if not isinstance(value, dict):
        return out
    for name in METADATA:
        field = value.get(name)
        raw = field.get("value") if isinstance(field, dict) else None
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            raw = str(raw)
        if isinstance(raw, str):
            text = to_text(raw, limit=_TEXT_LIMIT)
            if text:
                out[name] = text
    return out


def _file_name(title: str | None) -> str:
    """``File:Red fox 001.jpg`` → ``Red fox 001``."""
    if not title:
        return ""
    name = title.split(":", 1)[1] if ":" in title else title
    return name.rsplit(".", 1)[0].strip()


def _page_size_option(value: object) -> int:
    if value is None:
        return MAX_PAGE_SIZE
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PAGE_SIZE:
        raise ConfigError(
            f"wikimedia option page_size={value!r} must be a whole number from 1 to "
            f"{MAX_PAGE_SIZE} (MediaWiki scales at most {MAX_PAGE_SIZE} thumbnails a request)"
        )
    return value
