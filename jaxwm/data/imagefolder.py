"""``folder:`` datasets: an ImageFolder directory or tar archive, decoded once and cached.

Layout ``<split>/<label_dir>/<file>`` (split in ``train``/``test``), exactly as the offline
copies in ``shared/data``. Label folders named ``<index>_<name>`` keep their index, and then all
of them must be numbered (0..K-1, each once); if none is numbered they are numbered
alphabetically; a mix is an error, since silently renumbering ``10_ten`` would change labels.

Decoding is faithful or refused; every image becomes uint8 (``L`` or ``RGB``):

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

Archives (``.tar``, ``.tar.gz``/``.tgz``; also bzip2/xz) are streamed once (a ``.tar.gz`` has no
random access) with archive members kept in memory, never written to disk. The tar must end with
its end-of-archive marker (two zero blocks) and a compressed stream must end with its trailer, so
a tar cut at a member boundary or mid-member, or a truncated gzip, is an error rather than a
partial dataset (Python's ``tarfile`` alone stops silently at a member boundary).

Limits (each error names the file, the limit and the environment variable that raises it):
``JAXWM_MAX_FILE_BYTES`` (one file or tar member, checked on its declared size before it is
read; default 64 MiB), ``JAXWM_MAX_IMAGE_PIXELS`` (one image, checked from its header before it is
decoded; default 4096*4096) and ``JAXWM_MAX_DECODED_BYTES`` (all decoded images together; default
8 GiB; peak memory is about twice this while the per-split arrays are stacked). Pillow's own
decompression-bomb check (2 * ``PIL.Image.MAX_IMAGE_PIXELS``, ~179M px) still applies above it.

The decoded arrays are cached as an uncompressed ``.npz`` written atomically (a killed process
never leaves a corrupt cache). The cache is keyed by a SHA-256 of the source's content (the
archive's bytes, or a directory's sorted listing of ``(relative path, size, SHA-256)`` of every
file under ``train/`` and ``test/``) plus the cache version; the key is stored inside the cache
and checked on load, so an edited source (even with its size and mtime kept) or a cache file
replaced by another ``.npz`` is never served: a mismatch is logged and the source is decoded
again. The source is hashed on every load (there is no size/mtime shortcut): SHA-256 costs about
0.03 s for ``mnist.tar.gz`` (16.8 MB) and for ``cifar10.tar.gz`` (19.4 MB), best of 5 (up to
0.08 s on a busy 2-core machine), against a cached reload of 0.8 s / 2.1 s and a decode of
18 s / 29 s on that same machine. Command::

    python -c "import hashlib,sys,time; f=open(sys.argv[1],'rb'); t=time.perf_counter();
    hashlib.file_digest(f,'sha256'); print(time.perf_counter()-t)" /work/shared/data/mnist.tar.gz

A source edited while it is being decoded (the hash differs afterwards) is not cached.
"""

from __future__ import annotations

import bz2
import collections
import contextlib
import gzip
import hashlib
import io
import logging
import lzma
import os
import re
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from jaxwm.data.dataset import SPLITS, Dataset, make
from jaxwm.errors import DatasetError

logger = logging.getLogger(__name__)

# Bump when the decoded layout or the cache key changes so stale caches are never reused.
# v2: key = SHA-256 of the source's content, stored inside the cache and checked on load.
_CACHE_VERSION = 2
_SKIP_SUFFIXES = frozenset({".txt", ".md", ".json", ".csv", ".db", ".ini", ".xml", ".yaml", ".yml"})
_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
_NUMBERED = re.compile(r"^(\d+)_(.+)$")

# Resource limits (defaults; each overridable by the environment variable named in _limit calls).
MAX_FILE_BYTES = 64 * 2**20  # one file / tar member, on its declared size, before reading it
MAX_IMAGE_PIXELS = 4096 * 4096  # one image, from its header, before decoding it
MAX_DECODED_BYTES = 8 * 2**30  # all decoded images of a dataset together
_END_OF_ARCHIVE = bytes(2 * tarfile.BLOCKSIZE)  # POSIX: two zero blocks end a tar


def env_limit(env: str, default: int) -> int:
    """The limit from ``$env`` (a positive integer) or ``default``.

    Args:
      env: Environment variable, e.g. ``JAXWM_MAX_FILE_BYTES``.
      default: Its value when unset or empty.

    Returns:
      The limit.

    Raises:
      DatasetError: the variable is set but not a positive integer.
    """
    raw = os.environ.get(env)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise DatasetError(f"${env}={raw!r}: must be a positive integer (a byte or pixel count)")
    return value


def _too_big(where: str, what: str, value: int, limit: int, env: str) -> DatasetError:
    return DatasetError(
        f"{where}: {what} is {value:,}, over the limit of {limit:,}; if the file is genuine, "
        f"raise it with {env}=<larger number>"
    )


def _is_skipped(name: str) -> bool:
    """Whether a file is obviously not an image and is silently ignored.

    The rule: hidden files (``.DS_Store``, macOS ``._*`` forks) and common sidecar
    extensions (``.txt``, ``.md``, ``.json``, ``.csv``, ``Thumbs.db``, ...). Every other
    file is decoded, so a corrupt or unsupported image is an error, never silently dropped.
    """
    return name.startswith(".") or Path(name).suffix.lower() in _SKIP_SUFFIXES


def _decode_image(data: bytes, where: str) -> np.ndarray:
    """Decodes one image to uint8 ``(H, W)`` (grayscale) or ``(H, W, 3)`` (colour).

    See the module docstring for how 16-bit, 32-bit and float images are scaled or refused.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            max_pixels = env_limit("JAXWM_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS)
            if w * h > max_pixels:
                raise _too_big(where, f"the image's pixel count ({w}x{h})", w * h, max_pixels,
                               "JAXWM_MAX_IMAGE_PIXELS")  # fmt: skip
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


def _iter_dir(root: Path) -> Iterator[tuple[str, str, str, bytes | None]]:
    """Yields ``(split, label_dir, where, bytes)``; ``bytes=None`` announces a label dir."""
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            raise DatasetError(f"{root}: missing split folder '{split}/' (need train/ and test/)")
        for entry in sorted(split_dir.iterdir(), key=lambda p: p.name):
            if _is_skipped(entry.name):
                continue
            if not entry.is_dir():
                raise DatasetError(f"{entry}: expected only label folders in '{split}/'")
            yield split, entry.name, str(entry), None
            files = sorted(entry.iterdir(), key=lambda p: _natural_key(p.name))
            for f in files:
                if _is_skipped(f.name):
                    continue
                if not f.is_file():
                    raise DatasetError(f"{f}: nested folders are not supported in a label folder")
                _check_file_size(str(f), f.stat().st_size)
                yield split, entry.name, str(f), f.read_bytes()


def _check_file_size(where: str, size: int) -> None:
    limit = env_limit("JAXWM_MAX_FILE_BYTES", MAX_FILE_BYTES)
    if size > limit:
        raise _too_big(where, "the file's size in bytes", size, limit, "JAXWM_MAX_FILE_BYTES")


def _natural_key(name: str) -> list:
    # "2.png" before "10.png", matching the member order of the shared tarballs.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


class _TailReader:
    """A read-only stream that counts the bytes read through it and keeps the latest ones.

    tarfile reads its (uncompressed) input in ``bufsize`` chunks, so the last 64 KiB read hold
    the block where it stopped; :func:`_iter_tar` checks that block is the end-of-archive marker.
    """

    _KEEP = 64 * 1024

    def __init__(self, raw) -> None:
        self.raw, self.pos = raw, 0
        self._chunks: collections.deque[tuple[int, bytes]] = collections.deque()
        self._kept = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if data:
            self._chunks.append((self.pos, data))
            self.pos += len(data)
            self._kept += len(data)
            while self._kept - len(self._chunks[0][1]) >= self._KEEP:
                self._kept -= len(self._chunks.popleft()[1])
        return data

    def bytes_at(self, start: int, size: int) -> bytes:
        """The bytes at ``[start, start + size)`` that were read and kept (fewer at the end)."""
        out = b"".join(c for _, c in self._chunks)
        first = self._chunks[0][0] if self._chunks else self.pos
        if start < first:
            raise AssertionError(f"offset {start} is no longer kept (oldest is {first})")
        return out[start - first : start - first + size]


def _open_decompressed(raw):
    """The archive's uncompressed tar stream; gzip/bz2/xz raise EOFError if cut short."""
    magic = raw.read(6)
    raw.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic[:3] == b"BZh":
        return bz2.BZ2File(raw, mode="rb")
    if magic == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw, mode="rb")
    return raw


def _iter_tar(path: Path) -> Iterator[tuple[str, str, str, bytes | None]]:
    """Streams the archive once (``r|``): a ``.tar.gz`` has no random access.

    Decompression is done here rather than by tarfile, whose stream mode neither checks the
    gzip trailer nor notices a tar that ends at a member boundary; after the last member, the
    two zero blocks of the end-of-archive marker must follow, and the compressed stream must
    then end cleanly.
    """
    ignored = set()
    last = None
    with open(path, "rb") as raw, _open_decompressed(raw) as stream:
        reader = _TailReader(stream)
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                last = member.name
                parts = [p for p in member.name.split("/") if p not in ("", ".")]
                where = f"{path}:{member.name}"
                # Hidden entries anywhere in the path are skipped, as in a directory walk.
                if not parts or any(p.startswith(".") for p in parts):
                    continue
                if parts[0] not in SPLITS:
                    if parts[0] not in ignored:
                        logger.warning("%s: ignoring top-level entry %r", path, parts[0])
                        ignored.add(parts[0])
                    continue
                if member.isdir() or _is_skipped(parts[-1]):
                    # Still announce the label dir, so one holding only notes.txt is reported.
                    if len(parts) == 3 or (len(parts) == 2 and member.isdir()):
                        yield parts[0], parts[1], where, None
                    continue
                if not member.isfile():
                    raise DatasetError(f"{where}: only regular files are supported, not links")
                if len(parts) != 3:
                    raise DatasetError(f"{where}: expected '<split>/<label_dir>/<file>'")
                _check_file_size(where, member.size)
                yield parts[0], parts[1], where, tar.extractfile(member).read()
            end = tar.offset  # where tarfile stopped: the end-of-archive marker should be here
        while reader.pos < end + len(_END_OF_ARCHIVE):  # at most 1 KiB more, so kept
            if not reader.read(end + len(_END_OF_ARCHIVE) - reader.pos):
                break
        marker = reader.bytes_at(end, len(_END_OF_ARCHIVE))
        while stream.read(1 << 20):  # to the end: a compressed stream verifies its trailer
            pass
    if marker != _END_OF_ARCHIVE:
        after = f"after member {last!r}" if last else "at its start"
        raise DatasetError(
            f"{path}: archive is truncated or damaged: no end-of-archive marker {after} "
            f"(byte {end} of the tar); re-download or re-create it"
        )


def _decode_folder(path: Path) -> dict[str, np.ndarray]:
    """Decodes an ImageFolder dir/archive into the arrays stored in the cache."""
    entries = _iter_dir(path) if path.is_dir() else _iter_tar(path)
    images = {s: {} for s in SPLITS}  # split -> label_dir -> list of arrays
    first_where, size, colour = None, None, False
    max_decoded, decoded = env_limit("JAXWM_MAX_DECODED_BYTES", MAX_DECODED_BYTES), 0
    try:
        for split, label_dir, where, data in entries:
            bucket = images[split].setdefault(label_dir, [])
            if data is None:
                continue
            arr = _decode_image(data, where)
            decoded += arr.nbytes
            if decoded > max_decoded:
                raise _too_big(where, "the decoded size of the images so far (bytes)", decoded,
                               max_decoded, "JAXWM_MAX_DECODED_BYTES")  # fmt: skip
            if size is None:
                first_where, size = where, arr.shape[:2]
            elif arr.shape[:2] != size:
                raise DatasetError(
                    f"{where}: image is {arr.shape[1]}x{arr.shape[0]} (WxH) but {first_where} is "
                    f"{size[1]}x{size[0]}; all images must have the same size"
                )
            colour |= arr.ndim == 3
            bucket.append(arr)
    # Truncated archive or compressed stream, corrupt compressed data, unreadable file.
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc}); check the file or re-download") from exc

    for split in SPLITS:
        if not images[split]:
            raise DatasetError(f"{path}: split '{split}/' is missing or has no label folders")
        for label_dir, arrs in images[split].items():
            if not arrs:
                raise DatasetError(f"{path}: label folder '{split}/{label_dir}' has no images")
    train_set, test_set = set(images["train"]), set(images["test"])
    if train_set != test_set:
        raise DatasetError(
            f"{path}: train and test label folders differ (only in train: "
            f"{sorted(train_set - test_set)}, only in test: {sorted(test_set - train_set)})"
        )
    index, class_names = _label_index(path, sorted(train_set))

    out: dict[str, np.ndarray] = {"class_names": np.array(class_names, dtype=str)}
    for split in SPLITS:
        xs, ys = [], []
        for label_dir in sorted(images[split], key=index.__getitem__):
            arrs = images[split][label_dir]
            # Grayscale images inside a colour dataset are promoted (lossless), so channel
            # count does not depend on which file happens to come first.
            xs.extend(_to_channels(a, 3 if colour else 1) for a in arrs)
            ys.extend([index[label_dir]] * len(arrs))
        out[f"{split}_images"] = np.stack(xs)
        out[f"{split}_labels"] = np.asarray(ys, np.int32)
    return out


def _to_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    if arr.ndim == 3:
        return arr
    return np.repeat(arr[..., None], channels, axis=-1)


def _label_index(path: Path, label_dirs: list[str]) -> tuple[dict[str, int], list[str]]:
    """Numbered dirs (``3_cat``, all of them) keep their number; none numbered: alphabetical."""
    matches = {d: _NUMBERED.match(d) for d in label_dirs}
    if not any(matches.values()):
        return {d: i for i, d in enumerate(label_dirs)}, list(label_dirs)
    if unnumbered := [d for d, m in matches.items() if not m]:
        raise DatasetError(
            f"{path}: label folders {unnumbered} have no '<index>_' prefix but others do "
            f"(e.g. {next(d for d, m in matches.items() if m)!r}); number them all "
            "('0_cat', '1_dog', ...) or none (then they are numbered alphabetically)"
        )
    index = {d: int(m.group(1)) for d, m in matches.items()}
    by_index: dict[int, list[str]] = {}
    for d, i in index.items():
        by_index.setdefault(i, []).append(d)
    if dupes := {i: ds for i, ds in sorted(by_index.items()) if len(ds) > 1}:
        raise DatasetError(
            f"{path}: label index used by more than one folder: "
            f"{'; '.join(f'{i} by {ds}' for i, ds in dupes.items())}; give each folder its own "
            f"index, each of 0..{len(label_dirs) - 1} exactly once"
        )
    if sorted(index.values()) != list(range(len(label_dirs))):
        raise DatasetError(
            f"{path}: numbered label folders must use each index 0..{len(label_dirs) - 1} "
            f"exactly once, got {sorted(label_dirs, key=index.__getitem__)}"
        )
    names = [""] * len(label_dirs)
    for d, m in matches.items():
        names[index[d]] = m.group(2)
    return index, names


def _dataset_name(path: Path) -> str:
    name = path.name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _source_key(path: Path) -> str:
    """The cache key: cache version + SHA-256 of the source's content (see module docstring)."""
    if path.is_file():
        with open(path, "rb") as f:
            return f"jaxwm-folder-v{_CACHE_VERSION}:file:{hashlib.file_digest(f, 'sha256').hexdigest()}"
    listing = hashlib.sha256()
    files = sorted(
        (f.relative_to(path).as_posix(), f)
        for split in SPLITS
        if (path / split).is_dir()
        for f in (path / split).rglob("*")
        if f.is_file()
    )
    for rel, f in files:
        with open(f, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        listing.update(f"{rel}\0{size}\0{digest}\n".encode())
    return f"jaxwm-folder-v{_CACHE_VERSION}:dir:{listing.hexdigest()}"


def _pairs(arrays) -> tuple[tuple, tuple]:
    return tuple((arrays[f"{s}_images"], arrays[f"{s}_labels"]) for s in SPLITS)


def _read_cache(cache_file: Path, name: str, key: str) -> Dataset | None:
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            stored = str(z["cache_key"]) if "cache_key" in z.files else "(none)"
            if stored != key:
                logger.warning(
                    "Cache %s was not made from this source (stored key %s, expected %s); "
                    "ignoring it and decoding again",
                    cache_file, stored, key,
                )  # fmt: skip
                return None
            a = {k: z[k] for k in ("train_images", "train_labels", "test_images", "test_labels")}
            class_names = [str(c) for c in z["class_names"]]
        return make(name, class_names, *_pairs(a))
    except FileNotFoundError:
        return None
    except Exception as exc:  # any unreadable/invalid cache is rebuilt, never fatal
        logger.warning("Cache %s is corrupt (%s); deleting and rebuilding it", cache_file, exc)
        with contextlib.suppress(OSError):
            cache_file.unlink()
        return None


def _write_cache(cache_file: Path, arrays: dict[str, np.ndarray]) -> None:
    # temp file + fsync + os.replace: a killed process leaves either no cache or a whole one.
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)  # uncompressed: reloading is then a plain read
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared cache dir should stay readable
            os.replace(tmp, cache_file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        logger.warning("Cannot write cache %s (%s); continuing without it", cache_file, exc)


def load_folder(path: Path, cache_dir: str | os.PathLike | None) -> Dataset:
    """Loads an ImageFolder directory or tar archive, from the ``.npz`` cache when it is fresh.

    Args:
        path: The directory, ``.tar``, ``.tar.gz`` or ``.tgz``.
        cache_dir: Cache folder; None means ``$JAXWM_CACHE_DIR`` or ``~/.cache/jaxwm``.

    Returns:
        The :class:`jaxwm.data.Dataset`.

    Raises:
        DatasetError: naming the path or member at fault (see :mod:`jaxwm.data`).
    """
    path = path.absolute()
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory (folder: needs a dir or tar)")
    if not path.is_dir() and not (path.is_file() and tarfile.is_tarfile(path)):
        raise DatasetError(f"{path}: not a directory or a .tar/.tar.gz/.tgz archive")
    name = _dataset_name(path)
    if cache_dir is None:
        cache_dir = os.environ.get("JAXWM_CACHE_DIR") or Path.home() / ".cache" / "jaxwm"
    start = time.perf_counter()
    try:
        key = _source_key(path)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc}); check the file's permissions") from exc
    logger.debug("Hashed %s in %.3f s", path, time.perf_counter() - start)
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    cache_file = Path(cache_dir).expanduser() / f"{name}-{digest}.npz"
    if (ds := _read_cache(cache_file, name, key)) is not None:
        logger.info("Loaded %s from cache %s", path, cache_file)
        return ds
    start = time.perf_counter()
    arrays = _decode_folder(path)
    logger.info("Decoded %s in %.1f s", path, time.perf_counter() - start)
    ds = make(name, arrays["class_names"], *_pairs(arrays))
    # Hash again: a source edited while it was decoded must not be cached under the old key.
    if _source_key(path) != key:
        logger.warning("%s changed while it was decoded; not caching it", path)
    else:
        _write_cache(cache_file, {**arrays, "cache_key": np.array(key)})
    return ds
