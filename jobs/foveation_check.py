#!/usr/bin/env python
"""Does the fine pass look somewhere useful?  A built-in "where to look" experiment.

    python jobs/foveation_check.py --preset cpu-tiny                 # the plumbing, on 2 CPU cores
    python jobs/foveation_check.py --preset gpu --max-minutes 9.3    # one GPU, both arms sharing it
    python jobs/foveation_check.py --preset gpu --bug both           # BUG-001 + BUG-002 reintroduced
    python jobs/foveation_check.py --preset gpu --steps 1200         # 2 GPUs: the arms run in parallel
    python jobs/foveation_check.py --preset gpu-tiny --steps 1000    # no pretrained weights needed
    python jobs/foveation_check.py --preset cpu-standin              # the stand-in backbone, 2 CPU cores
    python jobs/foveation_check.py --preset gpu-tiny-standin --matrix --matrix-bugs none,both
                                                                     # 9 variants + 2 controls, clean and bugged

On the offline GPU image (no ray/mlflow/PyAV, no model weights), from the repo root, with
``.devbundle`` (shared/gpu/bundle.sh) and a folder holding SmolLM2's config.json + tokenizer
files carried along:

    bash .devbundle/install.sh && mkdir -p /tmp/fv/fovea && for d in model pipelines platform \
      search_spaces; do ln -sfn $PWD/$d /tmp/fv/fovea/$d; done && export PYTHONPATH=/tmp/site:/tmp/fv \
      FOVEA_MODEL_STORE=/tmp/store RAY_AUTH_MODE=token PYTHONUNBUFFERED=1 && \
    timeout 580 python3 jobs/foveation_check.py --preset gpu --random-llm-from SMOL_CFG_DIR \
      --runs-dir /tmp/runs --out $OUT/rep --max-minutes 9.3 2>&1 | grep -v "Reporting training result"

The check trains two arms on a synthetic glyph task with the same budget -- the baseline
(coarse_fine) and A6 (coarse_only) -- and asks whether the baseline's fine tokens beat its
coarse tokens and A6, in held-out loss and captions, and whether the fine query's attention
lands on the glyph.  It prints verdict lines and logs them, a heatmap strip and the training
curves to one MLflow parent run (the arms are its children).  ``--strict`` exits 1 unless the
verdict is "helping"; ``--max-minutes`` prints what is done and exits 3 at the limit.

Presets (platform/check/presets.py): ``cpu-tiny`` (tiny random models, checks the plumbing),
``gpu`` (SmolLM2-135M + DINOv2-small from the model store, random weights where the store has
random ones; ``--random-llm-from DIR`` builds the LLM from DIR's config + tokenizer when the
store has none), ``gpu-tiny`` (the gpu task with the tiny random models, one label a video), and
``cpu-standin`` / ``gpu-tiny-standin`` / ``gpu-standin``: a stand-in for pretrained DINOv2 (the
DINOv2 architecture pretrained offline on the check's image domain, built on first use and
marked as a stand-in in the model store; fovea.platform.check.standin).
The phases: fovea.platform.check.run; ``--matrix``: fovea.platform.check.matrix.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from fovea.platform.check.matrix import REFERENCE, merge_matrices, run_matrix
from fovea.platform.check.presets import PRESETS
from fovea.platform.check.run import BUGS, run_check
from fovea.platform.check.task import add_arguments
from fovea.platform.config import ConfigError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="jobs/foveation_check.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu-tiny")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per arm (default: the preset's)")
    ap.add_argument("--batch-size", type=int, default=None, help="videos per batch (default: the preset's)")
    ap.add_argument("--eval-videos", type=int, default=None, help="held-out videos evaluated (default: the preset's)")
    ap.add_argument("--heatmap-videos", type=int, default=None, help="videos in the heatmap strip")
    ap.add_argument("--bug", choices=sorted(BUGS), default="none",
                    help="reintroduce BUG-001 (init_std: query_init_std=0.02), BUG-002 (bias: query_bias=true) "
                         "or both (the historical BUG-001 setting)")
    ap.add_argument("--runs-dir", default="runs", help="runs dir: MLflow store, Ray runs, generated data")
    ap.add_argument("--data-dir", default=None, help="task data (default: <runs-dir>/foveation_check/data)")
    ap.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a new local cluster)")
    ap.add_argument("--name", default=None, help="run-name prefix (default: fovcheck-<bug>-<time>)")
    ap.add_argument("--experiment", default="foveation_check", help="MLflow experiment")
    ap.add_argument("--workers", type=int, default=None, help="processes generating videos (default: CPUs)")
    ap.add_argument("--parallel", choices=("auto", "yes", "no"), default="auto",
                    help="train both arms at once (auto: on GPUs; one GPU is shared, half each)")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="wall-clock bound: at the limit print what is done and exit 3")
    ap.add_argument("--strict", action="store_true", help="exit 1 unless the verdict is 'helping' (a matrix: unless every finding passes)")
    ap.add_argument("--random-llm-from", default=None,
                    help="folder with SmolLM2 config.json + tokenizer: build the LLM with random weights "
                         "in the model store if it is missing there (offline GPU machines)")
    ap.add_argument("--data-path", choices=("auto", "preprocess", "direct"), default="auto",
                    help="preprocess: videos -> run_preprocess (the normal path, needs PyAV); direct: shards "
                         "from the rendered frames (no PyAV); auto: preprocess when PyAV imports")
    ap.add_argument("--out", default=None, help="also write report.json / report.txt / PNGs here")
    m = ap.add_argument_group("matrix (--matrix): the check over task variants, one row each")
    m.add_argument("--matrix", action="store_true", help="run every variant (and the controls) of the preset")
    m.add_argument("--variants", default=None, help="comma-separated variants and controls (default: all)")
    m.add_argument("--no-controls", action="store_true", help="leave out the random-backbone and time-shuffled rows")
    m.add_argument("--controls-on", default=None,
                   help=f"the variant whose task the controls run and are read against (default: {REFERENCE}, "
                        f"the preset's own; with --merge-matrices: the parts' own)")
    m.add_argument("--matrix-bugs", default=None,
                   help="bug settings to run the rows under, e.g. none,both (default: --bug's)")
    m.add_argument("--matrix-parallel", type=int, default=None,
                   help="rows training at once (default: 4 with a GPU, else 1)")
    m.add_argument("--merge-matrices", default=None, metavar="A.json,B.json",
                   help="train nothing: one table (and its findings) from the matrix.json of matrices run in "
                        "parts; --controls-on as given, else the parts' own; --out: where matrix.txt/json go")
    add_arguments(ap)
    ap.add_argument("overrides", nargs="*", help="key.sub=value overrides for both arms")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    args = parse_args(argv)
    try:
        if args.merge_matrices:
            summary = merge_matrices(args.merge_matrices.split(","), args.controls_on, args.out)
            print(summary["text"])
            return 1 if args.strict and any(x.startswith("FAIL") for x in summary["findings"]) else 0
        if args.matrix:
            summary = run_matrix(args)
            return 1 if args.strict and any(x.startswith("FAIL") for x in summary["findings"]) else 0
        st = run_check(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if st["strict"] and not st["verdict"].startswith("foveation is helping") else 0


if __name__ == "__main__":
    sys.exit(main())
