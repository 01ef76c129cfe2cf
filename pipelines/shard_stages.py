"""Which stage's loss rule a shard set was tokenized with, and whether a run's stage agrees.

Shards are tokenized for one stage (DESIGN.md 2.3): stage 1 makes every text token a target,
stages 2 and 3 the answer only.  ``jobs/preprocess.py --stage N`` records N in every sample's
JSON (``stage``) and in the folder's ``manifest.json`` (``settings.stage``).  The loader uses a
sample's tokens and mask as written, so stage-1 shards read by a stage-2 run would train with
loss on all text without a word (what the reference does with its stage-1 WebVid shards in
stage 2).  The driver therefore compares each shard folder's rule with the run's before
anything starts; ``data.check_shard_stage=false`` reads the shards as written, as the reference does.

    mismatches = stage_mismatches(cfg.data, stage)      # [] when every folder's rule is the run's
    print(stage_mismatch_message(mismatches, stage))    # the folders, and the commands that fix them
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from fovea.pipelines import storage
from fovea.pipelines.shard_sets import preprocess_commands
from fovea.pipelines.shards import expand_shards

LOSS_RULE = {1: "loss on all text", 2: "loss on the answer only", 3: "loss on the answer only"}


def recorded_stage(folder: str | Path, tars: list[str]) -> int | None:
    """The stage a shard folder was written for: its manifest's ``settings.stage``, else the
    ``stage`` of the first sample of its first tar; None when neither says (shards made
    elsewhere, or unreadable ones, which the loader reports)."""
    try:
        stage = json.loads(storage.read_text(storage.join(folder, "manifest.json"))).get("settings", {}).get("stage")
        if stage is not None:
            return int(stage)
    except (OSError, ValueError, AttributeError):
        pass
    try:
        with storage.open_read(tars[0]) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".json"):
                    stage = json.loads(tar.extractfile(member).read()).get("stage")
                    return int(stage) if stage is not None else None
    except storage.StorageError:
        raise
    except (OSError, tarfile.TarError, ValueError, AttributeError):
        pass
    return None


@dataclass
class StageMismatch:
    """A shard folder of ``data.<key>`` written for a stage whose loss rule is not the run's."""

    key: str
    folder: str | Path
    stage: int


def stage_mismatches(data, run_stage: int) -> list[StageMismatch]:
    """The shard folders of ``data`` (a ``DataConfig``) that a run would read and whose loss
    rule differs from ``run_stage``'s (stages 2 and 3 share theirs)."""
    wanted = [(key, patterns, True) for key, patterns in data.training_sets().items()]
    wanted += [("text_shards", data.text_shards, data.text_ratio > 0), ("val_shards", data.val_shards, True)]
    out = []
    for key, patterns, used in wanted:
        if not used:
            continue
        by_folder: dict[str | Path, list[str]] = {}
        for tar in expand_shards([os.path.expanduser(p) for p in patterns]):
            by_folder.setdefault(storage.parent(tar), []).append(tar)
        for folder, tars in by_folder.items():
            stage = recorded_stage(folder, tars)
            if stage in LOSS_RULE and LOSS_RULE[stage] != LOSS_RULE[run_stage]:
                out.append(StageMismatch(key, folder, stage))
    return out


def as_typed(folder: str | Path) -> str | Path:
    """``folder`` relative to the working directory when it lies below it (what a user types);
    a URL as it is."""
    if storage.is_url(folder):
        return folder
    try:
        return folder.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return folder


def restaged_folder(folder: str | Path, stage: int) -> str | Path:
    """Where shards of ``folder``'s dataset for ``stage`` go: ``webvid`` -> ``webvid_s2``,
    ``smoltalk_s1`` -> ``smoltalk_s2``."""
    return storage.join(storage.parent(folder), re.sub(r"_s[123]$", "", storage.name(folder)) + f"_s{stage}")


def stage_mismatch_message(mismatches: list[StageMismatch], run_stage: int) -> str:
    """What disagrees, then how to fix it: shards for this stage, or the reference's behaviour."""
    lines = [f"this is a stage-{run_stage} run ({LOSS_RULE[run_stage]}), but some of its shards were "
             "tokenized for another stage:"]
    lines += [f"  data.{m.key}: {as_typed(m.folder)} holds stage-{m.stage} shards ({LOSS_RULE[m.stage]})" for m in mismatches]
    lines.append(f"make stage-{run_stage} shards in their own folder and point data.<key> there:")
    lines += [f"  {preprocess_commands(restaged_folder(as_typed(m.folder), run_stage), run_stage)}"
              for m in dict((m.folder, m) for m in mismatches).values()]
    lines.append("or train on them as written, as the reference does: data.check_shard_stage=false")
    return "\n".join(lines)
