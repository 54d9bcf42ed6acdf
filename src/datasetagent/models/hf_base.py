"""What the transformers backends share: options, device and precision, loading, batching.

Imported only by the backend factories in ``models.hf`` (it imports torch at module level).
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from PIL import Image

from datasetagent.errors import BackendError, ConfigError
from datasetagent.models import BackendConfig, Prepared, Usage
from datasetagent.models.hf import run_overlapped
from datasetagent.models.hf_prep import Geometry, ImagePrep, Pixels, image_prep

log = logging.getLogger(__name__)

OptionValue = float | int | bool
X = TypeVar("X")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def read_options(
    backend: str,
    given: Mapping[str, str | int | float | bool],
    defaults: Mapping[str, OptionValue],
) -> dict[str, OptionValue]:
    """``defaults`` overridden by ``given``, each value converted to its default's type.

    An unknown key is an error rather than ignored: a mistyped ``score_treshold`` silently
    falling back to the default would change results without a word.
    """
    out = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"unknown {backend} option {key!r}: {hint}known: {', '.join(sorted(defaults))}"
            )
        kind = type(defaults[key])
        try:
            if kind is bool:
                text = str(value).strip().lower()
                if text not in _TRUE | _FALSE:
                    raise ValueError(value)
                out[key] = text in _TRUE
            elif kind is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError(value)
                out[key] = int(value)
            else:
                out[key] = float(value)
        except ValueError as exc:
            raise ConfigError(
                f"{backend} option {key}={value!r} is not a {kind.__name__}; "
                f"the default is {defaults[key]!r}"
            ) from exc
    return out


def pick_device(requested: str | None) -> torch.device:
    """CUDA, else Apple MPS, else the CPU; a requested device that is absent is an error."""
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError as exc:
            raise ConfigError(
                f"unknown device {requested!r}: use cuda, cuda:N, mps or cpu"
            ) from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(
                f"device {requested!r} was requested but torch sees no CUDA GPU; install a CUDA "
                "build of torch, or leave the device unset to use what is there"
            )
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise BackendError(
                f"device {requested!r} was requested but MPS is not available here; leave the "
                "device unset to use what is there"
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


#: Where Linux mounts the cgroup CPU controller (v2: ``cpu.max``; v1: ``cpu/cpu.cfs_*``).
CGROUP = Path("/sys/fs/cgroup")


def cpu_quota(root: Path = CGROUP) -> float | None:
    """The CPU time this process's cgroup may use, in cores (``1.5``: one and a half), or None
    when unlimited or unknown. A container limited this way still sees every core of its
    host, so a thread pool sized from the core count would oversubscribe it."""
    for quota_file, period_file in (
        ("cpu.max", None),
        ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us"),
    ):
        try:
            text = (root / quota_file).read_text().split()
            if period_file is not None:
                text.append((root / period_file).read_text().strip())
            quota, period = text[0], text[1]
            if quota in ("max", "-1"):
                return None
            cores = int(quota) / int(period)
        except (OSError, ValueError, IndexError, ZeroDivisionError):
            continue
        return cores if cores > 0 else None
    return None


def usable_cores(root: Path = CGROUP) -> int:
    """Cores this process may run on: its CPU affinity, capped by its cgroup's CPU quota
    (rounded up: a quota of 1.5 cores keeps two threads busy part of the time)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = cpu_quota(root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def cpu_threads(requested: int, root: Path = CGROUP) -> int:
    """torch's intra-op thread count for a model on the CPU.

    ``requested`` (the backend option ``threads``) when above 0. Otherwise the model gets
    every core: the labelling path's other work, preparing the next batch on one background
    thread (``run_overlapped``), is a small share of a forward pass and mostly in OpenCV and
    Pillow, which release the GIL. Measured on 2 cores with CLIP ViT-B/32 (benchmarks/
    label_bench.py): the path gives 16.7 images/s with 2 threads, the bare forward's best,
    and 10.1 with 1 (one core left to the preparation). torch's own default (one thread per
    physical core) is kept when lower, and capped at the usable cores (affinity, cgroup
    quota), which torch does not look at.
    """
    if requested > 0:
        return requested
    return max(1, min(torch.get_num_threads(), usable_cores(root)))


PROC_STAT = Path("/proc/stat")


def others_busy(stat: Path = PROC_STAT) -> Callable[[], float] | None:
    """A stopwatch of the CPU time other processes use: each call returns the machine's busy
    CPU seconds minus this process's since the stopwatch was made (None where the machine's
    counters are not readable, or where this process may use fewer cores than the machine has,
    so that work elsewhere says nothing about our cores)."""
    if (os.cpu_count() or 1) != usable_cores():
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def busy() -> float:
        fields = stat.read_text().split("\n", 1)[0].split()[1:]
        jiffies = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
        machine = (sum(jiffies) - jiffies[3] - jiffies[4]) / tick
        mine = os.times()
        return machine - (mine.user + mine.system)

    try:
        start = busy()
    except (OSError, ValueError, IndexError):
        return None
    return lambda: busy() - start


class ThreadChooser:
    """torch's CPU thread count for each batch, chosen by timing the real batches.

    Which count is fastest depends on what else the machine runs, not only on its cores: on
    an idle 2-core machine a CLIP ViT-B/32 forward pass gives 16.7 images/s with 2 threads and
    10.2 with 1, but with other work on both cores 2 threads gave 4.0 and 1 gave 8.0 (an
    OpenMP pool waits at every operation for its slowest thread). So after one warm-up batch
    (first calls allocate and pick kernels), one batch runs at each candidate (``most``
    threads, then halving down to 1), and the rest at the fastest per image so far. Each
    timing updates its count's rate (a moving average), so a count that slows down is dropped
    for a faster one; every ``retry`` batches the candidates are tried afresh, as the load
    changes. Measuring costs nothing but the trial batches run at the slower counts, so where
    the CPU time of other processes during a batch is known (``others``, in cores), fewer
    threads are tried only after a batch that shared the cores with other work (at least
    ``CONTENDED`` of a core): on an idle machine every thread gets its core, and the trial at
    half the threads would only cost a batch at half speed (~10% of a 128-image run).
    """

    #: Other processes' CPU, in cores, during a batch that makes fewer threads worth a try.
    CONTENDED = 0.5

    def __init__(self, most: int, *, retry: int = 64) -> None:
        self.candidates = tuple(sorted({most >> k for k in range(most.bit_length())}, reverse=True))
        self.retry = retry
        self.rates: dict[int, float] = {}
        self.batches = 0
        self.contended: bool | None = None  # None: not measured, every count is tried

    def next(self) -> int:
        """The thread count for the next batch."""
        if self.batches == 0:
            return self.candidates[0]
        untried = [n for n in self.candidates if n not in self.rates]
        if untried and (self.contended is not False or untried[0] == self.candidates[0]):
            return untried[0]
        if not self.rates:
            return self.candidates[0]
        return max(self.rates, key=lambda n: self.rates[n])

    def record(
        self, threads: int, images: int, seconds: float, others: float | None = None
    ) -> None:
        """A batch of ``images`` ran in ``seconds`` with ``threads`` while other processes
        used ``others`` cores on average (None: unknown)."""
        if others is not None:
            self.contended = others >= self.CONTENDED
        self.batches += 1
        if self.batches == 1 or images < 1:
            return  # the warm-up batch
        rate = images / max(seconds, 1e-9)
        old = self.rates.get(threads)
        self.rates[threads] = rate if old is None else (old + rate) / 2
        if self.batches % self.retry == 0:
            self.rates.clear()


def features(output: Any) -> torch.Tensor:
    """The tensor of ``get_image_features``/``get_text_features``: transformers 4 returns it,
    transformers 5 returns an output whose ``pooler_output`` holds it."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if not isinstance(pooled, torch.Tensor):
        raise BackendError(f"unexpected model output {type(output).__name__}: no features in it")
    return pooled


def class_prompts(phrase: str, templates: Sequence[str]) -> list[str]:
    """``phrase`` in every template, without a doubled article (``a photo of a a cat.``)."""
    words = phrase.strip().split(maxsplit=1)
    if len(words) == 2 and words[0].lower() in {"a", "an", "the"}:
        phrase = words[1]
    return [t.format(phrase) for t in templates]


class HFBackend:
    """Base of the transformers backends: name, usage, options, device, dtype, batching.

    Subclasses set ``option_defaults``, load their model in ``__init__`` and call
    ``_set_prep`` with their processor and how it fits images (see ``hf_prep``). Options every
    backend takes: ``half`` (float16 on a GPU) and ``threads`` (torch's CPU threads; 0, the
    default, tries up to :func:`cpu_threads` and keeps the fastest, see :class:`ThreadChooser`).
    """

    option_defaults: ClassVar[Mapping[str, OptionValue]] = {}

    def __init__(self, backend: str, config: BackendConfig, model_id: str, folder: Path) -> None:
        self.backend = backend
        self.model_id = model_id
        self.folder = folder
        self.name = f"{backend}:{model_id}"
        self.usage = Usage()
        self.config = config
        defaults = {"half": True, "threads": 0, **self.option_defaults}
        self.options = read_options(backend, config.options, defaults)
        self.device = pick_device(config.device)
        if int(self.options["threads"]) < 0:
            raise ConfigError(
                f"{backend} option threads={self.options['threads']} is negative: give a "
                "thread count, or 0 to use every usable core"
            )
        #: Times the batches to choose torch's thread count (CPU, no ``threads`` option).
        self.threads: ThreadChooser | None = None
        if self.device.type == "cpu":
            threads = cpu_threads(int(self.options["threads"]))
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)  # the process's pool: torch has no other
            if int(self.options["threads"]) == 0 and threads > 1:
                self.threads = ThreadChooser(threads)
        gpu = self.device.type in ("cuda", "mps")
        self.dtype = torch.float16 if gpu and bool(self.options["half"]) else torch.float32
        self.batch_size = max(1, config.batch_size)
        self._prep: ImagePrep | None = None

    def _require_model_type(self, *allowed: str) -> None:
        """Refuse a checkpoint of another architecture before loading it: transformers would
        load it into the wrong class with freshly initialised weights and only a warning."""
        try:
            config = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
            model_type = str(config.get("model_type", ""))
        except (OSError, ValueError, AttributeError):
            return  # loading reports the missing or damaged config with its fix
        if model_type not in allowed:
            raise BackendError(
                f"{self.model_id!r} is a {model_type or 'unknown'} checkpoint, not "
                f"{' or '.join(allowed)}: give the {self.backend} labeler a checkpoint of its kind"
            )

    def _load(self, loader: Any, what: str) -> Any:
        """``loader.from_pretrained(folder)`` with load failures as one-line errors."""
        try:
            return loader.from_pretrained(str(self.folder))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise BackendError(
                f"cannot load the {what} of {self.backend} model {self.model_id!r} from "
                f"{self.folder} ({reason}); a download cut short is fixed by "
                f"`datasetagent models pull {self.model_id}`, a local folder needs the files "
                "save_pretrained writes (model and processor)"
            ) from exc

    def _placed(self, model: Any) -> Any:
        """The model on this backend's device and dtype, in eval mode."""
        return model.to(device=self.device, dtype=self.dtype).eval()

    def _set_prep(self, image_processor: Any, geometry: Geometry) -> None:
        self._prep = image_prep(image_processor, geometry)

    def prepare(self, images: list[Image.Image]) -> Prepared:
        """CPU preprocessing only (numpy/OpenCV), safe on any thread: see ``hf_prep``."""
        if self._prep is None:
            raise BackendError(f"{self.name} has no image preprocessing configured")
        pixels = self._prep(images)
        return Prepared(sizes=pixels.sizes, inputs={"pixels": pixels, "by": self.name})

    def _pixels(self, prepared: Prepared) -> Pixels:
        pixels = prepared.inputs.get("pixels")
        if prepared.inputs.get("by") != self.name or not isinstance(pixels, Pixels):
            raise BackendError(
                f"a batch prepared by {prepared.inputs.get('by')!r} was given to {self.name}; "
                "prepare batches with the backend that runs them"
            )
        return pixels

    def _tensor(self, array: np.ndarray, *, floating: bool = True) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if floating:
            return tensor.to(device=self.device, dtype=self.dtype)
        return tensor.to(device=self.device)

    def _count(self, images: int) -> None:
        self.usage.calls += 1
        self.usage.images += images

    @staticmethod
    def _timed(
        infer: Callable[[Prepared], list[X]], chooser: ThreadChooser
    ) -> Callable[[Prepared], list[X]]:
        """``infer`` run at the chooser's thread count and timed for it."""

        def run(prepared: Prepared) -> list[X]:
            threads = chooser.next()
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)
            elsewhere = others_busy()
            start = time.perf_counter()
            out = infer(prepared)
            seconds = time.perf_counter() - start
            others = None if elsewhere is None else elsewhere() / max(seconds, 1e-9)
            chooser.record(threads, len(prepared.sizes), seconds, others)
            return out

        return run

    def _batched(
        self,
        images: list[Image.Image] | Prepared,
        infer: Callable[[Prepared], list[X]],
    ) -> list[X]:
        """Run ``infer`` over ``images``: a ``Prepared`` batch as it is (one forward pass);
        a list in chunks of ``batch_size``, preparing the next chunk while one runs."""
        if self.threads is not None:
            infer = self._timed(infer, self.threads)
        if isinstance(images, Prepared):
            return infer(images)
        if not images:
            return []
        chunks = [images[i : i + self.batch_size] for i in range(0, len(images), self.batch_size)]
        if len(chunks) == 1:
            return infer(self.prepare(chunks[0]))
        out: list[X] = []
        for part in run_overlapped(chunks, self.prepare, infer):
            out.extend(part)
        return out
