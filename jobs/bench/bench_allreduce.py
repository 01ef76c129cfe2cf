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
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from fovea.platform.profiling.allreduce import gpu_topology, measure


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
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
