"""Throughput figures of a stage-1 training run from its ``metrics.jsonl`` (one row a log window):
rates over the timed and the steady windows, equal-work 1 -> 2 GPU scaling (matched windows,
whole epochs), variants on equal work (the same windows of runs on one GPU count), and the FLOP
model behind MFU and model FLOP/s.

FLOP model (forward; training = 3x forward, backward ~ 2x), with D = DINO width, L = DINO
layers, Np = 257 tokens at 224 px, d = LLM width, nl = LLM layers, kv = K/V width, I = MLP width:

    DINO patch pass / frame   L * (24 Np D^2 + 4 Np^2 D)        (QKV+O+MLP, attention)
    query passes / frame      2 * L * (24 D^2 + 4 Np D)          (coarse + fine)
    LLM / sample              per_tok * (T + (T + S)) + attention 4 nl d (T^2 + (T+S)^2) / 2
                              per_tok = nl * 2 * (2 d^2 + 2 d kv + 3 d I)  (coarse: T visual tokens)
    lm_head / sample          2 d V S  (text positions only)

T is the measured mean of real frames per sample, S = ``TEXT_TOKENS`` text tokens.
MFU = model FLOPs/s / (GPUs x ``H100_PEAK_BF16``).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Callable

from fovea.model.blocks import FRAME_SIZE

H100_PEAK_BF16 = 989e12  # dense bf16, H100 SXM datasheet
TEXT_TOKENS = 94  # chat template + ~64 caption tokens of the benchmark shards (bench_shards.py)
# Loader readers of the stage1 runs, all ranks together (--readers): each GPU gets READERS / GPUs
# loader workers (1 GPU: 16, 2 GPUs: 8). The readers take turns, one batch each, and reader r's
# batches do not depend on how the readers are split into ranks; a log window is one round of
# them (16 steps on 1 GPU, 8 on 2), so window k of a 1-GPU and of a 2-GPU run hold the same
# batches and the ratio of their times is scaling on equal work (``matched_windows``).
READERS = 16


def flops_per_sample(frames: float, text: float, dino_cfg, llm_cfg, frame_size: int = FRAME_SIZE) -> float:
    """Training FLOPs (3x forward) of one sample with ``frames`` real frames of ``frame_size`` px
    and ``text`` tokens; Np from the frame and patch size (257 at 224 px), never from the DINOv2
    config's image_size."""
    p = dino_cfg.patch_size if isinstance(dino_cfg.patch_size, int) else dino_cfg.patch_size[0]
    D, L, Np = dino_cfg.hidden_size, dino_cfg.num_hidden_layers, 1 + (frame_size // p) ** 2
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


def mfu_figures(r: dict, sample_flops: Callable[[float], float], peak: float = H100_PEAK_BF16) -> dict:
    """``mean_frames``, ``mfu`` (and ``steady_mfu`` when the summary has ``steady_model_tflops``)
    of a result with ``samples_per_s``, ``frames_per_s`` and ``gpus``."""
    mean_frames = r["frames_per_s"] / r["samples_per_s"]
    out = {"mean_frames": mean_frames, "mfu": r["samples_per_s"] * sample_flops(mean_frames) / (r["gpus"] * peak)}
    if "steady_model_tflops" in r:
        out["steady_mfu"] = r["steady_model_tflops"] * 1e12 / (r["gpus"] * peak)
    return out


def epoch_figures(r: dict, epoch_samples: int) -> dict:
    """Samples/s over each whole epoch of a run summary (``summarize_windows``) whose epochs hold
    ``epoch_samples`` samples: ``epoch_samples_per_s`` (the epoch's wall time) and
    ``epoch_samples_per_s_no_compile`` (less its torch.compile seconds: the tail batches' new
    shapes, compiled once a process, which a long real epoch amortises).

    These are the figures at the shard set's own mix. Steady windows are not: token-budget
    batches hold from a few long videos to hundreds of short ones, so a window's samples/s swings
    with its mix (one 16-step window can average 5 frames a sample, the next 28), and a short
    run reads only the first part of an epoch. A small set's epoch understates a real one's
    rate, though: each loader reader ends its epoch with a short batch, so 12,000 samples fill
    86 % of their steps' budget where a million fill 99 % (jobs/bench/bench_rank_balance.py)."""
    es, ec = r.get("epoch_s") or {}, r.get("epoch_compile_s") or {}
    return {"epoch_samples": epoch_samples,
            "epoch_samples_per_s": {e: epoch_samples / s for e, s in es.items()},
            "epoch_samples_per_s_no_compile": {e: epoch_samples / (s - ec.get(e, 0.0)) for e, s in es.items()}}


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` (also one cut off before the end)."""
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def loader_workers_per_gpu(readers: int, gpus: int) -> int:
    """``data.num_workers`` of each of ``gpus`` ranks for ``readers`` loader readers in all."""
    if readers < gpus or readers % gpus:
        raise ValueError(f"--readers {readers}: must be a multiple of the GPU count {gpus}")
    return readers // gpus


def profiled_steps(overrides: list[str]) -> tuple[int, int] | None:
    """``training.profile_steps=[a,b]`` among the overrides -> (a, b)."""
    for o in overrides:
        if o.replace(" ", "").startswith("training.profile_steps=["):
            a, b = o.split("[", 1)[1].rstrip("]").split(",")
            return int(a), int(b)
    return None


# -- one run's windows ---------------------------------------------------------------------

def timed_windows(rows: list[dict], profiled: tuple[int, int] | None) -> tuple[list[dict], list[dict], list[dict]]:
    """-> (kept, timed, steady) windows: kept leaves out windows that hold profiled steps (the
    profiler slows its steps several-fold); timed leaves out the first two kept ones too (warm-up,
    compilation); steady are the timed ones with no (re)compilation and no epoch change."""
    kept = [r for prev, r in zip([{"step": 0}] + rows, rows)  # a window covers steps prev+1 .. its step
            if not (profiled and prev["step"] < profiled[1] and r["step"] >= profiled[0])]
    timed = kept[2:] or kept
    steady = [r for prev, r in zip(timed[:1] + timed, timed)
              if r.get("compile_s_max", 0.0) == 0 and r.get("epoch") == prev.get("epoch")]
    return kept, timed, steady


def time_weighted(ws: list[dict], k: str | Callable[[dict], float]) -> float:
    """A rate over windows ``ws``, each weighed by its length (``window_s``)."""
    span = sum(r["window_s"] for r in ws)
    value = k if callable(k) else (lambda r: r[k])
    return sum(value(r) * r["window_s"] for r in ws) / span if span else float("nan")


def whole_epochs(rows: list[dict]) -> tuple[dict[int, float], dict[int, float]]:
    """-> ({epoch: seconds}, {epoch: torch.compile seconds in it}) of the whole epochs after the
    first, which holds start-up and compilation. The same samples on any number of GPUs, so the
    ratio of two runs' times for one epoch is scaling on equal work (an epoch that holds profiled
    steps is slower by the profiler's cost; a new tail shape recompiles once a process)."""
    epoch_s = {int(r["epoch"]) - 1: r["epoch_s"] for r in rows if "epoch_s" in r and r["epoch"] >= 2}
    epoch_compile_s = {int(r["epoch"]) - 1: r["epoch_compile_s"] for r in rows
                       if "epoch_compile_s" in r and r["epoch"] >= 2}
    return epoch_s, epoch_compile_s


def summarize_windows(rows: list[dict], profiled: tuple[int, int] | None = None,
                      flops: Callable[[float], float] | None = None) -> dict:
    """The figures of one run from its ``metrics.jsonl`` rows (one per log window).

    Timed and steady windows: see ``timed_windows``. Rates are time-weighted over the timed span
    (token-budget batches hold 12..1000 samples, so one window's samples/s swings with its mix).
    ``steady_*`` leaves out epoch changes because a benchmark set of 30k samples ends an epoch
    every ~45 steps on 2 GPUs, and each end brings the readers' short tail batches (rank
    imbalance) and, once per process, new 0/1-size shapes to compile; a real epoch (1M samples)
    has thousands of steps.

    ``flops``: training FLOPs of one sample with a given mean frame count (``flops_per_sample``);
    with it, ``steady_model_tflops`` is the steady windows' model TFLOP/s, each window's rate
    taken at its own mean frames a sample. Two runs' windows hold different mixes of frames a
    sample, so their samples/s and frames/s ratios disagree; the FLOP rate weighs each sample by
    its work (the mean-T approximation ignores the small T^2 attention spread)."""
    rows = [r for r in rows if "samples_per_s" in r]
    kept, timed, steady = timed_windows(rows, profiled)
    med = lambda k: statistics.median(r[k] for r in timed if k in r) if any(k in r for r in timed) else float("nan")  # noqa: E731

    def model_tflops(r: dict) -> float:  # a window's model TFLOP/s, at its own frames a sample
        sps = r["samples_per_s"]
        return sps * flops(r["frames_per_s"] / sps) / 1e12 if sps else 0.0

    epoch_s, epoch_compile_s = whole_epochs(rows)
    steady_steps = {r["step"] for r in steady}
    log_windows = [{"step": r["step"], "s": r["window_s"], "samples": r["samples_per_s"] * r["window_s"],
                    "frames": r["frames_per_s"] * r["window_s"], "steady": r["step"] in steady_steps} for r in kept]
    return {"samples_per_s": time_weighted(timed, "samples_per_s"),
            "frames_per_s": time_weighted(timed, "frames_per_s"),
            "log_windows": log_windows,
            "epoch_s": epoch_s, "epoch_compile_s": epoch_compile_s,
            "samples_per_s_window_median": med("samples_per_s"),
            "steady_samples_per_s": time_weighted(steady, "samples_per_s"),
            "steady_frames_per_s": time_weighted(steady, "frames_per_s"),
            "steady_windows": len(steady),
            **({"steady_model_tflops": time_weighted(steady, model_tflops)} if flops is not None else {}),
            "data_wait": med("data_wait_frac"), "data_wait_max": med("data_wait_frac_max"),
            "compile_s": sum(r.get("compile_s_max", 0.0) for r in timed),
            "rank_cost_imbalance": med("rank_cost_imbalance"),
            "gpu_mem_gb": max((r.get("gpu_mem_gb", 0) for r in timed), default=0),
            "windows": len(timed), "profiled_windows_left_out": len(rows) - len(kept),
            "final_loss": timed[-1].get("loss") if timed else float("nan")}


# -- 1 GPU against 2 -----------------------------------------------------------------------

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


def same_windows(runs: list[list[dict]]) -> dict | None:
    """Variants on equal work from several runs' ``log_windows`` on the same GPU count: the
    windows of the same steps that are steady in every run and hold the same frames in each (the
    same batches: the runs read one shard set with equal readers), their seconds run by run and
    each run's total over the first's. Picking the windows by each run's own steadiness instead
    would let one run's recompilation into the comparison. -> None where no window qualifies."""
    spans = []
    for prev, w in zip([{"step": 0}] + runs[0], runs[0]):
        span = (prev["step"], w["step"])
        found = [next((v for p, v in zip([{"step": 0}] + r, r) if (p["step"], v["step"]) == span), None)
                 for r in runs]
        if all(v is not None and v["steady"] and v["frames"] for v in found) and \
                max(v["frames"] for v in found) <= 1.001 * min(v["frames"] for v in found):
            spans.append((span, [v["s"] for v in found]))
    if not spans:
        return None
    totals = [sum(s[i] for _, s in spans) for i in range(len(runs))]
    return {"steps": [f"{int(a) + 1}-{int(b)}" for (a, b), _ in spans], "seconds": [s for _, s in spans],
            "totals": totals, "time_ratio": [t / totals[0] for t in totals]}


def same_window_lines(runs: list[dict]) -> list[str]:
    """Report lines comparing run summaries of one GPU count window by window (``same_windows``)."""
    m = same_windows([r["log_windows"] for r in runs])
    if m is None:
        return [f"same windows of the {len(runs)} runs: none steady in all with the same frames"]
    lines = [f"same windows of the {len(runs)} runs (steady in all, the same frames): steps "
             f"{', '.join(m['steps'])}; seconds run by run, then each run's time over run 1's"]
    lines += [f"  steps {st:>9s}: " + "  ".join(f"{x:7.2f}" for x in s) for st, s in zip(m["steps"], m["seconds"])]
    lines.append(f"  {'total':>15s}: " + "  ".join(f"{x:7.2f}" for x in m["totals"]))
    lines.append(f"  {'time / run 1':>15s}: " + "  ".join(f"{x:7.3f}" for x in m["time_ratio"]))
    return lines


def scaling_lines(one: dict, two: dict) -> list[str]:
    """The 1 -> 2 GPU ratios of two run summaries (``summarize_windows`` with a FLOP model), as
    report lines: the timed span, the steady windows, matched windows and whole epochs."""
    lines = [f"scaling 1 -> 2 GPUs: {two['samples_per_s'] / one['samples_per_s']:.2f}x samples/s, "
             f"{two['frames_per_s'] / one['frames_per_s']:.2f}x frames/s (timed span); steady windows "
             f"({one['steady_windows']} and {two['steady_windows']}): "
             f"{two['steady_samples_per_s'] / one['steady_samples_per_s']:.2f}x samples/s, "
             f"{two['steady_frames_per_s'] / one['steady_frames_per_s']:.2f}x frames/s, "
             f"{two['steady_model_tflops'] / one['steady_model_tflops']:.2f}x model FLOP/s "
             f"({one['steady_model_tflops']:.1f} and {two['steady_model_tflops']:.1f} TFLOP/s: each window's "
             f"mix through the FLOP model, so equal work)"]
    m = matched_windows(one["log_windows"], two["log_windows"])
    if m:
        lines.append(f"  matched windows (the same batches when the runs had equal readers): {m['pairs']} pairs, "
                     f"{m['one_s']:.1f} s on 1 GPU, {m['two_s']:.1f} s on 2; 2-GPU/1-GPU work "
                     f"{m['work_ratio_frames']:.3f} (frames), {m['work_ratio_samples']:.3f} (samples), per pair "
                     f"{m['frames_ratio_min']:.3f}-{m['frames_ratio_max']:.3f}: **{m['scaling']:.2f}x** frames/s")
    for e in sorted(set(one["epoch_s"]) & set(two["epoch_s"])):
        t1, t2 = one["epoch_s"][e], two["epoch_s"][e]
        c1, c2 = one["epoch_compile_s"].get(e), two["epoch_compile_s"].get(e)
        line = f"  epoch {e} (the same samples): {t1:.1f} s on 1 GPU, {t2:.1f} s on 2: {t1 / t2:.2f}x"
        if c1 is not None and c2 is not None and (c1 or c2):  # runs that recorded it
            line += f"; without the {c1:.1f} s and {c2:.1f} s of recompilation: {(t1 - c1) / (t2 - c2):.2f}x"
        lines.append(line)
    return lines
