"""Web image searches (Openverse, Wikimedia Commons): one page of results at a time.

The pipeline drives a :class:`WebSearch`: it asks for a page of results for a query, passes the
page's ``cursor`` back for the next one, and downloads the candidates itself. A search applies
the spec's licence policy and drops mature results *before* anything is downloaded, counting
what it dropped by reason. It never downloads images and never prints.

Searches are found by kind in ``WEB_SEARCHES`` (built-ins: ``openverse``, ``wikimedia``;
plugins through the ``datasetagent.web_searches`` entry-point group)::

    search = open_search(source_spec, spec)
    log(search.describe())
    async with WebClient(policy, user_agent=user_agent(), limits=Limits(
        host_limits=host_limits([search]))) as client:
        page = await search.search(client, "red fox", None)
        while page.cursor is not None:
            page = await search.search(client, "red fox", page.cursor)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeGuard

from datasetagent.errors import ConfigError, SourceError
from datasetagent.registry import Registry
from datasetagent.spec import DatasetSpec, LicencePolicy, SourceSpec
from datasetagent.store import Candidate

if TYPE_CHECKING:
    from datasetagent.web.http import WebClient

#: Why a result was left out before it became a candidate.
DROP_REASONS = ("mature", "licence", "no-url", "not-an-image-type", "malformed")

#: File types (Openverse ``filetype``, Commons ``mime`` subtype) taken as photos to decode.
BITMAP_TYPES = frozenset({"jpg", "jpeg", "png", "gif", "webp", "bmp", "tif", "tiff"})


@dataclass(frozen=True)
class SearchPage:
    """One page of a search.

    ``results``: candidates with ``source_kind`` the search's kind, ``location`` the image URL
    to download, a normalised licence the policy allows, a plain-text creator, and ``web`` (page,
    licence URL, title, width and height); ``query`` and ``class_hint`` are the pipeline's to
    fill. ``cursor``: opaque text to pass back for the next page, None when there is none.
    ``dropped``: results left out before becoming candidates, by reason (see ``DROP_REASONS``).
    """

    results: tuple[Candidate, ...]
    cursor: str | None
    dropped: Mapping[str, int] = field(default_factory=dict)


class WebSearch(Protocol):
    """A web image search API; see the module docstring."""

    kind: str
    #: Per-host caps on requests in flight that the API asks for (for ``Limits.host_limits``).
    host_limits: Mapping[str, int]

    async def search(self, client: WebClient, query: str, cursor: str | None) -> SearchPage: ...

    def describe(self) -> str:
        """One line for the user: the API, how it is used, its limits and how to raise them."""
        ...


WebSearchFactory = Callable[[SourceSpec, DatasetSpec], WebSearch]

WEB_SEARCHES: Registry[WebSearchFactory] = Registry("web search", "datasetagent.web_searches")


def open_search(source: SourceSpec, spec: DatasetSpec) -> WebSearch:
    """The search ``source.kind`` names, set up for ``spec`` (its licence policy, image size)."""
    _load_builtins()
    return WEB_SEARCHES.get(source.kind)(source, spec)


def host_limits(searches: Iterable[WebSearch]) -> dict[str, int]:
    """The per-host caps every search asks for (the smallest where two name one host)."""
    caps: dict[str, int] = {}
    for search in searches:
        for host, cap in search.host_limits.items():
            caps[host] = min(cap, caps.get(host, cap))
    return caps


def api_address(source: SourceSpec, default: str) -> str:
    """The address a search's API is asked at: the source's ``base_url`` (checked to be an
    http(s) URL httpx can send to) or the public ``default``; without a trailing ``/``."""
    import httpx

    text = (source.base_url or default).rstrip("/")
    fix = f"give e.g. {source.kind}@http://127.0.0.1:8080"
    try:
        url = httpx.URL(text)
        host = url.host  # idna's error (a ValueError) shows only when the host is read
    except (httpx.InvalidURL, ValueError) as exc:
        raise ConfigError(f"{source.kind}: {text!r} is not a valid URL ({exc}); {fix}") from None
    if url.scheme not in ("http", "https") or not host:
        raise ConfigError(f"{source.kind}: {text!r} is not a valid URL (not http(s)); {fix}")
    return text


def _load_builtins() -> None:
    from datasetagent.sources import openverse, wikimedia  # noqa: F401  (register themselves)


class Screen:
    """Counts what a page leaves out; ``licence`` applies the policy to a normalised licence."""

    def __init__(self, policy: LicencePolicy) -> None:
        self.policy = policy
        self.dropped: Counter[str] = Counter()

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def licence_refused(self, licence: str) -> bool:
        """True (and counted) when the policy refuses ``licence``."""
        if self.policy.refusal(licence) is None:
            return False
        self.drop("licence")
        return True


def load_cursor(kind: str, cursor: str | None) -> dict[str, object]:
    """The JSON object a cursor holds ({} for None); a damaged cursor is a ``SourceError``."""
    if cursor is None:
        return {}
    try:
        value = json.loads(cursor)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise SourceError(
            f"{kind}: the saved search position {cursor[:80]!r} is not one this source wrote; "
            "start a new run folder (the run database may be damaged)"
        )
    return value


def dump_cursor(value: Mapping[str, object]) -> str:
    return json.dumps(dict(value), sort_keys=True, separators=(",", ":"))


def text_field(value: object) -> str | None:
    """A string field of an API answer, stripped; None for anything else or empty."""
    if not isinstance(value, str):
        return None
    return value.strip() or None


def int_field(value: object) -> int | None:
    """A positive whole number (or its digits) of an API answer; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value) or None
    return None


def is_http_url(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))
