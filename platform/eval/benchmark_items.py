"""Multiple-choice benchmark readers: Video-MME, MLVU, MVBench, ScienceQA (images).

Every reader turns the upstream annotation files into uniform ``MCQItem`` records; frames
are decoded later, one item at a time (``fovea.platform.eval.benchmark_frames.load_item_frames``),
so listing a benchmark is cheap.  Answers are matched to their options loosely (``option_letter``:
``'Yes.'`` is option ``yes``, ``(A) yes`` is A).  An annotation row that cannot become an item (an
answer that still matches none of its options, a missing field) is skipped and recorded as a
``MalformedItem`` naming its file and row; the others are read.  Local layouts, each hub dataset
as downloaded (``--benchmarks data/benchmarks``; ``huggingface-cli download --repo-type dataset
<id> --local-dir data/benchmarks/<name>``), in a folder named ``<name>`` or as the hub names it
(``Video-MME``, ``MVLU`` from ``git clone``, ``MVBench``, ``ScienceQA``: ``benchmark_folder``):

    data/benchmarks/videomme/   hub dataset lmms-lab/Video-MME
        videomme/test-00000-of-00001.parquet   (any *.parquet / *.json / *.jsonl below)
        data/<videoID>.mp4                     (videos_chunked_*.zip unpacked in place)
    data/benchmarks/mlvu/       hub dataset MLVU/MVLU (github.com/JUNJIE99/MLVU), dev split
        MLVU/json/1_plotQA.json ... 7_topic_reasoning.json  (8_sub_scene/9_summary: not MCQ, skipped)
        MLVU/video/1_plotQA/<video> ...                     (json/ and video/ without MLVU/ too)
                                hub dataset sy1998/MLVU_dev (what lmms-eval reads), instead:
        mlvu/test-00000-of-00001.parquet       (video_name, question + "(A) ..." lines, candidates,
                                                answer letter, task_type); its video zips unpacked below
    data/benchmarks/mvbench/    hub dataset OpenGVLab/MVBench
        json/<task>.json                       (action_sequence.json, ...)
        video/<source>/<video>                 (video/*.zip unpacked in place: star/Charades_v1_480/, ...)
    data/benchmarks/scienceqa/  hub dataset derek-thomas/ScienceQA (or lmms-lab/ScienceQA, whose
                                ScienceQA-IMG folder is used; or lupantech's problems.json + test/<id>/image.png)
        data/test-*.parquet                    (image questions of the test split are used)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".MP4", ".m4v")


class BenchmarkNotFound(FileNotFoundError):
    """A benchmark's annotation files (or videos) are not on disk; the message says what to get."""


@dataclass
class MalformedItem:
    """An annotation row that could not become an item: ``file[row]`` (0-based) and why."""
    file: str
    row: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}[{self.row}]: {self.reason}"


@dataclass
class MCQItem:
    id: str
    benchmark: str
    frames_source: Any  # video path (str) | image bytes | list of frame image paths
    source_kind: str  # "video" | "image" | "frames"
    question: str  # full user text: question + "\nA. ...\nB. ..."
    options: list[str]  # option texts without letters
    answer_letter: str
    category: str
    groups: dict[str, str] = field(default_factory=dict)  # extra breakdowns (domain, duration)
    bound: tuple[float, float] | None = None  # seconds (MVBench start/end)
    frames_fps: float = 3.0  # frame-folder sources: the rate the frames were dumped at


def format_question(question: str, options: list[str]) -> str:
    """The user text scored by the MCQ harness (options parsed back by ``mcq.parse_options``)."""
    lines = [question.strip()] + [f"{LETTERS[i]}. {str(o).strip()}" for i, o in enumerate(options)]
    return "\n".join(lines)


# -- benchmark registry ------------------------------------------------------------------

@dataclass
class BenchmarkSpec:
    name: str
    hub_id: str
    layout: str
    reader: Callable[..., list[MCQItem]]  # reader(folder, malformed: list) -> items
    media: str = ""  # where the videos / images go, for "no item could be scored"
    files: Callable[[Path], list[Path]] = lambda folder: []  # its annotation files, unread
    aliases: tuple[str, ...] = ()  # other folder names it downloads as (compared by ``folder_key``)
    short: str = ""  # the layout in one line, for the check before a run

    def missing(self, root: Path, what: str) -> BenchmarkNotFound:
        return BenchmarkNotFound(
            f"benchmark '{self.name}': {what} under {root}. Download the hub dataset "
            f"'{self.hub_id}' and lay it out as:\n{self.layout}")


def folder_key(name: str) -> str:
    """A folder name as matched against a benchmark's: ``Video-MME`` and ``videomme`` are one."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def benchmark_named(folder: Path) -> str | None:
    """The benchmark whose download ``folder`` is (by its name and its annotation files), or None."""
    return next((n for n, spec in BENCHMARKS.items()
                 if folder_key(folder.name) in {folder_key(n), *map(folder_key, spec.aliases)} and spec.files(folder)),
                None)


def benchmark_folder(root: str | Path, name: str) -> Path:
    """Where benchmark ``name`` is under ``root``: ``<root>/<name>``, or a folder named as its
    download is (``Video-MME``, ``MVBench``, ``MVLU`` from ``git clone .../MLVU/MVLU``), the
    first that holds its annotation files; ``<root>/<name>`` when none does."""
    root, spec = Path(root), BENCHMARKS[name]
    keys = {folder_key(name), *(folder_key(a) for a in spec.aliases)}
    cands = [root / name] + (sorted(d for d in root.iterdir() if d.is_dir() and folder_key(d.name) in keys
                                    and d.name != name) if root.is_dir() else [])
    return next((d for d in cands if d.is_dir() and spec.files(d)), root / name)


def find_benchmarks(root: str | Path) -> dict[str, Path]:
    """name -> folder of every benchmark whose annotation files are under ``root`` (none is read:
    cheap enough for the driver, before Ray starts)."""
    found = {name: benchmark_folder(root, name) for name in BENCHMARKS}
    return {name: d for name, d in found.items() if d.is_dir() and BENCHMARKS[name].files(d)}


def _find_files(root: Path, patterns: tuple[str, ...]) -> list[Path]:
    out: list[Path] = []
    for pat in patterns:
        out.extend(p for p in sorted(root.rglob(pat)) if p.is_file())
    return out


def _index_media(root: Path, exts: tuple[str, ...]) -> dict[str, Path]:
    """filename and stem -> path, for tolerant video look-ups."""
    idx: dict[str, Path] = {}
    if root.exists():
        for p in root.rglob("*"):
            if p.suffix in exts and p.is_file():
                idx.setdefault(p.name, p)
                idx.setdefault(p.stem, p)
    return idx


def _build_rows(f: Path, rows: list[dict[str, Any]], build: Callable[[int, dict], MCQItem | None],
                malformed: list[MalformedItem]) -> list[MCQItem]:
    """``build(row index, row)`` for every row of annotation file ``f``: None skips a row that is
    not a question of this benchmark; a row that fails is recorded in ``malformed``."""
    items = []
    for j, r in enumerate(rows):
        try:
            item = build(j, r)
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
            malformed.append(MalformedItem(str(f), j, f"{type(e).__name__}: {e}"))
            continue
        if item is not None:
            items.append(item)
    return items


def _read_table(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict(orient="records")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    data = json.loads(path.read_text())
    if isinstance(data, dict):
        for key in ("data", "questions", "annotations"):
            if isinstance(data.get(key), list):
                return data[key]
        return [dict(v, _key=k) for k, v in data.items() if isinstance(v, dict)]
    return list(data)


def _as_list(v: Any) -> list:
    if v is None:
        return []
    if isinstance(v, str):
        try:
            parsed = json.loads(v)
            return list(parsed) if isinstance(parsed, list) else [v]
        except json.JSONDecodeError:
            return [v]
    return list(v)


def _strip_letter(opt: str, i: int) -> str:
    s = str(opt).strip()
    for pre in (f"{LETTERS[i]}. ", f"{LETTERS[i]}.", f"({LETTERS[i]}) ", f"{LETTERS[i]}) "):
        if s.startswith(pre):
            return s[len(pre):].strip()
    return s


_LOOSE_TRIM = " \"'`"
_LOOSE_TAIL = " .,;:!?\"'`"
# a leading option letter: "A", "A.", "A)", "A:", "(A)", "[A]", then the option text or nothing
_LETTER_PREFIX = re.compile(r"^\s*(?:\(([A-Za-z])\)|\[([A-Za-z])\]|([A-Za-z])(?:[.):]|(?=\s|$)))\s*(.*)$", re.S)


def loose(text: Any) -> str:
    """An answer or option as compared loosely: case-folded, inner whitespace collapsed, without
    surrounding whitespace, quotes and trailing punctuation (``' Yes. '`` -> ``'yes'``)."""
    s = " ".join(str(text).split()).casefold()
    return s.strip(_LOOSE_TRIM).rstrip(_LOOSE_TAIL).strip(_LOOSE_TRIM)


def option_letter(answer: Any, options: list[str]) -> str:
    """Upstream answers are a letter, an index, or the option text.  Text is matched exactly
    first, then loosely (``loose``: ``'Yes.'`` is option ``'yes'``); then a leading letter
    (``A``, ``A.``, ``(A) yes``) counts when the text after it is empty or is that option's.
    Anything else matches no option: ValueError (the row is skipped and named)."""
    if isinstance(answer, (int, np.integer)) and not isinstance(answer, bool):
        if not 0 <= int(answer) < len(options):
            raise ValueError(f"answer index {int(answer)} is outside the {len(options)} options {options}")
        return LETTERS[int(answer)]
    a = str(answer).strip()
    for i, o in enumerate(options):
        if a == str(o).strip():
            return LETTERS[i]
    hits = [i for i, o in enumerate(options) if loose(o) == loose(a)]
    if len(hits) == 1:
        return LETTERS[hits[0]]
    m = _LETTER_PREFIX.match(a)
    if m:
        letter = next(g for g in m.groups()[:3] if g).upper()
        i = LETTERS.find(letter)
        if 0 <= i < len(options) and (not loose(m[4]) or loose(m[4]) == loose(options[i])):
            return letter
    raise ValueError(f"answer {answer!r} matches none of the options {options}" if not hits else
                     f"answer {answer!r} matches several of the options {options}")


# -- Video-MME --------------------------------------------------------------------------

def videomme_files(root: Path) -> list[Path]:
    return _find_files(root, ("*.parquet", "*.jsonl", "*.json"))


def read_videomme(root: Path, malformed: list[MalformedItem] | None = None) -> list[MCQItem]:
    spec = BENCHMARKS["videomme"]
    files = videomme_files(root)
    if not files:
        raise spec.missing(root, "no annotation file (*.parquet/*.json)")
    videos = _index_media(root, VIDEO_EXTS)
    malformed = malformed if malformed is not None else []

    def build(j: int, r: dict) -> MCQItem | None:
        if "question" not in r or "options" not in r:
            return None
        vid = str(r.get("videoID") or r.get("video_id"))
        opts = [_strip_letter(o, i) for i, o in enumerate(_as_list(r["options"]))]
        return MCQItem(
            id=f"videomme/{r.get('question_id', j)}", benchmark="videomme",
            frames_source=str(videos.get(vid, root / "data" / f"{vid}.mp4")), source_kind="video",
            question=format_question(str(r["question"]), opts), options=opts,
            answer_letter=option_letter(r["answer"], opts),
            category=str(r.get("task_type") or r.get("domain") or "all"),
            groups={k: str(r[k]) for k in ("domain", "duration", "sub_category") if r.get(k) is not None})

    return [it for f in files for it in _build_rows(f, _read_table(f), build, malformed)]


# -- MLVU -------------------------------------------------------------------------------

def mlvu_root(root: Path) -> Path:
    """The folder holding MLVU's json/ (and video/): the hub download's ``MLVU/`` inside
    ``root``, or ``root`` itself."""
    nested = sorted(p.parent for pat in ("*/json", "*/*/json") for p in root.glob(pat))
    for cand in (root, root / "MLVU", *nested):
        if (cand / "json").is_dir():
            return cand
    return root


def mlvu_files(root: Path) -> list[Path]:
    """MLVU's annotation files: ``json/<task>.json`` of the MLVU/MVLU download (in ``MLVU/``),
    else the parquet of sy1998/MLVU_dev (``mlvu/test-*.parquet``, what lmms-eval reads)."""
    base = mlvu_root(root)
    files = sorted((base / "json" if (base / "json").is_dir() else base).glob("*.json"))
    return files or sorted(p for pat in ("*.parquet", "*/*.parquet") for p in root.glob(pat) if p.is_file())


def read_mlvu(root: Path, malformed: list[MalformedItem] | None = None) -> list[MCQItem]:
    spec = BENCHMARKS["mlvu"]
    files = mlvu_files(root)
    if not files:
        raise spec.missing(root, "no MLVU/json/<task>.json nor mlvu/test-*.parquet annotation file")
    malformed = malformed if malformed is not None else []
    if files[0].suffix == ".parquet":
        return _mlvu_parquet_items(root, files, malformed)
    base = mlvu_root(root)
    videos = _index_media(base / "video" if (base / "video").is_dir() else base, VIDEO_EXTS)
    items = []
    for f in files:
        task = f.stem.split("_", 1)[1] if f.stem[:1].isdigit() and "_" in f.stem else f.stem

        def build(j: int, r: dict, f=f, task=task) -> MCQItem | None:
            if not r.get("candidates"):
                return None  # generation tasks (sub-scene captioning, summary)
            opts = [str(c) for c in _as_list(r["candidates"])]
            video = str(r["video"])
            path = next((p for p in (base / "video" / f.stem / video, base / "video" / task / video)
                         if p.exists()), videos.get(video, base / "video" / f.stem / video))
            return _mlvu_item(f"mlvu/{f.stem}/{j}", path, str(r["question"]), opts, r["answer"],
                              str(r.get("question_type") or task), r.get("duration"))

        items += _build_rows(f, _read_table(f), build, malformed)
    return items


def _mlvu_parquet_items(root: Path, files: list[Path], malformed: list[MalformedItem]) -> list[MCQItem]:
    """sy1998/MLVU_dev: one row per question (``video_name``, ``question`` with its options
    appended as ``(A) ...`` lines, ``candidates``, ``answer`` as a letter, ``task_type``); the
    videos where its zips were unpacked, found by their path or their file name."""
    videos = _index_media(root, VIDEO_EXTS)

    def build(j: int, r: dict) -> MCQItem | None:
        opts = [str(c) for c in _as_list(r.get("candidates"))]
        if not opts:
            return None
        name = str(r["video_name"])
        path = next((p for p in (root / name, root / "video" / name) if p.exists()),
                    videos.get(Path(name).name, root / name))
        task = str(r.get("task_type") or "all")
        return _mlvu_item(f"mlvu/{task}/{r.get('question_id', j)}", path, without_options(str(r["question"])),
                          opts, r["answer"], task, r.get("duration"))

    return [it for f in files for it in _build_rows(f, _read_table(f), build, malformed)]


def _mlvu_item(item_id: str, video: Path, question: str, opts: list[str], answer: Any, category: str,
               duration: Any) -> MCQItem:
    return MCQItem(id=item_id, benchmark="mlvu", frames_source=str(video), source_kind="video",
                   question=format_question(question, opts), options=opts,
                   answer_letter=option_letter(answer, opts), category=category,
                   groups={"duration": _duration_bucket(duration)} if _present(duration) else {})


def _present(v: Any) -> bool:
    """Not None and not NaN (pandas fills a parquet column's gaps with NaN)."""
    return v is not None and v == v


_OPTION_LINE = re.compile(r"^\s*(?:\([A-Z]\)|[A-Z][.)])\s")


def without_options(question: str) -> str:
    """A question whose text lists its options (``(A) ...`` / ``A. ...`` lines): the lines before
    them (``format_question`` lists the options again)."""
    lines = question.strip().splitlines()
    first = next((i for i, line in enumerate(lines) if i and _OPTION_LINE.match(line)), len(lines))
    return "\n".join(lines[:first]).strip()


def _duration_bucket(seconds: Any) -> str:
    """MLVU gives seconds; the table groups them (Video-MME's own short/medium/long are labels)."""
    s = float(seconds)
    return "< 3 min" if s < 180 else "3-10 min" if s < 600 else "10-30 min" if s < 1800 else ">= 30 min"


# -- MVBench ----------------------------------------------------------------------------

# json file -> (task name, video folder under video/, kind, has start/end bound); from the
# data_list of OpenGVLab/Ask-Anything video_chat2/mvbench.ipynb.
MVBENCH_TASKS = {
    "action_sequence": ("Action Sequence", "star/Charades_v1_480", "video", True),
    "action_prediction": ("Action Prediction", "star/Charades_v1_480", "video", True),
    "action_antonym": ("Action Antonym", "ssv2_video", "video", False),
    "fine_grained_action": ("Fine-grained Action", "Moments_in_Time_Raw/videos", "video", False),
    "unexpected_action": ("Unexpected Action", "FunQA_test/test", "video", False),
    "object_existence": ("Object Existence", "clevrer/video_validation", "video", False),
    "object_interaction": ("Object Interaction", "star/Charades_v1_480", "video", True),
    "object_shuffle": ("Object Shuffle", "perception/videos", "video", False),
    "moving_direction": ("Moving Direction", "clevrer/video_validation", "video", False),
    "action_localization": ("Action Localization", "sta/sta_video", "video", True),
    "scene_transition": ("Scene Transition", "scene_qa/video", "video", False),
    "action_count": ("Action Count", "perception/videos", "video", False),
    "moving_count": ("Moving Count", "clevrer/video_validation", "video", False),
    "moving_attribute": ("Moving Attribute", "clevrer/video_validation", "video", False),
    "state_change": ("State Change", "perception/videos", "video", False),
    "fine_grained_pose": ("Fine-grained Pose", "nturgbd", "video", False),
    "character_order": ("Character Order", "perception/videos", "video", False),
    "egocentric_navigation": ("Egocentric Navigation", "vlnqa", "video", False),
    "episodic_reasoning": ("Episodic Reasoning", "tvqa/frames_fps3_hq", "frames", True),
    "counterfactual_inference": ("Counterfactual Inference", "clevrer/video_validation", "video", False),
}


def mvbench_files(root: Path) -> list[Path]:
    """One annotation file per task, in json/ (or the folder itself)."""
    return sorted((root / "json" if (root / "json").is_dir() else root).glob("*.json"))


def read_mvbench(root: Path, malformed: list[MalformedItem] | None = None) -> list[MCQItem]:
    spec = BENCHMARKS["mvbench"]
    files = mvbench_files(root)
    if not files:
        raise spec.missing(root, "no json/<task>.json annotation files")
    vroot = root / "video" if (root / "video").is_dir() else root
    index: dict[str, dict[str, Path]] = {}  # built on the first video not at its usual place
    malformed = malformed if malformed is not None else []
    items = []
    for f in files:
        task, sub, kind, has_bound = MVBENCH_TASKS.get(f.stem, (f.stem, "", "video", True))

        def build(j: int, r: dict, f=f, task=task, sub=sub, kind=kind, has_bound=has_bound) -> MCQItem | None:
            opts = [str(c) for c in _as_list(r.get("candidates"))]
            if not opts:
                return None
            path = vroot / sub / str(r["video"])
            if kind == "video" and not path.exists():
                if "videos" not in index:
                    index["videos"] = _index_media(vroot, VIDEO_EXTS)
                # by name, then by stem (a source re-encoded since: nturgbd's .avi as .mp4)
                path = index["videos"].get(str(r["video"])) or index["videos"].get(Path(str(r["video"])).stem, path)
            bound = None
            if has_bound and r.get("start") is not None and r.get("end") is not None:
                bound = (float(r["start"]), float(r["end"]))
            return MCQItem(
                id=f"mvbench/{f.stem}/{j}", benchmark="mvbench", frames_source=str(path),
                source_kind=kind, question=format_question(str(r["question"]), opts), options=opts,
                answer_letter=option_letter(r["answer"], opts), category=task, bound=bound)

        items += _build_rows(f, _read_table(f), build, malformed)
    return items


# -- ScienceQA (image questions) ---------------------------------------------------------

def _image_bytes(v: Any, base: Path) -> bytes | None:
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, dict):
        if v.get("bytes"):
            return bytes(v["bytes"])
        v = v.get("path")
        if not v:
            return None
    p = Path(str(v))
    for cand in (p, base / p):
        if cand.is_file():
            return cand.read_bytes()
    return None


def _scienceqa_files(root: Path) -> tuple[list[Path], bool]:
    """(annotation files, lupantech layout?): lupantech's problems.json, else the test split's
    files (of lmms-lab's ScienceQA-IMG folder when there, not its ScienceQA-FULL copy)."""
    files = _find_files(root, ("*.parquet", "*.jsonl", "*.json"))
    problems = [f for f in files if f.name == "problems.json"]
    if problems:
        return problems, True
    img = [f for f in files if "ScienceQA-IMG" in f.parts]
    files = img or files
    tests = [f for f in files if "test" in f.name.lower()]
    return tests or files, False


def scienceqa_files(root: Path) -> list[Path]:
    return _scienceqa_files(root)[0]


def read_scienceqa(root: Path, malformed: list[MalformedItem] | None = None) -> list[MCQItem]:
    spec = BENCHMARKS["scienceqa"]
    files, lupantech = _scienceqa_files(root)
    if not files:
        raise spec.missing(root, "no annotation file (*.parquet/*.json)")
    malformed = malformed if malformed is not None else []
    items = []
    for f in files:

        def build(j: int, r: dict, f=f) -> MCQItem | None:
            if "choices" not in r or "question" not in r:
                return None
            if lupantech and r.get("split", "test") != "test":
                return None
            img_ref = r.get("image")
            if lupantech and img_ref:  # lupantech layout: <root>/test/<id>/image.png
                img_ref = root / "test" / str(r["_key"]) / str(img_ref)
            img = _image_bytes(img_ref, f.parent)
            if img is None:
                return None  # text-only questions are not part of the image benchmark
            opts = [str(c) for c in _as_list(r["choices"])]
            hint = str(r.get("hint") or "").strip()
            q = f"Context: {hint}\n{r['question']}" if hint else str(r["question"])
            return MCQItem(
                id=f"scienceqa/{r.get('_key', j)}", benchmark="scienceqa", frames_source=img,
                source_kind="image", question=format_question(q, opts), options=opts,
                answer_letter=option_letter(int(r["answer"]), opts),
                category=str(r.get("subject") or r.get("category") or "all"),
                groups={"category": str(r["category"])} if r.get("category") else {})

        items += _build_rows(f, _read_table(f), build, malformed)
    return items


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "videomme": BenchmarkSpec("videomme", "lmms-lab/Video-MME",
                              "  data/benchmarks/videomme/videomme/test-00000-of-00001.parquet\n"
                              "  data/benchmarks/videomme/data/<videoID>.mp4", read_videomme,
                              "unzip videos_chunked_*.zip in data/benchmarks/videomme (-> data/<videoID>.mp4)",
                              videomme_files, ("Video-MME",), "videomme/videomme/test-*.parquet (lmms-lab/Video-MME)"),
    "mlvu": BenchmarkSpec("mlvu", "MLVU/MVLU (dev split; github.com/JUNJIE99/MLVU)",
                          "  data/benchmarks/mlvu/MLVU/json/1_plotQA.json ... 7_topic_reasoning.json\n"
                          "  data/benchmarks/mlvu/MLVU/video/1_plotQA/<video>.mp4 ...\n"
                          "  (or sy1998/MLVU_dev: data/benchmarks/mlvu/mlvu/test-00000-of-00001.parquet, "
                          "its video zips unpacked there)", read_mlvu,
                          "the videos belong in data/benchmarks/mlvu/MLVU/video/<task>/ (the hub download's)",
                          mlvu_files, ("MVLU", "MLVU_dev"),
                          "mlvu/MLVU/json/<task>.json (MLVU/MVLU) or mlvu/mlvu/test-*.parquet (sy1998/MLVU_dev)"),
    "mvbench": BenchmarkSpec("mvbench", "OpenGVLab/MVBench",
                             "  data/benchmarks/mvbench/json/<task>.json\n"
                             "  data/benchmarks/mvbench/video/<source>/<video> (e.g. video/clevrer/"
                             "video_validation/)", read_mvbench,
                             "unzip each data/benchmarks/mvbench/video/*.zip in place (-> video/star/"
                             "Charades_v1_480/..., video/clevrer/...)",
                             mvbench_files, ("MVBench",), "mvbench/json/<task>.json (OpenGVLab/MVBench)"),
    "scienceqa": BenchmarkSpec("scienceqa", "derek-thomas/ScienceQA (or lmms-lab/ScienceQA)",
                               "  data/benchmarks/scienceqa/data/test-00000-of-00001.parquet "
                               "(images embedded)", read_scienceqa,
                               "the images are embedded in the parquet files "
                               "(lupantech's layout: test/<id>/image.png)",
                               scienceqa_files, ("ScienceQA",),
                               "scienceqa/data/test-*.parquet (derek-thomas/ScienceQA)"),
}


def load_benchmark(name: str, root: str | Path, max_items: int | None = None,
                   malformed: list[MalformedItem] | None = None) -> list[MCQItem]:
    """Items of one benchmark under ``<root>/<name>`` (``benchmark_folder``); ``BenchmarkNotFound`` when absent.
    Rows that cannot become items are appended to ``malformed`` (and left out)."""
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    bdir = benchmark_folder(root, name)
    if not bdir.is_dir():
        raise spec.missing(bdir, "folder missing")
    bad: list[MalformedItem] = []
    items = spec.reader(bdir, bad)
    if malformed is not None:
        malformed.extend(bad)
    if not items and bad:
        raise BenchmarkNotFound(f"benchmark '{name}': none of the {len(bad)} multiple-choice rows under "
                                f"{bdir} is well-formed (first: {bad[0]})")
    if not items:
        raise spec.missing(bdir, "annotation files hold no multiple-choice item")
    if max_items is not None:
        items = _spread(items, max_items)
    return items


def _spread(items: list[MCQItem], n: int) -> list[MCQItem]:
    """Keep ``n`` items spread over the list (so every category stays represented)."""
    if n >= len(items):
        return items
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def available_benchmarks(root: str | Path) -> dict[str, str | None]:
    """name -> None when present, else the reason it is missing (the download hint)."""
    out: dict[str, str | None] = {}
    for name in BENCHMARKS:
        try:
            load_benchmark(name, root, max_items=1)
            out[name] = None
        except BenchmarkNotFound as e:
            out[name] = str(e)
    return out


def missing_media(items: list[MCQItem]) -> list[str]:
    """The items' video files / frame folders that are not on disk (images are embedded)."""
    return [str(it.frames_source) for it in items
            if it.source_kind in ("video", "frames") and not Path(str(it.frames_source)).exists()]
