"""Live endpoint: query a suspect's HTTP prediction API, and a reference server for it.

The protocol: ``POST <url>`` with the PNG file bytes as the body and ``Content-Type: image/png``;
the answer is JSON, one of ``3``, ``{"label": 3}``, ``{"logits": [K floats]}``,
``{"probabilities": [K floats]}`` or a bare ``[K floats]``. When an answer carries both ``label``
and ``logits``, the label is used: it is the suspect's decision.

:func:`query_endpoint` sends one PNG per request, with retries, backoff and an optional rate
limit; :func:`serve_predictions` serves a predict function in that protocol (the tests' suspect).
"""

from __future__ import annotations

import http.client
import json
import math
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from jaxwm.blackbox._codec import (
    as_label,
    as_logits_label,
    check_count,
    check_images,
    decode_png,
    encode_png,
    short,
)
from jaxwm.errors import BlackBoxError

MAX_RETRY_AFTER_S = 60.0
_SNIPPET = 200  # characters of a server's answer quoted in an error message
_MAX_BODY = 64 * 1024 * 1024  # the reference server refuses larger uploads

# Every wait goes through this name so tests can observe backoff without spending the time.
_sleep = time.sleep


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
                return as_label(answer["label"], num_classes, bad)
            for key in ("logits", "probabilities"):
                if key in answer:
                    return as_logits_label(answer[key], num_classes, bad)
            raise BlackBoxError(
                f"{bad}: expected key 'label', 'logits' or 'probabilities'; "
                f"got keys {short(sorted(answer))}"
            )
        if isinstance(answer, list):
            return as_logits_label(answer, num_classes, bad)
        return as_label(answer, num_classes, bad)
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
        raise BlackBoxError(f"url must be an http:// or https:// URL with a host; got {short(url)}")
    arr = check_images(images)
    num_classes = check_count("num_classes", num_classes, 2)
    retries = check_count("retries", retries, 0)
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
        body = encode_png(arr[pos])
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
                batch = decode_png(data, "request body")[None]
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
