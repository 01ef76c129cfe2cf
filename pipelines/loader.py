"""Training and evaluation loaders: webdataset shards -> batch dicts (docs/CONTRACTS.md).

Entry points (called inside Ray Train workers):

    build_train_loader(data_cfg, rank=, world_size=, epoch=, seed=, start_batch=0)
    train_batches(data_cfg, rank=, world_size=, seed=, start_epoch=0, start_batch=0)  # endless
    build_eval_loader(data_cfg, shards, rank=0, world_size=1, max_samples=N)     # N per rank
    collate(samples)

Reading (one "reader" = one DataLoader worker of one rank; R = world_size * num_workers):
  * shards are the sorted union of the globs; each epoch they are shuffled with a seed derived
    from (seed, epoch) only, so every rank sees the same order; reader r takes shards
    r, r + R, r + 2R, ...  If there are fewer shards than readers, every reader reads all
    shards and keeps the samples whose running index i has i % R == r.  Either way ranks and
    workers read disjoint samples whose union is the whole set (the reference split by worker
    only, so all ranks read the same stream).
  * per reader: a shuffle buffer of ``shuffle_buffer`` samples seeded by (seed, epoch, reader
    index r, R), so the batches of reader r do not depend on how the R readers are split into
    ranks x workers; the JPEG bytes stay encoded until a batch is formed.
  * batching happens in the reader, on metadata: ``batch_size`` samples, or token-budget
    batches (``max_total_frames``; pipelines/batching.py).  Only then are the frames decoded (``torchvision.io.decode_jpeg`` when torchvision imports, else PIL),
    truncated to ``max_frames`` by uniform spread, single images repeated ``replicate_image_frames`` times,
    and ImageNet-normalised in ``collate`` -- except in training with ``data.packed_frames``
    (the default), where ``collate`` ships only the real frames as uint8 [n,3,224,224] and the
    model normalises them on the device (1 byte a pixel instead of 4, no padded slots: a batch
    of 64 reference videos is ~450 real frames but 64 x 64 padded slots).
  * ``min_frames`` (0 = off; the reference's optional long-video filter): a sample with fewer
    frames, counted after the ``max_frames`` cap and image replication, is dropped before
    batching, in training and validation shards alike (the text interleave keeps its samples).
  * text interleave: for batch i a Bernoulli(text_ratio) drawn from a generator seeded by
    (seed, epoch, rank) picks a batch of ``text_shards`` (SmolTalk of the stage) instead of a
    vision batch.  Text batches are built in the main process (no decoding), their stream
    restarts (reshuffled) when exhausted; the epoch ends when the vision stream is exhausted.
    Text-only samples are kept explicitly: one zero frame, frame_mask False, num_frames 0.
  * exact resume: the stream is a deterministic function of (data_cfg, epoch, seed, rank,
    world_size).  ``start_batch=k`` yields batches k, k+1, ... of it; the skipped batches are
    formed from metadata only (no JPEG decoding) in each worker.
  * mixture (``data.mixture``, DESIGN.md 3.8): the source of reader r's j-th vision batch is
    the j-th draw of ``source_draws`` (weights normalised, a generator seeded by (seed, epoch,
    r, R) alone), so the draws, like the batches, do not depend on the ranks x workers split.
    Each reader keeps one endless stream per source (``source_batches``): pass e of source s
    reads the reader's part of s's shards (r::R, or the sample-index fallback) in an order
    shuffled by (seed, epoch, s, e), with the source's own frame options and its share of the
    shuffle buffer, and restarts when it runs out.  The vision stream is therefore endless: one
    epoch that never ends (the trainer resumes it by batch index), and ``train_batches`` never
    moves to epoch + 1.  Batches carry ``mixture_source`` and ``mixture_epoch`` (the source's
    pass); text batches are tagged ``"text"`` and their stream's pass.

Ranks may get different numbers of batches per epoch: step-count-driven training loops should
use ``train_batches`` (moves to epoch + 1 on exhaustion) so that every rank steps every time.
"""

from __future__ import annotations

import functools
import io
import itertools
import logging
import multiprocessing
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from fovea.pipelines import storage
from fovea.pipelines.batching import make_batches
from fovea.pipelines.config import TEXT_SOURCE
from fovea.pipelines.shards import expand_shards, open_shards
from fovea.pipelines.video import uniform_indices

log = logging.getLogger("fovea.pipelines.loader")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FRAME_SIZE = 224
SKIPPED = {"_skipped": True}  # placeholder for a batch skipped on resume


# -- JPEG ------------------------------------------------------------------------------------

def _tv_decoder():
    try:
        from torchvision.io import decode_jpeg as tv_decode  # GPU image: torchvision is installed
        return tv_decode
    except Exception:  # not installed, or a build that does not import beside this torch
        return None


_TV = _tv_decoder()


def decode_jpeg(data: bytes) -> torch.Tensor:
    """JPEG bytes -> uint8 [3, H, W] RGB.  torchvision.io.decode_jpeg if available, else PIL."""
    if _TV is not None:
        return _TV(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


# -- samples -----------------------------------------------------------------------------------

@dataclass
class RawSample:
    """A sample as read from a tar: metadata parsed, frames still JPEG bytes (time order)."""

    key: str
    meta: dict
    jpgs: list[bytes]
    frames: int  # real frames the batch will hold (after truncation / replication)
    tokens: int


def parse_raw(raw: dict, max_frames: int, replicate: int, max_tokens: int) -> RawSample:
    import json

    meta = json.loads(raw["json"])
    numbered = sorted(k for k in raw if k.endswith(".jpg") and k[:-4].isdigit())
    jpgs = [raw[k] for k in numbered] or [raw[k] for k in ("jpg", "jpeg", "png") if k in raw][:1]
    if "token_ids" not in meta or "loss_mask" not in meta:
        raise ValueError(f"{raw['__key__']}: no token_ids/loss_mask (re-run jobs/preprocess.py)")
    n = min(len(jpgs), max_frames)
    if n == 1:
        n = replicate
    return RawSample(raw["__key__"], meta, jpgs, n, min(len(meta["token_ids"]), max_tokens))


def load_sample(s: RawSample, max_frames: int, replicate: int, max_tokens: int) -> dict:
    """Decode one sample: {"frames": uint8 [n,3,224,224] or None, "num_frames", token tensors, text}."""
    frames = None
    if s.jpgs:
        idx = uniform_indices(len(s.jpgs), max_frames)
        frames = torch.stack([decode_jpeg(s.jpgs[i]) for i in idx])
        if frames.shape[1:] != (3, FRAME_SIZE, FRAME_SIZE):
            raise ValueError(f"{s.key}: frames are {tuple(frames.shape[1:])}, expected (3, 224, 224)")
        if len(idx) == 1 and replicate > 1:
            frames = frames.expand(replicate, -1, -1, -1)
    m = s.meta
    return {
        "key": s.key, "frames": frames, "num_frames": 0 if frames is None else len(frames),
        "token_ids": torch.tensor(m["token_ids"][:max_tokens], dtype=torch.long),
        "loss_mask": torch.tensor(m["loss_mask"][:max_tokens], dtype=torch.float32),
        "pad_id": int(m.get("pad_id", 0)), "is_text_only": frames is None,
        "source": m.get("source", ""), "user": m.get("user", ""), "assistant": m.get("assistant", ""),
    }


def _empty(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor that, inside a DataLoader worker, is allocated in shared memory directly, which
    saves the copy the worker would otherwise make to send it (as torch's default_collate does)."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    t = torch.empty(0, dtype=dtype)
    return t.new(t._typed_storage()._new_shared(int(np.prod(shape)))).resize_(shape)


def collate(samples: list[dict], packed: bool = False) -> dict:
    """``load_sample`` dicts -> the batch dict of docs/CONTRACTS.md (padding, masks, normalisation).

    ``packed=True`` (training): ``frames`` holds only the n real frames, uint8 [n,3,224,224] in
    frame_mask order (b-major), left for the model to normalise on the device.
    """
    B = len(samples)
    T = max(1, max(s["num_frames"] for s in samples))
    S = max(len(s["token_ids"]) for s in samples)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    scale, shift = 1.0 / (255.0 * std), torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) / std
    if packed:
        n = sum(s["num_frames"] for s in samples)
        frames = _empty((n, 3, FRAME_SIZE, FRAME_SIZE), torch.uint8)
        if n:
            torch.cat([s["frames"] for s in samples if s["num_frames"]], out=frames)
    else:
        frames = _empty((B, T, 3, FRAME_SIZE, FRAME_SIZE))
    frame_mask = torch.zeros(B, T, dtype=torch.bool)
    input_ids = torch.full((B, S), samples[0]["pad_id"], dtype=torch.long)
    attention_mask = torch.zeros(B, S, dtype=torch.bool)
    loss_mask = torch.zeros(B, S)
    for b, s in enumerate(samples):
        n, L = s["num_frames"], len(s["token_ids"])
        frame_mask[b, :n] = True
        if not packed:  # (x / 255 - mean) / std, in place in the batch tensor
            if n:
                frames[b, :n].copy_(s["frames"]).mul_(scale).sub_(shift)
            frames[b, n:].zero_()
        input_ids[b, :L] = s["token_ids"]
        attention_mask[b, :L] = True
        loss_mask[b, :L] = s["loss_mask"]
    return {
        "frames": frames, "frame_mask": frame_mask,
        "num_frames": torch.tensor([s["num_frames"] for s in samples], dtype=torch.long),
        "input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask,
        "is_text_only": torch.tensor([s["is_text_only"] for s in samples], dtype=torch.bool),
        "keys": [s["key"] for s in samples], "sources": [s["source"] for s in samples],
        "users": [s["user"] for s in samples], "assistants": [s["assistant"] for s in samples],
    }


# -- one stream of batches (one reader per DataLoader worker) -----------------------------------

def assign_readers(shards: list[str], reader: int, num_readers: int) -> tuple[list[str], bool]:
    """-> (shards this reader opens, whether it must also filter samples by index modulo)."""
    if len(shards) >= num_readers:
        return shards[reader::num_readers], False
    return shards, True


class ShardStream(torch.utils.data.IterableDataset):
    """Batches of one (rank, worker): read -> split -> shuffle -> batch -> skip/decode -> collate.

    ``skip[w]`` batches of worker w are yielded as ``SKIPPED`` placeholders (resume).
    Eval mode (``shuffle=False``): sample-index split, fixed batches, ``max_samples`` cap.
    """

    def __init__(self, shards, data_cfg, *, rank, world_size, epoch, seed, shuffle=True, stream="vision",
                 skip=None, max_samples=None, budget=True, read_done=None):
        self.shards, self.cfg, self.rank, self.world_size = list(shards), data_cfg, rank, world_size
        self.epoch, self.seed, self.shuffle, self.stream = epoch, seed, shuffle, stream
        self.skip, self.max_samples, self.budget = skip, max_samples, budget
        self.read_done = read_done  # a shared counter: +1 when a worker has read its last sample

    def __iter__(self):
        cfg = self.cfg
        w, W = worker_split()
        reader, R = self.rank * W + w, self.world_size * W
        if self.shuffle:
            batches = reader_batches(self.shards, cfg, reader=reader, num_readers=R, seed=self.seed,
                                     epoch=self.epoch, stream=self.stream, budget=self.budget,
                                     read_done=self.read_done)
        else:  # eval: rank r takes samples i % world_size == r (at most max_samples), workers j % W
            cap = self.world_size * self.max_samples if self.max_samples is not None else float("inf")
            raw = (s for i, s in _take(enumerate(read_tars(self.shards)), cap)
                   if i % self.world_size == self.rank and (i // self.world_size) % W == w)
            batches = make_batches(parsed_samples(raw, cfg, self.stream, self.read_done), cfg.batch_size, None,
                                   None, cfg.budget_sort, cfg.llm_tokens_per_frame, cfg.budget_sort_key)
        skip = self.skip[w] if self.skip else 0
        for i, batch in enumerate(batches):
            if i < skip:
                yield SKIPPED
                continue
            out = load_batch(batch, cfg, packed=self.shuffle and cfg.packed_frames)
            if out is not None:
                yield out


def worker_split() -> tuple[int, int]:
    """(this DataLoader worker's index, the number of workers); (0, 1) in the main process."""
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def read_tars(shards: list[str]):
    """The samples of ``shards`` in order, as webdataset groups tar members into samples, over
    streams opened here (local files, or URLs through fsspec with retries: ``open_shards``)
    rather than by webdataset's gopen."""
    import webdataset as wds
    from webdataset.tariterators import group_by_keys, tar_file_expander

    files = tar_file_expander(open_shards(shards), handler=wds.warn_and_continue)
    return iter(group_by_keys(files, handler=wds.warn_and_continue))


def parsed_samples(raw, cfg, stream: str, read_done=None):
    """Raw tar samples -> ``RawSample``s under ``cfg``'s frame options, ``data.min_frames``
    applied (text streams exempt); ``read_done`` += 1 once ``raw`` is exhausted."""
    args = (cfg.max_frames, cfg.replicate_image_frames, cfg.max_text_tokens)
    samples = (parse_raw(s, *args) for s in _count_end(raw, read_done))
    if cfg.min_frames and not stream.startswith("text"):
        samples = (s for s in samples if s.frames >= cfg.min_frames)
    return samples


def reader_batches(shards, cfg, *, reader: int, num_readers: int, seed: int, epoch: int, stream: str,
                   budget: bool = True, read_done=None):
    """Training: reader ``reader`` of ``num_readers``'s metadata batches (lists of ``RawSample``)
    of one pass over ``shards``, whose order is shuffled by (seed, epoch, stream)."""
    import webdataset as wds

    shards = list(shards)
    if cfg.shard_shuffle:
        random.Random(f"{seed}/{epoch}/{stream}/shards").shuffle(shards)
    mine, by_index = assign_readers(shards, reader, num_readers)
    raw = read_tars(mine)
    if by_index:
        raw = (s for i, s in enumerate(raw) if i % num_readers == reader)
    samples = parsed_samples(raw, cfg, stream, read_done)
    # seeded by the reader's global index, not by (rank, worker): R readers read the same
    # batches in the same order however they are split into ranks (1 GPU x 16 workers =
    # 2 GPUs x 8), so a 1-GPU run repeats a 2-GPU run's work exactly (scaling benchmarks)
    rng = random.Random(f"{seed}/{epoch}/{stream}/reader{reader}of{num_readers}")
    if cfg.shuffle_buffer > 1:
        samples = wds.shuffle(cfg.shuffle_buffer, initial=min(cfg.shuffle_buffer, 100), rng=rng)(samples)
    return make_batches(samples, cfg.batch_size, cfg.max_total_frames if budget else None, rng, cfg.budget_sort,
                        cfg.llm_tokens_per_frame, cfg.budget_sort_key)


def load_batch(batch: list[RawSample], cfg, packed: bool) -> dict | None:
    """Decode a metadata batch's frames under ``cfg``'s options and collate it; a sample whose
    JPEGs do not decode is dropped with a warning (None when none is left)."""
    args = (cfg.max_frames, cfg.replicate_image_frames, cfg.max_text_tokens)
    loaded = []
    for s in batch:
        try:
            loaded.append(load_sample(s, *args))
        except Exception as e:  # a corrupt JPEG: warn and drop this one sample
            log.warning("skipping sample %s: %s", s.key, e)
    return collate(loaded, packed=packed) if loaded else None


# -- a mixture of named sources (data.mixture) -------------------------------------------------

MIXTURE_SEED_TAG = 55  # keeps the source draws apart from other generators seeded by the same numbers


def source_draws(weights, *, seed: int, epoch: int, reader: int, num_readers: int, block: int = 1024):
    """Endless source indices: the source of reader ``reader`` of ``num_readers``'s j-th batch
    is the j-th, drawn with probabilities ``weights`` (normalised here) from a generator seeded
    by (seed, epoch, reader, num_readers) alone, so the same R readers draw the same sources
    however they are split into ranks x workers, and a resume draws on from where it stood."""
    p = np.asarray(list(weights), dtype=np.float64)
    cum = np.cumsum(p / p.sum())
    cum[-1] = 1.0  # no draw falls past the last source by rounding
    rng = np.random.default_rng([seed, epoch, reader, num_readers, MIXTURE_SEED_TAG])
    while True:
        for i in np.searchsorted(cum, rng.random(block), side="right"):
            yield int(i)


def source_batches(name: str, shards: list[str], cfg, *, reader: int, num_readers: int, seed: int, epoch: int):
    """Endless ``(source_epoch, metadata batch)`` of one mixture source for one reader: pass e
    reads the reader's part of the source's shards, in an order shuffled by (seed, epoch, name, e)."""
    for e in itertools.count():
        n = 0
        for batch in reader_batches(shards, cfg, reader=reader, num_readers=num_readers, seed=seed, epoch=epoch,
                                    stream=f"mix/{name}/{e}"):
            n += 1
            yield e, batch
        if n == 0:
            raise RuntimeError(f"data.mixture.{name}: reader {reader} of {num_readers} (ranks x data.num_workers) "
                               f"gets no sample from its {len(shards)} shard(s) {shards[:2]}...: give the source "
                               "more samples, or lower data.min_frames / data.num_workers")


class MixtureStream(torch.utils.data.IterableDataset):
    """Endless batches of one (rank, worker) over ``data.mixture``: each batch's source drawn by
    weight (``source_draws``), taken from the reader's own endless stream of that source, decoded
    under the source's options and tagged ``mixture_source`` / ``mixture_epoch``.  ``skip[w]``
    batches of worker w are drawn and formed on metadata, and yielded as ``SKIPPED`` (resume)."""

    def __init__(self, data_cfg, *, rank, world_size, epoch, seed, skip=None):
        self.cfg, self.rank, self.world_size, self.epoch, self.seed = data_cfg, rank, world_size, epoch, seed
        self.skip = skip
        self.weights = data_cfg.mixture_weights()  # name order: the draw's index -> name
        self.sources = {name: (expand_shards(data_cfg.mixture[name].shards), data_cfg.source_config(name))
                        for name in self.weights}

    def __iter__(self):
        w, W = worker_split()
        reader, R = self.rank * W + w, self.world_size * W
        names = list(self.weights)
        streams = {name: source_batches(name, shards, cfg, reader=reader, num_readers=R, seed=self.seed,
                                        epoch=self.epoch) for name, (shards, cfg) in self.sources.items()}
        skip = self.skip[w] if self.skip else 0
        draws = source_draws(self.weights.values(), seed=self.seed, epoch=self.epoch, reader=reader, num_readers=R)
        for i, k in enumerate(draws):
            name = names[k]
            source_epoch, batch = next(streams[name])
            if i < skip:
                yield SKIPPED
                continue
            out = load_batch(batch, self.sources[name][1], packed=self.cfg.packed_frames)
            if out is not None:
                out["mixture_source"], out["mixture_epoch"] = name, source_epoch
                yield out


def _count_end(it, counter):
    """``it``, then ``counter += 1`` once it is exhausted (the worker's remaining batches are
    in its shuffle and packing buffers and the DataLoader's prefetch queue)."""
    yield from it
    if counter is not None:
        with counter.get_lock():
            counter.value += 1


def _take(it, n):
    for i, x in it:
        if i >= n:
            return
        yield i, x


def _dataloader(stream: ShardStream, num_workers: int):
    # pin_memory: page-locked batches make the host-to-GPU copies asynchronous (non_blocking).
    # Workers come from a fork server, not from a fork of the training process: a fork of a
    # process that holds the model and AdamW states shares their pages copy-on-write, and
    # every optimizer step then copies them (+2.5 GB per rank for the 135M model at each
    # epoch's new loader, measured), which a 24 GB machine with 2 ranks cannot absorb.
    # The fork server imports torch and this module once (preload), so a new epoch's workers
    # start in milliseconds instead of each importing them again (seconds per epoch).
    # The fork server keeps the environment it started with, so the object-store settings
    # (AWS_*) of this moment travel to the workers explicitly.
    ctx = None
    if num_workers:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", __name__])
    env = {k: os.environ[k] for k in storage.CLIENT_VARS if k in os.environ}
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=num_workers,
                                       prefetch_factor=4 if num_workers else None, persistent_workers=False,
                                       multiprocessing_context=ctx, pin_memory=torch.cuda.is_available(),
                                       worker_init_fn=functools.partial(set_environment, env) if num_workers else None)


def set_environment(env: dict[str, str], worker_id: int) -> None:
    os.environ.update(env)


# -- public entry points -----------------------------------------------------------------------

class TrainLoader:
    """Iterable of batch dicts for one epoch of one rank (see the module docstring)."""

    def __init__(self, data_cfg, *, rank: int, world_size: int, epoch: int, seed: int, start_batch: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.cfg, self.rank, self.world_size = data_cfg, rank, world_size
        self.epoch, self.seed, self.start_batch = epoch, seed, start_batch
        for key, patterns in data_cfg.training_sets().items():
            if not expand_shards(patterns):
                raise FileNotFoundError(f"no shards match data.{key}={patterns}")
        self.shards = expand_shards(data_cfg.train_shards) if data_cfg.mixture is None else []
        if data_cfg.mixture is not None and rank == 0:
            log.info("data.mixture, weights normalised (a share of the vision batches each): %s",
                     ", ".join(f"{n} {w:.3f}" for n, w in data_cfg.mixture_weights().items()))
        self.text_shards = expand_shards(data_cfg.text_shards) if data_cfg.text_ratio > 0 else []
        if data_cfg.text_ratio > 0 and data_cfg.text_shards and not self.text_shards:
            raise FileNotFoundError(f"no shards match data.text_shards={data_cfg.text_shards}")
        self._read_done = None  # shared with the vision stream's workers once iter() starts them

    def reading_done(self) -> bool:
        """Whether every DataLoader worker has read the last sample of its shards: the epoch's
        remaining batches are already in the workers' buffers and prefetch queue. (The trainer's
        ``Stream`` then opens the next epoch while these batches train.)  Never, for a mixture,
        whose sources restart: its one epoch has no end."""
        return self._read_done is not None and self._read_done.value >= self.cfg.num_workers

    def _text_batches(self, skip: int):
        """Endless text batches (main process); reshuffled every time the shards run out."""
        r = 0
        while True:
            stream = ShardStream(self.text_shards, self.cfg, rank=self.rank, world_size=self.world_size,
                                 epoch=self.epoch, seed=self.seed, stream=f"text{r}", skip=[skip], budget=False)
            n = 0
            for b in stream:
                n += 1
                if b is SKIPPED:
                    skip -= 1
                    continue
                if self.cfg.mixture is not None:  # counted beside the sources (mix/text/...)
                    b["mixture_source"], b["mixture_epoch"] = TEXT_SOURCE, r
                yield b
            if n == 0:
                raise RuntimeError(f"text shards {self.text_shards[:3]}... hold no sample for rank {self.rank}")
            r += 1

    def __iter__(self):
        cfg = self.cfg
        ratio = cfg.text_ratio if self.text_shards else 0.0
        coin = np.random.default_rng([self.seed, self.epoch, self.rank, 14])
        n_text = int((coin.random(self.start_batch) < ratio).sum())
        n_vis = self.start_batch - n_text
        W = max(1, cfg.num_workers)
        skip = [len(range(w, n_vis, W)) for w in range(W)]
        if cfg.mixture is not None:  # endless: no reading_done
            vision = MixtureStream(cfg, rank=self.rank, world_size=self.world_size, epoch=self.epoch,
                                   seed=self.seed, skip=skip)
        else:
            if cfg.num_workers:  # a counter in shared memory, handed to the workers as they start
                self._read_done = multiprocessing.get_context("forkserver").Value("i", 0)
            vision = ShardStream(self.shards, cfg, rank=self.rank, world_size=self.world_size, epoch=self.epoch,
                                 seed=self.seed, skip=skip, read_done=self._read_done)
        # iter() starts the DataLoader workers now, not at the first next(): a loader opened
        # ahead of time (platform.batch_stream.Stream) prefetches while the last epoch finishes.
        vis = iter(_dataloader(vision, cfg.num_workers))
        return self._batches(vis, coin, ratio, n_vis, n_text)

    def _batches(self, vis, coin, ratio: float, n_vis: int, n_text: int):
        text = self._text_batches(n_text) if ratio > 0 else None
        for _ in range(n_vis):  # placeholders (or, past another worker's end, real batches) to drop
            if next(vis, None) is None:
                return
        while True:
            if ratio > 0 and coin.random() < ratio:
                yield next(text)
                continue
            batch = next(vis, None)
            if batch is None:
                return
            if batch is SKIPPED or batch.get("_skipped"):
                raise RuntimeError("resume bookkeeping error: a skipped batch after start_batch")
            yield batch


def build_train_loader(data_cfg, *, rank: int, world_size: int, epoch: int, seed: int,
                       start_batch: int = 0) -> TrainLoader:
    """One epoch of training batches for ``rank``; ``start_batch=k`` resumes at batch k."""
    return TrainLoader(data_cfg, rank=rank, world_size=world_size, epoch=epoch, seed=seed, start_batch=start_batch)


def train_batches(data_cfg, *, rank: int, world_size: int, seed: int, start_epoch: int = 0, start_batch: int = 0):
    """Endless ``(epoch, batch_index, batch)``; resume with the last (epoch, batch_index + 1)."""
    epoch, b = start_epoch, start_batch
    while True:
        n = 0
        for batch in build_train_loader(data_cfg, rank=rank, world_size=world_size, epoch=epoch, seed=seed,
                                        start_batch=b):
            yield epoch, b, batch
            b += 1
            n += 1
        if n == 0 and b == 0:
            raise RuntimeError(f"rank {rank}: epoch {epoch} yields no batch (too few samples for the ranks?)")
        epoch, b = epoch + 1, 0


class EvalLoader:
    def __init__(self, data_cfg, shards, *, rank: int, world_size: int, max_samples: int | None):
        self.cfg, self.rank, self.world_size, self.max_samples = data_cfg, rank, world_size, max_samples
        self.shards = expand_shards(shards)
        if not self.shards:
            raise FileNotFoundError(f"no shards match {shards}")

    def __iter__(self):
        stream = ShardStream(self.shards, self.cfg, rank=self.rank, world_size=self.world_size, epoch=0, seed=0,
                             shuffle=False, max_samples=self.max_samples)
        yield from _dataloader(stream, self.cfg.num_workers)


def build_eval_loader(data_cfg, shards, *, rank: int = 0, world_size: int = 1,
                      max_samples: int | None) -> EvalLoader:
    """Evaluation batches of ``rank``: sample i of the sorted shards goes to rank i % world_size,
    at most ``max_samples`` per rank (None: all), so ranks together cover the first
    world_size * max_samples samples.  No shuffle, no interleave, fixed batch size,
    deterministic order (a rank's DataLoader workers take turns by batch)."""
    return EvalLoader(data_cfg, shards, rank=rank, world_size=world_size, max_samples=max_samples)
