"""The sandboxed side of classroom grading: it runs a submission and returns its answers.

Inside a `circuitlab_graders.sandbox` zygote, `preload.load` reads the grading plan (every exercise's
calls: inputs as plain data, time limits; no answers) and loads the models once. Each job
is one submission; `supervisor.grade` runs it in three kinds of process, so that a crash
or an endless loop costs only what it reaches:

* the supervisor (this job's child of the zygote) runs no learner code: it forks a cell
  runner, reads its reports with deadlines, and when the runner dies or overruns in a
  cell, starts a new one that skips that cell (and the exercises already done);
* the cell runner (`cells`) executes the submission's code cells in order, answer cells'
  top-level code included, then forks one exercise runner per exercise;
* an exercise runner (`exercise`) calls the learner's function on each of the
  exercise's inputs with `circuitlab_graders.calls.Executor` (as the in-process engine does) under
  `circuitlab_graders.calls.StopRule`, and sends the outcomes, encoded with `circuitlab_graders.wire`, straight
  to the supervisor.

Everything that comes back is untrusted data: the trusted grader decodes it with
`circuitlab_graders.wire` (no pickle), compares with references it computed itself, and scores.
Staged into the sandbox with: circuitlab_graders.worker, .calls, .inputs, .wire,
graders.guard, graders.limits (this package imports nothing else from graders).
"""

STAGED = ("circuitlab_graders.worker", "circuitlab_graders.calls", "circuitlab_graders.inputs", "circuitlab_graders.wire", "circuitlab_graders.guard", "circuitlab_graders.limits")
