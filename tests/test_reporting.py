"""What a run reports: held-back counts, budgets, progress, numbers next to thresholds,
one-line failures and credentials kept out of everything the run writes."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from datasetagent.pipeline import build
from datasetagent.records import Box, Provenance, Sample
from datasetagent.spec import Budget, ClassSpec, DatasetSpec, ImageConstraints, SourceSpec
from datasetagent.store import RunStore
from helpers import digit_images, encode, write_class_folders
from llm_stub import Reply, StubServer

CLASSES = ("0", "1", "2")
FAST = {"backoff": 0.001, "max_backoff": 0.005, "timeout": 5.0, "max_retries": 0}


def _pool(folder: Path, per_class: int = 12, *, by_class: bool = False) -> Path:
    """Digits of CLASSES: flat, or one folder per class (labelled without any model)."""
    items = digit_images(per_class, classes=tuple(map(int, CLASSES)))
    if by_class:
        write_class_folders(folder, items)
        return folder
    folder.mkdir()
    for k, (img, _) in enumerate(items):
        (folder / f"x{k:03d}.png").write_bytes(encode(img))
    return folder


def _spec(pool: Path, **budget: Any) -> DatasetSpec:
    return DatasetSpec(
        classes=tuple(ClassSpec(name=c) for c in CLASSES),
        target_per_class=10,
        image=ImageConstraints(min_side=16, color_mode="L", enhance="off"),
        sources=(SourceSpec(location=str(pool)),),
        budget=Budget(**budget),
    )


def _llm(stub: StubServer, **more: Any) -> dict[str, dict[str, str | int | float | bool]]:
    return {"llm": {"base_url": stub.base_url, **FAST, **more}}


def test_every_held_sample_is_counted_when_every_llm_call_fails(tmp_path: Path) -> None:
    """No proposed class is still held back: the summary, summary.json and the data card count
    every sample in review, not only those with a class."""
    pool = _pool(tmp_path / "pool", 4)
    with StubServer(lambda body: Reply.error(400)) as stub:
        result = build(
            _spec(pool), tmp_path / "run", labelers=["llm:m"], backend_options=_llm(stub)
        )
    with RunStore(tmp_path / "run" / "run.db") as store:
        held = len(store.samples(status=["review"]))
    assert held == 12
    assert result.summary()["review"] == held
    assert result.summary()["review_no_class"] == held
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["review"] == held
    card = (tmp_path / "run" / "export" / "imagefolder" / "README.md").read_text()
    assert f"Samples held back for human review: {held} ({held} with no proposed class)" in card


def test_the_call_budget_holds_per_request_and_is_the_stop_reason(tmp_path: Path) -> None:
    """max_model_calls 4 with a 36-image batch: exactly 4 requests reach the server (the
    batch is cut to the 4 images they pay for), the round stops with "budget spent", and the
    rest is left unlabelled, never guessed."""
    pool = _pool(tmp_path / "pool")
    reply = Reply.json({"label": "1", "confidence": 0.99})
    with StubServer(lambda body: reply) as stub:
        result = build(
            _spec(pool, max_model_calls=4),
            tmp_path / "run",
            labelers=["llm:m"],
            backend_options=_llm(stub, concurrency=4),
        )
        sent = len(stub.requests)
    assert sent == 4
    assert result.usage["llm:m"]["calls"] == 4
    assert result.report.verdict == "done"
    assert result.report.reason == "budget spent: 4 model calls of 4"
    assert result.report.round == 1
    with RunStore(tmp_path / "run" / "run.db") as store:
        assert len(store.samples(status=["processed"])) == 32
        assert len(store.samples(status=["labelled"])) == 4
    assert len(result.exported) == 4


def test_the_time_budget_is_checked_per_batch_and_is_the_stop_reason(tmp_path: Path) -> None:
    """A time budget that runs out while labelling stops the stage at the next batch."""
    pool = _pool(tmp_path / "pool")
    reply = Reply(data={"label": "1", "confidence": 0.99}, delay=0.3)
    with StubServer(lambda body: reply) as stub:
        result = build(
            _spec(pool, max_seconds=1.0),
            tmp_path / "run",
            labelers=["llm:m"],
            backend_options=_llm(stub, concurrency=1),
        )
        sent = len(stub.requests)
    assert result.report.reason == "budget spent: 1 s of time"
    assert sent < 36


# -- one-line failures ----------------------------------------------------------------------------


def _cli(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from datasetagent.cli import main

    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def test_a_damaged_run_database_is_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.db").write_bytes(b"not a database, just bytes " * 200)
    code, out = _cli("export", str(run), "-o", str(tmp_path / "out"))
    assert code == 1
    line = _one_error_line(out)
    assert str(run / "run.db") in line
    assert "damaged" in line


def _limit_store(monkeypatch: pytest.MonkeyPatch, pragma: str) -> None:
    """Every RunStore opened from now on runs ``pragma`` (a full disk, a read-only file)."""
    original = RunStore.__init__

    def init(self: RunStore, path: Path) -> None:
        original(self, path)
        if "{pages}" in pragma:
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            self._db.execute(pragma.format(pages=pages + 4))
        else:
            self._db.execute(pragma)

    monkeypatch.setattr(RunStore, "__init__", init)


def test_a_read_only_run_database_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = _pool(tmp_path / "pool", 2, by_class=True)
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec(pool).to_yaml())
    assert _cli("build", str(spec), "-o", str(tmp_path / "run"))[0] == 0
    _limit_store(monkeypatch, "PRAGMA query_only=ON")
    code, out = _cli("build", "--resume", "-o", str(tmp_path / "run"))
    assert code == 1
    line = _one_error_line(out)
    assert "cannot be written" in line


def test_a_full_disk_is_one_line_and_resume_finishes_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = _pool(tmp_path / "pool", by_class=True)
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec(pool).to_yaml())
    with monkeypatch.context() as patch:
        _limit_store(patch, "PRAGMA max_page_count={pages}")
        code, out = _cli("build", str(spec), "-o", str(tmp_path / "run"))
    assert code == 1
    line = _one_error_line(out)
    assert "disk is full" in line
    assert "--resume" in line
    code, out = _cli("build", "--resume", "-o", str(tmp_path / "run"), "--json")
    assert code == 0, out
    summary = json.loads(out.splitlines()[-1])
    assert summary["exported"] == 30


# -- exports --------------------------------------------------------------------------------------


def _boxes_sample(*boxes: Box) -> Sample:
    return Sample(
        id="a" * 64,
        blob="images/aa/x.png",
        width=40,
        height=30,
        mode="RGB",
        origin="collected",
        provenance=Provenance(source_kind="local", location="/x.png", licence="user-supplied"),
        annotations=boxes,
        status="labelled",
        split="train",
    )


def test_boxes_that_clipping_makes_identical_are_exported_once() -> None:
    """Two cat boxes past the right edge become the same box once clipped: one is kept (the
    surer), the other is listed as dropped; a dog box at the same place stays."""
    from datasetagent.export.prepare import ExportStats, prepare

    low = Box(label="cat", confidence=0.6, labeler="m", x=10, y=5, w=40, h=10)
    high = Box(label="cat", confidence=0.8, labeler="m", x=10, y=5, w=35, h=10)
    dog = Box(label="dog", confidence=0.7, labeler="m", x=10, y=5, w=40, h=10)
    stats = ExportStats()
    out, dropped = prepare(_boxes_sample(low, high, dog), stats, {"cat", "dog"})
    assert [(a.label, a.confidence, a.x, a.w) for a in out.annotations if isinstance(a, Box)] == [
        ("cat", 0.8, 10, 30),
        ("dog", 0.7, 10, 30),
    ]
    assert [(d.label, d.reason) for d in dropped] == [("cat", "duplicate_after_clipping")]
    assert stats.objects[("train", "cat")] == 1
    assert stats.dropped == {"duplicate_after_clipping": 1}


def test_the_data_card_states_the_confidence_rule_that_applies_to_objects() -> None:
    """Object scores under min_confidence are exported: the card says so, with their range,
    instead of claiming that labels under the threshold were held back."""
    from datasetagent.export.datacard import render_datacard

    spec = DatasetSpec(
        task="detection", classes=(ClassSpec(name="cat"), ClassSpec(name="dog")), formats=("coco",)
    )
    sample = _boxes_sample(
        Box(label="cat", confidence=0.76, labeler="m", x=1, y=1, w=5, h=5),
        Box(label="dog", confidence=0.95, labeler="m", x=9, y=1, w=5, h=5),
    )
    card = render_datacard(spec, [sample], None, "coco")
    assert "were held back for review, not exported" not in card
    assert "applies to class labels only" in card
    assert "runs from 0.76 to 0.95" in card
    close = _boxes_sample(
        Box(label="cat", confidence=0.8996, labeler="m", x=1, y=1, w=5, h=5),
        Box(label="dog", confidence=0.95, labeler="m", x=9, y=1, w=5, h=5),
    )
    assert spec.quality.min_confidence == 0.9
    # an object under the threshold does not read as at it
    assert "runs from 0.8996 to 0.95" in render_datacard(spec, [close], None, "coco")
    classification = render_datacard(DatasetSpec(classes=spec.classes), [], None, "imagefolder")
    assert "New class labels below confidence 0.9 were held back" in classification


# -- progress -------------------------------------------------------------------------------------


def test_progress_off_a_terminal_prints_plain_lines_per_stage(tmp_path: Path) -> None:
    """stderr to a pipe (logs, CI): each stage that did work ends with a plain count line."""
    import os
    import subprocess
    import sys

    pool = _pool(tmp_path / "pool", 4, by_class=True)
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec(pool).to_yaml())
    out = subprocess.run(
        [sys.executable, "-m", "datasetagent", "build", str(spec), "-o", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert "round 1 · processing 12/12" in lines
    assert "round 1 · labelling 12/12" in lines
    # the stage's line comes before the round's note, not after it
    note = next(i for i, line in enumerate(lines) if line.startswith("round 1: "))
    assert lines.index("round 1 · labelling 12/12") < note


def test_progress_off_a_terminal_prints_a_line_every_interval() -> None:
    import io

    from rich.console import Console

    from datasetagent.cli import RichReporter

    buf = io.StringIO()
    with RichReporter(Console(file=buf, width=200), every=0.0) as reporter:
        reporter.stage("processing", 1, 3)
        for _ in range(3):
            reporter.advance()
        reporter.stage("labelling", 1, 3)  # no work done: no line
    assert buf.getvalue().splitlines() == [
        "round 1 · processing 1/3",
        "round 1 · processing 2/3",
        "round 1 · processing 3/3",
    ]


# -- credentials ----------------------------------------------------------------------------------

SECRET = "sk-in-the-url-0123456789"


def test_credentials_in_the_base_url_are_used_but_never_written(tmp_path: Path) -> None:
    """``http://user:key@host``: the request is sent with them; nothing the run writes or
    prints (debug logs of the HTTP libraries included) holds the key, and a resume asks for
    the URL again."""
    import os
    import subprocess
    import sys

    pool = _pool(tmp_path / "pool", 2)
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec(pool).to_yaml())
    reply = Reply.json({"label": "1", "confidence": 0.99})
    with StubServer(lambda body: reply) as stub:
        host = stub.base_url.removeprefix("http://")
        url = f"http://user:{SECRET}@{host}"
        out = subprocess.run(
            [
                *(sys.executable, "-m", "datasetagent", "--debug", "build", str(spec)),
                *("-o", str(tmp_path / "run"), "--llm", "m", "--llm-base-url", url),
                *("--labeler-option", "llm.max_retries=0"),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "NO_COLOR": "1"},
            timeout=300,
            check=False,
        )
        sent = stub.requests
    assert out.returncode == 0, out.stderr
    assert len(sent) == 6
    assert (
        "user:" + SECRET
        in base64.b64decode(  # the full URL was used
            sent[0].headers["Authorization"].split()[-1]
        ).decode()
    )
    assert SECRET not in out.stderr + out.stdout
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file() and path.suffix in {".db", ".yaml", ".json", ".md", ".jsonl", ""}:
            assert SECRET.encode() not in path.read_bytes(), path
    with RunStore(tmp_path / "run" / "run.db") as store:
        stored = json.loads(store.get_meta("options") or "{}")
    assert "***" in stored["backend_options"]["llm"]["base_url"]
    code, text = _cli("build", "--resume", "-o", str(tmp_path / "run"))
    assert code == 2
    assert "--llm-base-url URL" in _one_error_line(text)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:k@host:8000/v1", "http://***@host:8000/v1"),
        ("http://host/v1?key=abc&model=x", "http://host/v1?key=***&model=x"),
        ("https://host/v1?api_key=abc", "https://host/v1?api_key=***"),
        ("http://localhost:11434/v1", "http://localhost:11434/v1"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    from datasetagent.models.llm_endpoint import redact_url

    assert redact_url(url) == shown


def test_a_spec_nested_thousands_deep_is_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "deep.yaml"
    spec.write_text("classes: " + "[" * 10_000 + "]" * 10_000 + "\n")
    code, out = _cli("build", str(spec), "-o", str(tmp_path / "run"))
    assert code == 2
    line = _one_error_line(out)
    assert str(spec) in line
    assert "nested too deeply" in line


def test_a_review_line_nested_thousands_deep_is_one_line(tmp_path: Path) -> None:
    pool = _pool(tmp_path / "pool", 2, by_class=True)
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec(pool).to_yaml())
    assert _cli("build", str(spec), "-o", str(tmp_path / "run"))[0] == 0
    lines = tmp_path / "review.jsonl"
    lines.write_text('{"id": "x"}\n' + "[" * 10_000 + "]" * 10_000 + "\n")
    code, out = _cli("review", str(tmp_path / "run"), "--apply", str(lines))
    assert code == 2
    line = _one_error_line(out)
    assert f"{lines}:2" in line
    assert "nested too deeply" in line


def test_a_full_disk_while_writing_images_is_one_line_and_resume_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from datasetagent.store import BlobStore

    pool = _pool(tmp_path / "pool", by_class=True)
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec(pool).to_yaml())
    real = BlobStore.put
    written: list[str] = []

    def put(self: BlobStore, digest: str, ext: str, data: bytes) -> str:
        if len(written) == 5:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.root / digest))
        written.append(digest)
        return real(self, digest, ext, data)

    with monkeypatch.context() as patch:
        patch.setattr(BlobStore, "put", put)
        code, out = _cli("build", str(spec), "-o", str(tmp_path / "run"), "--workers", "1")
    assert code == 1
    line = _one_error_line(out)
    assert "No space left on device" in line
    assert "--resume" in line
    code, out = _cli("build", "--resume", "-o", str(tmp_path / "run"), "--json")
    assert code == 0, out
    assert json.loads(out.splitlines()[-1])["exported"] == 30


def test_processing_progress_moves_as_each_image_arrives(tmp_path: Path) -> None:
    """Progress advances per image as results come in, not once a batch of 256 is stored:
    the first advance comes before anything of the round is stored."""
    import sqlite3

    pool = _pool(tmp_path / "pool", 4, by_class=True)
    run = tmp_path / "run"

    class Recorder:
        def __init__(self) -> None:
            self.current = ""
            self.seen: list[tuple[str, int]] = []

        def stage(self, name: str, round_: int, total: int | None = None) -> None:
            self.current = f"{round_}:{name}"

        def advance(self, n: int = 1) -> None:
            with sqlite3.connect(run / "run.db") as db:
                stored = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            self.seen.append((self.current, stored))

        def note(self, message: str) -> None:
            return None

    recorder = Recorder()
    build(_spec(pool), run, workers=1, reporter=recorder)
    processing = [stored for stage, stored in recorder.seen if stage == "1:processing"]
    assert len(processing) == 12
    assert processing[0] == 0
    labelling = [stage for stage, _ in recorder.seen if stage == "1:labelling"]
    assert labelling  # labelling reports progress too


def test_verification_stops_at_the_budget_and_holds_what_it_did_not_check(
    tmp_path: Path,
) -> None:
    """Folder labels cost nothing; an LLM verifier with a budget of 3 calls checks 3 labels,
    and the labels it never saw are held back (never exported unverified)."""
    pool = _pool(tmp_path / "pool", 4, by_class=True)
    agree = {"agree": True, "confidence": 0.99, "suggested": None, "reason": "it is"}
    with StubServer(lambda body: Reply.json(agree)) as stub:
        result = build(
            _spec(pool, max_model_calls=3),
            tmp_path / "run",
            verifiers=["llm:m"],
            backend_options=_llm(stub, concurrency=1),
        )
        sent = len(stub.requests)
    assert sent == 3
    assert result.report.reason == "budget spent: 3 model calls of 3"
    with RunStore(tmp_path / "run" / "run.db") as store:
        held = store.samples(status=["review"])
    assert len(held) == 9
    assert all(s.review_reasons[-1].startswith("unverified: llm:m not asked") for s in held)
    assert len(result.exported) == 3
