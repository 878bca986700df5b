"""Limits on what one client may cost the server: failed token checks per address,
and the size of an upload refused from its Content-Length before the body is read."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque

from starlette.types import ASGIApp, Receive, Scope, Send

WINDOW_SECONDS = 60.0
# Multipart framing and the form's small fields on top of the file itself.
FORM_OVERHEAD_BYTES = 1024**2


class FailedAuthLimiter:
    """At most `max_failures` wrong tokens per client address in a sliding minute."""

    def __init__(self, max_failures: int, window: float = WINDOW_SECONDS) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.get(client, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def record_failure(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            times = self._recent(client, now)
            times.append(now)
            self._failures[client] = times
            # Forget addresses whose failures have all aged out, so the table stays small.
            for other in [
                c for c, t in self._failures.items() if not t or t[-1] <= now - self.window
            ]:
                del self._failures[other]

    def retry_after(self, client: str) -> int | None:
        """Seconds until `client` may try again, or None when it may now."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(client, now)
            if len(times) < self.max_failures:
                return None
            return max(1, math.ceil(times[0] + self.window - now))


class UploadSizeLimit:
    """Refuse an upload whose declared Content-Length is over the limit with 413 before
    reading it; a body without one is counted while the route streams it to disk."""

    def __init__(self, app: ASGIApp, *, path: str | tuple[str, ...], max_mb: int) -> None:
        self.app = app
        self.paths = (path,) if isinstance(path, str) else path
        self.max_mb = max_mb

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            headers = dict(scope.get("headers") or [])
            declared = headers.get(b"content-length", b"").decode("latin-1")
            limit = self.max_mb * 1024**2 + FORM_OVERHEAD_BYTES
            if declared.isdigit() and int(declared) > limit:
                detail = upload_too_large(self.max_mb)
                what, _, fix = detail.partition(" Fix: ")
                error = {"field": "file", "message": what, "fix": fix}
                body = json.dumps({"detail": detail, "code": None, "errors": [error]})
                await send(
                    {
                        "type": "http.response.start",
                        "status": 413,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)


def upload_too_large(max_mb: int) -> str:
    return (
        f"file: larger than the upload limit of {max_mb} MB (max_upload_mb). Fix: upload a "
        "smaller file, or have an admin register it by path or raise FLEXTRAIN_MAX_UPLOAD_MB."
    )
