"""An ASGI response that streams an async iterator and stops it when the client leaves.

Unlike a plain streaming response it always starts and closes the iterator, so
the code after audio (settling the wallet, closing the upstream request) runs at once,
whether the stream ended, failed, or the client disconnected.
"""

from __future__ import annotations

import contextlib
from typing import AsyncIterator, Mapping

import anyio
from starlette.types import Receive, Scope, Send


class AudioStreamResponse:
    def __init__(self, body: AsyncIterator[bytes], *, media_type: str, headers: Mapping[str, str] | None = None) -> None:
        self.body = body
        self.status_code = 200
        self.headers = [(b"content-type", media_type.encode("latin-1"))]
        self.headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tg:

            async def _watch_disconnect() -> None:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(_watch_disconnect)
            try:
                await self._stream(send)
            finally:
                tg.cancel_scope.cancel()

    async def _stream(self, send: Send) -> None:
        async with contextlib.aclosing(self.body) as body:  # type: ignore[type-var]
            # Start the body before the headers go out: a generator that never started
            # would skip its own clean-up if the client vanished during the first send.
            first = await anext(body, None)
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.headers})
            if first is not None:
                await send({"type": "http.response.body", "body": first, "more_body": True})
                async for chunk in body:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
