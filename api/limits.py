"""Request body cap enforced while reading, so a huge upload costs at most the cap.

Content-Length over the cap is refused before a byte is read; a chunked body with
no length is counted as it arrives and cut off at the cap.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sam2fleet.shared.errors import PayloadTooLarge


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        path_limits: dict[str, tuple[int, str]] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Exact paths with their own cap and the setting that sets it (video uploads).
        self.path_limits = path_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap, setting = self.path_limits.get(
            scope["path"].rstrip("/"), (self.max_bytes, "SAM2FLEET_MAX_REQUEST_BYTES")
        )
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            await self._refuse(send, cap, setting)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    # Raised inside the handler's body read: the app's error handler
                    # answers 413 like any other error.
                    raise PayloadTooLarge(self._message(cap, setting))
            return message

        await self.app(scope, counting_receive, send)

    def _message(self, cap: int, setting: str) -> str:
        return f"request body is over the {cap}-byte limit ({setting})"

    async def _refuse(self, send: Send, cap: int, setting: str) -> None:
        error = PayloadTooLarge(self._message(cap, setting))
        body = json.dumps({"error": error.to_dict()}).encode()
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
        await send({"type": "http.response.body", "body": body})
