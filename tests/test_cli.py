"""End-to-end: the installed ``datasetagent`` command on small real-image pools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from datasetagent.spec import DatasetSpec
from helpers import digit_images, encode, write_class_folders
from test_pipeline import make_pool

EXE = [sys.executable, "-m", "datasetagent"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300, check=False
    )


def test_build_from_request_exports_clean_split_dataset(tmp_path: Path) -> None:
    truth = make_pool(tmp_path / "data")
    out = run(
        "build",
        "expand to 25 images per class",
        "--existing",
        str(tmp_path / "data" / "seed"),
        "--source",
        str(tmp_path / "data" / "pool"),
        "-o",
        str(tmp_path / "run"),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["exported"] == 100
    assert summary["targets_met"] is True
    assert summary["splits"] == {"train": 80, "val": 12, "test": 8}
    export = tmp_path / "run" / "export" / "imagefolder"
    files = sorted(export.rglob("*.png"))
    assert len(files) == 100
    per_split = {s: len(list((export / s).rglob("*.png"))) for s in ("train", "val", "test")}
    assert per_split == summary["splits"]
    for split in ("train", "val", "test"):
        assert sorted(p.name for p in (export / split).iterdir()) == ["0", "1", "2", "3"]
    manifest = [json.loads(line) for line in (export / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 100
    assert {m["file"] for m in manifest} == {f.relative_to(export).as_posix() for f in files}
    rejected = {loc for loc, label in truth.items() if label is None}
    assert not rejected & {m["provenance"]["location"] for m in manifest}
    for m in manifest:
        assert m["split"] == m["file"].split("/")[0]
        assert m["labels"][0]["label"] == m["file"].split("/")[1]
        assert m["provenance"]["licence"] == "user-supplied"
    card = (export / "README.md").read_text()
    assert "Images per split and class" in card
    assert "manifest.jsonl" in card
    spec = DatasetSpec.load(tmp_path / "run" / "spec.yaml")
    assert spec.image.color_mode == "L"
    assert spec.image.min_side <= 32


def test_plan_prints_a_spec(tmp_path: Path) -> None:
    out = run(
        "plan",
        "a classification dataset of cats, dogs and horses, 200 images per class",
        "-o",
        str(tmp_path / "spec.yaml"),
    )
    assert out.returncode == 0, out.stderr
    spec = DatasetSpec.load(tmp_path / "spec.yaml")
    assert spec.class_names == ("cats", "dogs", "horses")
    assert spec.targets() == {"cats": 200, "dogs": 200, "horses": 200}


def test_build_from_spec_file_with_class_folders(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "photos", digit_images(8, classes=(5, 6)))
    spec = DatasetSpec.model_validate(
        {
            "classes": [{"name": "5"}, {"name": "6"}],
            "target_per_class": 6,
            "image": {"min_side": 16},
            "splits": {"train": 0.5, "val": 0.5, "test": 0.0},
        }
    )
    (tmp_path / "spec.yaml").write_text(spec.to_yaml())
    out = run(
        "build",
        str(tmp_path / "spec.yaml"),
        "--source",
        str(tmp_path / "photos"),
        "-o",
        str(tmp_path / "run"),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["splits"] == {"train": 6, "val": 6}
    again = run("export", str(tmp_path / "run"), "-o", str(tmp_path / "copy"))
    assert again.returncode == 0, again.stderr
    assert len(list((tmp_path / "copy").rglob("*.png"))) == 12


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["plan", "please make something nice"], "datasetagent plan"),
        (
            ["build", "cats and dogs, 10 each", "-o", "{tmp}/r", "--source", "{tmp}/nowhere"],
            "does not exist",
        ),
        (["build", "{tmp}/missing.yaml", "-o", "{tmp}/r"], "does not exist"),
        (["build", "cats and dogs", "-o", "{tmp}/r", "--source", "{tmp}/flat"], "seed examples"),
        (["build", "-o", "{tmp}/r", "--resume"], "nothing to resume"),
        (
            [
                "build",
                "cats and dogs",
                "-o",
                "{tmp}/r",
                "--source",
                "{tmp}/flat",
                "--format",
                "tfrecord",
            ],
            "unknown export format",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(encode(digit_images(1)[0][0]))
    out = run(*(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert "Traceback" not in out.stderr


def test_expanding_small_greyscale_set_keeps_its_size_and_mode(tmp_path: Path) -> None:
    """A 28×28 greyscale set is expanded with images like it, not rejected as tiny; colour
    photos in the pool are converted and fitted to match."""
    small = [(img.resize((28, 28)), label) for img, label in digit_images(6, classes=(1, 2))]
    for split, part in (("train", small[:4] + small[6:10]), ("test", small[4:6] + small[10:])):
        write_class_folders(tmp_path / "mnistish" / split, part, prefix=split)
    pool = tmp_path / "pool"
    for label in ("1", "2"):
        (pool / label).mkdir(parents=True)
    for k, (img, label) in enumerate(digit_images(10, classes=(1, 2), offset=6)):
        (pool / label / f"p{k}.png").write_bytes(encode(img.convert("RGB").resize((56, 56))))
    out = run(
        "build",
        "to 12 per class",
        "--existing",
        str(tmp_path / "mnistish"),
        "--source",
        str(pool),
        "-o",
        str(tmp_path / "run"),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["targets_met"] is True
    assert "tiny" not in summary["rejected"]
    spec = DatasetSpec.load(tmp_path / "run" / "spec.yaml")
    assert (spec.image.size, spec.image.color_mode, spec.image.min_side) == ((28, 28), "L", 28)
    assert spec.splits.test == pytest.approx(0.33)
    from PIL import Image

    for path in (tmp_path / "run" / "export" / "imagefolder").rglob("*.png"):
        with Image.open(path) as img:
            assert (img.size, img.mode) == ((28, 28), "L")


def test_build_with_an_llm_labeler_through_a_local_endpoint(tmp_path: Path) -> None:
    """`build --llm NAME --llm-base-url URL`: the command labels a flat pool through an
    OpenAI-compatible server (a loopback stub that answers from where each image is lit)."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    from helpers import photos
    from llm_stub import Reply, StubServer

    pool = tmp_path / "pool"
    pool.mkdir()
    grid = [
        np.asarray(photo.convert("L"), dtype=np.float64)[y : y + 96, x : x + 96]
        for photo in photos()
        for y in range(0, 331, 110)
        for x in range(0, 541, 108)
    ]
    crops = sorted((c for c in grid if c.std() > 30), key=lambda c: -c.mean())
    for k, crop in enumerate(crops[:16]):
        shade = np.where(np.arange(96) < 48, 1.0, 0.6)  # lit from the left
        lit = crop * (shade if k % 2 else shade[::-1])
        rgb = np.stack([lit] * 3, axis=-1).clip(0, 255).astype(np.uint8)
        (pool / f"p{k:02d}.png").write_bytes(encode(Image.fromarray(rgb)))

    def by_light(request: dict[str, object]) -> Reply:
        url = next(
            (
                p["image_url"]["url"]  # type: ignore[index]
                for m in request["messages"]  # type: ignore[attr-defined]
                if isinstance(m.get("content"), list)
                for p in m["content"]
                if p.get("type") == "image_url"
            ),
            None,
        )
        if url is None:  # the planning call: the request in words, no image
            plan = {
                "task": "classification",
                "classes": [
                    {"name": n, "prompt": f"a photo {n}", "synonyms": [], "count": None}
                    for n in ("leftlit", "rightlit")
                ],
                "images_per_class": 5,
                "total_images": None,
                "counts_add_to_existing": False,
                "formats": [],
                "licence": "open",
                "split": None,
                "min_side": None,
                "size": None,
                "color_mode": None,
                "enhance": None,
            }
            return Reply.json(plan)
        data = base64.b64decode(url.split(",", 1)[1])
        arr = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)
        left, right = arr[:, : arr.shape[1] // 2].mean(), arr[:, arr.shape[1] // 2 :].mean()
        label = "leftlit" if left > right else "rightlit"
        return Reply.json({"label": label, "confidence": 0.97})

    with StubServer(by_light) as stub:
        out = run(
            "build",
            "leftlit and rightlit photos, 5 each",
            "--source",
            str(pool),
            "--llm",
            "stub-vl",
            "--llm-base-url",
            stub.base_url,
            "-o",
            str(tmp_path / "run"),
            "--json",
        )
        requests = stub.requests
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["exported"] == 10
    assert summary["labelers"] == {"llm:stub-vl": 10}
    processed = 16 - sum(summary["rejected"].values())
    # one planning call, then one call per processed image
    assert summary["usage"]["llm:stub-vl"]["calls"] == len(requests) - 1 == processed
    assert all(r.body["model"] == "stub-vl" for r in requests)
    assert "leftlit and rightlit photos" in requests[0].text
    assert "planned with stub-vl: 1 call(s)" in out.stderr
    manifest = tmp_path / "run" / "export" / "imagefolder" / "manifest.jsonl"
    for line in manifest.read_text().splitlines():
        m = json.loads(line)
        name = Path(m["provenance"]["location"]).name
        assert m["labels"][0]["label"] == ("leftlit" if int(name[1:3]) % 2 else "rightlit")


def test_plan_with_an_llm_and_without(tmp_path: Path) -> None:
    from llm_stub import Reply, StubServer

    plan = {
        "task": "detection",
        "classes": [
            {"name": "bicycle", "prompt": "a photo of a bicycle", "synonyms": ["bike"],
             "count": None},
            {"name": "scooter", "prompt": "a photo of a kick scooter", "synonyms": [],
             "count": None},
        ],
        "images_per_class": 500, "total_images": None, "counts_add_to_existing": False,
        "formats": [], "licence": "open", "split": None, "min_side": None, "size": None,
        "color_mode": None, "enhance": None,
    }  # fmt: skip
    request = "a detection dataset of bicycles and scooters, 500 images each, openly licensed"
    with StubServer() as stub:
        stub.script(Reply.json(plan))
        out = run("plan", request, "--llm", "planner", "--llm-base-url", stub.base_url)
        sent = stub.requests
    assert out.returncode == 0, out.stderr
    spec = DatasetSpec.model_validate(__import__("yaml").safe_load(out.stdout))
    assert spec.task == "detection"
    assert [c.name for c in spec.classes] == ["bicycle", "scooter"]
    assert spec.classes[0].synonyms == ("bike",)
    assert spec.target_per_class == 500
    assert spec.licences.mode == "open"
    assert len(sent) == 1
    assert request in sent[0].text
    by_rule = run("plan", request)
    assert by_rule.returncode == 0, by_rule.stderr
    assert "task: detection" in by_rule.stdout
    bad = run("plan", request, "--llm-base-url", "http://127.0.0.1:9/v1")
    assert bad.returncode == 2
    assert "--llm-base-url needs --llm" in bad.stderr


def test_the_summary_says_how_a_person_can_fill_short_classes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from datasetagent.cli import _print_summary

    classes = {
        "shirt": {"target": 300, "accepted": 69, "exported": 69, "review": 767},
        "coat": {"target": 300, "accepted": 300, "exported": 300, "review": 717},
        "bag": {"target": 300, "accepted": 221, "exported": 221, "review": 0},
    }
    summary = {
        "run": "/runs/fashion",
        "classes": classes,
        "exported": 590,
        "splits": {"train": 590},
        "cbi": 0.05,
        "review": 1484,
        "rejected": {},
        "rounds": 3,
        "stop_reason": "pool exhausted",
        "exports": {},
    }
    _print_summary(summary)
    err = " ".join(capsys.readouterr().err.split())
    assert "proposed for classes short of their target: shirt 767;" in err
    assert "datasetagent review /runs/fashion --write queue.jsonl --review 767" in err


def test_build_parses_the_existing_dataset_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning, checking and building share one parse of --existing (a COCO or YOLO dataset
    is read whole, every image header included)."""
    from click.testing import CliRunner

    from datasetagent.cli import main
    from datasetagent.sources import existing

    items = digit_images(6, classes=(1, 2))
    write_class_folders(tmp_path / "seed", items[:4] + items[6:10])
    pool = tmp_path / "pool"
    pool.mkdir()
    for k, (img, _) in enumerate(items[4:6] + items[10:]):
        (pool / f"p{k}.png").write_bytes(encode(img))
    reads: list[Path] = []
    real = existing.read_dataset

    def counting(root: Path, fmt: str | None = None, **options: bool) -> object:
        reads.append(root)
        return real(root, fmt, **options)

    monkeypatch.setattr(existing, "read_dataset", counting)
    args = ["build", "6 per class", "--existing", str(tmp_path / "seed")]
    result = CliRunner().invoke(main, [*args, "--source", str(pool), "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert reads == [tmp_path / "seed"]


def test_plan_shows_how_each_phrase_was_read_and_what_was_not_used(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "clothes", digit_images(6, classes=(3, 4)))
    out = run(
        "plan",
        "expand this clothing classification dataset to 30 images per class, no enhancement, "
        "resized to 64 px",
        "--existing",
        str(tmp_path / "clothes"),
    )
    assert out.returncode == 0, out.stderr
    spec = DatasetSpec.model_validate(__import__("yaml").safe_load(out.stdout))
    assert spec.class_names == ("3", "4")  # "clothing" is not made a class
    assert spec.targets() == {"3": 30, "4": 30}
    assert (spec.image.size, spec.image.enhance) == ((64, 64), "off")
    for line in (
        'read "30 images per class" as per class: 30',
        'read "no enhancement" as image.enhance: off',
        'read "resized to 64 px" as image.size: 64x64',
        'read "classification" as task: classification',
    ):
        assert line in out.stderr
    assert 'warning: the request\'s "clothing" was not used' in out.stderr


def test_plan_and_build_take_set_and_check_it(tmp_path: Path) -> None:
    out = run(
        "plan", "cats and dogs", "--set", "quality.min_confidence=0.8",
        "--set", "image.size=128,128", "--set", "enhance=off",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    spec = DatasetSpec.model_validate(__import__("yaml").safe_load(out.stdout))
    assert spec.quality.min_confidence == 0.8
    assert spec.image.size == (128, 128)
    assert spec.image.enhance == "off"
    bad = run("build", "cats and dogs", "-o", str(tmp_path / "r"), "--set", "min_confidenc=1")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: --set min_confidenc: no such setting in the spec; did you mean "
        "quality.min_confidence or image.min_side?"
    )
    huge = run("build", "cats and dogs", "-o", str(tmp_path / "r"), "--set", "image.size=0,0")
    assert huge.returncode == 2
    assert "image size 0x0 is too small" in huge.stderr
    assert not (tmp_path / "r").exists()  # refused before any work


def test_build_warns_about_unused_words_and_keeps_the_task(tmp_path: Path) -> None:
    args = ["-o", str(tmp_path / "r"), "--source", str(tmp_path / "nowhere")]
    out = run("build", "cats and dogs in the wild", *args)
    assert 'warning: the request\'s "in the wild" was not used' in out.stderr
    coco = run("build", "cats and dogs in COCO format", *args)
    assert coco.returncode == 2
    assert "the coco format holds boxes or masks, but the request asks for no" in coco.stderr
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("classes: [{name: cat}, {name: dog}]\nimage: {enhance: off}\n")
    ok = run("plan", "cats and dogs", "--set", "image.enhance=off")
    assert ok.returncode == 0, ok.stderr
    loaded = run("build", str(spec_file), "--set", "formats=coco", *args)
    assert loaded.returncode == 2
    assert "the coco format cannot hold classification labels" in loaded.stderr
