"""Evaluation as a job (what ``jobs/evaluate.py`` runs): the training run a checkpoint came
from (its config, its MLflow run as the parent), ``run_evaluation`` inside one Ray task (or in
this process), and the results as JSON.

The Ray task asks for ``num_gpus=1`` when the cluster has a GPU (``cluster.use_gpu``), else
``num_cpus=1``, on the cluster at ``cluster.address`` / RAY_ADDRESS, or on a local Ray started here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fovea.platform.config import RunConfig
from fovea.platform.eval.report import jsonable, summary_text

log = logging.getLogger("fovea.evaluate")


def run_dir_of(checkpoint: str) -> Path | None:
    """The Ray run dir (holding resolved_config.yaml) of a checkpoint / model / run dir."""
    p = Path(checkpoint).expanduser()
    for d in (p, p.parent, p.parent.parent):
        if (d / "resolved_config.yaml").is_file():
            return d
    return None


def training_config_of(checkpoint: str) -> str | None:
    """Without --config: the training run's resolved_config.yaml (data, eval and tracking
    settings of the run that wrote the checkpoint), when the checkpoint is a path."""
    d = run_dir_of(checkpoint)
    return str(d / "resolved_config.yaml") if d else None


def parent_run_tags(checkpoint: str) -> dict[str, str]:
    """Tags that nest the evaluation's MLflow run under the training run of ``checkpoint``."""
    d = run_dir_of(checkpoint)
    if d and (d / "mlflow_run_id").is_file():
        return {"mlflow.parentRunId": (d / "mlflow_run_id").read_text().strip()}
    return {}


def evaluate_task(cfg_json: dict, checkpoint: str, kwargs: dict) -> dict:
    """What runs on the Ray worker (or in-process with --local): the results without
    per-item records (small enough for the driver and the JSON file)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from fovea.platform.eval.harness import run_evaluation

    cfg = RunConfig.model_validate(cfg_json)
    res = run_evaluation(cfg, checkpoint=checkpoint, **kwargs)
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
                        progress: bool = True) -> dict[str, Any]:
    """Evaluate ``checkpoint`` in a Ray task (``local``: in this process), print the summary
    and, with ``out``, write the results JSON there (its files beside it unless ``out_dir``).
    Without ``run_id`` the evaluation's MLflow run is nested under the checkpoint's training run."""
    kwargs: dict[str, Any] = {"reference": reference, "run_id": run_id, "out_dir": out_dir,
                              "progress": progress, "echo": local}
    tags = {} if run_id else parent_run_tags(checkpoint)
    if tags:
        kwargs["tags"] = tags
    if out_dir is None and out:
        kwargs["out_dir"] = str(Path(out).with_suffix("")) + "_files"
    if local:
        results = evaluate_task(cfg.model_dump(mode="json"), checkpoint, kwargs)
    else:
        results = _in_ray_task(cfg, checkpoint, kwargs)
        print(summary_text(results), flush=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=2))
        print(f"results: {out}")
    return results
