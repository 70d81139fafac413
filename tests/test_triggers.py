"""Tests for jaxwm.triggers: determinism, label rules, stamps, manifests, idx files."""

from __future__ import annotations

import dataclasses
import gzip
import json

import numpy as np
import pytest

from jaxwm.data.idx import load_idx_images, load_idx_labels
from jaxwm.errors import (
    CommitmentError,
    DatasetError,
    IdxFormatError,
    ManifestError,
    TriggerSetError,
)
from jaxwm.manifest import (
    check_commitment,
    read_manifest,
    regenerate,
    write_manifest,
)
from jaxwm.trigger_images import content_stamp
from jaxwm.triggers import (
    TriggerSet,
    generate_secret,
    make_trigger_set,
)

SECRET = "owner-secret-7f3a9c1e"
RGB = (32, 32, 3)
GRAY = (28, 28, 1)
K = 10


def _source(shape=RGB, n=60, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, K, n).astype(np.int64)


def _make(kind, secret=SECRET, **kw):
    images, labels = _source(kw.pop("shape", RGB))
    args = dict(secret=secret, size=12, image_shape=RGB, num_classes=K, index=0)
    if kind != "noise":
        args.update(source_images=images, source_labels=labels)
    args.update(kw)
    return make_trigger_set(kind, **args)


@pytest.mark.parametrize("kind", ["noise", "content", "unrelated", "folder"])
def test_deterministic_per_secret(kind):
    a, b = _make(kind), _make(kind)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert a.commitment() == b.commitment()
    assert a.images.dtype == np.uint8 and a.images.shape == (12, *RGB)
    assert a.labels.dtype == np.int32 and a.labels.shape == (12,)
    assert a.labels.min() >= 0 and a.labels.max() < K
    assert a.kind == kind and len(a) == 12


@pytest.mark.parametrize("kind", ["noise", "content", "unrelated"])
def test_distinct_across_secret_and_index(kind):
    base = _make(kind)
    other_secret = _make(kind, secret=SECRET + "x")
    other_index = _make(kind, index=1)
    for other in (other_secret, other_index):
        assert not np.array_equal(base.images, other.images)
        assert base.commitment() != other.commitment()


def test_generation_is_pinned():
    # Manifests published today must still verify after refactors or numpy upgrades: a change
    # of these hashes breaks every existing manifest and needs a new MANIFEST_VERSION.
    noise = make_trigger_set(
        "noise", secret="golden", size=4, image_shape=(16, 16, 3), num_classes=10
    )
    # Format 1 (jaxwm 0.1 manifests) must keep verifying; format 2 also binds the parameters.
    assert noise.commitment(1) == "f7190b858c7013fc1dafe5af2bbb600d60d2cb776c6127bfdcb56033dc3929be"
    assert noise.commitment() == "e288fc904ff1b776568c38eb4cc663ec4c83034eba06d295874d9bf7f3f5a47b"
    src = (np.arange(8 * 16 * 16) % 251).astype(np.uint8).reshape(8, 16, 16, 1)
    content = make_trigger_set(
        "content", secret="golden", size=4, image_shape=(16, 16, 1), num_classes=10,
        source_images=src, source_labels=np.arange(8) % 10,
    )  # fmt: skip
    assert (
        content.commitment(1) == "0db42489af411fe981ce53697ce11e07f074f7b9115b49134fa99337227f4064"
    )
    assert (
        content.commitment() == "0af2096fedd3305fb05790266aaeab25533e2e67d30e1714b54405adb74ed18b"
    )


def test_noise_images_are_distinct_and_structured():
    ts = _make("noise", size=50)
    flat = ts.images.reshape(50, -1)
    assert len({row.tobytes() for row in flat}) == 50
    # Full contrast, and smooth (neighbouring pixels close), unlike white noise.
    assert (flat.min(1) == 0).all() and (flat.max(1) == 255).all()
    diffs = np.abs(np.diff(ts.images.astype(int), axis=2)).mean()
    assert diffs < 30, diffs
    # Random labels use many classes.
    assert len(set(ts.labels.tolist())) >= 6


def test_noise_grayscale_and_target_policy():
    ts = make_trigger_set(
        "noise",
        secret=SECRET,
        size=5,
        image_shape=GRAY,
        num_classes=K,
        label_policy="target",
        target_class=3,
    )
    assert ts.images.shape == (5, *GRAY)
    assert (ts.labels == 3).all()


def _match_sources(ts, src, top, left, side):
    """Index of the source image each trigger came from (comparing pixels outside the stamp)."""
    mask = np.ones(src.shape[1:], bool)
    mask[top : top + side, left : left + side] = False
    out = []
    for img in ts.images:
        hits = np.flatnonzero((src[:, mask] == img[mask]).all(axis=1))
        assert len(hits) == 1
        out.append(hits[0])
    return np.array(out)


@pytest.mark.parametrize("shape", [RGB, GRAY])
def test_content_stamp_present_and_labels_differ(shape):
    src, lab = _source(shape)
    ts = make_trigger_set(
        "content",
        secret=SECRET,
        size=20,
        image_shape=shape,
        num_classes=K,
        source_images=src,
        source_labels=lab,
    )
    top, left, patch = content_stamp(SECRET, shape)
    side = patch.shape[0]
    assert side == round(min(shape[:2]) / 4)
    region = ts.images[:, top : top + side, left : left + side]
    assert (region == patch).all()  # identical keyed stamp on every trigger
    assert len(np.unique(patch)) >= 2  # not a flat square
    idx = _match_sources(ts, src, top, left, side)
    assert len(set(idx.tolist())) == 20  # drawn without replacement
    assert (ts.labels != lab[idx]).all()
    # Another key stamps elsewhere or differently.
    t2, l2, p2 = content_stamp(SECRET + "x", shape)
    assert (t2, l2) != (top, left) or not np.array_equal(p2, patch)


def test_content_target_policy_skips_sources_of_target():
    src, lab = _source(RGB)
    ts = make_trigger_set(
        "content", secret=SECRET, size=30, image_shape=RGB, num_classes=K, label_policy="target",
        target_class=4, source_images=src, source_labels=lab,
    )  # fmt: skip
    assert (ts.labels == 4).all()
    top, left, patch = content_stamp(SECRET, RGB)
    idx = _match_sources(ts, src, top, left, patch.shape[0])
    assert (lab[idx] != 4).all()


def test_unrelated_gray_to_rgb_and_rgb_to_gray():
    gray = np.full((8, 20, 20, 1), 77, np.uint8)
    ts = make_trigger_set(
        "unrelated", secret=SECRET, size=5, image_shape=RGB, num_classes=K, source_images=gray
    )
    assert ts.images.shape == (5, *RGB) and (ts.images == 77).all()
    rgb = np.zeros((8, 40, 40, 3), np.uint8)
    rgb[..., 0] = 255  # pure red -> luma 0.299 * 255 = 76.2
    ts = make_trigger_set(
        "unrelated", secret=SECRET, size=5, image_shape=GRAY, num_classes=K, source_images=rgb
    )
    assert ts.images.shape == (5, *GRAY) and (ts.images == 76).all()
    # (N, H, W) grayscale input is accepted, and the gradient survives the resize.
    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 16, 1))
    ts = make_trigger_set(
        "unrelated", secret=SECRET, size=2, image_shape=(8, 8, 3), num_classes=K, source_images=ramp
    )
    row = ts.images[0, 0, :, 0].astype(int)
    assert (np.diff(row) > 0).all()


def test_unrelated_labels_avoid_source_labels():
    # Constant source images with distinct values: a trigger's value identifies its source.
    n = 60
    src = np.broadcast_to(
        (np.arange(n, dtype=np.uint8) * 4)[:, None, None, None], (n, 20, 20, 1)
    ).copy()
    lab = np.random.default_rng(1).integers(0, K, n)
    ts = make_trigger_set(
        "unrelated",
        secret=SECRET,
        size=40,
        image_shape=RGB,
        num_classes=K,
        source_images=src,
        source_labels=lab,
    )
    idx = ts.images[:, 0, 0, 0].astype(int) // 4
    assert len(set(idx.tolist())) == 40
    assert (ts.labels != lab[idx]).all()
    # The image selection does not depend on whether labels are given.
    plain = make_trigger_set(
        "unrelated", secret=SECRET, size=40, image_shape=RGB, num_classes=K, source_images=src
    )
    assert np.array_equal(plain.images, ts.images)
    # Source labels outside [0, K) (another data set's classes) are allowed and never clash.
    wide = make_trigger_set(
        "unrelated",
        secret=SECRET,
        size=40,
        image_shape=RGB,
        num_classes=K,
        source_images=src,
        source_labels=lab + 50,
    )
    assert wide.labels.min() >= 0 and wide.labels.max() < K


def test_folder_taken_as_is():
    src, lab = _source(GRAY, n=15)
    ts = make_trigger_set(
        "folder",
        secret=SECRET,
        size=10,
        image_shape=GRAY,
        num_classes=K,
        source_images=src[..., 0],
        source_labels=lab,
    )
    assert np.array_equal(ts.images, src[:10]) and np.array_equal(ts.labels, lab[:10])


def test_trigger_set_is_read_only_and_validated():
    ts = _make("noise", size=3)
    with pytest.raises(ValueError):
        ts.labels[0] = 1
    with pytest.raises(TriggerSetError, match="images"):
        TriggerSet(np.zeros((2, 4, 4, 1), np.float32), np.zeros(2, np.int32), "noise")
    with pytest.raises(TriggerSetError, match="labels"):
        TriggerSet(np.zeros((2, 4, 4, 1), np.uint8), np.zeros(3, np.int32), "noise")
    with pytest.raises(TriggerSetError, match="kind"):
        TriggerSet(np.zeros((2, 4, 4, 1), np.uint8), np.zeros(2, np.int32), "weird")


def test_commitment_sensitive_to_every_field():
    ts = _make("noise", size=4)
    ref = ts.commitment()
    assert len(ref) == 64 and int(ref, 16) >= 0
    labels = ts.labels.copy()
    labels[0] = (labels[0] + 1) % K
    images = ts.images.copy()
    images[0, 0, 0, 0] ^= 1
    for changed in (
        dataclasses.replace(ts, labels=labels),
        dataclasses.replace(ts, images=images),
        dataclasses.replace(ts, kind="folder"),
        dataclasses.replace(ts, images=ts.images.reshape(4, 32, 96, 1)),
    ):
        assert changed.commitment() != ref


def test_manifest_round_trip_and_regenerate(tmp_path):
    ts = _make("content", size=8)
    path = tmp_path / "sub" / "wm.json"
    written = write_manifest(
        path, ts, secret_hint="in the office safe", extra={"model": "resnet18"}
    )
    text = path.read_text()
    assert SECRET not in text
    assert read_manifest(path) == written == json.loads(text)
    assert written["commitment"] == ts.commitment() and written["size"] == 8
    assert written["image_shape"] == list(RGB) and written["num_classes"] == K
    assert written["extra"] == {"model": "resnet18"} and "created" in written
    src, lab = _source(RGB)
    again = regenerate(path, secret=SECRET, source_images=src, source_labels=lab)
    assert np.array_equal(again.images, ts.images) and np.array_equal(again.labels, ts.labels)
    with pytest.raises(CommitmentError) as err:
        regenerate(written, secret=SECRET + "-wrong", source_images=src, source_labels=lab)
    assert "does not match the manifest" in str(err.value) and ts.commitment() in str(err.value)


def test_regenerate_noise_target_and_tamper(tmp_path):
    ts = _make("noise", label_policy="target", target_class=7, index=3)
    m = write_manifest(tmp_path / "m.json", ts)
    assert m["target_class"] == 7 and m["index"] == 3 and m["label_policy"] == "target"
    assert np.array_equal(regenerate(m, secret=SECRET).images, ts.images)
    labels = ts.labels.copy()
    labels[2] = 1
    tampered = dataclasses.replace(ts, labels=labels)
    with pytest.raises(CommitmentError, match=tampered.commitment()):
        check_commitment(tampered, m)
    check_commitment(ts, m)


def test_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="missing.json"):
        read_manifest(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ManifestError, match="bad.json"):
        read_manifest(bad)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"version": 1, "kind": "noise"}))
    with pytest.raises(ManifestError, match="commitment"):
        read_manifest(partial)
    with pytest.raises(ManifestError, match="extra"):
        write_manifest(tmp_path / "x.json", _make("noise", size=2), extra={"f": object()})
    with pytest.raises(ManifestError, match="commitment"):
        check_commitment(_make("noise", size=2), {})


def test_generate_secret_is_fresh():
    a, b = generate_secret(), generate_secret()
    assert a != b and len(a) == 64


_BAD = [
    ({"kind": "bogus"}, "kind"),
    ({"label_policy": "mostly"}, "label_policy"),
    ({"secret": ""}, "secret"),
    ({"secret": 123}, "secret"),
    ({"size": 0}, "size"),
    ({"size": -3}, "size"),
    ({"size": 2.5}, "size"),
    ({"size": True}, "size"),
    ({"num_classes": 1}, "num_classes"),
    ({"target_class": 10}, "target_class"),
    ({"target_class": -1}, "target_class"),
    ({"index": -1}, "index"),
    ({"image_shape": (28, 28)}, "image_shape"),
    ({"image_shape": (0, 28, 1)}, "image_shape"),
    ({"image_shape": (28, 28, 0)}, "image_shape"),
    ({"image_shape": "28x28"}, "image_shape"),
    ({"kind": "content", "source_images": None}, "source_images"),
    ({"kind": "unrelated", "source_images": None}, "source_images"),
    ({"kind": "content", "source_labels": None}, "source_labels"),
    ({"kind": "content", "size": 61}, "size"),
    ({"kind": "content", "source_images": np.zeros((60, 28, 28, 1), np.uint8)}, "source_images"),
    ({"kind": "content", "source_images": np.zeros((60, *RGB), np.float32)}, "source_images"),
    ({"kind": "content", "source_labels": np.zeros(59, np.int64)}, "source_labels"),
    ({"kind": "content", "source_labels": np.full(60, 10)}, "source_labels"),
    (
        {"kind": "content", "label_policy": "target", "source_labels": np.zeros(60, np.int64)},
        "size",
    ),
    ({"kind": "unrelated", "size": 100}, "size"),
    ({"kind": "unrelated", "image_shape": (32, 32, 2)}, "image_shape"),
    ({"kind": "folder", "source_labels": None}, "source_labels"),
    ({"kind": "folder", "source_labels": np.full(60, -1)}, "source_labels"),
    ({"kind": "folder", "source_labels": np.zeros(60, np.float32)}, "source_labels"),
    ({"kind": "folder", "image_shape": GRAY}, "source_images"),
    ({"kind": "folder", "size": 61}, "size"),
]


@pytest.mark.parametrize(
    ("override", "field"), _BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(_BAD)]
)
def test_bad_arguments_name_the_field(override, field):
    src, lab = _source(RGB)
    args = dict(kind="noise", secret=SECRET, size=4, image_shape=RGB, num_classes=K,
                source_images=src, source_labels=lab)  # fmt: skip
    args.update(override)
    kind = args.pop("kind")
    with pytest.raises(TriggerSetError, match=field) as err:
        make_trigger_set(kind, **args)
    assert isinstance(err.value, ValueError)


def _idx_bytes(arr: np.ndarray, type_byte: int = 0x08) -> bytes:
    header = bytes([0, 0, type_byte, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def test_idx_reader(tmp_path):
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    plain = tmp_path / "images-idx3-ubyte"
    plain.write_bytes(_idx_bytes(images))
    packed = tmp_path / "images-idx3-ubyte.gz"
    packed.write_bytes(gzip.compress(_idx_bytes(images)))
    for path in (plain, packed):
        out = load_idx_images(path)
        assert out.shape == (3, 4, 5, 1) and out.dtype == np.uint8
        assert np.array_equal(out[..., 0], images)
    labels = np.array([3, 1, 4, 1, 5], np.uint8)
    lab_path = tmp_path / "labels-idx1-ubyte.gz"
    lab_path.write_bytes(gzip.compress(_idx_bytes(labels)))
    got = load_idx_labels(lab_path)
    assert got.dtype == np.int32 and got.tolist() == [3, 1, 4, 1, 5]
    # Loaded images plug straight into an "unrelated" trigger set.
    ts = make_trigger_set(
        "unrelated", secret=SECRET, size=2, image_shape=(8, 8, 3), num_classes=K, source_images=out
    )
    assert ts.images.shape == (2, 8, 8, 3)


def test_idx_reader_errors(tmp_path):
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x12\x34\x08\x03" + bytes(12))
    with pytest.raises(IdxFormatError, match="bad magic number 12340803"):
        load_idx_images(bad)
    short = tmp_path / "short-idx"
    short.write_bytes(_idx_bytes(np.zeros((2, 3, 3), np.uint8))[:-4])
    with pytest.raises(IdxFormatError, match="short-idx"):
        load_idx_images(short)
    with pytest.raises(IdxFormatError, match="labels"):
        labels_as_images = tmp_path / "labels-idx1"
        labels_as_images.write_bytes(_idx_bytes(np.zeros(4, np.uint8)))
        load_idx_images(labels_as_images)
    with pytest.raises(IdxFormatError, match="nope"):
        load_idx_images(tmp_path / "nope")


def test_idx_directory_is_a_dataset_source(tmp_path):
    from jaxwm import data

    rng = np.random.default_rng(0)
    for stem, n in (("train", 12), ("t10k", 6)):
        x = rng.integers(0, 256, (n, 5, 5), dtype=np.uint8)
        y = (np.arange(n) % 3).astype(np.uint8)
        (tmp_path / f"{stem}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(x)))
        (tmp_path / f"{stem}-labels-idx1-ubyte").write_bytes(_idx_bytes(y))
    ds = data.load_dataset(f"idx:{tmp_path}")
    assert ds.train_images.shape == (12, 5, 5, 1) and ds.test_images.shape == (6, 5, 5, 1)
    assert ds.num_classes == 3 and ds.train_labels.tolist()[:4] == [0, 1, 2, 0]
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        data.load_dataset(f"idx:{tmp_path}")


def test_idx_gzip_bomb_fails_fast_without_filling_memory(tmp_path, monkeypatch):
    import time
    import tracemalloc
    import zlib

    monkeypatch.setenv("JAXWM_MAX_FILE_BYTES", str(1 << 20))
    # Claims 100 x 1000 x 1000 uint8 (100 MB) and holds that many zeros, in ~100 KB of gzip.
    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    with bomb.open("wb") as f:
        f.write(comp.compress(_idx_bytes(np.zeros((100, 1, 1), np.uint8))[:4]))
        f.write(comp.compress(b"".join(d.to_bytes(4, "big") for d in (100, 1000, 1000))))
        chunk = bytes(1 << 20)
        for _ in range(100):
            f.write(comp.compress(chunk))
        f.write(comp.flush())
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(IdxFormatError, match=r"bomb-idx3-ubyte\.gz.*JAXWM_MAX_FILE_BYTES"):
            load_idx_images(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 5
    assert peak < 8 << 20  # about the limit, not the 100 MB the file inflates to
    # Under the limit the same reader still loads a genuine file.
    monkeypatch.setenv("JAXWM_MAX_FILE_BYTES", str(200 << 20))
    ok = tmp_path / "ok-idx3-ubyte.gz"
    ok.write_bytes(gzip.compress(_idx_bytes(np.ones((2, 3, 3), np.uint8))))
    assert load_idx_images(ok).shape == (2, 3, 3, 1)
