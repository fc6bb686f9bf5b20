"""N sandboxes side by side: the parallelism (each sandbox runs one job at a time)."""

from __future__ import annotations

import os
import queue
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Iterable, Optional, Sequence

from circuitlab_graders.sandbox.outcome import Outcome
from circuitlab_graders.sandbox.sandbox import Sandbox


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
        jobs = list(jobs)
        return self.run(jobs, [timeout] * len(jobs))

    def run(self, jobs: Sequence[bytes], timeouts: Sequence[float],
            progress: Optional[Callable[[int], None]] = None) -> list[Outcome]:
        """`map` with a timeout per job; `progress(done)` is called as each job finishes."""
        outcomes: list = [None] * len(jobs)
        futures = {self._threads.submit(self._run, job, t): i for i, (job, t) in enumerate(zip(jobs, timeouts))}
        for done, future in enumerate(as_completed(futures), 1):
            outcomes[futures[future]] = future.result()
            if progress:
                progress(done)
        return outcomes

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
