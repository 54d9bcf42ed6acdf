"""Read only what the user pointed at: an existing dataset that names a file outside its folder
(``../``, an absolute path, a symbolic link out) is refused whole, with an error naming the
dataset file, the entry and the path; FIFOs and devices are never opened; CSV cells cannot
smuggle spreadsheet formulas."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from datasetagent.cli import main
from datasetagent.errors import UsageError
from datasetagent.export import export_samples
from datasetagent.pipeline import build
from datasetagent.records import ClassLabel, Provenance, Sample
from datasetagent.scan import ScanParams, scan_files
from datasetagent.sources.existing import open_existing
from datasetagent.sources.files import BROKEN_LINK, LINK_OUT, NOT_REGULAR, image_files
from datasetagent.sources.formats import DatasetFormatError
from datasetagent.sources.local import read_file
from datasetagent.spec import ClassSpec, DatasetSpec, ImageConstraints, SourceSpec, TaskKind
from export_data import blob_path, export_each_format, make_samples, spec_for
from helpers import digit_images, encode, write_class_folders

HOW = ("dotdot", "absolute", "symlink")


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One clean export per format, copied by each test before it turns it hostile."""
    return export_each_format(tmp_path_factory.mktemp("exports"))


def _secret(folder: Path) -> Path:
    """A real image outside every dataset folder, with pixels no dataset image has."""
    pixels = np.random.default_rng(99).integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    path = folder / "secret.png"
    Image.fromarray(pixels).save(path)
    return path


def _name(how: str, secret: Path, base: Path) -> str:
    """How a hostile dataset names ``secret`` from its folder ``base``."""
    if how == "dotdot":
        name = os.path.relpath(secret, base)
        assert name.startswith("..")
        return name
    if how == "absolute":
        return str(secret)
    base.mkdir(parents=True, exist_ok=True)
    os.symlink(secret, base / "innocent.png")
    return "innocent.png"


def _coco(root: Path, name: Callable[[Path], str]) -> tuple[str, str]:
    path = root / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    data["images"][0]["file_name"] = name(root / "images" / "train")
    path.write_text(json.dumps(data))
    return "annotations/instances_train.json", "$.images[0].file_name"


def _voc(root: Path, name: Callable[[Path], str]) -> tuple[str, str]:
    xml = sorted((root / "Annotations").glob("*.xml"))[0]
    text = re.sub(
        r"<filename>[^<]*</filename>",
        f"<filename>{name(root / 'JPEGImages')}</filename>",
        xml.read_text(),
    )
    xml.write_text(text)
    return f"Annotations/{xml.name}", "filename"


def _yolo_list(root: Path, name: Callable[[Path], str]) -> tuple[str, str]:
    listed = sorted((root / "images" / "val").iterdir())
    lines = [f"images/val/{p.name}" for p in listed]
    (root / "val.txt").write_text("\n".join([*lines, name(root)]) + "\n")
    yaml = (root / "data.yaml").read_text().replace("val: images/val", "val: val.txt")
    (root / "data.yaml").write_text(yaml)
    return "val.txt", f"line {len(lines) + 1}"


def _hf(root: Path, name: Callable[[Path], str]) -> tuple[str, str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = root / "data" / "train-00000-of-00001.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[1]["image"] = {"bytes": None, "path": name(root / "data")}
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    return "data/train-00000-of-00001.parquet", "row 1 image.path"


def _csv(root: Path, name: Callable[[Path], str]) -> tuple[str, str]:
    path = root / "labels.csv"
    lines = path.read_text().splitlines()
    cells = lines[2].split(",")
    cells[0] = name(root)
    lines[2] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return "labels.csv", "line 3 file"


HOSTILE: dict[str, tuple[str, Callable[[Path, Callable[[Path], str]], tuple[str, str]]]] = {
    "coco file_name": ("coco", _coco),
    "voc filename": ("voc", _voc),
    "yolo list file": ("yolo", _yolo_list),
    "hf Image.path": ("hf", _hf),
    "csv file": ("csv", _csv),
}


def _holds(folder: Path, data: bytes) -> list[Path]:
    """The files under ``folder`` whose bytes contain ``data``."""
    if not folder.exists():
        return []
    return [p for p in folder.rglob("*") if p.is_file() and data in p.read_bytes()]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_dataset_naming_a_file_outside_its_folder_is_refused(
    exports: Path, tmp_path: Path, case: str, how: str
) -> None:
    fmt, make_hostile = HOSTILE[case]
    secret = _secret(tmp_path)
    root = tmp_path / "data" / fmt
    shutil.copytree(exports / fmt, root)
    file, where = make_hostile(root, lambda base: _name(how, secret, base))
    with pytest.raises(DatasetFormatError) as caught:
        open_existing(root)
    err = caught.value
    assert Path(err.file) == root / file
    assert err.where == where
    assert "outside the dataset folder" in str(err)
    assert "\n" not in str(err)
    shown = "innocent.png" if how == "symlink" else os.path.basename(str(secret))
    assert shown in str(err)

    # ... and the build stops before anything of it (the secret's pixels least of all) is kept
    task: TaskKind = "classification" if fmt == "csv" else "detection"
    spec = spec_for(task, fmt).model_copy(update={"existing": str(root)})
    with pytest.raises(DatasetFormatError):
        build(spec, tmp_path / "run", labelers=["folder-name"])
    assert _holds(tmp_path / "run", secret.read_bytes()) == []


def test_the_cli_refuses_it_in_one_line(exports: Path, tmp_path: Path) -> None:
    secret = _secret(tmp_path)
    root = tmp_path / "coco"
    shutil.copytree(exports / "coco", root)
    _coco(root, lambda base: str(secret))
    run = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["build", "more pets", "--existing", str(root), "-o", str(run)]
    )
    assert result.exit_code == UsageError.exit_code
    assert "$.images[0].file_name" in result.output
    assert f"{secret} lies outside the dataset folder" in result.output
    assert "Traceback" not in result.output
    assert _holds(run, secret.read_bytes()) == []


def test_a_yolo_label_file_linking_out_is_refused(exports: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("0 0.5 0.5 0.2 0.2\n")
    root = tmp_path / "yolo"
    shutil.copytree(exports / "yolo", root)
    label = sorted((root / "labels" / "train").glob("*.txt"))[0]
    label.unlink()
    os.symlink(outside, label)
    with pytest.raises(DatasetFormatError, match="outside the dataset folder") as caught:
        open_existing(root)
    assert Path(caught.value.file) == label


def test_a_metadata_file_linking_out_is_refused(exports: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.json"
    root = tmp_path / "coco"
    shutil.copytree(exports / "coco", root)
    (root / "annotations" / "instances_train.json").rename(outside)
    os.symlink(outside, root / "annotations" / "instances_train.json")
    with pytest.raises(DatasetFormatError, match=f"links to {re.escape(str(outside))} outside"):
        open_existing(root)


def test_paths_that_stay_inside_the_folder_still_read(exports: Path, tmp_path: Path) -> None:
    """``../`` that comes back inside, and links between the dataset's own files, are fine."""
    root = tmp_path / "coco"
    shutil.copytree(exports / "coco", root)
    path = root / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    first, second = data["images"][0]["file_name"], data["images"][1]["file_name"]
    data["images"][0]["file_name"] = f"../train/{first}"
    os.symlink(root / "images" / "train" / second, root / "images" / "train" / "alias.png")
    data["images"][1]["file_name"] = "alias.png"
    path.write_text(json.dumps(data))
    ds = open_existing(root)
    locations = {img.location for img in ds.images()}
    assert str((root / "images" / "train" / first).resolve()) in locations
    assert str((root / "images" / "train" / second).resolve()) in locations


def _outside_yolo(exports: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A YOLO dataset whose ``data.yaml`` ``path:`` is a folder outside it."""
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(exports / "yolo", elsewhere)
    root = tmp_path / "yolo"
    root.mkdir()
    text = (elsewhere / "data.yaml").read_text()
    (root / "data.yaml").write_text(f"path: {elsewhere}\n{text}")
    return root, elsewhere


def test_yolo_path_outside_the_folder_needs_the_switch(exports: Path, tmp_path: Path) -> None:
    root, elsewhere = _outside_yolo(exports, tmp_path)
    with pytest.raises(DatasetFormatError) as caught:
        open_existing(root)
    assert Path(caught.value.file) == root / "data.yaml"
    assert caught.value.where == "path"
    assert "--existing-outside-root" in str(caught.value)
    ds = open_existing(root, outside_root=True)
    assert len(ds) == 6
    assert all(Path(img.location).is_relative_to(elsewhere) for img in ds.images())

    # the switch widens the folder to path:, no further
    secret = _secret(tmp_path)
    (elsewhere / "val.txt").write_text(f"{secret}\n")
    (root / "data.yaml").write_text(
        (root / "data.yaml").read_text().replace("val: images/val", "val: val.txt")
    )
    with pytest.raises(DatasetFormatError, match=f"outside the dataset folder {elsewhere}"):
        open_existing(root, outside_root=True)


def test_the_cli_switch_lets_yolo_path_out(exports: Path, tmp_path: Path) -> None:
    root, _ = _outside_yolo(exports, tmp_path)
    refused = CliRunner().invoke(main, ["plan", "more pets", "--existing", str(root)])
    assert refused.exit_code == UsageError.exit_code
    assert "--existing-outside-root" in refused.output
    allowed = CliRunner().invoke(
        main, ["plan", "more pets", "--existing", str(root), "--existing-outside-root"]
    )
    assert allowed.exit_code == 0, allowed.output
    assert "existing:" in allowed.output


def test_hf_image_by_path_is_read_from_that_file_and_provenance_says_so(
    exports: Path, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "hf"
    shutil.copytree(exports / "hf", root)
    picture = root / "pictures" / "own.png"
    picture.parent.mkdir()
    picture.write_bytes(_secret(tmp_path).read_bytes())
    path = root / "data" / "train-00000-of-00001.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[0]["image"] = {"bytes": None, "path": "../pictures/own.png"}
    rows[0]["source"] = "https://example.org/claimed"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    (root / "manifest.jsonl").unlink()  # the Parquet's own source column speaks
    ds = open_existing(root)
    img = next(i for i in ds.images() if i.source == "https://example.org/claimed")
    assert img.location == str(picture.resolve())
    assert ds.read(img.location) == picture.read_bytes()
    sample = Sample(
        id="x",
        blob="x",
        width=64,
        height=48,
        mode="RGB",
        origin="existing",
        provenance=Provenance(
            source_kind="existing", location=img.location, licence="user-supplied"
        ),
    )
    prov = ds.apply(sample, "detection").provenance
    assert prov.location == "https://example.org/claimed"
    assert prov.steps[0].name == "imported"
    assert prov.steps[0].params == {"from": str(picture.resolve())}


# -- only regular files --------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_a_fifo_named_like_an_image_is_skipped_unopened(tmp_path: Path) -> None:
    (tmp_path / "real.png").write_bytes(encode(digit_images(1, classes=(3,))[0][0]))
    os.mkfifo(tmp_path / "x.png")
    os.mkfifo(tmp_path / "noext")  # would be sniffed for image bytes
    skipped: list[tuple[str, str]] = []
    found = list(image_files(tmp_path, on_skip=lambda p, why: skipped.append((p.name, why))))
    assert [p.name for p in found] == ["real.png"]
    assert sorted(skipped) == [("noext", NOT_REGULAR), ("x.png", NOT_REGULAR)]
    with pytest.raises(OSError, match="not a regular file"):
        read_file(str(tmp_path / "x.png"))


@pytest.mark.timeout(120)
def test_scan_skips_a_fifo_and_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "real.png").write_bytes(encode(digit_images(1, classes=(3,))[0][0]))
    os.mkfifo(folder / "x.png")
    out = subprocess.run(
        [sys.executable, "-m", "datasetagent", "scan", str(folder), "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "300"},
    )
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["path"] for line in out.stdout.splitlines()] == [
        str(folder / "real.png")
    ]
    assert f"skipped 1 file(s) in {folder}: {NOT_REGULAR}" in out.stderr


@pytest.mark.timeout(30)
def test_the_scan_reads_only_regular_files_it_was_given(tmp_path: Path) -> None:
    """A file listed as regular that is a FIFO when a scan worker opens it (replaced in
    between) is reported, not waited on, as the build's reader does."""
    os.mkfifo(tmp_path / "x.png")
    real = tmp_path / "real.png"
    real.write_bytes(encode(digit_images(1, classes=(3,))[0][0]))
    got = scan_files([str(tmp_path / "x.png"), str(real)], ScanParams())
    assert [(s.path, s.issues) for s in got] == [
        (str(tmp_path / "x.png"), ["corrupt"]),
        (str(real), []),
    ]
    assert NOT_REGULAR in got[0].detail


@pytest.mark.timeout(60)
def test_scanning_a_fifo_given_itself_says_it_was_skipped(tmp_path: Path) -> None:
    """``scan x.png`` where x.png is a FIFO (or ``scan /dev/zero``) said "0 images" and
    nothing else."""
    from datasetagent.scan import ScanParams, scan_folder

    os.mkfifo(tmp_path / "x.png")
    skipped: list[tuple[str, str]] = []
    lines = list(
        scan_folder(
            tmp_path / "x.png",
            ScanParams(),
            workers=1,
            on_skip=lambda p, why: skipped.append((p.name, why)),
        )
    )
    assert lines == []
    assert skipped == [("x.png", NOT_REGULAR)]


@pytest.mark.timeout(60)
def test_an_existing_dataset_naming_a_fifo_is_refused_and_listing_skips_it(
    exports: Path, tmp_path: Path
) -> None:
    root = tmp_path / "csv"
    shutil.copytree(exports / "csv", root)
    os.mkfifo(root / "images" / "train" / "pipe.png")
    with (root / "labels.csv").open("a") as fh:
        fh.write("images/train/pipe.png,cat,train,64,48,,,CC0-1.0\n")
    with pytest.raises(DatasetFormatError, match=r"pipe\.png is not a regular file"):
        open_existing(root)

    folder = tmp_path / "imagefolder"
    write_class_folders(folder, digit_images(2, classes=(1, 2)))
    os.mkfifo(folder / "1" / "pipe.png")
    ds = open_existing(folder)
    assert len(ds) == 4
    assert not any(img.location.endswith("pipe.png") for img in ds.images())


class Notes:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def stage(self, name: str, round_: int, total: int | None = None) -> None:
        return None

    def advance(self, n: int = 1) -> None:
        return None

    def note(self, message: str) -> None:
        self.notes.append(message)


def _local_spec(folder: Path) -> DatasetSpec:
    return DatasetSpec(
        classes=(ClassSpec(name="4"), ClassSpec(name="7")),
        target_per_class=4,
        image=ImageConstraints(min_side=32),
        sources=(SourceSpec(location=str(folder)),),
    )


@pytest.mark.timeout(240)
def test_a_build_skips_a_fifo_in_its_source_and_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    write_class_folders(folder, digit_images(6, classes=(4, 7)))
    os.mkfifo(folder / "4" / "x.png")
    notes = Notes()
    result = build(_local_spec(folder), tmp_path / "run", workers=1, reporter=notes)
    assert result.report.targets_met
    assert f"skipped 1 file(s) in {folder}: {NOT_REGULAR}" in notes.notes


def test_a_source_of_links_out_only_says_what_it_skipped(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write_class_folders(outside, digit_images(1, classes=(4, 7)))
    folder = tmp_path / "photos"
    folder.mkdir()
    for k, image in enumerate(sorted(outside.rglob("*.png"))):
        os.symlink(image, folder / f"link{k}.png")
    with pytest.raises(UsageError) as caught:
        build(_local_spec(folder), tmp_path / "run", workers=1)
    assert f"no images found (skipped 2 file(s) in {folder}: {LINK_OUT})" in str(caught.value)


# -- loops of symbolic links --------------------------------------------------------------
def _loop(folder: Path, a: str, b: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(b, folder / a)
    os.symlink(a, folder / b)


@pytest.mark.timeout(120)
def test_a_loop_of_links_is_skipped_by_the_listing_and_the_scan(tmp_path: Path) -> None:
    """pathlib's resolve() raises RuntimeError on a loop (Python < 3.13): the scan ended in a
    traceback, whatever else the folder held."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "real.png").write_bytes(encode(digit_images(1, classes=(3,))[0][0]))
    _loop(folder, "a.png", "b.png")
    skipped: list[tuple[str, str]] = []
    found = list(image_files(folder, on_skip=lambda p, why: skipped.append((p.name, why))))
    assert [p.name for p in found] == ["real.png"]
    assert sorted(skipped) == [("a.png", BROKEN_LINK), ("b.png", BROKEN_LINK)]
    out = subprocess.run(
        [sys.executable, "-m", "datasetagent", "scan", str(folder), "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "300"},
    )
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 1
    assert f"skipped 2 file(s) in {folder}: {BROKEN_LINK}" in out.stderr


@pytest.mark.parametrize("case", ["coco file_name", "csv file"])
def test_a_dataset_naming_a_loop_of_links_is_refused_naming_the_entry(
    exports: Path, tmp_path: Path, case: str
) -> None:
    fmt, make_hostile = HOSTILE[case]
    root = tmp_path / "data" / fmt
    shutil.copytree(exports / fmt, root)

    def loop(base: Path) -> str:
        _loop(base, "loop.png", "pool.png")
        return "loop.png"

    file, where = make_hostile(root, loop)
    with pytest.raises(DatasetFormatError) as caught:
        open_existing(root)
    assert Path(caught.value.file) == root / file
    assert caught.value.where == where
    assert "loop.png is a loop of symbolic links" in str(caught.value)


def test_a_path_through_a_loop_of_links_is_one_line(tmp_path: Path) -> None:
    _loop(tmp_path, "l1", "l2")
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "300"}
    for args in (
        ["export", str(tmp_path), "-o", str(tmp_path / "l1" / "x")],
        ["build", "cats and dogs", "--source", str(tmp_path), "-o", str(tmp_path / "l1" / "x")],
    ):
        out = subprocess.run(
            [sys.executable, "-m", "datasetagent", *args],
            capture_output=True,
            text=True,
            timeout=100,
            check=False,
            env=env,
        )
        assert out.returncode == 2, out.stderr
        assert "symbolic links" in out.stderr  # a loop of them, or too many levels
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


# -- CSV cells are not formulas ------------------------------------------------------------
def test_csv_cells_that_start_like_formulas_are_escaped_and_read_back(tmp_path: Path) -> None:
    hostile = {"creator": '=HYPERLINK("http://evil.example","x")', "label": "-1"}
    items = make_samples(tmp_path / "img", "classification", n=3)
    items = [
        s.model_copy(
            update={
                "annotations": (ClassLabel(label="-1", labeler="clip"),),
                "provenance": s.provenance.model_copy(
                    update={"creator": hostile["creator"], "location": "@SUM(A1:A9)"}
                ),
            }
        )
        for s in items
    ]
    spec = spec_for("classification", "csv").model_copy(
        update={"classes": (ClassSpec(name="-1"), ClassSpec(name="cat"))}
    )
    out = export_samples("csv", tmp_path / "csv", spec, items, blob_path, None)
    with (out / "labels.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    for row in rows:
        assert row["label"] == "'-1"
        assert row["creator"] == "'" + hostile["creator"]
        assert row["source"] == "'@SUM(A1:A9)"
        assert not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for v in row.values())
    (out / "manifest.jsonl").unlink()  # what the CSV alone says
    ds = open_existing(out)
    assert ds.classes == ("-1",)
    assert {(img.label, img.creator, img.source) for img in ds.images()} == {
        ("-1", hostile["creator"], "@SUM(A1:A9)")
    }


def test_an_imagefolder_class_folder_linking_out_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write_class_folders(outside, digit_images(1, classes=(4,)))
    root = tmp_path / "imagefolder"
    write_class_folders(root, digit_images(1, classes=(7,)))
    os.symlink(outside / "4", root / "4")
    with pytest.raises(DatasetFormatError) as caught:
        open_existing(root)
    assert (caught.value.file, caught.value.where) == (str(root), "4")
    assert "outside the dataset folder" in str(caught.value)


def test_roboflow_dotdot_splits_read_their_own_folder_not_a_neighbours(tmp_path: Path) -> None:
    """Roboflow writes ``train: ../train/images`` meaning the folder beside the YAML; a
    neighbour's ``../train/images`` outside the dataset must not be read instead."""
    root = tmp_path / "dataset"
    for base in (root, tmp_path):  # the dataset's own train/, and a neighbour's
        (base / "train" / "images").mkdir(parents=True)
    Image.new("RGB", (100, 50)).save(root / "train" / "images" / "own.png")
    _secret(tmp_path / "train" / "images")
    (root / "data.yaml").write_text("train: ../train/images\nnames: ['cat']\n")
    ds = open_existing(root)
    assert [Path(img.location).name for img in ds.images()] == ["own.png"]
