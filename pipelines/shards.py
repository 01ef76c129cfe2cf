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
"""

from __future__ import annotations

import glob as globlib
import hashlib
import io
import json
import os
import random
import re
import statistics
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

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
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_if_changed(path: str | Path, data: bytes) -> bool:
    """Atomic write unless the file already holds exactly ``data`` (keeps mtimes on reruns)."""
    path = Path(path)
    if path.exists() and path.read_bytes() == data:
        return False
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
    """One tar, written to ``<path>.tmp`` and renamed by ``commit``.  Samples are contiguous."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
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
        os.replace(self.tmp, self.path)
        return digest, size

    def abort(self) -> None:
        self._tar.close()
        self.tmp.unlink(missing_ok=True)


# -- per-shard state ------------------------------------------------------------------------

def state_path(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / STATE_DIR / (name.removesuffix(".tar") + ".json")


def read_state(out_dir: str | Path, name: str) -> dict | None:
    p = state_path(out_dir, name)
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_state(out_dir: str | Path, name: str, state: dict) -> None:
    p = state_path(out_dir, name)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_if_changed(p, dumps(state))


def shard_is_complete(out_dir: str | Path, name: str, plan_hash: str) -> bool:
    """The tar exists, its state matches this plan, and its size matches the state."""
    st = read_state(out_dir, name)
    p = Path(out_dir) / name
    return bool(st and st.get("plan_hash") == plan_hash and p.exists() and p.stat().st_size == st.get("bytes"))


# -- manifest ---------------------------------------------------------------------------------

def build_manifest(out_dir: str | Path, states: list[tuple[str, dict]], header: dict) -> dict:
    """DESIGN.md 3.6 manifest: frame-count distribution, buckets, token totals, per-shard counts."""
    shards, dist, buckets = [], {}, {name: [] for name, _, _ in BUCKETS}
    total_tokens = total = 0
    for i, (name, st) in enumerate(states):
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
    splits = {}
    for s in shards:
        splits[s["split"]] = splits.get(s["split"], 0) + s["num_samples"]
    return {
        **header,
        "data_dir": str(Path(out_dir).resolve()),
        "num_shards": len(shards), "total_samples": total, "samples_per_split": splits,
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
                 f"tokens per sample: {stats(self.token_lengths)}",
                 f"errors: {len(self.errors)}"]
        lines += [f"  ERROR {e}" for e in self.errors[:50]]
        if len(self.errors) > 50:
            lines.append(f"  ... and {len(self.errors) - 50} more")
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


def expand_shards(patterns: str | list[str]) -> list[str]:
    """Globs / files / folders -> sorted unique .tar paths."""
    if isinstance(patterns, (str, Path)):
        patterns = [str(patterns)]
    out: set[str] = set()
    for pat in patterns:
        if os.path.isdir(pat):
            out.update(str(p) for p in Path(pat).glob("*.tar"))
        else:
            out.update(p for p in globlib.glob(str(pat)) if p.endswith(".tar"))
    return sorted(out)


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


def validate_tar(path: str, rep: ValidationReport, seen_keys: set[str], check_images: int = 3) -> int:
    """Check one tar; returns its sample count.  Errors are appended to ``rep``."""
    from webdataset.tariterators import base_plus_ext

    n0, done, cur, files = rep.samples, set(), None, {}
    name = os.path.basename(path)
    try:
        with tarfile.open(path, "r") as tar:
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
    except (tarfile.TarError, OSError, EOFError) as e:
        rep.errors.append(f"{name}: tar does not open/read: {e}")
    return rep.samples - n0


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
    folder = Path(target) if isinstance(target, (str, Path)) and Path(target).is_dir() else None
    paths = expand_shards(target)
    manifest = None
    if folder is not None and (folder / "manifest.json").exists():
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except json.JSONDecodeError as e:
            rep.errors.append(f"manifest.json does not parse: {e}")
    if not paths:
        rep.errors.append(f"no .tar shards found in {target}")
        return rep
    if max_shards is not None and len(paths) > max_shards:
        paths = sorted(random.Random(seed).sample(paths, max_shards))
    listed = {s["path"]: s for s in manifest["shards"]} if manifest else {}
    if manifest:
        on_disk = {os.path.basename(p) for p in expand_shards(str(folder))}
        for extra in sorted(on_disk - set(listed)):
            rep.errors.append(f"{extra}: present but not in manifest.json")
        for gone in sorted(set(listed) - on_disk):
            rep.errors.append(f"{gone}: listed in manifest.json but missing")
    seen: set[str] = set()
    for p in paths:
        name = os.path.basename(p)
        rep.shards.append(name)
        n = validate_tar(p, rep, seen, check_images)
        if name in listed:
            ent = listed[name]
            if ent["num_samples"] != n:
                rep.errors.append(f"{name}: {n} samples, manifest says {ent['num_samples']}")
            if ent.get("sha256") and sha256_file(p) != ent["sha256"]:
                rep.errors.append(f"{name}: sha256 differs from manifest.json")
    return rep
