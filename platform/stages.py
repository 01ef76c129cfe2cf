"""A training stage end to end, and the command line of jobs/stage1.py, stage2.py, stage3.py.

``train_stage(cfg)`` is training (``fovea.platform.train``) followed, on rank 0, by the
end-of-run artifacts of ``fovea.platform.eval`` (generated captions, attention heatmap):
the one place where the two rooms meet, so that neither imports the other.

    python jobs/stage1.py [--config FILE|NAME] [key.sub=value ...] [--dry-run] [--address ADDR]

Without ``--address`` (and without RAY_ADDRESS, which ``ray job submit`` sets) a local
Ray cluster is started.  ``--dry-run`` builds the model and the loaders, pulls one batch
and prints shapes, parameter counts, steps and the effective batch, without Ray.
"""

from __future__ import annotations

import argparse
import logging
import sys

from fovea.platform.config import ConfigError, RunConfig, absolute_paths, load_config

DEFAULT_CONFIGS = {1: "stage1_135m", 2: "stage2_135m", 3: "stage3_135m"}
STAGE_NAMES = {1: "WebVid captioning, all-text loss", 2: "Cauldron + video SFT, answer-only loss",
               3: "video SFT, answer-only loss"}


def parse(stage: int, argv: list[str] | None = None) -> tuple[argparse.Namespace, RunConfig]:
    ap = argparse.ArgumentParser(
        prog=f"jobs/stage{stage}.py",
        description=f"Stage {stage}: {STAGE_NAMES[stage]}, +14% SmolTalk, on Ray Train.")
    ap.add_argument("--config", default=DEFAULT_CONFIGS[stage],
                    help="YAML file or a name in platform/configs/ (default: %(default)s)")
    ap.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a new local cluster)")
    ap.add_argument("--name", default=None, help="run name (rerun the same name to resume)")
    ap.add_argument("--dry-run", action="store_true", help="one batch: shapes, parameter counts, steps; no training")
    ap.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. training.lr_connector=3e-4")
    args = ap.parse_args(argv)
    overrides = list(args.overrides)
    if args.address:
        overrides.append(f"cluster.address={args.address}")
    if args.name:
        overrides.append(f"name={args.name}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        ap.exit(2, f"error: {e}\n")
    if cfg.training.stage != stage:
        ap.exit(2, f"error: {args.config} has training.stage={cfg.training.stage}, "
                   f"but this is jobs/stage{stage}.py\n")
    return args, cfg


def dry_run(cfg: RunConfig) -> dict:
    """DESIGN.md 4.9: build model and loaders, pull one batch, print what a run would do."""
    import torch

    from fovea.model import build_model
    from fovea.pipelines.batch import model_inputs
    from fovea.pipelines.loader import build_train_loader
    from fovea.platform.train.optim import param_groups, total_optimizer_steps

    model = build_model(cfg.model)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    groups = {g["name"]: sum(p.numel() for p in g["params"]) for g in param_groups(model, cfg.training)}
    loader = build_train_loader(cfg.data, rank=0, world_size=1, epoch=0, seed=cfg.training.seed)
    batch = next(iter(loader))
    world = cfg.cluster.num_workers
    steps = total_optimizer_steps(cfg.training, cfg.data.batch_size, world)
    mode = "coarse_only" if cfg.model.coarse_only else "coarse_fine"
    with torch.no_grad():
        out = model(**model_inputs(batch), mode=mode, compute_coarse=True)
    print(f"== dry run: {cfg.name} (stage {cfg.training.stage}, mode {mode}) ==")
    for k, v in batch.items():
        desc = (f"{tuple(v.shape)} {v.dtype}" if isinstance(v, torch.Tensor)
                else f"list[{len(v)}]" if isinstance(v, list) else repr(v))  # mixture_source / _epoch
        print(f"  batch[{k!r}]: {desc}")
    if cfg.data.mixture:
        print("  mixture (weights normalised): " + ", ".join(
            f"{name} {w:.3f}" for name, w in cfg.data.mixture_weights().items()))
    print(f"  parameters: total {total:,}, trainable {trainable:,}; groups {groups}")
    print(f"  effective batch: {cfg.data.batch_size} x {cfg.training.grad_accum} accum x {world} workers"
          f" = {cfg.data.batch_size * cfg.training.grad_accum * world}")
    print(f"  steps: {steps} total, {int(steps * cfg.training.warmup_ratio)} warm-up ({cfg.training.schedule})")
    print(f"  one forward: loss {float(out['loss']):.4f}, loss_fine {float(out['loss_fine']):.4f}, "
          f"loss_coarse {float(out['loss_coarse']):.4f}")
    return {"loss": float(out["loss"]), "steps": steps, "params": total}


def check_benchmarks(cfg: RunConfig) -> None:
    """``eval.benchmarks_dir`` (scored at the end of the run) holds a benchmark: checked before
    Ray or MLflow start, like the shards and ``init_from`` (``BenchmarksDirError``)."""
    if cfg.eval.benchmarks_dir:
        from fovea.platform.eval.benchmarks import check_benchmarks_dir

        check_benchmarks_dir(absolute_paths(cfg).eval.benchmarks_dir, "eval.benchmarks_dir")


def train_stage(cfg: RunConfig, **fit_kwargs):
    """``fit`` with the evaluation's end-of-run artifacts (and benchmarks, with
    ``eval.benchmarks_dir``); returns its ``FitSummary``."""
    from fovea.platform.eval.artifacts import log_training_artifacts
    from fovea.platform.train.trainer import fit

    check_benchmarks(cfg)
    return fit(cfg, on_train_end=log_training_artifacts, **fit_kwargs)


def main(stage: int, argv: list[str] | None = None) -> int:
    """The CLI; exit 2 with one message (no traceback) for a bad config or a missing input."""
    from fovea.platform.train.preflight import check_run_inputs

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args, cfg = parse(stage, argv)
    print(cfg.to_yaml())
    try:
        check_run_inputs(cfg, args.config)  # shards, init_from: before the model, Ray or MLflow
        check_benchmarks(cfg)
        if args.dry_run:
            dry_run(cfg)
            return 0
        s = train_stage(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # fit marked the MLflow run KILLED; Ray's shutdown ends the workers
        print(f"\ninterrupted: run {cfg.name} stopped, its MLflow run marked KILLED; its checkpoints are "
              f"kept (rerun with --name {cfg.name} to resume from the latest)", file=sys.stderr)
        return 130
    print(f"\n== stage {stage} done in {s.wall_s:.0f}s: run {s.name} ==")
    for k in ("loss", "loss_fine", "loss_coarse", "val_loss"):
        if k in s.metrics:
            print(f"  {k}: {s.metrics[k]:.4f}")
    print(f"  best checkpoint:   {s.best_checkpoint}")
    print(f"  latest checkpoint: {s.latest_checkpoint}")
    print(f"  MLflow run {s.mlflow_run_id} in {s.tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main(1))
