"""Dataset quality of an offline expansion: Fashion-MNIST from 20 labelled images per class.

Debian's ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``) gives real
labelled 28×28 images. The benchmark writes

* ``seed/CLASS/*.png``: 20 labelled images per class, the existing dataset;
* ``pool/img_NNNNN.png``: a flat folder of ``--pool-per-class`` unlabelled images per class
  with defects mixed in as a scrape leaves them: truncated files, HTML and empty files saved
  as images, tiny and blank or dark images, exact copies (some re-saved with other metadata),
  near copies (JPEG re-encodes, 2× upscales, slight brightening), copies of seed images, and
  out-of-domain images (scikit-learn's handwritten digits and crops of its two photos, 28×28
  grey: images of none of the classes).

It then runs the real ``build`` with the spec ``parse_request("expand to 300 images per
class")`` makes for that seed set and pool, with no model weights (the seed labeler), and
scores the export against the truth: label accuracy of the new samples (with a 95% Wilson
interval, overall and per class), exported defects, duplicates and out-of-domain images (all
must be 0), CBI, and whether the run's own numbers agree with what was measured (its CBI, its
per-class counts, the mean confidence it claims, its ALR interval).

With no model weights there is no second labeler or verifier to check labels, so ALR comes from
people: a simulated person audits ``--audit`` of the exported new labels through ``datasetagent
review`` (answering from the truth) and the run reports ALR from those decisions, as a user
would get it. Accuracy is scored on the export as the build made it, before the audit's fixes.

Baselines, measured in the same run on the same pool images: logistic regression on the
features this project used before (12×12 thumbnail, HOG with 8-pixel cells, colour histogram)
fitted on the 20 seeds, overall and on its most confident half; the current seed labeler
without the pool (regression only) and with it (``adapt`` on the whole pool), scored the same
way.

Usage: python benchmarks/expansion_bench.py [--pool-per-class 900] [--seeds 20] [--seed 0]
       [--workers N] [--audit 200] [--keep DIR] [--build-only]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from datasetagent.metrics import cbi, wilson_interval
from datasetagent.models.seed import SeedClassifier
from datasetagent.pipeline import BuildResult, build, final_samples
from datasetagent.records import QualityReport, Sample
from datasetagent.sources.existing import open_existing
from datasetagent.spec import DatasetSpec, SourceSpec
from datasetagent.store import RunStore

PACKAGE = "dataset-fashion-mnist"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)
REQUEST = "expand to 300 images per class"
TARGET = 300


# -- data ----------------------------------------------------------------------------------------


@contextmanager
def work_folder(keep: Path | None, prefix: str) -> Iterator[Path]:
    """Where a benchmark writes its data and runs: ``keep`` (``--keep DIR``), which must be new
    or empty and is left in place (a folder that holds files is refused, never emptied), or a
    temporary folder removed afterwards."""
    if keep is None:
        root = Path(tempfile.mkdtemp(prefix=prefix))
        try:
            yield root
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        sys.exit(f"--keep {keep} is not a new or empty folder; give one (nothing is removed)")
    keep.mkdir(parents=True, exist_ok=True)
    yield keep


def find_fashion_mnist() -> Path:
    """The folder holding the package's IDX files."""
    try:
        out = subprocess.run(["dpkg", "-L", PACKAGE], capture_output=True, text=True, check=False)
        for line in out.stdout.splitlines():
            if line.endswith("train-images-idx3-ubyte.gz"):
                return Path(line).parent
    except FileNotFoundError:  # not a Debian system
        pass
    if (DEFAULT_DIR / "train-images-idx3-ubyte.gz").exists():
        return DEFAULT_DIR
    sys.exit(
        f"Fashion-MNIST not found: install it with 'apt-get update && apt-get install -y "
        f"{PACKAGE}' (as root)"
    )


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip'd) as a uint8 array."""
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def png(img: Image.Image, level: int = 6) -> bytes:
    """PNG bytes; another zlib ``level`` gives other bytes for the same pixels (a re-save)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def out_of_domain(n_digits: int, n_photos: int, rng: np.random.Generator) -> list[Image.Image]:
    """Images of none of the classes at 28×28 grey: handwritten digits, white on black like
    Fashion-MNIST, and crops of the two photos bundled with scikit-learn at random scales."""
    from sklearn.datasets import load_digits, load_sample_images

    digits = load_digits()
    out = []
    for i in rng.choice(len(digits.images), n_digits, replace=False):
        small = Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8), "L")
        canvas = Image.new("L", (28, 28), 0)
        canvas.paste(small.resize((20, 20), Image.Resampling.BILINEAR), (4, 4))
        out.append(canvas)
    photos = [Image.fromarray(a).convert("L") for a in load_sample_images().images]
    for k in range(n_photos):
        photo = photos[k % len(photos)]
        side = int(rng.integers(28, 200))
        x = int(rng.integers(0, photo.width - side))
        y = int(rng.integers(0, photo.height - side))
        crop = photo.crop((x, y, x + side, y + side))
        out.append(crop.resize((28, 28), Image.Resampling.BILINEAR))
    return out


@dataclass
class BenchData:
    seed_dir: Path
    pool_dir: Path
    #: Resolved path -> true class, for every file showing one of the classes.
    truth: dict[str, str] = field(default_factory=dict)
    #: Resolved path -> kind, for files that must never be exported.
    defects: dict[str, str] = field(default_factory=dict)
    #: Resolved path -> "digit" or "photo", for out-of-domain images.
    ood: dict[str, str] = field(default_factory=dict)
    #: Resolved path of each planted copy -> the file it copies (pool or seed).
    copies: dict[str, str] = field(default_factory=dict)
    #: The pool's in-domain original images and labels, in file order (for the baselines).
    pool_images: list[Image.Image] = field(default_factory=list)
    pool_labels: list[str] = field(default_factory=list)
    seed_images: list[Image.Image] = field(default_factory=list)
    seed_labels: list[str] = field(default_factory=list)


def make_data(root: Path, *, seeds: int, per_class: int, seed: int) -> BenchData:
    src = find_fashion_mnist()
    images = read_idx(src / "train-images-idx3-ubyte.gz")
    labels = read_idx(src / "train-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(seed)
    data = BenchData(root / "seed", root / "pool")
    # (bytes, extension, true class, defect kind, out-of-domain kind, index of copied entry)
    entries: list[tuple[bytes, str, str | None, str | None, str | None, int | str | None]] = []
    seed_paths: list[str] = []
    for k, name in enumerate(CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == k))
        for i in idx[:seeds]:
            img = Image.fromarray(images[i], "L")
            file = data.seed_dir / name / f"{name}_{i:05d}.png"
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(png(img))
            data.truth[str(file.resolve())] = name
            seed_paths.append(str(file.resolve()))
            data.seed_images.append(img)
            data.seed_labels.append(name)
        for i in idx[seeds : seeds + per_class]:
            img = Image.fromarray(images[i], "L")
            entries.append((png(img), "png", name, None, None, None))
            data.pool_images.append(img)
            data.pool_labels.append(name)
    good = list(range(len(entries)))
    pick = random.Random(seed)

    def add(payload: bytes, ext: str, kind: str) -> None:
        entries.append((payload, ext, None, kind, None, None))

    def image_of(k: int) -> Image.Image:
        return Image.open(io.BytesIO(entries[k][0]))

    for k in pick.sample(good, 20):
        add(entries[k][0][: len(entries[k][0]) // 2], "png", "truncated")
    for _ in range(5):
        add(b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "png", "html")
    for _ in range(5):
        add(b"", "jpg", "empty")
    for k in pick.sample(good, 20):
        add(png(image_of(k).resize((9, 9), Image.Resampling.BILINEAR)), "png", "tiny")
    for n in range(20):
        if n % 2:
            blank = Image.new("L", (28, 28), (0, 255, 128, 200, 60)[n % 5])
        else:
            dark = rng.integers(0, 6, size=(28, 28)).astype(np.uint8)
            blank = Image.fromarray(dark, "L")
        add(png(blank), "png", "blank")
    for n, k in enumerate(pick.sample(good, 40)):  # exact copies, every fourth re-saved
        payload = entries[k][0] if n % 4 else png(image_of(k), level=9)
        entries.append((payload, "png", entries[k][2], None, None, k))
    for n, k in enumerate(pick.sample(good, 30)):  # near copies
        img = image_of(k)
        if n % 3 == 0:
            payload, ext = jpeg(img, 92), "jpg"
        elif n % 3 == 1:
            payload, ext = png(img.resize((56, 56), Image.Resampling.BICUBIC)), "png"
        else:
            brighter = np.clip(np.asarray(img, np.int16) + 6, 0, 255).astype(np.uint8)
            payload, ext = png(Image.fromarray(brighter, "L")), "png"
        entries.append((payload, ext, entries[k][2], None, None, k))
    for seed_path in pick.sample(seed_paths, 10):  # copies of the existing dataset's images
        payload = Path(seed_path).read_bytes()
        entries.append((payload, "png", data.truth[seed_path], None, None, seed_path))
    n_ood = max(10, per_class // 6)
    for n, img in enumerate(out_of_domain(n_ood, n_ood, rng)):
        entries.append((png(img), "png", None, None, "digit" if n < n_ood else "photo", None))
    names = list(range(len(entries)))
    pick.shuffle(names)
    data.pool_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        str((data.pool_dir / f"img_{names[i]:05d}.{e[1]}").resolve()) for i, e in enumerate(entries)
    ]
    for path, (payload, _, label, defect, ood, copied) in zip(paths, entries, strict=True):
        Path(path).write_bytes(payload)
        if label is not None:
            data.truth[path] = label
        if defect is not None:
            data.defects[path] = defect
        if ood is not None:
            data.ood[path] = ood
        if copied is not None:
            data.copies[path] = copied if isinstance(copied, str) else paths[copied]
    return data


# -- baselines -----------------------------------------------------------------------------------
def previous_features(img: Image.Image) -> np.ndarray:
    """The seed labeler's features before this benchmark existed: a normalised 12×12 grey
    thumbnail, HOG on 32×32 with 8-pixel cells (hard orientation bins), an HSV histogram."""
    grid, cell, bins = 32, 8, 9
    gray = np.asarray(img.convert("L").resize((grid, grid), Image.Resampling.BILINEAR), float)
    gy, gx = np.gradient(gray / 255.0)
    mag = np.hypot(gx, gy)
    ang = np.minimum((np.mod(np.arctan2(gy, gx), np.pi) / np.pi * bins).astype(int), bins - 1)
    n = grid // cell
    cells = np.zeros((n, n, bins))
    idx = np.arange(grid) // cell
    np.add.at(cells, (np.repeat(idx, grid), np.tile(idx, grid), ang.ravel()), mag.ravel())
    blocks = []
    for r in range(n - 1):
        for c in range(n - 1):
            b = cells[r : r + 2, c : c + 2].ravel()
            b = np.minimum(b / np.sqrt((b**2).sum() + 1e-6), 0.2)
            blocks.append(b / np.sqrt((b**2).sum() + 1e-6))
    thumb = np.asarray(img.convert("L").resize((12, 12), Image.Resampling.BILINEAR), float)
    thumb = (thumb.ravel() - thumb.mean()) / (thumb.std() + 1e-6)
    colour = np.zeros(72)  # grey images: the colour view is all zeros
    return np.concatenate([thumb, *blocks, colour])


def previous_labeler(
    seeds: list[Image.Image], labels: list[str], pool: list[Image.Image]
) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression as the seed labeler did it before: C by out-of-fold log loss.
    Returns (predicted class names, confidences)."""
    x = np.stack([previous_features(im) for im in seeds])
    y = np.array(labels)
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    best: tuple[float, float] | None = None
    for c in (0.05, 0.1, 0.5):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
        p = cross_val_predict(model, x, y, cv=cv, method="predict_proba")
        nll = -np.log(np.maximum(p[np.arange(len(y)), np.searchsorted(np.unique(y), y)], 1e-12))
        if best is None or nll.mean() < best[0]:
            best = (float(nll.mean()), c)
    assert best is not None
    model = make_pipeline(StandardScaler(), LogisticRegression(C=best[1], max_iter=3000))
    model.fit(x, y)
    probs = model.predict_proba(np.stack([previous_features(im) for im in pool]))
    return model.classes_[probs.argmax(axis=1)], probs.max(axis=1)


def seed_labeler(
    seeds: list[Image.Image], labels: list[str], pool: list[Image.Image], *, transductive: bool
) -> tuple[np.ndarray, np.ndarray]:
    model = SeedClassifier(transductive=transductive)
    model.fit(seeds, labels)
    model.adapt(pool[i : i + 256] for i in range(0, len(pool), 256))
    preds = [p for i in range(0, len(pool), 256) for p in model.predict(pool[i : i + 256])]
    return np.array([p.label for p in preds]), np.array([p.confidence for p in preds])


def describe_labels(
    name: str, pred: np.ndarray, conf: np.ndarray, truth: np.ndarray, room: int
) -> str:
    """Accuracy overall and of the most confident half; and what an export would take from
    these labels alone: per class the ``room`` most confident at 0.9 or more."""
    ok = pred == truth
    half = np.argsort(-conf, kind="stable")[: len(conf) // 2]
    chosen = []
    for c in CLASSES:
        idx = np.flatnonzero((pred == c) & (conf >= 0.9))
        chosen.extend(idx[np.argsort(-conf[idx], kind="stable")][:room].tolist())
    taken = np.array(chosen, dtype=np.int64)
    fill = Counter(pred[taken].tolist())
    least = min(CLASSES, key=lambda c: fill.get(c, 0))
    return (
        f"{name:<38} accuracy {ok.mean():.3f}   most confident half {ok[half].mean():.3f}   "
        f"export-like pick: {len(taken)} at {ok[taken].mean() if len(taken) else float('nan'):.3f}"
        f" (least: {least} {fill.get(least, 0)})"
    )


def baselines(data: BenchData, room: int) -> None:
    """Each labeler fitted on the seeds alone, scored on the pool's images of the classes."""
    print("\nbaselines on the pool's images of the classes (fit on the seeds alone):")
    truth = np.array(data.pool_labels)
    runs: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
        "previous labeler (LR, old features)": lambda: previous_labeler(
            data.seed_images, data.seed_labels, data.pool_images
        ),
        "seed labeler, regression only": lambda: seed_labeler(
            data.seed_images, data.seed_labels, data.pool_images, transductive=False
        ),
        "seed labeler, adapted to the pool": lambda: seed_labeler(
            data.seed_images, data.seed_labels, data.pool_images, transductive=True
        ),
    }
    for name, run in runs.items():
        start = time.perf_counter()
        pred, conf = run()
        line = describe_labels(name, pred, conf, truth, room)
        print(f"  {line}  ({time.perf_counter() - start:.1f} s)")


# -- scoring -------------------------------------------------------------------------------------
def interval(k: int, n: int) -> str:
    if n == 0:
        return "none exported"
    lo, hi = wilson_interval(k, n)
    return f"{k / n:.3f} [{lo:.3f}, {hi:.3f}] (n={n})"


@dataclass
class Scored:
    """The export measured against the truth."""

    new: int
    correct: int
    per_class: dict[str, list[bool]]
    defects: Counter[str]
    ood: Counter[str]
    copies: int
    counts: Counter[str]
    cbi: float
    mean_confidence: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.new if self.new else 0.0


def score(data: BenchData, exported: list[Sample]) -> Scored:
    new = [s for s in exported if s.origin != "existing"]
    locs = [str(Path(s.provenance.location).resolve()) for s in new]
    right = [data.truth.get(loc) == s.label for loc, s in zip(locs, new, strict=True)]
    per_class: dict[str, list[bool]] = {c: [] for c in CLASSES}
    for s, ok in zip(new, right, strict=True):
        per_class.setdefault(str(s.label), []).append(ok)
    # a planted copy exported together with what it copies (in the pool or the seed set)
    everything = {str(Path(s.provenance.location).resolve()) for s in exported}
    counts = Counter(str(s.label) for s in exported)
    return Scored(
        new=len(new),
        correct=sum(right),
        per_class=per_class,
        defects=Counter(data.defects[loc] for loc in locs if loc in data.defects),
        ood=Counter(data.ood[loc] for loc in locs if loc in data.ood),
        copies=sum(1 for loc in locs if data.copies.get(loc) in everything),
        counts=counts,
        cbi=cbi({c: counts.get(c, 0) for c in CLASSES}),
        mean_confidence=float(np.mean([s.confidence or 0.0 for s in new])) if new else 0.0,
    )


def expansion_spec(data: BenchData) -> DatasetSpec:
    """The spec ``REQUEST`` makes for the seed set and the pool, as ``datasetagent build``
    plans it (classes, size and colour inherited from the seeds)."""
    from datasetagent.agents.demand import parse_request

    profile = open_existing(data.seed_dir, "imagefolder").profile()
    return parse_request(
        REQUEST, existing=profile, sources=[SourceSpec(location=str(data.pool_dir))]
    )


def human_review(run_dir: Path, data: BenchData, audit: int, review: int) -> QualityReport:
    """A person works through ``datasetagent review``: the queue is written with ``review``
    held-back samples (those that fill short classes first) and an audit of ``audit`` exported
    new labels, every line is answered from the truth (accept, relabel, or reject an image of
    none of the classes), and the decisions are applied. Returns the run's report as measured
    again with them."""
    cli = [sys.executable, "-m", "datasetagent", "review", str(run_dir)]
    queue = run_dir / "review.jsonl"
    sizes = ["--audit", str(audit), "--review", str(review)]
    for args in (["--write", str(queue), *sizes], ["--apply", str(queue)]):
        out = subprocess.run([*cli, *args], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.exit(f"datasetagent review {' '.join(args)} failed: {out.stderr.strip()}")
        if args[0] == "--apply":
            break
        lines = [json.loads(x) for x in queue.read_text().splitlines()]
        for line in lines:
            right = data.truth.get(str(Path(line["source"]).resolve()))
            if right is None:
                line["decision"] = "reject"
            elif right == line["label"]:
                line["decision"] = "accept"
            else:
                line["decision"], line["label"] = "relabel", right
        queue.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with RunStore(run_dir / "run.db") as store:
        return store.reports()[-1]


def reviewed_export(run_dir: Path) -> list[Sample]:
    """What ``datasetagent export`` takes from the run now."""
    with RunStore(run_dir / "run.db") as store:
        spec = store.load_spec()
        assert spec is not None
        return final_samples(store, spec)


def print_scored(scored: Scored, seeds: int) -> None:
    wanted = (TARGET - seeds) * len(CLASSES)
    print(f"  new samples exported: {scored.new} of {wanted} wanted")
    accuracy = interval(scored.correct, scored.new)
    print(f"  label accuracy of new samples: {accuracy}   (goal >= 0.95)")
    for c in CLASSES:
        oks = scored.per_class.get(c, [])
        print(f"    {c:<11} {interval(sum(oks), len(oks))}")
    print(f"  defects exported: {dict(scored.defects) or 0}   (must be 0)")
    print(f"  out-of-domain exported: {dict(scored.ood) or 0}   (must be 0)")
    print(f"  copies exported beside what they copy: {scored.copies}   (must be 0)")
    print(f"  CBI {scored.cbi:.4f}   (goal <= 0.021)")


def consistency(
    result: BuildResult, scored: Scored, audited: QualityReport | None
) -> list[tuple[str, bool, str]]:
    """The build's reported numbers, and the ALR reported after the audit (``audited``; the
    build's own without one), against the measured ones: (check, holds, detail)."""
    report = result.report
    classes = result.summary()["classes"]
    assert isinstance(classes, dict)
    lo, hi = wilson_interval(scored.correct, scored.new) if scored.new else (0.0, 1.0)
    checks = [
        (
            "reported CBI = CBI of the export",
            math.isclose(report.cbi, scored.cbi, abs_tol=1e-6),
            f"reported {report.cbi:.4f}, measured {scored.cbi:.4f}",
        ),
        (
            "summary per-class counts = export",
            all(v["exported"] == scored.counts.get(c, 0) for c, v in classes.items()),
            "",
        ),
        (
            "mean claimed confidence within the accuracy's 95% interval",
            lo <= scored.mean_confidence <= hi,
            f"claims {scored.mean_confidence:.3f}, measured {scored.accuracy:.3f} "
            f"[{lo:.3f}, {hi:.3f}]",
        ),
    ]
    report = audited or report
    alr = report.alr_interval
    checks.append(
        (
            "reported ALR interval contains the measured accuracy",
            alr is not None and alr[0] <= scored.accuracy <= alr[1],
            "no ALR reported"
            if alr is None
            else f"ALR {report.alr} [{alr[0]:.3f}, {alr[1]:.3f}] on {report.alr_audited}",
        )
    )
    return checks


# -- main ----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool-per-class", type=int, default=900)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="write data and run here")
    parser.add_argument("--build-only", action="store_true", help="skip the baselines")
    parser.add_argument(
        "--audit", type=int, default=200, help="exported labels a simulated person audits"
    )
    parser.add_argument(
        "--review", type=int, default=300, help="held-back samples the simulated person reviews"
    )
    args = parser.parse_args()

    with work_folder(args.keep, "expansion-bench-") as root:
        start = time.perf_counter()
        data = make_data(
            root / "data", seeds=args.seeds, per_class=args.pool_per_class, seed=args.seed
        )
        print(
            f"data: {len(data.seed_images)} seeds, pool of {len(data.pool_images)} images of "
            f"the classes + {len(data.defects)} defects + {len(data.copies)} copies + "
            f"{len(data.ood)} out-of-domain ({time.perf_counter() - start:.1f} s)"
        )
        if not args.build_only:
            baselines(data, TARGET - args.seeds)
        spec = expansion_spec(data)
        t0 = time.perf_counter()
        result = build(spec, root / "run", workers=args.workers)
        build_s = time.perf_counter() - t0
        scored = score(data, result.exported)
        report = result.report
        print(f"\nbuild '{REQUEST}': {build_s:.1f} s, {report.round} rounds, {report.reason}")
        print_scored(scored, args.seeds)
        print(f"  rejected by reason: {dict(report.rejected_by_reason)}; review {report.review}")
        audited = None
        if args.audit or args.review:
            audited = human_review(root / "run", data, args.audit, args.review)
            print(
                f"\na person reviews the {args.review} held-back samples that fill short "
                f"classes first and audits {args.audit} exported labels; ALR: "
                f"{audited.alr_method}; export again:"
            )
            print_scored(score(data, reviewed_export(root / "run")), args.seeds)
        print("\nconsistency of the build's own numbers:")
        for name, ok, detail in consistency(result, scored, audited):
            print(f"    [{'ok' if ok else 'NO'}] {name}{': ' + detail if detail else ''}")


if __name__ == "__main__":
    main()
