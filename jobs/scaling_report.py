#!/usr/bin/env python
"""The scaling report of a sweep: L(N, D) fitted with bootstrap intervals, iso-FLOP parabolas,
the compute-optimal N(C) and D(C), a figure -- logged on the sweep's parent MLflow run.

    python jobs/scaling_report.py --sweep NAME [--runs-dir runs]      # the sweep's Tune folder
    python jobs/scaling_report.py --sweep NAME --tracking-uri URI     # only its MLflow runs
         [--params non_embedding|all] [--dino REF] [--points auto|curve|final] [--text-tokens 128]
         [--bootstrap 200]
         [--out DIR] [--no-log]

A sweep of a scaling space (scaling, scaling_flops, scaling_tiny) makes this report at its end.
See docs/SWEEPS.md, "Scaling report".
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from fovea.platform.sweep.scaling import scaling_command
    from fovea.platform.sweep.scaling_analysis import BOOTSTRAP_DRAWS, POINT_MODES
    from fovea.platform.sweep.scaling_runs import PARAM_COUNTS, TEXT_TOKENS

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ap = argparse.ArgumentParser(prog="jobs/scaling_report.py", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--sweep", required=True, help="the sweep's name (jobs/sweep.py --name)")
    ap.add_argument("--runs-dir", default="runs", help="where runs/ lives (default: %(default)s)")
    ap.add_argument("--tracking-uri", default=None,
                    help="MLflow store to read (default: the sweep's own); finds the sweep there without its Tune folder")
    ap.add_argument("--params", choices=PARAM_COUNTS, default="non_embedding",
                    help="N = the LLM's parameters without the token embedding, or all (default: %(default)s)")
    ap.add_argument("--dino", default=None, help="the DINOv2 backbone whose runs are fitted (default: the most common)")
    ap.add_argument("--text-tokens", type=int, default=TEXT_TOKENS,
                    help="text tokens a sample in the FLOP model (default: %(default)s)")
    ap.add_argument("--points", choices=POINT_MODES, default="auto",
                    help="the law's points: every evaluation after warm-up (curve) or each run's final value; "
                         "auto: curve when every run's LR is constant (default: %(default)s)")
    ap.add_argument("--bootstrap", type=int, default=BOOTSTRAP_DRAWS, help="bootstrap refits (default: %(default)s)")
    ap.add_argument("--out", default=None, help="folder for the files (default: <runs-dir>/tune/<sweep>/scaling)")
    ap.add_argument("--no-log", action="store_true", help="do not log the files on the parent MLflow run")
    a = ap.parse_args(argv)
    return scaling_command(a.sweep, runs_dir=a.runs_dir, tracking_uri=a.tracking_uri, params=a.params,
                           text_tokens=a.text_tokens, dino=a.dino, points=a.points, draws=a.bootstrap, out=a.out,
                           log_to_mlflow=not a.no_log)


if __name__ == "__main__":
    sys.exit(main())
