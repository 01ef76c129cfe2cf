"""Glyph-task shards straight from the rendered frames, for machines without PyAV (the offline
GPU image has no H.264 encoder): no video files, no preprocessing pass.

    write_direct_shards(raw_dir, shards_dir, GlyphTaskConfig(num_videos=6000), tokenizer="fovea/tiny-llama")

Same sample keys, train/val split, JSON fields, chat tokens and JPEG settings as
``run_preprocess("webvid", ...)`` over the videos that ``task.generate_glyph_task`` writes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

from fovea.platform.check.task import META_NAME, TASK_NAME, VERSION, GlyphTaskConfig, read_metadata, render_video


def have_pyav() -> bool:
    try:
        import av  # noqa: F401
        return True
    except ImportError:
        return False


# -- shards without video files (machines without PyAV) ----------------------------------------

def _direct_chunk(cfg_dict: dict, indices: list[int], shard_index: int, shards_dir: str, tokenizer: str,
                  stage: int, val_fraction: float) -> tuple[list[dict], dict]:
    from fovea.pipelines.preprocess import sample_key, split_of
    from fovea.pipelines.shards import ShardWriter, shard_name
    from fovea.pipelines.tokenize import default_max_tokens, load_tokenizer, prompt_for, tokenize_chat
    from fovea.pipelines.video import FRAME_SIZE, JPEG_QUALITY, encode_jpeg, resize_center_crop

    cfg = GlyphTaskConfig.from_dict(cfg_dict)
    tok = load_tokenizer(tokenizer)
    user = prompt_for("webvid", "")
    writers: dict[str, ShardWriter] = {}
    counts: dict[str, int] = {}
    metas = []
    for i in indices:
        frames, meta = render_video(cfg, i)
        sid = meta["videoid"]
        split = split_of(sid, val_fraction)
        t = tokenize_chat(tok, user, meta["caption"], stage, default_max_tokens(stage))
        jpgs = [encode_jpeg(f if f.shape[0] == FRAME_SIZE else resize_center_crop(f, FRAME_SIZE), JPEG_QUALITY)
                for f in frames]
        sample = {"id": sid, "dataset": "webvid", "source": "webvid", "user": user, "assistant": meta["caption"],
                  "frame_count": len(jpgs), "token_ids": t.token_ids, "loss_mask": t.loss_mask,
                  "is_text_only": False, "stage": stage, "pad_id": tok.pad_token_id, "truncated": t.truncated,
                  "frame_times": [k + 0.5 for k in range(cfg.frames)], "duration": float(cfg.frames)}
        if split not in writers:
            writers[split] = ShardWriter(Path(shards_dir) / shard_name(split, shard_index))
        writers[split].add(sample_key("webvid", sid), json.dumps(sample, ensure_ascii=False, sort_keys=True), jpgs)
        counts[split] = counts.get(split, 0) + 1
        metas.append(meta)
    for w in writers.values():
        w.commit()
    return metas, counts


def write_direct_shards(raw_dir: str | Path, shards_dir: str | Path, cfg: GlyphTaskConfig, *, tokenizer: str,
                        stage: int = 1, val_fraction: float = 0.1, samples_per_shard: int = 1000,
                        workers: int | None = None) -> dict:
    """Shards straight from the rendered frames, for machines without PyAV (no video files).

    Same sample keys, train/val split, JSON fields, chat tokens and JPEG settings as
    ``run_preprocess("webvid", ...)`` on the video files; the only difference is that the
    frames skip the H.264 round trip.  ``raw_dir`` gets ``glyphs.jsonl`` and ``task.json``
    (no CSV, no videos).  Idempotent (``direct.json`` holds the stamp).  Returns
    ``{"metas", "splits", "seconds"}``.
    """
    raw, out = Path(raw_dir), Path(shards_dir)
    stamp = json.dumps({"task": cfg.stamp(), "tokenizer": tokenizer, "stage": stage, "val_fraction": val_fraction,
                        "per_shard": samples_per_shard}, sort_keys=True)
    done = out / "direct.json"
    if done.exists() and json.loads(done.read_text()).get("stamp") == stamp and (raw / META_NAME).exists():
        return {"metas": read_metadata(raw), "splits": json.loads(done.read_text())["splits"], "seconds": 0.0}
    t0 = time.time()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    raw.mkdir(parents=True, exist_ok=True)
    workers = workers or min(16, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    idx = list(range(cfg.num_videos))
    per = max(1, min(samples_per_shard, math.ceil(len(idx) / max(1, workers))))
    chunks = [idx[i:i + per] for i in range(0, len(idx), per)]
    jobs = [(cfg.to_dict(), c, k, str(out), tokenizer, stage, val_fraction) for k, c in enumerate(chunks)]
    if workers <= 1 or len(chunks) == 1:
        parts = [_direct_chunk(*j) for j in jobs]
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
            parts = list(ex.map(_direct_chunk, *zip(*jobs)))
    metas = [m for p, _ in parts for m in p]
    splits: dict[str, int] = {}
    for _, c in parts:
        for k, v in c.items():
            splits[k] = splits.get(k, 0) + v
    (raw / META_NAME).write_text("".join(json.dumps(m) + "\n" for m in metas))
    (raw / TASK_NAME).write_text(json.dumps({"stamp": cfg.stamp(), "version": VERSION, "config": cfg.to_dict(),
                                             "num_videos": len(metas), "videos": False}, indent=1))
    secs = round(time.time() - t0, 2)
    done.write_text(json.dumps({"stamp": stamp, "splits": splits, "seconds": secs}, indent=1))
    return {"metas": metas, "splits": splits, "seconds": secs}
