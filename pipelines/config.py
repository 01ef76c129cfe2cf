"""``data:`` -- which shards a run reads and how the loader batches them.  The run config
(``RunConfig`` in platform/config.py) holds one of these; the pipelines read nothing else."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DataConfig(BaseModel):
    """Shards and batching (docs/DESIGN.md, "Data")."""

    # strict: a bool where a number belongs (``batch_size: true``) is refused, not read as 1
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

    train_shards: list[str] = Field(default_factory=list)  # globs of .tar shards
    val_shards: list[str] = Field(default_factory=list)
    text_shards: list[str] = Field(default_factory=list)  # SmolTalk shards of the stage
    text_ratio: float = Field(0.14, ge=0.0, le=1.0)
    # refuse shards tokenized for another stage's loss rule before the run starts (stage-1 shards
    # in stage 2 would train on all text); false: read them as written, as the reference does
    # (DESIGN.md 2.3; pipelines/shard_stages.py)
    check_shard_stage: bool = True
    max_frames: int = Field(64, ge=1)
    replicate_image_frames: int = Field(1, ge=1)  # 8 in SFT stages
    # drop samples with fewer frames (counted after max_frames and replication) from the training
    # and validation shards, not from the text interleave; 0 = keep all (the reference's
    # long-video runs used 30, DESIGN.md 3.4)
    min_frames: int = Field(0, ge=0)
    batch_size: int = Field(8, ge=1)
    max_total_frames: int | None = Field(None, ge=1)  # token-budget batching: cap on real frames per batch
    # with max_total_frames: sort each 4 x batch_size buffer by length first (few padded LLM
    # slots, but batches range from many short to few long videos: DDP ranks then wait for the
    # costlier batch); false: close batches in arrival order (mixed lengths, similar cost)
    budget_sort: bool = True
    # the sort key: "frames_tokens" = (frames, text tokens), so that a batch's frames, which dominate
    # its memory, are alike; "sum" = frames + text tokens, the reference's key (DESIGN.md 3.6)
    budget_sort_key: Literal["frames_tokens", "sum"] = "frames_tokens"
    # with max_total_frames: also count a batch's padded LLM rows, B x (max frames + max text
    # tokens), as frames at this many tokens a frame, so that the budget bounds a batch's compute
    # and DDP ranks get batches of similar cost. 135M + DINOv2-small: one frame's patch pass
    # (12.1 GFLOP, +1/3 recomputed with DINO checkpointing) ~ 57-76 LLM tokens (0.21 GFLOP each).
    # None: frames only (DESIGN.md 3.6).
    llm_tokens_per_frame: float | None = Field(None, gt=0)
    max_text_tokens: int = Field(512, ge=8)
    num_workers: int = Field(2, ge=0)
    # Training batches carry only the real frames, packed uint8 [n,3,224,224], normalised on the
    # device (4x fewer bytes than float, no padded slots); False: padded float [B,T,3,224,224].
    packed_frames: bool = True
    shuffle_buffer: int = Field(5000, ge=0)
    shard_shuffle: bool = True


