"""Readers for the upstream formats: a folder as downloaded -> a plan of sample references.

``check_layout(dataset, root)`` comes first (``jobs/preprocess.py`` calls it before Ray starts):
the annotation files and their columns (CSV header, parquet footer, a JSONL file's first line)
or a ``LayoutError`` saying what was expected and the next step.

Planning runs in the driver and touches only metadata (CSV/JSON rows, parquet footers, JSONL
line offsets, a directory scan); heavy work (decoding, tokenizing) happens in Ray tasks via
``load_record``.  Each reference (``ref``) is a small JSON-able dict with a stable ``id``;
rows that are malformed already at this stage become reject records.

Layouts accepted (what the public downloads look like):

    webvid/     results*.csv with columns videoid, contentUrl, duration, page_dir, name
                videos/<page_dir>/<videoid>.<ext> (or videos/<videoid>.<ext>), or the file a
                local contentUrl names (``videos/a.avi``, relative to the CSV's folder; an
                absolute path; ``file://``); ``duration`` (ISO 8601 or seconds) is checked
                against the file's own length (video.py ``LengthClaims``)
    cauldron/   <subset>/*.parquet with columns images (list of {bytes, path} structs or
                of raw bytes) and texts (list of {user, assistant, source}); one sample per
                row = first image + last turn (DESIGN.md 3.1)
    smoltalk/   **/*.parquet and/or **/*.jsonl, column/field ``messages`` = list of
                {role, content}; one sample per row = last user turn + the assistant reply
    video_sft/  *.json (LLaVA-Video-178K style): list of {id, video, conversations:
                [{from: human|gpt, value}], data_source?}; videos under the folder or
                videos/; one sample per entry = last human/gpt pair, "<image>"/"<video>"
                placeholders removed
    openvid/, vript/ (vript_long, vript_short), sharegpt4video/: video-caption sets whose
                videos lie in zip archives (``video_caption_sets``: layouts and sources)
"""

from __future__ import annotations

import csv
import fnmatch
import functools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from fovea.pipelines import video_caption_sets as caption_sets
from fovea.pipelines.errors import (
    DUPLICATE_ID, EMPTY_CAPTION, MALFORMED_ROW, MISSING_FILE, NO_IMAGE, Reject, reject_record,
)
from fovea.pipelines.zip_members import VIDEO_EXTS

DATASETS = ("webvid", "cauldron", "smoltalk", "video_sft", *caption_sets.CAPTION_SETS)
VISUAL = {"webvid": "video", "video_sft": "video", "cauldron": "image", "smoltalk": None,
          **dict.fromkeys(caption_sets.CAPTION_SETS, "video")}
RAW_FOLDER = caption_sets.RAW_FOLDER  # dataset -> its folder under data/demo/raw when the names differ
WEBVID_COLUMNS = ("videoid", "contentUrl", "duration", "page_dir", "name")


@dataclass
class Plan:
    """Sample references in input order, plus the rows rejected while planning."""

    dataset: str
    refs: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)  # input files, for messages

    @property
    def read(self) -> int:
        return len(self.refs) + len(self.rejects)


class LayoutError(FileNotFoundError, ValueError):
    """An input folder that is not in its dataset's upstream layout: what was expected, what is
    there, and the next step."""


LAYOUTS = {
    "webvid": "results*.csv with columns videoid, contentUrl, duration, page_dir, name, and the videos in "
              "videos/<page_dir>/<videoid>.mp4 (or where a local contentUrl points)",
    "cauldron": "<subset>/*.parquet with columns images and texts (HuggingFaceM4/the_cauldron)",
    "smoltalk": "*.parquet or *.jsonl (in any subfolder) with a messages column (HuggingFaceTB/smoltalk)",
    "video_sft": "*.json lists of {id, video, conversations} with the videos beside them or in videos/ "
                 "(lmms-lab/LLaVA-Video-178K)",
    **caption_sets.LAYOUTS,
}
LAYOUT_FILES = {"webvid": ("results*.csv",), "cauldron": ("*.parquet",), "smoltalk": ("*.parquet", "*.jsonl"),
                "video_sft": ("*.json",), **caption_sets.LAYOUT_FILES}


def _first_files(root: Path, patterns: tuple[str, ...], n: int = 64) -> list[Path]:
    """Up to ``n`` files matching ``patterns`` (hidden ones skipped), top folders first: stops
    early in a large download whose annotation files sit near its top."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames)
                if not f.startswith(".") and any(fnmatch.fnmatch(f, pat) for pat in patterns)]
        if len(out) >= n:
            break
    return out[:n]


def _has_columns(path: Path, columns: tuple[str, ...]) -> bool:
    """A CSV header, a parquet footer or a JSONL file's first record names ``columns``."""
    try:
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8", errors="replace") as f:
                have = next(csv.reader(f), [])
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq

            have = pq.read_schema(path).names
        else:
            with open(path, "rb") as f:
                line = next((ln for ln in f if ln.strip()), b"{}")
            row = json.loads(line)
            have = list(row) if isinstance(row, dict) else []
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return all(c in have for c in columns)


def layout_problem(dataset: str, root: Path) -> str | None:
    """What keeps ``root`` from being ``dataset``'s upstream layout, or None (files and their
    columns only: rows, videos and images are checked, and rejected one by one, later)."""
    if dataset in caption_sets.CAPTION_SETS:
        return caption_sets.layout_problem(dataset, root)
    files = _first_files(root, LAYOUT_FILES[dataset])
    if not files:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if not p.name.startswith("."))
        there = f"it has {', '.join(entries[:6])}{', ...' if len(entries) > 6 else ''}" if entries else "it is empty"
        return f"no {' or '.join(LAYOUT_FILES[dataset])} file in it ({there})"
    need = {"webvid": ("videoid", "name"), "cauldron": ("images", "texts"), "smoltalk": ("messages",)}.get(dataset)
    if need and not any(_has_columns(f, need) for f in files if f.suffix != ".json"):
        return f"none of its {' / '.join(LAYOUT_FILES[dataset])} files has the columns {', '.join(need)} (first: {files[0]})"
    return None


def check_layout(dataset: str, root: str | Path) -> None:
    """Before any work (``jobs/preprocess.py`` calls it before Ray starts): ``LayoutError`` when
    ``root`` is missing or not in ``dataset``'s upstream layout."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    root = Path(root)
    problem = "does not exist" if not root.exists() else "is not a folder" if not root.is_dir() else None
    if problem is None:
        problem = layout_problem(dataset, root)
        problem = problem and f"is not in the upstream layout: {problem}"
    if problem:
        raise LayoutError(
            f"{dataset} input folder {root} {problem}; expected {LAYOUTS[dataset]}. Point --input at the "
            f"folder as downloaded (`make sample-data` writes an example of each layout under data/demo/raw/)")


def plan_dataset(dataset: str, root: str | Path) -> Plan:
    """Dispatch by dataset name; ``check_layout`` first (an unknown name, a missing folder or one
    not in the upstream layout)."""
    check_layout(dataset, root)
    root = Path(root)
    if dataset in caption_sets.CAPTION_SETS:
        plan = Plan(dataset)
        caption_sets.plan_caption_set(dataset, root, plan)
    else:
        plan = {"webvid": plan_webvid, "cauldron": plan_cauldron, "smoltalk": plan_smoltalk,
                "video_sft": plan_video_sft}[dataset](root)
    return _dedupe(plan)


def _dedupe(plan: Plan) -> Plan:
    seen: set[str] = set()
    refs = []
    for r in plan.refs:
        if r["id"] in seen:
            plan.rejects.append(reject_record(plan.dataset, r["id"], DUPLICATE_ID, "id seen earlier", r.get("where", "")))
        else:
            seen.add(r["id"])
            refs.append(r)
    plan.refs = refs
    return plan


def _fingerprint(p: Path) -> list[int]:
    st = p.stat()
    return [st.st_size, st.st_mtime_ns]


def _files(root: Path, pattern: str, what: str) -> list[Path]:
    files = sorted(p for p in root.rglob(pattern) if p.is_file() and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"no {what} ({pattern}) under {root}")
    return files


# -- WebVid -----------------------------------------------------------------------------

def _video_index(folder: Path) -> dict[str, Path]:
    """'<page_dir>/<stem>' and '<stem>' -> path, from one scan of the videos folder."""
    index: dict[str, Path] = {}
    if not folder.is_dir():
        return index
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.suffix.lower() not in VIDEO_EXTS:
                continue
            rel = p.relative_to(folder)
            index.setdefault(str(rel.with_suffix("")), p)
            index.setdefault(p.stem, p)
    return index


ISO_DURATION = re.compile(r"^P(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def listed_seconds(text: str | None) -> float | None:
    """A WebVid ``duration`` cell -> seconds: ISO 8601 (``PT00H00M05S``) or plain seconds; None if
    neither (the listing's length is one claim among several, never a reason to reject a row)."""
    text = (text or "").strip().upper()
    m = ISO_DURATION.match(text)
    if m and text not in ("P", "PT"):
        h, mi, sec = (float(x) if x else 0.0 for x in m.groups())
        return h * 3600 + mi * 60 + sec
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) and v > 0 else None


def local_content_path(url: str | None, csv_dir: Path) -> Path | None:
    """A ``contentUrl`` that names a local file (a path, relative to the CSV's folder, or a
    ``file://`` URL) -> that path; None for a remote URL or an empty cell."""
    url = (url or "").strip()
    if not url:
        return None
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # http(s), s3, ...: the download layout applies
        return None
    p = Path(url).expanduser()
    return p if p.is_absolute() else csv_dir / p


def _webvid_video(row: dict, vid: str, videos: dict[str, Path], csv_path: Path) -> Path | None:
    """The row's file: a local ``contentUrl`` first, then videos/<page_dir>/<videoid>.*, videos/<videoid>.*."""
    local = local_content_path(row.get("contentUrl"), csv_path.parent)
    if local is not None and local.is_file():
        return local
    page = (row.get("page_dir") or "").strip()
    path = videos.get(f"{page}/{vid}") if page else None
    return path or videos.get(vid)


def _missing_video(row: dict, vid: str, root: Path, csv_path: Path) -> str:
    local = local_content_path(row.get("contentUrl"), csv_path.parent)
    where = f"no video {vid}.* under {root / 'videos'}"
    return where + (f", and contentUrl {row.get('contentUrl')!r} is no file ({local})" if local else "")


def plan_webvid(root: Path) -> Plan:
    plan = Plan("webvid")
    videos = _video_index(root / "videos")
    for csv_path in _files(root, "results*.csv", "WebVid results CSV"):
        plan.inputs.append(str(csv_path))
        with open(csv_path, newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.DictReader(f)
            missing_cols = [c for c in ("videoid", "name") if c not in (reader.fieldnames or [])]
            if missing_cols:
                raise ValueError(f"{csv_path}: missing columns {missing_cols} (have {reader.fieldnames})")
            for i, row in enumerate(reader):
                where = f"{csv_path.name}:{i + 2}"  # line number (header = 1)
                vid = (row.get("videoid") or "").strip()
                if None in row or any(row.get(c) is None for c in WEBVID_COLUMNS if c in reader.fieldnames):
                    plan.rejects.append(reject_record("webvid", vid or where, MALFORMED_ROW,
                                                      "wrong number of columns", where))
                    continue
                if not vid:
                    plan.rejects.append(reject_record("webvid", where, MALFORMED_ROW, "empty videoid", where))
                    continue
                path = _webvid_video(row, vid, videos, csv_path)
                if path is None:
                    plan.rejects.append(reject_record("webvid", vid, MISSING_FILE,
                                                      _missing_video(row, vid, root, csv_path), where))
                    continue
                plan.refs.append({"id": vid, "where": where, "video": str(path), "fp": _fingerprint(path),
                                  "caption": row.get("name") or "", "source": "webvid",
                                  "listed_s": listed_seconds(row.get("duration"))})
    return plan


# -- The Cauldron -------------------------------------------------------------------------

def _parquet_refs(plan: Plan, root: Path, files: list[Path], id_prefix) -> None:
    import pyarrow.parquet as pq

    for p in files:
        plan.inputs.append(str(p))
        fp = _fingerprint(p)
        md = pq.ParquetFile(p).metadata
        row = 0
        for rg in range(md.num_row_groups):
            for j in range(md.row_group(rg).num_rows):
                plan.refs.append({"id": f"{id_prefix(p)}:{row}", "where": f"{p.relative_to(root)}:{row}",
                                  "file": str(p), "fp": fp, "rg": rg, "row": j})
                row += 1


def plan_cauldron(root: Path) -> Plan:
    plan = Plan("cauldron")
    files = _files(root, "*.parquet", "Cauldron parquet files")

    def prefix(p: Path) -> str:
        subset = p.parent.name if p.parent != root else p.stem.split("-")[0]
        return f"{subset}/{p.stem}"

    _parquet_refs(plan, root, files, prefix)
    for r in plan.refs:
        r["subset"] = r["id"].split("/")[0]
    return plan


# -- SmolTalk -----------------------------------------------------------------------------

def plan_smoltalk(root: Path) -> Plan:
    plan = Plan("smoltalk")
    parquet = sorted(root.rglob("*.parquet"))
    jsonl = sorted(root.rglob("*.jsonl"))
    if not parquet and not jsonl:
        raise FileNotFoundError(f"no SmolTalk parquet or JSONL files under {root}")
    _parquet_refs(plan, root, parquet, lambda p: str(p.relative_to(root)))
    for p in jsonl:
        plan.inputs.append(str(p))
        fp = _fingerprint(p)
        rel = str(p.relative_to(root))
        with open(p, "rb") as f:
            offset, line_no = 0, 0
            for line in f:
                line_no += 1
                if line.strip():
                    plan.refs.append({"id": f"{rel}:{line_no}", "where": f"{rel}:{line_no}",
                                      "file": str(p), "fp": fp, "offset": offset})
                offset += len(line)
    return plan


# -- video SFT (LLaVA-Video-178K style) ------------------------------------------------------

PLACEHOLDER = re.compile(r"<(image|video)>\s*")


def last_pair(conversations) -> tuple[str, str]:
    """[{from, value}] -> (user, assistant) of the last human turn followed by a gpt turn."""
    if not isinstance(conversations, list) or not conversations:
        raise Reject(MALFORMED_ROW, "conversations is not a non-empty list")
    if not all(isinstance(t, dict) for t in conversations):
        raise Reject(MALFORMED_ROW, "conversation turn is not an object")
    user, answer = _last_exchange(conversations, "from", "value", ("human", "user"), ("gpt", "assistant"),
                                  "no human turn followed by a gpt turn", "turn value is not a string")
    return PLACEHOLDER.sub("", user).strip(), answer.strip()


def _last_exchange(turns: list[dict], role_key: str, text_key: str, user_roles, answer_roles,
                   missing: str, not_text: str) -> tuple[str, str]:
    """(user, answer) texts of the last user turn directly followed by an answer turn."""
    pair = None
    for a, b in zip(turns, turns[1:]):
        if a.get(role_key) in user_roles and b.get(role_key) in answer_roles:
            pair = (a.get(text_key), b.get(text_key))
    if pair is None:
        raise Reject(MALFORMED_ROW, missing)
    user, answer = pair
    if not isinstance(user, str) or not isinstance(answer, str):
        raise Reject(MALFORMED_ROW, not_text)
    return user, answer


def plan_video_sft(root: Path) -> Plan:
    plan = Plan("video_sft")
    for jp in _files(root, "*.json", "video SFT JSON"):
        plan.inputs.append(str(jp))
        try:
            entries = json.loads(jp.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            plan.rejects.append(reject_record("video_sft", str(jp.name), MALFORMED_ROW, f"not JSON: {e}", str(jp)))
            continue
        if not isinstance(entries, list):
            plan.rejects.append(reject_record("video_sft", jp.name, MALFORMED_ROW, "top level is not a list", str(jp)))
            continue
        for i, e in enumerate(entries):
            where = f"{jp.name}[{i}]"
            sid = str(e.get("id", "")).strip() if isinstance(e, dict) else ""
            try:
                if not sid or not isinstance(e.get("video"), str) or not e["video"].strip():
                    raise Reject(MALFORMED_ROW, "entry needs a non-empty id and video")
                user, answer = last_pair(e.get("conversations"))
            except Reject as r:
                plan.rejects.append(reject_record("video_sft", sid or where, r.reason, r.detail, where))
                continue
            cands = [root / e["video"], root / "videos" / e["video"]]
            path = next((c for c in cands if c.is_file()), None)
            if path is None:
                plan.rejects.append(reject_record("video_sft", sid, MISSING_FILE, f"{e['video']} not under {root}", where))
                continue
            src = e.get("data_source") or "llava_video"
            plan.refs.append({"id": sid, "where": where, "video": str(path), "fp": _fingerprint(path),
                              "user": user, "answer": answer, "source": f"video_sft/{src}"})
    return plan


# -- loading one record (runs in Ray tasks) ---------------------------------------------------

@functools.lru_cache(maxsize=2)
def _row_group(file: str, rg: int, fp: tuple):
    import pyarrow.parquet as pq

    return pq.ParquetFile(file).read_row_group(rg).to_pylist()


def _parquet_row(ref: dict) -> dict:
    return _row_group(ref["file"], ref["rg"], tuple(ref["fp"]))[ref["row"]]


def _image_bytes(item) -> bytes:
    if isinstance(item, dict):
        item = item.get("bytes")
    if not isinstance(item, (bytes, bytearray)) or not item:
        raise Reject(NO_IMAGE, "image entry has no bytes")
    return bytes(item)


def load_record(dataset: str, ref: dict) -> dict:
    """ref -> {"source", "user", "assistant", "video": path | ZipMember | None, "image": bytes | None}.

    Raises ``Reject`` for malformed rows; media are validated later, by ``video.py``.
    """
    if dataset in caption_sets.CAPTION_SETS:
        return caption_sets.load_caption_record(ref)
    if dataset == "webvid":
        return {"source": "webvid", "user": "", "assistant": ref["caption"], "video": ref["video"], "image": None,
                "listed_s": ref.get("listed_s")}
    if dataset == "video_sft":
        return {"source": ref["source"], "user": ref["user"], "assistant": ref["answer"],
                "video": ref["video"], "image": None}
    if dataset == "cauldron":
        row = _parquet_row(ref)
        images, texts = row.get("images"), row.get("texts")
        if not isinstance(texts, list) or not texts or not isinstance(texts[-1], dict):
            raise Reject(MALFORMED_ROW, "texts is not a non-empty list of {user, assistant}")
        if not isinstance(images, list) or not images:
            raise Reject(NO_IMAGE, "images is empty")
        turn = texts[-1]
        return {"source": f"cauldron/{ref['subset']}", "user": turn.get("user") or "",
                "assistant": turn.get("assistant") or "", "video": None, "image": _image_bytes(images[0])}
    if dataset == "smoltalk":
        if "offset" in ref:
            with open(ref["file"], "rb") as f:
                f.seek(ref["offset"])
                line = f.readline()
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise Reject(MALFORMED_ROW, f"not JSON: {e}") from None
        else:
            row = _parquet_row(ref)
        if not isinstance(row, dict):
            raise Reject(MALFORMED_ROW, "row is not an object")
        user, answer = _last_chat_turn(row.get("messages"))
        src = row.get("source")
        return {"source": f"smoltalk/{src}" if src else "smoltalk", "user": user, "assistant": answer,
                "video": None, "image": None}
    raise ValueError(f"unknown dataset {dataset!r}")


def _last_chat_turn(msgs) -> tuple[str, str]:
    if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
        raise Reject(MALFORMED_ROW, "messages is not a list of {role, content}")
    user, answer = _last_exchange(msgs, "role", "content", ("user",), ("assistant",),
                                  "no user turn followed by an assistant turn", "message content is not a string")
    if not answer.strip():
        raise Reject(EMPTY_CAPTION, "empty assistant message")
    return user, answer
