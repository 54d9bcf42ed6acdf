"""SQLite run database. Every stage writes through it, so a killed run resumes from it."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from datasetagent.errors import StoreError
from datasetagent.records import Audit, QualityReport, Rejection, Sample
from datasetagent.spec import DatasetSpec, SplitName

SCHEMA_VERSION = 2
#: What turns a run of an older schema version into the current one, by that version.
_MIGRATIONS = {1: ("ALTER TABLE candidates ADD COLUMN web TEXT",)}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY,
    source_kind TEXT NOT NULL,
    location TEXT NOT NULL,
    class_hint TEXT,
    licence TEXT NOT NULL,
    creator TEXT,
    origin TEXT NOT NULL,
    split_hint TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    round INTEGER,
    web TEXT,
    UNIQUE (source_kind, location)
);
CREATE INDEX IF NOT EXISTS candidates_state ON candidates (state, round);
CREATE TABLE IF NOT EXISTS samples (
    id TEXT PRIMARY KEY,
    candidate_id INTEGER NOT NULL REFERENCES candidates (id),
    status TEXT NOT NULL,
    label TEXT,
    origin TEXT NOT NULL,
    round INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_status ON samples (status, label);
CREATE TABLE IF NOT EXISTS rejections (
    candidate_id INTEGER PRIMARY KEY REFERENCES candidates (id),
    round INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rejections_duplicate_of
    ON rejections (json_extract(record, '$.duplicate_of'));
CREATE TABLE IF NOT EXISTS stages (
    round INTEGER NOT NULL,
    stage TEXT NOT NULL,
    finished REAL NOT NULL,
    PRIMARY KEY (round, stage)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    round INTEGER NOT NULL,
    stage TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (round INTEGER PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS downloads (
    candidate_id INTEGER PRIMARY KEY REFERENCES candidates (id),
    url TEXT NOT NULL,
    file TEXT NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS queries (
    source TEXT NOT NULL,
    class TEXT NOT NULL,
    query TEXT NOT NULL,
    cursor TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    why TEXT,
    sent INTEGER NOT NULL DEFAULT 0,
    seen INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source, class, query)
);
CREATE TABLE IF NOT EXISTS audits (
    sample_id TEXT NOT NULL,
    checker TEXT NOT NULL,
    kind TEXT NOT NULL,
    label TEXT NOT NULL,
    round INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (sample_id, checker, kind, label)
);
"""

CandidateOrigin = Literal["existing", "collected"]


class WebInfo(BaseModel):
    """A web candidate's metadata, as its source gave it, stored with the candidate."""

    model_config = ConfigDict(frozen=True)

    page: str | None = None
    licence_url: str | None = None
    title: str | None = None
    #: The search that found it (``openverse``, ``wikimedia``), its text, and the class it was
    #: run for: a weak label, as a class folder is.
    query: str | None = None
    width: int | None = None
    height: int | None = None


class SearchQuery(BaseModel):
    """One search of a web source for one class: where its paging stands and what it found."""

    source: str
    class_name: str
    text: str
    #: What the source needs for the next page (its own text); None before the first page.
    cursor: str | None = None
    #: No more pages, or stopped: ``why`` says which.
    done: bool = False
    why: str | None = None
    #: Requests sent and results seen so far.
    sent: int = 0
    seen: int = 0


class Candidate(BaseModel):
    """A file or URL a source offered, before it is decoded."""

    model_config = ConfigDict(frozen=True)

    id: int = 0
    source_kind: str
    location: str
    class_hint: str | None = None
    licence: str
    creator: str | None = None
    origin: CandidateOrigin = "collected"
    split_hint: SplitName | None = None
    round: int | None = None
    #: What a web source said of it (landing page, licence URL, title, the query that found
    #: it); None for files.
    web: WebInfo | None = None


def store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """The one-line error for a failed database operation: what, why and the fix."""
    text = str(exc)
    low = text.lower()
    if "full" in low:
        why = "the disk is full; free some space, then continue with datasetagent build --resume"
    elif "readonly" in low or "read-only" in low or "unable to open" in low:
        why = (
            "it cannot be written here (a read-only file or folder?); make it writable, or "
            "copy the run folder somewhere writable"
        )
    elif "not a database" in low or "malformed" in low or "corrupt" in low:
        why = "the file is damaged or is not a run database; start a new run folder"
    elif "locked" in low or "busy" in low:
        why = "another process is using the run; wait for it to finish, or stop it"
    else:
        why = "see the message; start a new run folder if it persists"
    return StoreError(f"run database {path}: {text}: {why}")


class _Connection(sqlite3.Connection):
    """A connection whose failures are ``StoreError``s naming the file and the fix."""

    path = Path()

    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        try:
            return super().execute(*args, **kwargs)
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from exc

    def executemany(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        try:
            return super().executemany(*args, **kwargs)
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from exc

    def executescript(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        try:
            return super().executescript(*args, **kwargs)
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from exc


class RunStore:
    """One run's database (``RUN/run.db``). Use as a context manager or call ``close``.

    Every SQLite failure (a damaged or read-only file, a full disk, a lock held too long) is
    raised as a one-line ``StoreError``; a write that failed leaves the stored run as it was
    (each stage's writes are transactions), so ``--resume`` continues once the cause is fixed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            db = sqlite3.connect(path, isolation_level=None, timeout=30, factory=_Connection)
        except sqlite3.Error as exc:
            raise store_error(path, exc) from exc
        assert isinstance(db, _Connection)
        db.path = path
        self._db = db
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except StoreError:
            self._db.close()
            raise
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
            return
        while int(version) in _MIGRATIONS:
            with self.transaction():
                for statement in _MIGRATIONS[int(version)]:
                    self._db.execute(statement)
                version = str(int(version) + 1)
                self._db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (version,),
                )
        if int(version) != SCHEMA_VERSION:
            raise StoreError(
                f"{path} was written by schema version {version}, this build reads "
                f"{SCHEMA_VERSION}; start a new run folder"
            )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled back itself (disk full)
                with suppress(StoreError):
                    self._db.execute("ROLLBACK")
            raise

    # -- meta and spec -------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def save_spec(self, spec: DatasetSpec) -> None:
        self.set_meta("spec", spec.model_dump_json())

    def load_spec(self) -> DatasetSpec | None:
        raw = self.get_meta("spec")
        return None if raw is None else DatasetSpec.model_validate_json(raw)

    # -- stages and events ---------------------------------------------------------------------
    def stage_done(self, round_: int, stage: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM stages WHERE round = ? AND stage = ?", (round_, stage)
        ).fetchone()
        return row is not None

    def mark_stage(self, round_: int, stage: str) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO stages (round, stage, finished) VALUES (?, ?, ?)",
            (round_, stage, time.time()),
        )

    def has_work(self) -> bool:
        """True once any image has been processed (listing candidates does not count)."""
        row = self._db.execute("SELECT 1 FROM stages WHERE stage != 'collect' LIMIT 1").fetchone()
        return row is not None

    def event(self, round_: int, stage: str, message: str) -> None:
        self._db.execute(
            "INSERT INTO events (ts, round, stage, message) VALUES (?, ?, ?, ?)",
            (time.time(), round_, stage, message),
        )

    def events(self) -> list[tuple[int, str, str]]:
        rows = self._db.execute("SELECT round, stage, message FROM events ORDER BY id")
        return [(int(r["round"]), str(r["stage"]), str(r["message"])) for r in rows]

    # -- candidates ----------------------------------------------------------------------------
    def add_candidates(self, candidates: Iterable[Candidate]) -> int:
        """Insert candidates not seen before; returns how many were new."""
        with self.transaction() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO candidates (source_kind, location, class_hint, licence, "
                "creator, origin, split_hint, web) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        c.source_kind,
                        c.location,
                        c.class_hint,
                        c.licence,
                        c.creator,
                        c.origin,
                        c.split_hint,
                        None if c.web is None else c.web.model_dump_json(exclude_none=True),
                    )
                    for c in candidates
                ),
            )
            return db.total_changes - before

    def take_candidates(
        self, round_: int, limit: int, *, origin: CandidateOrigin, wanted: Sequence[str] | None
    ) -> int:
        """Assign up to ``limit`` pending candidates to ``round_``.

        With ``wanted`` given, candidates whose class hint names another class are left for
        later (they cannot help the classes still short); unhinted ones are always eligible.
        """
        params: list[object] = [round_, origin]
        hint_clause = ""
        if wanted is not None:
            marks = ",".join("?" * len(wanted))
            hint_clause = f" AND (class_hint IS NULL OR class_hint IN ({marks}))"
            params.extend(wanted)
        params.append(limit)
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE candidates SET state = 'taken', round = ? WHERE id IN ("
                "SELECT id FROM candidates WHERE state = 'pending' AND origin = ?"
                f"{hint_clause} ORDER BY id LIMIT ?)",
                params,
            )
            return cur.rowcount

    def candidates_to_process(self, round_: int) -> list[Candidate]:
        rows = self._db.execute(
            "SELECT * FROM candidates WHERE state = 'taken' AND round = ? ORDER BY id", (round_,)
        )
        return [_candidate(r) for r in rows]

    def count_candidates(self, state: str | None = None, *, origin: str | None = None) -> int:
        where, params = _where({"state": state, "origin": origin})
        row = self._db.execute(f"SELECT COUNT(*) FROM candidates{where}", params).fetchone()
        return int(row[0])

    def pending_hints(self, origin: str) -> dict[str | None, int]:
        rows = self._db.execute(
            "SELECT class_hint, COUNT(*) AS n FROM candidates WHERE state = 'pending' AND "
            "origin = ? GROUP BY class_hint",
            (origin,),
        )
        return {r["class_hint"]: int(r["n"]) for r in rows}

    # -- the web: downloads and searches -------------------------------------------------------
    def record_download(self, candidate_id: int, url: str, file: str, size: int) -> None:
        """A web candidate's bytes are in ``RUN/downloads/FILE``, fetched from ``url`` (the URL
        after redirects)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO downloads (candidate_id, url, file, bytes) "
                "VALUES (?, ?, ?, ?)",
                (candidate_id, url, file, size),
            )

    def downloads(self, round_: int | None = None) -> dict[int, tuple[str, str]]:
        """Candidate id → (URL fetched, file under ``RUN/downloads``), of ``round_`` or all."""
        sql = "SELECT d.candidate_id, d.url, d.file FROM downloads d"
        params: tuple[object, ...] = ()
        if round_ is not None:
            sql += " JOIN candidates c ON c.id = d.candidate_id WHERE c.round = ?"
            params = (round_,)
        rows = self._db.execute(sql, params)
        return {int(r[0]): (str(r[1]), str(r[2])) for r in rows}

    def query(self, source: str, class_: str, text: str) -> SearchQuery:
        row = self._db.execute(
            "SELECT * FROM queries WHERE source = ? AND class = ? AND query = ?",
            (source, class_, text),
        ).fetchone()
        if row is None:
            return SearchQuery(source=source, class_name=class_, text=text)
        return _search_query(row)

    def save_query(self, q: SearchQuery) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO queries (source, class, query, cursor, done, why, sent, "
                "seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (q.source, q.class_name, q.text, q.cursor, int(q.done), q.why, q.sent, q.seen),
            )

    def queries(self) -> list[SearchQuery]:
        rows = self._db.execute("SELECT * FROM queries ORDER BY rowid")
        return [_search_query(r) for r in rows]

    def query_yields(self) -> dict[str, Counter[str]]:
        """Per query that found candidates (``WebInfo.query``): how its processed candidates
        ended — ``kept`` (a labelled sample), ``disputed`` (held for review), ``rejected``."""
        rows = self._db.execute(
            "SELECT json_extract(c.web, '$.query') AS q, s.status AS status, "
            "r.candidate_id IS NOT NULL AS rejected FROM candidates c "
            "LEFT JOIN samples s ON s.candidate_id = c.id "
            "LEFT JOIN rejections r ON r.candidate_id = c.id "
            "WHERE c.web IS NOT NULL AND json_extract(c.web, '$.query') IS NOT NULL "
            "AND c.state = 'done'"
        )
        out: dict[str, Counter[str]] = {}
        for r in rows:
            how = (
                "rejected"
                if r["rejected"]
                else "kept"
                if r["status"] == "labelled"
                else "disputed"
                if r["status"] in ("review", "rejected")
                else "pending"
            )
            out.setdefault(str(r["q"]), Counter())[how] += 1
        return out

    # -- outcomes of processing ----------------------------------------------------------------
    def find_sample(self, sample_id: str) -> Sample | None:
        row = self._db.execute("SELECT record FROM samples WHERE id = ?", (sample_id,)).fetchone()
        return None if row is None else Sample.model_validate_json(row["record"])

    def record_outcome(
        self, candidate_id: int, round_: int, result: Sample | Rejection
    ) -> Sample | Rejection:
        """Store what processing made of a candidate, atomically with marking it done.

        A sample whose id is already stored becomes an ``exact_duplicate`` rejection naming the
        first one, so the first seen is kept.
        """
        with self.transaction() as db:
            if isinstance(result, Sample):
                row = db.execute("SELECT record FROM samples WHERE id = ?", (result.id,)).fetchone()
                if row is not None:
                    first = Sample.model_validate_json(row["record"])
                    result = Rejection(
                        location=result.provenance.location,
                        source_kind=result.provenance.source_kind,
                        reasons=("exact_duplicate",),
                        detail=f"same pixels as {first.provenance.location}",
                        duplicate_of=first.provenance.location,
                    )
            if isinstance(result, Sample):
                _insert_sample(db, candidate_id, round_, result)
            else:
                _insert_rejection(db, candidate_id, round_, result)
            db.execute("UPDATE candidates SET state = 'done' WHERE id = ?", (candidate_id,))
        return result

    def replace_sample(
        self, old_id: str, candidate_id: int, round_: int, sample: Sample, rejection: Rejection
    ) -> list[tuple[int, Rejection]]:
        """Store ``sample`` (what processing made of candidate ``candidate_id``) in place of the
        stored sample ``old_id``, a worse copy of it, which becomes ``rejection``; every
        rejection that named the old copy names ``sample`` instead, as a near duplicate of it.
        One transaction. Returns the candidate id and rejection of each candidate whose outcome
        changed: the old copy's first."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT candidate_id, record FROM samples WHERE id = ?", (old_id,)
            ).fetchone()
            if row is None:
                raise StoreError(
                    f"run database {self.path}: sample {old_id} is to be replaced by a better "
                    "copy but is not stored; start a new run folder"
                )
            old = Sample.model_validate_json(row["record"]).provenance.location
            new = sample.provenance.location
            db.execute("DELETE FROM samples WHERE id = ?", (old_id,))
            _insert_sample(db, candidate_id, round_, sample)
            old_candidate = int(row["candidate_id"])
            _insert_rejection(db, old_candidate, round_, rejection)
            changed = [(old_candidate, rejection)]
            named = db.execute(
                "SELECT candidate_id, record FROM rejections "
                "WHERE json_extract(record, '$.duplicate_of') = ? AND candidate_id != ?",
                (old, old_candidate),
            ).fetchall()
            for r in named:
                rej = Rejection.model_validate_json(r["record"])
                reasons = tuple(
                    "near_duplicate" if x == "exact_duplicate" else x for x in rej.reasons
                )
                moved = rej.model_copy(
                    update={
                        "reasons": tuple(dict.fromkeys(reasons)),
                        "duplicate_of": new,
                        "detail": f"{rej.detail}; {old} gave way to a better copy",
                    }
                )
                db.execute(
                    "UPDATE rejections SET record = ? WHERE candidate_id = ?",
                    (moved.model_dump_json(), r["candidate_id"]),
                )
                changed.append((int(r["candidate_id"]), moved))
            db.execute("UPDATE candidates SET state = 'done' WHERE id = ?", (candidate_id,))
        return changed

    def update_samples(self, samples: Iterable[Sample]) -> None:
        with self.transaction() as db:
            db.executemany(
                "UPDATE samples SET status = ?, label = ?, record = ? WHERE id = ?",
                ((s.status, s.label, s.model_dump_json(), s.id) for s in samples),
            )

    def samples(
        self,
        *,
        status: Sequence[str] | None = None,
        origin: str | None = None,
        round_: int | None = None,
    ) -> list[Sample]:
        where, params = _where({"status": status, "origin": origin, "round": round_})
        rows = self._db.execute(f"SELECT record FROM samples{where} ORDER BY rowid", params)
        return [Sample.model_validate_json(r["record"]) for r in rows]

    def label_counts(self, status: Sequence[str]) -> dict[str, int]:
        rows = self._db.execute(
            f"SELECT label, COUNT(*) AS n FROM samples WHERE status IN "
            f"({','.join('?' * len(status))}) AND label IS NOT NULL GROUP BY label",
            list(status),
        )
        return {str(r["label"]): int(r["n"]) for r in rows}

    def rejections(self) -> list[Rejection]:
        rows = self._db.execute("SELECT record FROM rejections ORDER BY candidate_id")
        return [Rejection.model_validate_json(r["record"]) for r in rows]

    def rejection_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for rej in self.rejections():
            for reason in rej.reasons:
                counts[reason] = counts.get(reason, 0) + 1
        return dict(sorted(counts.items()))

    # -- reports -------------------------------------------------------------------------------
    def save_report(self, report: QualityReport) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO reports (round, record) VALUES (?, ?)",
            (report.round, report.model_dump_json()),
        )

    # -- audits --------------------------------------------------------------------------------
    def add_audits(self, audits: Iterable[Audit]) -> None:
        """Store checks; a check made again (same sample, checker, kind, label) replaces it."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO audits (sample_id, checker, kind, label, round, record) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (a.sample_id, a.checker, a.kind, a.label, a.round, a.model_dump_json())
                    for a in audits
                ),
            )

    def remove_audits(self, audits: Iterable[Audit]) -> None:
        """Forget checks (a person's decision undone): those of the same sample, checker, kind
        and label."""
        with self.transaction() as db:
            db.executemany(
                "DELETE FROM audits WHERE sample_id = ? AND checker = ? AND kind = ? AND label = ?",
                ((a.sample_id, a.checker, a.kind, a.label) for a in audits),
            )

    def audits(self, kind: str | None = None) -> list[Audit]:
        where, params = _where({"kind": [kind] if kind else None})
        rows = self._db.execute(f"SELECT record FROM audits{where} ORDER BY rowid", params)
        return [Audit.model_validate_json(r["record"]) for r in rows]

    def reports(self) -> list[QualityReport]:
        rows = self._db.execute("SELECT record FROM reports ORDER BY round")
        return [QualityReport.model_validate_json(r["record"]) for r in rows]


def _insert_sample(db: sqlite3.Connection, candidate_id: int, round_: int, sample: Sample) -> None:
    db.execute(
        "INSERT INTO samples (id, candidate_id, status, label, origin, round, record) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            sample.id,
            candidate_id,
            sample.status,
            sample.label,
            sample.origin,
            round_,
            sample.model_dump_json(),
        ),
    )


def _insert_rejection(
    db: sqlite3.Connection, candidate_id: int, round_: int, rejection: Rejection
) -> None:
    db.execute(
        "INSERT INTO rejections (candidate_id, round, record) VALUES (?, ?, ?)",
        (candidate_id, round_, rejection.model_dump_json()),
    )


def _where(conditions: dict[str, object]) -> tuple[str, list[object]]:
    """A WHERE clause for the given columns: ``= ?`` for a value, ``IN (...)`` for a sequence;
    None leaves the column unconstrained."""
    clauses: list[str] = []
    params: list[object] = []
    for column, value in conditions.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            clauses.append(f"{column} IN ({','.join('?' * len(value))})")
            params.extend(value)
        else:
            clauses.append(f"{column} = ?")
            params.append(value)
    return (f" WHERE {' AND '.join(clauses)}" if clauses else ""), params


def _search_query(row: sqlite3.Row) -> SearchQuery:
    return SearchQuery(
        source=row["source"],
        class_name=row["class"],
        text=row["query"],
        cursor=row["cursor"],
        done=bool(row["done"]),
        why=row["why"],
        sent=row["sent"],
        seen=row["seen"],
    )


def _candidate(row: sqlite3.Row) -> Candidate:
    return Candidate(
        id=row["id"],
        source_kind=row["source_kind"],
        location=row["location"],
        class_hint=row["class_hint"],
        licence=row["licence"],
        creator=row["creator"],
        origin=row["origin"],
        split_hint=row["split_hint"],
        round=row["round"],
        web=None if row["web"] is None else WebInfo.model_validate_json(row["web"]),
    )
