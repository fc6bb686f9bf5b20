"""The trusted side: starts the sandbox, sends jobs, turns the zygote's reports into Outcomes.

This process never runs learner code and never unpickles or evaluates what comes back:
a reply is a capped frame of bytes, read with a deadline.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from circuitlab_graders import limits as grading_limits
from circuitlab_graders.sandbox import frames, job_verdict
from circuitlab_graders.sandbox.bwrap import SandboxUnavailable, command, find_bwrap, scratch_dirs
from circuitlab_graders.sandbox.limits import Limits
from circuitlab_graders.sandbox.outcome import Outcome
from circuitlab_graders.sandbox.stage import stage
from circuitlab_graders.sandbox.view import View

ACK_WAIT = grading_limits.ACK_WAIT_S  # an idle zygote takes a job at once; this long means it is stuck
GRACE = grading_limits.GRACE_S  # past a job's timeout: the zygote's kill, sweep and wipe
STDERR_TAIL = 64 * 1024

# bwrap's --die-with-parent fires when the *thread* that started bwrap ends, so every
# sandbox is started from this one thread, which lives as long as the process.
_LAUNCHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-launcher")


class SandboxError(RuntimeError):
    """The sandbox could not be made ready (its preload failed, or it keeps dying)."""


class Sandbox:
    """One bwrap sandbox holding a zygote; runs one job at a time (thread-safe)."""

    def __init__(self, *, preload: str, handler: str, view: View | None = None, limits: Limits = Limits(),
                 writable_tmp: bool = True, stage: tuple[str, ...] | list[str] = (), start_timeout: float = 300.0):
        self.preload, self.handler = preload, handler
        self.view = view if view is not None else View()
        self.limits, self.writable_tmp, self.stage = limits, writable_tmp, tuple(stage)
        self.start_timeout = start_timeout
        self.starts = 0  # how many zygotes this sandbox has started (restarts show here)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._stderr: _Tail | None = None
        self._stage_dir: Path | None = None
        self._last_stderr = ""

    def __enter__(self) -> "Sandbox":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        with self._lock:
            self._ensure_started()

    def run(self, job: bytes, timeout: float) -> Outcome:
        """Run `handler(job)` in a fresh child of the zygote; at most `timeout` seconds of wall time."""
        with self._lock:
            for _ in range(2):  # a zygote found dead before it took the job is restarted once
                self._ensure_started()
                try:
                    frames.write_frame(self._proc.stdin.fileno(), frames.JOB, frames.JOB_TIMEOUT.pack(timeout) + job)
                    kind, _ = frames.read_frame(self._out(), 0, time.monotonic() + ACK_WAIT)
                except (BrokenPipeError, EOFError):
                    self._discard()
                    continue
                except (frames.FrameTimeout, frames.FrameTooLarge) as error:
                    return self._protocol_error(f"no acknowledgement of the job ({error})")
                if kind != frames.STARTED:
                    return self._protocol_error(f"a frame of kind {kind} where STARTED was due")
                return self._await_result(timeout)
            raise SandboxError(f"the sandbox died twice before it could take a job; its stderr:\n{self._last_stderr}")

    def stderr_tail(self) -> str:
        """The end of what the sandbox wrote to stderr (the zygote's and jobs' tracebacks)."""
        return self._stderr.text() if self._stderr else self._last_stderr

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._proc.stdin.close()  # the zygote exits at end of input
                try:
                    self._proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
                self._discard()
            if self._stage_dir is not None:
                shutil.rmtree(self._stage_dir, ignore_errors=True)
                self._stage_dir = None

    # -- internals ------------------------------------------------------------------

    def _out(self) -> int:
        return self._proc.stdout.fileno()

    def _ensure_started(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._discard()
        bwrap = find_bwrap()
        if self._stage_dir is None:
            self._stage_dir = stage(self.stage)
        argv = command(bwrap, self.view, self._stage_dir, writable_tmp=self.writable_tmp, limits=self.limits)
        self._proc = _LAUNCHER.submit(subprocess.Popen, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, bufsize=0, close_fds=True).result()
        self._stderr = _Tail(self._proc.stderr)
        config = {"preload": self.preload, "handler": self.handler, "limits": self.limits.to_json(),
                  "scratch": scratch_dirs(writable_tmp=self.writable_tmp)}
        try:
            frames.write_frame(self._proc.stdin.fileno(), frames.CONFIG, json.dumps(config).encode())
            kind, payload = frames.read_frame(self._out(), STDERR_TAIL, time.monotonic() + self.start_timeout)
        except (BrokenPipeError, EOFError, frames.FrameTimeout, frames.FrameTooLarge) as error:
            tail = self._discard().strip()
            if "bwrap:" in tail:
                raise SandboxUnavailable(f"bubblewrap could not build the sandbox here: {tail}") from None
            raise SandboxError(f"the sandbox did not become ready ({error}); its stderr:\n{tail}") from None
        if kind != frames.READY:
            self._discard()
            text = payload.decode("utf-8", "replace")
            raise SandboxError(f"the preload {self.preload} failed in the sandbox:\n{text}")
        self.starts += 1

    def _await_result(self, timeout: float) -> Outcome:
        cap = job_verdict.HEADER.size + self.limits.max_output
        try:
            kind, payload = frames.read_frame(self._out(), cap, time.monotonic() + timeout + GRACE)
        except EOFError:
            self._discard()
            return Outcome("crashed", message="the sandbox died during the job; it restarts for the next job")
        except frames.FrameTimeout:
            self._discard()
            return Outcome("timed_out", message=f"the sandbox stopped responding during the job (over {timeout:g} s"
                                                f" + {GRACE:g} s); it restarts for the next job")
        except frames.FrameTooLarge as error:
            return self._protocol_error(str(error))
        if kind != frames.RESULT or len(payload) < job_verdict.HEADER.size:
            return self._protocol_error(f"a frame of kind {kind} and {len(payload)} bytes where a result was due")
        code, exit_code, sig = job_verdict.HEADER.unpack_from(payload)
        answer = payload[job_verdict.HEADER.size:]
        if code != job_verdict.OK and answer:
            return self._protocol_error("an answer came with a failed job")
        return self._outcome(code, exit_code, sig, answer, timeout)

    def _outcome(self, code: int, exit_code: int, sig: int, answer: bytes, timeout: float) -> Outcome:
        z, limits = job_verdict, self.limits
        if code == z.OK:
            return Outcome("ok", answer=answer)
        if code == z.TIMED_OUT:
            return Outcome("timed_out", signal=sig, message=f"the job ran past its {timeout:g} s timeout and was killed")
        if code == z.CPU_EXCEEDED:
            return Outcome("timed_out", signal=sig, message=f"the job used more than its {limits.cpu_seconds:g} s"
                                                            f" of CPU time and was killed ({_signame(sig)})")
        if code == z.EXITED:
            return Outcome("crashed", exit_code=exit_code,
                           message=f"the job's process exited with code {exit_code} without an answer")
        if code == z.SIGNALED:
            return Outcome("crashed", signal=sig, message=f"the job's process was killed by {_signame(sig)}")
        if code == z.TOO_MUCH_OUTPUT:
            return Outcome("too_much_output", message=f"the job's answer was larger than {limits.max_output} bytes")
        if code == z.TOO_MANY_PROCESSES:
            return Outcome("crashed", signal=sig, message=f"the job ran more than {limits.processes} processes at"
                                                          " once and was killed")
        return self._protocol_error(f"an unknown result code {code}")

    def _protocol_error(self, detail: str) -> Outcome:
        self._discard()  # a zygote that breaks the protocol is not trusted with another job
        return Outcome("protocol_error", message=f"the sandbox broke the protocol: {detail}; it restarts for the next job")

    def _discard(self) -> str:
        """Kill the sandbox (bwrap's --die-with-parent takes everything inside with it); its stderr."""
        if self._proc is None:
            return ""
        self._proc.kill()
        self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            pipe.close()
        self._stderr.join()
        self._last_stderr = self._stderr.text()
        self._proc = self._stderr = None
        return self._last_stderr


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


class _Tail:
    """Drains a pipe on a thread (so the sandbox never blocks on stderr), keeping the last bytes."""

    def __init__(self, pipe, keep: int = STDERR_TAIL):
        self._chunks: deque[bytes] = deque()
        self._size, self._keep = 0, keep
        self._thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self._thread.start()

    def _drain(self, pipe) -> None:
        with pipe:
            while chunk := pipe.read(1 << 16):
                self._chunks.append(chunk)
                self._size += len(chunk)
                while self._size - len(self._chunks[0]) >= self._keep:
                    self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        return b"".join(list(self._chunks))[-self._keep:].decode("utf-8", "replace")

    def join(self) -> None:
        self._thread.join(timeout=5)
