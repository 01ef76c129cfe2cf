"""Frames from videos and images: 1 FPS sampling, PyAV decode, short-side resize + centre crop, JPEG.

Sampling rule (``sample_times``): one frame per second of video, taken at the middle of
each second the video covers (t = k + 0.5 for every k with k + 0.5 < duration, at least one
frame).  When that gives more than ``max_frames`` (64) frames, ``max_frames`` times are
spread uniformly over the whole video instead, t_k = (k + 0.5) * duration / max_frames, so a
10-minute video is summarised end to end rather than truncated to its first 64 seconds (the
reference ffmpeg command, ``-vf fps=1 ... -frames:v 64``, kept the first 64 s).

The frame used for time t is the one on screen at t (the last decoded frame whose timestamp
is <= t).  Decoding is sequential and single-threaded (Ray parallelises across videos);
frames that are not selected are never converted to RGB, and decoding stops as soon as the
last sample time is reached.

Every frame is resized so that its short side is ``size`` (224), centre-cropped to
size x size, and stored as a baseline JPEG (quality ``JPEG_QUALITY``).  Images (The Cauldron)
get the same geometry: centre square crop, LANCZOS resize.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fovea.pipelines.errors import (
    BAD_IMAGE, MISSING_FILE, NO_FRAMES, TRUNCATED_VIDEO, UNREADABLE_VIDEO, Reject,
)

FRAME_SIZE = 224
JPEG_QUALITY = 90
SAMPLE_FPS = 1.0
MAX_DECODE_ERRORS = 16  # corrupt packets tolerated before a video counts as unreadable


def num_frames_at_fps(duration: float, fps: float = SAMPLE_FPS) -> int:
    """Frames that 1 FPS sampling takes from ``duration`` seconds: #{k >= 0 : k + 0.5 < d*fps}, >= 1."""
    return max(1, math.ceil(duration * fps - 0.5))


def sample_times(duration: float, max_frames: int, fps: float = SAMPLE_FPS) -> list[float]:
    """Sample times in seconds from the first frame: 1 FPS, or ``max_frames`` spread uniformly."""
    n = num_frames_at_fps(duration, fps)
    if n <= max_frames:
        return [(k + 0.5) / fps for k in range(n)]
    return [(k + 0.5) * duration / max_frames for k in range(max_frames)]


def uniform_indices(n: int, k: int) -> list[int]:
    """k indices spread uniformly over range(n) (all of them when n <= k); used by the loader too."""
    if n <= k:
        return list(range(n))
    return [int((i + 0.5) * n / k) for i in range(k)]


@dataclass
class DecodedVideo:
    frames: list[np.ndarray]  # each uint8 [size, size, 3] RGB
    times: list[float]  # the sample time of each frame, seconds from the first frame
    duration: float  # seconds (stream duration, else container duration, else last packet)
    decode_errors: int = 0
    source_size: tuple[int, int] = field(default=(0, 0))  # (width, height) before resizing


def resize_center_crop(rgb: np.ndarray, size: int = FRAME_SIZE) -> np.ndarray:
    """uint8 [H, W, 3] -> [size, size, 3]: short side to ``size`` (LANCZOS), centre crop."""
    from PIL import Image

    img = Image.fromarray(rgb)
    return np.asarray(_square(img, size))


def _square(img, size: int):
    from PIL import Image

    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s))
    return img.resize((size, size), Image.Resampling.LANCZOS) if s != size else img


def _frame_to_rgb(frame, size: int) -> np.ndarray:
    """av.VideoFrame -> uint8 [size, size, 3]: swscale resize of the short side, then crop."""
    w, h = frame.width, frame.height
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    rgb = frame.reformat(width=nw, height=nh, format="rgb24", interpolation="AREA").to_ndarray()
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(rgb[top:top + size, left:left + size])


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """uint8 [H, W, 3] -> JPEG bytes (deterministic for the same pixels and libjpeg)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def prepare_image(data: bytes, size: int = FRAME_SIZE) -> np.ndarray:
    """Encoded image bytes (any PIL format) -> uint8 [size, size, 3] RGB; ``Reject(bad_image)``."""
    from PIL import Image, ImageOps

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        img = ImageOps.exif_transpose(img)
    except Exception as e:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError...)
        raise Reject(BAD_IMAGE, f"{type(e).__name__}: {e}") from None
    if img.mode in ("RGBA", "LA", "P", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    img = img.convert("RGB")
    if min(img.size) < 8:
        raise Reject(BAD_IMAGE, f"image too small: {img.size}")
    return np.asarray(_square(img, size))


def _open(path: str | Path):
    import av

    p = Path(path)
    if not p.exists():
        raise Reject(MISSING_FILE, str(path))
    if p.stat().st_size == 0:
        raise Reject(UNREADABLE_VIDEO, "empty file")
    try:
        return av.open(str(p), metadata_errors="ignore")
    except Exception as e:  # av.error.* (InvalidDataError, EOFError...), OSError
        raise Reject(UNREADABLE_VIDEO, f"{type(e).__name__}: {e}") from None


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _duration_by_demux(path: str | Path) -> float | None:
    """Fallback when the header has no duration: scan packet timestamps (no decoding)."""
    with _open(path) as c:
        s = c.streams.video[0]
        first = last = None
        for p in c.demux(s):
            if p.pts is None:
                continue
            first = p.pts if first is None else min(first, p.pts)
            last = max(last or p.pts, p.pts + (p.duration or 0))
        if first is None or s.time_base is None:
            return None
        return float((last - first) * s.time_base)


def decode_video(path: str | Path, *, max_frames: int, size: int = FRAME_SIZE,
                 fps: float = SAMPLE_FPS, threads: int = 1) -> DecodedVideo:
    """Decode the 1 FPS (or uniformly spread) frames of one video file.

    Raises ``Reject`` with reason missing_file, unreadable_video, no_frames or truncated_video.
    """
    import av

    container = _open(path)
    with container:
        if not container.streams.video:
            raise Reject(NO_FRAMES, "no video stream")
        stream = container.streams.video[0]
        stream.thread_count = threads
        duration = _duration(container, stream)
        if duration is None:
            duration = _duration_by_demux(path)
        if duration is None or duration <= 0:
            raise Reject(NO_FRAMES, "no timestamped video packets")
        targets = sample_times(duration, max_frames, fps)
        out: list[np.ndarray | None] = [None] * len(targets)
        ti, errors, decoded = 0, 0, 0
        prev = prev_rgb = None
        t0 = last_t = None
        src = (stream.codec_context.width, stream.codec_context.height)

        def take(frame):  # convert each selected frame once, even if used for several times
            nonlocal prev_rgb
            if prev_rgb is None or prev_rgb[0] is not frame:
                prev_rgb = (frame, _frame_to_rgb(frame, size))
            return prev_rgb[1]

        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    errors += 1
                    if errors > MAX_DECODE_ERRORS:
                        break
                    continue
                for frame in frames:
                    if frame.time is None:
                        continue
                    t0 = frame.time if t0 is None else t0
                    t = frame.time - t0
                    while ti < len(targets) and targets[ti] < t:
                        out[ti] = take(prev if prev is not None else frame)
                        ti += 1
                    prev, last_t = frame, t
                    decoded += 1
                if ti == len(targets):
                    break  # every sample time is covered: skip decoding the tail
        except av.error.FFmpegError as e:  # demuxer gave up (truncated/corrupt container)
            errors += 1
            if decoded == 0:
                raise Reject(UNREADABLE_VIDEO, f"{type(e).__name__}: {e}") from None
        if decoded == 0:
            raise Reject(NO_FRAMES, f"0 decodable frames ({errors} decode errors)")
        if ti < len(targets):
            frame_dur = 1.0 / float(stream.average_rate) if stream.average_rate else 0.1
            if targets[-1] > last_t + max(1.0, 2 * frame_dur):
                raise Reject(
                    TRUNCATED_VIDEO,
                    f"frames end at {last_t:.2f}s of a declared {duration:.2f}s ({errors} decode errors)",
                )
            while ti < len(targets):  # the last frame is still on screen at these times
                out[ti] = take(prev)
                ti += 1
        return DecodedVideo([f for f in out if f is not None], targets, duration, errors, src)
