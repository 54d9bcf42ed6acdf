"""Malformed existing datasets: the error names the file and the position in it (line, JSON
path, XML element, row), and nothing of the dataset is imported."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from datasetagent.cli import main
from datasetagent.errors import UsageError
from datasetagent.export import export_samples
from datasetagent.pipeline import build
from datasetagent.sources.existing import open_existing
from datasetagent.sources.formats import DatasetFormatError
from export_data import blob_path, export_each_format, make_samples, spec_for


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One clean export per format, copied by each test before it breaks something."""
    return export_each_format(tmp_path_factory.mktemp("exports"))


def _json(path: Path, change: Callable[[dict[str, object]], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1))


def _first(folder: Path, pattern: str) -> Path:
    return sorted(folder.glob(pattern))[0]


def _hf_bad_category(root: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = root / "data" / "train-00000-of-00001.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[2]["objects"]["category"][0] = 17
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)


COCO = "annotations/instances_train.json"
BREAKAGES: dict[str, tuple[str, Callable[[Path], None], str, str]] = {
    # name: (format, breakage, file the error names, position it names)
    "coco json": (
        "coco",
        lambda r: (r / COCO).write_text('{"images": [\n  {"id": 1,}\n]}'),
        COCO,
        "line 2 column 12",
    ),
    "coco bbox": (
        "coco",
        lambda r: _json(r / COCO, lambda d: d["annotations"][1].update(bbox="wide")),  # type: ignore[index]
        COCO,
        "$.annotations[1].bbox",
    ),
    "coco category": (
        "coco",
        lambda r: _json(r / COCO, lambda d: d["annotations"][0].update(category_id=99)),  # type: ignore[index]
        COCO,
        "$.annotations[0].category_id",
    ),
    "coco missing image": (
        "coco",
        lambda r: _first(r / "images" / "train", "*").unlink(),
        COCO,
        ".file_name",
    ),
    "yolo tokens": (
        "yolo",
        lambda r: _first(r / "labels" / "train", "*.txt").write_text(
            "0 0.5 0.5 0.1 0.1\n1 0.5 0.5\n"
        ),
        "labels/train/",
        "line 2",
    ),
    "yolo class": (
        "yolo",
        lambda r: _first(r / "labels" / "val", "*.txt").write_text(
            "0 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.1 0.1\n"
        ),
        "labels/val/",
        "line 2",
    ),
    "yolo yaml": (
        "yolo",
        lambda r: (r / "data.yaml").write_text("train: images/train\nnames: [cat, dog\n"),
        "data.yaml",
        "line 3",
    ),
    "voc xml": (
        "voc",
        lambda r: _first(r / "Annotations", "*.xml").write_text(
            "<annotation>\n  <size>\n</annotation>"
        ),
        "Annotations/",
        "line 3 column",
    ),
    "voc labelmap bytes": (
        "voc",
        lambda r: (r / "labelmap.txt").write_bytes(b"cat\n\xff\n"),
        "labelmap.txt",
        "byte 4",
    ),
    "voc xmax": (
        "voc",
        lambda r: (p := _first(r / "Annotations", "*.xml")).write_text(
            re.sub(r"<xmax>[^<]*</xmax>", "", p.read_text(), count=1)
        ),
        "Annotations/",
        "object[1]/bndbox/xmax",
    ),
    "csv column": (
        "csv",
        lambda r: (r / "labels.csv").write_text("path,class\nimages/a.png,cat\n"),
        "labels.csv",
        "line 1",
    ),
    "csv split": (
        "csv",
        lambda r: (p := r / "labels.csv").write_text(
            re.sub(r"\n([^\n]*?),(train|val|test),", r"\n\1,holdout,", p.read_text(), count=1)
        ),
        "labels.csv",
        "line 2",
    ),
    "hf category": ("hf", _hf_bad_category, "train-00000-of-00001.parquet", "row 2 objects[0]"),
    "hf parquet": (
        "hf",
        lambda r: (r / "data" / "test-00000-of-00001.parquet").write_bytes(b"PAR1 not really"),
        "test-00000-of-00001.parquet",
        "",
    ),
    "manifest": (
        "coco",
        lambda r: (p := r / "manifest.jsonl").write_text(p.read_text() + '{"file": 3\n'),
        "manifest.jsonl",
        "line 7",
    ),
}


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_a_malformed_file_is_named_with_its_position(
    exports: Path, tmp_path: Path, name: str
) -> None:
    fmt, breakage, file, where = BREAKAGES[name]
    root = tmp_path / fmt
    shutil.copytree(exports / fmt, root)
    open_existing(root)  # whole, it reads
    breakage(root)
    with pytest.raises(DatasetFormatError) as caught:
        open_existing(root)
    err = caught.value
    assert Path(err.file).resolve().as_posix().endswith(file) or file in err.file
    assert where in err.where if where else err.where == ""
    assert str(err).startswith(f"{err.file}: {err.where}" if err.where else err.file)


def _hf_bad_class_name(root: Path) -> None:
    import pyarrow.parquet as pq

    path = root / "data" / "train-00000-of-00001.parquet"
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"huggingface"])
    meta["info"]["features"]["objects"]["feature"]["category"]["names"][1] = "dog/cat"
    pq.write_table(table.replace_schema_metadata({b"huggingface": json.dumps(meta)}), path)


def _sub(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


BAD_NAME = "dog/cat"
BAD_NAMES: dict[str, tuple[str, Callable[[Path], None], str, str]] = {
    # name: (format, renaming, file the error names, position it names)
    "coco category": (
        "coco",
        lambda r: _json(r / COCO, lambda d: d["categories"][1].update(name=BAD_NAME)),  # type: ignore[index]
        COCO,
        "$.categories[1].name",
    ),
    "yolo names map": (
        "yolo",
        lambda r: _sub(r / "data.yaml", "1: dog", f"1: {BAD_NAME}"),
        "data.yaml",
        "names: 1",
    ),
    "yolo names list": (
        "yolo",
        lambda r: _sub(
            r / "data.yaml",
            "names:\n  0: cat\n  1: dog\n  2: traffic light",
            f"names: [cat, {BAD_NAME}, traffic light]",
        ),
        "data.yaml",
        "names[1]",
    ),
    "voc labelmap": (
        "voc",
        lambda r: _sub(r / "labelmap.txt", "\ndog:", f"\n{BAD_NAME}:"),
        "labelmap.txt",
        "line 4",
    ),
    "voc object": (
        "voc",
        lambda r: _sub(
            _first(r / "Annotations", "*.xml"), "<name>dog</name>", f"<name>{BAD_NAME}</name>"
        ),
        "Annotations/",
        "/name",
    ),
    "csv label": (
        "csv",
        lambda r: _sub(r / "labels.csv", ",dog,", f",{BAD_NAME},"),
        "labels.csv",
        "label",
    ),
    "hf class label": (
        "hf",
        _hf_bad_class_name,
        "train-00000-of-00001.parquet",
        "objects.category names[1]",
    ),
}


@pytest.mark.parametrize("name", list(BAD_NAMES))
def test_a_class_name_that_cannot_be_one_names_the_file_and_position(
    exports: Path, tmp_path: Path, name: str
) -> None:
    fmt, renaming, file, where = BAD_NAMES[name]
    root = tmp_path / fmt
    shutil.copytree(exports / fmt, root)
    renaming(root)
    with pytest.raises(DatasetFormatError) as caught:
        open_existing(root)
    err = caught.value
    assert Path(err.file).resolve().as_posix().endswith(file) or file in err.file
    assert where in err.where
    assert f"class name {BAD_NAME!r} cannot be used as a folder name" in str(err)
    result = CliRunner().invoke(main, ["plan", "more images", "--existing", str(root)])
    assert result.exit_code == UsageError.exit_code
    assert f"{err.file}: {err.where}: class name" in result.output


def test_an_imagefolder_class_folder_that_cannot_be_a_class_is_named(tmp_path: Path) -> None:
    items = make_samples(tmp_path / "img", "classification", n=4)
    root = export_samples(
        "imagefolder", tmp_path / "x", spec_for("classification"), items, blob_path, None
    )
    folder = next(root.glob("*/dog"))
    bad = folder.with_name("dog\x07")
    folder.rename(bad)
    with pytest.raises(DatasetFormatError, match="holds the control character") as caught:
        open_existing(root)
    assert caught.value.file == str(bad)


#: Breakages found by a parser's own error, which the one-line error keeps as its cause
#: (``--debug`` shows it).
CAUSES: dict[str, type[BaseException]] = {
    "coco json": json.JSONDecodeError,
    "yolo yaml": yaml.YAMLError,
    "voc xml": ET.ParseError,
    "voc labelmap bytes": UnicodeDecodeError,
    "manifest": json.JSONDecodeError,
    "hf parquet": Exception,
}


@pytest.mark.parametrize("name", list(CAUSES))
def test_a_parser_error_is_kept_as_the_cause(exports: Path, tmp_path: Path, name: str) -> None:
    fmt, breakage, _, _ = BREAKAGES[name]
    root = tmp_path / fmt
    shutil.copytree(exports / fmt, root)
    breakage(root)
    with pytest.raises(DatasetFormatError) as caught:
        open_existing(root)
    assert isinstance(caught.value.__cause__, CAUSES[name])
    result = CliRunner().invoke(main, ["plan", "more cats", "--existing", str(root)])
    assert result.exit_code == UsageError.exit_code
    assert result.output.count("\n") == 1  # one line without --debug
    debug = CliRunner().invoke(main, ["--debug", "plan", "more cats", "--existing", str(root)])
    assert isinstance(debug.exception, DatasetFormatError)
    assert debug.exception.__cause__ is not None


def test_a_malformed_dataset_stops_the_build_before_anything_is_written(
    exports: Path, tmp_path: Path
) -> None:
    root = tmp_path / "coco"
    shutil.copytree(exports / "coco", root)
    BREAKAGES["coco bbox"][1](root)
    spec = spec_for("detection").model_copy(update={"existing": str(root)})
    with pytest.raises(DatasetFormatError, match=re.escape("$.annotations[1].bbox")):
        build(spec, tmp_path / "run", labelers=["folder-name"])
    assert not (tmp_path / "run").exists()
    result = CliRunner().invoke(main, ["plan", "more cats", "--existing", str(root)])
    assert result.exit_code == UsageError.exit_code
    assert "$.annotations[1].bbox: expected [x, y, width, height]" in result.output
    assert "Traceback" not in result.output
