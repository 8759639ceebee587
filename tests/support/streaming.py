"""Reading streamed responses in tests as daphne reads them."""

from __future__ import annotations

from asgiref.sync import async_to_sync


def streamed(response) -> bytes:
    """The body of a streamed response, read asynchronously (as the ASGI server does)."""

    async def read() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(read)()
