#!/usr/bin/env python
"""Does the fine pass look somewhere useful?  A built-in "where to look" experiment (issue 10).

    python jobs/foveation_check.py --preset cpu-tiny                 # ~2.5 min on 2 CPU cores
    python jobs/foveation_check.py --preset gpu --max-minutes 9.3    # 1 H100, arms sharing it: ~7 min
    python jobs/foveation_check.py --preset gpu --bug both           # BUG-001 + BUG-002 reintroduced
    python jobs/foveation_check.py --preset gpu --steps 1200         # 2 GPUs: the arms run in parallel
    python jobs/foveation_check.py --preset gpu-tiny --steps 1000    # no pretrained weights: ~5 min, 1 GPU

On the offline GPU image (no ray/mlflow/PyAV, no model weights), from the repo root, with
``.devbundle`` (shared/gpu/bundle.sh) and a folder holding SmolLM2's config.json + tokenizer
files carried along:

    bash .devbundle/install.sh && mkdir -p /tmp/fv/fovea && for d in model pipelines platform \
      search_spaces; do ln -sfn $PWD/$d /tmp/fv/fovea/$d; done && export PYTHONPATH=/tmp/site:/tmp/fv \
      FOVEA_MODEL_STORE=/tmp/store RAY_AUTH_MODE=token PYTHONUNBUFFERED=1 && \
    timeout 580 python3 jobs/foveation_check.py --preset gpu --random-llm-from SMOL_CFG_DIR \
      --runs-dir /tmp/runs --out $OUT/rep --max-minutes 9.3 2>&1 | grep -v "Reporting training result"

(PyAV is missing there, so ``--data-path auto`` writes the shards directly; its wheel does
not fit in one transfer beside ray.)  On one H100 (2026-11-25, 8 frames, glyph 0.14, 500
steps): baseline 261 s (~85 videos/s), A6 167 s (~140 videos/s), 519 s in all. On two H200s
(2026-11-25, the gpu preset at 250 steps, arms in parallel, random SmolLM2 + random DINOv2):
A6 142 s, baseline ~200 s; both plateaued at the text prior (~0.90 nats) and the baseline's
``ratio_stuck`` / ``entropy_uniform`` warnings fired from step 100 on: nothing visual was
learned from random weights in that budget (docs/measurements/). On one H100 (2026-11-26, the
gpu preset at 450 steps x 96 videos, both arms sharing the card): 400 s in all; both arms still
at the text prior (held-out loss 0.8954 each, glyph accuracy at chance), the fine attention
entropy falling 5.49 -> 5.43 (below 0.98 log N), verdict "inconclusive". With ``--bug both``
(150 steps) the q_static_std, ratio_stuck and entropy_uniform warnings fire. With one label a
video the gpu preset still learned nothing visual in 640 steps; the gpu-tiny preset (same task,
2-layer random models) at 1000 steps x 48 on one H100 (280 s, arms sharing the card): held-out
loss_fine 0.23 vs loss_coarse 0.67 and A6 0.41, exact match 0.555 vs A6 0.328, fine entropy
5.55 -> 3.55: verdict "helping (loss only)" -- the fine query's mass on the target is only 1.1x
its mass on the distractor (docs/measurements/, session 4). Session 5, one H100: gpu-tiny with
``--bug both`` (300 steps) fires entropy_uniform, q_static_std and ratio_stuck, verdict "NOT
helping"; gpu-tiny with ``--caption sequence`` (1200 steps x 96): loss_fine 0.896 < loss_coarse
0.983, entropy 5.55 -> 5.10, but A6 0.896 and glyph accuracy at chance: "inconclusive".

1. Generate the glyph task (``platform/check/task.py``: a small glyph moving along a
   predictable path on a cluttered photo, with same-style distractors; the caption names
   the target's labels), in the WebVid raw layout, with parallel workers.
2. Preprocess it with the normal path (``run_preprocess("webvid", ...)``, what
   ``jobs/preprocess.py webvid --stage 2`` runs): 1 FPS decode, JPEG shards, answer-only loss
   masks (stage 2: the caption is the target, not the fixed prompt) with the run's own
   tokenizer; the hash split's ``val`` shards are the held-out videos.  Without PyAV
   (the offline GPU image) ``--data-path direct`` writes the same shards from the rendered
   frames.
3. Train two arms with identical budgets (same data, steps, batch, LRs, seed) through
   ``fovea.platform.train.trainer.fit``: the baseline (``coarse_fine``) and A6 (``model.coarse_only``),
   as MLflow children of one parent run.  ``training.lambda_coarse`` stays 0; the loop logs
   the no-grad ``loss_coarse`` every ``model.coarse_loss_every`` steps, the diagnostics
   (attention entropy vs log N, q_static std, |z_fine - z_coarse|) every
   ``training.diagnostics_every`` steps, and flags the failure signatures
   (``platform/train/failure_signatures.py``) as warnings and ``warning.*`` tags.
4. Evaluate both on the held-out videos in the driver: loss_fine vs loss_coarse (baseline,
   coarse_fine mode) and A6's coarse_only loss; greedy captions (the baseline through
   ``model.generate``, the deployment loop; A6 from its coarse tokens) -> caption exact match
   and per-glyph accuracy; where the queries look: attention mass on the target glyph's box
   relative to a uniform spread ("lift"); the entropy series from each run's metrics.jsonl.
5. Verdict lines, a heatmap strip (held-out frames with the fine query's attention and the
   glyph box from the metadata; rows: baseline fine, baseline coarse, A6 coarse), training
   curves, all logged to the parent MLflow run (``foveation_check/``) and printed.

Options: ``--preset cpu-tiny|gpu|gpu-tiny`` (platform/check/presets.py: sizes, models, steps), ``--steps``, ``--videos``,
``--frames``, ``--batch-size``, ``--eval-videos``, the task knobs (``--glyph-size --motion
--distractors --alphabet --clutter ...``), ``--bug none|init_std|bias|both`` (BUG-001:
``model.query_init_std=0.02``; BUG-002: ``model.query_bias=true``; the historical BUG-001 had
both), ``--runs-dir``, ``--address`` (Ray), ``--parallel`` (both arms at once; auto: on any GPU
machine, one GPU each, or half a GPU each on a 1-GPU machine),
``--max-minutes`` (wall-clock bound: prints what is done and exits 3), ``--strict`` (exit 1
unless the verdict is "helping"), and ``key.sub=value`` overrides applied to both arms.

The gpu preset: SmolLM2-135M-Instruct + DINOv2-small from the model store (random weights
where the store has random ones: the job does not care; ``--random-llm-from DIR`` builds a
random-weight SmolLM2 from DIR's config + tokenizer when the store has none), one GPU per arm.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fovea.platform.check.shards import have_pyav, write_direct_shards
from fovea.platform.check.task import GlyphTaskConfig, add_arguments, config_from_args, generate_glyph_task
from fovea.platform.config import ConfigError, RunConfig, load_config
from fovea.platform.train.failure_signatures import failure_signatures
from fovea.platform.check.presets import PRESETS, Preset
from fovea.platform.check.probe import curves_png, evaluate_arm, heatmap_strip, load_eval_batches
from fovea.platform.check.report import ARMS, captions_csv, format_report, verdicts, warnings_from_rows

log = logging.getLogger("fovea.foveation_check")

BUGS = {"none": [], "init_std": ["model.query_init_std=0.02"], "bias": ["model.query_bias=true"],
        "both": ["model.query_init_std=0.02", "model.query_bias=true"]}
ARTIFACT_DIR = "foveation_check"


# -- arguments -----------------------------------------------------------------------------

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
    ap.add_argument("--strict", action="store_true", help="exit 1 unless the verdict is 'helping'")
    ap.add_argument("--random-llm-from", default=None,
                    help="folder with SmolLM2 config.json + tokenizer: build the LLM with random weights "
                         "in the model store if it is missing there (offline GPU machines)")
    ap.add_argument("--data-path", choices=("auto", "preprocess", "direct"), default="auto",
                    help="preprocess: videos -> run_preprocess (the normal path, needs PyAV); direct: shards "
                         "from the rendered frames (no PyAV); auto: preprocess when PyAV imports")
    ap.add_argument("--out", default=None, help="also write report.json / report.txt / PNGs here")
    add_arguments(ap)
    ap.add_argument("overrides", nargs="*", help="key.sub=value overrides for both arms")
    return ap.parse_args(argv)


# -- small helpers --------------------------------------------------------------------------

def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s).strip("-").lower()


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Deadline:
    """``--max-minutes``: a watchdog that prints the partial report and exits 3 at the limit."""

    def __init__(self, minutes: float | None, state: dict):
        self.state = state
        self.t0 = time.time()
        self.limit = minutes * 60 if minutes else None
        if self.limit:
            threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while time.time() - self.t0 < self.limit:
            time.sleep(1.0)
        print(f"\n!!! foveation check: --max-minutes {self.limit / 60:g} reached during phase "
              f"'{self.state.get('phase')}'; partial results:", flush=True)
        print(json.dumps({k: v for k, v in self.state.items() if k != "phase"}, indent=1, default=str)[:20000],
              flush=True)
        os._exit(3)


# -- data -------------------------------------------------------------------------------------

def prepare_data(task: GlyphTaskConfig, data_dir: Path, tokenizer_ref: str, stage: int, preset: Preset,
                 workers: int | None, how: str, connect_ray) -> dict:
    """Task data as shards; returns paths, metadata, splits and timings.

    ``how="preprocess"``: the WebVid raw folder (videos) -> ``run_preprocess("webvid", ...)``,
    i.e. what ``jobs/preprocess.py webvid --stage S`` runs (Ray Data; 1 FPS decode with PyAV).
    ``how="direct"``: no PyAV on this machine: shards straight from the rendered frames
    (``glyph_shards.write_direct_shards``: same keys, split, JSON, tokens, JPEG settings).
    Both are idempotent.  Video generation runs before Ray starts (same cores).
    """
    from fovea.pipelines.preprocess import sample_key

    tok = f"{_slug(Path(tokenizer_ref).name)}-s{stage}"
    t0 = time.time()
    if how == "direct":
        raw = data_dir / f"frames-{task.stamp()}"
        shards = data_dir / f"direct-{task.stamp()}-{tok}"
        r = write_direct_shards(raw, shards, task, tokenizer=tokenizer_ref, stage=stage,
                                val_fraction=preset.val_fraction, samples_per_shard=preset.samples_per_shard,
                                workers=workers)
        metas, splits, t_gen, t_pre = r["metas"], r["splits"], time.time() - t0, 0.0
        connect_ray()
    else:
        from fovea.pipelines.preprocess import run_preprocess

        raw = data_dir / f"raw-{task.stamp()}"
        shards = data_dir / f"shards-{task.stamp()}-{tok}"
        metas = generate_glyph_task(raw, task, workers=workers)
        t_gen = time.time() - t0
        connect_ray()
        t0 = time.time()
        summary = run_preprocess("webvid", raw, shards, stage=stage, tokenizer=tokenizer_ref,
                                 val_fraction=preset.val_fraction, samples_per_shard=preset.samples_per_shard,
                                 progress=False)
        t_pre = time.time() - t0
        splits = dict(summary.splits)
        if sum(summary.rejected.values()):
            log.warning("preprocessing rejected %s", dict(summary.rejected))
    if not splits.get("val") or not splits.get("train"):
        raise RuntimeError(f"task data has splits {splits}: need train and val videos "
                           f"(more --videos, or another --task-seed)")
    by_key = {sample_key("webvid", m["videoid"]): m for m in metas}
    return {"raw": raw, "shards": shards, "metas": metas, "by_key": by_key, "splits": splits, "how": how,
            "train_glob": str(shards / "train-*.tar"), "val_glob": str(shards / "val-*.tar"),
            "seconds_generate": t_gen, "seconds_preprocess": t_pre}


# -- configs ------------------------------------------------------------------------------------

def arm_configs(args: argparse.Namespace, preset: Preset, data: dict, prefix: str) -> dict[str, RunConfig]:
    common = list(preset.overrides)
    if args.steps:
        common.append(f"training.max_steps={args.steps}")
    if args.batch_size:
        common.append(f"data.batch_size={args.batch_size}")
    common += [f"runs_dir={args.runs_dir}", f"tracking.experiment={args.experiment}",
               f"data.train_shards=['{data['train_glob']}']", f"data.val_shards=['{data['val_glob']}']",
               "data.text_shards=[]", "model.lambda_coarse=0.0"]
    if args.address:
        common.append(f"cluster.address={args.address}")
    common += BUGS[args.bug] + list(args.overrides)
    cfgs = {}
    for arm in ARMS:
        ov = common + [f"name={prefix}-{arm}", f"model.coarse_only={'true' if arm == 'a6' else 'false'}"]
        cfgs[arm] = load_config(None, ov)
    steps = {a: c.training.max_steps for a, c in cfgs.items()}
    if len(set(steps.values())) != 1:
        raise ConfigError(f"the arms must train with the same budget, got {steps}")
    return cfgs


# -- training --------------------------------------------------------------------------------------

def train_arms(cfgs: dict[str, RunConfig], parent_run_id: str | None, parallel: bool, state: dict) -> dict:
    from fovea.platform.stages import train_stage

    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}

    def one(arm: str) -> None:
        t0 = time.time()
        try:
            results[arm] = train_stage(cfgs[arm], parent_run_id=parent_run_id,
                               extra_tags={"foveation_check.arm": arm, "foveation_check.parent": parent_run_id or ""})
            state.setdefault("trained", {})[arm] = round(time.time() - t0, 1)
        except BaseException as e:  # noqa: BLE001 - reported with the arm's name
            errors[arm] = e

    if parallel:
        state["phase"] = "train " + " + ".join(ARMS) + " (in parallel)"
        threads = [threading.Thread(target=one, args=(a,)) for a in ARMS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for a in ARMS:
            state["phase"] = f"train {a}"
            one(a)
            if a in errors:
                break
    if errors:
        arm, e = next(iter(errors.items()))
        raise RuntimeError(f"training the {arm} arm failed: {type(e).__name__}: {e}") from e
    return results


# -- the whole check -------------------------------------------------------------------------------

def run_check(argv: list[str] | None = None) -> dict:
    import torch

    from fovea.platform.runs.cluster import cluster_gpus, connect
    from fovea.platform.runs.tracking import Tracker

    args = parse_args(argv)
    preset = PRESETS[args.preset]
    task = config_from_args(args, GlyphTaskConfig(**preset.task))
    runs = Path(args.runs_dir)
    data_dir = Path(args.data_dir) if args.data_dir else runs / "foveation_check" / "data"
    prefix = args.name or f"fovcheck-{args.bug}-{time.strftime('%Y%m%d-%H%M%S')}"
    state: dict[str, Any] = {"phase": "setup", "preset": args.preset, "bug": args.bug, "trained": {}}
    Deadline(args.max_minutes, state)
    t_all = time.time()

    if args.random_llm_from:
        from fovea.model.store import SMOLLM2_135M, prepare_store, random_llm_from_config, store_path

        if not (store_path(SMOLLM2_135M) / "config.json").exists():
            random_llm_from_config(Path(args.random_llm_from))
        prepare_store(include_base=False)

    # config first (fails fast on a bad override), with placeholder shard paths
    pre = load_config(None, preset.overrides + list(args.overrides))
    llm_ref, stage = pre.model.llm, pre.training.stage  # the tokenizer and the loss-mask rule
    state["phase"] = "generate + preprocess"
    how = args.data_path if args.data_path != "auto" else ("preprocess" if have_pyav() else "direct")
    print(f"[foveation check] task: {task.num_videos} videos x {task.frames} frames -> shards via {how} "
          f"(tokenizer {llm_ref})", flush=True)
    t0 = time.time()
    data = prepare_data(task, data_dir, llm_ref, stage, preset, args.workers, how, lambda: connect(args.address))
    print(f"[foveation check] data ready: {data['splits']} in {time.time() - t0:.0f} s", flush=True)
    cfgs = arm_configs(args, preset, data, prefix)
    base = cfgs["baseline"]
    state.update(run_names={a: c.name for a, c in cfgs.items()}, splits=data["splits"])

    parent = Tracker(base.tracking_uri(), args.experiment, run_name=f"foveation-check {args.preset} bug={args.bug}",
                     tags={"foveation_check": "parent", "preset": args.preset, "bug": args.bug,
                           "mode": "foveation_check"}, enabled=base.tracking.enabled)
    parent.log_params({"preset": args.preset, "bug": args.bug, "steps": base.training.max_steps,
                       "batch_size": base.data.batch_size, "model.llm": base.model.llm, "model.dino": base.model.dino,
                       "model.query_init_std": base.model.query_init_std, "model.query_bias": base.model.query_bias,
                       "run_names": json.dumps(state["run_names"]),
                       **{f"task.{k}": v for k, v in task.to_dict().items()}})
    state["parent_run_id"] = parent.run_id
    try:
        gpus = cluster_gpus()
        parallel = args.parallel == "yes" or (args.parallel == "auto" and gpus >= 1)
        shared = parallel and gpus == 1 and base.cluster.use_gpu is not False
        if shared:  # one card, half each: both arms are host-bound, so they overlap on it
            for c in cfgs.values():
                c.cluster.gpus_per_worker = 0.5
        how = ("in parallel, sharing the GPU" if shared else "in parallel") if parallel else "one after the other"
        print(f"[foveation check] training {', '.join(c.name for c in cfgs.values())} "
              f"({base.training.max_steps} steps each, {how}; {gpus} GPUs)", flush=True)
        fits = train_arms(cfgs, parent.run_id, parallel, state)

        state["phase"] = "evaluate"
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        n_eval = args.eval_videos or preset.eval_videos
        n_heat = args.heatmap_videos if args.heatmap_videos is not None else preset.heatmap_videos
        batches = load_eval_batches(base, n_eval)
        if not batches:
            raise RuntimeError(f"no held-out videos in {base.data.val_shards}")
        evals = {}
        for arm in ARMS:
            ckpt = fits[arm].latest_checkpoint
            if ckpt is None:
                raise RuntimeError(f"{arm}: no checkpoint in {fits[arm].run_dir}")
            evals[arm] = evaluate_arm(arm, ckpt / "model", batches, data["by_key"], device,
                                      preset.max_new_tokens, n_heat)
            state.setdefault("eval_summary", {})[arm] = {k: v for k, v in evals[arm].items()
                                                          if k not in ("records", "heat")}

        rows = {arm: read_jsonl(Path(cfgs[arm].storage_path()) / cfgs[arm].name / "metrics.jsonl") for arm in ARMS}
        log_n = next((r["attn_entropy_max"] for r in rows["baseline"] if "attn_entropy_max" in r),
                     evals["baseline"]["diagnostics"].get("attn_entropy_max", math.log(257)))
        warn = {f"{n}": w for n, w in warnings_from_rows(rows["baseline"]).items()}
        warn_a6 = warnings_from_rows(rows["a6"])
        b = evals["baseline"]
        final_metrics = {**b["diagnostics"], "loss_ratio": b["ratio"], "q_static_std": b["q_static_std"]}
        final_sigs = failure_signatures(final_metrics, base.model.query_init_std)
        verdict, vlines = verdicts(evals, rows, log_n, warn, final_sigs, chance=1 / len(task.labels))
        if warn_a6:
            vlines.append("note A6 run signatures (its fine pass is untrained by design): " + ", ".join(sorted(warn_a6)))

        st = {"preset": args.preset, "bug": args.bug, "steps": base.training.max_steps,
              "batch_size": base.data.batch_size, "task": task.to_dict(), "log_n": log_n,
              "models": f"{base.model.llm} + {base.model.dino}", "trained": state["trained"],
              "seconds_generate": data["seconds_generate"], "seconds_preprocess": data["seconds_preprocess"],
              "data_path": data["how"], "splits": data["splits"],
              "eval": evals, "verdict": verdict, "verdict_lines": vlines, "parent_run_id": parent.run_id,
              "children": {a: fits[a].mlflow_run_id for a in ARMS}, "experiment": args.experiment,
              "strict": args.strict, "tracking_uri": base.tracking_uri(), "warnings": {"baseline": warn, "a6": warn_a6,
                                                                "held_out": [s.name for s in final_sigs]}}

        # artifacts
        out_dir = Path(args.out) if args.out else Path(base.storage_path()) / f"{prefix}-report"
        out_dir.mkdir(parents=True, exist_ok=True)
        heat = heatmap_strip(evals, out_dir / "heatmap_strip.png", n_heat)
        curves = curves_png(rows, log_n, out_dir / "curves.png")
        uri = _artifact_uri(base.tracking_uri(), parent.run_id)
        st["heatmap_uri"] = f"{uri}/{ARTIFACT_DIR}/heatmap_strip.png" if (uri and heat) else (str(heat) if heat else None)
        st["heatmap_file"] = str(heat) if heat else None
        report = format_report(st)
        st["report"] = report
        (out_dir / "report.txt").write_text(report + "\n")
        (out_dir / "captions.csv").write_text(captions_csv(evals))
        summary = _summary(st)
        (out_dir / "report.json").write_text(json.dumps(summary, indent=1, default=str))
        for p in (heat, curves, out_dir / "report.txt", out_dir / "report.json", out_dir / "captions.csv"):
            if p is not None:
                parent.log_artifact(p, ARTIFACT_DIR)
        parent.log_metrics(_flat_metrics(st), step=base.training.max_steps)
        tags = {"verdict": verdict, "data_path": data["how"]}
        for arm, ws in (("baseline", warn), ("a6", warn_a6)):
            for n, w in ws.items():
                tags[f"warning.{n}"] = (tags.get(f"warning.{n}", "") + f" {arm}: steps {w['first']}-{w['last']}").strip()
        for s in final_sigs:
            tags[f"warning.{s.name}"] = (tags.get(f"warning.{s.name}", "") + f" held-out: {s.message}")[:5000].strip()
        parent.set_tags(tags)
        parent.finish("FINISHED")
        st["seconds_total"] = time.time() - t_all
        print("\n" + report + f"\n(total {st['seconds_total']:.0f} s; report files in {out_dir})", flush=True)
        return st
    except BaseException:
        parent.finish("FAILED")
        raise


def _artifact_uri(tracking_uri: str, run_id: str | None) -> str | None:
    if not run_id:
        return None
    try:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri).get_run(run_id).info.artifact_uri
    except Exception:  # noqa: BLE001
        return None


def _flat_metrics(st: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for arm, e in st["eval"].items():
        for k in ("loss", "loss_fine", "loss_coarse", "ratio", "exact_match", "glyph_accuracy", "q_static_std"):
            v = e.get(k)
            if isinstance(v, (int, float)) and math.isfinite(v):
                out[f"{arm}.{k}"] = float(v)
        for k, v in e.get("diagnostics", {}).items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                out[f"{arm}.{k}"] = float(v)
        for which in ("fine", "coarse"):
            for k, v in e.get(f"attn_{which}", {}).items():
                out[f"{arm}.attn_{which}.{k}"] = float(v)
    out["log_n"] = float(st["log_n"])
    out["verdict_helping"] = float(st["verdict"].startswith("foveation is helping"))
    return out


def _summary(st: dict) -> dict:
    s = {k: v for k, v in st.items() if k not in ("eval", "report")}
    s["eval"] = {a: {k: v for k, v in e.items() if k not in ("records", "heat")} for a, e in st["eval"].items()}
    s["captions_sample"] = {a: e["records"][:5] for a, e in st["eval"].items()}
    return s


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    try:
        st = run_check(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if st["strict"] and not st["verdict"].startswith("foveation is helping") else 0


if __name__ == "__main__":
    sys.exit(main())
