"""A scaling sweep's runs as points for a scaling law: for each child run of the sweep's parent
MLflow run, the LLM size N, the samples seen D, the training FLOPs C and the loss curve.

    plan = find_plan("scaling_flops-20260101-120000", runs_dir="runs")   # the sweep's plan
    curves, problems = read_curves(plan)                                  # one RunCurve a run

* **N** is the LLM's parameter count (``--params non_embedding``, the default: without the token
  embedding, which is a table lookup and most of a tiny model; ``all``: every LLM parameter),
  counted from the model's config on the meta device (no weights are read).
* **D** is ``samples_seen`` at each evaluation, **C** = D x the training FLOPs of one sample
  from the project's FLOP model (``fovea.platform.profiling.throughput.flops_per_sample``) at
  the run's measured mean of real frames a sample (``frames_per_s / samples_per_s`` over its log
  windows; ``data.max_frames`` without them) and ``text_tokens`` text tokens (128 by default:
  the convention of the reference's iso-FLOP grid, DESIGN.md 5.2).
* **The curve** is ``val_loss`` at every evaluation (``loss``, the training loss of each log
  window, when a run has no validation), with the best and the final value.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fovea.model.store import model_config
from fovea.platform.sweep.plan import PLAN_FILE, find_sweep_dir, load_plan
from fovea.platform.sweep.results import child_runs

TEXT_TOKENS = 128  # text tokens a sample in the FLOP model (the reference's iso-FLOP convention)
PARAM_COUNTS = ("non_embedding", "all")
FALL_MARGIN = 0.01  # a curve "falls" when its last value is this fraction below its first


@dataclass
class RunCurve:
    """One run of the sweep as scaling-law data."""

    experiment: str
    run_id: str
    status: str
    llm: str
    dino: str
    n_params: float  # N: the LLM parameters counted as asked (``PARAM_COUNTS``)
    llm_params: int
    llm_non_embedding: int
    frames: float  # mean real frames a sample
    flops_per_sample: float  # training FLOPs (3x forward) of one sample
    samples: np.ndarray  # D at each point of the curve
    loss: np.ndarray  # the loss at each point
    loss_name: str  # "val_loss", or "loss" without validation
    planned_samples: int
    schedule: str
    warmup_samples: float
    notes: list[str] = field(default_factory=list)

    @property
    def flops(self) -> np.ndarray:
        return self.samples * self.flops_per_sample

    @property
    def final_samples(self) -> float:
        return float(self.samples[-1]) if len(self.samples) else 0.0

    @property
    def final_flops(self) -> float:
        return self.final_samples * self.flops_per_sample

    @property
    def best_loss(self) -> float | None:
        return float(np.min(self.loss)) if len(self.loss) else None

    @property
    def final_loss(self) -> float | None:
        return float(self.loss[-1]) if len(self.loss) else None

    @property
    def falls(self) -> bool:
        """The curve goes down: its last value at least ``FALL_MARGIN`` below its first."""
        return len(self.loss) >= 2 and self.loss[-1] < self.loss[0] * (1 - FALL_MARGIN)

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"


# -- the sweep -------------------------------------------------------------------------------

def find_plan(sweep: str, runs_dir: str | Path | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """The sweep's plan: from its Tune folder under ``runs_dir``, else from the ``sweep_plan.json``
    its parent MLflow run holds (found by the tags ``sweep`` and ``sweep_role=parent``)."""
    if runs_dir is not None:
        try:
            return load_plan(find_sweep_dir(runs_dir, sweep))
        except FileNotFoundError:
            if tracking_uri is None:
                raise
    if tracking_uri is None:
        raise FileNotFoundError(f"sweep {sweep!r}: give --runs-dir (its Tune folder) or --tracking-uri")
    return plan_from_mlflow(sweep, tracking_uri)


def plan_from_mlflow(sweep: str, tracking_uri: str) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(ids, filter_string=f"tags.sweep = '{sweep}' and tags.sweep_role = 'parent'",
                               order_by=["attributes.start_time DESC"], max_results=1) if ids else []
    if not found:
        raise FileNotFoundError(f"no parent run of sweep {sweep!r} in {tracking_uri}")
    path = client.download_artifacts(found[0].info.run_id, PLAN_FILE)
    plan = json.loads(Path(path).read_text())
    plan["parent_run_id"], plan["tracking_uri"] = found[0].info.run_id, tracking_uri
    return plan


# -- model sizes and FLOPs -----------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def llm_param_counts(ref: str) -> tuple[int, int]:
    """(all parameters, without the token embedding) of the LLM ``ref``, built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = model_config(ref)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings()
    untied = head is not None and head.weight is not model.get_input_embeddings().weight
    return total, total - embedding - (head.weight.numel() if untied else 0)


def sample_flops(llm: str, dino: str, frames: float, text_tokens: int = TEXT_TOKENS) -> float:
    """Training FLOPs of one sample (the FLOP model of platform/profiling/throughput.py)."""
    from fovea.platform.profiling.throughput import flops_per_sample

    return flops_per_sample(frames, text_tokens, model_config(dino), model_config(llm))


# -- the runs ------------------------------------------------------------------------------------

def read_curves(plan: dict[str, Any], params: str = "non_embedding",
                text_tokens: int = TEXT_TOKENS) -> tuple[list[RunCurve], dict[str, str]]:
    """The sweep's runs as ``RunCurve``s (the plan's order), and experiment -> why it has none."""
    from mlflow.tracking import MlflowClient

    if params not in PARAM_COUNTS:
        raise ValueError(f"params must be one of {PARAM_COUNTS}, got {params!r}")
    client = MlflowClient(plan["tracking_uri"])
    latest: dict[str, Any] = {}
    for r in child_runs(client, plan["parent_run_id"]):
        exp = r.data.tags.get("experiment_id")
        if exp and (exp not in latest or r.info.start_time > latest[exp].info.start_time):
            latest[exp] = r
    curves, problems = [], {}
    for exp in plan["experiments"]:
        run = latest.get(exp)
        if run is None:
            problems[exp] = "not started (no MLflow run)"
            continue
        try:
            curve = run_curve(client, run, plan["configs"].get(exp, {}), params, text_tokens)
        except (OSError, ValueError, KeyError) as e:
            problems[exp] = f"cannot be sized: {type(e).__name__}: {e}"
            continue
        if curve is None:
            problems[exp] = f"{run.info.status}, no loss logged yet"
        else:
            curves.append(curve)
    return curves, problems


def _history(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def _config_value(run, cfg: dict[str, Any], key: str, default: Any = None) -> Any:
    """A config value of the run: its logged param, else the plan's config."""
    if key in run.data.params:
        return run.data.params[key]
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return default if node is None else node


def measured_frames(client, run_id: str) -> float | None:
    """Mean real frames a sample over the run's log windows (None without throughput metrics)."""
    fps, sps, dt = (_history(client, run_id, k) for k in ("frames_per_s", "samples_per_s", "window_s"))
    steps = [s for s in sps if s in fps]
    samples = sum(sps[s] * dt.get(s, 1.0) for s in steps)
    return sum(fps[s] * dt.get(s, 1.0) for s in steps) / samples if samples > 0 else None


def run_curve(client, run, cfg: dict[str, Any], params: str, text_tokens: int) -> RunCurve | None:
    """One child run as a ``RunCurve`` (None when it has logged no loss yet)."""
    rid = run.info.run_id
    seen = _history(client, rid, "samples_seen")
    loss_name, hist = "val_loss", _history(client, rid, "val_loss")
    if not hist:
        loss_name, hist = "loss", _history(client, rid, "loss")
    steps = sorted(s for s in hist if s > 0 and math.isfinite(hist[s]))
    if not steps:
        return None
    batch = int(_config_value(run, cfg, "data.batch_size", 1)) * int(_config_value(run, cfg, "training.grad_accum", 1))
    known = sorted(seen)
    samples = (np.interp(steps, known, [seen[s] for s in known]) if known
               else np.array(steps, float) * batch * int(_config_value(run, cfg, "cluster.num_workers", 1)))
    llm, dino = str(_config_value(run, cfg, "model.llm")), str(_config_value(run, cfg, "model.dino"))
    frames = measured_frames(client, rid)
    notes = [] if frames is not None else ["no frames_per_s logged: FLOPs at data.max_frames frames a sample"]
    frames = frames if frames is not None else float(_config_value(run, cfg, "data.max_frames", 8))
    total, body = llm_param_counts(llm)
    planned = int(float(_config_value(run, cfg, "training.total_samples", 0)))
    status = run.info.status
    return RunCurve(
        experiment=run.data.tags["experiment_id"], run_id=rid, status=status, llm=llm, dino=dino,
        n_params=float(body if params == "non_embedding" else total), llm_params=total, llm_non_embedding=body,
        frames=frames, flops_per_sample=sample_flops(llm, dino, frames, text_tokens),
        samples=np.asarray(samples, float), loss=np.array([hist[s] for s in steps], float), loss_name=loss_name,
        planned_samples=planned, schedule=str(_config_value(run, cfg, "training.schedule", "")),
        warmup_samples=float(_config_value(run, cfg, "training.warmup_ratio", 0.0)) * planned, notes=notes)
