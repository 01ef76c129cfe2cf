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

from .build import build_model, load_tokenizer
from .encoder import FoveatedEncoder, PatchCache
from .io import load_state_dict_flexible, unwrap_model
from .losses import IGNORE_INDEX
from .vlm import MODES, FoveatedVLM

__all__ = [
    "build_model", "load_tokenizer", "FoveatedEncoder", "PatchCache", "FoveatedVLM", "MODES",
    "load_state_dict_flexible", "unwrap_model", "IGNORE_INDEX",
]
