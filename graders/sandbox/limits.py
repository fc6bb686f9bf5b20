"""Resource limits for one job, applied in the forked child just before the handler runs.

Stdlib only: the zygote imports this. Every limit is per job, and `None` means no limit.
"""

from __future__ import annotations

import math
import os
import resource
from dataclasses import asdict, dataclass

from circuitlab_graders import limits as grading_limits  # stdlib only, and always staged with this package

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    # Address space a job may add to what the zygote already maps (RLIMIT_AS = the zygote's
    # size + this): the preloaded models are shared copy-on-write and must not count against it.
    # The same number as a learner call's budget (graders.limits.CALL_MEMORY_BYTES).
    memory: int | None = grading_limits.CALL_MEMORY_BYTES
    file_size: int | None = 64 * MiB  # RLIMIT_FSIZE: largest file a job may write
    open_files: int | None = 256  # RLIMIT_NOFILE
    # Processes alive at once in the sandbox besides bwrap's init and the zygote. The zygote
    # counts them while the job runs (RLIMIT_NPROC is set too, but the kernel exempts uid 0).
    processes: int | None = 32
    cpu_seconds: float | None = 60.0  # RLIMIT_CPU of the job's process (and each it forks)
    max_output: int = 16 * MiB  # the largest answer the parent accepts
    tmp_size: int = 256 * MiB  # size of the sandbox's /tmp and /dev/shm (each)

    def to_json(self) -> dict:
        return asdict(self)

    def apply(self) -> None:
        """Set this process's rlimits (called in the job's child, inside the sandbox)."""
        _set(resource.RLIMIT_CORE, 0)  # no core files: a crash must not write a dump anywhere
        if self.memory is not None:
            _set(resource.RLIMIT_AS, _address_space() + self.memory)
        if self.file_size is not None:
            _set(resource.RLIMIT_FSIZE, self.file_size)
        if self.open_files is not None:
            _set(resource.RLIMIT_NOFILE, self.open_files)
        if self.processes is not None:
            _set(resource.RLIMIT_NPROC, self.processes + 2)
        if self.cpu_seconds is not None:
            soft = math.ceil(self.cpu_seconds)
            resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))  # SIGXCPU, then SIGKILL


def _set(which: int, value: int) -> None:
    hard = resource.getrlimit(which)[1]  # a hard limit can only go down (no CAP_SYS_RESOURCE)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(which, (value, value))


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
