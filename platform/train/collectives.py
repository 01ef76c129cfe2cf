"""What the ranks of a training run tell each other: averages, sums, maxima and objects across
the process group (identities on one rank), and how long torch.compile has spent compiling.

DDP steps run at the pace of the slowest rank, so the loop logs the mean of per-rank figures
and, for data wait and compile time, the worst rank's; and how much costlier the costliest
rank's batches were than the mean (``rank_cost_imbalance``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def world_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(values: list[float], device: torch.device, op) -> torch.Tensor:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world_info()[1] > 1:
        dist.all_reduce(t, op=op)
    return t


def all_mean(values: list[float], device: torch.device) -> list[float]:
    """Average a list of floats across ranks (identity on one rank)."""
    return (_all_reduce(values, device, dist.ReduceOp.SUM) / world_info()[1]).tolist()


def all_sum(values: list[float], device: torch.device) -> list[float]:
    return _all_reduce(values, device, dist.ReduceOp.SUM).tolist()


def all_max(values: list[float], device: torch.device) -> list[float]:
    return _all_reduce(values, device, dist.ReduceOp.MAX).tolist()


def compile_seconds() -> float:
    """Seconds torch.compile has spent compiling in this process so far (0 without it)."""
    try:
        from torch._dynamo.utils import compilation_time_metrics  # private: absent in some versions
    except ImportError:
        return 0.0
    return float(sum(compilation_time_metrics.get("_compile.compile_inner", ())))


def gather_objects(obj: Any) -> list[Any]:
    _, world = world_info()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def rank_cost_imbalance(step_costs: list[float]) -> float:
    """This window's ``cost_imbalance`` over all ranks (a collective: every rank calls it)."""
    return cost_imbalance(gather_objects(step_costs))


def cost_imbalance(per_rank: list[list[float]]) -> float:
    """Sum over steps of the costliest rank's batch cost / sum of the ranks' mean cost (>= 1).

    per_rank: [world][steps] batch costs (loader.batch_cost: frames + padded LLM rows as frames).
    A DDP step waits for its slowest rank, so with cost ~ compute the best speed-up on W GPUs
    is about W / this; e.g. ranks at (10, 10) then (10, 20): (10 + 20) / (10 + 15) = 1.2.
    """
    worst = sum(max(c) for c in zip(*per_rank))
    mean = sum(sum(c) / len(c) for c in zip(*per_rank))
    return worst / mean if mean > 0 else 1.0
