#!/usr/bin/env python
"""How fast one process's host launches work, alone and with a second process launching beside it.

Why: a compiled stage-1 step is partly host-bound (the three LLM passes: ~30 compiled layer
calls each), and session 6's profiles showed one ``aten::mm`` call's host time at 25 us on 1 GPU
against 43 and 58 us on the two ranks of a 2-GPU run.  If two busy processes slow each other's
host down, DDP cannot scale 2x however cheap the all-reduce is.  This separates that from the
model: each process times

- ``python``: a pure-Python loop (ns an iteration) -- the CPU core itself;
- ``launch``: tiny ops on its own GPU (us an op, no sync until the end) -- Python + the
  dispatcher + the CUDA launch path, what a host-bound step spends its time on;

first alone (one process), then with P processes started together on P GPUs, unpinned (the OS
places them) and pinned to CPU sets (``--pin 0,1 --pin 0,16``: one CPU a process), so that a
shared physical core (SMT siblings a VM does not report) shows up as a slower pinned pair.

    python jobs/bench/bench_host.py [--procs 2] [--pin 0,1 --pin 0,16] [--scaling 1,2,4,8] [--out host.json]
    python jobs/bench/bench_host.py --cpu          # the code path on CPU (the tests)

Prints the CPU topology the kernel reports (``thread_siblings_list`` a CPU), then one line a
mode: the median of --repeats timings, per process.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp


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


def _measure(device: str, n_python: int, n_launch: int, repeats: int) -> dict:
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
    r = _measure(device, **args)
    r.update(rank=rank, device=device, cpu=sorted(os.sched_getaffinity(0)) if cpus else "any")
    q.put(r)


def run_mode(devices: list[str], cpus: list[int] | None, args: dict) -> list[dict]:
    """Run one process per device at the same time; their measurements, by rank."""
    ctx = mp.get_context("spawn")
    barrier, q = ctx.Barrier(len(devices)), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, devices, cpus, args, barrier, q)) for r in range(len(devices))]
    for p in procs:
        p.start()
    rows = collect(procs, q, len(procs))
    for p in procs:
        p.join(timeout=60)
    return sorted(rows, key=lambda r: r["rank"])


def collect(procs: list, q, n: int) -> list:
    """``n`` results from the workers' queue; a worker that dies first (a bad CPU, no GPU, a
    failed init) ends the wait at once: every worker is killed and the error names its rank.
    (jobs/bench/bench_allreduce.py waits on its workers the same way.)"""
    out = []
    while len(out) < n:
        try:
            out.append(q.get(timeout=1.0))
        except queue.Empty:
            dead = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode not in (0, None)]
            if dead:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"benchmark worker (rank, exit code) {dead} failed; see its traceback above")
    return out


def topology() -> dict[int, str]:
    """CPU -> its SMT siblings as the kernel reports them (a VM may hide real sharing)."""
    out = {}
    for cpu in sorted(os.sched_getaffinity(0)):
        f = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        out[cpu] = f.read_text().strip() if f.exists() else "?"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=2, help="processes run together (one GPU each)")
    ap.add_argument("--pin", action="append", default=[], help="a CPU a process, e.g. 0,16 (repeatable)")
    ap.add_argument("--scaling", default="", help="also N processes on the CPU only, e.g. 1,2,4,8: does the "
                    "machine give N busy processes N cores' worth (a VM's CPU quota or shared cores say no)")
    ap.add_argument("--python-iters", type=int, default=2_000_000)
    ap.add_argument("--launch-iters", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cpu", action="store_true", help="tensors on the CPU (tests the code path)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if not a.cpu and torch.cuda.device_count() < a.procs:
        raise SystemExit(f"--procs {a.procs} needs as many GPUs; this machine has {torch.cuda.device_count()}")
    devices = ["cpu"] * a.procs if a.cpu else [f"cuda:{i}" for i in range(a.procs)]
    args = {"n_python": a.python_iters, "n_launch": a.launch_iters, "repeats": a.repeats}
    topo = topology()
    print(f"{len(topo)} CPUs; SMT siblings as reported: "
          f"{'none shared' if all(s == str(c) for c, s in topo.items()) else topo}")
    modes = [("1 process", devices[:1], None), (f"{a.procs} processes, unpinned", devices, None)]
    for spec in a.pin:
        cpus = [int(c) for c in spec.split(",")]
        if len(cpus) != a.procs:
            raise SystemExit(f"--pin {spec}: needs {a.procs} CPUs, one a process")
        if not set(cpus) <= set(topo):
            raise SystemExit(f"--pin {spec}: CPU {sorted(set(cpus) - set(topo))} is not one this process may use "
                             f"({min(topo)}-{max(topo)})")
        modes.append((f"{a.procs} processes on CPUs {spec}", devices, cpus))
    for n in [int(x) for x in a.scaling.split(",") if x]:
        modes.append((f"{n} processes, CPU only", ["cpu"] * n, None))
    results = []
    for name, devs, cpus in modes:
        rows = run_mode(devs, cpus, args)
        results.append({"mode": name, "procs": rows})
        if len(rows) > 2:  # a scaling mode: the median process and the slowest
            py = sorted(r["python_ns"] for r in rows)
            per = f"python {statistics.median(py):.1f} ns/iter (median process), slowest {py[-1]:.1f}"
        else:
            per = "  ".join(f"rank{r['rank']}: python {r['python_ns']:.1f} ns/iter, launch {r['launch_us']:.2f} us/op"
                            for r in rows)
        print(f"{name:>32}  {per}", flush=True)
    if a.out:
        a.out.write_text(json.dumps({"topology": topo, "results": results}, indent=1))


if __name__ == "__main__":
    main()
