"""report.html: every section with the run's numbers (those of summary.json and the data card),
nothing loaded from outside the file, escaping, thumbnail caps, the -o guard, unfinished runs."""

from __future__ import annotations

import base64
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from datasetagent.cli import main
from datasetagent.config import NullReporter
from datasetagent.models import BACKENDS
from datasetagent.pipeline import build
from datasetagent.records import ClassLabel, Provenance, Rejection, Sample
from datasetagent.report import write_report
from datasetagent.report.gallery import SIDE, Thumbnails
from datasetagent.report.html import PER_CLASS, PER_REASON
from datasetagent.spec import ClassSpec, DatasetSpec, ImageConstraints, SourceSpec
from datasetagent.store import BlobStore, Candidate, RunStore
from helpers import digit_images, encode, write_class_folders
from test_backends_pipeline import ColourDetector, _squares, _squares_spec
from test_pipeline import make_pool, spec_for

SECTIONS = (
    "request",
    "targets",
    "balance",
    "rounds",
    "confidence",
    "quality",
    "rejections",
    "duplicates",
    "enhancement",
    "sources",
    "gallery",
    "review",
)


def section(page: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
    assert match is not None, key
    return match.group(1)


def imgs(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', html)


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cls")
    make_pool(root / "data")
    build(spec_for(root / "data"), root / "run", workers=1)
    return root / "run"


@pytest.fixture(scope="module")
def det_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("det")
    _squares(root / "pool", 24)
    BACKENDS._items["colour-squares"] = ColourDetector
    try:
        build(_squares_spec(root / "pool", "detection"), root / "run", labelers=["colour-squares"])
    finally:
        del BACKENDS._items["colour-squares"]
    return root / "run"


def test_a_build_writes_a_report_with_every_section_and_the_runs_numbers(cls_run: Path) -> None:
    page = (cls_run / "report.html").read_text(encoding="utf-8")
    summary = json.loads((cls_run / "summary.json").read_text())
    for key in SECTIONS:
        section(page, key)
    targets = section(page, "targets")
    assert f"<td>{summary['cbi']:.4f}</td>" in targets
    assert f"{summary['ssim_mean']:.4f} ({summary['ssim_p5']:.4f})" in targets
    for name, c in summary["classes"].items():
        row = f"<td>{name}</td><td>{c['target']}</td><td>{c['accepted']}</td>"
        assert f"{row}<td>{c['exported']}</td><td>{c['review']}</td>" in targets
    rejections = section(page, "rejections")
    for reason, n in summary["rejected"].items():
        assert f"<h3>{reason}: {n} (" in rejections
    datacard = (cls_run / "export" / "imagefolder" / "README.md").read_text()
    assert f"Class Balance Index (0 is balanced): {summary['cbi']:.4f}" in datacard
    rounds = section(page, "rounds")
    assert len(re.findall(r"<tr><td>\d+</td><td>(?:continue|done): ", rounds)) == summary["rounds"]
    assert f"done: {summary['stop_reason']}" in rounds
    gallery = section(page, "gallery")
    for name, c in summary["classes"].items():
        shown = min(PER_CLASS, c["exported"])
        assert f"<h3>{name} ({shown} of {c['exported']})</h3>" in gallery
    assert len(imgs(gallery)) == sum(
        min(PER_CLASS, c["exported"]) for c in summary["classes"].values()
    )
    # the duplicate pair: the rejected copy (a local file still there) beside the kept one
    assert len(imgs(section(page, "duplicates"))) == 2 * summary["rejected"]["exact_duplicate"]
    held = section(page, "review")
    assert f"<p>{summary['review']} samples are held back" in held
    # the quality histograms draw the thresholds of the spec
    assert "dark below 0.25" in section(page, "quality")


def test_the_report_loads_nothing_from_outside(cls_run: Path) -> None:
    page = (cls_run / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert csp is not None
    assert "default-src 'none'" in csp.group(1)
    assert "img-src data:;" in csp.group(1)
    for src in re.findall(r'\ssrc="([^"]*)"', page):
        assert src.startswith("data:image/jpeg;base64,")
    for href in re.findall(r'\shref="([^"]*)"', page):
        assert href.startswith(("#", "data:,")), href  # a run of local files links nowhere
    assert "url(" not in page
    assert "@import" not in page


def _colour_near(uri: str, rgb: tuple[int, int, int]) -> int:
    data = base64.b64decode(uri.split(",", 1)[1])
    arr = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    return int((np.abs(arr - np.array(rgb)).max(axis=-1) < 40).sum())


def test_a_detection_report_shows_objects_and_draws_boxes(det_run: Path) -> None:
    page = (det_run / "report.html").read_text(encoding="utf-8")
    summary = json.loads((det_run / "summary.json").read_text())
    objects = section(page, "objects")
    for name, n in summary["instances"].items():
        assert f"<td>{name}</td><td>{n}</td>" in objects
    assert f"per image {summary['boxes_per_image']:.2f}" in objects
    sizes = ", ".join(f"{k} {v}" for k, v in summary["box_sizes"].items())
    assert f"by COCO size: {sizes}" in objects
    gallery = section(page, "gallery")
    uris = imgs(gallery)
    assert len(uris) == summary["exported"] > 0
    assert 'class="card big"' in gallery
    # the red class's boxes are outlined in its colour (#0072b2)
    thumbs = Thumbnails(BlobStore(det_run), 10**8, "RGB")
    with RunStore(det_run / "run.db") as store:
        exported = [s for s in store.samples() if s.split is not None]
    assert len(exported) == len(uris)
    for s in exported:
        drawn = thumbs.sample(s, ("red", "blue"), draw=True)
        assert drawn in uris
        assert _colour_near(drawn, (0, 114, 178)) > _colour_near(
            thumbs.sample(s) or "", (0, 114, 178)
        )


SCORES = {"highlights": 0.9, "shadows": 0.1, "contrast": 40.0, "entropy": 5.0, "sharpness": 400.0}


def _sample(blobs: BlobStore, i: int, label: str | None, img: Image.Image, **kw: object) -> Sample:
    data = encode(img)
    digest = f"{i:064x}"
    prov = kw.pop("provenance", None) or Provenance(
        source_kind="openverse",
        location=f"https://img.example/{i}.png",
        licence="CC-BY-4.0",
    )
    return Sample(
        id=digest,
        blob=blobs.put(digest, "png", data),
        width=img.width,
        height=img.height,
        mode=img.mode,
        origin="collected",
        provenance=prov,  # type: ignore[arg-type]
        annotations=(ClassLabel(label=label, confidence=0.95, labeler="seed"),) if label else (),
        status=kw.pop("status", "labelled"),  # type: ignore[arg-type]
        scores={
            "highlights": 0.9,
            "shadows": 0.1,
            "contrast": 40.0,
            "entropy": 5.0,
            "sharpness": 400.0,
        },
        **kw,  # type: ignore[arg-type]
    )


def synthetic_run(
    run: Path,
    classes: tuple[str, ...],
    per_class: int,
    *,
    rejected: int = 0,
    held: int = 0,
    report: bool = True,
    provenance: Provenance | None = None,
    request: str = "",
) -> DatasetSpec:
    """A run store written directly: ``per_class`` labelled digits per class, ``rejected``
    corrupt candidates, ``held`` samples in review, and (``report``) one round's report."""
    spec = DatasetSpec(
        classes=tuple(ClassSpec(name=c) for c in classes),
        target_per_class=per_class,
        request=request,
    )
    run.mkdir(parents=True)
    blobs = BlobStore(run)
    images = digit_images(per_class + held, classes=(0,))
    n = len(classes) * per_class + held + rejected
    with RunStore(run / "run.db") as store:
        store.save_spec(spec)
        store.add_candidates(
            Candidate(source_kind="openverse", location=f"https://img.example/{i}.png",
                      licence="CC-BY-4.0")
            for i in range(n)
        )  # fmt: skip
        store.take_candidates(1, n, origin="collected", wanted=None)
        ids = [c.id for c in store.candidates_to_process(1)]
        k = 0
        for c in classes:
            for j in range(per_class):
                s = _sample(blobs, k, c, images[j][0], provenance=provenance)
                store.record_outcome(ids[k], 1, s)
                k += 1
        for j in range(held):
            s = _sample(blobs, k, classes[0], images[per_class + j][0], status="review",
                        review_reasons=("confidence 0.50 < 0.90",))  # fmt: skip
            store.record_outcome(ids[k], 1, s)
            k += 1
        for _ in range(rejected):
            rej = Rejection(location=f"https://img.example/{k}.png", source_kind="openverse",
                            reasons=("corrupt",), detail="damaged image data")  # fmt: skip
            store.record_outcome(ids[k], 1, rej)
            k += 1
        if report:
            from datasetagent.agents.supervision import SupervisionAgent

            r = SupervisionAgent(store, spec).assess(1)
            store.save_report(r.model_copy(update={"verdict": "done"}))
    return spec


def test_every_string_of_the_run_is_escaped_and_only_http_urls_are_links(tmp_path: Path) -> None:
    hostile = "<img src=x onerror=alert(1)>\"&'"
    prov = Provenance(
        source_kind="wikimedia",
        location="javascript:alert(1)",
        licence="CC-BY-4.0",
        creator=f"creator {hostile}",
        title=f"title {hostile}\u202e",
        page='https://commons.example/wiki/File:"x"<b>',
        licence_url="data:text/html,<script>alert(1)</script>",
    )
    spec = synthetic_run(
        tmp_path / "run", (hostile, "b"), 3, provenance=prov, request=f"request {hostile}"
    )
    with RunStore(tmp_path / "run" / "run.db") as store:
        path = write_report(tmp_path / "run", store, spec)
    page = path.read_text(encoding="utf-8")
    assert "<img src=x" not in page
    assert "<script" not in page
    assert "\u202e" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;&quot;&amp;&#x27;" in page
    assert "request &lt;img src=x" in page
    assert "creator &lt;img" in page
    assert "title &lt;img" in page
    hrefs = re.findall(r'\shref="([^"]*)"', page)
    assert "https://commons.example/wiki/File:%22x%22%3Cb%3E" in hrefs
    assert not [h for h in hrefs if h.startswith(("javascript", "data:text"))]
    assert all(h.startswith(("#", "data:,", "https://")) for h in hrefs)


def test_thumbnails_stay_capped_and_sampled_the_same_each_time(tmp_path: Path) -> None:
    classes = tuple(f"c{i}" for i in range(3))
    spec = synthetic_run(tmp_path / "run", classes, 40, rejected=30, held=20)
    with RunStore(tmp_path / "run" / "run.db") as store:
        first = write_report(tmp_path / "run", store, spec).read_text(encoding="utf-8")
        again = write_report(tmp_path / "run", store, spec).read_text(encoding="utf-8")
    assert first == again
    gallery = section(first, "gallery")
    for c in classes:
        block = gallery.split(f"<h3>{c} (")[1].split("<h3>")[0]
        assert len(imgs(block)) == PER_CLASS
    # rejected web candidates are not stored: their cards say so, at most PER_REASON of them
    rejections = section(first, "rejections")
    assert f"<h3>corrupt: 30 ({PER_REASON} of 30)</h3>" in rejections
    assert rejections.count('<div class="missing">no image to show</div>') == PER_REASON
    assert len(imgs(section(first, "review"))) == 12
    for uri in imgs(first):
        with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
            assert max(im.size) <= SIDE
    # many classes: fewer per class, the page stays small
    many = tuple(f"k{i}" for i in range(60))
    spec = synthetic_run(tmp_path / "many", many, 10)
    with RunStore(tmp_path / "many" / "run.db") as store:
        page = write_report(tmp_path / "many", store, spec).read_text(encoding="utf-8")
    per = Counter(re.findall(r'alt="(k\d+): ', section(page, "gallery")))
    assert set(per.values()) == {480 // 60}
    assert len(page) < 2_000_000


def test_a_run_with_no_finished_round_gets_a_report_of_what_it_holds(tmp_path: Path) -> None:
    spec = synthetic_run(tmp_path / "run", ("a", "b"), 4, held=2, report=False)
    result = CliRunner().invoke(main, ["report", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "no round has finished yet" in page
    assert "<td>a</td><td>4</td><td>4</td><td>4</td><td>2</td>" in section(page, "targets")
    assert "No round has finished yet." in section(page, "rounds")
    # a run with a spec and nothing else
    empty = tmp_path / "empty"
    empty.mkdir()
    with RunStore(empty / "run.db") as store:
        store.save_spec(spec)
    result = CliRunner().invoke(main, ["report", str(empty)])
    assert result.exit_code == 0, result.output
    assert "No image in the dataset yet." in (empty / "report.html").read_text(encoding="utf-8")


def test_report_o_replaces_only_reports(tmp_path: Path) -> None:
    synthetic_run(tmp_path / "run", ("a", "b"), 3)
    run = tmp_path / "run"
    runner = CliRunner()
    notes = tmp_path / "notes.html"
    notes.write_text("<p>my notes</p>")
    for target in (notes, run / "spec.yaml", run / "images" / "r.html", run / "summary.json"):
        before = target.read_bytes() if target.exists() else None
        result = runner.invoke(main, ["report", str(run), "-o", str(target)])
        assert result.exit_code == 2, (target, result.output)
        assert "error:" in result.output
        assert (target.read_bytes() if target.exists() else None) == before
    out = tmp_path / "r.html"
    result = runner.invoke(main, ["report", str(run), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out.resolve())
    result = runner.invoke(main, ["report", str(run), "-o", str(out)])  # its own: replaced
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["report", str(tmp_path)])  # not a run
    assert result.exit_code == 2
    assert "no run" in result.output


def test_a_report_that_cannot_be_written_is_a_note_not_a_failed_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_class_folders(tmp_path / "pool", digit_images(6, classes=(0, 1)))
    spec = DatasetSpec(
        classes=(ClassSpec(name="0"), ClassSpec(name="1")),
        target_per_class=5,
        image=ImageConstraints(min_side=16, color_mode="L", enhance="off"),
        sources=(SourceSpec(location=str(tmp_path / "pool")),),
    )

    def broken(*args: object, **kwargs: object) -> Path:
        raise OSError(28, "No space left on device")

    notes: list[str] = []

    class Notes(NullReporter):
        def note(self, message: str) -> None:
            notes.append(message)

    monkeypatch.setattr("datasetagent.report.write_report", broken)
    result = build(spec, tmp_path / "run", workers=1, reporter=Notes())
    assert result.report.targets_met
    assert (tmp_path / "run" / "summary.json").exists()
    assert not (tmp_path / "run" / "report.html").exists()
    assert any(n.startswith("report.html not written: ") for n in notes)
