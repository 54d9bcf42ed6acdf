"""Of a duplicate group the build keeps the best copy (most pixels, then lossless, then least
compressed; ``tools.dedupe.Quality``), whenever in the run the better copy arrives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from PIL import Image

from datasetagent.agents import processing
from datasetagent.agents.processing import ImageProcessingAgent
from datasetagent.pipeline import build
from datasetagent.runtime.local import LocalExecutor
from datasetagent.sources import Source
from datasetagent.spec import ClassSpec, DatasetSpec, SourceSpec
from datasetagent.store import BlobStore, Candidate, RunStore
from helpers import PathSource, digit_images, encode

SPEC = DatasetSpec(classes=(ClassSpec(name="a"), ClassSpec(name="b")))


FILES: dict[str, Source] = {"local": PathSource()}


@pytest.fixture
def tiles(photo_images: list[Image.Image]) -> list[Image.Image]:
    """Four different 320×320 pictures."""
    return [p.crop((x, 40, x + 320, 360)) for p in photo_images for x in (0, 300)]


def _write(folder: Path, files: dict[str, bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files]


def _small_jpeg(img: Image.Image) -> bytes:
    return encode(img.resize((160, 160), Image.Resampling.LANCZOS), "JPEG", quality=70)


def _outcome(store: RunStore) -> tuple[set[str], dict[str, tuple[tuple[str, ...], str]]]:
    """Names of the stored samples, and of each rejection: its reasons and whom it names."""
    kept = {Path(s.provenance.location).name for s in store.samples()}
    rejected = {
        Path(r.location).name: (r.reasons, Path(r.duplicate_of or "").name)
        for r in store.rejections()
    }
    return kept, rejected


def _add(store: RunStore, paths: list[Path], round_: int, origin: str = "collected") -> None:
    store.add_candidates(
        Candidate(source_kind="local", location=str(p), licence="CC0-1.0", origin=origin)  # type: ignore[arg-type]
        for p in paths
    )
    store.take_candidates(round_, len(paths), origin=origin, wanted=None)  # type: ignore[arg-type]


def test_a_better_copy_in_a_later_round_replaces_the_stored_one(
    tmp_path: Path, tiles: list[Image.Image]
) -> None:
    small = _write(
        tmp_path / "r1", {"small.jpg": _small_jpeg(tiles[0]), "other.png": encode(tiles[1])}
    )
    big = _write(tmp_path / "r2", {"big.png": encode(tiles[0]), "other.jpg": _small_jpeg(tiles[1])})
    blobs = BlobStore(tmp_path)
    with RunStore(tmp_path / "run.db") as store, LocalExecutor(1) as executor:
        agent = ImageProcessingAgent(store, blobs, SPEC, executor, FILES)
        _add(store, small, 1)
        assert agent.run_round(1) == {"kept": 2}
        (replaced,) = [s for s in store.samples() if s.provenance.location.endswith("small.jpg")]
        _add(store, big, 2)
        assert agent.run_round(2) == {"kept": 1, "replaced": 1, "near_duplicate": 1}
        kept, rejected = _outcome(store)
        assert kept == {"big.png", "other.png"}
        assert rejected == {
            "small.jpg": (("near_duplicate",), "big.png"),
            "other.jpg": (("near_duplicate",), "other.png"),  # the worse copy came later
        }
        (why,) = [r.detail for r in store.rejections() if r.location.endswith("small.jpg")]
        assert "(320x320 PNG over 160x160 JPEG)" in why
        assert store.rejection_counts() == {"near_duplicate": 2}
        assert not blobs.path(replaced.blob).exists()  # its image went with it
        (new,) = [s for s in store.samples() if s.provenance.location.endswith("big.png")]
        assert (new.round, new.status) == (2, "processed")  # labelled like any other
        # a copy arriving later is compared with the copy kept now
        again = _write(tmp_path / "r3", {"again.jpg": _small_jpeg(tiles[0])})
        _add(store, again, 3)
        assert agent.run_round(3) == {"near_duplicate": 1}
        assert _outcome(store)[1]["again.jpg"] == (("near_duplicate",), "big.png")


def test_within_a_round_the_best_copy_is_kept_whatever_the_order(
    tmp_path: Path, tiles: list[Image.Image]
) -> None:
    files = {
        "1-small.jpg": _small_jpeg(tiles[0]),
        "2-small-twin.jpg": _small_jpeg(tiles[0]),  # the same pixels as the first
        "3-big.jpg": encode(tiles[0], "JPEG", quality=80),
        "4-big.png": encode(tiles[0]),
        "5-other.png": encode(tiles[2]),
    }
    paths = _write(tmp_path / "pool", files)
    with RunStore(tmp_path / "run.db") as store, LocalExecutor(1) as executor:
        agent = ImageProcessingAgent(store, BlobStore(tmp_path), SPEC, executor, FILES)
        _add(store, paths, 1)
        counts = agent.run_round(1)
        kept, rejected = _outcome(store)
    assert kept == {"4-big.png", "5-other.png"}
    # every copy names the one kept, exact copies of a replaced one included
    assert rejected == {
        "1-small.jpg": (("near_duplicate",), "4-big.png"),
        "2-small-twin.jpg": (("near_duplicate",), "4-big.png"),
        "3-big.jpg": (("near_duplicate",), "4-big.png"),
    }
    assert counts == {"kept": 2, "near_duplicate": 3}  # each candidate counted once


def _decisions(tmp: Path, paths: list[Path], batch: int) -> tuple[set[str], dict[str, object]]:
    tmp.mkdir()
    with (
        mock.patch.object(processing, "DEDUP_BATCH", batch),
        RunStore(tmp / "run.db") as store,
        LocalExecutor(1) as executor,
    ):
        _add(store, paths, 1)
        ImageProcessingAgent(store, BlobStore(tmp), SPEC, executor, FILES).run_round(1)
        return _outcome(store)  # type: ignore[return-value]


def test_batches_decide_as_one_image_at_a_time(tmp_path: Path, tiles: list[Image.Image]) -> None:
    files: dict[str, bytes] = {}
    for i, tile in enumerate(tiles):
        files[f"{i}-small.jpg"] = _small_jpeg(tile)
        files[f"{i}-mid.jpg"] = encode(tile.resize((240, 240)), "JPEG", quality=90)
        files[f"{i}-small-again.jpg"] = _small_jpeg(tile)
        files[f"{i}-big.png"] = encode(tile)
        files[f"{i}-mid-again.png"] = encode(tile.resize((240, 240)))
    paths = _write(tmp_path / "pool", files)
    batched = _decisions(tmp_path / "batched", paths, processing.DEDUP_BATCH)
    assert batched == _decisions(tmp_path / "single", paths, 1)
    assert batched[0] == {f"{i}-big.png" for i in range(len(tiles))}


def test_a_better_copy_of_an_existing_image_is_the_duplicate(
    tmp_path: Path, tiles: list[Image.Image]
) -> None:
    """The dataset being expanded is the user's: its images are never rejected."""
    mine = _write(tmp_path / "mine", {"mine.jpg": _small_jpeg(tiles[0])})
    pool = _write(tmp_path / "pool", {"big.png": encode(tiles[0])})
    with RunStore(tmp_path / "run.db") as store, LocalExecutor(1) as executor:
        agent = ImageProcessingAgent(store, BlobStore(tmp_path), SPEC, executor, FILES)
        _add(store, mine, 0, origin="existing")
        assert agent.run_round(0) == {"kept": 1}
        _add(store, pool, 1)
        assert agent.run_round(1) == {"near_duplicate": 1}
        assert _outcome(store) == ({"mine.jpg"}, {"big.png": (("near_duplicate",), "mine.jpg")})


class Crash(Exception):
    pass


def _crash_at_write(n: int) -> Any:
    """Patches the store so that its ``n``-th write of an outcome raises ``Crash``."""
    writes = ("record_outcome", "replace_sample")
    originals = {name: getattr(RunStore, name) for name in writes}
    calls = [0]

    def counted(name: str) -> object:
        def write(self: RunStore, *args: object) -> object:
            calls[0] += 1
            if calls[0] == n:
                raise Crash
            return originals[name](self, *args)

        return write

    return mock.patch.multiple(RunStore, **{w: counted(w) for w in writes})


def test_a_run_killed_at_any_write_resumes_to_the_same_outcome(
    tmp_path: Path, tiles: list[Image.Image]
) -> None:
    files = {
        "1-small.jpg": _small_jpeg(tiles[0]),
        "2-other.png": encode(tiles[1]),
        "3-small-twin.jpg": _small_jpeg(tiles[0]),
        "4-big.png": encode(tiles[0]),
        "5-small-again.jpg": _small_jpeg(tiles[0]),
    }
    paths = _write(tmp_path / "pool", files)
    reference = _decisions(tmp_path / "reference", paths, processing.DEDUP_BATCH)
    for n in range(1, len(files) + 1):
        run = tmp_path / f"killed-{n}"
        run.mkdir()
        with RunStore(run / "run.db") as store, LocalExecutor(1) as executor:
            _add(store, paths, 1)
            with _crash_at_write(n), pytest.raises(Crash):
                ImageProcessingAgent(store, BlobStore(run), SPEC, executor, FILES).run_round(1)
            # a new process: the agent rebuilds its state from the store
            ImageProcessingAgent(store, BlobStore(run), SPEC, executor, FILES).run_round(1)
            assert _outcome(store) == reference, n
    assert reference[0] == {"2-other.png", "4-big.png"}


def test_build_exports_the_large_original_and_reports_the_small_copy(
    tmp_path: Path, tiles: list[Image.Image]
) -> None:
    pool = tmp_path / "pool"
    _write(
        pool / "a",
        {
            "1-small.jpg": _small_jpeg(tiles[0]),
            "2-big.png": encode(tiles[0]),
            "3.png": encode(tiles[1]),
        },
    )
    _write(pool / "b", {"4.png": encode(tiles[2]), "5.png": encode(tiles[3])})
    spec = DatasetSpec(
        classes=(ClassSpec(name="a"), ClassSpec(name="b")),
        target_per_class=2,
        sources=(SourceSpec(location=str(pool)),),
    )
    result = build(spec, tmp_path / "run", workers=1)
    manifest = tmp_path / "run" / "export" / "imagefolder" / "manifest.jsonl"
    exported = {
        Path(json.loads(line)["provenance"]["location"]).name
        for line in manifest.read_text().splitlines()
    }
    assert exported == {"2-big.png", "3.png", "4.png", "5.png"}
    assert result.report.rejected_by_reason == {"near_duplicate": 1}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["rejected"] == {"near_duplicate": 1}
    assert summary["classes"]["a"]["exported"] == 2
    with RunStore(tmp_path / "run" / "run.db") as store:
        (rejection,) = store.rejections()
        assert Path(rejection.location).name == "1-small.jpg"
        assert Path(rejection.duplicate_of or "").name == "2-big.png"


def test_a_later_round_replaces_a_labelled_copy_in_the_build(tmp_path: Path) -> None:
    """Round 1 (38 candidates for 2×15 wanted) labels a small JPEG copy; round 2 collects
    more for the class still short and meets the large original, which takes its place."""
    pool = tmp_path / "pool"
    threes = digit_images(24, classes=(3,))
    _write(pool / "a", {f"p{i:02d}.png": encode(img) for i, (img, _) in enumerate(threes)})
    sevens = [img for img, _ in digit_images(15, classes=(7,))]
    files = {"p00-small.jpg": encode(sevens[0], "JPEG", quality=90)}  # listed first
    files |= {f"p{i:02d}.png": encode(img) for i, img in enumerate(sevens) if i}
    files["z-big.png"] = encode(sevens[0].resize((64, 64), Image.Resampling.LANCZOS))
    _write(pool / "b", files)
    spec = DatasetSpec(
        classes=(ClassSpec(name="a"), ClassSpec(name="b")),
        target_per_class=15,
        sources=(SourceSpec(location=str(pool)),),
    )
    result = build(spec, tmp_path / "run", workers=1)
    exported = {Path(s.provenance.location).name for s in result.exported if s.label == "b"}
    assert "z-big.png" in exported
    assert "p00-small.jpg" not in exported
    assert len(exported) == 15
    assert result.report.rejected_by_reason == {"near_duplicate": 1}
    with RunStore(tmp_path / "run" / "run.db") as store:
        (rejection,) = store.rejections()
        assert Path(rejection.duplicate_of or "").name == "z-big.png"
        assert [m for r, stage, m in store.events() if stage == "process" and r == 2] == [
            "kept 2, replaced 1"
        ]
