"""A whole web build as a user runs it, against a local-folder build of the same images.

A loopback ``WebSim`` (tests/websim.py: Openverse- and Commons-shaped APIs serving real JPEG
photos) holds N results per class for two classes. Two whole CLI processes, default settings:

* web:   ``datasetagent build SPEC --source openverse@SIM --allow-host SIM -o RUN`` — searches,
  downloads through the guarded client, processing, labelling, export;
* local (the baseline, same run): the same photos written beforehand to one folder per class,
  ``datasetagent build SPEC --source FOLDER -o RUN``.

Each runs ROUNDS times, alternating; the first run of each is the cold one (the run folder is
new every time; the OS file cache is whatever the previous runs left, as for a user). Printed:
wall seconds (first and best), the ratio web / local, and the web run's fetch stage in
images per second (from the run's recorded stage times).

Usage: python benchmarks/web_build_bench.py [--per-class N] [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from datasetagent.spec import ClassSpec, DatasetSpec
from websim import WebSim

CLASSES = ("red fox", "arctic fox")


def _run(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "datasetagent", "build", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"build failed: {done.stderr[-2000:]}")
    return took


def _fetch_rate(run: Path) -> tuple[int, float]:
    """Images downloaded and the seconds the fetch stages took (select end → fetch end)."""
    con = sqlite3.connect(run / "run.db")
    try:
        n = int(con.execute("SELECT COUNT(*) FROM downloads").fetchone()[0])
        stages = {(r, s): t for r, s, t in con.execute("SELECT round, stage, finished FROM stages")}
    finally:
        con.close()
    seconds = sum(t - stages[(r, "select")] for (r, s), t in stages.items() if s == "fetch")
    return n, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    n = args.per_class
    with (
        tempfile.TemporaryDirectory() as tmp_text,
        WebSim(classes=dict.fromkeys(CLASSES, n + 20)) as sim,
    ):
        tmp = Path(tmp_text)
        spec = DatasetSpec(classes=tuple(ClassSpec(name=c) for c in CLASSES), target_per_class=n)
        (tmp / "spec.yaml").write_text(spec.to_yaml())
        pool = tmp / "pool"
        for cls in CLASSES:  # the baseline's folders: the same photos the web build fetches
            folder = pool / cls
            folder.mkdir(parents=True)
            for i in range(n + 20):
                (folder / f"{i:04d}.jpg").write_bytes(sim.image_bytes("openverse", cls, i))
        host, port = sim.address
        web_args = ["--source", f"openverse@{sim.base_url}", "--allow-host", f"{host}:{port}"]
        times: dict[str, list[float]] = {"web": [], "local": []}
        rate = (0, 0.0)
        for r in range(args.rounds):
            for kind in ("local", "web"):
                run = tmp / f"{kind}-{r}"
                extra = web_args if kind == "web" else ["--source", str(pool)]
                times[kind].append(_run([str(tmp / "spec.yaml"), "-o", str(run), *extra]))
                if kind == "web":
                    rate = _fetch_rate(run)
                shutil.rmtree(run)
    print(
        f"web build of {2 * n} images ({n} per class) from a loopback Openverse, default settings"
    )
    for kind, got in times.items():
        print(f"  {kind:5}  first {got[0]:6.2f} s   best {min(got):6.2f} s")
    print(
        f"  ratio web / local: first {times['web'][0] / times['local'][0]:.2f}, "
        f"best {min(times['web']) / min(times['local']):.2f}"
    )
    fetched, seconds = rate
    if seconds > 0:
        print(
            f"  fetch stage: {fetched} images in {seconds:.2f} s = {fetched / seconds:.0f} images/s"
        )


if __name__ == "__main__":
    main()
