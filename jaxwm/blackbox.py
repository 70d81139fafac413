"""Black-box verification I/O: the owner reaches the suspect model only through its answers.

An owner who cannot load a suspect's weights can still send it the trigger images and record the
labels (or logits) it answers. This module moves images out and answers in, and checks both ends
so that a mistake in the plumbing (a re-encoded image, a shuffled answer file, a dropped row)
fails loudly instead of silently lowering the retention:

* :func:`export_queries` writes the query images as lossless PNGs ``query_00000.png, ...`` with
  an index (``index.csv`` and ``index.json``: position, file, SHA-256) for an owner who submits
  them to the suspect's API by hand; :func:`load_queries` reads them back bit-exactly.
* :func:`read_answers` reads the suspect's answers (``.npy``, ``.json`` or ``.csv``; labels or
  logits; in query order or keyed by position/file) into ``int32`` labels in query order.
* :func:`query_endpoint` queries a live HTTP prediction endpoint, one PNG per request, with
  retries, backoff and an optional rate limit.
* :func:`serve_predictions` is a reference server for that protocol (and the tests' suspect).

The HTTP protocol: ``POST <url>`` with the PNG file bytes as the body and
``Content-Type: image/png``; the answer is JSON, one of ``3``, ``{"label": 3}``,
``{"logits": [K floats]}``, ``{"probabilities": [K floats]}`` or a bare ``[K floats]``. When an
answer carries both ``label`` and ``logits``, the label is used: it is the suspect's decision.

The resulting labels feed :func:`jaxwm.verify.verify_predictions`. Standard library, NumPy and
Pillow only (no JAX), so it runs wherever the owner has Python.

Example:
    >>> server, url = serve_predictions(lambda x: np.eye(10)[[int(x.mean()) % 10]])
    >>> images = np.full((2, 4, 4, 3), [[[[3]]], [[[7]]]], np.uint8)
    >>> query_endpoint(url, images, 10)
    array([3, 7], dtype=int32)
    >>> server.shutdown(); server.server_close()
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import http.client
import io
import json
import math
import os
import re
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from jaxwm.errors import BlackBoxError

QUERY_FORMAT = "jaxwm-queries-1"
ANSWER_EXTENSIONS = (".npy", ".json", ".csv")
MAX_RETRY_AFTER_S = 60.0
_SNIPPET = 200  # characters of a server's answer quoted in an error message
_MAX_BODY = 64 * 1024 * 1024  # the reference server refuses larger uploads
_QUERY_RE = re.compile(r"query_(\d+)\.png")
_LOGIT_COL_RE = re.compile(r"(?:logit_)?(\d+)")

# Every wait goes through this name so tests can observe backoff without spending the time.
_sleep = time.sleep


# --------------------------------------------------------------------------------------------
# Query export


def _check_images(images: Any, name: str = "images") -> np.ndarray:
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


def _encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG of one (H, W, C) uint8 image: mode 'L' for C = 1, 'RGB' for C = 3."""
    pixels = image[..., 0] if image.shape[-1] == 1 else image
    buf = io.BytesIO()
    # No metadata and fixed settings, so the same pixels give the same bytes (and SHA-256).
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG")
    return buf.getvalue()


def _decode_png(data: bytes, what: str) -> np.ndarray:
    """(H, W, C) uint8 pixels of a PNG in mode 'L' or 'RGB'; BlackBoxError naming ``what``."""
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
            old = _decode_png(path.read_bytes(), str(path))
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
    arr = _check_images(images)
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
        data = _encode_png(arr[i])
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


def _index_path(index: str | os.PathLike[str]) -> Path:
    path = Path(index)
    return path / "index.json" if path.is_dir() else path


def _read_index(path: Path) -> dict[str, Any]:
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


def _index_rows(index: Any, where: str) -> list[tuple[int, str]]:
    """``[(position, file), ...]`` in position order from an index's rows, checked."""
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
            raise BlackBoxError(f"{where}: row {i} file {_short(name)} must be a bare file name")
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
    index_path = _index_path(directory)
    index = _read_index(index_path)
    rows = _index_rows(index, str(index_path))
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
        pixels = _decode_png(data, str(path))
        if list(pixels.shape) != shape:
            raise BlackBoxError(
                f"{path} (position {pos}) has shape {list(pixels.shape)}, index says {shape}"
            )
        images[pos] = pixels
    return images


# --------------------------------------------------------------------------------------------
# Answer files


@dataclasses.dataclass
class _Row:
    """One answer as read from a file, before it is checked and put in query order."""

    loc: str  # where it is in the file: "line 4", "element 2"
    label: Any = None
    logits: Any = None
    position: Any = None
    file: Any = None
    has_label: bool = False


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, shortened so that an error message stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise BlackBoxError(f"{name} must be an int >= {minimum}; got {_short(value)}")
    return int(value)


def _as_label(value: Any, num_classes: int, where: str) -> int:
    """A class id from an int (or an integral float such as 3.0, as CSV/JSON tools write)."""
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise BlackBoxError(f"{where}: label {_short(value)} is not an integer class id")
    if isinstance(value, float | np.floating):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise BlackBoxError(f"{where}: label {_short(value)} is not an integer class id")
        value = int(value)
    if not 0 <= value < num_classes:
        raise BlackBoxError(
            f"{where}: label {int(value)} is outside [0, {num_classes}) (num_classes)"
        )
    return int(value)


def _as_logits_label(values: Any, num_classes: int, where: str) -> int:
    """Argmax of a list of ``num_classes`` finite numbers (ties: the lowest class)."""
    if not isinstance(values, list | tuple):
        raise BlackBoxError(f"{where}: logits must be a list of numbers; got {_short(values)}")
    if len(values) != num_classes:
        raise BlackBoxError(
            f"{where}: expected {num_classes} logits (num_classes), got {len(values)}"
        )
    for j, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise BlackBoxError(f"{where}: logit {j} is {_short(v)}, not a number")
        if not math.isfinite(v):
            raise BlackBoxError(f"{where}: logit {j} is {v}; logits must be finite")
    return int(np.argmax(np.asarray(values, dtype=np.float64)))


def _parse_text(cell: str | None) -> Any:
    """A CSV cell as int, else float, else the (stripped) text, so checks see the value."""
    if cell is None:
        return None
    text = cell.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _rows_from_json(path: Path) -> list[_Row]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        # ValueError covers JSONDecodeError and integers beyond Python's digit limit;
        # RecursionError a hostile nesting depth.
        raise BlackBoxError(f"{path} is not valid JSON: {_short(str(e))}") from None
    if isinstance(data, dict):
        if "answers" not in data:
            raise BlackBoxError(
                f"{path}: a JSON object must hold the answers under 'answers'; "
                f"got keys {_short(sorted(data))}"
            )
        data = data["answers"]
    if not isinstance(data, list):
        raise BlackBoxError(
            f"{path}: expected a list of answers (or {{'answers': [...]}}); "
            f"got {type(data).__name__}"
        )
    rows = []
    for i, item in enumerate(data):
        row = _Row(loc=f"element {i}")
        if isinstance(item, dict):
            logits = item.get("logits", item.get("probabilities"))
            if "label" not in item and logits is None:
                raise BlackBoxError(
                    f"{path}: element {i} has neither 'label' nor 'logits'; "
                    f"got keys {_short(sorted(item))}"
                )
            row.has_label = "label" in item
            row.label, row.logits = item.get("label"), logits
            row.position, row.file = item.get("position"), item.get("file")
        elif isinstance(item, list):
            row.logits = item
        else:
            row.has_label, row.label = True, item
        rows.append(row)
    return rows


def _rows_from_csv(path: Path, num_classes: int) -> list[_Row]:
    try:
        return _rows_from_csv_text(path, num_classes)
    except UnicodeDecodeError as e:
        raise BlackBoxError(
            f"{path} is not UTF-8 text (a CSV of answers): {e.reason} at byte {e.start}"
        ) from None


def _rows_from_csv_text(path: Path, num_classes: int) -> list[_Row]:
    # utf-8-sig: spreadsheet programs often start CSV files with a byte-order mark.
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise BlackBoxError(f"{path} is empty; expected a header row (e.g. 'label')")
        cols = [h.strip().lower() for h in header]
        dupes = sorted({c for c in cols if cols.count(c) > 1})
        if dupes:
            raise BlackBoxError(f"{path}: duplicate header column(s) {dupes}")
        logit_cols: dict[int, int] = {}
        for j, c in enumerate(cols):
            m = _LOGIT_COL_RE.fullmatch(c)
            if m:
                k = int(m.group(1))
                if k in logit_cols:
                    raise BlackBoxError(f"{path}: two header columns name logit {k}")
                logit_cols[k] = j
        has_label = "label" in cols
        if not has_label and not logit_cols:
            raise BlackBoxError(
                f"{path}: no 'label' column and no logit columns (logit_0..logit_"
                f"{num_classes - 1} or 0..{num_classes - 1}); header is {header}"
            )
        if not has_label:
            if sorted(logit_cols) != list(range(len(logit_cols))):
                raise BlackBoxError(
                    f"{path}: logit columns must be numbered 0..K-1 without gaps; "
                    f"got {sorted(logit_cols)}"
                )
            if len(logit_cols) != num_classes:
                raise BlackBoxError(
                    f"{path}: expected {num_classes} logit columns (num_classes), "
                    f"got {len(logit_cols)}"
                )
        lines = [(reader.line_num, cells) for cells in reader]
        while lines and not any(c.strip() for c in lines[-1][1]):
            lines.pop()  # trailing blank lines, as editors leave them
        rows = []
        for line_num, cells in lines:
            loc = f"line {line_num}"
            if not any(c.strip() for c in cells):
                # In a one-column file a missing answer looks like this; don't skip it silently.
                raise BlackBoxError(f"{path}: {loc} is blank; every query needs an answer")
            if len(cells) != len(cols):
                raise BlackBoxError(
                    f"{path}: {loc} has {len(cells)} cells but the header has {len(cols)}"
                )
            cell = dict(zip(cols, cells, strict=True))
            row = _Row(loc=loc, has_label=has_label)
            if has_label:
                row.label = _parse_text(cell["label"])
            else:
                row.logits = []
                for k in range(num_classes):
                    v = _parse_text(cells[logit_cols[k]])
                    if not isinstance(v, int | float):
                        raise BlackBoxError(
                            f"{path}: {loc}: logit column {_short(header[logit_cols[k]])} holds "
                            f"{_short(v)}, not a number"
                        )
                    row.logits.append(v)
            if "position" in cell:
                row.position = _parse_text(cell["position"])
            if "file" in cell:
                row.file = cell["file"].strip()
            rows.append(row)
    return rows


def _labels_from_npy(path: Path, n: int, num_classes: int) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BlackBoxError(f"{path} is not a readable .npy array: {e}") from e
    if not isinstance(arr, np.ndarray):
        raise BlackBoxError(f"{path} holds an .npz archive; save one array with np.save")
    if arr.dtype.kind not in "iuf":
        raise BlackBoxError(
            f"{path} has dtype {arr.dtype}; expected integer labels (N,) or float logits (N, K)"
        )
    if arr.ndim not in (1, 2):
        raise BlackBoxError(
            f"{path} has shape {arr.shape}; expected labels (N,) or logits (N, {num_classes})"
        )
    if len(arr) != n:
        raise BlackBoxError(f"{path} has {len(arr)} answers; expected n = {n}, one per query")
    if arr.ndim == 2:
        if arr.shape[1] != num_classes:
            raise BlackBoxError(
                f"{path}: expected {num_classes} logits per row (num_classes), got {arr.shape[1]}"
            )
        bad = np.flatnonzero(~np.all(np.isfinite(arr), axis=1))
        if bad.size:
            raise BlackBoxError(
                f"{path}: row {bad[0]} (position {bad[0]}): logits must be finite; "
                f"got {_short(arr[bad[0]].tolist())}"
            )
        return np.argmax(arr, axis=1).astype(np.int32)
    if arr.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        if bad.size:
            raise BlackBoxError(
                f"{path}: position {bad[0]}: label {arr[bad[0]].item()!r} is not an integer class id"
            )
    bad = np.flatnonzero((arr < 0) | (arr >= num_classes))
    if bad.size:
        raise BlackBoxError(
            f"{path}: position {bad[0]}: label {arr[bad[0]]} is outside [0, {num_classes}) "
            "(num_classes)"
        )
    return arr.astype(np.int32)


def _file_positions(index: Any, n: int) -> dict[str, int] | None:
    """Map file name -> position from an index given as a path, a directory or parsed rows."""
    if index is None:
        return None
    if isinstance(index, str | os.PathLike):
        path = _index_path(index)
        rows = _index_rows(_read_index(path), str(path))
        where = str(path)
    else:
        where = "index"
        rows = _index_rows(index, where)
    if len(rows) != n:
        raise BlackBoxError(f"{where} lists {len(rows)} queries but n = {n}; use the same export")
    return {name: pos for pos, name in rows}


def _order_rows(path: Path, rows: list[_Row], n: int, index: Any) -> list[tuple[int, _Row]]:
    """``[(position, row), ...]`` in query order: by position/file when given, else as read."""
    keyed = [r.position is not None or r.file is not None for r in rows]
    if not any(keyed):
        if len(rows) != n:
            raise BlackBoxError(f"{path} has {len(rows)} answers; expected n = {n}, one per query")
        if index is not None:
            _file_positions(index, n)  # the index must at least be for n queries
        return list(enumerate(rows))
    if not all(keyed):
        first = rows[keyed.index(False)]
        raise BlackBoxError(
            f"{path}: {first.loc} has no position or file, but other rows do; "
            "give every row one or none"
        )
    files = _file_positions(index, n)
    seen: dict[int, _Row] = {}
    for row in rows:
        pos = None
        if row.position is not None:
            pos = row.position
            if isinstance(pos, bool) or not isinstance(pos, int):
                raise BlackBoxError(f"{path}: {row.loc}: position {_short(pos)} is not an integer")
            if not 0 <= pos < n:
                raise BlackBoxError(
                    f"{path}: {row.loc}: position {pos} is outside [0, {n}) (n queries)"
                )
        if row.file is not None:
            if not isinstance(row.file, str):
                raise BlackBoxError(f"{path}: {row.loc}: file {_short(row.file)} is not a string")
            if files is None:
                if pos is None:
                    raise BlackBoxError(
                        f"{path}: {row.loc} names file {_short(row.file)} but no index was given; "
                        "pass index= (the export's index.json) to map files to positions"
                    )
            else:
                name = Path(row.file.replace("\\", "/")).name  # answers may log full paths
                if name not in files:
                    raise BlackBoxError(
                        f"{path}: {row.loc}: file {_short(row.file)} is not in the query index"
                    )
                if pos is not None and pos != files[name]:
                    raise BlackBoxError(
                        f"{path}: {row.loc}: position {pos} but {name} is position "
                        f"{files[name]} in the query index"
                    )
                pos = files[name]
        if pos in seen:
            raise BlackBoxError(
                f"{path}: {row.loc}: duplicate answer for position {pos} (also {seen[pos].loc})"
            )
        seen[pos] = row
    missing = [p for p in range(n) if p not in seen]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise BlackBoxError(
            f"{path}: no answer for position(s) {', '.join(map(str, missing[:5]))}{more} of {n}"
        )
    return sorted(seen.items())


def read_answers(
    path: str | os.PathLike[str],
    n: int,
    num_classes: int,
    *,
    index: str | os.PathLike[str] | Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
) -> np.ndarray:
    """Read a suspect model's answers to the queries as labels in query order.

    Accepted files (chosen by extension):

    * ``.npy``: integer labels ``(N,)`` or float logits/probabilities ``(N, K)``.
    * ``.json``: a list of labels; a list of logit lists; a list of objects with ``label`` or
      ``logits`` (or ``probabilities``) and optionally ``position`` and/or ``file``; or any of
      these as ``{"answers": [...]}``.
    * ``.csv`` with a header: a ``label`` column or logit columns ``logit_0..logit_{K-1}`` (or
      ``0..K-1``), optionally a ``position`` and/or ``file`` column; other columns are ignored.

    Rows without ``position``/``file`` must be in query order. Rows with them may come in any
    order and are reordered; ``file`` (matched by its base name) needs ``index``. Logits are
    reduced by argmax (ties: the lowest class); when a row has both a label and logits, the label
    is used. Labels may be written as integral floats (``3.0``) but not ``2.5``, ``"cat"`` or
    booleans.

    Args:
        path: The answer file.
        n: Number of queries sent; exactly one answer per query is required.
        num_classes: ``K``; labels must lie in ``[0, K)`` and logits have ``K`` entries.
        index: The export's ``index.json`` (or its directory), or its parsed content (the dict
            or its ``rows``), to map ``file`` names to positions.

    Returns:
        ``int32`` labels ``(n,)`` in query order.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "answers.csv"
        >>> _ = p.write_text("position,label\\n1,7\\n0,3\\n")
        >>> read_answers(p, 2, 10)
        array([3, 7], dtype=int32)
    """
    n = _check_count("n", n, 1)
    num_classes = _check_count("num_classes", num_classes, 2)
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in ANSWER_EXTENSIONS:
        raise BlackBoxError(
            f"{path}: unknown answer file type {ext or '(none)'!r}; "
            f"accepted: {', '.join(ANSWER_EXTENSIONS)}"
        )
    if not path.is_file():
        raise BlackBoxError(f"{path} not found (or not a file)")
    if ext == ".npy":
        labels = _labels_from_npy(path, n, num_classes)
        if index is not None:
            _file_positions(index, n)
        return labels
    rows = _rows_from_json(path) if ext == ".json" else _rows_from_csv(path, num_classes)
    labels = np.empty((n,), np.int32)
    for pos, row in _order_rows(path, rows, n, index):
        where = f"{path}: {row.loc} (position {pos})"
        if row.has_label:
            labels[pos] = _as_label(row.label, num_classes, where)
        else:
            labels[pos] = _as_logits_label(row.logits, num_classes, where)
    return labels


# --------------------------------------------------------------------------------------------
# Live endpoint


def _snippet(body: bytes) -> str:
    return repr(body.decode("utf-8", "replace")[:_SNIPPET])


def _label_from_answer(body: bytes, num_classes: int, where: str) -> int:
    """Parse one endpoint answer; BlackBoxError quoting the answer if it is malformed."""
    bad = f"{where}: malformed answer"
    try:
        answer = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BlackBoxError(f"{bad} (not JSON): {_snippet(body)}") from None
    try:
        if isinstance(answer, dict):
            if "label" in answer:
                return _as_label(answer["label"], num_classes, bad)
            for key in ("logits", "probabilities"):
                if key in answer:
                    return _as_logits_label(answer[key], num_classes, bad)
            raise BlackBoxError(
                f"{bad}: expected key 'label', 'logits' or 'probabilities'; "
                f"got keys {_short(sorted(answer))}"
            )
        if isinstance(answer, list):
            return _as_logits_label(answer, num_classes, bad)
        return _as_label(answer, num_classes, bad)
    except BlackBoxError as e:
        raise BlackBoxError(f"{e}; answer: {_snippet(body)}") from None


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None  # absent, or an HTTP date: fall back to exponential backoff
    return min(seconds, MAX_RETRY_AFTER_S) if math.isfinite(seconds) and seconds >= 0 else None


def query_endpoint(
    url: str,
    images: Any,
    num_classes: int,
    *,
    timeout: float = 10.0,
    retries: int = 3,
    backoff: float = 0.5,
    rate_limit: float | None = None,
    headers: Mapping[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Query a suspect's HTTP prediction endpoint with each image and collect its labels.

    Each image, in order, is POSTed alone as PNG bytes (``Content-Type: image/png``) and the
    JSON answer parsed (see the module docstring for the accepted forms). Connection errors,
    timeouts, HTTP 429 and 5xx are retried up to ``retries`` times, waiting ``backoff``,
    ``2 * backoff``, ``4 * backoff``, ... seconds, or the server's numeric ``Retry-After``
    (at most 60 s). Other HTTP errors and malformed answers fail at once: repeating a request
    the server rejected, or that it answered, would not change the answer.

    Args:
        url: ``http://`` or ``https://`` URL of the endpoint.
        images: ``uint8`` images ``(N, H, W, C)``, ``C`` 1 or 3.
        num_classes: ``K``, to check the answers.
        timeout: Seconds to wait on the connection for each attempt.
        retries: Extra attempts per image after the first (``0``: no retry).
        backoff: First wait in seconds between attempts; doubles after each.
        rate_limit: At most this many requests (attempts included) per second, or ``None``.
        headers: Extra request headers, e.g. ``{"Authorization": "Bearer ..."}``.
        progress: Called as ``progress(done, total)`` after each answered image.

    Returns:
        ``int32`` labels ``(N,)`` in image order.

    Example:
        >>> server, url = serve_predictions(lambda x: np.array([[0.0, 1.0]]))
        >>> query_endpoint(url, np.zeros((3, 2, 2, 1), np.uint8), 2, rate_limit=100)
        array([1, 1, 1], dtype=int32)
        >>> server.shutdown(); server.server_close()
    """
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise BlackBoxError(
            f"url must be an http:// or https:// URL with a host; got {_short(url)}"
        )
    arr = _check_images(images)
    num_classes = _check_count("num_classes", num_classes, 2)
    retries = _check_count("retries", retries, 0)
    if not (isinstance(timeout, int | float) and timeout > 0):
        raise BlackBoxError(f"timeout must be a number of seconds > 0; got {timeout!r}")
    if not (isinstance(backoff, int | float) and backoff >= 0):
        raise BlackBoxError(f"backoff must be a number of seconds >= 0; got {backoff!r}")
    if rate_limit is not None and not (isinstance(rate_limit, int | float) and rate_limit > 0):
        raise BlackBoxError(
            f"rate_limit must be requests per second > 0 or None; got {rate_limit!r}"
        )
    base_headers = {"Content-Type": "image/png", "Accept": "application/json"}
    base_headers.update(headers or {})
    interval = 1.0 / rate_limit if rate_limit else 0.0
    next_slot = time.monotonic()
    total = len(arr)
    labels = np.empty((total,), np.int32)
    for pos in range(total):
        body = _encode_png(arr[pos])
        where = f"query at position {pos}"
        cause = ""
        for attempt in range(1, retries + 2):
            # Space request *starts* by 1/rate_limit; retries count as requests too.
            now = time.monotonic()
            if now < next_slot:
                _sleep(next_slot - now)
            next_slot = max(now, next_slot) + interval
            delay = backoff * 2 ** (attempt - 1)
            request = urllib.request.Request(url, data=body, headers=base_headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    answer = response.read()
            except urllib.error.HTTPError as e:
                try:
                    err_body = e.read()
                except Exception:
                    err_body = b""
                if e.code != 429 and not 500 <= e.code < 600:
                    raise BlackBoxError(
                        f"{where}: {url} answered HTTP {e.code} {e.reason} (not retried): "
                        f"{_snippet(err_body)}"
                    ) from None
                cause = f"HTTP {e.code} {e.reason}: {_snippet(err_body)}"
                hint = _retry_after(e.headers)
                delay = delay if hint is None else hint
            except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as e:
                reason = e.reason if isinstance(e, urllib.error.URLError) else e
                if isinstance(reason, ssl.SSLCertVerificationError):
                    raise BlackBoxError(
                        f"{where}: TLS certificate of {url} rejected: {reason}"
                    ) from None
                if isinstance(reason, TimeoutError):
                    cause = f"timed out after {timeout:g} s"
                elif isinstance(reason, str):
                    cause = reason
                else:
                    cause = f"{type(reason).__name__}: {reason}"
            else:
                labels[pos] = _label_from_answer(answer, num_classes, where)
                break
            if attempt <= retries:
                _sleep(delay)
        else:
            raise BlackBoxError(
                f"{where}: no answer from {url} after {retries + 1} attempt(s); last cause: {cause}"
            )
        if progress is not None:
            progress(pos + 1, total)
    return labels


def serve_predictions(
    predict_fn: Callable[[np.ndarray], Any], host: str = "127.0.0.1", port: int = 0
) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``predict_fn`` over HTTP in the protocol :func:`query_endpoint` speaks.

    A reference implementation of the suspect side, for tests and demos: each ``POST`` carries
    one PNG (mode ``L`` or ``RGB``), decoded to a ``uint8`` batch ``(1, H, W, C)``; the answer
    is ``{"logits": [...], "label": argmax}`` with ``predict_fn``'s logits ``(1, K)``. A body
    that is not such a PNG gets HTTP 400, a failing ``predict_fn`` HTTP 500, both with
    ``{"error": ...}``. Calls to ``predict_fn`` are serialised (it need not be thread-safe).
    The server runs in a daemon thread and logs nothing.

    Args:
        predict_fn: Callable from ``uint8`` images ``(1, H, W, C)`` to logits ``(1, K)``.
        host: Interface to bind; the default accepts local connections only.
        port: Port to bind; ``0`` picks a free one.

    Returns:
        ``(server, url)``; stop it with ``server.shutdown()`` and ``server.server_close()``.

    Example:
        >>> server, url = serve_predictions(lambda x: np.array([[0.1, 0.9]]))
        >>> url.startswith("http://127.0.0.1:")
        True
        >>> server.shutdown(); server.server_close()
    """
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self._answer(411, {"error": "Content-Length required"})
            if not 0 < length <= _MAX_BODY:
                return self._answer(413, {"error": f"body must be 1..{_MAX_BODY} bytes"})
            data = self.rfile.read(length)
            try:
                batch = _decode_png(data, "request body")[None]
            except BlackBoxError as e:
                return self._answer(400, {"error": str(e)})
            try:
                with lock:
                    logits = np.asarray(predict_fn(batch), dtype=np.float64)
                if logits.ndim != 2 or logits.shape[0] != 1:
                    raise ValueError(f"predict_fn returned shape {logits.shape}, not (1, K)")
            except Exception as e:
                return self._answer(500, {"error": f"{type(e).__name__}: {e}"})
            self._answer(200, {"logits": logits[0].tolist(), "label": int(np.argmax(logits[0]))})

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: a verification run's output should be the verdict, not access logs

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    # A short poll interval: shutdown() waits up to one interval for the serving loop to notice.
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="jaxwm-serve"
    ).start()
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    return server, f"http://{shown}:{bound_port}/"
