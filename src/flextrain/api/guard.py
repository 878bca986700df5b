"""Which requests the server answers, and the headers every answer carries.

- **Host** (DNS rebinding): a page on attacker.example whose name is made to resolve
  to 127.0.0.1 reaches a local server with `Host: attacker.example`; only the names
  this server is configured for are answered (loopback by default).
- **Origin / Sec-Fetch-Site** (cross-site request forgery): a page on another site
  can send a form or a no-cors `fetch` to the server, and a `--no-auth` server acts
  as the local admin for it. Requests that change something are refused when the
  browser says they come from another site; clients that are not browsers send
  neither header and are judged by their token alone.
- **Body size**: a JSON body is read whole before it is validated, so its size is
  capped before that (uploads have their own, larger, limit).
- **Security headers** on every response: the page keeps its token in localStorage,
  so no script but its own may run, and it may not be framed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What a browser sends for a request from the page itself, or typed into its address bar.
SAME_SITE_FETCH = frozenset({"same-origin", "none"})
MAX_JSON_BODY_BYTES = 1024**2

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
# FastAPI's interactive docs load Swagger UI / ReDoc from a CDN with an inline script.
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: "
    "https://fastapi.tiangolo.com; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)


def host_name(host: str) -> str:
    """The name of a Host header without its port: `[::1]:8000` -> `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


async def send_error(send: Send, status: int, field: str, message: str, fix: str) -> None:
    """The API's error shape, from a middleware (before any route runs)."""
    body = json.dumps(
        {
            "detail": f"{message} Fix: {fix}",
            "code": None,  # not one of flextrain's errors (ErrorBody.code)
            "errors": [{"field": field, "message": message, "fix": fix}],
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Refuse a foreign Host (400) and a state-changing request from another site (403)."""

    def __init__(self, app: ASGIApp, *, hosts: Iterable[str], origins: Iterable[str] = ()) -> None:
        self.app = app
        self.hosts = frozenset(host_name(h) for h in hosts)
        self.origins = frozenset(o.rstrip("/").lower() for o in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if host_name(host) not in self.hosts:
            names = ", ".join(sorted(self.hosts))
            await send_error(
                send,
                400,
                "Host",
                f"this server does not answer to the host name '{host[:100]}' (it answers "
                f"to {names}).",
                "open the page by one of those names, or add the name to "
                "FLEXTRAIN_ALLOWED_HOSTS on the server.",
            )
            return
        if scope["method"] not in SAFE_METHODS:
            why = self._foreign(headers, host)
            if why:
                await send_error(
                    send,
                    403,
                    "Origin",
                    f"{why}: requests that change something are only taken from this "
                    "server's own page or from clients that are not browsers.",
                    "use the page this server serves, or the CLI / Python API / an HTTP "
                    "client with a token; a separate web front end is allowed with "
                    "FLEXTRAIN_ALLOWED_ORIGINS.",
                )
                return
        await self.app(scope, receive, send)

    def _foreign(self, headers: dict[str, str], host: str) -> str | None:
        origin = headers.get("origin")
        if origin is not None:
            if origin.rstrip("/").lower() in self.origins:
                return None
            if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
                return f"the request comes from another site ({origin[:100]})"
            return None
        site = headers.get("sec-fetch-site")
        if site is not None and site not in SAME_SITE_FETCH:
            return f"the browser marks the request as {site}"
        return None


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"body: larger than {limit // 1024} KB. Fix: send a smaller request (config "
            "values are far smaller; upload data files to POST /api/datasets).",
        )


class BodySizeLimit:
    """A request body (other than uploads under `skip`) over `max_bytes` is 413: refused
    from its Content-Length before it is read, or as soon as a streamed one passes it."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int = MAX_JSON_BODY_BYTES, skip: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.skip = skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.skip):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.max_bytes:
            error = _BodyTooLarge(self.max_bytes)
            what, _, fix = str(error.detail).partition(" Fix: ")
            await send_error(send, 413, "body", what.removeprefix("body: "), fix)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _BodyTooLarge(self.max_bytes)  # FastAPI answers HTTPExceptions
            return message

        await self.app(scope, counted, send)


class SecurityHeaders:
    """The headers above on every response (a route's own values are kept)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = DOCS_POLICY if scope["path"].startswith(DOCS_PATHS) else CONTENT_SECURITY_POLICY

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                if b"content-security-policy" not in present:
                    extra.append((b"content-security-policy", policy.encode()))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)
