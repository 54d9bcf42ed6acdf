"""Build the demo dataset with one worker (baseline) and with every core, in the same run.

Prints wall times and the speed-up ratio. Usage: python benchmarks/bench_build.py [REPEATS]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from datasetagent.agents.demand import parse_request
from datasetagent.demo import make_demo_data
from datasetagent.pipeline import build
from datasetagent.sources.existing import open_existing
from datasetagent.spec import SourceSpec


def one_build(data_root: Path, out: Path, workers: int) -> float:
    seed, pool = data_root / "seed", data_root / "pool"
    spec = parse_request(
        "100 images per class",
        existing=open_existing(seed, "imagefolder").profile(),
        sources=[SourceSpec(location=str(pool))],
    )
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    build(spec, out, workers=workers)
    return time.perf_counter() - start


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_demo_data(root / "data")
        base = min(one_build(root / "data", root / "run", 1) for _ in range(repeats))
        par = min(one_build(root / "data", root / "run", cores) for _ in range(repeats))
    print(f"build demo pool, 1 worker (baseline): {base:.2f} s")
    print(f"build demo pool, {cores} workers:       {par:.2f} s")
    print(f"speed-up: {base / par:.2f}x")


if __name__ == "__main__":
    main()
