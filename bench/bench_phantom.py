"""Phantom generator throughput and the demo data-stage build time.

Usage::

    .venv/bin/python bench/bench_phantom.py            # 128 and 256 px, then the demo build
    .venv/bin/python bench/bench_phantom.py --no-build # generator only

Prints, per image size, images/s of one process (wall and CPU time, so a busy machine can be
told apart from a slow generator) and of a ``--workers`` process pool (wall), then the wall time
of ``build_datasets`` with the demo parameters (``params/demo/data.yaml``) into a temp folder.
The 1-minute load average is printed alongside: on a shared machine, wall times scale with it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path

from radlab import config
from radlab.data import build, phantom

ROOT = Path(__file__).resolve().parents[1]


def _one(args: tuple[int, int]) -> float:
    size, i = args
    t = time.process_time()
    phantom.generate_case(0, "train", i, phantom.PhantomConfig(image_size=size)).png_bytes()
    return time.process_time() - t


def bench_size(size: int, n: int, workers: int) -> dict[str, float]:
    """Images/s for ``n`` cases at ``size`` px: serial wall, serial CPU, and pooled wall."""
    _one((size, 10**6))  # warm caches and imports
    t = time.perf_counter()
    cpu = sum(_one((size, i)) for i in range(n))
    wall = time.perf_counter() - t
    with mp.get_context("fork").Pool(workers) as pool:
        pool.map(_one, [(size, 10**6 + i) for i in range(workers)])  # start-up outside the timing
        t = time.perf_counter()
        pool.map(_one, [(size, n + i) for i in range(2 * n)], chunksize=16)
        pool_wall = time.perf_counter() - t
    return {"serial_wall": n / wall, "serial_cpu": n / cpu, "pool_wall": 2 * n / pool_wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="images per measurement")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-build", action="store_true", help="skip the demo build")
    args = ap.parse_args()
    print(f"cpus={os.cpu_count()} load1={os.getloadavg()[0]:.2f}")
    for size in (128, 256):
        r = bench_size(size, args.n, args.workers)
        print(f"{size:>4} px: serial {r['serial_wall']:.0f} img/s wall ({r['serial_cpu']:.0f} img/s of CPU time); "
              f"{args.workers} workers {r['pool_wall']:.0f} img/s wall  [load1={os.getloadavg()[0]:.2f}]")
    if args.no_build:
        return
    values = config.load_yaml(ROOT / "params" / "demo" / "data.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        params = config.validate("data", {**values, "output_root": tmp})
        cpu0 = _cpu_seconds()
        t = time.perf_counter()
        res = build.build_datasets(params)
        wall = time.perf_counter() - t
        cpu = _cpu_seconds() - cpu0
    print(f"demo build: {wall:.1f} s wall, {cpu:.1f} CPU-s (this process + workers; /{args.workers} = "
          f"{cpu / args.workers:.1f} s if the cores were free)  {res.summary()['rows']}  [load1={os.getloadavg()[0]:.2f}]")


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the worker pool)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    main()
