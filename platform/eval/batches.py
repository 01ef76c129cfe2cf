"""Validation batches as the evaluation sees them: the unshuffled val loader, rows picked out
of a collated batch, text-only rows dropped, moved to the device, and the autocast context."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch

from fovea.platform.config import RunConfig


def default_loader_factory(cfg: RunConfig, shards: list[str]) -> Callable[[], Iterable[dict]]:
    """A fresh, unshuffled val loader per call (``fovea.pipelines.loader.build_eval_loader``);
    single images replicated to ``eval.image_frames``."""
    from fovea.pipelines.loader import build_eval_loader

    data = cfg.data.model_copy(update={"batch_size": cfg.eval.batch_size or cfg.data.batch_size,
                                       "replicate_image_frames": cfg.eval.image_frames})
    return lambda: build_eval_loader(data, shards, rank=0, world_size=1, max_samples=None)


def select_rows(batch: dict, keep: torch.Tensor) -> dict:
    """Rows ``keep`` (bool [B]) of a collated batch; T/S are trimmed to what is left."""
    idx = keep.nonzero().squeeze(1)
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == keep.shape[0]:
            out[k] = v.index_select(0, idx.to(v.device))
        elif isinstance(v, list) and len(v) == keep.shape[0]:
            out[k] = [v[i] for i in idx.tolist()]
        else:
            out[k] = v
    fm = out["frame_mask"]
    if fm.numel() and bool(fm.any()):
        T = int(fm.any(0).nonzero().max()) + 1  # last slot any kept row uses
        out["frames"], out["frame_mask"] = out["frames"][:, :T], fm[:, :T]
    return out


def first_rows(batch: dict, n: int) -> dict:
    """The first ``n`` rows of a collated batch."""
    return select_rows(batch, torch.arange(batch["input_ids"].shape[0]) < n)


def visual_only(batch: dict) -> dict | None:
    """Drop text-only rows; None when nothing is left."""
    fm = batch["frame_mask"].bool()
    keep = fm.any(1)
    if "is_text_only" in batch:
        keep &= ~batch["is_text_only"].bool().to(keep.device)
    if bool(keep.all()):
        return batch
    return select_rows(batch, keep) if bool(keep.any()) else None


def first_visual_batch(loader: Iterable[dict]) -> dict | None:
    """The first batch of ``loader`` that holds a visual row (as it came), or None."""
    return next((b for b in loader if visual_only(b) is not None), None)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast on GPU for "auto"/"bf16", nothing on CPU or for "fp32"."""
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def progress_bar(total: int | None, desc: str, enabled: bool):
    """A tqdm bar counting samples (updated by hand); silent when not ``enabled``."""
    from tqdm.auto import tqdm

    return tqdm([], total=total, desc=desc, unit="sample", disable=not enabled, leave=False)
