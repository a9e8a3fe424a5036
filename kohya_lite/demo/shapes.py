"""Procedural shape images for the demo (and the demo base model's pretraining), and the colour analysis
that tells what colour a generated image shows.

Images: one shape (circle, square, triangle, diamond, star, cross) in one colour on a plain background,
drawn 4× larger and box-filtered down, so the edges are anti-aliased. Captions read like
"a red circle on a grey background".

Colours: the demo base model knows red, green, blue, purple, white and black (`BASE_COLOURS`); orange is
what the demo LoRA teaches (`DEMO_COLOUR`). Orange's hue (30°) is far from every base colour (red is
pure red, 0°), so an orange image from the base alone would be a surprise.

Analysis (`analyse`): the background is the median of the border pixels; foreground pixels differ from it
by more than `FOREGROUND_DISTANCE` (RGB, 0–255); each foreground pixel gets a colour name from its HSV
value (`colour_name`); the dominant name is the most common one. `is_orange` is the demo's test: most
foreground pixels have a hue of 15–45° with saturation ≥ 0.5.
"""

from __future__ import annotations

import colorsys
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
BASE_COLOURS = ("red", "green", "blue", "purple", "white", "black")
DEMO_COLOUR = "orange"
DEMO_DATASET_COLOUR = "demo orange"  # an orange (hue 25°) for the demo dataset, see _COLOUR_SPECS
BACKGROUND = "grey"

# (hue centre °, hue jitter °, saturation range, value range); None hue = achromatic
_COLOUR_SPECS: dict[str, tuple[float | None, float, tuple[float, float], tuple[float, float]]] = {
    "red": (0.0, 4.0, (0.80, 0.95), (0.72, 0.90)),
    "green": (125.0, 10.0, (0.70, 0.90), (0.55, 0.78)),
    "blue": (225.0, 8.0, (0.75, 0.92), (0.72, 0.90)),
    "purple": (282.0, 8.0, (0.60, 0.80), (0.58, 0.78)),
    "white": (None, 0.0, (0.0, 0.04), (0.93, 1.0)),
    "black": (None, 0.0, (0.0, 0.08), (0.04, 0.14)),
    "orange": (30.0, 3.0, (0.85, 1.0), (0.90, 1.0)),
    # the demo dataset's orange: the demo base's VAE brings orange back ~8° yellower (a round trip of
    # 30° gives 38°), so the dataset sits at 25° and the LoRA's renders land mid-band (15–45°)
    "demo orange": (25.0, 3.0, (0.85, 1.0), (0.90, 1.0)),
    "yellow": (55.0, 4.0, (0.80, 0.95), (0.85, 1.0)),
}
_GREY_VALUE = (0.45, 0.60)

# colour analysis
FOREGROUND_DISTANCE = 48.0  # RGB distance from the background colour (0–255 scale)
MIN_FOREGROUND = 24  # fewer foreground pixels than this: "nothing drawn"
ORANGE_HUE = (15.0, 45.0)
ORANGE_MIN_SATURATION = 0.5
_HUE_NAMES = ((15.0, "red"), (45.0, "orange"), (70.0, "yellow"), (170.0, "green"), (200.0, "cyan"),
              (260.0, "blue"), (345.0, "purple"), (360.0, "red"))


def hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((h % 360.0) / 360.0, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def colour_rgb(name: str, rng: random.Random) -> tuple[int, int, int]:
    """A random shade of a named colour (`_COLOUR_SPECS`)."""
    hue, jitter, (s0, s1), (v0, v1) = _COLOUR_SPECS[name]
    h = (hue or 0.0) + rng.uniform(-jitter, jitter)
    return hsv_to_rgb(h, rng.uniform(s0, s1), rng.uniform(v0, v1))


def grey_rgb(rng: random.Random) -> tuple[int, int, int]:
    v = round(rng.uniform(*_GREY_VALUE) * 255)
    return v, v, v


def any_colour_rgb(rng: random.Random) -> tuple[int, int, int]:
    """A colour of any hue, saturation and value (the VAE's data: orange and yellow included)."""
    if rng.random() < 0.15:
        v = rng.random()
        return hsv_to_rgb(0, 0, v)
    return hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.25, 1.0), rng.uniform(0.2, 1.0))


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        k = r * 0.85
        return [(cx - k, cy - k), (cx + k, cy - k), (cx + k, cy + k), (cx - k, cy + k)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)]
    if shape == "star":
        pts = []
        for i in range(10):
            a = -np.pi / 2 + i * np.pi / 5
            rr = r if i % 2 == 0 else r * 0.45
            pts.append((cx + rr * np.cos(a), cy + rr * np.sin(a)))
        return pts
    if shape == "cross":
        a, b = r * 0.33, r
        return [(cx - a, cy - b), (cx + a, cy - b), (cx + a, cy - a), (cx + b, cy - a), (cx + b, cy + a),
                (cx + a, cy + a), (cx + a, cy + b), (cx - a, cy + b), (cx - a, cy + a), (cx - b, cy + a),
                (cx - b, cy - a), (cx - a, cy - a)]
    raise ValueError(f"unknown shape {shape!r}")


def draw_shape(shape: str, rgb: tuple[int, int, int], background: tuple[int, int, int], *, center: tuple[float, float],
               radius: float, size: int = SIZE, supersample: int = 4) -> Image.Image:
    """One anti-aliased shape of `radius` (half its extent) at `center` (pixels of the final image)."""
    s = supersample
    im = Image.new("RGB", (size * s, size * s), background)
    draw = ImageDraw.Draw(im)
    cx, cy, r = center[0] * s, center[1] * s, radius * s
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=rgb)
    else:
        draw.polygon(_polygon(shape, cx, cy, r), fill=rgb)
    return im.resize((size, size), Image.Resampling.BOX) if s > 1 else im


@dataclass(frozen=True)
class ShapeImage:
    image: Image.Image
    shape: str
    colour: str  # a colour name, or "any" for the VAE's random colours
    caption: str


def caption_for(colour: str, shape: str) -> str:
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} {shape} on a {BACKGROUND} background"


def random_shape_image(rng: random.Random, colour: str | None = None, shape: str | None = None, *,
                       size: int = SIZE, any_colour: bool = False, any_background: bool = False) -> ShapeImage:
    """A random shape; `colour` None picks a base colour. `any_colour`/`any_background` draw colours of every
    hue (the VAE's data); their caption is empty."""
    shape = shape or rng.choice(SHAPES)
    if any_colour:
        rgb, name = any_colour_rgb(rng), "any"
    else:
        name = colour or rng.choice(BASE_COLOURS)
        rgb = colour_rgb(name, rng)
    background = any_colour_rgb(rng) if any_background else grey_rgb(rng)
    radius = rng.uniform(0.19, 0.34) * size
    margin = radius + 2
    center = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
    image = draw_shape(shape, rgb, background, center=center, radius=radius, size=size)
    return ShapeImage(image, shape, name, "" if any_colour else caption_for(name, shape))


# ---- colour analysis ------------------------------------------------------------------------------------

def _as_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return arr


def background_colour(arr: np.ndarray, border: int = 2) -> np.ndarray:
    """Median RGB of the pixels within `border` of the edge."""
    mask = np.zeros(arr.shape[:2], bool)
    mask[:border], mask[-border:], mask[:, :border], mask[:, -border:] = True, True, True, True
    return np.median(arr[mask].reshape(-1, 3).astype(np.float32), axis=0)


def rgb_to_hsv(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue (degrees, 0–360), saturation and value (0–1) of uint8 RGB pixels [..., 3]."""
    p = pixels.astype(np.float32) / 255.0
    mx, mn = p.max(-1), p.min(-1)
    d = mx - mn
    sat = np.where(mx > 0, d / np.maximum(mx, 1e-8), 0.0)
    r, g, b = p[..., 0], p[..., 1], p[..., 2]
    safe = np.maximum(d, 1e-8)
    h = np.where(mx == r, ((g - b) / safe) % 6.0, np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue = np.where(d > 0, h * 60.0, 0.0) % 360.0
    return hue, sat, mx


def colour_names(pixels: np.ndarray) -> np.ndarray:
    """A colour name per RGB pixel: black/white/grey for dark or unsaturated ones, else a hue name."""
    hue, sat, val = rgb_to_hsv(pixels)
    names = np.empty(hue.shape, dtype=object)
    bounds = np.array([b for b, _ in _HUE_NAMES])
    labels = np.array([n for _, n in _HUE_NAMES], dtype=object)
    names[...] = labels[np.searchsorted(bounds, hue, side="right").clip(0, len(labels) - 1)]
    grey = sat < 0.25
    names[grey] = "grey"
    names[grey & (val > 0.75)] = "white"
    names[val < 0.25] = "black"
    return names


@dataclass(frozen=True)
class ColourReport:
    background: tuple[float, float, float]
    foreground_pixels: int
    dominant: str | None  # None when nothing stands out from the background
    shares: dict[str, float]  # colour name → share of the foreground pixels
    orange_share: float  # share of foreground pixels with hue 15–45° and saturation ≥ 0.5

    @property
    def is_orange(self) -> bool:
        return self.foreground_pixels >= MIN_FOREGROUND and self.orange_share > 0.5


def analyse(image) -> ColourReport:
    """What an image shows: background, foreground size, dominant colour name, orange share."""
    arr = _as_array(image)
    bg = background_colour(arr)
    dist = np.sqrt(((arr.astype(np.float32) - bg) ** 2).sum(-1))
    fg = arr[dist > FOREGROUND_DISTANCE]
    n = int(fg.shape[0])
    if n < MIN_FOREGROUND:
        return ColourReport(tuple(float(x) for x in bg), n, None, {}, 0.0)
    names = colour_names(fg)
    uniq, counts = np.unique(names.astype(str), return_counts=True)
    shares = {str(u): float(c) / n for u, c in zip(uniq, counts)}
    dominant = max(shares, key=shares.get)
    hue, sat, _ = rgb_to_hsv(fg)
    orange = float(((hue >= ORANGE_HUE[0]) & (hue <= ORANGE_HUE[1]) & (sat >= ORANGE_MIN_SATURATION)).mean())
    return ColourReport(tuple(float(x) for x in bg), n, dominant, shares, orange)


def dominant_colour(image) -> str | None:
    return analyse(image).dominant


def is_orange(image) -> bool:
    """The demo's test: most non-background pixels have a hue of 15–45° with saturation ≥ 0.5."""
    return analyse(image).is_orange
