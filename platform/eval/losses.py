"""Validation loss per inference mode (coarse_only, coarse_fine, autoregressive) and the
train/inference gap between coarse_fine (how training sees the video) and autoregressive
(how inference does).

Loss conventions.  ``loss`` is the reference's validation loss: the mean of per-batch losses
weighted by batch size (DESIGN.md 4.7); ``loss_token`` is the token-weighted mean over all target
tokens.  Each mode scores the tokens the reference's does (DESIGN.md 1.4): coarse_only and
autoregressive also score each sample's first text token, from its last visual position, where
its loss mask makes it a target (stage 1), coarse_fine does not (``model.score_first_text_token=
false``: no mode does).  Text-only samples are dropped (DESIGN.md 6.2: image-less samples
skipped), and each mode gets a fresh, unshuffled loader, so the modes see identical samples.  The gap is
``(L_autoregressive - L_coarse_fine) / L_coarse_fine`` (reference: |gap| < 0.6 %).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Iterable, Sequence

import torch

from fovea.platform.eval.batches import autocast, first_rows, progress_bar, to_device, visual_only

log = logging.getLogger("fovea.evaluation")

MODES = ("coarse_only", "coarse_fine", "autoregressive")


@torch.no_grad()
def evaluate_loss(model, loader: Iterable[dict], mode: str, max_samples: int | None = None,
                  device: torch.device | str | None = None, precision: str = "auto",
                  progress: bool = True) -> dict[str, float]:
    """Validation loss of ``model`` in one inference ``mode`` over (up to ``max_samples``
    visual samples of) ``loader``; see the module docstring for the two means."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    n_samples = n_tokens = 0
    w_sum = tok_sum = 0.0
    t0 = time.perf_counter()
    bar = progress_bar(max_samples, f"loss[{mode}]", progress)
    try:
        for batch in loader:
            batch = visual_only(batch)
            if batch is None:
                continue
            if max_samples is not None and n_samples + batch["input_ids"].shape[0] > max_samples:
                batch = first_rows(batch, max_samples - n_samples)
            b = to_device(batch, device)
            with autocast(device, precision):
                out = model(frames=b["frames"], frame_mask=b["frame_mask"], input_ids=b["input_ids"],
                            attention_mask=b["attention_mask"], loss_mask=b["loss_mask"], mode=mode,
                            compute_coarse=False, return_logits=False)
            bs = int(b["input_ids"].shape[0])
            nt = int(out["num_targets"]) if "num_targets" in out else int(b["loss_mask"][:, 1:].sum())
            loss = float(out["loss"])
            if nt > 0 and math.isfinite(loss):
                w_sum += loss * bs
                tok_sum += loss * nt
                n_samples += bs
                n_tokens += nt
            bar.update(bs)
            if max_samples is not None and n_samples >= max_samples:
                break
    finally:
        bar.close()
        model.train(was_training)
    secs = time.perf_counter() - t0
    return {
        "loss": w_sum / n_samples if n_samples else float("nan"),
        "loss_token": tok_sum / n_tokens if n_tokens else float("nan"),
        "n_samples": n_samples, "n_tokens": n_tokens, "seconds": secs,
        "samples_per_s": n_samples / secs if secs > 0 else float("nan"),
    }


def relative_gap(loss_ar: float, loss_cf: float) -> float:
    """Train/inference gap: (autoregressive - coarse_fine) / coarse_fine."""
    return (loss_ar - loss_cf) / loss_cf if loss_cf else float("nan")


def losses_and_gap(model, loader_factory: Callable[[], Iterable[dict]], modes: Sequence[str],
                   max_samples: int | None, device: torch.device, precision: str,
                   progress: bool) -> dict[str, Any]:
    """{loss: {mode: evaluate_loss(...)}, gap, gap_token}, each mode on a fresh loader; the
    gaps are None unless both coarse_fine and autoregressive were evaluated."""
    losses: dict[str, dict[str, float]] = {}
    for mode in modes:
        r = losses[mode] = evaluate_loss(model, loader_factory(), mode, max_samples, device, precision, progress)
        log.info("val loss [%s] %.4f (token mean %.4f) on %d samples, %.2f samples/s",
                 mode, r["loss"], r["loss_token"], r["n_samples"], r["samples_per_s"])
    out: dict[str, Any] = {"loss": losses, "gap": None, "gap_token": None}
    if "coarse_fine" in losses and "autoregressive" in losses:
        cf, ar = losses["coarse_fine"], losses["autoregressive"]
        out["gap"] = relative_gap(ar["loss"], cf["loss"])
        out["gap_token"] = relative_gap(ar["loss_token"], cf["loss_token"])
    return out
