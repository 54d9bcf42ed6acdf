"""Format descriptors (``datasetagent.formats``): each registered format keeps its promises (its
writer's output is told by its own layout test and read back by its reader, for every task it
claims), unknown names fail in one line, and a format added as a plugin is seen by the spec
check, Demand Analysis, the exporters and the importer without touching any other table."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from datasetagent import formats
from datasetagent.agents.demand import parse_request
from datasetagent.agents.demand_llm import FormatName
from datasetagent.errors import ConfigError, ExportError, SourceError, UsageError
from datasetagent.export import export_samples, exporter_for, known_formats
from datasetagent.export.prepare import ExportStats, prepare
from datasetagent.records import Sample
from datasetagent.sources.formats import detect_format, read_dataset
from datasetagent.spec import ClassSpec, DatasetSpec, TaskKind
from export_data import CLASSES, blob_path, make_samples, spec_for

TASKS: tuple[TaskKind, ...] = ("classification", "detection", "segmentation")
CLAIMS = [(d.name, task) for d in formats.descriptors() for task in TASKS if task in d.tasks]


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[TaskKind, list[Sample]]:
    root = tmp_path_factory.mktemp("images")
    return {task: make_samples(root / task, task, n=6) for task in TASKS}


def labels(items: list[Sample]) -> Counter[tuple[str, str]]:
    """(annotation kind, class) of every annotation an export holds of ``items``."""
    held = [prepare(s, ExportStats(), frozenset(CLASSES))[0] for s in items]
    return Counter((type(a).__name__, a.label) for s in held for a in s.annotations)


def test_every_format_claims_a_task_and_every_task_has_one_default() -> None:
    assert len(CLAIMS) >= len(formats.descriptors())
    for task in TASKS:
        (default,) = formats.default_formats(task)
        assert task in formats.descriptor(default).tasks


@pytest.mark.parametrize(("fmt", "task"), CLAIMS)
def test_a_writers_output_is_detected_and_read_back_by_its_own_descriptor(
    samples: dict[TaskKind, list[Sample]], tmp_path: Path, fmt: str, task: TaskKind
) -> None:
    d = formats.descriptor(fmt)
    out = export_samples(fmt, tmp_path / fmt, spec_for(task, fmt), samples[task], blob_path, None)
    reads_as = d.read_as or fmt
    reader = formats.descriptor(reads_as)
    assert reader.detect is not None
    assert reader.detect(out)
    assert detect_format(out) == reads_as
    imported = read_dataset(out)
    assert (imported.format, imported.task) == (reads_as, task)
    assert sorted(imported.classes) == sorted(CLASSES)
    assert len(imported.images) == len(samples[task])
    got = Counter((type(a).__name__, a.label) for i in imported.images for a in i.annotations)
    assert got == labels(samples[task])


def test_an_unknown_format_is_one_line_naming_the_closest_and_the_known(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        exporter_for("cocoo", tmp_path, spec_for("detection"))
    message = str(caught.value)
    assert "\n" not in message
    assert "unknown export format 'cocoo': did you mean 'coco'?" in message
    assert message.endswith(f"known: {', '.join(known_formats())}")
    with pytest.raises(ConfigError, match="did you mean 'yolo'"):
        read_dataset(tmp_path, "yollo")


def test_a_format_that_cannot_hold_the_task_names_those_that_can() -> None:
    with pytest.raises(ValidationError, match=r"the voc format cannot hold classification labels"):
        DatasetSpec(task="classification", classes=(ClassSpec(name="a"),), formats=("voc",))
    with pytest.raises(ValidationError) as caught:  # the list comes from the descriptors
        DatasetSpec(task="detection", classes=(ClassSpec(name="a"),), formats=("csv",))
    assert f"use {', '.join(formats.formats_for('detection'))}" in str(caught.value)


def test_the_llm_plan_schema_offers_every_format_a_request_can_name() -> None:
    assert set(get_args(FormatName)) == {d.name for d in formats.descriptors() if d.words}


def test_checking_a_spec_loads_no_writer_reader_or_heavy_library() -> None:
    code = (
        "import sys\n"
        "from datasetagent.spec import DatasetSpec\n"
        "DatasetSpec(task='detection', classes=[{'name': 'a'}], formats=['hf', 'coco', 'yolo'])\n"
        "loaded = [m for m in sys.modules if m.startswith(('datasetagent.export', "
        "'datasetagent.sources', 'pyarrow', 'cv2'))]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# -- a plugin format ---------------------------------------------------------------------------
PLUGIN = '''
"""A third-party format: one folder of images and ``tiny.tsv`` (file, label, split)."""
from pathlib import Path

from datasetagent.export import copy_image
from datasetagent.formats import FormatDescriptor
from datasetagent.records import ClassLabel
from datasetagent.sources.formats import Imported, ImportedImage


class TinyExporter:
    format = "tiny"

    def __init__(self, out, spec):
        self.out, self.rows = out, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        (self.out / "tiny.tsv").write_text("".join(self.rows), encoding="utf-8")

    def write(self, sample, image):
        rel = copy_image(self.out, Path("pics"), sample, image)
        self.rows.append(f"{rel.as_posix()}\\t{sample.annotations[0].label}\\t{sample.split}\\n")
        return rel.as_posix()


def read_tiny(root, *, outside_root=False):
    rows = [line.split("\\t") for line in (root / "tiny.tsv").read_text().splitlines()]
    images = [
        ImportedImage(str(root / f), s, (ClassLabel(label=c, labeler="existing"),))
        for f, c, s in rows
    ]
    return Imported("tiny", "classification", tuple(sorted({c for _, c, _ in rows})), images)


DESCRIPTOR = FormatDescriptor(
    name="tiny",
    tasks=frozenset({"classification"}),
    writer=TinyExporter,
    reader=read_tiny,
    detect=lambda root: (root / "tiny.tsv").is_file(),
    precedence=100,
    words=("tiny[\\\\s-]*tsv",),
)
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``tiny`` format, installed as a package that names it in the ``datasetagent.formats``
    entry-point group (the registry is fresh, so the plugin is looked up anew)."""
    site = tmp_path / "site"
    (site / "tinyfmt-0.1.dist-info").mkdir(parents=True)
    (site / "tinyfmt.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    meta = site / "tinyfmt-0.1.dist-info"
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyfmt\nVersion: 0.1\n")
    (meta / "entry_points.txt").write_text("[datasetagent.formats]\ntiny = tinyfmt:DESCRIPTOR\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(formats, "FORMATS", formats.builtin_registry())


@pytest.mark.usefixtures("plugin")
def test_a_plugin_format_is_seen_everywhere_without_other_tables(
    samples: dict[TaskKind, list[Sample]], tmp_path: Path
) -> None:
    assert "tiny" in known_formats()
    assert formats.formats_for("classification")[-1] == "tiny"
    with pytest.raises(ValidationError, match="the tiny format cannot hold detection labels"):
        DatasetSpec(task="detection", classes=(ClassSpec(name="a"),), formats=("tiny",))
    with pytest.raises(ValidationError, match=r"use imagefolder, csv, hf, tiny"):
        DatasetSpec(task="classification", classes=(ClassSpec(name="a"),), formats=("coco",))
    assert parse_request("classify cats and dogs, export as tiny tsv").formats == ("tiny",)

    items = samples["classification"]
    spec = spec_for("classification")
    out = export_samples("tiny", tmp_path / "tiny", spec, items, blob_path, None)
    assert (out / "tiny.tsv").is_file()
    assert detect_format(out) == "tiny"
    imported = read_dataset(out)
    assert imported.format == "tiny"
    assert Counter(i.label for i in imported.images) == Counter(
        s.annotations[0].label for s in items
    )


def test_a_format_without_its_extra_says_which_to_install(
    samples: dict[TaskKind, list[Sample]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf = formats.descriptor("hf")
    spec, items = spec_for("detection"), samples["detection"][:2]
    out = export_samples("hf", tmp_path / "hf", spec, items, blob_path, None)
    for module in ("pyarrow", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, module, None)
    install = f"pip install 'datasetagent[{hf.extra}]'"
    with pytest.raises(ExportError, match=re.escape(f"the hf format needs pyarrow: {install}")):
        export_samples("hf", tmp_path / "again", spec, items, blob_path, None)
    with pytest.raises(SourceError, match=re.escape(install)):
        read_dataset(out)


def test_a_folder_in_no_format_names_the_formats_tried(tmp_path: Path) -> None:
    tried = [d.name for d in formats.descriptors() if d.detect]
    with pytest.raises(UsageError, match="not a dataset in any format") as caught:
        detect_format(tmp_path / "missing")
    assert sorted(str(caught.value).split("(")[1].split(")")[0].split(", ")) == sorted(tried)
