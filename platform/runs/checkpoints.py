"""Training checkpoints: what goes into one, and how to find the one you want.

A checkpoint is a directory that Ray Train persists (``ray.train.report(...,
checkpoint=Checkpoint.from_directory(d))``) under ``<storage>/<run name>/checkpoint_*``:

    model/            FoveatedVLM.save_pretrained: safetensors + JSON config, enough to
                      reload the model without the training config (evaluate, stage 2/3 init)
    train_state.pt    optimizer, scheduler, step, samples seen, per-rank data position
                      (epoch, batches consumed) and per-rank RNG states (python, numpy,
                      torch, cuda) -- everything an exact resume needs
    meta.json         step, samples seen, the metrics reported with it, run name, stage

``init_from`` (stage 2 from stage 1, stage 3 from stage 2) accepts a checkpoint dir, a
``model/`` dir, a Ray run dir (``runs/ray/stage1_135m``: its best checkpoint by the
metric recorded in meta.json) or an MLflow run id (its ``best_checkpoint`` tag).

Every folder here may be a URL (``s3://bucket/runs/ray/stage1_135m``: Ray Train's storage path
on object storage, ``fovea.pipelines.storage``): a local folder comes back as a ``Path``, a URL
as a string; whoever needs local files copies them (``storage.local_dir``).
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fovea.pipelines import storage
from fovea.pipelines.storage import Location

log = logging.getLogger("fovea.checkpoints")

TRAIN_STATE = "train_state.pt"
META = "meta.json"
MODEL_DIR = "model"


# -- RNG -------------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- write / read ------------------------------------------------------------------

def write_checkpoint(path: Path, model, optimizer, scheduler, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write one checkpoint directory (rank 0). ``model`` is the unwrapped FoveatedVLM."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path / MODEL_DIR)
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), **state},
        path / TRAIN_STATE,
    )
    # Sizes of every other file, in meta.json written last: a checkpoint copied only in part
    # (a process killed while Ray persists it) is recognised as incomplete (sweep resume test).
    files = {str(f.relative_to(path)): f.stat().st_size for f in sorted(path.rglob("*")) if f.is_file()}
    (path / META).write_text(json.dumps({**meta, "files": files}, indent=2, default=str))
    return path


def read_train_state(path: Location) -> dict[str, Any]:
    p = storage.join(path, TRAIN_STATE)
    source = io.BytesIO(storage.read_bytes(p)) if storage.is_url(p) else p
    return torch.load(source, map_location="cpu", weights_only=False)


def read_meta(path: Location) -> dict[str, Any]:
    try:
        return json.loads(storage.read_text(storage.join(path, META)))
    except FileNotFoundError:
        return {}


# -- finding checkpoints ----------------------------------------------------------

def is_complete(p: Location) -> bool:
    """All files present, and (checkpoints that list them in meta.json) at their written size.
    One listing of the folder gives every size (one request on object storage)."""
    have = storage.file_sizes(p)
    if not all(f in have for f in (META, TRAIN_STATE, f"{MODEL_DIR}/model.safetensors")):
        return False
    try:
        files = read_meta(p).get("files")
    except (OSError, ValueError):  # meta.json itself only partly copied
        return False
    if not isinstance(files, dict):
        return True  # older checkpoints: presence only
    return all(have.get(rel) == size for rel, size in files.items())


def list_checkpoints(run_dir: Location) -> list[Location]:
    """Checkpoint dirs of a Ray run dir (a path or URL) that hold a complete checkpoint, oldest first."""
    found = [storage.join(run_dir, n) for n in storage.listdir(run_dir) if n.startswith("checkpoint_")]
    steps = {str(p): read_meta(p).get("step", -1) for p in found if is_complete(p)}
    return sorted((p for p in found if str(p) in steps), key=lambda p: (steps[str(p)], storage.name(p)))


def latest_checkpoint(run_dir: Location) -> Location | None:
    cks = list_checkpoints(run_dir)
    return cks[-1] if cks else None


def best_checkpoint(run_dir: Location, metric: str = "val_loss", mode: str = "min") -> Location | None:
    """Best by ``metric`` recorded in meta.json; checkpoints without it are skipped,
    and if none has it, the latest is returned."""
    scored = []
    for p in list_checkpoints(run_dir):
        v = read_meta(p).get("metrics", {}).get(metric)
        if isinstance(v, (int, float)) and v == v:
            scored.append((v, p))
    if not scored:
        return latest_checkpoint(run_dir)
    scored.sort(key=lambda t: t[0], reverse=(mode == "max"))
    return scored[0][1]


_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def resolve_init_from(ref: str, tracking_uri: str | None = None, metric: str = "val_loss",
                      mode: str = "min") -> Location:
    """``init_from`` (a path, a URL or an MLflow run id) -> a ``model/`` directory saved by
    save_pretrained (a ``Path``, or a URL string).

    Errors name the reference and what was looked for.
    """
    p = storage.location(ref)
    if not storage.exists(p) and _RUN_ID.match(ref):
        p = _checkpoint_from_mlflow(ref, tracking_uri)
    if not storage.exists(p):
        raise FileNotFoundError(
            f"init_from={ref!r}: no such path, and not an MLflow run id with a 'best_checkpoint' tag"
        )
    if storage.isdir(storage.join(p, MODEL_DIR)):  # a checkpoint dir
        return storage.join(p, MODEL_DIR)
    if any(storage.exists(storage.join(p, f)) for f in ("config.json", "fovea_config.json")):  # a model dir
        return p
    best = best_checkpoint(p, metric, mode)  # a Ray run dir
    if best is None:
        raise FileNotFoundError(f"init_from={ref!r}: {p} holds no checkpoint_*/ with model/ and meta.json")
    log.info("init_from %s -> best checkpoint %s (by %s)", ref, best, metric)
    return storage.join(best, MODEL_DIR)


def _checkpoint_from_mlflow(run_id: str, tracking_uri: str | None) -> Location:
    from mlflow.tracking import MlflowClient

    db = tracking_uri.removeprefix("sqlite:///") if tracking_uri and tracking_uri.startswith("sqlite:///") else None
    if db is not None and not Path(db).is_file():  # asking would create an empty store
        raise FileNotFoundError(f"no such path, and no MLflow store at {db} to look the run id up in")
    run = MlflowClient(tracking_uri).get_run(run_id)
    tag = run.data.tags.get("best_checkpoint") or run.data.tags.get("latest_checkpoint")
    if not tag:
        raise FileNotFoundError(f"MLflow run {run_id} has no 'best_checkpoint' tag")
    return storage.location(tag)
