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
    a.only = [x.strip() for x in a.only.split(",") if x.strip()] if a.only else None
    if a.runs_dir:
        a.sets.append(f"runs_dir={a.runs_dir}")
    if not (a.list or a.resume or a.space):
        ap.error("give --space (or --list, or --resume)")
    return a


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    a = parse(argv)
    from fovea.platform.sweep.launch import sweep_command
    from fovea.platform.sweep.plan import list_spaces

    if a.list:
        print(list_spaces([a.space] if a.space else None), end="")
        return 0
    return sweep_command(space=a.space, only=a.only, base_config=a.base_config, sets=a.sets, samples=a.samples,
                         scheduler=a.scheduler, grace_steps=a.grace_steps, reduction_factor=a.reduction_factor,
                         gpus_per_trial=a.gpus_per_trial, max_concurrent=a.max_concurrent, name=a.name,
                         resume=a.resume, runs_dir=a.runs_dir, address=a.address, dry_run=a.dry_run)


if __name__ == "__main__":
    sys.exit(main())
