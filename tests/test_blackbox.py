"""Tests for jaxwm.blackbox: query export, answer files and a live HTTP suspect on 127.0.0.1."""

from __future__ import annotations

import csv
import doctest
import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from jaxwm import blackbox
from jaxwm.blackbox import (
    answers,
    endpoint,
    export_queries,
    load_queries,
    queries,
    query_endpoint,
    read_answers,
    serve_predictions,
)
from jaxwm.errors import BlackBoxError, VerificationError

K = 10


def _images(n: int, c: int, seed: int = 0, h: int = 5, w: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# Export / load


@pytest.mark.parametrize("c", [1, 3])
def test_export_load_round_trip_is_bit_exact(tmp_path, c):
    x = _images(12, c)
    x[0] = 0  # extremes survive too
    x[1] = 255
    index_path = export_queries(tmp_path / "q", x)
    assert index_path == tmp_path / "q" / "index.json"
    y = load_queries(tmp_path / "q")
    assert y.dtype == np.uint8 and y.shape == x.shape
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(load_queries(index_path), x)  # the index path works too

    index = json.loads(index_path.read_text())
    assert index["format"] == "jaxwm-queries-1"
    assert index["count"] == 12 and index["image_shape"] == [5, 7, c]
    with (tmp_path / "q" / "index.csv").open(newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [list(r) for r in csv_rows[:1]] == [["position", "file", "sha256"]]
    for i, (row, csv_row) in enumerate(zip(index["rows"], csv_rows, strict=True)):
        assert row["position"] == i and row["file"] == f"query_{i:05d}.png"
        data = (tmp_path / "q" / row["file"]).read_bytes()
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        assert csv_row == {"position": str(i), "file": row["file"], "sha256": row["sha256"]}
    assert not [p for p in (tmp_path / "q").iterdir() if p.name.startswith(".")]  # no temp files


def test_query_names_pad_to_five_digits_or_more():
    assert queries._query_name(7, 3) == "query_00007.png"
    assert queries._query_name(0, 100_000) == "query_00000.png"
    assert queries._query_name(5, 100_001) == "query_000005.png"
    names = [queries._query_name(i, 123_456) for i in (9, 10, 123_455)]
    assert names == sorted(names)  # zero padding keeps lexical order = query order


def test_png_modes(tmp_path):
    from PIL import Image

    export_queries(tmp_path / "g", _images(1, 1))
    export_queries(tmp_path / "c", _images(1, 3))
    assert Image.open(tmp_path / "g" / "query_00000.png").mode == "L"
    assert Image.open(tmp_path / "c" / "query_00000.png").mode == "RGB"


@pytest.mark.parametrize(
    "images, match",
    [
        (np.zeros((2, 4, 4, 3), np.float32), "uint8"),
        (np.zeros((2, 4, 4), np.uint8), r"\(N, H, W, C\)"),
        (np.zeros((2, 4, 4, 4), np.uint8), "C = 1 or 3"),
        (np.zeros((0, 4, 4, 3), np.uint8), "at least one"),
    ],
)
def test_export_rejects_bad_images(tmp_path, images, match):
    with pytest.raises(BlackBoxError, match=match):
        export_queries(tmp_path, images)


def test_export_refuses_another_export_but_rewrites_the_same(tmp_path):
    x = _images(4, 3)
    export_queries(tmp_path, x)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    export_queries(tmp_path, x.copy())  # same images: idempotent
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    with pytest.raises(BlackBoxError, match="different query export"):
        export_queries(tmp_path, x[:3])
    y = x.copy()
    y[2, 0, 0, 0] ^= 1
    with pytest.raises(BlackBoxError, match=r"query_00002\.png already exists with different"):
        export_queries(tmp_path, y)
    np.testing.assert_array_equal(load_queries(tmp_path), x)  # the old export is untouched


def test_export_refuses_stray_query_files_and_finishes_an_interrupted_one(tmp_path):
    x = _images(3, 1)
    export_queries(tmp_path, x)
    (tmp_path / "index.json").unlink()  # as if interrupted before the index was written
    (tmp_path / "query_00002.png").unlink()
    export_queries(tmp_path, x)  # same images: finishing the export is allowed
    np.testing.assert_array_equal(load_queries(tmp_path), x)

    (tmp_path / "index.json").unlink()
    with pytest.raises(BlackBoxError, match="query_00002.png, which this export"):
        export_queries(tmp_path, x[:2])  # query_00002.png would be left from another export
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("unrelated files are left alone")
    export_queries(other, x)
    assert (other / "notes.txt").read_text() == "unrelated files are left alone"


def test_interrupted_export_leaves_no_truncated_file(tmp_path, monkeypatch):
    import os

    calls = {"n": 0}
    real_replace = os.replace

    def flaky_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # interrupted while writing the third file
        real_replace(src, dst)

    monkeypatch.setattr(queries.os, "replace", flaky_replace)
    with pytest.raises(KeyboardInterrupt):
        export_queries(tmp_path, _images(5, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["query_00000.png", "query_00001.png"]
    monkeypatch.setattr(queries.os, "replace", real_replace)
    export_queries(tmp_path, _images(5, 3))  # and the rerun finishes it
    np.testing.assert_array_equal(load_queries(tmp_path), _images(5, 3))


def test_load_detects_tampering(tmp_path):
    from PIL import Image

    x = _images(3, 3)
    export_queries(tmp_path, x)
    target = tmp_path / "query_00001.png"
    Image.fromarray(x[1] // 2).save(target)  # a valid PNG of other pixels
    with pytest.raises(BlackBoxError, match=r"query_00001\.png \(position 1\) has sha256"):
        load_queries(tmp_path)
    Image.fromarray(x[1]).save(target, optimize=True)  # same pixels, other bytes: still flagged
    with pytest.raises(BlackBoxError, match="modified or replaced"):
        load_queries(tmp_path)
    target.unlink()
    with pytest.raises(BlackBoxError, match=r"query_00001\.png \(position 1\) cannot be read"):
        load_queries(tmp_path)


def test_load_checks_the_index(tmp_path):
    export_queries(tmp_path, _images(3, 1))
    index = json.loads((tmp_path / "index.json").read_text())
    index["count"] = 4
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(BlackBoxError, match="count is 4 but there are 3 rows"):
        load_queries(tmp_path)
    with pytest.raises(BlackBoxError, match="not found"):
        load_queries(tmp_path / "missing")
    (tmp_path / "index.json").write_text('{"format": "other"}')
    with pytest.raises(BlackBoxError, match="not a query index"):
        load_queries(tmp_path)


# --------------------------------------------------------------------------------------------
# Answer files

LABELS = [3, 0, 9, 4, 4]


def _one_hot_logits(labels):
    logits = np.random.default_rng(1).normal(size=(len(labels), K))
    logits[np.arange(len(labels)), labels] += 10.0
    return logits


def _write(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, content)
    elif name.endswith(".json"):
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    else:
        path.write_text(content)
    return path


def _csv(header, rows):
    return "\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n"


_LOGITS = _one_hot_logits(LABELS).tolist()
_PERM = [2, 4, 0, 3, 1]
_FILES = [f"query_{i:05d}.png" for i in range(5)]

# name, content, needs_index: every accepted format, labels and logits, in order or keyed.
_FORMATS = [
    ("labels.npy", np.array(LABELS, np.int64), False),
    ("labels_u8.npy", np.array(LABELS, np.uint8), False),
    ("labels_float.npy", np.array(LABELS, np.float32), False),  # integral floats are fine
    ("logits.npy", np.array(_LOGITS, np.float32), False),
    ("probs.npy", np.eye(K)[LABELS], False),
    ("labels.json", LABELS, False),
    ("logits.json", _LOGITS, False),
    ("objects.json", [{"label": v} for v in LABELS], False),
    ("obj_logits.json", [{"logits": v} for v in _LOGITS], False),
    ("obj_probs.json", [{"probabilities": np.eye(K)[v].tolist()} for v in LABELS], False),
    ("wrapped.json", {"answers": LABELS}, False),
    ("wrapped_logits.json", {"answers": _LOGITS}, False),
    ("label_wins.json", [{"label": v, "logits": [0.0] * K} for v in LABELS], False),
    ("by_pos.json", [{"position": i, "label": LABELS[i]} for i in _PERM], False),
    ("by_file.json", {"answers": [{"file": _FILES[i], "logits": _LOGITS[i]} for i in _PERM]}, True),
    ("by_path.json", [{"file": f"/up/{_FILES[i]}", "label": LABELS[i]} for i in _PERM], True),
    ("both.json", [{"file": _FILES[i], "position": i, "label": LABELS[i]} for i in _PERM], True),
    ("labels.csv", _csv(["label"], [[v] for v in LABELS]), False),
    ("labels_float.csv", _csv(["label"], [[f"{v}.0"] for v in LABELS]), False),
    ("extra_cols.csv", _csv(["time", "Label", "score"], [["t", v, 0.5] for v in LABELS]), False),
    ("logit_cols.csv", _csv([f"logit_{k}" for k in range(K)], _LOGITS), False),
    ("num_cols.csv", _csv([str(k) for k in range(K)], _LOGITS), False),
    ("by_pos.csv", _csv(["position", "label"], [[i, LABELS[i]] for i in _PERM]), False),
    ("by_file.csv", _csv(["file", "label"], [[_FILES[i], LABELS[i]] for i in _PERM]), True),
    (
        "by_file_logits.csv",
        _csv(
            ["file"] + [f"logit_{k}" for k in range(K)], [[_FILES[i]] + _LOGITS[i] for i in _PERM]
        ),
        True,
    ),
    ("bom.csv", "\ufefflabel\n" + "\n".join(map(str, LABELS)) + "\n\n", False),
]


@pytest.fixture
def export(tmp_path):
    """An export of 5 queries; returns its index.json path."""
    return export_queries(tmp_path / "queries", _images(5, 3))


@pytest.mark.parametrize("name, content, needs_index", _FORMATS, ids=[f[0] for f in _FORMATS])
def test_read_answers_formats(tmp_path, export, name, content, needs_index):
    path = _write(tmp_path, name, content)
    labels = read_answers(path, 5, K, index=export if needs_index else None)
    assert labels.dtype == np.int32
    assert labels.tolist() == LABELS


@pytest.mark.parametrize(
    "index_form",
    ["path", "dir", "str", "dict", "rows"],
)
def test_read_answers_index_forms(tmp_path, export, index_form):
    index = {
        "path": export,
        "dir": export.parent,
        "str": str(export),
        "dict": json.loads(export.read_text()),
        "rows": json.loads(export.read_text())["rows"],
    }[index_form]
    path = _write(
        tmp_path, "a.csv", _csv(["file", "label"], [[_FILES[i], LABELS[i]] for i in _PERM])
    )
    assert read_answers(path, 5, K, index=index).tolist() == LABELS


# name, content, use_index, expected fragments of the message (besides the file name).
_ERRORS = [
    ("short.npy", np.array(LABELS[:4]), False, ["4 answers", "n = 5"]),
    ("short.json", LABELS[:4], False, ["4 answers", "n = 5"]),
    ("long.csv", _csv(["label"], [[v] for v in LABELS + [1]]), False, ["6 answers", "n = 5"]),
    ("range.npy", np.array([3, 0, 10, 4, 4]), False, ["position 2", "label 10", "[0, 10)"]),
    ("neg.json", [3, 0, 9, -1, 4], False, ["position 3", "label -1", "[0, 10)"]),
    ("range.csv", _csv(["label"], [[3], [0], [9], [4], [12]]), False, ["position 4", "label 12"]),
    ("frac.npy", np.array([3, 0, 2.5, 4, 4]), False, ["position 2", "2.5", "not an integer"]),
    ("frac.json", [3, 0, 9, 2.5, 4], False, ["position 3", "2.5", "not an integer"]),
    ("str.json", [3, "cat", 9, 4, 4], False, ["position 1", "'cat'", "not an integer"]),
    ("bool.json", [3, 0, True, 4, 4], False, ["position 2", "True", "not an integer"]),
    ("bool.npy", np.array([True] * 5), False, ["dtype bool"]),
    (
        "str.csv",
        _csv(["label"], [[3], ["cat"], [9], [4], [4]]),
        False,
        ["line 3", "position 1", "'cat'"],
    ),
    ("frac.csv", _csv(["label"], [[3], [0], [9], [4], [4.5]]), False, ["position 4", "4.5"]),
    (
        "empty.csv",
        _csv(["label", "t"], [[3, 0], ["", 0], [9, 0], [4, 0], [4, 0]]),
        False,
        ["position 1", "''"],
    ),
    ("blankline.csv", "label\n3\n\n9\n4\n4\n\n", False, ["line 3 is blank"]),
    ("width.npy", np.zeros((5, 9)), False, ["expected 10 logits", "got 9"]),
    (
        "width.json",
        _LOGITS[:2] + [_LOGITS[2][:9]] + _LOGITS[3:],
        False,
        ["position 2", "expected 10 logits", "got 9"],
    ),
    (
        "width.csv",
        _csv([f"logit_{k}" for k in range(9)], [v[:9] for v in _LOGITS]),
        False,
        ["expected 10 logit columns", "got 9"],
    ),
    ("gap.csv", _csv(["logit_0", "logit_2"], [[0, 1]] * 5), False, ["without gaps"]),
    (
        "nan.npy",
        np.where(np.arange(50).reshape(5, 10) == 31, np.nan, 0.0),
        False,
        ["position 3", "finite"],
    ),
    (
        "nan.json",
        json.dumps(_LOGITS[:2] + [[0] * 9 + [float("nan")]] + _LOGITS[3:]),
        False,
        ["position 2", "logit 9 is nan"],
    ),
    (
        "inf.json",
        json.dumps(_LOGITS[:4] + [[float("-inf")] + [0] * 9]),
        False,
        ["position 4", "logit 0 is -inf"],
    ),
    (
        "nan.csv",
        _csv([str(k) for k in range(K)], _LOGITS[:1] + [[0] * 9 + ["nan"]] + _LOGITS[2:]),
        False,
        ["line 3", "position 1", "finite"],
    ),
    ("strlogit.json", [["a"] * K] + _LOGITS[1:], False, ["position 0", "logit 0 is 'a'"]),
    (
        "strlogit.csv",
        _csv([str(k) for k in range(K)], [["x"] * K] + _LOGITS[1:]),
        False,
        ["line 2", "'x', not a number"],
    ),
    (
        "dup.json",
        [{"position": p, "label": 1} for p in [0, 1, 2, 2, 4]],
        False,
        ["element 3", "duplicate answer for position 2", "element 2"],
    ),
    (
        "dup.csv",
        _csv(["position", "label"], [[0, 1], [1, 1], [1, 1], [3, 1], [4, 1]]),
        False,
        ["line 4", "duplicate answer for position 1"],
    ),
    (
        "missing.json",
        [{"position": p, "label": 1} for p in [0, 1, 2, 4]],
        False,
        ["no answer for position(s) 3"],
    ),
    (
        "missing_file.csv",
        _csv(["file", "label"], [[_FILES[i], 1] for i in [0, 2, 3]]),
        True,
        ["no answer for position(s) 1, 4"],
    ),
    (
        "outside.json",
        [{"position": p, "label": 1} for p in [0, 1, 2, 3, 5]],
        False,
        ["element 4", "position 5", "outside [0, 5)"],
    ),
    (
        "strpos.csv",
        _csv(["position", "label"], [["a", 1]] + [[i, 1] for i in range(1, 5)]),
        False,
        ["line 2", "position 'a'"],
    ),
    (
        "unknown_file.json",
        [{"file": f, "label": 1} for f in _FILES[:4] + ["query_00099.png"]],
        True,
        ["element 4", "'query_00099.png' is not in the query index"],
    ),
    (
        "no_index.json",
        [{"file": f, "label": 1} for f in _FILES],
        False,
        ["element 0", "no index was given", "index="],
    ),
    (
        "conflict.json",
        [{"file": f, "position": (i + 1) % 5, "label": 1} for i, f in enumerate(_FILES)],
        True,
        ["element 0", "position 1", "position 0 in the query index"],
    ),
    (
        "mixed.json",
        [{"position": 0, "label": 1}] + [{"label": 1}] * 4,
        False,
        ["element 1", "no position or file"],
    ),
    ("nokey.json", [{"score": 1}] * 5, False, ["element 0", "neither 'label' nor 'logits'"]),
    ("noanswers.json", {"labels": LABELS}, False, ["'answers'"]),
    ("scalar.json", "3", False, ["expected a list"]),
    ("broken.json", "[1, 2,", False, ["not valid JSON"]),
    (
        "nolabel.csv",
        _csv(["pred"], [[v] for v in LABELS]),
        False,
        ["no 'label' column", "logit_0..logit_9"],
    ),
    ("ragged.csv", "label,file\n1\n", False, ["line 2", "1 cells but the header has 2"]),
    ("blank.csv", "", False, ["empty"]),
    ("cube.npy", np.zeros((5, 10, 1)), False, ["shape (5, 10, 1)"]),
    ("answers.txt", "1\n", False, ["unknown answer file type '.txt'", ".npy, .json, .csv"]),
]


@pytest.mark.parametrize(
    "name, content, use_index, fragments", _ERRORS, ids=[e[0] for e in _ERRORS]
)
def test_read_answers_errors(tmp_path, export, name, content, use_index, fragments):
    path = _write(tmp_path, name, content)
    with pytest.raises(BlackBoxError) as info:
        read_answers(path, 5, K, index=export if use_index else None)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_read_answers_index_and_argument_errors(tmp_path, export):
    path = _write(tmp_path, "a.json", LABELS)
    with pytest.raises(BlackBoxError, match="lists 5 queries but n = 4"):
        read_answers(_write(tmp_path, "b.json", LABELS[:4]), 4, K, index=export)
    with pytest.raises(BlackBoxError, match="not found"):
        read_answers(path, 5, K, index=tmp_path / "nowhere.json")
    with pytest.raises(BlackBoxError, match="num_classes must be an int >= 2"):
        read_answers(path, 5, 1)
    with pytest.raises(BlackBoxError, match="n must be an int >= 1"):
        read_answers(path, True, K)
    with pytest.raises(BlackBoxError, match="not found"):
        read_answers(tmp_path / "absent.csv", 5, K)
    assert issubclass(BlackBoxError, VerificationError)


# --------------------------------------------------------------------------------------------
# Live endpoint


def _mean_label(batch: np.ndarray) -> np.ndarray:
    """A fake suspect: the class is the mean pixel // 26 (0..9), as one-hot logits."""
    assert batch.dtype == np.uint8 and batch.shape[0] == 1
    return np.eye(K)[[int(batch.mean()) // 26]]


def _constant_images(labels, c=3):
    return np.stack([np.full((6, 5, c), 26 * v + 7, np.uint8) for v in labels])


@pytest.fixture
def suspect():
    server, url = serve_predictions(_mean_label)
    yield url
    server.shutdown()
    server.server_close()


class _Scripted(BaseHTTPRequestHandler):
    """Answers request i with ``server.script[min(i, len - 1)]`` = (status, headers, body, delay)."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            i = self.server.hits
            self.server.hits += 1
            self.server.bodies.append(self.headers.get("Content-Type"))
        status, headers, body, delay = self.server.script[min(i, len(self.server.script) - 1)]
        time.sleep(delay)
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def log_message(self, format, *args):
        pass


@pytest.fixture
def scripted():
    """start(*responses) -> (server, url) of a misbehaving server; all shut down afterwards."""
    servers = []

    def start(*script):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
        server.daemon_threads = True
        server.script = [(s[0], s[1], s[2], s[3] if len(s) > 3 else 0.0) for s in script]
        server.hits, server.bodies, server.lock = 0, [], threading.Lock()
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server, f"http://127.0.0.1:{server.server_address[1]}/predict"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sleeps(monkeypatch):
    """Record backoff waits instead of sleeping them."""
    recorded = []
    monkeypatch.setattr(endpoint, "_sleep", recorded.append)
    return recorded


@pytest.mark.parametrize("c", [1, 3])
def test_query_endpoint_against_reference_server(suspect, c):
    labels = [3, 0, 9, 4, 4, 7, 1]
    seen = []
    got = query_endpoint(
        suspect, _constant_images(labels, c), K, progress=lambda d, t: seen.append((d, t))
    )
    assert got.dtype == np.int32 and got.tolist() == labels
    assert seen == [(i, 7) for i in range(1, 8)]


def test_reference_server_rejects_non_png(suspect):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(suspect, data=b"GIF89a...", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 400
    assert "not a readable PNG" in json.loads(info.value.read())["error"]


_OK = (200, {}, b'{"label": 3}')


@pytest.mark.parametrize(
    "body",
    [
        b"3",
        b'{"label": 3}',
        b'{"label": 3.0}',
        b'{"logits": [0, 0, 0, 5, 0, 0, 0, 0, 0, 0]}',
        b'{"probabilities": [0.05, 0, 0, 0.9, 0.05, 0, 0, 0, 0, 0]}',
        b"[0, 0, 0, 5, 0, 0, 0, 0, 0, -1e300]",
        b'{"label": 3, "logits": [9, 0, 0, 0, 0, 0, 0, 0, 0, 0]}',
    ],
)
def test_query_endpoint_answer_forms(scripted, body):
    server, url = scripted((200, {"Content-Type": "application/json"}, body))
    assert query_endpoint(url, _images(2, 1), K).tolist() == [3, 3]
    assert server.bodies == ["image/png", "image/png"]


def test_query_endpoint_retries_5xx_with_exponential_backoff(scripted, sleeps):
    server, url = scripted((500, {}, b"oops"), (503, {}, b"busy"), _OK)
    assert query_endpoint(url, _images(1, 3), K, backoff=0.25).tolist() == [3]
    assert server.hits == 3
    assert sleeps == [0.25, 0.5]


def test_query_endpoint_gives_up_after_retries(scripted, sleeps):
    server, url = scripted((502, {}, b"bad gateway"))
    with pytest.raises(BlackBoxError) as info:
        query_endpoint(url, _images(2, 3), K, retries=2, backoff=0.1)
    message = str(info.value)
    assert server.hits == 3 and sleeps == [0.1, 0.2]
    for fragment in ["position 0", "after 3 attempt(s)", url, "HTTP 502", "bad gateway"]:
        assert fragment in message


def test_query_endpoint_honours_retry_after(scripted):
    server, url = scripted((429, {"Retry-After": "1"}, b"slow down"), _OK)
    start = time.monotonic()
    assert query_endpoint(url, _images(1, 3), K, backoff=0.01).tolist() == [3]
    assert time.monotonic() - start >= 0.95
    assert server.hits == 2


def test_query_endpoint_caps_retry_after(scripted, sleeps):
    _, url = scripted((429, {"Retry-After": "3600"}, b""), (503, {"Retry-After": "soon"}, b""), _OK)
    assert query_endpoint(url, _images(1, 3), K, backoff=0.5).tolist() == [3]
    assert sleeps == [60.0, 1.0]  # capped; a non-numeric Retry-After falls back to backoff


@pytest.mark.parametrize("status", [400, 401, 404, 413])
def test_query_endpoint_does_not_retry_other_4xx(scripted, sleeps, status):
    server, url = scripted((status, {}, b"no such model " + b"x" * 300))
    with pytest.raises(BlackBoxError) as info:
        query_endpoint(url, _images(3, 3), K)
    message = str(info.value)
    assert server.hits == 1 and sleeps == []
    assert f"HTTP {status}" in message and "not retried" in message and "position 0" in message
    assert "no such model xxx" in message and "x" * 300 not in message  # first 200 chars


def test_query_endpoint_timeout_is_retried_then_fails(scripted):
    server, url = scripted((200, {}, b"3", 0.6))
    start = time.monotonic()
    with pytest.raises(BlackBoxError) as info:
        query_endpoint(url, _images(1, 3), K, timeout=0.2, retries=1, backoff=0.01)
    assert time.monotonic() - start < 2.0
    assert server.hits == 2
    message = str(info.value)
    assert "after 2 attempt(s)" in message and "timed out after 0.2 s" in message and url in message


def test_query_endpoint_connection_refused_is_retried(sleeps):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with pytest.raises(BlackBoxError, match=r"after 2 attempt\(s\).*ConnectionRefusedError"):
        query_endpoint(url, _images(1, 3), K, retries=1, backoff=0.01)
    assert sleeps == [0.01]


@pytest.mark.parametrize(
    "bad, fragments",
    [
        (b"<html>busy</html>", ["not JSON", "'<html>busy</html>'"]),
        (b'{"class": 3}', ["expected key 'label', 'logits' or 'probabilities'", "'class'"]),
        (b'{"label": 10}', ["label 10 is outside [0, 10)"]),
        (b'{"label": "cat"}', ["'cat' is not an integer"]),
        (b'{"label": true}', ["True is not an integer"]),
        (b'{"logits": [0.1, 0.9]}', ["expected 10 logits", "got 2"]),
        (b"[0, 0, 0, 0, 0, 0, 0, 0, 0, NaN]", ["logit 9 is nan"]),
        (b'"x' + b"y" * 500 + b'"', ["not an integer", "answer: '\"xyyy"]),
        (b"[" * 100_000 + b"]" * 100_000, ["not JSON"]),  # hostile nesting depth
        (b"1" * 5000, ["not JSON"]),  # beyond Python's integer digit limit
    ],
)
def test_query_endpoint_malformed_answer_names_position(scripted, sleeps, bad, fragments):
    server, url = scripted(_OK, (200, {}, bad))
    with pytest.raises(BlackBoxError) as info:
        query_endpoint(url, _images(3, 3), K)
    message = str(info.value)
    assert server.hits == 2 and sleeps == []  # not retried
    assert "position 1" in message and "malformed answer" in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert "y" * 250 not in message


def test_query_endpoint_rate_limit(suspect):
    start = time.monotonic()
    got = query_endpoint(suspect, _constant_images([2] * 10), K, rate_limit=20)
    assert time.monotonic() - start >= 0.44  # 9 gaps of 1/20 s
    assert got.tolist() == [2] * 10


def test_query_endpoint_sends_extra_headers(scripted):
    seen = {}

    class Echo(_Scripted):
        def do_POST(self):
            seen.update(self.headers)
            super().do_POST()

    server, url = scripted(_OK)
    server.RequestHandlerClass = Echo
    query_endpoint(url, _images(1, 3), K, headers={"Authorization": "Bearer t0ken"})
    assert seen["Authorization"] == "Bearer t0ken" and seen["Content-Type"] == "image/png"


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/x", "file:///etc/passwd", "localhost:8080/predict", "http://", 3]
)
def test_query_endpoint_refuses_non_http_urls(url, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a request was made")

    monkeypatch.setattr(endpoint.urllib.request, "urlopen", no_network)
    with pytest.raises(BlackBoxError, match="http:// or https://"):
        query_endpoint(url, _images(1, 3), K)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"timeout": 0}, "timeout"),
        ({"retries": -1}, "retries"),
        ({"backoff": -1.0}, "backoff"),
        ({"rate_limit": 0}, "rate_limit"),
    ],
)
def test_query_endpoint_argument_errors(kwargs, match):
    with pytest.raises(BlackBoxError, match=match):
        query_endpoint("http://127.0.0.1:1/", _images(1, 3), K, **kwargs)
    with pytest.raises(BlackBoxError, match="uint8"):
        query_endpoint("http://127.0.0.1:1/", np.zeros((1, 2, 2, 3)), K)


# --------------------------------------------------------------------------------------------
# Module hygiene


@pytest.mark.parametrize("module", [blackbox, queries, answers, endpoint], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_module_does_not_import_jax():
    # The reference server and the answer readers need no accelerator stack: blackbox imports
    # only the standard library, numpy, Pillow and jaxwm.errors.
    import ast

    files = sorted(Path(blackbox.__file__).parent.glob("*.py"))
    assert len(files) >= 5  # the package and its modules
    for path in files:
        tree = ast.parse(path.read_text())
        roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                 for a in n.names}  # fmt: skip
        roots |= {n.module.split(".")[0] for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) and n.module}  # fmt: skip
        assert not roots & {"jax", "flax", "optax", "ml_collections"}, (path.name, roots)
        froms = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        outside = {m for m in froms if m.startswith("jaxwm") and not m.startswith("jaxwm.blackbox")}
        assert outside <= {"jaxwm.errors"}, (path.name, outside)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("bin.csv", b"label\n\xff\xfe\x00garbage\n"),
        ("deep.json", b"[" * 100_000 + b"]" * 100_000),
        ("bigint.json", b"[" + b"1" * 5000 + b"]"),
    ],
)
def test_hostile_answer_files_are_one_line_errors(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BlackBoxError, match=name):
        read_answers(path, 1, 10)
