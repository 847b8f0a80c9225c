"""ASGI middleware: request body limits enforced while reading, and security headers.

The body limit refuses a declared ``Content-Length`` over the limit before a byte is read, and
stops a chunked body the moment it crosses the limit, so no upload can fill the disk or memory.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import RequestTooLargeError

__all__ = ["BodyLimitMiddleware", "SecurityHeadersMiddleware", "security_headers"]

#: Headers on every response. Patient data must not be cached by browsers or proxies.
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
    (b"cache-control", b"no-store"),
]
_API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413 ``request.too_large``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _refuse(send, self._error(declared))
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._error(received)
            return message

        await self.app(scope, limited, send)

    def _error(self, size: int) -> RequestTooLargeError:
        return RequestTooLargeError(
            f"The request body is over the limit of {self.max_bytes} bytes; nothing was kept. "
            "Send the study in several requests.",
            limit_bytes=self.max_bytes,
            received_or_declared_bytes=size,
        )


class SecurityHeadersMiddleware:
    """Add :data:`SECURITY_HEADERS` (and a deny-all CSP outside the web UI) to every response."""

    def __init__(self, app: ASGIApp, *, ui_prefix: str = "/ui") -> None:
        self.app = app
        self.ui_prefix = ui_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = security_headers(scope["path"], ui_prefix=self.ui_prefix)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (name, value) for name, value in extra if name not in names
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


def security_headers(path: str, *, ui_prefix: str = "/ui") -> list[tuple[bytes, bytes]]:
    """The security headers of a response to ``path``; also used by the 500 handler, whose
    answer Starlette sends from outside every middleware."""
    extra = list(SECURITY_HEADERS)
    if not path.startswith(ui_prefix):
        extra.append(_API_CSP)
    return extra


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, error: RequestTooLargeError) -> None:
    body = json.dumps(error.to_dict()).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
