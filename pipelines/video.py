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

A file is held against every source of its length (``LengthClaims``: the stream header's
frame count, the stream's and the container's durations, the dataset listing's duration): one
that claims far more than the file decodes to makes it ``truncated_video``, with the figures.

A video is a file, or a member of a zip archive (``zip_members.ZipMember``: copied out by the
Ray task that decodes it, never extracted with its archive).

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
    BAD_IMAGE, MISSING_FILE, NO_FRAMES, TRUNCATED_VIDEO, UNREADABLE_VIDEO, Reject, stable_detail,
)
from fovea.pipelines.zip_members import ZipMember, open_member

FRAME_SIZE = 224
JPEG_QUALITY = 90
SAMPLE_FPS = 1.0
MAX_DECODE_ERRORS = 16  # corrupt packets tolerated before a video counts as unreadable
# a video is truncated when a source claims this much more than it decodes to (both must hold)
TRUNCATION_SLACK_S = 1.5
TRUNCATION_SLACK_FRAC = 0.1


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
    except Image.UnidentifiedImageError:
        raise Reject(BAD_IMAGE, f"not an image format PIL reads ({len(data)} bytes, starting {data[:8].hex()})") from None
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError...)
        raise Reject(BAD_IMAGE, stable_detail(f"{type(e).__name__}: {e}")) from None
    if img.mode in ("RGBA", "LA", "P", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    img = img.convert("RGB")
    if min(img.size) < 8:
        raise Reject(BAD_IMAGE, f"image too small: {img.size}")
    return np.asarray(_square(img, size))


def _open(path: str | Path | ZipMember):
    """An ``av`` input container for a file or a zip archive's member; ``Reject`` when it is
    missing, empty or does not open."""
    import av

    if isinstance(path, ZipMember):
        f = open_member(path)  # a seekable copy of the member (why: zip_members.open_member)
        try:
            # mode="r": PyAV takes the mode from a file object, and the copy is open for writing too
            return av.open(f, mode="r", metadata_errors="ignore")
        except Exception as e:  # av.error.*: the bytes are no container PyAV reads
            f.close()
            raise Reject(UNREADABLE_VIDEO, f"{path}: {type(e).__name__}: {e}") from None
    p = Path(path)
    if not p.exists():
        raise Reject(MISSING_FILE, str(path))
    if p.stat().st_size == 0:
        raise Reject(UNREADABLE_VIDEO, "empty file")
    try:
        return av.open(str(p), metadata_errors="ignore")
    except Exception as e:  # av.error.* (InvalidDataError, EOFError...), OSError
        raise Reject(UNREADABLE_VIDEO, f"{type(e).__name__}: {e}") from None


@dataclass
class LengthClaims:
    """What each source says a video lasts.  No single one is trusted: an AVI cut short keeps
    its header's frame count while the demuxer's scan shortens the stream's duration to the
    bytes that are left, and a listing (the WebVid CSV) knows what was uploaded."""

    stream_s: float | None = None  # the stream's duration (header, or the demuxer's estimate)
    container_s: float | None = None  # the container's (the longest stream, audio included)
    frames: int | None = None  # the stream header's frame count
    fps: float | None = None  # the stream's average frame rate
    listed_s: float | None = None  # the dataset's own listing

    @classmethod
    def read(cls, container, stream, listed_s: float | None) -> "LengthClaims":
        def positive(x):
            return x if x is not None and x > 0 else None

        c = container.duration / 1_000_000 if positive(container.duration) else None
        s = float(stream.duration * stream.time_base) if positive(stream.duration) and stream.time_base else None
        fps = float(stream.average_rate) if stream.average_rate else None
        return cls(s, c, positive(stream.frames), fps, positive(listed_s))

    def seconds(self) -> dict[str, float]:
        """Each source's length in seconds (sources that say nothing left out)."""
        out = {"stream header frame count": self.frames / self.fps if self.frames and self.fps else None,
               "stream duration": self.stream_s, "container duration": self.container_s,
               "listed duration": self.listed_s}
        return {k: v for k, v in out.items() if v is not None}

    def describe(self) -> str:
        parts = []
        if self.frames and self.fps:
            parts.append(f"stream header: {self.frames} frames at {self.fps:g} fps = {self.frames / self.fps:.2f} s")
        for name, v in (("stream", self.stream_s), ("container", self.container_s), ("listed", self.listed_s)):
            if v is not None:
                parts.append(f"{name} {v:.2f} s")
        return "; ".join(parts)


def shortfall(claims: LengthClaims, decoded_s: float) -> tuple[str, float] | None:
    """The source that claims far more than the ``decoded_s`` seconds the file holds, if any:
    short by more than ``TRUNCATION_SLACK_S`` and ``TRUNCATION_SLACK_FRAC`` of the claim (listings
    round to whole seconds; a container's audio may outlast the video a little)."""
    for name, claimed in sorted(claims.seconds().items(), key=lambda kv: -kv[1]):
        if claimed - decoded_s > max(TRUNCATION_SLACK_S, TRUNCATION_SLACK_FRAC * claimed):
            return name, claimed
    return None


def _duration_by_demux(path: str | Path | ZipMember) -> float | None:
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


@dataclass
class _Pass:
    """One sequential decode over the sample times: the frames taken and what was seen."""

    out: list
    covered: int = 0  # sample times that have a frame
    errors: int = 0
    decoded: int = 0
    last_t: float | None = None  # the last decoded frame's time from the first frame
    reached_end: bool = True  # False when decoding stopped once every sample time was covered


def _decode_pass(container, stream, targets: list[float], size: int) -> _Pass:
    import av

    ps = _Pass([None] * len(targets))
    prev = prev_rgb = None
    t0 = None

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
                ps.errors += 1
                if ps.errors > MAX_DECODE_ERRORS:
                    break
                continue
            for frame in frames:
                if frame.time is None:
                    continue
                t0 = frame.time if t0 is None else t0
                t = frame.time - t0
                while ps.covered < len(targets) and targets[ps.covered] < t:
                    ps.out[ps.covered] = take(prev if prev is not None else frame)
                    ps.covered += 1
                prev, ps.last_t = frame, t
                ps.decoded += 1
            if ps.covered == len(targets):
                ps.reached_end = False
                break  # every sample time is covered: skip decoding the tail
    except av.error.FFmpegError as e:  # demuxer gave up (truncated/corrupt container)
        ps.errors += 1
        if ps.decoded == 0:
            raise Reject(UNREADABLE_VIDEO, f"{type(e).__name__}: {e}") from None
    while prev is not None and ps.covered < len(targets):  # the last frame is still on screen
        ps.out[ps.covered] = take(prev)
        ps.covered += 1
    return ps


def decode_video(path: str | Path | ZipMember, *, max_frames: int, size: int = FRAME_SIZE,
                 fps: float = SAMPLE_FPS, threads: int = 1, listed_duration: float | None = None) -> DecodedVideo:
    """Decode the 1 FPS (or uniformly spread) frames of one video file, or of a zip archive's
    member (``zip_members.ZipMember``: the Ray task reads it from the archive itself).

    Sample times come from the stream's duration; the file is then held against every length
    source (``LengthClaims``: the stream header's frame count, the stream's and the container's
    durations, ``listed_duration`` from the dataset's listing): one that claims far more than
    the frames decode to makes the file ``truncated_video``, with the figures.
    Raises ``Reject`` with reason missing_file, unreadable_video, no_frames or truncated_video.
    """
    container = _open(path)
    with container:
        if not container.streams.video:
            raise Reject(NO_FRAMES, "no video stream")
        stream = container.streams.video[0]
        stream.thread_count = threads
        claims = LengthClaims.read(container, stream, listed_duration)
        duration = claims.stream_s or claims.container_s
        if duration is None:
            duration = claims.stream_s = _duration_by_demux(path)
        if duration is None or duration <= 0:
            raise Reject(NO_FRAMES, "no timestamped video packets")
        targets = sample_times(duration, max_frames, fps)
        ps = _decode_pass(container, stream, targets, size)
        if ps.decoded == 0:
            raise Reject(NO_FRAMES, f"0 decodable frames ({ps.errors} decode errors)")
        frame_dur = 1.0 / claims.fps if claims.fps else 0.1
        # decoding stopped early only once the last sample time was passed: the stream's own
        # duration then stands; otherwise the file holds what was decoded
        decoded_s = ps.last_t + frame_dur if ps.reached_end else max(duration, ps.last_t + frame_dur)
        short = shortfall(claims, decoded_s)
        if short is not None or targets[-1] > ps.last_t + max(1.0, 2 * frame_dur):
            name, claimed = short or ("stream duration", duration)
            raise Reject(TRUNCATED_VIDEO,
                         f"decodes to {ps.decoded} frame{'s' if ps.decoded != 1 else ''} over {decoded_s:.2f} s, "
                         f"but its {name} says {claimed:.2f} s ({claims.describe()}; {ps.errors} decode errors)")
        return DecodedVideo(ps.out, targets, duration, ps.errors, (stream.codec_context.width, stream.codec_context.height))
