"""The multiple-choice benchmarks of an evaluation: every benchmark present under a root
(``benchmark_items``), scored by likelihood (``mcq``) in each inference mode, with the local
reference VLM as an extra column when its weights are in the model store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from fovea.platform.config import RunConfig
from fovea.platform.eval import benchmark_items as bm
from fovea.platform.eval import mcq
from fovea.platform.eval.batches import autocast

log = logging.getLogger("fovea.evaluation")


def _option_losses(model, mode: str, pad: int | None, device: torch.device, precision: str):
    """``mcq.foveated_option_losses`` of ``mode``, run under the evaluation's autocast."""
    inner = mcq.foveated_option_losses(model, mode, pad)

    def fn(*a):
        with autocast(device, precision):
            return inner(*a)
    return fn


def run_benchmarks(model, tokenizer, root: str | Path, modes: Sequence[str], cfg: RunConfig,
                   device: torch.device, progress: bool = True, reference: bool = True) -> dict:
    """Every MCQ benchmark present under ``root`` in each mode (+ the local reference VLM).
    Missing benchmarks print and record the download hint instead."""
    ev = cfg.eval
    pad = tokenizer.pad_token_id if ev.mcq_pad_quirk else None
    out: dict[str, Any] = {"results": {}, "missing": {}}
    ref_scorer, ref_path = None, None
    if reference and ev.reference_model:
        ref_path = mcq.find_reference_model(ev.reference_model)
        if ref_path is None:
            print(mcq.reference_model_hint(ev.reference_model), flush=True)
            out["reference_missing"] = mcq.reference_model_hint(ev.reference_model)
    for name in bm.BENCHMARKS:
        try:
            items = bm.load_benchmark(name, root, ev.benchmark_max_items)
        except bm.BenchmarkNotFound as e:
            print(f"[benchmark skipped] {e}", flush=True)
            out["missing"][name] = str(e)
            continue
        scorers = {m: mcq.TokenMCQScorer(tokenizer, _option_losses(model, m, pad, device, cfg.training.precision),
                                         name=m, max_frames=cfg.data.max_frames, image_frames=ev.image_frames,
                                         device=device) for m in modes}
        res = mcq.run_mcq_many(items, scorers, progress=progress, desc=name)
        entry = {"modes": res, "reference": {}}
        if ref_path is not None:
            try:
                ref_scorer = ref_scorer or mcq.HFVLMScorer(ref_path, device=device, max_frames=cfg.data.max_frames)
                entry["reference"][ref_scorer.name] = mcq.run_mcq(items, ref_scorer, progress, f"{name}/ref")
            except Exception as e:  # noqa: BLE001 - the comparison column must not stop the run
                log.warning("reference model %s failed: %s", ref_path, e)
                out["reference_error"] = f"{type(e).__name__}: {e}"
                ref_path = None
        out["results"][name] = entry
    return out
