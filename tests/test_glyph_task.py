"""The synthetic "where to look" task (platform/check/task.py): the glyph is where the
metadata says (in decoded video frames and in shards), captions name the glyph sequence,
the files are the WebVid raw layout, generation is deterministic."""

from __future__ import annotations

import csv
import io
import json
import tarfile

import numpy as np
import pytest

from fovea.platform.check.draw import ALPHABETS, COLOURS, glyph_tile
from fovea.platform.check.shards import write_direct_shards
from fovea.platform.check.task import (
    CSV_NAME, META_NAME, GlyphTaskConfig, caption_for, generate_glyph_task, normalise_caption, read_metadata,
    render_video,
)

SMALL = dict(num_videos=6, frames=4, distractors=1, glyph_size=0.3)


def _inner(box, margin):
    x0, y0, x1, y1 = box
    return x0 + margin, y0 + margin, x1 - margin, y1 - margin


def _centre_colour(frame: np.ndarray, box, frac: float = 0.25) -> np.ndarray:
    """Mean RGB of the central ``frac`` of a box (away from the outline and codec ringing)."""
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, frac * (x1 - x0) / 2
    patch = frame[int(cy - r):int(cy + r) + 1, int(cx - r):int(cx + r) + 1].reshape(-1, 3)
    return patch.astype(np.float32).mean(0)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    cfg = GlyphTaskConfig(**SMALL)
    out = tmp_path_factory.mktemp("glyphs") / "raw"
    metas = generate_glyph_task(out, cfg, workers=1)
    return cfg, out, metas


def test_webvid_layout_and_captions(task):
    from fovea.pipelines.readers import plan_dataset

    cfg, out, metas = task
    rows = list(csv.DictReader(io.StringIO((out / CSV_NAME).read_text())))
    assert [r["videoid"] for r in rows] == [m["videoid"] for m in metas]
    assert set(rows[0]) == {"videoid", "contentUrl", "duration", "page_dir", "name"}
    for r, m in zip(rows, metas):
        assert len(m["labels"]) == cfg.frames == len(m["glyphs"])
        assert r["name"] == m["caption"] == caption_for(m["labels"]) == ", ".join(g["label"] for g in m["glyphs"])
        assert all(label in ALPHABETS[cfg.alphabet] for label in m["labels"])
        assert (out / m["file"]).exists() and r["page_dir"] == m["page_dir"]
    plan = plan_dataset("webvid", out)  # what jobs/preprocess.py webvid plans: every row, no rejects
    assert len(plan.refs) == cfg.num_videos and not plan.rejects
    assert {r["caption"] for r in plan.refs} == {m["caption"] for m in metas}
    assert read_metadata(out) == metas
    assert normalise_caption("Red,  blue. GREEN") == "red blue green"


def test_decoded_frames_show_the_glyph_where_the_metadata_says(task):
    """Decode like the preprocessing (1 FPS, PyAV): frame k shows the target's colour in its box,
    the distractor's colour in its box, and not the target colour elsewhere."""
    from fovea.pipelines.video import decode_video

    cfg, out, metas = task
    checked = 0
    for m in metas:
        v = decode_video(out / m["file"], max_frames=64)
        assert len(v.frames) == cfg.frames and v.frames[0].shape == (cfg.frame_size, cfg.frame_size, 3)
        for k, rec in enumerate(m["glyphs"]):
            frame = v.frames[k]
            want = np.array(COLOURS[rec["label"]], np.float32)
            got = _centre_colour(frame, rec["box"])
            assert np.abs(got - want).max() < 40, (m["videoid"], k, rec["label"], got)
            for d in rec["distractors"]:
                assert np.abs(_centre_colour(frame, d["box"]) - np.array(COLOURS[d["label"]])).max() < 40
                assert d["label"] != rec["label"]
                # boxes never overlap
                a, b = rec["box"], d["box"]
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
            # the box is where the glyph is: shifting the box by half a glyph sees something else
            x0, y0, x1, y1 = rec["box"]
            g = x1 - x0
            assert rec["box_norm"] == [round(v / cfg.frame_size, 5) for v in rec["box"]]
            assert 0 <= x0 < x1 <= cfg.frame_size and 0 <= y0 < y1 <= cfg.frame_size and g == cfg.glyph_px
            checked += 1
    assert checked == cfg.num_videos * cfg.frames


@pytest.mark.parametrize("alphabet", sorted(ALPHABETS))
def test_every_alphabet_draws_its_tile_inside_the_box(alphabet):
    cfg = GlyphTaskConfig(**{**SMALL, "alphabet": alphabet, "clutter": "noise", "distractors": 2})
    frames, meta = render_video(cfg, 3)
    for k, rec in enumerate(meta["glyphs"]):
        tile = glyph_tile(alphabet, rec["label"], cfg.glyph_px)
        x0, y0, x1, y1 = rec["box"]
        region = frames[k][y0:y1, x0:x1]
        solid = tile[..., 3] == 255
        assert solid.mean() > 0.15  # the thinnest shape (bar) covers ~0.2 of its box
        assert np.abs(region[solid].astype(int) - tile[..., :3][solid].astype(int)).max() <= 1
    assert meta["caption"] == ", ".join(meta["labels"])


def test_paths_and_determinism(tmp_path):
    fixed = [render_video(GlyphTaskConfig(**SMALL), i)[1] for i in range(3)]
    assert fixed[0]["labels"] != fixed[1]["labels"]  # labels vary ...
    assert [g["box"] for g in fixed[0]["glyphs"]] == [g["box"] for g in fixed[2]["glyphs"]]  # ... the path does not
    assert len({tuple(g["box"]) for g in fixed[0]["glyphs"]}) == SMALL["frames"]  # and it moves
    static = render_video(GlyphTaskConfig(**{**SMALL, "motion": "static"}), 0)[1]
    assert len({tuple(g["box"]) for g in static["glyphs"]}) == 1
    line = render_video(GlyphTaskConfig(**{**SMALL, "motion": "line", "speed": 0.05, "glyph_size": 0.1}), 1)[1]
    steps = [np.hypot(a["centre"][0] - b["centre"][0], a["centre"][1] - b["centre"][1])
             for a, b in zip(line["glyphs"], line["glyphs"][1:])]
    assert max(steps) <= 0.05 + 1e-4 and min(steps) > 0
    # same seed -> same bytes, whatever the worker count
    cfg = GlyphTaskConfig(**{**SMALL, "num_videos": 3})
    m1 = generate_glyph_task(tmp_path / "a", cfg, workers=1)
    m2 = generate_glyph_task(tmp_path / "b", cfg, workers=2)
    assert m1 == m2
    for m in m1:
        assert (tmp_path / "a" / m["file"]).read_bytes() == (tmp_path / "b" / m["file"]).read_bytes()
    stamp = (tmp_path / "a" / "task.json").stat().st_mtime_ns
    generate_glyph_task(tmp_path / "a", cfg, workers=1)  # idempotent
    assert (tmp_path / "a" / "task.json").stat().st_mtime_ns == stamp
    other = generate_glyph_task(tmp_path / "c", GlyphTaskConfig(**{**SMALL, "num_videos": 3, "seed": 1}), workers=1)
    assert [m["labels"] for m in other] != [m["labels"] for m in m1]


def test_direct_shards_match_the_preprocessing_layout(tmp_path, model_store):
    """Shards written without video files: same keys/split/fields as run_preprocess, frames
    show the glyph at the box, answer-only loss mask in stage 2."""
    from PIL import Image

    from fovea.pipelines.preprocess import sample_key, split_of
    from fovea.pipelines.shards import REQUIRED_FIELDS

    cfg = GlyphTaskConfig(**{**SMALL, "num_videos": 10})
    r = write_direct_shards(tmp_path / "raw", tmp_path / "shards", cfg, tokenizer="fovea/tiny-llama", stage=2,
                            val_fraction=0.3, samples_per_shard=4, workers=1)
    by_key = {sample_key("webvid", m["videoid"]): m for m in r["metas"]}
    seen = {}
    for tar in sorted((tmp_path / "shards").glob("*.tar")):
        split = tar.name.split("-")[0]
        with tarfile.open(tar) as t:
            files = {mem.name: t.extractfile(mem).read() for mem in t.getmembers()}
        for name, data in files.items():
            if not name.endswith(".json"):
                continue
            key = name[:-5]
            meta, j = by_key[key], json.loads(data)
            assert split == split_of(meta["videoid"], 0.3)
            assert all(f in j for f in REQUIRED_FIELDS)
            assert j["assistant"] == meta["caption"] and j["frame_count"] == cfg.frames
            assert 0 < sum(j["loss_mask"]) < len(j["loss_mask"]) and j["loss_mask"][-1] == 1  # answer only
            for k, rec in enumerate(meta["glyphs"]):
                img = np.asarray(Image.open(io.BytesIO(files[f"{key}.{k:03d}.jpg"])).convert("RGB"))
                assert np.abs(_centre_colour(img, rec["box"]) - np.array(COLOURS[rec["label"]])).max() < 40
            seen[key] = split
    assert len(seen) == cfg.num_videos and sum(r["splits"].values()) == cfg.num_videos
    assert (tmp_path / "raw" / META_NAME).exists()


def test_single_caption_names_one_label_the_target_keeps():
    """caption="single": the target keeps one label in every frame and the caption names it once;
    the distractors never carry it, and the frames show its colour inside its box."""
    cfg = GlyphTaskConfig(**{**SMALL, "caption": "single", "distractors": 2})
    labels = set()
    for i in range(4):
        frames, meta = render_video(cfg, i)
        lab = meta["labels"]
        assert len(lab) == 1 and meta["caption"] == lab[0] == caption_for(lab)
        labels.add(lab[0])
        for g, frame in zip(meta["glyphs"], frames):
            assert g["label"] == lab[0]
            assert all(d["label"] != lab[0] for d in g["distractors"])
            assert np.abs(_centre_colour(frame, g["box"]) - np.array(COLOURS[lab[0]])).max() < 40
    assert len(labels) > 1  # the label still varies between videos
    with pytest.raises(ValueError, match="caption"):
        GlyphTaskConfig(caption="pairs")
