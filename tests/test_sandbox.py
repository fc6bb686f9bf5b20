"""circuitlab_graders.sandbox: learner code runs in a bubblewrap sandbox that hides the course and keeps jobs apart.

Jobs are Python source run by tests/sandbox_handlers.py:run_code; a job's `answer` comes back.
Every sandbox here but one has a trivial preload, so each starts in a fraction of a second.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from circuitlab_graders.sandbox import Limits, Outcome, Sandbox, SandboxError, SandboxPool
from circuitlab_graders.sandbox.project import course_view, package_dirs

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None,
                                reason="bubblewrap is not installed (apt-get install -y bubblewrap)")

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20
LIMITS = Limits(memory=512 * MiB, max_output=1 * MiB, cpu_seconds=2, processes=16)
HANDLERS = dict(handler="tests.sandbox_handlers:run_code", stage=["tests.sandbox_handlers"])


def job(source: str) -> bytes:
    return textwrap.dedent(source).encode()


@pytest.fixture(scope="module")
def course():
    """A fake nbgrader course outside /tmp (the sandbox's /tmp is fresh anyway), with a visible neighbour."""
    root = Path(tempfile.mkdtemp(prefix="sandbox-test-", dir="/var/tmp"))
    (root / "course" / "submitted" / "alice").mkdir(parents=True)
    (root / "course" / "gradebook.db").write_bytes(b"SQLite format 3\0 grades")
    (root / "course" / "submitted" / "alice" / "00_setup.ipynb").write_text("{}")
    (root / "neighbour.txt").write_text("visible")
    yield root
    shutil.rmtree(root)


@pytest.fixture(scope="module")
def sandbox(course):
    with Sandbox(preload="tests.sandbox_handlers:preload_nothing", view=course_view([course / "course"]),
                 limits=LIMITS, **HANDLERS) as box:
        yield box


def run_ok(box: Sandbox, source: str, timeout: float = 10.0) -> bytes:
    outcome = box.run(job(source), timeout)
    assert outcome.kind == "ok", (outcome, box.stderr_tail()[-2000:])
    return outcome.answer


# -- round trip and failures ---------------------------------------------------------------


def test_an_honest_job_gets_its_bytes_back_from_a_child_of_the_preloaded_zygote(sandbox):
    outcome = sandbox.run(job("""
        import os
        from tests import sandbox_handlers
        assert sandbox_handlers.PRELOADED_BY == os.getppid()
        answer = bytes(range(256))[::-1]
    """), 5)
    assert outcome == Outcome("ok", answer=bytes(range(256))[::-1])


def test_an_endless_loop_is_killed_at_the_timeout(sandbox):
    start = time.monotonic()
    outcome = sandbox.run(job("while True: pass"), 0.5)
    elapsed = time.monotonic() - start
    assert outcome == Outcome("timed_out", signal=9, message="the job ran past its 0.5 s timeout and was killed")
    assert 0.5 <= elapsed < 1.5
    assert run_ok(sandbox, "answer = b'next'") == b"next"


def test_a_loop_that_ignores_sigterm_is_killed_all_the_same(sandbox):
    outcome = sandbox.run(job("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(0.01)
    """), 0.5)
    assert outcome == Outcome("timed_out", signal=9, message="the job ran past its 0.5 s timeout and was killed")


def test_a_job_past_its_cpu_seconds_is_stopped_by_the_rlimit(sandbox):
    outcome = sandbox.run(job("while True: pass"), 20)
    assert outcome == Outcome("timed_out", signal=signal.SIGXCPU,
                              message="the job used more than its 2 s of CPU time and was killed (SIGXCPU)")


@pytest.mark.parametrize("code", [0, 3])
def test_exiting_without_an_answer_is_a_crash(sandbox, code):
    outcome = sandbox.run(job(f"import os; os._exit({code})"), 5)
    assert outcome == Outcome("crashed", exit_code=code,
                              message=f"the job's process exited with code {code} without an answer")


def test_a_segfault_is_a_crash_by_sigsegv(sandbox):
    outcome = sandbox.run(job("import ctypes; ctypes.string_at(0)"), 5)
    assert outcome == Outcome("crashed", signal=signal.SIGSEGV, message="the job's process was killed by SIGSEGV")


def test_a_huge_answer_is_too_much_output(sandbox):
    at_cap = sandbox.run(job("answer = b'x' * (1 << 20)"), 5)
    assert at_cap.kind == "ok" and len(at_cap.answer) == MiB
    outcome = sandbox.run(job("answer = b'x' * (8 << 20)"), 5)
    assert outcome == Outcome("too_much_output", message="the job's answer was larger than 1048576 bytes")


def test_a_memory_bomb_meets_the_address_space_limit_and_the_sandbox_lives_on(sandbox):
    answer = run_ok(sandbox, """
        small = bytearray(64 << 20)             # well inside the 512 MiB a job may add
        try:
            bomb = bytearray(2 << 30)           # the host has far more than 2 GiB free
            answer = b'allocated'
        except MemoryError:
            answer = b'MemoryError'
    """)
    assert answer == b"MemoryError"
    outcome = sandbox.run(job("bomb = [bytearray(1 << 20) for _ in range(4096)]"), 10)
    assert outcome == Outcome("crashed", exit_code=1, message="the job's process exited with code 1 without an answer")
    assert "MemoryError" in sandbox.stderr_tail()
    assert run_ok(sandbox, "answer = b'still here'") == b"still here"


def test_too_many_processes_are_killed(sandbox):
    outcome = sandbox.run(job("""
        import os, time
        for _ in range(40):
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
        time.sleep(60)
    """), 10)
    assert outcome == Outcome("crashed", signal=9, message="the job ran more than 16 processes at once and was killed")


def test_file_size_scratch_size_and_open_files_are_limited():
    limits = Limits(file_size=1 * MiB, tmp_size=4 * MiB, open_files=32)
    with Sandbox(preload="tests.sandbox_handlers:preload_nothing", view=course_view(), limits=limits,
                 **HANDLERS) as box:
        tried = json.loads(run_ok(box, """
            import errno, json
            def attempt(action):
                try:
                    action()
                    return 'ok'
                except OSError as error:
                    return errno.errorcode[error.errno]
            def fill(count):
                for i in range(count):
                    with open(f'/tmp/part{i}', 'wb') as f:
                        f.write(b'x' * (1 << 20))            # 1 MiB each: just within the file cap
            answer = json.dumps({
                'a 2 MiB file': attempt(lambda: open('/tmp/big', 'wb').write(b'x' * (2 << 20))),
                'three 1 MiB files': attempt(lambda: fill(3)),
                'eight 1 MiB files': attempt(lambda: fill(8)),
                '40 open files': attempt(lambda: [open('/dev/null') for _ in range(40)]),
            }).encode()
        """))
    assert tried == {"a 2 MiB file": "EFBIG", "three 1 MiB files": "ok", "eight 1 MiB files": "ENOSPC",
                     "40 open files": "EMFILE"}


# -- nothing survives a job ----------------------------------------------------------------

LIST_PROCESSES = textwrap.dedent("""
    import json, os
    pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
    comms = {p: open(f'/proc/{p}/comm').read().strip() for p in pids}
    answer = json.dumps({'pids': pids, 'comms': comms, 'me': os.getpid(), 'zygote': os.getppid()}).encode()
""")


def test_a_daemon_forked_by_one_job_is_gone_before_the_next_starts(sandbox):
    first = json.loads(run_ok(sandbox, textwrap.dedent("""
        import os, time
        child = os.fork()
        if child == 0:
            os.setsid()                          # out of the job's process group
            if os.fork():
                os._exit(0)
            while True:                          # the daemon: would tamper with later jobs
                open('/tmp/tamper', 'w').write('x')
                time.sleep(0.01)
        os.waitpid(child, 0)
        time.sleep(0.1)
    """) + LIST_PROCESSES))
    assert len(first["pids"]) == 4, first  # init, zygote, this job, the daemon
    second = json.loads(run_ok(sandbox, LIST_PROCESSES))
    assert second["pids"] == sorted([1, second["zygote"], second["me"]])
    assert second["comms"]["1"] == "bwrap"


def test_files_and_ipc_objects_of_one_job_are_gone_for_the_next(sandbox):
    made = json.loads(run_ok(sandbox, """
        import ctypes, json, os
        open('/tmp/notes.txt', 'w').write('answers for the next student')
        os.makedirs('/tmp/deep/er')
        os.chmod('/tmp/deep', 0)                 # try to make the wipe fail
        open('/dev/shm/segment', 'w').write('x')
        os.close(os.open('/dev/mqueue/queue', os.O_CREAT | os.O_WRONLY))
        ctypes.CDLL(None).shmget(1234, 4096, 0o1000 | 0o600)   # IPC_CREAT
        answer = json.dumps({d: sorted(os.listdir(d)) for d in ('/tmp', '/dev/shm', '/dev/mqueue')}
                            | {'sysv': len(open('/proc/sysvipc/shm').readlines()) - 1}).encode()
    """))
    assert made == {"/tmp": ["deep", "notes.txt"], "/dev/shm": ["segment"], "/dev/mqueue": ["queue"], "sysv": 1}
    left = json.loads(run_ok(sandbox, """
        import json, os
        answer = json.dumps({d: sorted(os.listdir(d)) for d in ('/tmp', '/dev/shm', '/dev/mqueue')}
                            | {'sysv': len(open('/proc/sysvipc/shm').readlines()) - 1}).encode()
    """))
    assert left == {"/tmp": [], "/dev/shm": [], "/dev/mqueue": [], "sysv": 0}


# -- what a job can see and touch ----------------------------------------------------------


def course_files() -> list[Path]:
    """The answer code and the chapters, in every checkout this process can import them from."""
    files = []
    for graders in package_dirs("circuitlab_graders"):
        files += [graders / "engine.py", graders / "ch00_setup.py"]
    for solutions in package_dirs("circuitlab_solutions"):
        files += sorted(solutions.glob("*.py"))
    for sweeps in package_dirs("circuitlab.sweeps"):  # answer code inside the package the worker sees
        files += sorted(sweeps.glob("*.py"))
    files += sorted((REPO / "chapters").glob("*"))
    return files


def test_the_course_source_and_the_course_directory_are_hidden(sandbox, course):
    files = course_files()
    assert len(files) > 10 and all(f.is_file() for f in files)  # they are there outside
    probe = f"""
        import errno, json, os
        def attempt(action):
            try:
                action()
                return 'ok'
            except OSError as error:
                return errno.errorcode[error.errno]
            except ImportError as error:
                return type(error).__name__
        answer = json.dumps({{
            'import solutions': attempt(lambda: __import__('circuitlab_solutions')),
            'import graders.engine': attempt(lambda: __import__('circuitlab_graders.engine')),
            'list circuitlab/sweeps': [os.listdir(p) for p in {[str(p) for p in package_dirs("circuitlab.sweeps")]!r}],
            'files': {{f: attempt(lambda f=f: open(f).read()) for f in {[str(f) for f in files]!r}}},
            'course listing': os.listdir({str(course / 'course')!r}),
            'read gradebook': attempt(lambda: open({str(course / 'course/gradebook.db')!r}).read()),
            'write gradebook': attempt(lambda: open({str(course / 'course/gradebook.db')!r}, 'w')),
            'neighbour': open({str(course / 'neighbour.txt')!r}).read(),
        }}).encode()
    """
    seen = json.loads(run_ok(sandbox, probe))
    assert seen == {
        "import solutions": "ModuleNotFoundError",
        "import graders.engine": "ModuleNotFoundError",
        "list circuitlab/sweeps": [[]],
        "files": {str(f): "ENOENT" for f in files},
        "course listing": [],
        "read gradebook": "ENOENT",
        "write gradebook": "EROFS",
        "neighbour": "visible",
    }
    assert (course / "course/gradebook.db").read_bytes() == b"SQLite format 3\0 grades"


def test_the_worker_still_sees_site_packages_circuitlab_and_the_caches(sandbox):
    import circuitlab
    import torch

    view = sandbox.view
    readable = [Path(p).resolve() for p in (torch.__file__, circuitlab.__file__, Path(circuitlab.__file__).parent / "data",
                                            view.env["CIRCUITLAB_CACHE"], view.env["HF_HOME"])]
    outside = {str(p): sorted(os.listdir(p)) if p.is_dir() else p.stat().st_size for p in readable if p.exists()}
    assert len(outside) >= 4
    inside = json.loads(run_ok(sandbox, f"""
        import json, os
        paths = {list(outside)!r}
        answer = json.dumps({{p: sorted(os.listdir(p)) if os.path.isdir(p) else os.stat(p).st_size
                              for p in paths}}).encode()
    """))
    assert inside == outside


def test_a_job_can_write_only_to_its_tmp(sandbox, course):
    import circuitlab

    places = ["/", "/usr/lib", "/root", "/var/tmp", "/dev", "/run", "/run/sandbox", str(course),
              str(course / "course"), str(Path(circuitlab.__file__).parent), str(sandbox.view.python.parent),
              sandbox.view.env["CIRCUITLAB_CACHE"]]
    tried = json.loads(run_ok(sandbox, f"""
        import errno, json, os
        def attempt(where):
            try:
                open(os.path.join(where, 'written-by-a-job'), 'w').close()
                return 'ok'
            except OSError as error:
                return errno.errorcode[error.errno]
        answer = json.dumps({{p: attempt(p) for p in {places + ['/tmp']!r}}}).encode()
    """))
    assert tried == {**{p: "EROFS" for p in places}, "/tmp": "ok"}


def test_without_writable_tmp_nothing_is_writable():
    with Sandbox(preload="tests.sandbox_handlers:preload_nothing", view=course_view(), writable_tmp=False,
                 **HANDLERS) as box:
        tried = json.loads(run_ok(box, """
            import errno, json
            def attempt(path):
                try:
                    open(path, 'w').close()
                    return 'ok'
                except OSError as error:
                    return errno.errorcode[error.errno]
            answer = json.dumps({p: attempt(p) for p in ('/tmp/x', '/dev/shm/x', '/dev/mqueue/x')}).encode()
        """))
    assert tried == {"/tmp/x": "EROFS", "/dev/shm/x": "EROFS", "/dev/mqueue/x": "EROFS"}


def test_the_network_is_down(sandbox):
    server = socket.create_server(("127.0.0.1", 0))
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(b"\0circuitlab-sandbox-test")
    abstract.listen()
    try:
        port = server.getsockname()[1]
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # reachable from out here
        tried = json.loads(run_ok(sandbox, f"""
            import errno, json, socket
            def attempt(family, address):
                try:
                    with socket.socket(family) as s:
                        s.settimeout(2)
                        s.connect(address)
                    return 'connected'
                except OSError as error:
                    return errno.errorcode.get(error.errno, str(error))
            answer = json.dumps({{
                'loopback server': attempt(socket.AF_INET, ('127.0.0.1', {port})),
                'external': attempt(socket.AF_INET, ('1.1.1.1', 53)),
                'abstract unix socket': attempt(socket.AF_UNIX, b'\\0circuitlab-sandbox-test'),
            }}).encode()
        """))
    finally:
        server.close()
        abstract.close()
    assert tried == {"loopback server": "ECONNREFUSED", "external": "ENETUNREACH",
                     "abstract unix socket": "ECONNREFUSED"}


# -- the zygote's life ---------------------------------------------------------------------


def host_children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def test_a_zygote_killed_from_outside_is_restarted_for_the_next_job(sandbox):
    outer = sandbox._proc.pid  # bwrap outside -> bwrap, the sandbox's init -> the zygote
    (init,) = host_children(outer)
    (zygote,) = host_children(init)
    assert Path(f"/proc/{zygote}/cmdline").read_bytes().split(b"\0")[-2] == b"circuitlab_graders.sandbox.zygote"
    starts = sandbox.starts
    os.kill(zygote, signal.SIGKILL)
    time.sleep(0.2)
    assert run_ok(sandbox, "answer = b'after the restart'") == b"after the restart"
    assert sandbox.starts == starts + 1


def test_a_job_that_kills_its_zygote_crashes_and_the_next_job_runs(sandbox):
    starts = sandbox.starts
    outcome = sandbox.run(job("import os, signal; os.kill(os.getppid(), signal.SIGKILL); import time; time.sleep(5)"), 10)
    assert outcome == Outcome("crashed", message="the sandbox died during the job; it restarts for the next job")
    assert run_ok(sandbox, "answer = b'fresh'") == b"fresh"
    assert sandbox.starts == starts + 1


def test_a_zygote_that_breaks_the_protocol_is_a_protocol_error_without_reading_the_frame():
    with Sandbox(preload="tests.sandbox_handlers:preload_corrupt_results", view=course_view(),
                 limits=Limits(max_output=1 * MiB), **HANDLERS) as box:
        outcome = box.run(job("answer = b'fine'"), 5)
        assert outcome == Outcome("protocol_error", message="the sandbox broke the protocol: a frame of "
                                  "1099511627776 bytes exceeds the 1048585-byte cap; it restarts for the next job")
        assert box.run(job("answer = b'fine'"), 5).kind == "protocol_error"
        assert box.starts == 2


def test_a_failing_preload_says_why():
    box = Sandbox(preload="tests.sandbox_handlers:preload_failing", view=course_view(), **HANDLERS)
    with pytest.raises(SandboxError) as raised:
        box.start()
    box.close()
    assert str(raised.value).startswith("the preload tests.sandbox_handlers:preload_failing failed in the sandbox:\n")
    assert str(raised.value).endswith("RuntimeError: the preload could not find its models\n")


def test_a_pool_of_two_runs_four_jobs_in_half_the_time():
    jobs = [job(f"import time; time.sleep(0.5); answer = b'{i}'") for i in range(4)]
    with SandboxPool(2, preload="tests.sandbox_handlers:preload_nothing", view=course_view(), **HANDLERS) as pool:
        start = time.monotonic()
        outcomes = pool.map(jobs, timeout=5)
        wall = time.monotonic() - start
    print(f"\npool of 2, four 0.5 s jobs: {wall:.2f} s (serial: 2.0 s)")
    assert outcomes == [Outcome("ok", answer=str(i).encode()) for i in range(4)]
    assert 1.0 <= wall < 1.5


# -- the point of the zygote: load once, serve many ----------------------------------------

FORWARD = """
    import time, torch
    from tests import sandbox_handlers
    start = time.perf_counter()
    logits = sandbox_handlers.MODEL(torch.arange(64).reshape(2, 32))
    answer = f'{sandbox_handlers.LOADS} {time.perf_counter() - start:.4f} {tuple(logits.shape)}'.encode()
"""


def test_jobs_reuse_the_model_the_zygote_loaded_once():
    start = time.monotonic()
    with Sandbox(preload="tests.sandbox_handlers:preload_model", view=course_view(),
                 limits=Limits(memory=512 * MiB), **HANDLERS) as box:  # torch works under RLIMIT_AS
        load = time.monotonic() - start
        trivial = []
        for _ in range(10):
            t = time.monotonic()
            run_ok(box, "answer = b''")
            trivial.append(time.monotonic() - t)
        forwards, inside = [], []
        for _ in range(5):
            t = time.monotonic()
            loads, seconds, shape = run_ok(box, FORWARD).decode().split(" ", 2)
            forwards.append(time.monotonic() - t)
            inside.append(float(seconds))
            assert (loads, shape) == ("1", "(2, 32, 50257)")
    trivial_ms, forward_ms = 1000 * min(trivial), 1000 * min(forwards)
    print(f"\nstart with torch + circuitlab-2l preload: {load:.2f} s; trivial job: {trivial_ms:.1f} ms "
          f"(median {1000 * sorted(trivial)[5]:.1f}); forward-pass job: {forward_ms:.0f} ms "
          f"(forward itself {1000 * min(inside):.0f} ms)")
    assert max(forwards) < load / 10


def test_a_job_that_freezes_its_zygote_times_out_and_the_sandbox_is_replaced(sandbox, monkeypatch):
    monkeypatch.setattr("circuitlab_graders.sandbox.sandbox.GRACE", 1.0)
    (init,) = host_children(sandbox._proc.pid)
    (zygote,) = host_children(init)
    starts = sandbox.starts
    outcome = sandbox.run(job("import os, signal, time; os.kill(os.getppid(), signal.SIGSTOP); time.sleep(60)"), 0.5)
    assert outcome == Outcome("timed_out", message="the sandbox stopped responding during the job (over 0.5 s + 1 s);"
                                                   " it restarts for the next job")
    for _ in range(100):  # killing bwrap outside takes everything inside with it (--die-with-parent)
        if not Path(f"/proc/{zygote}").exists():
            break
        time.sleep(0.02)
    assert not Path(f"/proc/{zygote}").exists()
    assert run_ok(sandbox, "answer = b'thawed'") == b"thawed"
    assert sandbox.starts == starts + 1


def test_a_sandbox_started_on_a_thread_outlives_the_thread():
    import threading

    box = Sandbox(preload="tests.sandbox_handlers:preload_nothing", view=course_view(), **HANDLERS)
    starter = threading.Thread(target=box.start)
    starter.start()
    starter.join()
    time.sleep(0.2)
    try:
        assert box.run(job("answer = b'alive'"), 5) == Outcome("ok", answer=b"alive")
        assert box.starts == 1
    finally:
        box.close()
