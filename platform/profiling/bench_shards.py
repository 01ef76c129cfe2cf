"""The synthetic stage-1 shards the throughput benchmarks read (jobs/bench/make_bench_shards.py):
the reference distribution of frames a sample, and the writer of one shard.

Frames are 224x224 JPEG crops panned over scikit-image's real photos (so JPEG decode costs
what real frames cost); frame counts follow the reference distribution of OpenVid (1-64
frames, mean ~7), drawn as round(LogNormal(mu=ln 7 - s^2/2, s=0.8)) clipped to [1, 64], or a
fixed 64 (the worst case). Captions of ~64 tokens are tokenized with the stage-1 rule through
the project's chat template. The shard layout is the training loader's (KEY.json +
KEY.NNN.jpg, contiguous). No video decoder is needed, so the shards can be made on a machine
without PyAV.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "cat")
WORDS = ("a slow pan across a detailed scene with people objects light and shadow moving gently "
         "while the camera drifts from left to right and the colours change softly over time").split()


def frame_counts(n: int, dist: str, seed: int) -> list[int]:
    """Frames of ``n`` samples: the reference distribution (``dist="ref"``) or 64 each (``"64"``)."""
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
    """Write one shard: (path, index of its first sample, frames of each sample, seed, tokenizer)
    -> samples written. Written to ``path.tmp`` and renamed, so a shard that exists is whole."""
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
