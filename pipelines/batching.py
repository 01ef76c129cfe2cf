"""Batches from a reader's samples, formed on metadata before any frame is decoded.

Fixed-size batches of ``data.batch_size`` samples, or with ``data.max_total_frames`` token-budget
batches (DESIGN.md 3.6): buffer 4 x batch_size samples, sort them by (frames, text tokens), or by
frames + text tokens as the reference does (``data.budget_sort_key=sum``; ``data.budget_sort=false``:
arrival order), close a batch when it has batch_size samples or one
more would exceed the budget (a single longer sample forms its own batch), carry the buffer's
last, unfilled batch over into the next buffer, and shuffle the order of the closed batches.
The reader's one unfilled batch of the epoch comes last, so the cheap tails of all readers and
ranks fall together at the epoch's end instead of meeting full batches on the other ranks (the
rank imbalance that ``jobs/bench/bench_rank_balance.py`` replays: 1.13 -> 1.02 on 2 ranks x 8
readers of 750 samples an epoch).

The budget counts real frames, plus, with ``data.llm_tokens_per_frame`` = r, the padded LLM rows
as frames at r tokens each:

    cost = sum(frames) + B * (max frames + max text tokens) / r

so that every closed batch costs about the same compute (DDP ranks wait for the costlier batch
of a step).  A sample here is anything with ``frames``, ``tokens`` and ``key`` attributes.
"""

from __future__ import annotations

import random


def make_batches(samples, batch_size: int, max_total_frames: int | None, rng: random.Random | None,
                 sort: bool = True, llm_tokens_per_frame: float | None = None, sort_key: str = "frames_tokens"):
    """Fixed-size batches, or token-budget batches (see the module docstring); yields lists."""
    if max_total_frames is None:
        buf = []
        for s in samples:
            buf.append(s)
            if len(buf) == batch_size:
                yield buf
                buf = []
        if buf:
            yield buf
        return
    buf = []
    for s in samples:
        buf.append(s)
        if len(buf) >= 4 * batch_size:
            full, buf = pack_batches(buf, batch_size, max_total_frames, llm_tokens_per_frame, sort, sort_key)
            yield from shuffled(full, rng)  # the unfilled last batch waits for the next buffer
    if buf:
        full, rest = pack_batches(buf, batch_size, max_total_frames, llm_tokens_per_frame, sort, sort_key)
        yield from shuffled(full, rng)
        yield rest  # the one unfilled batch: last, where the other readers' and ranks' are


def batch_cost(frames: int, n: int, max_frames: int, max_tokens: int, llm_tokens_per_frame: float | None) -> float:
    """Budget units of a batch of n samples: its real frames (+ its padded LLM rows as frames)."""
    if not llm_tokens_per_frame:
        return frames
    return frames + n * (max_frames + max_tokens) / llm_tokens_per_frame


SORT_KEYS = {  # data.budget_sort_key; the sample key last, so that equal lengths keep one order
    "frames_tokens": lambda s: (s.frames, s.tokens, s.key),
    "sum": lambda s: (s.frames + s.tokens, s.key),  # the reference's
}


def pack_batches(buf, batch_size, cap, llm_tokens_per_frame, sort=True, sort_key="frames_tokens"):
    """Samples -> (closed batches, the last, unfilled one): token-budget batches of at most
    ``batch_size`` samples and ``cap`` budget units (``batch_cost``), the samples sorted by
    ``SORT_KEYS[sort_key]`` first unless ``sort`` is off."""
    if sort:
        buf = sorted(buf, key=SORT_KEYS[sort_key])
    out, cur, frames, top_f, top_t = [], [], 0, 0, 0  # the open batch, its frames, max frames/tokens
    for s in buf:
        cost = batch_cost(frames + s.frames, len(cur) + 1, max(top_f, s.frames), max(top_t, s.tokens),
                          llm_tokens_per_frame)
        if cur and (len(cur) == batch_size or cost > cap):
            out.append(cur)
            cur, frames, top_f, top_t = [], 0, 0, 0
        cur.append(s)
        frames, top_f, top_t = frames + s.frames, max(top_f, s.frames), max(top_t, s.tokens)
    return out, cur


def shuffled(batches, rng):
    """The batches in random order (shuffled in place), or as they are when ``rng`` is None."""
    if rng is not None:
        rng.shuffle(batches)
    return batches
