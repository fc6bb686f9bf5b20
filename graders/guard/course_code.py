"""Noticing learner code that uses the course's own answer code.

The answer code is every file of the packages named, top-level or dotted (the references,
the graders' declarations and known mistakes, `circuitlab.sweeps` inside the otherwise
learner-usable `circuitlab`). Two checks:

* before a call, `references(fn)` reads `fn`'s bytecode (and that of learner functions
  it calls, a few levels deep) for imports, globals, closure cells, defaults and
  module-name strings that point into those packages;
* during a call, `Watch` traces every Python function entered, in every thread, and
  records the first one whose file lies in those packages (a function found through
  `gc` or `importlib` is caught here).

Paths are compared after resolving symlinks, so a venv or a checkout reached through a
symlink changes nothing. In a notebook kernel this is a guard rail for self-study, not
a security boundary: code that runs in the same process can switch it off. Classroom
grading runs learner code in a sandbox that cannot read these packages at all.
"""

from __future__ import annotations

import dis
import importlib.util
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

HERE = str(Path(__file__).resolve().parent) + os.sep


class CourseCode:
    """The answer code of the packages `packages`, found wherever they are installed.
    `harness` lists files that run during a learner call on the grader's behalf (the
    guard's own files always do) and are not counted."""

    def __init__(self, packages: Iterable[str], harness: Iterable[str] = ()) -> None:
        self.packages = tuple(packages)
        self._dir_packages = {d: name for name in self.packages for d in _package_dirs(name)}
        self.dirs = tuple(self._dir_packages)
        self.harness = tuple(os.path.realpath(f) for f in harness)
        self._verdicts: dict[str, bool] = {}

    def is_course_file(self, filename: str) -> bool:
        """Whether `filename` is answer code (cached: the tracer asks on every call)."""
        verdict = self._verdicts.get(filename)
        if verdict is None:
            real = os.path.realpath(filename) if filename and not filename.startswith("<") else filename
            verdict = bool(self.dirs) and real.startswith(self.dirs) and not real.startswith(HERE) \
                and real not in self.harness
            self._verdicts[filename] = verdict
        return verdict

    def owns(self, fn: Callable) -> bool:
        """A plain function defined in the answer code: a reference or a known mistake."""
        code = getattr(fn, "__code__", None)
        return code is not None and self.is_course_file(code.co_filename)

    def is_course_module(self, name: str) -> bool:
        """Whether the module `name` (or a "module:attribute" string) is answer code: one
        of `packages` or inside one (`circuitlab.sweeps.exact`, not `circuitlab`)."""
        name = name.split(":", 1)[0]
        return any(name == package or name.startswith(package + ".") for package in self.packages)

    def module_of(self, value: Any) -> Optional[str]:
        """The course module `value` is or comes from, if any."""
        if isinstance(value, type(sys)):
            name = value.__name__
        else:
            name = getattr(value, "__module__", None) or type(value).__module__
            if hasattr(value, "func"):  # functools.partial of a course function
                name = getattr(value.func, "__module__", None) or name
        if isinstance(name, str) and self.is_course_module(name):
            return name
        return None

    def references(self, fn: Callable, depth: int = 3) -> list[str]:
        """What `fn` (and learner functions it calls, `depth` deep) reads from the answer
        code: imports, globals, closure cells, defaults, module-name strings."""
        found: list[str] = []
        seen: set[int] = set()
        stack: list[tuple[Any, int]] = [(fn, 0)]
        while stack:
            func, level = stack.pop()
            func = getattr(func, "__wrapped__", func)
            code = getattr(func, "__code__", None)
            if code is None:
                code = getattr(getattr(type(func), "__call__", None), "__code__", None)
            if code is None or id(code) in seen or _is_library(code) or self.is_course_file(code.co_filename):
                continue
            seen.add(id(code))
            scope = getattr(func, "__globals__", {})
            extras = list(getattr(func, "__defaults__", None) or ())
            extras += list((getattr(func, "__kwdefaults__", None) or {}).values())
            extras += [cell.cell_contents for cell in getattr(func, "__closure__", None) or () if _full(cell)]
            for value in extras:
                if (module := self.module_of(value)) is not None:
                    found.append(f"uses {getattr(value, '__qualname__', type(value).__name__)} from {module}")
                elif callable(value) and level < depth:
                    stack.append((value, level + 1))
            codes = [code]
            while codes:
                importing = ""  # the module of the latest import, for `from package import module`
                for ins in dis.get_instructions(codes.pop()):
                    arg = ins.argval
                    if ins.opname == "IMPORT_NAME":
                        importing = str(arg)
                        if self.is_course_module(importing):
                            found.append(f"imports {arg}")
                    elif ins.opname == "IMPORT_FROM" and not self.is_course_module(importing) \
                            and self.is_course_module(f"{importing}.{arg}"):
                        found.append(f"imports {importing}.{arg}")
                    elif ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(arg, str) and arg in scope:
                        value = scope[arg]
                        if (module := self.module_of(value)) is not None:
                            found.append(f"uses {arg} from {module}")
                        elif callable(value) and level < depth:
                            stack.append((value, level + 1))
                    elif ins.opname == "LOAD_CONST":
                        if isinstance(arg, str) and self.is_course_module(arg):
                            found.append(f"names the module {arg!r}")
                        elif hasattr(arg, "co_code"):
                            codes.append(arg)
        return list(dict.fromkeys(found))

    def describe(self, filename: str, function: str) -> str:
        real = os.path.realpath(filename)
        for d, package in self._dir_packages.items():
            if real.startswith(d):
                return f"{package.replace('.', '/')}/{os.path.relpath(real, d)}:{function}"
        return f"{filename}:{function}"


class Watch:
    """During a call, records the first answer-code function entered, in any thread."""

    def __init__(self, course: CourseCode) -> None:
        self.course = course
        self.found: Optional[str] = None

    def _trace(self, frame, event, arg):
        code = frame.f_code
        if self.found is None and self.course.is_course_file(code.co_filename):
            self.found = self.course.describe(code.co_filename, code.co_name)
        return None

    def __enter__(self) -> "Watch":
        self._previous = sys.gettrace(), threading.gettrace()
        sys.settrace(self._trace)
        threading.settrace(self._trace)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.settrace(self._previous[0])
        threading.settrace(self._previous[1])


def _package_dirs(name: str) -> list[str]:
    """The directories a package (top-level or dotted) is imported from, resolved; none
    when it is not installed (a student release has no `solutions`)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [os.path.realpath(p) + os.sep for p in spec.submodule_search_locations]


def _is_library(code) -> bool:
    path = code.co_filename
    return "site-packages" in path or path.startswith((sys.prefix, sys.base_prefix)) or path.startswith("<frozen")


def _full(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True
