"""The web search sources (Openverse, Wikimedia Commons) against the loopback web ``websim``."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import pickle
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from PIL import Image

from datasetagent.errors import ConfigError, SourceError
from datasetagent.licences import normalise
from datasetagent.sources.openverse import OpenverseSearch
from datasetagent.sources.websearch import SearchPage, WebSearch, host_limits, open_search
from datasetagent.sources.wikimedia import METADATA, WikimediaSearch
from datasetagent.spec import ClassSpec, DatasetSpec, ImageConstraints, LicencePolicy, SourceSpec
from datasetagent.store import WebInfo
from datasetagent.web.guard import AddressPolicy
from datasetagent.web.html import to_text
from datasetagent.web.http import FetchError, Limits, WebClient, user_agent
from websim import WebSim

T = TypeVar("T")

UA = {"User-Agent": "datasetagent-tests/1 (+https://example.org)"}


@pytest.fixture
def sim() -> Iterator[WebSim]:
    with WebSim(classes={"red fox": 12, "arctic fox": 7}) as running:
        yield running


# -- the simulator itself ------------------------------------------------------------------------
def test_sim_serves_distinct_real_photos_per_result(sim: WebSim) -> None:
    with httpx.Client(headers=UA) as client:
        digests = set()
        for api in ("openverse", "commons"):
            for cls in sim.classes:
                for item in sim.items(api, cls):
                    response = client.get(item.url)
                    assert response.status_code == 200
                    assert response.headers["content-type"] == "image/jpeg"
                    image = Image.open(io.BytesIO(response.content))
                    assert image.size == (item.width, item.height)
                    digests.add(hashlib.sha256(response.content).hexdigest())
    assert len(digests) == 2 * (12 + 7)


def test_sim_shared_results_are_the_same_bytes_at_two_urls(sim: WebSim) -> None:
    sim.faults.shared = 2
    with httpx.Client(headers=UA) as client:
        for i in range(3):
            a, b = sim.item("openverse", "red fox", i), sim.item("commons", "red fox", i)
            assert a.url != b.url
            same = client.get(a.url).content == client.get(b.url).content
            assert same is (i < 2)


def test_sim_openverse_pages_and_limits_like_the_api(sim: WebSim) -> None:
    url = sim.url("/v1/images/")
    with httpx.Client(headers=UA) as client:
        first = client.get(url, params={"q": "red fox", "page_size": 5}).json()
        assert (first["result_count"], first["page_count"], len(first["results"])) == (12, 3, 5)
        assert client.get(url, params={"q": "fox", "page_size": 5}).json()["result_count"] == 0
        assert client.get(url, params={"q": "red fox", "page_size": 21}).status_code == 401
        assert client.get(url, params={"q": "red fox", "page": 21}).status_code == 400
        assert client.get(url, params={"q": "red fox", "license": "gpl"}).status_code == 400
    assert [r.status for r in sim.requests_to("openverse")] == [200, 200, 401, 400, 400]


def test_sim_finds_the_class_a_query_names(sim: WebSim) -> None:
    assert sim.find_class("a photo of Red Foxes, in snow") == "red fox"
    assert sim.find_class("arctic fox") == "arctic fox"
    assert sim.find_class("fox") is None
    assert sim.find_class("grey wolf") is None


def test_sim_commons_continues_and_blocks_library_agents(sim: WebSim) -> None:
    params = {
        "action": "query",
        "format": "json",
        "formatversion": "2",
        "generator": "search",
        "gsrsearch": "arctic fox filetype:bitmap",
        "gsrlimit": "5",
    }
    with httpx.Client(headers=UA) as client:
        first = client.get(sim.url("/w/api.php"), params=params).json()
        assert first["continue"] == {"gsroffset": 5, "continue": "gsroffset||"}
        last = client.get(sim.url("/w/api.php"), params={**params, **first["continue"]}).json()
        assert "continue" not in last
        ranks = sorted(p["index"] for p in first["query"]["pages"] + last["query"]["pages"])
        assert ranks == list(range(1, 8))
    assert httpx.get(sim.url("/w/api.php"), params=params).status_code == 403


# -- helpers -------------------------------------------------------------------------------------
class FakeTime:
    """A clock that only moves when the client sleeps (or a test moves it)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_spec(**update: object) -> DatasetSpec:
    spec = DatasetSpec(classes=(ClassSpec(name="red fox"), ClassSpec(name="arctic fox")))
    return spec.model_copy(update=update)


def run(
    sim: WebSim,
    work: Callable[[WebClient], Awaitable[T]],
    fake: FakeTime | None = None,
    limits: Limits | None = None,
) -> T:
    fake = fake or FakeTime()

    async def main() -> T:
        policy = AddressPolicy(frozenset({sim.address}))
        async with WebClient(
            policy, user_agent=user_agent(), limits=limits, sleep=fake.sleep, clock=fake.clock
        ) as client:
            return await work(client)

    return asyncio.run(main())


def collect(
    sim: WebSim, search: WebSearch, query: str, fake: FakeTime | None = None
) -> list[SearchPage]:
    """Every page of ``query``, following cursors to the end."""

    async def work(client: WebClient) -> list[SearchPage]:
        pages = [await search.search(client, query, None)]
        while pages[-1].cursor is not None:
            assert len(pages) < 100, "the cursor never ends"
            pages.append(await search.search(client, query, pages[-1].cursor))
        return pages

    return run(sim, work, fake)


def openverse(sim: WebSim, spec: DatasetSpec | None = None, **env: str) -> OpenverseSearch:
    source = SourceSpec(kind="openverse", base_url=sim.base_url)
    return OpenverseSearch(source, spec or make_spec(), env=env)


def wikimedia(sim: WebSim, spec: DatasetSpec | None = None, **options: int) -> WikimediaSearch:
    source = SourceSpec(kind="wikimedia", base_url=sim.base_url, options=dict(options))
    return WikimediaSearch(source, spec or make_spec())


CREDENTIALS = {"OPENVERSE_CLIENT_ID": "sim-client", "OPENVERSE_CLIENT_SECRET": "sim-secret"}


# -- Openverse -----------------------------------------------------------------------------------
def test_openverse_anonymous_request_and_candidates(sim: WebSim) -> None:
    search = openverse(sim)
    page = run(sim, lambda c: search.search(c, "red fox", None))
    (sent,) = sim.requests_to("openverse")
    assert sent.query == {
        "q": "red fox",
        "page": "1",
        "page_size": "20",
        "license": "by,by-sa,cc0,pdm",
        "mature": "false",
    }
    assert sent.headers["user-agent"].startswith("datasetagent/")
    assert "authorization" not in sent.headers
    assert sim.requests_to("token") == []
    assert page.cursor is None  # 12 results: one page
    assert page.dropped == {}
    expected = sim.items("openverse", "red fox")
    assert [c.location for c in page.results] == [it.url for it in expected]
    licences = {"by": "CC-BY", "by-sa": "CC-BY-SA", "cc0": "CC0", "pdm": "PDM"}
    for cand, it in zip(page.results, expected, strict=True):
        assert cand.source_kind == "openverse"
        assert cand.licence == normalise(it.licence_code, it.licence_version)
        assert cand.licence.startswith(licences[it.licence_code])
        assert cand.creator == it.creator
        assert cand.web == WebInfo(
            page=it.page,
            licence_url=it.licence_url,
            title=it.title,
            width=it.width,
            height=it.height,
        )
        assert cand.class_hint is None
    assert "anonymous" in search.describe()
    assert "OPENVERSE_CLIENT_ID" in search.describe()


def test_openverse_pages_to_the_end(sim: WebSim) -> None:
    sim.classes["red fox"] = 45
    pages = collect(sim, openverse(sim), "red fox")
    assert [len(p.results) for p in pages] == [20, 20, 5]
    assert pages[-1].cursor is None
    assert [r.query["page"] for r in sim.requests_to("openverse")] == ["1", "2", "3"]
    locations = [c.location for p in pages for c in p.results]
    assert locations == [it.url for it in sim.items("openverse", "red fox")]


def test_openverse_stops_at_the_apis_twenty_pages(sim: WebSim) -> None:
    sim.classes["red fox"] = 30
    search = OpenverseSearch(
        SourceSpec(kind="openverse", base_url=sim.base_url, options={"page_size": 1}),
        make_spec(),
        env={},
    )
    pages = collect(sim, search, "red fox")
    assert len(pages) == 20  # 30 results, but the API serves 20 pages
    assert pages[-1].cursor is None
    # a position past the last page asks nothing and ends the search
    beyond = run(sim, lambda c: search.search(c, "red fox", '{"offset": 20}'))
    assert beyond == SearchPage((), None, {})
    assert len(sim.requests_to("openverse")) == 20


def test_openverse_resumes_a_cursor_written_with_another_page_size(sim: WebSim) -> None:
    sim.classes["red fox"] = 30
    small = OpenverseSearch(
        SourceSpec(kind="openverse", base_url=sim.base_url, options={"page_size": 7}),
        make_spec(),
        env={},
    )
    first = run(sim, lambda c: small.search(c, "red fox", None))
    assert first.cursor is not None
    rest = run(sim, lambda c: openverse(sim).search(c, "red fox", first.cursor))
    seen = [c.location for c in first.results + rest.results]
    assert seen == [it.url for it in sim.items("openverse", "red fox")][:20]


def test_openverse_drops_mature_refused_and_svg_results_itself(sim: WebSim) -> None:
    sim.faults.ignore_filters = True  # the API returns everything: our side must filter
    sim.faults.mature = {1}
    sim.faults.nc = {2, 5}
    sim.faults.unknown = {3}
    sim.faults.svg = {4}
    page = run(sim, lambda c: openverse(sim).search(c, "red fox", None))
    assert dict(page.dropped) == {"mature": 1, "licence": 3, "not-an-image-type": 1}
    assert len(page.results) == 12 - 5
    kept = {c.location for c in page.results}
    assert kept == {
        it.url for it in sim.items("openverse", "red fox") if it.index not in range(1, 6)
    }


def test_openverse_licence_filter_follows_the_policy(sim: WebSim) -> None:
    sim.faults.nc = {2}
    sim.faults.unknown = {3}
    policy = LicencePolicy(allow_nc=True, allow_unknown=True)
    page = run(sim, lambda c: openverse(sim, make_spec(licences=policy)).search(c, "red fox", None))
    codes = sim.requests_to("openverse")[0].query["license"].split(",")
    allowed = {"by", "by-sa", "cc0", "pdm", "by-nc", "by-nc-sa", "sampling+", "nc-sampling+"}
    assert set(codes) == allowed
    licences = [c.licence for c in page.results]
    assert "CC-BY-NC-2.0" in licences
    assert "unknown" in licences
    assert len(page.results) == 12
    permissive = openverse(sim, make_spec(licences=LicencePolicy(mode="permissive")))
    assert permissive.codes == ("by", "cc0", "pdm")


def test_openverse_429_is_waited_out(sim: WebSim) -> None:
    sim.faults.throttle("openverse", at=1, count=2, retry_after=7)
    fake = FakeTime()
    page = run(sim, lambda c: openverse(sim).search(c, "red fox", None), fake)
    assert len(page.results) == 12
    assert [r.status for r in sim.requests_to("openverse")] == [429, 429, 200]
    assert sum(fake.sleeps) >= 14  # Retry-After honoured, on the fake clock: no real wait


def test_openverse_rate_limit_that_lasts_names_the_credentials(sim: WebSim) -> None:
    sim.faults.throttle("openverse", at=1, count=50, retry_after=1)
    with pytest.raises(FetchError) as caught:
        run(sim, lambda c: openverse(sim).search(c, "red fox", None))
    assert caught.value.reason == "rate-limited"
    assert "OPENVERSE_CLIENT_ID" in str(caught.value)


def test_openverse_token_is_requested_cached_and_sent(sim: WebSim) -> None:
    search = openverse(sim, **CREDENTIALS)

    async def work(client: WebClient) -> list[SearchPage]:
        return [await search.search(client, q, None) for q in ("red fox", "arctic fox")]

    pages = run(sim, work)
    assert [len(p.results) for p in pages] == [12, 7]
    (token,) = sim.requests_to("token")
    assert token.method == "POST"
    assert token.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert token.form == {
        "grant_type": "client_credentials",
        "client_id": "sim-client",
        "client_secret": "sim-secret",
    }
    searches = sim.requests_to("openverse")
    assert all(r.headers["authorization"].startswith("Bearer sim-token-1-") for r in searches)
    assert [r.query["page_size"] for r in searches] == ["100", "100"]
    assert sim.tokens_issued == 1
    assert "client credentials" in search.describe()


def test_openverse_token_is_renewed_before_it_expires(sim: WebSim) -> None:
    sim.token_lifetime = 600
    fake = FakeTime()
    search = OpenverseSearch(
        SourceSpec(kind="openverse", base_url=sim.base_url),
        make_spec(),
        env=CREDENTIALS,
        clock=fake.clock,
    )

    async def work(client: WebClient) -> None:
        await search.search(client, "red fox", None)
        fake.now += 600 - 61  # still a minute and a second to go: kept
        await search.search(client, "red fox", None)
        fake.now += 2  # within the last minute: renewed
        await search.search(client, "red fox", None)

    run(sim, work, fake)
    assert sim.tokens_issued == 2
    tokens = [r.headers["authorization"] for r in sim.requests_to("openverse")]
    assert tokens[0] == tokens[1] != tokens[2]


def test_openverse_token_no_longer_accepted_is_renewed_once(sim: WebSim) -> None:
    search = openverse(sim, **CREDENTIALS)

    async def work(client: WebClient) -> SearchPage:
        await search.search(client, "red fox", None)
        sim.faults.revoke_tokens()  # the API now treats the token as absent: page_size 100 → 401
        return await search.search(client, "red fox", None)

    page = run(sim, work)
    assert len(page.results) == 12
    assert [r.status for r in sim.requests_to("openverse")] == [200, 401, 200]
    assert sim.tokens_issued == 2


def test_openverse_wrong_credentials_are_a_config_error_without_the_secret(
    sim: WebSim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env = {"OPENVERSE_CLIENT_ID": "sim-client", "OPENVERSE_CLIENT_SECRET": "s3cr3t-WRONG"}
    search = openverse(sim, **env)
    with pytest.raises(ConfigError) as caught:
        run(sim, lambda c: search.search(c, "red fox", None))
    message = str(caught.value)
    assert "OPENVERSE_CLIENT_SECRET" in message
    assert "s3cr3t-WRONG" not in message
    assert "s3cr3t-WRONG" not in caplog.text
    assert sim.requests_to("openverse") == []


def test_openverse_half_set_credentials_are_refused() -> None:
    source = SourceSpec(kind="openverse")
    with pytest.raises(ConfigError, match="OPENVERSE_CLIENT_SECRET is not"):
        OpenverseSearch(source, make_spec(), env={"OPENVERSE_CLIENT_ID": "x"})


def test_openverse_credentials_appear_nowhere(
    sim: WebSim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env = {"OPENVERSE_CLIENT_ID": "id-XYZZY", "OPENVERSE_CLIENT_SECRET": "secret-PLUGH"}
    sim.client_id, sim.client_secret = env["OPENVERSE_CLIENT_ID"], env["OPENVERSE_CLIENT_SECRET"]
    search = openverse(sim, **env)
    page = run(sim, lambda c: search.search(c, "red fox", None))
    assert len(page.results) == 12
    seen = " ".join(
        [repr(search), str(search), search.describe(), repr(page), str(vars(search)), caplog.text]
        + [c.model_dump_json() for c in page.results]
    )
    for secret in env.values():
        assert secret not in seen
    with pytest.raises(TypeError):
        pickle.dumps(search)
    # the bearer token went to the API only
    assert all("authorization" not in r.headers for r in sim.requests if r.route != "openverse")


def test_openverse_page_size_option(sim: WebSim) -> None:
    def build(size: object, **env: str) -> OpenverseSearch:
        source = SourceSpec(kind="openverse", options={"page_size": size})
        return OpenverseSearch(source, make_spec(), env=env)

    assert build(10).page_size == 10
    capped = build(100)
    assert capped.page_size == 20
    assert "capped at 20" in capped.describe()
    assert build(300, **CREDENTIALS).page_size == 300
    assert build(900, **CREDENTIALS).page_size == 500
    with pytest.raises(ConfigError, match="page_size"):
        build(0)
    with pytest.raises(ConfigError, match="page_size"):
        build("many")


# -- Wikimedia Commons ---------------------------------------------------------------------------
def test_wikimedia_request_and_candidates(sim: WebSim) -> None:
    sim.faults.no_artist = {2}
    search = wikimedia(sim)
    page = run(sim, lambda c: search.search(c, "red fox", None))
    (sent,) = sim.requests_to("commons")
    assert sent.query == {
        "action": "query",
        "format": "json",
        "formatversion": "2",
        "generator": "search",
        "gsrnamespace": "6",
        "gsrsearch": "red fox filetype:bitmap",
        "gsrlimit": "50",
        "prop": "imageinfo",
        "iiprop": "url|size|mime|extmetadata",
        "iiurlwidth": "1024",
        "iiextmetadatafilter": "|".join(METADATA),
        "maxlag": "5",
    }
    assert sent.headers["user-agent"].startswith("datasetagent/")
    assert page.cursor is None
    expected = sim.items("commons", "red fox")
    # ranked as the search ranked them, although the API lists pages by page id
    assert [c.location for c in page.results] == [it.url for it in expected]
    for cand, it in zip(page.results, expected, strict=True):
        assert cand.source_kind == "wikimedia"
        assert cand.licence == normalise(it.licence_code, url=it.licence_url)
        assert cand.creator == it.creator  # HTML in, plain text out
        assert cand.web is not None
        assert cand.web.page == it.page
        assert cand.web.title == it.title.removeprefix("File:").rsplit(".", 1)[0]
        assert (cand.web.width, cand.web.height) == (it.width, it.height)
    assert page.results[2].creator is None
    assert page.results[0].creator == "Ana Pérez & Bo 0"
    licences = [c.licence for c in page.results[:5]]
    assert licences == ["CC-BY-SA-4.0", "CC0-1.0", "PDM", "CC-BY-2.0", "CC-BY-SA-3.0-DE"]
    assert page.results[0].web is not None
    assert page.results[0].web.licence_url == "https://creativecommons.org/licenses/by-sa/4.0"
    assert page.results[2].web is not None  # public domain: no URL given, the mark's deed
    assert page.results[2].web.licence_url == "https://creativecommons.org/publicdomain/mark/1.0/"


def test_wikimedia_thumbnail_at_the_spec_size_never_larger_than_the_original(sim: WebSim) -> None:
    spec = make_spec(image=ImageConstraints(size=(200, 150)))
    search = wikimedia(sim, spec)
    page = run(sim, lambda c: search.search(c, "red fox", None))
    assert sim.requests_to("commons")[0].query["iiurlwidth"] == "200"
    for cand, it in zip(page.results, sim.items("commons", "red fox"), strict=True):
        assert cand.web is not None
        if it.width > 200:
            assert "/thumb/" in cand.location
            assert cand.location.endswith("?width=200")
            assert cand.web.width == 200
        else:  # 160 px wide: the original itself
            assert cand.location == it.url
            assert cand.web.width == it.width

    async def download(client: WebClient) -> list[tuple[int, int]]:
        sizes = []
        for cand in page.results[:4]:
            fetched = await client.fetch_image(cand.location)
            sizes.append(Image.open(io.BytesIO(fetched.data)).size)
        return sizes

    widths = [w for w, _ in run(sim, download)]
    assert widths == [200, 200, 200, 160]


def test_wikimedia_pages_by_passing_continue_back(sim: WebSim) -> None:
    sim.classes["arctic fox"] = 23
    pages = collect(sim, wikimedia(sim, page_size=10), "arctic fox")
    assert [len(p.results) for p in pages] == [10, 10, 3]
    sent = sim.requests_to("commons")
    assert "gsroffset" not in sent[0].query
    assert (sent[1].query["gsroffset"], sent[1].query["continue"]) == ("10", "gsroffset||")
    assert sent[2].query["gsroffset"] == "20"
    assert len({c.location for p in pages for c in p.results}) == 23


def test_wikimedia_no_results(sim: WebSim) -> None:
    page = run(sim, lambda c: wikimedia(sim).search(c, "grey wolf", None))
    assert page == SearchPage((), None, {})


def test_wikimedia_maxlag_is_waited_out(sim: WebSim) -> None:
    sim.faults.maxlag(at=1, count=2, retry_after=5)
    fake = FakeTime()
    page = run(sim, lambda c: wikimedia(sim).search(c, "red fox", None), fake)
    assert len(page.results) == 12
    assert len(sim.requests_to("commons")) == 3
    assert all(r.query["maxlag"] == "5" for r in sim.requests_to("commons"))
    assert sum(fake.sleeps) >= 10


def test_wikimedia_maxlag_that_lasts_fails_with_a_bounded_number_of_tries(sim: WebSim) -> None:
    sim.faults.maxlag(at=1, count=100, retry_after=1)
    with pytest.raises(FetchError, match="maxlag") as caught:
        run(sim, lambda c: wikimedia(sim).search(c, "red fox", None))
    assert "try again later" in str(caught.value)
    assert 1 < len(sim.requests_to("commons")) <= 10


def test_wikimedia_5xx_burst_is_retried(sim: WebSim) -> None:
    sim.faults.errors("commons", at=1, count=2, status=503)
    page = run(sim, lambda c: wikimedia(sim).search(c, "red fox", None))
    assert len(page.results) == 12
    assert [r.status for r in sim.requests_to("commons")] == [503, 503, 200]


def test_wikimedia_drops_svg_and_refused_licences(sim: WebSim) -> None:
    sim.faults.ignore_filters = True  # filetype:bitmap ignored: our side must check the type
    sim.faults.svg = {1}
    sim.faults.nc = {2}
    sim.faults.unknown = {3, 4}
    page = run(sim, lambda c: wikimedia(sim).search(c, "red fox", None))
    assert dict(page.dropped) == {"not-an-image-type": 1, "licence": 3}
    assert len(page.results) == 12 - 4
    open_unknown = make_spec(licences=LicencePolicy(allow_unknown=True))
    page = run(sim, lambda c: wikimedia(sim, open_unknown).search(c, "red fox", None))
    assert [c.licence for c in page.results].count("unknown") == 2  # GFDL, recorded as unknown
    assert dict(page.dropped) == {"not-an-image-type": 1, "licence": 1}


def test_wikimedia_api_error_is_a_source_error(sim: WebSim) -> None:
    sim.faults.api_error = "badvalue"
    search = wikimedia(sim)
    with pytest.raises(SourceError, match="badvalue"):
        run(sim, lambda c: search.search(c, "red fox", None))


def test_wikimedia_host_limits_and_page_size_option(sim: WebSim) -> None:
    assert wikimedia(sim).host_limits == {"127.0.0.1": 3}
    public = WikimediaSearch(SourceSpec(kind="wikimedia"), make_spec())
    assert public.host_limits == {"commons.wikimedia.org": 3, "upload.wikimedia.org": 3}
    assert host_limits([public, wikimedia(sim), openverse(sim)]) == {
        "commons.wikimedia.org": 3,
        "upload.wikimedia.org": 3,
        "127.0.0.1": 3,
    }
    with pytest.raises(ConfigError, match="page_size"):
        wikimedia(sim, page_size=51)
    assert "maxlag=5" in public.describe()


def test_damaged_cursor_is_a_source_error(sim: WebSim) -> None:
    for search in (openverse(sim), wikimedia(sim)):
        for bad in ("not json", "[1]", '{"offset": -1}', '{"action": "parse"}'):
            if search.kind == "wikimedia" and bad == '{"offset": -1}':
                continue
            if search.kind == "openverse" and bad == '{"action": "parse"}':
                continue
            with pytest.raises(SourceError, match="saved search position"):
                run(sim, lambda c, s=search, b=bad: s.search(c, "red fox", b))
    assert sim.requests == []


class ScriptedClient:
    """Answers ``get_json`` with set documents: shapes the simulator does not produce."""

    def __init__(self, *documents: object) -> None:
        self.documents = list(documents)
        self.params: list[dict[str, object]] = []

    async def get_json(self, url: str, **kwargs: Any) -> object:
        self.params.append(dict(kwargs.get("params") or {}))
        return self.documents.pop(0)


def _co_page(title: str, index: int, info: dict[str, Any] | None) -> dict[str, Any]:
    page: dict[str, Any] = {"pageid": 100 + index, "ns": 6, "title": title, "index": index}
    if info is not None:
        page["imageinfo"] = [info]
    return page


def _co_info(name: str) -> dict[str, Any]:
    meta = {"LicenseShortName": {"value": "CC BY 4.0"}, "Artist": {"value": "<b>Ann</b>"}}
    return {
        "url": f"https://upload.example/{name}.jpg",
        "descriptionurl": f"https://commons.example/wiki/File:{name}.jpg",
        "width": 800,
        "height": 600,
        "mime": "image/jpeg",
        "extmetadata": meta,
    }


def test_wikimedia_file_details_continued_in_the_next_batch_are_not_dropped() -> None:
    # MediaWiki may stop a batch before every page got its imageinfo: the pages come again in
    # the next answer (same generator position, an ``iicontinue``), the missing details with them
    first = {
        "continue": {"iicontinue": "B.jpg|2024", "gsroffset": 0, "continue": "gsroffset||"},
        "query": {
            "pages": [_co_page("File:A.jpg", 1, _co_info("A")), _co_page("File:B.jpg", 2, None)]
        },
    }
    second = {
        "batchcomplete": True,
        "query": {
            "pages": [
                _co_page("File:A.jpg", 1, None),
                _co_page("File:B.jpg", 2, _co_info("B")),
                {"ns": 6, "title": "File:Gone.jpg", "missing": True, "index": 3},
                {"ns": 6, "title": "File:No.jpg", "imagerepository": "", "index": 4},
            ]
        },
    }
    client = ScriptedClient(first, second)
    search = WikimediaSearch(SourceSpec(kind="wikimedia"), make_spec())

    async def work() -> list[SearchPage]:
        one = await search.search(client, "q", None)  # type: ignore[arg-type]
        return [one, await search.search(client, "q", one.cursor)]  # type: ignore[arg-type]

    one, two = asyncio.run(work())
    assert [c.web.title for c in one.results if c.web] == ["A"]
    assert one.dropped == {}
    assert client.params[1]["iicontinue"] == "B.jpg|2024"
    assert [c.location for c in two.results] == ["https://upload.example/B.jpg"]
    assert two.dropped == {"no-url": 2}  # the missing page, the page without a file
    assert two.results[0].creator == "Ann"
    assert two.cursor is None


def test_wikimedia_continue_keeps_only_what_mediawiki_sends() -> None:
    # A continue object is passed back whole, but only its text and number values: a nested
    # value (deep enough, it broke writing the cursor) or a key we set ourselves ("action")
    # would make the saved position unreadable and stop the query as "damaged".
    deep: object = "x"
    for _ in range(5000):
        deep = {"a": deep}
    first = {
        "continue": {"gsroffset": 50, "continue": "gsroffset||", "action": "delete", "x": deep},
        "query": {"pages": [_co_page("File:A.jpg", 1, _co_info("A"))]},
    }
    nothing_usable = {"continue": {"x": [1], "flag": True}, "query": {"pages": []}}
    client = ScriptedClient(first, {"query": {"pages": []}}, nothing_usable)
    search = WikimediaSearch(SourceSpec(kind="wikimedia"), make_spec())

    async def work() -> list[SearchPage]:
        one = await search.search(client, "q", None)  # type: ignore[arg-type]
        two = await search.search(client, "q", one.cursor)  # type: ignore[arg-type]
        return [one, two, await search.search(client, "q", None)]  # type: ignore[arg-type]

    one, _, three = asyncio.run(work())
    assert one.cursor is not None
    assert json.loads(one.cursor) == {"gsroffset": 50, "continue": "gsroffset||"}
    assert client.params[1]["gsroffset"] == 50
    assert client.params[1]["action"] == "query"
    assert three.cursor is None  # nothing to pass back: no next page


def test_openverse_odd_results_are_counted_not_fatal() -> None:
    good = {"url": "https://img.example/a.jpg", "license": "by", "license_version": "4.0"}
    document = {
        "page_count": 1,
        "results": [
            "not an object",
            {**good, "url": None},
            {**good, "url": "ftp://img.example/a.jpg"},
            {**good, "filetype": "svg"},
            {**good, "creator": "A &amp; B", "title": "<i>Fox</i>", "width": "640"},
        ],
    }
    search = OpenverseSearch(SourceSpec(kind="openverse"), make_spec(), env={})
    page = asyncio.run(search.search(ScriptedClient(document), "q", None))  # type: ignore[arg-type]
    assert page.dropped == {"malformed": 1, "no-url": 2, "not-an-image-type": 1}
    (cand,) = page.results
    assert (cand.creator, cand.licence) == ("A & B", "CC-BY-4.0")
    assert cand.web == WebInfo(
        licence_url="https://creativecommons.org/licenses/by/4.0/", title="Fox", width=640
    )
    assert page.cursor is None
    with pytest.raises(SourceError, match="results list"):
        asyncio.run(search.search(ScriptedClient({"detail": "x"}), "q", None))  # type: ignore[arg-type]


# -- the registry --------------------------------------------------------------------------------
def test_open_search_by_kind(sim: WebSim) -> None:
    spec = make_spec()
    assert isinstance(open_search(SourceSpec(kind="openverse"), spec), OpenverseSearch)
    found = open_search(SourceSpec.parse(f"wikimedia@{sim.base_url}"), spec)
    assert isinstance(found, WikimediaSearch)
    assert found.base_url == sim.base_url
    with pytest.raises(ConfigError, match="did you mean 'openverse'"):
        open_search(SourceSpec(kind="openvers"), spec)


def test_same_photo_from_both_apis_is_two_candidates_with_one_content(sim: WebSim) -> None:
    sim.faults.shared = 1

    async def work(client: WebClient) -> tuple[bytes, bytes]:
        a = await openverse(sim).search(client, "red fox", None)
        b = await wikimedia(sim).search(client, "red fox", None)
        assert a.results[0].location != b.results[0].location
        one = await client.fetch_image(a.results[0].location)
        two = await client.fetch_image(b.results[0].location)
        return one.data, two.data

    one, two = run(sim, work)
    assert one == two


# -- websim's misbehaving files, through the client ---------------------------------------------
@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("html", "not-an-image"),
        ("404", "http-error"),
        ("huge", "too-large"),
        ("huge-chunked", "too-large"),
        ("loop", "too-many-redirects"),
        ("redirect-out", "blocked-address"),  # another loopback port: not allowed
        ("trickle", "timeout"),
        ("redirect", None),  # a good redirect: the file itself
    ],
)
def test_sim_media_faults_reach_the_client(sim: WebSim, fault: str, reason: str | None) -> None:
    sim.faults.media = {0: fault}
    limits = Limits(max_bytes=2**20, download_timeout=0.5, retries=1)

    async def work(client: WebClient) -> object:
        page = await openverse(sim).search(client, "red fox", None)
        assert page.results[1].location == sim.item("openverse", "red fox", 1).url
        try:
            return await client.fetch_image(page.results[0].location)
        except FetchError as exc:
            return exc

    got = run(sim, work, limits=limits)
    if reason is None:
        assert not isinstance(got, FetchError)
        assert getattr(got, "data", None) == sim.image_bytes("openverse", "red fox", 0)
    else:
        assert isinstance(got, FetchError)
        assert got.reason == reason
    if fault.startswith("huge"):
        assert sim.huge_sent < 16 * 2**20  # the client hung up long before the end


# -- HTML to text --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("html", "text"),
    [
        ('<a href="//commons.wikimedia.org/wiki/User:Ana" title="User:Ana">Ana</a>', "Ana"),
        ("Ana P&eacute;rez &amp; <span>Bo</span>", "Ana Pérez & Bo"),
        ("Tom &amp;amp; Jerry", "Tom &amp; Jerry"),  # decoded once, not twice
        ("x &#8212; y &#x27;z&#x27;", "x — y 'z'"),
        ("<p>one</p><p>two<br>three</p>", "one two three"),
        ("a\n\t  b", "a b"),
        ("<div>x<script>alert(1)</script>y</div>", "xy"),
        ("<style>p {color: red}</style>shown", "shown"),
        ('<span style="display: none">hidden <b>x</b></span>shown', "shown"),
        ("<b>unclosed <i>tags", "unclosed tags"),
        ("a < b & c > d", "a < b & c > d"),
        ("&lt;b&gt;not a tag&lt;/b&gt;", "<b>not a tag</b>"),
        (
            "<table><tr><td>Unknown author</td><td>Unknown</td></tr></table>",
            "Unknown author Unknown",
        ),
        ('<span class="int-own-work" lang="en">Own work</span>', "Own work"),
        ("", ""),
        (None, ""),
    ],
)
def test_html_to_text(html: str | None, text: str) -> None:
    assert to_text(html) == text


def test_html_to_text_limit() -> None:
    assert to_text("<b>" + "a" * 50 + "</b>", limit=10) == "a" * 9 + "…"
    assert to_text("short", limit=10) == "short"


@pytest.mark.parametrize(
    "html",
    [
        "<b>x" * 300_000,  # 300,000 unclosed elements, text in each
        "<b>" * 200_000 + "</i>" * 200_000 + "y",  # end tags that close nothing
        "<a" * 300_000,  # "<" that opens no tag: HTMLParser rescans the rest at each one
        "</" * 300_000,
        "<?" * 300_000,
    ],
)
def test_html_to_text_hostile_markup_takes_linear_time(html: str) -> None:
    # A web API's title or creator is attacker-chosen: none of these may take quadratic time
    # (each took minutes before; now milliseconds, so 10 s of CPU is a generous bound).
    started = time.process_time()
    text = to_text(html, limit=500)
    assert time.process_time() - started < 10
    assert 0 < len(text) <= 500


def test_html_to_text_reads_a_bounded_prefix() -> None:
    from datasetagent.web.html import MAX_HTML

    assert to_text("a" * MAX_HTML + "<b>hidden?</b>") == "a" * MAX_HTML
    assert to_text("<a>Ana</a> &amp; Bo < 3") == "Ana & Bo < 3"
