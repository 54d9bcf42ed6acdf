"""Download throughput of the guarded web client against a bare httpx loop, and its memory.

A loopback server in a separate process (so it does not share this process's GIL) serves
~2,000 distinct URLs of small JPEGs (crops of scikit-learn's sample photos, 10-30 KB) over
HTTP/1.1 keep-alive. At 1, 8 and 32 connections, the same URLs are fetched by

* ``fetch_all`` on a :class:`WebClient` (SSRF guard at connect, per-host caps and pacing,
  size and time limits, byte sniffing, retries; the server's port allow-listed), and
* the baseline measured in the same run: a bare ``httpx.AsyncClient`` with as many
  connections, one task per URL behind an ``asyncio.Semaphore``, reading ``response.content``.

Each pair runs ROUNDS times, alternating, and the best of each is kept; the ratio (goal
>= 0.90) is ours / bare. Memory: tracemalloc's peak of Python allocations while 128 bodies of
1 MiB download at 32 connections, divided by 32, for both clients (what each in-flight download
holds: its body buffer plus the client's bookkeeping; results are dropped as they arrive).

Usage: python benchmarks/download_bench.py [URLS] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing as mp
import time
import tracemalloc
from collections.abc import Awaitable, Callable

import httpx
import numpy as np
from PIL import Image

from datasetagent.web.guard import AddressPolicy
from datasetagent.web.http import Limits, WebClient, fetch_all, user_agent

BIG = 2**20  # bytes of one "large" body in the memory run
CONNECTIONS = (1, 8, 32)


def _bodies() -> list[bytes]:
    """40 distinct JPEGs of 10-30 KB cut from the sample photos."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    out = []
    rng = np.random.default_rng(0)
    while len(out) < 40:
        photo = photos[len(out) % 2]
        side = int(rng.integers(130, 230))
        y = int(rng.integers(0, photo.shape[0] - side))
        x = int(rng.integers(0, photo.shape[1] - side))
        buf = io.BytesIO()
        Image.fromarray(photo[y : y + side, x : x + side]).save(buf, "JPEG", quality=85)
        if 10_000 <= buf.tell() <= 30_000:
            out.append(buf.getvalue())
    return out


def _serve(port_out: mp.Queue[int]) -> None:
    """A minimal asyncio HTTP/1.1 keep-alive server: /s/N → small JPEG N % 40, /big/N → 1 MiB."""
    small = _bodies()
    big = small[0] + bytes(BIG - len(small[0]))

    def response(body: bytes) -> bytes:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode() + body

    small_responses = [response(b) for b in small]
    big_response = response(big)
    missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                kind, _, number = path.strip("/").partition("/")
                if kind == "s":
                    writer.write(small_responses[int(number) % len(small_responses)])
                elif kind == "big":
                    writer.write(big_response)
                else:
                    writer.write(missing)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port_out.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


async def ours(port: int, urls: list[str], connections: int) -> int:
    limits = Limits(total=connections, per_host=connections)
    policy = AddressPolicy.from_allow_hosts([f"127.0.0.1:{port}"])
    done = 0
    async with WebClient(policy, user_agent=user_agent(), limits=limits) as client:
        async for _key, result in fetch_all(client, enumerate(urls)):
            if isinstance(result, Exception):
                raise result
            done += 1
    return done


async def bare(port: int, urls: list[str], connections: int) -> int:
    gate = asyncio.Semaphore(connections)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    done = 0
    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:

        async def one(url: str) -> None:
            nonlocal done
            async with gate:
                response = await client.get(url)
                response.raise_for_status()
                _ = response.content
                done += 1

        await asyncio.gather(*(one(u) for u in urls))
    return done


Runner = Callable[[int, list[str], int], Awaitable[int]]


def timed(run: Runner, port: int, urls: list[str], connections: int) -> float:
    start = time.perf_counter()
    n = asyncio.run(run(port, urls, connections))
    took = time.perf_counter() - start
    if n != len(urls):
        raise SystemExit(f"{run.__name__} fetched {n} of {len(urls)}")
    return n / took


def peak_per_download(run: Runner, port: int, urls: list[str], connections: int) -> float:
    tracemalloc.start()
    try:
        asyncio.run(run(port, urls, connections))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / connections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="?", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    port_q: mp.Queue[int] = ctx.Queue()
    server = ctx.Process(target=_serve, args=(port_q,), daemon=True)
    server.start()
    try:
        port = port_q.get(timeout=60)
        urls = [f"http://127.0.0.1:{port}/s/{i}" for i in range(args.urls)]
        sizes = [len(b) for b in _bodies()]
        print(
            f"{args.urls} JPEGs of {min(sizes) // 1000}-{max(sizes) // 1000} KB from a loopback "
            f"server process; best of {args.rounds} rounds"
        )
        timed(bare, port, urls[:200], 8)  # warm up both paths (imports, first connections)
        timed(ours, port, urls[:200], 8)
        for connections in CONNECTIONS:
            best = {"bare": 0.0, "ours": 0.0}
            for _ in range(args.rounds):
                best["bare"] = max(best["bare"], timed(bare, port, urls, connections))
                best["ours"] = max(best["ours"], timed(ours, port, urls, connections))
            print(
                f"{connections:>3} connections: bare httpx {best['bare']:7.0f}/s   "
                f"fetch_all {best['ours']:7.0f}/s   ratio {best['ours'] / best['bare']:.2f}"
            )
        big = [f"http://127.0.0.1:{port}/big/{i}" for i in range(128)]
        mib = 2**20
        per_bare = peak_per_download(bare, port, big, 32) / mib
        per_ours = peak_per_download(ours, port, big, 32) / mib
        print(
            f"memory per in-flight download (tracemalloc peak / 32, bodies of {BIG / mib:.0f} "
            f"MiB): bare httpx {per_bare:.2f} MiB, fetch_all {per_ours:.2f} MiB"
        )
    finally:
        server.terminate()
        server.join()


if __name__ == "__main__":
    main()
