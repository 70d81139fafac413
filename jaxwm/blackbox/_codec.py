"""Shared by the black-box modules: the wire formats of queries and answers, and argument checks.

Query images travel as lossless PNGs (:func:`encode_png`, :func:`decode_png`); an answer, from a
file or an HTTP endpoint, becomes a class id from a label (:func:`as_label`) or from logits
(:func:`as_logits_label`). Private to :mod:`jaxwm.blackbox`.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from PIL import Image

from jaxwm.errors import BlackBoxError


def check_images(images: Any, name: str = "images") -> np.ndarray:
    """Check query images; BlackBoxError naming ``name`` and saying how to fix them.

    Args:
        images: Array-like, expected ``uint8`` ``(N, H, W, C)`` with ``N, H, W >= 1``, ``C`` 1 or 3.
        name: The argument's name in error messages.

    Returns:
        The images as a NumPy array (no copy when already one).
    """
    arr = images if isinstance(images, np.ndarray) else np.asarray(images)
    if arr.dtype != np.uint8:
        raise BlackBoxError(
            f"{name} must be uint8 pixels (N, H, W, C); got dtype {arr.dtype} "
            "(convert with np.clip(x, 0, 255).astype(np.uint8) if they are 0..255 values)"
        )
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise BlackBoxError(f"{name} must have shape (N, H, W, C) with C = 1 or 3; got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise BlackBoxError(f"{name} must hold at least one non-empty image; got {arr.shape}")
    return arr


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG of one (H, W, C) uint8 image: mode 'L' for C = 1, 'RGB' for C = 3.

    Args:
        image: ``uint8`` array ``(H, W, C)``, ``C`` 1 or 3.

    Returns:
        The PNG file's bytes; the same pixels always give the same bytes.
    """
    pixels = image[..., 0] if image.shape[-1] == 1 else image
    buf = io.BytesIO()
    # No metadata and fixed settings, so the same pixels give the same bytes (and SHA-256).
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG")
    return buf.getvalue()


def decode_png(data: bytes, what: str) -> np.ndarray:
    """(H, W, C) uint8 pixels of a PNG in mode 'L' or 'RGB'; BlackBoxError naming ``what``.

    Args:
        data: The PNG file's bytes.
        what: Where they come from (a path, "request body"), for error messages.

    Returns:
        ``uint8`` array ``(H, W, C)``, ``C`` 1 for grayscale and 3 for RGB.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "PNG":
                raise BlackBoxError(f"{what} is a {im.format} image, not a PNG")
            if im.mode not in ("L", "RGB"):
                raise BlackBoxError(
                    f"{what} is a PNG in mode {im.mode!r}; expected 'L' (grayscale) or 'RGB'"
                )
            pixels = np.asarray(im, dtype=np.uint8)
    except BlackBoxError:
        raise
    except Exception as e:  # Pillow raises many types for damaged files
        raise BlackBoxError(f"{what} is not a readable PNG: {e}") from e
    return pixels[..., None] if pixels.ndim == 2 else pixels


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, shortened so that an error message stays one readable line.

    Args:
        value: Any value to quote.
        limit: Most characters returned.

    Returns:
        The ``repr``, cut to ``limit`` characters ending in ``...`` when longer.
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_count(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int ``>= minimum`` (not a bool); else BlackBoxError naming ``name``.

    Args:
        name: The argument's name in error messages.
        value: The value to check.
        minimum: Smallest value allowed.

    Returns:
        ``int(value)``.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise BlackBoxError(f"{name} must be an int >= {minimum}; got {short(value)}")
    return int(value)


def as_label(value: Any, num_classes: int, where: str) -> int:
    """A class id from an int (or an integral float such as 3.0, as CSV/JSON tools write).

    Args:
        value: The answer's label.
        num_classes: ``K``; the label must lie in ``[0, K)``.
        where: The answer's location, for error messages.

    Returns:
        The class id.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise BlackBoxError(f"{where}: label {short(value)} is not an integer class id")
    if isinstance(value, float | np.floating):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise BlackBoxError(f"{where}: label {short(value)} is not an integer class id")
        value = int(value)
    if not 0 <= value < num_classes:
        raise BlackBoxError(
            f"{where}: label {int(value)} is outside [0, {num_classes}) (num_classes)"
        )
    return int(value)


def as_logits_label(values: Any, num_classes: int, where: str) -> int:
    """Argmax of a list of ``num_classes`` finite numbers (ties: the lowest class).

    Args:
        values: The answer's logits (or probabilities), a list or tuple.
        num_classes: ``K``, the number of entries required.
        where: The answer's location, for error messages.

    Returns:
        The class id.
    """
    if not isinstance(values, list | tuple):
        raise BlackBoxError(f"{where}: logits must be a list of numbers; got {short(values)}")
    if len(values) != num_classes:
        raise BlackBoxError(
            f"{where}: expected {num_classes} logits (num_classes), got {len(values)}"
        )
    for j, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise BlackBoxError(f"{where}: logit {j} is {short(v)}, not a number")
        if not math.isfinite(v):
            raise BlackBoxError(f"{where}: logit {j} is {v}; logits must be finite")
    return int(np.argmax(np.asarray(values, dtype=np.float64)))
