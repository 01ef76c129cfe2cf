#!/usr/bin/env python
"""Benchmark (CPU, seconds): how evenly token-budget batches load the DDP ranks.

    python jobs/bench/bench_rank_balance.py [--samples 12000 30000] [--batch 512] [--frames 1536] \\
        [--llm-tokens-per-frame 64] [--ranks 2] [--readers 8] [--epochs 3] [--buckets 32 64 128]

A DDP step waits for its costliest rank, so W ranks run at most W / imbalance times one, where
imbalance = sum over steps of the costliest rank's batch cost / sum of the ranks' mean cost
(``collectives.cost_imbalance``; the training loop logs it as ``rank_cost_imbalance``). This
script replays the loader's batching without any images: every rank's ``--readers`` loader
workers each hold ``samples / (ranks x readers)`` samples an epoch with frame counts from the
reference distribution (``frame_counts`` of platform/profiling/bench_shards.py: 1-64, mean
~7) and 60-100 text tokens (``--tokens``; the bench shards' captions are 71-76), build batches
with the loader's own ``make_batches``, and the DataLoader takes them round-robin; epochs follow
each other on every rank without waiting for the others.

It prints a row for each --samples: the steps, the imbalance for the given settings, the
speed-up it allows (ranks / imbalance), as "old order" the imbalance with each reader's one
unfilled batch of an epoch shuffled in among the full ones instead of last, and "fill": rank 0's
budget units used over steps x budget. Each reader ends its epoch with an unfilled batch (and
sorted packing leaves a few more short), so a small set's epoch takes more steps than its work
fills: one GPU x 16 readers at cap 512 / 1536 units fills 75 % at 6,000 samples, 86 % at
12,000, 99 % at 1M, and a benchmark's whole-epoch samples/s on a small set understates a
real epoch's by up to that ratio. So a change of batch size, budget or dataset size can be
judged before GPU time is spent on it.

``--buckets``: for each ``model.frame_bucket``, what rounding rank 0's batches' frame counts up
costs the patch pass (blank frames a step, their share of the real frames) and how many
distinct counts remain (each costs cuDNN one plan build with ``model.dino_attention=cudnn``).
``--llm-buckets 32x64 ...``: the same for the LLM passes' shapes, rows (samples) rounded up to a
multiple of the first number and sequence length (the packed row's frames + text tokens, Tv + S)
to a multiple of the second: the LLM tokens the rounding adds over rank 0's batches (against the
padded tokens each batch runs today, and against its real tokens), how many distinct
[rows, length] shapes remain, and how many distinct (coarse, fine) pairs the steps run: what CUDA
graph trees of the LLM passes record, one set of graphs per pair (``model.llm_cudagraphs``).
Before that table, what one sample a row costs the coarse and the fine pass in padding.
The bench12 job on one GPU reads its batches as ``--ranks 1 --readers 16``.
"""

from __future__ import annotations

import argparse
import itertools
import random
from types import SimpleNamespace

from fovea.model.encoder import bucketed_frames
from fovea.pipelines.batching import batch_cost, make_batches, pack_batches, shuffled
from fovea.platform.profiling.bench_shards import frame_counts
from fovea.platform.train.collectives import cost_imbalance


def reader_samples(n: int, seed: int, tokens: tuple[int, int] = (60, 100)) -> list[SimpleNamespace]:
    rng = random.Random(seed)
    return [SimpleNamespace(frames=f, tokens=rng.randint(*tokens), key=f"{seed}-{i}")
            for i, f in enumerate(frame_counts(n, "ref", seed))]


def tail_shuffled_in(samples, batch_size, budget, rng, r):
    """The batch order compared against: the epoch's unfilled batch shuffled among the full ones."""
    buf = []
    for s in samples:
        buf.append(s)
        if len(buf) >= 4 * batch_size:
            full, buf = pack_batches(buf, batch_size, budget, r)
            yield from shuffled(full, rng)
    if buf:
        full, rest = pack_batches(buf, batch_size, budget, r)
        yield from shuffled(full + [rest], rng)


def rank_batches(rank: int, a: argparse.Namespace, samples: int, batcher) -> list[list]:
    """One rank's batches of ``a.epochs`` epochs, in the order its DataLoader yields them."""
    per_reader = samples // (a.ranks * a.readers)
    batches = []
    for epoch in range(a.epochs):
        readers = []
        for w in range(a.readers):
            seed = (epoch * a.ranks + rank) * a.readers + w
            readers.append(list(batcher(iter(reader_samples(per_reader, seed, a.tokens)), a.batch, a.frames,
                                        random.Random(seed + 10_000), a.llm_tokens_per_frame)))
        for group in itertools.zip_longest(*readers):  # the DataLoader's round-robin over workers
            batches += [b for b in group if b]
    return batches


def rank_costs(rank: int, a: argparse.Namespace, samples: int, batcher) -> list[float]:
    return [batch_cost(sum(s.frames for s in b), len(b), max(s.frames for s in b),
                       max(s.tokens for s in b), a.llm_tokens_per_frame) for b in rank_batches(rank, a, samples, batcher)]


def bucket_rows(frames: list[int], buckets: list[int]) -> list[str]:
    """Per bucket (0 = off): blank frames a step (mean, max), their share of the real frames,
    and the distinct frame counts the patch pass runs at."""
    rows = [f"{'bucket':>7s} {'blank/step':>11s} {'max':>5s} {'share':>7s} {'counts':>7s}"]
    for b in [0] + buckets:
        pad = [bucketed_frames(f, b) - f for f in frames]
        rows.append(f"{b:7d} {sum(pad) / len(pad):11.1f} {max(pad):5d} {sum(pad) / sum(frames):7.2%} "
                    f"{len({f + p for f, p in zip(frames, pad)}):7d}")
    return rows


def llm_bucket_rows(batches: list[list], buckets: list[tuple[int, int]], first: int = 64) -> list[str]:
    """Per (rows, length) bucket ((1, 1) = off): the fine pass's LLM tokens a step after rounding
    [B, Tv + S] up, what the rounding adds over today's padded [B, Tv + S] and over the real tokens
    (each sample's frames + text), the distinct fine shapes, and the distinct step paths: a step
    runs the coarse pass [B, Tv] and then the fine pass, and CUDA graph trees record a graph for
    each call at its place in the step's sequence of calls, so each new (coarse, fine) pair is
    recorded anew even where both shapes were met before. ``new in first N``: the steps among the
    first N that bring a path not met before (each records every graphed region again)."""
    coarse = [(len(b), max(s.frames for s in b)) for b in batches]
    shapes = [(r, tv + max(s.tokens for s in b)) for (r, tv), b in zip(coarse, batches)]
    real = sum(s.frames + s.tokens for b in batches for s in b)
    today = sum(r * n for r, n in shapes)
    rows = [f"{'rows x len':>10s} {'tokens/step':>12s} {'added':>7s} {'over real':>10s} {'shapes':>7s} "
            f"{'paths':>6s} {f'new in first {first}':>17s}"]
    for rb, lb in [(1, 1)] + buckets:
        def up(r, n):  # the rounding FoveatedVLM._causal_layers applies
            return bucketed_frames(r, rb), bucketed_frames(n, lb)
        padded = [up(r, n) for r, n in shapes]
        paths = [(up(*c), f) for c, f in zip(coarse, padded)]
        total = sum(r * n for r, n in padded)
        rows.append(f"{f'{rb}x{lb}':>10s} {total / len(shapes):12.0f} {total / today - 1:7.2%} "
                    f"{total / real - 1:10.2%} {len(set(padded)):7d} {len(set(paths)):6d} "
                    f"{len(set(paths[:first])):17d}")
    return rows


def llm_padding(batches: list[list]) -> list[str]:
    """What one sample a row costs the LLM passes: the coarse pass runs [rows, max frames], the fine
    pass [rows, max frames + max text]; token slots a step against real tokens, and the fine pass
    with each batch's rows trimmed to its longest real row (what is left is the rows' spread of
    lengths, which only packing several samples into a row removes)."""
    steps = len(batches)
    coarse_real = sum(s.frames for b in batches for s in b)
    coarse = sum(len(b) * max(s.frames for s in b) for b in batches)
    real = sum(s.frames + s.tokens for b in batches for s in b)
    fine = sum(len(b) * (max(s.frames for s in b) + max(s.tokens for s in b)) for b in batches)
    trimmed = sum(len(b) * max(s.frames + s.tokens for s in b) for b in batches)
    return [f"rank 0's coarse LLM pass: {coarse / steps:.0f} token slots a step for {coarse_real / steps:.0f} real "
            f"({coarse / coarse_real - 1:+.1%}); fine pass {fine / steps:.0f} for {real / steps:.0f} "
            f"({fine / real - 1:+.1%}), rows trimmed to the longest real one {trimmed / steps:.0f} "
            f"({trimmed / real - 1:+.1%})"]


def llm_bucket(text: str) -> tuple[int, int]:
    rows, _, length = text.partition("x")
    if not (rows.isdigit() and length.isdigit() and int(rows) > 0 and int(length) > 0):
        raise argparse.ArgumentTypeError(f"--llm-buckets takes ROWSxLENGTH, e.g. 32x64; got {text!r}")
    return int(rows), int(length)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, nargs="+", default=[12000, 30000, 100000])
    ap.add_argument("--batch", type=int, default=512, help="data.batch_size (the sample cap)")
    ap.add_argument("--frames", type=int, default=1536, help="data.max_total_frames (the budget)")
    ap.add_argument("--llm-tokens-per-frame", type=float, default=64.0)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--readers", type=int, default=8, help="data.num_workers per rank")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--tokens", type=int, nargs=2, default=[60, 100], metavar=("LO", "HI"),
                    help="text tokens a sample, uniform in [LO, HI]")
    ap.add_argument("--buckets", type=int, nargs="*", default=[],
                    help="model.frame_bucket values: the patch pass's padding over rank 0's batches")
    ap.add_argument("--llm-buckets", type=llm_bucket, nargs="*", default=[], metavar="ROWSxLEN",
                    help="the LLM passes' [rows, length] rounded up, e.g. 32x64: added tokens and shapes left")
    a = ap.parse_args()

    def current(samples, batch_size, budget, rng, r):
        return make_batches(samples, batch_size, budget, rng, True, r)

    print(f"{a.ranks} ranks x {a.readers} readers, batch cap {a.batch}, budget {a.frames}, "
          f"llm_tokens_per_frame {a.llm_tokens_per_frame}, {a.epochs} epochs")
    print(f"{'samples':>8s} {'steps':>6s} {'imbalance':>10s} {'max speed-up':>13s} {'old order':>10s} {'fill':>6s}")
    for n in a.samples:
        costs = {batcher: [rank_costs(r, a, n, batcher) for r in range(a.ranks)]
                 for batcher in (current, tail_shuffled_in)}
        steps = {b: min(len(c) for c in per_rank) for b, per_rank in costs.items()}  # the ranks' common steps
        new, old = (cost_imbalance([c[:steps[b]] for c in per_rank]) for b, per_rank in costs.items())
        fill = sum(costs[current][0]) / (len(costs[current][0]) * a.frames)  # rank 0, today's order
        print(f"{n:8d} {steps[current]:6d} {new:10.3f} {a.ranks / new:12.2f}x {old:10.3f} {fill:6.1%}")
        batches = rank_batches(0, a, n, current) if a.buckets or a.llm_buckets else []
        if a.buckets:
            frames = [sum(s.frames for s in b) for b in batches]
            print(f"  rank 0's patch pass, {len(frames)} steps, {sum(frames) / len(frames):.0f} real frames a step "
                  f"({min(frames)}-{max(frames)}):")
            print("\n".join("  " + r for r in bucket_rows(frames, a.buckets)))
        if a.llm_buckets:
            print("\n".join("  " + r for r in llm_padding(batches)))
            print(f"  rank 0's fine LLM pass [rows, frames + text], {len(batches)} steps:")
            print("\n".join("  " + r for r in llm_bucket_rows(batches, a.llm_buckets)))


if __name__ == "__main__":
    main()
