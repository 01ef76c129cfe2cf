"""``data:`` -- which shards a run reads and how the loader batches them.  The run config
(``RunConfig`` in platform/config.py) holds one of these; the pipelines read nothing else."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DataConfig(BaseModel):
    """Shards and batching (docs/DESIGN.md, "Data")."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    train_shards: list[str] = Field(default_factory=list)  # globs of .tar shards
    val_shards: list[str] = Field(default_factory=list)
    text_shards: list[str] = Field(default_factory=list)  # SmolTalk shards of the stage
    text_ratio: float = Field(0.14, ge=0.0, le=1.0)
    max_frames: int = Field(64, ge=1)
    replicate_image_frames: int = Field(1, ge=1)  # 8 in SFT stages
    batch_size: int = Field(8, ge=1)
    max_total_frames: int | None = None  # token-budget batching: cap on real frames per batch
    # with max_total_frames: sort each 4 x batch_size buffer by length first (few padded LLM
    # slots, but batches range from many short to few long videos: DDP ranks then wait for the
    # costlier batch); false: close batches in arrival order (mixed lengths, similar cost)
    budget_sort: bool = True
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


