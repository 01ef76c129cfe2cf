"""fovea.model: the Foveated VLM (DESIGN.md 1) -- what it is, how it is built, saved and
loaded.  It reads only its own ``ModelConfig`` and never imports the platform.

Public surface:

    build_model(model_cfg) -> FoveatedVLM        LLM + DINOv2 from the local store / hub
    FoveatedVLM                                  forward(mode=...), generate, query_attention,
                                                 save_pretrained / from_pretrained
    FoveatedEncoder                              DINOv2 patch pass + query pass
    load_tokenizer(cfg | ref | saved dir)
    load_state_dict_flexible(model, state)       strips module. / _orig_mod. prefixes
    MODES                                        ("coarse_fine", "coarse_only", "autoregressive")

Files:

    config.py       ModelConfig: what to build (the run config's ``model:`` section)
    vlm.py          FoveatedVLM: packing, the forward modes, the inference helpers
    encoder.py      FoveatedEncoder: DINOv2 patch pass (K/V cache) + query pass
    blocks.py       PatchBlock / QueryBlock (one DINOv2 layer each), frame normalisation
    fused_llm.py    the LLM's decoder layer with fused q/k/v and gate/up projections
    generation.py   autoregressive mode and generate (the visual loop with the KV cache)
    losses.py       masked text cross-entropy
    diagnostics.py  foveation health checks of a forward pass
    build.py        build_model, load_tokenizer (through the store)
    store.py        the local model store: offline weights resolved before the hub
    io.py           save_pretrained / from_pretrained, flexible state-dict loading
    naive.py        the unoptimised encoder that the throughput benchmarks compare against

Synthetic batches for tests and benchmarks are ``fovea.pipelines.batch.dummy_batch``.
"""

import importlib

# Loaded on first use (PEP 562): importing ``fovea.model.config`` -- the run config's ``model:``
# section -- then costs no torch or transformers import, and a bad config fails in a second.
_EXPORTS = {
    "build_model": "build", "load_tokenizer": "build", "FoveatedEncoder": "encoder", "PatchCache": "encoder",
    "FoveatedVLM": "vlm", "MODES": "vlm", "load_state_dict_flexible": "io", "unwrap_model": "io",
    "IGNORE_INDEX": "losses",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
