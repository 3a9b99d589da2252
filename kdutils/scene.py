"""The toy world's scenes: one filled shape on a light background, 64x64 RGB, and how each is drawn.

3 shapes, 6 colours, 5 positions and 2 sizes make 180 scenes (``all_scenes``); ``HELD_OUT`` lists the
12 (colour, shape, position) triples that no Korean training caption shows. ``render`` draws a scene,
jittered when given a seed. ``kdutils.world`` passes every name on.
"""

from __future__ import annotations

import colorsys
import itertools
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
POSITIONS = ("left", "right", "top", "bottom", "center")
SIZES = ("small", "large")

# ------------------------------------------------------------------ geometry
# All lengths are in pixels of the 64x64 canvas (continuous coordinates: the
# canvas spans 0..64). Anchors are the centre of the shape's bounding box.
IMAGE_SIZE = 64
SUPERSAMPLE = 4  # draw at 256x256, then average 4x4 blocks: smooth edges
ANCHORS = {"left": (17.0, 32.0), "right": (47.0, 32.0), "top": (32.0, 17.0), "bottom": (32.0, 47.0), "center": (32.0, 32.0)}
EXTENTS = {"small": 14.0, "large": 26.0}  # width = height of the bounding box
SIZE_THRESHOLD = 20.0  # the reader's cut between the two extents

# Jitter of a seeded render. With these bounds a large shape stays >= 1.5 px
# inside the canvas and a shape's centre stays >= 5.5 px from the midpoint
# between two anchors, so the attributes remain readable.
JITTER_SHIFT = 2.0  # px, each axis
JITTER_EXTENT = 1.0  # px
JITTER_HUE = 4.0  # degrees
JITTER_SATURATION = (0.88, 1.0)  # factor
JITTER_VALUE = (0.92, 1.04)  # factor
BACKGROUND = (226, 246)  # grey level; the un-jittered render uses 238

PALETTE = {  # chosen so the nearest hues are >= 25 degrees apart
    "red": (215, 38, 38),
    "orange": (240, 125, 15),
    "yellow": (235, 215, 20),
    "green": (40, 165, 60),
    "blue": (35, 85, 215),
    "purple": (140, 55, 185),
}


@dataclass(frozen=True, order=True)
class Scene:
    """One shape on the canvas: what every caption and every reading describes."""

    shape: str
    colour: str
    position: str
    size: str

    def __post_init__(self):
        for name, allowed in (("shape", SHAPES), ("colour", COLOURS), ("position", POSITIONS), ("size", SIZES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected one of {allowed}")

    @property
    def triple(self) -> tuple[str, str, str]:
        """(colour, shape, position): the key of ``HELD_OUT``."""
        return (self.colour, self.shape, self.position)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        return cls(d["shape"], d["colour"], d["position"], d["size"])


def all_scenes() -> list[Scene]:
    """The 3 x 6 x 5 x 2 = 180 scenes, in a fixed order."""
    return [Scene(*combo) for combo in itertools.product(SHAPES, COLOURS, POSITIONS, SIZES)]


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def sample_scenes(n: int, seed=0, *, held_out: bool = True) -> list[Scene]:
    """``n`` scenes drawn uniformly with replacement; ``held_out=False`` skips ``HELD_OUT``."""
    pool = all_scenes() if held_out else train_scenes()
    rng = _rng(seed)
    return [pool[i] for i in rng.integers(len(pool), size=n)]


# ------------------------------------------------------------------ rendering
def _jittered_colour(rgb, rng: np.random.Generator | None) -> tuple[int, int, int]:
    if rng is None:
        return tuple(rgb)
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    h = (h + rng.uniform(-JITTER_HUE, JITTER_HUE) / 360) % 1.0
    s = s * rng.uniform(*JITTER_SATURATION)
    v = min(1.0, v * rng.uniform(*JITTER_VALUE))
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, s, v))


def render(scene: Scene, rng=None) -> Image.Image:
    """Draw ``scene`` as a 64x64 RGB image.

    ``rng=None`` gives the canonical, un-jittered picture; an int seed or a
    ``numpy.random.Generator`` adds a small jitter of position, extent, hue,
    brightness and background. The same seed always gives the same bytes.
    """
    rng = None if rng is None else _rng(rng)
    cx, cy = ANCHORS[scene.position]
    extent = EXTENTS[scene.size]
    grey = (BACKGROUND[0] + BACKGROUND[1]) // 2
    if rng is not None:
        cx += rng.uniform(-JITTER_SHIFT, JITTER_SHIFT)
        cy += rng.uniform(-JITTER_SHIFT, JITTER_SHIFT)
        extent += rng.uniform(-JITTER_EXTENT, JITTER_EXTENT)
        grey = int(rng.integers(BACKGROUND[0], BACKGROUND[1] + 1))
    fill = _jittered_colour(PALETTE[scene.colour], rng)

    k = SUPERSAMPLE
    canvas = Image.new("RGB", (IMAGE_SIZE * k, IMAGE_SIZE * k), (grey, grey, grey))
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = ((cx - extent / 2) * k, (cy - extent / 2) * k, (cx + extent / 2) * k, (cy + extent / 2) * k)
    if scene.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif scene.shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    else:  # an upright isosceles triangle filling half its bounding box
        draw.polygon([(cx * k, y0), (x1, y1), (x0, y1)], fill=fill)
    return canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)


# ------------------------------------------------------------------ held-out combinations
# 12 of the 90 (colour, shape, position) triples (13 %), both sizes: 24 of the
# 180 scenes. Chosen by hand so that each colour is held out twice, each shape
# four times and each position two or three times, and no colour x shape,
# colour x position or shape x position pair is held out twice. Every single
# value and every pair of values therefore still appears in training.
HELD_OUT = frozenset({
    ("red", "circle", "right"),
    ("red", "triangle", "top"),
    ("green", "square", "left"),
    ("green", "circle", "bottom"),
    ("blue", "triangle", "center"),
    ("blue", "square", "right"),
    ("yellow", "circle", "top"),
    ("yellow", "triangle", "left"),
    ("purple", "square", "bottom"),
    ("purple", "circle", "center"),
    ("orange", "triangle", "right"),
    ("orange", "square", "top"),
})


def is_held_out(scene: Scene) -> bool:
    """True when the scene's (colour, shape, position) is never in a Korean training caption."""
    return scene.triple in HELD_OUT


def train_scenes() -> list[Scene]:
    """The 156 scenes that training pairs may use."""
    return [s for s in all_scenes() if not is_held_out(s)]


def eval_scenes() -> list[Scene]:
    """The 48 scenes the course measures on: every held-out combination plus as many others, both sizes."""
    held = [s for s in all_scenes() if is_held_out(s)]
    rng = np.random.default_rng(7)
    others = [s for s in all_scenes() if not is_held_out(s)]
    return held + [others[i] for i in rng.permutation(len(others))[:len(held)]]
