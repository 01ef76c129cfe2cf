"""Benchmark: video preprocessing (Ray Data on 1 and 2 CPUs vs one ffmpeg process per video) and the loader.

    python jobs/bench/bench_pipelines.py [--raw data/demo/raw] [--copies 2] [--runs 3]

Input: the good WebVid clips of the embedded sample data (made if missing), each listed
``--copies`` times under new ids.  Rows of the table (median of ``--runs`` timed runs each):

  * Ray Data pipeline (jobs/preprocess.py's code): PyAV decode at 1 FPS (uniform 64 over long
    videos), resize + crop 224, JPEG, tokenize, write tar shards; on a local Ray instance
    with 1 and with 2 CPUs, after one untimed warm-up run (worker start-up, imports).
  * the reference approach: one ``ffmpeg -vf fps=1,scale,crop -frames:v 64 -q:v 2``
    subprocess per video writing JPEGs (frames only: no tokenization, no shards), one at a
    time and two at a time.  Reported as absent when ffmpeg is not installed
    (``apt-get install -y ffmpeg``).
  * "CPU ms/video": CPU time of the Ray tasks (process_time per sample) or of the ffmpeg
    children (getrusage), a figure that other load on the machine disturbs much less than
    wall time.
  * the training loader over the shards written: samples/s and frames/s of one epoch
    (``DataConfig`` defaults: batch 8, 2 workers, max 64 frames), JPEG decode + normalise.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

FFMPEG_VF = "fps=1,scale=224:224:force_original_aspect_ratio=increase,crop=224:224"


def bench_input(raw: Path, dst: Path, copies: int) -> list[Path]:
    """A WebVid folder with the good clips ``copies`` times (copied: immune to a concurrent remake)."""
    from fovea.pipelines.demo_datasets import make_sample_data

    cat = make_sample_data(raw)
    (dst / "videos").mkdir(parents=True)
    rows, paths = [], []
    for c in range(copies):
        for clip in cat["webvid"]:
            vid = f"{clip['videoid']}{c:02d}"
            path = dst / "videos" / f"{vid}.mp4"
            shutil.copyfile(raw / "webvid" / clip["file"], path)
            rows.append([vid, "", "", "", clip["caption"]])
            paths.append(path)
    with open(dst / "results_bench.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["videoid", "contentUrl", "duration", "page_dir", "name"])
        w.writerows(rows)
    return paths


def bench_ray(inp: Path, work: Path, cpus: int, runs: int) -> tuple[float, int, int, Path]:
    import ray

    from fovea.pipelines.preprocess import run_preprocess

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        warm = work / f"warm{cpus}"
        small = work / "small"
        if not small.exists():
            (small / "videos").mkdir(parents=True)
            lines = (inp / "results_bench.csv").read_text().splitlines()
            (small / "results_bench.csv").write_text("\n".join(lines[: 1 + 2 * cpus]) + "\n")
            for line in lines[1: 1 + 2 * cpus]:
                vid = line.split(",")[0]
                shutil.copyfile(inp / "videos" / f"{vid}.mp4", small / "videos" / f"{vid}.mp4")
        run_preprocess("webvid", small, warm, samples_per_shard=64, val_fraction=0.0, progress=False)
        times, cpu = [], []
        for r in range(runs):
            out = work / f"ray{cpus}_{r}"
            t0 = time.perf_counter()
            s = run_preprocess("webvid", inp, out, samples_per_shard=64, val_fraction=0.0, progress=False)
            times.append(time.perf_counter() - t0)
            cpu.append(s.worker_cpu_s)
        return statistics.median(times), statistics.median(cpu), s.frames, out
    finally:
        ray.shutdown()


def bench_ffmpeg(paths: list[Path], work: Path, parallel: int, runs: int) -> tuple[float, int]:
    def one(args):
        i, p = args
        out = work / f"ff{parallel}" / str(i)
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(p), "-vf", FFMPEG_VF,
                        "-frames:v", "64", "-q:v", "2", str(out / "%03d.jpg")], check=True)
        return len(list(out.glob("*.jpg")))

    times, cpu, frames = [], [], 0
    for _ in range(runs):
        shutil.rmtree(work / f"ff{parallel}", ignore_errors=True)
        t0, c0 = time.perf_counter(), _children_cpu()
        with ThreadPoolExecutor(parallel) as ex:
            frames = sum(ex.map(one, enumerate(paths)))
        times.append(time.perf_counter() - t0)
        cpu.append(_children_cpu() - c0)
    return statistics.median(times), statistics.median(cpu), frames


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def bench_loader(shards: Path, runs: int) -> tuple[float, int, int]:
    from fovea.pipelines.loader import build_train_loader
    from fovea.pipelines.config import DataConfig

    cfg = DataConfig(train_shards=[str(shards / "train-*.tar")], text_ratio=0.0)
    times = []
    for r in range(runs + 1):  # the first epoch warms the page cache and imports
        t0 = time.perf_counter()
        n = f = 0
        for b in build_train_loader(cfg, rank=0, world_size=1, epoch=r, seed=0):
            n += len(b["keys"])
            f += int(b["num_frames"].sum())
        if r:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), n, f


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", default="data/demo/raw", help="sample data folder (made if missing)")
    ap.add_argument("--copies", type=int, default=2, help="times each good clip is listed")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per row (median reported)")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_pipelines_") as tmp:
        work = Path(tmp)
        paths = bench_input(Path(args.raw), work / "input", args.copies)
        n = len(paths)
        print(f"input: {n} WebVid videos ({args.copies} x the sample clips), {args.runs} timed runs per row",
              file=sys.stderr)
        shards = None
        for cpus in (1, 2):
            t, cpu, frames, out = bench_ray(work / "input", work, cpus, args.runs)
            shards = out
            rows.append(("Ray Data pipeline (PyAV, JPEG, tokens, shards)", f"{cpus}", n, frames, t, cpu))
        if shutil.which("ffmpeg"):
            for par in (1, 2):
                t, cpu, frames = bench_ffmpeg(paths, work, par, args.runs)
                rows.append((f"ffmpeg subprocess per video ({par} at a time; JPEG only)", f"{par}", n, frames,
                             t, cpu))
        else:
            rows.append(("ffmpeg subprocess per video: NOT RUN, ffmpeg is not installed "
                         "(apt-get install -y ffmpeg)", "-", n, 0, float("nan"), float("nan")))
        t, ns, nf = bench_loader(shards, args.runs)
        loader_row = (f"training loader (webdataset, {ns} samples, batch 8, 2 workers)", "2", ns, nf, t)

    print("\n| stage | CPUs | videos | frames | seconds | videos/s | frames/s | CPU ms/video |")
    print("|---|---|---|---|---|---|---|---|")
    for name, cpus, videos, frames, t, cpu in rows:
        ok = t == t
        vps, fps = (f"{videos / t:.2f}", f"{frames / t:.1f}") if ok else ("-", "-")
        cms = f"{1000 * cpu / videos:.0f}" if ok else "-"
        print(f"| {name} | {cpus} | {videos} | {frames} | {t:.2f} | {vps} | {fps} | {cms} |")
    name, cpus, ns, nf, t = loader_row
    print(f"| {name} | {cpus} | - | {nf} | {t:.2f} | {ns / t:.1f} samples/s | {nf / t:.1f} | - |")
    load = os.getloadavg()
    print(f"\n(medians of {args.runs} runs; {os.cpu_count()} cores on this machine, load average at the end "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min): other processes compete for the cores; "
          f"frames differ between rows because ffmpeg keeps the first 64 s of long videos "
          f"and its fps filter rounds differently)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
