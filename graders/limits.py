"""Every time and memory limit of grading, in one place, each with its reason.

Stdlib only, no imports: the sandboxed worker imports it too (graders.worker.STAGED).
Where a test lowers a limit it patches the name its user reads (Grader.MIN_TIME_LIMIT_S,
graders.sandbox.sandbox.GRACE), which are set from these.
"""

# ---------------------------------------------------------------- one learner call, in a notebook (graders.engine)

# Per learner call: the larger of this and SLOWDOWN x the reference's time. Generous, so
# that an honest loop on a loaded machine (CI, a notebook beside other work) still ends
# in time: at 10 s an honest sweep was stopped at 19.6 s while the suite shared two cores.
CALL_FLOOR_S = 30.0
SLOWDOWN = 20.0
# A sweep's limit covers the one-pass-per-cell loop the chapter teaches (Exercise.loop),
# LOOP_SLOWDOWN times over: a busy machine, a sandbox on one thread counting CPU time against
# a pass timed on several, and the loop's own bookkeeping. Measured: the tutorial's head x
# position loop on gpt2-small (577 passes) took 40-51 s and was stopped at 30 s.
LOOP_SLOWDOWN = 5.0
PUBLIC_CALL_S = 60.0  # per call where there is no reference to time (public mode)
JUDGE_S = 10.0  # comparing what a call returned (a learner's value may run its own __eq__)
MISTAKE_CALL_S = 60.0  # a known mistake's answer on a failed case, to name the mistake

# ---------------------------------------------------------------- memory, per learner call (graders.guard.memory)

# Address space one learner call may add to its process (a soft RLIMIT_AS, in a notebook and
# in the sandbox alike): past it an allocation raises inside the call, which fails with a
# message, instead of the OOM killer ending the kernel, the grader or the classroom worker.
# Measured: `.T` for `.mT` in k_composition_scores asks for one 21.7 GB tensor on gpt2-small
# (4.3 GB on gelu-2l), and grading it on a 24 GiB machine got the process killed; the
# reference asks for about 1 GB there. The classroom sandbox's job limit
# (graders.sandbox.limits.Limits.memory) is this same number, counted from the zygote's size:
# there it is the tighter of the two, and a call's message says the room it had.
CALL_MEMORY_BYTES = 4 << 30

# ---------------------------------------------------------------- classroom grading (graders.autograde, worker/, sandbox/)

# The least limit per learner call in the sandbox, in CPU seconds: one thread computing, so a
# busy machine does not stretch it (graders.guard.timer). An endless loop costs this much.
SANDBOX_CALL_FLOOR_CPU_S = 10.0
# CPU seconds a notebook cell may use at autograde when the course did not measure its
# cells (`python -m circuitlab_graders course` measures: five times the slowest reference cell, at
# least MIN_CELL_TIMEOUT_S).
CELL_TIMEOUT_S = 120.0
MIN_CELL_TIMEOUT_S = 30
# Seconds past a limit before the next watcher out acts: the supervisor waits this long past
# a runner's own limit, the trusted side this long past a job's timeout (the zygote's kill,
# sweep and wipe), and a submission's last-resort timeout adds it per cell and exercise.
GRACE_S = 10.0
# RLIMIT_CPU per process of a sandbox job: the per-call and per-cell limits stop endless
# loops long before; this only bounds a job that escapes them.
PROCESS_CPU_S = 3600
# An exercise's deadline in the worker: its calls' limits plus this, for encoding the answers.
ENCODE_S = 10.0
# An idle zygote takes a job at once; waiting this long for its acknowledgement means it is stuck.
ACK_WAIT_S = 30.0

# ---------------------------------------------------------------- running whole chapters (make course, the course build)

# Per cell when a chapter runs with the references (rendering, or measuring the cells'
# times for a course): a generous ceiling on gpt2-small-free chapters, not a check.
CHAPTER_CELL_S = 900
