"""The Ray Data executor (``--executor ray``): results in input order, one-line errors, the same
samples, labels, metrics and export as the local executor, a killed run resumed under the
other executor, no Ray for a local build, and a bad cluster address refused in one line.

One Ray runtime serves the module's in-process tests; CLI builds start their own (and must
stop it) or join that one with ``--ray-address``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from datasetagent.config import BuildOptions, open_executor, run_options
from datasetagent.errors import DatasetAgentError, UsageError
from datasetagent.store import RunStore
from test_pipeline import make_pool

pytestmark = pytest.mark.slow

EXE = [sys.executable, "-m", "datasetagent"]
#: What Ray reads when imported: no usage report, and loopback only (``runtime.ray.prepare``).
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's Ray runtime's session folder (its logs)."""
    return tmp_path_factory.mktemp("ray")


@pytest.fixture(scope="module")
def cluster(session: Path) -> Iterator[str]:
    """A Ray runtime for the module (2 CPUs, loopback only); yields its address."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in RAY_ENV.items():
            mp.setenv(key, value)
        mp.delenv("RAY_ADDRESS", raising=False)
        # the workers import this module's functions by name
        here = str(Path(__file__).resolve().parent)
        mp.setenv("PYTHONPATH", os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
        import ray

        info = ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            _temp_dir=str(session),
        )
        try:
            yield str(info.address_info["gcs_address"])
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("raypool")
    make_pool(root)
    return root


def _shuffled(x: int) -> tuple[int, int]:
    """Slow for some items, so that tasks finish out of order."""
    time.sleep(0.002 * (x * 7 % 5))
    return x, x * x


def _fails_on_37(x: int) -> int:
    if x == 37:
        raise ValueError("item 37 is bad\nand this is its second line")
    return x


def _dies_on_3(x: int) -> int:
    if x == 3:
        os._exit(3)  # the worker process dies, as one killed for memory would
    return x


def test_map_returns_each_result_in_input_order(cluster: str) -> None:
    import ray

    items = list(range(300))
    with open_executor(BuildOptions(executor="ray")) as executor:
        assert list(executor.map(_shuffled, items)) == [_shuffled(x) for x in items]
        assert list(executor.map(_shuffled, [])) == []
    assert ray.is_initialized()  # a runtime the executor did not start is left running


def test_a_failing_item_and_a_dying_worker_are_one_line_errors(cluster: str) -> None:
    with open_executor(BuildOptions(executor="ray")) as executor:
        with pytest.raises(DatasetAgentError) as raised:
            list(executor.map(_fails_on_37, list(range(64))))
        message = str(raised.value)
        assert "\n" not in message
        assert "ValueError: item 37 is bad" in message
        assert "resume" in message
        with pytest.raises(DatasetAgentError) as died:
            list(executor.map(_dies_on_3, list(range(8))))
        assert "\n" not in str(died.value)
        assert "Ray task failed" in str(died.value)
        # the runtime still works after both
        assert list(executor.map(abs, [-1, -2])) == [1, 2]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import build_clip

    return build_clip(tmp_path_factory.mktemp("clip"))


@dataclass
class _Stored:
    blob: str


def test_the_model_pool_gives_the_drivers_predictions_and_counts_usage(
    cluster: str, tiny_clip: Path, tmp_path: Path
) -> None:
    from datasetagent.models import BackendConfig, ClassQuery, build_backend
    from datasetagent.store import BlobStore
    from helpers import digit_images, encode

    blobs = BlobStore(tmp_path)
    images = [img.convert("RGB") for img, _ in digit_images(3, classes=(0, 1))]
    stored = [_Stored(blobs.put(f"{k:064x}", "png", encode(img))) for k, img in enumerate(images)]
    classes = tuple(ClassQuery(name=c, phrases=(c,)) for c in ("zero", "one"))
    config = BackendConfig(classes=classes, model=str(tiny_clip), options={"threads": 1})
    here = build_backend("clip", config)
    parts = [stored[:4], stored[4:]]
    expected = [here.predict(here.prepare([blobs.open_image(s.blob) for s in p])) for p in parts]
    with open_executor(BuildOptions(executor="ray", workers=2)) as executor:
        recipes = [("classify", "clip", config)]
        pool = executor.model_runner(recipes, tmp_path, [here])  # type: ignore[attr-defined]
        before = here.usage.images
        got = list(pool.outputs([*parts, []]))
    assert got == [[expected[0]], [expected[1]], [[]]]
    assert here.usage.images - before == len(stored)  # what the actors did, counted here


def test_ray_missing_is_one_line_naming_the_extra(
    cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(UsageError, match=r"pip install 'datasetagent\[ray\]'"):
        open_executor(BuildOptions(executor="ray"))


def test_the_ray_address_needs_ray_and_is_never_taken_from_the_store(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--ray-address needs --executor ray"):
        BuildOptions.parse(ray_address="10.0.0.5:6379")
    with RunStore(tmp_path / "run.db") as store:
        run_options(store, BuildOptions(executor="ray", ray_address="10.0.0.5:6379", workers=2))
        resumed = run_options(store, BuildOptions())
    assert (resumed.executor, resumed.ray_address, resumed.workers) == ("local", None, None)


# -- whole builds ----------------------------------------------------------------------------------

#: Runs the CLI, then writes which Ray modules the process had imported to the file in argv[1].
WATCH_IMPORTS = (
    "import json, sys\n"
    "from datasetagent.cli import main\n"
    "out = sys.argv.pop(1)\n"
    "try:\n"
    "    main(sys.argv[1:], prog_name='datasetagent')\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "open(out, 'w').write(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'ray')))\n"
    "sys.exit(code)\n"
)


def _build_args(pool: Path, run: Path, *extra: str) -> list[str]:
    return [
        "build",
        "expand to 30 images per class",
        "--existing",
        str(pool / "seed"),
        "--source",
        str(pool / "pool"),
        "-o",
        str(run),
        "--json",
        *extra,
    ]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", *RAY_ENV)}
    return {**env, **extra}


def _outcome(run: Path) -> dict[str, Any]:
    """Everything a build decided: each sample (labels, status, split, scores, provenance),
    each round's quality report, the summary's figures and every exported file's bytes."""
    with RunStore(run / "run.db") as store:
        samples = sorted((s.model_dump(mode="json") for s in store.samples()), key=str)
        reports = [r.model_dump(mode="json") for r in store.reports()]
    summary = json.loads((run / "summary.json").read_text())
    export = run / "export"
    files = {str(p.relative_to(export)): p.read_bytes() for p in export.rglob("*") if p.is_file()}
    return {
        "samples": samples,
        "reports": reports,
        "summary": {k: v for k, v in summary.items() if k not in ("run", "exports")},
        "export": files,
    }


def _ray_processes(marker: Path) -> list[str]:
    """Command lines of the processes that name ``marker`` (a Ray runtime's temp folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(marker) in cmd:
                found.append(cmd)
    return found


@pytest.fixture
def short_temp() -> Iterator[Path]:
    """A system temp folder for a build (short: Ray's socket paths go below it)."""
    folder = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _gone(marker: Path, seconds: float = 20) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := _ray_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture(scope="module")
def reference(pool: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A local build, watched: it must not import Ray."""
    root = tmp_path_factory.mktemp("local")
    imported = root / "ray-modules.json"
    out = subprocess.run(
        [sys.executable, "-c", WATCH_IMPORTS, str(imported), *_build_args(pool, root / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(imported.read_text()) == []
    return _outcome(root / "run")


def test_a_local_build_never_imports_ray(reference: dict[str, Any]) -> None:
    assert reference["summary"]["exported"] == 120  # the watched build ran to the end


def test_ray_builds_the_same_dataset_as_local_and_stops_its_runtime(
    pool: Path, reference: dict[str, Any], tmp_path: Path, short_temp: Path
) -> None:
    temp = short_temp  # the runtime's session folder goes under the system temp folder
    out = subprocess.run(
        [*EXE, *_build_args(pool, tmp_path / "run", "--executor", "ray", "--workers", "2")],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(TMPDIR=str(temp)),
    )
    assert out.returncode == 0, out.stderr
    ours = re.compile(r"round (\d+): (\d+) images processed by Ray tasks")
    ran = {int(m[1]): int(m[2]) for m in ours.finditer(out.stderr)}
    with sqlite3.connect(tmp_path / "run" / "run.db") as con:
        rounds = dict(
            con.execute("SELECT round, COUNT(*) FROM candidates WHERE round > 0 GROUP BY round")
        )
    assert ran == rounds  # every candidate of every round went through Ray, counted
    # no Ray log lines or progress bars: the only lines naming Ray are the run's own
    assert all(ours.search(line) for line in out.stderr.splitlines() if "Ray" in line)
    assert "INFO" not in out.stderr
    outcome = _outcome(tmp_path / "run")
    assert outcome["samples"] == reference["samples"]
    assert outcome["reports"] == reference["reports"]
    assert outcome["summary"] == reference["summary"]
    assert outcome["export"] == reference["export"]
    assert _gone(temp) == []  # the runtime the build started stopped with it ...
    assert list(temp.iterdir()) == []  # ... and its session folder went with it


def _killed_mid_processing(args: list[str], run: Path, env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    db = run / "run.db"
    while True:
        assert proc.poll() is None, "the build finished before it was killed"
        assert time.monotonic() < deadline
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
                    row = con.execute(
                        "SELECT COUNT(*) FROM samples WHERE origin = 'collected'"
                    ).fetchone()
                if row[0] >= 20:
                    break
            except sqlite3.Error:  # tables not made yet
                pass
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").exists()


@pytest.mark.parametrize("first", ["ray", "local"])
def test_a_killed_run_resumes_under_the_other_executor(
    first: str,
    cluster: str,
    pool: Path,
    reference: dict[str, Any],
    tmp_path: Path,
    short_temp: Path,
) -> None:
    """Killed under Ray (its own runtime), resumed locally; killed locally, resumed on a
    cluster it joins (``--ray-address``, left running)."""
    import ray

    run, temp = tmp_path / "run", short_temp
    env = _env(TMPDIR=str(temp))
    _killed_mid_processing([*EXE, *_build_args(pool, run, "--executor", first)], run, env)
    if first == "ray":
        assert _gone(temp) == []  # a killed build's Ray runtime does not outlive it
        resume = ["--executor", "local"]
    else:
        resume = ["--executor", "ray", "--ray-address", cluster]
    out = subprocess.run(
        [*EXE, "build", "--resume", "-o", str(run), "--json", *resume],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    outcome = _outcome(run)
    assert outcome["export"] == reference["export"]
    assert outcome["summary"] == reference["summary"]
    assert [s["id"] for s in outcome["samples"]] == [s["id"] for s in reference["samples"]]
    assert ray.is_initialized()  # the joined cluster still runs


def test_an_unreachable_cluster_is_a_one_line_usage_error(pool: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [*EXE, *_build_args(pool, tmp_path / "run", "--executor", "ray")],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(RAY_ADDRESS="127.0.0.1:1"),
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: cannot reach the Ray cluster at 127.0.0.1:1")
    assert not (tmp_path / "run").exists()  # refused before any work
    flag = subprocess.run(
        [*EXE, *_build_args(pool, tmp_path / "run", "--ray-address", "127.0.0.1:1")],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert flag.returncode == 2
    assert "--ray-address needs --executor ray" in flag.stderr


def test_model_labels_from_the_actor_pool_are_the_local_ones(
    cluster: str, session: Path, pool: Path, tiny_clip: Path, tmp_path: Path
) -> None:
    """A CLIP-labelled build: its model runs on the cluster's actor pool (one model load per
    actor), and the run decides and exports exactly what the local build does."""
    clip = ["--labeler", f"clip:{tiny_clip}", "--labeler-option", "clip.threads=1"]
    outcomes = []
    for name, flags in (("local", []), ("ray", ["--executor", "ray", "--ray-address", cluster])):
        out = subprocess.run(
            [*EXE, *_build_args(pool, tmp_path / name, *clip, *flags)],
            capture_output=True,
            text=True,
            timeout=300,
            env=_env(),
        )
        assert out.returncode == 0, out.stderr
        outcomes.append(_outcome(tmp_path / name))
    local, ray_run = outcomes
    assert ray_run == local
    assert any(
        s["annotations"] and "clip" in s["annotations"][0]["labeler"] for s in local["samples"]
    ) or any("clip" in r for s in local["samples"] for r in s["review_reasons"])
    logs = "".join(p.read_text(errors="replace") for p in session.rglob("ray-data*.log"))
    assert "MapBatches(_Models)" in logs  # the labels came from the actor pool


#: Runs ``build --executor ray --json`` with a build that writes to file descriptor 1 from
#: outside Python's ``sys.stdout`` (as Ray's runtime does) before it fails.
NOISY_BUILD = (
    "import os, sys\n"
    "import datasetagent.pipeline as pipeline\n"
    "from datasetagent.cli import main\n"
    "from datasetagent.errors import DatasetAgentError\n"
    "def noisy(*args, **kwargs):\n"
    "    os.write(1, b'(raylet) A worker died or was killed\\n')\n"
    "    print('a print from Python', flush=True)\n"
    "    raise DatasetAgentError('stopped here')\n"
    "pipeline.build_run = noisy\n"
    "main(sys.argv[1:], prog_name='datasetagent')\n"
)


def test_what_ray_writes_to_stdout_goes_to_stderr(tmp_path: Path) -> None:
    """stdout holds only the summary (``--json``): Ray's own lines go to stderr."""
    args = ["build", "cats and dogs, 5 each", "--source", str(tmp_path), "-o", str(tmp_path / "r")]
    done = subprocess.run(
        [sys.executable, "-c", NOISY_BUILD, *args, "--executor", "ray", "--json"],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert "(raylet) A worker died" in done.stderr
    assert "a print from Python" in done.stderr
    assert "stopped here" in done.stderr


def test_stdout_to_stderr_restores_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    from datasetagent.cli import stdout_to_stderr

    with stdout_to_stderr():
        os.write(1, b"inside\n")
    os.write(1, b"after\n")
    assert capfd.readouterr() == ("after\n", "inside\n")
