"""Readers for three video-caption sets in their Hugging Face download layouts, the videos read
inside their zip archives (``zip_members``): OpenVid-1M, Vript (long and short clips) and
ShareGPT4Video.  ``readers.py`` dispatches to them; they plan the same kind of references and
rejects as its own readers, with ``user`` empty: the per-source prompt applies (DESIGN.md 2.2,
``tokenize.SOURCE_PROMPTS``: ``openvid``, ``vript``, ``sharegpt4video``).

Layouts accepted (what the downloads hold, and where that was read):

    openvid/        data/train/OpenVid-1M.csv (else OpenVidHD.csv, a subset of the same pairs),
                    columns video (the file name, the sample id), caption, and scores / frame /
                    fps / seconds columns that are not used; the videos in OpenVid_partN.zip,
                    members looked up by file name at any depth, or in the byte pieces
                    OpenVid_partN_partaa, _partab, ... of archives over 50 GB, read joined
                    without joining them on disk; or extracted (``unzip -j -d video_folder``)
                    [dataset card nkp37/OpenVid-1M: Directory, Download, Usage; spsanps/nanoSmol
                    fVLM/release/scripts/download_openvid.py (the reference): CSV columns
                    video/caption, parts 102-119 as _partaa/_partab, members found by .mp4 name]
    vript/          vript_captions/vript_{long,short}_videos_captions.jsonl, one clip a line:
                    clip_id, caption {shot_type, camera_movement, content, scene_title},
                    voiceover, video id at the top or in meta; else the older
                    vript_captions/vript_{long,short}_videos_captions.zip of per-video
                    <video_id>_caption.json = {meta, data: {clip_id: {clip_id, caption, ...}}}
                    (a JSONL line of that shape is read the same way); the clips in
                    vript_{long,short}_videos_clips/*.zip as <video_id>/<clip_id>.mp4
                    [dataset card Mutonix/Vript (configs vript-long / vript-short, "Getting
                    Started"); mutonix/Vript DATA.md; spsanps/nanoSmol
                    fVLM/release/scripts/process_video_datasets.py: clip_id, caption.content /
                    scene_title, meta.video_id, clips <clip_id>.mp4]
    sharegpt4video/ sharegpt4video_40k.jsonl, one video a line: video_id, video_path,
                    zip_folder (the archive's file name), captions [{idx, content}] where idx
                    "-1" is the whole-video caption and the others the keyframe captions; the
                    videos in zip_folder/<source>/<zip_folder> (mixkit's folder is "mixit"),
                    members found by file name (<video_id>.mp4), or extracted beside the JSONL
                    [dataset card ShareGPT4Video/ShareGPT4Video (file list); ml-energy/benchmark
                    sharegpt4video/sample.py (zip_folder, captions idx "-1") and README (unzip
                    -d panda, then panda/<video_id>.mp4); quicksviewer convert_sharegpt4video.py
                    (video_path)]

Choices: a Vript clip's text is ``"<scene_title>: <content>"`` (``content`` alone without a
title), as the reference's processing script (above) built it; ShareGPT4Video keeps the whole-video
caption, not the per-keyframe ones.  A listed length is not used: an archive
member's CRC proves it whole (``zip_members.open_member``), and no source says how OpenVid's
``seconds`` column was measured.  Every video is looked up by file name across the archives
under the dataset's folder (Vript: under its ``*_clips`` folder).
"""

from __future__ import annotations

import csv
import json
import os
import zipfile
from pathlib import Path

from fovea.pipelines.errors import EMPTY_CAPTION, MALFORMED_ROW, MISSING_FILE, Reject, reject_record
from fovea.pipelines.zip_members import VideoIndex, fingerprint, has_videos, open_archive, video_source

CAPTION_SETS = ("openvid", "vript_long", "vript_short", "sharegpt4video")
SOURCE = {"openvid": "openvid", "vript_long": "vript", "vript_short": "vript", "sharegpt4video": "sharegpt4video"}
RAW_FOLDER = {"vript_long": "vript", "vript_short": "vript"}  # one Vript download holds both

LAYOUTS = {
    "openvid": "data/train/OpenVid-1M.csv (or OpenVidHD.csv) with columns video and caption, and the videos in "
               "OpenVid_partN.zip (or its pieces OpenVid_partN_partaa, _partab) (nkp37/OpenVid-1M)",
    "vript_long": "vript_captions/vript_long_videos_captions.jsonl (or .zip) and the clips in "
                  "vript_long_videos_clips/*.zip (Mutonix/Vript)",
    "vript_short": "vript_captions/vript_short_videos_captions.jsonl (or .zip) and the clips in "
                   "vript_short_videos_clips/*.zip (Mutonix/Vript)",
    "sharegpt4video": "sharegpt4video_40k.jsonl with video_id and captions, and the videos in "
                      "zip_folder/<source>/*.zip (ShareGPT4Video/ShareGPT4Video)",
}
LAYOUT_FILES = {
    "openvid": ("OpenVid-1M.csv", "OpenVidHD.csv"),
    "vript_long": ("vript_long_videos_captions.jsonl", "vript_long_videos_captions.zip"),
    "vript_short": ("vript_short_videos_captions.jsonl", "vript_short_videos_captions.zip"),
    "sharegpt4video": ("sharegpt4video*.jsonl",),
}
COLUMNS = {"openvid": ("video", "caption"), "sharegpt4video": ("video_id", "captions")}


def _annotation_files(dataset: str, root: Path) -> list[Path]:
    """The annotation files to read: the first of the layout's names that exists (OpenVidHD
    only without OpenVid-1M, a Vript caption zip only without its JSONL: both hold the same rows)."""
    for pattern in LAYOUT_FILES[dataset]:
        found = sorted(p for p in root.rglob(pattern) if p.is_file() and not p.name.startswith("."))
        if found:
            return found
    return []


def _video_root(dataset: str, root: Path) -> Path:
    """Where the dataset's videos lie: Vript's clips folder (its full videos are not indexed)."""
    if dataset.startswith("vript_"):
        clips = root / f"vript_{dataset.removeprefix('vript_')}_videos_clips"
        return clips if clips.is_dir() else root
    return root


def _first_row(path: Path) -> dict | None:
    try:
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8", errors="replace") as f:
                return dict.fromkeys(next(csv.reader(f), []))
        if path.suffix == ".zip":
            return {"zip": None}
        with open(path, "rb") as f:
            row = json.loads(next((ln for ln in f if ln.strip()), b"{}"))
        return row if isinstance(row, dict) else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def layout_problem(dataset: str, root: Path) -> str | None:
    """What keeps ``root`` from being ``dataset``'s download layout, or None: its annotation
    file, that file's columns / first record, and some archive or video to read."""
    files = _annotation_files(dataset, root)
    if not files:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if not p.name.startswith("."))
        there = f"it has {', '.join(entries[:6])}{', ...' if len(entries) > 6 else ''}" if entries else "it is empty"
        return f"no {' or '.join(LAYOUT_FILES[dataset])} file in it ({there})"
    row = _first_row(files[0])
    need = COLUMNS.get(dataset, ())
    if row is None or (dataset.startswith("vript_") and not ({"clip_id", "data", "zip"} & set(row))):
        return f"the first record of {files[0]} does not read as {LAYOUTS[dataset].split(' and ')[0]}"
    if any(c not in row for c in need):
        return f"{files[0]} lacks the columns {', '.join(c for c in need if c not in row)} (has {', '.join(row)})"
    videos = _video_root(dataset, root)
    if not has_videos(videos):
        return f"no zip archive, archive piece or video file under {videos}"
    return None


def plan_caption_set(dataset: str, root: Path, plan) -> None:
    """Fill ``plan`` (a ``readers.Plan``) with ``dataset``'s references and planning rejects."""
    files = _annotation_files(dataset, root)
    if not files:
        raise FileNotFoundError(f"no {' or '.join(LAYOUT_FILES[dataset])} under {root}")
    videos = VideoIndex(_video_root(dataset, root))
    rows = {"openvid": _openvid_rows, "sharegpt4video": _sharegpt4video_rows}.get(dataset, _vript_rows)
    for path in files:
        plan.inputs.append(str(path))
        annotation_fp = fingerprint(path)
        for sid, where, caption, name, problem in rows(path):
            if problem is not None:
                plan.rejects.append(reject_record(dataset, sid or where, problem.reason, problem.detail, where))
                continue
            found = videos.find(name)
            if found is None:
                plan.rejects.append(reject_record(dataset, sid, MISSING_FILE, videos.missing(name), where))
                continue
            plan.refs.append({"id": sid, "where": where, **found, "fp": [annotation_fp, found["fp"]],
                              "caption": caption, "source": SOURCE[dataset]})


def load_caption_record(ref: dict) -> dict:
    """A reference -> the record ``payload.process_ref`` takes (runs in Ray tasks)."""
    return {"source": ref["source"], "user": "", "assistant": ref["caption"], "video": video_source(ref),
            "image": None}


# Each row reader yields (id, where, caption, video file name, None) or (id, where, "", "", Reject).

def _openvid_rows(path: Path):
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS["openvid"] if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing} (have {reader.fieldnames})")
        for i, row in enumerate(reader):
            where = f"{path.name}:{i + 2}"  # the row's line (header = 1)
            name = (row.get("video") or "").strip()
            if None in row or any(v is None for v in row.values()):
                yield name, where, "", "", Reject(MALFORMED_ROW, "wrong number of columns")
            elif not name:
                yield "", where, "", "", Reject(MALFORMED_ROW, "empty video")
            elif not (row["caption"] or "").strip():
                yield name, where, "", "", Reject(EMPTY_CAPTION, "empty caption")
            else:
                yield name, where, row["caption"].strip(), name, None


def _json_lines(path: Path):
    """(line number, object or Reject) for every non-blank line."""
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                yield n, Reject(MALFORMED_ROW, f"not JSON: {e}")


def _vript_rows(path: Path):
    if path.suffix == ".zip":  # per-video <video_id>_caption.json files
        with open_archive((str(path),)) as zf:
            for info in zf.infolist():
                if info.is_dir() or not info.filename.endswith(".json"):
                    continue
                where = f"{path.name}:{info.filename}"
                try:
                    obj = json.loads(zf.read(info))
                except (json.JSONDecodeError, UnicodeDecodeError, zipfile.BadZipFile) as e:
                    obj = Reject(MALFORMED_ROW, f"not JSON: {e}")
                yield from _vript_clips(obj, where)
        return
    for n, obj in _json_lines(path):
        yield from _vript_clips(obj, f"{path.name}:{n}")


def _vript_clips(obj, where: str):
    """One JSONL line (one clip) or one per-video JSON ({meta, data: {clip_id: clip}}) -> rows."""
    if isinstance(obj, Reject):
        yield "", where, "", "", obj
        return
    if isinstance(obj, dict) and isinstance(obj.get("data"), dict):
        for key, clip in obj["data"].items():
            yield _vript_clip(clip, f"{where}[{key}]", key)
        return
    yield _vript_clip(obj, where, "")


def _vript_clip(clip, where: str, key: str):
    cid = clip.get("clip_id", key) if isinstance(clip, dict) else key
    cid = cid.strip() if isinstance(cid, str) else ""
    cap = clip.get("caption") if isinstance(clip, dict) else None
    if not cid or not isinstance(cap, dict):
        return cid, where, "", "", Reject(MALFORMED_ROW, "a clip needs a clip_id and a caption object")
    content, title = cap.get("content"), cap.get("scene_title")
    if not isinstance(content, str) or not content.strip():
        return cid, where, "", "", Reject(EMPTY_CAPTION, "empty caption content")
    title = title.strip() if isinstance(title, str) else ""
    text = f"{title}: {content.strip()}" if title else content.strip()
    return cid, where, text, f"{cid}.mp4", None


def _sharegpt4video_rows(path: Path):
    for n, obj in _json_lines(path):
        where = f"{path.name}:{n}"
        if isinstance(obj, Reject):
            yield "", where, "", "", obj
            continue
        vid = obj.get("video_id") if isinstance(obj, dict) else None
        vid = vid.strip() if isinstance(vid, str) else ""
        caps = obj.get("captions") if isinstance(obj, dict) else None
        if not vid or not isinstance(caps, list) or not all(isinstance(c, dict) for c in caps):
            yield vid, where, "", "", Reject(MALFORMED_ROW, "a video needs a video_id and a captions list")
            continue
        whole = next((c.get("content") for c in caps if str(c.get("idx")) == "-1"), None)
        if not isinstance(whole, str) or not whole.strip():
            yield vid, where, "", "", Reject(EMPTY_CAPTION, "no whole-video caption (captions entry with idx -1)")
            continue
        video_path = obj.get("video_path")
        name = os.path.basename(video_path) if isinstance(video_path, str) and video_path.strip() else f"{vid}.mp4"
        yield vid, where, whole.strip(), name, None
