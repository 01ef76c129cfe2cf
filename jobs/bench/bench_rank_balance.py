#!/usr/bin/env python
"""Benchmark (CPU, seconds): how evenly token-budget batches load the DDP ranks.

    python jobs/bench/bench_rank_balance.py [--samples 12000 30000] [--batch 512] [--frames 1536] \\
        [--llm-tokens-per-frame 64] [--ranks 2] [--readers 8] [--epochs 3]

A DDP step waits for its costliest rank, so W ranks run at most W / imbalance times one, where
imbalance = sum over steps of the costliest rank's batch cost / sum of the ranks' mean cost
(``collectives.cost_imbalance``; the training loop logs it as ``rank_cost_imbalance``). This
script replays the loader's batching without any images: every rank's ``--readers`` loader
workers each hold ``samples / (ranks x readers)`` samples an epoch with frame counts from the
reference distribution (``frame_counts`` of platform/profiling/bench_shards.py: 1-64, mean
~7) and 60-100 text tokens, build batches with the loader's own ``make_batches``, and the
DataLoader takes them round-robin; epochs follow each other on every rank without waiting for
the others.

It prints a row for each --samples: the steps, the imbalance for the given settings, the
speed-up it allows (ranks / imbalance), and, as "old order", the imbalance with each reader's
one unfilled batch of an epoch shuffled in among the full ones instead of last. So a change of
batch size, budget or dataset size can be judged before GPU time is spent on it.
"""

from __future__ import annotations

import argparse
import itertools
import random
from types import SimpleNamespace

from fovea.pipelines.batching import batch_cost, make_batches, pack_batches, shuffled
from fovea.platform.profiling.bench_shards import frame_counts
from fovea.platform.train.collectives import cost_imbalance


def reader_samples(n: int, seed: int) -> list[SimpleNamespace]:
    rng = random.Random(seed)
    return [SimpleNamespace(frames=f, tokens=60 + rng.randint(0, 40), key=f"{seed}-{i}")
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


def rank_costs(rank: int, a: argparse.Namespace, samples: int, batcher) -> list[float]:
    per_reader = samples // (a.ranks * a.readers)
    costs = []
    for epoch in range(a.epochs):
        readers = []
        for w in range(a.readers):
            seed = (epoch * a.ranks + rank) * a.readers + w
            readers.append(list(batcher(iter(reader_samples(per_reader, seed)), a.batch, a.frames,
                                        random.Random(seed + 10_000), a.llm_tokens_per_frame)))
        for group in itertools.zip_longest(*readers):  # the DataLoader's round-robin over workers
            costs += [batch_cost(sum(s.frames for s in b), len(b), max(s.frames for s in b),
                                 max(s.tokens for s in b), a.llm_tokens_per_frame) for b in group if b]
    return costs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, nargs="+", default=[12000, 30000, 100000])
    ap.add_argument("--batch", type=int, default=512, help="data.batch_size (the sample cap)")
    ap.add_argument("--frames", type=int, default=1536, help="data.max_total_frames (the budget)")
    ap.add_argument("--llm-tokens-per-frame", type=float, default=64.0)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--readers", type=int, default=8, help="data.num_workers per rank")
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()

    def current(samples, batch_size, budget, rng, r):
        return make_batches(samples, batch_size, budget, rng, True, r)

    print(f"{a.ranks} ranks x {a.readers} readers, batch cap {a.batch}, budget {a.frames}, "
          f"llm_tokens_per_frame {a.llm_tokens_per_frame}, {a.epochs} epochs")
    print(f"{'samples':>8s} {'steps':>6s} {'imbalance':>10s} {'max speed-up':>13s} {'old order':>10s}")
    for n in a.samples:
        row = []
        for batcher in (current, tail_shuffled_in):
            per_rank = [rank_costs(r, a, n, batcher) for r in range(a.ranks)]
            steps = min(len(c) for c in per_rank)
            row.append(cost_imbalance([c[:steps] for c in per_rank]))
        print(f"{n:8d} {steps:6d} {row[0]:10.3f} {a.ranks / row[0]:12.2f}x {row[1]:10.3f}")


if __name__ == "__main__":
    main()
