"""A log window of the training loop (``training.log_every`` steps) and the metrics its end
reports: the ranks' averaged losses and gradient norm, throughput, the worst rank's data wait,
compile time and garbage-collection pauses, and, when due, the forward diagnostics and the
validation loss.  Every function here that reads other ranks is a collective: every rank calls it.

A figure that the training mode does not compute is left out, never reported as NaN: coarse_only
runs (A6, A7) have no fine pass, so no ``loss_fine``, ``loss_ratio``, ``val_loss_fine`` or
``val_loss_ratio``; a window without a coarse loss (``model.coarse_loss_every``) has no
``loss_coarse`` or ``loss_ratio``.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field

import torch

from fovea.pipelines.batch import model_inputs
from fovea.platform.config import RunConfig
from fovea.platform.train.batch_stream import to_device
from fovea.platform.train.collectives import all_max, all_mean, all_sum, compile_seconds, gather_objects, world_info
from fovea.platform.train.gc_clock import GcClock
from fovea.platform.train.optim import group_lrs


@dataclass
class Window:
    """The host-side figures of one log window; the losses, norms and step counts are the
    step tally's (platform/train/step_tally.py), read once when the window ends."""

    gc_clock: GcClock  # Python's collection pauses (platform/train/gc_clock.py)
    samples: float = 0.0  # this rank's samples
    frames: float = 0.0  # this rank's frames
    wait: float = 0.0  # seconds this rank waited for batches
    step_costs: list[float] = field(default_factory=list)  # per-step batch cost (frames + LLM rows)
    t0: float = field(default_factory=time.perf_counter)
    compile0: float = field(default_factory=compile_seconds)  # compile seconds at the start
    gc0: tuple[float, int] = (0.0, 0)  # (pause seconds, full collections) at the start

    @classmethod
    def start(cls, gc_clock: GcClock) -> "Window":
        return cls(gc_clock, gc0=gc_clock.read())


def window_metrics(w: Window, sums: dict[str, float], step: int, samples_seen: int, optimizer,
                   device) -> dict[str, float]:
    """The window's metrics, the same on every rank; ``sums`` = ``StepTally.read``."""
    dt = max(time.perf_counter() - w.t0, 1e-9)
    n = max(sums["n"], 1.0)
    mean = all_mean([sums["loss"] / n, sums["fine"] / n, sums["coarse"] / max(sums["n_coarse"], 1.0),
                     sums["grad_norm"] / n, w.wait / dt], device)
    tot = all_sum([w.samples, w.frames], device)
    # DDP steps wait for the slowest rank: the worst rank's data wait, (re)compilation time and
    # garbage-collection pauses (seconds, full collections)
    gc_s, gc_full = w.gc_clock.read()
    worst = all_max([w.wait / dt, compile_seconds() - w.compile0, gc_s - w.gc0[0],
                     float(gc_full - w.gc0[1])], device)
    m = {"loss": mean[0], "loss_fine": mean[1], "grad_norm": mean[3], "data_wait_frac": mean[4],
         "data_wait_frac_max": worst[0], "compile_s_max": worst[1], "gc_s_max": worst[2], "gc_full_max": worst[3],
         "gc_frozen": float(gc.get_freeze_count()),
         "samples_per_s": tot[0] / dt, "frames_per_s": tot[1] / dt, "samples_seen": float(samples_seen),
         "window_s": dt,
         "step": float(step)}
    if sums["n_coarse"] > 0:
        m["loss_coarse"] = mean[2]
        m["loss_ratio"] = mean[1] / mean[2] if mean[2] > 0 else 0.0
    m.update(group_lrs(optimizer))
    if device.type == "cuda":
        m["gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return computed(m)


def computed(metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` without the figures that were not computed (NaN: coarse_only has no fine loss)."""
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


@torch.no_grad()
def diagnostics(model, batch, autocast) -> dict[str, float]:
    """q_static std, attention entropy (vs log N), |fine - coarse| on each rank's last batch,
    averaged over the ranks."""
    was = model.training
    model.eval()
    with autocast():
        out = model(**model_inputs(batch), mode="coarse_fine", compute_coarse=True, return_diagnostics=True)
    model.train(was)
    diag = {k: float(v) for k, v in out.get("diagnostics", {}).items() if isinstance(v, (int, float))
            or (isinstance(v, torch.Tensor) and v.numel() == 1)}
    diag.pop("loss_ratio", None)  # one batch's ratio; the window's loss_ratio is the logged one
    # Ranks may hold different keys (a text-only batch has no attention to measure), so
    # gather the dicts and average each key over the ranks that have it.
    merged: dict[str, list[float]] = {}
    for d in gather_objects(diag):
        for k, v in d.items():
            if math.isfinite(v):
                merged.setdefault(k, []).append(v)
    return {k: sum(v) / len(v) for k, v in merged.items()}


@torch.no_grad()
def validation_loss(model, cfg: RunConfig, device, autocast, mode: str) -> dict[str, float]:
    """Batch-size-weighted mean loss over ``eval.max_samples`` val samples, across ranks."""
    from fovea.pipelines.loader import build_eval_loader

    rank, world = world_info()
    loader = build_eval_loader(cfg.data, cfg.data.val_shards, rank=rank, world_size=world,
                               max_samples=max(1, cfg.eval.max_samples // world))
    was_training = model.training
    model.eval()
    sums = [0.0, 0.0, 0.0, 0.0]  # loss*B, fine*B, coarse*B, B
    for batch in loader:
        batch = to_device(batch, device)
        with autocast():
            out = model(**model_inputs(batch), mode=mode, compute_coarse=True)
        b = float(batch["input_ids"].shape[0])
        sums[0] += float(out["loss"]) * b
        sums[1] += float(out["loss_fine"]) * b
        sums[2] += float(out["loss_coarse"]) * b
        sums[3] += b
    model.train(was_training)
    tot = all_sum(sums, device)
    n = max(tot[3], 1.0)
    res = {"val_loss": tot[0] / n, "val_loss_fine": tot[1] / n, "val_loss_coarse": tot[2] / n}
    res["val_loss_ratio"] = res["val_loss_fine"] / res["val_loss_coarse"] if res["val_loss_coarse"] > 0 else 0.0
    return computed(res)
