"""Members of untrusted zip archives, including the zstd ones Python 3.11's zipfile cannot open.

inspect-ai (0.3.x, through zipfile_zstd or Python 3.14's zipfile) writes its .eval logs with
compression method 93, Zstandard, in one or more frames that do not declare their size. zipfile
reads the central directory of such an archive but refuses to open the member, so
``open_member`` finds the member's data behind its local header and streams it through the
``zstandard`` package, checking the CRC-32 at the end as zipfile does for its own methods.
Any other method zipfile lacks (PPMd, xz, AES encryption...) is an ``UnreadableMember`` that
names it. No Django here: the trajectory readers and the worker use it.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from typing import IO

import zstandard

ZIP_ZSTANDARD = 93
# APPNOTE 4.4.5: the methods a user is likely to meet, for messages.
METHOD_NAMES = {
    0: "stored", 1: "shrink", 6: "implode", 8: "deflate", 9: "deflate64", 12: "bzip2", 14: "lzma",
    93: "zstd", 95: "xz", 96: "jpeg", 97: "wavpack", 98: "ppmd", 99: "AES encryption",
}
_ZIPFILE_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
READABLE = ", ".join(METHOD_NAMES[m] for m in (*_ZIPFILE_METHODS, ZIP_ZSTANDARD))
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature ... file name length, extra field length
_CHUNK = 1 << 16


class UnreadableMember(ValueError):
    """A member this reader cannot decompress: the message names the method or the damage."""


def method_name(method: int) -> str:
    return f"{METHOD_NAMES.get(method, 'unknown')} (method {method})"


def open_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> IO[bytes]:
    """A binary stream of one member's decompressed bytes."""
    if info.flag_bits & 0x1:
        raise UnreadableMember(f"{info.filename!r} is encrypted; export the log without a password")
    if info.compress_type in _ZIPFILE_METHODS:
        return archive.open(info)
    if info.compress_type == ZIP_ZSTANDARD:
        return _ZstdMember(archive, info)
    raise UnreadableMember(
        f"{info.filename!r} is compressed with {method_name(info.compress_type)}, which cannot be read "
        f"(readable: {READABLE})"
    )


class _RawSlice:
    """The member's compressed bytes, read from the archive's file at their own offsets."""

    def __init__(self, fp: IO[bytes], start: int, size: int) -> None:
        self._fp, self._pos, self._left = fp, start, size

    def read(self, size: int = -1) -> bytes:
        size = self._left if size is None or size < 0 else min(size, self._left)
        if size <= 0:
            return b""
        self._fp.seek(self._pos)
        data = self._fp.read(size)
        if len(data) < size:
            raise UnreadableMember("the archive ends inside a member (truncated file)")
        self._pos += len(data)
        self._left -= len(data)
        return data


class _ZstdMember:
    """Decompresses a method-93 member frame after frame and checks its CRC-32 at the end."""

    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        fp = archive.fp
        if fp is None:
            raise ValueError("the archive is closed")
        fp.seek(info.header_offset)
        header = fp.read(_LOCAL_HEADER.size)
        if len(header) < _LOCAL_HEADER.size or header[:4] != zipfile.stringFileHeader:
            raise UnreadableMember(f"{info.filename!r}: damaged local header")
        *_, name_length, extra_length = _LOCAL_HEADER.unpack(header)
        start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        self._name = info.filename
        self._crc, self._expected = 0, info.CRC
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            _RawSlice(fp, start, info.compress_size), read_size=_CHUNK, read_across_frames=True, closefd=False,
        )

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            chunks = []
            while chunk := self.read(_CHUNK):
                chunks.append(chunk)
            return b"".join(chunks)
        try:
            data = self._reader.read(size)
        except zstandard.ZstdError as exc:
            raise UnreadableMember(f"{self._name!r}: damaged zstd data ({exc})") from None
        if data:
            self._crc = zlib.crc32(data, self._crc)
        elif self._crc != self._expected:
            raise UnreadableMember(f"{self._name!r}: CRC-32 mismatch (damaged member)")
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> _ZstdMember:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
