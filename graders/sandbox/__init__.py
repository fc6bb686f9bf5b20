"""Run untrusted learner code in a bubblewrap sandbox (design notes to come)."""

from graders.sandbox.bwrap import SandboxUnavailable
from graders.sandbox.limits import Limits
from graders.sandbox.outcome import Outcome
from graders.sandbox.pool import SandboxPool
from graders.sandbox.sandbox import Sandbox, SandboxError
from graders.sandbox.view import View

__all__ = ["Sandbox", "SandboxPool", "Outcome", "Limits", "View", "SandboxError", "SandboxUnavailable"]
