"""Evaluation of a Foveated VLM (spec 6): loss per inference mode and the train/inference
gap, generated captions (COCO metrics) and short answers (VQA accuracy), likelihood-scored
multiple-choice benchmarks, an attention-heatmap grid, and a results table in MLflow.

    results = run_evaluation(cfg, checkpoint="runs/ray/demo_stage1")     # or model=...
    results["gap"]                      # (ar - cf) / cf of the validation loss

Library entry points (``jobs/evaluate.py`` is the CLI; training calls ``run_evaluation``):

    evaluate_loss(model, loader, mode)  -> {loss, loss_token, n_samples, n_tokens, samples_per_s}
    generate_captions(model, loader, tokenizer, n, max_new_tokens) -> [{key, source, prompt, reference, generated}]
    score_generations(records)          -> caption metrics + VQA accuracy
    attention_grid(model, batch, path)  -> PNG of fine / coarse query attention per frame
    run_evaluation(cfg, ...)            -> results dict (also logged to MLflow and printed)

Loss conventions.  ``loss`` is the reference's validation loss: the mean of per-batch losses
weighted by batch size (spec 4.7); ``loss_token`` is the token-weighted mean over all target
tokens.  Every mode scores the same tokens (the model never scores the first text token),
text-only samples are dropped (spec 6.2: image-less samples skipped), and each mode gets a
fresh, unshuffled loader, so the modes see identical samples and tokens.  The gap is
``(L_autoregressive - L_coarse_fine) / L_coarse_fine`` (reference: |gap| < 0.6 %).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from fovea.platform.config import RunConfig
from fovea.platform.eval.report import (  # noqa: F401 - re-exported
    attention_grid, flat_metrics, results_csv, results_markdown, summary_text, write_results,
)

log = logging.getLogger("fovea.evaluation")

MODES = ("coarse_only", "coarse_fine", "autoregressive")


# -- batches ---------------------------------------------------------------------------

def _select(batch: dict, keep: torch.Tensor) -> dict:
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


def visual_only(batch: dict) -> dict | None:
    """Drop text-only rows; None when nothing is left."""
    fm = batch["frame_mask"].bool()
    keep = fm.any(1)
    if "is_text_only" in batch:
        keep &= ~batch["is_text_only"].bool().to(keep.device)
    if bool(keep.all()):
        return batch
    return _select(batch, keep) if bool(keep.any()) else None


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast on GPU for "auto"/"bf16", nothing on CPU or for "fp32"."""
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _progress(it: Iterable, total: int | None, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, unit="sample", disable=not enabled, leave=False)


# -- validation loss per mode ----------------------------------------------------------------

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
    bar = _progress([], max_samples, f"loss[{mode}]", progress)
    try:
        for batch in loader:
            batch = visual_only(batch)
            if batch is None:
                continue
            if max_samples is not None and n_samples + batch["input_ids"].shape[0] > max_samples:
                batch = _select(batch, torch.arange(batch["input_ids"].shape[0]) < max_samples - n_samples)
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


# -- generation -------------------------------------------------------------------------

VQA_SOURCE = re.compile(r"vqa|gqa|vizwiz|ocr|docvqa|chartqa|textqa", re.I)


def _prompt_text(source: str, user: str) -> str:
    try:
        from fovea.pipelines.tokenize import prompt_for

        return prompt_for(source or "", user)
    except ImportError:
        return (user or "").strip() or "Describe this."


@torch.no_grad()
def generate_captions(model, loader: Iterable[dict], tokenizer, n: int, max_new_tokens: int = 48,
                      device: torch.device | str | None = None, precision: str = "auto",
                      progress: bool = True) -> list[dict]:
    """Greedy generations (autoregressive visual loop, spec 1.4) for the first ``n`` visual
    samples: system + user prompt + ``<|im_start|>assistant\\n``, stop at ``<|im_end|>``."""
    from fovea.platform.eval.mcq import chat_messages

    device = torch.device(device) if device is not None else next(model.parameters()).device
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos = eos if isinstance(eos, int) and eos >= 0 else tokenizer.eos_token_id
    records: list[dict] = []
    was_training = model.training
    model.eval()
    bar = _progress([], n, "generate", progress)
    for batch in loader:
        batch = visual_only(batch)
        if batch is None:
            continue
        B = batch["input_ids"].shape[0]
        if len(records) + B > n:
            batch = _select(batch, torch.arange(B) < n - len(records))
            B = batch["input_ids"].shape[0]
        sources = batch.get("sources") or [""] * B
        users = batch.get("users") or [""] * B
        refs = batch.get("assistants") or [""] * B
        keys = batch.get("keys") or [str(len(records) + i) for i in range(B)]
        prompts = [_prompt_text(s, u) for s, u in zip(sources, users)]
        ids = [tokenizer(tokenizer.apply_chat_template(chat_messages(p), tokenize=False,
                                                       add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"] for p in prompts]
        with autocast(device, precision):
            new = model.generate(batch["frames"].to(device), batch["frame_mask"].to(device), ids,
                                 max_new_tokens=max_new_tokens, eos_token_id=eos)
        for i in range(B):
            records.append({"key": keys[i], "source": sources[i], "prompt": prompts[i],
                            "reference": refs[i], "generated": tokenizer.decode(new[i], skip_special_tokens=True).strip()})
        bar.update(B)
        if len(records) >= n:
            break
    bar.close()
    model.train(was_training)
    return records


def score_generations(records: list[dict], spice: bool = False) -> dict[str, Any]:
    """Caption metrics on caption-like sources, VQA accuracy on VQA-like ones (``VQA_SOURCE``)."""
    from fovea.platform.eval.caption_metrics import CaptionMetricsError, score_captions
    from fovea.platform.eval.vqa_metrics import vqa_evaluate

    out: dict[str, Any] = {}
    caps = [r for r in records if not VQA_SOURCE.search(r["source"] or "") and r["reference"]]
    vqas = [r for r in records if VQA_SOURCE.search(r["source"] or "") and r["reference"]]
    if caps:
        refs = {i: [r["reference"]] for i, r in enumerate(caps)}
        hyps = {i: r["generated"] for i, r in enumerate(caps)}
        try:
            scores = score_captions(refs, hyps, spice=spice)
            out["captions"] = {k: v for k, v in scores.items() if k != "n"}
            out["captions_n"] = scores["n"]
        except CaptionMetricsError as e:
            log.warning("caption metrics skipped: %s", e)
            out["captions_error"] = str(e)
    if vqas:
        answers = {i: r.get("answers") or [r["reference"]] for i, r in enumerate(vqas)}
        res = vqa_evaluate({i: r["generated"] for i, r in enumerate(vqas)}, answers)
        out["vqa_accuracy"], out["vqa_n"] = res["overall"], res["n"]
    return out


# -- checkpoints ----------------------------------------------------------------------------

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def resolve_checkpoint(ref: str, tracking_uri: str | None = None) -> Path:
    """``--checkpoint`` -> a ``save_pretrained`` model dir.

    Accepts a model dir, a Ray checkpoint dir holding ``model/``, a Ray run dir (its best
    checkpoint by meta.json), or an MLflow run id: its tag ``best_checkpoint`` /
    ``checkpoint_path`` (or param ``checkpoint_path``), else its artifact ``best_checkpoint``
    (downloaded).
    """
    from fovea.platform.runs.checkpoints import resolve_init_from

    if Path(ref).expanduser().exists() or not _RUN_ID.match(ref):
        return resolve_init_from(ref, tracking_uri)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.get_run(ref)
    for cand in (run.data.tags.get("best_checkpoint"), run.data.tags.get("checkpoint_path"),
                 run.data.params.get("checkpoint_path"), run.data.tags.get("latest_checkpoint")):
        if cand and Path(cand).exists():
            return resolve_init_from(cand, tracking_uri)
    try:
        local = client.download_artifacts(ref, "best_checkpoint")
        return resolve_init_from(local, tracking_uri)
    except Exception as e:  # noqa: BLE001
        raise FileNotFoundError(
            f"MLflow run {ref}: no existing 'best_checkpoint'/'checkpoint_path' tag or param, and no "
            f"'best_checkpoint' artifact ({e})") from e


def load_model_for_eval(model_dir: str | Path, device: torch.device | str = "cpu"):
    """(FoveatedVLM in eval mode, tokenizer) from a save_pretrained dir."""
    from fovea.model.build import load_tokenizer
    from fovea.model.vlm import FoveatedVLM

    model = FoveatedVLM.from_pretrained(model_dir, device=device).eval()
    try:
        tok = load_tokenizer(model_dir)
    except Exception:  # noqa: BLE001 - no tokenizer/ folder: the LLM's own
        tok = load_tokenizer(model.cfg)
    return model, tok


# -- benchmarks -------------------------------------------------------------------------

def run_benchmarks(model, tokenizer, root: str | Path, modes: Sequence[str], cfg: RunConfig,
                   device: torch.device, progress: bool = True, reference: bool = True) -> dict:
    """Every MCQ benchmark present under ``root`` in each mode (+ the local reference VLM).
    Missing benchmarks print and record the download hint instead."""
    from fovea.platform.eval import benchmark_items as bm
    from fovea.platform.eval import mcq

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

        def losses_fn(mode):
            inner = mcq.foveated_option_losses(model, mode, pad)

            def fn(*a):
                with autocast(device, cfg.training.precision):
                    return inner(*a)
            return fn

        scorers = {m: mcq.TokenMCQScorer(tokenizer, losses_fn(m), name=m, max_frames=cfg.data.max_frames,
                                         image_frames=ev.image_frames, device=device) for m in modes}
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


# -- the whole evaluation ---------------------------------------------------------------

def default_loader_factory(cfg: RunConfig, shards: list[str]) -> Callable[[], Iterable[dict]]:
    """A fresh, unshuffled val loader per call (``fovea.pipelines.loader.build_eval_loader``);
    single images replicated to ``eval.image_frames``."""
    from fovea.pipelines.loader import build_eval_loader

    data = cfg.data.model_copy(update={"batch_size": cfg.eval.batch_size or cfg.data.batch_size,
                                       "replicate_image_frames": cfg.eval.image_frames})
    return lambda: build_eval_loader(data, shards, rank=0, world_size=1, max_samples=None)


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
    ``cfg.tracking`` with extra ``tags``; ``run_id`` logs into an existing run), written to ``out_dir``
    (results.md/.csv/.json, captions.jsonl, attention_grid.png) and printed when ``echo``.
    Returns {modes, loss{mode: ...}, gap, gap_token, generation, benchmarks, files, ...}.
    """
    import json
    import tempfile

    ev = cfg.eval
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model_dir = None
    if model is None:
        if checkpoint is None:
            raise ValueError("run_evaluation needs a model or a checkpoint")
        model_dir = resolve_checkpoint(str(checkpoint), cfg.tracking_uri())
        model, tok = load_model_for_eval(model_dir, device)
        tokenizer = tokenizer or tok
    else:
        model = model.to(device)
    if tokenizer is None:
        from fovea.model.build import load_tokenizer

        tokenizer = load_tokenizer(model.cfg)
    modes = list(modes or ev.modes)
    max_samples = max_samples if max_samples is not None else ev.max_samples
    captions = captions if captions is not None else ev.caption_samples
    benchmarks = benchmarks if benchmarks is not None else ev.benchmarks_dir
    shards = list(shards or cfg.data.val_shards)
    if loader_factory is None and shards:
        loader_factory = default_loader_factory(cfg, shards)
    out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="fovea-eval-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"modes": modes, "checkpoint": str(model_dir or checkpoint or ""),
                               "device": str(device), "loss": {}, "gap": None, "gap_token": None}

    if loader_factory is not None:
        for mode in modes:
            results["loss"][mode] = evaluate_loss(model, loader_factory(), mode, max_samples, device,
                                                  cfg.training.precision, progress)
            r = results["loss"][mode]
            log.info("val loss [%s] %.4f (token mean %.4f) on %d samples, %.2f samples/s",
                     mode, r["loss"], r["loss_token"], r["n_samples"], r["samples_per_s"])
        if "coarse_fine" in results["loss"] and "autoregressive" in results["loss"]:
            cf, ar = results["loss"]["coarse_fine"], results["loss"]["autoregressive"]
            results["gap"] = relative_gap(ar["loss"], cf["loss"])
            results["gap_token"] = relative_gap(ar["loss_token"], cf["loss_token"])
        if captions > 0:
            recs = generate_captions(model, loader_factory(), tokenizer, captions, ev.max_new_tokens,
                                     device, cfg.training.precision, progress)
            results["generation"] = score_generations(recs, spice=ev.spice)
            results["generation"]["records"] = recs
            (out_dir / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        if ev.heatmap_videos > 0:
            first = next((b for b in loader_factory() if visual_only(b) is not None), None)
            if first is not None:
                attention_grid(model, first, out_dir / "attention_grid.png", n_videos=ev.heatmap_videos)
    else:
        log.warning("no validation shards: loss, gap, captions and heatmaps skipped")

    if benchmarks:
        bres = run_benchmarks(model, tokenizer, benchmarks, modes, cfg, device, progress, reference)
        results["benchmarks"] = bres["results"]
        results["benchmarks_missing"] = bres["missing"]
        for k in ("reference_missing", "reference_error"):
            if k in bres:
                results[k] = bres[k]

    results["files"] = {k: str(v) for k, v in write_results(results, out_dir).items()}
    for extra in ("captions.jsonl", "attention_grid.png"):
        if (out_dir / extra).exists():
            results["files"][extra] = str(out_dir / extra)
    _log_to_mlflow(results, cfg, tracker, run_id, out_dir, model_dir, tags)
    if echo:
        print(summary_text(results), flush=True)
    return results


def _log_to_mlflow(results: dict, cfg: RunConfig, tracker, run_id: str | None, out_dir: Path,
                   model_dir: Path | None, tags: dict[str, str] | None = None) -> None:
    if tracker is None and not cfg.tracking.enabled:
        return
    own = tracker is None
    if own:
        from fovea.platform.runs.tracking import Tracker

        tracker = Tracker(cfg.tracking_uri(), cfg.tracking.experiment, run_id=run_id,
                          run_name=cfg.tracking.run_name or f"eval-{cfg.name}",
                          tags={"job": "evaluate", "checkpoint": str(model_dir or ""), **(tags or {})})
    step = int(cfg.training.max_steps or 0)
    tracker.log_params({"eval.modes": ",".join(results["modes"]), "eval.checkpoint": results["checkpoint"],
                        "eval.device": results["device"]} if own else {})
    tracker.log_metrics(flat_metrics(results), step=step)
    for name in ("results.md", "results.csv", "results.json", "captions.jsonl", "attention_grid.png"):
        if (out_dir / name).exists():
            tracker.log_artifact(out_dir / name, "evaluation")
    results["mlflow_run_id"] = tracker.run_id
    if own and run_id is None:
        tracker.finish()


def log_training_artifacts(model, cfg: RunConfig, tracker, device=None, autocast=None,
                           step: int | None = None) -> dict:
    """End of a training run (rank 0): ``eval.caption_samples`` generated captions (table +
    COCO metrics at ``step``) and the attention-heatmap grid, logged into the training run.
    ``autocast``: a zero-argument callable returning a context manager (the training loop's)."""
    import json
    import tempfile

    from fovea.model.build import load_tokenizer

    device = torch.device(device or next(model.parameters()).device)
    tokenizer = load_tokenizer(model.cfg)
    step = int(step if step is not None else (cfg.training.max_steps or 0))
    factory = default_loader_factory(cfg, list(cfg.data.val_shards))
    ctx = autocast() if autocast is not None else contextlib.nullcontext()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fovea-artifacts-") as tmp, ctx:
        recs = generate_captions(model, factory(), tokenizer, cfg.eval.caption_samples, cfg.eval.max_new_tokens,
                                 device, precision="fp32", progress=False)
        if recs:
            out = score_generations(recs, spice=False)
            table = "| key | generated | reference |\n|---|---|---|\n" + "".join(
                f"| {r['key']} | {r['generated'].replace('|', '/')} | {r['reference'].replace('|', '/')} |\n"
                for r in recs)
            tracker.log_text(table, "evaluation/captions.md")
            tracker.log_text("".join(json.dumps(r) + "\n" for r in recs), "evaluation/captions.jsonl")
            tracker.log_metrics({f"eval/caption/{k}": v for k, v in out.get("captions", {}).items()}, step=step)
        first = next((b for b in factory() if visual_only(b) is not None), None)
        if first is not None and cfg.eval.heatmap_videos > 0:
            p = attention_grid(model, first, Path(tmp) / "attention_grid.png", n_videos=cfg.eval.heatmap_videos)
            if p is not None:
                tracker.log_artifact(p, "evaluation")
    out["records"] = recs
    return out
