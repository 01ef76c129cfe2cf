"""The shard sets a ``data:`` section reads, whether they are on disk, and the command that
makes one that is not: a run checks its inputs before it starts anything (a cluster, a
tracking run), and its error says what to run next.

    missing = missing_shard_sets(cfg.data)            # [] when every set matches some .tar
    print(missing_shards_message(missing, stage))      # the keys, then the commands that make them

A shard folder is named after the dataset that fills it (``data/shards/webvid``,
``data/shards/smoltalk_s2``: SmolTalk's loss rule depends on the stage, so its folder carries
the stage, see ``preprocess.resolve_output``); that name gives the ``jobs/preprocess.py`` line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from fovea.pipelines import storage
from fovea.pipelines.readers import DATASETS, RAW_FOLDER
from fovea.pipelines.shards import expand_shards

SAMPLE_RAW = "data/demo/raw"  # where `make sample-data` puts the embedded sample datasets
_FOLDER = re.compile(r"^(?P<dataset>" + "|".join(DATASETS) + r")(?:_s(?P<stage>[123]))?$")


def _shown(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies below it (what a user types);
    a URL as it is."""
    if storage.is_url(path):
        return str(path)
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve())) if p.is_absolute() else str(p)
    except ValueError:
        return str(p)


def shard_folder(pattern: str) -> str | Path:
    """``data/shards/webvid/train-*.tar`` -> ``data/shards/webvid`` (a folder pattern is its own
    folder); a ``Path``, or for a URL a string."""
    name = storage.name(pattern)
    if not any(ch in name for ch in "*?[") and not name.endswith(".tar"):
        return storage.location(pattern)
    return storage.parent(storage.location(pattern))


def preprocess_commands(folder: str | Path, run_stage: int, raw: str | None = None) -> str:
    """The ``jobs/preprocess.py`` line that fills ``folder`` from the raw dataset folder ``raw``
    (a placeholder path when None)."""
    folder = storage.location(_shown(folder))
    m = _FOLDER.match(storage.name(folder))
    if m is None:
        return f"python jobs/preprocess.py <{'|'.join(DATASETS)}> --input {raw or '/path/to/raw/data'} --output {folder}"
    dataset, stage = m["dataset"], int(m["stage"] or run_stage)
    # SmolTalk's job appends _s<stage> to --output itself
    out = storage.join(storage.parent(folder), dataset) if dataset == "smoltalk" else folder
    sub = RAW_FOLDER.get(dataset, dataset)  # both Vript sets read one Vript download
    raw = f"{raw}/{sub}" if raw else f"/path/to/raw/{sub}"
    return f"python jobs/preprocess.py {dataset} --input {raw} --output {out} --stage {stage}"


@dataclass
class MissingShards:
    """One ``data.<key>`` whose patterns match no ``.tar`` file."""

    key: str
    patterns: list[str]

    def line(self) -> str:
        if not self.patterns:
            return f"data.{self.key} is empty: name the shards to read, e.g. data.{self.key}=\"['data/shards/webvid/train-*.tar']\""
        return f"data.{self.key}={[_shown(p) for p in self.patterns]} matches no .tar file"


def missing_shards_message(missing: list[MissingShards], run_stage: int) -> str:
    """What is missing, then the commands that make it: from the raw downloads, from the
    embedded sample data, or the whole demo."""
    folders = list(dict.fromkeys(shard_folder(p) for m in missing for p in m.patterns))
    lines = ["this run's shards are not there:"] + [f"  {m.line()}" for m in missing]
    if folders:
        lines.append("make them from the raw downloads (README, \"Real data\"):")
        lines += [f"  {preprocess_commands(f, run_stage)}" for f in folders]
        sample = [preprocess_commands(f, run_stage, SAMPLE_RAW) for f in folders
                  if _FOLDER.match(storage.name(f))]
        if sample:
            lines.append("or from the embedded sample data:")
            lines += ["  make sample-data"] + [f"  {c}" for c in sample]
    lines.append("or run the demo end to end on the sample data: make demo"
                 + (" (then --config demo)" if run_stage == 1 else " (stage 1)"))
    return "\n".join(lines)


def missing_shard_sets(data) -> list[MissingShards]:
    """The shard sets of ``data`` (a ``DataConfig``) that a run would read and that match no
    ``.tar``: train always (``train_shards``, or each source of ``mixture``), text when
    ``text_ratio`` > 0, val when listed."""
    wanted = [(key, patterns, True) for key, patterns in data.training_sets().items()]
    wanted += [("text_shards", data.text_shards, data.text_ratio > 0), ("val_shards", data.val_shards, True)]
    out = []
    for key, patterns, used in wanted:
        if key == "train_shards" and not patterns:
            out.append(MissingShards(key, []))
        elif used and patterns and not expand_shards([os.path.expanduser(p) for p in patterns]):
            out.append(MissingShards(key, list(patterns)))
    return out
