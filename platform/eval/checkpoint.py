"""The model under evaluation: ``--checkpoint`` (a path, a URL such as ``s3://bucket/runs/ray/<name>``,
or an MLflow run id) resolved to a ``save_pretrained`` model dir, and loaded with its tokenizer
(a URL's folder is copied to a temporary local one for the loading)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from fovea.pipelines import storage
from fovea.platform.config import RunConfig

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def resolve_checkpoint(ref: str, tracking_uri: str | None = None) -> storage.Location:
    """``--checkpoint`` -> a ``save_pretrained`` model dir.

    Accepts a model dir, a Ray checkpoint dir holding ``model/``, a Ray run dir (its best
    checkpoint by meta.json), or an MLflow run id: its tag ``best_checkpoint`` /
    ``checkpoint_path`` (or param ``checkpoint_path``), else its artifact ``best_checkpoint``
    (downloaded).
    """
    from fovea.platform.runs.checkpoints import resolve_init_from

    if not _RUN_ID.match(ref) or storage.exists(ref):
        return resolve_init_from(ref, tracking_uri)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.get_run(ref)
    for cand in (run.data.tags.get("best_checkpoint"), run.data.tags.get("checkpoint_path"),
                 run.data.params.get("checkpoint_path"), run.data.tags.get("latest_checkpoint")):
        if cand and storage.exists(cand):
            return resolve_init_from(cand, tracking_uri)
    try:
        local = client.download_artifacts(ref, "best_checkpoint")
        return resolve_init_from(local, tracking_uri)
    except Exception as e:  # noqa: BLE001
        raise FileNotFoundError(
            f"MLflow run {ref}: no existing 'best_checkpoint'/'checkpoint_path' tag or param, and no "
            f"'best_checkpoint' artifact ({e})") from e


def load_model_for_eval(model_dir: str | Path, device: torch.device | str = "cpu"):
    """(FoveatedVLM in eval mode, tokenizer) from a save_pretrained dir (a path or a URL)."""
    from fovea.model.build import load_tokenizer
    from fovea.model.vlm import FoveatedVLM

    with storage.local_dir(model_dir) as local:
        model = FoveatedVLM.from_pretrained(local, device=device).eval()
        try:
            tok = load_tokenizer(local)
        except Exception:  # noqa: BLE001 - no tokenizer/ folder: the LLM's own
            tok = load_tokenizer(model.cfg)
    return model, tok


def model_for_eval(cfg: RunConfig, model, tokenizer, checkpoint: str | None, device: torch.device):
    """(model on ``device``, tokenizer, model dir or None): the given model, else the one at
    ``checkpoint``; the tokenizer defaults to the checkpoint's, else the model's LLM's."""
    model_dir = None
    if model is None:
        if checkpoint is None:
            raise ValueError("run_evaluation needs a model or a checkpoint")
        model_dir = resolve_checkpoint(str(checkpoint), cfg.tracking_uri())
        model, tok = load_model_for_eval(model_dir, device)
        tokenizer = tokenizer or tok
    else:
        model = model.to(device)
    if tokenizer is None:
        from fovea.model.build import load_tokenizer

        tokenizer = load_tokenizer(model.cfg)
    return model, tokenizer, model_dir
