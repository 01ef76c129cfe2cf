"""How the glyph task looks: the glyph alphabets (colour disks, shapes, digits, letters), their
drawing, and the backgrounds they sit on (a real scikit-image photo, smooth noise or plain grey).

    tile = glyph_tile("colours", "red", 67)     # RGBA uint8 [67, 67, 4]
    frames = background(cfg, rng)               # cfg.frames x uint8 [S, S, 3]
    paste(frames[0].copy(), tile, [10, 10, 77, 77])

``platform/check/task.py`` places them (paths, distractors) and writes the videos.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fovea.platform.check.task import GlyphTaskConfig

# Colour photos bundled with scikit-image (no download needed).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
          "stereo_motorcycle", "cat")
COLOURS = {
    "red": (230, 25, 25), "green": (30, 190, 40), "blue": (30, 70, 235), "yellow": (250, 225, 0),
    "magenta": (225, 40, 225), "cyan": (0, 215, 225), "orange": (255, 135, 0), "white": (255, 255, 255),
}
SHAPES = ("circle", "square", "triangle", "cross", "diamond", "bar")
ALPHABETS = {
    "colours": tuple(COLOURS),
    "shapes": SHAPES,
    "digits": tuple("0123456789"),
    "letters": tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
}


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray | None:
    try:
        import skimage.data

        a = skimage.data.stereo_motorcycle()[0] if name == "stereo_motorcycle" else getattr(skimage.data, name)()
    except Exception:  # noqa: BLE001 - a photo that needs a download, or an older scikit-image
        return None
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    return np.ascontiguousarray(a[..., :3]).astype(np.uint8)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType
    except TypeError:
        return ImageFont.load_default()


@functools.lru_cache(maxsize=None)
def glyph_tile(alphabet: str, label: str, g: int) -> np.ndarray:
    """RGBA uint8 [g, g, 4]: the glyph, opaque where it is drawn (alpha 0 elsewhere)."""
    from PIL import Image, ImageDraw

    ss = 4  # supersampled, then reduced: smooth edges
    G = g * ss
    img = Image.new("RGBA", (G, G), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    line = max(ss, G // 14)
    if alphabet == "colours":
        d.ellipse([line, line, G - line, G - line], fill=COLOURS[label] + (255,), outline=(0, 0, 0, 255), width=line)
    elif alphabet == "shapes":
        fill, ol = (255, 255, 255, 255), (0, 0, 0, 255)
        m = line
        if label == "circle":
            d.ellipse([m, m, G - m, G - m], fill=fill, outline=ol, width=line)
        elif label == "square":
            d.rectangle([m * 2, m * 2, G - m * 2, G - m * 2], fill=fill, outline=ol, width=line)
        elif label == "triangle":
            d.polygon([(G / 2, m), (G - m, G - m), (m, G - m)], fill=fill, outline=ol, width=line)
        elif label == "diamond":
            d.polygon([(G / 2, m), (G - m, G / 2), (G / 2, G - m), (m, G / 2)], fill=fill, outline=ol, width=line)
        elif label == "cross":
            t = G // 3
            for box in ([t, m, G - t, G - m], [m, t, G - m, G - t]):
                d.rectangle(box, fill=ol)
            for box in ([t + line, m + line, G - t - line, G - m - line], [m + line, t + line, G - m - line, G - t - line]):
                d.rectangle(box, fill=fill)
        else:  # bar
            d.rectangle([m, G // 3, G - m, G - G // 3], fill=fill, outline=ol, width=line)
    else:  # digits / letters: dark character on a white plate
        r = G // 5
        d.rounded_rectangle([0, 0, G - 1, G - 1], radius=r, fill=(255, 255, 255, 255), outline=(0, 0, 0, 255), width=line)
        font = _font(int(G * 0.8))
        x0, y0, x1, y1 = d.textbbox((0, 0), label, font=font)
        d.text(((G - (x1 - x0)) / 2 - x0, (G - (y1 - y0)) / 2 - y0), label, font=font, fill=(0, 0, 0, 255))
    return np.asarray(img.resize((g, g), Image.Resampling.LANCZOS))


def background(cfg: GlyphTaskConfig, rng: np.random.Generator, clutter: str | None = None) -> list[np.ndarray]:
    """One uint8 [S, S, 3] background per frame (``clutter`` overrides ``cfg.clutter``)."""
    from PIL import Image

    s, n = cfg.frame_size, cfg.frames
    clutter = clutter or cfg.clutter
    if clutter == "plain":
        grey = int(rng.integers(90, 170))
        return [np.full((s, s, 3), grey, np.uint8)] * n
    if clutter == "noise":
        low = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(low).resize((s, s), Image.Resampling.BICUBIC))
        return [img] * n
    available = [p for p in cfg.photos if _photo(p) is not None]
    if not available:  # no photo loads here: procedural clutter keeps the task working
        return background(cfg, rng, "noise")
    photo = _photo(available[int(rng.integers(len(available)))])
    h, w = photo.shape[:2]
    side = rng.uniform(*cfg.crop_scale) * min(h, w)
    travel = cfg.pan * side
    a = rng.uniform(0, 2 * math.pi)
    dx, dy = travel * math.cos(a), travel * math.sin(a)
    x0 = rng.uniform(max(0.0, -dx), max(0.0, w - side - max(dx, 0.0)) + 1e-6)
    y0 = rng.uniform(max(0.0, -dy), max(0.0, h - side - max(dy, 0.0)) + 1e-6)
    flip = bool(rng.integers(2))
    img = Image.fromarray(photo)
    out = []
    for k in range(n):
        u = k / max(1, n - 1)
        bx, by = min(max(x0 + u * dx, 0), w - side), min(max(y0 + u * dy, 0), h - side)
        f = img.resize((s, s), Image.Resampling.BILINEAR, box=(bx, by, bx + side, by + side))
        a = np.asarray(f)
        out.append(a[:, ::-1] if flip else a)
        if cfg.pan == 0:
            out = out * n
            break
    return out


def paste(frame: np.ndarray, tile: np.ndarray, box: list[int]) -> None:
    x0, y0, x1, y1 = box
    alpha = tile[..., 3:4].astype(np.float32) / 255.0
    region = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = (alpha * tile[..., :3] + (1 - alpha) * region + 0.5).astype(np.uint8)
