#!/usr/bin/env python
"""Stage-1 training throughput (135M + DINOv2-small, full fine-tuning): a side-by-side
matrix on one GPU, then the real job on 1..N GPUs through Ray Train.

    python jobs/bench/make_bench_shards.py --out data/bench/ref --samples 3000
    python jobs/bench/make_bench_shards.py --out data/bench/64  --samples 200 --dist 64
    python jobs/bench/bench_train.py --shards 'data/bench/ref/train-*.tar' [--shards64 'data/bench/64/train-*.tar'] \\
        [--matrix] [--gpus 1,2] [--steps 300] [--batch 64] [--frames-per-batch 768] [--compile]

``--matrix`` (one GPU, one process, the same real loader over the same shards) times a
training step (forward, backward, clip, fused AdamW) for each path below, so every figure
is a ratio measured side by side:

    plain        fp32, one DINOv2 call per frame, patch pass re-run for the fine pass
                 (no K/V reuse: fovea.model.naive), batch 16, padded float frames
    eager-b16    bf16 autocast, batched patch pass + K/V reuse, batch 16, padded float frames
                 (the training path before this benchmark's optimisations)
    eager-b64    + token-budget batches of up to 64 samples / --frames-per-batch frames,
                 packed uint8 frames normalised on the GPU
    compiled-b64 + regional torch.compile (FoveatedVLM.compile_blocks)
    compiled-b128[-ckpt], compiled-b256-ckpt
                 larger batches (frame budget scaled with them): a step is bound by the host
                 (kernel launches, ~13k a step, the same at any batch size), so more work per
                 step raises samples/s; -ckpt recomputes DINOv2's patch blocks in backward
                 (model.gradient_checkpointing=dino) so that 3072 frames fit in memory

Then, for each --gpus entry, ``jobs/stage1.py --config stage1_135m`` itself runs --steps
steps (Ray Train TorchTrainer, DDP over NCCL, the real loader, checkpoints), and the
figures are rates over its log windows (one round of --readers batches: total samples / total time; the
per-window median is kept too), the first two windows skipped (warm-up, compilation), and
so are windows that hold profiled steps (``training.profile_steps=[a,b]`` among the overrides:
the profiler slows its steps several-fold):

    samples/s, frames/s   all ranks together
    data wait             share of the window spent waiting for the next batch
    peak GPU memory       torch.cuda.max_memory_allocated on rank 0
    MFU                   model FLOPs/s / (GPUs x 989 TFLOP/s dense bf16, H100 SXM datasheet)
    steady_*              the windows with no compilation and no epoch change; steady_model_tflops
                          weighs each window's samples by the FLOP model at its own frames a
                          sample, so the 1 -> 2 GPU ratio of it compares equal work

FLOP model (forward; training = 3x forward, backward ~ 2x), with D = DINO width, L = DINO
layers, Np = 257 tokens, d = LLM width, nl = LLM layers, kv = K/V width, I = MLP width:
    DINO patch pass / frame   L * (24 Np D^2 + 4 Np^2 D)        (QKV+O+MLP, attention)
    query passes / frame      2 * L * (24 D^2 + 4 Np D)          (coarse + fine)
    LLM / sample              per_tok * (T + (T + S)) + attention 4 nl d (T^2 + (T+S)^2) / 2
                              per_tok = nl * 2 * (2 d^2 + 2 d kv + 3 d I)  (coarse: T visual tokens)
    lm_head / sample          2 d V S  (text positions only)
T is the measured mean of real frames per sample, S = 94 text tokens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

H100_PEAK_BF16 = 989e12  # dense bf16, H100 SXM datasheet; ~790e12 measured here for a large GEMM
TEXT_TOKENS = 94  # chat template + ~64 caption tokens of make_bench_shards.py
REPO = Path(__file__).resolve().parents[1]
# Loader readers of the stage1 runs, all ranks together (--readers): each GPU gets READERS / GPUs
# loader workers (1 GPU: 16, 2 GPUs: 8). The readers take turns, one batch each, and reader r's
# batches do not depend on how the readers are split into ranks; a log window is one round of
# them (16 steps on 1 GPU, 8 on 2), so window k of a 1-GPU and of a 2-GPU run hold the same
# batches and the ratio of their times is scaling on equal work (``matched_windows``).
READERS = 16


def flops_per_sample(frames: float, text: float, dino_cfg, llm_cfg) -> float:
    """Training FLOPs (3x forward) of one sample with ``frames`` real frames and ``text`` tokens."""
    D, L, Np = dino_cfg.hidden_size, dino_cfg.num_hidden_layers, 257
    patch = L * (24 * Np * D * D + 4 * Np * Np * D)
    query = 2 * L * (24 * D * D + 4 * Np * D)
    d, nl, V = llm_cfg.hidden_size, llm_cfg.num_hidden_layers, llm_cfg.vocab_size
    inter = llm_cfg.intermediate_size
    kv = d * llm_cfg.num_key_value_heads // llm_cfg.num_attention_heads
    per_tok = nl * 2 * (2 * d * d + 2 * d * kv + 3 * d * inter)  # q,o + k,v + gated MLP
    T, S = frames, text
    llm = per_tok * (T + T + S) + 4 * nl * d * (T * T + (T + S) ** 2) / 2
    head = 2 * d * V * S
    return 3.0 * (frames * (patch + query) + llm + head)


# -- the side-by-side matrix (one GPU, in process) -----------------------------------------

@dataclass(frozen=True)
class MatrixPath:
    batch: int  # samples per batch (at most, with a frame budget)
    frames: int | None = None  # real-frame budget per batch (token-budget batching); None = fixed batches
    packed: bool = True  # uint8 real frames only, normalised on the GPU
    bf16: bool = True
    compiled: bool = False  # regional torch.compile
    naive: bool = False  # fovea.model.naive: per-frame DINOv2, no K/V reuse
    ckpt_dino: bool = False  # recompute DINOv2 patch blocks in backward (activation memory)


MATRIX = {  # frame budgets: 768 per 64 samples (~1.7x the reference mean of ~7 frames a sample)
    "plain": MatrixPath(16, packed=False, bf16=False, naive=True),
    "eager-b16": MatrixPath(16, packed=False),
    "eager-b64": MatrixPath(64, 768),
    "compiled-b64": MatrixPath(64, 768, compiled=True),
    "compiled-b128": MatrixPath(128, 1536, compiled=True),
    "compiled-b128-ckpt": MatrixPath(128, 1536, compiled=True, ckpt_dino=True),
    "compiled-b256-ckpt": MatrixPath(256, 3072, compiled=True, ckpt_dino=True),
}


def endless_batches(build_train_loader, data_cfg):
    """The training loader's batches, epoch after epoch (large batches outrun small shard sets)."""
    epoch = 0
    while True:
        n = 0
        for batch in build_train_loader(data_cfg, rank=0, world_size=1, epoch=epoch, seed=0):
            n += 1
            yield batch
        if n == 0:
            raise RuntimeError(f"no batches in {data_cfg.train_shards}")
        epoch += 1


def bench_setup(shards: str, batch: int, frames_cap: int | None, loader_workers: int, overrides: list[str], *,
                packed: bool = True, compiled: bool = False, naive: bool = False):
    """(model, AdamW, endless batch iterator, device) for timing stage-1 training steps in one
    process: the stage1_135m config over ``shards``, no text batches, the training CUDA settings.
    Shared by the matrix below and jobs/bench/profile_train_step.py."""
    import torch

    from fovea.model import build_model
    from fovea.model.naive import naive_encoder
    from fovea.pipelines.loader import build_train_loader
    from fovea.platform.config import load_config
    from fovea.platform.train.optim import build_optimizer
    from fovea.platform.train.loop import configure_cuda_backends

    cfg = load_config("stage1_135m", [
        f"data.train_shards=['{shards}']", "data.text_ratio=0", f"data.batch_size={batch}",
        f"data.max_total_frames={frames_cap if frames_cap else 'null'}", f"data.packed_frames={str(packed).lower()}",
        f"data.num_workers={loader_workers}", f"data.shuffle_buffer={max(256, 4 * batch)}", *overrides])
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CPU: a smoke test only
    configure_cuda_backends()  # TF32, no cuDNN SDPA (see its docstring)
    torch.manual_seed(0)
    model = build_model(cfg.model).to(dev).train()
    if naive:
        naive_encoder(model)  # fovea.model.naive
    if compiled:
        model.compile_blocks()
    return model, build_optimizer(model, cfg.training), endless_batches(build_train_loader, cfg.data), dev


def train_step(model, optimizer, host: dict, dev, autocast) -> None:
    """One training step on a loader batch: forward (fine loss), backward, clip, AdamW."""
    import torch

    from fovea.pipelines.batch import model_inputs

    b = {k: v.to(dev, non_blocking=True) for k, v in model_inputs(host).items()}
    with autocast():
        out = model(**b, mode="coarse_fine", compute_coarse=False, return_logits=False)
    out["loss"].backward()
    float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))  # the training loop's sync
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def run_matrix_entry(name: str, shards: str, steps: int, budget: int, loader_workers: int,
                     extra: list[str]) -> dict:
    import torch

    p = MATRIX[name]
    cap = None if p.frames is None else budget * p.frames // 768  # --frames-per-batch scales them
    ckpt = ["model.gradient_checkpointing=dino"] if p.ckpt_dino else []
    model, opt, it, dev = bench_setup(shards, p.batch, cap, loader_workers, ckpt + list(extra), packed=p.packed,
                                      compiled=p.compiled, naive=p.naive)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    auto = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if p.bf16 else contextlib.nullcontext
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warm = 3 if not p.compiled else 6  # compilation (and dynamic-shape recompiles) happen here
    times, waits, samples, frames = [], [], 0, 0
    t_prev = None
    for s in range(warm + steps):
        t0 = time.perf_counter()
        host = next(it)
        wait = time.perf_counter() - t0
        train_step(model, opt, host, dev, auto)
        sync()
        t1 = time.perf_counter()
        if s >= warm:  # step time = from the previous step's end, so data wait is included
            times.append(t1 - t_prev)
            waits.append(wait)
            samples += int(host["input_ids"].shape[0])
            frames += int(host["num_frames"].sum())
        t_prev = t1
    tot = sum(times)
    return {"path": name, "gpus": 1, "samples_per_s": samples / tot, "frames_per_s": frames / tot,
            "data_wait": sum(waits) / tot,
            "gpu_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else 0.0,
            "step_ms_median": 1000 * statistics.median(times), "batch": p.batch, "frames_budget": cap,
            "samples_per_step": samples / len(times), "steps": steps}


# -- the real job on 1..N GPUs -------------------------------------------------------------

def profiled_steps(overrides: list[str]) -> tuple[int, int] | None:
    """``training.profile_steps=[a,b]`` among the overrides -> (a, b)."""
    for o in overrides:
        if o.replace(" ", "").startswith("training.profile_steps=["):
            a, b = o.split("[", 1)[1].rstrip("]").split(",")
            return int(a), int(b)
    return None


def run_stage1(shards: str, gpus: int, steps: int, batch: int, budget: int, readers: int, compiled: bool,
               ckpt_dino: bool, name: str, runs: Path, extra: list[str], log_to: Path | None,
               flops: Callable[[float], float] | None = None) -> dict:
    """``python jobs/stage1.py --config stage1_135m ...`` on ``gpus`` Ray Train workers
    (``flops``: see ``summarize_windows``).

    ``readers`` loader workers in all (``READERS``); a log window is one round of them. The
    no-grad coarse CE (a diagnostic when lambda_coarse = 0) runs on every rank every 8th step
    instead of the config's every step: the same share of batches on any number of GPUs."""
    workers = loader_workers_per_gpu(readers, gpus)
    overrides = [
        "model.coarse_loss_every=8",
        f"model.gradient_checkpointing={'dino' if ckpt_dino else 'false'}",
        f"name={name}", f"runs_dir={runs}", f"data.train_shards=['{shards}']", "data.val_shards=[]",
        "data.text_shards=[]", "data.text_ratio=0", f"data.batch_size={batch}", f"data.max_total_frames={budget}",
        f"data.num_workers={workers}", "data.shuffle_buffer=256", "training.grad_accum=1",
        f"training.max_steps={steps}", f"training.log_every={workers}",
        f"training.checkpoint_every={max(steps // 2, 1)}",
        f"training.diagnostics_every={10 * steps}", "eval.every_steps=0", f"training.compile={str(compiled).lower()}",
        f"cluster.num_workers={gpus}", "cluster.max_failures=0", "cluster.cpus_per_worker=1", *extra]
    t0 = time.time()
    cmd = [sys.executable, "-u", str(REPO / "jobs" / "stage1.py"), "--config", "stage1_135m", *overrides]
    with open(log_to or os.devnull, "a") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    mfile = runs / "ray" / name / "metrics.jsonl"
    rows = [json.loads(x) for x in mfile.read_text().splitlines()] if mfile.exists() else []
    if rc != 0 or not rows:
        raise RuntimeError(f"jobs/stage1.py failed (exit {rc}, {len(rows)} log windows); see {log_to}")
    return {"path": "jobs/stage1.py" + (" +compile" if compiled else "") + (" +ckpt" if ckpt_dino else ""),
            "gpus": gpus, **summarize_windows(rows, profiled_steps(extra), flops),
            "wall_s": time.time() - t0, "steps": steps, "batch": batch}


def loader_workers_per_gpu(readers: int, gpus: int) -> int:
    """``data.num_workers`` of each of ``gpus`` ranks for ``readers`` loader readers in all."""
    if readers < gpus or readers % gpus:
        raise ValueError(f"--readers {readers}: must be a multiple of the GPU count {gpus}")
    return readers // gpus


def summarize_windows(rows: list[dict], profiled: tuple[int, int] | None = None,
                      flops: Callable[[float], float] | None = None) -> dict:
    """The figures of one run from its ``metrics.jsonl`` rows (one per log window).

    Timed: every window after the first two (warm-up, compilation), except windows that hold
    profiled steps. Rates are time-weighted over the timed span (token-budget batches hold
    12..1000 samples, so one window's samples/s swings with its mix). ``steady_*``: the timed
    windows with no (re)compilation in them and no epoch change during them -- a benchmark set
    of 30k samples ends an epoch every ~45 steps on 2 GPUs, and each end brings the readers'
    short tail batches (rank imbalance) and, once per process, new 0/1-size shapes to compile;
    a real epoch (1M samples) has thousands of steps.

    ``flops``: training FLOPs of one sample with a given mean frame count (``flops_per_sample``);
    with it, ``steady_model_tflops`` is the steady windows' model TFLOP/s, each window's rate
    taken at its own mean frames a sample. Two runs' windows hold different mixes (6.3 and 7.0
    frames a sample, session 9), so their samples/s and frames/s ratios disagree; the FLOP rate
    weighs each sample by its work (the mean-T approximation ignores the small T^2 attention spread)."""
    rows = [r for r in rows if "samples_per_s" in r]
    kept = [r for prev, r in zip([{"step": 0}] + rows, rows)  # a window covers steps prev+1 .. its step
            if not (profiled and prev["step"] < profiled[1] and r["step"] >= profiled[0])]
    timed = kept[2:] or kept
    steady = [r for prev, r in zip(timed[:1] + timed, timed)
              if r.get("compile_s_max", 0.0) == 0 and r.get("epoch") == prev.get("epoch")]
    med = lambda k: statistics.median(r[k] for r in timed if k in r) if any(k in r for r in timed) else float("nan")  # noqa: E731

    def rate(ws: list[dict], k: str | Callable[[dict], float]) -> float:
        span = sum(r["window_s"] for r in ws)
        value = k if callable(k) else (lambda r: r[k])
        return sum(value(r) * r["window_s"] for r in ws) / span if span else float("nan")

    def model_tflops(r: dict) -> float:  # a window's model TFLOP/s, at its own frames a sample
        sps = r["samples_per_s"]
        return sps * flops(r["frames_per_s"] / sps) / 1e12 if sps else 0.0

    # whole epochs after the first (which holds start-up and compilation): the same samples on
    # any number of GPUs, so the ratio of two runs' times for one epoch is scaling on equal work
    # (an epoch that holds profiled steps is slower by the profiler's cost)
    epoch_s = {int(r["epoch"]) - 1: r["epoch_s"] for r in rows if "epoch_s" in r and r["epoch"] >= 2}
    # torch.compile's time inside each of those epochs (a new tail shape recompiles once a process)
    epoch_compile_s = {int(r["epoch"]) - 1: r["epoch_compile_s"] for r in rows
                       if "epoch_compile_s" in r and r["epoch"] >= 2}
    steady_steps = {r["step"] for r in steady}
    log_windows = [{"step": r["step"], "s": r["window_s"], "samples": r["samples_per_s"] * r["window_s"],
                    "frames": r["frames_per_s"] * r["window_s"], "steady": r["step"] in steady_steps} for r in kept]
    return {"samples_per_s": rate(timed, "samples_per_s"), "frames_per_s": rate(timed, "frames_per_s"),
            "log_windows": log_windows,
            "epoch_s": epoch_s, "epoch_compile_s": epoch_compile_s,
            "samples_per_s_window_median": med("samples_per_s"),
            "steady_samples_per_s": rate(steady, "samples_per_s"), "steady_frames_per_s": rate(steady, "frames_per_s"),
            "steady_windows": len(steady),
            **({"steady_model_tflops": rate(steady, model_tflops)} if flops is not None else {}),
            "data_wait": med("data_wait_frac"), "data_wait_max": med("data_wait_frac_max"),
            "compile_s": sum(r.get("compile_s_max", 0.0) for r in timed),
            "rank_cost_imbalance": med("rank_cost_imbalance"),
            "gpu_mem_gb": max((r.get("gpu_mem_gb", 0) for r in timed), default=0),
            "windows": len(timed), "profiled_windows_left_out": len(rows) - len(kept),
            "final_loss": timed[-1].get("loss") if timed else float("nan")}


def matched_windows(one: list[dict], two: list[dict]) -> dict | None:
    """Equal-work scaling from two runs' ``log_windows``: 1-GPU window (2p, 2s] against 2-GPU
    window (p, s], both steady. With equal readers they hold the same batches (see
    ``READERS``); ``frames_ratio`` (2-GPU frames / 1-GPU frames of each pair) shows
    whether they did: ranks end their epochs a batch or so apart, so pairs near an epoch end
    may differ. -> None when no pair lines up (runs with other window lengths)."""
    by_span = {}
    for prev, w in zip([{"step": 0}] + one, one):
        by_span[(prev["step"], w["step"])] = w
    pairs = []
    for prev, w in zip([{"step": 0}] + two, two):
        m = by_span.get((2 * prev["step"], 2 * w["step"]))
        if m is not None and m["steady"] and w["steady"] and m["frames"] and m["samples"]:
            pairs.append((m, w))
    if not pairs:
        return None
    work = [w["frames"] / m["frames"] for m, w in pairs]
    t1, t2 = sum(m["s"] for m, _ in pairs), sum(w["s"] for _, w in pairs)
    f1, f2 = sum(m["frames"] for m, _ in pairs), sum(w["frames"] for _, w in pairs)
    s1, s2 = sum(m["samples"] for m, _ in pairs), sum(w["samples"] for _, w in pairs)
    return {"pairs": len(pairs), "one_s": t1, "two_s": t2, "frames_ratio_min": min(work),
            "frames_ratio_max": max(work), "work_ratio_frames": f2 / f1, "work_ratio_samples": s2 / s1,
            "scaling": (f2 / t2) / (f1 / t1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", help="the reference-distribution shards (required unless --summarize)")
    ap.add_argument("--summarize", nargs="+", metavar="GPUS:METRICS_JSONL", default=None,
                    help="only summarise runs already made (also ones cut off before the end) from their "
                         "metrics.jsonl, e.g. 1:runs/bench/.../bench-ref-1gpu/metrics.jsonl 2:...")
    ap.add_argument("--shards64", default=None, help="the fixed 64-frame worst case (1 GPU, stage1 job)")
    ap.add_argument("--matrix", action="store_true", help="the 1-GPU side-by-side paths first")
    ap.add_argument("--matrix-steps", type=int, default=20)
    ap.add_argument("--paths", default=",".join(MATRIX), help="matrix entries to run (comma-separated)")
    ap.add_argument("--gpus", default="1,2", help="stage1 job runs, e.g. 1,2 ('' = none)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--steps64", type=int, default=60)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--frames-per-batch", type=int, default=768,
                    help="data.max_total_frames of the stage1 runs; the matrix budgets scale by it / 768")
    ap.add_argument("--compile", choices=("on", "off", "auto"), default="auto",
                    help="training.compile in the stage1 runs; auto: on when the matrix found it faster")
    ap.add_argument("--ckpt-dino", action="store_true",
                    help="stage1 runs: model.gradient_checkpointing=dino (large frame budgets)")
    ap.add_argument("--loader-workers", type=int, default=8, help="DataLoader workers of the matrix's one process")
    ap.add_argument("--readers", type=int, default=READERS,
                    help="stage1 runs: loader workers of all GPUs together (each GPU gets READERS / GPUs), so that "
                         "runs on any GPU count read the same batches")
    ap.add_argument("--runs", default="runs/bench")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--log", default=None, help="append the stage1 jobs' output here")
    ap.add_argument("overrides", nargs="*", help="extra config overrides (matrix and stage1 runs)")
    a = ap.parse_args()
    if a.summarize:  # "--summarize 1:A 2:B key=value": the list also takes the overrides after it
        a.overrides += [x for x in a.summarize if "=" in x and not x.partition(":")[0].isdigit()]
        a.summarize = [x for x in a.summarize if x not in a.overrides]
    if not a.shards and not a.summarize:
        ap.error("--shards is required (or --summarize)")
    if not a.summarize:  # before any run starts
        for g in [int(x) for x in a.gpus.split(",") if x]:
            try:
                loader_workers_per_gpu(a.readers, g)
            except ValueError as e:
                ap.error(str(e))

    import torch
    from transformers import AutoConfig

    from fovea.model.store import resolve_model_ref

    dino = AutoConfig.from_pretrained(resolve_model_ref("facebook/dinov2-small"))
    llm = AutoConfig.from_pretrained(resolve_model_ref("HuggingFaceTB/SmolLM2-135M-Instruct"))
    runs = Path(a.runs).resolve() / time.strftime("%Y%m%d-%H%M%S")
    results: list[dict] = []

    def sample_flops(mean_frames: float) -> float:
        return flops_per_sample(mean_frames, TEXT_TOKENS, dino, llm)

    def add(r: dict, dist: str) -> None:
        mean_frames = r["frames_per_s"] / r["samples_per_s"]
        r.update(dist=dist, mean_frames=mean_frames,
                 mfu=r["samples_per_s"] * sample_flops(mean_frames) / (r["gpus"] * H100_PEAK_BF16))
        if "steady_model_tflops" in r:
            r["steady_mfu"] = r["steady_model_tflops"] * 1e12 / (r["gpus"] * H100_PEAK_BF16)
        results.append(r)
        print(json.dumps(r), flush=True)
        if a.out:
            Path(a.out).write_text(json.dumps(results, indent=2))

    batch_given = any(x == "--batch" or x.startswith("--batch=") for x in sys.argv[1:])  # metrics do not hold it
    for item in a.summarize or []:
        gpus, _, path = item.partition(":")
        if not gpus.isdigit() or not Path(path).is_file():
            ap.error(f"--summarize {item!r}: expected GPUS:METRICS_JSONL with an existing file")
        rows = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
        add({"path": "jobs/stage1.py metrics", "gpus": int(gpus), "batch": a.batch if batch_given else None,
             **summarize_windows(rows, profiled_steps(a.overrides), sample_flops)}, "ref")
    if a.summarize:
        a.gpus, a.matrix = "", False
    if a.matrix:
        for name in a.paths.split(","):
            if name not in MATRIX:
                ap.error(f"--paths: unknown entry {name!r}; expected some of {', '.join(MATRIX)}")
            steps = max(4, a.matrix_steps // 3) if name == "plain" else a.matrix_steps
            try:
                add(run_matrix_entry(name, a.shards, steps, a.frames_per_batch, a.loader_workers, a.overrides), "ref")
            except Exception as e:  # one failing path must not lose the others' figures
                print(f"matrix {name}: FAILED {type(e).__name__}: {e}", flush=True)
            torch.cuda.empty_cache()
    by_path = {r["path"]: r["samples_per_s"] for r in results}
    compiled = a.compile == "on" or (a.compile == "auto" and
                                     by_path.get("compiled-b64", 0) > by_path.get("eager-b64", float("inf")))
    if a.gpus:
        print(f"stage1 runs: training.compile={compiled}", flush=True)
    sets = [("ref", a.shards, a.steps)] + ([("64", a.shards64, a.steps64)] if a.shards64 else [])
    for label, shards, steps in sets:
        for g in [int(x) for x in a.gpus.split(",") if x]:
            if label == "64" and g > 1:
                continue
            try:
                add(run_stage1(shards, g, steps, a.batch, a.frames_per_batch, a.readers, compiled,
                               a.ckpt_dino, f"bench-{label}-{g}gpu", runs, a.overrides, Path(a.log) if a.log else None,
                               sample_flops), label)
            except Exception as e:
                print(f"stage1 {label} {g} GPU: FAILED {e}", flush=True)

    where = "summarised from metrics files" if a.summarize else (
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
    print(f"\n{where}")
    print(f"{'dist':5s} {'gpus':>4s} {'path':26s} {'batch':>5s} {'samples/s':>10s} {'frames/s':>9s} {'wait':>6s} "
          f"{'mem GB':>7s} {'MFU':>6s}")
    for r in results:
        batch = "-" if r["batch"] is None else str(r["batch"])
        print(f"{r['dist']:5s} {r['gpus']:4d} {r['path']:26s} {batch:>5s} {r['samples_per_s']:10.1f} "
              f"{r['frames_per_s']:9.1f} {r['data_wait']:6.1%} {r['gpu_mem_gb']:7.1f} {r['mfu']:6.1%}")
    base = next((r for r in results if r["path"] == "plain"), None)
    if base:
        for r in results:
            if r["gpus"] == 1 and r["dist"] == "ref":
                print(f"  {r['path']:26s} {r['samples_per_s'] / base['samples_per_s']:6.2f}x plain")
    one = next((r for r in results if r["gpus"] == 1 and r["path"].startswith("jobs/") and r["dist"] == "ref"), None)
    two = next((r for r in results if r["gpus"] == 2 and r["path"].startswith("jobs/") and r["dist"] == "ref"), None)
    if one and two:
        print(f"scaling 1 -> 2 GPUs: {two['samples_per_s'] / one['samples_per_s']:.2f}x samples/s, "
              f"{two['frames_per_s'] / one['frames_per_s']:.2f}x frames/s (timed span); steady windows "
              f"({one['steady_windows']} and {two['steady_windows']}): "
              f"{two['steady_samples_per_s'] / one['steady_samples_per_s']:.2f}x samples/s, "
              f"{two['steady_frames_per_s'] / one['steady_frames_per_s']:.2f}x frames/s, "
              f"{two['steady_model_tflops'] / one['steady_model_tflops']:.2f}x model FLOP/s "
              f"({one['steady_model_tflops']:.1f} and {two['steady_model_tflops']:.1f} TFLOP/s: each window's "
              f"mix through the FLOP model, so equal work)")
        m = matched_windows(one["log_windows"], two["log_windows"])
        if m:
            print(f"  matched windows (the same batches when the runs had equal readers): {m['pairs']} pairs, "
                  f"{m['one_s']:.1f} s on 1 GPU, {m['two_s']:.1f} s on 2; 2-GPU/1-GPU work "
                  f"{m['work_ratio_frames']:.3f} (frames), {m['work_ratio_samples']:.3f} (samples), per pair "
                  f"{m['frames_ratio_min']:.3f}-{m['frames_ratio_max']:.3f}: **{m['scaling']:.2f}x** frames/s")
        for e in sorted(set(one["epoch_s"]) & set(two["epoch_s"])):
            t1, t2 = one["epoch_s"][e], two["epoch_s"][e]
            c1, c2 = one["epoch_compile_s"].get(e), two["epoch_compile_s"].get(e)
            line = f"  epoch {e} (the same samples): {t1:.1f} s on 1 GPU, {t2:.1f} s on 2: {t1 / t2:.2f}x"
            if c1 is not None and c2 is not None and (c1 or c2):  # older runs did not record it
                line += f"; without the {c1:.1f} s and {c2:.1f} s of recompilation: {(t1 - c1) / (t2 - c2):.2f}x"
            print(line)


if __name__ == "__main__":
    main()
