"""Responses that send large content in pieces, so the web process never holds all of it.

Served by daphne (ASGI), Django consumes a *synchronous* iterator whole into a list before sending
a byte (``StreamingHttpResponse.__aiter__``): a ``FileResponse`` of a 2 GB file holds 2 GB. These
responses iterate asynchronously, reading each piece in a thread, so memory stays at one piece.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse

FILE_CHUNK = 1 << 20


async def file_chunks(path: Path, chunk_size: int = FILE_CHUNK) -> AsyncIterator[bytes]:
    # Disk reads in the thread pool, not on the event loop; the file closes if the client goes.
    handle = await sync_to_async(path.open, thread_sensitive=False)("rb")
    try:
        while chunk := await sync_to_async(handle.read, thread_sensitive=False)(chunk_size):
            yield chunk
    finally:
        handle.close()


def file_download(path: Path, filename: str, content_type: str = "application/octet-stream") -> StreamingHttpResponse:
    """``path`` as an attachment named ``filename``, read a megabyte at a time."""
    response = StreamingHttpResponse(file_chunks(path), content_type=content_type)
    response["Content-Length"] = str(path.stat().st_size)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


async def batched_text(fetch: Callable[[Any], tuple[str, Any]]) -> AsyncIterator[bytes]:
    """Text read in batches: ``fetch(after)`` returns a batch's text and where the next one starts
    (None after the last). Each batch is a query of its own (keyset, never an open cursor between
    sends), run in Django's thread for database work."""
    after: Any = None
    while True:
        text, after = await sync_to_async(fetch)(after)
        if text:
            yield text.encode()
        if after is None:
            return


def text_download(fetch: Callable[[Any], tuple[str, Any]], filename: str, content_type: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(batched_text(fetch), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
