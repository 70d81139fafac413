"""Black-box verification I/O: the owner reaches the suspect model only through its answers.

An owner who cannot load a suspect's weights can still send it the trigger images and record the
labels (or logits) it answers. This package moves images out and answers in, and checks both ends
so that a mistake in the plumbing (a re-encoded image, a shuffled answer file, a dropped row)
fails loudly instead of silently lowering the retention:

* :func:`export_queries` writes the query images as lossless PNGs ``query_00000.png, ...`` with
  an index (``index.csv`` and ``index.json``: position, file, SHA-256) for an owner who submits
  them to the suspect's API by hand; :func:`load_queries` reads them back bit-exactly
  (:mod:`.queries`).
* :func:`read_answers` reads the suspect's answers (``.npy``, ``.json`` or ``.csv``; labels or
  logits; in query order or keyed by position/file) into ``int32`` labels in query order
  (:mod:`.answers`).
* :func:`query_endpoint` queries a live HTTP prediction endpoint, one PNG per request, with
  retries, backoff and an optional rate limit; :func:`serve_predictions` is a reference server
  for that protocol (and the tests' suspect) (:mod:`.endpoint`).

The HTTP protocol: ``POST <url>`` with the PNG file bytes as the body and
``Content-Type: image/png``; the answer is JSON, one of ``3``, ``{"label": 3}``,
``{"logits": [K floats]}``, ``{"probabilities": [K floats]}`` or a bare ``[K floats]``. When an
answer carries both ``label`` and ``logits``, the label is used: it is the suspect's decision.

The resulting labels feed :func:`jaxwm.verify.verify_predictions`. Standard library, NumPy and
Pillow only (no JAX), so it runs wherever the owner has Python.

Example:
    >>> import numpy as np
    >>> server, url = serve_predictions(lambda x: np.eye(10)[[int(x.mean()) % 10]])
    >>> images = np.full((2, 4, 4, 3), [[[[3]]], [[[7]]]], np.uint8)
    >>> query_endpoint(url, images, 10)
    array([3, 7], dtype=int32)
    >>> server.shutdown(); server.server_close()
"""

from jaxwm.blackbox.answers import ANSWER_EXTENSIONS, read_answers
from jaxwm.blackbox.endpoint import MAX_RETRY_AFTER_S, query_endpoint, serve_predictions
from jaxwm.blackbox.queries import QUERY_FORMAT, export_queries, load_queries

__all__ = [
    "ANSWER_EXTENSIONS",
    "MAX_RETRY_AFTER_S",
    "QUERY_FORMAT",
    "export_queries",
    "load_queries",
    "query_endpoint",
    "read_answers",
    "serve_predictions",
]
