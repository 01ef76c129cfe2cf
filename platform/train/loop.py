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
window on every rank, as the reference restarts it: the ranks agree first (platform/train/oom.py),
then every rank empties the cache, zeroes the gradients and rebuilds its DDP wrapper, and the
loop goes on with the next batches without an optimizer or scheduler step (the step is not
counted; ``training.max_oom_windows`` dropped windows in a row end the run).

Every ``log_every`` steps the ranks average their metrics (platform/train/window.py) and report
them (``ray.train.report``, which Tune also sees); rank 0 logs them to MLflow.  Every
``checkpoint_every`` steps (and at the end) rank 0 writes a checkpoint that a rerun of the same
run name, or a restart after a worker dies, continues from exactly (platform/train/checkpointing.py).

Read top to bottom: ``train_loop_per_worker`` (set-up, resume, the steps, the end of the run),
then one optimizer step, ``train_step``: ``accumulate`` (the micro-batches, each a
``micro_batch``), ``apply_step`` (clip, guard, update) or, after an OOM, ``drop_window``,
``after_step``, and, when a log window ends, ``end_window``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from fovea.pipelines.batch import model_inputs
from fovea.pipelines.batching import batch_cost
from fovea.pipelines.storage import AppendLog, Location, join, location, parent
from fovea.platform.config import RunConfig
from fovea.platform.profiling.step_profiler import StepProfiler, phase
from fovea.platform.train.batch_stream import Stream, to_device
from fovea.platform.train.checkpointing import load_weights, report, restore
from fovea.platform.train.collectives import all_max, rank_cost_imbalance
from fovea.platform.train.ddp import wrap_ddp
from fovea.platform.train.failure_signatures import flag_failure_signatures
from fovea.platform.train.gc_clock import GcClock, freeze_setup_objects
from fovea.platform.train.mixture_counts import MixtureCounts
from fovea.platform.train.oom import OomAgreement, oom_injection, release_ddp
from fovea.platform.train.optim import build_optimizer, build_scheduler, total_optimizer_steps
from fovea.platform.train.step_tally import StepTally
from fovea.platform.train.window import Window, diagnostics, validation_loss, window_metrics

log = logging.getLogger("fovea.train")

# the metrics in the log line of a window (all of them go to MLflow and metrics.jsonl)
SHOWN_METRICS = ("loss", "loss_fine", "loss_coarse", "grad_norm", "samples_per_s", "val_loss", "attn_entropy_fine")


# -- small helpers -------------------------------------------------------------------

def configure_cuda_backends() -> None:
    """TF32 matmuls, and SDPA without the cuDNN backend.

    cuDNN attention, which PyTorch prefers on sm90, builds an execution plan for every new
    shape, about 2 ms of host time a call (jobs/bench/profile_train_step.py shows it); our
    shapes change every batch (frames per batch), so 24 attention calls a pass cost more host
    time than the whole step's GPU work.  Flash attention has no per-shape setup.
    """
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if hasattr(torch.backends.cuda, "enable_cudnn_sdp"):
        torch.backends.cuda.enable_cudnn_sdp(False)


def cuda_only_settings_note(model_cfg, device: torch.device) -> str | None:
    """What a run on a non-CUDA ``device`` ignores of ``model:`` (None: nothing), for the log."""
    if device.type == "cuda":
        return None
    notes = []
    if model_cfg.dino_attention != "flash":
        notes.append(f"model.dino_attention={model_cfg.dino_attention} selects a CUDA attention kernel; "
                     f"DINOv2's patch attention takes PyTorch's {device.type} kernels "
                     "(model.dino_attention=flash silences this)")
    if model_cfg.liger_fused_ce:
        notes.append("model.liger_fused_ce=true runs Triton kernels on CUDA only; the loss takes the plain "
                     "LM head and cross-entropy (model.liger_fused_ce=false silences this)")
    if model_cfg.llm_cudagraphs:
        notes.append("model.llm_cudagraphs=true records CUDA graphs on CUDA only; here the "
                     "LLM runs without them (model.llm_cudagraphs=false silences this)")
    return f"this run is on {device.type}: " + "; ".join(notes) if notes else None


def import_cuda_kernels(model_cfg) -> None:
    """Import the packages of the opt-in CUDA kernels ``model:`` asks for, on the worker that runs
    them: a missing flash-attn-4 or liger-kernel then fails the run before its compilation and
    first batch, with the install line (the driver does not check: the GPU and its packages may
    be on another node)."""
    if model_cfg.dino_attention == "fa4":
        from fovea.model.fa4 import fa4_interface
        fa4_interface()
    if model_cfg.liger_fused_ce:
        from fovea.model.losses import liger_fused_ce_loss
        liger_fused_ce_loss()


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


# -- what a rank trains with, and where it stands ----------------------------------------

@dataclass
class Worker:
    """One rank's training set-up, built once (``set_up``) and the same for every step."""

    cfg: RunConfig
    rank: int
    world: int
    device: torch.device
    autocast: Callable[[], Any]  # bf16 autocast, or a null context
    model: nn.Module  # the FoveatedVLM: parameters, validation, diagnostics, checkpoints
    net: nn.Module  # what the steps run: the model, DDP-wrapped on more than one rank
    optimizer: torch.optim.Optimizer
    scheduler: Any
    total_steps: int
    mode: str  # coarse_fine, or coarse_only (A6/A7)
    run_dir: Location  # a local Path, or a URL (Ray Train's storage path on object storage)
    oom: OomAgreement  # the ranks' agreement on a CUDA OOM (platform/train/oom.py)
    fault_inject: str | None  # test hooks (maybe_inject_fault, nan_injected, oom_injection)
    nan_inject: str | None
    oom_inject: str | None
    on_train_end: Callable[..., Any] | None  # fit's end-of-run hook (final_artifacts)
    tracker: Any = None  # rank 0's MLflow run, opened after the resume
    metrics_log: AppendLog | None = None  # rank 0's <run dir>/metrics.jsonl


@dataclass
class Progress:
    """Where training stands: optimizer steps taken, samples seen by all ranks, this rank's batches."""

    step: int
    samples_seen: int
    stream: Stream
    mixture: MixtureCounts | None = None  # data.mixture: samples and passes per source


@dataclass
class LoopState:
    """What the steps carry from one to the next besides the progress."""

    window: Window  # the log window under way
    tally: StepTally  # losses, norms and skips summed on the device, read once a window
    profiler: StepProfiler  # training.profile_steps
    oom_skips: int = 0  # windows dropped for a CUDA OOM (on every rank alike)
    oom_in_a_row: int = 0  # of them, in a row now
    oom_injected: bool = False  # FOVEA_OOM_INJECT fired (once: a dropped step is run again)
    set_up_frozen: bool = False  # training.gc_freeze done


@dataclass
class MicroBatches:
    """What one optimizer step's micro-batches left on this rank."""

    losses: torch.Tensor  # [3] loss, fine, coarse: the mean over the micro-batches, on the device
    samples: int = 0
    frames: int = 0
    cost: float = 0.0  # batch cost (frames + LLM rows), for the ranks' cost imbalance
    oom: bool = False  # a rank ran out of memory: every rank drops this window
    last_batch: dict[str, Any] | None = None  # the last batch that ran (the window's diagnostics)
    mixture: list[tuple[str, int, int]] = field(default_factory=list)  # (source, samples, its pass) a batch


# -- the loop --------------------------------------------------------------------------

def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """What Ray Train runs on every rank.  ``loop_config`` (from ``trainer.fit``): the run config
    ``cfg``, ``mlflow_run_id``, ``init_model_dir``, ``on_train_end`` and the test hooks."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    quiet_train_reports()
    w = set_up(RunConfig.model_validate(loop_config["cfg"]), loop_config)
    progress = resume(w)
    if w.rank == 0:
        w.tracker = open_tracker(w, loop_config.get("mlflow_run_id"))
        if w.mode == "coarse_only":
            log.info("coarse_only: no fine pass, so loss_fine, loss_ratio, val_loss_fine and val_loss_ratio "
                     "are not logged (loss = loss_coarse)")
    gc_clock = GcClock().start()  # Python's collection pauses (platform/train/gc_clock.py)
    state = LoopState(Window.start(gc_clock), StepTally(w.device),
                      StepProfiler(w.cfg.training.profile_steps, join(w.run_dir, "profile"), w.rank, w.device))
    w.net.train()
    while progress.step < w.total_steps:
        train_step(w, progress, state)
    finish(w, state)


def set_up(cfg: RunConfig, loop_config: dict[str, Any]) -> Worker:
    """The model (initial weights, device, compiled blocks, DDP), optimizer and schedule."""
    import ray.train
    import ray.train.torch

    from fovea.model import build_model

    tc = cfg.training
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    bf16 = tc.precision == "bf16" or (tc.precision == "auto" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    if device.type == "cuda":
        configure_cuda_backends()
        import_cuda_kernels(cfg.model)
    if note := cuda_only_settings_note(cfg.model, device):
        log.warning(note)

    # Same initialisation on every rank (DDP also broadcasts rank 0's parameters).
    torch.manual_seed(tc.seed)
    model = build_model(cfg.model)
    if loop_config.get("init_model_dir"):
        load_weights(model, location(loop_config["init_model_dir"]))
        log.info("initialised from %s", loop_config["init_model_dir"])
    model.to(device)
    if tc.compile:  # regional torch.compile: DINOv2 blocks, query blocks, LLM layers (one graph each)
        model.compile_blocks(mode=tc.compile_mode)
    oom = OomAgreement(world, cfg.cluster.oom_agreement)  # a gloo group: every rank builds it
    net = wrap_ddp(model, cfg, oom) if world > 1 else model
    optimizer = build_optimizer(model, tc)
    total_steps = total_optimizer_steps(tc, cfg.data.batch_size, world)
    scheduler = build_scheduler(optimizer, tc, total_steps)
    return Worker(cfg=cfg, rank=rank, world=world, device=device, autocast=autocast, model=model, net=net,
                  optimizer=optimizer, scheduler=scheduler, total_steps=total_steps,
                  mode="coarse_only" if cfg.model.coarse_only else "coarse_fine",
                  run_dir=join(cfg.storage_path(), cfg.name), oom=oom,
                  fault_inject=loop_config.get("fault_inject"), nan_inject=loop_config.get("nan_inject"),
                  oom_inject=loop_config.get("oom_inject"),
                  on_train_end=loop_config.get("on_train_end"))


def resume(w: Worker) -> Progress:
    """This rank's RNG seeded, then the newest checkpoint restored if there is one, and the
    batch stream opened where this rank's data stood."""
    torch.manual_seed(w.cfg.training.seed + 1000 * w.rank)
    step, samples_seen, epoch, consumed, mixture = restore(w.model, w.optimizer, w.scheduler, w.run_dir, w.rank,
                                                           w.world)
    return Progress(step, samples_seen, Stream(w.cfg, w.rank, w.world, epoch, consumed),
                    MixtureCounts.for_run(w.cfg.data, mixture))


def open_tracker(w: Worker, mlflow_run_id: str | None):
    """Rank 0's handle on the MLflow run that ``fit`` created."""
    from fovea.platform.runs.tracking import Tracker

    tracker = Tracker(w.cfg.tracking_uri(), w.cfg.tracking.experiment, run_id=mlflow_run_id,
                      enabled=w.cfg.tracking.enabled, artifact_location=w.cfg.tracking.artifact_location)
    w.metrics_log = AppendLog(join(w.run_dir, "metrics.jsonl"))
    return tracker


# -- one optimizer step --------------------------------------------------------------------

def train_step(w: Worker, progress: Progress, state: LoopState) -> None:
    """One optimizer step: the micro-batches, the guarded update, the step's bookkeeping; then
    the end of a log window when one is due."""
    cfg = w.cfg
    state.profiler.before_step(progress.step)
    compute_coarse = cfg.model.lambda_coarse > 0 or (
        cfg.model.coarse_loss_every > 0 and (progress.step + 1) % cfg.model.coarse_loss_every == 0)
    acc = accumulate(w, progress, state, compute_coarse)
    if acc.oom:
        drop_window(w, progress.step + 1, state)
        return
    state.oom_in_a_row = 0
    skip, grad_norm, nonfinite = apply_step(w, acc)
    progress.step += 1
    progress.samples_seen += acc.samples * w.world  # DESIGN.md 4.5: batch x world per micro-batch
    if progress.mixture is not None:
        progress.mixture.count(acc.mixture)
    state.tally.add(acc.losses, grad_norm, skip, nonfinite, compute_coarse)
    state.window.samples += acc.samples
    state.window.frames += acc.frames
    state.window.step_costs.append(acc.cost)
    after_step(w, progress.step, state)

    do_log, do_eval, do_ckpt = window_due(cfg, progress.step, w.total_steps)
    if do_log:  # named for the profiler's timeline: a profile that holds a save shows it as such
        with phase("checkpoint" if do_ckpt else "window_end"):
            end_window(w, progress, state, acc.last_batch, do_eval, do_ckpt)


def accumulate(w: Worker, progress: Progress, state: LoopState, compute_coarse: bool) -> MicroBatches:
    """``grad_accum`` forward and backward passes; DDP all-reduces the gradients in the last
    one's backward (the others run under ``no_sync``).  A CUDA OOM on any rank ends the
    accumulation on every rank: after each micro-batch the ranks settle whether one ran out of
    memory (platform/train/oom.py), so none enters a collective that another has left."""
    tc = w.cfg.training
    acc = MicroBatches(torch.zeros(3, dtype=torch.float64, device=w.device))  # on the device: no sync per micro-batch
    w.oom.start_window()
    for micro in range(tc.grad_accum):
        batch = next_batch(w, progress.stream, state.window, acc)
        out = micro_batch(w, batch, progress.step + 1, micro, compute_coarse, state)
        if out is None:  # this rank ran out of memory: free what the failed pass held
            w.oom.failed, batch = True, None
            gc.collect()
            if w.device.type == "cuda":
                torch.cuda.empty_cache()
        else:
            acc.losses += torch.stack([out["loss"], out["loss_fine"], out["loss_coarse"]]).detach().double() / tc.grad_accum
            acc.last_batch = batch
        if w.oom.settle():  # every rank: did any rank run out of memory?
            acc.oom = True
            break
    return acc


def micro_batch(w: Worker, batch: dict[str, Any], step: int, micro: int, compute_coarse: bool,
                state: LoopState) -> dict[str, Any] | None:
    """One forward and backward (DDP's gradient all-reduce in the window's last one) -> the
    forward's output, or None where this rank ran out of memory."""
    tc = w.cfg.training
    sync = w.net.no_sync() if (w.world > 1 and micro < tc.grad_accum - 1) else contextlib.nullcontext()
    inject = None if state.oom_injected else oom_injection(w.oom_inject, w.model, step, w.rank, micro)
    state.oom_injected |= inject is not None
    if w.cfg.model.llm_cudagraphs:  # a new step for CUDA graph trees: last pass's graph outputs may be reused
        torch.compiler.cudagraph_mark_step_begin()
    try:
        with sync, inject or contextlib.nullcontext():
            with w.autocast(), phase("forward"):
                out = w.net(**model_inputs(batch), mode=w.mode, compute_coarse=compute_coarse,
                            return_logits=False)  # the LM head at target positions only
            if nan_injected(w.nan_inject, step, w.rank):
                out["loss"] = out["loss"] * float("nan")
            with phase("backward"):
                (out["loss"] / tc.grad_accum).backward()
        return out
    except torch.OutOfMemoryError as e:
        if not w.oom.recovers:  # cluster.oom_agreement=false on several ranks: the run ends
            raise
        log.warning("rank %d: CUDA out of memory in micro-batch %d of step %d: %s", w.rank, micro, step,
                    str(e).splitlines()[0] if str(e) else "")
        return None


def next_batch(w: Worker, stream: Stream, window: Window, acc: MicroBatches) -> dict[str, Any]:
    """The stream's next batch, on the device; its samples, frames and cost counted, and the
    wait for it."""
    t_wait = time.perf_counter()
    with phase("data"):
        host = stream.next()
        window.wait += time.perf_counter() - t_wait
        n, frames = int(host["input_ids"].shape[0]), int(host["num_frames"].sum())
        acc.samples += n
        acc.frames += frames
        if "mixture_source" in host:  # data.mixture (platform/train/mixture_counts.py)
            acc.mixture.append((host["mixture_source"], n, host["mixture_epoch"]))
        acc.cost += batch_cost(frames, n, int(host["num_frames"].max()), int(host["input_ids"].shape[1]),
                               w.cfg.data.llm_tokens_per_frame)
        return to_device(host, w.device)


def apply_step(w: Worker, acc: MicroBatches):
    """Clip, guard and update -> (skip [], grad_norm [] pre-clip, nonfinite [] bool), all on the
    device.  A step is skipped (``found_inf``) where the loss or the gradient norm is not finite
    (a NaN on one rank reaches every rank through the gradient all-reduce)."""
    with phase("step_end"):  # nothing is read back from the GPU here: the host moves on
        grad_norm = torch.nn.utils.clip_grad_norm_(w.model.parameters(), w.cfg.training.grad_clip)  # [] pre-clip norm
        nonfinite = ~(torch.isfinite(grad_norm) & torch.isfinite(acc.losses[0]))
        skip = nonfinite.float()
    with phase("optimizer"):
        w.optimizer.found_inf = skip  # fused AdamW: 1 leaves weights, moments and its step count as they were
        w.optimizer.step()
        w.scheduler.step()
        w.optimizer.zero_grad(set_to_none=True)
    return skip, grad_norm, nonfinite


def drop_window(w: Worker, step: int, state: LoopState) -> None:
    """Every rank, after a rank ran out of memory: no optimizer or scheduler step, the gradients
    zeroed, the cache emptied, a new DDP wrapper (the old reducer may be mid-backward); the
    same step runs again on the next batches (DESIGN.md 4.5)."""
    state.oom_skips += 1
    state.oom_in_a_row += 1
    w.optimizer.zero_grad(set_to_none=True)
    if w.world > 1:
        release_ddp(w.net)
        w.net = None
        gc.collect()
    if w.device.type == "cuda":
        torch.cuda.empty_cache()
    if w.world > 1:
        w.net = wrap_ddp(w.model, w.cfg, w.oom)  # every rank at once: DDP's set-up is a collective
    if w.rank == 0:
        log.warning("step %d: a rank ran out of CUDA memory; the accumulation window is dropped on every rank "
                    "(no optimizer or scheduler step; %d dropped so far)", step, state.oom_skips)
    if state.oom_in_a_row >= w.cfg.training.max_oom_windows:
        raise RuntimeError(f"{state.oom_in_a_row} windows in a row dropped for a CUDA OOM by step {step} "
                           f"(training.max_oom_windows={w.cfg.training.max_oom_windows}): lower data.batch_size "
                           "or data.max_total_frames, or set model.gradient_checkpointing")


def after_step(w: Worker, step: int, state: LoopState) -> None:
    """The garbage-collector freeze after the first step, the profiler, fault injection."""
    # training.gc_freeze: after this process's first step (also after a resume), the same on
    # every rank; one full collection now, then cheap ones (platform/train/gc_clock.py)
    if w.cfg.training.gc_freeze and not state.set_up_frozen:
        state.set_up_frozen = freeze_setup_objects() > 0
    if (written := state.profiler.after_step(step)) and w.rank == 0:
        log.info("profile of steps %s written to %s", list(w.cfg.training.profile_steps), parent(written))
    maybe_inject_fault(w.fault_inject, step, w.rank)


# -- the end of a log window -------------------------------------------------------------

def window_due(cfg: RunConfig, step: int, total_steps: int) -> tuple[bool, bool, bool]:
    """(log, validate, checkpoint) at the end of ``step``; a validation or a checkpoint ends
    the log window too."""
    tc = cfg.training
    is_last = step >= total_steps
    do_eval = bool(cfg.data.val_shards) and cfg.eval.every_steps > 0 and (
        step % cfg.eval.every_steps == 0 or is_last)
    do_ckpt = step % tc.checkpoint_every == 0 or is_last
    if do_ckpt and cfg.data.val_shards and not do_eval and tc.checkpoint_metric.startswith("val_"):
        do_eval = True  # the checkpoint metric needs a fresh validation loss
    return step % tc.log_every == 0 or do_eval or do_ckpt, do_eval, do_ckpt


def end_window(w: Worker, progress: Progress, state: LoopState, last_batch: dict[str, Any] | None,
               do_eval: bool, do_ckpt: bool) -> None:
    """The window's metrics (collectives: every rank), with the diagnostics and the validation
    loss when due; rank 0 logs them; reported to Ray, with a checkpoint when due; a new window."""
    cfg, step = w.cfg, progress.step
    sums = state.tally.read(step, cfg.training.max_nonfinite_steps)  # the window's one read-back
    metrics = window_metrics(state.window, sums, step, progress.samples_seen, w.optimizer, w.device)
    metrics["rank_cost_imbalance"] = rank_cost_imbalance(state.window.step_costs)
    if step % cfg.training.diagnostics_every == 0 and last_batch is not None:
        metrics.update(diagnostics(w.model, last_batch, w.autocast))
        flag_failure_signatures(metrics, cfg, w.tracker, w.rank, step)  # warnings + MLflow tags
    if do_eval:  # the unwrapped model: ranks may see different numbers of val batches
        metrics.update(validation_loss(w.model, cfg, w.device, w.autocast, w.mode))
    metrics["oom_skipped"] = all_max([float(state.oom_skips)], w.device)[0]
    metrics["nonfinite_skipped"] = sums["nonfinite_skipped"]
    metrics["epoch"] = float(progress.stream.epoch)
    if progress.mixture is not None:  # a collective: every rank
        metrics.update(progress.mixture.metrics(w.device))
    if w.rank == 0:
        stream = progress.stream
        if stream.epoch_s is not None:  # rank 0's: DDP keeps the ranks in step
            metrics["epoch_s"], metrics["epoch_compile_s"] = stream.epoch_s, stream.epoch_compile_s
        log_window(w, step, metrics)
        if do_ckpt:  # on object storage the file is uploaded with each checkpoint (and at the end)
            w.metrics_log.sync()
    report(metrics, step, do_ckpt, cfg, w.model, w.optimizer, w.scheduler, progress.samples_seen,
           progress.stream, w.rank, mixture=progress.mixture.state() if progress.mixture is not None else None)
    state.window = Window.start(state.window.gc_clock)


def log_window(w: Worker, step: int, metrics: dict[str, float]) -> None:
    """Rank 0: the window's metrics to MLflow, ``<run dir>/metrics.jsonl`` and the log."""
    w.tracker.log_metrics(metrics, step)
    w.metrics_log.write_line(json.dumps({"step": step, **metrics}))
    log.info("step %d/%d %s", step, w.total_steps,
             " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k in SHOWN_METRICS))


# -- the end of the run --------------------------------------------------------------------

def finish(w: Worker, state: LoopState) -> None:
    state.window.gc_clock.stop()
    if state.set_up_frozen:  # the frozen objects become collectable again (a process that goes on after training)
        gc.unfreeze()
    if w.rank == 0:
        final_artifacts(w.on_train_end, w.model, w.cfg, w.tracker, w.device, w.autocast)


def final_artifacts(hook, model, cfg: RunConfig, tracker, device, autocast) -> None:
    """Rank 0, end of run: ``fit``'s ``on_train_end`` (the stages log the loss overlay of the
    experiment's runs, and generated captions and an attention heatmap when there are val shards)."""
    if hook is None or tracker is None:
        return
    try:
        hook(model, cfg, tracker, device=device, autocast=autocast)
    except Exception as e:  # noqa: BLE001 - artifacts must never fail a finished run
        log.warning("final artifacts failed: %s: %s", type(e).__name__, e)
