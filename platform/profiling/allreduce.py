"""All-reduce timing between processes, the way DDP uses it (jobs/bench/bench_allreduce.py):
one process a GPU over NCCL (or a CPU process over gloo, for the tests), buckets of DDP's
sizes, fp32 and bf16 (DDP's gradient dtype and its bf16 compression hook).

Per (size, dtype): the median time of ``iters`` all-reduces after ``warmup``, and the bus
bandwidth busbw = bytes * 2 (n-1) / n / time (NCCL-tests' convention: the link speed a ring
needs).
"""

from __future__ import annotations

import os
import statistics
import time

import torch
import torch.distributed as dist

from fovea.platform.profiling.workers import rank0_result


def _time_all_reduce(x: torch.Tensor, iters: int, warmup: int, sync) -> float:
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
    return statistics.median(times)


def _worker(rank: int, world: int, port: int, q, sizes_mb: list[float], iters: int, warmup: int, cpu: bool) -> None:
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
            t = _time_all_reduce(x, iters, warmup, sync)
            nbytes = x.numel() * x.element_size()
            rows.append({"dtype": str(dtype).split(".")[-1], "fp32_bucket_mb": mb, "bytes": nbytes, "ms": t * 1e3,
                         "busbw_gbs": nbytes * 2 * (world - 1) / world / t / 1e9})
    if rank == 0:
        q.put(rows)
    dist.barrier()
    dist.destroy_process_group()


def measure(world: int, sizes_mb: list[float], iters: int, warmup: int, cpu: bool = False) -> list[dict]:
    """``world`` processes all-reducing buckets of ``sizes_mb`` (MB of fp32) in fp32 and bf16:
    a row a (dtype, size) with ``bytes``, ``ms`` and ``busbw_gbs``. The processes inherit the
    environment (NCCL settings)."""
    return rank0_result(_worker, world, sizes_mb, iters, warmup, cpu)  # a worker that dies ends the wait


def gpu_topology() -> dict:
    """This machine's GPUs and which of them can access each other's memory directly."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"gpus": [torch.cuda.get_device_name(i) for i in range(n)],
            "peer_access": {f"{i}->{j}": torch.cuda.can_device_access_peer(i, j)
                            for i in range(n) for j in range(n) if i != j}}
