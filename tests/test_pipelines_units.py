"""Unit tests of the pipeline pieces: sampling, decoding, tokenization, shards, validator."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from scripts import load_script
from fovea.pipelines.errors import Reject


def test_sample_times_one_fps_cap_and_uniform_spread():
    from fovea.pipelines.video import num_frames_at_fps, sample_times, uniform_indices

    assert sample_times(3.0, 64) == [0.5, 1.5, 2.5]
    assert sample_times(4.5, 64) == [0.5, 1.5, 2.5, 3.5]  # 4.5 is not < 4.5
    assert sample_times(4.6, 64)[-1] == 4.5
    assert sample_times(0.3, 64) == [0.5]  # at least one frame (the last one on screen)
    assert num_frames_at_fps(64.4) == 64 and num_frames_at_fps(64.6) == 65
    t = sample_times(640.0, 64)
    assert len(t) == 64 and t[0] == 5.0 and t[-1] == 635.0 and np.allclose(np.diff(t), 10.0)
    assert uniform_indices(5, 8) == [0, 1, 2, 3, 4]
    assert uniform_indices(100, 4) == [12, 37, 62, 87]


def _clip(path: Path, seconds: float, fps: int = 4, size=(96, 64)):
    """A clip whose frame i is filled with grey level 10 * i (easy to identify after decoding)."""
    from fovea.pipelines.demo_datasets import write_video

    n = round(seconds * fps)
    frames = [np.full((size[1], size[0], 3), (10 * i) % 250, np.uint8) for i in range(n)]
    write_video(path, frames, fps)
    return path


def test_decode_video_picks_the_frame_on_screen(tmp_path):
    from fovea.pipelines.video import decode_video

    v = decode_video(_clip(tmp_path / "a.mp4", 6.0), max_frames=64)
    assert v.duration == pytest.approx(6.0) and v.times == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    assert all(f.shape == (224, 224, 3) for f in v.frames)
    levels = [int(round(f.mean() / 10)) for f in v.frames]  # frame i (at i/4 s) has level 10 i
    assert levels == [2, 6, 10, 14, 18, 22]
    v = decode_video(tmp_path / "a.mp4", max_frames=3)  # 3 frames spread over 6 s: t = 1, 3, 5
    assert v.times == [1.0, 3.0, 5.0] and [int(round(f.mean() / 10)) for f in v.frames] == [4, 12, 20]


def test_decode_video_rejects(tmp_path):
    from fovea.pipelines.video import decode_video

    good = _clip(tmp_path / "g.mp4", 8.0).read_bytes()
    cases = {"missing.mp4": None, "empty.mp4": b"", "garbage.mp4": bytes(range(256)) * 40,
             "half.mp4": good[: len(good) // 2]}
    reasons = {}
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(Reject) as e:
            decode_video(tmp_path / name, max_frames=64)
        reasons[name] = e.value.reason
    assert reasons == {"missing.mp4": "missing_file", "empty.mp4": "unreadable_video",
                       "garbage.mp4": "unreadable_video", "half.mp4": "unreadable_video"}


def test_prepare_image_formats_and_rejects():
    from PIL import Image

    from fovea.pipelines.video import prepare_image

    def enc(img, fmt):
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        return buf.getvalue()

    rgba = Image.new("RGBA", (300, 200), (255, 0, 0, 0))  # fully transparent -> white
    assert (prepare_image(enc(rgba, "PNG")) == 255).all()
    gray = prepare_image(enc(Image.new("L", (50, 400), 77), "PNG"))
    assert gray.shape == (224, 224, 3) and (gray == 77).all()
    jpg = enc(Image.new("RGB", (640, 480), (0, 128, 0)), "JPEG")
    for bad in (b"not an image", jpg[: len(jpg) // 2]):
        with pytest.raises(Reject) as e:
            prepare_image(bad)
        assert e.value.reason == "bad_image"


def test_tokenize_stage_rules(tokenizer):
    from fovea.pipelines.tokenize import SYSTEM_PROMPT, tokenize_chat

    t1 = tokenize_chat(tokenizer, "What is shown?", "A cat.", stage=1, max_tokens=512)
    t2 = tokenize_chat(tokenizer, "What is shown?", "A cat.", stage=2, max_tokens=512)
    text = tokenizer.decode(t1.token_ids)
    assert text == (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nWhat is shown?<|im_end|>\n"
                    "<|im_start|>assistant\nA cat.<|im_end|>\n")
    assert t1.token_ids == t2.token_ids and t1.loss_mask == [1] * len(t1.token_ids)
    b = t2.boundary
    assert t2.loss_mask == [0] * b + [1] * (len(t2.token_ids) - b)
    assert tokenizer.decode(t2.token_ids[b:]) == "A cat.<|im_end|>\n"
    cut = tokenize_chat(tokenizer, "What is shown?", "A cat. " * 50, stage=2, max_tokens=40)
    assert len(cut.token_ids) == len(cut.loss_mask) == 40 and cut.truncated
    for user, answer, stage, reason in [("q", " ", 1, "empty_caption"), ("", "a", 2, "empty_prompt"),
                                        ("long " * 100, "a", 2, "too_long")]:
        with pytest.raises(Reject) as e:
            tokenize_chat(tokenizer, user, answer, stage=stage, max_tokens=64)
        assert e.value.reason == reason


def _write(path, samples):
    from fovea.pipelines.shards import ShardWriter

    w = ShardWriter(path)
    for key, meta, jpgs in samples:
        w.add(key, json.dumps(meta), jpgs)
    return w.commit()


def _meta(frames, ids=(1, 2, 3)):
    return {"user": "u", "assistant": "a", "source": "s", "frame_count": frames, "token_ids": list(ids),
            "loss_mask": [0] + [1] * (len(ids) - 1), "is_text_only": frames == 0, "stage": 2}


def _jpeg(level=128):
    from fovea.pipelines.video import encode_jpeg

    return encode_jpeg(np.full((224, 224, 3), level, np.uint8))


def test_shard_writer_is_deterministic_contiguous_and_atomic(tmp_path):
    samples = [(f"k{i}", _meta(i % 3), [_jpeg(10 * i)] * (i % 3)) for i in range(6)]
    d1, _ = _write(tmp_path / "a.tar", samples)
    d2, _ = _write(tmp_path / "b.tar", samples)
    assert d1 == d2 and (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    names = tarfile.open(tmp_path / "a.tar").getnames()
    assert names[:4] == ["k0.json", "k1.json", "k1.000.jpg", "k2.json"]
    from fovea.pipelines.shards import ShardWriter

    w = ShardWriter(tmp_path / "c.tar")
    w.add("x", json.dumps(_meta(0)), [])
    assert not (tmp_path / "c.tar").exists()  # nothing under the final name until commit
    w.abort()
    assert not list(tmp_path.glob("c.tar*"))


def test_validator_catches_broken_samples(tmp_path):
    from fovea.pipelines.shards import ValidationReport, validate_tar

    bad = [("a", _meta(2), [_jpeg()]),  # frame_count says 2, one file
           ("b", {**_meta(0), "loss_mask": [1]}, []),  # length mismatch
           ("c", _meta(1), [b"\xff\xd8 not a jpeg"])]
    _write(tmp_path / "bad.tar", bad)
    with tarfile.open(tmp_path / "split.tar", "w") as tar:  # sample "d" split in two runs
        for name, data in [("d.json", json.dumps(_meta(1)).encode()), ("e.json", json.dumps(_meta(0)).encode()),
                           ("d.000.jpg", _jpeg())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    rep = ValidationReport()
    seen: set[str] = set()
    validate_tar(str(tmp_path / "bad.tar"), rep, seen)
    validate_tar(str(tmp_path / "split.tar"), rep, seen)
    text = "\n".join(rep.errors)
    assert "bad.tar:a: frame_count 2 but 1 .jpg files" in text
    assert "bad.tar:b: 3 token_ids vs 1 loss_mask" in text
    assert "bad.tar:c.000.jpg: does not decode" in text
    assert "split.tar:d: files of this sample are not contiguous" in text


def test_readers_reject_unknown_dataset_and_missing_folder(tmp_path):
    from fovea.pipelines.readers import plan_dataset

    with pytest.raises(ValueError, match="unknown dataset 'webvids'"):
        plan_dataset("webvids", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plan_dataset("webvid", tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="results"):
        plan_dataset("webvid", tmp_path)


def test_preprocess_job_clear_errors(tmp_path, capsys):
    pp = load_script("jobs/preprocess.py")
    for argv, msg in [(["nope", "--input", str(tmp_path), "--output", "x"], "unknown dataset 'nope'"),
                      (["webvid", "--input", str(tmp_path / "missing"), "--output", "x"], "does not exist")]:
        with pytest.raises(SystemExit):
            pp.main(argv)
        assert msg in capsys.readouterr().err
