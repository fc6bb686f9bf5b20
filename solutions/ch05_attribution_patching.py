"""Chapter 5 reference solutions: attribution patching.

The one implementation lives in `circuitlab.sweeps.attribution` (the patching explorer uses
it too, where solutions/ is absent); see its docstring for the estimate. The nbgrader course
inlines each reference's body, read from there, into the solution notebook.
"""

from __future__ import annotations

from circuitlab.sweeps.attribution import (  # noqa: F401 (re-exported: the references)
    attribution_patching_head_by_position,
    attribution_patching_heads,
    attribution_patching_resid,
)
