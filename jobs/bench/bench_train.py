#!/usr/bin/env python
"""Stage-1 training throughput (135M + DINOv2-small, full fine-tuning): a side-by-side
matrix on one GPU, then the real job on 1..N GPUs through Ray Train.

    python jobs/bench/make_bench_shards.py --out data/bench/ref --samples 3000
    python jobs/bench/make_bench_shards.py --out data/bench/64  --samples 200 --dist 64
    python jobs/bench/bench_train.py --shards 'data/bench/ref/train-*.tar' [--shards64 'data/bench/64/train-*.tar'] \\
        [--matrix] [--gpus 1,2] [--steps 300] [--batch 64] [--frames-per-batch 768] [--compile]
    python jobs/bench/bench_train.py --summarize 1:<1-GPU metrics.jsonl> 2:<2-GPU metrics.jsonl> [overrides]

Prints each result as a JSON line when it is done (all of them to --out), then a table:
samples/s, frames/s, data wait, peak GPU memory and MFU of each; each matrix entry's speed-up
over ``plain``; and, with a 1-GPU and a 2-GPU run, the scaling between them (timed span,
steady windows, matched windows, whole epochs: platform/profiling/throughput.py).

``--matrix`` (one GPU, one process, the same real loader over the same shards) times a
training step (forward, backward, clip, fused AdamW) for each path below, so every figure
is a ratio measured side by side:

    plain        fp32, one DINOv2 call per frame, patch pass re-run for the fine pass
                 (no K/V reuse: fovea.model.naive), batch 16, padded float frames
    eager-b16    bf16 autocast, batched patch pass + K/V reuse, batch 16, padded float frames
    eager-b64    + token-budget batches of up to 64 samples / --frames-per-batch frames,
                 packed uint8 frames normalised on the GPU
    compiled-b64 + regional torch.compile (FoveatedVLM.compile_blocks)
    compiled-b128[-ckpt], compiled-b256-ckpt
                 larger batches (frame budget scaled with them): a step is bound by the host
                 (kernel launches, as many at any batch size), so more work per step raises
                 samples/s; -ckpt recomputes DINOv2's patch blocks in backward
                 (model.gradient_checkpointing=dino) so that 3072 frames fit in memory

Then, for each --gpus entry, ``jobs/stage1.py --config stage1_135m`` itself runs --steps
steps (Ray Train TorchTrainer, DDP over NCCL, the real loader, one checkpoint at the end), and the
figures are rates over its log windows (one round of --readers batches: total samples / total
time; the per-window median is kept too), the first two windows skipped (warm-up,
compilation), and so are windows that hold profiled steps (``training.profile_steps=[a,b]``
among the overrides: the profiler slows its steps several-fold):

    samples/s, frames/s   all ranks together
    data wait             share of the window spent waiting for the next batch
    peak GPU memory       torch.cuda.max_memory_allocated on rank 0
    MFU                   model FLOPs/s / (GPUs x 989 TFLOP/s dense bf16, H100 SXM datasheet),
                          FLOPs from the model of platform/profiling/throughput.py
    steady_*              the windows with no compilation and no epoch change; steady_model_tflops
                          weighs each window's samples by the FLOP model at its own frames a
                          sample, so the 1 -> 2 GPU ratio of it compares equal work
    whole epochs          the shard set's samples (its bench_manifest.json, or --epoch-samples) over
                          each whole epoch after the first, with and without its compile seconds:
                          the figure at the set's own mix of frames a sample, which short windows
                          are not (platform/profiling/throughput.py epoch_figures)
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

from fovea.platform.profiling.throughput import (READERS, TEXT_TOKENS, epoch_figures, flops_per_sample,
                                                 loader_workers_per_gpu, mfu_figures, profiled_steps, read_metrics,
                                                 same_window_lines, scaling_lines, summarize_windows)

REPO = Path(__file__).resolve().parents[2]


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


def run_matrix_entry(name: str, shards: str, steps: int, budget: int, loader_workers: int,
                     extra: list[str]) -> dict:
    import torch

    from fovea.platform.train.bench_step import bench_setup, train_step

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


def run_matrix(a: argparse.Namespace, report: Report) -> None:
    import torch

    for name in a.paths.split(","):
        steps = max(4, a.matrix_steps // 3) if name == "plain" else a.matrix_steps
        try:
            report.add(run_matrix_entry(name, a.shards, steps, a.frames_per_batch, a.loader_workers, a.overrides),
                       "ref")
        except Exception as e:  # one failing path must not lose the others' figures
            print(f"matrix {name}: FAILED {type(e).__name__}: {e}", flush=True)
        torch.cuda.empty_cache()


# -- the real job on 1..N GPUs -------------------------------------------------------------

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
        # one checkpoint, after the last step: a save mid-run lands in a whole epoch's time (and
        # in a profile that holds its step), where a real run saves once in ~1000 steps
        f"training.checkpoint_every={steps}",
        f"training.diagnostics_every={10 * steps}", "eval.every_steps=0", f"training.compile={str(compiled).lower()}",
        f"cluster.num_workers={gpus}", "cluster.max_failures=0", "cluster.cpus_per_worker=1", *extra]
    t0 = time.time()
    cmd = [sys.executable, "-u", str(REPO / "jobs" / "stage1.py"), "--config", "stage1_135m", *overrides]
    with open(log_to or os.devnull, "a") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    mfile = runs / "ray" / name / "metrics.jsonl"
    rows = read_metrics(mfile) if mfile.exists() else []
    if rc != 0 or not rows:
        raise RuntimeError(f"jobs/stage1.py failed (exit {rc}, {len(rows)} log windows); see {log_to}")
    return {"path": "jobs/stage1.py" + (" +compile" if compiled else "") + (" +ckpt" if ckpt_dino else ""),
            "gpus": gpus, **summarize_windows(rows, profiled_steps(extra), flops),
            "wall_s": time.time() - t0, "steps": steps, "batch": batch}


def run_stage1_jobs(a: argparse.Namespace, report: Report, runs: Path) -> None:
    """The --gpus runs over --shards (and 1 GPU over --shards64); training.compile as --compile
    says, or, with auto, on when the matrix found compiled-b64 faster than eager-b64."""
    by_path = {r["path"]: r["samples_per_s"] for r in report.rows}
    compiled = a.compile == "on" or (a.compile == "auto" and
                                     by_path.get("compiled-b64", 0) > by_path.get("eager-b64", float("inf")))
    if a.gpus:
        print(f"stage1 runs: training.compile={compiled}", flush=True)
    sets = [("ref", a.shards, a.steps)] + ([("64", a.shards64, a.steps64)] if a.shards64 else [])
    for label, shards, steps in sets:
        for g in gpu_counts(a.gpus):
            if label == "64" and g > 1:
                continue
            try:
                report.add(run_stage1(shards, g, steps, a.batch, a.frames_per_batch, a.readers, compiled,
                                      a.ckpt_dino, f"bench-{label}-{g}gpu", runs, a.overrides,
                                      Path(a.log) if a.log else None, report.sample_flops), label)
            except Exception as e:
                print(f"stage1 {label} {g} GPU: FAILED {e}", flush=True)


# -- runs already made ---------------------------------------------------------------------

def summarize_runs(a: argparse.Namespace, report: Report) -> None:
    """--summarize: the figures of runs already made (also ones cut off) from their metrics.jsonl."""
    batch_given = any(x == "--batch" or x.startswith("--batch=") for x in sys.argv[1:])  # metrics do not hold it
    for item in a.summarize:
        gpus, _, path = item.partition(":")
        report.add({"path": "jobs/stage1.py metrics", "gpus": int(gpus), "batch": a.batch if batch_given else None,
                    **summarize_windows(read_metrics(path), profiled_steps(a.overrides), report.sample_flops)},
                   "ref")


# -- the report ----------------------------------------------------------------------------

def stage1_135m_flops() -> Callable[[float], float]:
    """Training FLOPs of one stage-1 135M sample at a given mean of real frames (``TEXT_TOKENS`` text)."""
    from transformers import AutoConfig

    from fovea.model.store import resolve_model_ref

    dino = AutoConfig.from_pretrained(resolve_model_ref("facebook/dinov2-small"))
    llm = AutoConfig.from_pretrained(resolve_model_ref("HuggingFaceTB/SmolLM2-135M-Instruct"))
    return lambda mean_frames: flops_per_sample(mean_frames, TEXT_TOKENS, dino, llm)


class Report:
    """The results as they come: MFU added, each printed as a JSON line, all so far written to ``out``."""

    def __init__(self, sample_flops: Callable[[float], float], out: str | None, epoch_samples: int | None = None):
        self.sample_flops, self.out, self.rows = sample_flops, out, []
        self.epoch_samples = epoch_samples  # samples of the reference shard set: whole-epoch rates

    def add(self, r: dict, dist: str) -> None:
        r.update(dist=dist, **mfu_figures(r, self.sample_flops))
        if dist == "ref" and self.epoch_samples and "epoch_s" in r:
            r.update(epoch_figures(r, self.epoch_samples))
        self.rows.append(r)
        print(json.dumps(r), flush=True)
        if self.out:
            Path(self.out).write_text(json.dumps(self.rows, indent=2))


def print_table(rows: list[dict], where: str) -> None:
    print(f"\n{where}")
    print(f"{'dist':5s} {'gpus':>4s} {'path':26s} {'batch':>5s} {'samples/s':>10s} {'frames/s':>9s} {'wait':>6s} "
          f"{'mem GB':>7s} {'MFU':>6s}  whole epochs: samples/s (less compilation)")
    for r in rows:
        batch = "-" if r["batch"] is None else str(r["batch"])
        epochs = ", ".join(f"{v:.1f} ({r['epoch_samples_per_s_no_compile'][e]:.1f})"
                           for e, v in sorted(r.get("epoch_samples_per_s", {}).items())) or "-"
        print(f"{r['dist']:5s} {r['gpus']:4d} {r['path']:26s} {batch:>5s} {r['samples_per_s']:10.1f} "
              f"{r['frames_per_s']:9.1f} {r['data_wait']:6.1%} {r['gpu_mem_gb']:7.1f} {r['mfu']:6.1%}  {epochs}")
    base = next((r for r in rows if r["path"] == "plain"), None)
    if base:
        for r in rows:
            if r["gpus"] == 1 and r["dist"] == "ref":
                print(f"  {r['path']:26s} {r['samples_per_s'] / base['samples_per_s']:6.2f}x plain")


def print_variants(rows: list[dict]) -> None:
    """Several summarised runs on one GPU count (variants of a step on the same batches): their
    windows of the same steps side by side."""
    for g in sorted({r["gpus"] for r in rows}):
        same = [r for r in rows if r["gpus"] == g and r["path"] == "jobs/stage1.py metrics" and r["log_windows"]]
        if len(same) > 1:
            for line in same_window_lines(same):
                print(line)


def print_scaling(rows: list[dict]) -> None:
    """1 -> 2 GPUs, when there are stage1 runs (or metrics) of both on the reference shards."""
    one = next((r for r in rows if r["gpus"] == 1 and r["path"].startswith("jobs/") and r["dist"] == "ref"), None)
    two = next((r for r in rows if r["gpus"] == 2 and r["path"].startswith("jobs/") and r["dist"] == "ref"), None)
    if one and two:
        for line in scaling_lines(one, two):
            print(line)


# -- the command line ----------------------------------------------------------------------

def shard_set_samples(shards: str | None) -> int | None:
    """Samples of the shard set ``shards`` (a glob) from the ``bench_manifest.json`` that
    make_bench_shards.py writes beside it; None without one."""
    manifest = Path(shards).parent / "bench_manifest.json" if shards else None
    return json.loads(manifest.read_text())["samples"] if manifest and manifest.is_file() else None


def gpu_counts(gpus: str) -> list[int]:
    return [int(x) for x in gpus.split(",") if x]


def parse_args() -> argparse.Namespace:
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
    ap.add_argument("--epoch-samples", type=int, default=None,
                    help="samples an epoch, for whole-epoch samples/s (default: the bench_manifest.json "
                         "beside --shards)")
    ap.add_argument("--runs", default="runs/bench")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--log", default=None, help="append the stage1 jobs' output here")
    ap.add_argument("overrides", nargs="*", help="extra config overrides (matrix and stage1 runs)")
    a = ap.parse_args()
    if a.summarize:  # "--summarize 1:A 2:B key=value": the list also takes the overrides after it
        a.overrides += [x for x in a.summarize if "=" in x and not x.partition(":")[0].isdigit()]
        a.summarize = [x for x in a.summarize if x not in a.overrides]
        a.gpus, a.matrix = "", False  # summarise only: no run
    check_args(ap, a)
    return a


def check_args(ap: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Every argument error before any run starts."""
    if not a.shards and not a.summarize:
        ap.error("--shards is required (or --summarize)")
    if a.epoch_samples is not None and a.epoch_samples < 1:
        ap.error(f"--epoch-samples {a.epoch_samples}: the samples of one epoch, a positive count")
    for item in a.summarize or []:
        gpus, _, path = item.partition(":")
        if not gpus.isdigit() or not Path(path).is_file():
            ap.error(f"--summarize {item!r}: expected GPUS:METRICS_JSONL with an existing file")
    for g in gpu_counts(a.gpus):
        try:
            loader_workers_per_gpu(a.readers, g)
        except ValueError as e:
            ap.error(str(e))
    for name in a.paths.split(",") if a.matrix else []:
        if name not in MATRIX:
            ap.error(f"--paths: unknown entry {name!r}; expected some of {', '.join(MATRIX)}")


def main() -> None:
    a = parse_args()
    import torch

    report = Report(stage1_135m_flops(), a.out, a.epoch_samples or shard_set_samples(a.shards))
    runs = Path(a.runs).resolve() / time.strftime("%Y%m%d-%H%M%S")
    if a.summarize:
        summarize_runs(a, report)
    if a.matrix:
        run_matrix(a, report)
    run_stage1_jobs(a, report, runs)
    where = "summarised from metrics files" if a.summarize else (
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
    print_table(report.rows, where)
    print_variants(report.rows)
    print_scaling(report.rows)


if __name__ == "__main__":
    main()
