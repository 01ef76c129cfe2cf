"""OpenVid-1M, Vript and ShareGPT4Video in their download layouts, the videos inside zip archives:
planning and its rejects, members decoded from whole and split archives, layout errors, the
validator's per-source lines and the manifest's source mix; one Ray run of jobs/preprocess.py
on the three sample sets (rejects, validator output, a rerun that writes nothing).

The sample sets are ``make sample-data``'s, made alone (``make_caption_sets``: only the clips
they use are encoded)."""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
import zipfile
from pathlib import Path

import pytest

from scripts import load_script
from fovea.pipelines.errors import Reject

RAW = {"openvid": "openvid", "vript_long": "vript", "vript_short": "vript", "sharegpt4video": "sharegpt4video"}
PLANNING = {"missing_file", "empty_caption", "malformed_row", "duplicate_id"}  # the rest come from decoding


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    from fovea.pipelines.demo_datasets import make_caption_sets

    root = tmp_path_factory.mktemp("caption_sets")
    return root, make_caption_sets(root)


def plan(sets, ds):
    from fovea.pipelines.readers import plan_dataset

    root, _ = sets
    return plan_dataset(ds, root / RAW[ds])


@pytest.mark.parametrize("ds", list(RAW))
def test_plans_follow_the_catalog(sets, ds):
    """Every catalog clip is planned with its caption and an archive member; the broken entries
    found while planning are rejected with their reason, the others (bad bytes) are planned."""
    _, cat = sets
    p = plan(sets, ds)
    expected = {(r["id"], r["reason"]) for r in cat["expected_rejects"][ds]}
    assert {(r["id"], r["reason"]) for r in p.rejects} == {e for e in expected if e[1] in PLANNING}
    ids = [r["id"] for r in p.refs]
    assert ids[:len(cat[ds])] == [c["id"] for c in cat[ds]]  # in file order
    assert set(ids[len(cat[ds]):]) == {i for i, reason in expected if reason not in PLANNING}
    good = {c["id"]: c["caption"] for c in cat[ds]}
    for r in p.refs:
        assert r["source"] == {"vript_long": "vript", "vript_short": "vript"}.get(ds, ds)
        assert "zip" in r and r["member"].endswith(".mp4") and "video" not in r
        if r["id"] in good:
            assert r["caption"] == good[r["id"]]
    assert all(r["where"] and r["detail"] for r in p.rejects)


def test_vript_caption_is_scene_title_then_content(sets):
    p = plan(sets, "vript_long")
    first = p.refs[0]
    assert first["id"] == "fvDemoStreet-Scene-001" and first["member"] == "fvDemoStreet/fvDemoStreet-Scene-001.mp4"
    assert first["caption"].startswith("Parked cars and a taxi: A man in a dark suit")
    short = plan(sets, "vript_short")  # per-video JSON files inside vript_short_videos_captions.zip
    assert short.inputs[0].endswith("vript_short_videos_captions.zip")
    assert short.refs[1]["where"] == "vript_short_videos_captions.zip:fvDemoCar_0_caption.json[fvDemoCar_0-Scene-002]"


def test_members_decode_from_whole_and_split_archives(sets, model_store):
    """A stored member of OpenVid_part0.zip and a deflated one inside the pieces of OpenVid_part1
    decode to their 1 FPS frames; the sample gets OpenVid's prompt, user text being empty."""
    from fovea.pipelines.payload import Settings, process_ref
    from fovea.pipelines.readers import load_record
    from fovea.pipelines.tokenize import SOURCE_PROMPTS
    from fovea.pipelines.video import num_frames_at_fps
    from fovea.pipelines.zip_members import ZipMember

    _, cat = sets
    refs = {r["id"]: r for r in plan(sets, "openvid").refs}
    s = Settings(dataset="openvid", stage=1, max_tokens=512, max_frames=64, tokenizer="HuggingFaceTB/SmolLM2-135M-Instruct")
    for clip, pieces in (("bikes_suit_taxi", ["OpenVid_part0.zip"]),
                         ("coffee_pan_rl", ["OpenVid_part1_partaa", "OpenVid_part1_partab"])):
        ref = refs[f"fovea_demo_{clip}.mp4"]
        rec = load_record("openvid", ref)
        assert isinstance(rec["video"], ZipMember) and [Path(p).name for p in rec["video"].parts] == pieces
        assert rec["user"] == "" and rec["source"] == "openvid"
        meta, jpgs = process_ref(ref, s)
        info = next(c for c in cat["openvid"] if c["clip"] == clip)
        assert meta["user"] == SOURCE_PROMPTS["openvid"] == "Write a brief caption for this video."
        assert meta["assistant"] == info["caption"]
        assert len(jpgs) == meta["frame_count"] == num_frames_at_fps(meta["duration"]) >= 3


def test_bad_members_are_rejected_by_the_task(sets, tmp_path):
    """Bytes cut short, bytes that are no video, a member gone from its archive since planning,
    and an archive gone: each a reject with its reason, never an exception."""
    from fovea.pipelines.video import decode_video
    from fovea.pipelines.zip_members import video_source

    refs = {r["id"]: r for r in plan(sets, "openvid").refs}
    cases = {"fovea_demo_truncated.mp4": "truncated_video", "fovea_demo_garbage.mp4": "unreadable_video"}
    for vid, reason in cases.items():
        with pytest.raises(Reject) as e:
            decode_video(video_source(refs[vid]), max_frames=64)
        assert e.value.reason == reason, e.value.detail
    ref = refs["fovea_demo_bikes_suit_taxi.mp4"]
    archive = tmp_path / "OpenVid_part0.zip"
    with zipfile.ZipFile(ref["zip"][0]) as src, zipfile.ZipFile(archive, "w") as dst:
        for info in src.infolist():
            if info.filename != ref["member"]:
                dst.writestr(info, src.read(info))
    for zips, detail in (([str(archive)], "no member fovea_demo_bikes_suit_taxi.mp4"),
                         ([str(tmp_path / "gone.zip")], "gone.zip is gone")):
        with pytest.raises(Reject) as e:
            decode_video(video_source({**ref, "zip": zips}), max_frames=64)
        assert e.value.reason == "missing_file" and detail in e.value.detail
    damaged = tmp_path / "damaged.zip"  # one byte changed inside the (stored) member's data
    data = bytearray(Path(ref["zip"][0]).read_bytes())
    with zipfile.ZipFile(ref["zip"][0]) as zf:
        info = zf.getinfo(ref["member"])
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(Reject) as e:
        decode_video(video_source({**ref, "zip": [str(damaged)]}), max_frames=64)
    assert e.value.reason == "unreadable_video" and "Bad CRC-32" in e.value.detail


def test_joined_pieces_read_as_the_archive(sets):
    """Seeks and reads across the boundary of OpenVid_part1_partaa/_partab return the bytes of
    the joined file; a whole .zip beside its pieces is read instead of them."""
    from fovea.pipelines.zip_members import JoinedFile, find_archives

    root, _ = sets
    pieces = [root / "openvid" / f"OpenVid_part1_part{x}" for x in ("aa", "ab")]
    whole = b"".join(p.read_bytes() for p in pieces)
    rng = random.Random(0)
    with io.BufferedReader(JoinedFile([str(p) for p in pieces])) as f:
        assert f.seek(0, io.SEEK_END) == len(whole)
        for _ in range(50):
            at, n = rng.randrange(len(whole)), rng.randrange(1, 5000)
            f.seek(at)
            assert f.read(n) == whole[at:at + n]
    assert [[Path(p).name for p in a] for a in find_archives(root / "openvid")] == [
        ["OpenVid_part0.zip"], ["OpenVid_part1_partaa", "OpenVid_part1_partab"]]
    copy = root / "openvid_joined"
    shutil.copytree(root / "openvid", copy)
    (copy / "OpenVid_part1.zip").write_bytes(whole)
    assert [Path(a[0]).name for a in find_archives(copy)] == ["OpenVid_part0.zip", "OpenVid_part1.zip"]
    shutil.rmtree(copy)


def test_layout_errors_name_what_is_missing(sets, tmp_path):
    from fovea.pipelines.readers import LayoutError, check_layout

    root, _ = sets
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(LayoutError, match=r"no OpenVid-1M.csv or OpenVidHD.csv file in it \(it has a.txt\)"):
        check_layout("openvid", tmp_path)
    (tmp_path / "OpenVid-1M.csv").write_text("name,text\nx.mp4,hello\n")
    with pytest.raises(LayoutError, match=r"lacks the columns video, caption"):
        check_layout("openvid", tmp_path)
    (tmp_path / "OpenVid-1M.csv").write_text("video,caption\nx.mp4,hello\n")
    with pytest.raises(LayoutError, match=r"no zip archive, archive piece or video file under"):
        check_layout("openvid", tmp_path)
    bad = tmp_path / "v" / "vript_captions"
    bad.mkdir(parents=True)
    (bad / "vript_long_videos_captions.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(LayoutError, match=r"does not read as vript_captions/vript_long_videos_captions.jsonl"):
        check_layout("vript_long", tmp_path / "v")
    for ds, sub in RAW.items():
        check_layout(ds, root / sub)  # the sample sets pass


def test_validator_lines_and_manifest_mix_per_source(tmp_path):
    """Two sources in one shard: one validator line each (samples, frames, tokens); the manifest
    counts samples per source, a state from before sources were recorded as ``unrecorded``."""
    import numpy as np

    from fovea.pipelines.shards import ShardWriter, build_manifest, validate_shards
    from fovea.pipelines.video import encode_jpeg

    jpg = encode_jpeg(np.zeros((224, 224, 3), np.uint8))
    w = ShardWriter(tmp_path / "train-00000.tar")
    for i, (src, frames, tokens) in enumerate([("openvid", 3, 10), ("vript", 2, 7), ("openvid", 1, 5)]):
        meta = {"user": "u", "assistant": "a", "source": src, "frame_count": frames, "token_ids": [1] * tokens,
                "loss_mask": [1] * tokens, "is_text_only": False, "stage": 1}
        w.add(f"k{i}", json.dumps(meta), [jpg] * frames)
    w.commit()
    rep = validate_shards(str(tmp_path))
    assert rep.ok and rep.by_source == {"openvid": [2, 4, 15], "vript": [1, 2, 7]}
    lines = rep.summary().splitlines()
    assert "source openvid  2 samples, 4 frames, 15 tokens" in lines
    assert "source vript    1 samples, 2 frames, 7 tokens" in lines
    state = {"num_samples": 2, "frame_counts": [1, 1], "token_counts": [3, 3], "sha256": "x", "bytes": 1}
    m = build_manifest(tmp_path, [("train-00000.tar", {**state, "sources": ["vript", "openvid"]}),
                                  ("train-00001.tar", state)], {})
    assert m["samples_per_source"] == {"openvid": 1, "unrecorded": 2, "vript": 1}


def _tree(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.extended
@pytest.mark.slow
def test_preprocess_job_on_the_sample_sets(sets, tmp_path, capsys, model_store):
    """jobs/preprocess.py on each set (one Ray instance): exit 0, rejects.jsonl holds exactly the
    catalog's broken entries, the validator prints the source's line, the manifest its mix; a
    rerun writes no file."""
    import ray

    root, cat = sets
    pp = load_script("jobs/preprocess.py")
    started = not ray.is_initialized()  # another module's instance is shared; "local": never a cluster
    if started:  # that `ray start` left running on this machine
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for ds, sub in RAW.items():
            out = tmp_path / ds
            assert pp.main([ds, "--input", str(root / sub), "--output", str(out), "-q", "--samples-per-shard", "3"]) == 0
            printed = capsys.readouterr().out
            rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
            assert {(r["id"], r["reason"]) for r in rejects} == {(r["id"], r["reason"]) for r in cat["expected_rejects"][ds]}
            source = {"vript_long": "vript", "vript_short": "vript"}.get(ds, ds)
            manifest = json.loads((out / "manifest.json").read_text())
            assert manifest["samples_per_source"] == {source: len(cat[ds])} and manifest["settings"]["stage"] == 1
            frames = sum(sum(s["frame_counts"]) for s in manifest["shards"])
            assert f"source {source}  {len(cat[ds])} samples, {frames} frames, {manifest['total_tokens']} tokens" in printed
        before = _tree(tmp_path / "openvid")
        assert pp.main(["openvid", "--input", str(root / "openvid"), "--output", str(tmp_path / "openvid"), "-q",
                        "--samples-per-shard", "3"]) == 0
        assert "0 written" in capsys.readouterr().out and _tree(tmp_path / "openvid") == before
    finally:
        if started:
            ray.shutdown()
