from __future__ import annotations

from pathlib import Path

import pytest

from datasetagent.demo import MARKER, run_demo
from datasetagent.errors import UsageError


def test_demo_builds_a_balanced_accurate_clean_dataset(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", workers=2)
    report = result.build.report
    assert report.targets_met
    assert report.cbi <= 0.021
    assert len(result.build.exported) == 1000
    assert result.accuracy >= 0.97
    assert result.accuracy_collected >= 0.97
    assert result.labelled_by_model >= 800
    assert result.defects_exported == 0
    rejected = report.rejected_by_reason
    assert rejected["corrupt"] >= 1
    assert rejected["exact_duplicate"] >= 1
    assert rejected["tiny"] >= 1
    assert rejected["low_information"] >= 1
    assert report.review > 0  # unsure labels were held back, not exported
    assert (tmp_path / "demo" / MARKER).exists()


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(UsageError, match="not a demo folder"):
        run_demo(tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_demo_never_replaces_a_link_the_cwd_or_a_demo_holding_other_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rmtree on a link was a traceback; on "." it deleted the folder the user stood in; and
    files the user put into a demo folder went with it."""
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / MARKER).write_text("made by datasetagent demo; safe to delete\n")
    (demo / "run").mkdir()
    (demo / "notes.txt").write_text("mine")
    link = tmp_path / "link"
    link.symlink_to(demo, target_is_directory=True)
    with pytest.raises(UsageError, match="symbolic link"):
        run_demo(link)
    with pytest.raises(UsageError, match=r"holds files the demo did not write .*notes\.txt"):
        run_demo(demo)
    (demo / "notes.txt").unlink()
    monkeypatch.chdir(demo / "run")
    with pytest.raises(UsageError, match="current folder or holds it"):
        run_demo(demo)
    assert (demo / "run").is_dir()
