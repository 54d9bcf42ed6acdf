"""Ray Data executor (``--executor ray``, extra ``ray``): the per-image work as Ray Data tasks.

Items go to the cluster as one dataset (``ray.data.from_items``, each item pickled with its
index), ``map_batches`` runs ``fn`` over them in stateless tasks with an explicit batch size,
and the results stream back to the driver with ``iter_batches`` in input order, so that the
driver stays the only writer of the run store. The index travels with each item and is checked
on the way back: a result out of place is an error, never a sample stored under the wrong
candidate.

``--ray-address`` (or ``RAY_ADDRESS``) joins a running cluster, which is left running; without
either a local runtime starts (``workers`` CPUs, no dashboard, its session files in a temporary
folder, not the run folder) and is shut down with the executor. Ray is imported when the
executor opens: a run on the local executor never loads it.

A task asks for a whole CPU: a local runtime of N CPUs runs N at a time, as the local executor
runs N processes. The Data Label agent's models run on an actor pool instead (``ModelPool``):
each actor builds the models once and asks for a GPU where the cluster has them, else for a
fraction of a CPU.

Workers read each candidate (and actors each stored image) from where the run says it is: on a
cluster of several machines the source folders and the run folder must be on storage every
node mounts at the same path.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import pickle
import re
import shutil
import socket
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from datasetagent.errors import DatasetAgentError, UsageError
from datasetagent.models import BackendConfig, Preparing, Usage
from datasetagent.runtime.local import single_threaded

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

INSTALL = "pip install 'datasetagent[ray]'"
#: Items a task takes at once (``map_batches``' batch) and a block of the input holds.
BATCH = 16
#: More tries of a task whose worker died (killed for memory, crashed); Ray Data's default
#: retries such a task forever, and a crash that repeats would hang the run.
TASK_RETRIES = 2
#: CPUs a model actor asks for: a fraction, so that an actor per core still leaves the
#: cluster's scheduler room (whole-CPU actors on a 2-core machine starve Ray Data's other work).
MODEL_CPUS = 0.5
#: Seconds to reach a cluster's address before joining it: ``ray.init`` itself retries an
#: address that does not answer for minutes.
CONNECT_TIMEOUT = 5.0


def _apply(batch: Any, fn: Callable[[Any], Any]) -> Any:
    """The task body: unpickle each item of a batch, apply ``fn``, pickle its result (pickled
    both ways, so that Arrow never reshapes a tuple or a dict on the way)."""
    import pyarrow as pa

    single_threaded()
    items = batch.column("item").to_pylist()
    out = [pickle.dumps(fn(pickle.loads(b)), protocol=5) for b in items]
    return pa.table({"i": batch.column("i"), "result": pa.array(out, type=pa.binary())})


#: The longest temp folder path a local runtime's session folder goes under (else ``/tmp``).
SHORT_TEMP = 20
#: Ray's switch of multi-machine clusters (on by default on Linux): off, a runtime is loopback only.
_SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _host_port(address: str) -> tuple[str | None, int | None]:
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        return parts.hostname, parts.port
    except ValueError:
        return None, None


def _on_loopback(address: str) -> bool:
    host, _ = _host_port(address)
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _session_parent() -> str | None:
    """Where a local runtime's session folder goes: the system temp folder, or ``/tmp`` where
    that path is long (Ray's sockets live in the session folder, ~80 bytes below it, and a
    socket's path holds at most 107)."""
    base = tempfile.gettempdir()
    return None if len(base) <= SHORT_TEMP or not os.path.isdir("/tmp") else "/tmp"


def cluster_address(given: str | None) -> str | None:
    """The cluster to join: ``given`` (``--ray-address``), else ``RAY_ADDRESS``; None (or
    ``local``) for a local runtime."""
    address = given if given is not None else os.environ.get("RAY_ADDRESS") or None
    return None if address == "local" else address


def prepare(address: str | None) -> Any:
    """Ray, imported for the runtime at ``address`` (None: a local one), or a one-line error.

    Sets what Ray reads when imported: no usage report to Ray's servers, no token warning,
    and for a local runtime (or a cluster on this machine's loopback) Ray's single-machine
    mode, in which the runtime listens on loopback only."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if address is None or _on_loopback(address):
        os.environ.setdefault(_SINGLE_MACHINE, "0")
    return import_ray()


def preflight(address: str | None) -> None:
    """Before a run does any work: Ray Data is installed, and the cluster to join answers."""
    address = cluster_address(address)
    prepare(address)
    if address is not None:
        check_address(address)


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or a one-line error naming the extra to install."""
    try:
        import ray
        import ray.data  # Ray Data comes with the extra's ray[data]
    except ImportError as exc:
        raise UsageError(
            f"--executor ray needs Ray Data, which is not installed ({exc}): {INSTALL}"
        ) from exc
    return ray


def check_address(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Refuse, in one line, a cluster address that does not answer: ``ray.init`` would retry
    it for minutes. ``auto`` (the cluster this machine's ``ray start`` runs) is left to Ray."""
    if address == "auto":
        return
    host, port = _host_port(address)
    if not host or port is None:
        raise UsageError(
            f"Ray address {address!r} is not HOST:PORT (or ray://HOST:PORT): give the head "
            "node's address, e.g. --ray-address 10.0.0.5:6379"
        )
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise UsageError(
            f"cannot reach the Ray cluster at {address} (--ray-address or RAY_ADDRESS): {why}; "
            "start it (ray start --head) or give its head node's address"
        ) from exc


#: A traceback's last line: ``ValueError: what went wrong``.
_RAISED = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): (.*)$")


def _describe(exc: BaseException) -> str:
    """One line for a failed Ray call: the user code's own error where Ray's text holds its
    traceback (a task's exception comes back as text, not as the object), else Ray's first
    line."""
    lines = [line.rstrip() for line in str(exc).splitlines()]
    for line in lines:
        m = _RAISED.match(line)
        if m is not None and not m.group(1).startswith("ray."):
            return f"{m.group(1)}: {m.group(2)}"
    first = next((line.strip() for line in lines if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _stream(ray: Any, ds: Any, n: int, batch_size: int) -> Iterator[Any]:
    """The unpickled results of ``ds`` (columns ``i`` and ``result``), checked to come in the
    order of their index; a failed Ray task is a one-line error."""
    expected = 0
    try:
        for batch in ds.iter_batches(batch_size=batch_size, batch_format="pyarrow"):
            for i, blob in zip(
                batch.column("i").to_pylist(), batch.column("result").to_pylist(), strict=True
            ):
                if i != expected:
                    raise DatasetAgentError(
                        f"Ray returned item {i} where item {expected} was due; nothing of it "
                        "was stored: resume the run (build --resume -o RUN)"
                    )
                expected += 1
                yield pickle.loads(blob)
    except ray.exceptions.RayError as exc:
        raise DatasetAgentError(
            f"a Ray task failed after {expected} of {n} items ({_describe(exc)}); what came "
            "back before is stored: fix the cause and resume (build --resume -o RUN, with "
            "either executor)"
        ) from exc
    if expected != n:
        raise DatasetAgentError(
            f"Ray returned {expected} of {n} items; what came back is stored: resume the run "
            "(build --resume -o RUN)"
        )


class _Models:
    """An actor of the model pool: builds each model once, then runs them on batches of
    stored images (read from the run folder, as the driver would read them)."""

    def __init__(self, recipes: bytes, root: str) -> None:
        from datasetagent.models import build_backend
        from datasetagent.store import BlobStore

        single_threaded()
        self.models: list[tuple[str, Any]] = [
            (kind, build_backend(name, config)) for kind, name, config in pickle.loads(recipes)
        ]
        self.blobs = BlobStore(Path(root))

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        out = []
        for blobs in batch.column("blobs").to_pylist():
            images = [self.blobs.open_image(b) for b in pickle.loads(blobs)]
            outputs: list[list[Any]] = []
            usage: list[dict[str, int]] = []
            for kind, model in self.models:
                before = model.usage.as_dict() if hasattr(model, "usage") else {}
                # what the Data Label agent hands a local model: its prepared batch, if it
                # prepares one (one forward pass for the batch), else the images
                inputs = (
                    model.prepare(images) if images and isinstance(model, Preparing) else images
                )
                if not images:
                    outputs.append([])
                elif kind == "classify":
                    outputs.append(list(model.predict(inputs)))
                else:
                    outputs.append(list(model.detect(inputs)))
                after = model.usage.as_dict() if hasattr(model, "usage") else {}
                usage.append({k: v - before.get(k, 0) for k, v in after.items()})
            out.append(pickle.dumps((outputs, usage), protocol=5))
        return pa.table({"i": batch.column("i"), "result": pa.array(out, type=pa.binary())})


class ModelPool:
    """The Data Label agent's models on a Ray Data actor pool, for one round at a time: each
    actor builds every model once (on a GPU each where the cluster has them), the round's
    batches of samples go through the pool, and each batch's outputs come back in order."""

    def __init__(
        self,
        executor: RayExecutor,
        recipes: list[tuple[str, str, BackendConfig]],
        root: Path,
        models: list[Any],
    ) -> None:
        self.executor = executor
        self.recipes = pickle.dumps(recipes, protocol=5)
        self.root = str(root)
        self.models = models
        devices = {str(config.device or "") for _, _, config in recipes}
        self.gpu = any(d.startswith("cuda") for d in devices) or (not any(devices) and _cuda_here())

    def outputs(self, batches: Sequence[Sequence[Any]]) -> Iterator[list[list[Any]]]:
        if not batches:
            return
        ray = self.executor._ray
        rows = [
            {"i": i, "blobs": pickle.dumps([s.blob for s in chunk], protocol=5)}
            for i, chunk in enumerate(batches)
        ]
        gpus = int(ray.cluster_resources().get("GPU", 0)) if self.gpu else 0
        size = max(1, min(len(rows), gpus or self.executor.workers or 1))
        resources = {"num_gpus": 1} if gpus else {"num_cpus": MODEL_CPUS}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # max_restarts: as max_retries in RayExecutor.map
            ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                _Models,
                fn_constructor_kwargs={"recipes": self.recipes, "root": self.root},
                compute=ray.data.ActorPoolStrategy(size=size),
                batch_size=1,  # one row is one of the agent's batches of images
                batch_format="pyarrow",
                # an actor that dies fails the round in one line (resumable); restarted, it
                # would rebuild its models from arguments Ray may have dropped by then
                max_restarts=0,
                **resources,
            )
        for outputs, usage in _stream(ray, ds, len(rows), 1):
            for model, used in zip(self.models, usage, strict=True):
                if used and hasattr(model, "usage"):
                    model.usage.add(Usage(**used))
            yield outputs


def _cuda_here() -> bool:
    """Whether torch (when installed) sees a CUDA GPU in this process."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class RayExecutor:
    """Runs ``fn`` over items as Ray Data tasks; results come back in input order.

    ``fn`` must be picklable, as for the local executor. ``workers`` is the local runtime's
    CPU count (default: all cores); a joined cluster's own resources decide there.
    """

    def __init__(
        self, workers: int | None = None, address: str | None = None, *, batch_size: int = BATCH
    ) -> None:
        self.workers = workers
        self.batch_size = batch_size
        self.address = cluster_address(address)
        self._ray = prepare(self.address)
        #: Results that came back from Ray tasks so far (the run reports them).
        self.items_run = 0
        #: Whether this executor started the runtime (and so shuts it down).
        self._owned = False
        self._temp: str | None = None
        self._connect()

    def _connect(self) -> None:
        ray = self._ray
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        if ray.is_initialized():  # the caller's own runtime (a notebook, a test): used as is
            pass
        elif self.address is not None:
            check_address(self.address)
            try:
                ray.init(address=self.address, **quiet)
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError
                raise UsageError(
                    f"cannot join the Ray cluster at {self.address}: {_describe(exc)}; check "
                    "--ray-address (or RAY_ADDRESS) and that the cluster runs Ray "
                    f"{ray.__version__}"
                ) from exc
        else:
            self._temp = tempfile.mkdtemp(prefix="dsa-ray-", dir=_session_parent())
            try:
                ray.init(
                    num_cpus=self.workers or os.cpu_count() or 1,
                    include_dashboard=False,
                    _temp_dir=self._temp,
                    **quiet,
                )
            except Exception as exc:
                self._remove_temp()
                raise DatasetAgentError(
                    f"cannot start a local Ray runtime: {_describe(exc)}; use --executor local"
                ) from exc
            self._owned = True
        self._configure()

    def _configure(self) -> None:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False  # the CLI shows progress; Ray's bars would garble it
        # Ray Data's log lines go to its session log file; on stderr only with --debug
        data_log = logging.getLogger("ray.data")
        for handler in list(data_log.handlers):
            if (
                not isinstance(handler, logging.FileHandler)
                and "File" not in type(handler).__name__
            ):
                data_log.removeHandler(handler)
        data_log.propagate = log.isEnabledFor(logging.DEBUG)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        if not items:
            return iter(())
        return self._run(fn, items)

    def _run(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        ray = self._ray
        rows = [{"i": i, "item": pickle.dumps(item, protocol=5)} for i, item in enumerate(items)]
        blocks = max(1, -(-len(rows) // self.batch_size))
        with warnings.catch_warnings():
            # max_retries is one of the ray_remote_args that Ray 2.60 names deprecated; it has
            # no other spelling yet, and without it a crashing task is retried forever
            warnings.simplefilter("ignore")
            ds = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
                _apply,
                fn_kwargs={"fn": fn},
                batch_size=self.batch_size,
                batch_format="pyarrow",
                num_cpus=1,
                max_retries=TASK_RETRIES,
            )
        for result in _stream(ray, ds, len(items), self.batch_size):
            self.items_run += 1
            yield result

    def model_runner(
        self, recipes: Sequence[tuple[str, str, BackendConfig]], root: Path, models: Sequence[Any]
    ) -> ModelPool:
        """Runs the Data Label agent's models on an actor pool (``agents.labeling.ModelRunner``):
        ``recipes`` are (``classify`` or ``detect``, backend name, config), one per model of
        ``models`` (whose usage counts what the actors did); ``root`` is the run folder."""
        return ModelPool(self, list(recipes), root, list(models))

    def close(self) -> None:
        if self._owned:
            self._owned = False
            self._ray.shutdown()
        self._remove_temp()

    def _remove_temp(self) -> None:
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
