"""Ray Tune sweeps over the trainer: ablations, LR ratios, scaling grids (``jobs/sweep.py``).

    plan = make_plan("ablations", only=["baseline", "A6"], base_config="stage1_135m",
                     sets=["training.max_steps=2000"], gpus_per_trial=1)
    summary = run_sweep(plan)                       # or resume_sweep(tune_dir)

How a sweep runs
----------------
* **Trial configs.** For each experiment of the space: the base config file, then the
  space's ``common`` keys, then ``--set`` / ``--samples`` (all trials), then the
  experiment's own ``overrides`` (so an experiment always keeps its defining change).
  Each trial is named ``<sweep>-<experiment>``: that is its Ray Train run name (rerunning the
  name resumes from its checkpoints) and its MLflow run name.
* **Tune/Train interop (Train V2).** ``Tuner(TorchTrainer)`` is refused under Train V2, so the
  Tuner runs a *driver function* per trial (``trial_driver``, holding 1 CPU) that calls
  ``fovea.platform.trainer.fit(cfg, callbacks=[TuneReportCallback()], parent_run_id=...,
  connect_ray=False)``: one ``TorchTrainer`` per trial, whose reports reach Tune.
* **Resources.** With GPUs, ``--gpus-per-trial G`` gives each trial G GPU workers and
  ``max_concurrent_trials = GPUs // G`` (two 1-GPU trials side by side on two GPUs).  On CPU
  each trial keeps the config's ``cluster.num_workers`` and as many trials run at once as
  fit (driver 1 CPU + workers x ``cluster.cpus_per_worker``).
* **ASHA** (optional) stops bad trials early on ``val_loss`` with ``time_attr="step"``.  The
  training loop reports a stand-in (training loss) under ``val_loss`` between evaluations;
  ``SweepReportCallback`` replaces it by the latest real validation loss before Tune sees it.
* **MLflow.** One parent run per sweep (run name = sweep name); each trial's run is its child
  (tag ``mlflow.parentRunId``), tagged ``sweep``, ``experiment_id``, ``overrides``,
  ``trial_start``/``trial_end``, with ``override.<key>`` params and every training metric.
  At the end: ``results/results.{csv,md,png}`` on the parent run, and the table printed.
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

from fovea.platform.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    load_config,
    resolve_config_path,
)
from fovea.platform.sweep_results import (  # noqa: F401 - re-exported
    RESULT_COLUMNS,
    _log_override_params,
    _soft,
    child_runs,
    collect_results,
    max_overlap,
    plot_results,
    results_markdown,
    ui_links,
    write_results,
)
from fovea.search_spaces.spaces import (
    check_keys,
    format_overrides,
    load_search_space,
    set_dotted,
)

log = logging.getLogger("fovea.sweep")

PLAN_FILE = "sweep_plan.json"
PARENT_FILE = "parent_run_id"



# -- plan --------------------------------------------------------------------------------

def default_sweep_name(space: str) -> str:
    return f"{space}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def tune_root(runs_dir: str | Path) -> Path:
    return Path(runs_dir).resolve() / "tune"


def trial_name(sweep: str, experiment: str) -> str:
    return f"{sweep}-{experiment}"


def build_trial_config(base_config: str, common: dict[str, Any], sets: list[str], samples: int | None,
                       overrides: dict[str, Any], name: str, source: str) -> RunConfig:
    """base file -> space common -> --set / --samples -> experiment overrides -> name; validated."""
    raw = load_config(base_config).model_dump(mode="json")
    for k, v in common.items():
        set_dotted(raw, k, v)
    sets = list(sets) + ([f"training.total_samples={samples}"] if samples is not None else [])
    apply_overrides(raw, sets, source)
    for k, v in overrides.items():
        set_dotted(raw, k, v)
    raw["name"] = name
    raw["runs_dir"] = str(Path(raw.get("runs_dir") or "runs").resolve())  # trial drivers run elsewhere
    raw.setdefault("tracking", {})["run_name"] = None  # the MLflow child run is named like the trial
    try:
        return RunConfig.model_validate(raw)
    except Exception as e:  # noqa: BLE001 - pydantic ValidationError -> ConfigError with the source
        raise ConfigError(f"trial {name!r} ({source}): {e}") from None


def concurrency(cpus: float, gpus: int, n_trials: int, gpus_per_trial: int, num_workers: int,
                cpus_per_worker: float, driver_cpus: float = 1.0) -> int:
    """How many trials run at once: GPUs // G on GPU, else what fits in the CPUs."""
    if gpus_per_trial > 0 and gpus >= gpus_per_trial:
        by_gpu = gpus // gpus_per_trial
        by_cpu = int((cpus + 1e-9) // (driver_cpus + gpus_per_trial * cpus_per_worker))
        n = min(by_gpu, max(1, by_cpu))
    else:
        n = int((cpus + 1e-9) // (driver_cpus + num_workers * cpus_per_worker))
    return max(1, min(n, max(1, n_trials)))


def make_plan(space: str, *, only: list[str] | None = None, base_config: str = "stage1_135m",
              sets: list[str] | None = None, samples: int | None = None, scheduler: str | None = None,
              gpus_per_trial: int | None = None, name: str | None = None,
              max_concurrent: int | None = None, grace_steps: int | None = None,
              reduction_factor: int = 2, cluster_cpus: float | None = None,
              cluster_gpus: int | None = None) -> dict[str, Any]:
    """Resolve every trial's config and the sweep's resources into a JSON-able plan.

    ``cluster_cpus``/``cluster_gpus`` describe the Ray cluster (measured by ``run_sweep``
    when None); they decide GPU vs CPU trials and ``max_concurrent_trials``.
    """
    sp = load_search_space(space)
    experiments = sp.select(only)
    sets = list(sets or [])
    for item in sets:  # fail early, naming the key, before anything starts
        if "=" not in item:
            raise ConfigError(f"--set {item!r} is not of the form key.sub=value")
        check_keys({item.split("=", 1)[0].strip(): None}, "--set")
    resolve_config_path(base_config)
    sweep = name or default_sweep_name(sp.name)
    if any(c in sweep for c in " /\\:,"):
        raise ConfigError(f"sweep name {sweep!r} may not contain spaces, slashes, colons or commas")
    if scheduler not in (None, "none", "asha"):
        raise ConfigError(f"unknown scheduler {scheduler!r} (none | asha)")
    scheduler = None if scheduler in (None, "none") else scheduler

    source = f"{sp.path} + --base-config {base_config}"
    cfgs: dict[str, RunConfig] = {}
    for e in experiments:
        cfgs[e.name] = build_trial_config(base_config, sp.common, sets, samples, e.overrides,
                                          trial_name(sweep, e.name), f"{source} (experiment {e.name})")
    first = next(iter(cfgs.values()))
    for key, get in (("tracking.experiment", lambda c: c.tracking.experiment),
                     ("runs_dir", lambda c: c.runs_dir), ("tracking uri", lambda c: c.tracking_uri())):
        values = {get(c) for c in cfgs.values()}
        if len(values) > 1:
            raise ConfigError(f"all trials of a sweep must share {key}; got {sorted(values)}")

    gpus = int(cluster_gpus or 0)
    cpus = float(cluster_cpus if cluster_cpus is not None else 1.0)
    use_gpu = gpus > 0 and first.cluster.use_gpu is not False
    g = int(gpus_per_trial) if gpus_per_trial else (first.cluster.num_workers if use_gpu else 0)
    if use_gpu:
        if g > gpus:
            raise ConfigError(f"--gpus-per-trial {g} but the Ray cluster has {gpus} GPUs")
        for c in cfgs.values():
            c.cluster.num_workers = g
            c.cluster.use_gpu = True
    else:
        g = 0
        for c in cfgs.values():
            c.cluster.use_gpu = False
    n_conc = concurrency(cpus, gpus if use_gpu else 0, len(cfgs), g, first.cluster.num_workers,
                         first.cluster.cpus_per_worker)
    if max_concurrent:
        n_conc = max(1, int(max_concurrent))

    plan: dict[str, Any] = {
        "sweep": sweep,
        "space": sp.name,
        "space_file": str(sp.path),
        "description": sp.description,
        "base_config": base_config,
        "sets": sets,
        "samples": samples,
        "only": [e.name for e in experiments] if only else None,
        "scheduler": scheduler,
        "grace_steps": grace_steps,
        "reduction_factor": reduction_factor,
        "gpus_per_trial": g,
        "gpus_per_trial_requested": gpus_per_trial,
        "use_gpu": use_gpu,
        "cluster": {"cpus": cpus, "gpus": gpus},
        "max_concurrent_trials": n_conc,
        "runs_dir": first.runs_dir,
        "tune_dir": str(tune_root(first.runs_dir) / sweep),
        "tracking_uri": first.tracking_uri(),
        "tracking_enabled": first.tracking.enabled,
        "mlflow_experiment": first.tracking.experiment,
        "experiments": [e.name for e in experiments],
        "descriptions": {e.name: e.description for e in experiments},
        "overrides": {e.name: e.overrides for e in experiments},
        "configs": {k: c.model_dump(mode="json") for k, c in cfgs.items()},
        "created": datetime.now().isoformat(timespec="seconds"),
    }
    return plan


def trial_steps(cfg: RunConfig) -> int:
    from fovea.platform.optim import total_optimizer_steps

    return total_optimizer_steps(cfg.training, cfg.data.batch_size, cfg.cluster.num_workers)


def describe_plan(plan: dict[str, Any]) -> str:
    lines = [f"sweep {plan['sweep']}: space {plan['space']} ({len(plan['experiments'])} trials), "
             f"base config {plan['base_config']}",
             f"  resources: {'GPU' if plan['use_gpu'] else 'CPU'}, "
             + (f"{plan['gpus_per_trial']} GPU worker(s) per trial, " if plan["use_gpu"] else "")
             + f"max_concurrent_trials={plan['max_concurrent_trials']} "
             f"(cluster: {plan['cluster']['cpus']:g} CPUs, {plan['cluster']['gpus']} GPUs)",
             *([f"  NOTE: --gpus-per-trial {plan['gpus_per_trial_requested']} asked, but the Ray cluster has no "
                f"GPUs: trials run on CPU with cluster.num_workers from the config"]
               if plan.get("gpus_per_trial_requested") and not plan["use_gpu"] else []),
             f"  scheduler: {plan['scheduler'] or 'none (every trial runs to the end)'}",
             f"  --set for all trials: {' '.join(plan['sets']) or '(none)'}"
             + (f"; --samples {plan['samples']}" if plan.get("samples") is not None else ""),
             f"  Tune state: {plan['tune_dir']}",
             f"  MLflow: {plan['tracking_uri']} experiment {plan['mlflow_experiment']!r}"]
    for e in plan["experiments"]:
        cfg = RunConfig.model_validate(plan["configs"][e])
        lines.append(f"  - {trial_name(plan['sweep'], e)}: {format_overrides(plan['overrides'][e])} "
                     f"[{cfg.cluster.num_workers} worker(s), {trial_steps(cfg)} steps, "
                     f"{cfg.training.total_samples} samples]")
    return "\n".join(lines)


def save_plan(plan: dict[str, Any]) -> Path:
    d = Path(plan["tune_dir"])
    d.mkdir(parents=True, exist_ok=True)
    p = d / PLAN_FILE
    p.write_text(json.dumps(plan, indent=1, default=str))
    return p


def load_plan(tune_dir: str | Path) -> dict[str, Any]:
    p = Path(tune_dir) / PLAN_FILE
    if not p.exists():
        raise FileNotFoundError(f"no {PLAN_FILE} in {tune_dir}: not a sweep folder")
    return json.loads(p.read_text())


def find_sweep_dir(runs_dir: str | Path, name: str | None = None, space: str | None = None) -> Path:
    """The sweep folder to resume: by name, else the newest sweep (of ``space``, if given)."""
    root = tune_root(runs_dir)
    if name:
        d = root / name
        if not (d / PLAN_FILE).exists():
            raise FileNotFoundError(f"no sweep {name!r} under {root}")
        return d
    cands = [p.parent for p in root.glob(f"*/{PLAN_FILE}")]
    if space:
        cands = [d for d in cands if json.loads((d / PLAN_FILE).read_text()).get("space") == space]
    if not cands:
        raise FileNotFoundError(f"no sweep{f' of space {space!r}' if space else ''} to resume under {root}")
    return max(cands, key=lambda d: (d / PLAN_FILE).stat().st_mtime)


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
    from fovea.platform.trainer import fit

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    exp = config["experiment"]
    cfg = RunConfig.model_validate(plan["configs"][exp])
    run_dir = Path(cfg.storage_path()) / cfg.name
    resumed = (run_dir / "mlflow_run_id").exists()
    start = _now()
    tags = {"sweep": plan["sweep"], "space": plan["space"], "sweep_role": "trial", "experiment_id": exp,
            "overrides": format_overrides(plan["overrides"][exp]), "trial_attempt_start": start}
    if not resumed:
        tags["trial_start"] = start
    print(f"[sweep {plan['sweep']}] trial {exp} {'resumed' if resumed else 'started'} at {start} "
          f"(run {cfg.name}, {cfg.cluster.num_workers} worker(s), gpu={cfg.cluster.use_gpu})", flush=True)
    summary = fit(cfg, callbacks=[_report_callback()], extra_tags=tags,
                  parent_run_id=plan.get("parent_run_id"), connect_ray=False)
    end = _now()
    print(f"[sweep {plan['sweep']}] trial {exp} finished at {end} ({summary.wall_s:.0f}s in fit)", flush=True)
    if summary.mlflow_run_id and cfg.tracking.enabled:
        _soft(lambda: _tag_trial_end(cfg.tracking_uri(), summary.mlflow_run_id, end, plan["overrides"][exp]),
              "tagging the trial's MLflow run")


def _tag_trial_end(uri: str, run_id: str, end: str, overrides: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    client.set_tag(run_id, "trial_end", end)
    _log_override_params(client, run_id, overrides)


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
    from fovea.platform.tracking import Tracker, git_commit

    id_file = Path(plan["tune_dir"]) / PARENT_FILE
    run_id = id_file.read_text().strip() if id_file.exists() else None
    tags = {"sweep": plan["sweep"], "space": plan["space"], "sweep_role": "parent",
            "base_config": plan["base_config"], "git_commit": git_commit()}
    tracker = Tracker(plan["tracking_uri"], plan["mlflow_experiment"], run_id=run_id, run_name=plan["sweep"],
                      tags=tags)
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
        _soft(reopen, "reopening the parent run")
    return tracker.run_id


def finish_parent(plan: dict[str, Any], status: str) -> None:
    if not plan.get("parent_run_id"):
        return

    def done():
        from mlflow.tracking import MlflowClient

        MlflowClient(plan["tracking_uri"]).set_terminated(plan["parent_run_id"], status)
    _soft(done, "closing the parent run")


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
    from fovea.platform.cluster import connect

    connect(address)


def cluster_resources() -> tuple[float, int]:
    from fovea.platform.cluster import cluster_cpus, cluster_gpus

    return cluster_cpus(), cluster_gpus()


def check_fresh(plan: dict[str, Any]) -> None:
    """A new sweep must not reuse the Tune folder or the Train runs of an earlier one."""
    d = Path(plan["tune_dir"])
    if (d / PLAN_FILE).exists() or (d / "tuner.pkl").exists():
        raise FileExistsError(f"sweep {plan['sweep']!r} already exists in {d}: resume it with --resume "
                              f"--name {plan['sweep']}, or pick another --name")
    for e in plan["experiments"]:
        cfg = RunConfig.model_validate(plan["configs"][e])
        rd = Path(cfg.storage_path()) / cfg.name
        if rd.exists() and any(rd.iterdir()):
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
        _soft(lambda: _log_parent_text(plan, json.dumps(plan, indent=1, default=str), "sweep_plan.json"),
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
        rows = _soft(lambda: collect_results(plan, statuses), "collecting results") or []
    if rows:
        out = Path(plan["tune_dir"]) / "results"
        links = _soft(lambda: _links(plan, rows), "building UI links")
        files = write_results(rows, out, plan, links)
        md = files["md"].read_text()
        for f in files.values():
            _soft(lambda f=f: _log_parent_artifact(plan, f, "results"), f"logging {f.name}")
        print("\n" + md, flush=True)
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
    return ui_links(exp_id, [r["run_id"] for r in rows if r.get("run_id")], plan["sweep"])


def _log_parent_artifact(plan: dict[str, Any], path: Path, artifact_path: str | None) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(plan["tracking_uri"]).log_artifact(plan["parent_run_id"], str(path), artifact_path)


def _log_parent_text(plan: dict[str, Any], text: str, name: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(plan["tracking_uri"]).log_text(plan["parent_run_id"], text, name)


def list_spaces(names: list[str] | None = None) -> str:
    """``jobs/sweep.py --list``: every experiment with its overrides."""
    from fovea.search_spaces.spaces import available_spaces

    out = []
    for s in names or available_spaces():
        sp = load_search_space(s)
        rel = sp.path.name if sp.path else s
        out.append(f"{sp.name} (search_spaces/{rel}): {sp.description}")
        out.append(f"  common: {format_overrides(sp.common)}")
        width = max(len(n) for n in sp.names())
        for e in sp.experiments:
            out.append(f"  {e.name:<{width}}  {format_overrides(e.overrides)}")
            if e.description:
                out.append(f"  {'':<{width}}    # {e.description}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"

