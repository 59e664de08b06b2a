"""Pictures for the demo campaign: one small PNG per clip whose look follows its true quality.

A clip of prompt group g shows that group's subject (a shape in the group's colour on the
group's background); its true quality decides how clean the picture is. With the quality's
percentile p = Phi((q - mean q) / sd q) and the defect d = 1 - p, a clip is blurred (box blur
of radius round(3 d)), made blocky (pixel blocks of side 1 + round(6 d)), desaturated (by
0.7 d) and noisy (Gaussian noise sd 0.22 d). A rater who picks the cleaner picture therefore
picks the truly better clip, and the demo's leaderboard can be checked by eye.
Nothing here ranks anything: it only draws.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ndtr

WIDTH, HEIGHT = 192, 144
SHAPES = ("disc", "square", "triangle", "star", "ring", "diamond")
MAX_BLUR = 3
MAX_BLOCK = 6
MAX_DESATURATION = 0.7
MAX_NOISE_SD = 0.22


def quality_percentiles(quality: np.ndarray) -> np.ndarray:
    """`p_i = Phi((q_i - mean q) / sd q)`: each clip's quality on a 0-1 scale (0.5 if all equal)."""
    quality = np.asarray(quality, dtype=np.float64)
    sd = quality.std()
    if sd == 0:
        return np.full(quality.shape, 0.5)
    z = (quality - quality.mean()) / sd
    return ndtr(z)


# hue (0-1 on the HSV wheel) at the centre of each colour name
COLOUR_HUES = {
    "red": 0.0,
    "orange": 0.08,
    "yellow": 0.16,
    "green": 0.33,
    "teal": 0.48,
    "blue": 0.62,
    "purple": 0.76,
    "pink": 0.88,
}


def _hue(number: int) -> float:
    """The subject's hue of prompt group `number` (steps of 0.161 around the wheel)."""
    return (number * 0.161) % 1.0


def _shape(number: int) -> str:
    """The subject's shape of prompt group `number` (shifted each round, so that colour and
    shape do not repeat together every six prompts)."""
    return SHAPES[(number + number // len(SHAPES)) % len(SHAPES)]


def describe_group(number: int) -> str:
    """What prompt group `number` shows, as a prompt: e.g. `"prompt 4: a blue ring"`."""
    hue = _hue(number)
    colour = min(
        COLOUR_HUES,
        key=lambda name: min(abs(hue - COLOUR_HUES[name]), 1 - abs(hue - COLOUR_HUES[name])),
    )
    article = "an" if colour[0] in "aeiou" else "a"
    return f"prompt {number}: {article} {colour} {_shape(number)}"


def _shape_mask(shape: str, xx: np.ndarray, yy: np.ndarray, radius: float) -> np.ndarray:
    """Bool mask of `shape` centred at the origin of (xx, yy) with the given radius (pixels)."""
    r = np.hypot(xx, yy)
    angle = np.arctan2(yy, xx)
    if shape == "disc":
        return r <= radius
    if shape == "square":
        return np.maximum(abs(xx), abs(yy)) <= radius * 0.8
    if shape == "diamond":
        return abs(xx) + abs(yy) <= radius
    if shape == "ring":
        return (r <= radius) & (r >= radius * 0.55)
    if shape == "triangle":
        # three half-planes of an upward equilateral triangle of circumradius `radius`
        inside = yy <= radius * 0.5
        for turn in (math.pi / 6, 5 * math.pi / 6):
            inside &= -xx * math.cos(turn) - yy * math.sin(turn) <= radius * 0.5
        return inside
    if shape == "star":
        edge = radius * (0.55 + 0.45 * np.cos(5 * (angle + math.pi / 2)) ** 2)
        return r <= edge
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def _box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """Separable box blur of an H x W x 3 image with edge padding."""
    if radius <= 0:
        return image
    size = 2 * radius + 1
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (radius + 1, radius)
        padded = np.pad(image, pad, mode="edge")
        summed = np.cumsum(padded, axis=axis)
        upper = np.take(summed, range(size, summed.shape[axis]), axis=axis)
        lower = np.take(summed, range(0, summed.shape[axis] - size), axis=axis)
        image = (upper - lower) / size
    return image


def _blocky(image: np.ndarray, block: int) -> np.ndarray:
    """Replace each block x block tile by its top-left pixel (a low-bitrate look)."""
    if block <= 1:
        return image
    height, width = image.shape[:2]
    rows = (np.arange(height) // block) * block
    cols = (np.arange(width) // block) * block
    return image[rows][:, cols]


def draw_clip(percentile: float, group: int, variant: int) -> np.ndarray:
    """Draw one clip: group `group`'s scene, degraded by `1 - percentile`.

    Args:
        percentile: the clip's quality on a 0-1 scale (1 = best, drawn clean).
        group: prompt group index; picks the subject's shape, colour and background.
        variant: clip index inside the demo; shifts and resizes the subject a little and
            seeds the noise, so two clips of one prompt differ like two generations.

    Returns:
        HEIGHT x WIDTH x 3 float array in [0, 1].
    """
    if not 0 <= percentile <= 1:
        raise ValueError("percentile must be in [0, 1]")
    rng = np.random.default_rng([group, variant])
    defect = 1.0 - percentile
    hue = _hue(group)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    # background: a vertical gradient in the complementary hue
    top = np.array(colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.35, 0.95))
    bottom = np.array(colorsys.hsv_to_rgb((hue + 0.55) % 1.0, 0.55, 0.45))
    mix = (yy / (HEIGHT - 1))[..., None]
    image = (1 - mix) * top + mix * bottom
    centre_x = WIDTH / 2 + rng.uniform(-20, 20)
    centre_y = HEIGHT / 2 + rng.uniform(-12, 12)
    radius = HEIGHT * rng.uniform(0.26, 0.34)
    # a soft shadow under the subject, then the subject with a light-to-dark shading
    shadow = _shape_mask(_shape(group), xx - centre_x - 5, yy - centre_y - 6, radius)
    image[shadow] *= 0.6
    mask = _shape_mask(_shape(group), xx - centre_x, yy - centre_y, radius)
    colour = np.array(colorsys.hsv_to_rgb(hue, 0.85, 0.95))
    shade = 1.0 - 0.35 * np.clip((yy - centre_y + xx - centre_x) / (2.5 * radius) + 0.5, 0, 1)
    image[mask] = colour * shade[mask][:, None]
    # the defects that make a low-quality generation look worse
    image = _box_blur(image, round(MAX_BLUR * defect))
    image = _blocky(image, 1 + round(MAX_BLOCK * defect))
    grey = image.mean(axis=2, keepdims=True)
    image = image + MAX_DESATURATION * defect * (grey - image)
    image = image + MAX_NOISE_SD * defect * rng.standard_normal(image.shape)
    return np.clip(image, 0.0, 1.0)


def write_demo_media(
    quality: Sequence[float] | np.ndarray,
    groups: Sequence[Hashable],
    out_dir: str | Path,
    names: Sequence[str] | None = None,
) -> list[str]:
    """Write one PNG per clip to `out_dir` (created if missing); existing files are rewritten.

    Args:
        quality: (n,) true quality per clip (any scale; only the percentiles matter).
        groups: (n,) prompt group per clip (any labels; numbered by first appearance).
        out_dir: the folder to write to.
        names: (n,) file stems; default `clip-000`, `clip-001`, ...

    Returns:
        The n file names (`stem.png`), in clip order.
    """
    from matplotlib.image import imsave  # imported here: drawing is rare, start-up is not

    percentiles = quality_percentiles(np.asarray(quality, dtype=np.float64))
    stems = list(names) if names is not None else [f"clip-{i:03d}" for i in range(len(quality))]
    if not len(groups) == len(stems) == len(percentiles):
        raise ValueError("quality, groups and names must have the same length")
    numbers: dict[Hashable, int] = {}
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (percentile, group, stem) in enumerate(zip(percentiles, groups, stems, strict=True)):
        number = numbers.setdefault(group, len(numbers))
        imsave(folder / f"{stem}.png", draw_clip(float(percentile), number, index), format="png")
        written.append(f"{stem}.png")
    return written


def picture_clips(
    clips: Sequence[Mapping[str, Any]], quality: Mapping[str, float], out_dir: str | Path
) -> list[dict[str, Any]]:
    """Draw a picture per clip and point the clips at them: the demo campaign's clips.

    Args:
        clips: clip records in the API's shape (`external_id`, `group`, ...), e.g. from
            `sim.demo.demo_clips`.
        quality: external id -> true quality.
        out_dir: the folder the service serves under `/media/`.

    Returns:
        Copies of `clips` with `uri` = `/media/{external_id}.png` and `group` the prompt the
        picture shows (`describe_group`).
    """
    groups = [clip["group"] for clip in clips]
    ids = [str(clip["external_id"]) for clip in clips]
    names = write_demo_media([quality[i] for i in ids], groups, out_dir, names=ids)
    numbers = {group: number for number, group in enumerate(dict.fromkeys(groups))}
    return [
        {**clip, "uri": f"/media/{name}", "group": describe_group(numbers[clip["group"]])}
        for clip, name in zip(clips, names, strict=True)
    ]
