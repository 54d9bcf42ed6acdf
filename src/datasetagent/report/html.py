"""The report page: one self-contained HTML file that opens anywhere, offline.

No script, no font, no stylesheet or image from anywhere else: the style is inline (allowed by
its hash in the page's Content-Security-Policy, which forbids every other load), the charts are
inline SVG (``charts.py``) and the thumbnails JPEG data URIs (``gallery.py``). Every string from
the run (class names, the request, titles, creators, reasons, locations) is escaped; only
http(s) URLs become links.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import math
import re
from collections import Counter
from collections.abc import Callable

from datasetagent import __version__
from datasetagent.agents.supervision import (
    CONFIDENCE_BINS,
    confidence_histogram,
    object_area,
    rejected_reason,
)
from datasetagent.export.attribution import http_url, licence_terms
from datasetagent.licences import licence_url
from datasetagent.metrics import compared
from datasetagent.records import Box, Mask, Rejection, Sample
from datasetagent.report.charts import Bins, bars, esc, histogram, stacked, table
from datasetagent.report.facts import RunFacts
from datasetagent.report.gallery import Thumbnails, pick
from datasetagent.spec import SPLIT_NAMES
from datasetagent.tools.quality import relative_sharpness

#: Marks a file as a report of this tool (``check_report_file`` replaces only such files).
GENERATOR = "datasetagent report"
#: Thumbnails per gallery: per class (fewer when there are many classes: ``GALLERY_TOTAL``
#: over all of them), per rejection reason, duplicate pairs, before/after pairs, held back.
PER_CLASS = 24
GALLERY_TOTAL = 480
PER_REASON = 12
PAIRS = 12
BEFORE_AFTER = 6
HELD = 12
#: Characters of a rejection's detail shown.
DETAIL_CHARS = 300

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:0 16px 48px;
color:#1b1b1b;background:#fff}
h1{margin:20px 0 4px}h2{margin-top:36px;border-bottom:1px solid #ccc;padding-bottom:4px}
nav{display:flex;flex-wrap:wrap;gap:4px 12px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f3f3f3}
.met{color:#006d2c;font-weight:600}.unmet{color:#b30000;font-weight:600}
.none{color:#666}
figure{margin:12px 0}figcaption{font-size:13px;color:#333}
.grid{display:flex;flex-wrap:wrap;gap:8px}
.card{width:132px;font-size:11px;word-break:break-all}
.card img{display:block;width:96px;height:96px;object-fit:contain;background:#eee;
border:1px solid #ccc}.card.big img{width:128px;height:128px}
.pair{display:flex;gap:6px;align-items:flex-start;margin:6px 12px 6px 0}
.missing{width:96px;height:96px;border:1px dashed #aaa;color:#666;font-size:11px;
display:flex;align-items:center;justify-content:center;text-align:center}
pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:480px}
blockquote{margin:8px 0;padding:6px 12px;border-left:4px solid #0072b2;background:#f4f8fb}
"""


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(STYLE.encode("utf-8")).digest()).decode("ascii")
    return (
        f"default-src 'none'; img-src data:; style-src 'sha256-{digest}'; "
        "base-uri 'none'; form-action 'none'"
    )


def _link(text: str | None, url: str | None) -> str:
    """``text`` (or the URL) linked to ``url`` where that is an http(s) URL; escaped text else."""
    href = http_url(url)
    shown = esc(text or url or "")
    if href is None:
        return shown
    return f'<a href="{esc(href)}" rel="noopener noreferrer nofollow">{shown or esc(href)}</a>'


def _verdict(met: bool | None) -> str:
    if met is None:
        return '<span class="none">not measured</span>'
    return '<span class="met">met</span>' if met else '<span class="unmet">not met</span>'


def _img(uri: str | None, alt: str, missing: str = "not kept") -> str:
    if uri is None:
        return f'<div class="missing">{esc(missing)}</div>'
    return f'<img src="{uri}" alt="{esc(alt)}" title="{esc(alt)}">'


def _card(
    uri: str | None, alt: str, caption: str, missing: str = "not kept", big: bool = False
) -> str:
    kind = "card big" if big else "card"
    return f'<div class="{kind}">{_img(uri, alt, missing)}{caption}</div>'


def _share(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


class Page:
    """Renders the report of one run's facts; ``thumbs`` makes its thumbnails."""

    def __init__(self, facts: RunFacts, thumbs: Thumbnails) -> None:
        self.f = facts
        self.spec = facts.spec
        self.thumbs = thumbs
        self.classes = [c.name for c in self.spec.classes]
        self.detection = self.spec.task != "classification"
        #: The dataset's samples by class (a sample's label is worked out on each read).
        self.by_class: dict[str | None, list[Sample]] = {}
        for sample in facts.exported:
            self.by_class.setdefault(sample.label, []).append(sample)
        self.counts = Counter({c: len(items) for c, items in self.by_class.items()})

    # -- the page ------------------------------------------------------------------------------
    def render(self) -> str:
        sections: list[tuple[str, str, Callable[[], str]]] = [
            ("request", "Request and spec", self.request),
            ("targets", "Targets", self.targets),
            ("balance", "Class balance", self.balance),
            ("rounds", "Rounds of the feedback loop", self.rounds),
            ("confidence", "Label confidence per class", self.confidence),
            ("quality", "Quality scores", self.quality),
            ("rejections", "Rejections by reason", self.rejections),
            ("duplicates", "Duplicates found", self.duplicates),
            ("enhancement", "Enhancement", self.enhancement),
            ("sources", "Sources and licences", self.sources),
        ]
        if self.detection:
            sections.append(("objects", "Objects", self.objects))
        if self.f.evaluation is not None:
            sections.append(("evaluation", "Held-out evaluation", self.evaluation))
        sections += [
            ("gallery", "Gallery per class", self.gallery),
            ("review", "Held back for review", self.review),
        ]
        nav = "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title, _ in sections)
        body = "".join(
            f'<section id="{key}"><h2>{esc(title)}</h2>{make()}</section>'
            for key, title, make in sections
        )
        return (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_csp()}">'
            f'<meta name="generator" content="{GENERATOR} {esc(__version__)}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,">'
            f"<title>{esc(self.spec.name)}: datasetagent report</title>"
            f"<style>{STYLE}</style></head><body>"
            f"<h1>{esc(self.spec.name)}</h1>{self.headline()}<nav>{nav}</nav>{body}"
            "</body></html>\n"
        )

    def headline(self) -> str:
        f = self.f
        n = len(f.exported)
        state = (
            f"finished after {f.last.round} round(s): {esc(f.last.reason)}"
            if f.finished
            else "the run has not finished"
            + (
                f" (last round: {f.last.round}, {esc(f.last.verdict)}: {esc(f.last.reason)})"
                if not f.measured_now
                else " (no round has finished yet: numbers are measured on what is stored now)"
            )
        )
        what = "exported" if f.finished else "selected so far"
        return (
            f"<p>A {esc(self.spec.task)} dataset of {n} images ({what}) in "
            f"{len(self.classes)} classes; {state}. Report by datasetagent "
            f"{esc(__version__)}.</p>"
        )

    # -- sections ------------------------------------------------------------------------------
    def request(self) -> str:
        spec = self.spec
        out = []
        if spec.request:
            out.append(f"<p>Requested as:</p><blockquote>{esc(spec.request)}</blockquote>")
        else:
            out.append("<p>Built from a spec file (no request text).</p>")
        rows = [
            ("task", spec.task),
            ("classes", ", ".join(self.classes)),
            ("existing dataset", spec.existing or "none"),
            ("sources", "; ".join(f"{s.kind}: {s.location}" for s in spec.sources) or "none"),
            ("licences", spec.licences.describe()),
            ("formats", ", ".join(spec.formats)),
            ("splits", ", ".join(f"{k} {v:g}" for k, v in spec.splits.model_dump().items())),
        ]
        out.append(table(("setting", "value"), rows))
        out.append(
            "<details><summary>The whole spec (spec.yaml)</summary>"
            f"<pre>{esc_block(spec.to_yaml())}</pre></details>"
        )
        return "".join(out)

    def targets(self) -> str:
        r, q = self.f.last, self.spec.quality
        note = (
            "<p>No round has finished: measured on the samples stored so far.</p>"
            if self.f.measured_now
            else ""
        )
        cbi_shown, cbi_target = compared(r.cbi, q.cbi_max, 4)
        rows: list[tuple[str, str, str, str]] = [
            (
                "Class Balance Index (0 is balanced)",
                cbi_shown,
                f"≤ {cbi_target}",
                _verdict(r.cbi <= q.cbi_max),
            )
        ]
        if r.ssim_mean is None or r.ssim_p5 is None:
            rows.append(("SSIM to the input, mean", "no image selected", f"≥ {q.ssim_mean_min}",
                         _verdict(None)))  # fmt: skip
        else:
            shown, target = compared(r.ssim_mean, q.ssim_mean_min, 4)
            rows.append(
                (
                    "SSIM to the input, mean (5th percentile)",
                    f"{shown} ({r.ssim_p5:.4f}); {r.enhanced} images enhanced, the rest "
                    "unchanged count as 1.0",
                    f"≥ {target}",
                    _verdict(r.ssim_mean >= q.ssim_mean_min),
                )
            )
        if r.alr is None or r.alr_interval is None:
            rows.append(("Label reliability (ALR)", "not audited in this run",
                         f"≥ {q.alr_min}", _verdict(None)))  # fmt: skip
        else:
            lo, hi = r.alr_interval
            shown, target = compared(r.alr, q.alr_min, 4)
            straddle = "; the interval reaches below the target" if lo < q.alr_min <= r.alr else ""
            rows.append(
                (
                    "Label reliability (ALR)",
                    f"{shown}, 95% interval {lo:.4f}–{hi:.4f}, {r.alr_audited} audited"
                    f"{straddle}; {r.alr_method}",
                    f"≥ {target}",
                    _verdict(r.alr >= q.alr_min),
                )
            )
        filled = sum(c.accepted >= c.target for c in r.classes)
        rows.append(
            (
                "Classes at their target",
                f"{filled} of {len(r.classes)}",
                "all",
                _verdict(r.targets_met),
            )
        )
        head = table(
            ("target", "value", "wanted", ""),
            [(esc(a), esc(b), esc(c), d) for a, b, c, d in rows],
            raw=True,
        )
        exported = self.counts
        fill = [
            (
                esc(c.name),
                c.target,
                c.accepted,
                exported.get(c.name, 0),
                c.review,
                _verdict(c.accepted >= c.target),
            )
            for c in r.classes
        ]
        what = "exported" if self.f.finished else "selected"
        return (
            note
            + head
            + "<h3>Per-class fill</h3>"
            + table(("class", "target", "accepted", what, "held for review", ""), fill, raw=True)
            + f"<p>Held back for review: {r.review}; stopped because: {esc(r.reason)}.</p>"
        )

    def balance(self) -> str:
        counts = self.counts
        targets = self.spec.targets()
        same = len(set(targets.values())) == 1
        what = "exported" if self.f.finished else "selected so far"
        chart = bars(
            f"Images per class ({what}); CBI {self.f.last.cbi:.4f}",
            [(c, counts.get(c, 0)) for c in self.classes],
            target=next(iter(targets.values())) if same and targets else None,
            header=("class", "images"),
        )
        per = Counter((s.split, c) for c, items in self.by_class.items() for s in items)
        splits = table(
            ("class", *SPLIT_NAMES, "total", "target"),
            [
                (c, *(per[sp, c] for sp in SPLIT_NAMES), counts.get(c, 0), targets.get(c, 0))
                for c in self.classes
            ],
        )
        return chart.html() + (f"<h3>Per split</h3>{splits}" if self.f.finished else "")

    def rounds(self) -> str:
        f = self.f
        by_round: dict[int, list[tuple[str, str]]] = {}
        for round_, stage, message in f.events:
            by_round.setdefault(round_, []).append((stage, message))
        reports = {r.round: r for r in f.reports}
        out = []
        if len(f.reports) > 1:
            out.append(
                bars(
                    "CBI after each round",
                    [(f"round {r.round}", r.cbi) for r in f.reports],
                    target=self.spec.quality.cbi_max,
                    header=("round", "CBI"),
                    shown=lambda v: f"{v:.4f}",
                ).html()
            )
        rows = []
        for r in f.reports:
            fill = ", ".join(f"{c.name} {c.accepted}/{c.target}" for c in r.classes)
            rows.append(
                (
                    r.round,
                    f"{r.verdict}: {r.reason}",
                    f"{r.cbi:.4f}",
                    r.candidates_seen,
                    r.candidates_left,
                    r.review,
                    fill,
                )
            )
        if rows:
            out.append(
                table(
                    (
                        "round",
                        "Supervision decided",
                        "CBI",
                        "candidates seen",
                        "usable left",
                        "held",
                        "accepted/target",
                    ),
                    rows,
                )
            )
        else:
            out.append("<p>No round has finished yet.</p>")
        order = sorted(by_round, key=lambda k: (k == -1, k))
        for round_ in order:
            name = (
                "final (split and exports)"
                if round_ == -1
                else "round 0 (listing, existing dataset, checkers)"
                if round_ == 0
                else f"round {round_}"
            )
            if round_ in reports:
                name += f": {reports[round_].verdict}"
            items = "".join(
                f"<li><b>{esc(stage)}</b>: {esc(message)}</li>"
                for stage, message in by_round[round_]
            )
            out.append(f"<details open><summary>{esc(name)}</summary><ol>{items}</ol></details>")
        return "".join(out)

    def confidence(self) -> str:
        keys = [f"{a:.2f}-{b:.2f}" for a, b in itertools.pairwise(CONFIDENCE_BINS)]
        rows = []
        given = Counter(
            c for c, items in self.by_class.items() for s in items if s.origin == "existing"
        )
        for c in self.classes:
            hist = confidence_histogram(self.by_class.get(c, []))
            rows.append((c, [hist.get(k, 0) for k in keys]))
        overall = self.f.last.confidence
        rows_shown = [r for r in rows if sum(r[1])]
        out = [
            "<p>Confidence of the new labels in the dataset, per class (labels of an existing "
            "dataset count as given and are not binned"
            + (
                ": " + ", ".join(f"{esc(c)} {n}" for c, n in sorted(given.items()) if c) + ")"
                if given
                else ")"
            )
            + ". For boxes and masks an image's confidence is its weakest object's.</p>"
        ]
        if rows_shown:
            out.append(stacked("New labels per confidence bin, per class", rows_shown, keys).html())
        else:
            out.append("<p>No new label in the dataset.</p>")
        if overall:
            out.append(
                "<p>All classes (the data card's numbers): "
                + esc(", ".join(f"{k}: {v}" for k, v in overall.items()))
                + "</p>"
            )
        return "".join(out)

    def quality(self) -> str:
        t = self.spec.image.checks
        scored = [s for s in self.f.samples if s.scores]
        flagged = Counter(flag for s in self.f.samples for flag in s.flags)
        measures: list[tuple[str, str, Callable[[dict[str, float]], float], float, str]] = [
            ("highlights", "99th percentile of luma (0-1)", lambda x: x["highlights"],
             t.dark_highlights, "dark below"),
            ("shadows", "1st percentile of luma (0-1)", lambda x: x["shadows"],
             t.bright_shadows, "bright above"),
            ("contrast", "grey-level standard deviation", lambda x: x["contrast"],
             t.min_contrast, "low information below"),
            ("entropy", "grey-level entropy (bits)", lambda x: x["entropy"],
             t.min_entropy, "low information below"),
            ("sharpness", "Laplacian variance over grey variance", relative_sharpness,
             t.min_sharpness, "blurry below"),
        ]  # fmt: skip
        out = [
            f"<p>Scores of the {len(scored)} stored images (measured on a copy at most 160 px "
            "a side), with the thresholds of <code>image.checks</code>. Rejected candidates "
            "are not stored, so their scores are not drawn (their detail under Rejections "
            "gives them). Issues flagged without rejecting ("
            + esc(", ".join(t.flag_only) or "none")
            + "): "
            + esc(", ".join(f"{k} {v}" for k, v in sorted(flagged.items())) or "none")
            + ".</p>"
        ]
        for name, axis, measure, threshold, mark in measures:
            values = [measure(s.scores) for s in scored if name in s.scores or name == "sharpness"]
            chart = histogram(
                f"{name}: {axis}",
                Bins.of(values, [threshold]),
                [(threshold, mark)],
                axis=axis,
            )
            out.append(chart.html())
        return "".join(out)

    def _rejection_thumb(self, rej: Rejection) -> tuple[str | None, str]:
        """A thumbnail for a rejected candidate: the file itself where it is a local file still
        there, else the copy it duplicates; and what the thumbnail shows."""
        uri = self.thumbs.source(rej.source_kind, rej.location)
        if uri is not None:
            return uri, "the source file"
        kept = self.f.by_location.get(rej.duplicate_of or "")
        if kept is not None:
            return self.thumbs.sample(kept), "the kept copy it duplicates"
        return None, ""

    def rejections(self) -> str:
        counts = self.f.last.rejected_by_reason
        if not counts:
            return "<p>No candidate was rejected.</p>"
        total = sum(counts.values())
        out = [
            bars(
                f"Rejections by reason ({total}; a candidate may have several reasons)",
                sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])),
                header=("reason", "candidates"),
            ).html(),
            "<p>Rejected candidates are not stored; where the file is a local file still "
            "there it is shown, else a duplicate shows the copy kept. Samples that labelling "
            "or a person rejected are stored and shown.</p>",
        ]
        by_reason: dict[str, list[Rejection]] = {}
        for rej in self.f.rejections:
            for reason in rej.reasons:
                by_reason.setdefault(reason, []).append(rej)
        held: dict[str, list[Sample]] = {}
        for s in self.f.with_status("rejected"):
            held.setdefault(rejected_reason(s), []).append(s)
        for reason in sorted(counts, key=lambda k: (-counts[k], k)):
            cards = []
            for rej in pick(by_reason.get(reason, []), PER_REASON, reason, lambda r: r.location):
                uri, what = self._rejection_thumb(rej)
                detail = rej.detail[:DETAIL_CHARS] + ("…" if len(rej.detail) > DETAIL_CHARS else "")
                caption = f"<div>{_link(None, rej.location)}</div><div>{esc(detail)}</div>" + (
                    f"<div><i>shown: {esc(what)}</i></div>" if what else ""
                )
                cards.append(_card(uri, f"{reason}: {rej.location}", caption, "no image to show"))
            room = PER_REASON - len(cards)
            for s in pick(held.get(reason, []), room, reason, lambda s: s.id):
                caption = (
                    f"<div>{_link(None, s.provenance.location)}</div>"
                    f"<div>{esc('; '.join(s.review_reasons))}</div>"
                )
                cards.append(_card(self.thumbs.sample(s), f"{reason}: {s.id}", caption))
            shown = f"{len(cards)} of {counts[reason]}" if cards else "none kept to show"
            out.append(
                f"<h3>{esc(reason)}: {counts[reason]} ({esc(shown)})</h3>"
                f'<div class="grid">{"".join(cards)}</div>'
            )
        return "".join(out)

    def duplicates(self) -> str:
        dups = [r for r in self.f.rejections if r.duplicate_of is not None]
        if not dups:
            return "<p>No duplicate was found.</p>"
        kinds = Counter(
            "exact" if "exact_duplicate" in r.reasons else "near" for r in self.f.rejections
            if r.duplicate_of is not None
        )  # fmt: skip

        def both(r: Rejection) -> bool:
            return r.duplicate_of in self.f.by_location and self.thumbs.is_source(
                r.source_kind, r.location
            )

        whole = [r for r in dups if both(r)]
        chosen = pick(whole, PAIRS, "duplicates", lambda r: r.location)
        if len(chosen) < PAIRS:
            rest = [r for r in dups if not both(r)]
            chosen += pick(rest, PAIRS - len(chosen), "duplicates", lambda r: r.location)
        pairs = []
        for rej in chosen:
            kept = self.f.by_location.get(rej.duplicate_of or "")
            left = self.thumbs.source(rej.source_kind, rej.location)
            right = self.thumbs.sample(kept) if kept is not None else None
            pairs.append(
                '<div class="pair">'
                + _card(left, f"duplicate: {rej.location}",
                        f"<div>rejected: {_link(None, rej.location)}</div>",
                        "file not kept")
                + _card(right, f"kept: {rej.duplicate_of}",
                        f"<div>kept: {_link(None, rej.duplicate_of)}</div>"
                        f"<div>{esc(', '.join(rej.reasons))}</div>",
                        "not stored")
                + "</div>"
            )  # fmt: skip
        return (
            f"<p>{len(dups)} candidates duplicated a kept image: {kinds['exact']} exact (same "
            f"pixels), {kinds['near']} near (perceptual hash within "
            f"{self.spec.image.checks.near_duplicate_bits} bits, confirmed on thumbnails). Of "
            "each group the best copy is kept. Rejected copies are not stored: a copy is shown "
            f"where it is a local file still there. {len(chosen)} pairs shown.</p>"
            f'<div class="grid">{"".join(pairs)}</div>'
        )

    def enhancement(self) -> str:
        r, spec = self.f.last, self.spec
        changed = [s for s in self.f.exported if s.ssim is not None]
        steps = Counter(step.name for s in self.f.exported for step in s.provenance.steps)
        out = [
            f"<p>Enhancement: <code>{esc(spec.image.enhance)}</code>; an enhanced image whose "
            f"SSIM to its input falls below {spec.image.ssim_floor} is restored to its input. "
            f"{len(changed)} of {len(self.f.exported)} images in the dataset were changed by "
            "the tools"
            + (
                f"; SSIM mean {r.ssim_mean:.4f}, 5th percentile {r.ssim_p5:.4f} (unchanged "
                "images count as 1.0)"
                if r.ssim_mean is not None and r.ssim_p5 is not None
                else ""
            )
            + ".</p>"
        ]
        if changed:
            out.append(
                histogram(
                    "SSIM of the enhanced images to their input",
                    Bins.of([s.ssim or 0.0 for s in changed], [spec.image.ssim_floor], clip=False),
                    [(spec.image.ssim_floor, "floor"), (spec.quality.ssim_mean_min, "target mean")],
                    axis="SSIM",
                ).html()
            )
        if steps:
            out.append(
                "<h3>Processing steps recorded</h3>"
                + table(("step", "images"), steps.most_common())
            )
        if changed:
            pairs = []
            for s in pick(changed, BEFORE_AFTER, "enhanced", lambda s: s.id):
                expect = s.source.bytes if s.source is not None else None
                before = self.thumbs.source(s.provenance.source_kind, s.provenance.location, expect)
                pairs.append(
                    '<div class="pair">'
                    + _card(before, f"input: {s.provenance.location}", "<div>input file</div>",
                            "input not kept")
                    + _card(self.thumbs.sample(s), f"stored: {s.id}",
                            f"<div>stored, SSIM {s.ssim:.3f}</div>")
                    + "</div>"
                )  # fmt: skip
            out.append(
                "<h3>Before and after</h3><p>The run keeps only the processed image. The input "
                "shown is the source file read again now, where it is a local file of the size "
                "the run read; a downloaded input is removed after processing and is not shown."
                f'</p><div class="grid">{"".join(pairs)}</div>'
            )
        return "".join(out)

    def sources(self) -> str:
        samples = self.f.exported
        total = len(samples)
        if not total:
            return "<p>No image in the dataset yet.</p>"
        by_licence = Counter(s.provenance.licence for s in samples)
        by_source = Counter(s.provenance.source_kind for s in samples)
        both = Counter((s.provenance.source_kind, s.provenance.licence) for s in samples)
        ordered = sorted(by_licence.items(), key=lambda kv: (-kv[1], kv[0]))
        out = [
            f"<p>Licence policy: <code>{esc(self.spec.licences.describe())}</code>.</p>",
            bars("Images per licence", ordered, header=("licence", "images")).html(),
            table(
                ("licence", "images", "share", "conditions"),
                [
                    (_link(name, licence_url(name)), n, _share(n, total), esc(licence_terms(name)))
                    for name, n in ordered
                ],
                raw=True,
            ),
            table(
                ("source", "images", "share"),
                [(k, n, _share(n, total)) for k, n in sorted(by_source.items())],
            ),
            table(("source", "licence", "images"), [(*k, n) for k, n in sorted(both.items())]),
        ]
        web = [s for s in samples if s.provenance.page or s.provenance.title]
        if web:
            rows = []
            for s in pick(web, PER_CLASS, "web", lambda s: s.id):
                p = s.provenance
                rows.append(
                    (
                        _link(p.title or p.page or "untitled", p.page),
                        esc(p.creator or "unknown"),
                        _link(p.licence, p.licence_url or licence_url(p.licence)),
                        _link("file", p.location),
                    )
                )
            out.append(
                f"<h3>Where web images come from ({len(rows)} of {len(web)})</h3>"
                + table(("title (page)", "creator", "licence", "file fetched"), rows, raw=True)
                + "<p>Every image's provenance is in each export's manifest.jsonl and "
                "ATTRIBUTION.md.</p>"
            )
        return "".join(out)

    def objects(self) -> str:
        r = self.f.last
        objs = [a for s in self.f.exported for a in s.annotations if isinstance(a, Box | Mask)]
        if not objs:
            return "<p>No object in the dataset yet.</p>"
        per_image = [sum(isinstance(a, Box | Mask) for a in s.annotations) for s in self.f.exported]
        counts = Counter(per_image)
        sides = [math.sqrt(object_area(a)) for a in objs]
        out = [
            bars(
                "Objects per class",
                [(c, r.instances.get(c, 0)) for c in self.classes],
                header=("class", "objects"),
            ).html(),
            f"<p>{len(objs)} objects; per image {r.boxes_per_image or 0:.2f} on average; by "
            "COCO size: " + esc(", ".join(f"{k} {v}" for k, v in r.box_sizes.items())) + ".</p>",
            bars(
                "Images by the number of objects in them",
                [(f"{k} objects", counts.get(k, 0)) for k in range(max(per_image) + 1)],
                header=("objects in the image", "images"),
            ).html(),
            histogram(
                "Object size: square root of the area in pixels",
                Bins.of(sides, [32.0, 96.0]),
                [(32.0, "small|medium"), (96.0, "medium|large")],
                axis="√area (px)",
            ).html(),
            "<p>The gallery per class below draws every object: boxes outlined, masks tinted, "
            "in the class's colour.</p>",
        ]
        return "".join(out)

    def evaluation(self) -> str:
        """The last ``datasetagent evaluate``: model, test set, each training's score, the
        per-class table and (classification) the confusion matrix of the export-trained model
        in counts (rows: true class, columns: predicted)."""
        ev = self.f.evaluation
        if ev is None:
            return ""
        t = ev.test
        objects = f", {t.objects} objects" if t.objects is not None else ""
        left = "objects of other classes" if self.detection else "images without a class"
        trained = ev.trained()
        out = [
            f"<p>datasetagent evaluate ({esc(ev.when)}): model <code>{esc(ev.model)}</code>, "
            f"scored on {t.n} held-out images{objects} of <code>{esc(t.path)}</code> "
            f"({t.skipped} {left} of the run left out; {t.overlap} images that are training "
            "images left out).</p><ul>"
            + "".join(
                f"<li>Trained on {esc(what)} ({s.n_train} images): {esc(s.headline())}</li>"
                for what, s in trained
            )
            + "</ul>"
        ]
        metric = "AP" if self.detection else "accuracy"
        out.append(
            table(
                ["class", *(f"{metric}, trained on {what}" for what, _ in trained)],
                [
                    [c, *("-" if s.per_class.get(c) is None else f"{s.per_class[c]:.4f}"
                          for _, s in trained)]
                    for c in ev.classes
                ],
            )
        )  # fmt: skip
        confusion = ev.trained_on_export.confusion
        if confusion is not None:
            names = list(confusion)
            extra = sorted({g for row in confusion.values() for g in row} - set(names))
            predicted = [*names, *extra]
            out.append(
                "<h3>Confusion matrix, trained on the export</h3><p>Test images by true class "
                "(rows) and predicted class (columns).</p>"
                + table(
                    ["true \\ predicted", *predicted],
                    [
                        [c, *(confusion[c].get(p, 0) for p in predicted)]
                        for c in names
                        if sum(confusion[c].values())
                    ],
                )
            )
        return "".join(out)

    def gallery(self) -> str:
        by_class = {c: self.by_class.get(c, []) for c in self.classes}
        k = max(1, len(self.classes))
        per = max(1, min(PER_CLASS, GALLERY_TOTAL // k))
        shown_classes = self.classes[:GALLERY_TOTAL]
        out = [
            f"<p>Up to {per} images of each class, drawn at random (seeded: the same each "
            "time)"
            + (
                f"; the first {len(shown_classes)} of {len(self.classes)} classes"
                if len(shown_classes) < len(self.classes)
                else ""
            )
            + ".</p>"
        ]
        for c in shown_classes:
            cards = []
            for s in pick(by_class[c], per, c, lambda s: s.id):
                conf = s.confidence
                caption = (
                    f"<div>{esc(s.provenance.licence)}"
                    + (f", {conf:.2f}" if conf is not None else "")
                    + "</div>"
                )
                uri = self.thumbs.sample(s, self.classes, draw=self.detection)
                alt = f"{c}: {s.provenance.location}"
                cards.append(_card(uri, alt, caption, "image missing", big=self.detection))
            out.append(
                f"<h3>{esc(c)} ({len(cards)} of {len(by_class[c])})</h3>"
                f'<div class="grid">{"".join(cards)}</div>'
            )
        return "".join(out)

    def review(self) -> str:
        held = self.f.with_status("review")
        if not held:
            return "<p>Nothing is held back for review.</p>"
        reasons = Counter(_kind(r) for s in held for r in s.review_reasons[:1])
        cards = []
        for s in pick(held, HELD, "review", lambda s: s.id):
            why = "; ".join(s.review_reasons)
            caption = f"<div>{esc(s.label or 'no class')}</div><div>{esc(why)}</div>"
            cards.append(_card(self.thumbs.sample(s), f"held: {s.id}", caption, "image missing"))
        return (
            f"<p>{len(held)} samples are held back for a person to decide (datasetagent review"
            " RUN); by first reason: "
            + esc(", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none")
            + f". {len(cards)} shown.</p>"
            f'<div class="grid">{"".join(cards)}</div>'
        )


def _kind(reason: str) -> str:
    """What kind of reason a review reason is: its leading words (``confidence 0.47 < 0.90``
    is ``confidence``, ``disputed: ...`` is ``disputed``)."""
    match = re.match(r"[^\W\d]+(?:[ _-][^\W\d]+)*", reason)
    return match.group() if match else "other"


def esc_block(text: str) -> str:
    """Multi-line text escaped for a ``<pre>`` (line breaks kept)."""
    return "\n".join(esc(line) for line in text.splitlines())


def render(facts: RunFacts, thumbs: Thumbnails) -> str:
    """The report page of ``facts``."""
    return Page(facts, thumbs).render()
