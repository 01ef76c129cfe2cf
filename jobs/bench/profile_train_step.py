#!/usr/bin/env python
"""Where does a stage-1 training step's time go?  torch.profiler over a few steps.

    python jobs/bench/profile_train_step.py --shards 'data/bench/ref/train-*.tar' [--batch 64] [--compile]

Builds the stage-1 135M model, runs ``--warmup`` steps (compilation), then profiles
``--steps`` steps of the training step (forward, backward, clip, fused AdamW) and prints:
the wall time per step, the GPU busy time per step (the union of the kernel and copy
intervals: if it is far below the wall time the step is bound by the host -- Python, kernel
launches, syncs), the number of GPU activities per step, and the top kernels and host-side
ops.  The table goes to stdout and, with ``--out``, to a file.
"""

from __future__ import annotations

import argparse
import contextlib
import time


def profile_steps(a: argparse.Namespace):
    """--warmup steps, then --steps under torch.profiler -> (profile, wall s, samples, frames)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from fovea.platform.train.bench_step import bench_setup, train_step

    model, opt, it, dev = bench_setup(a.shards, a.batch, a.frames_per_batch, a.loader_workers, a.overrides,
                                      compiled=a.compile)
    autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731

    def step():
        host = next(it)
        train_step(model, opt, host, dev, autocast)
        return int(host["input_ids"].shape[0]), int(host["num_frames"].sum())

    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    samples = frames = 0
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(a.steps):
            s, f = step()
            samples, frames = samples + s, frames + f
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    return prof, wall, samples, frames


def report(a: argparse.Namespace, prof, wall: float, samples: int, frames: int) -> str:
    import torch

    from fovea.platform.profiling.step_profiler import device_busy, kernel_spans

    events = prof.key_averages()
    busy = device_busy(kernel_spans(prof.events()))
    gpu_us, kernels = busy["busy"], busy["activities"]
    return "\n".join([
        f"{torch.cuda.get_device_name(0)}, batch {a.batch} (<= {a.frames_per_batch} frames), compile={a.compile}",
        f"{a.steps} steps: {samples} samples, {frames} frames; wall {1000 * wall / a.steps:.1f} ms/step, "
        f"GPU busy {gpu_us / 1000 / a.steps:.1f} ms/step ({gpu_us / 1e6 / wall:.0%}), "
        f"{kernels / a.steps:.0f} GPU activities/step, {samples / wall:.1f} samples/s",
        "", "top GPU kernels:",
        events.table(sort_by="self_cuda_time_total", row_limit=18, max_name_column_width=70),
        "top host ops:",
        events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=70),
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--frames-per-batch", type=int, default=768)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--loader-workers", type=int, default=8)
    ap.add_argument("--out", default=None)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    text = report(a, *profile_steps(a))
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
