"""``training.profile_steps = [first, last]``: torch.profiler over those optimizer steps, on
every rank of the real job (1 or N GPUs, or CPU), to see what bounds a step.

    python jobs/stage1.py --config stage1_135m cluster.num_workers=2 "training.profile_steps=[60,64]"

Each rank writes ``<run dir>/profile/rank<r>.txt``: a summary line, then the top ops by self
device time (CUDA) or self CPU time. The summary splits the device time of the window, in
this form (figures made up):

    wall 2.71 s for 5 steps | device busy 1.83 s (67.5 %): comm 0.06 s, matmul 0.92 s, other 0.85 s

``device busy`` is the sum of kernel times (overlapping streams counted twice, so an upper
bound; comm = NCCL / gloo collectives); wall minus busy is time the GPU sat idle: host overhead
(kernel launches, Python, the data wait) or waiting on the other ranks. Ranks that differ a
lot in busy time are imbalanced.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

_COMM = ("nccl", "gloo", "all_reduce", "allreduce", "c10d")
_MATMUL = ("gemm", "matmul", "mm", "cutlass", "sm90_xmma", "nvjet")


def _kind(name: str) -> str:
    n = name.lower()
    if any(k in n for k in _COMM):
        return "comm"
    if any(k in n for k in _MATMUL):
        return "matmul"
    return "other"


class StepProfiler:
    """Call ``before_step(step)`` before optimizer step ``step + 1`` and ``after_step(step)``
    once ``step`` steps are done; profiles steps first..last (1-based, inclusive)."""

    def __init__(self, steps: tuple[int, int] | None, out_dir: Path, rank: int, device: torch.device):
        self.steps, self.out_dir, self.rank, self.device = steps, out_dir, rank, device
        self._prof, self._t0 = None, 0.0

    def before_step(self, step: int) -> None:
        if self.steps and self._prof is None and step + 1 == self.steps[0]:
            acts = [torch.profiler.ProfilerActivity.CPU]
            if self.device.type == "cuda":
                acts.append(torch.profiler.ProfilerActivity.CUDA)
                torch.cuda.synchronize(self.device)
            self._prof = torch.profiler.profile(activities=acts)
            self._prof.__enter__()
            self._t0 = time.perf_counter()

    def after_step(self, step: int) -> Path | None:
        if self._prof is None or step != self.steps[1]:
            return None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        wall = time.perf_counter() - self._t0
        self._prof.__exit__(None, None, None)
        events, self._prof = self._prof.key_averages(), None
        cuda = self.device.type == "cuda"
        attr = "self_device_time_total" if cuda else "self_cpu_time_total"
        by_kind = {"comm": 0.0, "matmul": 0.0, "other": 0.0}
        for e in events:
            by_kind[_kind(e.key)] += getattr(e, attr, 0.0) / 1e6  # us -> s
        busy = sum(by_kind.values())
        n = self.steps[1] - self.steps[0] + 1
        what = "device" if cuda else "cpu (self op time)"
        summary = (f"wall {wall:.2f} s for {n} steps | {what} busy {busy:.2f} s ({busy / wall:.1%}): "
                   + ", ".join(f"{k} {v:.2f} s" for k, v in by_kind.items()))
        table = events.table(sort_by=attr, row_limit=40)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"rank{self.rank}.txt"
        path.write_text(f"rank {self.rank}, steps {self.steps[0]}..{self.steps[1]}\n{summary}\n\n{table}\n")
        return path
