from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from datasetagent.agents.labeling import DataLabelAgent
from datasetagent.agents.processing import ImageProcessingAgent
from datasetagent.errors import NoLabelerError, UsageError
from datasetagent.pipeline import build
from datasetagent.runtime.local import LocalExecutor
from datasetagent.spec import ClassSpec, DatasetSpec, ImageConstraints, LicencePolicy, SourceSpec
from datasetagent.store import BlobStore, Candidate, RunStore
from helpers import digit_images, encode, write_class_folders

CLASSES = (0, 1, 2, 3)


def make_pool(root: Path) -> dict[str, str | None]:
    """A seed set of 10 per class and a flat pool with 40 per class plus defects.

    Returns pool file -> true label (None for defects)."""
    write_class_folders(root / "seed", digit_images(10, classes=CLASSES))
    pool = root / "pool"
    pool.mkdir(parents=True)
    truth: dict[str, str | None] = {}
    for k, (img, label) in enumerate(digit_images(40, classes=CLASSES, offset=10)):
        path = pool / f"p{k:04d}.png"
        path.write_bytes(encode(img))
        truth[str(path)] = label
    first = (pool / "p0000.png").read_bytes()
    defects = {
        "dup.png": first,
        "trunc.png": first[: len(first) // 2],
        "page.jpg": b"<html>gone</html>",
        "blank.png": encode(Image.new("L", (32, 32), 0)),
        "small.png": encode(Image.open(pool / "p0001.png").resize((6, 6))),
    }
    for name, data in defects.items():
        (pool / name).write_bytes(data)
        truth[str(pool / name)] = None
    truth[str(pool / "dup.png")] = truth[str(pool / "p0000.png")]  # a good image, but twice
    (pool / "notes.txt").write_text("not a candidate")
    return truth


def spec_for(root: Path, target: int = 30, **kw: object) -> DatasetSpec:
    return DatasetSpec(
        classes=tuple(ClassSpec(name=str(c)) for c in CLASSES),
        target_per_class=target,
        image=ImageConstraints(min_side=32, color_mode="L", size=(32, 32)),
        existing=str(root / "seed"),
        sources=(SourceSpec(location=str(root / "pool")),),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def pool(tmp_path: Path) -> tuple[Path, dict[str, str | None]]:
    return tmp_path, make_pool(tmp_path / "data")


def exported_files(run: Path) -> set[str]:
    root = run / "export" / "imagefolder"
    return {p.relative_to(root).as_posix() for p in root.rglob("*.png")}


def test_build_expands_and_balances(pool: tuple[Path, dict[str, str | None]]) -> None:
    tmp, truth = pool
    result = build(spec_for(tmp / "data"), tmp / "run", workers=1)
    assert result.report.verdict == "done"
    assert result.report.targets_met
    assert result.report.cbi == 0.0
    assert len(result.exported) == 4 * 30
    rejected = dict(result.report.rejected_by_reason)
    # 32×32 renderings of 8×8 digits: a few different digits are near-identical pictures
    assert rejected.pop("near_duplicate", 0) < 20
    assert rejected == {
        "corrupt": 2,
        "dark": 1,  # the black blank: dark and low_information
        "exact_duplicate": 1,
        "low_information": 1,
        "tiny": 1,
    }
    collected = [s for s in result.exported if s.origin == "collected"]
    accuracy = sum(truth[s.provenance.location] == s.label for s in collected) / len(collected)
    assert accuracy >= 0.95
    locations = {s.provenance.location for s in result.exported}
    assert all(truth.get(loc, "seed") is not None for loc in locations)  # no defect exported
    assert not {str(tmp / "data/pool/dup.png"), str(tmp / "data/pool/p0000.png")} <= locations
    assert len(exported_files(tmp / "run")) == 120
    assert (tmp / "run" / "spec.yaml").exists()
    assert DatasetSpec.load(tmp / "run" / "spec.yaml") == result.spec


def test_pool_exhausted_is_reported(pool: tuple[Path, dict[str, str | None]]) -> None:
    tmp, _ = pool
    result = build(spec_for(tmp / "data", target=80), tmp / "run", workers=1)
    assert not result.report.targets_met
    assert result.report.reason.startswith("pool exhausted")
    assert result.report.round >= 1
    per_class = {c.name: c for c in result.report.classes}
    assert all(c.accepted < 80 for c in per_class.values())


def test_flat_pool_without_seeds_stops_before_work(
    pool: tuple[Path, dict[str, str | None]],
) -> None:
    tmp, _ = pool
    spec = spec_for(tmp / "data").model_copy(update={"existing": None})
    with pytest.raises(NoLabelerError, match="seed examples") as exc:
        build(spec, tmp / "run", workers=1)
    assert "--existing" in str(exc.value)
    assert "--labeler" in str(exc.value)
    with RunStore(tmp / "run" / "run.db") as store:
        assert store.samples() == []
        assert store.rejections() == []
    assert not (tmp / "run" / "images").exists()


def test_existing_run_is_not_overwritten(pool: tuple[Path, dict[str, str | None]]) -> None:
    tmp, _ = pool
    build(spec_for(tmp / "data"), tmp / "run", workers=1)
    with pytest.raises(UsageError, match="--resume"):
        build(spec_for(tmp / "data"), tmp / "run", workers=1)
    with pytest.raises(UsageError, match="differs"):
        build(spec_for(tmp / "data", target=20), tmp / "run", resume=True)


class Crash(Exception):
    pass


def test_resume_after_crash_between_stages(
    pool: tuple[Path, dict[str, str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp, _ = pool
    reference = build(spec_for(tmp / "data"), tmp / "ref", workers=1)

    original = DataLabelAgent.run_round

    def crash_on_round_1(
        self: DataLabelAgent, round_: int, *args: object, **kwargs: object
    ) -> object:
        if round_ == 1:
            raise Crash
        return original(self, round_, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(DataLabelAgent, "run_round", crash_on_round_1)
    with pytest.raises(Crash):
        build(spec_for(tmp / "data"), tmp / "run", workers=1)
    monkeypatch.setattr(DataLabelAgent, "run_round", original)
    processed = []
    real_round = ImageProcessingAgent.run_round

    def counting(self: ImageProcessingAgent, round_: int, *args: object) -> object:
        processed.append(round_)
        return real_round(self, round_)

    monkeypatch.setattr(ImageProcessingAgent, "run_round", counting)
    resumed = build(None, tmp / "run", resume=True, workers=1)
    assert 1 not in processed  # round 1 was processed before the crash and is not redone
    assert resumed.resumed_stages >= 5
    assert exported_files(tmp / "run") == exported_files(tmp / "ref")
    assert resumed.report.rejected_by_reason == reference.report.rejected_by_reason
    with RunStore(tmp / "run" / "run.db") as store:
        stages = [(r, s) for r, s, _ in store.events()]
    assert len(stages) == len(set(stages))  # every stage ran exactly once


def test_resume_after_crash_inside_processing(
    pool: tuple[Path, dict[str, str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp, _ = pool
    reference = build(spec_for(tmp / "data"), tmp / "ref", workers=1)
    calls = {"n": 0}
    original = RunStore.record_outcome

    def flaky(self: RunStore, *args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 70:  # in the middle of round 1
            raise Crash
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(RunStore, "record_outcome", flaky)
    with pytest.raises(Crash):
        build(spec_for(tmp / "data"), tmp / "run", workers=1)
    done_before = calls["n"] - 1
    calls["n"] = -(10**9)
    result = build(None, tmp / "run", resume=True, workers=1)
    with RunStore(tmp / "ref" / "run.db") as ref_store:
        total = len(ref_store.samples()) + len(ref_store.rejections())
    assert calls["n"] + 10**9 == total - done_before  # nothing processed twice
    assert exported_files(tmp / "run") == exported_files(tmp / "ref")
    assert result.report.rejected_by_reason == reference.report.rejected_by_reason


def test_class_folders_label_without_seeds(tmp_path: Path) -> None:
    items = digit_images(12, classes=(4, 7))
    write_class_folders(tmp_path / "photos", items)
    (tmp_path / "photos" / "misc").mkdir()
    spec = DatasetSpec(
        classes=(ClassSpec(name="4", synonyms=("four",)), ClassSpec(name="7")),
        target_per_class=10,
        image=ImageConstraints(min_side=32),
        sources=(SourceSpec(location=str(tmp_path / "photos")),),
    )
    result = build(spec, tmp_path / "run", workers=2)
    assert result.report.targets_met
    assert {a.labeler for s in result.exported for a in s.annotations} == {"folder-name"}
    assert all(s.mode == "RGB" for s in result.exported)
    assert result.split_counts == {"train": 16, "val": 2, "test": 2}


class RecordingSource:
    kind = "local"

    def __init__(self) -> None:
        self.read_calls: list[str] = []

    def candidates(self) -> Iterator[Candidate]:
        return iter(())

    def read(self, location: str) -> bytes:
        self.read_calls.append(location)
        return Path(location).read_bytes()


def test_licence_policy_refuses_before_reading(tmp_path: Path) -> None:
    paths = write_class_folders(tmp_path / "imgs", digit_images(1, classes=(1, 2)))
    spec = DatasetSpec(
        classes=(ClassSpec(name="1"), ClassSpec(name="2")), licences=LicencePolicy(mode="open")
    )
    source = RecordingSource()
    with RunStore(tmp_path / "run.db") as store, LocalExecutor(1) as executor:
        store.add_candidates(
            [
                Candidate(source_kind="local", location=str(paths[0]), licence="CC-BY-NC-4.0"),
                Candidate(source_kind="local", location=str(paths[1]), licence="CC-BY-4.0"),
            ]
        )
        store.take_candidates(1, 10, origin="collected", wanted=None)
        agent = ImageProcessingAgent(store, BlobStore(tmp_path), spec, executor, {"local": source})
        counts = agent.run_round(1)
        assert counts == {"licence": 1, "kept": 1}
        assert source.read_calls == [str(paths[1])]
        (rejection,) = store.rejections()
        assert rejection.reasons == ("licence",)
        assert "CC-BY-NC-4.0" in rejection.detail


def test_licence_policy_keeps_the_existing_dataset(tmp_path: Path) -> None:
    """The dataset being expanded is the user's own: its images stay whatever their licence;
    the policy governs what is collected for it."""
    paths = write_class_folders(tmp_path / "imgs", digit_images(1, classes=(1, 2)))
    spec = DatasetSpec(
        classes=(ClassSpec(name="1"), ClassSpec(name="2")), licences=LicencePolicy(mode="open")
    )
    source = RecordingSource()
    with RunStore(tmp_path / "run.db") as store, LocalExecutor(1) as executor:
        store.add_candidates(
            Candidate(source_kind="local", location=str(p), licence="CC-BY-NC-4.0", origin=o)
            for p, o in zip(paths, ("existing", "collected"), strict=True)
        )
        store.take_candidates(0, 10, origin="existing", wanted=None)
        agent = ImageProcessingAgent(store, BlobStore(tmp_path), spec, executor, {"local": source})
        assert agent.run_round(0) == {"kept": 1}
        store.take_candidates(1, 10, origin="collected", wanted=None)
        assert agent.run_round(1) == {"licence": 1}
        assert source.read_calls == [str(paths[0])]  # the refused one was never read


def test_near_copies_inside_the_existing_dataset_are_flagged_not_dropped(tmp_path: Path) -> None:
    """A near copy within the user's own dataset stays (flagged); the same copy arriving from
    a source is rejected as a near duplicate of it."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    (photo,) = [img for img, _ in digit_images(1, classes=(3,))]
    paths = []
    for name, img in (("a", photo), ("b", photo.resize((64, 64), Image.Resampling.BICUBIC))):
        paths.append(folder / f"{name}.png")
        img.save(paths[-1])
    spec = DatasetSpec(classes=(ClassSpec(name="3"), ClassSpec(name="4")))
    source = RecordingSource()
    with RunStore(tmp_path / "run.db") as store, LocalExecutor(1) as executor:
        store.add_candidates(
            Candidate(source_kind="local", location=str(p), licence="user", origin="existing")
            for p in paths
        )
        store.take_candidates(0, 10, origin="existing", wanted=None)
        agent = ImageProcessingAgent(store, BlobStore(tmp_path), spec, executor, {"local": source})
        assert agent.run_round(0) == {"kept": 2}
        flagged = {
            Path(s.provenance.location).name for s in store.samples() if "near_duplicate" in s.flags
        }
        assert flagged == {"b.png"}
        copy = folder / "c.png"
        photo.resize((48, 48), Image.Resampling.BICUBIC).save(copy)
        store.add_candidates(
            [Candidate(source_kind="local", location=str(copy), licence="user-supplied")]
        )
        store.take_candidates(1, 10, origin="collected", wanted=None)
        assert agent.run_round(1) == {"near_duplicate": 1}
