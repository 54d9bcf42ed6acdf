"""The Supervision agent's loop with scripted models: a labeler that is wrong on a known share of
images and an independent verifier with its own error rate. The loop must find and hold back
the wrong labels, keep the right ones, and report an ALR whose interval holds the truth."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from datasetagent.metrics import CheckerRates, alr_after_check, wilson_interval
from datasetagent.models import BACKENDS, BackendConfig, Prediction, Usage, Verdict
from datasetagent.pipeline import build
from datasetagent.records import Sample
from datasetagent.spec import ClassSpec, DatasetSpec, ImageConstraints, SourceSpec
from datasetagent.store import RunStore
from helpers import digit_images, encode, write_class_folders

CLASSES = ("0", "1", "2", "3")
LABELER_ERROR = 0.10
VERIFIER_ERROR = 0.05


def _key(img: Image.Image) -> str:
    return hashlib.sha1(img.convert("L").tobytes()).hexdigest()


def _draw(*parts: str) -> float:
    """A fixed pseudo-random number in [0, 1) for these words (deterministic errors)."""
    digest = hashlib.sha256(":".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class FlippingLabeler:
    """Knows the truth and gives a wrong class on LABELER_ERROR of the images, confidently."""

    def __init__(self, config: BackendConfig, truth: dict[str, str]) -> None:
        self.name = "flipper"
        self.usage = Usage()
        self.classes = config.class_names
        self.truth = truth

    def predict(self, images: list[Image.Image]) -> list[Prediction]:
        out = []
        for img in images:
            key = _key(img)
            label = self.truth[key]
            if _draw("label", key) < LABELER_ERROR:
                others = [c for c in self.classes if c != label]
                label = others[int(_draw("which", key) * len(others))]
            out.append(Prediction(label, 0.99, {label: 0.99}))
        self.usage.calls += 1
        return out


class NoisyVerifier:
    """Knows the truth and answers wrongly on VERIFIER_ERROR of the questions."""

    def __init__(self, config: BackendConfig, truth: dict[str, str], name: str = "checker") -> None:
        self.name = name
        self.usage = Usage()
        self.truth = truth

    def verify(self, images: list[Image.Image], labels: list[str]) -> list[Verdict]:
        self.usage.calls += 1
        out = []
        for img, label in zip(images, labels, strict=True):
            key = _key(img)
            right = self.truth[key] == label
            agree = right if _draw(self.name, key, label) >= VERIFIER_ERROR else not right
            out.append(Verdict(agree, 0.9, None if agree else self.truth[key]))
        return out


def _flipped_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verifiers: list[str]
) -> tuple[DatasetSpec, dict[str, str]]:
    """30 seeds and a pool of 110 digits per class, the flipping labeler and a noisy verifier
    per name registered; the spec and the truth (image key -> class)."""
    seeds = digit_images(30, classes=tuple(map(int, CLASSES)))
    write_class_folders(tmp_path / "seed", seeds)
    pool = tmp_path / "pool"
    pool.mkdir()
    truth = {_key(img): label for img, label in seeds}
    for k, (img, label) in enumerate(digit_images(110, classes=(0, 1, 2, 3), offset=30)):
        (pool / f"x{k:04d}.png").write_bytes(encode(img))
        truth[_key(img)] = label
    monkeypatch.setitem(BACKENDS._items, "flipper", lambda c: FlippingLabeler(c, truth))
    for name in verifiers:
        monkeypatch.setitem(
            BACKENDS._items, name, lambda c, name=name: NoisyVerifier(c, truth, name)
        )
    spec = DatasetSpec(
        classes=tuple(ClassSpec(name=c) for c in CLASSES),
        target_per_class=130,  # more than the pool can give: every good label is exported
        image=ImageConstraints(min_side=16, color_mode="L", size=(32, 32), enhance="off"),
        existing=str(tmp_path / "seed"),
        sources=(SourceSpec(location=str(pool)),),
    )
    return spec, truth


def _flat_flipped_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_class: int, target: int
) -> tuple[DatasetSpec, dict[str, str]]:
    """A flat pool of ``per_class`` digits of each class, no seeds, the flipping labeler
    registered; the spec (``target`` per class) and the truth (image key -> class)."""
    pool = tmp_path / "pool"
    pool.mkdir()
    truth: dict[str, str] = {}
    for k, (img, label) in enumerate(digit_images(per_class, classes=(0, 1, 2, 3))):
        (pool / f"x{k:04d}.png").write_bytes(encode(img))
        truth[_key(img)] = label
    monkeypatch.setitem(BACKENDS._items, "flipper", lambda c: FlippingLabeler(c, truth))
    spec = DatasetSpec(
        classes=tuple(ClassSpec(name=c) for c in CLASSES),
        target_per_class=target,
        image=ImageConstraints(min_side=16, color_mode="L", enhance="off"),
        sources=(SourceSpec(location=str(pool)),),
    )
    return spec, truth


def test_loop_finds_injected_errors_and_alr_holds_the_truth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, truth = _flipped_pool(tmp_path, monkeypatch, ["checker"])
    result = build(spec, tmp_path / "run", labelers=["flipper"], verifiers=["checker"])

    with RunStore(tmp_path / "run" / "run.db") as store:
        new = store.samples(origin="collected")

    def true_label(s: object) -> str:
        with Image.open(tmp_path / "run" / s.blob) as img:  # type: ignore[attr-defined]
            return truth[_key(img)]

    wrong = [s for s in new if s.label is not None and s.label != true_label(s)]
    right = [s for s in new if s.label is not None and s.label == true_label(s)]
    assert len(wrong) >= 25  # about 10% of ~440 were flipped
    caught = [s for s in wrong if s.status != "labelled"]
    kept = [s for s in right if s.status == "labelled"]
    assert len(caught) >= 0.9 * len(wrong)
    assert len(kept) >= 0.9 * len(right)
    assert all("disputed: checker" in s.review_reasons[0] for s in caught)

    exported_new = [s for s in result.exported if s.origin == "collected"]
    accuracy = sum(s.label == true_label(s) for s in exported_new) / len(exported_new)
    report = result.report
    assert report.alr is not None
    assert report.alr_interval is not None
    assert report.alr_interval[0] <= accuracy <= report.alr_interval[1], (accuracy, report)
    assert "calibrated on 80 existing images" in report.alr_method
    assert report.disputed == len([s for s in new if s.status == "review"])
    assert (
        result.summary()["alr_audited"]
        == report.alr_audited
        == len(new) - len([s for s in new if s.status == "rejected"])
    )


def test_two_verifiers_relabel_what_they_both_reject_as_one_other_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two independent checkers (5% wrong each): a label both reject while naming the same
    other class takes that class; one checker alone (the test above) only holds it back."""
    spec, truth = _flipped_pool(tmp_path, monkeypatch, ["checker", "second"])
    run = tmp_path / "run"
    result = build(spec, run, labelers=["flipper"], verifiers=["checker", "second"])
    with RunStore(run / "run.db") as store:
        new = store.samples(origin="collected")

    def true_label(s: Sample) -> str:
        with Image.open(run / s.blob) as img:
            return truth[_key(img)]

    flipped = [s for s in new if any(a.labeler == "flipper" for a in s.annotations)]
    relabelled = [s for s in new if s.annotations[0].labeler == "checker+second"]
    assert len(relabelled) >= 25  # about 10% of ~440 were flipped
    assert all(s.status == "labelled" and s.label == true_label(s) for s in relabelled)
    assert all(
        s.review_reasons[-1].startswith("relabelled: checker and second say") for s in relabelled
    )
    wrong_left = [s for s in flipped if s.status == "labelled" and s.label != true_label(s)]
    injected = (
        len(relabelled)
        + len(wrong_left)
        + sum(s.status != "labelled" and s.label != true_label(s) for s in flipped)
    )
    assert len(relabelled) >= 0.9 * injected  # fixed, not only held back
    right = [s for s in flipped if s.label == true_label(s)]
    assert sum(s.status == "labelled" for s in right) >= 0.85 * len(right)
    assert result.report.relabelled == len(relabelled)
    assert result.summary()["relabelled"] == len(relabelled)
    # ALR of the labels both confirmed: the second checker's filtering is counted in
    confirmed = [s for s in result.exported if s.origin == "collected" and s not in relabelled]
    right_ones = sum(s.label == true_label(s) for s in confirmed)
    report = result.report
    assert report.alr_interval is not None
    lo, hi = report.alr_interval
    # 0 errors in ~340 measures an accuracy near, not at, 1: the intervals must overlap
    measured_lo, _ = wilson_interval(right_ones, len(confirmed))
    assert lo <= right_ones / len(confirmed)
    assert hi >= measured_lo, (right_ones, len(confirmed), report.alr_interval)
    assert report.alr is not None
    assert report.alr > 0.995  # "checker" alone estimates 0.988: its filter is not the last
    assert "confirmed by second too" in report.alr_method


def test_an_auditor_measures_alr_directly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With an auditor whose answers are the truth (a person, ground truth), ALR is the share of
    a random sample of accepted labels it confirms, with a Wilson interval."""
    spec, truth = _flat_flipped_pool(tmp_path, monkeypatch, 40, 30)
    oracle = NoisyVerifier(BackendConfig(classes=()), truth, "ground-truth")
    monkeypatch.setattr("test_supervision_loop.VERIFIER_ERROR", 0.0)
    run = tmp_path / "run"
    result = build(spec, run, labelers=["flipper"], auditors=[oracle])
    report = result.report
    # up to 50 accepted labels audited per round; ALR counts those of the exported ones
    exported = {s.id: s for s in result.exported if s.origin == "collected"}
    with RunStore(run / "run.db") as store:
        audited = [a for a in store.audits("audit") if a.sample_id in exported]
    right = 0
    for a in audited:
        with Image.open(run / exported[a.sample_id].blob) as img:
            right += a.label == truth[_key(img)]
    assert 30 <= len(audited) == report.alr_audited <= 50 * report.round
    assert report.alr == pytest.approx(right / len(audited))
    assert right < len(audited)  # the labeler is 90% right: the audit saw its errors
    assert report.alr_method == f"audit of {len(audited)} accepted labels by ground-truth"
    assert "ALR" in report.reason  # under the 0.988 target: the user is told
    assert report.alr_interval == pytest.approx(wilson_interval(right, len(audited)))


def test_alr_after_check_covers_the_kept_accuracy() -> None:
    rates = CheckerRates.measure([True] * 38 + [False] * 2, [False] * 38 + [True] * 2)
    est, lo, hi = alr_after_check(430, 500, rates)
    # 90% right labels, a checker confirming 95% of right and 5% of wrong ones: of the
    # confirmed labels 0.855 / 0.86 = 99.4% are right
    assert lo <= 0.994 <= hi
    assert est == pytest.approx(0.9942, abs=0.01)
    assert lo > 0.95
    useless = CheckerRates.measure([True] * 10 + [False] * 10, [True] * 10 + [False] * 10)
    assert not useless.informative
    # confirmed by a second, independent checker alike too: 0.81225 / 0.8125 are right
    est2, lo2, hi2 = alr_after_check(430, 500, rates, [rates])
    assert lo2 <= 0.9997 <= hi2
    assert est2 == pytest.approx(0.9997, abs=0.001)
    assert (lo2, hi2) > (lo, hi)


def test_expansion_never_copies_the_existing_set_and_moves_toward_balance(
    tmp_path: Path,
) -> None:
    from datasetagent.metrics import cbi

    # an unbalanced existing set: 24 zeros, 6 ones
    seeds = digit_images(24, classes=(0,)) + digit_images(6, classes=(1,))
    write_class_folders(tmp_path / "seed", seeds)
    pool = tmp_path / "pool"
    pool.mkdir()
    copies = set()
    for k, (img, _) in enumerate(seeds[::3]):  # altered copies of existing images
        variants = {
            "jpg": encode(img.convert("RGB"), "JPEG", quality=80),
            "big": encode(img.resize((40, 40))),
            "bright": encode(img.point(lambda v: min(255, v + 12))),
        }
        for name, data in variants.items():
            path = pool / f"copy{k:02d}-{name}.{'jpg' if name == 'jpg' else 'png'}"
            path.write_bytes(data)
            copies.add(str(path))
    for k, (img, label) in enumerate(digit_images(30, classes=(0, 1), offset=30)):
        (pool / label).mkdir(exist_ok=True)
        (pool / label / f"new{k:03d}.png").write_bytes(encode(img))
    spec = DatasetSpec(
        classes=(ClassSpec(name="0"), ClassSpec(name="1")),
        target_per_class=30,
        image=ImageConstraints(min_side=16, color_mode="L", size=(32, 32), enhance="off"),
        existing=str(tmp_path / "seed"),
        sources=(SourceSpec(location=str(pool)),),
    )
    result = build(spec, tmp_path / "run")
    exported = {s.provenance.location for s in result.exported}
    assert not exported & copies
    with RunStore(tmp_path / "run" / "run.db") as store:
        reasons = {r.location: r.reasons for r in store.rejections()}
        kept = {s.provenance.location for s in store.samples()}
    looked_at = [c for c in copies if c in reasons or c in kept]
    assert len(looked_at) >= len(copies) // 2
    assert not set(looked_at) & kept  # every copy looked at was refused as a duplicate
    assert {reasons[c][0] for c in looked_at} <= {"near_duplicate", "exact_duplicate"}
    before = cbi({"0": 24, "1": 6})
    counts = {c: sum(s.label == c for s in result.exported) for c in ("0", "1")}
    assert counts == {"0": 30, "1": 30}
    assert cbi(counts) < before


def test_human_review_round_trip_measures_alr_and_fixes_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import subprocess
    import sys

    spec, truth = _flat_flipped_pool(tmp_path, monkeypatch, 30, 40)
    run = tmp_path / "run"
    first = build(spec, run, labelers=["flipper"])
    assert first.report.alr is None  # no checker of any kind: not measured, not guessed

    cli = [sys.executable, "-m", "datasetagent", "review", str(run)]
    queue = tmp_path / "queue.jsonl"
    out = subprocess.run(
        [*cli, "--write", str(queue), "--audit", "40"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in queue.read_text().splitlines()]
    assert {x["kind"] for x in lines} == {"audit"}
    assert len(lines) == 40
    wrong = 0
    for x in lines:  # the person looks at each image and says what it shows
        with Image.open(x["image"]) as img:
            right = truth[_key(img)]
        wrong += right != x["label"]
        x["decision"], x["label"] = (
            ("accept", x["label"]) if right == x["label"] else ("relabel", right)
        )
    assert wrong > 0  # the audit met flipped labels: the relabel path runs
    queue.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = subprocess.run([*cli, "--apply", str(queue)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"relabel {wrong}" in out.stderr
    assert "audit of 40 accepted labels by human" in out.stderr
    with RunStore(run / "run.db") as store:
        report = store.reports()[-1]
        fixed = [s for s in store.samples() if any(a.labeler == "human" for a in s.annotations)]
    assert report.alr == pytest.approx((40 - wrong) / 40)
    assert len(fixed) == 40
    for s in fixed:
        with Image.open(run / s.blob) as img:
            assert s.label == truth[_key(img)]

    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({**lines[0], "decision": "maybe"}) + "\n")
    out = subprocess.run([*cli, "--apply", str(broken)], capture_output=True, text=True)
    assert out.returncode == 2
    assert f"{broken}:1: decision 'maybe' is not one of" in out.stderr


def test_the_audit_is_drawn_from_the_exported_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ALR describes the dataset handed over, so a finished run's audit sample comes from the
    new samples it exports, not from accepted labels left out of it."""
    import json
    import subprocess
    import sys

    spec, _ = _flat_flipped_pool(tmp_path, monkeypatch, 30, 8)
    run = tmp_path / "run"
    result = build(spec, run, labelers=["flipper"])
    exported = {s.id for s in result.exported if s.origin == "collected"}
    with RunStore(run / "run.db") as store:
        accepted = {s.id for s in store.samples(status=["labelled"], origin="collected")}
    assert exported < accepted  # more accepted labels than the targets take
    queue = tmp_path / "queue.jsonl"
    out = subprocess.run(
        [sys.executable, "-m", "datasetagent", "review", str(run), "--write", str(queue)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    audit = [x for x in map(json.loads, queue.read_text().splitlines()) if x["kind"] == "audit"]
    assert {x["id"] for x in audit} == exported
