"""Sweep plans: every trial's config and the sweep's resources, resolved before anything runs.

    plan = make_plan("ablations", only=["baseline", "A6"], base_config="stage1_135m",
                     sets=["training.max_steps=2000"], gpus_per_trial=1)
    print(describe_plan(plan))     # what ``jobs/sweep.py --dry-run`` prints

A plan is a JSON-able dict (saved as ``sweep_plan.json`` in the sweep's Tune folder), which
``fovea.platform.sweep.tune`` runs or resumes.  Nothing here touches Ray or MLflow.

* **Trial configs.** For each experiment of the space: the base config file, then the
  space's ``common`` keys, then ``--set`` / ``--samples`` (all trials), then the
  experiment's own ``overrides`` (so an experiment always keeps its defining change).
  Each trial is named ``<sweep>-<experiment>``: that is its Ray Train run name (rerunning the
  name resumes from its checkpoints) and its MLflow run name.
* **Resources.** With GPUs, ``--gpus-per-trial G`` gives each trial G GPU workers and
  ``max_concurrent_trials = GPUs // G`` (two 1-GPU trials side by side on two GPUs).  On CPU
  each trial keeps the config's ``cluster.num_workers`` and as many trials run at once as
  fit (driver 1 CPU + workers x ``cluster.cpus_per_worker``).
* **Files.** ``<runs_dir>/tune/<sweep>/sweep_plan.json`` (``save_plan`` / ``load_plan``);
  ``find_sweep_dir`` picks the folder to resume.  ``list_spaces`` is ``jobs/sweep.py --list``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from fovea.platform.config import (
    ConfigError,
    RunConfig,
    absolute_paths,
    apply_overrides,
    load_config,
    resolve_config_path,
)
from fovea.platform.sweep.spaces import check_keys, load_space
from fovea.search_spaces.spaces import Experiment, SearchSpace, SpaceError, format_overrides, set_dotted

PLAN_FILE = "sweep_plan.json"


def default_sweep_name(space: str) -> str:
    return f"{space}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def tune_root(runs_dir: str | Path) -> Path:
    """``<runs_dir>/tune``: Ray Tune's state and the sweep plan, in a local or shared folder."""
    if "://" in str(runs_dir):
        raise ConfigError(f"runs_dir={runs_dir!r}: a sweep keeps its Tune state and plan in a folder (local, "
                          f"or a volume every node mounts); keep runs_dir a path and put the trials' "
                          f"checkpoints in the bucket with cluster.storage_path=s3://... (README, Storage)")
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
    raw.setdefault("tracking", {})["run_name"] = None  # the MLflow child run is named like the trial
    try:
        cfg = RunConfig.model_validate(raw)
    except Exception as e:  # noqa: BLE001 - pydantic ValidationError -> ConfigError with the source
        raise ConfigError(f"trial {name!r} ({source}): {e}") from None
    return absolute_paths(cfg)  # each trial runs in a working directory of its own


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
    sp = load_space(space)
    try:
        experiments = sp.select(only)
    except SpaceError as e:
        raise ConfigError(str(e)) from None
    sets = list(sets or [])
    sweep = name or default_sweep_name(sp.name)
    scheduler = check_inputs(sets, base_config, sweep, scheduler)
    cfgs = trial_configs(sp, experiments, base_config, sets, samples, sweep)
    resources = assign_resources(cfgs, cluster_cpus, cluster_gpus, gpus_per_trial, max_concurrent)
    first = next(iter(cfgs.values()))
    return {
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
        "gpus_per_trial": resources["gpus_per_trial"],
        "gpus_per_trial_requested": gpus_per_trial,
        "use_gpu": resources["use_gpu"],
        "cluster": resources["cluster"],
        "max_concurrent_trials": resources["max_concurrent_trials"],
        "runs_dir": first.runs_dir,
        "tune_dir": str(tune_root(first.runs_dir) / sweep),
        "tracking_uri": first.tracking_uri(),
        "tracking_enabled": first.tracking.enabled,
        "mlflow_experiment": first.tracking.experiment,
        "artifact_location": first.tracking.artifact_location,
        "experiments": [e.name for e in experiments],
        "descriptions": {e.name: e.description for e in experiments},
        "overrides": {e.name: e.overrides for e in experiments},
        "configs": {k: c.model_dump(mode="json") for k, c in cfgs.items()},
        "created": datetime.now().isoformat(timespec="seconds"),
    }


def check_inputs(sets: list[str], base_config: str, sweep: str, scheduler: str | None) -> str | None:
    """Fail early, naming the bad ``--set`` key, base config, sweep name or scheduler, before
    anything starts; returns the scheduler (None for none)."""
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} is not of the form key.sub=value")
        check_keys({item.split("=", 1)[0].strip(): None}, "--set")
    resolve_config_path(base_config)
    if any(c in sweep for c in " /\\:,"):
        raise ConfigError(f"sweep name {sweep!r} may not contain spaces, slashes, colons or commas")
    if scheduler not in (None, "none", "asha"):
        raise ConfigError(f"unknown scheduler {scheduler!r} (none | asha)")
    return None if scheduler in (None, "none") else scheduler


def trial_configs(sp: SearchSpace, experiments: list[Experiment], base_config: str, sets: list[str],
                  samples: int | None, sweep: str) -> dict[str, RunConfig]:
    """experiment -> its validated trial config; the trials must share one runs_dir and one
    MLflow store and experiment (the sweep's parent run holds them all)."""
    source = f"{sp.path} + --base-config {base_config}"
    cfgs: dict[str, RunConfig] = {}
    for e in experiments:
        cfgs[e.name] = build_trial_config(base_config, sp.common, sets, samples, e.overrides,
                                          trial_name(sweep, e.name), f"{source} (experiment {e.name})")
    for key, get in (("tracking.experiment", lambda c: c.tracking.experiment),
                     ("runs_dir", lambda c: c.runs_dir), ("tracking uri", lambda c: c.tracking_uri())):
        values = {get(c) for c in cfgs.values()}
        if len(values) > 1:
            raise ConfigError(f"all trials of a sweep must share {key}; got {sorted(values)}")
    return cfgs


def assign_resources(cfgs: dict[str, RunConfig], cluster_cpus: float | None, cluster_gpus: int | None,
                     gpus_per_trial: int | None, max_concurrent: int | None) -> dict[str, Any]:
    """GPU or CPU trials and workers per trial, set in every config (``cluster.use_gpu``,
    ``cluster.num_workers`` on GPU), and how many trials run at once."""
    first = next(iter(cfgs.values()))
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
    return {"use_gpu": use_gpu, "gpus_per_trial": g, "cluster": {"cpus": cpus, "gpus": gpus},
            "max_concurrent_trials": n_conc}


def trial_steps(cfg: RunConfig) -> int:
    from fovea.platform.train.optim import total_optimizer_steps

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


def list_spaces(names: list[str] | None = None) -> str:
    """``jobs/sweep.py --list``: every experiment with its overrides."""
    from fovea.search_spaces.spaces import available_spaces

    out = []
    for s in names or available_spaces():
        sp = load_space(s)
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

