"""Driver side of a training run: the Ray Train ``TorchTrainer`` and its MLflow run.

    cfg = load_config("stage1_135m", overrides)
    result = fit(cfg)                      # starts/joins Ray, trains, returns a summary

* ``ScalingConfig(num_workers=N, use_gpu=auto)``: DDP over NCCL on GPUs, gloo on CPUs.
* ``RunConfig(name=cfg.name, storage_path=<runs>/ray)``: rerunning the same name resumes
  from the latest checkpoint (Train V2 restores a run from its (storage_path, name)). The storage
  path may be a URL (``s3://bucket/runs/ray``): Ray builds its pyarrow filesystem from it, which
  reads the AWS_* settings (``fovea.pipelines.storage``); the driver's files of the run
  (``mlflow_run_id``, ``resolved_config.yaml``) and the workers' ``metrics.jsonl`` go there too.
* ``CheckpointConfig(num_to_keep=keep_last, score=checkpoint_metric)``: Ray keeps the
  ``keep_last`` best checkpoints by the metric and, always, the most recent one.
* ``FailureConfig(max_failures)``: a dead worker restarts the group from the latest checkpoint.

The run's inputs (shards, ``init_from``) are checked first (``preflight.check_run_inputs``),
before Ray or MLflow start.  The MLflow run is created here (params = the flattened resolved config, tags = stage,
model size, git commit) and its id handed to rank 0, which logs metrics.  The id is kept in
``<runs>/ray/<name>/mlflow_run_id`` so a resumed run keeps logging into the same run.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fovea.pipelines import storage
from fovea.pipelines.storage import Location
from fovea.platform.runs import checkpoints as ck
from fovea.platform.runs.cluster import cluster_cpus, connect, want_gpu
from fovea.platform.config import RunConfig, absolute_paths, save_resolved
from fovea.platform.runs.tracking import Tracker, git_commit
from fovea.platform.train.preflight import RunInputError, check_run_inputs

log = logging.getLogger("fovea.trainer")


@dataclass
class FitSummary:
    name: str
    run_dir: Location  # a Path, or a URL string
    mlflow_run_id: str | None
    tracking_uri: str
    metrics: dict[str, Any]
    best_checkpoint: Location | None
    latest_checkpoint: Location | None
    wall_s: float


def model_size_tag(ref: str) -> str:
    for size in ("135M", "360M", "1.7B", "tiny"):
        if size.lower() in ref.lower():
            return size
    return Path(ref).name


def run_tags(cfg: RunConfig) -> dict[str, str]:
    return {
        "stage": str(cfg.training.stage),
        "model_size": model_size_tag(cfg.model.llm),
        "dino": Path(cfg.model.dino).name,
        "git_commit": git_commit(),
        "fovea.run_name": cfg.name,
        "mode": "coarse_only" if cfg.model.coarse_only else "coarse_fine",
    }


def open_tracker(cfg: RunConfig, run_dir: Location, extra_tags: dict[str, str] | None = None,
                 parent_run_id: str | None = None) -> Tracker:
    """Create (or, for a resumed run, reopen) the run's MLflow run; log params and config."""
    id_file = storage.join(run_dir, "mlflow_run_id")
    try:
        run_id = storage.read_text(id_file).strip() or None
    except FileNotFoundError:
        run_id = None
    tags = {**run_tags(cfg), **(extra_tags or {})}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    tracker = Tracker(cfg.tracking_uri(), cfg.tracking.experiment, run_id=run_id,
                      run_name=cfg.tracking.run_name or cfg.name, tags=tags, enabled=cfg.tracking.enabled,
                      artifact_location=cfg.tracking.artifact_location)
    if tracker.run_id and run_id is None:
        storage.write_text(id_file, tracker.run_id)
        tracker.log_params(cfg.flat())
    with tempfile.TemporaryDirectory(prefix="fovea-config-") as tmp:
        resolved = save_resolved(cfg, Path(tmp) / "resolved_config.yaml")
        storage.put_file(resolved, storage.join(run_dir, "resolved_config.yaml"))
        tracker.log_artifact(resolved)
    return tracker


def build_trainer(cfg: RunConfig, loop_config: dict[str, Any], callbacks: list | None = None):
    import ray.train

    from fovea.platform.train.loop import train_loop_per_worker
    from fovea.platform.train.ray_trainer import RunTrainer

    gpu = want_gpu(cfg.cluster.use_gpu)
    per_worker = {"CPU": cfg.cluster.cpus_per_worker}
    if gpu:
        per_worker["GPU"] = cfg.cluster.gpus_per_worker
    return RunTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.cluster.num_workers, use_gpu=gpu, resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=cfg.name,
            storage_path=cfg.storage_path(),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.training.keep_last,
                checkpoint_score_attribute=cfg.training.checkpoint_metric,
                checkpoint_score_order=cfg.training.checkpoint_mode,
            ),
            failure_config=ray.train.FailureConfig(max_failures=cfg.cluster.max_failures),
            callbacks=callbacks or [],
        ),
    )


def check_resources(cfg: RunConfig) -> None:
    need = cfg.cluster.num_workers * cfg.cluster.cpus_per_worker
    have = cluster_cpus()
    if need > have:
        raise RunInputError(
            f"cluster.num_workers={cfg.cluster.num_workers} x cluster.cpus_per_worker="
            f"{cfg.cluster.cpus_per_worker} needs {need} CPUs; the Ray cluster has {have}: "
            f"lower one of them, or join a bigger cluster (--address)")


def interruptible(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a thread of its own when called on the main thread, so that Ctrl-C reaches
    ``fit`` as a KeyboardInterrupt and its MLflow run is marked KILLED.  On the main thread Ray
    Train installs its own SIGINT handler, whose abort ends in a SystemExit or an actor error that
    reads like any failure; off it (a Tune trial, this thread) Ray leaves SIGINT alone.  The
    thread is a daemon: the process exits without it, and Ray's shutdown ends the workers."""
    if threading.current_thread() is not threading.main_thread():
        return fn()
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            out["error"] = e

    t = threading.Thread(target=run, name="fovea-fit", daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["result"]


def fit(cfg: RunConfig, *, callbacks: list | None = None, extra_tags: dict[str, str] | None = None,
        parent_run_id: str | None = None, connect_ray: bool = True,
        on_train_end: Callable[..., Any] | None = None) -> FitSummary:
    """Train ``cfg`` on Ray; resumes if ``<runs>/ray/<name>`` already holds checkpoints.

    ``on_train_end(model, cfg, tracker, device=, autocast=)`` runs on rank 0 once training
    is done (``fovea.platform.stages`` passes the evaluation's captions and heatmap); it
    travels to the workers by reference, so it must be a module-level function."""
    t0 = time.time()
    cfg = absolute_paths(cfg)
    init_dir = check_run_inputs(cfg)  # before Ray and MLflow: a missing input starts nothing
    if connect_ray:
        connect(cfg.cluster.address)
        check_resources(cfg)
    run_dir = storage.join(cfg.storage_path(), cfg.name)
    if ck.latest_checkpoint(run_dir):
        log.info("run %r has checkpoints in %s: resuming from the latest", cfg.name, run_dir)
    tracker = open_tracker(cfg, run_dir, extra_tags, parent_run_id)
    loop_config: dict[str, Any] = {"cfg": cfg.model_dump(mode="json"), "mlflow_run_id": tracker.run_id,
                                   "fault_inject": os.environ.get("FOVEA_FAULT_INJECT"),
                                   "nan_inject": os.environ.get("FOVEA_NAN_INJECT"),
                                   "oom_inject": os.environ.get("FOVEA_OOM_INJECT"),
                                   "on_train_end": on_train_end}
    try:  # from here on the MLflow run exists: whatever ends the run marks it, never left RUNNING
        if init_dir is not None:
            loop_config["init_model_dir"] = str(init_dir)
            tracker.set_tags({"init_from": str(init_dir)})
        result = interruptible(build_trainer(cfg, loop_config, callbacks).fit)
        best = ck.best_checkpoint(run_dir, cfg.training.checkpoint_metric, cfg.training.checkpoint_mode)
        latest = ck.latest_checkpoint(run_dir)
        tracker.set_tags({"best_checkpoint": str(best or ""), "latest_checkpoint": str(latest or "")})
    except BaseException as e:
        tracker.finish("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    tracker.finish("FINISHED")
    return FitSummary(cfg.name, run_dir, tracker.run_id, cfg.tracking_uri(), dict(result.metrics or {}),
                      best, latest, time.time() - t0)
