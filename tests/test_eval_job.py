"""Evaluation on a tiny Foveated VLM checkpoint: three modes, the gap, captions, MCQ, MLflow."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch

from fovea.model.blocks import IMAGENET_MEAN, IMAGENET_STD
from fovea.model.config import ModelConfig
from fovea.platform.config import load_config
from fovea.platform.eval.benchmarks import run_benchmarks
from fovea.platform.eval.checkpoint import load_model_for_eval, resolve_checkpoint
from fovea.platform.eval.harness import run_evaluation
from fovea.platform.eval.losses import MODES
from fovea.platform.eval.mcq import chat_messages

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220)}
USER = "What colour is this video?"


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, model_store):
    """A Ray-checkpoint-like dir holding model/ written by save_pretrained."""
    from fovea.model.build import build_model, load_tokenizer

    cfg = ModelConfig(llm="fovea/tiny-llama", dino="fovea/tiny-dinov2")
    torch.manual_seed(0)
    model = build_model(cfg)
    root = tmp_path_factory.mktemp("ckpt") / "checkpoint_000001"
    model.save_pretrained(root / "model", tokenizer=load_tokenizer(cfg))
    (root / "meta.json").write_text(json.dumps({"step": 1, "metrics": {}}))
    return root


def _batch(tok, items, text_only=False):
    """A collated batch in the loader's format (docs/CONTRACTS.md) of solid-colour videos."""
    B, T = len(items), max(max(n for _, n in items), 1)
    frames, fm = torch.zeros(B, T, 3, 224, 224), torch.zeros(B, T, dtype=torch.bool)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    ids = []
    for b, (c, n) in enumerate(items):
        frames[b, :n] = (torch.tensor(COLOURS[c]).float().view(3, 1, 1) / 255 - mean) / std
        fm[b, :n] = True
        text = tok.apply_chat_template(chat_messages(USER, f"The video is {c}."), tokenize=False)
        ids.append(tok(text, add_special_tokens=False)["input_ids"])
    S = max(map(len, ids))
    inp, am = torch.full((B, S), tok.pad_token_id), torch.zeros(B, S, dtype=torch.bool)
    for b, x in enumerate(ids):
        inp[b, : len(x)], am[b, : len(x)] = torch.tensor(x), True
    return {"frames": frames, "frame_mask": fm, "num_frames": fm.sum(1), "input_ids": inp,
            "attention_mask": am, "loss_mask": am.float(), "is_text_only": fm.sum(1) == 0,
            "keys": [f"k{b}" for b in range(B)], "sources": ["colours"] * B, "users": [USER] * B,
            "assistants": [f"The video is {c}." for c, _ in items]}


@pytest.fixture(scope="module")
def batches(tokenizer):
    return [_batch(tokenizer, [("red", 2), ("blue", 3), ("green", 0)]),  # a text-only row
            _batch(tokenizer, [("green", 1), ("red", 4)])]


def test_three_modes_gap_captions_mlflow(tiny_ckpt, batches, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config("tiny", [f"tracking.tracking_uri={uri}", "tracking.experiment=eval-test",
                               "eval.heatmap_videos=2", "eval.max_new_tokens=8"])
    res = run_evaluation(cfg, checkpoint=str(tiny_ckpt), modes=list(MODES), max_samples=4, captions=2,
                         loader_factory=lambda: iter(batches), out_dir=tmp_path / "out", device="cpu",
                         progress=False)
    losses = {m: res["loss"][m] for m in MODES}
    for m, r in losses.items():
        assert math.isfinite(r["loss"]) and r["n_samples"] == 4 and r["samples_per_s"] > 0, m
    # identical samples in every mode (the text-only row is skipped); as in the reference, coarse_only
    # and autoregressive also score each sample's first text token (stage-1 masks), coarse_fine does not
    n_tok = {m: r["n_tokens"] for m, r in losses.items()}
    assert n_tok["coarse_only"] == n_tok["autoregressive"] == n_tok["coarse_fine"] + 4
    cf, ar = losses["coarse_fine"]["loss"], losses["autoregressive"]["loss"]
    assert res["gap"] == pytest.approx((ar - cf) / cf)
    assert res["checkpoint"].endswith("checkpoint_000001/model")
    gen = res["generation"]
    assert gen["captions_n"] == 2 and set(gen["captions"]) >= {"Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}

    printed = capsys.readouterr().out
    assert "train/inference gap (ar - cf) / cf" in printed and "| val loss (n=4) |" in printed
    out = tmp_path / "out"
    for f in ("results.md", "results.csv", "results.json", "captions.jsonl", "attention_grid.png"):
        assert (out / f).stat().st_size > 0, f
    csv_head = (out / "results.csv").read_text().splitlines()[0]
    assert csv_head == "metric,coarse_only,coarse_fine,autoregressive"

    client = MlflowClient(uri)
    run = client.get_run(res["mlflow_run_id"])
    assert run.data.metrics["eval/gap"] == pytest.approx(res["gap"])
    for m in MODES:
        assert run.data.metrics[f"eval/{m}/loss"] == pytest.approx(losses[m]["loss"])
        assert f"eval/{m}/samples_per_s" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/results.md", "evaluation/attention_grid.png", "evaluation/captions.jsonl"} <= arts

    # the run id resolves back to the checkpoint (tag written by training)
    client.set_tag(run.info.run_id, "best_checkpoint", str(tiny_ckpt))
    assert resolve_checkpoint(run.info.run_id, uri) == tiny_ckpt / "model"


def test_mcq_benchmarks_in_each_mode(tiny_ckpt, tmp_path, capsys):
    import pandas as pd
    from PIL import Image

    def png(rgb):
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), rgb).save(buf, "PNG")
        return buf.getvalue()

    root = tmp_path / "benchmarks"
    (root / "scienceqa" / "data").mkdir(parents=True)
    pd.DataFrame([{"image": {"bytes": png(rgb), "path": None}, "question": "Which colour?",
                   "choices": list(COLOURS), "answer": i, "hint": "", "subject": "colours",
                   "category": "c"} for i, rgb in enumerate(COLOURS.values())]
                 ).to_parquet(root / "scienceqa" / "data" / "test-00000-of-00001.parquet")
    model, tok = load_model_for_eval(tiny_ckpt / "model")
    cfg = load_config("tiny", ["eval.reference_model=HuggingFaceTB/not-in-the-store", "eval.image_frames=2"])
    out = run_benchmarks(model, tok, root, list(MODES), cfg, torch.device("cpu"), progress=False)
    res = out["results"]["scienceqa"]["modes"]
    for m in MODES:
        assert res[m]["n"] == 3 and 0 <= res[m]["accuracy"] <= 100
        assert all(len(r["losses"]) == 3 and r["pred"] in "ABC" for r in res[m]["records"])
    assert set(out["missing"]) == {"videomme", "mlvu", "mvbench"}
    printed = capsys.readouterr().out
    assert "[benchmark skipped] benchmark 'mvbench'" in printed and "OpenGVLab/MVBench" in printed
    assert "not-in-the-store" in printed and "skipped" in printed  # the reference model hint


@pytest.mark.extended
@pytest.mark.slow
def test_cli_runs_as_ray_job_on_shards(tiny_ckpt, tokenizer, tmp_path, repo_root):
    """jobs/evaluate.py end to end: shards -> pipelines eval loader -> a Ray task -> MLflow + JSON."""
    import os
    import subprocess
    import sys

    sys.path.insert(0, str(repo_root / "tests"))
    from colour_shards import write_colour_shards

    from mlflow.tracking import MlflowClient

    from fovea.platform.config import save_resolved

    globs = write_colour_shards(tmp_path / "shards", tokenizer, n_train=4, n_val=6, n_text=4)
    # the training run dir around the checkpoint: its resolved config and MLflow run id
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    train_cfg = load_config("tiny", [f"data.val_shards=['{globs['val']}']", f"tracking.tracking_uri={uri}",
                                     "tracking.experiment=cli"])
    run_dir = tiny_ckpt.parent
    save_resolved(train_cfg, run_dir / "resolved_config.yaml")
    client = MlflowClient(uri)
    train_run = client.create_run(client.create_experiment("cli")).info.run_id
    (run_dir / "mlflow_run_id").write_text(train_run)
    out = tmp_path / "res.json"
    cmd = [sys.executable, "jobs/evaluate.py", "--checkpoint", str(tiny_ckpt), "--mode", "all", "--captions", "2",
           "--max-samples", "6", "--quiet", "--out", str(out), "eval.max_new_tokens=16"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    p = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "evaluating in a Ray task" in p.stderr + p.stdout
    assert "train/inference gap (ar - cf) / cf" in p.stdout
    res = json.loads(out.read_text())
    assert set(res["loss"]) == set(MODES) and all(r["n_samples"] == 6 for r in res["loss"].values())
    assert res["gap"] == pytest.approx((res["loss"]["autoregressive"]["loss"] - res["loss"]["coarse_fine"]["loss"])
                                       / res["loss"]["coarse_fine"]["loss"])
    assert Path(res["files"]["attention_grid.png"]).exists()
    ev = client.get_run(res["mlflow_run_id"])  # in the training run's store, nested under it
    assert ev.data.tags["mlflow.parentRunId"] == train_run and "eval/gap" in ev.data.metrics


def test_a_failing_step_keeps_what_was_computed(tiny_ckpt, batches, tmp_path, capsys):
    """Results reach MLflow as they are computed: the heatmap step fails on a batch of 1-channel
    frames, after the losses and the captions, which stay logged, written and printed; the
    run is marked FAILED and the error surfaces."""
    from mlflow.tracking import MlflowClient

    broken = dict(batches[1], frames=batches[1]["frames"][:, :, :1])  # a real bad input
    calls = []

    def loaders():  # one loader per mode (2), the captions' (3rd), the heatmap's (4th)
        calls.append(1)
        return iter([broken] if len(calls) == 4 else batches)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config("tiny", [f"tracking.tracking_uri={uri}", "tracking.experiment=eval-fail",
                               "eval.heatmap_videos=1", "eval.max_new_tokens=4"])
    with pytest.raises((RuntimeError, ValueError)):
        run_evaluation(cfg, checkpoint=str(tiny_ckpt), modes=["coarse_fine", "autoregressive"], max_samples=2,
                       captions=1, loader_factory=loaders, out_dir=tmp_path / "out", device="cpu", progress=False)
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("eval-fail").experiment_id])[0]
    assert run.info.status == "FAILED"
    assert {"eval/coarse_fine/loss", "eval/autoregressive/loss", "eval/gap", "eval/caption/CIDEr"} <= set(
        run.data.metrics)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["gap"] == pytest.approx(run.data.metrics["eval/gap"])
    printed = capsys.readouterr().out
    # The generated captions are printed; 4 new tokens without an end of turn are flagged.
    samples = saved["generation"]["samples"]
    cut = sum(s["truncated"] for s in samples)
    assert f"generated captions (1, {cut} cut at max_new_tokens):" in printed
    assert all(s["generated"][:20] in printed for s in samples)
    assert printed.count("[cut at max_new_tokens]") == cut
    assert "train/inference gap" in printed and f"MLflow run: {run.info.run_id}" in printed


def _png(rgb) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), rgb).save(buf, "PNG")
    return buf.getvalue()


def test_benchmarks_stand_alone(tiny_ckpt, tmp_path, capsys):
    """A malformed item is skipped and named, a benchmark whose videos are not unpacked says so
    and logs no accuracy, a benchmark that fails does not stop the others, and the
    per-category tables are printed (real fixture files in the hub layouts)."""
    import pandas as pd

    from fovea.platform.eval.report import flat_metrics, summary_text

    root = tmp_path / "benchmarks"
    (root / "scienceqa" / "data").mkdir(parents=True)
    rows = [{"image": {"bytes": _png(rgb), "path": None}, "question": "Which colour?", "choices": list(COLOURS),
             "answer": i, "hint": "", "subject": subj, "category": "c"}
            for i, (rgb, subj) in enumerate(zip(COLOURS.values(), ("colours", "colours", "shades")))]
    rows.append(dict(rows[0], answer=7))  # an answer index outside the options: malformed
    pd.DataFrame(rows).to_parquet(root / "scienceqa" / "data" / "test-00000-of-00001.parquet")
    # MVBench as downloaded, its video/*.zip not unpacked; one answer matches no candidate
    (root / "mvbench" / "json").mkdir(parents=True)
    (root / "mvbench" / "video").mkdir()
    (root / "mvbench" / "video" / "star.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    (root / "mvbench" / "json" / "action_sequence.json").write_text(json.dumps([
        {"video": "AB12.mp4", "question": "What first?", "candidates": ["sat", "stood"], "answer": "stood",
         "start": 1.0, "end": 3.0},
        {"video": "CD34.mp4", "question": "Did it?", "candidates": ["yes", "no"], "answer": "Perhaps."}]))
    # Video-MME whose annotation file is not a parquet file at all: this benchmark fails
    (root / "videomme" / "videomme").mkdir(parents=True)
    (root / "videomme" / "videomme" / "test-00000-of-00001.parquet").write_text("not parquet")
    model, tok = load_model_for_eval(tiny_ckpt / "model")
    cfg = load_config("tiny", ["eval.reference_model=HuggingFaceTB/not-in-the-store", "eval.image_frames=2"])
    logged = []
    out = run_benchmarks(model, tok, root, ["coarse_fine"], cfg, torch.device("cpu"), progress=False,
                         on_result=lambda name, entry: logged.append(name))
    assert logged == ["mvbench", "scienceqa"] and set(out["missing"]) == {"mlvu"}
    assert "videomme" in out["failed"]
    sq, mv = out["results"]["scienceqa"], out["results"]["mvbench"]
    assert sq["modes"]["coarse_fine"]["n"] == 3 and len(sq["malformed"]) == 1
    assert "test-00000-of-00001.parquet[3]" in sq["malformed"][0] and "outside the 3 options" in sq["malformed"][0]
    assert mv["n_items"] == 1 and "action_sequence.json[1]" in mv["malformed"][0]
    assert "'Perhaps.' matches none of the options ['yes', 'no']" in mv["malformed"][0]
    assert mv["modes"]["coarse_fine"]["accuracy"] is None
    assert "1 zip file(s) there (video/star.zip)" in mv["unscored"] and "unzip" in mv["unscored"]
    metrics = flat_metrics({"benchmarks": out["results"]})
    assert "eval/mvbench/coarse_fine/accuracy" not in metrics and metrics["eval/mvbench/items_scored"] == 0
    assert metrics["eval/scienceqa/items_malformed"] == 1 and "eval/scienceqa/coarse_fine/accuracy" in metrics
    printed = capsys.readouterr().out
    assert "[benchmark failed] videomme" in printed and "malformed item skipped" in printed
    text = summary_text({"modes": ["coarse_fine"], "loss": {}, "benchmarks": out["results"],
                         "benchmarks_failed": out["failed"], "benchmarks_missing": out["missing"]})
    assert "| mvbench: no item scored | - |" in text and "mvbench (n=0)" not in text
    assert "scienceqa: 3 of 3 items scored, 0 skipped (media unreadable), 1 malformed" in text
    assert "| category | coarse_fine |" in text and "| shades |" in text
    assert "videomme: FAILED" in text


def test_the_end_of_training_scores_the_benchmarks(tiny_ckpt, tmp_path, capsys):
    """``eval.benchmarks_dir`` in a training config: the end-of-run hook scores the benchmarks
    there into the training run (metrics at the last step, the table printed)."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from fovea.platform.eval.artifacts import log_training_artifacts
    from fovea.platform.runs.tracking import Tracker

    root = tmp_path / "benchmarks"
    (root / "ScienceQA" / "data").mkdir(parents=True)  # the hub's folder name
    pd.DataFrame([{"image": {"bytes": _png(rgb), "path": None}, "question": "Which colour?", "choices": list(COLOURS),
                   "answer": i, "hint": "", "subject": "colours"} for i, rgb in enumerate(COLOURS.values())]
                 ).to_parquet(root / "ScienceQA" / "data" / "test-00000-of-00001.parquet")
    model, _ = load_model_for_eval(tiny_ckpt / "model")
    model.train()
    cfg = load_config("tiny", [f"runs_dir={tmp_path / 'runs'}", f"eval.benchmarks_dir={root}", "eval.image_frames=2",
                               "training.max_steps=3"])
    tracker = Tracker(cfg.tracking_uri(), "fovea", run_name="train")
    out = log_training_artifacts(model, cfg, tracker)
    assert model.training  # handed back as it came
    assert out["benchmarks"]["results"]["scienceqa"]["modes"]["coarse_fine"]["n"] == 3
    (acc,) = MlflowClient(cfg.tracking_uri()).get_metric_history(tracker.run_id, "eval/scienceqa/coarse_fine/accuracy")
    assert acc.step == 3 and 0 <= acc.value <= 100
    assert "scienceqa: 3 of 3 items scored, 0 skipped (media unreadable), 0 malformed" in capsys.readouterr().out
