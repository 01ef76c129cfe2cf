"""Sweeps from the command line (what ``jobs/sweep.py`` runs): plan a new sweep on the Ray
cluster's resources and run it, or resume one; ``dry_run`` prints the plan and every point's
model, parameters, step memory and steps instead (points.py); the
outcome as an exit code (0 done, 1 failed trials, 2 bad arguments, 130 interrupted)."""

from __future__ import annotations

import os
import sys

from fovea.platform.config import ConfigError, load_config
from fovea.platform.sweep import plan as swp
from fovea.platform.sweep import tune as sw
from fovea.platform.sweep.points import describe_points
from fovea.platform.sweep.spaces import load_space
from fovea.platform.train.preflight import check_shards


def sweep_command(*, space: str | None, only: list[str] | None, base_config: str, sets: list[str],
                  samples: int | None, scheduler: str | None, grace_steps: int | None,
                  reduction_factor: int, gpus_per_trial: int | None, max_concurrent: int | None,
                  name: str | None, resume: bool, runs_dir: str | None, address: str | None,
                  dry_run: bool) -> int:
    """Start (or ``resume``) a sweep and wait for it; errors in the arguments print and give 2."""
    try:
        if resume:
            s = _resume(space, base_config, sets, name, runs_dir, address, dry_run)
        else:
            if not dry_run and space is not None:
                _check_shards_early(space, base_config, sets)
            plan = _plan(space, only, base_config, sets, samples, scheduler, grace_steps, reduction_factor,
                         gpus_per_trial, max_concurrent, name, address, dry_run)
            s = None if dry_run else sw.run_sweep(plan, connect_ray=False)
    except (ConfigError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if s is None else exit_code(s)


def _check_shards_early(space: str, base_config: str, sets: list[str]) -> None:
    """Before Ray starts: the base config's shards, which every trial reads unless the space
    names others (then each trial's own check in ``fit`` finds a missing set)."""
    sp = load_space(space)
    keys = set(sp.common).union(*(e.overrides for e in sp.experiments))
    if not any(k.startswith("data.") and k.endswith(("_shards", ".shards")) or k == "data.mixture" for k in keys):
        check_shards(load_config(base_config, sets), base_config)


def _resume(space: str | None, base_config: str, sets: list[str], name: str | None, runs_dir: str | None,
            address: str | None, dry_run: bool) -> sw.SweepSummary | None:
    """The sweep named ``name`` (else the newest, of ``space`` if given) continued; None on a dry run."""
    runs_dir = runs_dir or load_config(base_config, [s for s in sets if s.startswith("runs_dir=")]).runs_dir
    d = swp.find_sweep_dir(runs_dir, name, space)
    if dry_run:
        print(swp.describe_plan(swp.load_plan(d)))
        return None
    return sw.resume_sweep(d, address=address)


def _plan(space: str, only: list[str] | None, base_config: str, sets: list[str], samples: int | None,
          scheduler: str | None, grace_steps: int | None, reduction_factor: int, gpus_per_trial: int | None,
          max_concurrent: int | None, name: str | None, address: str | None, dry_run: bool) -> dict:
    """The new sweep's plan, sized to the Ray cluster (a dry run: to this machine); printed on a dry run."""
    cpus, gpus = _local_resources() if dry_run else _cluster_resources(address)
    plan = swp.make_plan(space, only=only, base_config=base_config, sets=sets, samples=samples,
                         scheduler=scheduler, gpus_per_trial=gpus_per_trial, name=name,
                         max_concurrent=max_concurrent, grace_steps=grace_steps,
                         reduction_factor=reduction_factor, cluster_cpus=cpus, cluster_gpus=gpus)
    if samples is not None and any("training.total_samples" in o for o in plan["overrides"].values()):
        print("note: some experiments set training.total_samples themselves; --samples does not "
              "change those", file=sys.stderr)
    if dry_run:
        print(swp.describe_plan(plan))
        print(describe_points(plan))  # every point's model built on the meta device
    return plan


def _local_resources() -> tuple[float, int]:
    """A dry run estimates from this machine; a real sweep asks the Ray cluster."""
    import torch

    return float(os.cpu_count() or 1), torch.cuda.device_count()


def _cluster_resources(address: str | None) -> tuple[float, int]:
    from fovea.platform.runs.cluster import connect

    connect(address)
    return sw.cluster_resources()


def exit_code(s: sw.SweepSummary) -> int:
    """130 interrupted, 1 with failed trials (named, with the command that reruns them), else 0."""
    if s.interrupted:
        return 130
    failed = [k for k, v in s.statuses.items() if v == "ERROR"]
    if failed:
        print(f"trials failed: {', '.join(failed)} (rerun them with --resume --name {s.sweep})", file=sys.stderr)
        return 1
    print(f"sweep {s.sweep} done: results in {s.tune_dir / 'results'}"
          + (f", MLflow parent run {s.parent_run_id}" if s.parent_run_id else ""))
    return 0
