"""Run an ASGI app on a loopback port in a background thread (the demo and tests serve the gateway this way)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from privet.errors import PrivetError

__all__ = ["running"]


@contextlib.contextmanager
def running(app: Any, *, host: str = "127.0.0.1", start_timeout: float = 60.0) -> Iterator[str]:
    """Serve ``app`` on a free port of ``host`` until the block ends; yields its base URL.

    Keep-alive outlives the block: with uvicorn's 5 s, a pooled connection is now and then closed just as a client
    sends on it. Logging only at critical: on CPython 3.11 a traceback the server thread logs while the main thread
    formats another can crash the interpreter's AST checks (gh-106905); the gateway reports its own errors."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port = int(probe.getsockname()[1])
    config = uvicorn.Config(app, host=host, port=port, log_level="critical", access_log=False, lifespan="on",
                            timeout_keep_alive=300)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"serve-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise PrivetError(f"the server on {host}:{port} did not start", "See the log for why.")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
