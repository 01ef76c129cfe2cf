"""``model:`` -- what to build: the LLM, the DINOv2 backbone, the query width and the
ablation switches.  The run config (``RunConfig`` in platform/config.py) holds one of these;
the model reads nothing else, so it can be built and tested without the platform."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Generation stops at end-of-sequence or after this many new tokens (the reference's cap, DESIGN.md
# 1.4); the default of FoveatedVLM.generate and of eval.max_new_tokens.
MAX_NEW_TOKENS = 200


class ModelConfig(BaseModel):
    """The Foveated VLM (docs/DESIGN.md, "The model")."""

    # strict: a bool where a number belongs, or a string where a float belongs, is refused
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

    llm: str = "HuggingFaceTB/SmolLM2-135M-Instruct"  # hub id or local path; local store first
    dino: str = "facebook/dinov2-small"
    query_dim: int | None = Field(None, ge=1)  # None -> DINOv2 width (384 small, 768 base); A2 uses 192
    deep_query: bool = True  # False -> shallow single cross-attention (A1, A7)
    query_bias: bool = False  # A3 reintroduces BUG-002
    query_init_std: float = Field(1.0, ge=0.0)  # A4 uses 0.02 (BUG-001)
    visual_scale: float = Field(0.14, gt=0.0)  # ~ std of SmolLM2 input embeddings
    lambda_coarse: float = Field(0.0, ge=0.0)  # weight of the auxiliary coarse CE
    coarse_loss_every: int = Field(1, ge=0)  # with lambda 0: no-grad coarse CE every N steps (0 = never)
    coarse_only: bool = False  # train in coarse_only mode (A6, A7)
    # coarse_only and autoregressive predict the first text token from the last visual position,
    # as the reference does (coarse_fine never scores it); False: no mode scores it, so the
    # three modes' losses cover the same tokens (DESIGN.md 1.4)
    score_first_text_token: bool = True
    freeze_dino: bool = False
    freeze_llm: bool = False
    # True: the LLM's layers and DINOv2's patch blocks; "dino": the patch blocks only (counted
    # eagerly on stage-1 batches, the patch blocks keep ~33 MB of activations a budget unit, the
    # LLM's layers ~13: jobs/bench/bench_memory.py, docs/PERFORMANCE.md).
    gradient_checkpointing: bool | Literal["dino"] = False
    # with gradient_checkpointing on DINOv2 (dino or true): how many of its patch blocks, the
    # first ones, are recomputed in backward (None = all). Each block left out keeps its
    # activations (~2.6 MB a budget unit counted eagerly, ~4 GB at 1536 units; less compiled) and
    # saves its forward's recompute, a twelfth of a patch forward for DINOv2-small: memory traded
    # for GPU time, which pays only where the GPU, not the host, bounds the step (PERFORMANCE.md)
    dino_checkpoint_layers: int | None = Field(None, ge=0)
    # DINOv2's patch blocks keep fc1's output but not GELU's for backward, where GELU runs again
    # (selective checkpointing of the MLP, blocks.PatchBlock): compiled, ~1 MB a frame less a kept
    # block; the memory is for keeping more blocks (dino_checkpoint_layers). GELU MLPs only
    dino_recompute_gelu: bool = False
    llm_dtype: Literal["float32", "bfloat16"] = "float32"
    # the training passes' LLM layers with q/k/v and gate/up each one matmul (model/fused_llm.py):
    # fewer kernel launches a step, which pays where the host's launches bound the step (several GPUs)
    fused_llm_projections: bool = True
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    # DINOv2's patch attention on CUDA ([frames, H, 257, hd]): "flash" is PyTorch's choice with
    # cuDNN attention off (configure_cuda_backends); "cudnn" pins cuDNN attention there, faster per
    # call but it builds an execution plan for every new frame count (docs/PERFORMANCE.md). CPU
    # tensors always take PyTorch's CPU kernels. "fa4" takes FlashAttention-4's kernels there
    # (model/fa4.py; needs the flash-attn-4 package and an SM90/SM100 GPU).
    dino_attention: Literal["flash", "cudnn", "fa4"] = "flash"
    # the query pass's attention, one query token over a frame's cached keys/values. A fused
    # kernel tiles over queries, which one token cannot fill, and its backward still writes dK
    # and dV for every cached key. "reduce" writes q k^T, softmax and w v as multiply + sum: compiled
    # blocks fuse each into a reduction kernel that reads K (or V) once, but eagerly it materialises
    # the fp32 products and is slower than "sdpa" (PyTorch's fused kernel). "auto" takes "reduce"
    # where torch.compile traces the blocks (training.compile) and "sdpa" where they run eagerly
    # (blocks.query_attention; the measured kernels: docs/PERFORMANCE.md, "Decisions")
    query_attention: Literal["auto", "sdpa", "reduce"] = "auto"
    # the patch pass runs at the frame count rounded up to a multiple of this (blank frames,
    # dropped again from its keys/values/features, so losses and gradients are the unpadded
    # run's): token-budget batches then bring at most budget / bucket counts, so cuDNN's plans
    # (model.dino_attention=cudnn) are built once each; costs the padding's work. 0 = off
    # (each batch's own count). DESIGN.md 1.2
    frame_bucket: int = Field(0, ge=0)
    # the training loss's LM head + cross-entropy as Liger-Kernel's fused linear cross-entropy
    # (chunked: no [tokens, vocab] logits in memory); CUDA only, needs the `gpu` extra
    # (liger-kernel). The rest of Liger's Llama kernels (RMSNorm, SwiGLU, RoPE) sit inside the
    # compiled LLM blocks, which inductor fuses already.
    liger_fused_ce: bool = False
    # the training passes' LLM input [rows, length] padded up to multiples of these (blank rows
    # and trailing zero slots, which the packed layout keeps out of every real token's view, so
    # losses and gradients are the unpadded run's): the three passes then take a few dozen shapes
    # instead of one per batch, which CUDA graphs need (one graph per shape). 0 = off. DESIGN.md 1.5
    llm_row_bucket: int = Field(0, ge=0)
    llm_length_bucket: int = Field(0, ge=0)
    # the training passes' LLM as CUDA graphs: each compiled fused layer in torch.compile's
    # "reduce-overhead" mode, recorded once per layer and [rows, length] shape and replayed, so
    # the host launches graphs instead of every kernel. Needs training.compile,
    # training.grad_accum=1, both LLM buckets and no LLM checkpointing. Opt-in: the real step
    # runs slower with it than without (docs/PERFORMANCE.md)
    llm_cudagraphs: bool = False

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.fused_llm_projections and self.attn_implementation != "sdpa":
            raise ValueError("model.fused_llm_projections runs the training passes' attention through SDPA; "
                             f"with model.attn_implementation={self.attn_implementation} set "
                             "model.fused_llm_projections=false")
        if self.dino_checkpoint_layers is not None and not self.gradient_checkpointing:
            raise ValueError(f"model.dino_checkpoint_layers={self.dino_checkpoint_layers} counts the DINOv2 patch "
                             "blocks recomputed in backward: set model.gradient_checkpointing=dino (or true), "
                             "or leave model.dino_checkpoint_layers unset")
        if self.llm_cudagraphs:
            if not (self.llm_row_bucket and self.llm_length_bucket):
                raise ValueError("model.llm_cudagraphs records a CUDA graph for every LLM input shape: set "
                                 "model.llm_row_bucket and model.llm_length_bucket (e.g. 16 and 16) so "
                                 "that shapes repeat")
            if not self.fused_llm_projections:
                raise ValueError("model.llm_cudagraphs compiles the fused LLM layers: set "
                                 "model.fused_llm_projections=true")
            if self.gradient_checkpointing is True:
                raise ValueError("model.llm_cudagraphs cannot record checkpointed layers (CUDA graphs inside "
                                 "torch.utils.checkpoint): set model.gradient_checkpointing=dino or false")
        return self


