"""The foveation check end to end, for the parsed arguments of ``jobs/foveation_check.py``.

1. Data: generate the glyph task (``task.py``) in the WebVid raw layout and preprocess it with
   the normal path (``run_preprocess("webvid", ...)``, what ``jobs/preprocess.py webvid --stage 2``
   runs: 1 FPS decode, JPEG shards, answer-only loss masks with the run's own tokenizer); the
   hash split's ``val`` shards are the held-out videos.  Without PyAV, ``--data-path direct``
   writes the same shards from the rendered frames (``shards.py``).
2. Train two arms with identical budgets (same data, steps, batch, LRs, seed) through
   ``train_stage``: the baseline (``coarse_fine``) and A6 (``model.coarse_only``), as MLflow
   children of one parent run.  ``model.lambda_coarse`` stays 0; the loop logs the no-grad
   ``loss_coarse``, the attention diagnostics and the failure signatures
   (``platform/train/failure_signatures.py``) as warnings and ``warning.*`` tags.
3. Probe both arms on the held-out videos in the driver (``probe.py``): losses, greedy
   captions, where the queries look.
4. Verdict lines and report (``report.py``), the heatmap strip and training curves, all logged
   to the parent MLflow run (``foveation_check/``) and printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fovea.model.store import STANDIN_PREFIX
from fovea.platform.check.presets import PRESETS, Preset
from fovea.platform.check.probe import curves_png, evaluate_arm, heatmap_strip, load_eval_batches
from fovea.platform.check.report import ARMS, captions_csv, format_report, verdicts, warnings_from_rows
from fovea.platform.check.shards import have_pyav, write_direct_shards
from fovea.platform.check.task import GlyphTaskConfig, config_from_args, generate_glyph_task
from fovea.platform.config import ConfigError, RunConfig, load_config
from fovea.platform.train.failure_signatures import Signature, failure_signatures

log = logging.getLogger("fovea.foveation_check")

BUGS = {"none": [], "init_std": ["model.query_init_std=0.02"], "bias": ["model.query_bias=true"],
        "both": ["model.query_init_std=0.02", "model.query_bias=true"]}
ARTIFACT_DIR = "foveation_check"


# -- the whole check ----------------------------------------------------------------------------

def run_check(args: argparse.Namespace) -> dict:
    """Data, both arms trained, probed and judged; returns the summary it prints and logs."""
    t_all = time.time()
    preset = PRESETS[args.preset]
    task = config_from_args(args, GlyphTaskConfig(**preset.task))
    prefix = args.name or f"fovcheck-{args.bug}-{time.strftime('%Y%m%d-%H%M%S')}"
    state: dict[str, Any] = {"phase": "setup", "preset": args.preset, "bug": args.bug, "trained": {}}
    Deadline(args.max_minutes, state)
    prepare_models(args, preset)
    data = task_data(args, preset, task, state)
    out_dir = Path(args.out) if args.out else None
    st = check_variant(args, preset, task, data, prefix, state, out_dir=out_dir)
    st["seconds_total"] = time.time() - t_all
    print("\n" + st["report"] + f"\n(total {st['seconds_total']:.0f} s; report files in {st['out_dir']})", flush=True)
    return st


def check_variant(args: argparse.Namespace, preset: Preset, task: GlyphTaskConfig, data: dict, prefix: str,
                  state: dict, extra: list[str] = (), parent_tags: dict | None = None, out_dir: Path | None = None,
                  concurrent: int = 1) -> dict:
    """One task variant on its prepared ``data``: both arms trained (``extra`` overrides on top of
    the check's), probed, judged, reported and logged under one MLflow parent run.
    ``concurrent``: how many variants share the cluster now (their arms split a lone GPU)."""
    t0 = time.time()
    cfgs = arm_configs(args, preset, data, prefix, extra)
    base = cfgs["baseline"]
    state.update(run_names={a: c.name for a, c in cfgs.items()}, splits=data["splits"])
    parent = open_parent_run(args, base, task, state, prefix, parent_tags)
    try:
        fits = train_arms(cfgs, parent.run_id, args.parallel, state, concurrent)
        t_trained = time.time()
        n_heat = args.heatmap_videos if args.heatmap_videos is not None else preset.heatmap_videos
        evals = probe_arms(base, fits, data["by_key"], args.eval_videos or preset.eval_videos, n_heat,
                           preset.max_new_tokens, state)
        t_probed = time.time()
        j = judge(evals, cfgs, len(task.labels))
        st = {"preset": args.preset, "bug": args.bug, "steps": base.training.max_steps,
              "batch_size": base.data.batch_size, "task": task.to_dict(), "log_n": j.log_n,
              "models": f"{base.model.llm} + {base.model.dino}", "trained": dict(state["trained"]),
              "seconds_generate": data["seconds_generate"], "seconds_preprocess": data["seconds_preprocess"],
              "data_path": data["how"], "splits": data["splits"],
              "eval": evals, "verdict": j.verdict, "verdict_lines": j.lines, "parent_run_id": parent.run_id,
              "children": {a: fits[a].mlflow_run_id for a in ARMS}, "experiment": args.experiment,
              "strict": args.strict, "tracking_uri": base.tracking_uri(),
              "warnings": {"baseline": j.warnings, "a6": j.warnings_a6, "held_out": [s.name for s in j.held_out]}}
        out_dir = out_dir or Path(base.storage_path()) / f"{prefix}-report"
        files = write_report(st, j, out_dir, parent.run_id, n_heat)
        log_to_parent(parent, st, j, files)
        st["out_dir"] = str(out_dir)
        # where a row's time goes: Ray Train start-up + the arms' steps + checkpoints, then the probes
        st.update(seconds_variant=time.time() - t0, seconds_train=t_trained - t0, seconds_probe=t_probed - t_trained)
        return st
    except BaseException:
        parent.finish("FAILED")
        raise


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


def prepare_models(args: argparse.Namespace, preset: Preset) -> None:
    """What the arms load that the store may lack: a random SmolLM2 (``--random-llm-from``) and
    a stand-in backbone (built here on first use, on this machine's GPU when it has one)."""
    if args.random_llm_from:
        ensure_random_llm(Path(args.random_llm_from))
    dino = task_config(args, preset).model.dino
    if dino.startswith(STANDIN_PREFIX):  # built on first use, not like the store's random models
        from fovea.platform.check.standin import ensure_standin

        ensure_standin(dino)


def ensure_random_llm(config_dir: Path) -> None:
    """``--random-llm-from``: a random-weight SmolLM2 in the model store where it has none."""
    from fovea.model.store import SMOLLM2_135M, prepare_store, random_llm_from_config, store_path

    if not (store_path(SMOLLM2_135M) / "config.json").exists():
        random_llm_from_config(config_dir)
    prepare_store()


# -- data -----------------------------------------------------------------------------------------

def task_data(args: argparse.Namespace, preset: Preset, task: GlyphTaskConfig, state: dict) -> dict:
    """The task as shards, tokenized for the arms' LLM; Ray starts once the videos exist."""
    from fovea.platform.runs.cluster import connect

    llm_ref, stage = task_llm(args, preset)
    state["phase"] = "generate + preprocess"
    how = args.data_path if args.data_path != "auto" else ("preprocess" if have_pyav() else "direct")
    print(f"[foveation check] task: {task.num_videos} videos x {task.frames} frames -> shards via {how} "
          f"(tokenizer {llm_ref})", flush=True)
    t0 = time.time()
    data_dir = Path(args.data_dir) if args.data_dir else Path(args.runs_dir) / "foveation_check" / "data"
    data = prepare_data(task, data_dir, llm_ref, stage, preset, args.workers, how, lambda: connect(args.address))
    print(f"[foveation check] data ready: {data['splits']} in {time.time() - t0:.0f} s", flush=True)
    return data


def task_config(args: argparse.Namespace, preset: Preset) -> RunConfig:
    """The arms' config before their data exists (placeholder shards): fails fast on a bad override."""
    return load_config(None, preset.overrides + list(args.overrides))


def task_llm(args: argparse.Namespace, preset: Preset) -> tuple[str, int]:
    """The tokenizer and the loss-mask rule (stage) the task's shards are made for."""
    pre = task_config(args, preset)
    return pre.model.llm, pre.training.stage


def prepare_data(task: GlyphTaskConfig, data_dir: Path, tokenizer_ref: str, stage: int, preset: Preset,
                 workers: int | None, how: str, connect_ray) -> dict:
    """Task data as shards; returns paths, metadata, splits and timings.

    ``how="preprocess"``: the WebVid raw folder (videos) -> ``run_preprocess("webvid", ...)``,
    i.e. what ``jobs/preprocess.py webvid --stage S`` runs (Ray Data; 1 FPS decode with PyAV).
    ``how="direct"``: no PyAV on this machine: shards straight from the rendered frames
    (``shards.write_direct_shards``: same keys, split, JSON, tokens, JPEG settings).
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


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s).strip("-").lower()


# -- the two arms -----------------------------------------------------------------------------------

def arm_configs(args: argparse.Namespace, preset: Preset, data: dict, prefix: str,
                extra: list[str] = ()) -> dict[str, RunConfig]:
    """One config per arm: the preset, the task's shards, ``--bug``, ``extra`` and the overrides;
    only ``model.coarse_only`` differs, and the arms must train the same number of steps."""
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
    common += BUGS[args.bug] + list(extra) + list(args.overrides)
    cfgs = {}
    for arm in ARMS:
        ov = common + [f"name={prefix}-{arm}", f"model.coarse_only={'true' if arm == 'a6' else 'false'}"]
        cfgs[arm] = load_config(None, ov)
    steps = {a: c.training.max_steps for a, c in cfgs.items()}
    if len(set(steps.values())) != 1:
        raise ConfigError(f"the arms must train with the same budget, got {steps}")
    return cfgs


def open_parent_run(args: argparse.Namespace, base: RunConfig, task: GlyphTaskConfig, state: dict, prefix: str,
                    tags: dict | None = None):
    """The MLflow parent run both arms log under as children, with the check's parameters
    (``tags``: a matrix nests its variants with ``mlflow.parentRunId``)."""
    from fovea.platform.runs.tracking import Tracker

    parent = Tracker(base.tracking_uri(), args.experiment, run_name=f"{prefix} {args.preset} bug={args.bug}",
                     tags={"foveation_check": "parent", "preset": args.preset, "bug": args.bug,
                           "mode": "foveation_check", **(tags or {})}, enabled=base.tracking.enabled,
                     artifact_location=base.tracking.artifact_location)
    parent.log_params({"preset": args.preset, "bug": args.bug, "steps": base.training.max_steps,
                       "batch_size": base.data.batch_size, "model.llm": base.model.llm, "model.dino": base.model.dino,
                       "model.query_init_std": base.model.query_init_std, "model.query_bias": base.model.query_bias,
                       "run_names": json.dumps(state["run_names"]),
                       **{f"task.{k}": v for k, v in task.to_dict().items()}})
    state["parent_run_id"] = parent.run_id
    return parent


def train_arms(cfgs: dict[str, RunConfig], parent_run_id: str | None, choice: str, state: dict,
               concurrent: int = 1) -> dict:
    """Both arms, at once or one after the other (``--parallel`` ``choice``); each arm's fit result.
    A lone GPU is split between the arms of the ``concurrent`` variants training now."""
    from fovea.platform.runs.cluster import cluster_gpus

    base = cfgs["baseline"]
    gpus = cluster_gpus()
    parallel = choice == "yes" or (choice == "auto" and gpus >= 1)
    shared = parallel and gpus == 1 and base.cluster.use_gpu is not False
    if shared:  # one card, a share each: the arms are host-bound, so they overlap on it
        for c in cfgs.values():
            c.cluster.gpus_per_worker = round(1.0 / (2 * max(1, concurrent)), 4)
    how = ("in parallel, sharing the GPU" if shared else "in parallel") if parallel else "one after the other"
    print(f"[foveation check] training {', '.join(c.name for c in cfgs.values())} "
          f"({base.training.max_steps} steps each, {how}; {gpus} GPUs)", flush=True)
    return fit_arms(cfgs, parent_run_id, parallel, state)


def fit_arms(cfgs: dict[str, RunConfig], parent_run_id: str | None, parallel: bool, state: dict) -> dict:
    """``train_stage`` per arm, in threads when ``parallel``; the first failure is raised with its arm."""
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


# -- probing -----------------------------------------------------------------------------------------

def probe_arms(base: RunConfig, fits: dict, by_key: dict, n_eval: int, n_heat: int, max_new_tokens: int,
               state: dict) -> dict:
    """Each arm's last checkpoint on the same held-out videos, in the driver (``evaluate_arm``)."""
    import torch

    state["phase"] = "evaluate"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batches = load_eval_batches(base, n_eval)
    if not batches:
        raise RuntimeError(f"no held-out videos in {base.data.val_shards}")
    evals = {}
    for arm in ARMS:
        ckpt = fits[arm].latest_checkpoint
        if ckpt is None:
            raise RuntimeError(f"{arm}: no checkpoint in {fits[arm].run_dir}")
        evals[arm] = evaluate_arm(arm, ckpt / "model", batches, by_key, device, max_new_tokens, n_heat)
        state.setdefault("eval_summary", {})[arm] = {k: v for k, v in evals[arm].items()
                                                      if k not in ("records", "heat")}
    return evals


# -- verdicts, report, MLflow ----------------------------------------------------------------------

@dataclass
class Judgement:
    """The verdict and the evidence it read besides the held-out probes."""
    rows: dict[str, list[dict]]  # each arm's metrics.jsonl
    log_n: float  # ln(keys a query attends over): the entropy of a uniform spread
    warnings: dict[str, dict]  # the baseline's training-time signatures: name -> first/last step, count
    warnings_a6: dict[str, dict]
    held_out: list[Signature]  # signatures of the baseline's held-out diagnostics
    verdict: str
    lines: list[str]


def judge(evals: dict, cfgs: dict[str, RunConfig], n_labels: int) -> Judgement:
    """Training series + held-out probes -> failure signatures, verdict lines and the verdict."""
    base = cfgs["baseline"]
    rows = {arm: read_jsonl(Path(cfgs[arm].storage_path()) / cfgs[arm].name / "metrics.jsonl") for arm in ARMS}
    log_n = next((r["attn_entropy_max"] for r in rows["baseline"] if "attn_entropy_max" in r),
                 evals["baseline"]["diagnostics"].get("attn_entropy_max", math.log(257)))
    warn = warnings_from_rows(rows["baseline"])
    warn_a6 = warnings_from_rows(rows["a6"])
    b = evals["baseline"]
    final_metrics = {**b["diagnostics"], "loss_ratio": b["ratio"], "q_static_std": b["q_static_std"]}
    held_out = failure_signatures(final_metrics, base.model.query_init_std)
    verdict, lines = verdicts(evals, rows, log_n, warn, held_out, chance=1 / n_labels)
    if warn_a6:
        lines.append("note A6 run signatures (its fine pass is untrained by design): " + ", ".join(sorted(warn_a6)))
    return Judgement(rows, log_n, warn, warn_a6, held_out, verdict, lines)


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_report(st: dict, j: Judgement, out_dir: Path, parent_run_id: str | None, n_heat: int) -> list[Path]:
    """Heatmap strip, curves, report.txt / .json, captions.csv into ``out_dir``; sets
    ``st["report"]`` and the heatmap's place; returns the files written."""
    evals = st["eval"]
    out_dir.mkdir(parents=True, exist_ok=True)
    heat = heatmap_strip(evals, out_dir / "heatmap_strip.png", n_heat)
    curves = curves_png(j.rows, j.log_n, out_dir / "curves.png")
    uri = _artifact_uri(st["tracking_uri"], parent_run_id)
    st["heatmap_uri"] = f"{uri}/{ARTIFACT_DIR}/heatmap_strip.png" if (uri and heat) else (str(heat) if heat else None)
    st["heatmap_file"] = str(heat) if heat else None
    report = format_report(st)
    st["report"] = report
    (out_dir / "report.txt").write_text(report + "\n")
    (out_dir / "captions.csv").write_text(captions_csv(evals))
    (out_dir / "report.json").write_text(json.dumps(_summary(st), indent=1, default=str))
    return [p for p in (heat, curves, out_dir / "report.txt", out_dir / "report.json", out_dir / "captions.csv")
            if p is not None]


def log_to_parent(parent, st: dict, j: Judgement, files: list[Path]) -> None:
    """The report files, flat metrics and verdict / warning tags on the parent run, then finish it."""
    for p in files:
        parent.log_artifact(p, ARTIFACT_DIR)
    parent.log_metrics(_flat_metrics(st), step=st["steps"])
    tags = {"verdict": j.verdict, "data_path": st["data_path"]}
    for arm, ws in (("baseline", j.warnings), ("a6", j.warnings_a6)):
        for n, w in ws.items():
            tags[f"warning.{n}"] = (tags.get(f"warning.{n}", "") + f" {arm}: steps {w['first']}-{w['last']}").strip()
    for s in j.held_out:
        tags[f"warning.{s.name}"] = (tags.get(f"warning.{s.name}", "") + f" held-out: {s.message}")[:5000].strip()
    parent.set_tags(tags)
    parent.finish("FINISHED")


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
        for k in ("loss", "loss_fine", "loss_coarse", "loss_autoregressive", "ratio", "exact_match",
                  "glyph_accuracy", "q_static_std"):
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
