#!/usr/bin/env python
"""Activation memory of a stage-1 training step, by component -- on CPU, no GPU needed.

    python jobs/bench/make_bench_shards.py --out data/bench/ref --samples 400
    python jobs/bench/bench_memory.py --shards 'data/bench/ref/train-*.tar' [--budget 96] \\
        [--project 1536,3072] [--compile] [model.gradient_checkpointing=dino ...]

Runs the forward pass of a few real token-budget batches (the stage1_135m model, bf16
autocast as on a GPU, ``data.llm_tokens_per_frame=64``) and counts the bytes autograd saves
for backward by phase (platform/profiling/saved_tensors.py). The batches' cost in budget
units (``pipelines.loader.batch_cost``: frames + padded LLM rows / 64) scales every term, so
the step's saved activations at a budget of U units are projected as U x (bytes per unit),
plus the fixed training state: fp32 parameters, gradients and AdamW's two moments (16 bytes a
parameter).

Prints the batches measured, a table of the saved MB by phase (total, per budget unit, share),
the training state, and for each --project budget the projected step memory. That projection
is a lower bound of the GPU's peak: transient buffers of backward (the largest: the gradient of
the logits, a recomputed checkpointed block), the allocator's fragmentation and the CUDA
context are left out; docs/PERFORMANCE.md compares the two.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def measure_batches(a: argparse.Namespace) -> tuple[dict, dict[str, int]]:
    """--batches real batches through the counted forward pass -> (totals, saved bytes by phase)."""
    import torch

    from fovea.model import build_model
    from fovea.pipelines.batching import batch_cost
    from fovea.pipelines.loader import build_train_loader
    from fovea.platform.config import load_config
    from fovea.platform.profiling.saved_tensors import count_checkpoint_inputs, measure

    cfg = load_config("stage1_135m", [
        f"data.train_shards=['{a.shards}']", "data.text_ratio=0", f"data.batch_size={a.batch}",
        f"data.max_total_frames={a.budget}", "data.llm_tokens_per_frame=64", "data.num_workers=0", *a.overrides])
    torch.manual_seed(0)
    count_checkpoint_inputs()
    model = build_model(cfg.model).train()
    if a.compile:  # what the compiled regions keep is AOTAutograd's choice (training.compile)
        model.compile_blocks()
    n = frames = 0
    cost = 0.0
    saved: dict[str, int] = defaultdict(int)
    loader = iter(build_train_loader(cfg.data, rank=0, world_size=1, epoch=0, seed=0))
    for _, batch in zip(range(a.batches), loader):  # batches differ in their frame / text mix
        nf = batch["num_frames"]
        n, frames = n + int(nf.numel()), frames + int(nf.sum())
        cost += batch_cost(int(nf.sum()), int(nf.numel()), int(nf.max()), int(batch["input_ids"].shape[1]),
                           cfg.data.llm_tokens_per_frame)
        for k, v in measure(model, batch, lambda: torch.autocast("cpu", dtype=torch.bfloat16)).bytes.items():
            saved[k] += v
    totals = {"samples": n, "frames": frames, "budget_units": cost,
              "params": sum(p.numel() for p in model.parameters()),
              "checkpointing": cfg.model.gradient_checkpointing, "compiled": a.compile}
    return totals, saved


def report(a: argparse.Namespace, totals: dict, saved: dict[str, int]) -> None:
    n, frames, cost, params = totals["samples"], totals["frames"], totals["budget_units"], totals["params"]
    fixed = 16 * params  # fp32 parameter + gradient + AdamW exp_avg + exp_avg_sq
    total = sum(saved.values())
    print(f"{a.batches} batches: {n} samples, {frames} frames, {cost:.0f} budget units; "
          f"model.gradient_checkpointing={totals['checkpointing']}, {'compiled' if totals['compiled'] else 'eager'}")
    print(f"{'saved for backward':28s} {'MB':>9s} {'MB/unit':>8s} {'share':>6s}")
    for k, v in sorted(saved.items(), key=lambda kv: -kv[1]):
        print(f"{k:28s} {v / 2**20:9.1f} {v / cost / 2**20:8.2f} {v / total:6.1%}")
    print(f"{'total':28s} {total / 2**20:9.1f} {total / cost / 2**20:8.2f}")
    print(f"training state (16 B x {params / 1e6:.0f}M parameters): {fixed / 2**30:.2f} GB")
    if a.json:
        Path(a.json).write_text(json.dumps({"budget_units": cost, "samples": n, "frames": frames,
                                            "saved_bytes": dict(saved), "state_bytes": fixed}, indent=2))
    for u in (int(x) for x in a.project.split(",") if x):
        print(f"budget {u:5d} units: {u * total / cost / 2**30:6.1f} GB saved activations "
              f"+ {fixed / 2**30:.1f} GB state = {(u * total / cost + fixed) / 2**30:6.1f} GB (lower bound of the peak)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", required=True)
    ap.add_argument("--budget", type=int, default=96, help="data.max_total_frames of the measured batch")
    ap.add_argument("--batch", type=int, default=1024, help="data.batch_size (the sample cap)")
    ap.add_argument("--batches", type=int, default=4, help="measure this many batches (their mean per unit)")
    ap.add_argument("--project", default="1536,3072", help="budgets to project the step's memory to")
    ap.add_argument("--compile", action="store_true", help="compile the blocks first, as training.compile does "
                    "(AOTAutograd then picks what each compiled region saves; on CPU, inductor's CPU backend). "
                    "Needed for model.dino_recompute_gelu: eagerly, its selective checkpoint's cache is not counted")
    ap.add_argument("--json", default=None, help="also write the figures (bytes) to this file")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. model.gradient_checkpointing=dino")
    a = ap.parse_args()
    totals, saved = measure_batches(a)
    report(a, totals, saved)


if __name__ == "__main__":
    main()
