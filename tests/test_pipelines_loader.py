"""Loader tests on tiny synthetic shard sets: splitting, interleave ratio, resume, batching, collate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scripts import load_script
from fovea.pipelines.config import DataConfig


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Main-process batches (num_workers=0) on a busy 2-core machine: one intra-op thread is
    >10x faster than two contending ones (DataLoader workers use one thread anyway)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_shards(folder, n, per_shard, frames=lambda i: 1 + i % 5, prefix="train", text=False):
    """n samples; sample i has ``frames(i)`` JPEG frames whose grey level encodes the frame index."""
    from fovea.pipelines.shards import ShardWriter
    from fovea.pipelines.video import encode_jpeg

    folder.mkdir(parents=True, exist_ok=True)
    jpgs = [encode_jpeg(np.full((224, 224, 3), 4 * k, np.uint8)) for k in range(64)]
    keys = []
    for s in range(0, n, per_shard):
        w = ShardWriter(folder / f"{prefix}-{s // per_shard:05d}.tar")
        for i in range(s, min(n, s + per_shard)):
            f = 0 if text else frames(i)
            ids = list(range(1, 4 + i % 7))
            meta = {"user": f"q{i}", "assistant": f"a{i}", "source": "synthetic", "frame_count": f,
                    "token_ids": ids, "loss_mask": [0, 0] + [1] * (len(ids) - 2), "is_text_only": f == 0,
                    "stage": 2, "pad_id": 2}
            key = f"{'t' if text else 'v'}{i:05d}"
            w.add(key, json.dumps(meta), jpgs[:f])
            keys.append(key)
        w.commit()
    return set(keys)


def keys_of(batches):
    return [k for b in batches for k in b["keys"]]


def _readers(cfg, shards, world_size, workers, monkeypatch):
    """Samples each (rank, worker) reader yields, by faking the DataLoader worker info."""
    from types import SimpleNamespace

    from fovea.pipelines import loader as L

    out = {}
    for rank in range(world_size):
        for w in range(workers):
            monkeypatch.setattr(torch.utils.data, "get_worker_info",
                                lambda w=w: SimpleNamespace(id=w, num_workers=workers))
            stream = L.ShardStream(shards, cfg, rank=rank, world_size=world_size, epoch=1, seed=5)
            out[(rank, w)] = keys_of(stream)
    monkeypatch.undo()
    return out


@pytest.mark.parametrize("n_shards", [8, 3])  # 8 >= 2 x 2 readers: by shard; 3 < 4: by sample index
def test_two_ranks_two_workers_disjoint_union(tmp_path, monkeypatch, n_shards):
    from fovea.pipelines.shards import expand_shards

    all_keys = make_shards(tmp_path, 40, 40 // n_shards + (40 % n_shards > 0))
    shards = expand_shards(str(tmp_path / "train-*.tar"))
    assert len(shards) == n_shards
    cfg = DataConfig(batch_size=3, shuffle_buffer=10, num_workers=2)
    per_reader = _readers(cfg, shards, 2, 2, monkeypatch)
    seen = [k for ks in per_reader.values() for k in ks]
    assert len(seen) == len(set(seen)) == 40 and set(seen) == all_keys
    assert all(len(ks) > 0 for ks in per_reader.values())
    # the same through real DataLoader workers, per rank
    cfg = cfg.model_copy(update={"train_shards": [str(tmp_path / "train-*.tar")]})
    from fovea.pipelines.loader import build_train_loader

    ranks = [set(keys_of(build_train_loader(cfg, rank=r, world_size=2, epoch=0, seed=1))) for r in range(2)]
    assert not ranks[0] & ranks[1] and ranks[0] | ranks[1] == all_keys


def test_readers_do_not_depend_on_the_rank_split(tmp_path, monkeypatch):
    """1 rank x 4 workers and 2 ranks x 2 workers are the same 4 readers: reader r yields the
    same token-budget batches in the same order either way, so a 1-GPU run can repeat a
    2-GPU run's work exactly (the scaling benchmark compares them)."""
    from fovea.pipelines.shards import expand_shards

    make_shards(tmp_path, 48, 4, frames=lambda i: 1 + (7 * i) % 9)
    shards = expand_shards(str(tmp_path / "train-*.tar"))
    cfg = DataConfig(batch_size=4, max_total_frames=16, shuffle_buffer=8, num_workers=2)
    one = _readers(cfg, shards, 1, 4, monkeypatch)  # reader index = rank * workers + worker
    two = _readers(cfg, shards, 2, 2, monkeypatch)
    by_reader = lambda d, W: {rank * W + w: ks for (rank, w), ks in d.items()}  # noqa: E731
    assert by_reader(one, 4) == by_reader(two, 2)
    assert len({tuple(ks) for ks in one.values()}) == 4  # four different readers, not one stream
    # through real DataLoader workers, which take turns a batch each: a round of the 4 readers is
    # steps 4j..4j+3 of the one rank and steps 2j, 2j+1 of the two ranks
    from fovea.pipelines.loader import build_train_loader

    cfg = cfg.model_copy(update={"train_shards": [str(tmp_path / "train-*.tar")]})
    single = [set(b["keys"]) for b in build_train_loader(cfg.model_copy(update={"num_workers": 4}), rank=0,
                                                          world_size=1, epoch=1, seed=5)]
    ranks = [[set(b["keys"]) for b in build_train_loader(cfg, rank=r, world_size=2, epoch=1, seed=5)]
             for r in range(2)]
    rounds = min(len(r) for r in ranks) // 2
    assert rounds >= 3
    union = lambda batches: set().union(*batches)  # noqa: E731
    for j in range(rounds):
        assert union(single[4 * j:4 * j + 4]) == union(ranks[0][2 * j:2 * j + 2] + ranks[1][2 * j:2 * j + 2]), j


def test_shuffle_is_seeded_per_epoch(tmp_path):
    from fovea.pipelines.loader import build_train_loader

    make_shards(tmp_path, 30, 10)
    cfg = DataConfig(train_shards=[str(tmp_path / "*.tar")], batch_size=2, shuffle_buffer=30, num_workers=0)
    run = lambda epoch, seed: keys_of(build_train_loader(cfg, rank=0, world_size=1, epoch=epoch, seed=seed))
    assert run(0, 1) == run(0, 1)
    assert run(0, 1) != run(1, 1) and sorted(run(0, 1)) == sorted(run(1, 1))


def test_interleave_ratio_over_2000_batches(tmp_path):
    from fovea.pipelines.loader import train_batches

    make_shards(tmp_path / "v", 300, 50, frames=lambda i: 1)
    make_shards(tmp_path / "t", 90, 30, text=True)
    cfg = DataConfig(train_shards=[str(tmp_path / "v/*.tar")], text_shards=[str(tmp_path / "t/*.tar")],
                     text_ratio=0.14, batch_size=2, num_workers=0, shuffle_buffer=20)
    text = vision = 0
    for i, (epoch, b, batch) in enumerate(train_batches(cfg, rank=0, world_size=1, seed=42)):
        if i == 2000:
            break
        t = batch["is_text_only"]
        assert bool(t.all()) or not bool(t.any())  # a batch is all text or all vision
        if t.all():
            text += 1
            assert batch["frames"].shape[0] == 0 and not batch["frame_mask"].any()  # packed: no frame
            assert (batch["num_frames"] == 0).all()
        else:
            vision += 1
    assert epoch >= 2  # several vision epochs; the text stream restarted many times
    assert abs(text / 2000 - 0.14) <= 0.03, text


def test_resume_yields_the_same_batches(tmp_path):
    from fovea.pipelines.loader import build_train_loader

    make_shards(tmp_path / "v", 60, 6)
    make_shards(tmp_path / "t", 20, 5, text=True)
    cfg = DataConfig(train_shards=[str(tmp_path / "v/*.tar")], text_shards=[str(tmp_path / "t/*.tar")],
                     text_ratio=0.3, batch_size=3, num_workers=2, shuffle_buffer=16, max_total_frames=9)
    full = list(build_train_loader(cfg, rank=1, world_size=2, epoch=3, seed=7))
    assert any(b["is_text_only"].all() for b in full) and len(full) > 8
    for k in (1, 5, len(full) - 1):
        resumed = list(build_train_loader(cfg, rank=1, world_size=2, epoch=3, seed=7, start_batch=k))
        assert [b["keys"] for b in resumed] == [b["keys"] for b in full[k:]]
        assert all(torch.equal(a["frames"], b["frames"]) for a, b in zip(resumed, full[k:]))


def test_token_budget_batching_caps_real_frames(tmp_path):
    from fovea.pipelines.loader import build_train_loader

    keys = make_shards(tmp_path, 50, 10, frames=lambda i: 1 + (7 * i) % 12)
    cfg = DataConfig(train_shards=[str(tmp_path / "*.tar")], batch_size=8, max_total_frames=20,
                     num_workers=0, shuffle_buffer=10)
    batches = list(build_train_loader(cfg, rank=0, world_size=1, epoch=0, seed=0))
    assert sorted(keys_of(batches)) == sorted(keys)
    for b in batches:
        assert len(b["keys"]) <= 8
        assert int(b["num_frames"].sum()) <= 20 or len(b["keys"]) == 1
    fixed = cfg.model_copy(update={"max_total_frames": None})
    pad = lambda bs: sum(b["frame_mask"].numel() - int(b["frame_mask"].sum()) for b in bs) / sum(
        b["frame_mask"].numel() for b in bs)
    assert pad(batches) < pad(list(build_train_loader(fixed, rank=0, world_size=1, epoch=0, seed=0)))


def test_truncation_by_uniform_spread_and_replication(tmp_path):
    from fovea.pipelines.loader import IMAGENET_MEAN, IMAGENET_STD, build_eval_loader

    make_shards(tmp_path, 2, 2, frames=lambda i: [40, 1][i])
    cfg = DataConfig(batch_size=2, max_frames=4, replicate_image_frames=3, num_workers=0)
    b = next(iter(build_eval_loader(cfg, [str(tmp_path / "*.tar")], max_samples=2)))
    assert b["num_frames"].tolist() == [4, 3] and b["frames"].shape == (2, 4, 3, 224, 224)
    assert b["frame_mask"].tolist() == [[True] * 4, [True] * 3 + [False]]
    grey = b["frames"][0, :, 0].mean(dim=(1, 2)) * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    levels = (grey * 255 / 4).round().tolist()  # frame k has grey level 4 k
    assert levels == [5, 15, 25, 35]  # uniform spread over 40 frames, not the first 4
    assert (b["frames"][1, 3] == 0).all() and torch.equal(b["frames"][1, 0], b["frames"][1, 2])


def test_collate_padding_and_masks():
    from fovea.pipelines.loader import collate

    samples = [
        {"key": "a", "frames": torch.full((2, 3, 224, 224), 255, dtype=torch.uint8), "num_frames": 2,
         "token_ids": torch.tensor([5, 6, 7]), "loss_mask": torch.tensor([0.0, 1.0, 1.0]), "pad_id": 2,
         "is_text_only": False, "source": "s", "user": "u", "assistant": "x"},
        {"key": "b", "frames": None, "num_frames": 0, "token_ids": torch.tensor([8]),
         "loss_mask": torch.tensor([1.0]), "pad_id": 2, "is_text_only": True, "source": "t", "user": "v",
         "assistant": "y"},
    ]
    b = collate(samples)
    assert b["frames"].shape == (2, 2, 3, 224, 224) and b["frames"].dtype == torch.float32
    assert b["frame_mask"].tolist() == [[True, True], [False, False]]
    assert torch.allclose(b["frames"][0, :, 0], torch.tensor((1 - 0.485) / 0.229))
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]
    assert b["attention_mask"].tolist() == [[True, True, True], [True, False, False]]
    assert b["loss_mask"].tolist() == [[0, 1, 1], [1, 0, 0]]
    assert b["is_text_only"].tolist() == [False, True] and b["num_frames"].tolist() == [2, 0]
    assert b["keys"] == ["a", "b"] and b["assistants"] == ["x", "y"]
    # the batch contract is defined once, in pipelines/batch.py: collate makes exactly those keys
    from fovea.pipelines.batch import LIST_KEYS, TENSOR_KEYS

    assert tuple(b) == TENSOR_KEYS + LIST_KEYS


def test_packed_collate_ships_only_real_frames_as_uint8(tmp_path):
    """Training batches (data.packed_frames): real frames only, uint8, in frame_mask order; the
    model normalises them into exactly the padded float batch (checked on the model side too)."""
    from fovea.model.blocks import normalize_frames
    from fovea.pipelines.loader import build_train_loader

    make_shards(tmp_path, 12, 6, frames=lambda i: 1 + i % 4)
    cfg = DataConfig(train_shards=[str(tmp_path / "*.tar")], batch_size=4, num_workers=0, shuffle_buffer=0)
    packed = list(build_train_loader(cfg, rank=0, world_size=1, epoch=0, seed=0))
    padded = list(build_train_loader(cfg.model_copy(update={"packed_frames": False}), rank=0, world_size=1,
                                     epoch=0, seed=0))
    assert [b["keys"] for b in packed] == [b["keys"] for b in padded]
    for p, q in zip(packed, padded):
        fm = q["frame_mask"]
        assert p["frames"].dtype == torch.uint8 and p["frames"].shape == (int(fm.sum()), 3, 224, 224)
        assert torch.equal(p["frame_mask"], fm)
        assert (normalize_frames(p["frames"]) - q["frames"][fm]).abs().max() < 1e-5


def test_min_frames_drops_short_videos_but_not_text(tmp_path):
    """data.min_frames (the reference's optional long-video filter, DESIGN.md 3.4): samples with
    fewer frames, counted after max_frames and image replication, are dropped from training and
    validation batches; the text interleave keeps its samples; 0 (the default) keeps all."""
    from fovea.pipelines.loader import build_eval_loader, build_train_loader

    frames = lambda i: [1, 3, 6, 9][i % 4]  # noqa: E731
    keys = make_shards(tmp_path / "v", 16, 8, frames=frames)
    make_shards(tmp_path / "t", 6, 6, text=True)
    long = {k for i, k in enumerate(sorted(keys)) if frames(i) >= 6}
    base = DataConfig(train_shards=[str(tmp_path / "v/*.tar")], text_shards=[str(tmp_path / "t/*.tar")],
                      text_ratio=0.5, batch_size=2, num_workers=0, shuffle_buffer=4, max_frames=8)
    assert base.min_frames == 0
    cfg = base.model_copy(update={"min_frames": 6})
    batches = list(build_train_loader(cfg, rank=0, world_size=1, epoch=0, seed=0))
    vision = [b for b in batches if not b["is_text_only"].any()]
    assert set(keys_of(vision)) == long and all(int(n) >= 6 for b in vision for n in b["num_frames"])
    assert any(b["is_text_only"].all() for b in batches)  # text batches still come
    assert sorted(keys_of(build_eval_loader(cfg, cfg.train_shards, max_samples=None))) == sorted(long)
    assert sorted(keys_of(build_eval_loader(base, base.train_shards, max_samples=None))) == sorted(keys)
    # counted after replication: one image repeated 8 times passes a filter of 6
    rep = cfg.model_copy(update={"replicate_image_frames": 8})
    assert len(keys_of(build_eval_loader(rep, rep.train_shards, max_samples=None))) == 16 - 4


def test_eval_loader_is_deterministic_and_split(tmp_path):
    from fovea.pipelines.loader import build_eval_loader

    make_shards(tmp_path, 25, 10)
    cfg = DataConfig(batch_size=4, num_workers=2)
    ev = lambda r, w, n=14: keys_of(build_eval_loader(cfg, [str(tmp_path / "*.tar")], rank=r, world_size=w,
                                                      max_samples=n))
    assert ev(0, 1) == ev(0, 1) and sorted(ev(0, 1)) == [f"v{i:05d}" for i in range(14)]
    assert sorted(ev(0, 2, 7) + ev(1, 2, 7)) == sorted(ev(0, 1)) and not set(ev(0, 2, 7)) & set(ev(1, 2, 7))
    assert sorted(ev(1, 2, 7)) == [f"v{i:05d}" for i in range(1, 14, 2)]  # rank 1: odd samples
    assert len(ev(0, 1, None)) == 25


def test_stream_opens_next_epoch_early_and_keeps_batches(tmp_path):
    """platform.batch_stream.Stream opens the next epoch's loader before the current epoch ends
    (workers start while the epoch finishes): in the first epoch once the workers have read
    every sample, later ``lookahead`` batches before the end; the batch sequence over epochs
    equals loading each epoch on its own."""
    from fovea.pipelines.loader import build_train_loader
    from fovea.platform.config import load_config
    from fovea.platform.train.batch_stream import Stream

    make_shards(tmp_path / "s", 24, 12)
    cfg = load_config(None, [f"data.train_shards=['{tmp_path}/s/train-*.tar']", "data.batch_size=2",
                             "data.num_workers=1", "data.shuffle_buffer=8", "data.text_ratio=0",
                             "data.max_total_frames=null"])
    stream = Stream(cfg, rank=0, world=1)
    stream.lookahead = 3
    opened = []
    build = stream._build

    def spy(*a, **kw):
        opened.append((kw["epoch"], stream.epoch, stream.consumed))
        return build(*a, **kw)

    stream._build = spy
    got = [keys_of([stream.next()]) for _ in range(36)]  # 3 epochs of 12 batches
    want = [keys_of([b]) for e in range(3)
            for b in build_train_loader(cfg.data, rank=0, world_size=1, epoch=e, seed=cfg.training.seed)]
    assert got == want
    # iter() of a training loader starts its DataLoader workers before the first next(), so an
    # early-opened epoch really prefetches (a generator would start nothing until next())
    it = iter(build_train_loader(cfg.data, rank=0, world_size=1, epoch=5, seed=cfg.training.seed))
    workers = it.gi_frame.f_locals["vis"]._workers  # torch's DataLoader iterator: its worker processes
    assert workers and all(w.is_alive() for w in workers)
    assert keys_of([next(it)])
    # (epoch opened, stream's epoch, batches consumed in it): epoch 1 during epoch 0, once the
    # worker has read its last sample (the length is not known yet; when depends on the
    # worker's pace, but before the last batch, which needs the last sample read), epochs 2
    # and 3 three batches before the previous one ends
    assert opened[0][:2] == (1, 0) and opened[0][2] <= 11, opened
    assert opened[1:] == [(2, 1, 9), (3, 2, 9)]


def test_budget_batches_sorted_or_in_arrival_order():
    """make_batches with a frame budget: sorted buffers (default) or arrival order
    (data.budget_sort=false); either way every sample once, the caps hold."""
    from types import SimpleNamespace

    from fovea.pipelines.batching import make_batches

    frames = [5, 1, 9, 2, 7, 3, 8, 1, 4, 6, 2, 9]
    samples = [SimpleNamespace(frames=f, tokens=3, key=f"k{i:02d}") for i, f in enumerate(frames)]
    for sort in (True, False):
        batches = list(make_batches(iter(samples), 3, 12, None, sort=sort))
        keys = [s.key for b in batches for s in b]
        assert sorted(keys) == [s.key for s in samples]
        assert all(len(b) <= 3 and (sum(s.frames for s in b) <= 12 or len(b) == 1) for b in batches)
        if sort:
            assert [s.frames for b in batches for s in b] == sorted(frames)
        else:
            assert keys == [s.key for s in samples]  # arrival order, batches closed by the caps


def test_budget_sort_key_sum_is_the_references():
    """data.budget_sort_key=sum sorts a buffer by frames + text tokens, as the reference does
    (DESIGN.md 3.6); the default sorts by (frames, tokens)."""
    from types import SimpleNamespace

    from fovea.pipelines.batching import make_batches
    from fovea.pipelines.config import DataConfig

    assert DataConfig().budget_sort_key == "frames_tokens"
    lengths = [(5, 3), (1, 20), (9, 1), (2, 2), (7, 9), (3, 4)]  # (frames, tokens)
    samples = [SimpleNamespace(frames=f, tokens=t, key=f"k{i}") for i, (f, t) in enumerate(lengths)]

    def order(key):
        batches = make_batches(iter(samples), 2, 100, None, sort=True, sort_key=key)
        return [(s.frames, s.tokens) for b in batches for s in b]

    assert order("sum") == sorted(lengths, key=sum) == [(2, 2), (3, 4), (5, 3), (9, 1), (7, 9), (1, 20)]
    assert order("frames_tokens") == sorted(lengths)


def test_cost_budget_gives_batches_of_similar_compute():
    """data.llm_tokens_per_frame: the budget counts padded LLM rows too, so batches of many
    short videos close as early as batches of few long ones; a buffer's unfilled last batch
    moves on to the next buffer instead of becoming a cheap batch of its own."""
    import math
    import random as _random
    from types import SimpleNamespace

    from fovea.pipelines.batching import batch_cost, make_batches

    rng = _random.Random(0)  # the reference distribution: LogNormal(mean 7, s 0.8) in [1, 64]
    frames = [min(64, max(1, round(rng.lognormvariate(math.log(7) - 0.32, 0.8)))) for _ in range(3000)]
    samples = [SimpleNamespace(frames=f, tokens=80 + i % 30, key=f"k{i:04d}") for i, f in enumerate(frames)]

    def costs(batches, r):
        return [batch_cost(sum(s.frames for s in b), len(b), max(s.frames for s in b),
                           max(s.tokens for s in b), r) for b in batches]

    r, cap = 64.0, 400
    by_cost = list(make_batches(iter(samples), 256, cap, None, True, r))
    by_frames = list(make_batches(iter(samples), 64, 448, None, True, None))
    assert sorted(s.key for b in by_cost for s in b) == sorted(s.key for s in samples)
    c = costs(by_cost[:-1], r)  # the stream's last batch is whatever is left
    assert max(c) <= cap and min(c) > 0.85 * cap  # closed when one more (<= 64 frames) would not fit
    assert all(len(b) <= 256 for b in by_cost)
    f = costs(by_frames[:-1], r)  # frames-only budget: short-video batches hit the sample cap
    assert max(f) / min(f) > 2.0 > max(c) / min(c)
    # shuffled batch order: the epoch's one unfilled batch still comes last (where the other
    # readers' and ranks' fall), every batch before it is near the budget
    shuffled = list(make_batches(iter(samples), 256, cap, _random.Random(1), True, r))
    assert [s.key for b in shuffled for s in b] != [s.key for b in by_cost for s in b]
    c = costs(shuffled, r)
    assert min(c[:-1]) > 0.85 * cap and c[-1] == costs(by_cost, r)[-1]


def test_rank_balance_benchmark_prints_the_tail_last_gain(repo_root):
    """jobs/bench/bench_rank_balance.py replays the loader's batching for 2 ranks x 8 readers: with
    750 samples a reader, the unfilled tails last keep the ranks' costs closer than shuffled in."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(repo_root / "jobs" / "bench" / "bench_rank_balance.py"), "--samples", "12000",
                          "--epochs", "2"], capture_output=True, text=True, check=True).stdout
    row = out.strip().splitlines()[-1].split()
    assert row[0] == "12000" and int(row[1]) > 50, out
    new, old = float(row[2]), float(row[4])
    assert 1.0 <= new < 1.05 < old, out
    fill = float(row[5].rstrip("%")) / 100  # budget used over steps x budget: each reader's tail is short
    assert 0.5 < fill < 0.95, out


def test_rank_balance_llm_buckets_trade_added_tokens_for_fewer_shapes(repo_root):
    """--llm-buckets ROWSxLEN rounds the LLM pass's [rows, frames + text] up: coarser buckets add
    more tokens and leave fewer distinct shapes; a malformed bucket exits 2 naming the option."""
    import subprocess
    import sys

    cmd = [sys.executable, str(repo_root / "jobs" / "bench" / "bench_rank_balance.py"), "--samples", "3000",
           "--ranks", "1", "--readers", "4", "--epochs", "1"]
    out = subprocess.run(cmd + ["--llm-buckets", "16x16", "64x64"], capture_output=True, text=True,
                         check=True).stdout
    rows = {r.split()[0]: r.split() for r in out.splitlines()[-3:]}
    assert set(rows) == {"1x1", "16x16", "64x64"}, out
    added = {k: float(v[2].rstrip("%")) for k, v in rows.items()}
    shapes = {k: int(v[4]) for k, v in rows.items()}
    assert added["1x1"] == 0.0 < added["16x16"] < added["64x64"], out
    assert shapes["1x1"] > shapes["16x16"] >= shapes["64x64"] >= 1, out
    for k, v in rows.items():  # a step path pairs a coarse shape with a fine one
        assert shapes[k] <= int(v[5]) and int(v[6]) <= min(int(v[5]), 64), out
    bad = subprocess.run(cmd + ["--llm-buckets", "32y"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--llm-buckets takes ROWSxLENGTH" in bad.stderr, bad.stderr


def test_rank_balance_llm_padding_counts_slots_against_real_tokens():
    """One sample a row: a 10-frame sample with 2 text tokens beside a 1-frame one with 20 runs the
    coarse pass as [2, 10] (20 slots for 11 frames) and the fine pass as [2, 10 + 20] (60 for 33
    tokens); rows trimmed to the longest real row (21) would run 42."""
    from types import SimpleNamespace as S

    tool = load_script("jobs/bench/bench_rank_balance.py")
    (line,) = tool.llm_padding([[S(frames=10, tokens=2), S(frames=1, tokens=20)]])
    assert "coarse LLM pass: 20 token slots a step for 11 real (+81.8%)" in line, line
    assert "fine pass 60 for 33 (+81.8%)" in line and "longest real one 42 (+27.3%)" in line, line


def test_rank_balance_counts_a_step_path_per_coarse_and_fine_pair(repo_root):
    """CUDA graph trees record each step's sequence of calls: a fine shape met before after a new
    coarse shape is a new path. Four hand-made batches: coarse [rows, max frames], fine [rows,
    max frames + max text]."""
    from types import SimpleNamespace as S

    tool = load_script("jobs/bench/bench_rank_balance.py")
    batches = [[S(frames=3, tokens=10), S(frames=5, tokens=20)],  # coarse [2, 5], fine [2, 25]
               [S(frames=5, tokens=20), S(frames=1, tokens=4)],   # the same pair
               [S(frames=5, tokens=20)] * 3,                      # [3, 5], [3, 25]
               [S(frames=2, tokens=23), S(frames=1, tokens=1)]]   # [2, 2], [2, 25]: fine met, path new
    plain, bucketed = (r.split() for r in tool.llm_bucket_rows(batches, [(4, 32)], first=2)[1:])
    assert plain[0] == "1x1" and (plain[4], plain[5], plain[6]) == ("2", "3", "1"), plain
    # rows to 4, length to 32: coarse [4, 32] and fine [4, 32] for every batch
    assert bucketed[0] == "4x32" and (bucketed[4], bucketed[5], bucketed[6]) == ("1", "1", "1"), bucketed


def test_rank_balance_fill_rises_with_the_epoch(repo_root):
    """A small set's epoch spends more of its steps on unfilled batches (one a reader, last): the
    fill that jobs/bench/bench_rank_balance.py prints grows with the set."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(repo_root / "jobs" / "bench" / "bench_rank_balance.py"), "--samples",
                          "3000", "30000", "--ranks", "1", "--readers", "16", "--epochs", "1"],
                         capture_output=True, text=True, check=True).stdout
    fills = {int(r.split()[0]): float(r.split()[5].rstrip("%")) for r in out.strip().splitlines()[-2:]}
    assert fills[3000] < fills[30000] <= 100.0, out
    assert fills[30000] > 90.0, out
