"""The pipeline with model backends: scripted backends registered like a plugin stand in for
models, to test the wiring around them (building, roles, resume, usage, CLI options)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasetagent.cli import _labeler_settings
from datasetagent.errors import NoLabelerError, UsageError
from datasetagent.models import (
    BACKENDS,
    NONE_LABEL,
    BackendConfig,
    Detection,
    Prediction,
    Usage,
    class_queries,
    parse_labeler,
)
from datasetagent.pipeline import build
from datasetagent.spec import ClassSpec, DatasetSpec, ImageConstraints, SourceSpec
from datasetagent.store import RunStore
from helpers import digit_images, encode

CLASSES = ("0", "1", "2")


def _key(img: Image.Image) -> str:
    return hashlib.sha1(img.convert("L").tobytes()).hexdigest()


class ScriptedClassifier:
    """Knows the true class of each test image by its pixels; wrong on every ``wrong_every``-th
    call when asked to be."""

    def __init__(self, config: BackendConfig, truth: dict[str, str], wrong_every: int = 0):
        self.name = f"scripted:{config.model or 'default'}"
        self.usage = Usage()
        self.config = config
        self.truth = truth
        self.wrong_every = wrong_every

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.class_names

    def predict(self, images: list[Image.Image]) -> list[Prediction]:
        self.usage.calls += 1
        out = []
        for img in images:
            self.usage.images += 1
            label = self.truth.get(_key(img), NONE_LABEL)
            if self.wrong_every and self.usage.images % self.wrong_every == 0:
                label = next(c for c in self.classes if c != label)
            out.append(Prediction(label, 0.99, {label: 0.99}))
        return out


def _write_pool(pool: Path, per_class: int) -> dict[str, str]:
    """A flat folder of digits of CLASSES; the truth by image key."""
    pool.mkdir()
    truth: dict[str, str] = {}
    for k, (img, label) in enumerate(digit_images(per_class, classes=tuple(map(int, CLASSES)))):
        (pool / f"x{k:03d}.png").write_bytes(encode(img))
        truth[_key(img)] = label
    return truth


@pytest.fixture
def flat_pool(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    return tmp_path / "pool", _write_pool(tmp_path / "pool", 12)


@pytest.fixture
def scripted(
    monkeypatch: pytest.MonkeyPatch, flat_pool: tuple[Path, dict[str, str]]
) -> list[ScriptedClassifier]:
    built: list[ScriptedClassifier] = []

    def factory(config: BackendConfig) -> ScriptedClassifier:
        wrong = int(config.options.get("wrong_every", 0)) if config.model == "b" else 0
        built.append(ScriptedClassifier(config, flat_pool[1], wrong))
        return built[-1]

    monkeypatch.setitem(BACKENDS._items, "scripted", factory)
    return built


def _spec(pool: Path, target: int = 10) -> DatasetSpec:
    return DatasetSpec(
        classes=tuple(ClassSpec(name=c, synonyms=(f"digit {c}",)) for c in CLASSES),
        target_per_class=target,
        image=ImageConstraints(min_side=16, color_mode="L", enhance="off"),
        sources=(SourceSpec(location=str(pool)),),
    )


def test_named_backend_labels_a_flat_pool(
    tmp_path: Path, flat_pool: tuple[Path, dict[str, str]], scripted: list[ScriptedClassifier]
) -> None:
    pool, truth = flat_pool
    result = build(_spec(pool), tmp_path / "run", labelers=["scripted:tiny"])
    [backend] = scripted
    assert backend.config.model == "tiny"
    assert backend.config.classes[0].phrases == ("0", "digit 0")
    assert len(result.exported) == 30
    assert result.labelers == {"scripted:tiny": 30}
    for s in result.exported:
        with Image.open(tmp_path / "run" / s.blob) as img:
            assert truth[_key(img)] == s.label
    with RunStore(tmp_path / "run" / "run.db") as store:
        processed = len(store.samples())
    assert result.usage["scripted:tiny"]["images"] == processed  # each labelled once
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["usage"]["scripted:tiny"]["calls"] >= 1


def test_disagreeing_backends_send_to_review_and_record_agreement(
    tmp_path: Path, flat_pool: tuple[Path, dict[str, str]], scripted: list[ScriptedClassifier]
) -> None:
    pool, _ = flat_pool
    build(
        _spec(pool, target=12),
        tmp_path / "run",
        labelers=["scripted:a", "scripted:b"],
        backend_options={"scripted": {"wrong_every": 4}},
    )
    with RunStore(tmp_path / "run" / "run.db") as store:
        review = store.samples(status=["review"])
        labelled = store.samples(status=["labelled"])
    # b errs on every 4th image it sees; a is right: those go to review, never to a class
    assert len(review) == (len(review) + len(labelled)) // 4
    assert all(s.scores["agreement"] == 0.5 and not s.annotations for s in review)
    assert all("labelers disagree: scripted:a says" in s.review_reasons[0] for s in review)
    assert all(s.scores["agreement"] == 1.0 for s in labelled)
    assert {a.labeler for s in labelled for a in s.annotations} == {"scripted:a+scripted:b"}


def test_resume_uses_the_labelers_the_run_started_with(
    tmp_path: Path, flat_pool: tuple[Path, dict[str, str]], scripted: list[ScriptedClassifier]
) -> None:
    pool, _ = flat_pool
    build(_spec(pool), tmp_path / "run", labelers=["scripted:first"])
    again = build(None, tmp_path / "run", resume=True)
    assert scripted[-1].name == "scripted:first"
    with RunStore(tmp_path / "run" / "run.db") as store:
        processed = len(store.samples())
    assert again.usage["scripted:first"]["images"] == processed  # nothing labelled twice


def test_detection_without_a_detector_stops_before_work(
    tmp_path: Path, flat_pool: tuple[Path, dict[str, str]], scripted: list[ScriptedClassifier]
) -> None:
    spec = _spec(flat_pool[0]).model_copy(update={"task": "detection", "formats": ("coco",)})
    with pytest.raises((NoLabelerError, UsageError), match="needs a detector"):
        build(spec, tmp_path / "run", labelers=["scripted"])


def test_unknown_labeler_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    with pytest.raises(UsageError, match=r"unknown labeler 'clipp'.*known: folder-name, seed"):
        build(spec, tmp_path / "run", labelers=["clipp"])
    with pytest.raises(UsageError, match="takes no model"):
        build(spec, tmp_path / "run", labelers=["seed:x"])


def test_labeler_strings_and_cli_settings() -> None:
    assert parse_labeler("llm:ollama:qwen2.5vl:7b") == ("llm", "ollama:qwen2.5vl:7b")
    assert parse_labeler("clip") == ("clip", None)
    assert parse_labeler("owlv2:/models/owl") == ("owlv2", "/models/owl")
    names, options = _labeler_settings(
        (), "qwen", "http://127.0.0.1:8000/v1", ("owlv2.score_threshold=0.2", "llm.json=true")
    )
    assert names == ["folder-name", "seed", "llm:qwen"]
    assert options == {
        "llm": {"base_url": "http://127.0.0.1:8000/v1", "json": True},
        "owlv2": {"score_threshold": 0.2},
    }
    assert _labeler_settings((), None, None, ()) == (None, None)
    with pytest.raises(UsageError, match="needs --llm"):
        _labeler_settings((), None, "http://x", ())
    with pytest.raises(UsageError, match=r"NAME\.KEY=VALUE"):
        _labeler_settings((), None, None, ("threshold=0.2",))


def test_class_queries_join_prompt_name_and_synonyms() -> None:
    spec = DatasetSpec(
        classes=(
            ClassSpec(name="traffic_light", prompt="a traffic light", synonyms=("signal",)),
            ClassSpec(name="car", synonyms=("car", "automobile")),
        )
    )
    assert [q.phrases for q in class_queries(spec)] == [
        ("a traffic light", "traffic light", "signal"),
        ("car", "automobile"),
    ]


def _squares(root: Path, n: int, seed: int = 0) -> dict[str, list[tuple[str, int, int, int, int]]]:
    """Textured 96×96 photos-like images with a red and/or a blue square; returns the true
    (colour, x, y, w, h) per file name."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    truth: dict[str, list[tuple[str, int, int, int, int]]] = {}
    for k in range(n):
        arr = rng.integers(60, 160, size=(96, 96, 3), dtype=np.uint8)
        arr = np.asarray(Image.fromarray(arr).resize((24, 24)).resize((96, 96)))
        arr = arr.copy()
        boxes = []
        for colour, c in (("red", 0), ("blue", 2)):
            if k % 3 == 2 and colour == "blue":
                continue
            w, h = (int(v) for v in rng.integers(12, 30, size=2))
            x = int(rng.integers(0, 96 - w))
            y = 2 if colour == "red" else 60
            y = min(y, 96 - h)
            arr[y : y + h, x : x + w] = 0
            arr[y : y + h, x : x + w, c] = 255
            boxes.append((colour, x, y, w, h))
        name = f"s{k:03d}.png"
        (root / name).write_bytes(encode(Image.fromarray(arr)))
        truth[name] = boxes
    return truth


class ColourDetector:
    """Finds saturated red and blue squares by thresholding: a stand-in for a model."""

    def __init__(self, config: BackendConfig) -> None:
        self.name = "colour-squares"
        self.usage = Usage()
        self.classes = config.class_names

    def detect(self, images: list[Image.Image]) -> list[list[Detection]]:
        from scipy import ndimage

        self.usage.calls += 1
        out = []
        for img in images:
            arr = np.asarray(img.convert("RGB")).astype(int)
            found = []
            for colour, c in (("red", 0), ("blue", 2)):
                others = [i for i in range(3) if i != c]
                hit = (arr[..., c] > 200) & (arr[..., others].max(axis=-1) < 40)
                for sl in ndimage.find_objects(ndimage.label(hit)[0]):
                    ys, xs = sl
                    box = (float(xs.start), float(ys.start), float(xs.stop), float(ys.stop))
                    found.append(Detection(colour, 0.95, box))
            out.append(found)
        return out


def test_detection_build_exports_coco_that_pycocotools_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pycocotools.coco import COCO

    truth = _squares(tmp_path / "pool", 24)
    monkeypatch.setitem(BACKENDS._items, "colour-squares", ColourDetector)
    spec = DatasetSpec(
        task="detection",
        classes=(ClassSpec(name="red"), ClassSpec(name="blue")),
        target_per_class=8,
        image=ImageConstraints(enhance="off"),
        sources=(SourceSpec(location=str(tmp_path / "pool")),),
        formats=("coco",),
    )
    result = build(spec, tmp_path / "run", labelers=["colour-squares"])
    assert result.exported
    export = result.exports["coco"]
    seen = 0
    for split in ("train", "val", "test"):
        path = export / "annotations" / f"instances_{split}.json"
        if not path.exists():
            continue
        coco = COCO(str(path))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["red", "blue"]
        for img in coco.loadImgs(coco.getImgIds()):
            assert (export / "images" / split / img["file_name"]).exists()
            name = Path(img["source"]).name
            got = sorted(
                (coco.cats[a["category_id"]]["name"], *(round(v) for v in a["bbox"]))
                for a in coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            )
            assert got == sorted(truth[name]), name
            assert coco.dataset["licenses"][img["license"] - 1]["name"] == "user-supplied"
            seen += 1
    assert seen == len(result.exported)
    assert not list(export.glob(".coco-parts"))


class ColourSegmenter:
    """Masks the saturated pixels inside each box: a stand-in for a box-prompted model."""

    def __init__(self, config: BackendConfig) -> None:
        self.name = "colour-masks"
        self.usage = Usage()

    def segment(
        self, images: list[Image.Image], boxes: list[list[tuple[float, float, float, float]]]
    ) -> list[list[np.ndarray]]:
        out = []
        for img, per_image in zip(images, boxes, strict=True):
            arr = np.asarray(img.convert("RGB")).astype(int)
            hot = arr.max(axis=-1) > 200
            masks = []
            for x0, y0, x1, y1 in per_image:
                m = np.zeros(hot.shape, dtype=bool)
                ys, xs = slice(int(y0), int(y1)), slice(int(x0), int(x1))
                m[ys, xs] = hot[ys, xs]
                masks.append(m)
            out.append(masks)
        return out


def _squares_spec(pool: Path, task: str) -> DatasetSpec:
    return DatasetSpec(
        task=task,  # type: ignore[arg-type]
        classes=(ClassSpec(name="red"), ClassSpec(name="blue")),
        target_per_class=8,
        image=ImageConstraints(enhance="off"),
        sources=(SourceSpec(location=str(pool)),),
        formats=("coco",),
    )


def test_segmentation_build_stores_masks_that_pycocotools_decodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pycocotools.coco import COCO

    truth = _squares(tmp_path / "pool", 12)
    monkeypatch.setitem(BACKENDS._items, "colour-squares", ColourDetector)
    monkeypatch.setitem(BACKENDS._items, "colour-masks", ColourSegmenter)
    spec = _squares_spec(tmp_path / "pool", "segmentation")
    with pytest.raises(NoLabelerError, match="box segmenter"):
        build(spec, tmp_path / "nosam", labelers=["colour-squares"])
    result = build(spec, tmp_path / "run", labelers=["colour-squares", "colour-masks"])
    export = result.exports["coco"]
    checked = 0
    for path in (export / "annotations").glob("instances_*.json"):
        coco = COCO(str(path))
        split = path.stem.removeprefix("instances_")
        for ann in coco.loadAnns(coco.getAnnIds()):
            img = coco.imgs[ann["image_id"]]
            assert ann["labeler"] == "colour-squares+colour-masks"
            with Image.open(export / "images" / split / img["file_name"]) as im:
                hot = np.asarray(im.convert("RGB")).max(axis=-1) > 200
            mask = coco.annToMask(ann).astype(bool)
            assert mask.sum() == ann["area"] > 0
            assert not (mask & ~hot).any()  # every mask pixel is a square's pixel
            _colour, x, y, w, h = next(
                t
                for t in truth[Path(img["source"]).name]
                if t[0] == coco.cats[ann["category_id"]]["name"]
            )
            assert ann["bbox"] == [x, y, w, h]
            checked += 1
    assert checked == sum(len(s.annotations) for s in result.exported) > 0


def test_real_backends_through_the_pipeline(tmp_path: Path) -> None:
    """Tiny random OWLv2 and SAM saved to folders, named on the command line like a user's
    weights: the run loads them, and provenance, usage and the COCO export name them."""
    from pycocotools.coco import COCO

    from tiny_models import build_owlv2, build_sam

    owl = build_owlv2(tmp_path / "owl")
    sam = build_sam(tmp_path / "sam")
    _squares(tmp_path / "pool", 6)
    spec = _squares_spec(tmp_path / "pool", "segmentation").model_copy(
        update={"target_per_class": 2}
    )
    result = build(
        spec,
        tmp_path / "run",
        labelers=[f"owlv2:{owl}", f"sam:{sam}"],
        backend_options={"owlv2": {"score_threshold": 0.0, "max_per_class": 1}},
        device="cpu",
    )
    owl_name, sam_name = f"owlv2:{owl}", f"sam:{sam}"
    assert result.usage[owl_name]["images"] == 6
    assert result.usage[sam_name]["calls"] >= 1
    with RunStore(tmp_path / "run" / "run.db") as store:
        labelled = store.samples(status=["labelled", "review"])
    anns = [a for s in labelled for a in s.annotations]
    assert anns
    assert {a.labeler for a in anns} == {f"{owl_name}+{sam_name}"}
    for path in (result.exports["coco"] / "annotations").glob("instances_*.json"):
        COCO(str(path))


def test_an_llm_tool_policy_runs_in_the_workers_and_can_refuse_images(
    tmp_path: Path, flat_pool: tuple[Path, dict[str, str]], scripted: list[ScriptedClassifier]
) -> None:
    """The policy is built in the parent, pickled to the worker processes, and asks the
    endpoint once per image: every third answer refuses the image, the others choose a mild
    gamma that the SSIM guard keeps."""
    from llm_stub import Reply, StubServer

    pool, _ = flat_pool
    answers = iter(range(10_000))

    def policy(request: dict[str, object]) -> Reply:
        if next(answers) % 3 == 0:
            return Reply.json({"usable": False, "reason": "a blurry scan", "tools": []})
        return Reply.json(
            {"usable": True, "reason": "", "tools": [{"tool": "gamma", "gamma": 0.95}]}
        )

    spec = _spec(pool).model_copy(
        update={"image": ImageConstraints(min_side=16, color_mode="L", enhance="auto")}
    )
    with StubServer(policy) as stub:
        result = build(
            spec,
            tmp_path / "run",
            labelers=["scripted"],
            backend_options={"llm": {"base_url": stub.base_url, "backoff": 0.001}},
            tool_llm="policy-vl",
            workers=2,
        )
        asked = len(stub.requests)
    with RunStore(tmp_path / "run" / "run.db") as store:
        refused = [r for r in store.rejections() if "unusable" in r.reasons]
        samples = store.samples()
    assert asked == 36
    assert len(refused) == 12
    assert all("a blurry scan" in r.detail for r in refused)
    assert result.usage["tool-policy:policy-vl"]["calls"] == 36
    assert len(samples) == asked - len(refused) == 24
    steps = [s.provenance.steps for s in samples]
    assert all(st[0].name == "tool_policy" and st[0].params["by"] == "llm" for st in steps)
    assert all(any(p.name == "gamma" for p in st) for st in steps)


class ScriptedEmbedder:
    """Embeds each test image near the corner of the class ``truth`` gives it (a stand-in for
    CLIP's image tower)."""

    def __init__(self, config: BackendConfig, truth: dict[str, str]) -> None:
        self.name = "embedder"
        self.usage = Usage()
        self.truth = truth
        self.classes = config.class_names

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        self.usage.images += len(images)
        rng = np.random.default_rng(len(images))
        out = rng.normal(0, 0.3, size=(len(images), 8))
        for i, img in enumerate(images):
            out[i, self.classes.index(self.truth[_key(img)])] += 1.0
        norms: np.ndarray = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / norms).astype(np.float32)


def test_seed_labeler_learns_on_a_backends_embeddings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    classes = (0, 1, 2)
    seeds = digit_images(12, classes=classes)
    from helpers import write_class_folders

    write_class_folders(tmp_path / "seed", seeds)
    pool = tmp_path / "pool"
    pool.mkdir()
    truth = {_key(img): label for img, label in seeds}
    for k, (img, label) in enumerate(digit_images(15, classes=classes, offset=12)):
        (pool / f"x{k:03d}.png").write_bytes(encode(img))
        # the embedding puts each pool digit with the next class: labels that follow it
        # come from the embeddings, not from the pixels
        truth[_key(img)] = str((int(label) + 1) % len(classes))
    built: list[ScriptedEmbedder] = []

    def factory(config: BackendConfig) -> ScriptedEmbedder:
        built.append(ScriptedEmbedder(config, truth))
        return built[-1]

    monkeypatch.setitem(BACKENDS._items, "embedder", factory)
    spec = DatasetSpec(
        classes=tuple(ClassSpec(name=str(c)) for c in classes),
        target_per_class=20,
        image=ImageConstraints(min_side=16, color_mode="L", size=(32, 32), enhance="off"),
        existing=str(tmp_path / "seed"),
        sources=(SourceSpec(location=str(pool)),),
    )
    result = build(spec, tmp_path / "run", labelers=["seed", "embedder"])
    with RunStore(tmp_path / "run" / "run.db") as store:
        labelled = [s for s in store.samples(origin="collected") if s.annotations]
    # the seeds and every labelled pool image went through the embedder, once each
    assert built[0].usage.images == 36 + len(labelled)
    new = [s for s in result.exported if s.origin == "collected"]
    assert len(new) == 24  # 8 more of each class reach the target of 20
    assert {a.labeler for s in new for a in s.annotations} == {"seed[embedder]"}
    for s in new:
        with Image.open(tmp_path / "run" / s.blob) as img:
            assert truth[_key(img)] == s.label


def test_a_segmentation_dataset_expanded_for_detection_gives_boxes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A COCO export with masks, expanded with a detection request: its masks become boxes,
    so a user's instances file serves a detector without converting it first."""
    from datasetagent.agents.demand import parse_request
    from datasetagent.records import Box
    from datasetagent.sources.existing import open_existing
    from datasetagent.tools.masks import rle_bbox

    _squares(tmp_path / "pool", 9)
    monkeypatch.setitem(BACKENDS._items, "colour-squares", ColourDetector)
    monkeypatch.setitem(BACKENDS._items, "colour-masks", ColourSegmenter)
    first = build(
        _squares_spec(tmp_path / "pool", "segmentation"),
        tmp_path / "run",
        labelers=["colour-squares", "colour-masks"],
    )
    masks = {
        Path(s.provenance.location).name: sorted((a.label, *rle_bbox(a.rle)) for a in s.annotations)
        for s in first.exported
    }
    _squares(tmp_path / "more", 9, seed=1)
    existing = open_existing(first.exports["coco"])
    assert existing.task == "segmentation"
    spec = parse_request(
        "detect them, 12 per class in coco",
        existing=existing.profile(),
        sources=[SourceSpec(location=str(tmp_path / "more"))],
    )
    assert spec.task == "detection"
    grown = build(spec, tmp_path / "grown", labelers=["colour-squares"])
    old = [s for s in grown.exported if s.origin == "existing"]
    assert len(old) == len(first.exported)
    # the export's manifest names where each image first came from, and from what kind
    assert {s.provenance.source_kind for s in old} == {"local"}
    assert {Path(s.provenance.location).parent for s in old} == {tmp_path / "pool"}
    for s in old:
        assert all(isinstance(a, Box) for a in s.annotations)
        boxes = sorted((a.label, a.x, a.y, a.w, a.h) for a in s.annotations)
        assert boxes == masks[Path(s.provenance.location).name]


class Crash(Exception):
    pass


def test_a_crash_mid_labelling_keeps_the_model_calls_its_stored_labels_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Usage is saved with each stored batch: a run killed in the middle of labelling and
    resumed counts every call once, so a model-call budget holds across crashes."""
    pool = tmp_path / "pool"
    truth = _write_pool(pool, 50)
    crash_at = {"calls": 3}

    class Crashing(ScriptedClassifier):
        def predict(self, images: list[Image.Image]) -> list[Prediction]:
            if self.usage.calls + 1 == crash_at["calls"]:
                raise Crash
            return super().predict(images)

    monkeypatch.setitem(BACKENDS._items, "scripted", lambda c: Crashing(c, truth))
    spec = _spec(pool, target=50)
    with pytest.raises(Crash):
        build(spec, tmp_path / "run", labelers=["scripted"])
    with RunStore(tmp_path / "run" / "run.db") as store:
        stored = json.loads(store.get_meta("usage") or "{}")
        labelled = len(store.samples(status=["labelled"]))
    assert stored["scripted:default"]["calls"] == 2  # the two batches stored before the crash
    assert stored["scripted:default"]["images"] == labelled > 0
    crash_at["calls"] = -1
    result = build(None, tmp_path / "run", resume=True)
    total = result.usage["scripted:default"]
    assert total["images"] == 150  # every image labelled once, over both processes
