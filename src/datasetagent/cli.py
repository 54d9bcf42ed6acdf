"""Command line: parse, call the library, render. Progress on stderr, results on stdout."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import click
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from datasetagent import __version__
from datasetagent.errors import DatasetAgentError, UsageError

if TYPE_CHECKING:
    from datasetagent.agents.demand import Planned
    from datasetagent.spec import DatasetSpec
    from datasetagent.store import RunStore

P = ParamSpec("P")
R = TypeVar("R")

err = Console(stderr=True, highlight=False, soft_wrap=True)

#: Control characters (C0 but tab and newline, DEL, C1): a terminal obeys the escape sequences
#: they start, and a note can carry a web server's text (an API's error, a redirect target).
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters shown as ``\\xNN`` instead of sent to the terminal."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class RichReporter:
    """Renders pipeline progress on stderr: a live bar on a terminal; elsewhere (logs, CI)
    plain lines such as ``round 1 · processing 120/300``, one every ``every`` seconds while a
    stage runs and one when it ends."""

    def __init__(self, console: Console, enabled: bool = True, every: float = 10.0) -> None:
        self.console = console
        self.live = enabled and console.is_terminal
        self.plain = enabled and not console.is_terminal
        self.every = every
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None
        self._label = ""
        self._done = self._shown = 0
        self._total: int | None = None
        self._printed = 0.0

    def __enter__(self) -> RichReporter:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()
        self._line(final=True)

    def stage(self, name: str, round_: int, total: int | None = None) -> None:
        self._line(final=True)
        label = f"round {round_} · {name}" if round_ > 0 else name
        self._label, self._done, self._shown, self._total = label, 0, 0, total
        self._printed = time.monotonic()
        if self.live:
            if self._task is not None:
                self.progress.remove_task(self._task)
            self._task = self.progress.add_task(label, total=total)

    def advance(self, n: int = 1) -> None:
        self._done += n
        if self.live and self._task is not None:
            self.progress.advance(self._task, n)
        elif self.plain and time.monotonic() - self._printed >= self.every:
            self._line()

    def note(self, message: str) -> None:
        if self._total is not None and self._done >= self._total:  # the stage is over
            self._line(final=True)
        self.console.print(printable(message), markup=False)

    def _line(self, final: bool = False) -> None:
        """The plain progress line of the current stage (at its end: once, if it did work)."""
        if not self.plain or not self._label:
            return
        if not final or self._done != self._shown:
            of = f"/{self._total}" if self._total is not None else ""
            self.console.print(f"{self._label} {self._done}{of}", markup=False, highlight=False)
            self._printed, self._shown = time.monotonic(), self._done
        if final:
            self._label = ""


#: Failures of the disk rather than of the program: a full disk, a quota, a read-only one.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
_LINK_LOOP = "Symlink loop from "
_LOOP_FIX = " is a loop of symbolic links (or runs through one); fix or remove the link"


def _fail(message: str, code: int) -> NoReturn:
    """Print the one-line error and exit (``--debug``: raise it with its traceback)."""
    if click.get_current_context().find_root().params.get("debug"):
        raise
    err.print(f"[red]error:[/red] {escape(printable(message))}", soft_wrap=True)
    sys.exit(code)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn library errors into one line and an exit code (``--debug`` shows the traceback)."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except DatasetAgentError as exc:
            _fail(str(exc), exc.exit_code)
        except RecursionError:  # input nested past what any reader handles
            _fail("an input file is nested too deeply to read; check the files given", 2)
        except RuntimeError as exc:  # pathlib's resolve() on a loop of links (Python < 3.13)
            if not str(exc).startswith(_LINK_LOOP):
                raise
            _fail(f"{str(exc).removeprefix(_LINK_LOOP).strip(repr(''))}{_LOOP_FIX}", 2)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                _fail(f"{exc.filename}{_LOOP_FIX}", 2)
            if exc.errno not in _DISK_ERRORS:
                raise
            where = f" writing {exc.filename}" if exc.filename else ""
            _fail(
                f"{exc.strerror or exc}{where}: free some space (or make the folder "
                "writable), then continue a build with datasetagent build --resume -o RUN",
                1,
            )

    return wrapper


source_option = click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="SRC",
    help="Where images come from (repeatable): a folder (flat or one folder per class); a URL "
    "list (.txt, .csv, .jsonl, .parquet); openverse or wikimedia, each optionally @BASE_URL "
    "(a mirror or test server); or KIND:LOCATION.",
)


def existing_option(fn: Callable[P, R]) -> Callable[P, R]:
    """``--existing DIR`` and ``--existing-outside-root``."""
    fn = click.option(
        "--existing-outside-root",
        is_flag=True,
        help="Let the --existing dataset's YOLO data.yaml `path:` point outside its folder "
        "(its images are then read there).",
    )(fn)
    return click.option(
        "--existing",
        metavar="DIR",
        help="Existing dataset to expand: ImageFolder, labels.csv, COCO, YOLO, VOC or HF "
        "Parquet. Only files inside DIR are read.",
    )(fn)


spec_set_option = click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set a spec field after planning, by its dotted path (repeatable), e.g. --set "
    "quality.min_confidence=0.8 --set image.size=128,128 --set enhance=off.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="datasetagent")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
def main(debug: bool) -> None:
    """Build cleaned, labelled, split, ready-to-train image datasets from a plain request."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _open_existing(existing: str | None, outside_root: bool = False) -> Any:
    """The ``--existing`` dataset, opened (parsed) once for planning and building."""
    if existing is None:
        if outside_root:
            raise UsageError("--existing-outside-root needs --existing DIR")
        return None
    from datasetagent.sources.existing import open_existing

    return open_existing(existing, outside_root=outside_root)


@main.command()
@click.argument("request")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the spec to this YAML file instead of stdout.",
)
@existing_option
@source_option
@click.option(
    "--llm",
    "--llm-model",
    "llm",
    metavar="MODEL",
    help="Plan with an LLM, e.g. openai:gpt-4o-mini or ollama:qwen2.5:7b (default: by rule).",
)
@click.option("--llm-base-url", metavar="URL", help="OpenAI-compatible endpoint for --llm.")
@spec_set_option
@handle_errors
def plan(
    request: str,
    output: Path | None,
    existing: str | None,
    existing_outside_root: bool,
    sources: tuple[str, ...],
    llm: str | None,
    llm_base_url: str | None,
    settings: tuple[str, ...],
) -> None:
    """Turn REQUEST into a dataset spec (Demand Analysis only); how each phrase was read, and
    the words not used, go to stderr."""
    dataset = _open_existing(existing, existing_outside_root)
    planned = _plan(request, dataset, sources, llm, llm_base_url)
    _show_reading(planned, every=True)
    spec = planned.spec.with_settings(settings) if settings else planned.spec
    text = spec.to_yaml()
    if output is None:
        click.echo(text, nl=False)
    else:
        _check_spec_output(output)
        output.write_text(text, encoding="utf-8")
        err.print(f"spec written to {output}")


def _plan(
    request: str,
    existing: Any,
    sources: tuple[str, ...],
    llm: str | None,
    base_url: str | None,
) -> Planned:
    """Demand Analysis: by LLM when one is named, by rule otherwise."""
    from datasetagent.agents.demand import DemandAnalyst
    from datasetagent.spec import SourceSpec

    if base_url and not llm:
        raise UsageError("--llm-base-url needs --llm MODEL (the model name the server serves)")
    analyst = DemandAnalyst(llm, options={"base_url": base_url} if base_url else None)
    planned = analyst.explain(
        request,
        existing=existing.profile() if existing is not None else None,
        sources=[SourceSpec.parse(s) for s in sources],
    )
    if llm:
        usage = analyst.usage
        err.print(f"planned with {llm}: {usage.calls} call(s), {usage.retries} retried")
    return planned


def _show_reading(planned: Planned, *, every: bool) -> None:
    """On stderr: how each phrase was read (``every``), and a warning naming unused words."""
    if every:
        for reading in planned.readings:
            err.print(f'read "{escape(reading.phrase)}" as {escape(reading.setting)}')
    if planned.unused:
        words = ", ".join(f'"{escape(w)}"' for w in planned.unused)
        err.print(
            f"[yellow]warning:[/yellow] the request's {words} was not used (neither a setting "
            "nor a class); check the spec (datasetagent plan shows how each phrase was read)"
        )


def _load_or_plan(
    spec_or_request: str,
    existing: Any,
    sources: tuple[str, ...],
    llm: str | None = None,
    base_url: str | None = None,
    settings: tuple[str, ...] = (),
) -> DatasetSpec:
    """The spec of a spec file (with ``sources``/``existing`` added) or of a request (unused
    words warned about on stderr), with ``settings`` (``--set KEY=VALUE``) applied."""
    from datasetagent.spec import DatasetSpec, SourceSpec

    srcs = [SourceSpec.parse(s) for s in sources]
    path = Path(spec_or_request)
    if path.suffix.lower() in {".yaml", ".yml", ".json"}:
        if not path.is_file():
            raise UsageError(f"spec file {path} does not exist")
        spec = DatasetSpec.load(path)
        update: dict[str, Any] = {}
        if srcs:
            update["sources"] = (*spec.sources, *srcs)
        if existing is not None:
            update["existing"] = str(existing.root)
        spec = spec.model_copy(update=update) if update else spec
    else:
        planned = _plan(spec_or_request, existing, sources, llm, base_url)
        _show_reading(planned, every=False)
        spec = planned.spec
    return spec.with_settings(settings) if settings else spec


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title="per class", show_edge=False)
    for col in ("class", "target", "accepted", "exported", "review"):
        table.add_column(col, justify="right" if col != "class" else "left")
    classes: dict[str, dict[str, int]] = summary["classes"]
    for name, row in classes.items():
        table.add_row(name, *(str(row[k]) for k in ("target", "accepted", "exported", "review")))
    err.print(table)
    rejected = ", ".join(f"{k} {v}" for k, v in summary["rejected"].items()) or "none"
    no_class = summary.get("review_no_class") or 0
    err.print(
        f"exported {summary['exported']} images {summary['splits']}; "
        f"CBI {summary['cbi']:.4f}; held for review {summary['review']}"
        + (f" ({no_class} with no proposed class)" if no_class else "")
    )
    err.print(f"rejected: {rejected}")
    if summary.get("alr") is not None:
        lo, hi = summary["alr_interval"]
        err.print(
            f"ALR {summary['alr']:.3f} (95% interval {lo:.3f}-{hi:.3f}): {summary['alr_method']}"
        )
    if summary.get("disputed"):
        err.print(f"labels disputed by a verifier and held for review: {summary['disputed']}")
    if summary.get("relabelled"):
        err.print(f"labels the verifiers replaced, all naming one class: {summary['relabelled']}")
    if summary.get("ssim_mean") is not None:
        err.print(
            f"enhanced {summary['enhanced']} images; SSIM to input mean "
            f"{summary['ssim_mean']:.4f}, 5th percentile {summary['ssim_p5']:.4f}"
        )
    for name, used in (summary.get("usage") or {}).items():
        tokens = used.get("input_tokens", 0) + used.get("output_tokens", 0)
        err.print(
            f"{name}: {used.get('calls', 0)} requests ({used.get('retries', 0)} retries), "
            f"{used.get('images', 0)} images"
            + (f", {tokens} tokens" if tokens else "")
            + (f", {used['failures']} failed" if used.get("failures") else "")
        )
    err.print(f"stopped: {summary['stop_reason']} after {summary['rounds']} round(s)")
    for fmt, where in summary["exports"].items():
        err.print(f"export ({fmt}): {where}")
    held = {
        name: row["review"]
        for name, row in classes.items()
        if row["review"] and row["accepted"] < row["target"]
    }
    if held:
        named = ", ".join(f"{n} {k}" for n, k in held.items())
        err.print(
            f"held back and proposed for classes short of their target: {named}; a person can "
            f"fill them: datasetagent review {summary['run']} --write queue.jsonl "
            f"--review {sum(held.values())}"
        )


@main.command()
@click.argument("spec_or_request", required=False)
@click.option(
    "-o",
    "--output",
    "run_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Run folder (spec.yaml, run.db, images/, export/).",
)
@source_option
@existing_option
@click.option(
    "--format",
    "formats",
    multiple=True,
    metavar="F",
    help="Export format (repeatable); overrides the spec's.",
)
@click.option(
    "--labeler",
    "labelers",
    multiple=True,
    metavar="NAME[:MODEL]",
    help="Labeler to use (repeatable): folder-name, seed, clip, siglip, owlv2, grounding-dino, "
    "sam, llm; MODEL is a hub id or local folder (default: every offline one that applies). "
    "See `datasetagent models list`.",
)
@click.option(
    "--verifier",
    "verifiers",
    multiple=True,
    metavar="NAME[:MODEL]",
    help="Independent checker of every new label (repeatable), e.g. llm:ollama:qwen2.5vl:7b; "
    "calibrated on --existing images, it holds back labels it disputes and measures ALR. "
    "Two or more relabel what they all reject as one and the same other class.",
)
@click.option(
    "--llm",
    "--llm-model",
    "llm",
    metavar="MODEL",
    help="Multimodal LLM that plans the request and labels images, e.g. openai:gpt-4o-mini or "
    "ollama:qwen2.5vl:7b (keys from environment variables only).",
)
@click.option(
    "--llm-base-url",
    metavar="URL",
    help="OpenAI-compatible endpoint for --llm (a vLLM, llama.cpp or LM Studio server).",
)
@click.option(
    "--llm-tools",
    is_flag=True,
    help="Also let the --llm model choose each image's enhancement tools and refuse unusable "
    "images (one call per image; the SSIM guard still applies).",
)
@click.option(
    "--labeler-option",
    "labeler_options",
    multiple=True,
    metavar="NAME.KEY=VALUE",
    help="Backend setting, e.g. --labeler-option owlv2.score_threshold=0.2 (repeatable).",
)
@spec_set_option
@click.option("--device", help="Device for local models: cuda, mps or cpu (default: the best).")
@click.option("--workers", type=click.IntRange(1), help="Worker processes (default: all cores).")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where the per-image stages run: local worker processes, or Ray Data (extra ray: "
    "a local Ray runtime, or the cluster of --ray-address / RAY_ADDRESS).",
)
@click.option(
    "--ray-address",
    metavar="ADDR",
    help="Ray cluster to join with --executor ray (HOST:PORT of its head node, ray://HOST:PORT "
    "or auto; default: RAY_ADDRESS, else a local runtime started and stopped with the run).",
)
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="HOST[:PORT]",
    help="Let web sources fetch from this loopback, private or otherwise non-public address "
    "(repeatable; refused by default). Stored with the run for --resume.",
)
@click.option("--resume", is_flag=True, help="Continue the run stored in the run folder.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@handle_errors
def build(
    spec_or_request: str | None,
    run_dir: Path,
    sources: tuple[str, ...],
    existing: str | None,
    existing_outside_root: bool,
    formats: tuple[str, ...],
    labelers: tuple[str, ...],
    verifiers: tuple[str, ...],
    llm: str | None,
    llm_base_url: str | None,
    llm_tools: bool,
    labeler_options: tuple[str, ...],
    settings: tuple[str, ...],
    device: str | None,
    workers: int | None,
    executor: str,
    ray_address: str | None,
    allow_hosts: tuple[str, ...],
    resume: bool,
    as_json: bool,
) -> None:
    """Build a dataset from SPEC_OR_REQUEST (a spec YAML file or a request in words)."""
    from datasetagent.config import BuildOptions
    from datasetagent.pipeline import build_run

    if llm_tools and not llm:
        raise UsageError("--llm-tools needs --llm MODEL")
    names, backend_settings = _labeler_settings(labelers, llm, llm_base_url, labeler_options)
    options = BuildOptions.parse(  # checked before a request is planned
        labelers=None if names is None else tuple(names),
        verifiers=tuple(verifiers) or None,
        backend_options=backend_settings,
        tool_llm=llm if llm_tools else None,
        executor=executor,
        ray_address=ray_address,
        device=device,
        workers=workers,
        allow_hosts=_allow_hosts(allow_hosts),
    )
    spec, dataset = None, _open_existing(existing, existing_outside_root)
    if spec_or_request is not None:
        if formats:  # checked like any other setting (a format that cannot hold the task)
            settings = (*settings, f"formats={','.join(formats)}")
        spec = _load_or_plan(spec_or_request, dataset, sources, llm, llm_base_url, settings)
    elif settings or formats or sources:
        given = [
            flag
            for flag, value in (("--set", settings), ("--format", formats), ("--source", sources))
            if value
        ]
        raise UsageError(
            f"{', '.join(given)} need a request or spec file; a resumed run keeps its spec "
            f"(another format of a finished run: datasetagent export {run_dir} --format F -o DIR)"
        )
    elif not resume:
        raise UsageError(
            'give a request or a spec file, e.g. datasetagent build "cats and dogs, '
            '50 each" --source photos/ -o run/'
        )
    # Ray's runtime may write to this process's stdout (a line on a worker it restarted):
    # stdout carries only the summary, so while Ray runs, whatever reaches it goes to stderr
    guard = stdout_to_stderr() if options.executor == "ray" else nullcontext()
    with guard, RichReporter(err) as reporter:
        result = build_run(
            spec, run_dir, options, resume=resume, reporter=reporter, existing=dataset
        )
    summary = result.summary()
    _print_summary(summary)
    if as_json:
        click.echo(json.dumps(summary))


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Everything written to file descriptor 1 (by Python or by native code) goes to stderr
    until the block ends; then stdout is this process's stdout again."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _allow_hosts(hosts: tuple[str, ...]) -> tuple[str, ...] | None:
    """``--allow-host`` values, each checked (a bad one is a usage error before any work)."""
    from datasetagent.web.guard import parse_allow_host

    for host in hosts:
        parse_allow_host(host)
    return hosts or None


def _labeler_settings(
    labelers: tuple[str, ...],
    llm: str | None,
    base_url: str | None,
    pairs: tuple[str, ...],
) -> tuple[list[str] | None, dict[str, dict[str, str | int | float | bool]] | None]:
    """The labeler list and backend options the build options describe (None: not given)."""
    from datasetagent.models import default_labelers

    names = list(labelers)
    options: dict[str, dict[str, str | int | float | bool]] = {}
    if base_url and not llm:
        raise UsageError("--llm-base-url needs --llm MODEL (the model name the server serves)")
    if llm:
        if not names:
            names = list(default_labelers())  # the LLM joins the offline labelers
        # `--labeler llm` names the model --llm gives; the LLM is one labeler however named
        names = [f"llm:{llm}" if n.strip() == "llm" else n for n in names]
        if f"llm:{llm}" not in names:
            names.append(f"llm:{llm}")
    elif "llm" in (n.strip() for n in names):
        raise UsageError(
            "--labeler llm needs a model: --labeler llm:MODEL, or --llm MODEL "
            "(e.g. --labeler llm:ollama:qwen2.5vl:7b)"
        )
    if base_url:
        options.setdefault("llm", {})["base_url"] = base_url
    for pair in pairs:
        key, sep, value = pair.partition("=")
        name, dot, setting = key.partition(".")
        if not (sep and dot and name and setting):
            raise UsageError(
                f"--labeler-option takes NAME.KEY=VALUE, got {pair!r} "
                "(e.g. --labeler-option owlv2.score_threshold=0.2)"
            )
        options.setdefault(name.strip(), {})[setting.strip()] = _setting_value(value.strip())
    return names or None, options or None


def _setting_value(text: str) -> str | int | float | bool:
    if text.lower() in {"true", "false"}:
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _parse_settings(pairs: tuple[str, ...]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--set takes NAME=VALUE, got {pair!r} (e.g. --set max_aspect=3)")
        out[name.strip()] = [v for v in value.split(",") if v] if name == "flag_only" else value
    return out


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--jsonl",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write one JSON line per image here (default: stdout).",
)
@click.option(
    "--min-side",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Shorter side under which an image is tiny.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(1),
    default=100_000_000,
    show_default=True,
    help="Larger images are refused from their header (too_large).",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="Tune a threshold, e.g. --set dark_highlights=0.2 --set flag_only=blurry,dark "
    "(names in README).",
)
@click.option("--workers", type=click.IntRange(1), help="Worker processes (default: all cores).")
@handle_errors
def scan(
    path: Path,
    jsonl: Path | None,
    min_side: int,
    max_pixels: int,
    settings: tuple[str, ...],
    workers: int | None,
) -> None:
    """Quality scan of the images under PATH: one JSON line per image, a summary on stderr."""
    import time
    from collections import Counter

    from datasetagent.scan import ScanParams, scan_folder
    from datasetagent.sources.files import skip_messages
    from datasetagent.spec import CheckThresholds, describe_validation_error

    try:
        checks = CheckThresholds.model_validate(_parse_settings(settings))
    except ValidationError as exc:
        raise UsageError(f"--set {describe_validation_error(exc)}") from exc
    params = ScanParams(checks=checks, min_side=min_side, max_pixels=max_pixels)
    if jsonl is not None:
        _check_scan_output(jsonl)
    skipped: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    total = ok = 0
    start = time.perf_counter()
    out = jsonl.open("w", encoding="utf-8") if jsonl is not None else sys.stdout
    try:
        with RichReporter(err) as reporter:
            reporter.stage(f"scanning {path}", 0)
            for line in scan_folder(
                path,
                params,
                workers=workers,
                on_skip=lambda p, why: skipped.update([why]),
                on_progress=reporter.advance,
            ):
                out.write(line.model_dump_json(exclude_none=False) + "\n")
                total += 1
                ok += line.ok
                counts.update(line.issues)
    finally:
        if jsonl is not None:
            out.close()
    elapsed = time.perf_counter() - start
    issues = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
    err.print(
        f"scanned {total} images in {elapsed:.1f} s ({total / max(elapsed, 1e-9):.0f}/s): "
        f"{ok} ok, {total - ok} rejected; issues: {issues}"
    )
    for note in skip_messages(path, skipped):
        err.print(note)


def _check_spec_output(output: Path) -> None:
    """Refuse to overwrite a file of a run (its database, spec, summary, anything in its
    folders) or a file that is not a spec (a photo or notes given to -o by a slip)."""
    import yaml

    from datasetagent.agents.review import RUN_FILES

    target = output.resolve()
    run = next((d for d in target.parents if (d / "run.db").is_file()), None)
    if run is not None and (target.parent != run or target.name in RUN_FILES):
        raise UsageError(
            f"{output} is a file of the run in {run}; write the spec elsewhere, e.g. -o spec.yaml"
        )
    if not target.is_file() or target.stat().st_size == 0:
        return
    try:
        data = yaml.safe_load(target.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        data = None
    if not (isinstance(data, dict) and "classes" in data):
        raise UsageError(f"{output} exists and is not a spec; give a new file name for -o")


def _check_scan_output(jsonl: Path) -> None:
    """Refuse to overwrite a regular file that is not an earlier scan's JSON lines (a photo or
    notes given to --jsonl by a slip). Empty files, new names, devices and pipes are fine."""
    try:
        if not jsonl.is_file() or jsonl.stat().st_size == 0:
            return
        with jsonl.open(encoding="utf-8") as f:
            first = json.loads(f.readline(1 << 20))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        first = None
    if not (isinstance(first, dict) and {"path", "ok", "issues"} <= first.keys()):
        raise UsageError(
            f"{jsonl} exists and is not the output of a scan; give a new file name for --jsonl"
        )


@contextmanager
def _open_run(run_dir: Path, lock: str | None = None) -> Iterator[tuple[RunStore, DatasetSpec]]:
    """The store and spec of the run in ``run_dir``, or a one-line error saying what to do.
    With ``lock`` (the command's name) the run is locked against other commands meanwhile."""
    from contextlib import nullcontext

    from datasetagent.store import RunStore, run_lock

    db = run_dir / "run.db"
    if not db.exists():
        raise UsageError(f"{run_dir} holds no run (no run.db); run datasetagent build first")
    with (
        run_lock(run_dir, lock) if lock is not None else nullcontext(),
        RunStore(db) as store,
    ):
        spec = store.load_spec()
        if spec is None:
            raise UsageError(f"the run in {run_dir} never started (no spec stored); build it again")
        yield store, spec


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--write",
    "write_to",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the review queue and an audit sample here (JSON lines) to fill in.",
)
@click.option(
    "--apply",
    "apply_from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Apply a filled-in queue: each line's decision accept, relabel (with label) or reject.",
)
@click.option("--audit", "audit_size", type=click.IntRange(0), default=100, show_default=True)
@click.option(
    "--review",
    "review_size",
    type=click.IntRange(0),
    default=None,
    help="Write only this many held-back samples, those that fill short classes first "
    "[default: all].",
)
@click.option(
    "--serve",
    is_flag=True,
    help="Serve the review as a local web app (keys: a accept, r reject, 1-9 relabel, u undo).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port of --serve; 0 picks a free one.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address --serve binds; another than loopback needs --allow-remote.",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Let --host be an address other machines reach (anyone who reaches it can decide).",
)
@click.option("--no-browser", is_flag=True, help="Do not open a browser on the --serve URL.")
@handle_errors
def review(
    run_dir: Path,
    write_to: Path | None,
    apply_from: Path | None,
    audit_size: int,
    review_size: int | None,
    serve: bool,
    port: int,
    host: str,
    allow_remote: bool,
    no_browser: bool,
) -> None:
    """Human review of a run: held-back samples and a random audit of the new labels.

    Fill in the written file's "decision" fields, apply it, then export again; the audit
    measures ALR directly. Or review in the browser with --serve: each decision is stored at
    once (the server holds the run lock until stopped: export after Ctrl-C)."""
    from datasetagent.agents.review import apply_decisions, write_queue
    from datasetagent.agents.supervision import SupervisionAgent
    from datasetagent.agents.verification import Verification
    from datasetagent.pipeline import FINAL, final_samples
    from datasetagent.store import BlobStore

    if sum((write_to is not None, apply_from is not None, serve)) != 1:
        raise UsageError("give one of --write FILE, --apply FILE or --serve")
    if serve:
        _serve_review(run_dir, host, port, allow_remote, no_browser, audit_size)
        return
    with _open_run(run_dir, lock=None if apply_from is None else "review --apply") as (
        store,
        spec,
    ):
        blobs = BlobStore(run_dir)
        if write_to is not None:
            finished = store.stage_done(FINAL, "split")
            exported = final_samples(store, spec) if finished else None
            counts = write_queue(store, spec, blobs, write_to, audit_size, exported, review_size)
            err.print(
                f"wrote {counts['review']} held-back samples and {counts['audit']} to audit "
                f"to {write_to}; set each decision, then: datasetagent review {run_dir} "
                f"--apply {write_to}"
            )
            return
        assert apply_from is not None
        report: Path | None = None
        done = apply_decisions(store, spec, apply_from)
        learned = _learn(store, blobs, spec)
        reports = store.reports()
        if reports:  # the last round's report, measured again with the decisions
            last = reports[-1]
            verification = Verification(store, spec, lambda s: blobs.open_image(s.blob))
            fresh = SupervisionAgent(store, spec, verification).assess(last.round)
            store.save_report(
                fresh.model_copy(update={"verdict": last.verdict, "reason": last.reason})
            )
            if fresh.alr is not None and fresh.alr_interval is not None:
                lo, hi = fresh.alr_interval
                err.print(
                    f"ALR {fresh.alr:.3f} (95% interval {lo:.3f}-{hi:.3f}): {fresh.alr_method}"
                )
        if store.stage_done(FINAL, "split"):  # a finished run's report shows the decisions
            report = _rewrite_report(run_dir, store, spec)
    decided = ", ".join(f"{k} {v}" for k, v in done.applied.items())
    err.print(f"applied: {decided}; export again with datasetagent export {run_dir} -o DIR")
    if report is not None:
        err.print(f"report written again: {report}")
    for reason, n in done.not_applied.items():
        err.print(f"not applied: {n} decision(s): {reason}")
    if learned.skipped is None:
        err.print(
            f"the labeler learned from {learned.decisions} decision(s): "
            f"{len(learned.promoted)} held-back sample(s) now labelled (seed+review, audited "
            "like every new label)"
        )


def _rewrite_report(run_dir: Path, store: Any, spec: Any) -> Path | None:
    """``RUN/report.html`` written again; the decisions are applied by now, so a report that
    cannot be written is a warning, not a failure."""
    from datasetagent.report import write_report

    try:
        return write_report(run_dir, store, spec)
    except (OSError, DatasetAgentError) as exc:
        err.print(printable(f"report.html not written again: {exc}"), markup=False)
        return None


def _learn(store: Any, blobs: Any, spec: Any) -> Any:
    """``review_learning.learn_from_decisions`` with one BLAS thread (the refit and re-scoring
    are small; more threads only contend with other work)."""
    from threadpoolctl import threadpool_limits

    from datasetagent.agents.review_learning import learn_from_decisions

    with threadpool_limits(1):
        return learn_from_decisions(store, blobs, spec)


def _serve_review(
    run_dir: Path, host: str, port: int, allow_remote: bool, no_browser: bool, audit_size: int
) -> None:
    """Serve the review app until Ctrl-C, holding the run lock meanwhile (a build --resume,
    review --apply or export waits for it: two writers must not race on one run)."""
    from datasetagent.review_app import bind, is_loopback, serve
    from datasetagent.review_app.session import ReviewSession

    if not is_loopback(host) and not allow_remote:
        raise UsageError(
            f"--host {host} would let other machines decide on this run; serve on 127.0.0.1, "
            "or add --allow-remote if that is meant"
        )
    with _open_run(run_dir, lock="review --serve"):
        session = ReviewSession(run_dir, audit_size=audit_size)
        session.on_decisions = session.learn  # every 10 decisions, the labeler learns them
        sock = bind(host, port)
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{sock.getsockname()[1]}/"
        click.echo(f"serving the review of {run_dir} at {url} (Ctrl-C to stop)", nl=True)
        sys.stdout.flush()
        if not no_browser:
            import webbrowser

            webbrowser.open(url)
        try:
            serve(session, sock, host)
        finally:
            sock.close()


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", default="imagefolder", show_default=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for the export: new, empty or a previous export (which it replaces).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace the -o folder even though it holds files that are not an export.",
)
@handle_errors
def export(run_dir: Path, fmt: str, output: Path, force: bool) -> None:
    """Export a finished run to another folder or format."""
    from datasetagent.export import check_export_folder, export_samples
    from datasetagent.pipeline import FINAL, final_samples
    from datasetagent.store import BlobStore

    check_export_folder(output, run_dir=run_dir, force=force)  # before the run is even opened
    with _open_run(run_dir, lock="export") as (store, spec):
        reports = store.reports()
        if not store.stage_done(FINAL, "split"):
            raise UsageError(
                f"the run in {run_dir} has not finished; continue it with "
                f"datasetagent build --resume -o {run_dir}"
            )
        samples = final_samples(store, spec)
        blobs = BlobStore(run_dir)
        export_samples(
            fmt,
            output,
            spec,
            samples,
            lambda s: blobs.path(s.blob),
            reports[-1] if reports else None,
            run_dir=run_dir,
            force=force,
        )
    err.print(f"exported {len(samples)} images as {fmt} to {output}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Write the report to this file instead of RUN/report.html (never over a file that "
    "is not a report).",
)
@handle_errors
def report(run_dir: Path, output: Path | None) -> None:
    """Write the run's self-contained report.html (targets, rounds, charts, galleries) and
    print its path; a run still under way gets a report of what it holds so far."""
    from datasetagent.report import write_report

    start = time.perf_counter()
    with _open_run(run_dir) as (store, spec):
        path = write_report(run_dir, store, spec, output)
    size = path.stat().st_size
    err.print(
        f"report of {run_dir} written: {size / 1e6:.2f} MB in {time.perf_counter() - start:.1f} s"
    )
    click.echo(str(path))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--test",
    "test_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A labelled, held-out test folder in any layout the importers read (ImageFolder, CSV, "
    "COCO, YOLO, VOC, HF Parquet).",
)
@click.option(
    "--embedder",
    metavar="NAME[:MODEL]",
    help="Classification: fit a linear probe on this backend's image embeddings (clip, siglip); "
    "default: the run's first labeler that embeds images; 'none': the seed labeler's image "
    "features. Detection: the baseline's image features.",
)
@click.option(
    "--detector-command",
    metavar="COMMAND",
    help="Detection: your own detector, run once per training set with {train} (a COCO "
    "dataset), {images} (the test images and images.json) and {predictions} (the COCO results "
    "JSON it writes) in its arguments or as DATASETAGENT_TRAIN, DATASETAGENT_IMAGES, "
    "DATASETAGENT_PREDICTIONS; split like a shell line but run without a shell.",
)
@click.option(
    "--detector-shell",
    is_flag=True,
    help="Run --detector-command through /bin/sh (pipes, redirections); its placeholders are "
    "filled in quoted.",
)
@click.option(
    "--detector-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop the detector command after this long (default: no limit).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@handle_errors
def evaluate(
    run_dir: Path,
    test_dir: Path,
    embedder: str | None,
    detector_command: str | None,
    detector_shell: bool,
    detector_timeout: float | None,
    as_json: bool,
) -> None:
    """Train a model on the export (and on the existing dataset alone, where the run expanded
    one) and report its held-out score on a test folder: accuracy (classification) or COCO mAP
    (detection). The result also goes into the run's report.html and its exports' data cards."""
    from datasetagent.evaluate import evaluate_run
    from datasetagent.evaluate_detect import DetectorCommand

    detector = None
    if detector_command is not None:
        detector = DetectorCommand.parse(
            detector_command, shell=detector_shell, timeout=detector_timeout
        )
    elif detector_shell or detector_timeout is not None:
        raise UsageError("--detector-shell and --detector-timeout go with --detector-command")
    result = evaluate_run(run_dir, test_dir, embedder=embedder, detector=detector)
    if as_json:
        click.echo(json.dumps(result.as_json()))
        return
    test = result.test
    objects = f", {test.objects} objects" if test.objects is not None else ""
    left = "images without a class" if result.task == "classification" else "objects of no class"
    err.print(
        f"test: {test.n} images{objects} of {test.path} ({test.skipped} {left} of the run, "
        f"{test.overlap} also training images left out); model: {result.model}"
    )
    for what, got in result.trained():
        err.print(
            f"trained on {what} ({got.n_train} images): {got.headline()}; "
            + ", ".join(
                f"{c} {'-' if a is None else format(a, '.3f')}" for c, a in got.per_class.items()
            )
        )
    err.print(f"shown in {run_dir / 'report.html'} and the data cards of {run_dir / 'export'}")


@main.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("demo-output"),
    show_default=True,
    help="Folder for the demo's data and run (replaced if a demo).",
)
@click.option("--workers", type=click.IntRange(1), help="Worker processes (default: all cores).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@handle_errors
def demo(output: Path, workers: int | None, as_json: bool) -> None:
    """Offline demo: expand a small labelled digits set from a messy unlabelled pool."""
    from datasetagent.demo import REQUEST, run_demo

    err.print(
        f'[bold]datasetagent demo[/bold]: "{REQUEST}", seed set + messy pool of '
        "handwritten digits (scikit-learn), fully offline"
    )
    with RichReporter(err) as reporter:
        result = run_demo(output, reporter=reporter, workers=workers)
    summary = result.build.summary()
    summary.update(
        {
            "label_accuracy": round(result.accuracy, 4),
            "label_accuracy_model_labelled": round(result.accuracy_collected, 4),
            "model_labelled": result.labelled_by_model,
            "defects_exported": result.defects_exported,
            "defects_planted": len(result.data.defects) + len(result.data.copies),
        }
    )
    _print_summary(summary)
    err.print(
        f"label accuracy against the true digits: {result.accuracy:.4f} on all "
        f"{summary['exported']} exported ({result.accuracy_collected:.4f} on the "
        f"{result.labelled_by_model} labelled by the seed model)"
    )
    err.print(f"defects planted: {summary['defects_planted']}, exported: {result.defects_exported}")
    run = result.build.run_dir
    err.print(f"run folder: {run} (spec.yaml, run.db, summary.json, report.html)")
    err.print(f"review what was held back: datasetagent review {run} --serve")
    if as_json:
        click.echo(json.dumps(summary))


if __name__ == "__main__":
    main()


@main.group()
def models() -> None:
    """Model backends: which are usable here, and pre-downloading their weights."""


@models.command("list")
@handle_errors
def models_list() -> None:
    """Every labeler, the roles it can play and its default model."""
    from datasetagent.models import BACKENDS, known_labelers

    table = Table(show_edge=False)
    for col in ("labeler", "what it does", "default model"):
        table.add_column(col)
    for name in known_labelers():
        factory = BACKENDS.get(name)
        doc = (factory.__doc__ or "").strip().splitlines()
        table.add_row(name, doc[0] if doc else "", str(getattr(factory, "default_model", "-")))
    err.print(table)


@models.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@handle_errors
def models_check(as_json: bool) -> None:
    """Which backends can run here: libraries installed, default weights cached, hosted keys
    set, local LLM servers answering (asked at their default URLs; nothing else is contacted)."""
    from datasetagent.models.hf import check as check_vision
    from datasetagent.models.llm import check as check_llm
    from datasetagent.models.llm import probe_server

    rows = [*check_vision(), *check_llm(probe=probe_server)]
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table(show_edge=False)
    for col in ("labeler", "model", "ready", "detail"):
        table.add_column(col)
    for row in rows:
        ready = "yes" if row.get("ready") else "no"
        table.add_row(str(row["backend"]), str(row["model"]), ready, str(row["detail"]))
    err.print(table)


@models.command("pull")
@click.argument("name")
@handle_errors
def models_pull(name: str) -> None:
    """Download NAME's weights now (a labeler name for its default model, or a hub id)."""
    from datasetagent.models.hf import pull

    where = pull(name)
    err.print(f"{name}: weights in {where}")
