"""fovea.model: the Foveated VLM (spec section 1, issue 3).

Public surface:

    build_model(model_cfg) -> FoveatedVLM        LLM + DINOv2 from the local store / hub
    FoveatedVLM                                  forward(mode=...), generate, query_attention,
                                                 save_pretrained / from_pretrained
    FoveatedEncoder                              DINOv2 patch pass + query pass
    load_tokenizer(cfg | ref | saved dir)
    load_state_dict_flexible(model, state)       strips module. / _orig_mod. prefixes
    MODES                                        ("coarse_fine", "coarse_only", "autoregressive")

Files, top to bottom: encoder.py (FoveatedEncoder), vlm.py (FoveatedVLM, packing,
forward modes), generation.py (autoregressive loop, generate), losses.py (masked CE),
diagnostics.py, build.py (build_model, load_tokenizer), io.py (save/load), dummy.py
(synthetic batches for tests and jobs/bench/bench_model.py).
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
