"""``report.html``: one self-contained page of what a run made and how good it is.

``write_report`` renders the run's facts (``facts.py``) as a page (``html.py``) with inline SVG
charts (``charts.py``) and sampled thumbnails (``gallery.py``), and writes it atomically to a
file ``check_report_file`` allows: never a file of the run other than its report, nor a file
that is not a report of this tool.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from datasetagent.errors import UsageError
from datasetagent.records import Sample
from datasetagent.spec import DatasetSpec
from datasetagent.store import BlobStore, RunStore
from datasetagent.store.blobs import write_atomic

REPORT_NAME = "report.html"
#: Bytes at the start of a file searched for the page's generator mark.
_HEAD = 4096

__all__ = ["REPORT_NAME", "check_report_file", "render_report", "write_report"]


def check_report_file(out: Path) -> Path:
    """The file a report may be written to (``out``, its link followed), or a one-line error:
    a folder, something not a regular file, a file of a run (its database, lock, spec or
    summary, anything in its folders) or an existing file that is not a report of this tool."""
    from datasetagent.agents.review import RUN_FILES
    from datasetagent.report.html import GENERATOR

    target = out.resolve()
    if target.is_dir():
        raise UsageError(f"{out} is a folder; give a file name for -o, e.g. report.html")
    run = next((d for d in target.parents if (d / "run.db").is_file()), None)
    if run is not None and (target.parent != run or target.name in RUN_FILES):
        raise UsageError(
            f"{out} is a file of the run in {run}; write the report elsewhere, e.g. "
            f"-o {run / REPORT_NAME}"
        )
    if not target.parent.is_dir():
        raise UsageError(f"the folder of {out} does not exist; make it first or give another -o")
    if not target.exists():
        return target
    if not target.is_file():
        raise UsageError(
            f"{out} is not a regular file (a device, FIFO or socket); give a file name for -o"
        )
    try:
        with target.open("rb") as f:
            head = f.read(_HEAD)
    except OSError as exc:
        raise UsageError(
            f"{out} cannot be read ({exc.strerror}); give another file for -o"
        ) from exc
    if head and f'<meta name="generator" content="{GENERATOR} '.encode() not in head:
        raise UsageError(
            f"{out} exists and is not a report of datasetagent; give a new file name for -o"
        )
    return target


def render_report(
    run_dir: Path, store: RunStore, spec: DatasetSpec, exported: Sequence[Sample] | None = None
) -> str:
    """The report page of the run in ``run_dir`` (``exported``: its dataset, where the caller
    has it)."""
    from datasetagent.report.facts import gather
    from datasetagent.report.gallery import Thumbnails
    from datasetagent.report.html import render

    facts = gather(run_dir, store, spec, exported)
    thumbs = Thumbnails(BlobStore(run_dir), spec.image.max_pixels, spec.image.color_mode)
    return render(facts, thumbs)


def write_report(
    run_dir: Path,
    store: RunStore,
    spec: DatasetSpec,
    out: Path | None = None,
    *,
    exported: Sequence[Sample] | None = None,
) -> Path:
    """Write the report of the run in ``run_dir`` to ``out`` (default ``RUN/report.html``),
    atomically; returns the path written."""
    target = check_report_file(out if out is not None else run_dir / REPORT_NAME)
    page = render_report(run_dir, store, spec, exported)
    write_atomic(target, page.encode("utf-8"), mode=0o644)
    return target
