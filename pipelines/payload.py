"""One sample reference -> shard payload, or a reject record.  Runs inside Ray Data tasks.

``process_batch`` is the ``map_batches`` function: it never raises for bad input; each row
becomes either ``ok=True`` with ``json`` (the sample's metadata, DESIGN.md 3.2) and ``jpgs`` (one
JPEG per frame, time order) or ``ok=False`` with ``reason``/``detail``.

Sample JSON (``KEY.json``):
    id, dataset, source, user, assistant     the text (user = prompt actually used)
    frame_count                              number of KEY.NNN.jpg files (0 = text-only)
    token_ids, loss_mask                     chat-formatted tokens and the stage's targets
    is_text_only, stage, pad_id              pad_id = tokenizer pad (eos) id, for collation
    frame_times, duration                    videos only: sample times (s) and duration (s)
    truncated                                True when tokens were cut at max_tokens
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import asdict, dataclass

import pyarrow as pa

from fovea.pipelines.errors import INTERNAL_ERROR, Reject
from fovea.pipelines.readers import VISUAL, load_record
from fovea.pipelines.tokenize import load_tokenizer, prompt_for, tokenize_chat
from fovea.pipelines.video import (
    FRAME_SIZE, JPEG_QUALITY, SAMPLE_FPS, decode_video, encode_jpeg, prepare_image,
)

PIPELINE_VERSION = 1  # bump when the payload of an unchanged input would change


@dataclass(frozen=True)
class Settings:
    """Everything that determines a shard's bytes besides its input (part of the plan hash)."""

    dataset: str
    stage: int
    max_tokens: int
    max_frames: int
    tokenizer: str
    fps: float = SAMPLE_FPS
    size: int = FRAME_SIZE
    jpeg_quality: int = JPEG_QUALITY
    version: int = PIPELINE_VERSION

    def to_dict(self) -> dict:
        return asdict(self)


def process_ref(ref: dict, s: Settings) -> tuple[dict, list[bytes]]:
    """-> (sample JSON dict, JPEG frames).  Raises ``Reject``; text is checked before media."""
    rec = load_record(s.dataset, ref)
    tok = load_tokenizer(s.tokenizer)
    user = prompt_for(rec["source"], rec["user"]) if VISUAL[s.dataset] else rec["user"]
    t = tokenize_chat(tok, user, rec["assistant"], s.stage, s.max_tokens)
    meta = {
        "id": ref["id"], "dataset": s.dataset, "source": rec["source"],
        "user": user, "assistant": rec["assistant"].strip(),
        "frame_count": 0, "token_ids": t.token_ids, "loss_mask": t.loss_mask,
        "is_text_only": VISUAL[s.dataset] is None, "stage": s.stage,
        "pad_id": tok.pad_token_id, "truncated": t.truncated,
    }
    jpgs: list[bytes] = []
    if rec["video"] is not None:
        v = decode_video(rec["video"], max_frames=s.max_frames, size=s.size, fps=s.fps,
                         listed_duration=rec.get("listed_s"))
        jpgs = [encode_jpeg(f, s.jpeg_quality) for f in v.frames]
        meta["frame_times"] = [round(x, 4) for x in v.times]
        meta["duration"] = round(v.duration, 4)
    elif rec["image"] is not None:
        jpgs = [encode_jpeg(prepare_image(rec["image"], s.size), s.jpeg_quality)]
    meta["frame_count"] = len(jpgs)
    return meta, jpgs


def process_batch(batch: dict, settings: dict):
    """Ray Data ``map_batches`` function: columns key/split/shard/ref -> a pyarrow table (``SCHEMA``)."""
    s = Settings(**settings)
    out: dict[str, list] = {name: [] for name in SCHEMA.names}
    for key, split, shard, ref_json in zip(batch["key"], batch["split"], batch["shard"], batch["ref"]):
        ref = json.loads(ref_json)
        ok, meta, jpgs, reason, detail = True, None, [], "", ""
        cpu0 = time.process_time()
        try:
            meta, jpgs = process_ref(ref, s)
        except Reject as r:
            ok, reason, detail = False, r.reason, r.detail
        except Exception as e:  # a bug or an unforeseen input: still a reject, with the traceback tail
            ok, reason = False, INTERNAL_ERROR
            detail = f"{type(e).__name__}: {e} | {traceback.format_exc(limit=-2)[-300:]}"
        out["key"].append(str(key))
        out["split"].append(str(split))
        out["shard"].append(int(shard))
        out["id"].append(ref["id"])
        out["where"].append(ref.get("where", ""))
        out["ok"].append(ok)
        out["json"].append(json.dumps(meta, ensure_ascii=False, sort_keys=True) if ok else "")
        out["jpgs"].append(jpgs)
        out["reason"].append(reason)
        out["detail"].append(detail)
        out["cpu_s"].append(time.process_time() - cpu0)
    return pa.table(out, schema=SCHEMA)


SCHEMA = pa.schema([
    ("key", pa.string()), ("split", pa.string()), ("shard", pa.int64()), ("id", pa.string()),
    ("where", pa.string()), ("ok", pa.bool_()), ("json", pa.string()),
    ("jpgs", pa.list_(pa.binary())), ("reason", pa.string()), ("detail", pa.string()),
    ("cpu_s", pa.float64()),  # CPU seconds the worker spent on this row (cost accounting, benchmark)
])
