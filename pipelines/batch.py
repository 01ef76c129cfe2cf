"""The batch contract (docs/CONTRACTS.md "Batch"): the keys of a collated batch, the ones
``FoveatedVLM.forward`` takes, and synthetic batches in the same format for tests and
benchmarks.  ``pipelines/loader.py`` makes the real ones; every other room reads the keys here.
"""

from __future__ import annotations

import torch

# tensors of a collated batch; frames is [B,T,3,H,W] float, or the n real frames [n,3,H,W] uint8 when packed
TENSOR_KEYS = ("frames", "frame_mask", "num_frames", "input_ids", "attention_mask", "loss_mask", "is_text_only")
LIST_KEYS = ("keys", "sources", "users", "assistants")  # one entry per sample
# training batches of a data.mixture run only: the source the batch was drawn from ("text" for
# the interleave) and that source's pass (0-based) on the reader that made it (DESIGN.md 3.8)
MIXTURE_KEYS = ("mixture_source", "mixture_epoch")
MODEL_KEYS = ("frames", "frame_mask", "input_ids", "attention_mask", "loss_mask")  # FoveatedVLM.forward


def dummy_batch(frames_per_sample: list[int], text_lens: list[int], T: int | None = None,
                S: int | None = None, vocab: int = 49152, pad_id: int = 2, image_size: int = 224,
                seed: int = 0, pad_frame_value: float = 0.0, device="cpu") -> dict:
    """A collated batch: sample b has ``frames_per_sample[b]`` real frames (0 = text-only)
    and ``text_lens[b]`` real tokens.

    Returns frames [B,T,3,H,W] (padded frames filled with ``pad_frame_value``), frame_mask
    [B,T], num_frames [B], input_ids [B,S] (right-padded with ``pad_id``), attention_mask
    [B,S], loss_mask [B,S] (1 on real tokens), is_text_only [B].
    """
    g = torch.Generator().manual_seed(seed)
    B = len(frames_per_sample)
    T = T or max(1, max(frames_per_sample))
    S = S or max(text_lens)
    frame_mask = torch.zeros(B, T, dtype=torch.bool)
    for b, n in enumerate(frames_per_sample):
        frame_mask[b, :n] = True
    frames = torch.randn(B, T, 3, image_size, image_size, generator=g)
    frames = torch.where(frame_mask[:, :, None, None, None], frames, torch.full_like(frames, pad_frame_value))
    input_ids = torch.full((B, S), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(B, S, dtype=torch.bool)
    for b, n in enumerate(text_lens):
        input_ids[b, :n] = torch.randint(3, vocab, (n,), generator=g)
        attention_mask[b, :n] = True
    batch = {
        "frames": frames, "frame_mask": frame_mask,
        "num_frames": frame_mask.sum(1), "input_ids": input_ids,
        "attention_mask": attention_mask, "loss_mask": attention_mask.float(),
        "is_text_only": frame_mask.sum(1) == 0,
    }
    return {k: v.to(device) for k, v in batch.items()}


def model_inputs(batch: dict) -> dict:
    """The subset of a batch that ``FoveatedVLM.forward`` takes."""
    return {k: batch[k] for k in MODEL_KEYS}


def select(batch: dict, b: int, T: int | None = None, S: int | None = None) -> dict:
    """Sample ``b`` of a batch alone, trimmed to T frame slots / S tokens (for padding tests)."""
    out = {k: v[b: b + 1] for k, v in batch.items() if torch.is_tensor(v)}
    if T is not None:
        out["frames"], out["frame_mask"] = out["frames"][:, :T], out["frame_mask"][:, :T]
    if S is not None:
        for k in ("input_ids", "attention_mask", "loss_mask"):
            out[k] = out[k][:, :S]
    return out
