"""Frames of a benchmark item (``MCQItem`` from ``fovea.platform.eval.benchmark_items``), as the models see them.

Videos at 1 FPS, spread uniformly over the clip (or over MVBench's start/end bound) when
longer than ``max_frames`` (64) seconds -- not truncated to the first 64 s; short side to 224
and centre-cropped, ImageNet-normalised, exactly like the training shards
(``fovea.pipelines.video``: 1 FPS at t = k + 0.5).  Images: centre square crop, LANCZOS to
224, replicated to 8 frames (DESIGN.md 3.4, 6.3).  Frame folders (MVBench episodic reasoning):
the same sampling rule over the folder's dump rate.

A whole video without a bound goes through the pipeline's own ``decode_video``; a clip bound
(MVBench start/end) or a long video (> ``LONG_VIDEO_S``, where a sequential decode of every
frame would take minutes) uses a seek per sample time here, with the same sampling rule and
"frame on screen at t" choice.

    load_item_images(item)   -> PIL RGB frames at source resolution (the SmolVLM2 reference)
    item_frames_uint8(item)  -> uint8 [224,224,3] frames, prepared like the training shards
    load_item_frames(item)   -> float32 [T,3,224,224], normalised (the Foveated VLM's input)
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from fovea.platform.eval.benchmark_items import MCQItem

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".JPEG", ".JPG", ".PNG")
LONG_VIDEO_S = 300.0


def sample_times(duration: float, fps: float = 1.0, max_frames: int = 64,
                 bound: tuple[float, float] | None = None) -> list[float]:
    """Sample times (s): 1 FPS over [start, end] (frame centres), uniformly spread to
    ``max_frames`` when longer -- the whole clip, not its first ``max_frames`` seconds."""
    start, end = 0.0, max(duration, 0.0)
    if bound is not None and bound[1] > bound[0]:
        start = max(0.0, bound[0])
        end = bound[1] if end <= 0 else min(end, bound[1])
    span = max(end - start, 1e-3)
    n = max(1, math.ceil(span * fps - 0.5))
    if n <= max_frames:
        return [start + (k + 0.5) / fps for k in range(n)]
    return [start + (k + 0.5) * span / max_frames for k in range(max_frames)]


def _duration(c, stream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if c.duration:
        return c.duration / 1e6
    return float(stream.frames / float(stream.average_rate)) if stream.frames and stream.average_rate else 0.0


def video_duration(path: str | Path) -> float:
    import av

    with av.open(str(path)) as c:
        return _duration(c, c.streams.video[0])


def decode_video(path: str | Path, fps: float = 1.0, max_frames: int = 64,
                 bound: tuple[float, float] | None = None) -> list:
    """RGB PIL frames (source resolution) at ``sample_times``: one seek + short decode each."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        tb = float(stream.time_base) if stream.time_base else 1.0
        t0 = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        frames: list = []
        for t in sample_times(_duration(c, stream), fps, max_frames, bound):
            c.seek(int((t + t0) / tb), stream=stream, backward=True, any_frame=False)
            prev = None
            for fr in c.decode(stream):
                if fr.time is not None and fr.time - t0 > t + 1e-6 and prev is not None:
                    break  # prev is the frame on screen at t
                prev = fr
            if prev is not None:
                frames.append(prev.to_image())
        if not frames:
            raise ValueError(f"no frame decoded from {path}")
    return frames


def _frames_from_folder(paths: list[Path], dump_fps: float, max_frames: int,
                        bound: tuple[float, float] | None) -> list:
    from PIL import Image

    times = sample_times(len(paths) / dump_fps, 1.0, max_frames, bound)
    idx = sorted({min(len(paths) - 1, int(t * dump_fps)) for t in times})
    return [Image.open(paths[i]).convert("RGB") for i in idx]


def load_item_images(item: MCQItem, max_frames: int = 64) -> list:
    """The item's frames as PIL RGB images at source resolution (an image: one image)."""
    from PIL import Image

    if item.source_kind == "image":
        src = item.frames_source
        img = Image.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src)
        return [img.convert("RGB")]
    if item.source_kind == "frames":
        folder = Path(item.frames_source)
        paths = sorted(p for p in folder.iterdir() if p.suffix in IMAGE_EXTS) if folder.is_dir() else []
        if not paths:
            raise FileNotFoundError(f"frame folder missing or empty: {folder}")
        return _frames_from_folder(paths, item.frames_fps, max_frames, item.bound)
    return decode_video(item.frames_source, 1.0, max_frames, item.bound)


def _square_224(img, size: int):
    from PIL import Image

    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return img.resize((size, size), Image.Resampling.LANCZOS) if s != size else img


def item_frames_uint8(item: MCQItem, max_frames: int = 64, size: int = 224) -> list[np.ndarray]:
    """uint8 [size,size,3] frames, prepared like the training shards."""
    try:
        from fovea.pipelines import video as pv
    except ImportError:  # pipelines not installed: same geometry here
        pv = None
    if item.source_kind == "image":
        if pv is not None:
            try:
                return [pv.prepare_image(bytes(item.frames_source), size)]
            except pv.Reject as e:
                raise ValueError(f"{item.id}: {e}") from None
        return [np.asarray(_square_224(load_item_images(item)[0], size))]
    if (pv is not None and item.source_kind == "video" and item.bound is None
            and Path(item.frames_source).is_file()
            and 0 < video_duration(item.frames_source) <= LONG_VIDEO_S):
        try:
            return pv.decode_video(item.frames_source, max_frames=max_frames, size=size).frames
        except pv.Reject as e:
            raise ValueError(f"{item.frames_source}: {e}") from None
    return [np.asarray(_square_224(im, size)) for im in load_item_images(item, max_frames)]


def to_tensor_frames(frames: list[np.ndarray]):
    """uint8 [H,W,3] frames -> float32 [T,3,H,W], ImageNet-normalised (the loader's transform)."""
    import torch

    from fovea.model.blocks import normalize_frames

    return normalize_frames(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2))


def load_item_frames(item: MCQItem, max_frames: int = 64, image_frames: int = 8, size: int = 224):
    """Frames for the Foveated VLM: float32 [T,3,224,224]; images replicated ``image_frames`` times."""
    x = to_tensor_frames(item_frames_uint8(item, max_frames, size))
    if x.shape[0] == 1 and image_frames > 1:
        x = x.expand(image_frames, -1, -1, -1).contiguous()
    return x
