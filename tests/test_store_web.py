"""The run store's web records: candidates' web info, downloads, searches and their yields,
and the migration of a run stored before them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from datasetagent.records import Rejection
from datasetagent.store import Candidate, RunStore, SearchQuery, WebInfo


def _web(url: str, query: str = "openverse:red fox") -> Candidate:
    return Candidate(
        source_kind="openverse",
        location=url,
        class_hint="red fox",
        licence="CC-BY-4.0",
        creator="Ann",
        web=WebInfo(page=url + "/page", licence_url="https://l", title="A fox", query=query),
    )


def test_a_run_of_schema_1_is_migrated_and_keeps_its_candidates(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    with RunStore(db) as store:
        store.add_candidates([Candidate(source_kind="local", location="/a.png", licence="x")])
    con = sqlite3.connect(db)  # the run as the previous release left it
    con.execute("ALTER TABLE candidates DROP COLUMN web")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with RunStore(db) as store:
        assert store.get_meta("schema_version") == "2"
        assert store.count_candidates() == 1
        store.add_candidates([_web("http://x/1.jpg")])
        got = {c.location: c for c in _all(store)}
    assert got["/a.png"].web is None
    assert got["http://x/1.jpg"].web == WebInfo(
        page="http://x/1.jpg/page",
        licence_url="https://l",
        title="A fox",
        query="openverse:red fox",
    )


def _all(store: RunStore) -> list[Candidate]:
    store.take_candidates(1, 100, origin="collected", wanted=None)
    return store.candidates_to_process(1)


def test_downloads_are_recorded_per_round(tmp_path: Path) -> None:
    with RunStore(tmp_path / "run.db") as store:
        store.add_candidates([_web("http://x/1.jpg"), _web("http://x/2.jpg")])
        first, second = _all(store)
        store.record_download(first.id, "http://cdn/1.jpg", "abc", 10)
        assert store.downloads(1) == {first.id: ("http://cdn/1.jpg", "abc")}
        assert store.downloads(2) == {}
        assert second.id not in store.downloads()


def test_a_query_keeps_its_cursor_and_counts(tmp_path: Path) -> None:
    with RunStore(tmp_path / "run.db") as store:
        fresh = store.query("openverse", "red fox", "red fox")
        assert (fresh.cursor, fresh.done, fresh.sent) == (None, False, 0)
        store.save_query(fresh.model_copy(update={"cursor": '{"page": 2}', "sent": 1, "seen": 20}))
        again = store.query("openverse", "red fox", "red fox")
        assert (again.cursor, again.sent, again.seen) == ('{"page": 2}', 1, 20)
        assert store.queries() == [again]
        assert isinstance(again, SearchQuery)


def test_query_yields_count_what_each_query_found(tmp_path: Path) -> None:
    with RunStore(tmp_path / "run.db") as store:
        store.add_candidates(
            [_web(f"http://x/{i}.jpg") for i in range(3)]
            + [_web("http://y/1.jpg", query="wikimedia:vulpes")]
        )
        cands = _all(store)
        for cand in cands[:2]:
            store.record_outcome(
                cand.id,
                1,
                Rejection(location=cand.location, source_kind="openverse", reasons=("http-error",)),
            )
        yields = store.query_yields()
    assert yields["openverse:red fox"]["rejected"] == 2
    assert "wikimedia:vulpes" not in yields  # nothing of it processed yet
