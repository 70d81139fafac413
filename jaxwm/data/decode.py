"""Decoding one image file to uint8 pixels: faithful or refused.

Every image becomes uint8 (``L`` or ``RGB``):

* 8-bit modes (``1``, ``L``, ``LA``, ``P``, ``RGB``, ``RGBA``, ``CMYK``, ...) convert as Pillow does.
* 16-bit integer images (``I;16``, ``I;16B``, ``I;16L``: e.g. 16-bit PNG or TIFF) are scaled by
  the format's full range: ``round(v * 255 / 65535)`` (= ``(v + 128) // 257``), so 0 -> 0,
  65535 -> 255, and an 8-bit image stored as 16-bit (``v8 * 257``) comes back exactly.
* 32-bit integer images (``I``) get the same 16-bit rule when every value is in [0, 65535] (Pillow
  also uses ``I`` for 16-bit sources, e.g. PGM with maxval > 255, which it stretches to 0..65535);
  a value outside that range is refused, since no range for such data is standard. Caveat: an
  ``I`` image that holds 8-bit values comes out dark; save it as 8-bit (mode ``L``).
* Float images (``F``, e.g. 32-bit float TIFF) are read only when every value is in [0, 1]
  (the usual float-image convention), as ``round(v * 255)``. Other floats (e.g. [0, 255], HDR,
  depth maps) and NaN are refused naming the file: guessing a range from the data would silently
  misread a dark [0, 255] image as a bright [0, 1] one.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from jaxwm.data import limits
from jaxwm.errors import DatasetError

_GRAY_MODES = frozenset({"1", "L", "LA", "La"})


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Decodes one image to uint8 ``(H, W)`` (grayscale) or ``(H, W, 3)`` (colour).

    See the module docstring for how 16-bit, 32-bit and float images are scaled or refused.

    Args:
        data: The image file's bytes.
        where: The file or archive member, for error messages.

    Returns:
        The pixels.

    Raises:
        DatasetError: The image cannot be decoded, is over ``$JAXWM_MAX_IMAGE_PIXELS`` or holds
            values outside the ranges that are read.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            max_pixels = limits.env_limit("JAXWM_MAX_IMAGE_PIXELS", limits.MAX_IMAGE_PIXELS)
            if w * h > max_pixels:
                raise limits.too_big(where, f"the image's pixel count ({w}x{h})", w * h,
                                     max_pixels, "JAXWM_MAX_IMAGE_PIXELS")  # fmt: skip
            img.load()
            if img.mode.startswith("I") or img.mode == "F":
                return _wide_to_uint8(np.asarray(img), img.mode, where)
            return np.asarray(img.convert("L" if img.mode in _GRAY_MODES else "RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{where}: cannot decode image ({exc}); fix or delete it") from exc


def _wide_to_uint8(arr: np.ndarray, mode: str, where: str) -> np.ndarray:
    """16/32-bit integer or float grayscale -> uint8 by the rules of the module docstring."""
    if arr.ndim != 2:
        raise DatasetError(
            f"{where}: unsupported {mode} image of shape {arr.shape}; save it as 8-bit"
        )
    if mode == "F":
        lo, hi = float(np.min(arr)), float(np.max(arr))  # NaN propagates into both
        if not (lo >= 0.0 and hi <= 1.0):  # False for NaN
            raise DatasetError(
                f"{where}: float image (mode F) has values in [{lo:g}, {hi:g}], but only floats in "
                "[0, 1] are read (as round(v * 255)); rescale it to [0, 1] or save it as 8-bit"
            )
        return np.rint(arr.astype(np.float64) * 255.0).astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise DatasetError(f"{where}: unsupported image mode {mode}; save it as 8-bit")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > 65535:
        raise DatasetError(
            f"{where}: {mode} image has values in [{lo}, {hi}], outside the 16-bit range [0, 65535] "
            "that is read (as round(v * 255 / 65535)); rescale it or save it as 8- or 16-bit"
        )
    # round(v * 255 / 65535) == round(v / 257), exactly (v / 257 is never a half).
    return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
