"""``folder:`` datasets: an ImageFolder directory or tar archive, decoded once and cached.

Layout ``<split>/<label_dir>/<file>`` (split in ``train``/``test``), exactly as the offline
copies in ``shared/data``. Label folders named ``<index>_<name>`` keep their index, and then all
of them must be numbered; if none is numbered they are numbered alphabetically; a mix is an
error, since silently renumbering ``10_ten`` would change labels. A ``.tar.gz`` is streamed
once (it has no random access) and the decoded arrays are cached as an uncompressed ``.npz`` keyed by path, size and mtime, written
atomically so a killed process never leaves a corrupt cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from jaxwm.data import SPLITS, Dataset, DatasetError, _make

logger = logging.getLogger(__name__)

# Bump when the decoded layout changes so stale caches are never reused.
_CACHE_VERSION = 1
_SKIP_SUFFIXES = frozenset({".txt", ".md", ".json", ".csv", ".db", ".ini", ".xml", ".yaml", ".yml"})
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})
_NUMBERED = re.compile(r"^(\d+)_(.+)$")


def _is_skipped(name: str) -> bool:
    """Whether a file is obviously not an image and is silently ignored.

    The rule: hidden files (``.DS_Store``, macOS ``._*`` forks) and common sidecar
    extensions (``.txt``, ``.md``, ``.json``, ``.csv``, ``Thumbs.db``, ...). Every other
    file is decoded, so a corrupt or unsupported image is an error, never silently dropped.
    """
    return name.startswith(".") or Path(name).suffix.lower() in _SKIP_SUFFIXES


def _decode_image(data: bytes, where: str) -> np.ndarray:
    """Decodes one image to uint8 ``(H, W)`` (grayscale) or ``(H, W, 3)`` (colour)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return np.asarray(img.convert("L" if img.mode in _GRAY_MODES else "RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{where}: cannot decode image ({exc}); fix or delete it") from exc


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
                yield split, entry.name, str(f), f.read_bytes()


def _natural_key(name: str) -> list:
    # "2.png" before "10.png", matching the member order of the shared tarballs.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _iter_tar(path: Path) -> Iterator[tuple[str, str, str, bytes | None]]:
    """Streams the archive once (``r|*``): a ``.tar.gz`` has no random access."""
    ignored = set()
    with tarfile.open(path, mode="r|*") as tar:
        for member in tar:
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
            yield parts[0], parts[1], where, tar.extractfile(member).read()


def _decode_folder(path: Path) -> dict[str, np.ndarray]:
    """Decodes an ImageFolder dir/archive into the arrays stored in the cache."""
    entries = _iter_dir(path) if path.is_dir() else _iter_tar(path)
    images = {s: {} for s in SPLITS}  # split -> label_dir -> list of arrays
    first_where, size, colour = None, None, False
    try:
        for split, label_dir, where, data in entries:
            bucket = images[split].setdefault(label_dir, [])
            if data is None:
                continue
            arr = _decode_image(data, where)
            if size is None:
                first_where, size = where, arr.shape[:2]
            elif arr.shape[:2] != size:
                raise DatasetError(
                    f"{where}: image is {arr.shape[1]}x{arr.shape[0]} (WxH) but {first_where} is "
                    f"{size[1]}x{size[0]}; all images must have the same size"
                )
            colour |= arr.ndim == 3
            bucket.append(arr)
    except (tarfile.TarError, EOFError, OSError) as exc:  # truncated archive, unreadable file
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


def _fingerprint(path: Path) -> str:
    # Absolute path + size + mtime of the archive (or of every file of a directory, since a
    # directory's own mtime misses edits deep inside it) + the cache format version.
    h = hashlib.sha256(f"jaxwm-data-v{_CACHE_VERSION}|{path}".encode())
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        st = f.stat()
        h.update(f"|{f.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _pairs(arrays) -> tuple[tuple, tuple]:
    return tuple((arrays[f"{s}_images"], arrays[f"{s}_labels"]) for s in SPLITS)


def _read_cache(cache_file: Path, name: str) -> Dataset | None:
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            a = {k: z[k] for k in ("train_images", "train_labels", "test_images", "test_labels")}
            class_names = [str(c) for c in z["class_names"]]
        return _make(name, class_names, *_pairs(a))
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
    cache_file = Path(cache_dir).expanduser() / f"{name}-{_fingerprint(path)}.npz"
    if (ds := _read_cache(cache_file, name)) is not None:
        logger.info("Loaded %s from cache %s", path, cache_file)
        return ds
    start = time.perf_counter()
    arrays = _decode_folder(path)
    logger.info("Decoded %s in %.1f s", path, time.perf_counter() - start)
    ds = _make(name, arrays["class_names"], *_pairs(arrays))
    _write_cache(cache_file, arrays)
    return ds
