"""Regenerates jaxwm/data/digits.npy.gz, the embedded demo data, from scikit-learn's copy.

The source is the UCI "Optical Recognition of Handwritten Digits" test set (1797 images, 8x8,
values 0..16), as shipped inside scikit-learn's wheel (``sklearn.datasets.load_digits``). The
file holds one uint8 array of shape (1797, 65): the 64 pixel values, then the label. It is
gzipped with a zero timestamp, so the same scikit-learn data give the same bytes:

    python scripts/make_digits.py          # writes the file, prints its sha256
    python scripts/make_digits.py --check  # exits 1 unless the committed file is reproduced

tests/test_data.py checks the committed file against DIGITS_SHA256 in jaxwm/data/dataset.py.
"""

import gzip
import hashlib
import io
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parents[1] / "jaxwm" / "data" / "digits.npy.gz"


def build() -> bytes:
    """The file's bytes, from scikit-learn's digits."""
    bunch = load_digits()
    table = np.concatenate([bunch.data, bunch.target[:, None]], axis=1)
    assert table.min() >= 0 and table.max() <= 16, "digits are 0..16"
    buf = io.BytesIO()
    np.save(buf, table.astype(np.uint8), allow_pickle=False)
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as f:
        f.write(buf.getvalue())
    return out.getvalue()


if __name__ == "__main__":
    data = build()
    if "--check" in sys.argv:
        same = OUT.read_bytes() == data
        print(f"{OUT}: {'reproduced' if same else 'DIFFERS from scikit-learn digits'}")
        sys.exit(0 if same else 1)
    OUT.write_bytes(data)
    print(f"wrote {OUT} ({len(data)} bytes), sha256 {hashlib.sha256(data).hexdigest()}")
