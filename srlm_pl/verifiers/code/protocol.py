"""Length-prefixed JSON messages over raw pipe file descriptors, with a size cap on every read.

Every channel of the sandbox (parent <-> zygote, tests <-> candidate) carries frames of a 4-byte big-endian
length followed by that many bytes of JSON. Reads never buffer past the frame, so a pipe can carry other
raw bytes (the per-run token) right after a frame, for another process to read.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any


class ChannelClosed(EOFError):
    """The other end closed the pipe (or the process behind it died) before a full frame arrived."""


class FrameTooLarge(ValueError):
    """A frame announced more bytes than the reader accepts."""


def read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n > 0:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise ChannelClosed(f"pipe closed with {n} bytes still expected")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def encode_frame(obj: Any) -> bytes:
    body = json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    return struct.pack(">I", len(body)) + body


def send(fd: int, obj: Any) -> None:
    write_all(fd, encode_frame(obj))


def receive(fd: int, limit: int) -> Any:
    """One frame from ``fd`` decoded as JSON; raises ChannelClosed, FrameTooLarge or ValueError."""
    (size,) = struct.unpack(">I", read_exact(fd, 4))
    if size > limit:
        raise FrameTooLarge(f"frame of {size} bytes exceeds the {limit}-byte cap")
    return json.loads(read_exact(fd, size))
