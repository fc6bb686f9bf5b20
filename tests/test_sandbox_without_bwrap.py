"""circuitlab_graders.sandbox without bubblewrap: the error that refuses to run unsandboxed, and the frames' caps."""

from __future__ import annotations

import os
import time

import pytest

from circuitlab_graders.sandbox import Sandbox, SandboxUnavailable, frames


def test_without_bubblewrap_nothing_runs_and_the_error_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    box = Sandbox(preload="tests.sandbox_handlers:preload_nothing", handler="tests.sandbox_handlers:run_code")
    with pytest.raises(SandboxUnavailable) as raised:
        box.run(b"answer = b'unsandboxed'", 5)
    assert str(raised.value) == ("bubblewrap (the `bwrap` command) is not on PATH, and learner code is never run "
                                 "unsandboxed: install the Debian/Ubuntu package with `apt-get install -y bubblewrap`")


def test_frames_are_capped_before_their_payload_is_read():
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, frames.HEADER.pack(frames.RESULT, 1 << 40))
        with pytest.raises(frames.FrameTooLarge, match="^a frame of 1099511627776 bytes exceeds the 100-byte cap$"):
            frames.read_frame(read_end, 100, time.monotonic() + 1)
        os.write(write_end, frames.HEADER.pack(frames.RESULT, 10) + b"12345")
        with pytest.raises(frames.FrameTimeout, match=r"^no frame within the deadline \(5 of 10 bytes came\)$"):
            frames.read_frame(read_end, 100, time.monotonic() + 0.2)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_cache_under_tmp_is_refused_with_where_to_put_it(monkeypatch, tmp_path):
    """The sandbox mounts an empty /tmp of its own: what the worker needs cannot live there."""
    from circuitlab_graders.sandbox.project import course_view

    hub = tmp_path / "hf"
    hub.mkdir()
    monkeypatch.setenv("HF_HOME", str(hub))
    assert str(hub.resolve()).startswith("/tmp/")
    with pytest.raises(SandboxUnavailable, match=f"cannot see {hub.resolve()}, which the grading worker needs: "
                                                 "put the venv, the course checkout and the model caches outside "
                                                 "/dev, /proc, /run, /tmp"):
        course_view()
