"""Headless Chromium, offline, for looking at rendered chapters as a learner would."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

# Network off: every host resolves to nothing and any proxy fetch goes to a dead port.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
    "--disable-background-networking", "--disable-component-update", "--disable-quic",
    "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
    "--enable-logging=stderr", "--v=0", "--virtual-time-budget=8000",
]
CONSOLE = re.compile(r":CONSOLE[^\]]*\] (.*)")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def open_page(page: Path, *extra: str) -> tuple[str, list[str]]:
    """Load `page` from disk; returns (stdout, console messages)."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=180)
    return proc.stdout, CONSOLE.findall(proc.stderr)


def rendered_dom(page: Path) -> tuple[str, list[str]]:
    return open_page(page, "--dump-dom")


def screenshot(page: Path, png: Path, width: int = 1100, height: int = 900) -> list[str]:
    _, console = open_page(page, f"--screenshot={png.resolve()}", f"--window-size={width},{height}")
    return console
