"""Save / load a FoveatedVLM without the training config, the store or the hub.

Folder written by ``save_pretrained(dir)``:

    config.json         {"fovea_format": 1, "model": ModelConfig, "llm_config": HF LLM
                         config dict, "dino_config": HF DINOv2 config dict, "dims": {...}}
    model.safetensors   the full state dict, each tensor in its own dtype (bf16 LLM stays
                         bf16); tied tensors (lm_head = embed_tokens) stored once
    tokenizer/          the LLM's tokenizer when it can be found (for load_tokenizer(dir))

``from_pretrained(dir)`` rebuilds the LLM (``AutoModelForCausalLM.from_config``) and
DINOv2 (``Dinov2Model``) from those configs and loads the weights, so logits reproduce
bit-exactly. ``load_state_dict_flexible`` loads raw state dicts from training
checkpoints: it strips ``module.`` (DDP) and ``_orig_mod.`` (torch.compile, whole model
or submodules) and accepts a missing tied ``lm_head.weight``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from .config import ModelConfig

from .blocks import FRAME_SIZE
from .build import DTYPES, apply_training_flags, load_tokenizer
from .vlm import FoveatedVLM

log = logging.getLogger("fovea.model")
FORMAT = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel) or (
            type(model).__name__ in ("DistributedDataParallel", "DataParallel") and hasattr(model, "module")
        ):
            model = model.module
        else:
            return model


def clean_key(key: str) -> str:
    """'module._orig_mod.encoder._orig_mod.x' -> 'encoder.x'."""
    while key.startswith("module."):
        key = key[len("module."):]
    return key.replace("_orig_mod.", "")


def _dedupe(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep one name per shared storage (safetensors refuses aliases)."""
    seen: set[tuple] = set()
    out = {}
    for k, v in state.items():
        sig = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), v.dtype)
        if sig in seen:
            continue
        seen.add(sig)
        out[k] = v.detach().contiguous().cpu()
    return out


def load_state_dict_flexible(model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True):
    """Load a (possibly DDP/compiled, possibly tied-deduplicated) state dict into ``model``.

    Returns (missing, unexpected) after excusing keys that alias a loaded tensor. With
    ``strict`` any other missing or unexpected key raises.
    """
    model = unwrap_model(model)
    state = {clean_key(k): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    own = model.state_dict()
    loaded = {(own[k].data_ptr(), own[k].dtype) for k in state if k in own}
    missing = [k for k in missing if (own[k].data_ptr(), own[k].dtype) not in loaded]
    if strict and (missing or unexpected):
        raise RuntimeError(f"state dict mismatch: missing {missing[:10]}, unexpected {list(unexpected)[:10]}")
    return missing, list(unexpected)


def save_pretrained(model: nn.Module, directory, tokenizer=None) -> Path:
    """Write config.json + model.safetensors (+ tokenizer/) into ``directory``."""
    from safetensors.torch import save_file

    model = unwrap_model(model)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "fovea_format": FORMAT,
        "model": model.cfg.model_dump(mode="json"),
        "llm_config": model.llm.config.to_dict(),
        "dino_config": model.encoder.dino.config.to_dict(),
        # Np for the 224-px frames of the shards; from the patch size, not the DINOv2 config's
        # image_size (518 in the published configs)
        "dims": {"D": model.encoder.dim, "Dq": model.encoder.query_dim, "d": model.llm.config.hidden_size,
                 "patch_size": model.encoder.patch_size, "Np": model.encoder.num_tokens(FRAME_SIZE)},
    }
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2, default=str))
    save_file(_dedupe(model.state_dict()), str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    try:
        tok = tokenizer if tokenizer is not None else load_tokenizer(model.cfg)
        tok.save_pretrained(out / "tokenizer")
    except Exception as e:  # weights stay usable without it
        log.warning("no tokenizer saved with the model: %s", e)
    return out


def from_pretrained(directory, device="cpu") -> FoveatedVLM:
    """Rebuild a FoveatedVLM from a ``save_pretrained`` folder (no store, no hub)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, Dinov2Config, Dinov2Model

    src = Path(directory)
    meta = json.loads((src / CONFIG_FILE).read_text())
    if meta.get("fovea_format") != FORMAT:
        raise ValueError(f"{src}: not a fovea save_pretrained folder (fovea_format != {FORMAT})")
    cfg = ModelConfig.model_validate(meta["model"])
    llm_d = dict(meta["llm_config"])
    llm_cfg = AutoConfig.for_model(llm_d.pop("model_type"), **llm_d)
    llm = AutoModelForCausalLM.from_config(llm_cfg, dtype=DTYPES[cfg.llm_dtype],
                                           attn_implementation=cfg.attn_implementation)
    dino = Dinov2Model(Dinov2Config.from_dict(meta["dino_config"]))
    model = FoveatedVLM(llm, dino, cfg)
    load_state_dict_flexible(model, load_file(str(src / WEIGHTS_FILE)), strict=True)
    model.llm.tie_weights()
    return apply_training_flags(model).to(device)
