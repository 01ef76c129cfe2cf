#!/usr/bin/env python
"""How fast one process's host launches work, alone and with a second process launching beside it.

    python jobs/bench/bench_host.py [--procs 2] [--pin 0,1 --pin 0,16] [--scaling 1,2,4,8] [--out host.json]
    python jobs/bench/bench_host.py --cpu          # the code path on CPU (the tests)

Each process times a pure-Python loop (ns an iteration) and tiny ops on its own GPU (us an op:
the launch path), first alone, then with --procs processes started together on as many GPUs,
unpinned (the OS places them) and pinned to the CPU sets of each --pin (one CPU a process);
--scaling adds N processes on the CPU only. Why and how: platform/profiling/host_speed.py.

Prints the CPU topology the kernel reports (``thread_siblings_list`` a CPU), then one line a
mode: the median of --repeats timings, per process (a scaling mode: the median process and
the slowest). --out writes all of it as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from fovea.platform.profiling.host_speed import cpu_topology, run_mode


def modes(a: argparse.Namespace, devices: list[str], topo: dict[int, str]) -> list[tuple[str, list[str], list | None]]:
    """(name, devices, CPUs or None) of each mode to run, in order."""
    out = [("1 process", devices[:1], None), (f"{a.procs} processes, unpinned", devices, None)]
    for spec in a.pin:
        cpus = [int(c) for c in spec.split(",")]
        if len(cpus) != a.procs:
            raise SystemExit(f"--pin {spec}: needs {a.procs} CPUs, one a process")
        if not set(cpus) <= set(topo):
            raise SystemExit(f"--pin {spec}: CPU {sorted(set(cpus) - set(topo))} is not one this process may use "
                             f"({min(topo)}-{max(topo)})")
        out.append((f"{a.procs} processes on CPUs {spec}", devices, cpus))
    for n in [int(x) for x in a.scaling.split(",") if x]:
        out.append((f"{n} processes, CPU only", ["cpu"] * n, None))
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
    topo = cpu_topology()
    print(f"{len(topo)} CPUs; SMT siblings as reported: "
          f"{'none shared' if all(s == str(c) for c, s in topo.items()) else topo}")
    results = []
    for name, devs, cpus in modes(a, devices, topo):
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
