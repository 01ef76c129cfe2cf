"""A training worker's checkpoints: the report to Ray at the end of a log window, with a
checkpoint when one is due, and the restore at start-up from the newest complete checkpoint.

A checkpoint holds the model, optimizer, scheduler, step, samples seen, and every rank's data
position and RNG state (gathered to rank 0, which writes it), so a rerun of the same run name
-- or a restart after a worker dies -- continues exactly.  What the files are and how to find
one: platform/runs/checkpoints.py.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from fovea.pipelines.storage import Location, is_url, join, read_bytes
from fovea.platform.config import RunConfig
from fovea.platform.runs import checkpoints as ck
from fovea.platform.train.collectives import gather_objects

log = logging.getLogger("fovea.train")


def report(metrics, step, do_ckpt, cfg: RunConfig, model, optimizer, scheduler, samples_seen, stream,
           rank, mixture: dict | None = None) -> None:
    """``ray.train.report`` of this window's metrics on every rank; with ``do_ckpt`` rank 0
    writes a checkpoint and reports it (a collective: every rank calls it).  ``mixture``: the
    per-source counts of a data.mixture run (platform/train/mixture_counts.py), kept with it."""
    import ray.train

    metric = cfg.training.checkpoint_metric
    if metric not in metrics:
        # Ray scores checkpoints by this key; without validation shards the training loss
        # stands in (DESIGN.md 4.6), but only towards Ray, never under a val_* name in MLflow.
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
            state={"step": step, "samples_seen": samples_seen, "data_positions": positions, "rng": rngs,
                   "mixture": mixture},
            meta={"step": step, "samples_seen": samples_seen, "metrics": metrics, "run_name": cfg.name,
                  "stage": cfg.training.stage, "time": time.time()},
        )
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def restore(model, optimizer, scheduler, run_dir: Location, rank: int, world: int):
    """Load the newest checkpoint into the model, optimizer and scheduler, and this rank's
    RNG state -> (step, samples_seen, epoch, batches consumed, the mixture counts); 0s and None
    with no checkpoint.

    With another world size the ranks' data positions do not carry over: the data restarts at
    the epoch after the checkpoint's furthest."""
    import ray.train

    source = resume_source(ray.train.get_checkpoint(), run_dir)
    if not source:
        return 0, 0, 0, 0, None
    epoch, consumed = 0, 0
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
    return step, samples_seen, epoch, consumed, state.get("mixture")


def resume_source(ray_checkpoint, run_dir: Location):
    """The newest complete checkpoint: Ray's, or a newer one already persisted in the run dir.

    Ray registers a reported checkpoint when its controller next polls the worker; a
    worker killed right after ``report`` can leave a persisted but unregistered
    checkpoint.  We scan the run dir too (a local folder or a URL), so no finished checkpoint
    is lost.  Returns an object with ``as_directory()`` or None.
    """
    import ray.train

    best, best_step = ray_checkpoint, -1
    if ray_checkpoint is not None:
        with ray_checkpoint.as_directory() as d:
            best_step = ck.read_meta(Path(d)).get("step", -1)
    on_disk = ck.latest_checkpoint(run_dir)
    if on_disk is not None and ck.read_meta(on_disk).get("step", -1) > best_step:
        log.info("resuming from %s (newer than Ray's registered checkpoint)", on_disk)
        # a URL: Ray's Checkpoint builds its pyarrow filesystem from it and copies it on as_directory()
        best = (ray.train.Checkpoint(str(on_disk)) if is_url(on_disk)
                else ray.train.Checkpoint.from_directory(str(on_disk)))
    return best


def load_weights(model, model_dir: Location) -> None:
    """Load a save_pretrained dir (a path, or a URL: read into memory) into an already built
    model (any prefix, strict)."""
    from safetensors.torch import load, load_file

    from fovea.model import load_state_dict_flexible
    from fovea.model.io import WEIGHTS_FILE

    weights = join(model_dir, WEIGHTS_FILE)
    state = load(read_bytes(weights)) if is_url(weights) else load_file(str(weights))
    load_state_dict_flexible(model, state, strict=True)
    model.llm.tie_weights()
