"""The training loop's batches: one rank's endless, resumable stream over epochs of its
training loader (pipelines/loader.py), which opens each next epoch ahead of time, and what of a
batch goes to the device."""

from __future__ import annotations

import time
from typing import Any

import torch

from fovea.platform.config import RunConfig
from fovea.platform.train.collectives import compile_seconds

class Stream:
    """Endless, resumable batch stream over epochs of the rank's training loader.

    The next epoch's loader opens before the current one ends, so its workers start and
    prefetch while this epoch's last batches train: in the first epoch once every loader
    worker has read its last sample (``TrainLoader.reading_done``: the rest of the epoch is in
    the workers' buffers and prefetch queue), later ``lookahead`` batches before the end (the
    length is known from the previous epoch), so the first batch of an epoch does not wait for
    the loader's workers to start.  The batches are unchanged: each epoch's stream is a
    function of (epoch, seed, rank) alone.  A ``data.mixture`` stream never ends (its sources
    restart, pipelines/loader.py): it stays in its first epoch, and its position is the batch
    index, which a resume skips to.
    """

    def __init__(self, cfg: RunConfig, rank: int, world: int, epoch: int = 0, consumed: int = 0):
        from fovea.pipelines.loader import build_train_loader

        self._build = build_train_loader
        self.cfg, self.rank, self.world = cfg, rank, world
        self.epoch, self.consumed = epoch, consumed
        self.lookahead = 2 * max(cfg.data.num_workers, 1)
        self._len: int | None = None  # batches in the last complete epoch
        self._loader, self._it = self._open(self.epoch, consumed)
        self._next = None  # the next epoch's (loader, iterator), once opened early
        # wall time of the last whole epoch on this rank (epochs entered at batch 0 only):
        # the same samples every time, so 1 and N GPUs compare on equal work
        self.epoch_s: float | None = None
        self.epoch_compile_s: float | None = None  # torch.compile's share of epoch_s (recompiles)
        self._epoch_t0 = time.perf_counter() if consumed == 0 else None
        self._epoch_c0 = compile_seconds()

    def _open(self, epoch: int, start: int):
        loader = self._build(self.cfg.data, rank=self.rank, world_size=self.world, epoch=epoch,
                             seed=self.cfg.training.seed, start_batch=start)
        return loader, iter(loader)

    def _near_end(self) -> bool:
        if self._len is not None:
            return self.consumed >= self._len - self.lookahead
        return self._loader.reading_done()

    def next(self) -> dict[str, Any]:
        if self._next is None and self.cfg.data.num_workers and self._near_end():
            self._next = self._open(self.epoch + 1, 0)
        try:
            batch = next(self._it)
        except StopIteration:
            if self.consumed:
                self._len = self.consumed
            now = time.perf_counter()
            if self._epoch_t0 is not None:
                self.epoch_s, self.epoch_compile_s = now - self._epoch_t0, compile_seconds() - self._epoch_c0
            self._epoch_t0, self._epoch_c0 = now, compile_seconds()
            self.epoch, self.consumed = self.epoch + 1, 0
            (self._loader, self._it), self._next = (self._next or self._open(self.epoch, 0)), None
            try:
                batch = next(self._it)
            except StopIteration:
                raise RuntimeError(
                    f"rank {self.rank}: no training batches in "
                    + ", ".join(f"data.{k}={v}" for k, v in self.cfg.data.training_sets().items())
                ) from None
        self.consumed += 1
        return batch

    def position(self) -> tuple[int, int]:
        return self.epoch, self.consumed


# Stay on the host: the model computes its frame and target indices from them there (no
# value read back from the GPU) and sends only the results (model/vlm.py).
HOST_KEYS = ("frame_mask", "input_ids", "attention_mask", "loss_mask")


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch's frames (and other tensors but HOST_KEYS) on ``device``; pinned batches
    copy asynchronously."""
    nb = device.type == "cuda"
    return {k: (v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) and k not in HOST_KEYS else v)
            for k, v in batch.items()}
