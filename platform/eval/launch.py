"""Evaluation as a job (what ``jobs/evaluate.py`` runs): the training run a checkpoint came
from (its config, its MLflow run as the parent), ``run_evaluation`` inside one Ray task (or in
this process), and the results as JSON.

The Ray task asks for ``num_gpus=1`` when the cluster has a GPU (``cluster.use_gpu``), else
``num_cpus=1``, on the cluster at ``cluster.address`` / RAY_ADDRESS, or on a local Ray started here.

The checkpoint, ``--out`` and ``--out-dir`` may be URLs (``s3://bucket/...``,
``fovea.pipelines.storage``): the task evaluates into a local folder and uploads its files there.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from fovea.pipelines import storage
from fovea.platform.config import ConfigError, RunConfig, absolute_paths
from fovea.platform.eval.report import jsonable, summary_text
from fovea.platform.paths import RootError, resolve, resolve_checkpoint_ref

log = logging.getLogger("fovea.evaluate")


def run_dir_of(checkpoint: str) -> storage.Location | None:
    """The Ray run dir (holding resolved_config.yaml) of a checkpoint / model / run dir (a path or URL)."""
    p = storage.location(checkpoint)
    for d in (p, storage.parent(p), storage.parent(storage.parent(p))):
        if storage.isfile(storage.join(d, "resolved_config.yaml")):
            return d
    return None


def training_config_of(checkpoint: str) -> str | None:
    """Without --config: the training run's resolved_config.yaml (data, eval and tracking
    settings of the run that wrote the checkpoint), when the checkpoint is a path (a URL's is
    copied to a local temporary file)."""
    d = run_dir_of(checkpoint)
    return str(storage.local_file(storage.join(d, "resolved_config.yaml"))) if d else None


def parent_run_tags(checkpoint: str) -> dict[str, str]:
    """Tags that nest the evaluation's MLflow run under the training run of ``checkpoint``."""
    d = run_dir_of(checkpoint)
    try:
        return {"mlflow.parentRunId": storage.read_text(storage.join(d, "mlflow_run_id")).strip()} if d else {}
    except FileNotFoundError:
        return {}


def evaluate_task(cfg_json: dict, checkpoint: str, kwargs: dict) -> dict:
    """What runs on the Ray worker (or in-process with --local): the results without
    per-item records (small enough for the driver and the JSON file)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from fovea.platform.eval.harness import run_evaluation

    cfg = RunConfig.model_validate(cfg_json)
    dest = kwargs.get("out_dir")
    if not (dest and storage.is_url(dest)):
        return jsonable(run_evaluation(cfg, checkpoint=checkpoint, **kwargs))
    with tempfile.TemporaryDirectory(prefix="fovea-eval-") as tmp:  # evaluated here, then uploaded
        try:
            res = run_evaluation(cfg, checkpoint=checkpoint, **{**kwargs, "out_dir": tmp})
        finally:
            storage.put_dir(tmp, dest)
    res["files"] = {k: str(storage.join(dest, Path(v).name)) for k, v in res.get("files", {}).items()}
    return jsonable(res)


def _in_ray_task(cfg: RunConfig, checkpoint: str, kwargs: dict) -> dict:
    from fovea.platform.runs.cluster import cluster_gpus, connect

    ray = connect(cfg.cluster.address)
    gpus = cluster_gpus()
    use_gpu = gpus > 0 if cfg.cluster.use_gpu == "auto" else bool(cfg.cluster.use_gpu)
    opts = {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": 1}
    log.info("evaluating in a Ray task with %s", opts)
    task = ray.remote(max_retries=0, **opts)(evaluate_task)
    return ray.get(task.remote(cfg.model_dump(mode="json"), checkpoint, kwargs))


def evaluate_checkpoint(cfg: RunConfig, checkpoint: str, *, local: bool = False, out: str | None = None,
                        out_dir: str | None = None, run_id: str | None = None, reference: bool = True,
                        progress: bool = True, benchmarks_key: str = "eval.benchmarks_dir") -> dict[str, Any]:
    """Evaluate ``checkpoint`` in a Ray task (``local``: in this process), print the summary
    and, with ``out``, write the results JSON there (its files beside it unless ``out_dir``).
    Without ``run_id`` the evaluation's MLflow run is nested under the checkpoint's training run.
    Relative paths resolve here, against the project root, before the Ray task runs elsewhere;
    the benchmarks folder is checked here too (``benchmarks_key`` names it in the error), before
    Ray or MLflow start."""
    cfg = absolute_paths(cfg)
    if cfg.eval.benchmarks_dir:
        from fovea.platform.eval.benchmarks import check_benchmarks_dir

        check_benchmarks_dir(cfg.eval.benchmarks_dir, benchmarks_key)
    try:
        checkpoint = resolve_checkpoint_ref(checkpoint, "--checkpoint")
        out, out_dir = (resolve(p, flag) if p else p for p, flag in ((out, "--out"), (out_dir, "--out-dir")))
    except RootError as e:
        raise ConfigError(str(e)) from None
    kwargs: dict[str, Any] = {"reference": reference, "run_id": run_id, "out_dir": out_dir,
                              "progress": progress, "echo": local}
    tags = {} if run_id else parent_run_tags(checkpoint)
    if tags:
        kwargs["tags"] = tags
    if out_dir is None and out:
        stem = str(out)[: -len(Path(str(out)).suffix)] if Path(str(out)).suffix else str(out)
        kwargs["out_dir"] = stem + "_files"
    if local:
        results = evaluate_task(cfg.model_dump(mode="json"), checkpoint, kwargs)
    else:
        results = _in_ray_task(cfg, checkpoint, kwargs)
        print(summary_text(results), flush=True)
    if out:
        storage.write_text(out, json.dumps(results, indent=2))
        print(f"results: {out}")
    return results
