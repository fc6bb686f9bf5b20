"""The bubblewrap command line that starts a zygote (see the package docstring for each flag's reason)."""

from __future__ import annotations

import shutil
from pathlib import Path

from circuitlab_graders.sandbox.limits import Limits
from circuitlab_graders.sandbox.view import SYSTEM_MOUNTS, View

INSTALL = "apt-get install -y bubblewrap"
STAGE_INSIDE = Path("/run/sandbox")  # the staged package, first on the sandbox's sys.path
SCRATCH = ("/tmp", "/dev/shm", "/dev/mqueue")  # the only writable places; wiped after every job
THREADS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot build a sandbox here; learner code is never run without one."""


def find_bwrap() -> str:
    found = shutil.which("bwrap")
    if found is None:
        raise SandboxUnavailable(
            "bubblewrap (the `bwrap` command) is not on PATH, and learner code is never run "
            f"unsandboxed: install the Debian/Ubuntu package with `{INSTALL}`"
        )
    return found


def command(bwrap: str, view: View, stage_dir: Path, *, writable_tmp: bool, limits: Limits) -> list[str]:
    args = [bwrap, "--ro-bind", "/", "/"]
    args += _view_mounts(view)
    args += ["--dev", "/dev", "--proc", "/proc", "--mqueue", "/dev/mqueue"]
    for scratch in ("/tmp", "/dev/shm"):
        args += ["--size", str(limits.tmp_size), "--tmpfs", scratch]
    args += ["--tmpfs", "/run", "--ro-bind", str(stage_dir), str(STAGE_INSIDE)]
    read_only = ["/dev", "/run"] + ([] if writable_tmp else list(SCRATCH))
    for path in read_only:
        args += ["--remount-ro", path]
    args += ["--unshare-user", "--disable-userns", "--unshare-pid", "--unshare-net",
             "--unshare-ipc", "--unshare-uts", "--unshare-cgroup", "--hostname", "sandbox",
             "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv"]
    for name, value in environment(view).items():
        args += ["--setenv", name, value]
    args += ["--chdir", str(STAGE_INSIDE), str(view.python), "-m", "circuitlab_graders.sandbox.zygote"]
    return args


def scratch_dirs(*, writable_tmp: bool) -> list[str]:
    return list(SCRATCH) if writable_tmp else []


def environment(view: View) -> dict[str, str]:
    env = {
        "PATH": f"{view.python.parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONPATH": ":".join(str(p) for p in (STAGE_INSIDE, *view.pythonpath)),
        "PYTHONSAFEPATH": "1",  # no cwd on sys.path
        "PYTHONDONTWRITEBYTECODE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    # One thread per sandbox: a pool of sandboxes is the parallelism, and a forked child of a
    # multithreaded zygote can deadlock on a lock another thread held at fork time.
    env.update({name: "1" for name in THREADS_ENV})
    env.update(view.env)
    return env


def _view_mounts(view: View) -> list[str]:
    """Hides and exposes, shallowest first, so an expose under a hide (and a hide under an
    expose) lands on top of it; the hides turn read-only only once every mount point in
    them exists. Paths under the sandbox's own mounts are covered by those anyway."""
    exposed = [inside for _, inside in view.expose]
    hides = [p for p in view.hide if p.exists() and not _covered(p, view.hide, exposed)]
    ops = [(p, 0, p) for p in hides] + [(inside, 1, host) for host, inside in view.expose]
    ops = [op for op in ops if not any(op[0].is_relative_to(m) for m in SYSTEM_MOUNTS)]
    args: list[str] = []
    read_only: list[str] = []
    for inside, is_expose, host in sorted(ops, key=lambda op: (len(op[0].parts), op[1])):
        if is_expose:
            args += ["--ro-bind", str(host), str(inside)]
        elif host.is_dir():
            args += ["--tmpfs", str(inside)]
            read_only += ["--remount-ro", str(inside)]
        else:
            args += ["--ro-bind", "/dev/null", str(inside)]
    return args + read_only


def _covered(path: Path, hidden: tuple[Path, ...], exposed: list[Path]) -> bool:
    """Already hidden by a hidden ancestor, with no expose in between that shows it again."""
    return any(path != h and path.is_relative_to(h) and not any(path.is_relative_to(e) and e.is_relative_to(h)
                                                                   for e in exposed) for h in hidden)
