"""The learner's time limit. In a notebook it counts wall time; in the classroom sandbox
(one torch thread) CPU time, with a wall-clock backstop: there a busy machine slows an
honest answer without stopping it, and an endless loop stops at its limit either way."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from circuitlab_graders.guard.timer import WALL_FACTOR, TimeLimitExceeded, Timer, wall_seconds


def spin(seconds: float) -> None:
    """Compute (not wait) for `seconds` of this process's CPU time."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def stopped(timer: Timer, work) -> tuple[bool, float, float]:
    """Whether `work` was stopped under `timer`, and the CPU and wall seconds it ran."""
    cpu, wall = time.process_time(), time.monotonic()
    try:
        with timer:
            work()
    except TimeLimitExceeded:
        return True, time.process_time() - cpu, time.monotonic() - wall
    return False, time.process_time() - cpu, time.monotonic() - wall


def in_thread(fn):
    box = []
    thread = threading.Thread(target=lambda: box.append(fn()))
    thread.start()
    thread.join()
    return box[0]


@pytest.mark.parametrize("where", ["main thread", "other thread"])
def test_an_endless_loop_stops_after_its_cpu_seconds(where):
    timer = Timer(0.6, cpu=True)

    def loop():
        while True:
            pass

    run = lambda: stopped(timer, loop)  # noqa: E731
    was_stopped, cpu, wall = run() if where == "main thread" else in_thread(run)
    assert was_stopped and timer.stopped_by == "cpu"
    assert 0.5 <= cpu <= 1.5, cpu
    assert "stopped after 0.6 s of computing" == timer.describe()


def wait():
    while True:  # short sleeps: outside the main thread a stop lands between bytecodes only
        time.sleep(0.01)


@pytest.mark.parametrize("where", ["main thread", "other thread"])
def test_waiting_stops_at_the_wall_clock_backstop(where):
    timer = Timer(0.3, cpu=True)
    run = lambda: stopped(timer, lambda: time.sleep(60) if where == "main thread" else wait())  # noqa: E731
    was_stopped, cpu, wall = run() if where == "main thread" else in_thread(run)
    assert was_stopped and timer.stopped_by == "wall"
    assert wall_seconds(0.3) == pytest.approx(0.3 * WALL_FACTOR)
    assert wall_seconds(0.3) - 0.05 <= wall <= wall_seconds(0.3) + 1.5, wall
    assert timer.describe() == f"stopped after {wall_seconds(0.3):.3g} s by the clock, most of it spent waiting"


@pytest.mark.parametrize("cpu", [True, False])
def test_a_bare_except_does_not_keep_a_loop_going(cpu):
    timer = Timer(0.3, cpu=cpu)
    caught = 0

    def stubborn():
        nonlocal caught
        while caught < 3:
            try:
                spin(10)
            except TimeLimitExceeded:
                caught += 1  # raised again 0.2 s later
        spin(10)

    was_stopped, cpu, wall = stopped(timer, stubborn)
    assert was_stopped and caught == 3
    assert (cpu if timer.cpu else wall) < 0.3 + 4 * 0.2 + 0.5, (cpu, wall)


def test_honest_work_on_a_busy_core_is_not_stopped():
    """Two processes computing on the same core leave this one half of it or less: its wall
    time is twice its CPU time or more. A wall-clock limit at 1.5x the work's own time
    would stop it; the CPU limit lets it finish."""
    work = 0.6
    core = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        for hog in hogs:
            os.sched_setaffinity(hog.pid, {core})
        os.sched_setaffinity(0, {core})
        was_stopped, cpu, wall = stopped(Timer(1.5 * work, cpu=True), lambda: spin(work))
    finally:
        os.sched_setaffinity(0, before)
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert not was_stopped
    assert wall > 1.5 * work, (cpu, wall)  # the core really was shared: a wall-clock limit would have stopped it


def test_no_stop_leaks_past_the_timer_in_a_thread():
    """An asynchronous stop sent as the limit passes must not surface after the timer is
    disarmed, in the grader's own code."""

    def run():
        for _ in range(5):
            try:
                with Timer(0.1, cpu=True):
                    spin(0.5)
            except TimeLimitExceeded:
                pass
        spin(0.3)  # a stop still pending would land here
        return "clean"

    assert in_thread(run) == "clean"
    # ... nor slow the rest of the process (a stop left pending keeps CPython's eval breaker set)
    cpu = time.process_time()
    sum(i for i in range(300_000))
    assert time.process_time() - cpu < 0.5


def test_nothing_is_left_armed_in_the_main_thread():
    import signal

    with Timer(5, cpu=True):
        pass
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGPROF) == signal.SIG_IGN  # not the default, which ends the process
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL


def test_a_timer_inside_another_leaves_the_outer_one_running():
    outer, inner = Timer(1.0, cpu=True), Timer(5.0, cpu=True)

    def nested():
        with inner:
            spin(0.2)
        spin(10)  # only the outer limit can stop this

    was_stopped, cpu, _ = stopped(outer, nested)
    assert was_stopped and outer.stopped_by == "cpu" and inner.stopped_by is None
    assert 0.85 <= cpu <= 2.0, cpu  # CPU clocks tick coarsely: about the limit, not to the millisecond


def test_in_a_notebook_the_limit_is_by_the_clock():
    timer = Timer(0.4)
    was_stopped, _, wall = stopped(timer, lambda: time.sleep(60))
    assert was_stopped and timer.stopped_by == "wall" and 0.35 <= wall <= 1.5, wall
    assert timer.describe() == "stopped after 0.4 s"
