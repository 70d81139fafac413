"""Tests for jaxwm.data.imagefolder (with decode, archive, limits): faithful decoding of wide
modes, archive truncation, the content-keyed cache and resource limits, on tiny generated data."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import shutil
import tarfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data import SHARED, load, make_files, write_source

from jaxwm.data import archive, decode, imagefolder, limits
from jaxwm.errors import DatasetError

# --------------------------------------------------------------------------- decoding


def _save(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _folder_with(tmp_path: Path, payload: bytes, ext: str, kind: str = "tar") -> Path:
    """A 2-class dataset whose test/1_b/0.<ext> is ``payload``, the rest plain 8-bit PNGs."""
    files, _ = make_files(labels=("0_a", "1_b"), train=1, test=1)
    del files["test/1_b/0.png"]
    files[f"test/1_b/0.{ext}"] = payload
    return write_source(tmp_path, kind, files)


V16 = np.array([[0, 1, 128, 129, 257, 1000], [32767, 32768, 65278, 65279, 65534, 65535],
                [2570, 5140, 7710, 10280, 12850, 15420], [0] * 6, [65535] * 6, [300] * 6,
                [40000] * 6, [1] * 6], np.uint16)  # fmt: skip
EXPECTED16 = np.rint(V16.astype(np.float64) * 255 / 65535).astype(np.uint8)


def _image16(mode: str) -> Image.Image:
    h, w = V16.shape
    order = ">u2" if mode == "I;16B" else "<u2"
    return Image.frombytes(mode, (w, h), V16.astype(order).tobytes())


@pytest.mark.parametrize(
    ("mode", "fmt", "opened_as"),
    [("I;16", "PNG", "I;16"), ("I;16B", "TIFF", "I;16B"), ("I;16L", "TIFF", "I;16")],
)
def test_16bit_images_scale_by_full_range(mode, fmt, opened_as):
    data = _save(_image16(mode), fmt)
    assert Image.open(io.BytesIO(data)).mode == opened_as  # the mode really exercised
    out = decode.decode_image(data, "x")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, EXPECTED16)
    assert out.max() == 255 and out.min() == 0  # no clipping at 255, no black image


def test_8bit_stored_as_16bit_round_trips_exactly():
    v8 = np.arange(256, dtype=np.uint16).reshape(16, 16)
    data = _save(Image.fromarray(v8 * 257), "PNG")
    np.testing.assert_array_equal(decode.decode_image(data, "x"), v8)


def test_16bit_png_dataset_mean_is_not_clipped(tmp_path):
    # The audit: a mid-grey 16-bit PNG loaded as 255 (mean 254.4). Every image is 16-bit here.
    files = {}
    for split in ("train", "test"):
        for label in ("0_a", "1_b"):
            files[f"{split}/{label}/0.png"] = _save(
                Image.fromarray(np.full((8, 8), 32896, np.uint16)), "PNG"
            )
    ds = load(write_source(tmp_path, "tar", files), tmp_path / "cache")
    assert set(np.unique(ds.train_images).tolist()) == {128}  # 32896 = 128 * 257


def test_mode_i_within_16_bits_scales_like_16bit():
    data = _save(Image.fromarray(V16.astype(np.int32)), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    np.testing.assert_array_equal(decode.decode_image(data, "x"), EXPECTED16)


@pytest.mark.parametrize("bad", [70000, -5])
def test_mode_i_beyond_16_bits_is_refused(tmp_path, bad):
    arr = np.zeros((8, 8), np.int32)
    arr[3, 3] = bad
    path = _folder_with(tmp_path, _save(Image.fromarray(arr), "TIFF"), "tif")
    with pytest.raises(DatasetError, match=r"\[0, 65535\]") as err:
        load(path, tmp_path / "cache")
    assert f"{path}:test/1_b/0.tif" in str(err.value) and str(bad) in str(err.value)
    assert "\n" not in str(err.value)


def test_float_image_in_unit_range_scales_by_255():
    arr = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    data = _save(Image.fromarray(arr), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    out = decode.decode_image(data, "x")
    np.testing.assert_array_equal(out, np.rint(arr.astype(np.float64) * 255).astype(np.uint8))
    assert out[0, 0] == 0 and out[-1, -1] == 255


@pytest.mark.parametrize(("bad", "shown"), [(200.0, "200"), (-0.5, "-0.5"), (np.nan, "nan")])
def test_float_image_outside_unit_range_is_refused(tmp_path, bad, shown):
    arr = np.full((8, 8), 0.5, np.float32)
    arr[2, 5] = bad
    path = _folder_with(tmp_path, _save(Image.fromarray(arr), "TIFF"), "tif", kind="dir")
    with pytest.raises(DatasetError, match=r"only floats in \[0, 1\]") as err:
        load(path, tmp_path / "cache")
    assert str(path / "test/1_b/0.tif") in str(err.value) and shown in str(err.value)


# --------------------------------------------------------------------------- archives


def _member_ends(tar_bytes: bytes) -> list[int]:
    """Offsets in an uncompressed tar where each member's data (padded) ends."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return [m.offset_data + -(-m.size // 512) * 512 for m in tar.getmembers()]


def _good_tar(tmp_path: Path) -> bytes:
    files, _ = make_files(train=15, test=15)  # 60 images, as in the audit
    return write_source(tmp_path / "src", "tar", files).read_bytes()


@pytest.fixture
def good_tar(tmp_path):
    (tmp_path / "src").mkdir()
    return _good_tar(tmp_path)


@pytest.mark.parametrize("where", ["member_boundary", "mid_member", "mid_header", "half_marker"])
@pytest.mark.parametrize("kind", ["tar", "tar.gz"])
def test_truncated_archive_is_an_error(tmp_path, good_tar, where, kind):
    ends = _member_ends(good_tar)
    cut = {
        "member_boundary": ends[49],  # 50 of 60 members, cut cleanly after one of them
        "mid_member": ends[49] + 512 + 100,
        "mid_header": ends[49] + 200,
        "half_marker": ends[-1] + 512,  # all members, but only one of the two zero blocks
    }[where]
    data = good_tar[:cut]
    path = tmp_path / f"cut.{kind}"
    path.write_bytes(gzip.compress(data, mtime=0) if kind == "tar.gz" else data)
    with pytest.raises(DatasetError, match="truncated|cannot read") as err:
        load(path, tmp_path / "cache")
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("cut", [0.5, 0.9, -8, -1])
def test_truncated_gzip_stream_is_an_error(tmp_path, good_tar, cut):
    whole = gzip.compress(good_tar, mtime=0)
    path = tmp_path / "cut.tar.gz"
    # -8 / -1: every tar byte is there, only the gzip trailer (CRC32 + length) is cut.
    path.write_bytes(whole[: int(len(whole) * cut) if cut > 0 else cut])
    with pytest.raises(DatasetError, match="cannot read|truncated") as err:
        load(path, tmp_path / "cache")
    assert str(path) in str(err.value)


def test_corrupt_gzip_crc_is_an_error(tmp_path, good_tar):
    whole = bytearray(gzip.compress(good_tar, mtime=0))
    whole[-6] ^= 0xFF  # inside the CRC32 of the trailer
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(bytes(whole))
    with pytest.raises(DatasetError, match="cannot read") as err:
        load(path, tmp_path / "cache")
    assert str(path) in str(err.value)


@pytest.mark.parametrize("kind", ["tar", "tar.gz"])
def test_complete_archive_with_trailing_padding_loads(tmp_path, good_tar, kind):
    data = good_tar + bytes(10240)  # extra record padding after the marker is fine
    path = tmp_path / f"ok.{kind}"
    path.write_bytes(gzip.compress(data, mtime=0) if kind == "tar.gz" else data)
    ds = load(path, tmp_path / "cache")
    assert len(ds.train_images) + len(ds.test_images) == 60


def test_tail_reader_keeps_the_block_where_tar_stopped(good_tar):
    reader = archive._TailReader(io.BytesIO(good_tar))
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for m in tar:
            tar.extractfile(m).read()
        end = tar.offset
    assert reader.bytes_at(end, 1024) == bytes(1024)
    assert end == _member_ends(good_tar)[-1]


# --------------------------------------------------------------------------- cache


def test_replaced_cache_npz_is_ignored_and_rebuilt(tmp_path, caplog):
    cache = tmp_path / "cache"
    a_files, a_px = make_files(labels=("0_a", "1_b"), train=2, test=1)
    b_files, _ = make_files(labels=("0_x", "1_y", "2_z"), train=1, test=1)
    a = write_source(tmp_path, "tar.gz", a_files, stem="a")
    b = write_source(tmp_path, "tar.gz", b_files, stem="a2")
    load(a, cache)
    load(b, cache)
    [a_npz] = cache.glob("a-*.npz")
    [b_npz] = cache.glob("a2-*.npz")
    shutil.copyfile(b_npz, a_npz)  # another valid .npz in a's place
    with caplog.at_level(logging.WARNING):
        again = load(a, cache)
    assert "not made from this source" in caplog.text and str(a_npz) in caplog.text
    assert again.class_names == ("a", "b") and len(again.train_images) == 4
    np.testing.assert_array_equal(again.test_images[0, ..., 0], a_px["test/0_a/0.png"])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load(a, cache)  # the rebuilt cache is now valid
    assert caplog.text == ""


def _bmp_files(value: int) -> dict[str, bytes]:
    files = {}
    for split in ("train", "test"):
        for label in ("0_a", "1_b"):
            files[f"{split}/{label}/0.bmp"] = _save(
                Image.fromarray(np.full((4, 4), 9, np.uint8)), "BMP"
            )
    files["test/1_b/0.bmp"] = _save(Image.fromarray(np.full((4, 4), value, np.uint8)), "BMP")
    return files


@pytest.mark.parametrize("kind", ["tar", "dir"])
def test_edit_keeping_size_and_mtime_is_not_served_stale(tmp_path, kind, monkeypatch):
    cache = tmp_path / "cache"
    path = write_source(tmp_path, kind, _bmp_files(10))
    assert load(path, cache).test_images[1, 0, 0, 0] == 10
    every = sorted(path.rglob("*")) if kind == "dir" else [path]
    before = {f: (f.stat().st_size, f.stat().st_mtime_ns) for f in every}
    write_source(tmp_path, kind, _bmp_files(200))  # same sizes (BMP is uncompressed)
    for f, (_, mtime) in before.items():
        os.utime(f, ns=(mtime, mtime))
    assert {f: (f.stat().st_size, f.stat().st_mtime_ns) for f in every} == before
    assert load(path, cache).test_images[1, 0, 0, 0] == 200


def test_cache_hit_still_hashes_the_source(tmp_path, monkeypatch):
    files, _ = make_files(train=1, test=1)
    path = write_source(tmp_path, "tar.gz", files)
    load(path, tmp_path / "cache")
    calls = []
    real = imagefolder._source_key
    monkeypatch.setattr(imagefolder, "_source_key", lambda p: calls.append(p) or real(p))
    load(path, tmp_path / "cache")
    assert calls == [path]


def test_a_reload_is_served_from_memory_while_its_cache_file_is_unchanged(tmp_path, monkeypatch):
    files, _ = make_files(train=1, test=1)
    path, cache = write_source(tmp_path, "tar.gz", files), tmp_path / "cache"
    first = load(path, cache)  # decoded, then kept: read-only, as later loads share it
    assert not any(getattr(first, f"{s}_{k}").flags.writeable
                   for s in ("train", "test") for k in ("images", "labels"))  # fmt: skip
    with pytest.raises(ValueError, match="read-only"):
        first.train_images[0] = 0
    reads = []
    real = imagefolder._read_cache
    monkeypatch.setattr(imagefolder, "_read_cache", lambda *a: reads.append(a) or real(*a))
    assert load(path, cache) is first and reads == []
    # A rewritten cache file (same bytes, new ctime and inode) is read again, then kept.
    [npz] = cache.glob("*.npz")
    data = npz.read_bytes()
    npz.unlink()
    npz.write_bytes(data)
    again = load(path, cache)
    assert again is not first and len(reads) == 1
    np.testing.assert_array_equal(again.train_images, first.train_images)
    assert load(path, cache) is again and len(reads) == 1
    # Another cache directory is another file: read from there.
    load(path, tmp_path / "cache2")
    assert len(reads) == 2


def test_source_key_is_the_content_hash(tmp_path):
    files, _ = make_files(train=1, test=1)
    tar = write_source(tmp_path, "tar", files)
    digest = hashlib.sha256(tar.read_bytes()).hexdigest()
    assert imagefolder._source_key(tar).endswith(digest)
    d = write_source(tmp_path, "dir", files)
    key = imagefolder._source_key(d)
    (d / "elsewhere.txt").write_text("outside train/ and test/: not part of the data")
    assert imagefolder._source_key(d) == key
    (d / "train/0_zebra/0.png").rename(d / "train/0_zebra/renamed.png")
    assert imagefolder._source_key(d) != key


def test_source_changed_while_decoding_is_not_cached(tmp_path, monkeypatch, caplog):
    files, _ = make_files(train=1, test=1)
    path = write_source(tmp_path, "tar", files)
    real = imagefolder._decode_folder

    def decode_then_edit(p):
        out = real(p)
        with open(p, "ab") as f:
            f.write(bytes(512))
        return out

    monkeypatch.setattr(imagefolder, "_decode_folder", decode_then_edit)
    with caplog.at_level(logging.WARNING):
        assert load(path, tmp_path / "cache").num_classes == 2
    assert "changed while it was decoded" in caplog.text
    assert not list((tmp_path / "cache").glob("*.npz"))


# --------------------------------------------------------------------------- limits


def test_huge_member_fails_before_it_is_read(tmp_path, monkeypatch):
    files, _ = make_files(train=1, test=1)
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for rel, payload in files.items():
            info = tarfile.TarInfo(rel)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        info = tarfile.TarInfo("train/0_zebra/huge.png")
        info.size = 32 * 2**20  # zeros: compresses to ~32 KB
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    assert path.stat().st_size < 200_000
    monkeypatch.setattr(limits, "MAX_FILE_BYTES", 2**20)
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="JAXWM_MAX_FILE_BYTES") as err:
            load(path, tmp_path / "cache")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(err.value)
    assert f"{path}:train/0_zebra/huge.png" in msg and "33,554,432" in msg and "1,048,576" in msg
    assert peak < 8 * 2**20, f"peak {peak} bytes: the member was read"


def test_file_size_limit_env_override_and_dir(tmp_path, monkeypatch):
    files, _ = make_files(train=1, test=1)
    path = write_source(tmp_path, "dir", files)
    monkeypatch.setenv("JAXWM_MAX_FILE_BYTES", "10")
    with pytest.raises(DatasetError, match="JAXWM_MAX_FILE_BYTES") as err:
        load(path, tmp_path / "cache")
    assert str(path / "train") in str(err.value)
    monkeypatch.setenv("JAXWM_MAX_FILE_BYTES", "100000")
    assert load(path, tmp_path / "cache").num_classes == 2
    monkeypatch.setenv("JAXWM_MAX_FILE_BYTES", "lots")
    with pytest.raises(DatasetError, match=r"\$JAXWM_MAX_FILE_BYTES='lots'"):
        load(path, tmp_path / "cache2")


def test_pixel_limit_checked_from_header(tmp_path, monkeypatch):
    big = _save(Image.new("L", (100, 50)), "PNG")
    path = _folder_with(tmp_path, big, "png")
    monkeypatch.setattr(limits, "MAX_IMAGE_PIXELS", 4999)
    loads = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(self.size))
    with pytest.raises(DatasetError, match="JAXWM_MAX_IMAGE_PIXELS") as err:
        decode.decode_image(big, "big.png")
    assert "big.png" in str(err.value) and "5,000" in str(err.value) and "4,999" in str(err.value)
    assert loads == []  # refused before decoding
    monkeypatch.undo()
    monkeypatch.setenv("JAXWM_MAX_IMAGE_PIXELS", "4999")
    with pytest.raises(DatasetError, match="100x50") as err:
        load(path, tmp_path / "cache")
    assert f"{path}:test/1_b/0.png" in str(err.value)


def test_total_decoded_bytes_limit(tmp_path, monkeypatch):
    files, _ = make_files(train=3, test=2)  # 10 images of 64 bytes
    path = write_source(tmp_path, "tar.gz", files)
    monkeypatch.setattr(limits, "MAX_DECODED_BYTES", 64 * 10)
    assert len(load(path, tmp_path / "c1").train_images) == 6  # exactly at the limit: fine
    monkeypatch.setenv("JAXWM_MAX_DECODED_BYTES", str(64 * 9))
    with pytest.raises(DatasetError, match="JAXWM_MAX_DECODED_BYTES") as err:
        load(path, tmp_path / "c2")
    assert str(path) in str(err.value) and "640" in str(err.value) and "576" in str(err.value)


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_real_tarball_hash_is_cheap(name):
    if os.environ.get("JAXWM_SLOW_TESTS") != "1":
        pytest.skip("slow: set JAXWM_SLOW_TESTS=1 to hash the real tarballs")
    path = SHARED / f"{name}.tar.gz"
    if not path.exists():
        pytest.skip(f"{path} not present")
    start = time.perf_counter()
    imagefolder._source_key(path)
    assert time.perf_counter() - start < 2.0
