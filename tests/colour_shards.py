"""A small learnable task written straight into shards (DESIGN.md 3.2 layout) for training tests.

Each video is 1-4 frames of one solid colour; its caption names the colour, so the
caption's colour word is only predictable from the frames.  SmolTalk-style text-only
samples go into a separate shard set.  Tokens and loss masks follow the stage-1 rule
(every text token is a target) with the real SmolLM2 chat template.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import webdataset as wds
from PIL import Image

SYSTEM = "You are a helpful AI assistant."
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}


def _jpeg(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (224, 224), rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _tokens(tokenizer, user: str, answer: str) -> tuple[list[int], list[int]]:
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user},
            {"role": "assistant", "content": answer}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids, [1] * len(ids)


def write_colour_shards(out: Path, tokenizer, n_train: int = 48, n_val: int = 8, n_text: int = 24,
                        per_shard: int = 8) -> dict[str, str]:
    """Write train/val video shards and text shards; return glob patterns."""
    vid, txt = out / "colours", out / "text"
    vid.mkdir(parents=True, exist_ok=True)
    txt.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    for split, n in (("train", n_train), ("val", n_val)):
        for s in range(0, n, per_shard):
            with wds.TarWriter(str(vid / f"{split}-{s // per_shard:05d}.tar")) as w:
                for i in range(s, min(s + per_shard, n)):
                    colour = names[i % len(names)]
                    frames = 1 + (i % 4)
                    user = "What colour is this video?"
                    answer = f"The video is {colour}."
                    ids, mask = _tokens(tokenizer, user, answer)
                    sample = {"__key__": f"{split}{i:06d}",
                              "json": json.dumps({"user": user, "assistant": answer, "source": "colours",
                                                  "frame_count": frames, "token_ids": ids, "loss_mask": mask,
                                                  "is_text_only": False, "stage": 1}).encode()}
                    for f in range(frames):
                        sample[f"{f:03d}.jpg"] = _jpeg(COLOURS[colour])
                    w.write(sample)
    for s in range(0, n_text, per_shard):
        with wds.TarWriter(str(txt / f"train-{s // per_shard:05d}.tar")) as w:
            for i in range(s, min(s + per_shard, n_text)):
                user, answer = f"What is {i} plus one?", f"{i} plus one is {i + 1}."
                ids, mask = _tokens(tokenizer, user, answer)
                w.write({"__key__": f"text{i:06d}",
                         "json": json.dumps({"user": user, "assistant": answer, "source": "smoltalk",
                                             "frame_count": 0, "token_ids": ids, "loss_mask": mask,
                                             "is_text_only": True, "stage": 1}).encode()})
    return {"train": str(vid / "train-*.tar"), "val": str(vid / "val-*.tar"), "text": str(txt / "train-*.tar")}
