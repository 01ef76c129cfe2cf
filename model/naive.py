"""The naive baseline that throughput optimisations are measured against (jobs/bench/bench_train.py).

``naive_encoder(model)`` rewires one model instance so that its encoder
  * runs DINOv2 once per frame (no batching of frames), and
  * never reuses the patch K/V cache: every query pass (coarse, then fine) re-runs the
    patch pass over the frames.
Numerically it is the same model (tests/test_bench_numerics.py pins that); only the
work done differs.  Combined with fp32 (no autocast) it is the "plain path".
"""

from __future__ import annotations

import torch

from .encoder import PatchCache


def naive_encoder(model) -> None:
    """Turn the encoder into the naive baseline: per-frame DINOv2 calls, no K/V reuse."""
    enc = model.encoder
    per_frame = enc.encode_patches
    enc.frame_bucket = 0  # one frame a call: padding it to a bucket would only add work

    def encode_patches(frames, frame_mask=None):
        if frame_mask is not None:
            frames = frames[frame_mask.bool()]
        parts = [per_frame(frames[i:i + 1]) for i in range(frames.shape[0])]  # one call per frame
        cache = PatchCache([torch.cat([p.keys[l] for p in parts]) for l in range(len(parts[0].keys))],
                           [torch.cat([p.values[l] for p in parts]) for l in range(len(parts[0].values))],
                           torch.cat([p.features for p in parts]))
        cache.frames, cache.used = frames, False
        return cache

    plain_query = enc.query_pass

    def query_pass(cache, queries, return_attn=False):
        # The first query pass (coarse) uses the patch pass just made; every later one
        # (fine) re-runs it instead of reusing the cached K/V.
        if getattr(cache, "used", False):
            cache = encode_patches(cache.frames)
        cache.used = True
        return plain_query(cache, queries, return_attn=return_attn)

    enc.encode_patches = encode_patches
    enc.query_pass = query_pass


