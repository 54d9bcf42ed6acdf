"""``datasetagent evaluate``: the export and the existing dataset alone each train a classifier,
scored on a held-out folder — numbers computed from that folder, never copied."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from datasetagent.errors import UsageError
from datasetagent.evaluate import evaluate_run
from datasetagent.pipeline import build
from helpers import digit_images, write_class_folders
from test_pipeline import CLASSES, make_pool, spec_for


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits expansion (10 seeds a class, a pool of 40 a class) and a held-out test folder
    of 15 other digits a class."""
    root = tmp_path_factory.mktemp("evaluate")
    make_pool(root / "data")
    build(spec_for(root / "data", target=30), root / "run", workers=1)
    write_class_folders(root / "test", digit_images(15, classes=CLASSES, offset=50))
    return root


def test_the_expanded_and_the_seed_only_classifiers_are_scored_on_the_test_folder(
    built: Path,
) -> None:
    result = evaluate_run(built / "run", built / "test")
    export, seed = result["trained_on_export"], result["trained_on_seed"]
    assert result["test"] == {"n": 60, "path": str(built / "test"), "skipped": 0, "overlap": 0}
    assert export["n_train"] > seed["n_train"] == 40
    for got in (export, seed):
        assert 0.0 <= got["accuracy"] <= 1.0
        assert set(got["per_class"]) == {str(c) for c in CLASSES}
        assert sum(sum(row.values()) for row in got["confusion"].values()) == 60
        right = sum(got["confusion"][c].get(c, 0) for c in got["confusion"])
        assert got["accuracy"] == pytest.approx(right / 60)
    assert export["accuracy"] >= 0.7  # real digits: the classifier learned something


def test_the_accuracy_comes_from_the_test_labels(built: Path, tmp_path: Path) -> None:
    # the same images under shifted labels: a computed accuracy collapses, a copied one would not
    shifted = tmp_path / "shifted"
    names = [str(c) for c in CLASSES]
    for i, name in enumerate(names):
        shutil.copytree(built / "test" / name, shifted / names[(i + 1) % len(names)])
    right = evaluate_run(built / "run", built / "test")["trained_on_export"]["accuracy"]
    wrong = evaluate_run(built / "run", shifted)["trained_on_export"]["accuracy"]
    assert wrong < right - 0.4


def test_test_images_that_are_in_the_export_are_left_out(built: Path, tmp_path: Path) -> None:
    leaky = tmp_path / "leaky"
    shutil.copytree(built / "test", leaky)
    trained = sorted((built / "run" / "export" / "imagefolder" / "train" / "1").iterdir())[:3]
    for path in trained:  # images the classifier trains on: not held out
        shutil.copy(path, leaky / "1" / f"seed-{path.name}")
    result = evaluate_run(built / "run", leaky)
    assert (result["test"]["n"], result["test"]["overlap"]) == (60, 3)


def test_the_cli_prints_json_and_refuses_an_unfinished_run(built: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "datasetagent", "evaluate", str(built / "run"), "--test",
         str(built / "test"), "--json"],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) == {"trained_on_export", "trained_on_seed", "test"}
    assert data["test"]["n"] == 60
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no run"):
        evaluate_run(tmp_path / "empty", built / "test")
