"""What a training run needs before anything starts: its shards, its ``init_from`` checkpoint
and the model settings its models' configs must agree with, checked in the driver before Ray or
an MLflow run exist, so that a missing input costs seconds and leaves no cluster, no retried
workers and no run stuck in RUNNING.

    init_dir = check_run_inputs(cfg)       # the init_from model dir, or None; RunInputError

On object storage (``s3://``, README "Storage") the same checks say when the store does not
answer or a bucket is missing, for the shards and for Ray Train's storage path.

The error names the key, what was looked for and the next step (the ``jobs/preprocess.py``
line that makes a shard set, the stage to train first).
"""

from __future__ import annotations

from fovea.pipelines.shard_sets import missing_shard_sets, missing_shards_message
from fovea.pipelines.shard_stages import stage_mismatch_message, stage_mismatches
from fovea.pipelines.storage import Location, StorageError, check_bucket
from fovea.platform.config import ConfigError, RunConfig, absolute_paths


class RunInputError(ConfigError):
    """A run's input (shards, init_from checkpoint) is not there; the message says how to get it."""


def check_shards(cfg: RunConfig, source: str = "") -> None:
    where = f" (config {source})" if source else ""
    try:  # shards on object storage: a store that cannot be reached or a missing bucket says so
        missing = missing_shard_sets(cfg.data)
        # shards tokenized for another stage's loss rule (pipelines/shard_stages.py, DESIGN.md 2.3)
        wrong = stage_mismatches(cfg.data, cfg.training.stage) if cfg.data.check_shard_stage and not missing else []
    except StorageError as e:
        raise RunInputError(f"this run's shards cannot be read{where}: {e}") from None
    if missing:
        raise RunInputError(missing_shards_message(missing, cfg.training.stage).replace(":", where + ":", 1))
    if wrong:
        raise RunInputError(stage_mismatch_message(wrong, cfg.training.stage).replace(":", where + ":", 1))


def check_init_from(cfg: RunConfig) -> Location | None:
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


def check_storage(cfg: RunConfig) -> None:
    """Ray Train's storage path on object storage: its bucket is there and the store answers."""
    try:
        check_bucket(cfg.storage_path())
    except StorageError as e:
        key = f"cluster.storage_path={cfg.cluster.storage_path!r}" if cfg.cluster.storage_path else \
            f"runs_dir={cfg.runs_dir!r}"
        raise RunInputError(f"this run's checkpoints cannot be written ({key}): {e}") from None


def check_model_settings(cfg: RunConfig, source: str = "") -> None:
    """Model settings that need the models' own configs (their config.json, no weights):
    ``model.dino_checkpoint_layers`` at most DINOv2's block count."""
    if cfg.model.dino_checkpoint_layers is None:
        return
    from fovea.model.build import check_dino_checkpoint_layers
    from fovea.model.store import model_config

    try:
        layers = model_config(cfg.model.dino).num_hidden_layers
    except (OSError, ValueError):  # a model that is not there: building it says so, with the next step
        return
    try:
        check_dino_checkpoint_layers(cfg.model, layers, f" (config {source})" if source else "")
    except ValueError as e:
        raise RunInputError(str(e)) from None


def check_run_inputs(cfg: RunConfig, source: str = "") -> Location | None:
    """The model settings, shards, then ``init_from``, where the run will read them (relative
    paths placed against the project root: FOVEA_ROOT may be s3://...), then where its
    checkpoints go; returns the ``init_from`` model folder (or None)."""
    cfg = absolute_paths(cfg)
    check_model_settings(cfg, source)
    check_shards(cfg, source)
    init_dir = check_init_from(cfg)
    check_storage(cfg)
    return init_dir
