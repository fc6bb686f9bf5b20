"""Between jobs the zygote leaves the sandbox as it found it: no other process, empty scratch space.

Runs inside the sandbox (its own pid, IPC and mount namespaces), so "every process" and
"every IPC object" mean the sandbox's. Stdlib only. Each function returns False when it
could not finish; the zygote then exits and the parent starts a fresh sandbox.
"""

from __future__ import annotations

import ctypes
import os
import signal
import stat
import time

INIT_PID = 1  # bwrap's init in the sandbox's pid namespace: it reaps orphans


def other_pids() -> list[int]:
    """Processes in the sandbox besides bwrap's init and this one (zombies included)."""
    me = os.getpid()
    return [int(n) for n in os.listdir("/proc") if n.isdigit() and int(n) not in (INIT_PID, me)]


def kill_others(patience: float = 5.0) -> bool:
    """SIGKILL every other process until none is left (killing races forks, so loop)."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        pids = other_pids()
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap()
        time.sleep(0.001)  # zombies of orphans are init's to reap
    return not other_pids()


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def wipe(root: str) -> bool:
    """Remove everything under `root` (iteratively: a job may nest directories deeply)."""
    try:
        os.chmod(root, 0o1777)
        pending = [(e.path, False) for e in os.scandir(root)]
        while pending:
            path, emptied = pending.pop()
            if emptied or not stat.S_ISDIR(os.lstat(path).st_mode):
                (os.rmdir if emptied else os.unlink)(path)
                continue
            os.chmod(path, 0o700)  # a job may have made it unreadable; we own it
            pending.append((path, True))
            pending.extend((e.path, False) for e in os.scandir(path))
        return not os.listdir(root)
    except OSError:
        return False


_IPC_RMID = 0
_SYSV = (("shm", "shmctl"), ("msg", "msgctl"), ("sem", "semctl"))


def remove_sysv_ipc() -> bool:
    """Delete every System V shared memory segment, message queue and semaphore set."""
    libc = ctypes.CDLL(None, use_errno=True)
    clean = True
    for table, ctl in _SYSV:
        with open(f"/proc/sysvipc/{table}") as f:
            ids = [int(line.split()[1]) for line in f.readlines()[1:]]
        for ipc_id in ids:
            if ctl == "semctl":
                result = libc.semctl(ipc_id, 0, _IPC_RMID)
            else:
                result = getattr(libc, ctl)(ipc_id, _IPC_RMID, None)
            clean &= result == 0
    return clean
