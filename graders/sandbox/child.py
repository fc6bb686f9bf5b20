"""The forked child that runs one job: its only way out is a fresh pipe for the answer.

Runs inside the sandbox, in a process forked from the zygote. Stdlib only.
"""

from __future__ import annotations

import os
import struct
import sys
import traceback
from typing import Callable

from circuitlab_graders.sandbox.frames import write_all
from circuitlab_graders.sandbox.limits import Limits

ANSWER_HEADER = struct.Struct("!Q")  # the answer's length, so "no answer" differs from b""


def run(handler: Callable[[bytes], bytes], job: bytes, answer_fd: int, limits: Limits) -> None:
    """Never returns: the child ends with os._exit (no atexit hooks, no flushing of the zygote's state)."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own process group, so a timeout kills it and what it forked
        _keep_only(answer_fd)
        limits.apply()
        answer = handler(job)
        if not isinstance(answer, (bytes, bytearray)):
            raise TypeError(f"the handler returned {type(answer).__name__}, not bytes")
        write_all(answer_fd, ANSWER_HEADER.pack(len(answer)))
        write_all(answer_fd, answer)
        code = 0
    except SystemExit as exit_:
        code = 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code)


def _keep_only(answer_fd: int) -> None:
    """stdin and stdout become /dev/null, stderr stays (diagnostics), every other fd but the answer closes."""
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.closerange(3, answer_fd)
    os.closerange(answer_fd + 1, 1 << 20)
