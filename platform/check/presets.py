"""Presets of the foveation check: the glyph task's knobs, the config overrides both arms
train with, and the evaluation sizes.

    cpu-tiny   2 CPU cores, tiny random models: checks the plumbing (the CPU test)
    gpu        SmolLM2-135M + DINOv2-small from the model store, batch 96, one GPU per arm
               (or both arms sharing one)
    gpu-tiny   the gpu preset's task with the tiny random models, one label a video: what the
               check learns from scratch where no pretrained weights exist

and with a stand-in for pretrained DINOv2 (``platform/check/standin.py``: the DINOv2
architecture pretrained on the check's own image domain, built offline on first use):

    cpu-standin        tiny LLM + the tiny stand-in ViT, 2 CPU cores (the check in `make test`)
    gpu-tiny-standin   tiny LLM + the DINOv2-small stand-in, one GPU (the matrix's preset)
    gpu-standin        SmolLM2-135M + the DINOv2-small stand-in, one GPU

A stand-in preset names ``random_dino``: the same architecture with random weights, the
backbone of the matrix's control row.

An override listed later wins, so a preset can extend another one's list.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Preset:
    task: dict
    overrides: list[str]
    eval_videos: int
    heatmap_videos: int = 3
    max_new_tokens: int = 40
    val_fraction: float = 0.1
    samples_per_shard: int = 1000
    notes: str = ""
    random_dino: str | None = None  # a stand-in preset's backbone at random init (the control)


PRESETS: dict[str, Preset] = {
    # 2 CPU cores: tiny 2-layer LLM + ViT, a handful of videos, a few steps (the CPU test).
    "cpu-tiny": Preset(
        task=dict(num_videos=32, frames=4, distractors=1, glyph_size=0.3),
        overrides=[
            "model.llm=fovea/tiny-llama", "model.dino=fovea/tiny-dinov2", "model.coarse_loss_every=1",
            "data.batch_size=4", "data.max_frames=8", "data.num_workers=0", "data.shuffle_buffer=32",
            "data.max_text_tokens=96", "data.text_ratio=0",
            "training.stage=2", "training.max_steps=10", "training.grad_accum=1", "training.lr_connector=2e-3",
            "training.lr_dino=1e-3", "training.lr_llm=1e-3", "training.lr_target=null",
            "training.schedule=constant", "training.warmup_ratio=0", "training.checkpoint_every=1000",
            "training.log_every=2", "training.diagnostics_every=2", "training.checkpoint_metric=loss",
            "eval.every_steps=0", "eval.caption_samples=0", "eval.max_samples=8",
            "cluster.num_workers=1", "cluster.cpus_per_worker=1", "cluster.max_failures=1",
            "cluster.use_gpu=false",
        ],
        eval_videos=8, heatmap_videos=2, max_new_tokens=16, val_fraction=0.25, samples_per_shard=16,
        notes="tiny random models: checks the plumbing, not foveation"),
    # SmolLM2-135M + DINOv2-small (random weights in the offline store: everything is learned
    # from scratch, hence the higher backbone LRs). One GPU per arm, or both arms on one GPU.
    # Batch 96 (not 32): a step is bound by the host (kernel launches), so 3x the videos per
    # step cost little more wall time, and 32 videos a step are too few to learn the glyphs.
    "gpu": Preset(
        task=dict(num_videos=6000, frames=6, distractors=1, glyph_size=0.3),
        overrides=[
            "model.llm=HuggingFaceTB/SmolLM2-135M-Instruct", "model.dino=facebook/dinov2-small",
            "model.coarse_loss_every=10", "model.llm_dtype=float32", "model.gradient_checkpointing=dino",
            "data.batch_size=96", "data.max_frames=16", "data.num_workers=6", "data.shuffle_buffer=2000",
            "data.max_text_tokens=128", "data.text_ratio=0",
            "training.stage=2", "training.max_steps=500", "training.grad_accum=1", "training.compile=true",
            "training.lr_connector=1e-3", "training.lr_dino=5e-4", "training.lr_llm=3e-4", "training.lr_target=null",
            "training.schedule=cosine", "training.warmup_ratio=0.05", "training.checkpoint_every=100000",
            "training.log_every=10", "training.diagnostics_every=50", "training.checkpoint_metric=loss",
            "eval.every_steps=200", "eval.max_samples=128", "eval.caption_samples=0",
            "cluster.num_workers=1", "cluster.cpus_per_worker=4", "cluster.max_failures=0",
            "cluster.use_gpu=auto",
        ],
        eval_videos=256, heatmap_videos=3, max_new_tokens=40, val_fraction=0.05, samples_per_shard=1000,
        notes="random-init SmolLM2-135M + DINOv2-small, one GPU per arm"),
}
# The gpu preset's task and data with cpu-tiny's 2-layer random models and learning rates, one
# label a video: what the check can learn from scratch where no pretrained weights exist (the
# offline GPU machine). Random SmolLM2-135M + DINOv2-small stay at the text prior in a budget
# the check can afford; the tiny models read this task on 2 CPU cores.
PRESETS["gpu-tiny"] = Preset(
    task=dict(PRESETS["gpu"].task, caption="single"),
    overrides=PRESETS["gpu"].overrides + [
        "model.llm=fovea/tiny-llama", "model.dino=fovea/tiny-dinov2", "training.compile=false",
        "data.batch_size=48", "training.max_steps=1200", "training.lr_connector=2e-3", "training.lr_dino=1e-3",
        "training.lr_llm=1e-3", "training.schedule=constant", "training.warmup_ratio=0",
        "training.diagnostics_every=100", "eval.every_steps=400"],
    eval_videos=256, heatmap_videos=3, max_new_tokens=16, val_fraction=0.05, samples_per_shard=1000,
    notes="random 2-layer LLM + ViT on the gpu preset's task (one label a video)")


STANDIN_TINY = "fovea/standin-tiny-dinov2-glyphs"
STANDIN_SMALL = "fovea/standin-dinov2-small-glyphs"

# The backbone recognises glyphs already, so it trains at a tenth of the from-scratch LR (it
# is tuned, not taught) while the query path and the LLM learn where to look and what to say.
PRESETS["cpu-standin"] = Preset(
    task=dict(num_videos=96, frames=4, distractors=1, glyph_size=0.3, caption="single"),
    overrides=PRESETS["cpu-tiny"].overrides + [
        f"model.dino={STANDIN_TINY}", "data.batch_size=8", "training.max_steps=60", "training.lr_dino=1e-4",
        "training.log_every=10", "training.diagnostics_every=10", "eval.max_samples=16"],
    eval_videos=16, heatmap_videos=2, max_new_tokens=8, val_fraction=0.2, samples_per_shard=48,
    notes="tiny LLM + tiny stand-in ViT on 2 CPU cores", random_dino="fovea/tiny-dinov2")
# The matrix's preset: rows train 4 at a time on one GPU (8 arms, 2 CPUs each of 16). The
# stand-in is frozen: it names the glyphs already, and without its backward (and the patch
# blocks' recomputation) an arm's step costs the patch pass forward + the query path, which is
# what lets 11 rows of 250 steps share one card in a few minutes. The queries still pass
# through every DINOv2 layer, with gradients to the connector, the query projections and the LLM.
PRESETS["gpu-tiny-standin"] = Preset(
    task=dict(PRESETS["gpu-tiny"].task, num_videos=2000),
    overrides=PRESETS["gpu-tiny"].overrides + [
        f"model.dino={STANDIN_SMALL}", "training.max_steps=250", "model.freeze_dino=true",
        "model.gradient_checkpointing=false",
        "training.diagnostics_every=50", "eval.every_steps=0", "data.num_workers=2", "cluster.cpus_per_worker=2"],
    eval_videos=128, heatmap_videos=3, max_new_tokens=16, val_fraction=0.06, samples_per_shard=500,
    notes="tiny LLM + DINOv2-small stand-in, one GPU", random_dino="facebook/dinov2-small")
PRESETS["gpu-standin"] = Preset(
    task=dict(PRESETS["gpu"].task),
    overrides=PRESETS["gpu"].overrides + [f"model.dino={STANDIN_SMALL}", "training.lr_dino=5e-5"],
    eval_videos=256, heatmap_videos=3, max_new_tokens=40, val_fraction=0.05, samples_per_shard=1000,
    notes="SmolLM2-135M + DINOv2-small stand-in, one GPU per arm", random_dino="facebook/dinov2-small")
