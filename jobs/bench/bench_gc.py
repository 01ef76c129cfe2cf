#!/usr/bin/env python
"""What Python's garbage collector costs a training process, with and without ``gc.freeze()``.

    python jobs/bench/bench_gc.py [--shards 'data/demo/shards/webvid/train-*.tar'] [--steps 12] [--compile] [--frames-per-batch N]

Builds the stage-1 135M model in this process (as a Ray Train worker does, with its imports),
runs ``--warmup`` training steps, then prints: the tracked objects, the time of one full
collection, and the collection pauses over ``--steps`` steps (all generations, and how many
were full); then the same after ``gc.collect(); gc.freeze()`` (``training.gc_freeze``).  A full
collection walks every tracked object, so its time is what one pause costs the rank that takes
it, and, under DDP, every other rank waiting for it in the all-reduce.  CPU or GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", default="data/demo/shards/webvid/train-*.tar")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames-per-batch", type=int, default=None, help="data.max_total_frames (token budget)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. data.max_frames=4")
    a = ap.parse_args()

    import ray.train.torch  # noqa: F401  (a training worker's imports: their objects count too)
    import torch

    from fovea.platform.train.bench_step import bench_setup, train_step
    from fovea.platform.train.gc_clock import GcClock, freeze_setup_objects

    model, optimizer, batches, dev = bench_setup(a.shards, a.batch, a.frames_per_batch, 0, a.overrides or ["data.max_frames=4"],
                                                 compiled=a.compile)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if dev.type == "cuda" else contextlib.nullcontext
    for _ in range(a.warmup):
        train_step(model, optimizer, next(batches), dev, autocast)
    clock = GcClock().start()

    def measure(label: str) -> None:
        tracked = len(gc.get_objects())  # the objects a full collection walks (not the frozen ones)
        t = time.perf_counter()
        gc.collect()
        full_ms = 1e3 * (time.perf_counter() - t)
        s0, f0 = clock.read()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            train_step(model, optimizer, next(batches), dev, autocast)
        s1, f1 = clock.read()
        dt = time.perf_counter() - t0
        print(f"{label:14s} collectable {tracked:>9,d}  frozen {gc.get_freeze_count():>9,d}  full collection "
              f"{full_ms:7.1f} ms  | {a.steps} steps {dt:6.1f} s: pauses {1e3 * (s1 - s0):7.1f} ms "
              f"({(s1 - s0) / dt:.2%}), {f1 - f0} full", flush=True)

    print(f"device {dev}, compiled {a.compile}, batch {a.batch}")
    measure("as Python runs")
    frozen = freeze_setup_objects()
    print(f"gc.freeze(): {frozen:,d} objects frozen")
    measure("after freeze")
    clock.stop()


if __name__ == "__main__":
    main()
