"""Builds from the web, end to end, against the loopback ``WebSim`` (Openverse and Commons
shaped APIs, real photos, injected faults): what is fetched, what is refused and why, what the
export records, and a killed run resumed without fetching anything twice."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit

import pytest
from rich.console import Console

from datasetagent.agents.collect_web import DOWNLOADS, POOR_AFTER, WebCollector, address_policy
from datasetagent.cli import RichReporter
from datasetagent.config import BuildOptions
from datasetagent.pipeline import build_run
from datasetagent.records import Rejection
from datasetagent.sources.downloads import download_name, read_download
from datasetagent.sources.websearch import SearchPage
from datasetagent.spec import ClassSpec, DatasetSpec, SourceSpec
from datasetagent.store import Candidate, RunStore, WebInfo
from websim import WebSim

CLASSES = ("red fox", "arctic fox")


def web_spec(sim: WebSim, target: int, *kinds: str, **kw: object) -> DatasetSpec:
    return DatasetSpec(
        classes=tuple(ClassSpec(name=c) for c in CLASSES),
        target_per_class=target,
        sources=tuple(SourceSpec(kind=k, base_url=sim.base_url) for k in kinds),
        **kw,  # type: ignore[arg-type]
    )


def options(sim: WebSim) -> BuildOptions:
    host, port = sim.address
    return BuildOptions.parse(allow_hosts=(f"{host}:{port}",), workers=1)


def media_requests(sim: WebSim) -> Counter[str]:
    """Image downloads by path (the bad endpoints included)."""
    return Counter(r.path for r in sim.requests if r.route in ("media", "bad"))


def test_a_web_build_exports_labelled_images_with_their_provenance(tmp_path: Path) -> None:
    with WebSim(classes={c: 30 for c in CLASSES}) as sim:
        base = sim.base_url
        run = tmp_path / "run"
        result = build_run(web_spec(sim, 6, "openverse", "wikimedia"), run, options(sim))
        agents = {r.headers.get("user-agent", "") for r in sim.requests}
    assert {c.name: c.accepted >= 6 for c in result.report.classes} == dict.fromkeys(CLASSES, True)
    assert Counter(s.label for s in result.exported) == dict.fromkeys(CLASSES, 6)
    assert all(a.startswith("datasetagent/") for a in agents)
    kinds = Counter(s.provenance.source_kind for s in result.exported)
    assert set(kinds) <= {"openverse", "wikimedia"}
    for s in result.exported:
        prov = s.provenance
        assert prov.location.startswith(base)
        assert prov.page
        assert prov.page.startswith(base)
        assert prov.licence in {"CC-BY-4.0", "CC-BY-SA-4.0", "CC0-1.0", "PDM", "CC-BY-2.0"}
        assert prov.title
        (ann,) = s.annotations
        assert ann.labeler == f"query:{prov.source_kind}"
        assert ann.label == prov.source_label
    manifest = [
        json.loads(line)
        for line in (run / "export" / "imagefolder" / "manifest.jsonl").read_text().splitlines()
    ]
    assert all(m["provenance"]["page"] for m in manifest)
    attribution = (run / "export" / "imagefolder" / "ATTRIBUTION.md").read_text()
    assert all(s.provenance.creator in attribution for s in result.exported if s.provenance.creator)
    assert not (run / "downloads").exists() or not any((run / "downloads").iterdir())


def test_refusals_are_rejections_with_their_reason_and_the_run_finishes(tmp_path: Path) -> None:
    with WebSim(classes={c: 14 for c in CLASSES}) as sim:
        sim.faults.media = {
            0: "html",
            1: "404",
            2: "huge",
            3: "loop",
            4: "redirect-out",
            5: "huge-chunked",
        }
        sim.faults.nc = {6}
        sim.faults.unknown = {7}
        sim.faults.mature = {8}
        sim.faults.ignore_filters = True  # the API returns them: our side must refuse them
        result = build_run(web_spec(sim, 40, "openverse"), tmp_path / "run", options(sim))
        fetched = media_requests(sim)
        refused = [sim.item("openverse", c, i) for i in (6, 7, 8) for c in CLASSES]
        base = sim.base_url
    rejected = result.report.rejected_by_reason
    for reason in ("not-an-image", "http-error", "too-many-redirects", "blocked-address"):
        assert rejected.get(reason) == 2, (reason, rejected)  # one per class
    assert rejected.get("too-large") == 4  # with and without Content-Length
    assert result.report.reason.startswith("pool exhausted")
    # NC, unknown-licence and mature results were never downloaded
    with RunStore(tmp_path / "run" / "run.db") as store:
        locations = {c.location for c in _candidates(store)}
    for item in refused:
        assert item.url not in locations
        assert fetched[item.url.removeprefix(base)] == 0
    assert Counter(s.label for s in result.exported) == dict.fromkeys(CLASSES, 14 - 9)


def test_an_api_that_answers_with_an_error_all_run_ends_it_clearly_and_resumably(
    tmp_path: Path,
) -> None:
    # An API that is down but answers HTTP 200 with an error document (MediaWiki's error
    # object, a proxy's JSON of another shape): a failure of the source, like a 5xx, not of
    # each query: asked once this process, not stopped for good (build --resume asks again).
    notes: list[str] = []

    class Notes:
        def stage(self, *a: object) -> None: ...
        def advance(self, n: int = 1) -> None: ...
        def note(self, message: str) -> None:
            notes.append(message)

    with WebSim(classes={c: 4 for c in CLASSES}) as sim:
        sim.faults.api_error = "internal_api_error_DBQueryError"
        run = tmp_path / "run"
        result = build_run(web_spec(sim, 4, "wikimedia"), run, options(sim), reporter=Notes())
        asked = len(sim.requests_to("commons"))
    assert result.report.reason.startswith("pool exhausted")
    assert asked == 1
    assert any("search failed" in n and "DBQueryError" in n for n in notes), notes
    with RunStore(run / "run.db") as store:
        assert not any(q.done for q in store.queries())


def test_a_note_carrying_a_servers_text_cannot_crash_or_drive_the_terminal() -> None:
    # "search failed (…)" quotes an API's error text: "[/x]" raised rich's MarkupError (the
    # build died), "[link=…]" made a hyperlink, and ESC sequences reached the terminal as is.
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, highlight=False, soft_wrap=True)
    reporter = RichReporter(console, enabled=False)  # as the CLI's: stderr, no highlighting
    reporter.note("wikimedia: search failed (info: [/x] [link=http://e.org]y \x1b[2J \x9b)")
    assert out.getvalue() == (
        "wikimedia: search failed (info: [/x] [link=http://e.org]y \\x1b[2J \\x9b)\n"
    )


def _candidates(store: RunStore) -> list[Candidate]:
    rows = store._db.execute("SELECT * FROM candidates")  # every state
    from datasetagent.store.db import _candidate

    return [_candidate(r) for r in rows]


def test_throttling_and_maxlag_are_waited_out(tmp_path: Path) -> None:
    with WebSim(classes={c: 8 for c in CLASSES}) as sim:
        # (Openverse's own 429s also say the minute's allowance is spent: the client then
        # waits for the window, a minute, as tests/test_web_http.py shows with a fake clock)
        sim.faults.throttle("media", at=1, count=1, retry_after=1)
        sim.faults.maxlag(at=1, count=1, retry_after=1)
        sim.faults.errors("media", at=2, count=2, status=503)
        result = build_run(
            web_spec(sim, 4, "openverse", "wikimedia"), tmp_path / "run", options(sim)
        )
    assert Counter(s.label for s in result.exported) == dict.fromkeys(CLASSES, 4)
    assert not result.report.rejected_by_reason.get("http-error")


def test_the_same_photo_from_both_apis_is_one_image(tmp_path: Path) -> None:
    with WebSim(classes={c: 6 for c in CLASSES}) as sim:
        sim.faults.shared = 3
        result = build_run(
            web_spec(sim, 50, "openverse", "wikimedia"), tmp_path / "run", options(sim)
        )
    assert result.report.rejected_by_reason.get("exact_duplicate") == 2 * 3
    assert Counter(s.label for s in result.exported) == dict.fromkeys(CLASSES, 12 - 3)


def test_a_loopback_api_is_refused_without_allow_host(tmp_path: Path) -> None:
    with WebSim(classes={c: 4 for c in CLASSES}) as sim:
        notes: list[str] = []

        class Notes:
            def stage(self, *a: object) -> None: ...
            def advance(self, n: int = 1) -> None: ...
            def note(self, message: str) -> None:
                notes.append(message)

        result = build_run(
            web_spec(sim, 4, "openverse"),
            tmp_path / "run",
            BuildOptions.parse(workers=1),
            reporter=Notes(),
        )
        assert sim.requests == []
    assert result.exported == []
    assert any("blocked-address" in n and "--allow-host" in n for n in notes), notes


def test_poor_queries_are_stopped(tmp_path: Path) -> None:
    spec = DatasetSpec(classes=(ClassSpec(name="red fox", synonyms=("vulpes",)),))
    with RunStore(tmp_path / "run.db") as store:
        tag = "openverse:red fox"
        store.add_candidates(
            Candidate(
                source_kind="openverse",
                location=f"http://x/{i}.jpg",
                class_hint="red fox",
                licence="CC0-1.0",
                web=WebInfo(query=tag if i < POOR_AFTER + 1 else "openverse:vulpes"),
            )
            for i in range(POOR_AFTER + 3)
        )
        store.take_candidates(1, 100, origin="collected", wanted=None)
        for cand in store.candidates_to_process(1):
            store.record_outcome(
                cand.id,
                1,
                Rejection(location=cand.location, source_kind="openverse", reasons=("x",)),
            )
        for text in ("red fox", "vulpes"):
            store.save_query(store.query("openverse", "red fox", text))

        class Search:
            kind = "openverse"
            host_limits: Mapping[str, int] = MappingProxyType({})

        web = WebCollector(store, spec, tmp_path, [Search()], address_policy(()))  # type: ignore[list-item]
        lines = web.review_queries()
        assert len(lines) == 1
        assert "'red fox'" in lines[0]
        assert store.query("openverse", "red fox", "red fox").done
        assert not store.query("openverse", "red fox", "vulpes").done  # too few to judge
        assert web.can_search(["red fox"])


@pytest.mark.parametrize("cycle", [("A",), ("A", "B")])
def test_a_search_whose_cursor_comes_back_is_stopped(
    tmp_path: Path, cycle: tuple[str, ...]
) -> None:
    # A hostile or broken API that hands back a position it gave before (a MediaWiki
    # ``continue`` that repeats) would be asked again and again, every round, for nothing new.
    spec = DatasetSpec(classes=(ClassSpec(name="red fox"),))
    calls: list[str | None] = []

    class Search:
        kind = "wikimedia"
        host_limits: Mapping[str, int] = MappingProxyType({})

        def describe(self) -> str:
            return "looping search"

        async def search(self, client: object, query: str, cursor: str | None) -> SearchPage:
            calls.append(cursor)
            n = len(calls)
            cand = Candidate(
                source_kind="wikimedia", location=f"https://x.example/{n % 2}.jpg", licence="PDM"
            )
            return SearchPage((cand,), cycle[n % len(cycle)])

    with RunStore(tmp_path / "run.db") as store:
        notes: list[str] = []
        web = WebCollector(
            store,
            spec,
            tmp_path,
            [Search()],
            address_policy(()),
            note=notes.append,  # type: ignore[list-item]
        )
        web.search({"red fox": 50})
        query = store.query("wikimedia", "red fox", "red fox")
        assert query.done
        assert "position it gave before" in (query.why or "")
        assert len(calls) == len(cycle) + 1  # the first page, then each position once
        assert not web.can_search(["red fox"])


def test_links_planted_in_the_downloads_folder_are_neither_read_nor_written_through(
    tmp_path: Path,
) -> None:
    # RUN/downloads/<name> as a link to a file outside would have been taken as the download
    # (never fetched) and read as the web image; a link at the ".part" name it is written
    # through first would have had the download written into the file it points to.
    spec = DatasetSpec(classes=(ClassSpec(name="red fox"),))
    outside = tmp_path / "private.jpg"
    outside.write_bytes(b"the user's own bytes")
    with WebSim(classes={"red fox": 2}) as sim, RunStore(tmp_path / "run.db") as store:
        urls = [sim.download_url(sim.item("openverse", "red fox", i)) for i in range(2)]
        store.add_candidates(
            Candidate(source_kind="urls", location=u, class_hint="red fox", licence="PDM")
            for u in urls
        )
        store.take_candidates(1, 10, origin="collected", wanted=None)
        folder = tmp_path / DOWNLOADS
        folder.mkdir()
        (folder / download_name(urls[0])).symlink_to(outside)
        (folder / f".{download_name(urls[1])}.part").symlink_to(outside)
        with pytest.raises(OSError, match="symbolic links"):  # a link is not a download
            read_download(folder, urls[0])
        web = WebCollector(
            store, spec, tmp_path, [], address_policy([f"{h}:{p}" for h, p in [sim.address]])
        )
        counts = web.download(1)
        assert counts == {"downloaded": 2}
        assert media_requests(sim) == Counter(urlsplit(u).path for u in urls)
    assert outside.read_bytes() == b"the user's own bytes"
    for url in urls:
        path = folder / download_name(url)
        assert not path.is_symlink()
        assert read_download(folder, url) == sim.image_bytes(
            "openverse", "red fox", urls.index(url)
        )


def test_a_folder_planted_in_the_downloads_folder_is_a_rejection_not_a_crash(
    tmp_path: Path,
) -> None:
    spec = DatasetSpec(classes=(ClassSpec(name="red fox"),))
    with WebSim(classes={"red fox": 2}) as sim, RunStore(tmp_path / "run.db") as store:
        urls = [sim.download_url(sim.item("openverse", "red fox", i)) for i in range(2)]
        store.add_candidates(
            Candidate(source_kind="urls", location=u, class_hint="red fox", licence="PDM")
            for u in urls
        )
        store.take_candidates(1, 10, origin="collected", wanted=None)
        folder = tmp_path / DOWNLOADS
        (folder / download_name(urls[0]) / "inside").mkdir(parents=True)
        web = WebCollector(
            store, spec, tmp_path, [], address_policy([f"{h}:{p}" for h, p in [sim.address]])
        )
        assert web.download(1) == {"downloaded": 1, "download-path": 1}
        (rejection,) = store.rejections()
    assert rejection.reasons == ("download-path",)
    assert (folder / download_name(urls[0]) / "inside").is_dir()  # left as it was


@pytest.mark.timeout(240)
def test_killed_and_resumed_refetches_nothing(tmp_path: Path) -> None:
    with WebSim(classes={c: 10 for c in CLASSES}) as sim:
        sim.faults.media = {9: "trickle"}  # the last of each class takes seconds to arrive
        sim.faults.trickle_seconds = 8
        spec = tmp_path / "spec.yaml"
        spec.write_text(web_spec(sim, 9, "openverse").to_yaml())
        run = tmp_path / "run"
        host, port = sim.address
        cmd = [
            sys.executable, "-m", "datasetagent", "build", str(spec), "-o", str(run),
            "--allow-host", f"{host}:{port}", "--workers", "1",
        ]  # fmt: skip
        env = {**os.environ, "NO_COLOR": "1"}
        log = (tmp_path / "build.log").open("wb")  # a file: a pipe nobody reads could fill
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _downloads(run) < 2 * 9:
            time.sleep(0.05)
        downloaded = _downloads(run)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
        assert downloaded >= 2 * 9, (tmp_path / "build.log").read_text()
        before = media_requests(sim)
        resume = [sys.executable, "-m", "datasetagent", "build", "--resume", "-o", str(run)]
        done = subprocess.run(
            resume, env=env, capture_output=True, text=True, timeout=180, check=False
        )
        assert done.returncode == 0, done.stderr
        after = media_requests(sim)
    fetched_again = {p for p, n in after.items() if n > before.get(p, 0)}
    # only what had not arrived when the run was killed is fetched again
    assert all("trickle" in p or "/9." in p for p in fetched_again), fetched_again
    summary = json.loads((run / "summary.json").read_text())
    assert summary["classes"]["red fox"]["exported"] == 9


def _downloads(run: Path) -> int:
    db = run / "run.db"
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(con.execute("SELECT COUNT(*) FROM downloads").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_credentials_are_used_and_never_stored(tmp_path: Path) -> None:
    with WebSim(classes={c: 6 for c in CLASSES}) as sim:
        spec = tmp_path / "spec.yaml"
        spec.write_text(web_spec(sim, 3, "openverse").to_yaml())
        host, port = sim.address
        env = {
            **os.environ,
            "NO_COLOR": "1",
            "OPENVERSE_CLIENT_ID": "sim-client",
            "OPENVERSE_CLIENT_SECRET": "sim-secret",
        }
        out = subprocess.run(
            [
                sys.executable, "-m", "datasetagent", "build", str(spec), "-o",
                str(tmp_path / "run"), "--allow-host", f"{host}:{port}", "--workers", "1",
            ],
            env=env, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        authorised = [r for r in sim.requests_to("openverse") if "authorization" in r.headers]
        tokens = {r.headers["authorization"].removeprefix("Bearer ") for r in authorised}
    assert sim.tokens_issued == 1
    assert len(authorised) == len(sim.requests_to("openverse"))
    assert len(tokens) == 1
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"sim-secret" not in data, path
            assert all(t.encode() not in data for t in tokens), path
    assert "sim-secret" not in out.stderr + out.stdout
    # progress on stderr: the source, its searches and each round's downloads
    assert "openverse at " in out.stderr
    assert "web search: " in out.stderr
    assert "downloads: downloaded " in out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "openverse@ftp://x"], "must be an http(s) URL"),
        (["--source", "wikimedia@http://xn--localhost"], "not a valid URL"),  # bad punycode
        (["--source", "wikimedia@http://e.org:abc"], "not a valid URL"),
        (["--source", "openverse@http://xn--localhost/v"], "not a valid URL"),
        (["--source", "openverse", "--allow-host", "[::1"], "unclosed '['"),
        (["--source", "openverse", "--allow-host", "h:99999"], "port must be a number"),
    ],
)
def test_bad_web_arguments_are_one_line_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "datasetagent", "build", "cats and dogs", "-o", str(tmp_path / "r"),
         *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()


def test_a_url_list_build_downloads_labels_and_credits(tmp_path: Path) -> None:
    with WebSim(classes={c: 6 for c in CLASSES}) as sim:
        items = [sim.item("openverse", c, i) for c in CLASSES for i in range(6)]
        rows = ["url,label,licence,creator,page"]
        rows += [f"{it.url},{it.cls},CC BY 4.0,Ann {it.index},{it.url}.html" for it in items[:-1]]
        rows.append(sim.url("/bad/404.jpg") + ",red fox")  # no licence: the user vouches for it
        listing = tmp_path / "urls.csv"
        listing.write_text("\n".join(rows) + "\n")
        spec = DatasetSpec(
            classes=tuple(ClassSpec(name=c) for c in CLASSES),
            target_per_class=5,
            sources=(SourceSpec.parse(str(listing)),),
        )
        result = build_run(spec, tmp_path / "run", options(sim))
    assert Counter(s.label for s in result.exported) == dict.fromkeys(CLASSES, 5)
    assert {a.labeler for s in result.exported for a in s.annotations} == {"url-list"}
    assert {s.provenance.licence for s in result.exported} == {"CC-BY-4.0"}
    assert all(s.provenance.creator.startswith("Ann ") for s in result.exported)  # type: ignore[union-attr]
    assert result.report.rejected_by_reason.get("http-error") == 1
