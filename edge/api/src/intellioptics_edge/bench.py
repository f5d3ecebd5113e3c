"""The edge's part of ``make bench``: ``POST image-queries`` as a load-generator call.

``make bench`` (``tests/support/edge_stack.py:run_edge_bench``) measures the raw model,
the inference service, the edge API and nginx in interleaved slices with
``intellioptics_inference.bench``; the same image goes through nginx and straight to the
edge API, so the gateway's cost shows as the difference. The client uses ``http.client``
with one kept-alive connection per worker thread: on a 2-core machine a heavier client
would steal the CPU it is trying to measure.
"""

from __future__ import annotations

import http.client
import threading
from urllib.parse import urlencode, urlsplit

# What every bench answer must say: a 201 that escalated would time the wrong path.
_ANSWERED_ON_EDGE = (b'"from_edge":true', b'"done_processing":true')


class ImageQueryPoster:
    """Submit one image for one detector; ``None`` when the edge model answered it,
    else the error. Call it from any number of threads (one connection each); call
    :meth:`close_thread` when a thread is done."""

    def __init__(self, base_url: str, detector_id: str, token: str, image: bytes) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = "/device-api/v1/image-queries?" + urlencode({"detector_id": detector_id})
        self.headers = {"x-api-token": token, "content-type": "image/jpeg"}
        self.image = image
        self.local = threading.local()

    def __call__(self) -> str | None:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = self.local.connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            connection.request("POST", self.path, body=self.image, headers=self.headers)
            response = connection.getresponse()
            content = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close_thread()
            return repr(exc)
        if response.status != 201:
            return f"HTTP {response.status}: {content[:200]!r}"
        if not all(marker in content for marker in _ANSWERED_ON_EDGE):
            return f"not answered on the edge: {content[:200]!r}"
        return None

    def close_thread(self) -> None:
        connection = getattr(self.local, "connection", None)
        if connection is not None:
            connection.close()
            self.local.connection = None
