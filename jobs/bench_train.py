#!/usr/bin/env python
"""Stage-1 training throughput: Ray Train on 1..N GPUs, plus a naive baseline side by side.

    python jobs/make_bench_shards.py --out data/bench/ref --samples 4000
    python jobs/make_bench_shards.py --out data/bench/64  --samples 400 --dist 64
    python jobs/bench_train.py --shards 'data/bench/ref/train-*.tar' --gpus 1,2 --steps 60 \
        [--shards64 'data/bench/64/train-*.tar'] [--naive] [--batch 8] [--loader-workers 6]

Every configuration runs the real training loop (``fovea.platform.trainer.fit``: Ray
Train workers, the real loader over real shards, AdamW, clipping) and the figures are
read from the run's per-window metrics, skipping the first window (warm-up):

    samples/s, frames/s        medians over log windows, all ranks together
    data wait                  share of step time spent waiting for the next batch
    peak GPU memory            torch.cuda.max_memory_allocated on rank 0
    MFU                        model FLOPs/s / (GPUs x peak), FLOP model below

``--naive`` adds, on one GPU, the plain path the optimisations are measured against:
fp32 (no autocast), one DINOv2 call per frame, and no reuse of the patch K/V cache (the
fine pass re-runs the patch pass) -- see ``fovea.model.naive``.

FLOP model (forward, per sample; training = 3x forward: backward ~ 2x forward), with
D = DINO width, L = DINO layers, Np = 257 tokens, d/P = LLM width/non-embedding params:
    DINO patch pass / frame   L * Np * 24 D^2  +  L * 4 Np^2 D        (QKV+O+MLP, attention)
    query pass / frame        L * (24 D^2 + 4 Np D)  x 2 passes (coarse + fine)
    LLM                       2 P * (T + (T + S)) + attention 4 * n_layers * d * (T^2 + (T+S)^2) / 2
    lm_head                   2 d V S   (text positions only)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

H100_PEAK_BF16 = 989e12  # dense bf16, H100 SXM datasheet; ~790e12 measured here for a large GEMM


def flops_per_sample(frames: float, text: float, dino_cfg, llm_cfg) -> float:
    D, L, Np = dino_cfg.hidden_size, dino_cfg.num_hidden_layers, 257
    patch = L * Np * 24 * D * D + L * 4 * Np * Np * D
    query = 2 * L * (24 * D * D + 4 * Np * D)
    d, nl, V = llm_cfg.hidden_size, llm_cfg.num_hidden_layers, llm_cfg.vocab_size
    inter = llm_cfg.intermediate_size
    kv = d * llm_cfg.num_key_value_heads // llm_cfg.num_attention_heads
    per_tok = nl * 2 * (2 * d * d + 2 * d * kv + 3 * d * inter)  # q,o + k,v + gated MLP
    T, S = frames, text
    llm = per_tok * (T + T + S) + 4 * nl * d * (T * T + (T + S) ** 2) / 2
    head = 2 * d * V * S
    return 3.0 * (frames * (patch + query) + llm + head)


def run_ray(shards: str, gpus: int, steps: int, batch: int, loader_workers: int, name: str,
            runs: Path, extra: list[str]) -> dict:
    from fovea.platform.config import load_config
    from fovea.platform.trainer import fit

    cfg = load_config("stage1_135m", [
        f"name={name}", f"runs_dir={runs}", f"data.train_shards=['{shards}']", "data.val_shards=[]",
        "data.text_shards=[]", "data.text_ratio=0", f"data.batch_size={batch}",
        f"data.num_workers={loader_workers}", "data.shuffle_buffer=256", "training.grad_accum=1",
        f"training.max_steps={steps}", "training.log_every=10", f"training.checkpoint_every={10 * steps}",
        f"training.diagnostics_every={10 * steps}", "eval.every_steps=0", "tracking.enabled=false",
        f"cluster.num_workers={gpus}", "cluster.max_failures=0", "cluster.cpus_per_worker=1", *extra])
    t0 = time.time()
    fit(cfg)
    rows = [json.loads(x) for x in (runs / "ray" / name / "metrics.jsonl").read_text().splitlines()]
    rows = rows[1:-1] if len(rows) > 2 else rows  # drop warm-up and the checkpointing window
    med = lambda k: statistics.median(r[k] for r in rows if k in r) if any(k in r for r in rows) else float("nan")  # noqa: E731
    return {"samples_per_s": med("samples_per_s"), "frames_per_s": med("frames_per_s"),
            "data_wait": med("data_wait_frac"), "gpu_mem_gb": max((r.get("gpu_mem_gb", 0) for r in rows), default=0),
            "wall_s": time.time() - t0, "windows": len(rows)}


def run_inprocess(shards: str, steps: int, batch: int, loader_workers: int, naive: bool) -> dict:
    """One GPU, no Ray: the naive baseline and the same-loop optimised path for the ratio."""
    import contextlib

    import torch

    from fovea.model import build_model
    from fovea.model.naive import naive_encoder
    from fovea.pipelines.loader import build_train_loader
    from fovea.platform.config import load_config
    from fovea.platform.optim import build_optimizer

    cfg = load_config("stage1_135m", [f"data.train_shards=['{shards}']", "data.text_ratio=0",
                                      f"data.batch_size={batch}", f"data.num_workers={loader_workers}",
                                      "data.shuffle_buffer=256"])
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(cfg.model).to(dev)
    if naive:
        naive_encoder(model)  # fovea.model.naive
    opt = build_optimizer(model, cfg.training, dev)
    auto = contextlib.nullcontext if naive else (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
    it = iter(build_train_loader(cfg.data, rank=0, world_size=1, epoch=0, seed=0))
    times, samples, frames = [], 0, 0
    for s in range(steps):
        b = {k: (v.to(dev, non_blocking=True) if torch.is_tensor(v) else v) for k, v in next(it).items()}
        torch.cuda.synchronize()
        t = time.perf_counter()
        with auto():
            out = model(**{k: b[k] for k in ("frames", "frame_mask", "input_ids", "attention_mask", "loss_mask")},
                        mode="coarse_fine", compute_coarse=False)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if s >= 3:
            times.append(time.perf_counter() - t)
            samples += b["input_ids"].shape[0]
            frames += int(b["num_frames"].sum())
    tot = sum(times)
    return {"samples_per_s": samples / tot, "frames_per_s": frames / tot,
            "gpu_mem_gb": torch.cuda.max_memory_allocated() / 2**30, "step_ms_median": 1000 * statistics.median(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", required=True)
    ap.add_argument("--shards64", default=None)
    ap.add_argument("--gpus", default="1,2")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--loader-workers", type=int, default=6)
    ap.add_argument("--naive", action="store_true")
    ap.add_argument("--runs", default="runs/bench")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("overrides", nargs="*", help="extra config overrides for the Ray runs")
    a = ap.parse_args()

    import torch
    from transformers import AutoConfig

    from fovea.platform.cluster import connect
    from fovea.platform.model_store import resolve_model_ref

    dino = AutoConfig.from_pretrained(resolve_model_ref("facebook/dinov2-small"))
    llm = AutoConfig.from_pretrained(resolve_model_ref("HuggingFaceTB/SmolLM2-135M-Instruct"))
    manifest = json.loads((Path(a.shards.split("*")[0]).parent / "bench_manifest.json").read_text()) \
        if (Path(a.shards.split("*")[0]).parent / "bench_manifest.json").exists() else {"mean_frames": 7.0}
    runs = Path(a.runs) / time.strftime("%Y%m%d-%H%M%S")
    connect()
    results = []
    sets = [("ref", a.shards, manifest.get("mean_frames", 7.0))]
    if a.shards64:
        sets.append(("64", a.shards64, 64.0))
    for label, shards, mean_frames in sets:
        fl = flops_per_sample(mean_frames, 64 + 30, dino, llm)
        for g in [int(x) for x in a.gpus.split(",")]:
            r = run_ray(shards, g, a.steps, a.batch, a.loader_workers, f"bench-{label}-{g}gpu", runs, a.overrides)
            r.update(dist=label, gpus=g, path="ray+bf16", mfu=r["samples_per_s"] * fl / (g * H100_PEAK_BF16))
            results.append(r)
            print(json.dumps(r), flush=True)
        if a.naive and label == "ref":
            for naive in (False, True):
                r = run_inprocess(shards, min(a.steps, 30), a.batch, a.loader_workers, naive)
                r.update(dist=label, gpus=1, path="naive fp32" if naive else "same loop, bf16 + cache",
                         mfu=r["samples_per_s"] * fl / H100_PEAK_BF16)
                results.append(r)
                print(json.dumps(r), flush=True)
    print(f"\n{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}, batch {a.batch}/GPU")
    print(f"{'dist':5s} {'gpus':>4s} {'path':26s} {'samples/s':>10s} {'frames/s':>9s} {'wait':>6s} "
          f"{'mem GB':>7s} {'MFU':>6s}")
    for r in results:
        print(f"{r['dist']:5s} {r['gpus']:4d} {r['path']:26s} {r['samples_per_s']:10.1f} {r['frames_per_s']:9.1f} "
              f"{r.get('data_wait', float('nan')):6.1%} {r['gpu_mem_gb']:7.1f} {r['mfu']:6.1%}")
    one = next((r for r in results if r["gpus"] == 1 and r["path"] == "ray+bf16" and r["dist"] == "ref"), None)
    two = next((r for r in results if r["gpus"] == 2 and r["path"] == "ray+bf16" and r["dist"] == "ref"), None)
    if one and two:
        print(f"scaling 1 -> 2 GPUs: {two['samples_per_s'] / one['samples_per_s']:.2f}x")
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
