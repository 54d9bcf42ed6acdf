from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from datasetagent.errors import StoreError
from datasetagent.records import Provenance, Rejection, Sample
from datasetagent.store import BlobStore, Candidate, RunStore


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


def test_blob_store_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    rel = blobs.put("cd" * 32, "png", b"one")
    assert rel == f"images/cd/{'cd' * 32}.png"
    assert blobs.put("cd" * 32, "png", b"two") == rel
    assert blobs.path(rel).read_bytes() == b"one"
    assert not list(tmp_path.rglob(".tmp-*"))
