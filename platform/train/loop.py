"""The per-worker training loop that Ray Train's TorchTrainer runs on every rank.

One optimizer step = ``grad_accum`` micro-batches on each of ``world`` ranks:

    effective batch = data.batch_size x training.grad_accum x world_size      (8 x 4 x 1 = 32)

Per micro-batch: forward in one mode for the whole batch (coarse_fine, or coarse_only
for A6/A7), loss / accum, backward under ``no_sync`` except on the last micro-batch, when
DDP all-reduces the gradients.  Then: global-norm clip (the logged norm is pre-clip), a
NaN/Inf guard, AdamW step, LambdaLR step.  A step with a non-finite loss or gradient norm is
skipped on the device (fused AdamW's ``found_inf``: weights and moments stay as they were;
the step still counts), and the run aborts once ``max_nonfinite_steps`` in a row were skipped,
found when the window is read (platform/train/step_tally.py: no per-step read-back, so the host
queues the next step while the GPU finishes this one).  A CUDA OOM drops the accumulation
window on every rank (an all-reduce of the flag on the device) and empties the cache.

Every ``log_every`` steps the ranks average their metrics and report them
(``ray.train.report``, which Tune also sees); rank 0 logs them to MLflow.  Every
``checkpoint_every`` steps (and at the end) rank 0 writes a checkpoint holding the model,
optimizer, scheduler, step, samples seen, every rank's data position and RNG state, so a
rerun of the same run name -- or a restart after a worker dies -- continues exactly.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from fovea.pipelines.batch import TENSOR_KEYS, model_inputs
from fovea.pipelines.loader import batch_cost
from fovea.platform.runs import checkpoints as ck
from fovea.platform.train.batch_stream import Stream
from fovea.platform.train.collectives import (all_max, all_mean, all_sum, compile_seconds, gather_objects,
                                        rank_cost_imbalance, world_info)
from fovea.platform.config import RunConfig
from fovea.platform.train.ddp import wrap_ddp
from fovea.platform.train.failure_signatures import flag_failure_signatures
from fovea.platform.train.gc_clock import GcClock, freeze_setup_objects
from fovea.platform.train.optim import build_optimizer, build_scheduler, group_lrs, total_optimizer_steps
from fovea.platform.profiling.step_profiler import StepProfiler, phase
from fovea.platform.train.step_tally import StepTally

log = logging.getLogger("fovea.train")


# -- small helpers -------------------------------------------------------------------

# Stay on the host: the model computes its frame and target indices from them there (no
# value read back from the GPU) and sends only the results (model/vlm.py).
HOST_KEYS = ("frame_mask", "input_ids", "attention_mask", "loss_mask")


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch's frames (and other tensors but HOST_KEYS) on ``device``; pinned batches
    copy asynchronously."""
    nb = device.type == "cuda"
    return {k: (v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) and k not in HOST_KEYS else v)
            for k, v in batch.items()}


def configure_cuda_backends() -> None:
    """TF32 matmuls, and SDPA without the cuDNN backend.

    Measured on an H200 (jobs/bench/profile_train_step.py, compiled batch-64 step): cuDNN attention,
    which PyTorch prefers on sm90, builds an execution plan for every new shape, ~1.8 ms of
    host time per call; our shapes change every batch (frames per batch), so 24 attention
    calls a pass cost more host time than the whole step's GPU work.  Flash attention has no
    per-shape setup.
    """
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if hasattr(torch.backends.cuda, "enable_cudnn_sdp"):
        torch.backends.cuda.enable_cudnn_sdp(False)


def quiet_train_reports() -> None:
    """Ray Train V2 logs each ``ray.train.report`` call's whole metrics dict at INFO (one long
    line per rank per log window, streamed to the driver); keep its warnings only."""
    try:
        from ray.train.v2._internal.execution import context  # its logger is named by its file
    except ImportError:
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def maybe_inject_fault(spec: str | None, step: int, rank: int) -> None:
    """``spec`` = "step=S,rank=R,marker=PATH": SIGKILL rank R at step S, once.

    The driver copies FOVEA_FAULT_INJECT from its environment into the loop config (a
    running cluster's workers do not see the driver's later environment).  The marker
    file makes the fault fire only once, so the restarted worker group (FailureConfig)
    runs through.  Used by the fault-tolerance and resume tests.
    """
    if not spec:
        return
    kv = dict(p.split("=", 1) for p in spec.split(","))
    marker = Path(kv.get("marker", "/tmp/fovea-fault-fired"))
    if step == int(kv["step"]) and rank == int(kv.get("rank", 0)) and not marker.exists():
        marker.write_text(f"killed rank {rank} at step {step}\n")
        log.warning("fault injection: SIGKILL rank %d at step %d", rank, step)
        os.kill(os.getpid(), signal.SIGKILL)


def nan_injected(spec: str | None, step: int, rank: int) -> bool:
    """``spec`` = "steps=A-B,rank=R": rank R's loss is made NaN at optimizer steps A..B (the
    tests of the non-finite guard; FOVEA_NAN_INJECT in the driver's environment)."""
    if not spec:
        return False
    kv = dict(p.split("=", 1) for p in spec.split(","))
    first, _, last = kv["steps"].partition("-")
    return rank == int(kv.get("rank", 0)) and int(first) <= step <= int(last or first)


# -- evaluation during training -------------------------------------------------------

@torch.no_grad()
def validation_loss(model, cfg: RunConfig, device, autocast, mode: str) -> dict[str, float]:
    """Batch-size-weighted mean loss over ``eval.max_samples`` val samples, across ranks."""
    from fovea.pipelines.loader import build_eval_loader

    rank, world = world_info()
    loader = build_eval_loader(cfg.data, cfg.data.val_shards, rank=rank, world_size=world,
                               max_samples=max(1, cfg.eval.max_samples // world))
    was_training = model.training
    model.eval()
    sums = [0.0, 0.0, 0.0, 0.0]  # loss*B, fine*B, coarse*B, B
    for batch in loader:
        batch = to_device(batch, device)
        with autocast():
            out = model(**model_inputs(batch), mode=mode, compute_coarse=True)
        b = float(batch["input_ids"].shape[0])
        sums[0] += float(out["loss"]) * b
        sums[1] += float(out["loss_fine"]) * b
        sums[2] += float(out["loss_coarse"]) * b
        sums[3] += b
    model.train(was_training)
    tot = all_sum(sums, device)
    n = max(tot[3], 1.0)
    res = {"val_loss": tot[0] / n, "val_loss_fine": tot[1] / n, "val_loss_coarse": tot[2] / n}
    res["val_loss_ratio"] = res["val_loss_fine"] / res["val_loss_coarse"] if res["val_loss_coarse"] > 0 else 0.0
    return res


# -- the loop --------------------------------------------------------------------------

def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from fovea.model import build_model
    from fovea.platform.runs.tracking import Tracker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    quiet_train_reports()
    cfg = RunConfig.model_validate(loop_config["cfg"])
    tc = cfg.training
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    bf16 = tc.precision == "bf16" or (tc.precision == "auto" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    if device.type == "cuda":
        configure_cuda_backends()

    # Same initialisation on every rank (DDP also broadcasts rank 0's parameters).
    torch.manual_seed(tc.seed)
    model = build_model(cfg.model)
    if loop_config.get("init_model_dir"):
        load_weights(model, Path(loop_config["init_model_dir"]))
        log.info("initialised from %s", loop_config["init_model_dir"])
    model.to(device)
    if tc.compile:  # regional torch.compile: DINOv2 blocks, query blocks, LLM layers (one graph each)
        model.compile_blocks()
    if world > 1:
        net = wrap_ddp(model, cfg)
    else:
        net = model
    optimizer = build_optimizer(model, tc)
    total_steps = total_optimizer_steps(tc, cfg.data.batch_size, world)
    scheduler = build_scheduler(optimizer, tc, total_steps)
    mode = "coarse_only" if cfg.model.coarse_only else "coarse_fine"

    # -- resume -----------------------------------------------------------------------
    step, samples_seen, epoch, consumed = 0, 0, 0, 0
    torch.manual_seed(tc.seed + 1000 * rank)
    run_dir = Path(cfg.storage_path()) / cfg.name
    source = _resume_source(ray.train.get_checkpoint(), run_dir)
    if source:
        with source.as_directory() as d:
            load_weights(model, Path(d) / ck.MODEL_DIR)
            state = ck.read_train_state(Path(d))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, samples_seen = state["step"], state["samples_seen"]
        if len(state["data_positions"]) == world:
            epoch, consumed = state["data_positions"][rank]
            ck.set_rng_state(state["rng"][rank])
        else:
            log.warning("world size changed (%d -> %d): data restarts at the checkpoint's epoch",
                        len(state["data_positions"]), world)
            epoch = max(e for e, _ in state["data_positions"]) + 1
        log.info("rank %d resumed at step %d (epoch %d, batch %d)", rank, step, epoch, consumed)
    stream = Stream(cfg, rank, world, epoch, consumed)

    tracker = None
    if rank == 0:
        tracker = Tracker(cfg.tracking_uri(), cfg.tracking.experiment, run_id=loop_config.get("mlflow_run_id"),
                          enabled=cfg.tracking.enabled)
        run_dir.mkdir(parents=True, exist_ok=True)

    # -- loop -------------------------------------------------------------------------
    # host-side window figures; the losses, norms and step counts come from the tally at the window's end
    gc_clock = GcClock().start()  # Python's collection pauses (platform/train/gc_clock.py)
    set_up_frozen = False  # training.gc_freeze
    window = {"samples": 0.0, "frames": 0.0, "wait": 0.0, "t0": time.perf_counter(), "compile0": compile_seconds(),
              "gc0": gc_clock.read()}
    step_costs: list[float] = []  # this window's per-step batch cost (frames + LLM rows), for rank imbalance
    tally = StepTally(device)  # losses, norms and skips summed on the device, read once a window
    oom_skips = 0
    last_val: dict[str, float] = {}
    profiler = StepProfiler(tc.profile_steps, run_dir / "profile", rank, device)
    net.train()
    while step < total_steps:
        profiler.before_step(step)
        compute_coarse = cfg.model.lambda_coarse > 0 or (
            cfg.model.coarse_loss_every > 0 and (step + 1) % cfg.model.coarse_loss_every == 0)
        oom = False
        losses = torch.zeros(3, dtype=torch.float64, device=device)  # on the device: no sync per micro-batch
        micro_samples = micro_frames = 0
        micro_cost = 0.0
        last_batch = None
        for micro in range(tc.grad_accum):
            t_wait = time.perf_counter()
            with phase("data"):
                host = stream.next()
                window["wait"] += time.perf_counter() - t_wait
                n, frames = int(host["input_ids"].shape[0]), int(host["num_frames"].sum())
                micro_samples += n
                micro_frames += frames
                micro_cost += batch_cost(frames, n, int(host["num_frames"].max()), int(host["input_ids"].shape[1]),
                                         cfg.data.llm_tokens_per_frame)
                batch = to_device(host, device)
            sync = net.no_sync() if (world > 1 and micro < tc.grad_accum - 1) else contextlib.nullcontext()
            try:
                with sync:
                    with autocast(), phase("forward"):
                        out = net(**model_inputs(batch), mode=mode, compute_coarse=compute_coarse,
                                  return_logits=False)  # the LM head at target positions only
                    if nan_injected(loop_config.get("nan_inject"), step + 1, rank):
                        out["loss"] = out["loss"] * float("nan")
                    with phase("backward"):
                        (out["loss"] / tc.grad_accum).backward()
            except torch.OutOfMemoryError:
                if device.type != "cuda":
                    raise
                oom = True
                del batch
                torch.cuda.empty_cache()
                break
            losses += torch.stack([out["loss"], out["loss_fine"], out["loss_coarse"]]).detach().double() / tc.grad_accum
            last_batch = batch
        with phase("step_end"):  # nothing is read back from the GPU here: the host moves on
            skip = torch.full((), float(oom), device=device)  # this rank ran out of memory
            if world > 1:  # queued on the GPU like the gradient all-reduce: no wait here
                dist.all_reduce(skip, op=dist.ReduceOp.MAX)  # one rank's OOM skips the step on all
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)  # [] pre-clip norm
            nonfinite = ~(torch.isfinite(grad_norm) & torch.isfinite(losses[0]))
            skip = torch.maximum(skip, nonfinite.float())
        if oom:
            oom_skips += 1
            log.warning("rank %d: CUDA OOM, step %d skipped (%d so far)", rank, step + 1, oom_skips)
        with phase("optimizer"):
            optimizer.found_inf = skip  # fused AdamW: 1 leaves weights, moments and its step count as they were
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        step += 1
        samples_seen += micro_samples * world  # spec 4.5: batch x world per micro-batch
        tally.add(losses, grad_norm, skip, nonfinite, compute_coarse)
        window["samples"] += micro_samples
        window["frames"] += micro_frames
        step_costs.append(micro_cost)
        if tc.gc_freeze and not set_up_frozen:  # this process's first step (also after a resume), the
            set_up_frozen = freeze_setup_objects() > 0  # same on every rank: one full collection, then cheap ones
        if (written := profiler.after_step(step)) and rank == 0:
            log.info("profile of steps %s written to %s", list(tc.profile_steps), written.parent)
        maybe_inject_fault(loop_config.get("fault_inject"), step, rank)

        is_last = step >= total_steps
        do_eval = bool(cfg.data.val_shards) and cfg.eval.every_steps > 0 and (
            step % cfg.eval.every_steps == 0 or is_last)
        do_ckpt = step % tc.checkpoint_every == 0 or is_last
        if do_ckpt and cfg.data.val_shards and not do_eval and tc.checkpoint_metric.startswith("val_"):
            do_eval = True  # the checkpoint metric needs a fresh validation loss
        if step % tc.log_every == 0 or do_eval or do_ckpt:
            window.update(tally.read(step, tc.max_nonfinite_steps))  # the window's one read-back
            metrics = _window_metrics(window, step, samples_seen, optimizer, device, gc_clock)
            metrics["rank_cost_imbalance"] = rank_cost_imbalance(step_costs)
            step_costs = []
            if step % tc.diagnostics_every == 0 and last_batch is not None:
                metrics.update(_diagnostics(model, last_batch, autocast, device))
                flag_failure_signatures(metrics, cfg, tracker, rank, step)  # issue 10: warnings + MLflow tags
            if do_eval:
                last_val = validation_loss(model, cfg, device, autocast, mode)  # unwrapped: ranks may see different batch counts
                metrics.update(last_val)
            metrics["oom_skipped"] = all_max([float(oom_skips)], device)[0]
            metrics["nonfinite_skipped"] = window["nonfinite_skipped"]
            metrics["epoch"] = float(stream.epoch)
            if rank == 0:
                if stream.epoch_s is not None:  # rank 0's: DDP keeps the ranks in step
                    metrics["epoch_s"], metrics["epoch_compile_s"] = stream.epoch_s, stream.epoch_compile_s
                tracker.log_metrics(metrics, step)
                with open(run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps({"step": step, **metrics}) + "\n")
                log.info("step %d/%d %s", step, total_steps,
                         " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k in _SHOW))
            _report(metrics, step, do_ckpt, cfg, model, optimizer, scheduler, samples_seen, stream, rank)
            window.update({k: 0.0 for k in window if k != "t0"})
            window["t0"], window["compile0"], window["gc0"] = time.perf_counter(), compile_seconds(), gc_clock.read()

    gc_clock.stop()
    if set_up_frozen:  # the frozen objects become collectable again (a process that goes on after training)
        gc.unfreeze()
    if rank == 0:
        _final_artifacts(loop_config.get("on_train_end"), model, cfg, tracker, device, autocast)


_SHOW = ("loss", "loss_fine", "loss_coarse", "grad_norm", "samples_per_s", "val_loss", "attn_entropy_fine")


def _window_metrics(w: dict[str, Any], step: int, samples_seen: int, optimizer, device, gc_clock) -> dict[str, float]:
    dt = max(time.perf_counter() - w["t0"], 1e-9)
    n = max(w["n"], 1.0)
    mean = all_mean([w["loss"] / n, w["fine"] / n, w["coarse"] / max(w["n_coarse"], 1.0),
                     w["grad_norm"] / n, w["wait"] / dt], device)
    tot = all_sum([w["samples"], w["frames"]], device)
    # DDP steps wait for the slowest rank: the worst rank's data wait, (re)compilation time and
    # garbage-collection pauses (seconds, full collections)
    gc_s, gc_full = gc_clock.read()
    worst = all_max([w["wait"] / dt, compile_seconds() - w["compile0"], gc_s - w["gc0"][0],
                     float(gc_full - w["gc0"][1])], device)
    m = {"loss": mean[0], "loss_fine": mean[1], "grad_norm": mean[3], "data_wait_frac": mean[4],
         "data_wait_frac_max": worst[0], "compile_s_max": worst[1], "gc_s_max": worst[2], "gc_full_max": worst[3],
         "gc_frozen": float(gc.get_freeze_count()),
         "samples_per_s": tot[0] / dt, "frames_per_s": tot[1] / dt, "samples_seen": float(samples_seen),
         "window_s": dt,
         "step": float(step)}
    if w["n_coarse"] > 0:
        m["loss_coarse"] = mean[2]
        m["loss_ratio"] = mean[1] / mean[2] if mean[2] > 0 else 0.0
    m.update(group_lrs(optimizer))
    if device.type == "cuda":
        m["gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return m


@torch.no_grad()
def _diagnostics(model, batch, autocast, device) -> dict[str, float]:
    """q_static std, attention entropy (vs log N), |fine - coarse| on this rank's last batch."""
    was = model.training
    model.eval()
    with autocast():
        out = model(**model_inputs(batch), mode="coarse_fine", compute_coarse=True, return_diagnostics=True)
    model.train(was)
    diag = {k: float(v) for k, v in out.get("diagnostics", {}).items() if isinstance(v, (int, float))
            or (isinstance(v, torch.Tensor) and v.numel() == 1)}
    diag.pop("loss_ratio", None)  # one batch's ratio; the window's loss_ratio is the logged one
    # Ranks may hold different keys (a text-only batch has no attention to measure), so
    # gather the dicts and average each key over the ranks that have it.
    merged: dict[str, list[float]] = {}
    for d in gather_objects(diag):
        for k, v in d.items():
            if math.isfinite(v):
                merged.setdefault(k, []).append(v)
    return {k: sum(v) / len(v) for k, v in merged.items()}


def _report(metrics, step, do_ckpt, cfg, model, optimizer, scheduler, samples_seen, stream, rank) -> None:
    import ray.train

    metric = cfg.training.checkpoint_metric
    if metric not in metrics:
        # Ray scores checkpoints by this key; without validation shards the training loss
        # stands in (spec 4.6), but only towards Ray, never under a val_* name in MLflow.
        metrics = {**metrics, metric: metrics["loss"]}
    if not do_ckpt:
        ray.train.report(metrics)
        return
    positions = gather_objects(stream.position())
    rngs = gather_objects(ck.rng_state())
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="fovea-ckpt-") as tmp:
        ck.write_checkpoint(
            Path(tmp), model, optimizer, scheduler,
            state={"step": step, "samples_seen": samples_seen, "data_positions": positions, "rng": rngs},
            meta={"step": step, "samples_seen": samples_seen, "metrics": metrics, "run_name": cfg.name,
                  "stage": cfg.training.stage, "time": time.time()},
        )
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _resume_source(ray_checkpoint, run_dir: Path):
    """The newest complete checkpoint: Ray's, or a newer one already persisted on disk.

    Ray registers a reported checkpoint when its controller next polls the worker; a
    worker killed right after ``report`` can leave a persisted but unregistered
    checkpoint.  With local storage we scan the run dir too, so no finished checkpoint is
    lost.  Returns an object with ``as_directory()`` or None.
    """
    import ray.train

    best, best_step = ray_checkpoint, -1
    if ray_checkpoint is not None:
        with ray_checkpoint.as_directory() as d:
            best_step = ck.read_meta(Path(d)).get("step", -1)
    on_disk = ck.latest_checkpoint(run_dir) if run_dir.exists() else None
    if on_disk is not None and ck.read_meta(on_disk).get("step", -1) > best_step:
        log.info("resuming from %s (newer than Ray's registered checkpoint)", on_disk)
        best = ray.train.Checkpoint.from_directory(str(on_disk))
    return best


def load_weights(model, model_dir: Path) -> None:
    """Load a save_pretrained dir into an already built model (any prefix, strict)."""
    from safetensors.torch import load_file

    from fovea.model import load_state_dict_flexible
    from fovea.model.io import WEIGHTS_FILE

    load_state_dict_flexible(model, load_file(str(Path(model_dir) / WEIGHTS_FILE)), strict=True)
    model.llm.tie_weights()


def _final_artifacts(hook, model, cfg: RunConfig, tracker, device, autocast) -> None:
    """Rank 0, end of run: ``fit``'s ``on_train_end`` (the stages log generated captions for a
    few val videos and an attention heatmap)."""
    if hook is None or not cfg.data.val_shards or cfg.eval.caption_samples <= 0 or tracker is None:
        return
    try:
        hook(model, cfg, tracker, device=device, autocast=autocast)
    except Exception as e:  # noqa: BLE001 - artifacts must never fail a finished run
        log.warning("final artifacts failed: %s: %s", type(e).__name__, e)
