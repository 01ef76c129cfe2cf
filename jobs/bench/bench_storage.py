#!/usr/bin/env python
"""Preprocess -> train -> resume -> evaluate with every path on s3://, against the same on local paths.

    python jobs/bench/bench_storage.py [--s3 s3://bucket/prefix] [--raw data/demo/raw/webvid] \\
        [--config tiny] [--steps 4] [--more-steps 2] [--order local,s3]

Runs the commands a user types, as subprocesses, from the project root, with ``FOVEA_ROOT``
set to a fresh local folder, then to a fresh prefix in the bucket, so that the same relative
paths (``--output data/shards/webvid``, ``runs``, ``--out eval/results.json``) land in one or
the other (README, Storage):

    python jobs/preprocess.py webvid --input RAW --output data/shards/webvid
    python jobs/stage1.py --config tiny --name bench ... training.max_steps=STEPS
    python jobs/stage1.py --config tiny --name bench ... training.max_steps=STEPS+MORE   (resumes)
    python jobs/evaluate.py --checkpoint runs/ray/bench --out eval/results.json ...

MLflow keeps its runs in a local SQLite file either way; in the S3 pass its artifacts go to
``<prefix>/mlartifacts`` (tracking.artifact_location). Without ``--s3`` the bucket is on a
local S3-compatible server started here (moto, ``fovea.platform.runs.local_s3``); with it, the
AWS_* settings of the environment say where the bucket is. Prints each command's wall time per
pass and the objects the S3 pass wrote.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PHASES = ("preprocess", "train", "resume", "evaluate")


def commands(raw: Path, db: str, artifacts: str | None, config: str, steps: int, more: int) -> dict[str, list]:
    py = sys.executable
    common = ["--config", config, "--name", "bench", "data.train_shards=['data/shards/webvid/train-*.tar']",
              "data.val_shards=['data/shards/webvid/val-*.tar']", f"tracking.tracking_uri={db}",
              "tracking.experiment=bench_storage", f"training.checkpoint_every={steps}"]
    if artifacts:
        common.append(f"tracking.artifact_location={artifacts}")
    return {
        "preprocess": [py, "jobs/preprocess.py", "webvid", "--input", str(raw), "--output", "data/shards/webvid",
                       "--samples-per-shard", "8", "--val-fraction", "0.25", "-q"],
        "train": [py, "jobs/stage1.py", *common, f"training.max_steps={steps}"],
        "resume": [py, "jobs/stage1.py", *common, f"training.max_steps={steps + more}"],
        "evaluate": [py, "jobs/evaluate.py", "--checkpoint", "runs/ray/bench", "--out", "eval/results.json",
                     "--mode", "coarse_fine", "--max-samples", "8", "--captions", "0", "--no-reference", "--quiet",
                     f"tracking.tracking_uri={db}"],
    }


def one_pass(root: str, work: Path, args, artifacts: str | None) -> dict[str, float]:
    """The four commands with FOVEA_ROOT=root; -> wall seconds per command."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # each command on a Ray cluster of its own, started with this environment ("local": never a
    # cluster that `ray start` left on the machine, whose workers would not have these settings)
    env.update(FOVEA_ROOT=root, RAY_ADDRESS=os.environ.get("RAY_ADDRESS", "local"))
    db = f"sqlite:///{work / ('mlflow-' + root.split(':')[0] + '.db')}"
    times = {}
    for phase, cmd in commands(args.raw.resolve(), db, artifacts, args.config, args.steps, args.more_steps).items():
        t = time.perf_counter()
        p = subprocess.run([str(c) for c in cmd], cwd=REPO, env=env, capture_output=True, text=True)
        times[phase] = time.perf_counter() - t
        if p.returncode != 0:
            raise SystemExit(f"{phase} failed (FOVEA_ROOT={root}):\n$ {' '.join(map(str, cmd))}\n"
                             f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        print(f"  {phase:10s} {times[phase]:6.1f} s", flush=True)
    return times


def run(args, s3_prefix: str, work: Path) -> None:
    from fovea.pipelines import storage

    roots = {"local": str(work / "local"), "s3": s3_prefix}
    results = {}
    for mode in args.order.split(","):
        print(f"{mode}: FOVEA_ROOT={roots[mode]}", flush=True)
        results[mode] = one_pass(roots[mode], work, args, f"{s3_prefix}/mlartifacts" if mode == "s3" else None)
    print(f"\n{'':12s}" + "".join(f"{m:>10s}" for m in results))
    for phase in (*PHASES, "total"):
        row = [sum(r.values()) if phase == "total" else r[phase] for r in results.values()]
        print(f"{phase:12s}" + "".join(f"{v:9.1f}s" for v in row))
    sizes = storage.file_sizes(s3_prefix)
    print(f"\n{s3_prefix}: {len(sizes)} objects, {sum(sizes.values()) / 1e6:.1f} MB "
          f"({sum(1 for k in sizes if k.startswith('runs/ray/bench/checkpoint_') and k.endswith('meta.json'))} "
          f"checkpoints, {sum(1 for k in sizes if k.endswith('.tar'))} shards)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--s3", default=None, help="s3://bucket/prefix (default: a local moto server's bucket)")
    ap.add_argument("--raw", type=Path, default=REPO / "data" / "demo" / "raw" / "webvid",
                    help="a WebVid folder in the upstream layout (default: the sample data; made if missing)")
    ap.add_argument("--config", default="tiny", help="the stage-1 config (default: tiny, the test models)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--more-steps", type=int, default=2, help="steps the resumed run adds")
    ap.add_argument("--order", default="local,s3", help="the passes, in order")
    args = ap.parse_args()
    if not args.raw.is_dir():
        subprocess.run([sys.executable, "jobs/make_sample_data.py", "--out", str(args.raw.parent)], cwd=REPO,
                       check=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory(prefix="fovea-bench-storage-") as tmp:
        if args.s3:
            run(args, f"{args.s3.rstrip('/')}/bench-storage-{stamp}", Path(tmp))
            return 0
        from fovea.platform.runs.local_s3 import LocalS3

        with LocalS3(Path(tmp) / "moto_server.log") as s3:
            os.environ.update(s3.environment())
            s3.create_bucket("fovea-bench")
            print(f"a local S3-compatible server (moto) at {s3.endpoint}", flush=True)
            run(args, f"s3://fovea-bench/bench-storage-{stamp}", Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
