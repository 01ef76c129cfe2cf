"""Webdataset shards: atomic deterministic tar writer, per-shard state, manifest, validator.

Layout of a shard folder (docs/CONTRACTS.md):

    train-00000.tar, train-00001.tar, ..., val-00000.tar, ...   the shards
    manifest.json                                               summary (``build_manifest``)
    rejects.jsonl                                               one reject record per line
    _state/<shard>.json                                         per-shard bookkeeping

Inside a tar, each sample's files are contiguous: ``KEY.json`` then ``KEY.000.jpg``,
``KEY.001.jpg``, ... (Ray's ``read_webdataset`` mis-groups interleaved samples,
ray-project/ray#44068; webdataset's own grouping needs contiguity too).  Member headers
carry fixed mtime/owner/mode, so the same samples always give byte-identical tars.  A tar is
written as ``<name>.tmp`` and renamed when complete; its ``_state`` file (plan hash, sha256,
size, per-sample frame/token counts, rejects) is written after the rename, so a shard counts
as done only when both exist and agree.

The folder may be a URL (``s3://bucket/shards/webvid``; ``fovea.pipelines.storage``): a tar is
then written to a local temporary file and uploaded by ``commit`` (an object appears whole when
its upload completes, which stands in for the rename), and the JSON files are single PUTs.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import re
import statistics
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fovea.pipelines import storage

log = logging.getLogger("fovea.pipelines.shards")

SHARD_RE = re.compile(r"^(train|val)-(\d{5})\.tar$")
STATE_DIR = "_state"
BUCKETS = [("0", 0, 0), ("1-4", 1, 4), ("5-8", 5, 8), ("9-16", 9, 16), ("17-32", 17, 32), ("33-64", 33, 64),
           (">64", 65, 10**9)]
REQUIRED_FIELDS = ("user", "assistant", "source", "frame_count", "token_ids", "loss_mask", "is_text_only", "stage")


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.tar"


def bucket_of(frames: int) -> str:
    return next(name for name, lo, hi in BUCKETS if lo <= frames <= hi)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with storage.open_read(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: str | Path, data: bytes) -> None:
    storage.write_bytes(path, data)


def write_if_changed(path: str | Path, data: bytes) -> bool:
    """Atomic write unless the file already holds exactly ``data`` (keeps mtimes on reruns)."""
    try:
        if storage.read_bytes(path) == data:
            return False
    except FileNotFoundError:
        pass
    atomic_write(path, data)
    return True


def dumps(obj) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def dumps_manifest(m: dict) -> bytes:
    """One top-level key per line, one shard per line (readable, and diff-friendly)."""
    def one(v):
        return json.dumps(v, ensure_ascii=False)

    lines = [f" {one(k)}: {one(v)}" for k, v in m.items() if k != "shards"]
    lines.append(' "shards": [\n' + ",\n".join(f"  {one(s)}" for s in m["shards"]) + "\n ]")
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode()


class ShardWriter:
    """One tar, written to ``<path>.tmp`` and renamed by ``commit``.  Samples are contiguous.
    For a URL ``path`` the ``.tmp`` file is local and ``commit`` uploads it."""

    def __init__(self, path: str | Path):
        self.path = storage.location(path)
        if storage.is_url(self.path):
            self.tmp = Path(tempfile.mkdtemp(prefix="fovea-shard-")) / (storage.name(self.path) + ".tmp")
        else:
            self.tmp = self.path.with_name(self.path.name + ".tmp")
        self._tar = tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT)
        self.num_samples = 0

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))

    def add(self, key: str, meta_json: str, jpgs: list[bytes]) -> None:
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/'")
        self._add(f"{key}.json", meta_json.encode())
        for i, jpg in enumerate(jpgs):
            self._add(f"{key}.{i:03d}.jpg", jpg)
        self.num_samples += 1

    def commit(self) -> tuple[str, int]:
        """Close, fsync, rename into place; returns (sha256, size in bytes)."""
        self._tar.close()
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        digest, size = sha256_file(self.tmp), self.tmp.stat().st_size
        if storage.is_url(self.path):
            storage.put_file(self.tmp, self.path)
            self._drop_tmp()
        else:
            os.replace(self.tmp, self.path)
        return digest, size

    def abort(self) -> None:
        self._tar.close()
        self._drop_tmp()

    def _drop_tmp(self) -> None:
        self.tmp.unlink(missing_ok=True)
        if storage.is_url(self.path):  # its own temporary folder
            self.tmp.parent.rmdir()


# -- per-shard state ------------------------------------------------------------------------

def state_path(out_dir: str | Path, name: str) -> str | Path:
    return storage.join(out_dir, STATE_DIR, name.removesuffix(".tar") + ".json")


def read_state(out_dir: str | Path, name: str) -> dict | None:
    try:
        return json.loads(storage.read_text(state_path(out_dir, name)))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_state(out_dir: str | Path, name: str, state: dict) -> None:
    write_if_changed(state_path(out_dir, name), dumps(state))


def shard_is_complete(out_dir: str | Path, name: str, plan_hash: str) -> bool:
    """The state matches this plan, and the tar exists with the state's size; a shard whose
    every row was rejected has a state (its rejects) and no tar (an empty shard is never written)."""
    st = read_state(out_dir, name)
    if not st or st.get("plan_hash") != plan_hash:
        return False
    size = storage.size(storage.join(out_dir, name))
    if st.get("num_samples") == 0:
        return size is None
    return size is not None and size == st.get("bytes")


# -- manifest ---------------------------------------------------------------------------------

def build_manifest(out_dir: str | Path, states: list[tuple[str, dict]], header: dict) -> dict:
    """DESIGN.md 3.6 manifest: frame-count distribution, buckets, token totals, per-shard counts,
    the mix of sources (samples per ``source``; a shard state written before sources were
    recorded counts as ``unrecorded``).  Shards without samples (every row rejected) are not
    listed: they were not written; the samples per split count train and val, 0 for a split
    that wrote nothing."""
    shards, dist, buckets, sources = [], {}, {name: [] for name, _, _ in BUCKETS}, {}
    total_tokens = total = 0
    for i, (name, st) in enumerate([(n, st) for n, st in states if st["num_samples"]]):
        frames = st["frame_counts"]
        for f in frames:
            dist[str(f)] = dist.get(str(f), 0) + 1
        for b in sorted({bucket_of(f) for f in frames}):
            buckets[b].append(i)
        shards.append({"path": name, "split": name.split("-")[0], "num_samples": st["num_samples"],
                       "frame_counts": frames, "total_tokens": sum(st["token_counts"]),
                       "sha256": st["sha256"], "bytes": st["bytes"]})
        total += st["num_samples"]
        total_tokens += sum(st["token_counts"])
        for src in st.get("sources") or ["unrecorded"] * st["num_samples"]:
            sources[src] = sources.get(src, 0) + 1
    splits = {"train": 0, "val": 0}
    for s in shards:
        splits[s["split"]] = splits.get(s["split"], 0) + s["num_samples"]
    return {
        **header,
        "data_dir": str(storage.location(out_dir) if storage.is_url(out_dir) else Path(out_dir).resolve()),
        "num_shards": len(shards), "total_samples": total, "samples_per_split": splits,
        "samples_per_source": dict(sorted(sources.items())),
        "total_tokens": total_tokens, "avg_tokens_per_sample": round(total_tokens / max(1, total), 2),
        "frame_count_distribution": dict(sorted(dist.items(), key=lambda kv: int(kv[0]))),
        "bucket_ranges": [name for name, _, _ in BUCKETS],
        "bucket_index": {k: v for k, v in buckets.items() if v},
        "shards": shards,
    }


# -- validator --------------------------------------------------------------------------------

@dataclass
class ValidationReport:
    shards: list[str] = field(default_factory=list)
    samples: int = 0
    errors: list[str] = field(default_factory=list)
    frame_counts: list[int] = field(default_factory=list)
    token_lengths: list[int] = field(default_factory=list)
    by_source: dict[str, list[int]] = field(default_factory=dict)  # source -> [samples, frames, tokens]

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.shards)

    def summary(self) -> str:
        def stats(xs):
            if not xs:
                return "n/a"
            return f"min {min(xs)} max {max(xs)} mean {statistics.mean(xs):.1f} median {statistics.median(xs)}"

        lines = [f"checked {len(self.shards)} shards, {self.samples} samples",
                 f"frames per sample: {stats(self.frame_counts)}",
                 f"tokens per sample: {stats(self.token_lengths)}"]
        width = max((len(s) for s in self.by_source), default=0)
        lines += [f"source {src:<{width}}  {n} samples, {f} frames, {t} tokens"
                  for src, (n, f, t) in sorted(self.by_source.items())]
        lines.append(f"errors: {len(self.errors)}")
        lines += [f"  ERROR {e}" for e in self.errors[:50]]
        if len(self.errors) > 50:
            lines.append(f"  ... and {len(self.errors) - 50} more")
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


def expand_shards(patterns: str | list[str]) -> list[str]:
    """Globs / files / folders, local or URLs -> sorted unique .tar paths (URLs stay URLs)."""
    if isinstance(patterns, (str, Path)):
        patterns = [str(patterns)]
    out: set[str] = set()
    for pat in map(str, patterns):
        if not any(c in pat for c in "*?[") and storage.isdir(pat):
            pat = str(storage.join(pat, "*.tar"))
        out.update(str(p) for p in storage.glob(pat) if str(p).endswith(".tar"))
    return sorted(out)


def open_shards(paths: list[str]):
    """``{"url", "stream"}`` for each shard in turn (webdataset's tar expander reads them), each
    stream closed once read. A shard gone since it was listed is skipped with a warning; a store
    that cannot be reached raises ``storage.StorageError`` (skipping every shard would only end
    the epoch early)."""
    for path in paths:
        try:
            stream = storage.open_read(path)
        except FileNotFoundError as e:
            log.warning("skipping shard %s: %s", path, e)
            continue
        with stream:
            yield {"url": path, "stream": stream}


def _check_sample(where: str, files: dict[str, bytes], check_images: int, rep: ValidationReport) -> None:
    from PIL import Image

    if "json" not in files:
        rep.errors.append(f"{where}: no .json")
        return
    try:
        meta = json.loads(files["json"])
    except json.JSONDecodeError as e:
        rep.errors.append(f"{where}: JSON does not parse: {e}")
        return
    missing = [k for k in REQUIRED_FIELDS if k not in meta]
    if missing:
        rep.errors.append(f"{where}: missing fields {missing}")
        return
    ids, mask = meta["token_ids"], meta["loss_mask"]
    if not ids or len(ids) != len(mask):
        rep.errors.append(f"{where}: {len(ids)} token_ids vs {len(mask)} loss_mask")
    elif set(mask) - {0, 1} or sum(mask) == 0:
        rep.errors.append(f"{where}: loss_mask must be 0/1 with at least one target")
    jpgs = sorted(k for k in files if k.endswith(".jpg"))
    if meta["frame_count"] != len(jpgs):
        rep.errors.append(f"{where}: frame_count {meta['frame_count']} but {len(jpgs)} .jpg files")
    if jpgs and jpgs != [f"{i:03d}.jpg" for i in range(len(jpgs))]:
        rep.errors.append(f"{where}: frame files are not 000.jpg..{len(jpgs) - 1:03d}.jpg")
    if bool(meta["is_text_only"]) != (len(jpgs) == 0):
        rep.errors.append(f"{where}: is_text_only={meta['is_text_only']} with {len(jpgs)} frames")
    for k in jpgs[:check_images]:
        try:
            im = Image.open(io.BytesIO(files[k]))
            im.load()
            if im.size != (224, 224) or im.format != "JPEG":
                rep.errors.append(f"{where}.{k}: {im.format} {im.size}, expected JPEG 224x224")
        except Exception as e:
            rep.errors.append(f"{where}.{k}: does not decode: {e}")
    rep.samples += 1
    rep.frame_counts.append(len(jpgs))
    rep.token_lengths.append(len(ids))
    tally = rep.by_source.setdefault(str(meta["source"]), [0, 0, 0])
    tally[0], tally[1], tally[2] = tally[0] + 1, tally[1] + len(jpgs), tally[2] + len(ids)


class HashingReader:
    """A read stream that hashes what passes through it (one read of a shard checks and hashes it)."""

    def __init__(self, f):
        self.f, self.sha = f, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha.update(data)
        return data

    def hexdigest(self) -> str:
        for _ in iter(lambda: self.read(1 << 20), b""):  # the rest (tar padding) counts too
            pass
        return self.sha.hexdigest()


def validate_tar(path: str, rep: ValidationReport, seen_keys: set[str], check_images: int = 3,
                 digests: dict[str, str] | None = None) -> int:
    """Check one tar (a path or URL, read once, front to back); returns its sample count.
    Errors are appended to ``rep``; with ``digests``, the file's sha256 is stored under ``path``."""
    n0, name = rep.samples, storage.name(path)
    try:
        with storage.open_read(path) as raw:
            stream = HashingReader(raw)
            _read_members(stream, name, rep, seen_keys, check_images)
            if digests is not None:
                digests[path] = stream.hexdigest()
    except (tarfile.TarError, OSError, EOFError) as e:
        if isinstance(e, storage.StorageError):
            raise  # the store, not the tar: its own message says what to set
        rep.errors.append(f"{name}: tar does not open/read: {e}")
    return rep.samples - n0


def _read_members(stream, name: str, rep: ValidationReport, seen_keys: set[str], check_images: int) -> None:
    from webdataset.tariterators import base_plus_ext

    done, cur, files = set(), None, {}
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for m in tar:
            if not m.isfile():
                continue
            key, ext = base_plus_ext(m.name)
            if key is None:
                rep.errors.append(f"{name}: member {m.name!r} has no KEY.ext name")
                continue
            if key != cur:
                if cur is not None:
                    _check_sample(f"{name}:{cur}", files, check_images, rep)
                    done.add(cur)
                if key in done:
                    rep.errors.append(f"{name}:{key}: files of this sample are not contiguous")
                if key in seen_keys:
                    rep.errors.append(f"{name}:{key}: duplicate sample key")
                seen_keys.add(key)
                cur, files = key, {}
            files[ext] = tar.extractfile(m).read()
        if cur is not None:
            _check_sample(f"{name}:{cur}", files, check_images, rep)


def validate_shards(target: str | list[str], *, max_shards: int | None = None, seed: int = 0,
                    check_images: int = 3) -> ValidationReport:
    """Validate a shard folder (uses its manifest) or a list of globs.

    Checks: tar opens; contiguous, unique sample keys; JSON parses with the contract fields;
    len(token_ids) == len(loss_mask) with at least one target; frame_count equals the number of
    ``NNN.jpg`` files; is_text_only iff no frames; the first ``check_images`` JPEGs decode at
    224x224; with a manifest, every listed shard exists with the recorded sha256 and sample
    count and no unlisted shard is present.  ``max_shards`` checks a seeded random subset.
    """
    rep = ValidationReport()
    folder = target if isinstance(target, (str, Path)) and storage.isdir(target) else None
    paths = expand_shards(target)
    manifest = None
    if folder is not None and storage.exists(storage.join(folder, "manifest.json")):
        try:
            manifest = json.loads(storage.read_text(storage.join(folder, "manifest.json")))
        except json.JSONDecodeError as e:
            rep.errors.append(f"manifest.json does not parse: {e}")
    if not paths:
        rep.errors.append(f"no .tar shards found in {target}")
        return rep
    if max_shards is not None and len(paths) > max_shards:
        paths = sorted(random.Random(seed).sample(paths, max_shards))
    listed = {s["path"]: s for s in manifest["shards"]} if manifest else {}
    if manifest:
        on_disk = {storage.name(p) for p in expand_shards(str(folder))}
        for extra in sorted(on_disk - set(listed)):
            rep.errors.append(f"{extra}: present but not in manifest.json")
        for gone in sorted(set(listed) - on_disk):
            rep.errors.append(f"{gone}: listed in manifest.json but missing")
    seen: set[str] = set()
    digests: dict[str, str] = {}
    for p in paths:
        name = storage.name(p)
        rep.shards.append(name)
        n = validate_tar(p, rep, seen, check_images, digests)
        if name in listed:
            ent = listed[name]
            if ent["num_samples"] != n:
                rep.errors.append(f"{name}: {n} samples, manifest says {ent['num_samples']}")
            if ent.get("sha256") and digests.get(p) != ent["sha256"]:
                rep.errors.append(f"{name}: sha256 differs from manifest.json")
    return rep
