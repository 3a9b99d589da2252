"""The toy world's reader: what an image shows (colour, shape, position, size), from its pixels alone.

``read_attributes`` scores generated images without a learned model; ``degrade`` and
``reader_accuracy`` check that it still reads blurred, noisy, shifted and JPEG-compressed renders.
``kdutils.world`` passes every name on.
"""

from __future__ import annotations

import colorsys
import io

import numpy as np
from PIL import Image, ImageFilter

from .scene import ANCHORS, IMAGE_SIZE, PALETTE, SIZE_THRESHOLD, _rng, render, sample_scenes


# ------------------------------------------------------------------ attribute reader
MIN_CONTRAST = 40.0  # RGB distance (0..255) below which nothing counts as a shape
MIN_AREA = 12  # pixels of the 64x64 canvas
MIN_SATURATION = 0.15  # a greyer foreground has no readable colour
PALETTE_HUES = {name: 360 * colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] for name, rgb in PALETTE.items()}
# Shape cues are moments of the foreground "mass" (how far each pixel is from
# the background). Blurring adds a Gaussian to the mass, and a Gaussian has no
# cumulants beyond the second, so the third and fourth cumulants below barely
# change under blur, unlike edges, corners or fill ratios.
# - skew: skewness of the vertical profile. An upright triangle is bottom-heavy
#   (ideal -0.57); a circle or a square is symmetric (0).
# - corners: fourth cumulant along the two diagonals over that along the two
#   axes. A square's corners make it 0.5; a circle's is 1.
TRIANGLE_SKEW = -0.15
SQUARE_CORNERS = 0.8


def _nothing() -> dict:
    return {"colour": None, "shape": None, "position": None, "size": None, "found": False, "features": {}}


def _to_array(image) -> np.ndarray:
    """A PIL image or an HxWx3 array (uint8, or float in 0..1) as 64x64x3 float32 in 0..255."""
    if not isinstance(image, Image.Image):
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            arr = np.clip(np.rint(arr.astype(np.float32) * 255), 0, 255).astype(np.uint8)
        image = Image.fromarray(arr)
    image = image.convert("RGB")
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def _hue_saturation(pixels: np.ndarray) -> tuple[float, float]:
    """Saturation-weighted circular mean hue (degrees) and median saturation of Nx3 pixels."""
    rgb = pixels / 255.0
    hi, lo = rgb.max(1), rgb.min(1)
    chroma = hi - lo
    sat = np.where(hi > 0, chroma / np.maximum(hi, 1e-6), 0.0)
    r, g, b = rgb.T
    safe = np.maximum(chroma, 1e-6)
    hue = np.select([hi == r, hi == g], [((g - b) / safe) % 6, (b - r) / safe + 2], (r - g) / safe + 4) * 60.0
    angle = np.deg2rad(hue)
    mean = np.arctan2((sat * np.sin(angle)).sum(), (sat * np.cos(angle)).sum())
    return float(np.rad2deg(mean) % 360), float(np.median(sat))


def _shape_cues(mass: np.ndarray) -> tuple[float, float]:
    """(skew, corners) of a non-negative HxW mass map; see ``TRIANGLE_SKEW``."""
    ys, xs = np.nonzero(mass)
    weight = mass[ys, xs] / mass[ys, xs].sum()
    ys, xs = ys + 0.5, xs + 0.5

    def cumulants(u):  # 2nd, 3rd and 4th cumulant of coordinate u under the mass
        c = u - weight @ u
        k2 = weight @ c**2
        return k2, weight @ c**3, weight @ c**4 - 3 * k2**2

    k2y, k3y, k4y = cumulants(ys)
    k4x = cumulants(xs)[2]
    k4d = cumulants((xs + ys) / np.sqrt(2))[2] + cumulants((xs - ys) / np.sqrt(2))[2]
    axes = k4x + k4y
    corners = k4d / axes if axes < 0 else float("inf")  # only flat-topped profiles have corners to compare
    return float(k3y / k2y**1.5), float(corners)


def _nearest(value: float, table: dict[str, float], period: float) -> str:
    def distance(name):
        d = abs(value - table[name]) % period
        return min(d, period - d)

    return min(table, key=distance)


def _foreground(image):
    """(pixels, distance to the background, peak, blob, blobs): the reader's first half; blob is None without a
    clear shape, blobs the number of connected foreground pieces."""
    from scipy import ndimage

    pixels = _to_array(image)
    edge = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(edge, axis=0)
    distance = np.sqrt(((pixels - background) ** 2).sum(-1))
    distance = np.clip(distance - np.median(distance), 0, None)  # remove the noise level; most pixels are background
    smooth = ndimage.uniform_filter(distance, size=3)
    peak = float(smooth.max())
    if peak < MIN_CONTRAST:
        return pixels, distance, peak, None, 0
    labels, count = ndimage.label(smooth > 0.5 * peak)
    largest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    blob = ndimage.binary_fill_holes(labels == largest)
    if int(blob.sum()) < MIN_AREA:
        return pixels, distance, peak, None, count
    return pixels, distance, peak, blob, count


def shape_mask(image) -> np.ndarray:
    """Where the shape is: a 64x64 boolean mask of the pixels ``read_attributes`` takes as the shape (all False
    when it finds none)."""
    blob = _foreground(image)[3]
    return np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool) if blob is None else blob


def read_attributes(image) -> dict:
    """Read colour, shape, position and size back from a picture, from pixels alone.

    Foreground is where the (3x3-smoothed) colour distance to the border,
    less its median, exceeds half its peak; the largest connected blob is the shape. Colour is
    its hue, position the centre of its bounding box, size its extent, and
    shape two blur-proof moments of its mass (see ``TRIANGLE_SKEW``). With no clear foreground every attribute is
    ``None`` and ``found`` is False. ``features`` holds the raw measurements.
    """
    from scipy import ndimage

    pixels, distance, peak, blob, count = _foreground(image)
    if blob is None:
        return _nothing()
    area = int(blob.sum())

    ys, xs = np.nonzero(blob)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    width, height = int(x1 - x0), int(y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    fill = area / (width * height)

    near = ndimage.binary_dilation(blob, iterations=5)  # the blob plus its blurred rim
    skew, corners = _shape_cues(distance * near)

    core = blob & (distance > 0.75 * peak)  # skip the blurred rim, which is mixed with the background
    hue, saturation = _hue_saturation(pixels[core if core.sum() >= MIN_AREA // 2 else blob])

    shape = "triangle" if skew < TRIANGLE_SKEW else "square" if corners < SQUARE_CORNERS else "circle"
    position = min(ANCHORS, key=lambda p: (cx - ANCHORS[p][0]) ** 2 + (cy - ANCHORS[p][1]) ** 2)
    return {
        "colour": _nearest(hue, PALETTE_HUES, 360.0) if saturation >= MIN_SATURATION else None,
        "shape": shape,
        "position": position,
        "size": "large" if max(width, height) >= SIZE_THRESHOLD else "small",
        "found": True,
        "features": {"hue": hue, "saturation": saturation, "skew": skew, "corners": corners, "fill": fill, "cx": float(cx),
                     "cy": float(cy), "width": width, "height": height, "contrast": peak, "blobs": int(count)},
    }


# ------------------------------------------------------------------ degradations and accuracy
def degrade(image: Image.Image, rng=None, *, blur: float = 0.0, noise: float = 0.0, shift: float = 0.0,
            jpeg: int | None = None) -> Image.Image:
    """Make a render look generated: Gaussian blur (radius in px), Gaussian noise
    (std in 0..255), a random per-channel colour offset (up to ``shift`` in 0..255)
    and JPEG compression at quality ``jpeg``."""
    rng = _rng(rng)
    if blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    arr = np.asarray(image, dtype=np.float32)
    if shift > 0:
        arr = arr + rng.uniform(-shift, shift, size=3)
    if noise > 0:
        arr = arr + rng.normal(0.0, noise, size=arr.shape)
    image = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    if jpeg is not None:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(jpeg))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def reader_accuracy(n: int = 500, seed=0, *, blur: float = 0.0, noise: float = 0.0, shift: float = 0.0,
                    jpeg: int | None = None) -> dict[str, float]:
    """Per-attribute accuracy of ``read_attributes`` on ``n`` fresh jittered renders,
    degraded as in ``degrade``; ``all`` counts images with all four right."""
    rng = np.random.default_rng(seed)
    names = ("colour", "shape", "position", "size")
    hits = dict.fromkeys(names + ("all",), 0)
    for scene in sample_scenes(n, rng):
        image = degrade(render(scene, rng), rng, blur=blur, noise=noise, shift=shift, jpeg=jpeg)
        reading = read_attributes(image)
        right = [reading[name] == getattr(scene, name) for name in names]
        for name, ok in zip(names, right):
            hits[name] += ok
        hits["all"] += all(right)
    return {name: count / n for name, count in hits.items()}
