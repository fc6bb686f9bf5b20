"""The zygote's verdict on one job, as it travels in a RESULT frame (stdlib only)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

OK, TIMED_OUT, CPU_EXCEEDED, EXITED, SIGNALED, TOO_MUCH_OUTPUT, TOO_MANY_PROCESSES = range(7)
HEADER = struct.Struct("!Bii")  # code, exit code, signal; then the answer (OK only)


@dataclass
class Report:
    code: int
    exit_code: int = 0
    signal: int = 0
    answer: bytes = b""

    def pack(self) -> bytes:
        return HEADER.pack(self.code, self.exit_code, self.signal) + self.answer
