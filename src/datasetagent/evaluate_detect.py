"""``datasetagent evaluate`` of a detection (or segmentation) run: COCO box mAP.

The test folder is a detection dataset in any layout the importers read (COCO, YOLO, VOC,
Hugging Face Parquet); its boxes of the run's classes (masks as their boxes) are the ground
truth, an image pixel for pixel a training image is left out (``overlap``). Each trained
model's detections are scored with pycocotools' ``COCOeval`` (``iouType="bbox"``): ``map`` is
AP at IoU .50:.95, ``map50`` AP at IoU .50, ``per_class`` each class's AP (null for a class the
test set has no object of; 0 for one it has and the model never found).

The model is either

* the **box-prior baseline** (default; CPU, seconds): per class, up to ``PROTOTYPES`` typical
  boxes (k-means of the training boxes' normalised centre and size, each weighted by the share
  of boxes it stands for), scored on a test image by the probability that the image holds the
  class at all — a logistic regression per class on the image's features (the seed labeler's
  hand-made features, or ``--embedder``'s embeddings). It knows where objects of a class
  usually are and how large, and whether an image shows the class; it cannot find an object
  elsewhere. A floor, not a detector to ship; or
* the user's own detector (``DetectorCommand``): a program run once per training set.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from datasetagent.errors import BackendError, UsageError
from datasetagent.evaluate_result import Evaluation, Scores, TestSet
from datasetagent.records import Box, Mask, Sample
from datasetagent.sources.existing import open_existing
from datasetagent.spec import DatasetSpec
from datasetagent.store import BlobStore
from datasetagent.tools.hashing import pixel_hash

if TYPE_CHECKING:
    from datasetagent.evaluate import Features

#: Typical boxes per class of the baseline.
PROTOTYPES = 5
#: Environment variables the detector command gets, by placeholder.
ENV = {
    "train": "DATASETAGENT_TRAIN",
    "images": "DATASETAGENT_IMAGES",
    "predictions": "DATASETAGENT_PREDICTIONS",
}
#: Characters of the detector's output quoted in an error.
_TAIL = 300
_RESULTS_FORMAT = (
    'a JSON list of {"image_id": ID from images.json, "category_id": ID from the training '
    'set\'s categories, "bbox": [x, y, width, height] in pixels, "score": number}'
)


# -- the test set ------------------------------------------------------------------------------


@dataclass
class DetectionTest:
    """The held-out images and their ground truth, as a COCO dataset (``gt``)."""

    images: list[Image.Image]
    gt: dict[str, Any]
    skipped: int
    overlap: int

    @property
    def objects(self) -> int:
        return len(self.gt["annotations"])


def _categories(spec: DatasetSpec) -> list[dict[str, Any]]:
    """The COCO categories, with the ids our COCO export gives them."""
    return [
        {"id": i + 1, "name": name, "supercategory": "object"}
        for i, name in enumerate(spec.class_names)
    ]


def _box(a: Box | Mask) -> tuple[float, float, float, float]:
    if isinstance(a, Box):
        return a.x, a.y, a.w, a.h
    from datasetagent.tools.masks import rle_bbox

    return rle_bbox(a.rle)


def detection_test(spec: DatasetSpec, test_dir: Path, trained: set[str]) -> DetectionTest:
    """The test folder's images and boxes of the spec's classes (``trained``: the pixel keys
    of the training images, left out and counted)."""
    dataset = open_existing(test_dir)
    category = {c["name"]: c["id"] for c in _categories(spec)}
    images: list[Image.Image] = []
    gt: dict[str, Any] = {"images": [], "annotations": [], "categories": _categories(spec)}
    skipped = overlap = boxes_seen = 0
    for item in dataset.images():
        objects = [a for a in item.annotations if isinstance(a, Box | Mask)]
        boxes_seen += len(objects)
        with Image.open(io.BytesIO(dataset.read(item.location))) as opened:
            img = opened.convert("L" if spec.image.color_mode == "L" else "RGB")
        if pixel_hash(img) in trained:
            overlap += 1
            continue
        image_id = len(images) + 1
        images.append(img)
        gt["images"].append(
            {"id": image_id, "width": img.width, "height": img.height, "file_name": ""}
        )
        for a in objects:
            name = spec.resolve_class(a.label)
            if name is None:
                skipped += 1
                continue
            x, y, w, h = _clip(_box(a), img.width, img.height)
            if w <= 0 or h <= 0:
                skipped += 1
                continue
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": category[name],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    if not gt["annotations"]:
        what = (
            f"its {boxes_seen} boxes are of no class of the run ({', '.join(spec.class_names)})"
            if boxes_seen
            else f"it was read as a {dataset.format} {dataset.task} dataset without boxes"
        )
        raise UsageError(
            f"{test_dir} holds no box to score a detector on: {what}; give a detection test "
            "set (COCO, YOLO, VOC or Hugging Face Parquet) with boxes of the run's classes"
        )
    return DetectionTest(images=images, gt=gt, skipped=skipped, overlap=overlap)


def _clip(
    box: tuple[float, float, float, float], width: int, height: int
) -> tuple[float, float, float, float]:
    x, y, w, h = box
    x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    return x0, y0, x1 - x0, y1 - y0


# -- scoring -----------------------------------------------------------------------------------


def coco_scores(
    spec: DatasetSpec, test: DetectionTest, detections: list[dict[str, Any]], n_train: int,
    n_objects: int,
) -> Scores:  # fmt: skip
    """COCOeval (bbox) of ``detections`` (COCO results) against the test's ground truth."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with_objects = {a["category_id"] for a in test.gt["annotations"]}
    per_class: dict[str, float | None] = {
        c["name"]: (0.0 if c["id"] in with_objects else None) for c in test.gt["categories"]
    }
    if not detections:  # loadRes refuses an empty list: nothing found scores 0
        return Scores(
            n_train=n_train, n_train_objects=n_objects, per_class=per_class, map=0.0, map50=0.0
        )
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = json.loads(json.dumps(test.gt))
        gt.createIndex()
        dt = gt.loadRes(detections)
        run = COCOeval(gt, dt, iouType="bbox")
        run.evaluate()
        run.accumulate()
        run.summarize()
    precision = run.eval["precision"]  # [IoU, recall, class, area, max dets]
    for k, cat_id in enumerate(run.params.catIds):
        pr = precision[:, :, k, 0, -1]
        valid = pr[pr > -1]
        name = gt.cats[cat_id]["name"]
        per_class[name] = round(float(valid.mean()), 6) if valid.size else per_class[name]
    return Scores(
        n_train=n_train,
        n_train_objects=n_objects,
        per_class=per_class,
        map=round(max(float(run.stats[0]), 0.0), 6),
        map50=round(max(float(run.stats[1]), 0.0), 6),
    )


# -- the baseline ------------------------------------------------------------------------------


#: A box as (x, y, width, height), or normalised as (centre x, centre y, width, height).
Quad = tuple[float, float, float, float]


def _objects(sample: Sample, spec: DatasetSpec) -> list[tuple[str, Quad]]:
    """The sample's boxes of the spec's classes, normalised: (class, (cx, cy, w, h))."""
    out = []
    for a in sample.annotations:
        if isinstance(a, Box | Mask) and a.label in spec.class_names:
            x, y, w, h = _box(a)
            W, H = sample.width, sample.height
            out.append((a.label, ((x + w / 2) / W, (y + h / 2) / H, w / W, h / H)))
    return out


@dataclass
class BoxPrior:
    """Per class: typical boxes with their weights, and P(the image holds the class)."""

    spec: DatasetSpec
    features: Features
    #: class → (prototypes (k, 4) normalised cx, cy, w, h; weights (k,))
    prototypes: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: class → a fitted classifier of presence, or a constant probability
    presence: dict[str, Any] = field(default_factory=dict)

    def fit(self, samples: Sequence[Sample], blobs: BlobStore) -> int:
        """Learn from ``samples``; returns the number of their objects."""
        from sklearn.cluster import KMeans
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        objects = [_objects(s, self.spec) for s in samples]
        x: np.ndarray | None = None
        for c in self.spec.class_names:
            boxes = np.array([b for objs in objects for name, b in objs if name == c])
            if len(boxes) == 0:
                continue
            k = min(PROTOTYPES, len(np.unique(boxes, axis=0)))
            km = KMeans(n_clusters=k, n_init=4, random_state=self.spec.splits.seed).fit(boxes)
            weights = np.bincount(km.labels_, minlength=k) / len(boxes)
            self.prototypes[c] = (km.cluster_centers_, weights)
            present = np.array([any(name == c for name, _ in objs) for objs in objects])
            if present.all() or not present.any():
                self.presence[c] = float(present.mean())
                continue
            if x is None:
                x = self.features.of_samples(samples, blobs)
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            self.presence[c] = model.fit(x, present)
        return sum(len(objs) for objs in objects)

    def detect(self, test: DetectionTest, test_x: np.ndarray) -> list[dict[str, Any]]:
        """COCO results for the test images (``test_x``: their features)."""
        out: list[dict[str, Any]] = []
        sizes = [(im["id"], im["width"], im["height"]) for im in test.gt["images"]]
        for cat in test.gt["categories"]:
            c = cat["name"]
            if c not in self.prototypes:
                continue
            presence = self.presence[c]
            if isinstance(presence, float):
                probs = np.full(len(sizes), presence)
            else:
                probs = presence.predict_proba(test_x)[:, list(presence.classes_).index(True)]
            centres, weights = self.prototypes[c]
            for (image_id, W, H), p in zip(sizes, probs, strict=True):
                for (cx, cy, w, h), share in zip(centres, weights, strict=True):
                    x, y, bw, bh = _clip(((cx - w / 2) * W, (cy - h / 2) * H, w * W, h * H), W, H)
                    if bw > 0 and bh > 0 and p * share > 0:
                        out.append(
                            {
                                "image_id": image_id,
                                "category_id": cat["id"],
                                "bbox": [x, y, bw, bh],
                                "score": float(p * share),
                            }
                        )
        return out


# -- the user's detector -----------------------------------------------------------------------


@dataclass(frozen=True)
class DetectorCommand:
    """The user's own detector: a command run once per training set.

    It gets three paths, as the placeholders ``{train}``, ``{images}`` and ``{predictions}`` in
    its arguments and as the environment variables in ``ENV``: a COCO dataset to train on
    (``images/SPLIT/*``, ``annotations/instances_SPLIT.json``, train and val), a folder of the
    test images with ``images.json`` (COCO ``images`` with ids and file names, and the
    ``categories``; no annotations), and the file to write its COCO results to. Without
    ``shell`` the command is split like a shell line (``shlex``) and run without a shell, the
    placeholders filled in as whole arguments; with ``shell`` it runs through ``/bin/sh -c``
    with the paths quoted. It runs in its own process group, which a ``timeout`` stops."""

    text: str
    shell: bool = False
    timeout: float | None = None

    @classmethod
    def parse(
        cls, text: str, *, shell: bool = False, timeout: float | None = None
    ) -> DetectorCommand:
        if not text.strip():
            raise UsageError(
                "--detector-command is empty; give the command that runs your detector"
            )
        if not shell:
            try:
                shlex.split(text)
            except ValueError as exc:
                raise UsageError(
                    f"--detector-command cannot be split into arguments ({exc}); quote it as a "
                    "shell would, or pass --detector-shell to run it through /bin/sh"
                ) from exc
        return cls(text, shell, timeout)

    @property
    def name(self) -> str:
        first = self.text.split()[0] if self.shell else shlex.split(self.text)[0]
        return f"detector-command:{Path(first).name}"

    def argv(self, paths: dict[str, Path]) -> list[str]:
        if self.shell:
            line = self.text
            for key, path in paths.items():
                line = line.replace("{" + key + "}", shlex.quote(str(path)))
            return ["/bin/sh", "-c", line]
        out = []
        for arg in shlex.split(self.text):
            for key, path in paths.items():
                arg = arg.replace("{" + key + "}", str(path))
            out.append(arg)
        return out

    def run(self, paths: dict[str, Path], log: Path) -> None:
        """Run it; a one-line error where it cannot start, fails or runs out of time."""
        env = {**os.environ, **{ENV[k]: str(p) for k, p in paths.items()}}
        argv = self.argv(paths)
        with log.open("wb") as out:
            try:
                proc = subprocess.Popen(
                    argv,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise UsageError(
                    f"the detector command cannot start: {argv[0]}: {exc.strerror}; give the "
                    "path of an executable (or --detector-shell for a shell line)"
                ) from exc
            try:
                code = proc.wait(timeout=self.timeout)
            except BaseException as exc:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                if isinstance(exc, subprocess.TimeoutExpired):
                    raise BackendError(
                        f"the detector command ran past {self.timeout:g} s and was stopped; its "
                        f"output is in {log}; give a larger --detector-timeout"
                    ) from exc
                raise
        if code != 0:
            raise BackendError(
                f"the detector command failed (exit status {code}): {_tail(log)}; its output "
                f"is in {log}"
            )


def _tail(log: Path) -> str:
    """The last line of the command's output, shortened."""
    with log.open("rb") as fh:
        fh.seek(max(0, log.stat().st_size - 4096))
        lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines()]
    last = next((ln for ln in reversed(lines) if ln), "no output")
    return last if len(last) <= _TAIL else last[: _TAIL - 1] + "…"


def read_results(path: Path, test: DetectionTest) -> list[dict[str, Any]]:
    """The COCO results the detector wrote to ``path``, checked entry by entry."""
    images = {im["id"] for im in test.gt["images"]}
    cats = {c["id"] for c in test.gt["categories"]}
    fix = f"the detector command must write {_RESULTS_FORMAT}"
    if not path.is_file():
        raise BackendError(f"the detector command wrote no results to {path}; {fix}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BackendError(f"{path} is not JSON ({exc}); {fix}") from exc
    if not isinstance(data, list):
        raise BackendError(f"{path} holds a {type(data).__name__}, not a list; {fix}")
    out = []
    for i, entry in enumerate(data):
        problem = _entry_problem(entry, images, cats)
        if problem:
            raise BackendError(f"{path}: entry {i} {problem}; {fix}")
        x, y, w, h = (float(v) for v in entry["bbox"])
        out.append(
            {
                "image_id": entry["image_id"],
                "category_id": entry["category_id"],
                "bbox": [x, y, w, h],
                "score": float(entry["score"]),
            }
        )
    return out


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _entry_problem(entry: object, images: set[int], cats: set[int]) -> str | None:
    if not isinstance(entry, dict):
        return "is not an object"
    for key in ("image_id", "category_id", "bbox", "score"):
        if key not in entry:
            return f"has no {key!r}"
    if entry["image_id"] not in images or isinstance(entry["image_id"], bool):
        return f"names image_id {entry['image_id']!r}, not an image of images.json"
    if entry["category_id"] not in cats or isinstance(entry["category_id"], bool):
        return f"names category_id {entry['category_id']!r}, not a category of the run"
    bbox = entry["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
        return f"has bbox {bbox!r}, not [x, y, width, height]"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"has bbox {bbox!r} with a negative size"
    if not _number(entry["score"]):
        return f"has score {entry['score']!r}, not a number"
    return None


def _user_detections(
    spec: DatasetSpec,
    blobs: BlobStore,
    samples: Sequence[Sample],
    test: DetectionTest,
    detector: DetectorCommand,
    work: Path,
    tag: str,
) -> tuple[list[dict[str, Any]], int]:
    """Export ``samples`` as COCO into ``work``, run the detector on it, read its results."""
    from datasetagent.export import export_samples

    train = work / f"train-{tag}"
    export_samples(
        "coco",
        train,
        spec,
        [s if s.split in ("train", "val") else s.model_copy(update={"split": "train"})
         for s in samples],
        lambda s: blobs.path(s.blob),
        None,
    )  # fmt: skip
    predictions = work / f"predictions-{tag}.json"
    detector.run(
        {"train": train, "images": work / "images", "predictions": predictions},
        work / f"detector-{tag}.log",
    )
    n_objects = sum(len(_objects(s, spec)) for s in samples)
    return read_results(predictions, test), n_objects


def _write_test_images(test: DetectionTest, folder: Path) -> None:
    folder.mkdir()
    listed = []
    for img, record in zip(test.images, test.gt["images"], strict=True):
        name = f"{record['id']:06d}.png"
        img.save(folder / name)
        listed.append({**record, "file_name": name})
    (folder / "images.json").write_text(
        json.dumps({"images": listed, "categories": test.gt["categories"]}), encoding="utf-8"
    )


# -- the whole evaluation ----------------------------------------------------------------------


def evaluate_detection(
    spec: DatasetSpec,
    blobs: BlobStore,
    train: Sequence[Sample],
    seeds: Sequence[Sample],
    test_dir: Path,
    features: Features,
    detector: DetectorCommand | None,
) -> Evaluation:
    """The detection evaluation of the run: ``train`` (the export's train and val) and
    ``seeds`` (the existing dataset's images, where the run expanded one) each train the
    baseline or the user's ``detector``, scored on the boxes of ``test_dir``."""
    from datasetagent.evaluate import now_iso

    test = detection_test(spec, test_dir, {s.id for s in [*train, *seeds]})
    sets = [("export", train), *([("seed", seeds)] if seeds else [])]
    scores: dict[str, Scores] = {}
    if detector is None:
        test_x = features(test.images) if test.images else np.zeros((0, 0))
        for tag, samples in sets:
            prior = BoxPrior(spec, features)
            n_objects = prior.fit(samples, blobs)
            found = prior.detect(test, test_x) if test.images else []
            scores[tag] = coco_scores(spec, test, found, len(samples), n_objects)
        model = f"box-prior:{features.name}"
    else:
        work = Path(tempfile.mkdtemp(prefix="datasetagent-evaluate-"))
        _write_test_images(test, work / "images")
        for tag, samples in sets:
            found, n_objects = _user_detections(spec, blobs, samples, test, detector, work, tag)
            scores[tag] = coco_scores(spec, test, found, len(samples), n_objects)
        shutil.rmtree(work, ignore_errors=True)  # kept where the detector failed, to look at
        model = detector.name
    return Evaluation(
        task=spec.task,
        model=model,
        trained_on_export=scores["export"],
        trained_on_seed=scores.get("seed"),
        test=TestSet(
            n=len(test.images),
            path=str(test_dir),
            skipped=test.skipped,
            overlap=test.overlap,
            objects=test.objects,
        ),
        when=now_iso(),
    )
