"""What `Sandbox.run` reports: plain data built by the trusted parent, never by the sandbox.

A job's outcome (did the sandboxed process answer?), not a learner call's: that is
`circuitlab_graders.calls.Outcome`, carried inside an "ok" job's answer. The kinds both have mean the
same and are spelled the same: "timed_out", "crashed"."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("ok", "timed_out", "crashed", "too_much_output", "protocol_error")


@dataclass(frozen=True)
class Outcome:
    kind: str  # one of KINDS
    answer: bytes | None = None  # the handler's bytes, only when kind == "ok"
    exit_code: int | None = None  # crashed: the job's process exited with this code
    signal: int | None = None  # crashed or timed_out: the signal that ended it
    message: str = ""  # a sentence for people; empty when ok

    @property
    def ok(self) -> bool:
        return self.kind == "ok"
