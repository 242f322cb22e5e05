"""A real HTTP server on 127.0.0.1 in a thread, for the market-source tests (no internet).

`Loopback(answer)` serves `answer(path, query) -> (status, body[, headers])`; scripted
`faults` (a list of `(status, body)` or a number of seconds to stall) are served first, one
per request, so a test can say "429 twice, then the real answer". Every request is recorded.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

Answer = tuple[int, str] | tuple[int, str, dict[str, str]]


class Loopback:
    def __init__(self, answer: Callable[[str, dict[str, str]], Answer]) -> None:
        self.answer = answer
        self.faults: list[Any] = []
        self.requests: list[tuple[float, str, dict[str, str]]] = []
        self.release = threading.Event()  # ends a stall early (test teardown)
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                split = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(split.query))
                owner.requests.append((time.monotonic(), split.path, query))
                fault = owner.faults.pop(0) if owner.faults else None
                if isinstance(fault, (int, float)):  # a stall: the answer comes much later
                    owner.release.wait(fault)
                    fault = None
                status, body, *rest = (
                    fault if fault is not None else owner.answer(split.path, query)
                )
                data = body.encode()
                try:
                    self.send_response(status)
                    for key, value in (rest[0] if rest else {}).items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def json_body(payload: Any) -> str:
    return json.dumps(payload)


def kill_download_midway(server: Loopback, requests: int, argv: list[str]) -> None:
    """Run `scripts/download.py argv` in a subprocess, SIGKILL it once `server` has seen
    `requests` requests (the last one stalled by a fault), then let the server go on."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "download.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while len(server.requests) < requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(server.requests) == requests, proc.communicate(timeout=5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    server.release.set()
