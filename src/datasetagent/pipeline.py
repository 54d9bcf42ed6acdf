"""The orchestrator: an explicit, persisted state machine over the four agents.

``build`` claims the run folder, stores (or loads) the spec and the ``BuildOptions``, wires
the run with ``config.assemble`` and runs a ``Pipeline`` over the agents that assembly makes.

Stages, each recorded in the run store when finished so that a killed run resumes where it
stopped with nothing done twice::

    round 0: collect (list every candidate) → select → process → label   (existing dataset)
    round r: select (web searches for the short classes first) → fetch (web candidates, where
             there are some) → process → label → supervise  (r = 1, 2, … until the verdict is done)
    final:   split → export:<format> …
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from datasetagent.agents.labeling import DataLabelAgent
from datasetagent.agents.processing import ImageProcessingAgent
from datasetagent.agents.supervision import SupervisionAgent, select_for_export
from datasetagent.agents.verification import Verification
from datasetagent.config import (
    Assembly,
    BackendOptions,
    BuildOptions,
    NullReporter,
    Reporter,
    assemble,
    check_executor,
    check_labelers,
    open_executor,
    run_options,
)
from datasetagent.errors import StoreError, UsageError
from datasetagent.export import export_samples, known_formats
from datasetagent.export.splits import assign_splits
from datasetagent.models import ImageClassifier, LabelVerifier
from datasetagent.records import QualityReport, Sample
from datasetagent.sources import Source, open_source, skip_messages
from datasetagent.sources.existing import ExistingDataset, open_existing
from datasetagent.spec import WEB_SEARCH_SOURCES, DatasetSpec
from datasetagent.store import BlobStore, RunStore

if TYPE_CHECKING:  # the web's modules (httpx) load only for a run with web sources
    from datasetagent.agents.collect_web import WebCollector

log = logging.getLogger(__name__)

FINAL = -1
__all__ = [
    "FINAL",
    "BackendOptions",
    "BuildOptions",
    "BuildResult",
    "NullReporter",
    "Pipeline",
    "Reporter",
    "build",
    "build_run",
    "check_spec",
    "final_samples",
]


@dataclass
class BuildResult:
    run_dir: Path
    spec: DatasetSpec
    report: QualityReport
    exports: dict[str, Path]
    exported: list[Sample]
    split_counts: dict[str, int]
    resumed_stages: int = 0
    seed_cv_accuracy: float | None = None
    labelers: dict[str, int] = field(default_factory=dict)
    #: Model calls, images and tokens per backend over the whole run (resumes included).
    usage: dict[str, dict[str, int]] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """Plain data for ``--json`` and the run's ``summary.json``."""
        return {
            "run": str(self.run_dir),
            "exported": len(self.exported),
            "splits": self.split_counts,
            "classes": {
                c.name: {
                    "target": c.target,
                    "accepted": c.accepted,
                    "exported": sum(1 for s in self.exported if s.label == c.name),
                    "review": c.review,
                }
                for c in self.report.classes
            },
            "cbi": round(self.report.cbi, 6),
            "ssim_mean": self.report.ssim_mean,
            "ssim_p5": self.report.ssim_p5,
            "enhanced": self.report.enhanced,
            "rejected": self.report.rejected_by_reason,
            "alr": self.report.alr,
            "alr_interval": self.report.alr_interval,
            "alr_audited": self.report.alr_audited,
            "alr_method": self.report.alr_method,
            "disputed": self.report.disputed,
            "relabelled": self.report.relabelled,
            "confidence": self.report.confidence,
            **(
                {
                    "instances": self.report.instances,
                    "boxes_per_image": self.report.boxes_per_image,
                    "box_sizes": self.report.box_sizes,
                }
                if self.spec.task != "classification"
                else {}
            ),
            "review": self.report.review,
            #: Of those, the samples with no proposed class of the spec (none fitted, or failed).
            "review_no_class": self.report.review - sum(c.review for c in self.report.classes),
            "rounds": self.report.round,
            "stop_reason": self.report.reason,
            "targets_met": self.report.targets_met,
            "labelers": self.labelers,
            "seed_cv_accuracy": self.seed_cv_accuracy,
            "usage": self.usage,
            "exports": {k: str(v) for k, v in self.exports.items()},
        }


class Pipeline:
    """The persisted state machine of one run folder over the agents an ``Assembly`` makes.
    ``run()`` is safe to call again after a crash."""

    def __init__(
        self,
        spec: DatasetSpec,
        run_dir: Path,
        *,
        store: RunStore,
        assembly: Assembly,
        options: BuildOptions,
        reporter: Reporter | None = None,
        existing: ExistingDataset | None = None,
    ) -> None:
        self.spec = spec
        self.assembly = assembly
        self.options = options
        self._processing: ImageProcessingAgent | None = None
        self.run_dir = run_dir
        self.store = store
        self.blobs = BlobStore(run_dir)
        self.reporter: Reporter = reporter or NullReporter()
        self.resumed_stages = 0
        self.classifier: ImageClassifier | None = None
        self._usage_base: dict[str, dict[str, int]] | None = None
        #: Model calls the budget still pays for, as of the last ``_budget_spent``.
        self._calls_left: int | None = None
        self._opened: list[Source] = []
        self._sources: dict[str, Source] = {}
        self._web: WebCollector | None = None
        #: The source kinds whose candidates are downloaded before processing.
        self._web_kinds: set[str] = set()
        self._existing = existing  # opened when first needed where not given

    # -- the state machine ---------------------------------------------------------------------
    def _stage(self, round_: int, name: str) -> bool:
        """True when the stage still has to run; counts skipped ones for the summary."""
        if self.store.stage_done(round_, name):
            self.resumed_stages += 1
            return False
        return True

    def _finish(self, round_: int, name: str, message: str) -> None:
        self.store.event(round_, name, message)
        self.store.mark_stage(round_, name)
        log.info("round %s %s: %s", round_, name, message)

    def run(self) -> BuildResult:
        start = time.monotonic()
        assembly = self.assembly
        self._open_sources()
        with open_executor(self.options) as executor:
            processing = ImageProcessingAgent(
                self.store, self.blobs, self.spec, executor, self._sources, assembly.tool_policy
            )
            self._processing = processing
            if self._stage(0, "collect"):
                n = self._collect()
                self._finish(0, "collect", f"{n} candidates listed")
            assembly.check_collected(self.store)
            self._ingest_existing(processing)
            self.classifier = assembly.fit_learner(self.store, self.blobs, self.reporter)
            labeling = assembly.labeling(self.store, self.blobs, self.classifier, executor)
            verification = assembly.verification(self.store, self._load)
            verification.budget = lambda: self._budget_spent(start)
            verification.progress = self.reporter.advance
            verification.calls_left = lambda: self._calls_left
            if assembly.checkers and self._stage(0, "calibrate"):
                self.reporter.stage("calibrating checkers", 0)
                verification.calibrate()
                self._finish(0, "calibrate", ", ".join(c.name for c in assembly.checkers))
            supervision = SupervisionAgent(self.store, self.spec, verification)
            if self._web is not None and self._web.searches:
                supervision.can_search = self._web.can_search
            report = self._loop(processing, labeling, supervision, verification, start)
        return self._finalise(report)

    def _open_sources(self) -> None:
        if self.spec.existing:
            if self._existing is None:
                self._existing = open_existing(self.spec.existing)
            self._sources[self._existing.kind] = self._existing
        listed = [src for src in self.spec.sources if src.kind not in WEB_SEARCH_SOURCES]
        self._opened = [open_source(src, self.spec) for src in listed]
        for source in self._opened:
            # Sources of one kind read locations the same way, so one reader per kind serves.
            self._sources.setdefault(source.kind, source)
        if any(src.kind in (*WEB_SEARCH_SOURCES, "urls") for src in self.spec.sources):
            self._open_web()

    def _open_web(self) -> None:
        """The web's collector: its searches, and the downloads' reader for every web kind."""
        from datasetagent.agents.collect_web import (
            DOWNLOADS,
            WEB_KINDS,
            WebCollector,
            address_policy,
        )
        from datasetagent.sources.downloads import DownloadedFiles
        from datasetagent.sources.websearch import open_search

        searches = [
            open_search(src, self.spec)
            for src in self.spec.sources
            if src.kind in WEB_SEARCH_SOURCES
        ]
        kinds = {s.kind for s in searches} | {s.kind for s in self._opened if s.kind in WEB_KINDS}
        self._web_kinds = kinds
        if kinds:
            folder = self.run_dir / DOWNLOADS
            for kind in kinds:  # web candidates are read from their downloads
                self._sources[kind] = DownloadedFiles(kind, folder)
            self._web = WebCollector(
                self.store,
                self.spec,
                self.run_dir,
                searches,
                address_policy(self.options.allow_hosts or ()),
                note=self.reporter.note,
                progress=self.reporter.advance,
            )

    def _collect(self) -> int:
        self.reporter.stage("listing candidates", 0)
        n = 0
        if self._existing is not None:
            n += self.store.add_candidates(self._existing.candidates())
        for source in self._opened:
            n += self.store.add_candidates(source.candidates())
        for line in (skipped := skip_messages(self._opened)):
            self.reporter.note(line)
        if n == 0 and not (self._web is not None and self._web.searches):
            raise UsageError(
                f"no images found{''.join(f' ({s})' for s in skipped)}: pass --source FOLDER "
                "(flat or one folder per class) and/or --existing DATASET"
            )
        return n

    def _search(self, round_: int, size: int, have: dict[str, int], short: list[str]) -> str:
        """Search the web for the short classes until the pool holds, for each, its share of
        the ``size`` candidates the round takes; returns what to add to the stage's message."""
        if self._web is None or not self._web.searches or not short:
            return ""
        targets = self.spec.targets()
        deficit = {c: max(targets[c] - have.get(c, 0), 0) for c in short}
        total = sum(deficit.values()) or 1
        pending = self.store.pending_hints("collected")
        wanted = {c: math.ceil(size * d / total) - pending.get(c, 0) for c, d in deficit.items()}
        self.reporter.stage("searching the web", round_)
        found = self._web.search(wanted)
        return f" ({found['requests']} web searches)" if found["requests"] else ""

    def _load(self, sample: Sample) -> Image.Image:
        return self.blobs.open_image(sample.blob)

    def _budget_spent(self, start: float) -> str | None:
        """Why the budget ends the run now (time, model calls), or None.

        Asked before each batch of model work; it also tells the LLM backends' gate how many
        requests may still go out and until when, so that the budget holds per request inside
        a batch too (``llm_call.CallGate``)."""
        budget = self.spec.budget
        calls = sum(u.get("calls", 0) for u in self._save_usage().values())
        limit = budget.max_model_calls
        seconds = budget.max_seconds
        time_spent = f"budget spent: {seconds:g} s of time" if seconds is not None else ""
        if seconds is not None and time.monotonic() - start >= seconds:
            return time_spent
        if limit is not None and calls >= limit:
            self._calls_left = 0
            return f"budget spent: {calls} model calls of {limit}"
        left = None if limit is None else limit - calls
        self._calls_left = left
        self.assembly.gate.allow(
            left,
            None if seconds is None else start + seconds,
            calls_reason=f"budget spent: {limit} model calls of {limit}",
            time_reason=time_spent,
        )
        return None

    def _save_usage(self) -> dict[str, dict[str, int]]:
        """Store the run's model usage: what earlier processes of this run recorded plus what
        this one's backends used so far."""
        if self._usage_base is None:
            raw = self.store.get_meta("usage")
            self._usage_base = json.loads(raw) if raw else {}
        total: dict[str, dict[str, int]] = {k: dict(v) for k, v in self._usage_base.items()}
        used = [(b.name, b.usage) for b in self.assembly.metered.values()]
        tool_llm = self.options.tool_llm
        if self._processing is not None and tool_llm is not None:
            used.append((f"tool-policy:{tool_llm}", self._processing.usage))
        for name, usage in used:
            mine = total.setdefault(name, {})
            for key, value in usage.as_dict().items():
                mine[key] = mine.get(key, 0) + value
        self.store.set_meta("usage", json.dumps(total))
        return total

    def _ingest_existing(self, processing: ImageProcessingAgent) -> None:
        if self._existing is None:
            return
        if self._stage(0, "select"):
            n = self.store.take_candidates(0, 10**9, origin="existing", wanted=None)
            self._finish(0, "select", f"{n} existing images")
        if self._stage(0, "process"):
            self.reporter.stage(
                "processing existing dataset", 0, len(self.store.candidates_to_process(0))
            )
            counts = processing.run_round(0, self.reporter.advance)
            self._finish(0, "process", _describe(counts))
        if self._stage(0, "label"):
            existing, task = self._existing, self.spec.task
            agent = DataLabelAgent(
                self.store, self.blobs, self.spec, None, imported=lambda s: existing.apply(s, task)
            )
            counts = agent.run_round(0)
            self._finish(0, "label", _describe(counts))

    def _loop(
        self,
        processing: ImageProcessingAgent,
        labeling: DataLabelAgent,
        supervision: SupervisionAgent,
        verification: Verification,
        start: float,
    ) -> QualityReport:
        previous: QualityReport | None = None
        stored = {r.round: r for r in self.store.reports()}
        round_ = 1
        while True:
            if self._stage(round_, "select"):
                size = (
                    supervision.first_batch()
                    if previous is None
                    else supervision.next_batch(previous)
                )
                have = self.store.label_counts(["labelled"])
                short = self.spec.short_classes(have)
                searched = self._search(round_, size, have, short)
                n = self.store.take_candidates(round_, size, origin="collected", wanted=short)
                self._finish(round_, "select", f"{n} candidates{searched}")
            if self._web is not None and self._stage(round_, "fetch"):
                taken = self.store.candidates_to_process(round_)
                self.reporter.stage(
                    "downloading", round_, sum(c.source_kind in self._web_kinds for c in taken)
                )
                counts = self._web.download(round_)
                self._finish(round_, "fetch", _describe(counts))
                per_class = _describe(self._web.per_class)
                self.reporter.note(f"round {round_} downloads: {_describe(counts)} ({per_class})")
            if self._stage(round_, "process"):
                todo = len(self.store.candidates_to_process(round_))
                self.reporter.stage("processing", round_, todo)
                on_ray = getattr(processing.executor, "items_run", None)
                counts = processing.run_round(round_, self.reporter.advance, self._save_usage)
                self._finish(round_, "process", _describe(counts))
                if on_ray is not None:  # where the work ran, as counted (not as asked)
                    ran = processing.executor.items_run - on_ray  # type: ignore[attr-defined]
                    self.reporter.note(f"round {round_}: {ran} images processed by Ray tasks")
            if self._web is not None:  # also on a resume killed between the two
                self._web.clean(round_)
            cut: str | None = None  # why a stage of this round stopped early (budget)
            if self._stage(round_, "label"):
                todo = len(self.store.samples(status=["processed"], round_=round_))
                self.reporter.stage("labelling", round_, todo)
                counts = labeling.run_round(
                    round_,
                    self._save_usage,
                    progress=self.reporter.advance,
                    budget=lambda: self._budget_spent(start),
                    calls_left=lambda: self._calls_left,
                )
                cut = labeling.stopped
                self._finish(round_, "label", _describe(counts))
            if verification.active and self._stage(round_, "verify"):
                todo = len(self.store.samples(status=["labelled"], round_=round_))
                self.reporter.stage("verifying labels", round_, todo)
                checked = verification.verify_round(round_)
                cut = cut or verification.stopped
                audited = verification.audit_round(round_)
                self._save_usage()
                self._finish(round_, "verify", f"{_describe(Counter(checked))}, audited {audited}")
            if self._stage(round_, "supervise"):
                if self._web is not None:
                    for line in self._web.review_queries():
                        self.reporter.note(line)
                report = supervision.assess(round_)
                spent = self._budget_spent(start) or cut
                if spent and (report.verdict == "continue" or (cut and not report.targets_met)):
                    report = report.model_copy(update={"verdict": "done", "reason": spent})
                self.store.save_report(report)
                self._finish(round_, "supervise", f"{report.verdict}: {report.reason}")
            else:
                report = stored[round_]
            self.reporter.note(f"round {round_}: {report.reason} (CBI {report.cbi:.4f})")
            if report.verdict == "done":
                return report
            previous = report
            round_ += 1

    def _finalise(self, report: QualityReport) -> BuildResult:
        # here, not at the top: scikit-learn takes seconds to load, and the commands that read
        # a run (report, export, review) import this module for final_samples
        from datasetagent.models.seed import SeedClassifier

        chosen = final_samples(self.store, self.spec)
        if self._stage(FINAL, "split"):
            self.store.update_samples(chosen)
            self._finish(FINAL, "split", f"{len(chosen)} samples")
        exports: dict[str, Path] = {}
        for fmt in self.spec.formats:
            out = self.run_dir / "export" / fmt
            if self._stage(FINAL, f"export:{fmt}"):
                self.reporter.stage(f"exporting {fmt}", FINAL)
                export_samples(
                    fmt, out, self.spec, chosen, lambda s: self.blobs.path(s.blob), report
                )
                self._finish(FINAL, f"export:{fmt}", str(out))
            exports[fmt] = out
        result = BuildResult(
            run_dir=self.run_dir,
            spec=self.spec,
            report=report,
            exports=exports,
            exported=chosen,
            split_counts=dict(Counter(s.split or "" for s in chosen)),
            resumed_stages=self.resumed_stages,
            seed_cv_accuracy=(
                self.classifier.fit_info.cv_accuracy
                if isinstance(self.classifier, SeedClassifier) and self.classifier.fit_info
                else None
            ),
            labelers=dict(Counter(a.labeler for s in chosen for a in s.annotations)),
            usage=self._save_usage(),
        )
        (self.run_dir / "summary.json").write_text(json.dumps(result.summary(), indent=2))
        self._write_report(chosen)
        return result

    def _write_report(self, chosen: list[Sample]) -> None:
        """``RUN/report.html``. The dataset is made by now: a report that cannot be written
        is a note (and ``datasetagent report RUN`` writes it later), never a failed build."""
        from datasetagent.report import write_report

        try:
            write_report(self.run_dir, self.store, self.spec, exported=chosen)
        except Exception as exc:
            log.warning("report.html not written", exc_info=True)
            self.reporter.note(
                f"report.html not written: {exc}; write it with datasetagent report {self.run_dir}"
            )


def final_samples(store: RunStore, spec: DatasetSpec) -> list[Sample]:
    """The samples of the finished dataset, each with its split (deterministic)."""
    chosen = select_for_export(store.samples(status=["labelled"]), spec.targets())
    return assign_splits(chosen, spec.splits, near_bits=spec.image.checks.near_duplicate_bits)


def check_spec(
    spec: DatasetSpec, labelers: Sequence[str] | None, existing: ExistingDataset | None = None
) -> ExistingDataset | None:
    """Refuse, before anything is written, what cannot work: unknown labelers or formats,
    missing source folders, an existing dataset that does not read. Returns that dataset,
    opened (``existing`` where the caller opened it already: parsing it is the costly part)."""
    check_labelers(labelers or ())
    unknown = [f for f in spec.formats if f not in known_formats()]
    if unknown:
        raise UsageError(
            f"unknown export format {unknown[0]!r}; known: {', '.join(known_formats())}"
        )
    if not spec.existing:
        existing = None
    elif existing is None or existing.root.resolve() != Path(spec.existing).expanduser().resolve():
        existing = open_existing(spec.existing)
    for src in spec.sources:
        if src.kind in WEB_SEARCH_SOURCES:
            from datasetagent.sources.websearch import open_search

            open_search(src, spec)
        else:
            open_source(src, spec)
    return existing


def _describe(counts: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing to do"


def build(
    spec: DatasetSpec | None,
    run_dir: Path,
    *,
    resume: bool = False,
    labelers: Sequence[str] | None = None,
    workers: int | None = None,
    reporter: Reporter | None = None,
    backend_options: BackendOptions | None = None,
    device: str | None = None,
    verifiers: Sequence[str] | None = None,
    auditors: Sequence[LabelVerifier] = (),
    tool_llm: str | None = None,
    existing: ExistingDataset | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> BuildResult:
    """Run (or, with ``resume``, continue) a build in ``run_dir``: the keywords make the
    run's ``BuildOptions`` (see ``build_run``). ``auditors`` answer with the truth (a person's
    decisions, ground truth in benchmarks) on a random sample of accepted labels each round;
    ALR then comes from them. ``existing`` is the dataset the spec expands, where the caller
    has opened it already."""
    options = BuildOptions.parse(
        labelers=None if labelers is None else tuple(labelers),
        verifiers=None if verifiers is None else tuple(verifiers),
        backend_options=backend_options,
        tool_llm=tool_llm,
        executor=executor,
        ray_address=ray_address,
        device=device,
        workers=workers,
    )
    return build_run(
        spec,
        run_dir,
        options,
        resume=resume,
        reporter=reporter,
        auditors=auditors,
        existing=existing,
    )


def build_run(
    spec: DatasetSpec | None,
    run_dir: Path,
    options: BuildOptions,
    *,
    resume: bool = False,
    reporter: Reporter | None = None,
    auditors: Sequence[LabelVerifier] = (),
    existing: ExistingDataset | None = None,
) -> BuildResult:
    """Claim the run folder, store (or load) the spec and the options, assemble the run and
    run its pipeline. The options a run starts with are stored with it, so ``--resume``
    without labelers labels the rest of the run the same way (``config.run_options``)."""
    from datasetagent.store.lock import LOCK_NAME, run_lock

    db_path = run_dir / "run.db"
    if spec is not None:
        spec = spec.anchored()  # a resume or export from another folder reads the same ones
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"run folder {run_dir} is a file; give a folder for -o")
    if resume and not db_path.exists():
        raise UsageError(f"nothing to resume in {run_dir}: it holds no run.db")
    if not db_path.exists() and run_dir.is_dir():
        # a new run goes into a new or empty folder: spec.yaml, summary.json, images/ and
        # export/ would overwrite files of the same names that are not this tool's
        found = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_NAME)
        if found:
            raise UsageError(
                f"{run_dir} holds files but no run of datasetagent (no run.db; found "
                f"{len(found)}: {', '.join(found[:3])}); give a new or empty folder for -o"
            )
    if spec is not None:
        named = [*(options.labelers or ()), *(options.verifiers or ())]
        existing = check_spec(spec, named, existing)
    check_executor(options)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a link to nowhere, a file on the way, /proc: not a folder to make
        why = "it is a link to a missing folder" if run_dir.is_symlink() else exc.strerror
        raise UsageError(
            f"cannot make the run folder {run_dir}: {why}; give a new or empty folder for -o"
        ) from exc
    with run_lock(run_dir, "build"):
        _claim_run(db_path, run_dir, resume)
        with RunStore(db_path) as store:
            used = _run_spec(store, spec, run_dir)
            if spec is None and existing is not None:  # a resume given the dataset again
                same = used.existing and (
                    existing.root.resolve() == Path(used.existing).expanduser().resolve()
                )
                if not same:
                    raise UsageError(
                        f"--existing {existing.root} is not the dataset the run in {run_dir} "
                        f"expands ({used.existing or 'none'}); resume without it, or with that one"
                    )
            options = run_options(store, options)
            assembly = assemble(used, options, auditors=auditors, reporter=reporter)
            pipeline = Pipeline(
                used,
                run_dir,
                store=store,
                assembly=assembly,
                options=options,
                reporter=reporter,
                existing=existing,
            )
            return pipeline.run()


def _claim_run(db_path: Path, run_dir: Path, resume: bool) -> None:
    """Under the run lock: a resume needs the run, a new run may not replace one with work
    done (a run that stopped before any work is started afresh)."""
    if resume and not db_path.exists():
        raise UsageError(f"nothing to resume in {run_dir}: it holds no run.db")
    if not resume and db_path.exists():
        with RunStore(db_path) as old:
            started = old.has_work()
        if started:
            raise UsageError(
                f"{run_dir} already holds a run; pass --resume to continue it, or choose a new -o"
            )
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)


def _run_spec(store: RunStore, spec: DatasetSpec | None, run_dir: Path) -> DatasetSpec:
    """The run's spec: ``spec`` stored (and written to spec.yaml) for a new run; the stored
    one for a resume, which a spec given again must equal."""
    stored = store.load_spec()
    if stored is None:
        if spec is None:
            raise StoreError(f"{store.path} holds no spec; start the run again without --resume")
        store.save_spec(spec)
        (run_dir / "spec.yaml").write_text(spec.to_yaml(), encoding="utf-8")
        return spec
    if spec is not None and spec not in (stored, stored.anchored()):
        raise UsageError(
            f"the spec given differs from the one {run_dir} was started with; resume "
            "without a spec, or start a new run folder"
        )
    return stored
