"""Tiny shard sources for data.mixture tests (DESIGN.md 3.2 layout): grey frames, one source a
folder, keys prefixed by the folder's name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_source(folder: Path, n: int, per_shard: int, frames, tokenizer=None, text: bool = False) -> set[str]:
    """``n`` samples of ``frames(i)`` grey 224 x 224 JPEG frames (0: text-only) in shards of
    ``per_shard``; stage-2 tokens from the real chat template when a tokenizer is given, else a
    few synthetic ids.  Keys are unique across sources (the folder's name is their prefix)."""
    from fovea.pipelines.shards import ShardWriter
    from fovea.pipelines.tokenize import tokenize_chat
    from fovea.pipelines.video import encode_jpeg

    folder.mkdir(parents=True, exist_ok=True)
    jpg = encode_jpeg(np.full((224, 224, 3), 90, np.uint8))
    keys = set()
    for s in range(0, n, per_shard):
        w = ShardWriter(folder / f"train-{s // per_shard:05d}.tar")
        for i in range(s, min(n, s + per_shard)):
            f = 0 if text else frames(i)
            user, answer = f"What is in clip {i}?", f"Clip {i} of {folder.name}."
            if tokenizer is not None:
                tok = tokenize_chat(tokenizer, user, answer, stage=2, max_tokens=64)
                ids, mask = tok.token_ids, tok.loss_mask
            else:
                ids = list(range(3, 6 + i % 5))
                mask = [0, 0] + [1] * (len(ids) - 2)
            meta = {"user": user, "assistant": answer, "source": folder.name, "frame_count": f,
                    "token_ids": ids, "loss_mask": mask, "is_text_only": f == 0, "stage": 2, "pad_id": 2}
            key = f"{folder.name}{i:04d}"
            w.add(key, json.dumps(meta), [jpg] * f)
            keys.add(key)
        w.commit()
    return keys
