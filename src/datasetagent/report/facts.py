"""What the report shows, read once from the run store.

Numbers the data card gives (CBI, SSIM, ALR, fill, rejections, confidence, objects) come from
the run's stored ``QualityReport`` of the last round, as the data card's do; the rest from the
stored samples and rejections with the helpers that made those numbers
(``agents/supervision.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from datasetagent.agents.supervision import SupervisionAgent, select_for_export
from datasetagent.evaluate_result import EVALUATION_META, Evaluation, load_evaluation
from datasetagent.records import QualityReport, Rejection, Sample
from datasetagent.spec import DatasetSpec
from datasetagent.store import RunStore


@dataclass
class RunFacts:
    run_dir: Path
    spec: DatasetSpec
    #: Supervision's report of every finished round, in order.
    reports: list[QualityReport]
    #: (round, stage, message) of every finished stage, in order; round -1 is the final one.
    events: list[tuple[int, str, str]]
    samples: list[Sample]
    rejections: list[Rejection]
    #: The dataset: what ``export`` writes once the run has finished (``finished``), else what
    #: Supervision would select now.
    exported: list[Sample]
    finished: bool
    #: The last round's report; where no round has finished (so no report is stored),
    #: Supervision's measure of the run as it stands (``measured_now``): the same numbers.
    last: QualityReport
    measured_now: bool = False
    #: The last ``datasetagent evaluate`` of the run; None where it was never evaluated.
    evaluation: Evaluation | None = None
    by_location: dict[str, Sample] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_location = {s.provenance.location: s for s in self.samples}

    def with_status(self, *status: str) -> list[Sample]:
        return [s for s in self.samples if s.status in status]


def gather(
    run_dir: Path, store: RunStore, spec: DatasetSpec, exported: Sequence[Sample] | None = None
) -> RunFacts:
    """The run's facts; ``exported`` is the dataset where the caller has it (the build's end)."""
    from datasetagent.pipeline import FINAL, final_samples

    finished = store.stage_done(FINAL, "split")
    samples = store.samples()
    if exported is None:
        if finished:
            exported = final_samples(store, spec)
        else:
            labelled = [s for s in samples if s.status == "labelled"]
            exported = select_for_export(labelled, spec.targets())
    reports = store.reports()
    return RunFacts(
        run_dir=run_dir,
        spec=spec,
        reports=reports,
        last=reports[-1] if reports else SupervisionAgent(store, spec).assess(0),
        measured_now=not reports,
        events=store.events(),
        samples=samples,
        rejections=store.rejections(),
        exported=list(exported),
        finished=finished,
        evaluation=load_evaluation(store.get_meta(EVALUATION_META)),
    )
