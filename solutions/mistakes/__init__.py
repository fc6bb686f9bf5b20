"""Known mistakes, one module per chapter (chNN_name.py, beside the references).

Each module's `MISTAKES` maps an exercise's name to its known mistakes, in the order the
grader tries them: a `circuitlab_graders.declare.Mistake` is what the learner did, how to fix it,
and a small wrong function with the reference's signature. A mistake is written as the
reference with one thing wrong; where several are one knob of the same computation, one
function with keyword knobs computes them all (like `transformer_lens.patching`, which
builds every patch from one generic patcher). Mistakes that reuse a reference import it
from solutions/, the one home of answer code: the graders hold none, so a student release
is the package without solutions/.
"""
