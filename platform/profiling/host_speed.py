"""How fast a process's host runs Python and launches work, alone and with other processes
launching beside it (jobs/bench/bench_host.py).

A compiled stage-1 step is partly host-bound (the three LLM passes: ~30 compiled layer calls
each). If two busy processes slow each other's host down, DDP cannot scale 2x however cheap
the all-reduce is. This separates that from the model: each process times

- ``python``: a pure-Python loop (ns an iteration) -- the CPU core itself;
- ``launch``: tiny ops on its own device (us an op, no sync until the end) -- Python + the
  dispatcher + the CUDA launch path, what a host-bound step spends its time on.

``run_mode`` starts one process a device at once, unpinned or each pinned to one CPU, so that a
shared physical core (SMT siblings a VM does not report) shows up as a slower pinned pair.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from fovea.platform.profiling.workers import collect


def python_loop_ns(n: int) -> float:
    """ns per iteration of a plain Python loop (integer adds): the core's speed for Python."""
    t0 = time.perf_counter()
    acc = 0
    for i in range(n):
        acc += i & 7
    return (time.perf_counter() - t0) / n * 1e9


def launch_us(x: torch.Tensor, n: int) -> float:
    """us per tiny op on x's device, queued without a sync until the end.  On a GPU each op is
    a ~2 us kernel, so the host's launch path, not the GPU, sets the pace."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        x.add_(1.0)
    sync()
    return (time.perf_counter() - t0) / n * 1e6


def measure(device: str, n_python: int, n_launch: int, repeats: int) -> dict:
    """The median of ``repeats`` timings of each: ``python_ns`` and ``launch_us``."""
    x = torch.zeros(16, device=device)
    launch_us(x, 200)  # warm up the CUDA context and the op's dispatch path
    py = [python_loop_ns(n_python) for _ in range(repeats)]
    la = [launch_us(x, n_launch) for _ in range(repeats)]
    return {"python_ns": statistics.median(py), "launch_us": statistics.median(la)}


def _worker(rank: int, devices: list[str], cpus: list[int] | None, args: dict, barrier, q) -> None:
    if cpus is not None:
        os.sched_setaffinity(0, {cpus[rank]})
    device = devices[rank]
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    torch.set_num_threads(1)
    torch.zeros(1, device=device)  # make the context before the timed part starts
    barrier.wait()  # all processes start timing together
    r = measure(device, **args)
    r.update(rank=rank, device=device, cpu=sorted(os.sched_getaffinity(0)) if cpus else "any")
    q.put(r)


def run_mode(devices: list[str], cpus: list[int] | None, args: dict) -> list[dict]:
    """Run one process per device at the same time (process r on CPU ``cpus[r]`` if given);
    their measurements (``measure``'s keyword ``args``), by rank."""
    ctx = mp.get_context("spawn")
    barrier, q = ctx.Barrier(len(devices)), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, devices, cpus, args, barrier, q)) for r in range(len(devices))]
    for p in procs:
        p.start()
    rows = collect(procs, q, len(procs))
    for p in procs:
        p.join(timeout=60)
    return sorted(rows, key=lambda r: r["rank"])


def cpu_topology() -> dict[int, str]:
    """CPU -> its SMT siblings as the kernel reports them (a VM may hide real sharing)."""
    out = {}
    for cpu in sorted(os.sched_getaffinity(0)):
        f = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        out[cpu] = f.read_text().strip() if f.exists() else "?"
    return out
