#!/usr/bin/env python
"""All-reduce bandwidth between the GPUs of this machine, the way DDP uses it: one process
a GPU, NCCL, buckets of DDP's sizes, fp32 and bf16 (DDP's gradient dtype and its bf16
compression hook).  What it tells: whether a step's gradient all-reduce is cheap (NVLink,
~305 GB/s bus bandwidth measured on 2 x H200 here) or expensive (through host memory).

    python jobs/bench/bench_allreduce.py [--gpus 2] [--sizes-mb 25,100,628] [--env NCCL_PROTO=Simple]

Per (size, dtype): median time of --iters all-reduces after --warmup, and the bus bandwidth
busbw = bytes * 2 (n-1) / n / time (NCCL-tests' convention: the link speed a ring needs).
The stage-1 135M model has ~157 M parameters: 628 MB of fp32 gradients a step.

``--env K=V`` (repeatable) runs the same measurement again with that NCCL setting, so the
default and e.g. ``NCCL_P2P_LEVEL=SYS`` or ``NCCL_PROTO=Simple`` are compared side by side.
With NCCL_DEBUG=INFO set, NCCL's transport lines (P2P / SHM / NET) go to stderr.
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
import torch.multiprocessing as mp

from bench_host import collect  # jobs/bench/bench_host.py, this script's folder


def _worker(rank: int, world: int, sizes_mb: list[float], iters: int, warmup: int, port: int, q, cpu: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if cpu:  # gloo between processes on this host (the code path, for the tests)
        dev = torch.device("cpu")
        dist.init_process_group("gloo", rank=rank, world_size=world)
    else:
        dev = torch.device("cuda", rank)
        torch.cuda.set_device(rank)
        dist.init_process_group("nccl", rank=rank, world_size=world, device_id=dev)
    sync = torch.cuda.synchronize if not cpu else (lambda: None)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for mb in sizes_mb:
            n = int(mb * 1e6 / 4)  # elements of a fp32 bucket of that size: bf16 moves half the bytes
            x = torch.ones(n, dtype=dtype, device=dev)
            for _ in range(warmup):
                dist.all_reduce(x)
            sync()
            times = []
            for _ in range(iters):
                dist.barrier()
                sync()
                t0 = time.perf_counter()
                dist.all_reduce(x)
                sync()
                times.append(time.perf_counter() - t0)
            t = statistics.median(times)
            nbytes = x.numel() * x.element_size()
            rows.append({"dtype": str(dtype).split(".")[-1], "fp32_bucket_mb": mb, "bytes": nbytes, "ms": t * 1e3,
                         "busbw_gbs": nbytes * 2 * (world - 1) / world / t / 1e9})
    if rank == 0:
        q.put(rows)
    dist.barrier()
    dist.destroy_process_group()


def measure(world: int, sizes_mb: list[float], iters: int, warmup: int, cpu: bool = False) -> list[dict]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = 29500 + os.getpid() % 1000
    procs = [ctx.Process(target=_worker, args=(r, world, sizes_mb, iters, warmup, port, q, cpu)) for r in range(world)]
    for p in procs:
        p.start()
    (rows,) = collect(procs, q, 1)  # rank 0's rows; a worker that dies ends the wait
    for p in procs:
        p.join()
    return rows


def topology() -> dict:
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"gpus": [torch.cuda.get_device_name(i) for i in range(n)],
            "peer_access": {f"{i}->{j}": torch.cuda.can_device_access_peer(i, j)
                            for i in range(n) for j in range(n) if i != j}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--sizes-mb", default="25,100,628", help="fp32 bucket sizes in MB (DDP's default bucket: 25)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--env", action="append", default=[], help="K=V: also measure with this NCCL setting")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--cpu", action="store_true", help="--gpus processes on the CPU over gloo (tests the script)")
    args = ap.parse_args(argv)
    if not args.cpu and torch.cuda.device_count() < args.gpus:
        print(f"--gpus {args.gpus}: this machine has {torch.cuda.device_count()} GPU(s)", file=sys.stderr)
        return 2
    sizes = [float(s) for s in args.sizes_mb.split(",")]
    result = {"topology": topology(), "runs": {}}
    print(json.dumps(result["topology"]))
    for setting in args.env:
        if "=" not in setting:
            print(f"--env {setting!r}: expected K=V", file=sys.stderr)
            return 2
    for setting in [""] + args.env:
        saved = dict(os.environ)
        if setting:
            k, v = setting.split("=", 1)
            os.environ[k] = v  # the spawned workers inherit it
        try:
            rows = measure(args.gpus, sizes, args.iters, args.warmup, args.cpu)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        result["runs"][setting or "default"] = rows
        for r in rows:
            print(f"{setting or 'default':>22}  {r['dtype']:>8}  bucket {r['fp32_bucket_mb']:6.1f} MB fp32  "
                  f"{r['bytes'] / 1e6:7.1f} MB moved  {r['ms']:8.2f} ms  busbw {r['busbw_gbs']:6.1f} GB/s", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
