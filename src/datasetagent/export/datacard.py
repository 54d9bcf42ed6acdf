"""The data card (``README.md`` of every export): what is in the dataset and where it came from."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from datasetagent import __version__
from datasetagent.evaluate_result import Evaluation
from datasetagent.export.attribution import licence_link, licence_terms, md_text
from datasetagent.export.prepare import ExportStats
from datasetagent.metrics import compared
from datasetagent.records import Box, Mask, QualityReport, Sample
from datasetagent.spec import SPLIT_NAMES, DatasetSpec


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _objects(spec: DatasetSpec, stats: ExportStats) -> list[str]:
    """Objects per split and class, what was dropped and why, and what the format changed."""
    lines: list[str] = []
    if spec.task != "classification":
        lines += ["", "## Objects per split and class", ""]
        rows = []
        for c in spec.classes:
            per_split = [stats.objects[sp, c.name] for sp in SPLIT_NAMES]
            rows.append([c.name, *per_split, sum(per_split)])
        lines += _table(["class", *SPLIT_NAMES, "total"], rows)
    lines += ["", "## Annotations left out or changed", ""]
    if stats.dropped:
        lines += [
            "Dropped, never exported (each listed under `dropped` in `manifest.jsonl`):",
            "",
            *_table(["reason", "annotations"], sorted(stats.dropped.items())),
            "",
        ]
    else:
        lines.append("* No annotation was dropped.")
    if stats.clipped:
        lines.append(f"* Boxes clipped to their image: {stats.clipped}")
    for note, n in sorted(stats.notes.items()):
        lines.append(f"* {note}: {n}")
    return lines


def _share(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


def _by_count(counts: Counter[str]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _licence_mix(spec: DatasetSpec, samples: Sequence[Sample]) -> list[str]:
    """The licence policy, and the images per licence, per source kind and per both."""
    total = len(samples)
    by_licence = Counter(s.provenance.licence for s in samples)
    by_source = Counter(s.provenance.source_kind for s in samples)
    both = Counter((s.provenance.source_kind, s.provenance.licence) for s in samples)
    lines = [
        "",
        "## Sources and licences",
        "",
        f"Licence policy: `{spec.licences.describe()}` (`licences` in the spec below: the "
        "licences a collected image may have; the user's own files, and URL-list rows that "
        "name no licence, are `user-supplied`: the user vouches for them).",
        "",
    ]
    lines += _table(
        ["licence", "images", "share", "conditions"],
        [
            [licence_link(name), n, _share(n, total), md_text(licence_terms(name))]
            for name, n in _by_count(by_licence)
        ],
    )
    lines.append("")
    lines += _table(
        ["source", "images", "share"],
        [[md_text(kind), n, _share(n, total)] for kind, n in _by_count(by_source)],
    )
    lines.append("")
    lines += _table(
        ["source", "licence", "images"],
        [[md_text(kind), md_text(name), n] for (kind, name), n in sorted(both.items())],
    )
    lines += [
        "",
        "Every image's original location (the file, or the URL fetched), the page it is shown "
        "on, its title, creator, licence and processing steps are in `manifest.jsonl` and "
        "`ATTRIBUTION.md`; `LICENSES.md` says what each licence asks.",
    ]
    return lines


def _confidence_rule(spec: DatasetSpec, samples: Sequence[Sample]) -> list[str]:
    """The rule that decided which labels were exported, as it applies to this task."""
    floor = spec.quality.min_confidence
    where = "`manifest.jsonl` gives every image's labels with their confidence."
    if spec.task == "classification":
        return [
            f"New class labels below confidence {floor} were held back for review, not "
            f"exported; labels of the existing dataset count as given (1.0). {where}"
        ]
    scores = [
        a.confidence
        for s in samples
        if s.origin != "existing"
        for a in s.annotations
        if isinstance(a, Box | Mask)
    ]
    # as many digits as it takes to tell each end from the threshold (0.8996 is not "0.90")
    ends = [compared(end, floor)[0] for end in (min(scores), max(scores))] if scores else []
    spread = (
        f" The new objects' confidence in this export runs from {ends[0]} to {ends[1]}."
        if ends
        else ""
    )
    return [
        "An object is kept when a majority of the detectors found it at or above each "
        "detector's own score threshold (a labeler option, e.g. `owlv2.score_threshold`); "
        "an image with an object only a minority found, or with none, is held back for "
        f"review. `quality.min_confidence` ({floor}) applies to class labels only: detector "
        f"scores are not calibrated probabilities, so objects below it are exported.{spread} "
        + where
    ]


def render_datacard(
    spec: DatasetSpec,
    samples: Sequence[Sample],
    report: QualityReport | None,
    fmt: str,
    stats: ExportStats | None = None,
) -> str:
    per = Counter((s.split, s.label) for s in samples)
    lines = [
        f"# {spec.name}",
        "",
        f"A {spec.task} dataset of {len(samples)} images in {len(spec.classes)} classes, "
        f"exported as `{fmt}` by datasetagent {__version__}.",
    ]
    if spec.request:
        lines += ["", f'Requested as: "{spec.request}"']
    lines += ["", "## Images per split and class", ""]
    rows = [
        [
            c.name,
            *(per[(sp, c.name)] for sp in SPLIT_NAMES),
            sum(per[(sp, c.name)] for sp in SPLIT_NAMES),
            spec.target_for(c.name),
        ]
        for c in spec.classes
    ]
    lines += _table(["class", *SPLIT_NAMES, "total", "target"], rows)
    lines += ["", "## Quality", ""]
    if report is not None:
        lines.append(
            f"* Class Balance Index (0 is balanced): {report.cbi:.4f} "
            f"(target ≤ {spec.quality.cbi_max})"
        )
        rejected = ", ".join(f"{k} {v}" for k, v in report.rejected_by_reason.items()) or "none"
        lines.append(f"* Candidates rejected, by reason: {rejected}")
        no_class = report.review - sum(c.review for c in report.classes)
        lines.append(
            f"* Samples held back for human review: {report.review}"
            + (f" ({no_class} with no proposed class)" if no_class > 0 else "")
        )
        if report.ssim_mean is not None:
            lines.append(
                f"* Images enhanced: {report.enhanced}; SSIM to their input: mean "
                f"{report.ssim_mean:.4f}, 5th percentile {report.ssim_p5:.4f} (target mean ≥ "
                f"{spec.quality.ssim_mean_min}; unchanged images count as 1.0)"
            )
        lines.append(f"* Stopped because: {report.reason}")
        if report.alr is None or report.alr_interval is None:
            lines.append("* Label reliability (ALR): not audited in this run")
        else:
            lo, hi = report.alr_interval
            lines.append(
                f"* Label reliability (ALR): {report.alr:.4f}, 95% interval {lo:.4f}–{hi:.4f} "
                f"(target ≥ {spec.quality.alr_min}); {report.alr_method}"
            )
        if report.disputed:
            lines.append(f"* New labels a verifier disputed, held back: {report.disputed}")
        if report.relabelled:
            lines.append(
                f"* New labels replaced by the class all verifiers named: {report.relabelled}"
            )
        if report.confidence:
            bins = ", ".join(f"{k}: {v}" for k, v in report.confidence.items())
            lines.append(f"* Confidence of the new labels: {bins}")
        if report.instances:
            objects = ", ".join(f"{k} {v}" for k, v in report.instances.items())
            sizes = ", ".join(f"{k} {v}" for k, v in report.box_sizes.items())
            lines.append(
                f"* Objects per class: {objects}; per image {report.boxes_per_image or 0:.2f}; "
                f"by size: {sizes}"
            )
    if stats is not None:
        lines += _objects(spec, stats)
    labelers = Counter(a.labeler for s in samples for a in s.annotations)
    lines += ["", "## How labels were made", ""]
    lines += _table(["labeler", "images"], sorted(labelers.items()))
    lines += ["", *_confidence_rule(spec, samples)]
    lines += _licence_mix(spec, samples)
    lines += [
        "",
        "## The spec it was built from",
        "",
        "```yaml",
        spec.to_yaml().rstrip("\n"),
        "```",
        "",
    ]
    return "\n".join(lines)


#: The lines that bound the evaluation section of a data card (``with_evaluation``).
EVALUATION_BEGIN = "<!-- datasetagent evaluate: begin -->"
EVALUATION_END = "<!-- datasetagent evaluate: end -->"
#: The heading the evaluation section goes before, where the card has it.
_SPEC_HEADING = "## The spec it was built from"


def evaluation_lines(evaluation: Evaluation) -> list[str]:
    """The data card's section on ``datasetagent evaluate``: the model, the test set, the
    headline score of each training, the per-class table and (classification) the confusion
    matrix of the model trained on the export (rows: true class, columns: predicted)."""
    ev = evaluation
    t = ev.test
    objects = f", {t.objects} objects" if t.objects is not None else ""
    left = "objects of other classes" if ev.task != "classification" else "images without a class"
    lines = [
        EVALUATION_BEGIN,
        "## Held-out evaluation",
        "",
        f"`datasetagent evaluate` ({md_text(ev.when)}): model `{md_text(ev.model)}`, scored on "
        f"{t.n} held-out images{objects} of `{md_text(t.path)}` ({t.skipped} {left} of the "
        f"run left out; {t.overlap} images that are training images left out).",
        "",
    ]
    trained = ev.trained()
    lines += [f"* Trained on {what} ({s.n_train} images): {s.headline()}" for what, s in trained]
    metric = "accuracy" if ev.task == "classification" else "AP"
    header = ["class", *(f"{metric}, trained on {what}" for what, _ in trained)]
    rows = [[md_text(c), *(_number(s.per_class.get(c)) for _, s in trained)] for c in ev.classes]
    lines += ["", *_table(header, rows)]
    confusion = ev.trained_on_export.confusion
    if confusion is not None:
        names = list(confusion)
        predicted = [*names, *sorted({g for row in confusion.values() for g in row} - {*names})]
        lines += [
            "",
            "Confusion matrix of the model trained on the export (rows: true class, columns: "
            "predicted class, images):",
            "",
            *_table(
                ["true \\ predicted", *(md_text(p) for p in predicted)],
                [
                    [md_text(c), *(confusion[c].get(p, 0) for p in predicted)]
                    for c in names
                    if sum(confusion[c].values())
                ],
            ),
        ]
    return [*lines, EVALUATION_END]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def with_evaluation(card: str, evaluation: Evaluation) -> str:
    """The data card ``card`` with its evaluation section replaced by ``evaluation``'s (or
    added, before the spec where the card shows one, else at the end)."""
    lines = card.split("\n")
    if EVALUATION_BEGIN in lines and EVALUATION_END in lines:
        start, end = lines.index(EVALUATION_BEGIN), lines.index(EVALUATION_END)
        if start < end:
            del lines[start : end + 2 if end + 1 < len(lines) and not lines[end + 1] else end + 1]
    section = [*evaluation_lines(evaluation), ""]
    at = lines.index(_SPEC_HEADING) if _SPEC_HEADING in lines else len(lines)
    lines[at:at] = section
    return "\n".join(lines)
