"""The web client against loopback servers: downloads, limits, retries, redirects, the guard.

The servers run in threads of this process (stdlib ``http.server``). Waits go through an
injected clock and sleep, so a 60 s rate-limit pause is asserted, not waited for.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import random
import threading
import time
import tracemalloc
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image

from datasetagent.web.guard import AddressPolicy
from datasetagent.web.http import (
    REASONS,
    Fetched,
    FetchError,
    Limits,
    WebClient,
    fetch_all,
    retry_after_seconds,
    sniff_image,
    user_agent,
)
from helpers import encode


def _photo(fmt: str, side: int = 48) -> bytes:
    pixels = np.random.default_rng(side).integers(0, 255, (side, side, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), fmt)


PNG = _photo("PNG")
JPEG = _photo("JPEG")


def _bomb(mib: int) -> bytes:
    """A PNG header and ``mib`` MiB of zeros, gzipped (about 1 KB a MiB), made a MiB at a time."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(2**20)
    parts = [packer.compress(PNG[:16])] + [packer.compress(zeros) for _ in range(mib)]
    return b"".join([*parts, packer.flush()])


BOMB = _bomb(64)
HTML = b"<!doctype html><html><body>Sorry, this image is gone</body></html>"


class Server:
    """A threaded loopback HTTP server; ``hits`` counts requests per path (query left out)."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.active: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.peak_total = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def send(self, status: int, body: bytes, ctype: str, **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", headers.pop("length", str(len(body))))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = parse_qs(self.rfile.read(length).decode())
            path = urlsplit(self.path).path
            with server.lock:
                server.hits[path] += 1
            body = {
                "form": {k: v[0] for k, v in form.items()},
                "content_type": self.headers.get("Content-Type"),
            }
            self.send(200, json.dumps(body).encode(), "application/json")

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            path, query = parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}
            with server.lock:
                server.hits[path] += 1
                hit = server.hits[path]
                server.requests.append(
                    {"path": path, "query": query, "headers": dict(self.headers.items())}
                )
            try:
                self.route(path, query, hit)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def route(self, path: str, query: dict[str, str], hit: int) -> None:
            n = int(query.get("n", "0"))
            if path == "/img.png":
                self.send(200, PNG, "image/png")
            elif path == "/img.jpg":
                self.send(200, JPEG, "image/jpeg")
            elif path == "/octet.png":
                self.send(200, PNG, "application/octet-stream")
            elif path == "/html.jpg":
                self.send(200, HTML, "image/jpeg")
            elif path == "/tiny":
                self.send(200, b"\x89PN", "image/png")  # shorter than any magic
            elif path == "/missing":
                self.send(404, b"not here", "text/plain")
            elif path == "/busy":  # 429 with Retry-After n times, then the image
                if hit <= n:
                    self.send(429, b"slow down", "text/plain", Retry_After=query["after"])
                else:
                    self.send(200, PNG, "image/png")
            elif path == "/flaky":  # 500 n times, then the image
                if hit <= n:
                    self.send(500, b"oops", "text/plain")
                else:
                    self.send(200, PNG, "image/png")
            elif path == "/dated":  # 503 once with an HTTP-date Retry-After
                if hit == 1:
                    when = email.utils.formatdate(time.time() + 30, usegmt=True)
                    self.send(503, b"maintenance", "text/plain", Retry_After=when)
                else:
                    self.send(200, PNG, "image/png")
            elif path == "/trickle":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", "400")
                self.end_headers()
                self.wfile.write(PNG[:16])
                for _ in range(200):
                    time.sleep(0.02)
                    self.wfile.write(b"\0")
                    self.wfile.flush()
            elif path == "/big-declared":
                self.send(200, PNG + b"\0" * 50_000, "image/png")
            elif path == "/big-streamed":  # no Content-Length: the body ends when we close
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                self.wfile.write(PNG)
                for _ in range(100):
                    self.wfile.write(b"\0" * 4096)
            elif path == "/lying":  # promises more than it sends, then hangs up
                self.send(200, PNG, "image/png", length=str(len(PNG) + 5000))
                self.close_connection = True
            elif path == "/loop":
                self.send(302, b"", "text/plain", Location="/loop")
            elif path == "/chain":
                target = f"/chain?n={n - 1}" if n > 0 else "/img.png"
                self.send(301, b"", "text/plain", Location=target)
            elif path == "/to":
                self.send(302, b"", "text/plain", Location=query["url"])
            elif path == "/slow":
                key = self.headers.get("Host", "").split(":")[0]
                with server.lock:
                    server.active[key] += 1
                    server.peak[key] = max(server.peak[key], server.active[key])
                    server.peak_total = max(server.peak_total, sum(server.active.values()))
                time.sleep(0.05)
                with server.lock:
                    server.active[key] -= 1
                self.send(200, PNG, "image/png")
            elif path == "/json":
                headers = {k: v for k, v in query.items() if k.lower().startswith(("x-", "r"))}
                body = json.dumps({"hit": hit, "query": query}).encode()
                self.send(200, body, "application/json", **headers)
            elif path == "/maxlag":
                if hit == 1:
                    body = {"error": {"code": "maxlag", "info": "Waiting for a replica"}}
                    self.send(200, json.dumps(body).encode(), "application/json", Retry_After="2")
                else:
                    self.send(200, b'{"ok": true}', "application/json")
            elif path == "/page":
                self.send(200, HTML, "text/html")
            elif path == "/encoded":  # ?as=gzip|zlib|deflate: the PNG encoded so
                wbits = {"gzip": 31, "zlib": 15, "deflate": -15}[query["as"]]
                packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
                packed = packer.compress(PNG) + packer.flush()
                encoding = "gzip" if query["as"] == "gzip" else "deflate"
                self.send(200, packed, "image/png", Content_Encoding=encoding)
            elif path == "/labelled":  # the PNG as it is, labelled with ?enc=
                self.send(200, PNG, "image/png", Content_Encoding=query["enc"])
            elif path == "/bomb":
                self.send(200, BOMB, "image/png", Content_Encoding="gzip")
            elif path == "/deep":  # valid JSON, nested deeper than Python's parser recurses
                depth = int(query.get("depth", "100000"))
                self.send(200, b"[" * depth + b"]" * depth, "application/json")
            else:
                self.send(404, b"no route", "text/plain")

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def other() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


class FakeTime:
    """A clock that only moves when the client sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


FAST = Limits(connect_timeout=2, read_timeout=2, download_timeout=5, retries=3, backoff=0.5)


def client_for(
    *servers: Server,
    limits: Limits = FAST,
    fake: FakeTime | None = None,
    resolver: Any = None,
    hosts: Sequence[str] = ("127.0.0.1",),
) -> WebClient:
    policy = AddressPolicy.from_allow_hosts(f"{h}:{s.port}" for s in servers for h in hosts)
    fake = fake if fake is not None else FakeTime()
    kwargs: dict[str, Any] = {"resolver": resolver} if resolver is not None else {}
    return WebClient(
        policy,
        user_agent=user_agent("tests@example.org"),
        limits=limits,
        sleep=fake.sleep,
        clock=fake.clock,
        rng=random.Random(0),
        **kwargs,
    )


def fetch(client: WebClient, url: str, **kwargs: Any) -> Fetched:
    async def go() -> Fetched:
        async with client:
            return await client.fetch_image(url, **kwargs)

    result: Fetched = asyncio.run(go())
    return result


def fails(client: WebClient, url: str, **kwargs: Any) -> FetchError:
    with pytest.raises(FetchError) as raised:
        fetch(client, url, **kwargs)
    error = raised.value
    assert error.reason in REASONS
    assert "\n" not in str(error)
    return error


# -- plain downloads ---------------------------------------------------------------------


def test_downloads_real_png_and_jpeg(server: Server) -> None:
    client = client_for(server)
    png = fetch(client, server.url("/img.png"))
    assert (png.data, png.image_format, png.status) == (PNG, "png", 200)
    assert png.content_type == "image/png"
    assert png.url == png.requested == server.url("/img.png")
    assert png.redirects == 0
    jpeg = fetch(client_for(server), server.url("/img.jpg"))
    assert (jpeg.data, jpeg.image_format) == (JPEG, "jpeg")
    assert client.stats.requests == 1
    assert client.stats.bytes == len(PNG)


def test_the_format_comes_from_the_bytes_not_the_content_type(server: Server) -> None:
    got = fetch(client_for(server), server.url("/octet.png"))
    assert got.image_format == "png"
    error = fails(client_for(server), server.url("/html.jpg"))
    assert error.reason == "not-an-image"
    assert "image/jpeg" in error.detail
    assert fails(client_for(server), server.url("/tiny")).reason == "not-an-image"


def test_sends_our_user_agent_and_asks_for_images(server: Server) -> None:
    fetch(client_for(server), server.url("/img.png"))
    headers = server.requests[0]["headers"]
    assert headers["User-Agent"].startswith("datasetagent/")
    assert "tests@example.org" in headers["User-Agent"]
    assert headers["Accept"] == "image/*"
    assert headers["Accept-Encoding"] == "identity"


def test_user_agent_names_the_project_and_refuses_a_multiline_contact() -> None:
    from datasetagent import __version__
    from datasetagent.errors import UsageError

    assert (
        user_agent()
        == f"datasetagent/{__version__} (+https://github.com/datasetagent/datasetagent)"
    )
    with pytest.raises(UsageError):
        user_agent("me@example.org\r\nX-Evil: 1")


@pytest.mark.parametrize(
    ("head", "fmt"),
    [(PNG, "png"), (JPEG, "jpeg"), (b"GIF89a....", "gif"), (b"RIFF\0\0\0\0WEBPVP8 ", "webp"),
     (b"II*\0abcd", "tiff"), (b"MM\0*abcd", "tiff"), (b"BM\0\0\0\0", "bmp"), (HTML, None),
     (b"RIFF\0\0\0\0WAVEfmt ", None), (b"", None)],
)  # fmt: skip
def test_sniff_image(head: bytes, fmt: str | None) -> None:
    assert sniff_image(head[:16]) == fmt


# -- errors and retries -------------------------------------------------------------------


def test_404_is_an_http_error_and_is_not_retried(server: Server) -> None:
    fake = FakeTime()
    client = client_for(server, fake=fake)
    error = fails(client, server.url("/missing"))
    assert error.reason == "http-error"
    assert "404" in error.detail
    assert server.hits["/missing"] == 1
    assert fake.sleeps == []
    assert client.stats.retries == 0


def test_429_honours_retry_after_then_succeeds(server: Server) -> None:
    fake = FakeTime()
    client = client_for(server, fake=fake)
    got = fetch(client, server.url("/busy?n=2&after=7"))
    assert got.data == PNG
    assert server.hits["/busy"] == 3
    assert fake.sleeps == [7.0, 7.0]
    assert client.stats.retries == 2
    assert client.stats.waited == 14.0
    assert client.stats.requests == 3


def test_a_burst_of_500s_is_retried_with_jittered_exponential_backoff(server: Server) -> None:
    fake = FakeTime()
    client = client_for(server, fake=fake)
    assert fetch(client, server.url("/flaky?n=3")).data == PNG
    assert server.hits["/flaky"] == 4
    assert len(fake.sleeps) == 3
    for attempt, waited in enumerate(fake.sleeps):
        assert 0 <= waited <= 0.5 * 2**attempt
    assert len(set(fake.sleeps)) == 3  # jittered, not a fixed schedule


def test_500s_past_the_retries_fail_as_http_errors(server: Server) -> None:
    client = client_for(server)
    error = fails(client, server.url("/flaky?n=99"))
    assert (error.reason, error.detail) == ("http-error", "HTTP 500")
    assert server.hits["/flaky"] == FAST.retries + 1


def test_retry_after_as_an_http_date(server: Server) -> None:
    fake = FakeTime()
    assert fetch(client_for(server, fake=fake), server.url("/dated")).data == PNG
    assert len(fake.sleeps) == 1
    assert 27 <= fake.sleeps[0] <= 31


def test_retry_after_seconds_parses_both_forms() -> None:
    assert retry_after_seconds("12") == 12.0
    assert retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_a_retry_after_longer_than_the_cap_fails_at_once_and_spares_the_host(
    server: Server,
) -> None:
    fake = FakeTime()
    client = client_for(server, fake=fake)

    async def go() -> list[FetchError]:
        out = []
        async with client:
            for path in ("/busy?n=9&after=3600", "/img.png"):
                with pytest.raises(FetchError) as raised:
                    await client.fetch_image(server.url(path))
                out.append(raised.value)
            fake.now += 3601
            await client.fetch_image(server.url("/img.png"))
        return out

    first, second = asyncio.run(go())
    assert first.reason == "rate-limited"
    assert "3600 s" in first.detail
    assert "max_retry_after=120" in first.detail
    assert server.hits["/busy"] == 1
    assert fake.sleeps == []
    # the host is not asked again until the hour is over
    assert second.reason == "rate-limited"
    assert "3600 s more" in second.detail
    assert server.hits["/img.png"] == 1


def test_rate_limited_past_the_retries(server: Server) -> None:
    fake = FakeTime()
    error = fails(client_for(server, fake=fake), server.url("/busy?n=99&after=1"))
    assert error.reason == "rate-limited"
    assert server.hits["/busy"] == FAST.retries + 1
    assert fake.sleeps == [1.0] * FAST.retries


def test_a_trickling_body_is_abandoned_at_the_download_deadline(server: Server) -> None:
    limits = Limits(connect_timeout=2, read_timeout=2, download_timeout=0.5, retries=3)
    started = time.monotonic()
    error = fails(client_for(server, limits=limits), server.url("/trickle"))
    took = time.monotonic() - started
    assert error.reason == "timeout"
    assert took < 2.0  # every byte came well inside read_timeout: the deadline cut it
    assert server.hits["/trickle"] == 1  # not retried


def test_too_large_by_content_length_reads_no_body(server: Server) -> None:
    client = client_for(server, limits=Limits(max_bytes=10_000))
    error = fails(client, server.url("/big-declared"))
    assert error.reason == "too-large"
    assert "Content-Length" in error.detail
    assert client.stats.bytes == 0


def test_too_large_while_streaming_without_content_length(server: Server) -> None:
    client = client_for(server, limits=Limits(max_bytes=10_000))
    error = fails(client, server.url("/big-streamed"))
    assert error.reason == "too-large"
    served = len(PNG) + 100 * 4096
    assert 10_000 < client.stats.bytes < served  # stopped reading soon after the limit


def test_a_body_shorter_than_its_content_length_is_a_broken_connection(server: Server) -> None:
    fake = FakeTime()
    error = fails(client_for(server, fake=fake), server.url("/lying"))
    assert error.reason == "connection"
    assert server.hits["/lying"] == FAST.retries + 1  # a dropped connection is retried
    assert len(fake.sleeps) == FAST.retries


def test_only_http_and_https_urls(server: Server) -> None:
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/a.png", "data:image/png;base64,AAAA",
                "gopher://127.0.0.1:70/", "http:///nohost", "not a url"):  # fmt: skip
        error = fails(client_for(server), url)
        assert error.reason == "bad-url", url
    error = fails(client_for(server), server.url("/to?url=file:///etc/passwd"))
    assert error.reason == "bad-url"
    assert "file" in error.detail


def test_a_host_that_is_not_valid_idna_is_a_bad_url_not_a_crash(server: Server) -> None:
    # "xn--" punycode that decodes to no valid name: httpx raises idna's error (a ValueError,
    # not httpx.InvalidURL) the moment the host is read, which ended the whole download stage
    bad = "http://xn--localhost/a.png"
    assert fails(client_for(server), bad).reason == "bad-url"
    error = fails(client_for(server), server.url(f"/to?url={bad}"))
    assert (error.reason, error.url) == ("bad-url", server.url(f"/to?url={bad}"))
    # a Location httpx cannot parse is a bad URL too, answered once, not a dropped connection
    broken = fails(client_for(server), server.url("/to?url=http://e.org:abc/"))
    assert broken.reason == "bad-url"
    assert server.hits["/to"] == 2
    urls = [(1, bad), (2, server.url("/img.png"))]
    found = dict(collect(client_for(server), urls))
    assert isinstance(found[1], FetchError)
    assert found[1].reason == "bad-url"
    assert isinstance(found[2], Fetched)


# -- redirects and the guard --------------------------------------------------------------


def test_redirects_are_followed_and_counted(server: Server) -> None:
    got = fetch(client_for(server), server.url("/chain?n=2"))
    assert got.redirects == 3
    assert got.url == server.url("/img.png")
    assert got.requested == server.url("/chain?n=2")
    assert got.data == PNG


def test_a_redirect_loop_stops_at_max_redirects(server: Server) -> None:
    limits = Limits(max_redirects=4)
    error = fails(client_for(server, limits=limits), server.url("/loop"))
    assert error.reason == "too-many-redirects"
    assert server.hits["/loop"] == 5


def test_loopback_is_refused_unless_allowed(server: Server) -> None:
    client = WebClient(AddressPolicy(), user_agent=user_agent())
    error = fails(client, server.url("/img.png"))
    assert error.reason == "blocked-address"
    assert "loopback" in error.detail
    assert f"--allow-host 127.0.0.1:{server.port}" in error.detail
    assert server.hits["/img.png"] == 0
    assert client.stats.blocked == 1


def test_a_redirect_to_a_port_not_allowed_is_refused(server: Server, other: Server) -> None:
    client = client_for(server)  # only the first server's port is allowed
    error = fails(client, server.url(f"/to?url={other.url('/img.png')}"))
    assert error.reason == "blocked-address"
    assert f"--allow-host 127.0.0.1:{other.port}" in error.detail
    assert other.hits["/img.png"] == 0


def test_a_redirect_to_an_allowed_host_is_followed(server: Server, other: Server) -> None:
    got = fetch(client_for(server, other), server.url(f"/to?url={other.url('/img.png')}"))
    assert got.url == other.url("/img.png")
    assert got.redirects == 1
    assert other.hits["/img.png"] == 1


def test_a_name_resolving_to_loopback_is_refused_unless_the_name_is_allowed(server: Server) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "images.test" else []

    error = fails(client_for(server, resolver=resolve), server.url("/img.png", "images.test"))
    assert error.reason == "blocked-address"
    assert "127.0.0.1 (images.test)" in error.detail
    assert server.hits["/img.png"] == 0
    client = client_for(server, resolver=resolve, hosts=("images.test",))
    assert fetch(client, server.url("/img.png", "images.test")).data == PNG


def test_credentials_stay_out_of_messages_records_logs_and_other_hosts(
    server: Server, other: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_url = f"http://user:hunter2@127.0.0.1:{server.port}/missing"
    error = fails(client_for(server), secret_url)
    assert "hunter2" not in str(error)
    assert "hunter2" not in error.url
    got = fetch(client_for(server), f"http://user:hunter2@127.0.0.1:{server.port}/img.png")
    assert "hunter2" not in got.requested + got.url
    sent = base64.b64encode(b"user:hunter2").decode()
    assert server.requests[-1]["headers"]["Authorization"] == f"Basic {sent}"
    assert caplog.records  # httpx and httpcore did log the requests
    assert "hunter2" not in caplog.text
    fetch(
        client_for(server, other),
        server.url(f"/to?url={other.url('/img.png')}"),
        headers={"Authorization": "Bearer s3cret"},
    )
    assert server.requests[-1]["headers"].get("Authorization") == "Bearer s3cret"
    assert "Authorization" not in other.requests[-1]["headers"]


# -- API calls ---------------------------------------------------------------------------


def run_json(client: WebClient, *calls: tuple[str, dict[str, Any]]) -> list[object]:
    async def go() -> list[object]:
        async with client:
            return [await client.get_json(url, **kw) for url, kw in calls]

    result: list[object] = asyncio.run(go())
    return result


def test_get_json_merges_params_into_the_url(server: Server) -> None:
    (doc,) = run_json(client_for(server), (server.url("/json?a=1"), {"params": {"b": 2}}))
    assert doc == {"hit": 1, "query": {"a": "1", "b": "2"}}
    assert server.requests[0]["headers"]["Accept"] == "application/json"
    assert server.requests[0]["headers"]["Accept-Encoding"] == "gzip, deflate"


def test_get_json_refuses_a_page_that_is_not_json(server: Server) -> None:
    with pytest.raises(FetchError) as raised:
        run_json(client_for(server), (server.url("/page"), {}))
    assert raised.value.reason == "not-json"
    assert "text/html" in raised.value.detail


def test_an_api_answer_has_its_own_smaller_size_limit(server: Server) -> None:
    # parsed JSON takes many times its size in memory: an answer is capped below an image
    limits = Limits(max_bytes=10**6, max_json_bytes=300, retries=0)
    with pytest.raises(FetchError) as raised:
        run_json(client_for(server, limits=limits), (server.url("/deep?depth=200"), {}))
    assert raised.value.reason == "too-large"
    assert "300 bytes" in raised.value.detail
    (doc,) = run_json(client_for(server, limits=limits), (server.url("/deep?depth=100"), {}))
    assert isinstance(doc, list)  # 200 bytes: read


@pytest.mark.parametrize("encoding", ["gzip", "zlib", "deflate"])
def test_a_compressed_body_is_decoded(server: Server, encoding: str) -> None:
    got = fetch(client_for(server), server.url(f"/encoded?as={encoding}"))
    assert (got.data, got.image_format) == (PNG, "png")


@pytest.mark.parametrize(
    ("encoding", "reason"),
    [("br", "http-error"), ("gzip, gzip", "http-error"), ("gzip", "connection")],
)
def test_a_body_not_encoded_as_said_fails_with_its_reason(
    server: Server, encoding: str, reason: str
) -> None:
    error = fails(client_for(server), server.url(f"/labelled?enc={encoding}"))
    assert error.reason == reason


def test_a_compression_bomb_is_too_large_without_being_inflated_in_memory(
    server: Server,
) -> None:
    # 64 MiB of zeros are ~64 KB gzipped: httpx inflated each 64 KB read whole (a 64 MB
    # string per download in flight, 32 at once) before the size limit was looked at
    client = client_for(server, limits=Limits(max_bytes=100_000, retries=0))
    tracemalloc.start()
    try:
        error = fails(client, server.url("/bomb"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert error.reason == "too-large"
    assert peak < 8 * 2**20


def test_get_json_refuses_json_nested_too_deep_as_not_json(server: Server) -> None:
    # json.loads raises RecursionError (not ValueError) for it: that must not escape
    with pytest.raises(FetchError) as raised:
        run_json(client_for(server), (server.url("/deep"), {}))
    assert raised.value.reason == "not-json"
    assert "nested too deep" in raised.value.detail
    assert server.hits["/deep"] == 1  # an answer, not a failure worth retrying


def test_openverse_rate_limit_headers_pause_the_host_until_the_window_frees(
    server: Server,
) -> None:
    fake = FakeTime()
    exhausted = {"X-RateLimit-Limit-anon_burst": "20/min", "X-RateLimit-Available-anon_burst": "0"}
    url = server.url("/json")
    docs = run_json(
        client_for(server, fake=fake),
        (url, {"params": {"X-RateLimit-Limit-anon_burst": "20/min",
                          "X-RateLimit-Available-anon_burst": "5"}}),
        (url, {"params": exhausted}),
        (url, {}),
    )  # fmt: skip
    assert [d["hit"] for d in docs] == [1, 2, 3]  # type: ignore[index]
    # the window slides: a slot frees 60 s after the oldest request we sent within it
    assert fake.sleeps == [60.0]


def test_generic_remaining_and_reset_headers_pause_the_host(server: Server) -> None:
    fake = FakeTime()
    url = server.url("/json")
    run_json(
        client_for(server, fake=fake),
        (url, {"params": {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "5"}}),
        (url, {}),
    )
    assert fake.sleeps == [5.0]


def test_retry_when_retries_an_answer_the_caller_names(server: Server) -> None:
    fake = FakeTime()

    def maxlag(doc: object) -> str | None:
        error = doc.get("error") if isinstance(doc, dict) else None
        return "maxlag" if isinstance(error, dict) and error.get("code") == "maxlag" else None

    (doc,) = run_json(
        client_for(server, fake=fake), (server.url("/maxlag"), {"retry_when": maxlag})
    )
    assert doc == {"ok": True}
    assert fake.sleeps == [2.0]


def test_post_form_sends_a_form_and_reads_json(server: Server) -> None:
    async def go() -> object:
        async with client_for(server) as client:
            return await client.post_form(
                server.url("/token"), {"grant_type": "client_credentials", "client_id": "x"}
            )

    doc = asyncio.run(go())
    assert doc == {
        "form": {"grant_type": "client_credentials", "client_id": "x"},
        "content_type": "application/x-www-form-urlencoded",
    }


# -- pacing and concurrency ---------------------------------------------------------------


def test_min_interval_spaces_requests_to_one_host(server: Server) -> None:
    fake = FakeTime()
    limits = Limits(host_intervals={"127.0.0.1": 0.5})
    url = server.url("/json")
    run_json(client_for(server, fake=fake, limits=limits), (url, {}), (url, {}), (url, {}))
    assert fake.sleeps == [0.5, 0.5]


def collect(client: WebClient, urls: Any) -> list[tuple[Any, Fetched | FetchError]]:
    async def go() -> list[tuple[Any, Fetched | FetchError]]:
        async with client:
            return [item async for item in fetch_all(client, urls)]

    result: list[tuple[Any, Fetched | FetchError]] = asyncio.run(go())
    return result


def test_fetch_all_keeps_at_most_total_in_flight(server: Server) -> None:
    limits = Limits(total=3, per_host=8)
    urls = [(i, server.url("/slow")) for i in range(12)]
    results = collect(client_for(server, limits=limits), urls)
    assert sorted(k for k, _ in results) == list(range(12))
    assert all(isinstance(r, Fetched) for _, r in results)
    assert server.peak_total == 3


def test_fetch_all_respects_per_host_caps_and_reports_failures(server: Server) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    limits = Limits(total=4, per_host=2, host_limits={"a.test": 1})
    client = client_for(server, limits=limits, resolver=resolve, hosts=("a.test", "b.test"))
    urls = [(f"a{i}", server.url("/slow", "a.test")) for i in range(6)]
    urls += [(f"b{i}", server.url("/slow", "b.test")) for i in range(6)]
    urls += [("gone", server.url("/missing", "b.test")), ("ftp", "ftp://a.test/x.png")]
    results = dict(collect(client, urls))
    assert len(results) == 14
    assert server.peak["a.test"] == 1
    assert server.peak["b.test"] == 2
    reasons = {k: r.reason for k, r in results.items() if isinstance(r, FetchError)}
    assert reasons == {"gone": "http-error", "ftp": "bad-url"}


def test_fetch_all_reads_its_urls_lazily(server: Server) -> None:
    pulled = 0

    def urls() -> Iterator[tuple[int, str]]:
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield i, server.url("/img.png")

    async def first() -> int:
        async with client_for(server, limits=Limits(total=4)) as client:
            gen: AsyncIterator[Any] = fetch_all(client, urls())
            async for _ in gen:
                break
            await gen.aclose()  # type: ignore[attr-defined]
        return pulled

    assert asyncio.run(first()) <= 4 + 4 * 4 + 1


def test_a_host_waiting_out_a_retry_after_holds_no_total_slot(server: Server) -> None:
    gate = asyncio.Event()
    fake = FakeTime()

    async def held_sleep(seconds: float) -> None:
        fake.sleeps.append(seconds)
        await gate.wait()

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    policy = AddressPolicy.from_allow_hosts([f"a.test:{server.port}", f"b.test:{server.port}"])
    client = WebClient(
        policy,
        user_agent=user_agent(),
        limits=Limits(total=1, retries=1),
        sleep=held_sleep,
        clock=fake.clock,
        resolver=resolve,
    )

    async def go() -> tuple[Fetched, Fetched]:
        async with client:
            paused = asyncio.create_task(
                client.fetch_image(server.url("/busy?n=1&after=30", "a.test"))
            )
            for _ in range(200):
                if fake.sleeps:
                    break
                await asyncio.sleep(0.01)
            # a.test waits 30 s; b.test must not queue behind it for the one total slot
            other = await asyncio.wait_for(
                client.fetch_image(server.url("/img.png", "b.test")), timeout=3
            )
            gate.set()
            return other, await paused

    other, paused = asyncio.run(go())
    assert fake.sleeps == [30.0]
    assert other.data == paused.data == PNG


def test_the_state_of_idle_hosts_is_forgotten() -> None:
    fake = FakeTime()
    client = WebClient(AddressPolicy(), user_agent=user_agent(), clock=fake.clock, sleep=fake.sleep)
    client._host("busy.test").users = 1
    client._host("paused.test").paused_until = fake.now + 1000
    for i in range(500):
        client._host(f"h{i}.test").sent.append(fake.now)
    fake.now += 61
    for i in range(20):
        client._host(f"late{i}.test").sent.append(fake.now)
    kept = set(client._hosts)
    assert {"busy.test", "paused.test"} <= kept
    assert not any(h.startswith("h") for h in kept)
    assert len(kept) < 30
