#!/usr/bin/env python
"""Ray Tune sweeps: ablations A1-A7, LR1-LR4, the scaling grid -- compared in MLflow.

    python jobs/sweep.py --list                                  # every experiment and its overrides
    python jobs/sweep.py --space ablations [--only A3,A5] [--scheduler asha] [--gpus-per-trial 1]
                         [--samples N] [--base-config stage1_135m] [--set key=value ...] [--name NAME]
    python jobs/sweep.py --resume [--name NAME | --space SPACE] [--runs-dir runs]
    python jobs/sweep.py --space ablations --only baseline,A6 --dry-run   # print the plan only

Each trial is one TorchTrainer run named ``<sweep>-<experiment>`` (a child MLflow run of the
sweep's parent run).  ``--set`` applies to every trial, on top of the base config and the
space's ``common`` keys; an experiment's own overrides come last.  See docs/SWEEPS.md.
"""

from __future__ import annotations

import argparse
import logging
import sys


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    from fovea.search_spaces.spaces import available_spaces

    ap = argparse.ArgumentParser(prog="jobs/sweep.py", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--list", action="store_true", help="print every experiment with its overrides and exit")
    ap.add_argument("--space", choices=available_spaces(), help="search space (search_spaces/<space>.yaml)")
    ap.add_argument("--only", default=None, help="comma-separated experiments, e.g. A3,A5 or baseline,A6")
    ap.add_argument("--base-config", default="stage1_135m",
                    help="YAML file or a name in platform/configs/ (default: %(default)s)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override for every trial (repeatable), e.g. --set training.max_steps=2000")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="same as --set")
    ap.add_argument("--samples", type=int, default=None,
                    help="training.total_samples for every trial (equal sample budgets)")
    ap.add_argument("--scheduler", choices=["none", "asha"], default="none",
                    help="asha: stop bad trials early on val_loss (time_attr=step)")
    ap.add_argument("--grace-steps", type=int, default=None,
                    help="ASHA grace period in optimizer steps (default: eval.every_steps)")
    ap.add_argument("--reduction-factor", type=int, default=2, help="ASHA reduction factor")
    ap.add_argument("--gpus-per-trial", type=int, default=None,
                    help="GPU workers per trial; max_concurrent_trials = cluster GPUs // this "
                         "(default: the config's cluster.num_workers; ignored without GPUs)")
    ap.add_argument("--max-concurrent", type=int, default=None, help="override max_concurrent_trials")
    ap.add_argument("--name", default=None, help="sweep name (default: <space>-<date>-<time>)")
    ap.add_argument("--resume", action="store_true",
                    help="continue an interrupted sweep (Tuner.restore); finished trials are not rerun")
    ap.add_argument("--runs-dir", default=None, help="where runs/ lives, for --resume (default: the config's)")
    ap.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a new local cluster)")
    ap.add_argument("--dry-run", action="store_true", help="resolve and print the plan; run nothing")
    a = ap.parse_args(argv)
    a.sets = list(a.sets) + list(a.overrides)
    if a.runs_dir:
        a.sets.append(f"runs_dir={a.runs_dir}")
    if not (a.list or a.resume or a.space):
        ap.error("give --space (or --list, or --resume)")
    return a


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    a = parse(argv)
    from fovea.platform.sweep import tune as sw
    from fovea.platform.sweep import plan as swp
    from fovea.platform.config import ConfigError, load_config

    if a.list:
        print(swp.list_spaces([a.space] if a.space else None), end="")
        return 0
    try:
        if a.resume:
            runs_dir = a.runs_dir or load_config(a.base_config, [s for s in a.sets if s.startswith("runs_dir=")]
                                                 ).runs_dir
            d = swp.find_sweep_dir(runs_dir, a.name, a.space)
            if a.dry_run:
                print(swp.describe_plan(swp.load_plan(d)))
                return 0
            s = sw.resume_sweep(d, address=a.address)
        else:
            only = [x.strip() for x in a.only.split(",") if x.strip()] if a.only else None
            if a.dry_run:  # estimate from this machine; a real sweep asks the Ray cluster
                import os

                import torch

                cpus, gpus = float(os.cpu_count() or 1), torch.cuda.device_count()
            else:
                from fovea.platform.runs.cluster import connect

                connect(a.address)
                cpus, gpus = sw.cluster_resources()
            plan = swp.make_plan(a.space, only=only, base_config=a.base_config, sets=a.sets, samples=a.samples,
                                 scheduler=a.scheduler, gpus_per_trial=a.gpus_per_trial, name=a.name,
                                 max_concurrent=a.max_concurrent, grace_steps=a.grace_steps,
                                 reduction_factor=a.reduction_factor, cluster_cpus=cpus, cluster_gpus=gpus)
            if a.samples is not None and any("training.total_samples" in o for o in plan["overrides"].values()):
                print("note: some experiments set training.total_samples themselves; --samples does not "
                      "change those", file=sys.stderr)
            if a.dry_run:
                print(swp.describe_plan(plan))
                return 0
            s = sw.run_sweep(plan, connect_ray=False)
    except (ConfigError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if s.interrupted:
        return 130
    failed = [k for k, v in s.statuses.items() if v == "ERROR"]
    if failed:
        print(f"trials failed: {', '.join(failed)} (rerun them with --resume --name {s.sweep})", file=sys.stderr)
        return 1
    print(f"sweep {s.sweep} done: results in {s.tune_dir / 'results'}"
          + (f", MLflow parent run {s.parent_run_id}" if s.parent_run_id else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
