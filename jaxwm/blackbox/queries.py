"""Query export: the trigger images as lossless PNGs with an index, and reading them back.

:func:`export_queries` writes ``query_00000.png, ...`` with ``index.csv`` and ``index.json``
(position, file, SHA-256) for an owner who submits them to a suspect's API by hand;
:func:`load_queries` reads them back bit-exactly, checking every file against the index.
:func:`read_index` and :func:`index_rows` are also how :mod:`jaxwm.blackbox.answers` maps answer
file names to positions.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxwm.blackbox._codec import check_images, decode_png, encode_png, short
from jaxwm.errors import BlackBoxError

QUERY_FORMAT = "jaxwm-queries-1"
_QUERY_RE = re.compile(r"query_(\d+)\.png")


def _query_name(position: int, count: int) -> str:
    """``query_00007.png``: at least 5 digits, more when ``count`` needs them (sorting stays)."""
    digits = max(5, len(str(count - 1)))
    return f"query_{position:0{digits}d}.png"


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same directory, then rename over ``path``.

    An interrupted export therefore never leaves a truncated file under its final name (the
    rename is atomic on POSIX and Windows); at worst a hidden ``.*.tmp`` file is left behind.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_same_export(
    directory: Path, arr: np.ndarray, names: list[str], existing: list[Path]
) -> None:
    """Refuse to write over another export; allow rewriting (or finishing) the same one."""
    how = "choose an empty directory or delete the old query_*.png and index files first"
    index_path = directory / "index.json"
    if index_path.exists():
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
            same = index.get("count") == len(arr) and index.get("image_shape") == list(
                arr.shape[1:]
            )
        except (ValueError, AttributeError, OSError):
            same = False
        if not same:
            raise BlackBoxError(
                f"{directory} already holds a different query export ({index_path.name}); {how}"
            )
    position = {name: i for i, name in enumerate(names)}
    for path in existing:
        # Same name and the same pixels: this export was run before (or interrupted); anything
        # else belongs to another export, whose owner may already have sent it to a suspect.
        i = position.get(path.name)
        if i is None:
            raise BlackBoxError(
                f"{directory} already holds {path.name}, which this export of {len(arr)} "
                f"images would not write; it belongs to another export; {how}"
            )
        try:
            old = decode_png(path.read_bytes(), str(path))
        except (BlackBoxError, OSError):
            old = None
        if old is None or old.shape != arr.shape[1:] or not np.array_equal(old, arr[i]):
            raise BlackBoxError(
                f"{path} already exists with different pixels (another export?); {how}"
            )


def export_queries(directory: str | os.PathLike[str], images: Any) -> Path:
    """Write query images as lossless PNGs with an index, for submission to a suspect by hand.

    Writes ``query_00000.png, query_00001.png, ...`` (at least five digits, more if ``N``
    needs them) in query order, then ``index.csv`` (columns ``position,file,sha256``, the
    SHA-256 of each PNG file's bytes) and last ``index.json`` (``{"format": "jaxwm-queries-1",
    "count": N, "image_shape": [H, W, C], "rows": [...]}`` with the same rows). Each file is
    written under a temporary name and renamed, so an interrupted export leaves no truncated
    file under a final name, and ``index.json`` exists only once every PNG is in place.

    Re-exporting the same images into the same directory is allowed (and finishes an
    interrupted export); a directory holding query files of *other* images is refused. Other
    files in the directory are left alone.

    Args:
        directory: Output directory; created if missing.
        images: ``uint8`` array ``(N, H, W, C)``, ``C`` 1 (saved as grayscale) or 3 (RGB), in
            query order.

    Returns:
        The path of ``index.json``.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> export_queries(d, np.zeros((3, 8, 8, 1), np.uint8)).name
        'index.json'
        >>> sorted(p.name for p in Path(d).iterdir())[:2]
        ['index.csv', 'index.json']
    """
    arr = check_images(images)
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise BlackBoxError(f"{out} exists and is not a directory; pass a directory to export to")
    out.mkdir(parents=True, exist_ok=True)
    n = len(arr)
    names = [_query_name(i, n) for i in range(n)]
    existing = sorted(p for p in out.iterdir() if _QUERY_RE.fullmatch(p.name))
    if existing or (out / "index.json").exists():
        _check_same_export(out, arr, names, existing)

    rows = []
    for i, name in enumerate(names):
        data = encode_png(arr[i])
        _write_atomic(out / name, data)
        rows.append({"position": i, "file": name, "sha256": hashlib.sha256(data).hexdigest()})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["position", "file", "sha256"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write_atomic(out / "index.csv", text.getvalue().encode("utf-8"))
    index = {"format": QUERY_FORMAT, "count": n, "image_shape": list(arr.shape[1:]), "rows": rows}
    index_path = out / "index.json"
    _write_atomic(index_path, (json.dumps(index, indent=1) + "\n").encode("utf-8"))
    return index_path


def index_file(index: str | os.PathLike[str]) -> Path:
    """The ``index.json`` of an export, given the file itself or its directory.

    Args:
        index: ``index.json`` or the export directory.

    Returns:
        The path of ``index.json``.
    """
    path = Path(index)
    return path / "index.json" if path.is_dir() else path


def read_index(path: Path) -> dict[str, Any]:
    """Parse a query index written by :func:`export_queries`; BlackBoxError if it is not one.

    Args:
        path: The ``index.json`` file.

    Returns:
        The parsed index (its rows are checked by :func:`index_rows`).
    """
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise BlackBoxError(f"{path} not found; point at an export_queries directory") from e
    except (OSError, ValueError, RecursionError) as e:
        raise BlackBoxError(f"{path} is not a readable JSON query index: {e}") from e
    if not isinstance(index, dict) or index.get("format") != QUERY_FORMAT:
        raise BlackBoxError(
            f"{path} is not a query index: expected an object with format {QUERY_FORMAT!r}"
        )
    return index


def index_rows(index: Any, where: str) -> list[tuple[int, str]]:
    """``[(position, file), ...]`` in position order from an index's rows, checked.

    Args:
        index: A parsed index (a mapping with ``rows`` and maybe ``count``) or its rows.
        where: The index's location, for error messages.

    Returns:
        The rows, with positions ``0, 1, 2, ...`` and bare file names.
    """
    rows = index.get("rows") if isinstance(index, Mapping) else index
    if not isinstance(rows, list):
        raise BlackBoxError(f"{where}: expected a list of rows with 'position' and 'file'")
    out = []
    for i, row in enumerate(rows):
        pos = row.get("position") if isinstance(row, dict) else None
        name = row.get("file") if isinstance(row, dict) else None
        if isinstance(pos, bool) or not isinstance(pos, int) or not isinstance(name, str):
            raise BlackBoxError(f"{where}: row {i} needs an int 'position' and a str 'file'")
        if pos != i:
            raise BlackBoxError(f"{where}: row {i} has position {pos}; rows must be 0, 1, 2, ...")
        if Path(name).name != name or name in ("", ".", ".."):
            raise BlackBoxError(f"{where}: row {i} file {short(name)} must be a bare file name")
        out.append((pos, name))
    if isinstance(index, Mapping) and "count" in index and index["count"] != len(out):
        raise BlackBoxError(f"{where}: count is {index['count']} but there are {len(out)} rows")
    return out


def load_queries(directory: str | os.PathLike[str]) -> np.ndarray:
    """Read an export of :func:`export_queries` back, checking every file against its index.

    Args:
        directory: The export directory (or its ``index.json``).

    Returns:
        ``uint8`` images ``(N, H, W, C)`` in query order, bit-identical to those exported.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> x = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
        >>> _ = export_queries(d, x)
        >>> np.array_equal(load_queries(d), x)
        True
    """
    index_path = index_file(directory)
    index = read_index(index_path)
    rows = index_rows(index, str(index_path))
    shape = index.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and shape[-1] in (1, 3)):
        raise BlackBoxError(f"{index_path}: image_shape must be [H, W, C]; got {shape!r}")
    if not rows:
        raise BlackBoxError(f"{index_path} lists no queries")
    digests = [row.get("sha256") for row in index["rows"]]
    images = np.empty((len(rows), *shape), np.uint8)
    for (pos, name), digest in zip(rows, digests, strict=True):
        path = index_path.parent / name
        try:
            data = path.read_bytes()
        except OSError as e:
            raise BlackBoxError(
                f"{path} (position {pos}) cannot be read ({e.strerror}); restore it or re-export"
            ) from e
        got = hashlib.sha256(data).hexdigest()
        if got != digest:
            raise BlackBoxError(
                f"{path} (position {pos}) has sha256 {got[:12]}..., but the index says "
                f"{str(digest)[:12]}...: the file was modified or replaced; re-export the queries"
            )
        pixels = decode_png(data, str(path))
        if list(pixels.shape) != shape:
            raise BlackBoxError(
                f"{path} (position {pos}) has shape {list(pixels.shape)}, index says {shape}"
            )
        images[pos] = pixels
    return images
