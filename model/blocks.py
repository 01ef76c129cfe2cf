"""The two per-layer computations of the FoveatedEncoder, as small modules (DESIGN.md 1.2).

Both wrap one Hugging Face ``Dinov2Layer`` and reuse its weights; they hold no weights of
their own and are not registered as submodules (the state dict is the HF layer's):

    PatchBlock(layer)(h)         h [n,Np,D] -> (h' [n,Np,D], k [n,H,Np,hd], v [n,H,Np,hd])
        the layer itself, written out so that it also returns the keys/values its attention
        used (W_k LN1(h) + b_k, W_v LN1(h) + b_v); equal to ``layer(h)`` (tests pin it).
    QueryBlock(layer)(h, k, v)   h [n,1,D], cached k/v [n,H,Np,hd] -> h' [n,1,D]
        the same block for a 1-token query whose attention reads only the cached K/V.

Why modules: regional ``torch.compile``.  Every PatchBlock has the same code, so
``block.compile(dynamic=True)`` on the 12 of them compiles one graph (forward and backward)
that all layers share; same for the QueryBlocks and the LLM's decoder layers.  That cuts
the ~10k kernel launches of an eager training step, which is what bounds it on a fast GPU
(``jobs/bench/bench_train.py``, ``jobs/bench/profile_train_step.py``).  Eager is the default; ``FoveatedVLM.compile_blocks()`` turns
compilation on.

``normalize_frames``: uint8 frames (the packed training batch) -> ImageNet-normalised
float on the device, so the loader ships 1 byte per pixel instead of 4. The constants below
serve the model and platform code; ``fovea.pipelines.loader`` keeps its own copy (pipelines do
not import the model), and tests/test_pipelines_loader.py pins that the two agree.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FRAME_SIZE = 224  # the frames' side in the shards (pipelines/video.py; a test pins the two)


@functools.lru_cache(maxsize=None)
def _mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std [3,1,1] on ``device``, made once: a copy from the host every
    batch would make the host wait for the GPU (two syncs a training step)."""
    return (torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1),
            torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1))


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] (0..255) -> float32 (x / 255 - mean) / std; float input is returned as is."""
    if frames.dtype != torch.uint8:
        return frames
    mean, std = _mean_std(frames.device)
    return (frames.float() / 255.0 - mean) / std


def attn_linears(layer: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear, nn.Linear]:
    """(W_q, W_k, W_v, W_o) of a Dinov2Layer, for either transformers 5 naming:
    ``attention.{q,k,v,o}_proj`` (5.2x) or ``attention.attention.{query,key,value}`` +
    ``attention.output.dense`` (earlier releases)."""
    at = layer.attention
    if hasattr(at, "q_proj"):
        return at.q_proj, at.k_proj, at.v_proj, at.o_proj
    return at.attention.query, at.attention.key, at.attention.value, at.output.dense


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[n, N, D] -> [n, H, N, hd]."""
    n, N, D = x.shape
    return x.view(n, N, num_heads, D // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[n, H, N, hd] -> [n, N, D]."""
    n, H, N, hd = x.shape
    return x.transpose(1, 2).reshape(n, N, H * hd)


def patch_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "flash") -> torch.Tensor:
    """SDPA over the patch tokens (scale 1/sqrt(hd); attention dropout is 0 in DINOv2).

    ``backend`` is ``model.dino_attention``: "cudnn" pins cuDNN attention for CUDA tensors (inside a
    compiled block too: dynamo traces ``sdpa_kernel``); "fa4" takes FlashAttention-4's kernels
    there (model/fa4.py); "flash", and any CPU tensor, leave the choice to PyTorch, which on CUDA
    has cuDNN off (configure_cuda_backends)."""
    if backend == "cudnn" and q.is_cuda:
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v)
    if backend == "fa4" and q.is_cuda:
        from .fa4 import fa4_attention  # registers the custom ops on first use only
        return fa4_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)


def _keep_all_but_gelu(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """Selective checkpointing policy of the MLP (``model.dino_recompute_gelu``): GELU and the
    dtype casts run again in backward; every other op's output is kept (fc1's, above all)."""
    if op in (torch.ops.aten.gelu.default, torch.ops.aten._to_copy.default):
        return CheckpointPolicy.PREFER_RECOMPUTE
    return CheckpointPolicy.MUST_SAVE


def check_gelu_mlp(layer: nn.Module, hidden_act: str) -> None:
    """``model.dino_recompute_gelu`` needs the GELU MLP (fc1, exact GELU, fc2) of DINOv2-small,
    -base and -large; -giant's SwiGLU feed-forward has no such pair (ValueError)."""
    if not (hasattr(layer.mlp, "fc1") and hasattr(layer.mlp, "fc2") and hidden_act == "gelu"):
        raise ValueError(f"model.dino_recompute_gelu=true recomputes the GELU of DINOv2's fc1 -> GELU -> fc2 MLP; "
                         f"this DINOv2 has {type(layer.mlp).__name__} with hidden_act={hidden_act!r}: "
                         "set model.dino_recompute_gelu=false")


class PatchBlock(nn.Module):
    """One DINOv2 block over CLS + patch tokens that also returns its K/V.

    FLOPs per frame (Np = 257, D = 384): QKV + O 8 Np D^2, MLP 16 Np D^2, attention 4 Np^2 D.
    ``recompute_gelu`` (``model.dino_recompute_gelu``): the MLP runs under selective activation
    checkpointing (torch.utils.checkpoint's ``create_selective_checkpoint_contexts``) that keeps
    fc1's output and recomputes GELU and the casts. Plain autograd, compiled too, keeps GELU's
    output as well ([257, 1536] bf16 a frame, 789 KB, for fc2's weight gradient); compiled, a kept
    DINOv2-small block then holds ~1 MB a frame less (docs/PERFORMANCE.md), room to keep more
    blocks (``model.dino_checkpoint_layers``) for one more GELU pass in backward.
    """

    def __init__(self, layer: nn.Module, num_heads: int, attention: str = "flash", recompute_gelu: bool = False):
        super().__init__()
        object.__setattr__(self, "layer", layer)  # not a submodule: no second copy in state dicts
        self.num_heads = num_heads
        self.attention = attention  # model.dino_attention
        self.recompute_gelu = recompute_gelu

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        if not self.recompute_gelu:
            return self.layer.mlp(x)
        return checkpoint(self.layer.mlp, x, use_reentrant=False,
                          context_fn=functools.partial(create_selective_checkpoint_contexts, _keep_all_but_gelu))

    def forward(self, h: torch.Tensor):
        layer, H = self.layer, self.num_heads
        q_proj, k_proj, v_proj, o_proj = attn_linears(layer)
        x = layer.norm1(h)  # [n, Np, D]
        q, k, v = (split_heads(p(x), H) for p in (q_proj, k_proj, v_proj))  # [n, H, Np, hd]
        a = patch_attention(q, k, v, self.attention)
        h = h + layer.drop_path(layer.layer_scale1(o_proj(merge_heads(a))))
        h = h + layer.drop_path(layer.layer_scale2(self.mlp(layer.norm2(h))))
        return h, k, v


def query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, how: str = "auto") -> torch.Tensor:
    """One query token's attention over a frame's cached tokens (scale 1/sqrt(hd), as DINOv2).

    q [n,H,1,hd], k/v [n,H,Np,hd] -> [n,H,1,hd].  ``how`` is ``model.query_attention``:
    "sdpa" is PyTorch's fused kernel; "reduce" writes it out as broadcast multiply + sum:
        s = sum_d q_d k_d / sqrt(hd)   [n,H,Np]     Np hd multiply-adds a head
        w = softmax(s)                 in fp32, as the fused kernels accumulate
        o = sum_j w_j v_j              [n,H,1,hd]   Np hd multiply-adds a head
    so that ``torch.compile`` makes each sum a reduction kernel that streams K (or V) once, and
    its backward's dK = ds q and dV = w do element-wise kernels. Eagerly it materialises the
    [n,H,Np,hd] products in fp32, so "auto" takes it only under torch.compile and "sdpa" otherwise.
    Both are memory-bound at one query (each reads K and V once; backward reads them again and
    writes dK and dV, outer products).
    """
    if how == "auto":
        how = "reduce" if torch.compiler.is_compiling() else "sdpa"
    if how == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)
    acc = torch.promote_types(q.dtype, torch.float32)  # fp32 sums, as the fused kernels
    s = (q.to(acc) * k.to(acc)).sum(-1) * q.shape[-1] ** -0.5  # [n,H,Np]
    return (s.softmax(-1).unsqueeze(-1) * v.to(acc)).sum(-2, keepdim=True).to(v.dtype)  # [n,H,1,hd]


def query_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd)) [n,H,1,Np], in at least fp32: the attention weights the
    encoder's heatmaps read (``return_attn``)."""
    s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return s.to(torch.promote_types(s.dtype, torch.float32)).softmax(-1)


class QueryBlock(nn.Module):
    """The same DINOv2 block for one query token per frame, attending only to cached K/V.

    h [n,1,D], k/v [n,H,Np,hd] -> h [n,1,D].  FLOPs per frame: 24 D^2 + 4 Np D (~40 MFLOP
    over the 12 layers of DINOv2-small).
    """

    def __init__(self, layer: nn.Module, num_heads: int, attention: str = "auto"):
        super().__init__()
        object.__setattr__(self, "layer", layer)
        self.num_heads = num_heads
        self.attention = attention  # model.query_attention

    def forward(self, h: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        q_proj, _, _, o_proj = attn_linears(layer)
        q = split_heads(q_proj(layer.norm1(h)), self.num_heads)  # [n, H, 1, hd]
        a = query_attention(q, k.to(q.dtype), v.to(q.dtype), self.attention)  # [n, H, 1, hd]
        h = h + layer.drop_path(layer.layer_scale1(o_proj(merge_heads(a))))
        return h + layer.drop_path(layer.layer_scale2(layer.mlp(layer.norm2(h))))
