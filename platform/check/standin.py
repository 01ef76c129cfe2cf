"""Stand-ins for pretrained DINOv2: ViTs pretrained here on synthetic glyph images, offline.

The foveation check's fine query can learn *where* to look only if the patch features already
tell a glyph from the background (DESIGN.md 7); machines without the hub have no pretrained
DINOv2. A stand-in is a ``Dinov2Model`` of a known config trained from a seed on a dense task
in the check's own image domain, saved in the model store like any other model folder:

    fovea/standin-tiny-dinov2-glyphs    the tiny test ViT (hidden 32, 2 layers): CPU, ~1 min
    fovea/standin-dinov2-small-glyphs   DINOv2-small's published config: one GPU, a few minutes

Domain: 224 x 224 frames (the model's input: 16 x 16 patches of 14 px + CLS) on the check's
backgrounds (photo / smooth noise / plain grey), 0-4 glyphs of every alphabet (draw.ALPHABETS)
at random non-overlapping places and sizes; digit and letter plates get random light tints
(the shapes stay white: a tinted circle would be a colour disk). Image i depends only on
(seed, i). Objective: each patch's class (the glyph whose drawn pixels cover the patch centre,
or background; one class per label of every alphabet) by a linear head on the last hidden
states, plus the labels present by a multi-label linear head on CLS. The heads are dropped;
only the ``Dinov2Model`` is saved, with ``STANDIN.json`` (spec, stamp, held-out accuracies of
the trained model and of a linear probe on the same architecture at random init) and
``STANDIN.md``. A folder whose stamp differs from its spec's is rebuilt.

    ensure_standin("fovea/standin-tiny-dinov2-glyphs")      # -> store folder, built when missing
    python -m fovea.platform.check.standin --ref fovea/standin-dinov2-small-glyphs --device cuda
    python -m fovea.platform.check.standin --all --steps 5   # smoke test

These are NOT DINOv2 and must never stand for it outside the check.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from fovea.model.published import DINO_SMALL, PUBLISHED
from fovea.model.store import STANDIN_MARKER, TINY_DINO_CONFIG, store_path
from fovea.platform.check.draw import ALPHABETS, PHOTOS, background, glyph_tile, paste
from fovea.platform.check.task import GlyphTaskConfig

VERSION = 1
TINY = "fovea/standin-tiny-dinov2-glyphs"
SMALL = "fovea/standin-dinov2-small-glyphs"
README_NAME = "STANDIN.md"
SIDE, PATCH = 224, 14
GRID = SIDE // PATCH
# Class 0 is the background; then every alphabet's labels in ALPHABETS order (50 glyphs).
CLASSES = ("background",) + tuple(f"{a}:{lab}" for a, labs in ALPHABETS.items() for lab in labs)
GLYPHS = CLASSES[1:]


@dataclass(frozen=True)
class StandinSpec:
    """Everything that determines a stand-in's weights (hashed into its marker's stamp)."""

    base: dict  # Dinov2Config fields
    steps: int
    batch: int
    lr: float
    seed: int = 0
    weight_decay: float = 0.05
    warmup: float = 0.05  # fraction of the steps, then cosine to 0
    images: int = 0  # distinct training images cycled (a bank rendered once); 0: a fresh image each sample
    glyphs: tuple[int, int] = (0, 4)  # glyphs per image, inclusive
    glyph_size: tuple[float, float] = (0.15, 0.4)  # glyph side / frame side
    clutter: dict = field(default_factory=lambda: {"photo": 0.5, "noise": 0.3, "plain": 0.2})
    tint: float = 0.5  # probability that a digit/letter plate is tinted
    bg_weight: float = 0.1  # background's weight in the patch loss (most patches are background)
    presence_weight: float = 0.5  # the CLS multi-label loss's weight
    eval_images: int = 256
    eval_seed: int = 1_000_003  # held-out images: another seed
    probe_steps: int = 300  # the linear probes (random-init and trained backbones, frozen)
    probe_images: int = 256

    def stamp(self) -> str:
        blob = json.dumps({"version": VERSION, **asdict(self)}, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


STANDINS: dict[str, StandinSpec] = {
    # 2 CPU cores, ~1 minute: a bank of 1536 images rendered once, 600 steps of 16 (small batches
    # at a high LR learn most per CPU second here). A 32-wide ViT learns where glyphs are and the
    # colour disks; shapes, digits and letters stay near chance at any budget a test can pay.
    TINY: StandinSpec(base=dict(TINY_DINO_CONFIG), steps=600, batch=16, lr=2e-2, images=1536,
                      eval_images=192, probe_images=192, probe_steps=200),
    # One GPU, ~1-2 minutes: every sample a fresh image, rendered by DataLoader workers (the
    # renderer, ~5 ms an image a core, is the bound, not the ViT-S step).
    SMALL: StandinSpec(base={k: v for k, v in PUBLISHED[DINO_SMALL].items()
                             if k not in ("architectures", "transformers_version", "torch_dtype")},
                       steps=1500, batch=128, lr=5e-4, warmup=0.1, images=0, eval_images=512,
                       probe_images=512, probe_steps=400),
}


# -- the images ------------------------------------------------------------------------

_BG_CFG = GlyphTaskConfig(frames=1, frame_size=SIDE, photos=PHOTOS)


def render(spec: StandinSpec, seed: int, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image i of ``seed``: (uint8 [3, 224, 224], int64 patch classes [256], float32 presence [50])."""
    rng = np.random.default_rng([seed, i])
    kinds, p = list(spec.clutter), np.array(list(spec.clutter.values()), float)
    frame = background(_BG_CFG, rng, kinds[int(rng.choice(len(kinds), p=p / p.sum()))])[0].copy()
    cls = np.zeros((GRID, GRID), np.int64)
    present = np.zeros(len(GLYPHS), np.float32)
    centres = np.arange(GRID) * PATCH + PATCH // 2
    taken: list[list[int]] = []
    for _ in range(int(rng.integers(spec.glyphs[0], spec.glyphs[1] + 1))):
        g = 4 * int(round(rng.uniform(*spec.glyph_size) * SIDE / 4))  # 4-px steps: fewer tiles drawn
        box = _free_box(rng, taken, g)
        if box is None:
            continue
        c = int(rng.integers(len(GLYPHS)))
        alphabet, label = GLYPHS[c].split(":", 1)
        tile = glyph_tile(alphabet, label, g)
        if alphabet in ("digits", "letters") and rng.random() < spec.tint:
            tint = rng.integers(140, 256, size=3).astype(np.float32) / 255.0
            tile = np.concatenate([(tile[..., :3] * tint).astype(np.uint8), tile[..., 3:]], -1)
        paste(frame, tile, box)
        taken.append(box)
        present[c] = 1.0
        x0, y0 = box[0], box[1]
        ys, xs = centres - y0, centres - x0
        iy, ix = (ys >= 0) & (ys < g), (xs >= 0) & (xs < g)
        covered = tile[np.clip(ys, 0, g - 1)][:, np.clip(xs, 0, g - 1), 3] >= 128
        cls[covered & iy[:, None] & ix[None, :]] = c + 1
    return np.ascontiguousarray(frame.transpose(2, 0, 1)), cls.reshape(-1), present


def _free_box(rng: np.random.Generator, taken: list[list[int]], g: int) -> list[int] | None:
    for _ in range(20):
        x0, y0 = (int(v) for v in rng.integers(0, SIDE - g + 1, size=2))
        box = [x0, y0, x0 + g, y0 + g]
        if all(box[2] <= t[0] or t[2] <= box[0] or box[3] <= t[1] or t[3] <= box[1] for t in taken):
            return box
    return None


class GlyphImages:
    """Map-style dataset: item k = image (k mod ``images``, or k) of ``seed`` (DataLoader workers render)."""

    def __init__(self, spec: StandinSpec, seed: int, n: int, distinct: int = 0):
        self.spec, self.seed, self.n, self.distinct = spec, seed, n, distinct

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: int):
        import torch

        i = k % self.distinct if self.distinct else k
        return tuple(torch.from_numpy(a) for a in render(self.spec, self.seed, i))


def render_bank(spec: StandinSpec, seed: int, n: int):
    """The ``n`` images of ``seed`` stacked: (uint8 [n,3,S,S], int64 [n,256], float32 [n,50])."""
    import torch

    items = [render(spec, seed, i) for i in range(n)]
    return tuple(torch.from_numpy(np.stack(a)) for a in zip(*items))


# -- the model -------------------------------------------------------------------------

def build_backbone(spec: StandinSpec):
    """The spec's ``Dinov2Model`` at its random init (seeded)."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(spec.seed)
    return Dinov2Model(Dinov2Config(**spec.base))


def features(backbone, frames):
    """uint8 frames [B,3,224,224] -> last hidden states [B, 257, D] (normalised as the encoder does)."""
    from fovea.model.blocks import normalize_frames

    return backbone(pixel_values=normalize_frames(frames)).last_hidden_state


def patch_loss(logits, cls, bg_weight: float):
    import torch.nn.functional as F

    w = logits.new_ones(logits.shape[-1])
    w[0] = bg_weight
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), cls.reshape(-1), weight=w)


def _mean(x) -> float:
    return round(float(x.float().mean()), 4) if x.numel() else float("nan")


def accuracies(pred, cls) -> dict[str, float]:
    """Per-patch accuracies: the exact class on glyph patches, on background patches, "some glyph"
    on glyph patches (found), and the exact class per alphabet."""
    glyph, right = cls > 0, pred == cls
    out = {"glyph_patch_acc": _mean(right[glyph]), "background_acc": _mean(right[~glyph]),
           "glyph_found": _mean(pred[glyph] > 0)}
    lo = 1
    for alphabet, labels in ALPHABETS.items():
        m = (cls >= lo) & (cls < lo + len(labels))
        out[f"{alphabet}_acc"] = _mean(right[m])
        lo += len(labels)
    return out


def lr_at(spec: StandinSpec, step: int) -> float:
    warm = max(1, int(spec.warmup * spec.steps))
    if step < warm:
        return spec.lr * (step + 1) / warm
    return spec.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, spec.steps - warm)))


def train(spec: StandinSpec, device: str, workers: int, log=print):
    """Backbone + heads trained on the spec's images; returns (backbone, patch head, seconds)."""
    import torch
    from torch.utils.data import DataLoader

    backbone = build_backbone(spec).to(device)
    d = backbone.config.hidden_size
    torch.manual_seed(spec.seed + 1)
    head, pres_head = torch.nn.Linear(d, len(CLASSES)).to(device), torch.nn.Linear(d, len(GLYPHS)).to(device)
    params = [*backbone.parameters(), *head.parameters(), *pres_head.parameters()]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    batches = _batches(spec, workers, DataLoader, pin=device.startswith("cuda"))
    amp = torch.autocast("cuda", torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    t0, every = time.time(), max(1, spec.steps // 10)
    for step in range(spec.steps):
        frames, cls, present = (t.to(device, non_blocking=True) for t in next(batches))
        for g in opt.param_groups:
            g["lr"] = lr_at(spec, step)
        with amp:
            h = features(backbone, frames)
            logits, pres = head(h[:, 1:]).float(), pres_head(h[:, 0]).float()
        loss = patch_loss(logits, cls, spec.bg_weight) + spec.presence_weight * \
            torch.nn.functional.binary_cross_entropy_with_logits(pres, present)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % every == 0 or step == spec.steps - 1:
            acc = accuracies(logits.argmax(-1), cls)
            log(f"standin step {step + 1}/{spec.steps} loss {loss.item():.3f} "
                f"glyph-patch acc {acc['glyph_patch_acc']:.3f} bg acc {acc['background_acc']:.3f} "
                f"{time.time() - t0:.0f}s")
    return backbone, head, time.time() - t0


def _batches(spec: StandinSpec, workers: int, loader_cls, pin: bool = False):
    """Endless training batches: a bank rendered once (``spec.images``) cycled in a seeded
    order, else fresh images rendered by ``workers`` DataLoader processes."""
    import torch

    if spec.images:
        bank = render_bank(spec, spec.seed, spec.images)
        gen = torch.Generator().manual_seed(spec.seed)
        while True:
            for idx in torch.randperm(spec.images, generator=gen).split(spec.batch):
                if len(idx) == spec.batch:
                    yield tuple(t[idx] for t in bank)
    ds = GlyphImages(spec, spec.seed, spec.steps * spec.batch)
    yield from loader_cls(ds, batch_size=spec.batch, num_workers=workers, pin_memory=pin,
                          prefetch_factor=2 if workers else None)


# -- evaluation ------------------------------------------------------------------------

@dataclass
class _Cached:
    """Frozen-backbone features of a set of images (a linear probe trains on them)."""

    feats: object  # [n, 256, D] patch states
    cls: object  # [n, 256]


def cache_features(backbone, bank, device: str, chunk: int = 32) -> _Cached:
    import torch

    frames, cls, _ = bank
    out = []
    with torch.no_grad():
        for s in range(0, len(frames), chunk):
            out.append(features(backbone, frames[s:s + chunk].to(device))[:, 1:].float())
    return _Cached(torch.cat(out), cls.to(device))


def linear_probe(spec: StandinSpec, train_set: _Cached, test_set: _Cached) -> dict[str, float]:
    """A fresh linear patch head on frozen features (full batch AdamW, ``probe_steps``): held-out accuracies."""
    import torch

    torch.manual_seed(spec.seed + 2)
    x, y = train_set.feats, train_set.cls
    mu, sd = x.mean((0, 1)), x.std((0, 1)) + 1e-6  # standardised: a fair probe of an untrained net
    head = torch.nn.Linear(x.shape[-1], len(CLASSES)).to(x.device)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(spec.probe_steps):
        loss = patch_loss(head((x - mu) / sd), y, spec.bg_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return accuracies(head((test_set.feats - mu) / sd).argmax(-1), test_set.cls)


def evaluate(spec: StandinSpec, backbone, head, device: str) -> dict[str, dict[str, float]]:
    """Held-out accuracies: the trained model with its own head, a linear probe of the trained
    backbone, and a linear probe of the same architecture at its random init (the baseline)."""
    import torch

    test_bank = render_bank(spec, spec.eval_seed, spec.eval_images)
    probe_bank = render_bank(spec, spec.seed + 7, spec.probe_images)  # unseen by the trained model too
    backbone.eval()
    trained_test = cache_features(backbone, test_bank, device)
    with torch.no_grad():
        own = accuracies(head(trained_test.feats).argmax(-1), trained_test.cls)
    trained_probe = linear_probe(spec, cache_features(backbone, probe_bank, device), trained_test)
    rand = build_backbone(spec).to(device).eval()
    random_probe = linear_probe(spec, cache_features(rand, probe_bank, device),
                                cache_features(rand, test_bank, device))
    return {"trained": own, "trained_probe": trained_probe, "random_init_probe": random_probe}


# -- the store folder ------------------------------------------------------------------

def spec_for(ref: str, steps: int | None = None, overrides: dict | None = None) -> StandinSpec:
    """``ref``'s spec, with ``steps`` and any other fields of ``overrides`` replaced."""
    if ref not in STANDINS:
        raise KeyError(f"no stand-in {ref!r}; known: {', '.join(STANDINS)}")
    spec = replace(STANDINS[ref], **(overrides or {}))
    return replace(spec, steps=steps) if steps else spec


def read_marker(path: Path) -> dict | None:
    try:
        return json.loads((Path(path) / STANDIN_MARKER).read_text())
    except (OSError, ValueError):
        return None


def is_built(ref: str, spec: StandinSpec, dest: Path | None = None) -> bool:
    dest = dest or store_path(ref)
    m = read_marker(dest)
    return m is not None and m.get("stamp") == spec.stamp() and (dest / "config.json").exists()


def rebuild_command(ref: str, steps: int | None = None, device: str | None = None) -> str:
    extra = (f" --steps {steps}" if steps else "") + (f" --device {device}" if device else "")
    return f"python -m fovea.platform.check.standin --ref {ref}{extra}"


def ensure_standin(ref: str, device: str | None = None, steps: int | None = None, force: bool = False,
                   workers: int | None = None, overrides: dict | None = None, log=print) -> Path:
    """The store folder of stand-in ``ref``, trained and saved when missing or built from another
    spec (``steps`` / ``overrides`` replace the spec's fields, and so change its stamp: tests build a
    smaller one); one process builds while the others wait."""
    from filelock import FileLock

    spec, dest = spec_for(ref, steps, overrides), store_path(ref)
    if not force and is_built(ref, spec, dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.with_name(f".{dest.name}.lock"))):
        if force or not is_built(ref, spec, dest):
            build(ref, spec, dest, device or default_device(), workers, log)
    return dest


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers(device: str) -> int:
    """DataLoader render processes: none on the CPU (its spec renders a bank once), else all cores
    but two (a DINOv2-small step on a GPU consumes images faster than one core renders them)."""
    return 0 if not device.startswith("cuda") else max(1, min(14, cpu_count() - 2))


def build(ref: str, spec: StandinSpec, dest: Path, device: str, workers: int | None = None, log=print) -> Path:
    """Train, evaluate and save ``ref`` into ``dest`` (a tmp folder renamed into place)."""
    import torch

    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    workers = default_workers(device) if workers is None else workers
    log(f"building stand-in {ref} (NOT DINOv2) on {device}: {spec.steps} steps x {spec.batch} -> {dest}")
    threads = torch.get_num_threads()
    if not device.startswith("cuda"):
        # half the cores: on 2 shared cores two OpenMP threads spin-wait and a step takes ~4x longer
        torch.set_num_threads(max(1, cpu_count() // 2))
    try:
        t0 = time.time()
        backbone, head, train_s = train(spec, device, workers, log)
        acc = evaluate(spec, backbone, head, device)
        wall = time.time() - t0
    finally:
        torch.set_num_threads(threads)
    for name, a in acc.items():
        log(f"stand-in {ref} held-out, {name}: glyph class {a['glyph_patch_acc']:.3f}, glyph found "
            f"{a['glyph_found']:.3f}, colours {a['colours_acc']:.3f}, background {a['background_acc']:.3f}")
    log(f"stand-in {ref} built in {wall:.0f}s")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    backbone.config._name_or_path = ref
    backbone.to("cpu").float().save_pretrained(tmp, safe_serialization=True)
    marker = {"ref": ref, "what": "not DINOv2: a stand-in pretrained on synthetic glyph images",
              "spec": asdict(spec), "stamp": spec.stamp(), "version": VERSION, "seed": spec.seed,
              "steps": spec.steps, "device": device, "train_seconds": round(train_s, 1),
              "wall_seconds": round(wall, 1), "classes": list(CLASSES), "held_out": acc,
              "rebuild": rebuild_command(ref, device=device.split(":")[0])}
    (tmp / STANDIN_MARKER).write_text(json.dumps(marker, indent=2, default=list) + "\n")
    (tmp / README_NAME).write_text(readme(marker))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def readme(m: dict) -> str:
    """STANDIN.md: one paragraph for a person who opens the folder."""
    acc, s = m["held_out"], m["spec"]
    tr, rnd = acc["trained"], acc["random_init_probe"]
    return (
        f"# {m['ref']}: a stand-in, NOT DINOv2\n\n"
        f"This folder holds a transformers `Dinov2Model` (architecture: config.json) trained here from a "
        f"random init (seed {m['seed']}) for {m['steps']} steps of {s['batch']} images on {m['device']} "
        f"({m['wall_seconds']:.0f} s) on synthetic 224x224 glyph images, the foveation check's domain "
        f"(photo, smooth-noise or plain backgrounds with 0-4 colour disks, shapes, digits and letters at "
        f"random places, sizes and plate tints), to name each patch's glyph (or background) and the glyphs "
        f"present. It exists so that the foveation check has patch features that already recognise glyphs "
        f"on a machine without pretrained weights. Held-out per-patch figures: glyph class "
        f"{tr['glyph_patch_acc']:.3f}, glyph found {tr['glyph_found']:.3f}, colour disks "
        f"{tr['colours_acc']:.3f}, background {tr['background_acc']:.3f}; a linear probe of the same "
        f"architecture at random init: {rnd['glyph_patch_acc']:.3f}, {rnd['glyph_found']:.3f}, "
        f"{rnd['colours_acc']:.3f}. Rebuild with `{m['rebuild']} --force`. It is NOT DINOv2: it never saw "
        f"a natural-image dataset, and it must not be used, reported or published as DINOv2 or as any "
        f"pretrained model outside the foveation check. Spec, stamp and every figure: STANDIN.json.\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build the glyph stand-ins for pretrained DINOv2 (NOT DINOv2).")
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--ref", choices=sorted(STANDINS))
    which.add_argument("--all", action="store_true")
    ap.add_argument("--steps", type=int, default=None, help="override the spec's steps (changes its stamp)")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when present)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader render workers")
    ap.add_argument("--force", action="store_true", help="rebuild even when current")
    args = ap.parse_args(argv)
    for ref in (sorted(STANDINS) if args.all else [args.ref]):
        path = ensure_standin(ref, device=args.device, steps=args.steps, force=args.force, workers=args.workers)
        m = read_marker(path) or {}
        print(f"{ref} -> {path}  (stand-in, NOT DINOv2; held-out glyph-patch acc "
              f"{m['held_out']['trained']['glyph_patch_acc']:.3f} vs random-init probe "
              f"{m['held_out']['random_init_probe']['glyph_patch_acc']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
