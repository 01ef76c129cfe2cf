"""The end-of-training artifacts (``fit``'s ``on_train_end``, wired by ``fovea.platform.stages``):
the loss overlay of the experiment's training runs (``fovea.platform.runs.loss_overlay``),
with val shards generated captions with their COCO metrics and the attention-heatmap grid, and
with ``eval.benchmarks_dir`` the MCQ benchmarks, logged into the training run's MLflow run."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch

from fovea.platform.config import RunConfig
from fovea.platform.eval.batches import default_loader_factory, first_visual_batch
from fovea.platform.eval.captions import generate_captions, records_jsonl, records_markdown, score_generations
from fovea.platform.eval.benchmarks import run_benchmarks
from fovea.platform.eval.report import attention_grid, benchmark_lines, flat_metrics
from fovea.platform.runs.loss_overlay import log_loss_overlay

log = logging.getLogger("fovea.evaluation")


def log_training_artifacts(model, cfg: RunConfig, tracker, device=None, autocast=None,
                           step: int | None = None) -> dict:
    """End of a training run (rank 0): the loss overlay plot (``plots/loss_overlay.png``); with
    val shards and ``eval.caption_samples`` > 0 that many generated captions (table + COCO metrics at
    ``step``) and the attention-heatmap grid; with ``eval.benchmarks_dir`` the benchmarks there
    (``log_benchmarks``); all logged into the training run.
    ``autocast``: a zero-argument callable returning a context manager (the training loop's)."""
    out: dict[str, Any] = {"records": []}
    if tracker.run_id and tracker.tracking_uri:
        try:
            out["loss_overlay"] = log_loss_overlay(tracker.tracking_uri, tracker.run_id)
        except Exception as e:  # noqa: BLE001 - a plot must not cost the captions
            log.warning("loss overlay not logged: %s: %s", type(e).__name__, e)
    device = torch.device(device or next(model.parameters()).device)
    step = int(step if step is not None else (cfg.training.max_steps or 0))
    if cfg.data.val_shards and cfg.eval.caption_samples > 0:
        out.update(_captions_and_heatmap(model, cfg, tracker, device, autocast, step))
    if cfg.eval.benchmarks_dir:
        out["benchmarks"] = log_benchmarks(model, cfg, tracker, device, step)
    return out


def _captions_and_heatmap(model, cfg: RunConfig, tracker, device: torch.device, autocast, step: int) -> dict:
    from fovea.model.build import load_tokenizer

    out: dict[str, Any] = {}
    tokenizer = load_tokenizer(model.cfg)
    factory = default_loader_factory(cfg, list(cfg.data.val_shards))
    ctx = autocast() if autocast is not None else contextlib.nullcontext()
    with tempfile.TemporaryDirectory(prefix="fovea-artifacts-") as tmp, ctx:
        recs = generate_captions(model, factory(), tokenizer, cfg.eval.caption_samples, cfg.eval.max_new_tokens,
                                 device, precision="fp32", progress=False)
        if recs:
            out.update(score_generations(recs, spice=False))
            _log_captions(tracker, recs, out, step)
        if cfg.eval.heatmap_videos > 0:
            _log_heatmap(model, factory(), cfg.eval.heatmap_videos, tracker, Path(tmp))
    out["records"] = recs
    return out


def log_benchmarks(model, cfg: RunConfig, tracker, device: torch.device, step: int) -> dict:
    """The MCQ benchmarks of ``eval.benchmarks_dir`` in ``eval.modes`` at the end of training
    (without the reference column: ``jobs/evaluate.py`` scores it), each one's metrics logged
    into the training run as soon as it is done and its table printed."""
    from fovea.model.build import load_tokenizer

    def on_result(name: str, entry: dict) -> None:
        tracker.log_metrics(flat_metrics({"benchmarks": {name: entry}}), step=step)
        print("\n".join(benchmark_lines(name, entry)), flush=True)

    was_training = model.training
    model.eval()
    try:
        return run_benchmarks(model, load_tokenizer(model.cfg), cfg.eval.benchmarks_dir, cfg.eval.modes, cfg,
                              device, progress=False, reference=False, on_result=on_result)
    finally:
        model.train(was_training)


def _log_captions(tracker, recs: list[dict], scores: dict[str, Any], step: int) -> None:
    tracker.log_text(records_markdown(recs), "evaluation/captions.md")
    tracker.log_text(records_jsonl(recs), "evaluation/captions.jsonl")
    tracker.log_metrics({f"eval/caption/{k}": v for k, v in scores.get("captions", {}).items()}, step=step)


def _log_heatmap(model, loader, n_videos: int, tracker, tmp: Path) -> None:
    first = first_visual_batch(loader)
    if first is None:
        return
    p = attention_grid(model, first, tmp / "attention_grid.png", n_videos=n_videos)
    if p is not None:
        tracker.log_artifact(p, "evaluation")
