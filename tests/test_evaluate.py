"""``datasetagent evaluate``: the export and the existing dataset alone each train a classifier,
scored on a held-out folder — numbers computed from that folder, never copied."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from datasetagent.errors import UsageError
from datasetagent.evaluate import evaluate_run
from datasetagent.evaluate_detect import DetectorCommand
from datasetagent.export.datacard import EVALUATION_BEGIN, EVALUATION_END
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
    (root / "before").mkdir()  # what a run never evaluated shows
    shutil.copy(root / "run" / "report.html", root / "before" / "report.html")
    shutil.copy(root / "run" / "export" / "imagefolder" / "README.md", root / "before")
    write_class_folders(root / "test", digit_images(15, classes=CLASSES, offset=50))
    return root


def test_the_expanded_and_the_seed_only_classifiers_are_scored_on_the_test_folder(
    built: Path,
) -> None:
    result = evaluate_run(built / "run", built / "test").as_json()
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
    right = evaluate_run(built / "run", built / "test").as_json()["trained_on_export"]["accuracy"]
    wrong = evaluate_run(built / "run", shifted).as_json()["trained_on_export"]["accuracy"]
    assert wrong < right - 0.4


def test_test_images_that_are_in_the_export_are_left_out(built: Path, tmp_path: Path) -> None:
    leaky = tmp_path / "leaky"
    shutil.copytree(built / "test", leaky)
    trained = sorted((built / "run" / "export" / "imagefolder" / "train" / "1").iterdir())[:3]
    for path in trained:  # images the classifier trains on: not held out
        shutil.copy(path, leaky / "1" / f"seed-{path.name}")
    result = evaluate_run(built / "run", leaky).as_json()
    assert (result["test"]["n"], result["test"]["overlap"]) == (60, 3)


def test_the_cli_prints_json_and_refuses_an_unfinished_run(built: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "datasetagent", "evaluate", str(built / "run"), "--test",
         str(built / "test"), "--json"],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) == {"trained_on_export", "trained_on_seed", "test", "task", "model", "when"}
    assert data["model"] == "seed-features"
    assert data["test"]["n"] == 60
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no run"):
        evaluate_run(tmp_path / "empty", built / "test")


# -- the linear probe on a model backend's embeddings --------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny random CLIP saved like a hub checkpoint (nothing downloaded); one torch thread."""
    pytest.importorskip("transformers")
    import torch

    from tiny_models import build_clip

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield build_clip(tmp_path_factory.mktemp("clip") / "clip")
    torch.set_num_threads(before)


def _reference_probe(run: Path, test: Path, clip: Path) -> dict[str, dict[str, int]]:
    """The probe computed here from the files: the export's train and val images and the test
    folder, embedded by the same CLIP, a standardised logistic regression; its confusion."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from datasetagent.models import BackendConfig, ClassQuery, build_backend

    names = [str(c) for c in CLASSES]
    clip_backend = build_backend(
        "clip",
        BackendConfig(classes=tuple(ClassQuery(n, (n,)) for n in names), model=str(clip)),
    )

    def folder(root: Path) -> tuple[list[Image.Image], list[str]]:
        files = sorted(root.glob("*/*.png"))
        return [Image.open(p).convert("L") for p in files], [p.parent.name for p in files]

    export = run / "export" / "imagefolder"
    train_imgs, train_y = folder(export / "train")
    val_imgs, val_y = folder(export / "val")
    test_imgs, test_y = folder(test)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(clip_backend.embed(train_imgs + val_imgs), train_y + val_y)
    confusion: dict[str, dict[str, int]] = {n: {} for n in names}
    for t, g in zip(test_y, model.predict(clip_backend.embed(test_imgs)), strict=True):
        confusion[t][str(g)] = confusion[t].get(str(g), 0) + 1
    return confusion


def test_a_linear_probe_on_the_embedder_given(built: Path, tiny_clip: Path) -> None:
    result = evaluate_run(built / "run", built / "test", embedder=f"clip:{tiny_clip}")
    assert result.model == f"linear-probe:clip:{tiny_clip}"
    got = result.trained_on_export.confusion
    assert got is not None
    want = _reference_probe(built / "run", built / "test", tiny_clip)
    differ = sum(
        abs(got[t].get(g, 0) - want[t].get(g, 0)) for t in want for g in {*got[t], *want[t]}
    )
    assert differ <= 2  # the same fit, up to the solver's tolerance on another row order
    assert result.trained_on_seed is not None
    assert result.trained_on_seed.n_train == 40
    seeds_only = evaluate_run(built / "run", built / "test", embedder="none")
    assert seeds_only.model == "seed-features"


def test_the_runs_own_embedder_is_probed(built: Path, tiny_clip: Path, tmp_path: Path) -> None:
    from datasetagent.config import OPTIONS_META, BuildOptions
    from datasetagent.store import RunStore

    run = tmp_path / "run"
    shutil.copytree(built / "run", run)
    with RunStore(run / "run.db") as store:
        options = BuildOptions(labelers=(f"clip:{tiny_clip}", "seed"))
        store.set_meta(OPTIONS_META, options.record())
    result = evaluate_run(run, built / "test", record=False)
    assert result.model == f"linear-probe:clip:{tiny_clip}"
    assert evaluate_run(run, built / "test", embedder="none", record=False).model == (
        "seed-features"
    )


@pytest.mark.parametrize(
    ("embedder", "message"),
    [("folder-name", "makes no image embeddings"), ("nope", "unknown labeler 'nope'")],
)
def test_an_embedder_that_cannot_embed_is_refused(built: Path, embedder: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        evaluate_run(built / "run", built / "test", embedder=embedder, record=False)


# -- the report and the data card --------------------------------------------------------------


def _html_rows(table: str) -> list[list[str]]:
    body = table.split("<tbody>", 1)[1]
    return [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]


def test_the_report_and_the_data_card_show_the_evaluation(built: Path) -> None:
    before_report = (built / "before" / "report.html").read_text(encoding="utf-8")
    before_card = (built / "before" / "README.md").read_text(encoding="utf-8")
    assert "Held-out evaluation" not in before_report
    assert "Held-out evaluation" not in before_card
    assert EVALUATION_BEGIN not in before_card

    result = evaluate_run(built / "run", built / "test")
    evaluate_run(built / "run", built / "test")  # again: the section is replaced, not added
    export, seed = result.trained_on_export, result.trained_on_seed
    assert export.confusion is not None
    assert seed is not None
    names = [str(c) for c in CLASSES]
    matrix = [[c, *(str(export.confusion[c].get(p, 0)) for p in names)] for c in names]

    page = (built / "run" / "report.html").read_text(encoding="utf-8")
    section = page.split('<section id="evaluation">', 1)[1].split("</section>", 1)[0]
    assert page.count('<section id="evaluation">') == 1
    assert f"model <code>{result.model}</code>" in section
    assert f"scored on {result.test.n} held-out images" in section
    assert f"accuracy {export.accuracy:.4f}" in section
    assert f"accuracy {seed.accuracy:.4f}" in section
    per_class, confusion = section.split("<table>")[1:3]
    assert _html_rows(per_class) == [
        [c, f"{export.per_class[c]:.4f}", f"{seed.per_class[c]:.4f}"] for c in names
    ]
    assert re.findall(r"<th>(.*?)</th>", confusion)[1:] == names
    assert _html_rows(confusion) == matrix

    card = (built / "run" / "export" / "imagefolder" / "README.md").read_text(encoding="utf-8")
    assert card.count(EVALUATION_BEGIN) == card.count(EVALUATION_END) == 1
    assert card.startswith(before_card.split("\n## ", 1)[0])  # the rest of the card is kept
    assert card.index(EVALUATION_END) < card.index("## The spec it was built from")
    part = card.split(EVALUATION_BEGIN, 1)[1].split(EVALUATION_END, 1)[0]
    assert f"model `{result.model}`" in part
    for c in names:
        assert f"| {c} | {export.per_class[c]:.4f} | {seed.per_class[c]:.4f} |" in part
        assert "| " + " | ".join(matrix[names.index(c)]) + " |" in part


def test_a_test_folder_without_the_runs_classes_is_refused(built: Path, tmp_path: Path) -> None:
    write_class_folders(tmp_path / "other", digit_images(3, classes=(7, 8)))
    with pytest.raises(UsageError, match=r"other holds no image labelled with a class of the run"):
        evaluate_run(built / "run", tmp_path / "other", record=False)
    with pytest.raises(UsageError, match="--detector-command serves detection"):
        evaluate_run(
            built / "run",
            built / "test",
            detector=DetectorCommand.parse("true"),
            record=False,
        )
