#!/usr/bin/env python
"""Stage-1 shards for the throughput benchmarks, written without a video decoder.

    python jobs/bench/make_bench_shards.py --out data/bench --samples 2000 [--dist ref|64] [--workers 8]

Writes ``train-NNNNN.tar`` (``--per-shard`` samples each; shards already there are kept) and
``bench_manifest.json``, and prints how many samples it wrote and their mean, min and max
frames. What the samples are: platform/profiling/bench_shards.py (frame counts of the
reference distribution, or 64 each with ``--dist 64``). For the offline GPU machine, which
has no PyAV; the video pipeline itself is benchmarked by bench_pipelines.py.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from fovea.platform.profiling.bench_shards import frame_counts, write_shard


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--per-shard", type=int, default=250)
    ap.add_argument("--dist", choices=["ref", "64"], default="ref")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = frame_counts(a.samples, a.dist, a.seed)
    jobs = []
    for s in range(0, a.samples, a.per_shard):
        path = out / f"train-{s // a.per_shard:05d}.tar"
        if not path.exists():
            jobs.append((str(path), s, counts[s:s + a.per_shard], a.seed + s, a.tokenizer))
    with ProcessPoolExecutor(a.workers) as ex:
        done = sum(ex.map(write_shard, jobs))
    (out / "bench_manifest.json").write_text(json.dumps(
        {"samples": a.samples, "dist": a.dist, "mean_frames": float(np.mean(counts)),
         "max_frames": int(max(counts)), "min_frames": int(min(counts))}, indent=2))
    print(f"{out}: {done} new samples in {len(jobs)} shards; mean frames {np.mean(counts):.2f} "
          f"(min {min(counts)}, max {max(counts)})")


if __name__ == "__main__":
    main()
