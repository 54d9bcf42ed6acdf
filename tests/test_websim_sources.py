"""The web search sources (Openverse, Wikimedia Commons) against the loopback web ``websim``."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from websim import WebSim

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
