"""Raw sample data -> Ray Data preprocessing -> shards -> loader, on the real-media sample set.

One Ray instance (2 CPUs, session fixture) and one generated sample set serve the whole module.
"""

from __future__ import annotations

import hashlib
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SPS = 4  # samples per shard: several shards per split, so shard-level splitting is exercised


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if ray.is_initialized():  # another module's Ray instance: share it
        yield
        return
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    from fovea.pipelines.demo_datasets import make_sample_data

    out = tmp_path_factory.mktemp("demo") / "raw"
    cat = make_sample_data(out)
    return out, cat


def _run(raw, tmp, ds, **kw):
    from fovea.pipelines.preprocess import run_preprocess

    root, _ = raw
    return run_preprocess(ds, root / ds, tmp / ds, samples_per_shard=SPS, progress=False, **kw)


@pytest.fixture(scope="module")
def shards(ray_session, raw, tmp_path_factory, model_store):
    tmp = tmp_path_factory.mktemp("shards")
    out = {ds: _run(raw, tmp, ds) for ds in ("webvid", "cauldron", "video_sft", "smoltalk")}
    out["smoltalk_s2"] = _run(raw, tmp, "smoltalk", stage=2)
    return out


def read_samples(folder) -> dict[str, dict]:
    """id -> {"meta", "jpgs", "key", "shard"} for every sample of every tar in ``folder``."""
    out = {}
    for tar_path in sorted(Path(folder).glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar:
                key, ext = m.name.split(".", 1)
                data = tar.extractfile(m).read()
                if ext == "json":
                    meta = json.loads(data)
                    cur = out[meta["id"]] = {"meta": meta, "jpgs": [], "key": key, "shard": tar_path.name}
                else:
                    assert key == cur["key"], f"{m.name}: files of a sample must be contiguous"
                    cur["jpgs"].append(data)
    return out


def rejects_of(summary) -> list[tuple[str, str]]:
    lines = (Path(summary.output) / "rejects.jsonl").read_text().splitlines()
    return sorted((r["id"], r["reason"]) for r in map(json.loads, lines))


def expected_rejects(cat, ds) -> list[tuple[str, str]]:
    return sorted((r["id"], r["reason"]) for r in cat["expected_rejects"][ds])


def check_chat(tok, meta, user, answer, stage):
    """Decoded tokens equal the chat template output; the mask starts at the assistant span."""
    from fovea.pipelines.tokenize import SYSTEM_PROMPT

    msgs = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user},
            {"role": "assistant", "content": answer}]
    assert meta["user"] == user and meta["assistant"] == answer
    assert tok.decode(meta["token_ids"]) == tok.apply_chat_template(msgs, tokenize=False)
    prompt = tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
    boundary = len(tok(prompt, add_special_tokens=False)["input_ids"])
    mask = meta["loss_mask"]
    if stage == 1:
        assert mask == [1] * len(meta["token_ids"])
    else:
        assert mask == [0] * boundary + [1] * (len(mask) - boundary)
        assert tok.decode(meta["token_ids"][boundary:]) == answer + "<|im_end|>\n"
        assert tok.decode(meta["token_ids"][:boundary]).endswith("<|im_start|>assistant\n")


def test_webvid_roundtrip(shards, raw, tokenizer):
    from fovea.pipelines.tokenize import SOURCE_PROMPTS

    s, (_, cat) = shards["webvid"], raw
    got = read_samples(s.output)
    good = {c["videoid"]: c for c in cat["webvid"]}
    assert set(got) == set(good) and s.written == len(good) == 48
    long_clips = 0
    for vid, c in good.items():
        meta, jpgs = got[vid]["meta"], got[vid]["jpgs"]
        d = c["frames"] / c["fps"]
        n = min(64, max(1, math.ceil(d - 0.5)))  # 1 FPS at k + 0.5 s, cap 64
        assert meta["frame_count"] == len(jpgs) == n, c["name"]
        assert meta["duration"] == pytest.approx(d, abs=1e-3)
        if d > 64:  # uniform spread over the whole video, not its first 64 s
            long_clips += 1
            step = d / 64
            assert meta["frame_times"] == pytest.approx([(k + 0.5) * step for k in range(64)], abs=1e-3)
            assert meta["frame_times"][-1] > 64
        else:
            assert meta["frame_times"] == [k + 0.5 for k in range(n)]
        check_chat(tokenizer, meta, SOURCE_PROMPTS["webvid"], c["caption"], stage=1)
    assert long_clips == 4
    assert rejects_of(s) == expected_rejects(cat, "webvid")
    m = json.loads((Path(s.output) / "manifest.json").read_text())
    assert m["counts"]["read"] == 58 and m["counts"]["written"] == 48 and m["counts"]["rejected"] == 10
    assert sum(m["frame_count_distribution"].values()) == 48 and m["frame_count_distribution"]["64"] == 4


def test_webvid_frames_are_the_right_frames(shards, raw):
    """A frame in the shard is the source frame shown at its sample time (slow pan: times differ)."""
    import av

    from fovea.pipelines.loader import decode_jpeg
    from fovea.pipelines.video import _frame_to_rgb

    root, cat = raw
    c = next(c for c in cat["webvid"] if c["name"] == "hubble_deep_field_long_pan")
    sample = read_samples(shards["webvid"].output)[c["videoid"]]
    with av.open(str(root / "webvid" / c["file"])) as cont:
        src = [(f.time, _frame_to_rgb(f, 224)) for f in cont.decode(video=0)]
    for k in (0, 31, 63):
        t = sample["meta"]["frame_times"][k]
        want = [rgb for ft, rgb in src if ft <= t][-1].astype(float)
        got = decode_jpeg(sample["jpgs"][k]).permute(1, 2, 0).numpy().astype(float)
        other = src[0][1] if k else src[-1][1]
        assert np.abs(got - want).mean() < 4 < np.abs(got - other.astype(float)).mean()


def test_cauldron_roundtrip(shards, raw, tokenizer):
    from PIL import Image
    import io

    s, (_, cat) = shards["cauldron"], raw
    got = read_samples(s.output)
    assert set(got) == {c["id"] for c in cat["cauldron"]}
    for c in cat["cauldron"]:
        meta, jpgs = got[c["id"]]["meta"], got[c["id"]]["jpgs"]
        assert meta["frame_count"] == 1 and Image.open(io.BytesIO(jpgs[0])).size == (224, 224)
        assert meta["source"] == "cauldron/" + c["id"].split("/")[0] and meta["stage"] == 2
        check_chat(tokenizer, meta, c["user"], c["assistant"], stage=2)
    assert rejects_of(s) == expected_rejects(cat, "cauldron")


def test_video_sft_roundtrip(shards, raw, tokenizer):
    s, (_, cat) = shards["video_sft"], raw
    got = read_samples(s.output)
    clips = {c["name"]: c for c in cat["webvid"]}
    assert set(got) == {c["id"] for c in cat["video_sft"]}
    for c in cat["video_sft"]:
        meta = got[c["id"]]["meta"]
        clip = clips[c["clip"]]
        d = clip["frames"] / clip["fps"]
        assert meta["frame_count"] == min(64, max(1, math.ceil(d - 0.5)))
        check_chat(tokenizer, meta, c["user"], c["assistant"], stage=2)  # "<image>" placeholders gone
    assert rejects_of(s) == expected_rejects(cat, "video_sft")


def test_smoltalk_roundtrip_both_stages(shards, raw, tokenizer):
    s1, s2, (_, cat) = shards["smoltalk"], shards["smoltalk_s2"], raw
    assert s1.output.endswith("smoltalk_s1") and s2.output.endswith("smoltalk_s2")
    for s, stage in ((s1, 1), (s2, 2)):
        got = read_samples(s.output)
        assert set(got) == {c["id"] for c in cat["smoltalk"]}
        for c in cat["smoltalk"]:
            meta = got[c["id"]]
            msgs = c["messages"]
            user = [m for m in msgs if m["role"] == "user"][-1]["content"]  # last exchange
            answer = msgs[-1]["content"]
            assert meta["meta"]["is_text_only"] and meta["meta"]["frame_count"] == 0 and not meta["jpgs"]
            check_chat(tokenizer, meta["meta"], user, answer, stage=stage)
        assert rejects_of(s) == expected_rejects(cat, "smoltalk")


def _tree(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerun_writes_nothing(shards, raw):
    from fovea.pipelines.preprocess import run_preprocess

    root, _ = raw
    for ds in ("webvid", "cauldron"):
        out = Path(shards[ds].output)
        before = _tree(out)
        s = run_preprocess(ds, root / ds, out, samples_per_shard=SPS, progress=False)
        assert _tree(out) == before  # no new file, same bytes, same mtimes
        first = shards[ds].shards_written
        assert s.shards_written == [] and set(first) <= set(s.shards_skipped)
        # the rest had every row rejected: done (their rejects are kept), never written as tars
        assert not any((out / name).exists() for name in set(s.shards_skipped) - set(first))
        assert (s.read, s.written, s.rejected) == (shards[ds].read, shards[ds].written, shards[ds].rejected)


def test_interrupted_run_is_completed_without_duplicates(shards, raw, tmp_path):
    """A crashed run leaves a .tmp file and a missing shard; the rerun rebuilds exactly those."""
    import shutil

    from fovea.pipelines.preprocess import run_preprocess

    root, _ = raw
    out = tmp_path / "cauldron"
    shutil.copytree(shards["cauldron"].output, out)
    before = _tree(out)
    (out / "train-00001.tar").rename(out / "train-00001.tar.tmp")
    (out / "train-00002.tar").write_bytes(b"half-written")
    s = run_preprocess("cauldron", root / "cauldron", out, samples_per_shard=SPS, progress=False)
    assert sorted(s.shards_written) == ["train-00001.tar", "train-00002.tar"]
    after = _tree(out)
    assert set(after) == set(before)
    changed = {k for k in before if after[k][0] != before[k][0]}
    assert changed == {"manifest.json"}  # shards byte-identical to the first run's
    m = json.loads((out / "manifest.json").read_text())
    first = json.loads((Path(shards["cauldron"].output) / "manifest.json").read_text())
    assert {**m, "data_dir": None} == {**first, "data_dir": None}  # only the folder moved


def test_two_ranks_two_workers_disjoint_on_sample_data(shards):
    from fovea.pipelines.loader import build_train_loader
    from fovea.pipelines.config import DataConfig

    folder = Path(shards["webvid"].output)
    all_keys = {v["key"] for v in read_samples(folder).values() if v["shard"].startswith("train")}
    cfg = DataConfig(train_shards=[str(folder / "train-*.tar")], batch_size=3, num_workers=2,
                     shuffle_buffer=8, max_frames=4, text_ratio=0.0)
    per_rank = []
    for rank in range(2):
        keys = [k for b in build_train_loader(cfg, rank=rank, world_size=2, epoch=0, seed=3) for k in b["keys"]]
        assert len(keys) == len(set(keys))
        per_rank.append(set(keys))
    assert not per_rank[0] & per_rank[1]
    assert per_rank[0] | per_rank[1] == all_keys


def test_loader_on_sample_data(shards, raw):
    """Frames, masks and replication as the trainer will see them (SFT: image x 8, text-only batch)."""
    import torch

    from fovea.pipelines.loader import build_eval_loader
    from fovea.pipelines.config import DataConfig

    cfg = DataConfig(batch_size=4, num_workers=0, replicate_image_frames=8, max_frames=16)
    b = next(iter(build_eval_loader(cfg, [shards["cauldron"].output + "/train-*.tar"], max_samples=4)))
    assert b["frames"].shape == (4, 8, 3, 224, 224) and b["frame_mask"].all() and (b["num_frames"] == 8).all()
    assert torch.equal(b["frames"][:, 0], b["frames"][:, 7])
    assert -2.2 < b["frames"].min() < 0 < b["frames"].max() < 2.7  # ImageNet-normalised
    b = next(iter(build_eval_loader(cfg, [shards["webvid"].output + "/*.tar"], max_samples=40)))
    assert b["frames"].shape[1] == int(b["num_frames"].max()) <= 16
    assert (b["frame_mask"].sum(1) == b["num_frames"]).all()
    b = next(iter(build_eval_loader(cfg, [shards["smoltalk"].output + "/*.tar"], max_samples=4)))
    assert b["is_text_only"].all() and b["frames"].shape == (4, 1, 3, 224, 224) and not b["frame_mask"].any()
    assert (b["num_frames"] == 0).all() and (b["frames"] == 0).all()
    assert (b["loss_mask"] == b["attention_mask"].float()).all()  # stage 1: every real token


def test_validator_passes_and_catches(shards, tmp_path):
    import shutil

    from fovea.pipelines.shards import validate_shards

    for ds in ("webvid", "cauldron", "video_sft", "smoltalk"):
        rep = validate_shards(shards[ds].output)
        assert rep.ok, rep.summary()
    bad = tmp_path / "bad"
    shutil.copytree(shards["cauldron"].output, bad)
    (bad / "train-00000.tar").write_bytes((bad / "train-00000.tar").read_bytes()[:-3000])
    rep = validate_shards(str(bad))
    assert not rep.ok and any("train-00000.tar" in e for e in rep.errors)


def test_interleave_ratio_on_sample_data(shards):
    """WebVid vision batches + SmolTalk S1 text batches: 14 % +- 3 % text over 2,000 batches."""
    import torch

    from fovea.pipelines.loader import train_batches
    from fovea.pipelines.config import DataConfig

    cfg = DataConfig(train_shards=[shards["webvid"].output + "/train-*.tar"],
                     text_shards=[shards["smoltalk"].output + "/train-*.tar"], text_ratio=0.14,
                     batch_size=2, max_frames=1, num_workers=0, shuffle_buffer=16)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # main-process batches on a busy 2-core machine
    try:
        text = n = 0
        for epoch, _, batch in train_batches(cfg, rank=0, world_size=1, seed=0):
            text += bool(batch["is_text_only"].all())
            assert bool(batch["is_text_only"].all()) or not bool(batch["is_text_only"].any())
            n += 1
            if n == 2000:
                break
    finally:
        torch.set_num_threads(threads)
    assert epoch > 10  # ~40 vision samples per epoch: many epochs, text stream restarted too
    assert abs(text / 2000 - 0.14) <= 0.03, text / 2000
