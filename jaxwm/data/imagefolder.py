"""``folder:`` datasets: an ImageFolder directory or tar archive, decoded once and cached.

Layout ``<split>/<label_dir>/<file>`` (split in ``train``/``test``), exactly as the offline
copies in ``shared/data``. Label folders named ``<index>_<name>`` keep their index, and then all
of them must be numbered (0..K-1, each once); if none is numbered they are numbered
alphabetically; a mix is an error, since silently renumbering ``10_ten`` would change labels.

Decoding is faithful or refused (:mod:`jaxwm.data.decode`); directories and archives are read by
:mod:`jaxwm.data.archive`, within the resource limits of :mod:`jaxwm.data.limits`
(``JAXWM_MAX_FILE_BYTES``, ``JAXWM_MAX_IMAGE_PIXELS``, ``JAXWM_MAX_DECODED_BYTES``).

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

Within one process a dataset read from (or written to) its cache file is kept in memory and
returned again while that file is unchanged (same size, mtime, ctime and inode): a study loads
the same dataset for every unit, and reading the ``.npz`` and recomputing its channel statistics
cost ~0.5-1 s on MNIST each time. The source is still hashed on every load, so an edited source
is never served from memory either. The arrays of a dataset loaded here are read-only, since
every later load shares them (``np.array(ds.train_images)`` gives a writable copy).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import lzma
import os
import re
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from jaxwm.data import limits
from jaxwm.data.archive import iter_dir, iter_tar
from jaxwm.data.dataset import SPLITS, Dataset, make
from jaxwm.data.decode import decode_image
from jaxwm.errors import DatasetError

logger = logging.getLogger(__name__)

# Bump when the decoded layout or the cache key changes so stale caches are never reused.
# v2: key = SHA-256 of the source's content, stored inside the cache and checked on load.
_CACHE_VERSION = 2
_NUMBERED = re.compile(r"^(\d+)_(.+)$")
# Datasets this process loaded, by (source path, cache key, cache file): the cache file's state
# when it was read, and the dataset (see the module docstring). Two entries: a run's data.source
# and watermark.source.
_LOADED: dict[tuple[str, str, str], tuple[tuple[int, ...], Dataset]] = {}
_LOADED_MAX = 2


def _decode_folder(path: Path) -> dict[str, np.ndarray]:
    """Decodes an ImageFolder dir/archive into the arrays stored in the cache."""
    entries = iter_dir(path) if path.is_dir() else iter_tar(path)
    images = {s: {} for s in SPLITS}  # split -> label_dir -> list of arrays
    first_where, size, colour = None, None, False
    max_decoded = limits.env_limit("JAXWM_MAX_DECODED_BYTES", limits.MAX_DECODED_BYTES)
    decoded = 0
    try:
        for split, label_dir, where, data in entries:
            bucket = images[split].setdefault(label_dir, [])
            if data is None:
                continue
            arr = decode_image(data, where)
            decoded += arr.nbytes
            if decoded > max_decoded:
                raise limits.too_big(where, "the decoded size of the images so far (bytes)",
                                     decoded, max_decoded, "JAXWM_MAX_DECODED_BYTES")  # fmt: skip
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


def _file_state(path: Path) -> tuple[int, ...] | None:
    """What changes when a file is rewritten or replaced (ctime even when mtime is kept)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


def _remember(memo_key: tuple[str, str, str], state: tuple[int, ...] | None, ds: Dataset) -> None:
    """Keeps ``ds`` for later loads while its cache file has ``state``; its arrays read-only."""
    if state is None:  # no cache file (unwritable cache dir): nothing to tie the memory to
        return
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        getattr(ds, name).setflags(write=False)  # shared by every later load: no caller edits it
    _LOADED.pop(memo_key, None)
    _LOADED[memo_key] = (state, ds)
    while len(_LOADED) > _LOADED_MAX:
        del _LOADED[next(iter(_LOADED))]  # the oldest


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
    memo_key = (str(path), key, str(cache_file))
    state = _file_state(cache_file)  # before reading: a file replaced meanwhile is not kept
    if state is not None and memo_key in _LOADED and _LOADED[memo_key][0] == state:
        logger.info("Loaded %s from memory (cache %s unchanged)", path, cache_file)
        return _LOADED[memo_key][1]
    if (ds := _read_cache(cache_file, name, key)) is not None:
        logger.info("Loaded %s from cache %s", path, cache_file)
        _remember(memo_key, state if _file_state(cache_file) == state else None, ds)
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
        _remember(memo_key, _file_state(cache_file), ds)
    return ds
