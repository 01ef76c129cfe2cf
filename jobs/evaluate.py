#!/usr/bin/env python
"""Evaluate a Foveated VLM checkpoint as a Ray job (spec 6).

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
from pathlib import Path

from fovea.platform.config import ConfigError, RunConfig, load_config

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
    config = args.config or training_config_of(args.checkpoint)
    try:
        cfg = load_config(config, ov)
    except ConfigError as e:
        ap.exit(2, f"error: {e}\n")
    if config and not args.config:
        logging.getLogger("fovea.evaluate").info("config: %s (the checkpoint's training run)", config)
    return args, cfg


def _run_dir_of(checkpoint: str) -> Path | None:
    """The Ray run dir (holding resolved_config.yaml) of a checkpoint / model / run dir."""
    p = Path(checkpoint).expanduser()
    for d in (p, p.parent, p.parent.parent):
        if (d / "resolved_config.yaml").is_file():
            return d
    return None


def training_config_of(checkpoint: str) -> str | None:
    """Without --config: the training run's resolved_config.yaml (data, eval and tracking
    settings of the run that wrote the checkpoint), when the checkpoint is a path."""
    d = _run_dir_of(checkpoint)
    return str(d / "resolved_config.yaml") if d else None


def evaluate_task(cfg_json: dict, checkpoint: str, kwargs: dict) -> dict:
    """What runs on the Ray worker (or in-process with --local)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from fovea.platform.eval.harness import run_evaluation

    cfg = RunConfig.model_validate(cfg_json)
    res = run_evaluation(cfg, checkpoint=checkpoint, **kwargs)
    return _strip(res)


def _strip(x):
    """Results without per-item records (small enough for the driver and the JSON file)."""
    from fovea.platform.eval.report import _jsonable

    return _jsonable(x)


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse(argv)
    kwargs = {"reference": not args.no_reference, "run_id": args.run_id, "out_dir": args.out_dir,
              "progress": not args.quiet, "echo": args.local}
    run_dir = _run_dir_of(args.checkpoint)
    if run_dir and (run_dir / "mlflow_run_id").is_file() and not args.run_id:  # nest under training
        kwargs["tags"] = {"mlflow.parentRunId": (run_dir / "mlflow_run_id").read_text().strip()}
    if args.out_dir is None and args.out:
        kwargs["out_dir"] = str(Path(args.out).with_suffix("")) + "_files"
    cfg_json = cfg.model_dump(mode="json")
    if args.local:
        results = evaluate_task(cfg_json, args.checkpoint, kwargs)
    else:
        from fovea.platform.runs.cluster import cluster_gpus, connect

        ray = connect(cfg.cluster.address)
        gpus = cluster_gpus()
        use_gpu = gpus > 0 if cfg.cluster.use_gpu == "auto" else bool(cfg.cluster.use_gpu)
        opts = {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": 1}
        logging.getLogger("fovea.evaluate").info("evaluating in a Ray task with %s", opts)
        task = ray.remote(max_retries=0, **opts)(evaluate_task)
        results = ray.get(task.remote(cfg_json, args.checkpoint, kwargs))
        from fovea.platform.eval.report import summary_text

        print(summary_text(results), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(main())
