"""Length-prefixed frames: the only thing that crosses the sandbox's pipes.

A frame is a 9-byte header (kind: 1 byte, payload length: 8 bytes, big-endian) and then
the payload. Both ends cap the length they accept *before* reading the payload, so a
lying header costs nothing but an error. Stdlib only: the zygote imports this too.
"""

from __future__ import annotations

import os
import select
import struct
import time

HEADER = struct.Struct("!BQ")
JOB_TIMEOUT = struct.Struct("!d")  # seconds of wall time the job may take

# Parent -> zygote
CONFIG = 1  # JSON: what to preload and run, the limits
JOB = 2  # JOB_TIMEOUT, then the job's bytes
# Zygote -> parent
READY = 11  # the preload finished
PRELOAD_FAILED = 12  # UTF-8 traceback of the preload
STARTED = 13  # the zygote took the job (a death after this is the job's)
RESULT = 14  # see zygote.Report


class FrameTooLarge(Exception):
    def __init__(self, length: int, cap: int):
        super().__init__(f"a frame of {length} bytes exceeds the {cap}-byte cap")
        self.length, self.cap = length, cap


class FrameTimeout(Exception):
    pass


def write_frame(fd: int, kind: int, payload: bytes = b"") -> None:
    write_all(fd, HEADER.pack(kind, len(payload)))
    write_all(fd, payload)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[: 1 << 20]) :]


def read_frame(fd: int, cap: int, deadline: float | None = None) -> tuple[int, bytes]:
    """Read one frame; EOFError at a clean or torn end, FrameTooLarge, FrameTimeout."""
    kind, length = HEADER.unpack(read_exact(fd, HEADER.size, deadline))
    if length > cap:
        raise FrameTooLarge(length, cap)
    return kind, read_exact(fd, length, deadline)


def read_exact(fd: int, n: int, deadline: float | None = None) -> bytes:
    """Read exactly n bytes from a blocking fd, waiting at most until `deadline` (monotonic)."""
    chunks, left = [], n
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while left:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not poller.poll(wait * 1000):
                raise FrameTimeout(f"no frame within the deadline ({n - left} of {n} bytes came)")
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError(f"the pipe closed after {n - left} of {n} bytes")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
