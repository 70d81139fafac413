"""Tests for jaxwm.data: embedded/synthetic sources, ImageFolder dirs and tars, cache, tfds."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import sys
import tarfile
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxwm import data
from jaxwm.data import Dataset, imagefolder, load_dataset, sources
from jaxwm.data.dataset import read_digits
from jaxwm.errors import DatasetError

SHARED = Path("/work/shared/data")


# --------------------------------------------------------------------------- helpers


def _encode(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _pixels(seed: int, size=(8, 8), channels: int = 1) -> np.ndarray:
    shape = (size[1], size[0]) if channels == 1 else (size[1], size[0], channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def make_files(labels=("0_zebra", "1_apple"), train=3, test=2, channels=1, fmt="PNG"):
    """An ImageFolder as {relpath: bytes} (ordered like the shared tars) plus the pixels."""
    files, arrays = {}, {}
    seed = 0
    for split, n in (("train", train), ("test", test)):
        for label in labels:
            for i in range(n):
                rel = f"{split}/{label}/{i}.{'jpg' if fmt == 'JPEG' else 'png'}"
                arrays[rel] = _pixels(seed, channels=channels)
                files[rel] = _encode(arrays[rel], fmt)
                seed += 1
    return files, arrays


def write_source(root: Path, kind: str, files: dict[str, bytes | None], stem="toy") -> Path:
    """Writes files as a directory or tar (``None`` value = an explicit directory entry)."""
    if kind == "dir":
        out = root / stem
        for rel, payload in files.items():
            target = out / rel
            if payload is None:
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(payload)
        return out
    out = root / f"{stem}.{kind}"
    with tarfile.open(out, "w:gz" if kind in ("tar.gz", "tgz") else "w") as tar:
        for rel, payload in files.items():
            info = tarfile.TarInfo(rel)
            info.mtime, info.mode = 0, 0o644
            if payload is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return out


def load(path: Path, cache: Path) -> Dataset:
    return load_dataset(f"folder:{path}", cache_dir=cache)


KINDS = ["dir", "tar", "tar.gz", "tgz"]


# --------------------------------------------------------------------------- folder:


@pytest.mark.parametrize("kind", KINDS)
def test_folder_numbered_labels_use_the_number(tmp_path, kind):
    files, arrays = make_files(labels=("0_zebra", "1_apple"), train=3, test=2)
    ds = load(write_source(tmp_path, kind, files), tmp_path / "cache")

    assert ds.name == "toy"
    assert ds.class_names == ("zebra", "apple")  # by number, not alphabetically
    assert ds.image_shape == (8, 8, 1) and ds.num_classes == 2
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
    np.testing.assert_array_equal(ds.train_labels, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(ds.test_labels, [0, 0, 1, 1])
    expected = np.stack([arrays[f"test/{lab}/{i}.png"] for lab in ("0_zebra", "1_apple")
                         for i in range(2)])[..., None]  # fmt: skip
    np.testing.assert_array_equal(ds.test_images, expected)  # PNG is lossless
    mean = ds.train_images.astype(np.float64).mean() / 255
    assert ds.mean == pytest.approx((mean,)) and len(ds.std) == 1


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (("dog", "cat", "bird"), ("bird", "cat", "dog")),
        (("10_x", "2_y", "0_z", "1_w", "3_v", "4_u", "5_t", "6_s", "7_r", "8_q", "9_p"),
         ("z", "w", "y", "v", "u", "t", "s", "r", "q", "p", "x")),
    ],
)  # fmt: skip
def test_folder_label_index_rules(tmp_path, labels, expected):
    files, _ = make_files(labels=labels, train=1, test=1)
    ds = load(write_source(tmp_path, "tar.gz", files), tmp_path / "cache")
    assert ds.class_names == expected
    np.testing.assert_array_equal(np.sort(ds.train_labels), np.arange(len(labels)))


def test_folder_directory_uses_natural_file_order(tmp_path):
    files = {f"{s}/0_a/{n}.png": _encode(np.full((4, 4), n, np.uint8)) for s in data.SPLITS
             for n in (10, 2, 1)}  # fmt: skip
    ds = load(write_source(tmp_path, "dir", files), tmp_path / "cache")
    assert ds.train_images[:, 0, 0, 0].tolist() == [1, 2, 10]


@pytest.mark.parametrize("kind", ["dir", "tar.gz"])
def test_folder_rgb_jpeg_and_grayscale_promotion(tmp_path, kind):
    files, _ = make_files(labels=("0_r", "1_g"), train=2, test=1, channels=3, fmt="JPEG")
    solid = np.empty((8, 8, 3), np.uint8)
    solid[:] = (200, 30, 90)
    files["test/0_r/0.jpg"] = _encode(solid, "JPEG")
    gray = np.full((8, 8), 77, np.uint8)
    files["train/1_g/9.png"] = _encode(gray)  # grayscale file inside a colour dataset
    ds = load(write_source(tmp_path, kind, files), tmp_path / "cache")

    assert ds.image_shape == (8, 8, 3) and len(ds.mean) == 3
    assert len(ds.train_images) == 5
    np.testing.assert_array_equal(ds.train_images[-1], np.repeat(gray[..., None], 3, -1))
    # JPEG is lossy, but a flat colour survives almost exactly.
    np.testing.assert_allclose(ds.test_images[0].astype(int), solid.astype(int), atol=4)


@pytest.mark.parametrize("kind", ["dir", "tar.gz"])
def test_folder_skips_obvious_non_images(tmp_path, kind):
    files, _ = make_files(train=2, test=1)
    junk = {"README.md": b"# readme", "train/.DS_Store": b"\0\1", "train/0_zebra/notes.txt": b"x",
            "train/0_zebra/._0.png": b"AppleDouble", "test/1_apple/meta.json": b"{}",
            "train/.hidden/0.png": b"nope", "val/0_zebra/0.png": b"other split, ignored"}  # fmt: skip
    ds = load(write_source(tmp_path, kind, {**files, **junk}), tmp_path / "cache")
    assert len(ds.train_images) == 4 and len(ds.test_images) == 2
    assert ds.num_classes == 2


@pytest.mark.parametrize(
    ("filename", "kind", "name"),
    [
        ("mnist", "tar.gz", "mnist"),
        ("x", "tgz", "x"),
        ("y", "tar", "y"),
        ("my_data", "dir", "my_data"),
    ],
)
def test_dataset_name_is_the_stem(tmp_path, filename, kind, name):
    files, _ = make_files(train=1, test=1)
    assert load(write_source(tmp_path, kind, files, stem=filename), tmp_path / "c").name == name


def _drop(prefix):
    return lambda f: {k: v for k, v in f.items() if not k.startswith(prefix)}


BAD = _encode(_pixels(0))[:40]  # a truncated PNG
# id -> (mutation of the good file set, substrings the DatasetError must contain)
BAD_LAYOUTS = {
    "missing_test_split": (_drop("test/"), ["'test/'"]),
    "label_without_images": (lambda f: {**f, "train/2_c/notes.txt": b"x", "test/2_c": None},
                             ["train/2_c", "no images"]),
    "empty_label_dir": (lambda f: {**f, "train/2_c": None, "test/2_c": None}, ["2_c", "no images"]),
    "corrupt_image": (lambda f: {**f, "train/0_zebra/1.png": b"not an image"},
                      ["train/0_zebra/1.png", "cannot decode"]),
    "truncated_image": (lambda f: {**f, "test/1_apple/0.png": BAD}, ["test/1_apple/0.png"]),
    "wrong_size": (lambda f: {**f, "test/1_apple/0.png": _encode(_pixels(1, size=(10, 6)))},
                   ["test/1_apple/0.png", "10x6", "8x8"]),
    "class_mismatch": (lambda f: {**f, "test/2_c/0.png": f["test/0_zebra/0.png"]},
                       ["only in test: ['2_c']"]),
    "bad_numbering": (lambda f: {k.replace("1_apple", "2_apple"): v for k, v in f.items()},
                      ["2_apple", "exactly once"]),
    "mixed_numbering": (lambda f: {k.replace("1_apple", "apple"): v for k, v in f.items()},
                        ["['apple']", "number them all", "or none"]),
    "duplicate_index": (lambda f: {k.replace("1_apple", "0_apple"): v for k, v in f.items()},
                        ["0 by ['0_apple', '0_zebra']"]),
    "file_in_split_dir": (lambda f: {**f, "train/stray.png": f["train/0_zebra/0.png"]},
                          ["stray.png"]),
    "nested_too_deep": (lambda f: {**f, "train/0_zebra/sub/0.png": f["train/0_zebra/0.png"]},
                        ["train/0_zebra/sub"]),
}  # fmt: skip


@pytest.mark.parametrize("kind", ["dir", "tar.gz"])
@pytest.mark.parametrize("case", sorted(BAD_LAYOUTS))
def test_folder_bad_layouts_raise_naming_the_culprit(tmp_path, kind, case):
    mutate, needles = BAD_LAYOUTS[case]
    files, _ = make_files(train=2, test=1)
    path = write_source(tmp_path, kind, mutate(files))
    with pytest.raises(DatasetError) as err:
        load(path, tmp_path / "cache")
    for needle in [*needles, str(path)]:
        assert needle in str(err.value)
    assert not list((tmp_path / "cache").glob("*.npz"))  # nothing cached on failure


def test_folder_empty_split_dir(tmp_path):
    files, _ = make_files()
    path = write_source(tmp_path, "dir", _drop("train/")(files))
    (path / "train").mkdir()
    with pytest.raises(DatasetError, match="split 'train/'"):
        load(path, tmp_path / "cache")


@pytest.mark.parametrize(
    ("filename", "content", "needle"),
    [
        ("absent.tar.gz", None, "no such file"),
        ("notes.txt", b"hello " * 200, "not a directory or a .tar"),
        ("empty.tar", b"", "not a directory or a .tar"),
    ],
)
def test_folder_path_errors(tmp_path, filename, content, needle):
    path = tmp_path / filename
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DatasetError, match=needle) as err:
        load(path, tmp_path / "cache")
    assert str(path) in str(err.value)


def test_folder_truncated_archive(tmp_path):
    files, _ = make_files(train=20, test=5)
    path = write_source(tmp_path, "tar.gz", files)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match="cannot read") as err:
        load(path, tmp_path / "cache")
    assert str(path) in str(err.value)


def test_folder_tar_rejects_links(tmp_path):
    files, _ = make_files(train=1, test=1)
    path = write_source(tmp_path, "tar", files)
    with tarfile.open(path, "a") as tar:
        info = tarfile.TarInfo("train/0_zebra/link.png")
        info.type, info.linkname = tarfile.SYMTYPE, "0.png"
        tar.addfile(info)
    with pytest.raises(DatasetError, match="regular files") as err:
        load(path, tmp_path / "cache")
    assert "train/0_zebra/link.png" in str(err.value)


# --------------------------------------------------------------------------- cache


@pytest.fixture
def toy_tar(tmp_path):
    (tmp_path / "src").mkdir()
    files, _ = make_files(train=3, test=2)
    return write_source(tmp_path / "src", "tar.gz", files)


def _npz(cache: Path) -> list[Path]:
    return sorted(cache.iterdir()) if cache.exists() else []


def test_cache_second_load_skips_decoding(tmp_path, toy_tar, monkeypatch):
    cache = tmp_path / "cache"
    first = load(toy_tar, cache)
    [cached] = _npz(cache)  # exactly one file: no temp files left behind
    assert cached.suffix == ".npz" and cached.name.startswith("toy-")
    assert sorted(p.name for p in toy_tar.parent.iterdir()) == ["toy.tar.gz"]  # source untouched

    def boom(path):
        raise AssertionError("decoded again despite a valid cache")

    monkeypatch.setattr(imagefolder, "_decode_folder", boom)
    second = load(toy_tar, cache)
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(second, field), getattr(first, field))
        assert getattr(second, field).dtype == getattr(first, field).dtype
    assert (second.name, second.class_names, second.mean, second.std) == (
        first.name, first.class_names, first.mean, first.std)  # fmt: skip


def test_cache_invalidated_when_source_changes(tmp_path, toy_tar, monkeypatch):
    cache = tmp_path / "cache"
    calls = []
    real = imagefolder._decode_folder
    monkeypatch.setattr(imagefolder, "_decode_folder", lambda p: calls.append(p) or real(p))
    load(toy_tar, cache)
    load(toy_tar, cache)
    os.utime(toy_tar, ns=(0, 123_456_789))  # a new mtime alone: same content, same key
    load(toy_tar, cache)
    assert len(calls) == 1 and len(_npz(cache)) == 1
    files, _ = make_files(train=3, test=3)  # new content -> new key, a second cache file
    write_source(toy_tar.parent, "tar.gz", files)
    assert len(load(toy_tar, cache).test_images) == 6
    assert len(calls) == 2 and len(_npz(cache)) == 2


def test_corrupt_cache_is_deleted_and_rebuilt(tmp_path, toy_tar, caplog):
    cache = tmp_path / "cache"
    good = load(toy_tar, cache)
    [cached] = _npz(cache)
    cached.write_bytes(b"PK\x03\x04 truncated zip")
    with caplog.at_level(logging.WARNING, logger="jaxwm.data"):
        again = load(toy_tar, cache)
    assert "corrupt" in caplog.text and str(cached) in caplog.text
    np.testing.assert_array_equal(again.train_images, good.train_images)
    with np.load(cached) as z:  # rewritten, readable
        np.testing.assert_array_equal(z["train_labels"], good.train_labels)


def test_cache_dir_defaults_to_env(tmp_path, toy_tar, monkeypatch):
    monkeypatch.setenv("JAXWM_CACHE_DIR", str(tmp_path / "envcache"))
    load_dataset(f"folder:{toy_tar}")
    assert len(_npz(tmp_path / "envcache")) == 1


def test_failed_cache_write_leaves_nothing_and_still_loads(tmp_path, toy_tar, monkeypatch, caplog):
    def half_write(f, **arrays):
        f.write(b"PK\x03\x04partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(sources.np, "savez", half_write)
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="jaxwm.data"):
        ds = load(toy_tar, cache)
    assert len(ds.train_images) == 6
    assert "Cannot write cache" in caplog.text
    assert _npz(cache) == []  # neither a partial cache nor a temp file


def test_unwritable_cache_dir_is_not_fatal(tmp_path, toy_tar):
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    assert load(toy_tar, blocker / "cache").num_classes == 2


# --------------------------------------------------------------------------- digits / synthetic


def test_digits_embedded_default():
    ds = load_dataset("digits")
    assert ds.name == "digits"
    assert ds.train_images.shape == (1438, 8, 8, 1) and ds.test_images.shape == (359, 8, 8, 1)
    assert ds.train_images.dtype == np.uint8 and ds.test_labels.dtype == np.int32
    assert ds.class_names == tuple(str(i) for i in range(10)) and ds.num_classes == 10
    assert ds.train_images.max() == 255 and ds.train_images.min() == 0
    allowed = {int(np.rint(v * 255 / 16)) for v in range(17)}
    assert set(np.unique(ds.train_images).tolist()) <= allowed
    # Stratified: every class is ~20% test.
    frac = np.bincount(ds.test_labels, minlength=10) / (
        np.bincount(ds.test_labels, minlength=10) + np.bincount(ds.train_labels, minlength=10)
    )
    assert np.all(np.abs(frac - 0.2) < 0.01)
    again = load_dataset("digits")
    np.testing.assert_array_equal(again.test_images, ds.test_images)
    np.testing.assert_array_equal(again.train_labels, ds.train_labels)


def test_embedded_digits_are_scikit_learns_and_reproducible():
    sk = pytest.importorskip("sklearn.datasets")
    values, labels = read_digits()  # checks the file's sha256 too
    bunch = sk.load_digits()
    np.testing.assert_array_equal(values, bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        import make_digits
    finally:
        sys.path.pop(0)
    committed = Path(data.__file__).with_name("digits.npy.gz").read_bytes()
    assert make_digits.build() == committed  # the script regenerates the committed bytes


def test_synthetic_defaults_and_determinism():
    ds = load_dataset("synthetic")
    assert ds.train_images.shape == (256, 8, 8, 3) and ds.test_images.shape == (128, 8, 8, 3)
    assert ds.num_classes == 4 and np.bincount(ds.train_labels).tolist() == [64] * 4
    np.testing.assert_array_equal(load_dataset("synthetic").train_images, ds.train_images)
    other = load_dataset("synthetic:seed=1")
    assert not np.array_equal(other.train_images, ds.train_images)


def test_synthetic_options():
    ds = load_dataset("synthetic:train=10, test=5,height=4,width=6,channels=1,classes=3,seed=7")
    assert ds.train_images.shape == (10, 4, 6, 1) and ds.test_images.shape == (5, 4, 6, 1)
    assert ds.num_classes == 3 and ds.train_labels.max() < 3


def test_synthetic_is_learnable():
    ds = load_dataset("synthetic")
    x_tr = ds.train_images.reshape(len(ds.train_images), -1).astype(np.float64)
    x_te = ds.test_images.reshape(len(ds.test_images), -1).astype(np.float64)
    centroids = np.stack([x_tr[ds.train_labels == c].mean(0) for c in range(ds.num_classes)])
    pred = np.argmin(((x_te[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == ds.test_labels).mean() > 0.9


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("synthetic:foo=1", "'foo'"),
        ("synthetic:train=abc", "'train'"),
        ("synthetic:classes=0", "'classes'"),
        ("synthetic:channels=2", "'channels'"),
        ("synthetic:seed=-1", "'seed'"),
    ],
)
def test_synthetic_bad_options(source, needle):
    with pytest.raises(DatasetError, match=needle):
        load_dataset(source)


@pytest.mark.parametrize("source", ["", "mnist", "foo:bar", "folder:", "tfds:", "digits:x"])
def test_unknown_sources_list_the_valid_ones(source):
    with pytest.raises(DatasetError, match="valid sources") as err:
        load_dataset(source)
    assert "folder:" in str(err.value) and "tfds:" in str(err.value)


def test_bare_path_hints_folder_scheme(tmp_path):
    with pytest.raises(DatasetError, match="did you mean 'folder:"):
        load_dataset(str(tmp_path))


# --------------------------------------------------------------------------- Dataset


def test_normalize_matches_formula():
    ds = load_dataset("synthetic")
    out = ds.normalize(ds.train_images)
    assert out.dtype == np.float32 and out.shape == ds.train_images.shape
    expected = (ds.train_images / 255.0 - np.array(ds.mean)) / np.array(ds.std)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1.0, atol=1e-4)


@pytest.mark.parametrize(
    "images", [np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 8, 8, 1), np.uint8)]
)
def test_normalize_rejects_wrong_input(images):
    with pytest.raises(DatasetError, match="normalize"):
        load_dataset("synthetic").normalize(images)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"train_labels": np.full(256, 4, np.int32)}, "train_labels"),
        ({"test_labels": np.zeros(128, np.int64)}, "test_labels"),
        ({"train_images": np.zeros((256, 8, 8, 3), np.float32)}, "train_images"),
        ({"test_images": np.zeros((0, 8, 8, 3), np.uint8),
          "test_labels": np.zeros(0, np.int32)}, "test_images"),
        ({"test_images": np.zeros((128, 4, 4, 3), np.uint8)}, "test image shape"),
        ({"mean": (0.5,)}, "mean"),
    ],
)  # fmt: skip
def test_dataset_validates_fields(changes, field):
    ds = load_dataset("synthetic")
    with pytest.raises(DatasetError, match=field):
        dataclasses.replace(ds, **changes)


# --------------------------------------------------------------------------- tfds:


@pytest.fixture
def no_network(monkeypatch):
    """Any real connection attempt fails the test; the probe itself reports offline."""

    def forbidden(*args, **kwargs):
        raise AssertionError("tests must not touch the network")

    monkeypatch.setattr(sources.socket, "create_connection", forbidden)
    probes = []
    monkeypatch.setattr(sources, "_network_reachable", lambda *a, **k: probes.append(a) or False)
    return probes


class _FakeBuilder:
    def __init__(self, prepared: bool):
        self.prepared, self.data_dir = prepared, "/nonexistent/tfds"
        label = types.SimpleNamespace(names=["a", "b", "c"])
        self.info = types.SimpleNamespace(features={"label": label})

    def is_prepared(self):
        return self.prepared


def _fake_tfds(monkeypatch, prepared: bool, **attrs) -> types.ModuleType:
    mod = types.ModuleType("tensorflow_datasets")

    def download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    mod.builder = lambda name, data_dir=None: _FakeBuilder(prepared)
    mod.load = mod.data_source = download
    mod.as_numpy = lambda x: x
    for key, value in attrs.items():
        setattr(mod, key, value)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", mod)
    return mod


def test_tfds_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import -> ImportError
    with pytest.raises(DatasetError, match=r"pip install 'jaxwm\[tfds\]'") as err:
        load_dataset("tfds:mnist")
    assert "folder:" in str(err.value)


def test_tfds_unsupported_name():
    with pytest.raises(DatasetError, match="fashion_mnist"):
        load_dataset("tfds:imagenet2012")


def test_tfds_offline_and_not_prepared_fails_fast(monkeypatch, no_network):
    _fake_tfds(monkeypatch, prepared=False)
    start = time.perf_counter()
    with pytest.raises(DatasetError, match="no internet") as err:
        load_dataset("tfds:cifar10", tfds_data_dir="/nonexistent/tfds")
    assert time.perf_counter() - start < 5
    assert "folder:" in str(err.value) and len(no_network) == 1


def _records(n, seed):
    rng = np.random.default_rng(seed)
    return [{"image": rng.integers(0, 256, (4, 4, 1), np.uint8), "label": i % 3} for i in range(n)]


def test_tfds_prepared_reads_without_tensorflow(monkeypatch, no_network):
    splits = [_records(6, 0), _records(3, 1)]
    _fake_tfds(monkeypatch, prepared=True, data_source=lambda name, split, data_dir: splits)
    monkeypatch.setattr(sources, "_has_tensorflow", lambda: False)
    ds = load_dataset("tfds:mnist")
    assert no_network == []  # prepared -> no probe
    assert ds.name == "mnist" and ds.class_names == ("a", "b", "c")
    assert ds.train_images.shape == (6, 4, 4, 1) and ds.test_labels.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(ds.train_images[1], splits[0][1]["image"])


def test_tfds_prepared_reads_with_tensorflow(monkeypatch, no_network):
    seen = {}

    def fake_load(name, **kwargs):
        seen.update(kwargs, name=name)
        x = np.zeros((5, 4, 4, 3), np.uint8)
        return [(x, np.arange(5) % 3), (x[:2], np.array([2, 0]))]

    _fake_tfds(monkeypatch, prepared=True, load=fake_load)
    monkeypatch.setattr(sources, "_has_tensorflow", lambda: True)
    ds = load_dataset("tfds:cifar100", tfds_data_dir="/d")
    assert seen["batch_size"] == -1 and seen["as_supervised"] and seen["data_dir"] == "/d"
    assert ds.train_images.shape == (5, 4, 4, 3) and ds.test_labels.dtype == np.int32


def test_network_probe_is_bounded(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(
        sources.socket,
        "create_connection",
        lambda *a: release.wait(10) and contextlib.nullcontext(),
    )
    start = time.perf_counter()
    assert sources._network_reachable(timeout=0.2) is False  # a hanging DNS/connect
    assert time.perf_counter() - start < 2
    release.set()

    def refuse(*args):
        raise OSError("unreachable")

    monkeypatch.setattr(sources.socket, "create_connection", refuse)
    assert sources._network_reachable(timeout=0.5) is False
    monkeypatch.setattr(sources.socket, "create_connection", lambda *a: contextlib.nullcontext())
    assert sources._network_reachable(timeout=0.5) is True


# --------------------------------------------------------------------------- real data


REAL = {
    "mnist": ((28, 28, 1), 60000, 10000, "zero", [5923, 6742, 5958, 6131, 5842, 5421, 5918]),
    "cifar10": ((32, 32, 3), 50000, 10000, "airplane", [5000] * 7),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_shared_tarball(tmp_path, name):
    if os.environ.get("JAXWM_SLOW_TESTS") != "1":
        pytest.skip("slow: set JAXWM_SLOW_TESTS=1 to decode the real tarballs")
    path = SHARED / f"{name}.tar.gz"
    if not path.exists():
        pytest.skip(f"{path} not present")
    shape, n_train, n_test, first_class, counts = REAL[name]
    start = time.perf_counter()
    ds = load(path, tmp_path)
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    cached = load(path, tmp_path)
    reload_s = time.perf_counter() - start
    print(f"\n{name}: decode {decode_s:.1f} s, cached reload {reload_s:.2f} s")

    assert ds.name == name and ds.image_shape == shape and ds.num_classes == 10
    assert (len(ds.train_images), len(ds.test_images)) == (n_train, n_test)
    assert ds.class_names[0] == first_class
    assert np.bincount(ds.train_labels)[:7].tolist() == counts
    np.testing.assert_array_equal(cached.test_images, ds.test_images)
    assert reload_s < decode_s
