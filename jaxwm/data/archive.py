"""The files of a ``folder:`` source: a directory walk, or one streamed pass over a tar archive.

Both yield ``(split, label_dir, where, bytes)`` in a fixed order (label folders sorted, files in
natural order: ``2.png`` before ``10.png``), with ``bytes=None`` announcing a label folder. Hidden
files and common sidecar files (``.txt``, ``.json``, ...) are skipped; every other file is
returned, so a corrupt image is an error later, never silently dropped.

Archives (``.tar``, ``.tar.gz``/``.tgz``; also bzip2/xz) are streamed once (a ``.tar.gz`` has no
random access) with archive members kept in memory, never written to disk. The tar must end with
its end-of-archive marker (two zero blocks) and a compressed stream must end with its trailer, so
a tar cut at a member boundary or mid-member, or a truncated gzip, is an error rather than a
partial dataset (Python's ``tarfile`` alone stops silently at a member boundary).
"""

from __future__ import annotations

import bz2
import collections
import gzip
import logging
import lzma
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from jaxwm.data import limits
from jaxwm.data.dataset import SPLITS
from jaxwm.errors import DatasetError

logger = logging.getLogger(__name__)

_SKIP_SUFFIXES = frozenset({".txt", ".md", ".json", ".csv", ".db", ".ini", ".xml", ".yaml", ".yml"})
_END_OF_ARCHIVE = bytes(2 * tarfile.BLOCKSIZE)  # POSIX: two zero blocks end a tar


def _is_skipped(name: str) -> bool:
    """Whether a file is obviously not an image and is silently ignored.

    The rule: hidden files (``.DS_Store``, macOS ``._*`` forks) and common sidecar
    extensions (``.txt``, ``.md``, ``.json``, ``.csv``, ``Thumbs.db``, ...). Every other
    file is decoded, so a corrupt or unsupported image is an error, never silently dropped.
    """
    return name.startswith(".") or Path(name).suffix.lower() in _SKIP_SUFFIXES


def iter_dir(root: Path) -> Iterator[tuple[str, str, str, bytes | None]]:
    """Yields ``(split, label_dir, where, bytes)``; ``bytes=None`` announces a label dir.

    Args:
        root: The ImageFolder directory, holding ``train/`` and ``test/``.

    Yields:
        One tuple per label folder (``bytes=None``), then one per file in it, in natural order.
    """
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
                limits.check_file_size(str(f), f.stat().st_size)
                yield split, entry.name, str(f), f.read_bytes()


def _natural_key(name: str) -> list:
    # "2.png" before "10.png", matching the member order of the shared tarballs.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


class _TailReader:
    """A read-only stream that counts the bytes read through it and keeps the latest ones.

    tarfile reads its (uncompressed) input in ``bufsize`` chunks, so the last 64 KiB read hold
    the block where it stopped; :func:`iter_tar` checks that block is the end-of-archive marker.
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


def iter_tar(path: Path) -> Iterator[tuple[str, str, str, bytes | None]]:
    """Streams the archive once (``r|``): a ``.tar.gz`` has no random access.

    Decompression is done here rather than by tarfile, whose stream mode neither checks the
    gzip trailer nor notices a tar that ends at a member boundary; after the last member, the
    two zero blocks of the end-of-archive marker must follow, and the compressed stream must
    then end cleanly.

    Args:
        path: The ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2`` or ``.tar.xz`` archive.

    Yields:
        ``(split, label_dir, where, bytes)`` as :func:`iter_dir`, in the archive's member order.
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
                limits.check_file_size(where, member.size)
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
