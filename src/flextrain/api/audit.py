"""ASGI middleware that writes the audit log.

Records every mutating request (anything but GET/HEAD/OPTIONS) and every
refused one (a foreign Host's 400, 401/403, and 429 after too many wrong tokens, on
any method): who, which route, which target, the status and outcome, the client's
address and, for a browser's request, its Origin. Pure ASGI rather than
BaseHTTPMiddleware, so the event stream passes through untouched.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flextrain.service import TrainingService

log = logging.getLogger("flextrain.api.audit")
_READS = {"GET", "HEAD", "OPTIONS"}


class AuditMiddleware:
    def __init__(self, app: ASGIApp, service: TrainingService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: dict[str, int] = {}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            code = status.get("code", 500)
            if scope["method"] not in _READS or code in (400, 401, 403, 429):
                await self._record(scope, code)

    async def _record(self, scope: Scope, code: int) -> None:
        state: dict[str, Any] = scope.get("state") or {}
        user = state.get("user")
        route = scope.get("route")
        template = getattr(route, "path", None) or scope["path"]
        params: dict[str, Any] = scope.get("path_params") or {}
        target = (
            state.get("audit_target")
            or params.get("job_id")
            or params.get("name")
            or params.get("dataset_id")
        )
        client = scope.get("client")
        detail = state.get("audit_detail") or (None if template == scope["path"] else scope["path"])
        origin = _header(scope, b"origin")
        if origin is not None:  # a browser's request: which site it came from
            detail = f"{detail}; origin {origin[:200]}" if detail else f"origin {origin[:200]}"
        try:
            await asyncio.to_thread(
                self.service.audit.record,
                actor=getattr(user, "name", None),
                action=f"{scope['method']} {template}",
                target=str(target) if target is not None else None,
                status_code=code,
                client=client[0] if client else None,
                detail=detail,
            )
        except Exception:  # the request itself is done; never fail it for the log
            log.exception("Could not write the audit log entry")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None
