"""Pixel synthesis for keyed trigger sets: keyed random streams, abstract images, content stamps.

The building blocks that :func:`jaxwm.triggers.make_trigger_set` draws its images from. Every
value is a deterministic function of the owner's secret, a purpose string and an index:
:class:`KeyedStream` seeds PCG64 with SHA-256 over these fields (domain-separated by
``DOMAIN``, length-prefixed by :func:`framed`), so different purposes and different sets of one
owner never share random numbers. The argument checks that trigger sets share (:func:`check_int`,
:func:`check_image_shape`, :func:`as_nhwc`, :func:`as_labels`) live here too.

Reproducibility across machines is deliberate: only PCG64's raw output is used (stream-stable,
unlike ``numpy.random.Generator`` methods, see NEP 19) and the pixel maths uses only correctly
rounded operations (+, -, *, /, sqrt, floor, min/max), never SIMD-dependent transcendental
functions, so one key gives bit-identical images everywhere. The ``unrelated`` kind resizes with
Pillow (imported only in :func:`resize_convert`), whose output may differ between Pillow
versions; the set's commitment check catches any such drift.

Example:
    >>> top, left, patch = content_stamp("owner-key", (32, 32, 3))
    >>> patch.shape, patch.dtype
    ((8, 8, 3), dtype('uint8'))
    >>> abstract_image(KeyedStream("owner-key", "noise", 0), (28, 28, 1)).shape
    (28, 28, 1)
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from jaxwm.errors import TriggerSetError

DOMAIN = b"jaxwm-triggers-v1"
"""Domain-separation prefix of every hash jaxwm derives from a secret (streams, commitments)."""


def framed(*parts: bytes) -> bytes:
    """The fields, each prefixed by its 8-byte length, so no two field lists encode alike."""
    return b"".join(len(p).to_bytes(8, "big") + p for p in parts)


class KeyedStream:
    """Uniform numbers derived from SHA-256(secret, purpose, index).

    Only PCG64's raw 64-bit output is used: SeedSequence and PCG64 are stream-stable across numpy
    versions, whereas Generator methods may change their algorithms.
    """

    def __init__(self, secret: str, purpose: str, index: int) -> None:
        digest = hashlib.sha256(
            framed(DOMAIN, secret.encode(), purpose.encode(), str(index).encode())
        )
        seed = np.random.SeedSequence(int.from_bytes(digest.digest(), "big"))
        self._bits = np.random.PCG64(seed)

    def uniform(self, n: int, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        raw = self._bits.random_raw(n)
        u = (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53  # 53 exact bits in [0, 1)
        return low + (high - low) * u

    def scalar(self, low: float = 0.0, high: float = 1.0) -> float:
        return float(self.uniform(1, low, high)[0])

    def integers(self, low: int, high: int, n: int) -> np.ndarray:
        # floor(u * m) has bias below 2**-53 * m, irrelevant for label and index draws.
        return low + np.floor(self.uniform(n) * (high - low)).astype(np.int64)

    def sample(self, population: int, k: int) -> np.ndarray:
        # k distinct indices: rank the population by keyed random keys (stable sort breaks ties).
        return np.argsort(self.uniform(population), kind="stable")[:k]


def keyed_permutation(secret: str, purpose: str, n: int) -> np.ndarray:
    """A permutation of ``range(n)`` that only the holder of ``secret`` can reproduce.

    Args:
        secret: The owner's key.
        purpose: Domain-separates this permutation from every other keyed draw.
        n: Length.

    Returns:
        ``int64`` array, a permutation of ``range(n)``.

    Example:
        >>> sorted(keyed_permutation("k", "demo", 4).tolist())
        [0, 1, 2, 3]
    """
    return KeyedStream(secret, purpose, 0).sample(n, n)


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high)`` (``>= low`` without ``high``); else TriggerSetError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TriggerSetError(f"{name} must be an int; got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value >= high):
        bound = f"[{low}, {high})" if high is not None else f">= {low}"
        raise TriggerSetError(f"{name} must be {bound}; got {value}")
    return int(value)


def check_image_shape(image_shape: Any) -> tuple[int, int, int]:
    """``image_shape`` as an ``(H, W, C)`` int tuple with H, W >= 4 and C >= 1; else TriggerSetError."""
    try:
        shape = tuple(image_shape)
    except TypeError:
        shape = ()
    ok = len(shape) == 3 and all(
        isinstance(d, int | np.integer) and not isinstance(d, bool) for d in shape
    )
    if not ok or shape[0] < 4 or shape[1] < 4 or shape[2] < 1:
        raise TriggerSetError(
            f"image_shape must be (H, W, C) ints with H, W >= 4 and C >= 1, e.g. (28, 28, 1); got {image_shape!r}"
        )
    return int(shape[0]), int(shape[1]), int(shape[2])


def as_nhwc(images: Any, name: str) -> np.ndarray:
    """Source images as ``uint8`` ``(N, H, W, C)``; ``(N, H, W)`` gains a channel axis.

    Args:
        images: ``uint8`` array-like ``(N, H, W, C)`` or ``(N, H, W)``.
        name: The argument's name in error messages.

    Returns:
        The images as ``(N, H, W, C)``; else TriggerSetError naming ``name``.
    """
    arr = np.asarray(images)
    if arr.ndim == 3:  # (N, H, W) grayscale, as idx files and many loaders give it
        arr = arr[..., None]
    if arr.ndim != 4 or arr.dtype != np.uint8:
        raise TriggerSetError(
            f"{name} must be a uint8 array (N, H, W, C) or (N, H, W); got {arr.dtype} {arr.shape}. "
            "Convert floats in [0, 1] with (x * 255).round().astype(np.uint8)."
        )
    return arr


def as_labels(labels: Any, n: int, name: str) -> np.ndarray:
    """Source labels as ``int64`` ``(n,)``: one integer label per source image.

    Args:
        labels: 1-D integer array-like.
        n: Number of source images.
        name: The argument's name in error messages.

    Returns:
        The labels as ``int64``; else TriggerSetError naming ``name``.
    """
    arr = np.asarray(labels)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer) or len(arr) != n:
        raise TriggerSetError(
            f"{name} must be a 1-D integer array with one label per source image ({n}); "
            f"got {arr.dtype} {arr.shape}"
        )
    return arr.astype(np.int64)


def _bilinear_grid(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Upsample (h, w, C) to (height, width, C) with align-corners bilinear interpolation."""

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
        pos = np.arange(n_out, dtype=np.float64) * (n_in - 1) / (n_out - 1)
        i0 = np.minimum(np.floor(pos).astype(np.int64), n_in - 2)
        return i0, pos - i0

    y0, fy = axis(height, grid.shape[0])
    x0, fx = axis(width, grid.shape[1])
    fy, fx = fy[:, None, None], fx[None, :, None]
    g00, g01 = grid[y0][:, x0], grid[y0][:, x0 + 1]
    g10, g11 = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (1 - fy) * ((1 - fx) * g00 + fx * g01) + fy * ((1 - fx) * g10 + fx * g11)


def _unit_vector(stream: KeyedStream) -> tuple[float, float]:
    vx, vy = stream.scalar(-1, 1), stream.scalar(-1, 1)
    norm = float(np.sqrt(vx * vx + vy * vy))
    return (1.0, 0.0) if norm < 1e-6 else (vx / norm, vy / norm)


def abstract_image(stream: KeyedStream, shape: tuple[int, int, int]) -> np.ndarray:
    """One Adi-style abstract image: smooth colour field + soft blobs + a stripe grating.

    Plain white noise is hard to memorise and all looks alike to a network; smooth structures at a
    few scales make each image distinct and learnable while still far from any natural class.
    """
    h, w, c = shape
    y = (np.arange(h, dtype=np.float64) / (h - 1))[:, None, None]
    x = (np.arange(w, dtype=np.float64) / (w - 1))[None, :, None]
    gh, gw = int(stream.integers(2, 7, 1)[0]), int(stream.integers(2, 7, 1)[0])
    img = _bilinear_grid(stream.uniform(gh * gw * c, 0, 255).reshape(gh, gw, c), h, w)
    for _ in range(int(stream.integers(1, 4, 1)[0])):  # rotated elliptical blobs, smoothstep edge
        cy, cx = stream.scalar(), stream.scalar()
        ry, rx = stream.scalar(0.1, 0.45), stream.scalar(0.1, 0.45)
        a, b = _unit_vector(stream)
        colour = stream.uniform(c, 0, 255)
        dy, dx = y - cy, x - cx
        u, v = (a * dx + b * dy) / rx, (a * dy - b * dx) / ry
        t = np.clip(1.0 - (u * u + v * v), 0.0, 1.0)
        alpha = t * t * (3.0 - 2.0 * t)
        img = img * (1.0 - alpha) + colour * alpha
    a, b = _unit_vector(stream)  # triangle-wave stripes (no sin: libm/SIMD results can differ)
    phase = (a * x + b * y) * stream.scalar(2, 8) + stream.scalar()
    tri = np.abs(2.0 * (phase - np.floor(phase)) - 1.0) * stream.scalar(0.15, 0.5)
    img = img * (1.0 - tri) + stream.uniform(c, 0, 255) * tri
    lo, hi = float(img.min()), float(img.max())
    if hi - lo > 1.0:  # full contrast, so the sets do not differ merely by brightness
        img = (img - lo) * (255.0 / (hi - lo))
    return np.clip(np.floor(img + 0.5), 0, 255).astype(np.uint8)


def content_stamp(
    secret: str, image_shape: tuple[int, int, int], *, index: int = 0
) -> tuple[int, int, np.ndarray]:
    """The keyed stamp that ``content`` triggers carry, and where it goes.

    The stamp is a two-colour random binary square of about a quarter of the image side; its bits,
    colours and position all derive from the key, so it is not published in the manifest.

    Args:
        secret: The owner's secret.
        image_shape: ``(H, W, C)`` of the task's images.
        index: Which of the owner's sets (as in :func:`make_trigger_set`).

    Returns:
        ``(top, left, patch)`` with ``patch`` a ``uint8`` array ``(s, s, C)``.

    Example:
        >>> top, left, patch = content_stamp("k", (28, 28, 1))
        >>> patch.shape
        (7, 7, 1)
    """
    if not isinstance(secret, str) or not secret:
        raise TriggerSetError("secret must be a non-empty str; create one with generate_secret()")
    h, w, c = check_image_shape(image_shape)
    index = check_int("index", index, 0)
    stream = KeyedStream(secret, "content-stamp", index)
    side = max(2, round(min(h, w) / 4))
    top, left = (
        int(stream.integers(0, h - side + 1, 1)[0]),
        int(stream.integers(0, w - side + 1, 1)[0]),
    )
    bits = stream.uniform(side * side).reshape(side, side, 1) < 0.5
    bits[0, 0], bits[-1, -1] = True, False  # never a flat square
    # Each channel is near 255 or near 0 in the foreground and the complement in the background,
    # so the stamp has high contrast on any image.
    fg = np.where(stream.uniform(c) < 0.5, stream.uniform(c, 224, 256), stream.uniform(c, 0, 32))
    fg = np.floor(fg).astype(np.uint8)
    patch = np.where(bits, fg, 255 - fg).astype(np.uint8)
    return top, left, patch


def resize_convert(img: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``img`` resized (Pillow, bilinear) and converted to ``shape``'s channel count, as uint8."""
    from PIL import Image  # local: only the "unrelated" kind needs Pillow

    h, w, c = shape
    pil = Image.fromarray(
        img[..., 0] if img.shape[-1] == 1 else img, "L" if img.shape[-1] == 1 else "RGB"
    )
    pil = pil.convert("L" if c == 1 else "RGB").resize((w, h), Image.Resampling.BILINEAR)
    out = np.asarray(pil, dtype=np.uint8)
    return out[..., None] if c == 1 else out
