"""data.mixture: named shard sources drawn by weight for each batch (DESIGN.md 3.8).

The draw function the loader runs (``loader.source_draws``) is tested at 10,000 batches
against the weights; the real loader, on tiny real shards through real DataLoader workers,
at a few hundred batches: the per-reader sequences are the same for 1 rank x 4 workers and
2 ranks x 2 workers, each reader's sources are exactly that draw function's, every source
keeps its own passes over disjoint reader shares, and a resumed loader continues the same
batches.  Then the config's checks.  (A CPU stage-2 run on a three-source mixture, its
per-source counts in MLflow: tests/test_training.py, the stage-2 test.)
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fovea.pipelines.batch import LIST_KEYS, MIXTURE_KEYS, TENSOR_KEYS
from fovea.pipelines.config import DataConfig
from fovea.pipelines.loader import build_train_loader, source_draws
from fovea.platform.config import ConfigError, load_config
from mixture_shards import write_source

WEIGHTS = {"openvid": 0.55, "vript_long": 0.30, "sharegpt4video": 0.15}  # the reference's D1


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Main-process batches on a busy 2-core machine: one intra-op thread (as DataLoader workers use)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def binomial_bound(n: int, p: float, sds: float = 5.0) -> float:
    """``sds`` binomial standard deviations of a count of n draws at probability p."""
    return sds * math.sqrt(n * p * (1 - p))


# -- the draw, at 10,000 batches ----------------------------------------------------------------

def test_draws_match_the_weights_over_10000_batches():
    cfg = DataConfig(mixture={name: {"shards": [f"{name}/*.tar"], "weight": w} for name, w in WEIGHTS.items()})
    weights = cfg.mixture_weights()
    assert list(weights) == sorted(WEIGHTS) and math.isclose(sum(weights.values()), 1.0)
    n, R = 10_000, 4
    per_reader = {}
    for r in range(R):
        draws = np.fromiter(itertools.islice(
            source_draws(weights.values(), seed=42, epoch=0, reader=r, num_readers=R), n), dtype=np.int64)
        per_reader[r] = draws
        counts = np.bincount(draws, minlength=len(weights))
        for (name, p), c in zip(weights.items(), counts):
            # 5 sd (seeded: it cannot flake); a weight off by 0.025 lies 5-7 sd away at n = 10,000
            assert abs(c - n * p) <= binomial_bound(n, p), (r, name, c, n * p)
    # every reader draws its own sequence; the same (seed, epoch, reader, R) draws the same one
    assert len({d.tobytes() for d in per_reader.values()}) == R
    again = itertools.islice(source_draws(weights.values(), seed=42, epoch=0, reader=2, num_readers=R), n)
    assert np.array_equal(np.fromiter(again, dtype=np.int64), per_reader[2])
    # weights are relative: 11/6/3 is 55/30/15
    scaled = DataConfig(mixture={name: {"shards": ["x/*.tar"], "weight": w * 20} for name, w in WEIGHTS.items()})
    same = itertools.islice(source_draws(scaled.mixture_weights().values(), seed=42, epoch=0, reader=2,
                                         num_readers=R), n)
    assert np.array_equal(np.fromiter(same, dtype=np.int64), per_reader[2])


# -- the real loader: split invariance, source passes, resume ------------------------------------

@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Three sources: 8 shards (split by shard over 4 readers), 2 shards (fewer than the readers:
    split by sample index), 5 shards (uneven); small, so that each source restarts many times."""
    root = tmp_path_factory.mktemp("mix")
    keys = {"openvid": write_source(root / "openvid", 24, 3, lambda i: 1 + i % 3),
            "vript_long": write_source(root / "vript_long", 10, 5, lambda i: 2 + i % 2),
            "sharegpt4video": write_source(root / "sharegpt4video", 20, 4, lambda i: 1)}
    write_source(root / "text", 12, 6, None, text=True)
    return root, keys


def mixture_config(root: Path, **extra) -> DataConfig:
    mixture = {name: {"shards": [str(root / name / "train-*.tar")], "weight": w} for name, w in WEIGHTS.items()}
    mixture["sharegpt4video"]["replicate_image_frames"] = 3  # single images, repeated for this source only
    return DataConfig(mixture=mixture, text_shards=[str(root / "text" / "train-*.tar")], text_ratio=0.2,
                      batch_size=2, shuffle_buffer=6, max_frames=4, **extra)


def take(loader, n: int) -> list[dict]:
    it = iter(loader)
    out = list(itertools.islice(it, n))
    it.close()  # stops the DataLoader workers
    return out


def by_reader(rank_batches: dict[int, list[dict]], workers: int) -> dict[int, list[tuple]]:
    """Each rank's vision batches dealt back to its readers (the DataLoader takes its workers in
    turn: batch k of a rank is worker k % W's (k // W)-th); text batches come from the main process."""
    out: dict[int, list[tuple]] = {}
    for rank, batches in rank_batches.items():
        vision = [b for b in batches if b["mixture_source"] != "text"]
        for k, b in enumerate(vision):
            out.setdefault(rank * workers + k % workers, []).append(
                (b["mixture_source"], b["mixture_epoch"], tuple(b["keys"]), tuple(b["num_frames"].tolist())))
    return out


def test_loader_is_the_same_for_any_split_and_resumes(sources):
    root, keys = sources
    cfg = mixture_config(root)
    one = by_reader({0: take(build_train_loader(cfg.model_copy(update={"num_workers": 4}), rank=0, world_size=1,
                                                epoch=0, seed=7), 300)}, 4)
    ranks = {r: take(build_train_loader(cfg, rank=r, world_size=2, epoch=0, seed=7), 150) for r in range(2)}
    two = by_reader(ranks, 2)
    m = min(len(v) for v in (*one.values(), *two.values()))
    assert m >= 45, {r: len(v) for r, v in one.items()}
    # the same 4 readers, the same batches in the same order, from the same sources
    assert {r: v[:m] for r, v in one.items()} == {r: v[:m] for r, v in two.items()}
    names = list(cfg.mixture_weights())
    for r, seq in one.items():
        # the loader's sources are exactly the draw function's (the one tested at 10,000 batches)
        drawn = itertools.islice(source_draws(cfg.mixture_weights().values(), seed=7, epoch=0, reader=r,
                                              num_readers=4), len(seq))
        assert [s for s, *_ in seq] == [names[i] for i in drawn], r
    # every source keeps its own passes: in each pass that every reader finished, the readers
    # read disjoint shares whose union is the whole source; the order changes between passes
    for name, all_keys in keys.items():
        seen = {r: {} for r in one}
        for r, seq in one.items():
            for s, e, ks, nf in seq:
                if s == name:
                    seen[r].setdefault(e, []).extend(ks)
        finished = min(max(passes) for passes in seen.values())
        assert finished >= 1, (name, {r: sorted(p) for r, p in seen.items()})
        for e in range(finished):
            shares = [seen[r][e] for r in seen]
            assert sorted(k for share in shares for k in share) == sorted(all_keys), (name, e)
        assert any(seen[r][0] != seen[r][1] for r in seen if 1 in seen[r] and len(seen[r][1]) == len(seen[r][0]))
    # per-source options: the single images of sharegpt4video (only) are repeated to 3 frames
    frames = {s: {n for src, _, _, nf in sum(one.values(), []) if src == s for n in nf} for s in names}
    assert frames["sharegpt4video"] == {3} and frames["openvid"] == {1, 2, 3}
    # text batches are tagged too, with their stream's pass; the keys are the contract's
    assert any(b["mixture_source"] == "text" for b in ranks[1])
    assert all(tuple(b) == TENSOR_KEYS + LIST_KEYS + MIXTURE_KEYS for b in ranks[0])
    # resume: rank 1 of 2 x 2 restarted at batch k yields batches k, k+1, ... of the same stream
    k = 37
    resumed = take(build_train_loader(cfg, rank=1, world_size=2, epoch=0, seed=7, start_batch=k), 40)
    full = ranks[1][k:k + 40]
    assert [(b["mixture_source"], b["mixture_epoch"], b["keys"]) for b in resumed] == \
        [(b["mixture_source"], b["mixture_epoch"], b["keys"]) for b in full]
    assert all(torch.equal(a["frames"], b["frames"]) for a, b in zip(resumed, full))


def test_trainer_stream_and_counts_resume_where_they_stood(sources):
    """The training loop's side: a mixture stream stays in epoch 0 and resumes by batch index
    (the checkpoint's position); the per-source counts carry over through the checkpoint state."""
    from fovea.platform.config import RunConfig
    from fovea.platform.train.batch_stream import Stream
    from fovea.platform.train.mixture_counts import MixtureCounts

    root, _ = sources
    cfg = RunConfig(data=mixture_config(root, num_workers=1))
    first = Stream(cfg, rank=0, world=1)
    run = [first.next() for _ in range(20)]
    assert first.position() == (0, 20)
    again = Stream(cfg, rank=0, world=1, epoch=0, consumed=12)
    assert [again.next()["keys"] for _ in range(8)] == [b["keys"] for b in run[12:]]
    counts = MixtureCounts.for_run(cfg.data)
    assert counts.names == ["openvid", "sharegpt4video", "vript_long", "text"]
    counts.count([(b["mixture_source"], len(b["keys"]), b["mixture_epoch"]) for b in run[:12]])
    window = counts.metrics(torch.device("cpu"))
    resumed = MixtureCounts.for_run(cfg.data, counts.state())
    resumed.count([(b["mixture_source"], len(b["keys"]), b["mixture_epoch"]) for b in run[12:]])
    total = resumed.metrics(torch.device("cpu"))
    assert sum(total[f"mix/{n}/samples"] for n in resumed.names) == sum(len(b["keys"]) for b in run)
    assert all(total[f"mix/{n}/samples"] >= window[f"mix/{n}/samples"] for n in resumed.names)
    assert all(total[f"mix/{n}/epoch"] == max(b["mixture_epoch"] for b in run if b["mixture_source"] == n)
               for n in resumed.names if any(b["mixture_source"] == n for b in run))


def test_a_source_too_small_for_the_readers_says_which(tmp_path):
    write_source(tmp_path / "big", 12, 3, lambda i: 1)
    write_source(tmp_path / "tiny", 1, 1, lambda i: 1)  # 1 sample, 2 readers: reader 1 gets none
    cfg = DataConfig(mixture={"big": {"shards": [str(tmp_path / "big/*.tar")], "weight": 1.0},
                              "tiny": {"shards": [str(tmp_path / "tiny/*.tar")], "weight": 1.0}},
                     text_ratio=0.0, batch_size=2, num_workers=0, shuffle_buffer=0)
    with pytest.raises(RuntimeError, match=r"data\.mixture\.tiny: reader 1 of 2"):
        take(build_train_loader(cfg, rank=1, world_size=2, epoch=0, seed=0), 50)


# -- the config -----------------------------------------------------------------------------------

def config_error(tmp_path: Path, text: str, *overrides: str) -> str:
    f = tmp_path / "mix.yaml"
    f.write_text("base: tiny\n" + text)
    with pytest.raises(ConfigError) as e:
        load_config(f, list(overrides))
    return str(e.value)


SOURCE = "    a: {shards: ['a/*.tar'], weight: 0.5}\n"


@pytest.mark.parametrize("text, overrides, expected", [
    ("data:\n  mixture:\n    a: {shards: ['a/*.tar'], weight: 0}\n", [],
     "bad value for 'data.mixture.a.weight' in {f}: Input should be greater than 0"),
    ("data:\n  mixture:\n    a: {shards: ['a/*.tar'], weight: -1.5}\n", [],
     "bad value for 'data.mixture.a.weight' in {f}"),
    ("data:\n  mixture:\n    a: {shards: ['a/*.tar'], weight: heavy}\n", [],
     "bad value for 'data.mixture.a.weight' in {f}: Input should be a valid number"),
    ("data:\n  mixture:\n    a: {shards: ['a/*.tar'], weight: .inf}\n", [], "'data.mixture.a.weight'"),
    ("data:\n  mixture:\n    a: {shards: ['a/*.tar'], weight: 1, max_frame: 8}\n", [],
     "unknown key 'data.mixture.a.max_frame' in {f}"),
    ("data:\n  mixture:\n    a: {shards: [], weight: 1}\n", [], "bad value for 'data.mixture.a.shards' in {f}"),
    ("data:\n  mixture:\n    a: {weight: 1}\n", [], "missing key 'data.mixture.a.shards' in {f}"),
    ("data:\n  train_shards: ['x/*.tar']\n  mixture:\n" + SOURCE, [],
     "invalid config ({f}): data.train_shards and data.mixture are both set"),
    ("data:\n  mixture:\n    text: {shards: ['t/*.tar'], weight: 1}\n", [], "data.mixture.text: a source name"),
    ("data:\n  mixture: {}\n", [], "data.mixture is empty"),
    ("", ["data.mixture.a.weight=0.5"], "missing key 'data.mixture.a.shards' in override 'data.mixture.a.weight=0.5'"),
    ("data:\n  mixture:\n" + SOURCE, ["data.mixture.a.weight=true"],
     "bad value for 'data.mixture.a.weight' in override 'data.mixture.a.weight=true'"),
])
def test_config_errors_name_the_key_and_the_file(tmp_path, text, overrides, expected):
    assert expected.format(f=tmp_path / "mix.yaml") in config_error(tmp_path, text, *overrides)


def test_config_loads_overrides_and_resolves_paths(tmp_path, monkeypatch):
    from fovea.platform.config import absolute_paths

    f = tmp_path / "mix.yaml"
    f.write_text("base: tiny\ndata:\n  mixture:\n" + SOURCE + "    b: {shards: ['s3://bucket/b/*.tar'], weight: 1.5}\n")
    cfg = load_config(f, ["data.mixture.a.weight=0.25", "data.mixture.a.replicate_image_frames=8"])
    assert cfg.data.mixture_weights() == {"a": 0.25 / 1.75, "b": 1.5 / 1.75}
    a = cfg.data.source_config("a")
    assert a.replicate_image_frames == 8 and a.train_shards == ["a/*.tar"] and a.mixture is None
    assert a.shuffle_buffer == round(cfg.data.shuffle_buffer * 0.25 / 1.75)  # its share of the buffer
    assert cfg.flat()["data.mixture.b.weight"] == 1.5  # MLflow params
    # the dry run's step memory sizes the source with the most frames a sample (images replicated)
    from fovea.platform.profiling.step_memory import worst_frames

    assert worst_frames(cfg.data) == (2, 8)  # tiny: batch 2, max_frames 4; source a: images x 8
    assert worst_frames(load_config(f, ["data.mixture.b.max_frames=12"]).data) == (2, 12)
    monkeypatch.setenv("FOVEA_ROOT", str(tmp_path / "project"))
    resolved = absolute_paths(cfg).data.mixture
    assert resolved["a"].shards == [f"{tmp_path}/project/a/*.tar"] and resolved["b"].shards == ["s3://bucket/b/*.tar"]
    # the shipped D1 and stage-2 mixes
    d1 = load_config("stage1_135m_d1")
    assert d1.data.mixture_weights() == {"openvid": 0.55, "sharegpt4video": 0.15, "vript_long": 0.30}
    s2 = load_config("stage2_135m_mix").data
    image = s2.mixture_weights()["cauldron"]
    assert math.isclose(image, 0.55) and s2.mixture["cauldron"].replicate_image_frames == 8


def test_preflight_names_mixture_sources(tmp_path, monkeypatch, capsys):
    """A missing source names its key and the preprocess line; a source written for another
    stage's loss rule names its key; through the stage CLI, exit 2 and no traceback."""
    from fovea.platform.stages import main
    from fovea.platform.train.preflight import RunInputError, check_shards

    write_source(tmp_path / "data/shards/openvid_s2", 4, 2, lambda i: 1)  # stage-2 shards
    monkeypatch.chdir(tmp_path)
    cfg = load_config("stage1_135m_d1", ["data.text_ratio=0", "data.val_shards=[]",
                                         "data.mixture.openvid.shards=['data/shards/openvid_s2/train-*.tar']"])
    with pytest.raises(RunInputError) as e:
        check_shards(cfg, "stage1_135m_d1")
    msg = str(e.value)
    assert "data.mixture.vript_long.shards=['data/shards/vript_long/train-*.tar'] matches no .tar file" in msg
    assert "python jobs/preprocess.py vript_long --input " in msg and "--output data/shards/vript_long --stage 1" in msg
    assert "openvid" not in msg.split("make them")[0]
    for name in ("vript_long", "sharegpt4video"):
        write_source(tmp_path / f"data/shards/{name}", 4, 2, lambda i: 1)  # also stage 2
    with pytest.raises(RunInputError, match=r"data\.mixture\.openvid\.shards: data/shards/openvid_s2 holds "
                                            r"stage-2 shards"):
        check_shards(cfg)
    with pytest.raises(SystemExit) as exit_:
        main(1, ["--config", "stage1_135m_d1", "--dry-run", "data.mixture.openvid.weight=0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'data.mixture.openvid.weight'" in err and "Traceback" not in err
