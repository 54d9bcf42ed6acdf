from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from datasetagent.errors import StoreError
from datasetagent.records import Provenance, Rejection, Sample
from datasetagent.store import LOCK_NAME, BlobStore, Candidate, RunStore, run_lock


def cand(i: int, hint: str | None = None) -> Candidate:
    return Candidate(
        source_kind="local", location=f"/pool/{i}.png", class_hint=hint, licence="user-supplied"
    )


def sample(digest: str, location: str) -> Sample:
    return Sample(
        id=digest,
        blob=f"images/{digest[:2]}/{digest}.png",
        width=4,
        height=4,
        mode="L",
        origin="collected",
        provenance=Provenance(source_kind="local", location=location, licence="x"),
    )


def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    with RunStore(tmp_path / "run.db") as store:
        mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    db = sqlite3.connect(tmp_path / "run.db")
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema version 99"):
        RunStore(tmp_path / "run.db")


def test_candidates_are_listed_once_and_taken_by_need(tmp_path: Path) -> None:
    with RunStore(tmp_path / "run.db") as store:
        assert store.add_candidates([cand(1, "cat"), cand(2, "dog"), cand(3)]) == 3
        assert store.add_candidates([cand(1, "cat"), cand(4)]) == 1  # re-listing adds only new
        assert store.take_candidates(1, 10, origin="collected", wanted=["dog"]) == 3
        taken = {c.location for c in store.candidates_to_process(1)}
        assert taken == {"/pool/2.png", "/pool/3.png", "/pool/4.png"}
        assert store.pending_hints("collected") == {"cat": 1}


def test_exact_duplicate_keeps_the_first(tmp_path: Path) -> None:
    with RunStore(tmp_path / "run.db") as store:
        store.add_candidates([cand(1), cand(2), cand(3)])
        store.take_candidates(1, 10, origin="collected", wanted=None)
        ids = [c.id for c in store.candidates_to_process(1)]
        first = store.record_outcome(ids[0], 1, sample("ab" * 32, "/pool/1.png"))
        second = store.record_outcome(ids[1], 1, sample("ab" * 32, "/pool/2.png"))
        store.record_outcome(
            ids[2], 1, Rejection(location="/pool/3.png", source_kind="local", reasons=("corrupt",))
        )
        assert isinstance(first, Sample)
        assert isinstance(second, Rejection)
        assert second.reasons == ("exact_duplicate",)
        assert second.duplicate_of == "/pool/1.png"
        assert store.rejection_counts() == {"corrupt": 1, "exact_duplicate": 1}
        assert store.candidates_to_process(1) == []
        assert len(store.samples()) == 1


def test_a_better_copy_replaces_a_sample_in_one_transaction(tmp_path: Path) -> None:
    with RunStore(tmp_path / "run.db") as store:
        store.add_candidates([cand(i) for i in range(1, 6)])
        store.take_candidates(1, 10, origin="collected", wanted=None)
        ids = [c.id for c in store.candidates_to_process(1)]
        store.record_outcome(ids[0], 1, sample("aa" * 32, "/pool/1.png"))
        store.record_outcome(ids[1], 1, sample("aa" * 32, "/pool/2.png"))  # exact copy of 1
        store.record_outcome(ids[2], 1, sample("cc" * 32, "/pool/3.png"))
        gone = Rejection(
            location="/pool/1.png",
            source_kind="local",
            reasons=("near_duplicate",),
            duplicate_of="/pool/4.png",
        )
        before = (store.samples(), store.rejections())
        with pytest.raises(StoreError, match="UNIQUE"):  # 3's pixels: nothing is changed
            store.replace_sample("aa" * 32, ids[3], 1, sample("cc" * 32, "/pool/4.png"), gone)
        assert (store.samples(), store.rejections()) == before
        assert [c.id for c in store.candidates_to_process(1)] == ids[3:]
        changed = store.replace_sample("aa" * 32, ids[3], 1, sample("dd" * 32, "/pool/4.png"), gone)
        assert [(c, r.reasons, r.duplicate_of) for c, r in changed] == [
            (ids[0], ("near_duplicate",), "/pool/4.png"),
            # the exact copy of the old one is a near copy of the one kept now
            (ids[1], ("near_duplicate",), "/pool/4.png"),
        ]
        assert [s.provenance.location for s in store.samples()] == ["/pool/3.png", "/pool/4.png"]
        assert store.rejections() == [r for _, r in changed]
        assert store.rejection_counts() == {"near_duplicate": 2}
        assert [c.id for c in store.candidates_to_process(1)] == ids[4:]
        with pytest.raises(StoreError, match="not stored"):
            store.replace_sample("aa" * 32, ids[4], 1, sample("ee" * 32, "/pool/5.png"), gone)


def test_blob_store_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    rel = blobs.put("cd" * 32, "png", b"one")
    assert rel == f"images/cd/{'cd' * 32}.png"
    assert blobs.put("cd" * 32, "png", b"two") == rel
    assert blobs.path(rel).read_bytes() == b"one"
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [blobs.path(rel)]  # no temp file


@pytest.mark.timeout(30)
def test_the_run_lock_never_writes_through_a_link_or_into_a_fifo(tmp_path: Path) -> None:
    """The lock file is truncated and written: a ``run.lock`` that links to another file, or
    is a FIFO, is refused with a one-line error, and what it points at is left as it was."""
    import os

    run = tmp_path / "run"
    run.mkdir()
    precious = tmp_path / "notes.txt"
    precious.write_text("the user's own notes\n")
    (run / LOCK_NAME).symlink_to(precious)
    with pytest.raises(StoreError, match="symbolic link; remove it"), run_lock(run, "build"):
        pass
    assert precious.read_text() == "the user's own notes\n"
    (run / LOCK_NAME).unlink()
    os.mkfifo(run / LOCK_NAME)
    with pytest.raises(StoreError, match="not a regular file; remove it"), run_lock(run, "build"):
        pass
    (run / LOCK_NAME).unlink()
    with run_lock(run, "build"):  # a plain lock file is made and taken as before
        assert (run / LOCK_NAME).read_text() == f"{os.getpid()} build\n"
