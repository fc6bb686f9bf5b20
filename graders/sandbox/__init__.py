"""Run untrusted code (a learner's) in a bubblewrap sandbox, one job at a time, fast.

    from circuitlab_graders.sandbox import Sandbox, SandboxPool, Limits
    from circuitlab_graders.sandbox.project import course_view

    with Sandbox(preload="worker:load_models", handler="worker:grade_one", stage=["worker"],
                 view=course_view([course_root]), limits=Limits()) as box:
        outcome = box.run(job_bytes, timeout=30)      # Outcome: ok + answer bytes, or why not

    with SandboxPool(4, preload=..., handler=..., view=...) as pool:
        outcomes = pool.map(jobs, timeout=30)         # in the jobs' order

The package knows nothing of exercises: a job is opaque bytes in, opaque bytes out.
`handler(job) -> bytes` runs in the sandbox, so it holds no reference answers; the trusted
caller compares what comes back. Files: bwrap (the command line), view (what is hidden),
project (this course's hidden set), stage (the copied package), zygote, child, sweep,
limits, frames, job_verdict (both sides of the protocol), sandbox and pool (the trusted side).

Filesystem. The host's `/` is mounted read-only; each hidden path becomes an empty
read-only tmpfs (a hidden file becomes /dev/null); each `expose` (host -> inside) is
bind-mounted read-only on top, so `--tmpfs /repo --ro-bind /repo/circuitlab /repo/circuitlab`
shows one package of a hidden checkout. `project.course_view` hides every checkout or
installed copy of `graders` and `solutions` (found on sys.path, through setuptools'
editable finders, and where they import from; a source checkout whole, with its git
objects) and of `circuitlab.sweeps` plus the caller's paths (the nbgrader course root), and
shows again the venv, `circuitlab` (less its hidden `sweeps/`) and the model and tokenizer
caches. Fresh in every sandbox: a minimal /dev,
/proc of its own pid namespace, /run (hides the host's sockets) holding the staged package
at /run/sandbox, and /tmp, /dev/shm and /dev/mqueue, the only writable places (tmpfs of
`Limits.tmp_size`; read-only too when `writable_tmp=False`).

Staging. The real `graders/` is hidden, yet the zygote imports `circuitlab_graders.sandbox.zygote`:
the sandbox package (and the modules named in `stage`) is copied to a temporary directory
mounted at /run/sandbox, first on the sandbox's PYTHONPATH, with empty `__init__.py`
stubs for parent packages.

bwrap flags (bwrap.command): --ro-bind / / (the interpreter, venv and caches stay
readable); --tmpfs + --remount-ro for hides (read-only, so nothing can be left there);
--dev /dev, --remount-ro /dev; --proc /proc; --mqueue /dev/mqueue (so POSIX queues can be
wiped); --size N --tmpfs /tmp and /dev/shm; --tmpfs /run; --unshare-user --disable-userns
(no nested user namespace in which a job would regain capabilities); --unshare-pid (the
zygote can find and kill every leftover process; the host's are invisible); --unshare-net
(only a loopback of its own: no network, no host abstract sockets); --unshare-ipc (System V
objects of its own, wiped); --unshare-uts --hostname; --unshare-cgroup; --die-with-parent
(SIGKILL to all inside when the grader dies; bwrap is started from one long-lived thread
because the kernel ties this to the starting *thread*); --new-session (no controlling
terminal, so no TIOCSTI keystroke injection); --cap-drop ALL; --clearenv and a minimal
environment (PATH, HOME=/tmp, HF_HUB_OFFLINE=1, HF_HOME, PYTHONPATH, one thread per
BLAS/OpenMP); --chdir /run/sandbox (read-only; PYTHONSAFEPATH keeps it off sys.path).

Why a zygote. Importing torch and loading models takes seconds, a job milliseconds. The
zygote imports and preloads once (`preload`, a "module:function" run inside the sandbox),
calls gc.freeze(), then forks a child per job: the child shares the loaded models
copy-on-write and starts with them in place. The zygote runs single-threaded
(OMP_NUM_THREADS=1 etc.): a child forked from a zygote whose preload ran a multithreaded
OpenMP region deadlocks at its first parallel region (measured: every job timed out with
2 threads); the parallelism is a SandboxPool of one-thread sandboxes.

Protocol (frames.py). Length-prefixed frames on bwrap's stdin/stdout: CONFIG (JSON, parent
to zygote), READY or PRELOAD_FAILED, then per job JOB (timeout + bytes) -> STARTED -> RESULT
(code, exit code, signal, answer). The parent reads with a deadline and a cap checked
before any payload is read; it never unpickles or evaluates a reply. A zygote found dead
before STARTED is restarted and the job resent once; one that dies after STARTED makes the
job `crashed`; one that stops answering (timeout + GRACE) is killed (`timed_out`); a
malformed frame is `protocol_error`; each is replaced by a fresh sandbox for the next job.

A job. The zygote forks a child in its own process group; the child keeps only stderr and
a fresh pipe for its answer (stdin/stdout are /dev/null), sets its rlimits and calls
`handler(job)`. The zygote waits with the job's timeout on the answer pipe and the child's
pidfd, counting the sandbox's processes every 20 ms. On timeout, too many processes or an
answer over `max_output` it SIGKILLs the child's group. Then, before answering, it SIGKILLs
every other process in the pid namespace (a job's daemons would tamper with the next job),
empties /tmp, /dev/shm and /dev/mqueue and deletes System V IPC objects; if that fails it
exits, and the next job gets a fresh sandbox. The zygote is not dumpable, so a job (same
uid) can neither ptrace it nor open its /proc/<pid>/fd (its protocol pipes).

Limits (limits.py, per job): address space the job may add to the zygote's (RLIMIT_AS;
the preloaded models do not count), file size, open files, CPU seconds (RLIMIT_CPU:
SIGXCPU, then SIGKILL; reported as timed_out), processes (counted by the zygote; RLIMIT_NPROC
is set too but the kernel exempts uid 0, which is what a root grader runs as), answer
size, scratch size; plus the wall-clock timeout of each run. No core files.

Protects against: reading the references, graders, chapters' sources, git history or the
course directory (gradebook, other submissions); writing anywhere but scratch space; the
network; rebinding the grader (it is in another process); state or processes carried from
one job to the next; hanging or crashing the grader; flooding it with output.
Does not protect against: what is not hidden (the hide list is a deny list over the host's
read-only root: another checkout this process cannot import from stays readable; pass it
in); the answer bytes themselves (learner code runs in the handler's process and can
write any answer: treat it as untrusted data); memory summed over a job's processes (each
has its own RLIMIT_AS; there is no cgroup); a fork bomb between two 20 ms counts; inode
exhaustion of the tmpfs (its size caps bytes only); kernel bugs (no seccomp filter);
kernel keyrings; a job killing or stopping its zygote (it costs a restart, charged to that job).
"""

from circuitlab_graders.sandbox.bwrap import SandboxUnavailable
from circuitlab_graders.sandbox.limits import Limits
from circuitlab_graders.sandbox.outcome import Outcome
from circuitlab_graders.sandbox.pool import SandboxPool
from circuitlab_graders.sandbox.sandbox import Sandbox, SandboxError
from circuitlab_graders.sandbox.view import View

__all__ = ["Sandbox", "SandboxPool", "Outcome", "Limits", "View", "SandboxError", "SandboxUnavailable"]
