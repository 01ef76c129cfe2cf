"""AdamW with three parameter groups and the reference's LR schedules (DESIGN.md 4.1, 4.2).

Groups (by parameter name, on the unwrapped model):

    connector  dino_to_llm, llm_to_query, q_static, q_init, encoder.query_input_proj,
               encoder.output_proj                                   -> lr_connector
    dino       every other encoder.* parameter (the DINOv2 backbone)  -> lr_dino
    llm        llm.*                                                  -> lr_llm

Fix of a reference slip (DESIGN.md 4.1 note / open question 4): the reference matched the
name ``query_output_proj``, which does not exist, so the new, randomly initialised
``encoder.output_proj`` trained at the backbone LR.  Here it is a connector parameter.

A group whose LR is 0 is kept (A5: "lr_dino = 0", gradients still computed); a frozen
module (``freeze_dino`` / ``freeze_llm``) has requires_grad False and is left out.

Schedules, with W = int(total_steps * warmup_ratio), p = (step - W) / (N - W),
c(p) = (1 + cos(pi p)) / 2, as LambdaLR multipliers of each group's base LR:

    cosine      step/W during warm-up, then 0.1 + 0.9 c(p)      (floor: 10 % of peak)
    constant    step/W, then 1
    converging  step/W, then r + (1 - r) c(p) with r = lr_target / base_lr per group:
                the connector decays 1e-3 -> 3e-5 while the backbones rise 1e-5 -> 3e-5
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from fovea.platform.config import TrainingConfig

CONNECTOR_NAMES = (
    "dino_to_llm", "llm_to_query", "q_static", "q_init",
    "encoder.query_input_proj", "encoder.output_proj",
)


def group_of(name: str) -> str:
    """Parameter name (of the unwrapped model) -> 'connector' | 'dino' | 'llm'."""
    name = name.removeprefix("module.").removeprefix("_orig_mod.")
    if any(name == c or name.startswith(c + ".") for c in CONNECTOR_NAMES):
        return "connector"
    if name.startswith("llm."):
        return "llm"
    if name.startswith("encoder."):
        return "dino"
    raise ValueError(f"parameter {name!r} belongs to no optimiser group")


def param_groups(model: nn.Module, cfg: TrainingConfig) -> list[dict]:
    lrs = {"connector": cfg.lr_connector, "dino": cfg.lr_dino, "llm": cfg.lr_llm}
    params: dict[str, list[nn.Parameter]] = {k: [] for k in lrs}
    for name, p in model.named_parameters():
        if p.requires_grad:
            params[group_of(name)].append(p)
    return [
        {"name": g, "params": ps, "lr": lrs[g], "weight_decay": cfg.weight_decay}
        for g, ps in params.items() if ps
    ]


def build_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.AdamW:
    # Fused AdamW (DESIGN.md 8: "fused AdamW ... small" gain), on CPU too: its found_inf lets the
    # training loop skip a non-finite step on the device (platform/train/step_tally.py).
    return torch.optim.AdamW(param_groups(model, cfg), fused=True)


def lr_multiplier(schedule: str, total_steps: int, warmup_ratio: float, ratio: float = 1.0) -> Callable[[int], float]:
    """LambdaLR function for one group; ``ratio`` = lr_target / base_lr (converging only)."""
    warm = int(total_steps * warmup_ratio)

    def f(step: int) -> float:
        if warm > 0 and step < warm:
            return step / warm
        if schedule == "constant":
            return 1.0
        p = min(1.0, (step - warm) / max(1, total_steps - warm))
        c = 0.5 * (1.0 + math.cos(math.pi * p))
        if schedule == "cosine":
            return 0.1 + 0.9 * c
        if schedule == "converging":
            return ratio + (1.0 - ratio) * c
        raise ValueError(f"unknown schedule {schedule!r}")

    return f


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainingConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    fns = []
    for g in opt.param_groups:
        base = g["lr"]
        ratio = 1.0
        if cfg.schedule == "converging":
            ratio = (cfg.lr_target / base) if base > 0 else 1.0
        fns.append(lr_multiplier(cfg.schedule, total_steps, cfg.warmup_ratio, ratio))
    return torch.optim.lr_scheduler.LambdaLR(opt, fns)


def total_optimizer_steps(cfg: TrainingConfig, batch_size: int, world_size: int) -> int:
    """total_samples // (batch * accum * world), unless max_steps is set (DESIGN.md 4.5)."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    return max(1, cfg.total_samples // (batch_size * cfg.grad_accum * world_size))


def group_lrs(opt: torch.optim.Optimizer) -> dict[str, float]:
    return {f"lr_{g.get('name', i)}": g["lr"] for i, g in enumerate(opt.param_groups)}
