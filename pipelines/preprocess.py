"""The Ray Data preprocessing pipeline: raw dataset folder -> shard folder (jobs/preprocess.py).

    plan (driver, metadata only)          readers.plan_dataset -> refs + malformed-row rejects
    split + shard assignment (driver)     split by a hash of the sample id; each split's refs in
                                          input order, ``samples_per_shard`` per shard
    skip complete shards                  _state/<shard>.json holds the hash of the shard's plan
                                          (refs + file fingerprints + settings)
    Ray Data                              from_items(refs of unfinished shards)
                                          -> map_batches(process.process_batch): decode, JPEG,
                                             tokenize; every exception becomes a reject row
                                          -> iter_rows (order preserved)
    driver                                streams rows into ShardWriter(s), commits each shard
                                          (tmp + rename) when its last ref has arrived
    finish                                manifest.json, rejects.jsonl (rewritten only if changed)

Reruns are idempotent: complete shards are skipped (a rerun with unchanged input writes no
file), a shard whose plan changed is rewritten, stale ``*.tmp`` files and shards no longer in
the plan are removed.  Shard names are ``train-NNNNN.tar`` / ``val-NNNNN.tar``.  Shards are
written by the driver process (the workers do the decoding); that is ample for CPU clusters
up to a few dozen cores, beyond that run one job per input subset.  The output may be a URL
(``--output s3://bucket/shards/webvid``): the driver uploads each shard as it completes
(``shards.ShardWriter``, ``fovea.pipelines.storage``); the raw input is read from local files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fovea.pipelines import shards as S
from fovea.pipelines import storage
from fovea.pipelines.errors import reject_record
from fovea.pipelines.payload import Settings, process_batch
from fovea.pipelines.readers import DATASETS, VISUAL, plan_dataset
from fovea.pipelines.tokenize import DEFAULT_TOKENIZER, default_max_tokens

log = logging.getLogger("fovea.pipelines.preprocess")

# The caption sets default to stage 1 (all-text loss) like WebVid: OpenVid is in S1 and S2, Vript
# and ShareGPT4Video in S2 and in the stage-1 ablation D1 (DESIGN.md 3.1); pass --stage 2 for S2.
DEFAULT_STAGE = {"webvid": 1, "smoltalk": 1, "cauldron": 2, "video_sft": 2,
                 "openvid": 1, "vript_long": 1, "vript_short": 1, "sharegpt4video": 1}
DEFAULT_SAMPLES_PER_SHARD = 1000  # DESIGN.md 3.2
DEFAULT_VAL_FRACTION = 0.1


@dataclass
class Summary:
    """What a run did; ``format()`` gives the closing table."""

    dataset: str
    output: str
    read: int = 0
    written: int = 0
    rejected: Counter = field(default_factory=Counter)
    shards_written: list[str] = field(default_factory=list)
    shards_skipped: list[str] = field(default_factory=list)
    shards_removed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    worker_cpu_s: float = 0.0  # CPU time of the Ray tasks for the samples processed in this run
    frames: int = 0
    splits: dict = field(default_factory=dict)

    def format(self) -> str:
        lines = [f"{self.dataset} -> {self.output}",
                 f"  read {self.read}  written {self.written} ({', '.join(f'{k} {v}' for k, v in sorted(self.splits.items()))})"
                 f"  rejected {sum(self.rejected.values())}  frames {self.frames}",
                 f"  shards: {len(self.shards_written)} written, {len(self.shards_skipped)} already complete"
                 + (f", {len(self.shards_removed)} stale removed" if self.shards_removed else ""),
                 f"  time {self.seconds:.1f} s (worker CPU {self.worker_cpu_s:.1f} s)"]
        for reason, n in sorted(self.rejected.items()):
            lines.append(f"  rejected {reason:18s} {n}")
        return "\n".join(lines)


def split_of(sample_id: str, val_fraction: float) -> str:
    """Deterministic train/val split from a hash of the id (independent of input order)."""
    h = int(hashlib.sha1(f"split:{sample_id}".encode()).hexdigest()[:8], 16)
    return "val" if h / 2**32 < val_fraction else "train"


def sample_key(dataset: str, sample_id: str) -> str:
    """Webdataset key: no '.' or '/', stable, unique within and across datasets."""
    return f"{dataset}-{hashlib.sha1(sample_id.encode()).hexdigest()[:16]}"


def resolve_output(dataset: str, output: str | Path, stage: int) -> str | Path:
    """SmolTalk shards depend on the stage's loss rule: they go to ``<output>_s<stage>``
    (a ``Path``, or a URL string)."""
    out = storage.location(output)
    if dataset == "smoltalk" and not storage.name(out).endswith(f"_s{stage}"):
        out = storage.join(storage.parent(out), f"{storage.name(out)}_s{stage}")
    return out


def assign_shards(refs: list[dict], dataset: str, val_fraction: float, per_shard: int) -> dict[str, list]:
    """-> {shard name: [(key, ref), ...]} in deterministic order."""
    by_split: dict[str, list] = {"train": [], "val": []}
    for r in refs:
        by_split[split_of(r["id"], val_fraction)].append((sample_key(dataset, r["id"]), r))
    plan: dict[str, list] = {}
    for split, items in by_split.items():
        for i in range(0, len(items), per_shard):
            plan[S.shard_name(split, i // per_shard)] = items[i:i + per_shard]
    return plan


def plan_hash(items: list, settings: Settings) -> str:
    blob = json.dumps({"settings": settings.to_dict(), "items": items}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _clean(out: str | Path, planned: set[str], summary: Summary) -> None:
    for folder in (out, storage.join(out, S.STATE_DIR)):
        for name in storage.listdir(folder):
            if name.endswith(".tmp"):
                storage.remove(storage.join(folder, name))
    for name in storage.listdir(out):
        if S.SHARD_RE.match(name) and name not in planned:
            log.warning("removing stale shard %s (not in the current plan)", storage.join(out, name))
            storage.remove(storage.join(out, name))
            storage.remove(S.state_path(out, name))
            summary.shards_removed.append(name)


def run_preprocess(dataset: str, input_dir: str | Path, output_dir: str | Path, *, stage: int | None = None,
                   val_fraction: float = DEFAULT_VAL_FRACTION, samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD,
                   tokenizer: str = DEFAULT_TOKENIZER, max_tokens: int | None = None, max_frames: int | None = None,
                   items_per_task: int | None = None, progress: bool = True) -> Summary:
    """Preprocess one dataset into shards.  Uses the current Ray cluster (``ray.init`` first,
    else Ray Data starts a local one).  Returns the ``Summary`` (also written to the manifest)."""
    import ray
    from tqdm import tqdm

    from fovea.pipelines.config import DataConfig

    t0 = time.time()
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    stage = stage or DEFAULT_STAGE[dataset]
    settings = Settings(dataset=dataset, stage=stage, max_tokens=max_tokens or default_max_tokens(stage),
                        max_frames=max_frames or DataConfig().max_frames, tokenizer=tokenizer)
    out = resolve_output(dataset, output_dir, stage)
    plan = plan_dataset(dataset, input_dir)
    storage.makedirs(out)
    summary = Summary(dataset, str(out), read=plan.read)
    shard_plan = assign_shards(plan.refs, dataset, val_fraction, samples_per_shard)
    hashes = {name: plan_hash(items, settings) for name, items in shard_plan.items()}
    _clean(out, set(shard_plan), summary)
    todo = {n: items for n, items in shard_plan.items() if not S.shard_is_complete(out, n, hashes[n])}
    summary.shards_skipped = sorted(set(shard_plan) - set(todo))
    log.info("%s: %d refs, %d planning rejects, %d shards (%d to write)", dataset, len(plan.refs),
             len(plan.rejects), len(shard_plan), len(todo))

    if todo:
        _write_shards(todo, hashes, settings, out, summary, items_per_task, progress, ray, tqdm)

    states = [(n, S.read_state(out, n)) for n in shard_plan]
    rejects = list(plan.rejects)
    for _, st in states:
        rejects.extend(st["rejects"])
    summary.written = sum(st["num_samples"] for _, st in states)
    summary.frames = sum(sum(st["frame_counts"]) for _, st in states)
    summary.rejected = Counter(r["reason"] for r in rejects)
    summary.splits = {"train": 0, "val": 0}  # 0 for a split whose every row was rejected
    for n, st in states:
        summary.splits[n.split("-")[0]] += st["num_samples"]
    header = {"dataset": dataset, "settings": settings.to_dict(), "val_fraction": val_fraction,
              "samples_per_shard": samples_per_shard, "inputs": plan.inputs,
              "counts": {"read": summary.read, "written": summary.written, "rejected": sum(summary.rejected.values()),
                         "rejected_by_reason": dict(sorted(summary.rejected.items()))}}
    S.write_if_changed(storage.join(out, "manifest.json"), S.dumps_manifest(S.build_manifest(out, states, header)))
    S.write_if_changed(storage.join(out, "rejects.jsonl"),
                       "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rejects).encode())
    summary.seconds = time.time() - t0
    return summary


def _write_shards(todo, hashes, settings, out, summary, items_per_task, progress, ray, tqdm) -> None:
    items = [{"key": key, "split": name.split("-")[0], "shard": int(name[-9:-4]), "ref": json.dumps(ref)}
             for name, its in todo.items() for key, ref in its]
    remaining = {name: len(its) for name, its in todo.items()}
    per_task = items_per_task or (2 if VISUAL[settings.dataset] == "video" else 64)
    ctx = ray.data.DataContext.get_current()
    keep_order = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True  # rows come back in plan order (restored below)
    blocks = min(max(1, math.ceil(len(items) / per_task)), 4096)  # small blocks: parallel videos
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    ds = ds.map_batches(process_batch, fn_kwargs={"settings": settings.to_dict()}, batch_size=per_task,
                        batch_format="numpy")
    writers: dict[str, S.ShardWriter] = {}
    acc: dict[str, dict] = {}
    bar = tqdm(total=len(items), desc=f"preprocess {settings.dataset}", unit="sample", disable=not progress)
    try:
        for row in ds.iter_rows():
            name = S.shard_name(row["split"], row["shard"])
            if name not in writers:
                writers[name] = S.ShardWriter(storage.join(out, name))
                acc[name] = {"frame_counts": [], "token_counts": [], "keys": [], "sources": [], "rejects": []}
            a = acc[name]
            if row["ok"]:
                jpgs = list(row["jpgs"])
                writers[name].add(row["key"], row["json"], jpgs)
                meta = json.loads(row["json"])
                a["frame_counts"].append(len(jpgs))
                a["token_counts"].append(len(meta["token_ids"]))
                a["keys"].append(row["key"])
                a["sources"].append(meta["source"])
            else:
                a["rejects"].append(reject_record(settings.dataset, row["id"], row["reason"], row["detail"], row["where"]))
            summary.worker_cpu_s += row["cpu_s"]
            bar.update(1)
            remaining[name] -= 1
            if remaining[name] == 0:
                _finish_shard(out, name, writers.pop(name), hashes[name], acc.pop(name), summary)
    finally:
        ctx.execution_options.preserve_order = keep_order
        bar.close()
        for w in writers.values():  # only on error: leave nothing half-written
            w.abort()
    missing = [n for n, k in remaining.items() if k]
    if missing:
        raise RuntimeError(f"pipeline ended before shards {missing} were complete")


def _finish_shard(out: str | Path, name: str, writer: S.ShardWriter, plan_hash: str, acc: dict, summary: Summary) -> None:
    """Commit a shard once its last row has arrived; one whose every row was rejected is not
    written (an empty tar would pass for data): its state keeps the rejects, the tar of an
    earlier run is removed."""
    if acc["keys"]:
        digest, size = writer.commit()
        summary.shards_written.append(name)
    else:
        writer.abort()
        storage.remove(storage.join(out, name))
        digest, size = None, 0
        log.warning("%s: every row was rejected; no shard written", name)
    S.write_state(out, name, {"plan_hash": plan_hash, "sha256": digest, "bytes": size,
                              "num_samples": len(acc["keys"]), **acc})
