"""Run wiring: BuildOptions stored with the run, assemble(), and error causes under --debug."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pydantic import ValidationError
from rich.console import Console

from datasetagent import cli
from datasetagent.config import (
    OPTIONS_META,
    BuildOptions,
    assemble,
    run_options,
    stored_options,
)
from datasetagent.errors import NoLabelerError, UsageError
from datasetagent.models import (
    BACKENDS,
    BackendConfig,
    Detection,
    Prediction,
    Usage,
    Verdict,
    default_labelers,
    factory_flag,
    known_labelers,
    load_builtin_backends,
)
from datasetagent.models.seed import SeedClassifier
from datasetagent.pipeline import build
from datasetagent.spec import ClassSpec, DatasetSpec, SourceSpec
from datasetagent.store import RunStore
from helpers import digit_images, encode

EXE = [sys.executable, "-m", "datasetagent"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_debug_traceback_shows_the_cause_and_the_plain_error_stays_one_line(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: [a, b\n")
    plain = _cli("build", str(bad), "-o", str(tmp_path / "run"))
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == [
        f"error: {bad} line 2: not valid YAML (expected ',' or ']', but got '<stream end>')"
    ]
    debug = _cli("--debug", "build", str(bad), "-o", str(tmp_path / "run"))
    assert debug.returncode != 0
    # the YAML parser's own error, then ours raised from it
    assert "yaml.parser.ParserError" in debug.stderr
    assert "The above exception was the direct cause of the following exception" in debug.stderr
    assert debug.stderr.rstrip().endswith(
        "not valid YAML (expected ',' or ']', but got '<stream end>')"
    )


# -- scripted backends, registered like a plugin -----------------------------------------------


class Classifier:
    """classification: a scripted classifier that also verifies"""

    def __init__(self, config: BackendConfig) -> None:
        self.name = f"cls:{config.model or 'default'}"
        self.usage = Usage()
        self.config = config

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.class_names

    def predict(self, images: list[Image.Image]) -> list[Prediction]:
        return [Prediction(self.classes[0], 0.9, {self.classes[0]: 0.9}) for _ in images]

    def verify(self, images: list[Image.Image], labels: list[str]) -> list[Verdict]:
        return [Verdict(True, 0.9) for _ in images]


class Embedder:
    def __init__(self, config: BackendConfig) -> None:
        self.name = "emb"
        self.usage = Usage()

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        return np.ones((len(images), 4), np.float32) / 2


class Detector:
    def __init__(self, config: BackendConfig) -> None:
        self.name = "det"
        self.usage = Usage()

    def detect(self, images: list[Image.Image]) -> list[list[Detection]]:
        return [[] for _ in images]


class Segmenter:
    def __init__(self, config: BackendConfig) -> None:
        self.name = "seg"
        self.usage = Usage()

    def segment(
        self, images: list[Image.Image], boxes: list[list[tuple[float, float, float, float]]]
    ) -> list[list[np.ndarray]]:
        return [[np.zeros((2, 2), bool) for _ in b] for b in boxes]


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    load_builtin_backends()
    for name, factory in (
        ("cls", Classifier),
        ("emb", Embedder),
        ("det", Detector),
        ("seg", Segmenter),
    ):
        monkeypatch.setitem(BACKENDS._items, name, factory)


def _spec(task: str = "classification", existing: str | None = None) -> DatasetSpec:
    return DatasetSpec(
        task=task,  # type: ignore[arg-type]
        classes=(ClassSpec(name="red"), ClassSpec(name="blue")),
        existing=existing,
        formats=("imagefolder",) if task == "classification" else ("coco",),
    )


# -- BuildOptions in the run store ---------------------------------------------------------------

SECRET = "sk-0123456789abcdef"


def test_options_are_one_record_of_the_run_without_credentials(tmp_path: Path) -> None:
    url = f"http://user:{SECRET}@127.0.0.1:9/v1"
    given = BuildOptions(
        labelers=("folder-name", "llm:m"),
        verifiers=("llm:m",),
        backend_options={"llm": {"base_url": url, "timeout": 5, "json": True}},
        tool_llm="m",
        workers=2,
    )
    with RunStore(tmp_path / "run.db") as store:
        used = run_options(store, given)
        raw = store.get_meta(OPTIONS_META)
        assert store.get_meta("labelers") is None
        assert store.get_meta("tool_llm") is None
        back = stored_options(store)
    assert used == given  # this process uses the URL as given, credentials and all
    assert raw is not None
    assert SECRET not in raw
    assert back is not None
    assert back.backend_options == {
        "llm": {"base_url": "http://***@127.0.0.1:9/v1", "timeout": 5, "json": True}
    }
    assert back.model_copy(update={"backend_options": given.backend_options}) == given
    with pytest.raises(ValidationError, match="frozen"):
        given.workers = 3  # type: ignore[misc]
    with pytest.raises(UsageError, match="build option colour: Extra inputs"):
        BuildOptions.parse(colour="red")
    with pytest.raises(UsageError, match="build option workers: Input should be greater"):
        BuildOptions.parse(workers=0)


def test_resume_takes_the_stored_labelers_and_this_process_settings(tmp_path: Path) -> None:
    with RunStore(tmp_path / "run.db") as store:
        run_options(
            store,
            BuildOptions(labelers=("cls",), verifiers=("cls:v",), tool_llm="t", workers=2),
        )
        resumed = run_options(store, BuildOptions(workers=3, device="cpu"))
        assert resumed == BuildOptions(
            labelers=("cls",), verifiers=("cls:v",), tool_llm="t", workers=3, device="cpu"
        )
        # labelers given again replace the stored labeler set; the tool LLM stays
        replaced = run_options(store, BuildOptions(labelers=("seed",)))
        assert (replaced.labelers, replaced.verifiers, replaced.tool_llm) == (("seed",), None, "t")
        assert stored_options(store) == replaced


def test_a_resume_asks_again_for_a_base_url_that_held_credentials(tmp_path: Path) -> None:
    url = f"http://user:{SECRET}@127.0.0.1:9/v1"
    with RunStore(tmp_path / "run.db") as store:
        run_options(
            store, BuildOptions(labelers=("llm:m",), backend_options={"llm": {"base_url": url}})
        )
        with pytest.raises(UsageError, match=r"held credentials.*--llm-base-url URL"):
            run_options(store, BuildOptions())
        again = run_options(
            store, BuildOptions(labelers=("llm:m",), backend_options={"llm": {"base_url": url}})
        )
    assert again.backend_options == {"llm": {"base_url": url}}


def test_a_run_stored_before_the_options_record_resumes_with_its_labelers(tmp_path: Path) -> None:
    with RunStore(tmp_path / "run.db") as store:
        store.set_meta(
            "labelers",
            json.dumps(
                {"labelers": ["cls:a"], "verifiers": ["cls:b"], "options": {"cls": {"k": 4}}}
            ),
        )
        store.set_meta("tool_llm", "m")
        used = run_options(store, BuildOptions(workers=1))
        assert used == BuildOptions(
            labelers=("cls:a",),
            verifiers=("cls:b",),
            backend_options={"cls": {"k": 4}},
            tool_llm="m",
            workers=1,
        )
        assert stored_options(store) == used  # now one record
        assert json.loads(store.get_meta(OPTIONS_META) or "{}")["labelers"] == ["cls:a"]


# -- the registry --------------------------------------------------------------------------------


def test_seed_and_folder_name_are_registered_like_every_labeler(
    scripted: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {"folder-name", "seed", "clip", "llm"} <= set(BACKENDS.names())
    assert default_labelers() == ("folder-name", "seed")
    assert known_labelers()[:2] == ["folder-name", "seed"]
    assert factory_flag("seed", "offline")
    assert not factory_flag("seed", "takes_model")
    assert not factory_flag("cls", "offline")
    assert factory_flag("cls", "takes_model")
    buf = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=buf, width=200))
    result = CliRunner().invoke(cli.main, ["models", "list"], color=False)
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in buf.getvalue().splitlines() if line.strip()}
    assert "the class folder an image came from" in rows["folder-name"]
    assert "learned from --existing examples" in rows["seed"]
    # a plugin's row comes from the same registry: its docstring's first line
    assert "a scripted classifier that also verifies" in rows["cls"]
    assert list(rows).index("folder-name") < list(rows).index("clip")


def test_labeler_names_are_checked_against_the_builtins_in_a_fresh_process() -> None:
    code = (
        "from datasetagent.config import check_labelers\n"
        "check_labelers(['clip', 'llm:m', 'seed', 'folder-name'])\n"
        "try:\n"
        "    check_labelers(['seed:x'])\n"
        "except Exception as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "labeler 'seed' takes no model (got 'seed:x')"


# -- assemble ------------------------------------------------------------------------------------


def test_assemble_classification_roles_with_the_seed_learner_on_the_embedder(
    scripted: None,
) -> None:
    spec = _spec(existing="seed-set")
    got = assemble(
        spec, BuildOptions(labelers=("folder-name", "seed", "cls:a", "emb"), verifiers=("cls:a",))
    )
    names = [b.name for b in got.labelers]
    assert names == ["folder-name", "seed[emb]", "cls:a", "emb"]
    assert isinstance(got.learner, SeedClassifier)
    assert got.learner.embedder is got.labelers[3]  # built first, handed over as a peer
    assert got.embedder is got.labelers[3]
    assert [c.name for c in got.roles.classifiers] == ["cls:a"]
    assert got.roles.detectors == ()
    assert got.roles.segmenter is None
    assert got.checkers == (got.labelers[2],)  # one object for both roles
    assert sorted(got.metered) == ["cls:a", "emb"]  # the offline labelers make no model call
    assert got.tool_policy is None


def test_assemble_leaves_out_the_offline_labelers_that_do_not_apply(scripted: None) -> None:
    plain = assemble(_spec(), BuildOptions())
    assert [b.name for b in plain.labelers] == ["folder-name"]  # seed needs --existing
    assert plain.learner is None
    assert plain.roles.classifiers == ()
    detection = assemble(_spec("detection", existing="seed-set"), BuildOptions(labelers=("det",)))
    assert [d.name for d in detection.roles.detectors] == ["det"]
    assert detection.learner is None


def test_assemble_detection_and_segmentation_roles(scripted: None) -> None:
    seg = assemble(
        _spec("segmentation"), BuildOptions(labelers=("folder-name", "seed", "det", "seg"))
    )
    assert [d.name for d in seg.roles.detectors] == ["det"]
    assert seg.roles.segmenter is not None
    assert seg.roles.segmenter.name == "seg"
    with pytest.raises(NoLabelerError, match="segmentation needs a box segmenter"):
        assemble(_spec("segmentation"), BuildOptions(labelers=("det",)))
    with pytest.raises(NoLabelerError, match="detection needs a detector"):
        assemble(_spec("detection"), BuildOptions(labelers=("cls",)))
    with pytest.raises(UsageError, match="labeler cls:default cannot help label detection"):
        assemble(_spec("detection"), BuildOptions(labelers=("det", "cls")))
    with pytest.raises(UsageError, match="emb cannot verify labels"):
        assemble(_spec(), BuildOptions(labelers=("cls",), verifiers=("emb",)))


def test_unhinted_images_without_a_classifier_are_refused_after_collecting(
    scripted: None, tmp_path: Path
) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    for k, (img, _) in enumerate(digit_images(2, classes=(0, 1))):
        (pool / f"x{k}.png").write_bytes(encode(img))
    spec = _spec().model_copy(update={"sources": (SourceSpec(kind="local", location=str(pool)),)})
    with pytest.raises(NoLabelerError, match="no labeler can label 4 collected image"):
        build(spec, tmp_path / "run")
    result = build(spec, tmp_path / "run2", labelers=["cls"])
    assert result.labelers == {"cls:default": len(result.exported)}
