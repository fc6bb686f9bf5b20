"""The zygote: runs inside the sandbox, preloads once, then forks one child per job.

    python -m circuitlab_graders.sandbox.zygote      (started by Sandbox; speaks frames on stdin/stdout)

Stdlib only, apart from what the preload and handler import.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import json
import math
import os
import select
import signal
import sys
import time
import traceback

from circuitlab_graders.sandbox import child, frames, sweep
from circuitlab_graders.sandbox.limits import Limits
from circuitlab_graders.sandbox.job_verdict import (CPU_EXCEEDED, EXITED, OK, SIGNALED, TIMED_OUT, TOO_MANY_PROCESSES,
                                     TOO_MUCH_OUTPUT, Report)

MAX_JOB = 1 << 30
TICK = 0.02  # how often a running job's processes are counted

_PR_SET_DUMPABLE = 4


def send(fd: int, kind: int, payload: bytes = b"") -> None:
    frames.write_frame(fd, kind, payload)


def resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def main() -> int:
    # Keep the protocol pipes on private fds; a stray print (in the preload, say) goes to stderr.
    proto_in, proto_out = os.dup(0), os.dup(1)
    os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
    os.dup2(2, 1)
    # Not dumpable: a job (same uid) can then neither ptrace this process nor open its /proc fds.
    ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    _, config = frames.read_frame(proto_in, MAX_JOB)
    config = json.loads(config)
    limits = Limits(**config["limits"])
    scratch = config["scratch"]
    try:
        handler = resolve(config["handler"])
        resolve(config["preload"])()
    except BaseException:
        send(proto_out, frames.PRELOAD_FAILED, traceback.format_exc().encode())
        return 1
    if not clean_up(scratch):  # the preload's own leftovers must not reach job 1 either
        send(proto_out, frames.PRELOAD_FAILED, b"the sandbox could not be cleaned after the preload")
        return 1
    gc.freeze()  # the preloaded objects leave the collector's view: children need not copy them to scan them
    send(proto_out, frames.READY)
    while True:
        try:
            _, payload = frames.read_frame(proto_in, MAX_JOB)
        except EOFError:
            return 0  # the parent closed the sandbox (or died)
        (timeout,) = frames.JOB_TIMEOUT.unpack_from(payload)
        send(proto_out, frames.STARTED)
        report = run_job(handler, payload[frames.JOB_TIMEOUT.size:], timeout, limits, proto_in)
        clean = clean_up(scratch)
        send(proto_out, frames.RESULT, report.pack())
        if not clean:
            print("sandbox: could not clean up after a job; exiting for a fresh start", file=sys.stderr)
            return 3


def clean_up(scratch: list[str]) -> bool:
    clean = sweep.kill_others()
    for root in scratch:
        clean &= sweep.wipe(root)
    return clean & sweep.remove_sysv_ipc()


def run_job(handler, job: bytes, timeout: float, limits: Limits, proto_in: int) -> Report:
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        child.run(handler, job, write_end, limits)
    os.close(write_end)
    try:
        os.setpgid(pid, pid)  # also set here: whichever of the two runs first wins the race
    except OSError:
        pass
    pidfd = os.pidfd_open(pid)
    try:
        report = _watch(pid, pidfd, read_end, timeout, limits, proto_in)
    finally:
        os.close(read_end)
        os.close(pidfd)
    return report


def _watch(pid, pidfd, read_end, timeout, limits: Limits, proto_in) -> Report:
    os.set_blocking(read_end, False)
    cap = limits.max_output + child.ANSWER_HEADER.size
    answer = bytearray()
    poller = select.poll()
    poller.register(read_end, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    poller.register(proto_in, 0)  # POLLHUP only: the parent went away
    deadline = time.monotonic() + timeout
    tick = TICK if limits.processes is not None else None
    exited = None  # the child's Report once it has exited and been reaped
    while exited is None:
        left = deadline - time.monotonic()
        if left <= 0:
            return _kill(pid, Report(TIMED_OUT, signal=signal.SIGKILL))
        for fd, _ in poller.poll(1000 * (min(left, tick) if tick else left)):
            if fd == proto_in:
                sweep.kill_others()
                os._exit(0)
            if fd == read_end and not _drain(read_end, answer, cap):
                poller.unregister(read_end)
            if fd == pidfd:
                _drain(read_end, answer, cap)  # what it wrote before exiting is still in the pipe
                exited = _exit_report(pid, answer, limits)
        if len(answer) > cap:
            return Report(TOO_MUCH_OUTPUT) if exited else _kill(pid, Report(TOO_MUCH_OUTPUT))
        if exited is None and tick and len(sweep.other_pids()) > limits.processes:
            return _kill(pid, Report(TOO_MANY_PROCESSES, signal=signal.SIGKILL))
    return exited


def _kill(pid: int, report: Report) -> Report:
    """SIGKILL the job's process group, and the child itself should it have left the group."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.waitpid(pid, 0)
    return report


def _drain(fd: int, into: bytearray, cap: int) -> bool:
    """Read what is there (at most past the cap by one chunk); False at end of file."""
    while len(into) <= cap:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        into += chunk
    return True


def _exit_report(pid: int, answer: bytearray, limits: Limits) -> Report:
    _, status, usage = os.wait4(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        # SIGXCPU is RLIMIT_CPU's soft limit; a SIGKILL with the CPU spent is its hard limit.
        spent = limits.cpu_seconds is not None and usage.ru_utime + usage.ru_stime >= math.ceil(limits.cpu_seconds)
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and spent):
            return Report(CPU_EXCEEDED, signal=sig)
        return Report(SIGNALED, signal=sig)
    code = os.WEXITSTATUS(status)
    header = child.ANSWER_HEADER.size
    if code == 0 and len(answer) >= header:
        (length,) = child.ANSWER_HEADER.unpack_from(answer)
        if len(answer) == header + length:
            return Report(OK, answer=bytes(answer[header:]))
    return Report(EXITED, exit_code=code)


if __name__ == "__main__":
    sys.exit(main())
