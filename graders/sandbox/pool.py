"""N sandboxes side by side: the parallelism (each sandbox runs one job at a time)."""

from __future__ import annotations

import os
import queue
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from graders.sandbox.outcome import Outcome
from graders.sandbox.sandbox import Sandbox


class SandboxPool:
    def __init__(self, n: int | None = None, **sandbox_args):
        """`n` sandboxes (default: the cores this process may use), each `Sandbox(**sandbox_args)`."""
        n = n or len(os.sched_getaffinity(0))
        self.sandboxes = [Sandbox(**sandbox_args) for _ in range(n)]
        self._free: queue.Queue[Sandbox] = queue.Queue()
        for sandbox in self.sandboxes:
            self._free.put(sandbox)
        self._threads = ThreadPoolExecutor(max_workers=n, thread_name_prefix="sandbox-pool")

    def __enter__(self) -> "SandboxPool":
        try:
            list(self._threads.map(Sandbox.start, self.sandboxes))  # the preloads run side by side
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def map(self, jobs: Iterable[bytes], timeout: float) -> list[Outcome]:
        """Run every job on whichever sandbox is free; the outcomes come back in the jobs' order."""
        return list(self._threads.map(lambda job: self._run(job, timeout), jobs))

    def _run(self, job: bytes, timeout: float) -> Outcome:
        sandbox = self._free.get()
        try:
            return sandbox.run(job, timeout)
        finally:
            self._free.put(sandbox)

    def close(self) -> None:
        for sandbox in self.sandboxes:
            sandbox.close()
        self._threads.shutdown()
