#!/usr/bin/env python
"""Stage-1 shards for throughput benchmarks, written without a video decoder.

    python jobs/bench/make_bench_shards.py --out data/bench --samples 2000 [--dist ref|64] [--workers 8]

Frames are 224x224 JPEG crops panned over scikit-image's real photos (so JPEG decode
costs what real frames cost); frame counts follow the reference distribution of OpenVid
(spec 3.1: 1-64 frames, mean ~7), drawn as round(LogNormal(mu=ln 7 - s^2/2, s=0.8))
clipped to [1, 64], or a fixed 64 (``--dist 64``, the worst case).  Captions of ~64 tokens
are tokenized with the stage-1 rule through the project's chat template.  The shard
layout is the spec's (KEY.json + KEY.NNN.jpg, contiguous).  Used on the offline GPU
machine, which has no PyAV: the video pipeline itself is benchmarked by bench_pipelines.py.
"""

from __future__ import annotations

import argparse
import io
import json
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "cat")
WORDS = ("a slow pan across a detailed scene with people objects light and shadow moving gently "
         "while the camera drifts from left to right and the colours change softly over time").split()


def frame_counts(n: int, dist: str, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    if dist == "64":
        return [64] * n
    s = 0.8
    mu = math.log(7.0) - s * s / 2  # mean of the log-normal = 7
    return [int(min(64, max(1, round(x)))) for x in rng.lognormal(mu, s, size=n)]


def _photo(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return img[..., :3].astype(np.uint8)


def _frames(photo: np.ndarray, n: int, rng: np.random.Generator) -> list[bytes]:
    from PIL import Image

    h, w = photo.shape[:2]
    side = min(h, w) * rng.uniform(0.5, 0.9)
    x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side)
    dx, dy = rng.uniform(-1, 1, size=2) * side * 0.3 / max(n, 1)
    out = []
    for t in range(n):
        x = int(np.clip(x0 + dx * t, 0, w - side))
        y = int(np.clip(y0 + dy * t, 0, h - side))
        crop = Image.fromarray(photo[y:y + int(side), x:x + int(side)]).resize((224, 224), Image.BILINEAR)
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def write_shard(args: tuple[str, int, list[int], int, str]) -> int:
    import webdataset as wds

    from fovea.pipelines.tokenize import load_tokenizer, tokenize_chat

    path, first, counts, seed, tokenizer = args
    tok = load_tokenizer(tokenizer)
    rng = np.random.default_rng(seed)
    photos = {p: _photo(p) for p in PHOTOS}
    tmp = path + ".tmp"
    with wds.TarWriter(tmp) as w:
        for i, n in enumerate(counts):
            name = PHOTOS[(first + i) % len(PHOTOS)]
            caption = " ".join(rng.choice(WORDS, size=40))
            user = "Write a brief caption for this video."
            t = tokenize_chat(tok, user, caption, stage=1, max_tokens=512)
            sample = {"__key__": f"{first + i:08d}",
                      "json": json.dumps({"user": user, "assistant": caption, "source": "bench",
                                          "frame_count": n, "token_ids": t.token_ids, "loss_mask": t.loss_mask,
                                          "is_text_only": False, "stage": 1}).encode()}
            for f, jpg in enumerate(_frames(photos[name], n, rng)):
                sample[f"{f:03d}.jpg"] = jpg
            w.write(sample)
    Path(tmp).rename(path)
    return len(counts)


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
