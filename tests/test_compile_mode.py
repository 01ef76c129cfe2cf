"""``training.compile_mode``: the mode of the blocks' regional torch.compile. Whether
"max-autotune-no-cudagraphs" makes the step faster is a GPU figure (docs/PERFORMANCE.md); here:
that every compiled region is built with the mode's inductor options, and that the config names
the key when the mode comes without ``training.compile``."""

from __future__ import annotations

import pytest

from fovea.model import build_model
from fovea.model.config import ModelConfig
from fovea.platform.config import ConfigError, load_config

TINY = dict(llm="fovea/tiny-llama", dino="fovea/tiny-dinov2")


def test_config_takes_the_mode_with_compile_and_names_the_key_without():
    assert load_config("stage1_135m").training.compile_mode == "default"
    cfg = load_config("stage1_135m", ["training.compile=true", "training.compile_mode=max-autotune-no-cudagraphs"])
    assert cfg.training.compile_mode == "max-autotune-no-cudagraphs"
    with pytest.raises(ConfigError) as err:
        load_config("stage1_135m", ["training.compile_mode=max-autotune-no-cudagraphs"])
    assert "training.compile_mode" in str(err.value) and "training.compile=true" in str(err.value)
    with pytest.raises(ConfigError) as err:  # the mode with CUDA graphs would record a graph per shape
        load_config("stage1_135m", ["training.compile=true", "training.compile_mode=max-autotune"])
    assert "training.compile_mode" in str(err.value)


def _regions(model):
    enc = model.encoder
    return [*enc.patch_blocks, *enc.query_blocks, *model.llm.get_decoder().layers, *(model.fused_layers or ())]


@pytest.mark.parametrize("mode,autotune", [("default", False), ("max-autotune-no-cudagraphs", True)])
def test_every_compiled_region_carries_the_modes_options(model_store, mode, autotune):
    model = build_model(ModelConfig(**TINY))
    model.compile_blocks(mode=mode)  # as the training loop passes training.compile_mode
    regions = _regions(model)
    assert len(regions) > 4 and all(r._compiled_call_impl is not None for r in regions)
    for r in regions:
        opts = r._compiled_call_impl.get_compiler_config()  # the inductor options it was built with
        assert opts["max_autotune"] is autotune and opts["triton.cudagraphs"] is False, type(r).__name__
