"""Splits: near-duplicate groups never straddle two splits, detection is stratified by object
instances, existing assignments are kept, and the result is seeded and order-free. Also
``build --existing`` on a COCO dataset: its boxes, splits and attribution come through."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from datasetagent.agents.processing import ProcessParams, process_bytes
from datasetagent.export import export_samples
from datasetagent.export.splits import assign_splits, split_quotas
from datasetagent.models import BACKENDS
from datasetagent.pipeline import build
from datasetagent.records import Box, ClassLabel, Provenance, Sample
from datasetagent.spec import (
    SPLIT_NAMES,
    ClassSpec,
    DatasetSpec,
    ImageConstraints,
    SourceSpec,
    SplitName,
    SplitSpec,
)
from test_backends_pipeline import ColourDetector, _squares


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _sample(data: bytes, label: str, split: SplitName | None = None) -> Sample | None:
    """The sample the Image Processing agent makes of ``data`` (None if it rejects it)."""
    done = process_bytes(data, ProcessParams(ImageConstraints(min_side=16, enhance="off")))
    if done.issues:
        return None
    return Sample(
        id=done.digest,
        blob="x",
        width=done.width,
        height=done.height,
        mode=done.mode,
        origin="existing" if split else "collected",
        provenance=Provenance(source_kind="local", location=done.digest, licence="x"),
        annotations=(ClassLabel(label=label, labeler="t"),),
        status="labelled",
        split=split,
        hashes=done.hashes,
        thumb=done.thumb,
    )


def test_near_duplicates_share_a_split_and_an_existing_one_pulls_its_copies(
    photo_images: list[Image.Image],
) -> None:
    tiles = [
        photo.crop((x, y, x + 120, y + 120))
        for photo in photo_images
        for x in range(0, 480, 130)
        for y in range(0, 300, 130)
    ]
    made = [(t, _sample(_jpeg(t), "ab"[k % 2])) for k, t in enumerate(tiles)]
    kept = [(t, s) for t, s in made if s is not None]  # plain sky is rejected as too bright
    samples = [s for _, s in kept]
    copies: dict[str, list[str]] = {}
    for tile, original in kept[:12:3]:  # planted copies: re-encoded, resized, brighter, cropped
        variants = [
            _sample(_jpeg(tile, quality=60), original.label or ""),
            _sample(_jpeg(tile.resize((100, 100))), original.label or ""),
            _sample(_jpeg(ImageEnhance.Brightness(tile).enhance(1.1)), original.label or ""),
            _sample(_jpeg(tile.crop((4, 4, 116, 116))), original.label or ""),
        ]
        extra = [v for v in variants if v is not None]
        copies[original.id] = [v.id for v in extra]
        samples += extra
    assert len(copies) == 4
    assert all(len(v) == 4 for v in copies.values())  # every planted copy is in the pool
    assert len(kept) >= 12
    fixed_id = next(iter(copies))  # the existing dataset put this one in test
    samples = [s.model_copy(update={"split": "test"}) if s.id == fixed_id else s for s in samples]
    spec = SplitSpec(train=0.5, val=0.25, test=0.25, seed=3)
    out = {s.id: s.split for s in assign_splits(samples, spec)}
    for first, others in copies.items():
        assert {out[i] for i in [first, *others]} == {out[first]}, "a group straddles splits"
    assert all(out[i] == "test" for i in [fixed_id, *copies[fixed_id]])
    again = {s.id: s.split for s in assign_splits(list(reversed(samples)), spec)}
    assert again == out
    counts = Counter(out.values())
    assert abs(counts["train"] - len(samples) / 2) <= 5  # still near the shares


def test_a_hash_match_the_thumbnails_refute_does_not_group() -> None:
    """Small handwritten digits often hash close; their thumbnails tell them apart."""
    from helpers import digit_images

    images = digit_images(40, classes=(1,))
    samples = [s for img, _ in images if (s := _sample(_jpeg(img), "1")) is not None]
    assert len(samples) == 40
    out = assign_splits(samples, SplitSpec(train=0.5, val=0.25, test=0.25))
    assert Counter(s.split for s in out) == {"train": 20, "val": 10, "test": 10}


def _det(k: int, labels: list[str], split: SplitName | None = None) -> Sample:
    return Sample(
        id=f"{k:064x}",
        blob="x",
        width=100,
        height=100,
        mode="RGB",
        origin="existing" if split else "collected",
        provenance=Provenance(source_kind="local", location=str(k), licence="x"),
        annotations=tuple(
            Box(label=lab, labeler="t", x=j, y=j, w=10, h=10) for j, lab in enumerate(labels)
        ),
        status="labelled",
        split=split,
    )


def test_detection_is_stratified_by_instances_of_every_class() -> None:
    rng = np.random.default_rng(0)
    samples = []
    for k in range(120):
        labels = ["car"] * int(rng.integers(1, 6))
        if k % 4 == 0:
            labels += ["person"] * int(rng.integers(1, 4))
        if k % 12 == 5:
            labels.append("bike")  # rare, and always beside cars
        samples.append(_det(k, labels))
    shares = SplitSpec(train=0.8, val=0.1, test=0.1, seed=1)
    out = assign_splits(samples, shares)
    per = Counter((s.split, a.label) for s in out for a in s.annotations)
    for label in ("car", "person", "bike"):
        total = sum(per[(sp, label)] for sp in SPLIT_NAMES)
        want = split_quotas(total, [0.8, 0.1, 0.1])
        got = [per[(sp, label)] for sp in SPLIT_NAMES]
        assert all(abs(g - w) <= max(3, w * 0.15) for g, w in zip(got, want, strict=True)), (
            label,
            got,
            want,
        )
    assert [per[(sp, "bike")] for sp in SPLIT_NAMES] == [8, 1, 1]
    images = Counter(s.split for s in out)
    assert abs(images["train"] - 96) <= 6
    mixed = list(reversed(samples))
    assert {s.id: s.split for s in assign_splits(mixed, shares)} == {s.id: s.split for s in out}
    other = assign_splits(samples, shares.model_copy(update={"seed": 2}))
    assert {s.id: s.split for s in other} != {s.id: s.split for s in out}


def test_existing_detection_splits_are_kept() -> None:
    fixed = [_det(k, ["car", "car"], "val") for k in range(6)]
    new = [_det(100 + k, ["car"]) for k in range(30)]
    out = {s.id: s.split for s in assign_splits(fixed + new, SplitSpec())}
    assert all(out[s.id] == "val" for s in fixed)
    assert not any(out[s.id] == "val" for s in new)  # val has its share of cars already


def test_build_expands_an_existing_coco_dataset_keeping_its_boxes_splits_and_attribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(BACKENDS._items, "colour-squares", ColourDetector)
    truth = _squares(tmp_path / "seed", 9, seed=5)
    classes = (ClassSpec(name="red"), ClassSpec(name="blue"))
    seed_samples = []
    for k, (name, boxes) in enumerate(sorted(truth.items())):
        path = tmp_path / "seed" / name
        seed_samples.append(
            Sample(
                id=hashlib.sha256(path.read_bytes()).hexdigest(),
                blob=str(path),
                width=96,
                height=96,
                mode="RGB",
                origin="collected",
                provenance=Provenance(
                    source_kind="wikimedia",
                    location=f"https://commons.example/{name}",
                    licence="CC-BY-SA-4.0",
                    creator=f"author {k}",
                ),
                # one pixel larger than the square: the detector would find the square itself
                annotations=tuple(
                    Box(label=c, labeler="human", x=x, y=y, w=w + 1, h=h + 1)
                    for c, x, y, w, h in boxes
                ),
                status="labelled",
                split=("train", "val", "test")[k % 3],
            )
        )
    spec = DatasetSpec(task="detection", classes=classes, formats=("coco",))
    existing = export_samples(
        "coco", tmp_path / "existing", spec, seed_samples, lambda s: Path(s.blob), None
    )
    _squares(tmp_path / "pool", 18, seed=6)
    spec = spec.model_copy(
        update={
            "target_per_class": 12,
            "image": ImageConstraints(enhance="off"),
            "sources": (SourceSpec(location=str(tmp_path / "pool")),),
            "existing": str(existing),
            "formats": ("coco", "yolo"),
        }
    )
    result = build(spec, tmp_path / "run", labelers=["colour-squares"])
    kept = {s.provenance.location: s for s in result.exported if s.origin == "existing"}
    assert len(kept) == len(seed_samples)
    for original in seed_samples:
        sample = kept[original.provenance.location]
        assert sample.split == original.split
        assert [(a.label, a.x, a.y, a.w, a.h) for a in sample.annotations] == [
            (a.label, a.x, a.y, a.w, a.h)
            for a in original.annotations  # type: ignore[union-attr]
        ]
        assert {a.labeler for a in sample.annotations} == {"existing"}
        assert (sample.provenance.licence, sample.provenance.creator) == (
            "CC-BY-SA-4.0",
            original.provenance.creator,
        )
    assert any(s.origin == "collected" for s in result.exported)
    manifest = [
        json.loads(line)
        for line in (result.exports["coco"] / "manifest.jsonl").read_text().splitlines()
    ]
    sources = {m["provenance"]["location"] for m in manifest}
    assert {s.provenance.location for s in seed_samples} <= sources
    attribution = (result.exports["yolo"] / "ATTRIBUTION.md").read_text()
    assert (
        "| author 0 | [CC-BY-SA-4.0](https://creativecommons.org/licenses/by-sa/4.0/) | "
        "[https://commons.example/s000.png](https://commons.example/s000.png) |"
    ) in attribution
