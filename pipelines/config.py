"""``data:`` -- which shards a run reads and how the loader batches them.  The run config
(``RunConfig`` in platform/config.py) holds one of these; the pipelines read nothing else.

A run reads either ``train_shards`` (one stream; each set's share is its share of the samples)
or ``mixture``: named sources, each with its shards, a weight and its own frame options; every
batch comes from one source, drawn by weight (DESIGN.md 3.8, pipelines/loader.py):

    mixture:
      openvid:    {shards: ["data/shards/openvid/train-*.tar"], weight: 0.55}
      vript_long: {shards: ["data/shards/vript_long/train-*.tar"], weight: 0.30}
      cauldron:   {shards: ["data/shards/cauldron/train-*.tar"], weight: 0.5, replicate_image_frames: 8}

The weights need not sum to 1: they are normalised (``mixture_weights``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# a source's name is part of its metric names (mix/<name>/samples) and of its seeds
SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
TEXT_SOURCE = "text"  # the text interleave's name in the mixture counts (reserved)


class MixtureSource(BaseModel):
    """One named source of ``data.mixture``: its shards, its weight, and options that replace the
    ``data:`` section's own for its samples (None: the section's value)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

    shards: list[str] = Field(min_length=1)  # globs of .tar shards
    weight: float = Field(gt=0.0, allow_inf_nan=False)  # relative: the weights are normalised
    replicate_image_frames: int | None = Field(None, ge=1)  # 8 for image sets in SFT stages
    max_frames: int | None = Field(None, ge=1)
    min_frames: int | None = Field(None, ge=0)
    # None: the source's share of data.shuffle_buffer, by weight (the sources' buffers together
    # hold what one stream's would)
    shuffle_buffer: int | None = Field(None, ge=0)


class DataConfig(BaseModel):
    """Shards and batching (docs/DESIGN.md, "Data")."""

    # strict: a bool where a number belongs (``batch_size: true``) is refused, not read as 1
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

    train_shards: list[str] = Field(default_factory=list)  # globs of .tar shards (or data.mixture)
    # named sources drawn by weight for each batch; excludes train_shards (see the module docstring)
    mixture: dict[str, MixtureSource] | None = None
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

    @field_validator("mixture")
    @classmethod
    def _source_names(cls, mixture):
        if mixture is None:
            return None
        if not mixture:
            raise ValueError("data.mixture is empty: name at least one source (data.mixture.<name>: "
                             "{shards: [...], weight: ...}), or set data.mixture=null and use data.train_shards")
        for name in mixture:
            if not SOURCE_NAME.match(name) or name == TEXT_SOURCE:
                raise ValueError(f"data.mixture.{name}: a source name is letters, digits, '_', '.' and '-' "
                                 f"(it names the metrics mix/<name>/...), and not {TEXT_SOURCE!r}, which "
                                 "counts the text interleave")
        return mixture

    @model_validator(mode="after")
    def _one_training_set(self) -> "DataConfig":
        if self.mixture is not None and self.train_shards:
            raise ValueError("data.train_shards and data.mixture are both set: a mixture names the shards of "
                             "each source (data.mixture.<name>.shards); set data.train_shards=[] (in a file "
                             "based on a stage config: train_shards: [])")
        return self

    def mixture_weights(self) -> dict[str, float]:
        """Source name -> its normalised weight (summing to 1), in name order ({} without a mixture)."""
        if not self.mixture:
            return {}
        total = sum(src.weight for src in self.mixture.values())
        return {name: self.mixture[name].weight / total for name in sorted(self.mixture)}

    def source_config(self, name: str) -> "DataConfig":
        """The section as source ``name`` of the mixture reads it: its shards as ``train_shards``,
        its options in place of the section's, its share of the shuffle buffer."""
        src = self.mixture[name]
        buffer = src.shuffle_buffer
        if buffer is None:
            buffer = round(self.shuffle_buffer * self.mixture_weights()[name])
        own = {k: getattr(src, k) for k in ("replicate_image_frames", "max_frames", "min_frames")
               if getattr(src, k) is not None}
        return self.model_copy(update={"train_shards": list(src.shards), "mixture": None,
                                       "shuffle_buffer": buffer, **own})

    def training_sets(self) -> dict[str, list[str]]:
        """The config key of each training shard set -> its globs: ``train_shards``, or
        ``mixture.<name>.shards`` for every source (the preflight checks and path resolution)."""
        if self.mixture is None:
            return {"train_shards": list(self.train_shards)}
        return {f"mixture.{name}.shards": list(src.shards) for name, src in self.mixture.items()}
