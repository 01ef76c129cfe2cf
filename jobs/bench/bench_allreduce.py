#!/usr/bin/env python
"""All-reduce bandwidth between the GPUs of this machine, the way DDP uses it: whether a step's
gradient all-reduce is cheap (NVLink) or expensive (through host memory).

    python jobs/bench/bench_allreduce.py [--gpus 2] [--sizes-mb 25,100,628] [--env NCCL_PROTO=Simple]

Prints the GPUs and their peer access as JSON, then a line per (setting, dtype, bucket size):
the bytes moved, the median time of --iters all-reduces after --warmup, and the bus bandwidth
(platform/profiling/allreduce.py). The stage-1 135M model has ~157 M parameters: 628 MB of fp32
gradients a step. --out writes all of it as JSON.

``--env K=V`` (repeatable) runs the same measurement again with that NCCL setting, so the
default and e.g. ``NCCL_P2P_LEVEL=SYS`` or ``NCCL_PROTO=Simple`` are compared side by side.
With NCCL_DEBUG=INFO set, NCCL's transport lines (P2P / SHM / NET) go to stderr.

Then (``--exchanges N``, 0 to skip) the host's side of ``cluster.oom_agreement``: the median of N
rounds of its gloo exchange between --gpus processes. A training step makes one a micro-batch and
one before each DDP bucket's all-reduce (~26 buckets of 25 MB for the 135M model); those run
inside backward, on the thread that launches its kernels, and each waits for every rank.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist

from fovea.platform.profiling.allreduce import gpu_topology, measure
from fovea.platform.profiling.workers import rank0_result
from fovea.platform.train.oom import OomAgreement


def measure_with(setting: str, args: argparse.Namespace, sizes: list[float]) -> list[dict]:
    """``measure`` with ``K=V`` set in the environment the workers inherit ("" for none)."""
    saved = dict(os.environ)
    if setting:
        k, v = setting.split("=", 1)
        os.environ[k] = v
    try:
        return measure(args.gpus, sizes, args.iters, args.warmup, args.cpu)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _exchange_worker(rank: int, world: int, port: int, q, rounds: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    agreement = OomAgreement(world)  # its own gloo group, as the training loop builds it
    for _ in range(5):
        agreement.exchange(False, False)
    times = []
    for _ in range(rounds):
        dist.barrier(group=agreement.group)
        t0 = time.perf_counter()
        agreement.exchange(False, False)
        times.append(time.perf_counter() - t0)
    if rank == 0:
        q.put(statistics.median(times))
    dist.barrier()
    dist.destroy_process_group()


def measure_oom_exchange(world: int, rounds: int) -> float:
    """Median seconds of one ``OomAgreement.exchange`` between ``world`` host processes, each
    round started together (a barrier), so that it is the round trip, not a wait for a late rank."""
    return rank0_result(_exchange_worker, world, rounds, port_offset=500)  # not the all-reduce's port


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--sizes-mb", default="25,100,628", help="fp32 bucket sizes in MB (DDP's default bucket: 25)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--env", action="append", default=[], help="K=V: also measure with this NCCL setting")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--cpu", action="store_true", help="--gpus processes on the CPU over gloo (tests the script)")
    ap.add_argument("--exchanges", type=int, default=200,
                    help="rounds of cluster.oom_agreement's gloo exchange to time (0: skip)")
    args = ap.parse_args(argv)
    if not args.cpu and torch.cuda.device_count() < args.gpus:
        print(f"--gpus {args.gpus}: this machine has {torch.cuda.device_count()} GPU(s)", file=sys.stderr)
        return 2
    sizes = [float(s) for s in args.sizes_mb.split(",")]
    result = {"topology": gpu_topology(), "runs": {}}
    print(json.dumps(result["topology"]))
    for setting in args.env:
        if "=" not in setting:
            print(f"--env {setting!r}: expected K=V", file=sys.stderr)
            return 2
    for setting in [""] + args.env:
        rows = measure_with(setting, args, sizes)
        result["runs"][setting or "default"] = rows
        for r in rows:
            print(f"{setting or 'default':>22}  {r['dtype']:>8}  bucket {r['fp32_bucket_mb']:6.1f} MB fp32  "
                  f"{r['bytes'] / 1e6:7.1f} MB moved  {r['ms']:8.2f} ms  busbw {r['busbw_gbs']:6.1f} GB/s", flush=True)
    if args.exchanges > 0:
        ms = measure_oom_exchange(args.gpus, args.exchanges) * 1e3
        result["oom_agreement_exchange_ms"] = ms
        print(f"cluster.oom_agreement: one gloo exchange between {args.gpus} host processes {ms:.3f} ms "
              f"(median of {args.exchanges}); a step makes one a micro-batch and one a DDP bucket", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
