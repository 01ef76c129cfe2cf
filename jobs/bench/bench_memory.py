#!/usr/bin/env python
"""Activation memory of a stage-1 training step, by component -- on CPU, no GPU needed.

    python jobs/bench/make_bench_shards.py --out data/bench/ref --samples 400
    python jobs/bench/bench_memory.py --shards 'data/bench/ref/train-*.tar' [--budget 96] \\
        [--project 1536,3072] [model.gradient_checkpointing=dino ...]

Runs the forward pass of a few real token-budget batches (the stage1_135m model, bf16
autocast as on a GPU, ``data.llm_tokens_per_frame=64``) and counts every tensor autograd saves
for backward (``torch.autograd.graph.saved_tensors_hooks``), once per storage and never a
parameter, under the phase that saved it: the DINOv2 patch pass, the query passes, the LLM
passes, the LM head and loss. Inputs held by a gradient-checkpointed region
(``torch.utils.checkpoint``) count too: they stay alive until backward. The batches' cost in
budget units (``pipelines.loader.batch_cost``: frames + padded LLM rows / 64) scales every
term, so the step's saved activations at a budget of U units are projected as U x (bytes per
unit), plus the fixed training state: fp32 parameters, gradients and AdamW's two moments
(16 bytes a parameter).

What it leaves out: transient buffers of backward (the largest: the gradient of the logits,
a recomputed checkpointed block), the allocator's fragmentation, CUDA context. So the
projection is a lower bound of the GPU's peak; docs/measurements compares the two.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
from collections import defaultdict
from pathlib import Path


class SavedTensorLedger:
    """Bytes autograd saves for backward, by phase, once per storage, parameters excluded."""

    def __init__(self, model):
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.seen: set[int] = set()
        self.bytes: dict[str, int] = defaultdict(int)
        self.phase: list[str] = ["other"]

    def record(self, t) -> None:
        import torch

        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        ptr = t.untyped_storage().data_ptr()
        if ptr in self.params or ptr in self.seen or ptr == 0:
            return
        self.seen.add(ptr)
        self.bytes[self.phase[-1]] += t.untyped_storage().nbytes()

    def pack(self, t):
        self.record(t)
        return t

    @contextlib.contextmanager
    def in_phase(self, name: str):
        self.phase.append(name)
        try:
            yield
        finally:
            self.phase.pop()

    def wrap(self, obj, method: str, name: str) -> None:
        """Calls of ``obj.method`` count under phase ``name`` (numbered per call when '#')."""
        fn, calls = getattr(obj, method), [0]

        @functools.wraps(fn)
        def wrapped(*a, **kw):
            calls[0] += 1
            with self.in_phase(name.replace("#", str(calls[0]))):
                return fn(*a, **kw)

        setattr(obj, method, wrapped)


_LEDGER: list[SavedTensorLedger] = []  # the ledger of the measure() in progress


def count_checkpoint_inputs() -> None:
    """Make ``torch.utils.checkpoint.checkpoint`` count the inputs a checkpointed region keeps
    alive until backward. Call before building the model: transformers binds its checkpoint
    function when gradient checkpointing is enabled (``model.gradient_checkpointing=true``)."""
    import torch.utils.checkpoint as ckpt
    import transformers.modeling_utils as mu

    inner = ckpt.checkpoint

    @functools.wraps(inner)
    def counting_checkpoint(fn, *args, **kw):
        for a in args if _LEDGER else ():
            _LEDGER[-1].record(a)
        return inner(fn, *args, **kw)

    ckpt.checkpoint = mu.checkpoint = counting_checkpoint


def measure(model, batch: dict, autocast) -> SavedTensorLedger:
    """One forward pass (coarse + fine, as in training) with every saved tensor counted."""
    import torch

    from fovea.pipelines.batch import model_inputs

    led = SavedTensorLedger(model)
    led.wrap(model.encoder, "encode_patches", "DINOv2 patch pass")
    led.wrap(model.encoder, "query_pass", "query pass #")
    led.wrap(model, "decoder", "LLM pass #")
    led.wrap(model, "text_head", "LM head + loss")
    _LEDGER.append(led)
    try:
        with torch.autograd.graph.saved_tensors_hooks(led.pack, lambda t: t), autocast():
            out = model(**model_inputs(batch), mode="coarse_fine", compute_coarse=False, return_logits=False)
        led.record(out["loss"])
    finally:
        _LEDGER.pop()
    return led


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", required=True)
    ap.add_argument("--budget", type=int, default=96, help="data.max_total_frames of the measured batch")
    ap.add_argument("--batch", type=int, default=1024, help="data.batch_size (the sample cap)")
    ap.add_argument("--batches", type=int, default=4, help="measure this many batches (their mean per unit)")
    ap.add_argument("--project", default="1536,3072", help="budgets to project the step's memory to")
    ap.add_argument("--json", default=None, help="also write the figures (bytes) to this file")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. model.gradient_checkpointing=dino")
    a = ap.parse_args()

    import torch

    from fovea.model import build_model
    from fovea.pipelines.loader import batch_cost, build_train_loader
    from fovea.platform.config import load_config

    cfg = load_config("stage1_135m", [
        f"data.train_shards=['{a.shards}']", "data.text_ratio=0", f"data.batch_size={a.batch}",
        f"data.max_total_frames={a.budget}", "data.llm_tokens_per_frame=64", "data.num_workers=0", *a.overrides])
    torch.manual_seed(0)
    count_checkpoint_inputs()
    model = build_model(cfg.model).train()
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

    params = sum(p.numel() for p in model.parameters())
    fixed = 16 * params  # fp32 parameter + gradient + AdamW exp_avg + exp_avg_sq
    total = sum(saved.values())
    print(f"{a.batches} batches: {n} samples, {frames} frames, {cost:.0f} budget units; "
          f"model.gradient_checkpointing={cfg.model.gradient_checkpointing}")
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


if __name__ == "__main__":
    main()
