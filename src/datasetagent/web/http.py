"""The async HTTP client every web source and the download stage use.

:class:`WebClient` wraps one ``httpx.AsyncClient`` whose connections all go through the SSRF
guard (:mod:`datasetagent.web.guard`). It follows redirects itself, so every hop is counted
and guarded; caps concurrency in total and per host; paces requests to a host (a minimum
interval, a server's ``Retry-After`` and ``X-RateLimit-*`` headers); retries 429, 5xx and
dropped connections with exponential backoff and full jitter; and bounds every download in
size and time. A failure is a :class:`FetchError` whose ``reason`` (one of :data:`REASONS`)
is what a run records as the rejection reason.

Proxy environment variables are ignored on purpose (``trust_env=False``): a proxy resolves
names itself, and the guard would only ever see the proxy's address.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import random
import re
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self, TypeVar

import httpcore
import httpx

from datasetagent import __version__
from datasetagent.errors import ConfigError, SourceError, UsageError
from datasetagent.tools.decode import sniff
from datasetagent.web.guard import AddressPolicy, BlockedAddress, GuardedBackend, Resolver
from datasetagent.web.guard import system_resolve as _system_resolve

log = logging.getLogger(__name__)

K = TypeVar("K")

REASONS = (
    "bad-url",  # not an http(s) URL, or unparseable
    "blocked-address",  # the guard refused the address (loopback, private, …)
    "connection",  # could not connect, or the connection broke, after the retries
    "timeout",  # connect/read timeout after the retries, or the whole download took too long
    "too-many-redirects",
    "http-error",  # a status that is not success (404, 403, 5xx after retries …)
    "rate-limited",  # 429 after the retries, or a Retry-After longer than we wait
    "too-large",  # over Limits.max_bytes (max_json_bytes), by Content-Length or while streaming
    "not-an-image",  # the body's first bytes are no image format
    "not-json",  # an API answered with something that is not JSON
    "bad-answer",  # an API's JSON is an error document, or not of the shape the API documents
)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_SNIFF_BYTES = 16
_SWEEP_AT = 512  # per-host states kept before idle ones are forgotten
_HOST_MEMORY = 60.0  # seconds a host's request times are kept after its last request
_RATE_PREFIXES = (b"x-ratelimit-", b"ratelimit-re")
_HOMEPAGE = "https://github.com/datasetagent/datasetagent"
#: The codings an API answer may come in: the ones ``_Inflater`` decodes (httpx would also
#: offer br and zstd where their packages are installed).
_ENCODINGS = "gzip, deflate"


def user_agent(contact: str | None = None) -> str:
    """The User-Agent every request sends; ``contact`` (an e-mail or URL) is added when given.

    Wikimedia's policy asks for a way to reach the operator; library-default agents are blocked.
    """
    if contact is not None and (not contact.strip() or not contact.isprintable()):
        raise UsageError(
            f"contact {contact!r} cannot go in a User-Agent header: give one printable line "
            "such as an e-mail address or a URL"
        )
    extra = f"; {contact.strip()}" if contact else ""
    return f"datasetagent/{__version__} (+{_HOMEPAGE}{extra})"


def sniff_image(head: bytes) -> str | None:
    """The image format (``"jpeg"``, ``"png"``, …) the leading bytes announce, or None."""
    fmt = sniff(head)
    return fmt.lower() if fmt is not None else None


def redact(url: str | httpx.URL) -> str:
    """``url`` without user name and password, for messages and records."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        return str(parsed.copy_with(userinfo=b""))
    except (httpx.InvalidURL, TypeError, ValueError):
        text = str(url)
        return re.sub(r"//[^/@]*@", "//", text)


class FetchError(SourceError):
    """A request that failed; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str, url: str | httpx.URL) -> None:
        self.reason = reason
        self.detail = " ".join(detail.split())
        self.url = redact(url)
        super().__init__(f"{self.reason}: {self.url}: {self.detail}")


@dataclass(frozen=True)
class Fetched:
    """A downloaded image. URLs carry no credentials."""

    url: str  # the final URL, after redirects
    requested: str
    status: int
    content_type: str
    data: bytes
    image_format: str  # sniffed from the bytes: "jpeg", "png", "gif", "webp", …
    redirects: int


@dataclass(frozen=True)
class Limits:
    """How much the client does at once, how long it waits, how hard it tries."""

    per_host: int = 8
    total: int = 32
    connect_timeout: float = 10.0
    read_timeout: float = 20.0  # between two reads
    download_timeout: float = 60.0  # the whole request, body included: a trickle is abandoned
    max_bytes: int = 25 * 2**20
    #: An API answer's limit: a page of results is a few hundred KB, and parsed JSON takes
    #: many times its size in memory.
    max_json_bytes: int = 8 * 2**20
    max_redirects: int = 5
    retries: int = 4
    backoff: float = 0.5  # first retry waits up to this, then doubling (full jitter)
    max_retry_after: float = 120.0  # a longer Retry-After or rate-limit reset fails instead
    host_limits: Mapping[str, int] = field(default_factory=dict)  # per-host cap overrides
    min_interval: float = 0.0  # seconds between two requests to one host
    host_intervals: Mapping[str, float] = field(default_factory=dict)  # per-host overrides

    def __post_init__(self) -> None:
        counts = {"per_host": self.per_host, "total": self.total, **self.host_limits}
        for name, count in counts.items():
            if count < 1:
                raise ConfigError(f"web limit {name}={count} must be at least 1")
        positive: dict[str, float] = {
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "download_timeout": self.download_timeout,
            "max_bytes": self.max_bytes,
            "max_json_bytes": self.max_json_bytes,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"web limit {name}={value} must be positive")
        not_negative: dict[str, float] = {
            "max_redirects": self.max_redirects,
            "retries": self.retries,
            "backoff": self.backoff,
            "max_retry_after": self.max_retry_after,
            "min_interval": self.min_interval,
            **self.host_intervals,
        }
        for name, value in not_negative.items():
            if value < 0:
                raise ConfigError(f"web limit {name}={value} must not be negative")

    def host_cap(self, host: str) -> int:
        """How many requests may run at once against ``host``."""
        return min(self.host_limits.get(host, self.per_host), self.total)

    def host_interval(self, host: str) -> float:
        return self.host_intervals.get(host, self.min_interval)


@dataclass
class WebStats:
    """What the client did: requests sent (each retry and redirect hop counts), retries,
    seconds spent waiting (backoff and pacing), body bytes received, guard refusals."""

    requests: int = 0
    retries: int = 0
    waited: float = 0.0
    bytes: int = 0
    blocked: int = 0


@dataclass
class _Host:
    slots: asyncio.Semaphore
    interval: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_at: float = 0.0  # the earliest next request under the min interval
    paused_until: float = 0.0  # Retry-After / rate-limit headers
    sent: deque[float] = field(default_factory=lambda: deque(maxlen=1024))
    users: int = 0  # requests holding or waiting for a slot
    refused_until: float = 0.0  # a Retry-After too long to wait: fail at once until then


@dataclass
class _Reply:
    url: httpx.URL
    status: int
    headers: httpx.Headers
    data: bytes = b""
    image_format: str = ""


class _Retry(Exception):
    """A failure worth another try: ``error`` if none is left, after ``retry_after`` if set."""

    def __init__(self, error: FetchError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with every connection made through :class:`GuardedBackend`."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        limits: httpx.Limits,
        resolver: Resolver = _system_resolve,
    ) -> None:
        # SSL_CERT_FILE / SSL_CERT_DIR still choose the CA bundle; no proxy is ever used.
        ssl_context = httpx.create_ssl_context(trust_env=True)
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        # httpx has no public way to pass a network backend; its pool is httpcore's public API.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy, resolver=resolver),
        )


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _period(limit: str | None) -> float | None:
    """The window of a Django REST framework rate such as ``20/min`` or ``200/day``."""
    if not limit or "/" not in limit:
        return None
    _, _, unit = limit.partition("/")
    return _PERIODS.get(unit.strip()[:1].lower())


def rate_limit_wait(
    headers: httpx.Headers, sent: Iterable[float], now: float, wall: float
) -> float | None:
    """How long to hold off a host whose last answer says its allowance is used up, or None.

    Openverse (Django REST framework throttles) sends ``X-RateLimit-Limit-<scope>: 20/min`` and
    ``X-RateLimit-Available-<scope>: N`` with no reset time; its window slides, so a slot
    frees one window after the oldest request in it: at the latest one window after the oldest
    request *we* sent within it (``sent``: our send times on the ``now`` clock). Other
    servers send ``X-RateLimit-Remaining`` / ``RateLimit-Remaining`` with a ``…-Reset`` in
    seconds or as a Unix time (compared with ``wall``).
    """
    wait: float | None = None
    for name, value in headers.items():
        lower = name.lower()
        if not lower.startswith("x-ratelimit-available-") or value.strip() != "0":
            continue
        scope = name[len("x-ratelimit-available-") :]
        window = _period(headers.get(f"x-ratelimit-limit-{scope}"))
        if window is None:
            continue
        ours = [t for t in sent if t > now - window]
        until = (min(ours) if ours else now) + window
        wait = max(wait or 0.0, until - now)
    for prefix in ("x-ratelimit-", "ratelimit-"):
        if headers.get(prefix + "remaining", "").strip() != "0":
            continue
        try:
            reset = float(headers.get(prefix + "reset", ""))
        except ValueError:
            continue
        seconds = reset - wall if reset > 1e9 else reset
        wait = max(wait or 0.0, seconds)
    return wait


class WebClient:
    """A guarded, bounded, polite async HTTP client. Use as ``async with WebClient(...)``.

    ``sleep`` and ``clock`` are injectable so tests can see every wait without waiting;
    ``rng`` draws the backoff jitter; ``resolver`` replaces DNS (tests).
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        user_agent: str,
        limits: Limits | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        resolver: Resolver = _system_resolve,
    ) -> None:
        self.policy = policy
        self.limits = limits if limits is not None else Limits()
        self.stats = WebStats()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._hosts: dict[str, _Host] = {}
        self._sweep_at = _SWEEP_AT
        self._total = asyncio.Semaphore(self.limits.total)
        lim = self.limits
        pool = httpx.Limits(max_connections=lim.total, max_keepalive_connections=lim.total)
        self._http = httpx.AsyncClient(
            transport=GuardedTransport(policy, limits=pool, resolver=resolver),
            headers={"User-Agent": user_agent},
            timeout=httpx.Timeout(
                connect=lim.connect_timeout,
                read=lim.read_timeout,
                write=lim.read_timeout,
                pool=lim.download_timeout,
            ),
            follow_redirects=False,
            trust_env=False,
        )

    async def __aenter__(self) -> Self:
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- public calls -------------------------------------------------------------------------

    async def get_json(
        self,
        url: str,
        *,
        params: Mapping[str, str | int | float] | None = None,
        headers: Mapping[str, str] | None = None,
        retry_when: Callable[[object], str | None] | None = None,
    ) -> object:
        """GET a JSON document. ``retry_when(document)`` may name a reason to try again
        (e.g. MediaWiki's ``maxlag`` error, sent with status 200 and ``Retry-After``)."""
        target = _parse(url)
        if params:
            target = target.copy_merge_params(dict(params))
        return await self._json("GET", target, None, headers, retry_when)

    async def post_form(
        self, url: str, data: Mapping[str, str], *, headers: Mapping[str, str] | None = None
    ) -> object:
        """POST a form (``application/x-www-form-urlencoded``) and read a JSON answer.

        Retried like a GET (429, 5xx, dropped connections): use it for endpoints where a
        repeat is harmless, such as Openverse's token endpoint."""
        return await self._json("POST", _parse(url), dict(data), headers, None)

    async def fetch_image(
        self, url: str | httpx.URL, *, headers: Mapping[str, str] | None = None
    ) -> Fetched:
        """Download one image; raises :class:`FetchError` with the rejection reason."""
        target = _parse(url) if isinstance(url, str) else _checked(url)
        sent = {"Accept": "image/*", "Accept-Encoding": "identity", **(headers or {})}
        reply, hops = await self._exchange("GET", target, None, sent, image=True)
        return Fetched(
            url=str(reply.url),  # _exchange strips credentials from every hop
            requested=redact(target) if target.userinfo else str(target),
            status=reply.status,
            content_type=reply.headers.get("content-type", ""),
            data=reply.data,
            image_format=reply.image_format,
            redirects=hops,
        )

    # -- machinery ----------------------------------------------------------------------------

    async def _json(
        self,
        method: str,
        target: httpx.URL,
        form: dict[str, str] | None,
        headers: Mapping[str, str] | None,
        retry_when: Callable[[object], str | None] | None,
    ) -> object:
        decoded: list[object] = []

        def accept(reply: _Reply) -> str | None:
            try:
                value = json.loads(reply.data)
            except ValueError:
                kind = reply.headers.get("content-type", "no content type")
                raise FetchError(
                    "not-json", f"the answer is not JSON ({kind})", reply.url
                ) from None
            except RecursionError:  # json's parser recurses per level of nesting
                raise FetchError(
                    "not-json", "the answer's JSON is nested too deep to read", reply.url
                ) from None
            decoded[:] = [value]
            return retry_when(value) if retry_when is not None else None

        sent = {"Accept": "application/json", "Accept-Encoding": _ENCODINGS, **(headers or {})}
        await self._exchange(method, target, form, sent, image=False, accept=accept)
        return decoded[0]

    def host_cap(self, host: str) -> int:
        return self.limits.host_cap(host)

    def _host(self, host: str) -> _Host:
        state = self._hosts.get(host)
        if state is None:
            if len(self._hosts) >= self._sweep_at:
                self._forget_idle_hosts()
            state = _Host(
                asyncio.Semaphore(self.limits.host_cap(host)), self.limits.host_interval(host)
            )
            self._hosts[host] = state
        return state

    def _forget_idle_hosts(self) -> None:
        """Drop the state of hosts with nothing running, nothing to wait for and no request
        in the last minute, so a list of URLs on 100,000 hosts does not keep 100,000 states."""
        now = self._clock()
        idle = [
            host
            for host, state in self._hosts.items()
            if not state.users
            and now >= max(state.paused_until, state.next_at, state.refused_until)
            and (not state.sent or state.sent[-1] < now - _HOST_MEMORY)
        ]
        for host in idle:
            del self._hosts[host]
        self._sweep_at = max(_SWEEP_AT, 2 * len(self._hosts))

    async def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self.stats.waited += seconds
            await self._sleep(seconds)

    async def _pace(self, state: _Host) -> None:
        now = self._clock()
        if now >= state.paused_until and now >= state.next_at and not state.lock.locked():
            state.next_at = now + state.interval  # nothing to wait for: no lock, no await
            state.sent.append(now)
            return
        async with state.lock:
            wait = max(state.paused_until, state.next_at) - self._clock()
            await self._wait(wait)
            now = self._clock()
            state.next_at = now + state.interval
            state.sent.append(now)

    async def _exchange(
        self,
        method: str,
        target: httpx.URL,
        form: dict[str, str] | None,
        headers: Mapping[str, str],
        *,
        image: bool,
        accept: Callable[[_Reply], str | None] | None = None,
    ) -> tuple[_Reply, int]:
        """Send, following redirects (each hop guarded and retried); the final 2xx reply."""
        url, hops, sent = target, 0, dict(headers)
        if url.userinfo:
            # credentials travel as a header only, so no URL that is logged carries them
            sent.setdefault("Authorization", _basic_auth(url.username, url.password))
            url = url.copy_with(userinfo=b"")
        while True:
            for attempt in range(self.limits.retries + 1):
                state = self._host(url.host)  # again after a wait: an idle state may be gone
                try:
                    reply = await self._attempt(state, method, url, form, sent, image)
                    _judge(reply, accept)
                    break
                except _Retry as retry:
                    await self._before_retry(state, url, retry, attempt)
            else:
                raise AssertionError("unreachable: the last attempt returns or raises")
            if reply.status not in _REDIRECTS:
                if not 200 <= reply.status < 300:
                    raise FetchError("http-error", f"HTTP {reply.status}", url)
                return reply, hops
            location = reply.headers.get("location")
            if not location:
                raise FetchError("http-error", f"HTTP {reply.status} without a Location", url)
            if hops >= self.limits.max_redirects:
                raise FetchError(
                    "too-many-redirects",
                    f"more than {self.limits.max_redirects} redirects (next: {redact(location)})",
                    target,
                )
            try:
                nxt = _checked(url.join(location)).copy_with(userinfo=b"")
            except FetchError as exc:
                raise FetchError("bad-url", f"redirected to {exc.url}: {exc.detail}", url) from None
            except httpx.InvalidURL as exc:
                raise FetchError("bad-url", f"redirected to an invalid URL: {exc}", url) from None
            if (nxt.scheme, nxt.host, nxt.port) != (url.scheme, url.host, url.port):
                sent = {
                    k: v for k, v in sent.items() if k.lower() not in ("authorization", "cookie")
                }
            if method == "POST" and reply.status in (301, 302, 303):
                method, form = "GET", None
            url, hops = nxt, hops + 1

    async def _before_retry(
        self, state: _Host, url: httpx.URL, retry: _Retry, attempt: int
    ) -> None:
        """Wait before another try, or raise the final error when none is left."""
        if attempt == self.limits.retries:
            raise retry.error from None
        if retry.retry_after is not None:
            if retry.retry_after > self.limits.max_retry_after:
                # ask the host nothing more until then: each request would be refused too
                state.refused_until = self._clock() + retry.retry_after
                error = retry.error
                raise FetchError(
                    error.reason,
                    f"{error.detail}; the server asks to wait {retry.retry_after:.0f} s, "
                    f"more than max_retry_after={self.limits.max_retry_after:g} s",
                    url,
                ) from None
            # the whole host waits (in _pace): its other requests would be refused too
            until = self._clock() + retry.retry_after
            state.paused_until = max(state.paused_until, until)
        else:
            cap = min(self.limits.backoff * 2**attempt, self.limits.max_retry_after)
            await self._wait(self._rng.uniform(0, cap))
        self.stats.retries += 1
        log.debug("retrying %s: %s", redact(url), retry.error.detail)

    async def _attempt(
        self,
        state: _Host,
        method: str,
        url: httpx.URL,
        form: dict[str, str] | None,
        headers: dict[str, str],
        image: bool,
    ) -> _Reply:
        """One request on one hop; a failure worth retrying raises :class:`_Retry`."""
        lim = self.limits
        left = state.refused_until - self._clock()
        if left > 0:
            raise FetchError(
                "rate-limited", f"the server asked for a pause of {left:.0f} s more", url
            )
        state.users += 1
        try:
            async with state.slots:
                await self._pace(state)  # before taking a total slot: a paused host holds none
                async with self._total:
                    self.stats.requests += 1
                    request = self._http.build_request(method, url, data=form, headers=headers)
                    try:
                        async with asyncio.timeout(lim.download_timeout):
                            response = await self._http.send(request, stream=True)
                            try:
                                self._note_rate_limits(state, response.headers)
                                reply = _Reply(url, response.status_code, response.headers)
                                if 200 <= response.status_code < 300:
                                    await self._read(response, reply, image)
                                return reply
                            finally:
                                await response.aclose()
                    except BlockedAddress as exc:
                        self.stats.blocked += 1
                        raise FetchError("blocked-address", str(exc), url) from None
                    except TimeoutError:
                        raise FetchError(
                            "timeout", f"not finished within {lim.download_timeout:g} s", url
                        ) from None
                    except httpx.TimeoutException as exc:
                        raise _Retry(FetchError("timeout", _describe(exc), url)) from None
                    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                        raise FetchError("bad-url", _describe(exc), url) from None
                    except UnicodeError as exc:  # idna's, from httpx reading a Location's host
                        raise FetchError(
                            "bad-url",
                            f"redirected to a host name that is not valid IDNA ({exc})",
                            url,
                        ) from None
                    except httpx.RemoteProtocolError as exc:
                        if "location header" in str(exc).lower():  # httpx reads every Location
                            raise FetchError("bad-url", _describe(exc), url) from None
                        raise _Retry(FetchError("connection", _describe(exc), url)) from None
                    except httpx.TransportError as exc:
                        raise _Retry(FetchError("connection", _describe(exc), url)) from None
                    except httpx.HTTPError as exc:
                        raise FetchError("connection", _describe(exc), url) from None
        finally:
            state.users -= 1

    async def _read(self, response: httpx.Response, reply: _Reply, image: bool) -> None:
        limit = self.limits.max_bytes if image else self.limits.max_json_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise FetchError(
                "too-large",
                f"Content-Length {declared} is over the limit of {limit} bytes",
                reply.url,
            )
        body = bytearray()
        inflate = _Inflater.for_encoding(response.headers.get("content-encoding", ""), reply.url)
        async for raw in response.aiter_raw():  # decoded here: httpx inflates a read whole
            self.stats.bytes += len(raw)
            chunk = inflate.feed(raw, limit - len(body) + 1) if inflate is not None else raw
            body += chunk
            if len(body) > limit:
                raise FetchError("too-large", f"the body passed {limit} bytes", reply.url)
            if image and not reply.image_format and len(body) >= _SNIFF_BYTES:
                reply.image_format = _sniffed(bytes(body[:_SNIFF_BYTES]), response, reply.url)
        if image and not reply.image_format:
            reply.image_format = _sniffed(bytes(body), response, reply.url)
        reply.data = bytes(body)

    def _note_rate_limits(self, state: _Host, headers: httpx.Headers) -> None:
        if not any(name[:12].lower() in _RATE_PREFIXES for name, _ in headers.raw):
            return  # the common case, without decoding every header
        wait = rate_limit_wait(headers, state.sent, self._clock(), time.time())
        if wait is not None and wait > 0:
            capped = min(wait, self.limits.max_retry_after)
            state.paused_until = max(state.paused_until, self._clock() + capped)


class _Inflater:
    """Decodes a gzip or deflate body piece by piece, never more than asked for at a time: a
    few KB of gzip can hold gigabytes of zeros (a compression bomb)."""

    def __init__(self, wbits: int, url: httpx.URL) -> None:
        self.url = url
        self.wbits = wbits
        self.started = False
        self.z = zlib.decompressobj(wbits)

    @classmethod
    def for_encoding(cls, header: str, url: httpx.URL) -> _Inflater | None:
        """The decoder of a ``Content-Encoding`` (None for identity); a coding we do not
        decode is an ``http-error``."""
        codings = [c.strip().lower() for c in header.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if not codings:
            return None
        if codings in (["gzip"], ["x-gzip"]):
            return cls(16 + zlib.MAX_WBITS, url)
        if codings == ["deflate"]:
            return cls(zlib.MAX_WBITS, url)  # zlib-wrapped, as the standard says; raw if not
        raise FetchError("http-error", f"the body is encoded as {header!r}", url)

    def feed(self, data: bytes, most: int) -> bytes:
        """What ``data`` decodes to, cut at ``most`` bytes (more is too large anyway)."""
        try:
            out = self.z.decompress(data, most)
        except zlib.error:
            if self.started or self.wbits != zlib.MAX_WBITS:
                raise FetchError(
                    "connection", "the body's compression is damaged", self.url
                ) from None
            self.wbits, self.z = -zlib.MAX_WBITS, zlib.decompressobj(-zlib.MAX_WBITS)
            return self.feed(data, most)  # "deflate" sent raw, as some servers do
        self.started = True
        return out


def _judge(reply: _Reply, accept: Callable[[_Reply], str | None] | None) -> None:
    """Raise :class:`_Retry` for an answer worth another try (429, 5xx, or ``accept``'s say)."""
    if reply.status in _RETRY_STATUSES:
        reason = "rate-limited" if reply.status == 429 else "http-error"
        raise _Retry(
            FetchError(reason, f"HTTP {reply.status}", reply.url),
            retry_after_seconds(reply.headers.get("retry-after")),
        )
    if accept is not None and 200 <= reply.status < 300:
        why = accept(reply)
        if why is not None:
            raise _Retry(
                FetchError("http-error", why, reply.url),
                retry_after_seconds(reply.headers.get("retry-after")),
            )


def _sniffed(head: bytes, response: httpx.Response, url: httpx.URL) -> str:
    fmt = sniff_image(head)
    if fmt is None:
        kind = response.headers.get("content-type", "no content type")
        raise FetchError("not-an-image", f"served as {kind}, the bytes are no image", url)
    return fmt


def _basic_auth(username: str, password: str) -> str:
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text.strip() else type(exc).__name__


def _checked(url: httpx.URL) -> httpx.URL:
    if url.scheme not in ("http", "https"):
        raise FetchError("bad-url", f"only http and https URLs are fetched, not {url.scheme}:", url)
    try:
        host = url.host
    except ValueError as exc:  # idna's errors: "xn--" that decodes to no valid name
        raise FetchError("bad-url", f"the host name is not valid IDNA ({exc})", url) from None
    if not host:
        raise FetchError("bad-url", "the URL has no host", url)
    return url


def _parse(text: str) -> httpx.URL:
    try:
        return _checked(httpx.URL(text))
    except httpx.InvalidURL as exc:
        raise FetchError("bad-url", f"not a valid URL: {exc}", text) from None


def _try_parse(text: str) -> httpx.URL | FetchError:
    try:
        return _parse(text)
    except FetchError as exc:
        return exc


async def fetch_all(
    client: WebClient, urls: Iterable[tuple[K, str]]
) -> AsyncIterator[tuple[K, Fetched | FetchError]]:
    """Download every URL, at most ``limits.total`` at once and ``host_cap`` per host,
    yielding ``(key, Fetched | FetchError)`` as downloads finish.

    Memory stays bounded however many URLs come: it reads ``urls`` lazily, keeps at most
    ``total`` downloads running and at most ``4 × total`` URLs parked behind busy hosts.
    """
    total = client.limits.total
    park_limit = 4 * total
    source = iter(urls)
    exhausted = False
    running: dict[asyncio.Task[Fetched], tuple[K, str]] = {}
    finished: asyncio.Queue[asyncio.Task[Fetched]] = asyncio.Queue()  # O(1) a completion
    busy: dict[str, int] = {}
    parked: dict[str, deque[tuple[K, httpx.URL]]] = {}
    n_parked = 0

    def start(key: K, url: httpx.URL) -> None:
        busy[url.host] = busy.get(url.host, 0) + 1
        task = asyncio.ensure_future(client.fetch_image(url))
        task.add_done_callback(finished.put_nowait)
        running[task] = (key, url.host)

    def has_room(host: str) -> bool:
        return busy.get(host, 0) < client.host_cap(host)

    try:
        while True:
            while len(running) < total and not exhausted and n_parked < park_limit:
                try:
                    key, text = next(source)
                except StopIteration:
                    exhausted = True
                    break
                url = _try_parse(text)
                if isinstance(url, FetchError):
                    yield key, url
                    continue
                if has_room(url.host):
                    start(key, url)
                else:
                    parked.setdefault(url.host, deque()).append((key, url))
                    n_parked += 1
            if not running:
                return
            task = await finished.get()
            key, host = running.pop(task)
            busy[host] -= 1
            if not busy[host]:
                del busy[host]
            queue = parked.get(host)
            while queue and has_room(host) and len(running) < total:
                n_parked -= 1
                start(*queue.popleft())
            if queue is not None and not queue:
                del parked[host]
            error = task.exception()
            if error is None:
                yield key, task.result()
            elif isinstance(error, FetchError):
                yield key, error
            else:
                raise error
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
