"""The run store at scale: what the driver's SQLite costs per image, for the scaling section.

Under either executor the driver is the run store's only writer: every candidate is listed,
every outcome recorded (one transaction each, as processing does) and every label written
(one transaction a batch). This script builds the demo dataset once to get real sample
records (hashes, thumbnail, provenance, annotations), then writes ``--n`` samples shaped like
them (fresh ids) into a fresh store the way a build does, and prints per stage the rate, the
database size per sample, and the time of the reads a round makes (``label_counts``, loading
the labelled samples). Nothing is extrapolated here: run it with ``--n 1000000`` to see a
million-image store.

Usage: python benchmarks/store_bench.py [--n 100000] [--batch 256]
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np

from datasetagent.agents.demand import parse_request
from datasetagent.demo import make_demo_data
from datasetagent.pipeline import build
from datasetagent.records import Sample
from datasetagent.sources.existing import open_existing
from datasetagent.spec import SourceSpec
from datasetagent.store import RunStore
from datasetagent.store.db import Candidate
from datasetagent.tools.dedupe import Deduplicator, decode_thumb
from datasetagent.tools.dupindex import DEFAULT_THRESHOLD


def templates(root: Path) -> list[Sample]:
    """The labelled samples of a real build of the demo data."""
    make_demo_data(root / "data")
    spec = parse_request(
        "100 images per class",
        existing=open_existing(root / "data" / "seed", "imagefolder").profile(),
        sources=[SourceSpec(location=str(root / "data" / "pool"))],
    )
    build(spec, root / "run", workers=1)
    with RunStore(root / "run" / "run.db") as store:
        return store.samples(status=["labelled"], origin="collected")


def rss() -> int:
    """This process's resident memory now, in bytes."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(label: str, n: int, fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    took = time.perf_counter() - start
    print(f"{label:<34} {took:8.2f} s  {n / took:>10,.0f} /s")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=256, help="samples labelled per transaction")
    args = parser.parse_args()
    n = args.n
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shapes = templates(root)
        print(f"{len(shapes)} real labelled samples as templates; writing {n:,} samples")
        db = root / "big" / "run.db"
        db.parent.mkdir()
        with RunStore(db) as store:
            cands = [
                Candidate(
                    source_kind="local",
                    location=f"/data/pool/{i // 1000:04d}/{i:07d}.jpg",
                    licence="user-supplied",
                    origin="collected",
                )
                for i in range(n)
            ]
            timed("list candidates", n, lambda: store.add_candidates(cands))
            timed(
                "take them for a round",
                n,
                lambda: store.take_candidates(1, n, origin="collected", wanted=None),
            )
            todo = store.candidates_to_process(1)
            made: list[Sample] = []

            def record() -> None:
                for k, cand in enumerate(todo):
                    shape = shapes[k % len(shapes)]
                    digest = secrets.token_hex(32)
                    sample = shape.model_copy(
                        update={
                            "id": digest,
                            "blob": f"{digest[:2]}/{digest}.png",
                            "status": "processed",
                            "annotations": (),
                            "round": 1,
                        }
                    )
                    store.record_outcome(cand.id, 1, sample)
                    made.append(
                        shape.model_copy(update={"id": digest, "blob": sample.blob, "round": 1})
                    )

            timed("record outcomes (1 txn each)", n, record)

            def label() -> None:
                it = iter(made)
                while batch := list(islice(it, args.batch)):
                    store.update_samples(batch)

            timed(f"write labels ({args.batch} a txn)", n, label)
            timed("label_counts", n, lambda: store.label_counts(["labelled"]))
            loaded: list[Sample] = []
            before = rss()
            timed(
                "load labelled samples",
                n,
                lambda: loaded.extend(store.samples(status=["labelled"])),
            )
            print(f"  their memory: {(rss() - before) / 2**20:,.0f} MiB")
            before = rss()
            index = Deduplicator(DEFAULT_THRESHOLD)

            def rebuild() -> None:  # as ImageProcessingAgent does when a run starts or resumes
                index.add(
                    [s.id for s in loaded],
                    [np.array(s.hashes, dtype=np.uint64) for s in loaded],
                    [decode_thumb(s.thumb) if s.thumb else None for s in loaded],
                )

            timed("near-duplicate index of them all", n, rebuild)
            print(f"  its memory: {(rss() - before) / 2**20:,.0f} MiB ({len(index):,} images)")
        size = sum(p.stat().st_size for p in db.parent.iterdir())
        print(f"database: {size / 2**20:,.1f} MiB, {size / n:,.0f} bytes a sample")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"peak memory of this process: {peak:,.2f} GiB (all samples loaded at once)")
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
