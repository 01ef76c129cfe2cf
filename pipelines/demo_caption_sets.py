"""Sample data for the video-caption sets (``make sample-data``): OpenVid-1M, Vript and
ShareGPT4Video in their download layouts (``video_caption_sets``), the videos in zip archives.

The clips are the WebVid sample clips (``demo_datasets``: real encoded video, written first),
copied into the archives, so these sets cost a few zip writes and no encoding:

    openvid/         data/train/OpenVid-1M.csv; OpenVid_part0.zip (stored) and OpenVid_part1
                     as the byte pieces OpenVid_part1_partaa / _partab (deflated)
    vript/           vript_captions/vript_long_videos_captions.jsonl (one clip a line) and
                     vript_short_videos_captions.zip (per-video JSON); vript_{long,short}_videos_clips/
                     *.zip holding <video_id>/<clip_id>.mp4
    sharegpt4video/  sharegpt4video_40k.jsonl; zip_folder/panda/panda_videos_1.zip and
                     zip_folder/mixit/mixkit_videos.zip

Each set has deliberately broken entries (a member missing from every archive, an empty
caption, a truncated clip, bytes that are no video, a malformed row, a repeated id); the
catalog lists the reject each must give.  The narrations are the WebVid captions of the same
clips; shot type and camera movement are filled in only where the clip's making states them
(the photo pans and zooms).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

CATALOG_SETS = ("openvid", "vript_long", "vript_short", "sharegpt4video")  # catalog keys (datasets)
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # member timestamps: the same clips give byte-identical archives
OPENVID_HEADER = ["video", "caption", "aesthetic score", "motion score", "temporal consistency score",
                  "camera motion", "frame", "fps", "seconds"]
CAMERA = {"pan_lr": "pan right", "pan_rl": "pan left", "zoom_in": "zoom in", "zoom_out": "zoom out",
          "tilt_down": "tilt down"}


def write_zip(path: Path, members: dict[str, bytes], deflate: bool = False) -> Path:
    """A zip of ``members`` (name -> bytes) in the given order, with fixed timestamps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=FIXED_TIME), data, compress_type=kind)
    return path


def _camera(clip: str) -> str:
    """A photo clip's camera movement (how it was made); unknown for the filmed clips."""
    motion = next((m for m in CAMERA if clip.endswith(m)), None)
    return CAMERA[motion] if motion else "unknown"


def write_caption_sets(raw: Path, clips: dict[str, dict], bad: dict[str, bytes], cat: dict) -> None:
    """Write openvid/, vript/ and sharegpt4video/ under ``raw``, filling ``cat``.  ``clips``: sample
    clip name -> {path, caption, fps, frames, duration} (at least ``clips_used()``); ``bad``: the
    bytes of a truncated video and of no video (``truncated``, ``garbage``)."""
    media = {name: Path(clips[name]["path"]).read_bytes() for name in clips_used()}
    _openvid(raw / "openvid", clips, media, bad, cat)
    _vript(raw / "vript", clips, media, bad, cat)
    _sharegpt4video(raw / "sharegpt4video", clips, media, bad, cat)


def clips_used() -> set[str]:
    """The WebVid sample clips these sets are made of."""
    return ({c for c, _ in OPENVID_CLIPS} | {c for _, c in SHAREGPT4VIDEO_CLIPS}
            | {c for v in (*VRIPT_LONG.values(), *VRIPT_SHORT.values()) for _, c, _ in v}
            | {"bunny_stretch", "bikes_opening", "bunny_emerge"})


# -- OpenVid-1M ----------------------------------------------------------------------------------

OPENVID_CLIPS = [("bikes_suit_taxi", 0), ("carphone_full", 0), ("bunny_emerge", 0),
                 ("coffee_pan_rl", 1), ("bikes_walker", 1), ("astronaut_zoom_in", 1)]


def _openvid(root: Path, clips: dict, media: dict, bad: dict, cat: dict) -> None:
    name = "fovea_demo_{}.mp4".format
    part0 = {name(c): media[c] for c, part in OPENVID_CLIPS if part == 0}
    part0[name("truncated")] = bad["truncated"]
    part0[name("bunny_stretch")] = media["bunny_stretch"]  # its row's caption is empty
    part1 = {f"OpenVid_part1/{name(c)}": media[c] for c, part in OPENVID_CLIPS if part == 1}
    part1[f"OpenVid_part1/{name('garbage')}"] = bad["garbage"]
    write_zip(root / "OpenVid_part0.zip", part0)
    joined = write_zip(root / "OpenVid_part1.zip", part1, deflate=True).read_bytes()
    (root / "OpenVid_part1_partaa").write_bytes(joined[: len(joined) // 2])  # as the card ships >50 GB parts
    (root / "OpenVid_part1_partab").write_bytes(joined[len(joined) // 2:])
    (root / "OpenVid_part1.zip").unlink()

    def row(clip: str, caption: str, vid: str | None = None) -> list:  # the scores are made up (unused)
        c = clips[clip]
        return [vid or name(clip), caption, "5.31", "0.92", "0.98", _camera(clip), c["frames"], c["fps"],
                round(c["duration"], 3)]

    rows = [row(c, clips[c]["caption"]) for c, _ in OPENVID_CLIPS]
    for c, _ in OPENVID_CLIPS:
        cat["openvid"].append({"id": name(c), "clip": c, "caption": clips[c]["caption"]})
    rows += [row("bikes_opening", "A clip that is in no downloaded part.", name("never_downloaded")),
             row("bunny_stretch", "  "),
             row("bikes_walker", "Street scenes whose file was cut short.", name("truncated")),
             row("bunny_emerge", "Bytes that are no video.", name("garbage")),
             row("bikes_suit_taxi", "The first clip again, listed twice.")]
    expected = [(name("never_downloaded"), "missing_file"), (name("bunny_stretch"), "empty_caption"),
                (name("truncated"), "truncated_video"), (name("garbage"), "unreadable_video"),
                (name("bikes_suit_taxi"), "duplicate_id"), (name("short_row"), "malformed_row")]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(OPENVID_HEADER)
    w.writerows(rows)
    buf.write(f"{name('short_row')},A row with too few columns.\n")
    (root / "data" / "train").mkdir(parents=True, exist_ok=True)
    (root / "data" / "train" / "OpenVid-1M.csv").write_text(buf.getvalue())
    cat["expected_rejects"]["openvid"] += [{"id": i, "reason": r} for i, r in expected]


# -- Vript ---------------------------------------------------------------------------------------

# video id -> [(scene number, sample clip, scene title)]; long videos in JSONL, short ones in the zip
VRIPT_LONG = {"fvDemoStreet": [(1, "bikes_suit_taxi", "Parked cars and a taxi"),
                               (2, "bikes_cyclist", "A cyclist behind a grey van"),
                               (3, "bikes_walker", "A walk past a locked bicycle")],
              "fvDemoAstronaut": [(1, "astronaut_pan_lr", "Astronaut portrait"),
                                  (2, "astronaut_zoom_in", "Closer on the astronaut")]}
VRIPT_SHORT = {"fvDemoCar_0": [(1, "carphone_full", "Talking in the car"),
                               (2, "carphone_mirrored", "The same, mirrored")]}


def _scene(vid: str, n: int, clip: str | None, title: str, content: str | None) -> dict:
    return {"video_id": vid, "clip_id": f"{vid}-Scene-{n:03d}", "video_title": f"Fovea demo {vid}",
            "caption": {"shot_type": "unknown", "camera_movement": _camera(clip or ""), "content": content,
                        "scene_title": title},
            "voiceover": []}


def _vript_videos(videos: dict, clips: dict, media: dict, cat_key: str, cat: dict):
    """(scenes by video, clip archive members) of the good scenes of ``videos``."""
    scenes, members = {}, {}
    for vid, items in videos.items():
        for n, clip, title in items:
            s = _scene(vid, n, clip, title, clips[clip]["caption"])
            scenes.setdefault(vid, []).append(s)
            members[f"{vid}/{s['clip_id']}.mp4"] = media[clip]
            cat[cat_key].append({"id": s["clip_id"], "clip": clip,
                                 "caption": f"{title}: {clips[clip]['caption']}"})
        members[f"{vid}/{vid}_cut_meta.json"] = json.dumps({"video_id": vid, "num_clips": len(items)}).encode()
    return scenes, members


def _vript(root: Path, clips: dict, media: dict, bad: dict, cat: dict) -> None:
    scenes, members = _vript_videos(VRIPT_LONG, clips, media, "vript_long", cat)
    extra = [_scene("fvDemoStreet", 4, None, "A scene never cut", "A street scene whose clip is in no archive."),
             _scene("fvDemoStreet", 5, "bikes_opening", "No narration", "   "),
             _scene("fvDemoStreet", 6, None, "Cut short", "Street scenes from a clip that was cut short.")]
    members["fvDemoStreet/fvDemoStreet-Scene-005.mp4"] = media["bikes_opening"]
    members["fvDemoStreet/fvDemoStreet-Scene-006.mp4"] = bad["truncated"]
    write_zip(root / "vript_long_videos_clips" / "clips_1_of_1.zip", members)
    lines = [json.dumps(s) for v in scenes.values() for s in v] + [json.dumps(s) for s in extra]
    lines.append('{"clip_id": "fvDemoStreet-Scene-007", "caption": {"content": "unterminated')
    (root / "vript_captions").mkdir(parents=True, exist_ok=True)
    (root / "vript_captions" / "vript_long_videos_captions.jsonl").write_text("\n".join(lines) + "\n")
    cat["expected_rejects"]["vript_long"] += [
        {"id": "fvDemoStreet-Scene-004", "reason": "missing_file"},
        {"id": "fvDemoStreet-Scene-005", "reason": "empty_caption"},
        {"id": "fvDemoStreet-Scene-006", "reason": "truncated_video"},
        {"id": f"vript_long_videos_captions.jsonl:{len(lines)}", "reason": "malformed_row"}]

    scenes, members = _vript_videos(VRIPT_SHORT, clips, media, "vript_short", cat)
    scenes["fvDemoCar_0"].append(_scene("fvDemoCar_0", 3, None, "Not cut", "A scene with no clip."))
    write_zip(root / "vript_short_videos_clips" / "shorts_clips_1_of_1.zip", members)
    per_video = {f"{vid}_caption.json": json.dumps({
        "meta": {"video_id": vid, "video_title": f"Fovea demo {vid}", "num_clips": len(v), "integrity": True},
        "data": {s["clip_id"]: s for s in v}}).encode() for vid, v in scenes.items()}
    write_zip(root / "vript_captions" / "vript_short_videos_captions.zip", per_video, deflate=True)
    cat["expected_rejects"]["vript_short"].append({"id": "fvDemoCar_0-Scene-003", "reason": "missing_file"})


# -- ShareGPT4Video ------------------------------------------------------------------------------

SHAREGPT4VIDEO_CLIPS = [("panda", "bikes_opening"), ("panda", "bunny_stretch"),
                        ("mixkit", "coffee_zoom_out"), ("mixkit", "chelsea_pan_lr")]


def _captions(whole: str | None) -> list[dict]:
    """Two keyframe captions, then the whole-video one (idx "-1") unless ``whole`` is None."""
    parts = [{"idx": "0", "content": "The first keyframe."}, {"idx": "1", "content": "The last keyframe."}]
    return parts + ([{"idx": "-1", "content": whole}] if whole is not None else [])


def _sharegpt4video(root: Path, clips: dict, media: dict, bad: dict, cat: dict) -> None:
    zips = {"panda": {}, "mixkit": {}}
    lines = []
    for source, clip in SHAREGPT4VIDEO_CLIPS:
        vid = f"fvdemo_{clip}"
        folder = "panda_videos_1.zip" if source == "panda" else "mixkit_videos.zip"
        zips[source][(f"{vid}.mp4" if source == "panda" else f"mixkit_videos/{vid}.mp4")] = media[clip]
        lines.append({"video_id": vid, "video_path": f"{source}/{vid}.mp4", "zip_folder": folder,
                      "timestamp": [0.5, round(clips[clip]["duration"] - 0.5, 3)], "keyframe": [0, 1],
                      "captions": _captions(clips[clip]["caption"])})
        cat["sharegpt4video"].append({"id": vid, "clip": clip, "caption": clips[clip]["caption"]})
    zips["panda"]["fvdemo_garbage.mp4"] = bad["garbage"]
    zips["panda"]["fvdemo_no_whole_caption.mp4"] = media["bunny_emerge"]
    broken = [({"video_id": "fvdemo_never_downloaded", "zip_folder": "panda_videos_1.zip",
                "captions": _captions("A video that is in no archive.")}, "missing_file"),
              ({"video_id": "fvdemo_no_whole_caption", "zip_folder": "panda_videos_1.zip",
                "captions": _captions(None)}, "empty_caption"),
              ({"video_id": "fvdemo_garbage", "zip_folder": "panda_videos_1.zip",
                "captions": _captions("Bytes that are no video.")}, "unreadable_video"),
              ({**lines[0], "captions": _captions("The first video again.")}, "duplicate_id")]
    for entry, reason in broken:
        lines.append(entry)
        cat["expected_rejects"]["sharegpt4video"].append({"id": entry["video_id"], "reason": reason})
    write_zip(root / "zip_folder" / "panda" / "panda_videos_1.zip", zips["panda"])
    write_zip(root / "zip_folder" / "mixit" / "mixkit_videos.zip", zips["mixkit"], deflate=True)
    (root / "sharegpt4video_40k.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
