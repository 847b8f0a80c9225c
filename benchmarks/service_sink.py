"""The baseline server for the service benchmark: uvicorn + an ASGI app that reads each request
body to the end and throws it away, so only HTTP and loopback cost what it measures."""

from __future__ import annotations

from starlette.types import Receive, Scope, Send


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"{}"})
