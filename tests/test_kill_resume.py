"""``kill -9`` a running build at several points; ``build --resume`` must finish with exactly
the samples, labels and splits of a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from test_pipeline import make_pool

EXE = [sys.executable, "-m", "datasetagent"]


def _args(data: Path, run: Path) -> list[str]:
    return [
        *EXE,
        "build",
        "expand to 30 images per class",
        "--existing",
        str(data / "seed"),
        "--source",
        str(data / "pool"),
        "-o",
        str(run),
        "--json",
    ]


def _query(run: Path, sql: str) -> int:
    db = run / "run.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            row = con.execute(sql).fetchone()
            return int(row[0]) if row else 0
    except sqlite3.Error:  # tables not created yet
        return 0


def _result(run: Path) -> set[tuple[str, str, str]]:
    manifest = run / "export" / "imagefolder" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return {(r["id"], r["labels"][0]["label"], r["split"]) for r in rows}


POINTS: dict[str, Callable[[Path], bool]] = {
    "after collecting": lambda run: (
        _query(run, "SELECT COUNT(*) FROM stages WHERE round = 0 AND stage = 'collect'") > 0
    ),
    "in the middle of processing": lambda run: (
        _query(run, "SELECT COUNT(*) FROM samples WHERE origin = 'collected'") >= 20
    ),
    "after labelling round 1": lambda run: (
        _query(run, "SELECT COUNT(*) FROM stages WHERE round = 1 AND stage = 'label'") > 0
    ),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[tuple[str, str, str]]]:
    root = tmp_path_factory.mktemp("kill")
    make_pool(root / "data")
    out = subprocess.run(
        _args(root / "data", root / "whole"), capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return root, _result(root / "whole")


@pytest.mark.parametrize("point", list(POINTS))
def test_kill_9_then_resume_equals_an_uninterrupted_run(
    reference: tuple[Path, set[tuple[str, str, str]]], point: str
) -> None:
    root, expected = reference
    run = root / point.replace(" ", "-")
    proc = subprocess.Popen(
        _args(root / "data", run),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the build and its worker processes, killed together
    )
    deadline = time.monotonic() + 120
    while not POINTS[point](run):
        assert proc.poll() is None, f"the build finished before the kill point {point!r}"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").exists()
    with sqlite3.connect(run / "run.db") as con:  # what the killed run had finished
        done = dict(con.execute("SELECT round || ':' || stage, finished FROM stages"))
        listed = con.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
    out = subprocess.run(
        [*EXE, "build", "--resume", "-o", str(run), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert _result(run) == expected
    with sqlite3.connect(run / "run.db") as con:  # the resume redid none of it
        after = dict(con.execute("SELECT round || ':' || stage, finished FROM stages"))
        assert con.execute("SELECT COUNT(*) FROM candidates").fetchone()[0] == listed
    assert done
    assert {k: after[k] for k in done} == done
    summary = json.loads(out.stdout)
    assert summary["exported"] == len(expected)
