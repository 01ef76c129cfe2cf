#!/usr/bin/env python
"""Evaluate a Foveated VLM checkpoint as a Ray job (DESIGN.md 6).

    python jobs/evaluate.py --checkpoint PATH|MLFLOW_RUN_ID --data 'SHARDS_GLOB' \\
        [--mode coarse_only|coarse_fine|autoregressive|all] [--max-samples N] [--captions N] \\
        [--benchmarks data/benchmarks] [--benchmark-max-items N] [--no-reference] \\
        [--tracking-uri URI] [--experiment NAME] [--run-id ID] [--address RAY_ADDR] \\
        [--config NAME|FILE] [--batch-size N] [--out results.json] [--out-dir DIR] [--local] \\
        [key.sub=value ...]

Reports the validation loss per mode with throughput, the train/inference gap
(ar - cf) / cf, caption metrics (COCO: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) and VQA accuracy
on generated answers, and MCQ accuracy (overall, per category) on the benchmarks present
under ``--benchmarks`` (each missing one prints what to download and where), with the local
SmolVLM2 reference model as an extra column when its weights are in the model store.
Everything is logged to MLflow (metrics, results.md/.csv/.json, captions.jsonl,
attention_grid.png) and printed.

The work runs inside one Ray task (``num_gpus=1`` when the cluster has a GPU, else
``num_cpus=1``) on the cluster at ``--address`` / RAY_ADDRESS, or on a local Ray started
here; ``ray job submit --working-dir . -- python jobs/evaluate.py ...`` works the same way.
``--local`` skips Ray (debugging).  Defaults come from ``EvalConfig`` (platform/config.py) of
``--config``, else of the training run's ``resolved_config.yaml`` found next to the checkpoint
(then the evaluation's MLflow run is nested under the training run), else of the built-in defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from fovea.platform.config import ConfigError, RunConfig, load_config
from fovea.platform.eval.launch import evaluate_checkpoint, training_config_of
from fovea.platform.paths import RootError, resolve_checkpoint_ref

MODE_CHOICES = ("coarse_only", "coarse_fine", "autoregressive", "all")


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, RunConfig]:
    ap = argparse.ArgumentParser(prog="jobs/evaluate.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True,
                    help="save_pretrained model dir, Ray checkpoint dir (holding model/), Ray run dir, "
                         "or an MLflow run id")
    ap.add_argument("--data", action="append", default=None,
                    help="validation shard glob (repeatable); default: the config's data.val_shards")
    ap.add_argument("--mode", choices=MODE_CHOICES, default=None,
                    help="inference mode, or all three (default: eval.modes)")
    ap.add_argument("--max-samples", type=int, default=None, help="validation samples (default: eval.max_samples)")
    ap.add_argument("--captions", type=int, default=None,
                    help="generate and score N captions/answers (default: eval.caption_samples)")
    ap.add_argument("--benchmarks", default=None, help="benchmark root, e.g. data/benchmarks (default: eval.benchmarks_dir)")
    ap.add_argument("--benchmark-max-items", type=int, default=None, help="items per benchmark (spread)")
    ap.add_argument("--no-reference", action="store_true", help="do not score the reference VLM")
    ap.add_argument("--tracking-uri", default=None, help="MLflow store (default: sqlite:///<runs_dir>/mlflow.db)")
    ap.add_argument("--experiment", default=None, help="MLflow experiment (default: tracking.experiment)")
    ap.add_argument("--run-id", default=None, help="log into this existing MLflow run instead of a new one")
    ap.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a new local cluster)")
    ap.add_argument("--config", default=None, help="YAML file or name in platform/configs/ for data/eval defaults")
    ap.add_argument("--batch-size", type=int, default=None, help="eval batch size (default: eval.batch_size or data.batch_size)")
    ap.add_argument("--out", default=None, help="write the results JSON here")
    ap.add_argument("--out-dir", default=None, help="folder for results.md/.csv/.json, captions, heatmaps")
    ap.add_argument("--local", action="store_true", help="run in this process, without Ray")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("overrides", nargs="*", help="key.sub=value config overrides, e.g. eval.max_new_tokens=32")
    args = ap.parse_args(argv)
    ov = list(args.overrides)
    if args.data:
        ov.append("data.val_shards=" + json.dumps(args.data))
    if args.mode:
        modes = ["coarse_only", "coarse_fine", "autoregressive"] if args.mode == "all" else [args.mode]
        ov.append("eval.modes=" + json.dumps(modes))
    for flag, key in ((args.max_samples, "eval.max_samples"), (args.captions, "eval.caption_samples"),
                      (args.benchmarks, "eval.benchmarks_dir"), (args.benchmark_max_items, "eval.benchmark_max_items"),
                      (args.batch_size, "eval.batch_size"), (args.tracking_uri, "tracking.tracking_uri"),
                      (args.experiment, "tracking.experiment"), (args.address, "cluster.address")):
        if flag is not None:
            ov.append(f"{key}={flag}")
    try:
        args.checkpoint = resolve_checkpoint_ref(args.checkpoint, "--checkpoint")  # before anything reads it
        config = args.config or training_config_of(args.checkpoint)
        cfg = load_config(config, ov)
    except (ConfigError, RootError) as e:
        ap.exit(2, f"error: {e}\n")
    if config and not args.config:
        logging.getLogger("fovea.evaluate").info("config: %s (the checkpoint's training run)", config)
    return args, cfg


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse(argv)
    try:
        evaluate_checkpoint(cfg, args.checkpoint, local=args.local, out=args.out, out_dir=args.out_dir,
                            run_id=args.run_id, reference=not args.no_reference, progress=not args.quiet,
                            benchmarks_key="--benchmarks" if args.benchmarks else "eval.benchmarks_dir")
    except ConfigError as e:  # an input checked before Ray and MLflow start (the benchmarks folder)
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(main())
