"""Running a sweep plan on Ray Tune: the trial driver, the sweep's parent MLflow run, the
Tuner, resume, and the end-of-sweep results (ablations, LR ratios, scaling grids).

    from fovea.platform.sweep.plan import make_plan
    plan = make_plan("ablations", only=["baseline", "A6"], base_config="stage1_135m",
                     sets=["training.max_steps=2000"], gpus_per_trial=1)
    summary = run_sweep(plan)                       # or resume_sweep(tune_dir)

The plan itself (trial configs, resources) comes from ``fovea.platform.sweep.plan``; the
results table, CSV and plot from ``fovea.platform.sweep.results``.

How a sweep runs
----------------
* **Trial configs and resources** are fixed in the plan (``sweep_plan``): base config,
  space ``common``, ``--set`` / ``--samples``, experiment ``overrides``; each trial named
  ``<sweep>-<experiment>`` (its Ray Train run name and its MLflow run name); GPU workers per
  trial and ``max_concurrent_trials``.
* **Tune/Train interop (Train V2).** ``Tuner(TorchTrainer)`` is refused under Train V2, so the
  Tuner runs a *driver function* per trial (``trial_driver``, holding 1 CPU) that calls
  ``fovea.platform.stages.train_stage(cfg, callbacks=[TuneReportCallback()], parent_run_id=...,
  connect_ray=False)`` (``fit`` + the end-of-run artifacts): one ``TorchTrainer`` per trial,
  whose reports reach Tune.
* **ASHA** (optional) stops bad trials early on ``val_loss`` with ``time_attr="step"``.  The
  training loop reports a stand-in (training loss) under ``val_loss`` between evaluations;
  ``SweepReportCallback`` replaces it by the latest real validation loss before Tune sees it.
* **MLflow.** One parent run per sweep (run name = sweep name); each trial's run is its child
  (tag ``mlflow.parentRunId``), tagged ``sweep``, ``experiment_id``, ``overrides``,
  ``trial_start``/``trial_end``, with ``override.<key>`` params and every training metric.
  At the end: ``results/results.{csv,md,png}`` and ``results/loss_overlay.png`` on the parent run, the
  sweep's chart view saved with the experiment, and the table printed; for a scaling space
  also the scaling report (``scaling/`` on the parent run, fovea.platform.sweep.scaling).
* **Resume.** Tune state lives in ``<runs_dir>/tune/<sweep>`` with ``sweep_plan.json`` and
  ``parent_run_id``; ``resume_sweep`` calls ``Tuner.restore(..., resume_errored=True)``:
  finished trials are not rerun, an interrupted trial resumes from its Train checkpoint and
  keeps logging into the same MLflow child run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fovea.pipelines import storage
from fovea.platform.config import RunConfig
from fovea.platform.sweep.plan import PLAN_FILE, describe_plan, load_plan, save_plan, trial_steps
from fovea.platform.sweep.results import (
    best_effort,
    collect_results,
    log_override_params,
    store_sweep_view,
    ui_links,
    write_results,
)
from fovea.platform.sweep.scaling import after_sweep
from fovea.search_spaces.spaces import format_overrides

log = logging.getLogger("fovea.sweep")

PARENT_FILE = "parent_run_id"


# -- the trial driver (runs inside a Tune trial, holding 1 CPU) -----------------------------

def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def _report_callback():
    """TuneReportCallback that shows Tune the latest *real* validation loss as ``val_loss``."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class SweepReportCallback(TuneReportCallback):
        def __init__(self):
            super().__init__()
            self._last_val: float | None = None

        def after_report(self, run_context, metrics, checkpoint):
            m = [dict(x) for x in metrics]
            if m:
                if "val_loss_fine" in m[0] or "val_loss_coarse" in m[0]:  # an evaluation happened
                    self._last_val = m[0].get("val_loss")
                elif self._last_val is not None:
                    m[0]["val_loss"] = self._last_val
                m[0]["val_loss_is_real"] = 1.0 if self._last_val is not None else 0.0
            return super().after_report(run_context, m, checkpoint)

    return SweepReportCallback()


def trial_driver(config: dict[str, Any], plan: dict[str, Any]) -> None:
    """One Tune trial: the experiment's config -> ``fit`` (one TorchTrainer), child of the sweep."""
    from fovea.platform.stages import train_stage

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    exp = config["experiment"]
    cfg = RunConfig.model_validate(plan["configs"][exp])
    resumed = storage.exists(storage.join(cfg.storage_path(), cfg.name, "mlflow_run_id"))
    start = _now()
    tags = {"sweep": plan["sweep"], "space": plan["space"], "sweep_role": "trial", "experiment_id": exp,
            "overrides": format_overrides(plan["overrides"][exp]), "trial_attempt_start": start}
    if not resumed:
        tags["trial_start"] = start
    print(f"[sweep {plan['sweep']}] trial {exp} {'resumed' if resumed else 'started'} at {start} "
          f"(run {cfg.name}, {cfg.cluster.num_workers} worker(s), gpu={cfg.cluster.use_gpu})", flush=True)
    summary = train_stage(cfg, callbacks=[_report_callback()], extra_tags=tags,
                  parent_run_id=plan.get("parent_run_id"), connect_ray=False)
    end = _now()
    print(f"[sweep {plan['sweep']}] trial {exp} finished at {end} ({summary.wall_s:.0f}s in fit)", flush=True)
    if summary.mlflow_run_id and cfg.tracking.enabled:
        best_effort(lambda: _tag_trial_end(cfg.tracking_uri(), summary.mlflow_run_id, end, plan["overrides"][exp]),
                    "tagging the trial's MLflow run")


def _tag_trial_end(uri: str, run_id: str, end: str, overrides: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    client.set_tag(run_id, "trial_end", end)
    log_override_params(client, run_id, overrides)


def make_trainable(plan: dict[str, Any]):
    from ray import tune

    return tune.with_resources(tune.with_parameters(trial_driver, plan=plan), {"CPU": 1})


def _trial_str(trial) -> str:
    return str(trial.config.get("experiment", trial.trial_id))


def _trial_dirname(trial) -> str:
    return f"{trial.config.get('experiment', 'trial')}_{trial.trial_id}"


# -- the parent run ----------------------------------------------------------------------

def open_parent(plan: dict[str, Any]) -> str | None:
    """Create the sweep's parent MLflow run, or reopen the one saved in the sweep folder."""
    if not plan.get("tracking_enabled", True):
        return None
    from fovea.platform.runs.tracking import Tracker, git_commit

    id_file = Path(plan["tune_dir"]) / PARENT_FILE
    run_id = id_file.read_text().strip() if id_file.exists() else None
    tags = {"sweep": plan["sweep"], "space": plan["space"], "sweep_role": "parent",
            "base_config": plan["base_config"], "git_commit": git_commit()}
    tracker = Tracker(plan["tracking_uri"], plan["mlflow_experiment"], run_id=run_id, run_name=plan["sweep"],
                      tags=tags, artifact_location=plan.get("artifact_location"))
    if not tracker.run_id:
        return None
    if run_id is None:
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(tracker.run_id)
        tracker.log_params({"space": plan["space"], "base_config": plan["base_config"],
                            "experiments": ",".join(plan["experiments"]), "sets": " ".join(plan["sets"]),
                            "samples": plan.get("samples"), "scheduler": plan.get("scheduler") or "none",
                            "gpus_per_trial": plan["gpus_per_trial"],
                            "max_concurrent_trials": plan["max_concurrent_trials"]})
    else:
        def reopen():
            from mlflow.tracking import MlflowClient

            client = MlflowClient(plan["tracking_uri"])
            client.update_run(run_id, status="RUNNING")
            client.set_tag(run_id, "resumed_at", _now())
        best_effort(reopen, "reopening the parent run")
    return tracker.run_id


def finish_parent(plan: dict[str, Any], status: str) -> None:
    if not plan.get("parent_run_id"):
        return

    def done():
        from mlflow.tracking import MlflowClient

        MlflowClient(plan["tracking_uri"]).set_terminated(plan["parent_run_id"], status)
    best_effort(done, "closing the parent run")


# -- running -------------------------------------------------------------------------------

@dataclass
class SweepSummary:
    sweep: str
    tune_dir: Path
    parent_run_id: str | None
    rows: list[dict[str, Any]]
    markdown: str
    statuses: dict[str, str]
    interrupted: bool
    files: dict[str, Path]


def _scheduler(plan: dict[str, Any]):
    if plan.get("scheduler") != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    cfgs = [RunConfig.model_validate(c) for c in plan["configs"].values()]
    max_t = max(trial_steps(c) for c in cfgs)
    grace = plan.get("grace_steps")
    if not grace:
        evals = [c.eval.every_steps for c in cfgs if c.eval.every_steps > 0 and c.data.val_shards]
        grace = min(evals) if evals else max(1, max_t // 8)
    grace = max(1, min(int(grace), max_t))
    # stop_last_trials=False: a trial that reaches max_t ends by itself (fit returns, its MLflow
    # run is closed) instead of being stopped by the scheduler at its last report.
    return ASHAScheduler(time_attr="step", metric="val_loss", mode="min", max_t=max_t,
                         grace_period=grace, reduction_factor=plan.get("reduction_factor") or 2,
                         stop_last_trials=False)


def _connect(plan: dict[str, Any], address: str | None) -> None:
    from fovea.platform.runs.cluster import connect

    connect(address)


def cluster_resources() -> tuple[float, int]:
    from fovea.platform.runs.cluster import cluster_cpus, cluster_gpus

    return cluster_cpus(), cluster_gpus()


def check_fresh(plan: dict[str, Any]) -> None:
    """A new sweep must not reuse the Tune folder or the Train runs of an earlier one."""
    d = Path(plan["tune_dir"])
    if (d / PLAN_FILE).exists() or (d / "tuner.pkl").exists():
        raise FileExistsError(f"sweep {plan['sweep']!r} already exists in {d}: resume it with --resume "
                              f"--name {plan['sweep']}, or pick another --name")
    for e in plan["experiments"]:
        cfg = RunConfig.model_validate(plan["configs"][e])
        rd = storage.join(cfg.storage_path(), cfg.name)  # a folder, or a URL (cluster.storage_path)
        if storage.listdir(rd):
            raise FileExistsError(f"Train run folder {rd} already exists (an earlier sweep named "
                                  f"{plan['sweep']!r}?): pick another --name")


def run_sweep(plan: dict[str, Any], *, address: str | None = None, connect_ray: bool = True,
              resume: bool = False) -> SweepSummary:
    """Run (or, with ``resume``, continue) a sweep; build and log the results at the end."""
    from ray import tune

    if connect_ray:
        _connect(plan, address)
    tune_dir = Path(plan["tune_dir"])
    if not resume:
        check_fresh(plan)
    tune_dir.mkdir(parents=True, exist_ok=True)
    plan["parent_run_id"] = open_parent(plan)
    save_plan(plan)
    print(describe_plan(plan), flush=True)
    if plan["parent_run_id"]:
        best_effort(lambda: _log_parent_text(plan, json.dumps(plan, indent=1, default=str), "sweep_plan.json"),
                    "logging the plan")

    trainable = make_trainable(plan)
    if resume and tune.Tuner.can_restore(str(tune_dir)):
        print(f"resuming sweep {plan['sweep']} from {tune_dir} (finished trials are kept)", flush=True)
        tuner = tune.Tuner.restore(str(tune_dir), trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"experiment": tune.grid_search(plan["experiments"])},
            tune_config=tune.TuneConfig(
                num_samples=1,
                max_concurrent_trials=plan["max_concurrent_trials"],
                scheduler=_scheduler(plan),
                trial_name_creator=_trial_str,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=plan["sweep"],
                storage_path=str(tune_dir.parent),
                failure_config=tune.FailureConfig(max_failures=0),
                verbose=1,
            ),
        )
    try:
        grid = tuner.fit()
    except BaseException:
        finish_parent(plan, "FAILED")
        raise
    # What Tune saved is what a resume acts on (after Ctrl-C the in-memory trials read TERMINATED).
    statuses = {**tune_statuses(grid, plan), **trial_states(tune_dir)}
    interrupted = any(s in ("PENDING", "RUNNING", "PAUSED") for s in statuses.values())
    summary = finish_sweep(plan, statuses, interrupted)
    return summary


def resume_sweep(tune_dir: str | Path, *, address: str | None = None, connect_ray: bool = True) -> SweepSummary:
    plan = load_plan(tune_dir)
    return run_sweep(plan, address=address, connect_ray=connect_ray, resume=True)


def trial_states(tune_dir: str | Path) -> dict[str, str]:
    """experiment -> trial status as last saved in the Tune folder (for monitoring and tests)."""
    # Newest by the timestamp in the name (Tune stamps each session's file; mtimes are not
    # reliable: the final sync rewrites every file of the folder).
    files = sorted(Path(tune_dir).glob("experiment_state-*.json"), key=lambda p: p.name)
    if not files:
        return {}
    try:
        data = json.loads(files[-1].read_text())
    except (OSError, ValueError):
        return {}  # being rewritten
    out = {}
    for item in data.get("trial_data", []):
        t = json.loads(item[0]) if isinstance(item, (list, tuple)) else item
        out[str(t.get("config", {}).get("experiment"))] = str(t.get("status"))
    return out


def tune_statuses(grid, plan: dict[str, Any]) -> dict[str, str]:
    """experiment -> Tune trial status (TERMINATED, ERROR, PENDING/RUNNING when interrupted)."""
    out: dict[str, str] = {}
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None)
    if trials:
        for t in trials:
            out[str(t.config.get("experiment"))] = str(t.status)
    else:
        for r in grid:
            out[str(r.config.get("experiment"))] = "ERROR" if r.error else "TERMINATED"
    return out


def finish_sweep(plan: dict[str, Any], statuses: dict[str, str], interrupted: bool) -> SweepSummary:
    rows: list[dict[str, Any]] = []
    files: dict[str, Path] = {}
    md = ""
    if plan.get("parent_run_id"):
        rows = best_effort(lambda: collect_results(plan, statuses), "collecting results") or []
    if rows:
        out = Path(plan["tune_dir"]) / "results"
        links = best_effort(lambda: _links(plan, rows), "building UI links")
        files = write_results(rows, out, plan, links)
        md = files["md"].read_text()
        for f in files.values():
            best_effort(lambda f=f: _log_parent_artifact(plan, f, "results"), f"logging {f.name}")
        print("\n" + md, flush=True)
        after_sweep(plan)  # the scaling report, for a scaling space
    elif not plan.get("parent_run_id"):
        print("MLflow tracking is off: no results table (see the Tune folder for raw results)", flush=True)
    if interrupted:
        status = "KILLED"
        print(f"sweep {plan['sweep']} interrupted; continue it with: python jobs/sweep.py --resume "
              f"--name {plan['sweep']} --runs-dir {plan['runs_dir']}", flush=True)
    elif any(s == "ERROR" for s in statuses.values()):
        status = "FAILED"
    else:
        status = "FINISHED"
    finish_parent(plan, status)
    return SweepSummary(plan["sweep"], Path(plan["tune_dir"]), plan.get("parent_run_id"), rows, md,
                        statuses, interrupted, files)


def _links(plan: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    exp_id = MlflowClient(plan["tracking_uri"]).get_run(plan["parent_run_id"]).info.experiment_id
    store_sweep_view(plan["tracking_uri"], exp_id, plan["sweep"])
    return ui_links(exp_id, [r["run_id"] for r in rows if r.get("run_id")], plan["sweep"])


def _log_parent_artifact(plan: dict[str, Any], path: Path, artifact_path: str | None) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(plan["tracking_uri"]).log_artifact(plan["parent_run_id"], str(path), artifact_path)


def _log_parent_text(plan: dict[str, Any], text: str, name: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(plan["tracking_uri"]).log_text(plan["parent_run_id"], text, name)
