"""The offline demo: expand a small labelled set of handwritten digits from a messy pool.

The digits bundled with scikit-learn are rendered to PNG files: a small labelled seed set in
ImageFolder layout, and a larger unlabelled pool into which realistic defects are mixed
(truncated files, HTML saved as .png, empty files, exact duplicates, tiny and blank images).
The demo knows every pool image's true digit, so it can measure the labels it exported.
"""

from __future__ import annotations

import io
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from datasetagent.errors import UsageError
from datasetagent.pipeline import BuildResult, Reporter, build
from datasetagent.sources.existing import open_existing
from datasetagent.spec import SourceSpec

MARKER = ".datasetagent-demo"
SIDE = 32
REQUEST = "100 images per class"


@dataclass
class DemoData:
    seed_dir: Path
    pool_dir: Path
    #: Resolved file path -> true digit, for every image whose content is a real digit.
    truth: dict[str, str]
    #: Resolved file paths of the unusable files mixed into the pool, with their kind.
    defects: dict[str, str] = field(default_factory=dict)
    #: Resolved path of each planted copy -> the pool image it copies.
    copies: dict[str, str] = field(default_factory=dict)


@dataclass
class DemoResult:
    build: BuildResult
    data: DemoData
    accuracy: float
    accuracy_collected: float
    #: Unusable files exported, plus planted copies exported beside their original.
    defects_exported: int
    labelled_by_model: int


def _render(pixels: np.ndarray) -> Image.Image:
    img = Image.fromarray((pixels * (255.0 / 16.0)).astype(np.uint8), mode="L")
    return img.resize((SIDE, SIDE), Image.Resampling.BILINEAR)


def _png(img: Image.Image, text: str | None = None) -> bytes:
    buf = io.BytesIO()
    info = None
    if text is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", text)
    img.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def make_demo_data(root: Path, *, seeds_per_class: int = 15, seed: int = 0) -> DemoData:
    """Write the seed set and the pool under ``root``; returns where, and the truth.

    Pool files are named ``img_NNNNN`` in shuffled order, defects included, as a scrape would
    leave them: nothing in a name tells a defect from a good image.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = random.Random(seed)
    order = list(range(len(digits.target)))
    rng.shuffle(order)
    seed_dir, pool_dir = root / "seed", root / "pool"
    per_class: dict[str, int] = {}
    truth: dict[str, str] = {}
    # (bytes, extension, true label or None, defect kind or None, index of the copied entry)
    entries: list[tuple[bytes, str, str | None, str | None, int | None]] = []
    for i in order:
        label = str(int(digits.target[i]))
        img = _render(digits.images[i])
        if per_class.get(label, 0) < seeds_per_class:
            per_class[label] = per_class.get(label, 0) + 1
            path = seed_dir / label / f"digit_{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_png(img))
            truth[str(path.resolve())] = label
        else:
            entries.append((_png(img), "png", label, None, None))
    good = list(range(len(entries)))
    for k in rng.sample(good, 6):
        entries.append((entries[k][0][: len(entries[k][0]) // 2], "png", None, "truncated", None))
    html = b"<!DOCTYPE html><html><body>404 Not Found</body></html>"
    entries += [(html, "png", None, "html", None)] * 3
    entries += [(b"", "jpg", None, "empty", None)] * 2
    for n, k in enumerate(rng.sample(good, 25)):
        # every fifth copy has the same pixels but different metadata
        data = entries[k][0]
        if n % 5 == 0:
            data = _png(Image.open(io.BytesIO(data)), text="re-saved")
        entries.append((data, "png", entries[k][2], None, k))
    for k in rng.sample(good, 10):
        thumb = Image.open(io.BytesIO(entries[k][0])).resize((6, 6))
        entries.append((_png(thumb), "png", None, "tiny", None))
    for k in range(10):
        shade = (0, 255, 128, 30, 220)[k % 5]
        entries.append((_png(Image.new("L", (SIDE, SIDE), shade)), "png", None, "blank", None))
    names = list(range(len(entries)))
    rng.shuffle(names)
    pool_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        str((pool_dir / f"img_{names[i]:05d}.{e[1]}").resolve()) for i, e in enumerate(entries)
    ]
    defects: dict[str, str] = {}
    copies: dict[str, str] = {}
    for loc, (data, _, true_label, kind, copied) in zip(paths, entries, strict=True):
        Path(loc).write_bytes(data)
        if true_label is not None:
            truth[loc] = true_label
        if kind is not None:
            defects[loc] = kind
        if copied is not None:
            copies[loc] = paths[copied]
    return DemoData(
        seed_dir=seed_dir, pool_dir=pool_dir, truth=truth, defects=defects, copies=copies
    )


def check_demo_folder(out: Path) -> None:
    """Refuse a folder the demo may not replace: one it did not make, a link, the current
    folder or one holding it, or a demo folder holding files the demo did not write."""
    if out.is_symlink():
        raise UsageError(f"{out} is a symbolic link; give the folder it points to, or a new one")
    if not out.exists():
        return
    if not (out / MARKER).exists():
        raise UsageError(f"{out} exists and is not a demo folder; choose another -o")
    where, cwd = out.resolve(), Path.cwd().resolve()
    if where == cwd or where in cwd.parents:
        raise UsageError(f"{out} is the current folder or holds it; run the demo from elsewhere")
    extra = sorted(p.name for p in out.iterdir() if p.name not in {MARKER, "data", "run"})
    if extra:
        raise UsageError(
            f"{out} is a demo folder but holds files the demo did not write (found "
            f"{len(extra)}: {', '.join(extra[:3])}); move them out, or choose another -o"
        )


def run_demo(
    out: Path, *, reporter: Reporter | None = None, workers: int | None = None
) -> DemoResult:
    """Make the demo data in ``out/data`` and build ``out/run`` from it."""
    check_demo_folder(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by datasetagent demo; safe to delete\n")
    data = make_demo_data(out / "data")
    from datasetagent.agents.demand import parse_request

    profile = open_existing(data.seed_dir, "imagefolder").profile()
    spec = parse_request(
        REQUEST, existing=profile, sources=[SourceSpec(kind="local", location=str(data.pool_dir))]
    )
    spec = spec.model_copy(update={"name": "digits-demo"})
    result = build(spec, out / "run", reporter=reporter, workers=workers)
    exported = result.exported
    right = sum(1 for s in exported if data.truth.get(s.provenance.location) == s.label)
    collected = [s for s in exported if s.origin == "collected"]
    right_collected = sum(1 for s in collected if data.truth.get(s.provenance.location) == s.label)
    return DemoResult(
        build=result,
        data=data,
        accuracy=right / max(len(exported), 1),
        accuracy_collected=right_collected / max(len(collected), 1),
        defects_exported=_defects_exported(data, {s.provenance.location for s in exported}),
        labelled_by_model=len(collected),
    )


def _defects_exported(data: DemoData, exported: set[str]) -> int:
    unusable = sum(1 for loc in exported if loc in data.defects)
    doubled = sum(1 for copy, orig in data.copies.items() if copy in exported and orig in exported)
    return unusable + doubled
