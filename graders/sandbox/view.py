"""What the sandbox's filesystem shows: the host's, read-only, minus what is hidden."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

# Mounted fresh by the sandbox itself; the host's versions never show through.
SYSTEM_MOUNTS = (Path("/dev"), Path("/proc"), Path("/run"), Path("/tmp"))


def venv_python() -> Path:
    """This interpreter, with its venv directory's symlinks resolved (the path works once
    a hidden checkout that links to the venv is gone) but not the `python` link itself,
    which is how Python finds the venv's pyvenv.cfg."""
    exe = Path(sys.executable)
    return exe.parent.resolve() / exe.name


@dataclass(frozen=True)
class View:
    hide: tuple[Path, ...] = ()  # each becomes an empty read-only directory (a file: /dev/null)
    expose: tuple[tuple[Path, Path], ...] = ()  # host path -> path inside, read-only, even under `hide`
    pythonpath: tuple[Path, ...] = ()  # inside paths put on sys.path after the staged package
    env: dict[str, str] = field(default_factory=dict)  # added to the sandbox's minimal environment
    python: Path = field(default_factory=venv_python)

    def __post_init__(self):
        object.__setattr__(self, "hide", tuple(Path(p).resolve() for p in self.hide))
        object.__setattr__(self, "expose", tuple((Path(a).resolve(), Path(b)) for a, b in self.expose))
        for _, inside in self.expose:
            if not inside.is_absolute() or any(inside.is_relative_to(m) for m in SYSTEM_MOUNTS):
                raise ValueError(f"cannot expose at {inside}: not absolute, or under {[str(m) for m in SYSTEM_MOUNTS]}")
