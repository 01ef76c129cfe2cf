"""The whole evaluation of a Foveated VLM (DESIGN.md 6), as one recipe: loss per inference mode and
the train/inference gap (``losses``), generated captions and short answers scored (``captions``),
likelihood-scored multiple-choice benchmarks (``benchmarks``), an attention-heatmap grid and the
results table, files and MLflow run (``report``).  Each result is logged to MLflow as soon as it
is computed (validation losses first), and a failing step keeps what came before it.

    results = run_evaluation(cfg, checkpoint="runs/ray/demo_stage1")     # or model=...
    results["gap"]                      # (ar - cf) / cf of the validation loss

``jobs/evaluate.py`` is the command line (``fovea.platform.eval.launch``).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from fovea.platform.config import RunConfig
from fovea.platform.eval.batches import default_loader_factory, first_visual_batch
from fovea.platform.eval.benchmarks import run_benchmarks
from fovea.platform.eval.captions import generation_results
from fovea.platform.eval.checkpoint import model_for_eval
from fovea.platform.eval.losses import losses_and_gap
from fovea.platform.eval.report import EvalRun, attention_grid, output_files, summary_text

log = logging.getLogger("fovea.evaluation")


def run_evaluation(cfg: RunConfig, model=None, tokenizer=None, checkpoint: str | None = None,
                   shards: Sequence[str] | None = None, modes: Sequence[str] | None = None,
                   max_samples: int | None = None, captions: int | None = None,
                   benchmarks: str | None = None, reference: bool = True, tracker=None,
                   run_id: str | None = None, out_dir: str | Path | None = None,
                   device: str | torch.device | None = None, progress: bool = True, echo: bool = True,
                   loader_factory: Callable[[], Iterable[dict]] | None = None,
                   tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Evaluate a model (or ``checkpoint``: path / MLflow run id) and log everything.

    Defaults come from ``cfg.eval`` (modes, max_samples, caption_samples, benchmarks_dir) and
    ``cfg.data.val_shards``.  Results are logged to ``tracker`` (or a new MLflow run in
    ``cfg.tracking`` with extra ``tags``; ``run_id`` logs into an existing run) as each is
    computed, written to ``out_dir`` (results.md/.csv/.json, captions.jsonl, attention_grid.png)
    and printed when ``echo`` -- also when a later step fails (the run is then marked FAILED).
    Returns {modes, loss{mode: ...}, gap, gap_token, generation, benchmarks, files, ...}.
    """
    ev = cfg.eval
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, tokenizer, model_dir = model_for_eval(cfg, model, tokenizer, checkpoint, device)
    modes = list(modes or ev.modes)
    benchmarks = benchmarks if benchmarks is not None else ev.benchmarks_dir
    shards = list(shards or cfg.data.val_shards)
    if loader_factory is None and shards:
        loader_factory = default_loader_factory(cfg, shards)
    out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="fovea-eval-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"modes": modes, "checkpoint": str(model_dir or checkpoint or ""),
                               "device": str(device), "loss": {}, "gap": None, "gap_token": None}
    run = EvalRun(cfg, tracker, run_id, tags, model_dir=model_dir, params={
        "eval.modes": ",".join(modes), "eval.checkpoint": results["checkpoint"], "eval.device": str(device)})
    status = "FAILED"
    try:
        if loader_factory is not None:
            validation_results(results, run, model, tokenizer, loader_factory, cfg, device, out_dir, progress,
                               max_samples if max_samples is not None else ev.max_samples,
                               captions if captions is not None else ev.caption_samples)
        else:
            log.warning("no validation shards: loss, gap, captions and heatmaps skipped")
        if benchmarks:
            bres = run_benchmarks(model, tokenizer, benchmarks, modes, cfg, device, progress, reference,
                                  on_result=lambda name, entry: run.log({"benchmarks": {name: entry}}))
            results.update(_benchmark_entries(bres))
        status = "FINISHED"
    finally:  # what was computed is kept: files, MLflow artifacts and the printed summary
        results["files"] = output_files(results, out_dir)
        run.finish(results, out_dir, status)
        if echo:
            print(summary_text(results), flush=True)
    return results


def validation_results(results: dict[str, Any], run: EvalRun, model, tokenizer, loader_factory, cfg: RunConfig,
                       device: torch.device, out_dir: Path, progress: bool, max_samples: int | None,
                       captions: int) -> None:
    """Into ``results``, each logged as soon as it is computed: the loss per mode and the gap,
    then ``captions`` generated captions; then the attention-heatmap grid file."""
    ev, precision = cfg.eval, cfg.training.precision
    results.update(losses_and_gap(model, loader_factory, results["modes"], max_samples, device, precision,
                                  progress))
    run.log(results)
    if captions > 0:
        results["generation"] = generation_results(model, loader_factory(), tokenizer, captions, ev.max_new_tokens,
                                                   device, precision, progress, ev.spice, out_dir)
        run.log({"generation": results["generation"]})
    if ev.heatmap_videos > 0:
        first = first_visual_batch(loader_factory())
        if first is not None:
            attention_grid(model, first, out_dir / "attention_grid.png", n_videos=ev.heatmap_videos)


def _benchmark_entries(bres: dict[str, Any]) -> dict[str, Any]:
    """``run_benchmarks``' output as the results' keys: benchmarks, benchmarks_missing,
    benchmarks_failed, and reference_missing / reference_error when the reference VLM was not scored."""
    out = {"benchmarks": bres["results"], "benchmarks_missing": bres["missing"],
           "benchmarks_failed": bres.get("failed", {})}
    out.update({k: bres[k] for k in ("reference_missing", "reference_error") if k in bres})
    return out
