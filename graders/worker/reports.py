"""What the cell and exercise runners tell the supervisor: framed `circuitlab_graders.wire` records
on one pipe. Each record is a dict with a "report" kind:

* {"report": "cell", "index": i}: about to run code cell i;
* {"report": "cell_error", "index": i, "message": ...}: cell i raised (the runner goes on);
* {"report": "cell_done", "index": i, "seconds": s}: cell i took s seconds;
* {"report": "exercise", "name": ...}: about to run that exercise's calls;
* {"report": "call", "name": ..., "limit": seconds}: about to make one of them;
* {"report": "answers", "name": ..., "calls": {key: outcome}, "printed": note or None};
* {"report": "exercise_failed", "name": ..., "kind": one of FAILED, "message": ...};
* {"report": "done"}.

Outcome kinds are `circuitlab_graders.calls.KINDS`, spelled the same on both sides of the sandbox.
"""

from __future__ import annotations

import os
import select
import struct
import time
from typing import Any, Optional

from circuitlab_graders import wire

HEADER = struct.Struct("!Q")
MAX_REPORT = 8 * 1024 * 1024  # an exercise's answers are kilobytes; more is not an answer
# An exercise none of whose calls answered: the call kind each of its cases gets (the
# function was not defined: "raised", as calling it would).
FAILED = ("raised", "crashed", "timed_out")


def send(fd: int, report: dict[str, Any]) -> None:
    data = wire.dumps(report)
    view = memoryview(HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


class Reader:
    """Reads reports from a pipe with deadlines; malformed input ends the stream."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.closed = False
        self.too_big = False

    def next(self, deadline: float) -> Optional[dict]:
        """The next report, or None at end of stream or when `deadline` (time.monotonic) passes."""
        while True:
            if len(self.buffer) >= HEADER.size:
                (size,) = HEADER.unpack_from(self.buffer)
                if size > MAX_REPORT:
                    self.closed = self.too_big = True
                    return None
                if len(self.buffer) >= HEADER.size + size:
                    data = bytes(self.buffer[HEADER.size:HEADER.size + size])
                    del self.buffer[:HEADER.size + size]
                    try:
                        report = wire.loads(data)
                    except (ValueError, KeyError, TypeError):
                        self.closed = True
                        return None
                    return report if isinstance(report, dict) and isinstance(report.get("report"), str) else None
            if self.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                self.closed = True
            self.buffer += chunk
