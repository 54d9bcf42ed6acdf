"""``datasetagent evaluate`` of a detection run: COCO mAP (pycocotools) of the box-prior
baseline and of the user's own detector command, trained on the export and on the existing
dataset alone, scored on a held-out COCO folder; bad input is a one-line error."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from datasetagent.errors import BackendError, UsageError
from datasetagent.evaluate import evaluate_run
from datasetagent.evaluate_detect import DetectorCommand
from datasetagent.models import BACKENDS
from datasetagent.pipeline import build
from datasetagent.spec import ClassSpec, DatasetSpec, ImageConstraints, SourceSpec
from helpers import digit_images, write_class_folders
from test_backends_pipeline import ColourDetector, _squares

Truth = dict[str, list[tuple[str, int, int, int, int]]]


def write_coco(root: Path, images: Path, truth: Truth, split: str, swap: bool = False) -> Path:
    """``images`` with their true boxes as a COCO dataset (``swap``: red and blue exchanged)."""
    names = ["blue", "red"] if swap else ["red", "blue"]
    (root / "images" / split).mkdir(parents=True)
    (root / "annotations").mkdir()
    data: dict[str, list[dict[str, object]]] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }
    for k, (name, boxes) in enumerate(sorted(truth.items())):
        shutil.copy(images / name, root / "images" / split / name)
        data["images"].append({"id": k + 1, "file_name": name, "width": 96, "height": 96})
        for colour, x, y, w, h in boxes:
            data["annotations"].append(
                {
                    "id": len(data["annotations"]) + 1,
                    "image_id": k + 1,
                    "category_id": 1 if colour == "red" else 2,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A detection run (squares found by colour) that expanded a 12-image COCO dataset, and a
    held-out COCO test folder of 12 other images."""
    root = tmp_path_factory.mktemp("evaluate-detect")
    write_coco(root / "seed", root / "seed-images", _squares(root / "seed-images", 12, 1), "train")
    _squares(root / "pool", 24, seed=2)
    test_truth = _squares(root / "test-images", 12, seed=3)
    write_coco(root / "test", root / "test-images", test_truth, "test")
    write_coco(root / "swapped", root / "test-images", test_truth, "test", swap=True)
    (root / "truth.json").write_text(json.dumps(test_truth))
    spec = DatasetSpec(
        task="detection",
        classes=(ClassSpec(name="red"), ClassSpec(name="blue")),
        target_per_class=20,
        image=ImageConstraints(enhance="off"),
        existing=str(root / "seed"),
        sources=(SourceSpec(location=str(root / "pool")),),
        formats=("coco",),
    )
    BACKENDS._items["colour-squares"] = ColourDetector
    try:
        build(spec, root / "run", labelers=["colour-squares"], workers=1)
    finally:
        del BACKENDS._items["colour-squares"]
    return root


def test_the_baseline_is_scored_with_cocoeval_on_both_trainings(run: Path) -> None:
    result = evaluate_run(run / "run", run / "test")
    truth = json.loads((run / "truth.json").read_text())
    assert result.task == "detection"
    assert result.model == "box-prior:seed-features"
    assert (result.test.n, result.test.overlap, result.test.skipped) == (12, 0, 0)
    assert result.test.objects == sum(len(b) for b in truth.values())
    export, seed = result.trained_on_export, result.trained_on_seed
    assert seed is not None
    assert seed.n_train == 12
    assert export.n_train > seed.n_train
    for got in (export, seed):
        assert set(got.per_class) == {"red", "blue"}
        assert got.map is not None
        assert got.map50 is not None
        assert 0.0 <= got.map <= got.map50 <= 1.0
        assert got.map50 > 0.0  # a floor: the squares' x is uniform, a prior finds few of them
    data = result.as_json()
    assert {"map", "map50", "per_class", "n_train"} <= set(data["trained_on_export"])
    assert "accuracy" not in data["trained_on_export"]
    # the same images with the classes swapped: a computed mAP collapses, a copied one would not
    swapped = evaluate_run(run / "run", run / "swapped", record=False)
    assert swapped.trained_on_export.map50 is not None
    assert swapped.trained_on_export.map50 < export.map50 / 4


def test_the_report_and_the_data_card_show_the_map(run: Path) -> None:
    result = evaluate_run(run / "run", run / "test")
    page = (run / "run" / "report.html").read_text(encoding="utf-8")
    section = page.split('<section id="evaluation">', 1)[1].split("</section>", 1)[0]
    assert result.trained_on_export.headline() in section
    assert "Confusion matrix" not in section
    card = (run / "run" / "export" / "coco" / "README.md").read_text(encoding="utf-8")
    for c in ("red", "blue"):
        ap = result.trained_on_export.per_class[c]
        assert ap is not None
        assert f"| {c} | {ap:.4f} |" in card


#: A detector that finds the saturated squares by colour: near perfect on this data.
DETECTOR = """
import json, os, sys
from pathlib import Path
import numpy as np
from PIL import Image
train, images, out = (Path(a) for a in sys.argv[1:4])
assert str(train) == os.environ["DATASETAGENT_TRAIN"], "train placeholder"
assert str(out) == os.environ["DATASETAGENT_PREDICTIONS"], "predictions placeholder"
cats = {}
for path in (train / "annotations").glob("instances_*.json"):
    cats.update({c["name"]: c["id"] for c in json.loads(path.read_text())["categories"]})
found = []
for img in json.loads((images / "images.json").read_text())["images"]:
    arr = np.asarray(Image.open(images / img["file_name"]).convert("RGB")).astype(int)
    for name, c in (("red", 0), ("blue", 2)):
        others = [i for i in range(3) if i != c]
        ys, xs = np.nonzero((arr[..., c] > 200) & (arr[..., others].max(axis=-1) < 40))
        if len(xs):
            box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                   int(ys.max() - ys.min() + 1)]
            found.append({"image_id": img["id"], "category_id": cats[name], "bbox": box,
                          "score": 0.9})
out.write_text(json.dumps(found))
"""


def _script(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text)
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}"


def test_the_users_detector_command_is_run_and_scored(run: Path, tmp_path: Path) -> None:
    command = _script(tmp_path, "detect.py", DETECTOR) + " {train} {images} {predictions}"
    result = evaluate_run(
        run / "run", run / "test", detector=DetectorCommand.parse(command), record=False
    )
    assert result.model == f"detector-command:{Path(sys.executable).name}"
    for got in (result.trained_on_export, result.trained_on_seed):
        assert got is not None
        assert got.map is not None
        assert got.map > 0.9
    shell = DetectorCommand.parse(
        f'{command} > /dev/null && test -s "$DATASETAGENT_PREDICTIONS"', shell=True
    )
    again = evaluate_run(run / "run", run / "test", detector=shell, record=False)
    assert again.trained_on_export.map == result.trained_on_export.map


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ("import sys; print('boom: no GPU'); sys.exit(3)", BackendError, "exit status 3.*boom"),
        ("import sys; open(sys.argv[1], 'w').write('[{')", BackendError, "is not JSON"),
        ("import sys; open(sys.argv[1], 'w').write('{}')", BackendError, "not a list"),
        ("pass", BackendError, "wrote no results"),
        (
            "import sys, json; json.dump([{'image_id': 999, 'category_id': 1, "
            "'bbox': [0, 0, 1, 1], 'score': 1}], open(sys.argv[1], 'w'))",
            BackendError,
            "entry 0 names image_id 999",
        ),
        (
            "import sys, json; json.dump([{'image_id': 1, 'category_id': 1, "
            "'bbox': [0, 0, 1], 'score': 1}], open(sys.argv[1], 'w'))",
            BackendError,
            r"entry 0 has bbox \[0, 0, 1\]",
        ),
        ("import time; time.sleep(30)", BackendError, "ran past 0.5 s"),
    ],
)
def test_a_detector_that_fails_is_a_one_line_error(
    run: Path, tmp_path: Path, body: str, error: type[Exception], message: str
) -> None:
    command = _script(tmp_path, "bad.py", body) + " {predictions}"
    detector = DetectorCommand.parse(command, timeout=0.5)
    with pytest.raises(error, match=message) as caught:
        evaluate_run(run / "run", run / "test", detector=detector, record=False)
    assert "\n" not in str(caught.value)


def test_commands_that_cannot_run_are_refused(run: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot start"):
        evaluate_run(
            run / "run",
            run / "test",
            detector=DetectorCommand.parse(str(tmp_path / "no-such-detector")),
            record=False,
        )
    with pytest.raises(UsageError, match="cannot be split"):
        DetectorCommand.parse("detect 'unclosed")


def test_a_test_set_without_boxes_of_the_run_is_refused(run: Path, tmp_path: Path) -> None:
    write_class_folders(tmp_path / "folders", digit_images(2, classes=(1, 2)))
    with pytest.raises(UsageError, match=r"folders holds no box.*without boxes"):
        evaluate_run(run / "run", tmp_path / "folders", record=False)
    other = tmp_path / "other"
    shutil.copytree(run / "test", other)
    instances = other / "annotations" / "instances_test.json"
    data = json.loads(instances.read_text())
    data["categories"] = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    instances.write_text(json.dumps(data))
    with pytest.raises(UsageError, match="boxes are of no class of the run"):
        evaluate_run(run / "run", other, record=False)


def test_the_cli_prints_the_map_and_a_failing_detector_in_one_line(
    run: Path, tmp_path: Path
) -> None:
    base = [sys.executable, "-m", "datasetagent", "evaluate", str(run / "run"), "--test",
            str(run / "test")]  # fmt: skip
    out = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["task"] == "detection"
    assert data["test"]["objects"] > 0
    assert 0.0 <= data["trained_on_export"]["map"] <= 1.0
    bad = _script(tmp_path, "bad.py", "import sys; sys.exit(2)")
    out = subprocess.run(
        [*base, "--detector-command", bad], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0
    assert "detector command failed (exit status 2)" in out.stderr


def test_without_detector_shell_no_shell_reads_the_command(run: Path, tmp_path: Path) -> None:
    """Shell syntax in the command stays literal text: each word is one argument."""
    seen = tmp_path / "argv.json"
    body = (
        "import json, sys; open(sys.argv[1], 'w').write('[]'); "
        f"json.dump(sys.argv[2:], open({str(seen)!r}, 'w'))"
    )
    words = [f"a; touch {tmp_path / 'one'}", f"$(touch {tmp_path / 'two'})", "`id`", "{x}"]
    command = _script(tmp_path, "argv.py", body) + " {predictions} " + shlex.join(words)
    result = evaluate_run(
        run / "run", run / "test", detector=DetectorCommand.parse(command), record=False
    )
    assert json.loads(seen.read_text()) == words
    assert not (tmp_path / "one").exists()
    assert not (tmp_path / "two").exists()
    assert result.trained_on_export.map == 0.0  # it found nothing
    assert result.trained_on_export.per_class == {"red": 0.0, "blue": 0.0}


def test_an_embedder_and_a_detector_command_are_not_given_together(run: Path) -> None:
    with pytest.raises(UsageError, match="give one of them"):
        evaluate_run(
            run / "run",
            run / "test",
            embedder="clip",
            detector=DetectorCommand.parse("true"),
            record=False,
        )


def test_test_images_that_are_training_images_are_left_out(run: Path, tmp_path: Path) -> None:
    leaky = tmp_path / "leaky"
    shutil.copytree(run / "test", leaky)
    instances = leaky / "annotations" / "instances_test.json"
    data = json.loads(instances.read_text())
    trained = sorted((run / "run" / "export" / "coco" / "images" / "train").iterdir())[:2]
    for k, path in enumerate(trained):
        shutil.copy(path, leaky / "images" / "test" / path.name)
        image_id = 100 + k
        data["images"].append({"id": image_id, "file_name": path.name, "width": 96, "height": 96})
        data["annotations"].append(
            {"id": 1000 + k, "image_id": image_id, "category_id": 1, "bbox": [0, 0, 9, 9],
             "area": 81, "iscrowd": 0}
        )  # fmt: skip
    instances.write_text(json.dumps(data))
    result = evaluate_run(run / "run", leaky, record=False)
    assert (result.test.n, result.test.overlap) == (12, 2)
