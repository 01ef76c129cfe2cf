"""Multiple-choice benchmark readers: Video-MME, MLVU, MVBench, ScienceQA (images).

Every reader turns the upstream annotation files into uniform ``MCQItem`` records; frames
are decoded later, one item at a time (``fovea.platform.eval.benchmark_frames.load_item_frames``),
so listing a benchmark is cheap.  Expected local layout (``--benchmarks data/benchmarks``):

    data/benchmarks/videomme/   hub dataset lmms-lab/Video-MME
        videomme/test-00000-of-00001.parquet   (any *.parquet / *.json / *.jsonl below)
        data/<videoID>.mp4                     (videos_chunked_*.zip unpacked)
    data/benchmarks/mlvu/       hub dataset MLVU/MVLU (github.com/JUNJIE99/MLVU), dev split
        json/1_plotQA.json ... 7_topic_reasoning.json   (8_sub_scene/9_summary: not MCQ, skipped)
        video/1_plotQA/<video> ...                      (video/plotQA/ also accepted)
    data/benchmarks/mvbench/    hub dataset OpenGVLab/MVBench
        json/<task>.json                       (action_sequence.json, ...)
        video/<source>/<video>                 (star/Charades_v1_480/, clevrer/video_validation/, ...)
    data/benchmarks/scienceqa/  hub dataset derek-thomas/ScienceQA (or lmms-lab/ScienceQA,
                                ScienceQA-IMG config; or lupantech's problems.json + test/<id>/image.png)
        data/test-*.parquet                    (image questions of the test split are used)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".MP4", ".m4v")


class BenchmarkNotFound(FileNotFoundError):
    """A benchmark's annotation files (or videos) are not on disk; the message says what to get."""


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
    reader: Callable[[Path], list[MCQItem]]

    def missing(self, root: Path, what: str) -> BenchmarkNotFound:
        return BenchmarkNotFound(
            f"benchmark '{self.name}': {what} under {root}. Download the hub dataset "
            f"'{self.hub_id}' and lay it out as:\n{self.layout}")


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


def _answer_letter(answer: Any, options: list[str]) -> str:
    """Upstream answers are a letter, an index, or the option text."""
    if isinstance(answer, (int, np.integer)) and not isinstance(answer, bool):
        return LETTERS[int(answer)]
    a = str(answer).strip()
    if len(a) == 1 and a.upper() in LETTERS[: len(options)]:
        return a.upper()
    if len(a) >= 2 and a[0] in LETTERS and a[1] in ".)":
        return a[0]
    if a.startswith("(") and len(a) >= 3 and a[2] == ")":
        return a[1]
    for i, o in enumerate(options):
        if a == str(o).strip():
            return LETTERS[i]
    raise ValueError(f"answer {answer!r} matches no option of {options}")


# -- Video-MME --------------------------------------------------------------------------

def read_videomme(root: Path) -> list[MCQItem]:
    spec = BENCHMARKS["videomme"]
    files = _find_files(root, ("*.parquet", "*.jsonl", "*.json"))
    if not files:
        raise spec.missing(root, "no annotation file (*.parquet/*.json)")
    videos = _index_media(root, VIDEO_EXTS)
    items = []
    for f in files:
        for r in _read_table(f):
            if "question" not in r or "options" not in r:
                continue
            vid = str(r.get("videoID") or r.get("video_id"))
            opts = [_strip_letter(o, i) for i, o in enumerate(_as_list(r["options"]))]
            items.append(MCQItem(
                id=f"videomme/{r.get('question_id', len(items))}", benchmark="videomme",
                frames_source=str(videos.get(vid, root / "data" / f"{vid}.mp4")), source_kind="video",
                question=format_question(str(r["question"]), opts), options=opts,
                answer_letter=_answer_letter(r["answer"], opts),
                category=str(r.get("task_type") or r.get("domain") or "all"),
                groups={k: str(r[k]) for k in ("domain", "duration", "sub_category") if r.get(k) is not None},
            ))
    return items


# -- MLVU -------------------------------------------------------------------------------

def _task_json_files(root: Path, spec) -> list[Path]:
    """MLVU / MVBench: one annotation file per task, in json/ (or the root)."""
    jdir = root / "json" if (root / "json").is_dir() else root
    files = sorted(jdir.glob("*.json"))
    if not files:
        raise spec.missing(root, "no json/<task>.json annotation files")
    return files


def read_mlvu(root: Path) -> list[MCQItem]:
    spec = BENCHMARKS["mlvu"]
    files = _task_json_files(root, spec)
    videos = _index_media(root / "video" if (root / "video").is_dir() else root, VIDEO_EXTS)
    items = []
    for f in files:
        task = f.stem.split("_", 1)[1] if f.stem[:1].isdigit() and "_" in f.stem else f.stem
        for j, r in enumerate(_read_table(f)):
            if not r.get("candidates"):
                continue  # generation tasks (sub-scene captioning, summary)
            opts = [str(c) for c in _as_list(r["candidates"])]
            video = str(r["video"])
            path = next((p for p in (root / "video" / f.stem / video, root / "video" / task / video)
                         if p.exists()), videos.get(video, root / "video" / f.stem / video))
            items.append(MCQItem(
                id=f"mlvu/{f.stem}/{j}", benchmark="mlvu", frames_source=str(path), source_kind="video",
                question=format_question(str(r["question"]), opts), options=opts,
                answer_letter=_answer_letter(r["answer"], opts),
                category=str(r.get("question_type") or task),
                groups={"duration": str(r["duration"])} if r.get("duration") is not None else {},
            ))
    return items


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


def read_mvbench(root: Path) -> list[MCQItem]:
    spec = BENCHMARKS["mvbench"]
    files = _task_json_files(root, spec)
    vroot = root / "video" if (root / "video").is_dir() else root
    videos: dict[str, Path] | None = None
    items = []
    for f in files:
        task, sub, kind, has_bound = MVBENCH_TASKS.get(f.stem, (f.stem, "", "video", True))
        for j, r in enumerate(_read_table(f)):
            opts = [str(c) for c in _as_list(r.get("candidates"))]
            if not opts:
                continue
            path = vroot / sub / str(r["video"])
            if kind == "video" and not path.exists():
                videos = videos if videos is not None else _index_media(vroot, VIDEO_EXTS)
                path = videos.get(str(r["video"]), path)
            bound = None
            if has_bound and r.get("start") is not None and r.get("end") is not None:
                bound = (float(r["start"]), float(r["end"]))
            items.append(MCQItem(
                id=f"mvbench/{f.stem}/{j}", benchmark="mvbench", frames_source=str(path),
                source_kind=kind, question=format_question(str(r["question"]), opts), options=opts,
                answer_letter=_answer_letter(r["answer"], opts), category=task, bound=bound,
            ))
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


def read_scienceqa(root: Path) -> list[MCQItem]:
    spec = BENCHMARKS["scienceqa"]
    files = _find_files(root, ("*.parquet", "*.jsonl", "*.json"))
    tests = [f for f in files if "test" in f.name.lower()]
    problems = [f for f in files if f.name == "problems.json"]
    files = problems or tests or files
    if not files:
        raise spec.missing(root, "no annotation file (*.parquet/*.json)")
    items = []
    for f in files:
        for j, r in enumerate(_read_table(f)):
            if "choices" not in r or "question" not in r:
                continue
            if problems and r.get("split", "test") != "test":
                continue
            img_ref = r.get("image")
            if problems and img_ref:  # lupantech layout: <root>/test/<id>/image.png
                img_ref = root / "test" / str(r["_key"]) / str(img_ref)
            img = _image_bytes(img_ref, f.parent)
            if img is None:
                continue  # text-only questions are not part of the image benchmark
            opts = [str(c) for c in _as_list(r["choices"])]
            hint = str(r.get("hint") or "").strip()
            q = f"Context: {hint}\n{r['question']}" if hint else str(r["question"])
            items.append(MCQItem(
                id=f"scienceqa/{r.get('_key', j)}", benchmark="scienceqa", frames_source=img,
                source_kind="image", question=format_question(q, opts), options=opts,
                answer_letter=_answer_letter(int(r["answer"]), opts),
                category=str(r.get("subject") or r.get("category") or "all"),
                groups={"category": str(r["category"])} if r.get("category") else {},
            ))
    return items


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "videomme": BenchmarkSpec("videomme", "lmms-lab/Video-MME",
                              "  data/benchmarks/videomme/videomme/test-00000-of-00001.parquet\n"
                              "  data/benchmarks/videomme/data/<videoID>.mp4", read_videomme),
    "mlvu": BenchmarkSpec("mlvu", "MLVU/MVLU (dev split; github.com/JUNJIE99/MLVU)",
                          "  data/benchmarks/mlvu/json/1_plotQA.json ... 7_topic_reasoning.json\n"
                          "  data/benchmarks/mlvu/video/1_plotQA/<video>.mp4 ...", read_mlvu),
    "mvbench": BenchmarkSpec("mvbench", "OpenGVLab/MVBench",
                             "  data/benchmarks/mvbench/json/<task>.json\n"
                             "  data/benchmarks/mvbench/video/<source>/<video> (e.g. video/clevrer/"
                             "video_validation/)", read_mvbench),
    "scienceqa": BenchmarkSpec("scienceqa", "derek-thomas/ScienceQA (or lmms-lab/ScienceQA)",
                               "  data/benchmarks/scienceqa/data/test-00000-of-00001.parquet "
                               "(images embedded)", read_scienceqa),
}


def load_benchmark(name: str, root: str | Path, max_items: int | None = None) -> list[MCQItem]:
    """Items of one benchmark under ``<root>/<name>``; ``BenchmarkNotFound`` when absent."""
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    bdir = Path(root) / name
    if not bdir.is_dir():
        raise spec.missing(bdir, "folder missing")
    items = spec.reader(bdir)
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
