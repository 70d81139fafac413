"""Answer files: a suspect's answers (labels or logits) read into labels in query order.

:func:`read_answers` accepts ``.npy``, ``.json`` and ``.csv`` files, with answers in query order
or keyed by position or by query file name (through the export's index). Every answer is checked,
so a shuffled, truncated or hand-edited file fails loudly naming the row instead of silently
lowering the retention.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxwm.blackbox._codec import as_label, as_logits_label, check_count, short
from jaxwm.blackbox.queries import index_file, index_rows, read_index
from jaxwm.errors import BlackBoxError

ANSWER_EXTENSIONS = (".npy", ".json", ".csv")
_LOGIT_COL_RE = re.compile(r"(?:logit_)?(\d+)")


@dataclasses.dataclass
class _Row:
    """One answer as read from a file, before it is checked and put in query order."""

    loc: str  # where it is in the file: "line 4", "element 2"
    label: Any = None
    logits: Any = None
    position: Any = None
    file: Any = None
    has_label: bool = False


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
        raise BlackBoxError(f"{path} is not valid JSON: {short(str(e))}") from None
    if isinstance(data, dict):
        if "answers" not in data:
            raise BlackBoxError(
                f"{path}: a JSON object must hold the answers under 'answers'; "
                f"got keys {short(sorted(data))}"
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
                    f"got keys {short(sorted(item))}"
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
                            f"{path}: {loc}: logit column {short(header[logit_cols[k]])} holds "
                            f"{short(v)}, not a number"
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
                f"got {short(arr[bad[0]].tolist())}"
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
        path = index_file(index)
        rows = index_rows(read_index(path), str(path))
        where = str(path)
    else:
        where = "index"
        rows = index_rows(index, where)
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
                raise BlackBoxError(f"{path}: {row.loc}: position {short(pos)} is not an integer")
            if not 0 <= pos < n:
                raise BlackBoxError(
                    f"{path}: {row.loc}: position {pos} is outside [0, {n}) (n queries)"
                )
        if row.file is not None:
            if not isinstance(row.file, str):
                raise BlackBoxError(f"{path}: {row.loc}: file {short(row.file)} is not a string")
            if files is None:
                if pos is None:
                    raise BlackBoxError(
                        f"{path}: {row.loc} names file {short(row.file)} but no index was given; "
                        "pass index= (the export's index.json) to map files to positions"
                    )
            else:
                name = Path(row.file.replace("\\", "/")).name  # answers may log full paths
                if name not in files:
                    raise BlackBoxError(
                        f"{path}: {row.loc}: file {short(row.file)} is not in the query index"
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
    n = check_count("n", n, 1)
    num_classes = check_count("num_classes", num_classes, 2)
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
            labels[pos] = as_label(row.label, num_classes, where)
        else:
            labels[pos] = as_logits_label(row.logits, num_classes, where)
    return labels
