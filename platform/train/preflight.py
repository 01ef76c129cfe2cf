"""What a training run needs before anything starts: its shards and its ``init_from``
checkpoint, checked in the driver before Ray or an MLflow run exist, so that a missing input
costs seconds and leaves no cluster, no retried workers and no run stuck in RUNNING.

    init_dir = check_run_inputs(cfg)       # the init_from model dir, or None; RunInputError

The error names the key, what was looked for and the next step (the ``jobs/preprocess.py``
line that makes a shard set, the stage to train first).
"""

from __future__ import annotations

from pathlib import Path

from fovea.pipelines.shard_sets import missing_shard_sets, missing_shards_message
from fovea.pipelines.shard_stages import stage_mismatch_message, stage_mismatches
from fovea.platform.config import ConfigError, RunConfig


class RunInputError(ConfigError):
    """A run's input (shards, init_from checkpoint) is not there; the message says how to get it."""


def check_shards(cfg: RunConfig, source: str = "") -> None:
    missing = missing_shard_sets(cfg.data)
    if missing:
        where = f" (config {source})" if source else ""
        raise RunInputError(missing_shards_message(missing, cfg.training.stage).replace(":", where + ":", 1))
    # shards tokenized for another stage's loss rule (pipelines/shard_stages.py, DESIGN.md 2.3)
    wrong = stage_mismatches(cfg.data, cfg.training.stage) if cfg.data.check_shard_stage else []
    if wrong:
        where = f" (config {source})" if source else ""
        raise RunInputError(stage_mismatch_message(wrong, cfg.training.stage).replace(":", where + ":", 1))


def check_init_from(cfg: RunConfig) -> Path | None:
    """``training.init_from`` -> the ``model/`` folder it names (None when unset)."""
    ref = cfg.training.init_from
    if not ref:
        return None
    from fovea.platform.runs import checkpoints as ck  # imports torch: only when there is a checkpoint to find

    try:
        return ck.resolve_init_from(ref, cfg.tracking_uri(), cfg.training.checkpoint_metric,
                                    cfg.training.checkpoint_mode)
    except Exception as e:  # noqa: BLE001 - FileNotFoundError, MLflow's "run not found", a bad store
        reason = (str(e).splitlines()[0] if str(e) else type(e).__name__).removeprefix(f"init_from={ref!r}: ")
        stage = cfg.training.stage
        first = (f"train stage {stage - 1} first (python jobs/stage{stage - 1}.py), or "
                 if stage > 1 else "")
        raise RunInputError(
            f"training.init_from={ref!r} names no checkpoint: {reason}\n"
            f"  {first}set training.init_from to a checkpoint_* folder, a Ray run folder "
            f"(runs/ray/<name>), a model/ folder or an MLflow run id; training.init_from=null starts "
            f"from the pretrained models") from None


def check_run_inputs(cfg: RunConfig, source: str = "") -> Path | None:
    """Shards, then ``init_from``; returns the ``init_from`` model folder (or None)."""
    check_shards(cfg, source)
    return check_init_from(cfg)
