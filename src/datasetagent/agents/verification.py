"""Independent checks of labels, for the Supervision agent: calibration, verification, audit.

* **calibrate**: a checker (an MLLM verifier, a second model) is shown existing images whose
  labels are trusted, half with their true label and half with a wrong one. How often it
  confirms each measures its sensitivity and its false agreement (``metrics.CheckerRates``).
* **verify**: every new label is put to each checker that had no part in making it. A checker
  that disagrees disputes the label: the sample goes to review (or is rejected, per
  ``quality.uncertain``), never exported on the labeler's word alone. It is relabelled instead
  when ``RELABEL_CHECKERS`` or more checkers, asked independently, all reject the label and
  name the same other class with at least ``quality.min_confidence``: two parties that made
  no part of the first label agree on the second.
* **audit**: an *auditor* whose answer is the truth (a person's review decisions, ground truth
  in benchmarks) checks a random sample of the accepted labels.

ALR (DESIGN.md) is then: from an audit, the share confirmed, with its Wilson interval; else,
from verification by a calibrated checker, the accuracy of the labels it confirmed (a
Rogan–Gladen correction for the checker's own errors, with a conservative interval) and every
other calibrated checker confirmed too (their errors taken as independent given the truth);
else the plain share a checker confirmed, marked uncalibrated. It is never the labeler checking
itself. Relabelled samples are not counted apart: their labels have two checkers behind them.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from datasetagent.metrics import CheckerRates, alr_after_check, wilson_interval
from datasetagent.models import LabelVerifier, Verdict
from datasetagent.models.llm_call import BudgetSpent
from datasetagent.records import Audit, ClassLabel, Sample
from datasetagent.spec import DatasetSpec
from datasetagent.store import RunStore

AuditKind = Literal["verify", "audit"]

log = logging.getLogger(__name__)

#: Existing images put to each checker for calibration (half true labels, half wrong ones).
CALIBRATION_SIZE = 80
#: Accepted labels an auditor checks per round.
AUDIT_SIZE = 50
BATCH = 32
#: Checkers that must all name the same other class before a disputed label is replaced.
RELABEL_CHECKERS = 2
#: Prefixes of the review reasons verification writes, which the Supervision agent counts.
DISPUTED = "disputed"
RELABELLED = "relabelled"
#: Prefix of the review reason of a new label the budget left unchecked.
UNVERIFIED = "unverified"


@dataclass(frozen=True)
class ALR:
    value: float
    interval: tuple[float, float]
    audited: int
    method: str


def _labelers(sample: Sample) -> set[str]:
    return {part for a in sample.annotations for part in a.labeler.split("+")}


class Verification:
    def __init__(
        self,
        store: RunStore,
        spec: DatasetSpec,
        load: Callable[[Sample], Image.Image],
        checkers: Sequence[LabelVerifier] = (),
        auditors: Sequence[LabelVerifier] = (),
    ) -> None:
        self.store = store
        self.spec = spec
        self.load = load
        self.checkers = tuple(checkers)
        self.auditors = tuple(auditors)
        #: Asked before each batch of checks: why the run's budget is spent, or None.
        self.budget: Callable[[], str | None] = lambda: None
        #: Why the last stage stopped before every check was made (budget), or None.
        self.stopped: str | None = None
        #: How many more model requests the budget pays for (None: no limit); a checker that
        #: makes one per image (an LLM) is asked about no more images than that.
        self.calls_left: Callable[[], int | None] = lambda: None
        #: Called with the number of labels checked after each batch.
        self.progress: Callable[[int], object] = lambda n: None

    @property
    def active(self) -> bool:
        return bool(self.checkers or self.auditors) and self.spec.task == "classification"

    def _ask(
        self, checker: LabelVerifier, samples: Sequence[Sample], labels: Sequence[str]
    ) -> list[tuple[bool, str | None, float]]:
        out: list[tuple[bool, str | None, float]] = []
        for i in range(0, len(samples), BATCH):
            chunk = samples[i : i + BATCH]
            verdicts = self._verify(checker, [self.load(s) for s in chunk], labels[i : i + BATCH])
            if verdicts is None:
                break
            out.extend((v.agree, v.suggested, v.confidence) for v in verdicts)
            if self.stopped:
                break
        return out

    def _verify(
        self,
        checker: LabelVerifier,
        images: list[Image.Image],
        labels: Sequence[str],
        budgeted: bool = True,
    ) -> list[Verdict] | None:
        """``checker``'s verdicts, or None once the budget is spent (``stopped`` says why).
        Auditors (a person's decisions, ground truth) are not ``budgeted``: they cost nothing."""
        if not budgeted:
            return list(checker.verify(images, list(labels)))
        try:
            self.stopped = self.stopped or self.budget()
            if self.stopped is not None:
                return None
            left = self.calls_left() if callable(getattr(checker, "limit", None)) else None
            if left is None or left >= len(images):
                return list(checker.verify(images, list(labels)))
            # a request per image: ask only as many as the budget pays for, then stop
            verdicts = list(checker.verify(images[:left], list(labels[:left])))
            self.stopped = self.budget() or "budget spent: model calls"
            return verdicts
        except BudgetSpent as exc:
            self.stopped = str(exc)
        return None

    # -- calibration ---------------------------------------------------------------------------
    def calibrate(self) -> None:
        """Measure each checker on existing labelled images (once per run)."""
        if not self.checkers or self.spec.task != "classification":
            return
        existing = [s for s in self.store.samples(status=["labelled"], origin="existing")]
        classes = list(self.spec.class_names)
        rng = random.Random(self.spec.splits.seed)
        picked = rng.sample(existing, min(CALIBRATION_SIZE, len(existing)))
        if len(classes) < 2 or not picked:
            return
        labels, correct = [], []
        for k, s in enumerate(picked):
            true = s.label or ""
            if k % 2 == 0:
                labels.append(true)
                correct.append(True)
            else:
                labels.append(rng.choice([c for c in classes if c != true]))
                correct.append(False)
        done = {(a.checker, a.sample_id) for a in self.store.audits("calibrate")}
        self.stopped = None
        for checker in self.checkers:
            if any((checker.name, s.id) in done for s in picked):
                continue  # calibrated before a resume
            answers = self._ask(checker, picked, labels)
            if self.stopped:
                return  # a partial calibration is not stored: it would bias the rates
            self.store.add_audits(
                Audit(
                    sample_id=s.id,
                    checker=checker.name,
                    kind="calibrate",
                    label=label,
                    agree=agree,
                    correct=ok,
                    suggested=suggested,
                    confidence=conf,
                )
                for s, label, ok, (agree, suggested, conf) in zip(
                    picked, labels, correct, answers, strict=True
                )
            )

    def rates(self, checker: str) -> CheckerRates | None:
        rows = [a for a in self.store.audits("calibrate") if a.checker == checker]
        right = [a.agree for a in rows if a.correct]
        wrong = [a.agree for a in rows if a.correct is False]
        if not right or not wrong:
            return None
        return CheckerRates.measure(right, wrong)

    # -- verification and audit ----------------------------------------------------------------
    def _check(
        self,
        checkers: Sequence[LabelVerifier],
        samples: Sequence[Sample],
        kind: AuditKind,
        round_: int,
    ) -> dict[str, list[tuple[Sample, bool, str | None, float]]]:
        """Put each sample's current label to every checker (for ``verify``, each one that had
        no part in making it) and store the answers as audits; by checker, (sample, agree,
        suggested, confidence). Each chunk of images is loaded once for all checkers."""
        out: dict[str, list[tuple[Sample, bool, str | None, float]]] = {
            c.name: [] for c in checkers
        }
        for i in range(0, len(samples), BATCH):
            chunk = [s for s in samples[i : i + BATCH] if s.label]
            images = [self.load(s) for s in chunk]
            for checker in checkers:
                mine = [
                    k
                    for k, s in enumerate(chunk)
                    if kind != "verify" or checker.name not in _labelers(s)
                ]
                if not mine:
                    continue
                asked = [chunk[k] for k in mine]
                verdicts = self._verify(
                    checker,
                    [images[k] for k in mine],
                    [s.label or "" for s in asked],
                    budgeted=kind == "verify",
                )
                if verdicts is None:
                    return out
                asked = asked[: len(verdicts)]  # fewer where the budget ran out
                self.store.add_audits(
                    Audit(
                        sample_id=s.id,
                        checker=checker.name,
                        kind=kind,
                        label=s.label or "",
                        agree=v.agree,
                        suggested=v.suggested,
                        confidence=v.confidence,
                        round=round_,
                    )
                    for s, v in zip(asked, verdicts, strict=True)
                )
                out[checker.name] += [
                    (s, v.agree, v.suggested, v.confidence)
                    for s, v in zip(asked, verdicts, strict=True)
                ]
            self.progress(len(chunk))
        return out

    def verify_round(self, round_: int) -> dict[str, int]:
        """Put each new label of ``round_`` to every checker that did not make it; disputed
        samples leave the labelled set or are relabelled (see the module doc). Returns counts
        (verified, disputed, relabelled)."""
        if not self.active:
            return {}
        todo = self.store.samples(status=["labelled"], origin="collected", round_=round_)
        counts = {"verified": 0, "disputed": 0, RELABELLED: 0}
        self.stopped = None
        said: dict[str, list[tuple[str, bool, str | None, float]]] = {}
        for name, answers in self._check(self.checkers, todo, "verify", round_).items():
            for s, agree, suggested, conf in answers:
                counts["verified"] += 1
                said.setdefault(s.id, []).append((name, agree, suggested, conf))
        status = self.spec.quality.uncertain_status
        changed = []
        for s in todo:
            views = said.get(s.id, [])
            unasked = self.stopped and {
                c.name for c in self.checkers if c.name not in _labelers(s)
            } - {name for name, _, _, _ in views}
            if unasked:  # the budget ran out first: never exported on the labeler's word alone
                why = f"{UNVERIFIED}: {' and '.join(sorted(unasked))} not asked ({self.stopped})"
                changed.append(
                    s.model_copy(
                        update={"status": status, "review_reasons": (*s.review_reasons, why)}
                    )
                )
                counts[UNVERIFIED] = counts.get(UNVERIFIED, 0) + 1
                continue
            if all(agree for _, agree, _, _ in views):
                continue
            relabelled = self._relabel(s, views)
            if relabelled is not None:
                changed.append(relabelled)
                counts[RELABELLED] += 1
                continue
            reasons = [
                f"{DISPUTED}: {name} says it is not {s.label}"
                + (f" (suggests {suggested})" if suggested else "")
                for name, agree, suggested, _ in views
                if not agree
            ]
            changed.append(
                s.model_copy(
                    update={"status": status, "review_reasons": (*s.review_reasons, *reasons)}
                )
            )
            counts["disputed"] += 1
        self.store.update_samples(changed)
        return counts

    def _relabel(
        self, sample: Sample, answers: Sequence[tuple[str, bool, str | None, float]]
    ) -> Sample | None:
        """``sample`` with the class its checkers all name instead, where they may replace its
        label (see the module doc); else None."""
        if len(answers) < RELABEL_CHECKERS or any(agree for _, agree, _, _ in answers):
            return None
        named = {self.spec.resolve_class(suggested or "") for _, _, suggested, _ in answers}
        if len(named) != 1:
            return None
        (label,) = named
        confidence = min(conf for _, _, _, conf in answers)
        if label is None or label == sample.label or confidence < self.spec.quality.min_confidence:
            return None
        names = [name for name, _, _, _ in answers]
        annotation = ClassLabel(label=label, confidence=confidence, labeler="+".join(names))
        why = f"{RELABELLED}: {' and '.join(names)} say it is {label}, not {sample.label}"
        return sample.model_copy(
            update={"annotations": (annotation,), "review_reasons": (*sample.review_reasons, why)}
        )

    def audit_round(self, round_: int) -> int:
        """Auditors check a random sample of the labels accepted in ``round_``."""
        if not self.auditors:
            return 0
        accepted = self.store.samples(status=["labelled"], origin="collected", round_=round_)
        rng = random.Random(f"{self.spec.splits.seed}:{round_}")
        picked = rng.sample(accepted, min(AUDIT_SIZE, len(accepted)))
        self._check(self.auditors, picked, "audit", round_)
        return len(picked)

    # -- ALR -----------------------------------------------------------------------------------
    def alr(self, exported: Sequence[Sample]) -> ALR | None:
        """The label reliability of the new samples in ``exported`` (see the module doc)."""
        # audited labels as they were made: one a person corrected since still counts as
        # wrong, so the estimate stays conservative for the (better) dataset exported now
        new = {s.id for s in exported if s.origin != "existing"}
        audits = [a for a in self.store.audits("audit") if a.sample_id in new]
        if audits:
            ok = sum(a.agree for a in audits)
            auditors = ", ".join(sorted({a.checker for a in audits}))
            return ALR(
                ok / len(audits),
                wilson_interval(ok, len(audits)),
                len(audits),
                f"audit of {len(audits)} accepted labels by {auditors}",
            )
        verified = self.store.audits("verify")
        names = sorted({a.checker for a in verified})
        measured = {name: self.rates(name) for name in names}
        calibrated = {n: r for n, r in measured.items() if r is not None and r.informative}
        best: ALR | None = None
        for name in names:
            rows = [a for a in verified if a.checker == name]
            agree = sum(a.agree for a in rows)
            rates = measured[name]
            if rates is not None and rates.informative:
                # the exported labels passed every other calibrated checker as well
                others = {n: r for n, r in calibrated.items() if n != name}
                est, lo, hi = alr_after_check(agree, len(rows), rates, list(others.values()))
                also = (
                    f"; confirmed by {' and '.join(others)} too (errors taken as independent)"
                    if others
                    else ""
                )
                found = ALR(
                    est,
                    (lo, hi),
                    len(rows),
                    f"{name} verified {len(rows)} labels and confirmed {agree}; calibrated on "
                    f"{rates.n_right + rates.n_wrong} existing images (confirms "
                    f"{rates.sensitivity:.2f} of right labels, {rates.false_agreement:.2f} of "
                    f"wrong ones){also}",
                )
            else:
                why = "not calibrated" if rates is None else "calibration shows it barely helps"
                found = ALR(
                    agree / len(rows),
                    wilson_interval(agree, len(rows)),
                    len(rows),
                    f"share of {len(rows)} new labels {name} confirmed before the disputed were "
                    f"withheld ({why}, so its own errors are not corrected for)",
                )
            if best is None or found.audited > best.audited:
                best = found
        return best
