"""The patching explorer served from this test process on a free localhost port, so a
test can reach its model store and limits while a browser (or HTTP client) uses it."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

from circuitlab.explore import server_app
from circuitlab.explore.app import Limits
from circuitlab.explore.compute import ModelStore


@dataclass
class Running:
    url: str
    store: ModelStore
    limits: Limits
    server: object
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(store: ModelStore | None = None, limits: Limits | None = None) -> Running:
    import uvicorn

    store, limits = store or ModelStore(), limits or Limits()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(server_app(store, limits), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the explorer did not start")
        time.sleep(0.05)
    return Running(f"http://127.0.0.1:{port}", store, limits, server, thread)
