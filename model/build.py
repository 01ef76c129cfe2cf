"""Build a FoveatedVLM from a ModelConfig through the local model store (offline first).

    model = build_model(ModelConfig(llm="fovea/tiny-llama", dino="fovea/tiny-dinov2"))
    tok = load_tokenizer(cfg)          # or a ref, or a save_pretrained folder

The LLM loads with ``AutoModelForCausalLM`` in ``llm_dtype`` (fp32 or bf16) and
``attn_implementation``; DINOv2 with ``Dinov2Model`` in fp32; the new parameters are
fp32. Random-weight store entries (DINOv2 here) are logged loudly (``warn_if_random``).
``freeze_dino`` / ``freeze_llm`` turn off requires_grad on ``encoder.dino`` / ``llm``
only (query_input_proj, output_proj and the connectors stay trainable, DESIGN.md 4.1).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import ModelConfig
from .store import model_config, resolve_model_ref, warn_if_random

from .vlm import FoveatedVLM

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load_llm(ref: str, dtype: str = "float32", attn_implementation: str = "sdpa"):
    """Hub id / store name / path -> HF causal LM (Llama family) in ``dtype``."""
    from transformers import AutoModelForCausalLM

    warn_if_random(ref, "LLM")
    return AutoModelForCausalLM.from_pretrained(resolve_model_ref(ref), dtype=DTYPES[dtype],
                                                attn_implementation=attn_implementation)


def load_dino(ref: str):
    """Hub id / store name / path -> ``Dinov2Model`` (fp32)."""
    from transformers import Dinov2Model

    warn_if_random(ref, "DINOv2")
    return Dinov2Model.from_pretrained(resolve_model_ref(ref), dtype=torch.float32)


def apply_training_flags(model: FoveatedVLM) -> FoveatedVLM:
    """freeze_dino / freeze_llm / gradient_checkpointing from ``model.cfg`` (mask_token: frozen)."""
    c = model.cfg
    # DINOv2's mask_token serves masked-image pre-training only (bool_masked_pos), never used
    # here: frozen, so every trainable parameter gets a gradient every step and DDP can skip
    # its unused-parameter search (cluster.ddp_find_unused).
    mask_token = getattr(model.encoder.dino.embeddings, "mask_token", None)
    if mask_token is not None:
        mask_token.requires_grad_(False)
    if c.freeze_dino:
        model.encoder.dino.requires_grad_(False)
    if c.freeze_llm:
        model.llm.requires_grad_(False)
    if c.gradient_checkpointing == "dino":  # DINOv2 patch blocks only: most of the activations
        model.encoder.checkpoint_patches = True
    elif c.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if c.dino_checkpoint_layers is not None:
        check_dino_checkpoint_layers(c, len(model.encoder.patch_blocks))
        model.encoder.checkpoint_layers = c.dino_checkpoint_layers
    return model


def check_dino_checkpoint_layers(c: ModelConfig, layers: int, where: str = "") -> None:
    """``model.dino_checkpoint_layers`` at most DINOv2's ``layers`` patch blocks (ValueError);
    the training job's preflight reads ``layers`` from the model's config, the build from the model."""
    if c.dino_checkpoint_layers is not None and c.dino_checkpoint_layers > layers:
        raise ValueError(f"model.dino_checkpoint_layers={c.dino_checkpoint_layers}{where}, but model.dino={c.dino!r} "
                         f"has {layers} patch blocks: set 0..{layers} (0 recomputes none)")


def build_model(model_cfg: ModelConfig | None = None) -> FoveatedVLM:
    """ModelConfig -> FoveatedVLM with pretrained (or store) LLM and DINOv2, new parts random."""
    cfg = model_cfg or ModelConfig()
    llm = load_llm(cfg.llm, cfg.llm_dtype, cfg.attn_implementation)
    dino = load_dino(cfg.dino)
    return apply_training_flags(FoveatedVLM(llm, dino, cfg))


def build_model_on_meta(model_cfg: ModelConfig) -> FoveatedVLM:
    """The model's structure on the meta device: every parameter's shape and dtype, no weights, no
    memory, no file (the published configs serve where the store has no folder). For dry runs:
    parameter counts and the step's memory of a model too big for this machine."""
    from transformers import AutoModel, AutoModelForCausalLM

    c = model_cfg
    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(model_config(c.llm), dtype=DTYPES[c.llm_dtype],
                                               attn_implementation=c.attn_implementation)
        dino = AutoModel.from_config(model_config(c.dino), dtype=torch.float32)
        return apply_training_flags(FoveatedVLM(llm, dino, c))


def load_tokenizer(model_cfg_or_ref):
    """Tokenizer (with chat template) for a ModelConfig, an LLM ref, or a saved model folder.

    The pad token defaults to eos when the tokenizer has none (DESIGN.md 2.2).
    """
    from transformers import AutoTokenizer

    if isinstance(model_cfg_or_ref, ModelConfig):
        ref = model_cfg_or_ref.llm
    elif isinstance(model_cfg_or_ref, FoveatedVLM):
        ref = model_cfg_or_ref.cfg.llm
    else:
        ref = str(model_cfg_or_ref)
    path = Path(ref).expanduser()
    if path.is_dir() and (path / "tokenizer").is_dir():  # a save_pretrained folder
        src = str(path / "tokenizer")
    else:
        src = resolve_model_ref(ref)
    tok = AutoTokenizer.from_pretrained(src)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
